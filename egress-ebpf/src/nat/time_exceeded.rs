//! A client's packet whose TTL runs out at the gateway is answered as a
//! router answers it: ICMP time exceeded (RFC 792) from the gateway's
//! address, quoting the packet's IPv4 header and first 8 bytes, sent back
//! through the tunnel. traceroute from a worker then shows the gateway as
//! its first hop instead of a `*`.
//!
//! As RFC 1812 (4.3.2.7) asks of a router, and as Linux does: never about
//! an ICMP error (two routers could answer each other's errors forever),
//! never to or about a multicast or broadcast address (one packet would
//! draw many answers; the caller already dropped such destinations as
//! martians), and at most 6 answers at once, then 1 a second, per client
//! (`icmp_ratelimit`): a client sending expiring packets cannot make the
//! gateway a traffic generator.
//!
//! The packet is rebuilt in place, 28 bytes more in front of it. Its tail
//! stays: the whole expired packet is quoted (RFC 1812 asks for as much as
//! fits in 576 bytes). The tail cannot be cut: the kernel refuses
//! `bpf_skb_change_tail` on a packet that came out of a tunnel device,
//! which is what a worker on the gateway's node sends.
//!
//! ```text
//! in:  [eth][outer IPv4 | UDP | VXLAN | inner eth: 50][inner IPv4 | L4 ...]
//! out: [eth][outer IPv4 | UDP | VXLAN | inner eth: 50][IPv4][ICMP][inner IPv4 | L4 ...]
//! ```
use aya_ebpf::{bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, programs::TcContext};
use egress_common::{config::GatewayConfig, counters::Counter, ip::is_martian_destination};

use crate::{
    conntrack, csum,
    headers::{
        is_icmp_error, Ipv4Header, ETH_HLEN, ICMP_TIME_EXCEEDED, IPPROTO_ICMP, IPV4_HLEN, TUNNEL_OVERHEAD,
    },
    maps::{count, take_icmp_answer},
    tunnel::{
        decap::{InnerFrame, INNER_IP_OFF},
        encap::{write_tunnel_header, TunnelTarget},
    },
    wire::{IcmpAnswer, ICMP_ANSWER_HLEN, ICMP_ANSWER_MAX_QUOTE},
};

const ANSWER_IP_OFF: usize = ETH_HLEN + TUNNEL_OVERHEAD;

/// Turns the expired packet of client `client_id` into its answer. On
/// success the packet has been counted (`drop_ttl_exceeded`: it goes no
/// further) and the answer is ready to be sent out of the attached
/// interface; an error leaves a packet only fit to be dropped.
#[inline(always)]
pub fn answer(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    outer: &Ipv4Header,
    inner: &InnerFrame,
    client_id: u32,
) -> Result<(), Counter> {
    let quote_len = inner.ip.total_len as usize;
    // A GSO super-packet would have to be answered once per segment, and a
    // large packet would make a large answer: both rare (probes are small),
    // both only dropped.
    if quote_len > ICMP_ANSWER_MAX_QUOTE || unsafe { (*ctx.skb.skb).gso_size } != 0 {
        return Err(Counter::DropTtlExceeded);
    }
    if !may_answer(ctx, cfg, inner)? {
        return Err(Counter::DropTtlExceeded);
    }
    if !take_icmp_answer(client_id, conntrack::now_ns()) {
        count(Counter::IcmpAnswerRateLimited);
        return Err(Counter::DropTtlExceeded);
    }
    let quoted = csum::quote_sum::<ICMP_ANSWER_MAX_QUOTE>(ctx, INNER_IP_OFF, quote_len)?;
    ctx.adjust_room(ICMP_ANSWER_HLEN as i32, BPF_ADJ_ROOM_MAC, 0).map_err(|_| Counter::DropRewriteFailed)?;
    let answer =
        IcmpAnswer::new((ICMP_TIME_EXCEEDED, 0, 0), quote_len, quoted, cfg.gateway_ip_be, inner.ip.src_be);
    ctx.store(ANSWER_IP_OFF, &answer, 0).map_err(|_| Counter::DropRewriteFailed)?;
    write_tunnel_header(ctx, cfg, &TunnelTarget::back_to_sender(outer, inner))?;
    count(Counter::DropTtlExceeded);
    Ok(())
}

/// Whether RFC 1812 lets a router answer this expired packet: not when it
/// is an ICMP error or a later fragment, not when it comes from or goes to an address that is
/// not one host's.
#[inline(always)]
fn may_answer(ctx: &TcContext, cfg: &GatewayConfig, inner: &InnerFrame) -> Result<bool, Counter> {
    if is_martian_destination(inner.ip.src_be, cfg.gateway_ip_be)
        || is_martian_destination(inner.ip.dst_be, cfg.gateway_ip_be)
    {
        return Ok(false);
    }
    // Only about a datagram's first fragment (RFC 1812 4.3.2.7): its
    // other fragments would draw more answers about the same datagram.
    if inner.ip.is_later_fragment() {
        return Ok(false);
    }
    if inner.ip.protocol != IPPROTO_ICMP {
        return Ok(true);
    }
    let icmp_type: u8 = ctx.load(INNER_IP_OFF + IPV4_HLEN).map_err(|_| Counter::DropMalformed)?;
    Ok(!is_icmp_error(icmp_type))
}
