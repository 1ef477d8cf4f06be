//! An IPv6 reply that does not fit the tunnel is answered as an IPv6
//! router answers it, for IPv6 routers never fragment: ICMPv6 Packet Too
//! Big (RFC 4443 3.2), from the gateway's IPv6 address to the remote, with
//! the tunnel's MTU for IPv6 (eth0's - 50, or - 70 for a client whose
//! tunnel is over IPv6). The remote's kernel learns the
//! smaller path MTU (RFC 8201) and sends the next reply in packets that
//! fit: its TCP a smaller segment, QUIC a smaller datagram, a UDP sender
//! that fragments smaller fragments (`fragments6`).
//!
//! The answer quotes the reply as it arrived (before any translation: the
//! remote must recognise its own packet), as much of it as keeps the answer
//! within IPv6's minimum MTU (RFC 4443 2.4 (c)). Answers come out of the
//! binding's client's allowance, as the gateway's other ICMP answers do (6
//! at once, then 1 a second): a remote cannot make the gateway a traffic
//! generator, and what one client's remotes draw never uses up another's.
//!
//! ```text
//! in:  [eth][IPv6 remote → gateway | L4 ... 1,451+ bytes]
//! out: [eth][IPv6 gateway → remote][ICMPv6 2/0, MTU][IPv6 remote → gateway | L4 ...]: 1,280 bytes
//! ```
use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, helpers::generated::bpf_skb_change_tail,
    programs::TcContext,
};
use egress_common::{
    config::{GatewayConfig, IPV6_MIN_MTU},
    counters::Counter,
    ip::ICMPV6_PACKET_TOO_BIG,
};

use crate::{
    conntrack, csum,
    headers::{Ipv6Header, ETH_HLEN, IPV6_HLEN},
    maps::{count, take_icmp_answer},
    wire::{Icmp6Answer, ICMP6_ANSWER_HLEN, ICMP6_ANSWER_MAX_QUOTE},
};

const IP_OFF: usize = ETH_HLEN;

/// Turns the too-big reply `ip` of client `client_id`'s flow, whose tunnel
/// adds `overhead` bytes, into the answer to its remote. The reply is counted as dropped
/// (`drop_too_big_for_tunnel`) either way; on success the answer is ready
/// to be sent out of the attached interface.
#[inline(always)]
pub fn answer(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    ip: &Ipv6Header,
    client_id: u32,
    overhead: u32,
) -> Result<(), Counter> {
    // A GSO aggregate's segments are sized by the client's MSS: one too
    // long for the tunnel's 16-bit length needs resegmenting, which IPv6
    // does not have yet (issue 14), not a smaller path MTU. Dropped.
    if unsafe { (*ctx.skb.skb).gso_size } != 0 {
        return Err(Counter::DropTooBigForTunnel);
    }
    // Under IPv6's minimum MTU the tunnel cannot carry IPv6 as it must:
    // an MTU below 1,280 in the answer would be ignored (RFC 8201 4).
    let tunnel_mtu = cfg.mtu.saturating_sub(overhead);
    let packet_len = IPV6_HLEN + ip.payload_len as usize;
    if tunnel_mtu < IPV6_MIN_MTU as u32 || packet_len <= tunnel_mtu as usize {
        return Err(Counter::DropTooBigForTunnel);
    }
    if !take_icmp_answer(client_id, conntrack::now_ns()) {
        count(Counter::IcmpAnswerRateLimited);
        return Err(Counter::DropTooBigForTunnel);
    }
    // A reply too big for a tunnel of at least 1,280 bytes is longer than
    // the quote.
    let quoted = csum::quote_sum::<ICMP6_ANSWER_MAX_QUOTE>(ctx, IP_OFF, ICMP6_ANSWER_MAX_QUOTE)?;
    let ret = unsafe { bpf_skb_change_tail(ctx.skb.skb, (ETH_HLEN + ICMP6_ANSWER_MAX_QUOTE) as u32, 0) };
    if ret != 0 {
        return Err(Counter::DropRewriteFailed);
    }
    ctx.adjust_room(ICMP6_ANSWER_HLEN as i32, BPF_ADJ_ROOM_MAC, 0).map_err(|_| Counter::DropRewriteFailed)?;
    let answer = Icmp6Answer::new(
        (ICMPV6_PACKET_TOO_BIG, 0, tunnel_mtu),
        ICMP6_ANSWER_MAX_QUOTE,
        quoted,
        &cfg.gateway_ip6,
        &ip.src,
    );
    ctx.store(IP_OFF, &answer, 0).map_err(|_| Counter::DropRewriteFailed)?;
    count(Counter::DropTooBigForTunnel);
    Ok(())
}
