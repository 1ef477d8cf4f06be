//! Re-encapsulating a translated reply towards the client's worker.
use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO,
    },
    helpers::bpf_get_prandom_u32,
    programs::TcContext,
};
use egress_common::{
    config::{tunnel_outer_ip_len, tunnel_outer_payload_len6, GatewayConfig, TUNNEL_OVERHEAD6},
    conntrack::{NatEntry, NatEntry6},
    counters::Counter,
};

use super::decap::InnerFrame;
use crate::{
    headers::{
        Ipv4Header, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, ETH_TYPE_OFF, IPPROTO_UDP, IPV4_HLEN, TUNNEL_OVERHEAD,
    },
    maps::TUNNEL_HEADER6,
    wire::{Ipv4Wire, Ipv6Wire},
};

const OUTER_TTL: u8 = 64;
/// VXLAN flags word with the "VNI present" bit (RFC 7348).
const VXLAN_FLAGS_VNI: u32 = 0x0800_0000;

/// `BPF_F_ADJ_ROOM_ENCAP_L2(len)` from the kernel UAPI: the inner L2 length
/// in the top byte, so GSO knows where the inner IPv4 header starts.
const fn encap_l2_len(len: u64) -> u64 {
    (len & 0xff) << 56
}

/// Outer IPv4 + UDP + VXLAN + inner Ethernet, exactly as on the wire
/// (packed: 50 bytes, no padding, every multi-byte field big-endian).
#[repr(C, packed)]
struct TunnelHeader {
    ip: Ipv4Wire,
    udp_src_port_be: u16,
    udp_dst_port_be: u16,
    udp_len_be: u16,
    udp_csum_be: u16,
    vxlan_flags_be: u32,
    vxlan_vni_be: u32,
    inner_dst_mac: [u8; 6],
    inner_src_mac: [u8; 6],
    inner_ethertype_be: u16,
}

const _: () = assert!(core::mem::size_of::<TunnelHeader>() == TUNNEL_OVERHEAD);

/// [`TunnelHeader`] over IPv6: 70 bytes, an inner IPv6 packet always.
#[repr(C, packed)]
struct TunnelHeader6 {
    ip: Ipv6Wire,
    udp_src_port_be: u16,
    udp_dst_port_be: u16,
    udp_len_be: u16,
    udp_csum_be: u16,
    vxlan_flags_be: u32,
    vxlan_vni_be: u32,
    inner_dst_mac: [u8; 6],
    inner_src_mac: [u8; 6],
    inner_ethertype_be: u16,
}

const _: () = assert!(core::mem::size_of::<TunnelHeader6>() == TUNNEL_OVERHEAD6);

/// Whether the packet, either family, can be tunnelled as it is: a single
/// packet must fit the MTU with the tunnel around it; a GSO aggregate is
/// cut into segments that fit later (their size comes from the client's
/// MSS), but its outer length must fit 16 bits. What to do with one that
/// does not is each family's own answer.
#[inline(always)]
pub fn fits_tunnel(ctx: &TcContext, cfg: &GatewayConfig) -> bool {
    fits_tunnel_of(ctx, cfg, TUNNEL_OVERHEAD)
}

/// [`fits_tunnel`] for a tunnel of either outer family, by its
/// `overhead` (`NatEntry6::tunnel_overhead`).
#[inline(always)]
pub fn fits_tunnel_of(ctx: &TcContext, cfg: &GatewayConfig, overhead: usize) -> bool {
    let ip_len = ctx.len() - ETH_HLEN as u32;
    if unsafe { (*ctx.skb.skb).gso_size } == 0 {
        cfg.mtu == 0 || ip_len + overhead as u32 <= cfg.mtu
    } else if overhead == TUNNEL_OVERHEAD6 {
        tunnel_outer_payload_len6(ip_len).is_some()
    } else {
        tunnel_outer_ip_len(ip_len).is_some()
    }
}

