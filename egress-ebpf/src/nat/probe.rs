//! The tunnel's gateway address answers pings. A worker's default route
//! names 169.254.42.1 (`TUNNEL_GATEWAY_IP`) as its next hop through the
//! tunnel; an echo request to that address is answered by the program
//! itself, back through the same tunnel. A reply therefore proves the
//! worker's whole path to this gateway pod: its tunnel device, the
//! Service's DNAT, the network between, the program attached and the pod
//! listed. Nothing is forwarded, bound or remembered: the request becomes
//! its reply in place (one packet for one, like any host's echo). While
//! the pod drains, the reply's code says so (`PROBE_DRAINING_CODE`).
//!
//! ```text
//! in:  [eth][outer: worker → Service | UDP | VXLAN | eth][IPv4 pod → 169.254.42.1][ICMP echo request]
//! out: [eth][outer: gateway → worker | UDP | VXLAN | eth][IPv4 169.254.42.1 → pod][ICMP echo reply]
//! ```
use aya_ebpf::programs::TcContext;
use egress_common::{
    config::{GatewayConfig, PROBE_DRAINING_CODE, TUNNEL_GATEWAY_IP},
    counters::Counter,
};

use crate::{
    headers::{Ipv4Header, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, IPPROTO_ICMP, IPV4_HLEN},
    tunnel::{
        decap::{InnerFrame, INNER_IP_OFF},
        encap::{write_tunnel_header, TunnelTarget},
    },
};

const ICMP_OFF: usize = INNER_IP_OFF + IPV4_HLEN;
/// Where the addresses start in an IPv4 header.
const IP_ADDRS_OFF: usize = 12;

/// Whether the client's packet is an echo request to the tunnel's gateway
/// address (a whole one: a fragment is no probe).
#[inline(always)]
pub fn is_probe(ctx: &TcContext, ip: &Ipv4Header) -> bool {
    ip.dst_be == u32::from_ne_bytes(TUNNEL_GATEWAY_IP)
        && ip.protocol == IPPROTO_ICMP
        && !ip.is_fragment()
        && ctx.load::<u8>(ICMP_OFF).is_ok_and(|icmp_type| icmp_type == ICMP_ECHO_REQUEST)
}

/// Turns the probe from the client behind `outer` into its echo reply, in
/// place, addressed back through the client's tunnel; ready to be sent out
/// of the attached interface. An error leaves a packet only fit to be
/// dropped.
#[inline(always)]
pub fn answer(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    outer: &Ipv4Header,
    inner: &InnerFrame,
) -> Result<(), Counter> {
    // A GSO super-packet would need an answer per segment; pings are small.
    if unsafe { (*ctx.skb.skb).gso_size } != 0 {
        return Err(Counter::DropMalformed);
    }
    // The first 16-bit word (type, code) becomes the reply's: type 0, code
    // 0, or the draining mark while the pod terminates. The ICMP checksum
    // covers it; the addresses it does not cover.
    let code: u8 = ctx.load(ICMP_OFF + 1).map_err(|_| Counter::DropMalformed)?;
    let reply_code = if cfg.draining != 0 { PROBE_DRAINING_CODE } else { 0 };
    let request_word = u16::from_ne_bytes([ICMP_ECHO_REQUEST, code]);
    let reply_word = u16::from_ne_bytes([ICMP_ECHO_REPLY, reply_code]);
    ctx.l4_csum_replace(ICMP_OFF + 2, request_word as u64, reply_word as u64, 2)
        .map_err(|_| Counter::DropRewriteFailed)?;
    ctx.store(ICMP_OFF, &reply_word, 0).map_err(|_| Counter::DropRewriteFailed)?;
    // The addresses swap places: the header checksum, a sum, stays right.
    let swapped: [u32; 2] = [inner.ip.dst_be, inner.ip.src_be];
    ctx.store(INNER_IP_OFF + IP_ADDRS_OFF, &swapped, 0).map_err(|_| Counter::DropRewriteFailed)?;
    write_tunnel_header(ctx, cfg, &TunnelTarget::back_to_sender(outer, inner))
}
