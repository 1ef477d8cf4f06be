//! Validating and stripping the worker's VXLAN encapsulation.
use aya_ebpf::{
    bindings::{bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO},
    programs::TcContext,
};
use egress_common::{config::GatewayConfig, counters::Counter};

use crate::headers::{
    Ipv4Header, Ipv6Header, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, ETH_TYPE_OFF, IPV4_HLEN, IPV6_HLEN, IP_CSUM_OFF,
    TUNNEL_OVERHEAD, UDP_HLEN, VXLAN_HLEN,
};

/// ECN codepoints (the TOS byte's two low bits, RFC 3168).
const ECN_MASK: u8 = 0x03;
const ECN_ECT1: u8 = 0x01;
const ECN_ECT0: u8 = 0x02;
const ECN_CE: u8 = 0x03;
const ECN_NOT_ECT: u8 = 0x00;

/// Where the inner frame's headers sit while the tunnel is still on.
pub const VXLAN_OFF: usize = ETH_HLEN + IPV4_HLEN + UDP_HLEN;
pub const INNER_ETH_OFF: usize = VXLAN_OFF + VXLAN_HLEN;
pub const INNER_IP_OFF: usize = INNER_ETH_OFF + ETH_HLEN;

/// VXLAN flags byte: the "VNI present" bit (RFC 7348).
const VXLAN_FLAG_VNI: u8 = 0x08;

/// The inner frame of a valid tunnel packet.
pub struct InnerFrame {
    pub client_mac: [u8; 6],
    pub tunnel_gateway_mac: [u8; 6],
    pub ip: Ipv4Header,
}

/// What a valid tunnel packet carries.
pub enum Inner {
    Ipv4(InnerFrame),
    /// An IPv6 frame: `egress_gateway6` (`crate::ipv6`) checks the rest.
    Ipv6,
}

/// Checks the VXLAN header and the inner Ethernet/IPv4 headers. The outer
/// UDP checksum is never looked at: workers send zero (valid for IPv4) and a
/// Service DNAT on the way may leave it stale.
#[inline(always)]
pub fn parse_tunnel(ctx: &TcContext, cfg: &GatewayConfig) -> Result<Inner, Counter> {
    check_vxlan(ctx, cfg, VXLAN_OFF)?;
    let eth: [u8; 14] = ctx.load(INNER_ETH_OFF).map_err(|_| Counter::DropMalformed)?;
    match u16::from_be_bytes([eth[12], eth[13]]) {
        ETH_P_IP => {}
        ETH_P_IPV6 => return Ok(Inner::Ipv6),
        _ => return Err(Counter::DropUnsupportedProtocol),
    }
    let ip = Ipv4Header::load(ctx, INNER_IP_OFF).map_err(|_| Counter::DropMalformed)?;
    if !ip.is_v4() || (ip.version_ihl & 0x0f) < 5 || (ip.total_len as usize) < IPV4_HLEN {
        return Err(Counter::DropMalformed);
    }
    // The inner packet must be all there (see `classify` on the outer one).
    if ip.total_len as u32 > ctx.len().saturating_sub(INNER_IP_OFF as u32) {
        return Err(Counter::DropMalformed);
    }
    if ip.has_options() {
        return Err(Counter::DropIpOptions);
    }
    Ok(Inner::Ipv4(InnerFrame {
        client_mac: [eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]],
        tunnel_gateway_mac: [eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]],
        ip,
    }))
}

/// Checks the VXLAN header at `vxlan_off`: the VNI present, and ours.
#[inline(always)]
pub fn check_vxlan(ctx: &TcContext, cfg: &GatewayConfig, vxlan_off: usize) -> Result<(), Counter> {
    let vxlan: [u8; 8] = ctx.load(vxlan_off).map_err(|_| Counter::DropMalformed)?;
    let vni = u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]);
    if vxlan[0] & VXLAN_FLAG_VNI == 0 || vni != cfg.vni {
        return Err(Counter::DropBadVni);
    }
    Ok(())
}