/// Makes room for the tunnel headers after the Ethernet header and writes
/// them towards `target`: outer `gateway_ip:vxlan_port ->
/// client_outer_ip:vxlan_port` (the source port is the one the worker sent
/// to, so the node's Service conntrack sees the reply of the flow it
/// DNATed), inner Ethernet from the tunnel gateway MAC to the worker's
/// device MAC.
///
/// BPF_F_ADJ_ROOM_FIXED_GSO: a GSO reply's segments are already sized by the
/// client's MSS, which `join` derived from the tunnel MTU (eth0's - 50), so
/// they fit once encapsulated; letting the kernel shrink gso_size by 50
/// would only waste room (and UDP GSO packets are refused without it).
#[inline(always)]
pub fn push_tunnel(ctx: &TcContext, cfg: &GatewayConfig, target: &TunnelTarget) -> Result<(), Counter> {
    // Checked before the packet grows: a GSO aggregate whose outer length
    // would not fit 16 bits is the caller's to resegment, never ours to
    // send with a wrapped length.
    if tunnel_outer_ip_len(ctx.len() - ETH_HLEN as u32).is_none() {
        return Err(Counter::DropTooBigForTunnel);
    }
    let flags = BPF_F_ADJ_ROOM_FIXED_GSO as u64
        | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 as u64
        | BPF_F_ADJ_ROOM_ENCAP_L4_UDP as u64
        | BPF_F_ADJ_ROOM_ENCAP_L2_ETH as u64
        | encap_l2_len(ETH_HLEN as u64);
    ctx.adjust_room(TUNNEL_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| Counter::DropRewriteFailed)?;
    if target.inner == InnerFamily::Ipv6 {
        // An IPv6 packet's skb->protocol becomes IPv4's with the outer
        // header (the kernel matches it to ENCAP_L3_IPV4, since Linux
        // 5.12): the redirect routes by it. Checked, never assumed. The
        // Ethernet header says so too.
        if unsafe { (*ctx.skb.skb).protocol } != ETH_P_IP.to_be() as u32 {
            return Err(Counter::DropRewriteFailed);
        }
        ctx.store(ETH_TYPE_OFF, &ETH_P_IP.to_be_bytes(), 0).map_err(|_| Counter::DropRewriteFailed)?;
    }
    write_tunnel_header(ctx, cfg, target)
}

/// [`push_tunnel`] over IPv6, towards the pod at `target.outer_ip`: the
/// 70 bytes of [`TunnelHeader6`], its UDP checksum zero (RFC 6935: the
/// worker's device takes it with `udp6zerocsumrx`; a GSO reply's could
/// not be computed here, as BPF cannot set up the checksum offload of a
/// header it pushed). skb->protocol stays IPv6.
#[inline(always)]
pub fn push_tunnel6(ctx: &TcContext, cfg: &GatewayConfig, target: &TunnelTarget6) -> Result<(), Counter> {
    if tunnel_outer_payload_len6(ctx.len() - ETH_HLEN as u32).is_none() {
        return Err(Counter::DropTooBigForTunnel);
    }
    let flags = BPF_F_ADJ_ROOM_FIXED_GSO as u64
        | BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 as u64
        | BPF_F_ADJ_ROOM_ENCAP_L4_UDP as u64
        | BPF_F_ADJ_ROOM_ENCAP_L2_ETH as u64
        | encap_l2_len(ETH_HLEN as u64);
    ctx.adjust_room(TUNNEL_OVERHEAD6 as i32, BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| Counter::DropRewriteFailed)?;
    write_tunnel_header6(ctx, cfg, target)
}

/// Who a packet is tunnelled back to over IPv6: the pod's own IPv6
/// address (`NatEntry6::client_ip`), and the MACs as in [`TunnelTarget`].
/// Borrowed, not copied: the programs that push it are near their 512
/// bytes of stack.
pub struct TunnelTarget6<'a> {
    pub outer_ip: &'a [u8; 16],
    pub client_mac: &'a [u8; 6],
    pub tunnel_gateway_mac: &'a [u8; 6],
}

impl TunnelTarget6<'_> {
    #[inline(always)]
    pub fn of(entry: &NatEntry6) -> TunnelTarget6<'_> {
        TunnelTarget6 {
            outer_ip: &entry.client_ip,
            client_mac: &entry.client_mac,
            tunnel_gateway_mac: &entry.tunnel_gateway_mac,
        }
    }
}

/// [`write_tunnel_header`] over IPv6: into the 70 bytes after the
/// Ethernet header, from the gateway's IPv6 address, the inner traffic
/// class copied to the outer one.
#[inline(always)]
pub fn write_tunnel_header6(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    target: &TunnelTarget6,
) -> Result<(), Counter> {
    let inner_ip_len = (ctx.len() - ETH_HLEN as u32).saturating_sub(TUNNEL_OVERHEAD6 as u32);
    let payload_len = tunnel_outer_payload_len6(inner_ip_len).ok_or(Counter::DropTooBigForTunnel)?;
    let class = inner_tos(ctx, InnerFamily::Ipv6, ETH_HLEN + TUNNEL_OVERHEAD6)?;
    let scratch = TUNNEL_HEADER6.get_ptr_mut(0).ok_or(Counter::DropRewriteFailed)?;
    // SAFETY: a per-CPU value nothing else on this CPU uses meanwhile, as
    // long as the header (packed: alignment 1).
    let header = unsafe { &mut *(scratch as *mut TunnelHeader6) };
    header.ip.fill(class, payload_len, IPPROTO_UDP, OUTER_TTL, &cfg.gateway_ip6, target.outer_ip);
    header.udp_src_port_be = cfg.vxlan_port_be;
    header.udp_dst_port_be = cfg.vxlan_port_be;
    header.udp_len_be = payload_len.to_be();
    header.udp_csum_be = 0;
    header.vxlan_flags_be = VXLAN_FLAGS_VNI.to_be();
    header.vxlan_vni_be = (cfg.vni << 8).to_be();
    header.inner_dst_mac = *target.client_mac;
    header.inner_src_mac = *target.tunnel_gateway_mac;
    header.inner_ethertype_be = ETH_P_IPV6.to_be();
    ctx.store(ETH_HLEN, header, 0).map_err(|_| Counter::DropRewriteFailed)
}

