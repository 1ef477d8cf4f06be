//! A client's IPv6 packet whose hop limit runs out at the gateway is
//! answered as a router answers it: ICMPv6 time exceeded, "hop limit
//! exceeded in transit" (RFC 4443 3.3), from the gateway's IPv6 address,
//! sent back through the tunnel. traceroute6 and tracepath -6 from a worker
//! then show the gateway as their first hop instead of a `*`.
//!
//! As for IPv4 (`time_exceeded`): never about an ICMPv6 error (RFC 4443
//! 2.4 (e)), never about a fragment (the caller drops extension headers
//! before), never to or about an address that is not one host's (the
//! caller dropped those destinations as martians; the source is the
//! client's own, listed address), and out of the client's allowance of
//! ICMP answers (6 at once, then 1 a second).
//!
//! The packet is rebuilt in place, 48 bytes more in front of it, and
//! quoted as much as keeps the answer within IPv6's minimum MTU (RFC 4443
//! 2.4 (c)): tracepath's probes are as long as the path's MTU. The kernel
//! refuses `bpf_skb_change_tail` on what a tunnel device sent
//! (`skb->encapsulation`), so a longer packet is cut from the front
//! instead: its head is set aside (`QUOTE_HEAD`), the packet shrinks
//! behind its Ethernet header, and the head goes back in after the new
//! headers.
//!
//! ```text
//! in:  [eth][outer IPv4 | UDP | VXLAN | inner eth: 50][IPv6 pod → remote, hop limit 1 | L4 ...]
//! out: [eth][outer IPv4 | UDP | VXLAN | inner eth: 50][IPv6 gateway → pod][ICMPv6 3/0][IPv6 pod → remote | L4 ...]
//! ```
//!
//! (or an IPv6 outer header of 70 bytes, `tunnel::outer::Outer6`).
use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, helpers::bpf_skb_load_bytes, programs::TcContext,
    EbpfContext,
};
use egress_common::{
    config::GatewayConfig,
    counters::Counter,
    ip::{is_icmpv6_error, ICMPV6_TIME_EXCEEDED, IPPROTO_ICMPV6},
};

use crate::{
    conntrack, csum,
    headers::{Ipv6Header, IPV6_HLEN},
    maps::{count, take_icmp_answer, QUOTE_HEAD},
    tunnel::outer::{Outer, Sender},
    wire::{Icmp6Answer, ICMP6_ANSWER_HLEN, ICMP6_ANSWER_MAX_QUOTE},
};

/// Code 0: the hop limit ran out in transit.
const CODE_HOP_LIMIT: u8 = 0;
/// Neighbour discovery's Redirect (RFC 4861 4.5).
const ICMPV6_REDIRECT: u8 = 137;

/// Turns the expired packet `ip` of `sender`, which came in tunnel `O`,
/// into its answer, in the same tunnel. On success the packet has been
/// counted (`drop_ttl_exceeded`: it goes no further) and the answer is
/// ready to be sent out of the attached interface; an error leaves a
/// packet only fit to be dropped.
#[inline(always)]
pub fn answer<O: Outer>(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    sender: &Sender,
    ip: &Ipv6Header,
) -> Result<(), Counter> {
    // The answer's own headers, and the quote after them.
    let answer_ip_off = O::INNER_IP_OFF;
    let quote_off = answer_ip_off + ICMP6_ANSWER_HLEN;
    // A GSO super-packet would have to be answered once per segment: only
    // dropped.
    if unsafe { (*ctx.skb.skb).gso_size } != 0 {
        return Err(Counter::DropTtlExceeded);
    }
    if ip.next_header == IPPROTO_ICMPV6 {
        let icmp_type: u8 = ctx.load(O::INNER_IP_OFF + IPV6_HLEN).map_err(|_| Counter::DropMalformed)?;
        // Nor about a Redirect (RFC 4443 2.4 (e.2)).
        if is_icmpv6_error(icmp_type) || icmp_type == ICMPV6_REDIRECT {
            return Err(Counter::DropTtlExceeded);
        }
    }
    if !take_icmp_answer(sender.client_id, conntrack::now_ns()) {
        count(Counter::IcmpAnswerRateLimited);
        return Err(Counter::DropTtlExceeded);
    }
    // The inner Ethernet header: to the tunnel's gateway MAC, from the
    // worker's device, which the answer goes back to.
    let client_mac: [u8; 6] = ctx.load(O::INNER_ETH_OFF + 6).map_err(|_| Counter::DropMalformed)?;
    let tunnel_gateway_mac: [u8; 6] = ctx.load(O::INNER_ETH_OFF).map_err(|_| Counter::DropMalformed)?;
    let packet_len = IPV6_HLEN + ip.payload_len as usize;
    let quote_len = if packet_len <= ICMP6_ANSWER_MAX_QUOTE {
        ctx.adjust_room(ICMP6_ANSWER_HLEN as i32, BPF_ADJ_ROOM_MAC, 0)
            .map_err(|_| Counter::DropRewriteFailed)?;
        packet_len
    } else {
        cut_to_quote(ctx, O::INNER_IP_OFF, quote_off)?;
        ICMP6_ANSWER_MAX_QUOTE
    };
    let quoted = csum::quote_sum::<ICMP6_ANSWER_MAX_QUOTE>(ctx, quote_off, quote_len)?;
    let answer = Icmp6Answer::new(
        (ICMPV6_TIME_EXCEEDED, CODE_HOP_LIMIT, 0),
        quote_len,
        quoted,
        &cfg.gateway_ip6,
        &ip.src,
    );
    ctx.store(answer_ip_off, &answer, 0).map_err(|_| Counter::DropRewriteFailed)?;
    O::write_answer_tunnel(ctx, cfg, sender, &ip.src, (client_mac, tunnel_gateway_mac))?;
    count(Counter::DropTtlExceeded);
    Ok(())
}

/// Makes the packet exactly tunnel, answer headers and the longest quote,
/// the quote being the expired packet's head: the head is set aside, the
/// packet shrinks (or grows) right behind its Ethernet header, which
/// leaves every byte after it to be written again, and the head goes back
/// in at the quote's place (`quote_off`; the expired packet was at
/// `inner_ip_off`).
#[inline(always)]
fn cut_to_quote(ctx: &TcContext, inner_ip_off: usize, quote_off: usize) -> Result<(), Counter> {
    let head = QUOTE_HEAD.get_ptr_mut(0).ok_or(Counter::DropRewriteFailed)?;
    // SAFETY: a per-CPU value nothing else on this CPU uses meanwhile.
    let head = unsafe { &mut *head };
    // SAFETY: the helper writes exactly the buffer's length into it.
    let loaded = unsafe {
        bpf_skb_load_bytes(ctx.as_ptr(), inner_ip_off as u32, head.as_mut_ptr() as *mut _, head.len() as u32)
    };
    if loaded != 0 {
        return Err(Counter::DropMalformed);
    }
    let wanted = (quote_off + ICMP6_ANSWER_MAX_QUOTE) as i32;
    ctx.adjust_room(wanted - ctx.len() as i32, BPF_ADJ_ROOM_MAC, 0)
        .map_err(|_| Counter::DropRewriteFailed)?;
    ctx.store(quote_off, head, 0).map_err(|_| Counter::DropRewriteFailed)
}
