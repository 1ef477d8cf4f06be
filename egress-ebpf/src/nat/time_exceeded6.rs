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
//! quoted whole: its tail cannot be cut (the kernel refuses
//! `bpf_skb_change_tail` on what a tunnel device sent), so only a packet
//! whose answer fits IPv6's minimum MTU is answered. Probes are small;
//! tracepath's larger ones go unanswered, as a silent hop.
//!
//! ```text
//! in:  [eth][outer IPv4 | UDP | VXLAN | inner eth: 50][IPv6 pod → remote, hop limit 1 | L4 ...]
//! out: [eth][outer IPv4 | UDP | VXLAN | inner eth: 50][IPv6 gateway → pod][ICMPv6 3/0][IPv6 pod → remote | L4 ...]
//! ```
use aya_ebpf::{bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, programs::TcContext};
use egress_common::{
    config::GatewayConfig,
    counters::Counter,
    ip::{is_icmpv6_error, ICMPV6_TIME_EXCEEDED, IPPROTO_ICMPV6},
};

use crate::{
    conntrack, csum,
    headers::{Ipv6Header, ETH_HLEN, IPV6_HLEN, TUNNEL_OVERHEAD},
    maps::{count, take_icmp_answer},
    tunnel::{
        decap::{INNER_ETH_OFF, INNER_IP_OFF},
        encap::{write_tunnel_header, InnerFamily, TunnelTarget},
    },
    wire::{Icmp6Answer, ICMP6_ANSWER_HLEN, ICMP6_ANSWER_MAX_QUOTE},
};

const ANSWER_IP_OFF: usize = ETH_HLEN + TUNNEL_OVERHEAD;

/// Code 0: the hop limit ran out in transit.
const CODE_HOP_LIMIT: u8 = 0;

/// Turns client `client_id`'s expired packet `ip`, which came in the tunnel
/// from `outer_ip_be`, into its answer. On success the packet has been
/// counted (`drop_ttl_exceeded`: it goes no further) and the answer is
/// ready to be sent out of the attached interface; an error leaves a
/// packet only fit to be dropped.
#[inline(always)]
pub fn answer(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    outer_ip_be: u32,
    ip: &Ipv6Header,
    client_id: u32,
) -> Result<(), Counter> {
    let quote_len = IPV6_HLEN + ip.payload_len as usize;
    // A GSO super-packet would have to be answered once per segment: only
    // dropped, as a packet too big to be quoted whole.
    if quote_len > ICMP6_ANSWER_MAX_QUOTE || unsafe { (*ctx.skb.skb).gso_size } != 0 {
        return Err(Counter::DropTtlExceeded);
    }
    if ip.next_header == IPPROTO_ICMPV6 {
        let icmp_type: u8 = ctx.load(INNER_IP_OFF + IPV6_HLEN).map_err(|_| Counter::DropMalformed)?;
        if is_icmpv6_error(icmp_type) {
            return Err(Counter::DropTtlExceeded);
        }
    }
    if !take_icmp_answer(client_id, conntrack::now_ns()) {
        count(Counter::IcmpAnswerRateLimited);
        return Err(Counter::DropTtlExceeded);
    }
    // The inner Ethernet header: to the tunnel's gateway MAC, from the
    // worker's device, which the answer goes back to.
    let target = TunnelTarget {
        outer_ip_be,
        client_mac: ctx.load(INNER_ETH_OFF + 6).map_err(|_| Counter::DropMalformed)?,
        tunnel_gateway_mac: ctx.load(INNER_ETH_OFF).map_err(|_| Counter::DropMalformed)?,
        inner: InnerFamily::Ipv6,
    };
    let quoted = csum::quote_sum::<ICMP6_ANSWER_MAX_QUOTE>(ctx, INNER_IP_OFF, quote_len)?;
    ctx.adjust_room(ICMP6_ANSWER_HLEN as i32, BPF_ADJ_ROOM_MAC, 0).map_err(|_| Counter::DropRewriteFailed)?;
    let answer = Icmp6Answer::new(
        (ICMPV6_TIME_EXCEEDED, CODE_HOP_LIMIT, 0),
        quote_len,
        quoted,
        &cfg.gateway_ip6,
        &ip.src,
    );
    ctx.store(ANSWER_IP_OFF, &answer, 0).map_err(|_| Counter::DropRewriteFailed)?;
    write_tunnel_header(ctx, cfg, &target)?;
    count(Counter::DropTtlExceeded);
    Ok(())
}