/// Which IP the tunnel carries: what its inner Ethernet header says, and
/// where the DSCP and ECN copied to the outer header are read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum InnerFamily {
    Ipv4,
    Ipv6,
}

/// Who a packet is tunnelled back to: the worker pod's address and its
/// tunnel device's MAC, and the MAC it sends to (the tunnel next hop's);
/// and which IP the packet is.
pub struct TunnelTarget {
    pub outer_ip_be: u32,
    pub client_mac: [u8; 6],
    pub tunnel_gateway_mac: [u8; 6],
    pub inner: InnerFamily,
}

impl TunnelTarget {
    #[inline(always)]
    pub fn of(entry: &NatEntry) -> TunnelTarget {
        TunnelTarget {
            outer_ip_be: entry.client_outer_ip_be,
            client_mac: entry.client_mac,
            tunnel_gateway_mac: entry.tunnel_gateway_mac,
            inner: InnerFamily::Ipv4,
        }
    }

    /// The worker of an IPv6 binding (its tunnel is IPv4 all the same).
    #[inline(always)]
    pub fn of6(entry: &NatEntry6) -> TunnelTarget {
        TunnelTarget {
            outer_ip_be: entry.client_outer_ip_be,
            client_mac: entry.client_mac,
            tunnel_gateway_mac: entry.tunnel_gateway_mac,
            inner: InnerFamily::Ipv6,
        }
    }

    /// Back to the worker that sent the tunnel packet whose outer header is
    /// `outer` and inner frame `inner` (the gateway's own answers to it).
    #[inline(always)]
    pub fn back_to_sender(outer: &Ipv4Header, inner: &InnerFrame) -> TunnelTarget {
        TunnelTarget {
            outer_ip_be: outer.src_be,
            client_mac: inner.client_mac,
            tunnel_gateway_mac: inner.tunnel_gateway_mac,
            inner: InnerFamily::Ipv4,
        }
    }
}

/// Writes the tunnel headers into the 50 bytes after the Ethernet header,
/// sized for the packet as it is now (whose length fits 16 bits, or this
/// fails rather than write a wrapped one), as Linux's VXLAN device writes
/// them: the inner packet's DSCP and ECN copied to the outer header (RFC
/// 6040's normal mode: a router that marks congestion on the outer header
/// marks what the worker's tunnel device hands on), and a fresh IP ID (the
/// outer DF bit is clear).
#[inline(always)]
pub fn write_tunnel_header(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    target: &TunnelTarget,
) -> Result<(), Counter> {
    let inner_ip_len = (ctx.len() - ETH_HLEN as u32).saturating_sub(TUNNEL_OVERHEAD as u32);
    let outer_ip_len = tunnel_outer_ip_len(inner_ip_len).ok_or(Counter::DropTooBigForTunnel)?;
    let inner_tos = inner_tos(ctx, target.inner, ETH_HLEN + TUNNEL_OVERHEAD)?;
    let id = unsafe { bpf_get_prandom_u32() } as u16;
    let header = TunnelHeader {
        ip: Ipv4Wire::new(
            outer_ip_len,
            inner_tos,
            id,
            OUTER_TTL,
            IPPROTO_UDP,
            cfg.gateway_ip_be,
            target.outer_ip_be,
        ),
        udp_src_port_be: cfg.vxlan_port_be,
        udp_dst_port_be: cfg.vxlan_port_be,
        udp_len_be: (outer_ip_len - IPV4_HLEN as u16).to_be(),
        // Zero: "no checksum", valid for UDP over IPv4 (RFC 7348 allows it).
        udp_csum_be: 0,
        vxlan_flags_be: VXLAN_FLAGS_VNI.to_be(),
        vxlan_vni_be: (cfg.vni << 8).to_be(),
        inner_dst_mac: target.client_mac,
        inner_src_mac: target.tunnel_gateway_mac,
        inner_ethertype_be: match target.inner {
            InnerFamily::Ipv4 => ETH_P_IP.to_be(),
            InnerFamily::Ipv6 => ETH_P_IPV6.to_be(),
        },
    };
    ctx.store(ETH_HLEN, &header, 0).map_err(|_| Counter::DropRewriteFailed)
}

/// The inner packet's DSCP and ECN byte: IPv4's TOS, or IPv6's traffic
/// class, which straddles its first two bytes; at `inner_ip_off`.
#[inline(always)]
fn inner_tos(ctx: &TcContext, inner: InnerFamily, inner_ip_off: usize) -> Result<u8, Counter> {
    let first: [u8; 2] = ctx.load(inner_ip_off).map_err(|_| Counter::DropMalformed)?;
    Ok(match inner {
        InnerFamily::Ipv4 => first[1],
        InnerFamily::Ipv6 => (first[0] << 4) | (first[1] >> 4),
    })
}
