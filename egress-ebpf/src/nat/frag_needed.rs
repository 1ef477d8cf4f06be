//! A reply that does not fit the tunnel and may not be fragmented (DF
//! set) is answered as Linux's own VXLAN device answers it: ICMP
//! destination unreachable, fragmentation needed (RFC 792, RFC 1191), from
//! the gateway's address to the remote, with the tunnel's MTU as the next
//! hop's. The remote's kernel learns the smaller path MTU and sends the
//! next reply in fragments that fit, or its TCP a smaller segment.
//!
//! The answer quotes the reply as it arrived (before any translation: the
//! remote must recognise its own packet), as much of it as keeps the
//! answer within 576 bytes (RFC 1812 4.3.2.3). Answers come out of the
//! binding's client's allowance, as the gateway's other ICMP answers do (6
//! at once, then 1 a second): a remote cannot make the gateway a traffic
//! generator, and what one client's remotes draw never uses up another's.
//!
//! ```text
//! in:  [eth][IPv4 remote -> gateway | L4 ... 1,450+ bytes]
//! out: [eth][IPv4 gateway -> remote][ICMP 3/4, MTU][IPv4 remote -> gateway | L4 ...]: 576 bytes
//! ```
use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, helpers::generated::bpf_skb_change_tail,
    programs::TcContext,
};
use egress_common::{
    config::{GatewayConfig, TUNNEL_OVERHEAD},
    counters::Counter,
};

use crate::{
    conntrack, csum,
    headers::{Ipv4Header, ETH_HLEN, ICMP_DEST_UNREACHABLE},
    maps::{count, take_icmp_answer},
    nat::to_client::IP_OFF,
    wire::{IcmpAnswer, ICMP_ANSWER_HLEN, ICMP_ANSWER_MAX_QUOTE},
};

/// Destination unreachable's code for "fragmentation needed and DF set".
const CODE_FRAG_NEEDED: u8 = 4;

/// Turns the too-big reply `ip` of client `client_id`'s flow into the
/// answer to its remote. The reply is counted as dropped
/// (`drop_too_big_for_tunnel`) either way; on success the answer is ready
/// to be sent out of the attached interface.
#[inline(always)]
pub fn answer(ctx: &TcContext, cfg: &GatewayConfig, ip: &Ipv4Header, client_id: u32) -> Result<(), Counter> {
    // Anything bigger than the tunnel is longer than the quote unless eth0's
    // MTU is under 626, where such a reply is only dropped.
    if (ip.total_len as usize) < ICMP_ANSWER_MAX_QUOTE {
        return Err(Counter::DropTooBigForTunnel);
    }
    if !take_icmp_answer(client_id, conntrack::now_ns()) {
        count(Counter::IcmpAnswerRateLimited);
        return Err(Counter::DropTooBigForTunnel);
    }
    let tunnel_mtu = (cfg.mtu - TUNNEL_OVERHEAD as u32) as u16;
    let quoted = csum::quote_sum::<ICMP_ANSWER_MAX_QUOTE>(ctx, IP_OFF, ICMP_ANSWER_MAX_QUOTE)?;
    let ret = unsafe { bpf_skb_change_tail(ctx.skb.skb, (ETH_HLEN + ICMP_ANSWER_MAX_QUOTE) as u32, 0) };
    if ret != 0 {
        return Err(Counter::DropRewriteFailed);
    }
    ctx.adjust_room(ICMP_ANSWER_HLEN as i32, BPF_ADJ_ROOM_MAC, 0).map_err(|_| Counter::DropRewriteFailed)?;
    let answer = IcmpAnswer::new(
        (ICMP_DEST_UNREACHABLE, CODE_FRAG_NEEDED, tunnel_mtu as u32),
        ICMP_ANSWER_MAX_QUOTE,
        quoted,
        cfg.gateway_ip_be,
        ip.src_be,
    );
    ctx.store(IP_OFF, &answer, 0).map_err(|_| Counter::DropRewriteFailed)?;
    count(Counter::DropTooBigForTunnel);
    Ok(())
}