/// Merges the outer header's ECN into the inner packet before the tunnel
/// goes, as RFC 6040 says a decapsulator must: congestion marked on the
/// tunnel (CE) is passed on to an ECN-capable inner packet, and a marked
/// tunnel packet whose inner packet is not ECN-capable is dropped (the
/// mark cannot be passed on). The inner checksum follows.
#[inline(always)]
pub fn merge_ecn(ctx: &TcContext, outer_tos: u8, inner: &Ipv4Header) -> Result<(), Counter> {
    let Some(tos) = merged_tos(outer_tos, inner.tos)? else { return Ok(()) };
    let old_word = u16::from_ne_bytes([inner.version_ihl, inner.tos]);
    let new_word = u16::from_ne_bytes([inner.version_ihl, tos]);
    ctx.l3_csum_replace(INNER_IP_OFF + IP_CSUM_OFF, old_word as u64, new_word as u64, 2)
        .map_err(|_| Counter::DropRewriteFailed)?;
    ctx.store(INNER_IP_OFF + 1, &tos, 0).map_err(|_| Counter::DropRewriteFailed)
}

/// [`merge_ecn`] for an inner IPv6 packet, whose traffic class straddles
/// its first two bytes (and which has no header checksum);
/// `inner_ip_off` is where it sits (after either outer header).
#[inline(always)]
pub fn merge_ecn6(
    ctx: &TcContext,
    outer_tos: u8,
    inner: &Ipv6Header,
    inner_ip_off: usize,
) -> Result<(), Counter> {
    let Some(class) = merged_tos(outer_tos, inner.traffic_class())? else { return Ok(()) };
    let first = (inner.first_word_high & 0xf00f) | ((class as u16) << 4);
    ctx.store(inner_ip_off, &first.to_be_bytes(), 0).map_err(|_| Counter::DropRewriteFailed)
}

/// The inner TOS (or traffic class) byte once the outer ECN is merged in,
/// or None when it stays as it is.
#[inline(always)]
fn merged_tos(outer_tos: u8, inner_tos: u8) -> Result<Option<u8>, Counter> {
    let (outer_ecn, inner_ecn) = (outer_tos & ECN_MASK, inner_tos & ECN_MASK);
    let merged = match (outer_ecn, inner_ecn) {
        (ECN_CE, ECN_NOT_ECT) => return Err(Counter::DropCeOnNotEct),
        (ECN_CE, _) => ECN_CE,
        (ECN_ECT1, ECN_ECT0) => ECN_ECT1,
        _ => inner_ecn,
    };
    if merged == inner_ecn {
        return Ok(None);
    }
    Ok(Some((inner_tos & !ECN_MASK) | merged))
}

/// Removes outer IPv4/UDP/VXLAN and the inner Ethernet header, keeping the
/// outer Ethernet header (its MACs are rewritten by the redirect).
///
/// BPF_F_ADJ_ROOM_FIXED_GSO: the worker's TCP already sized its segments
/// for the tunnel MTU; without the flag the kernel would grow gso_size by
/// the removed 50 bytes and the segments would no longer fit eth0's MTU.
#[inline(always)]
pub fn strip_tunnel(ctx: &TcContext) -> Result<(), Counter> {
    ctx.adjust_room(-(TUNNEL_OVERHEAD as i32), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO as u64)
        .map_err(|_| Counter::DropRewriteFailed)
}

/// [`strip_tunnel`] for an inner IPv6 packet, which must also leave as
/// IPv6: its ethertype and skb->protocol, by which the redirect picks its
/// route and neighbour table and GSO its segmentation.
///
/// bpf_skb_change_proto (every kernel we run on) switches skb->protocol
/// and pushes the 20 bytes an IPv6 header has more than an IPv4 one after
/// the MAC header, so the tunnel goes with them. (Linux 6.3's
/// BPF_F_ADJ_ROOM_DECAP_L3_IPV6 would do it in one call; 6.1 lacks it.)
/// A TCPv6 GSO type, the inner one, is left as it is.
#[inline(always)]
pub fn strip_tunnel6(ctx: &TcContext) -> Result<(), Counter> {
    ctx.change_proto(ETH_P_IPV6.to_be(), 0).map_err(|_| Counter::DropRewriteFailed)?;
    let pushed = (IPV6_HLEN - IPV4_HLEN) as i32;
    ctx.adjust_room(-(TUNNEL_OVERHEAD as i32 + pushed), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO as u64)
        .map_err(|_| Counter::DropRewriteFailed)?;
    ctx.store(ETH_TYPE_OFF, &ETH_P_IPV6.to_be_bytes(), 0).map_err(|_| Counter::DropRewriteFailed)?;
    // The redirect routes by skb->protocol: checked, never assumed.
    if unsafe { (*ctx.skb.skb).protocol } != ETH_P_IPV6.to_be() as u32 {
        return Err(Counter::DropRewriteFailed);
    }
    Ok(())
}
