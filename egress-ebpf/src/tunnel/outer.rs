//! The two tunnels a worker's IPv6 may come in: VXLAN over IPv4 (a
//! dual-stack cluster) and VXLAN over IPv6 (an IPv6-only cluster, whose
//! pods `join` tunnels over IPv6). The client side of the IPv6 path is
//! written once, generic over [`Outer`], and compiled once for each into
//! programs of its own (`egress_gateway6` and `egress_o6_gw`, and each
//! one's hand-ons): every copy has its header offsets fixed at compile
//! time, as the verifier and the 512-byte stack want, and the IPv4-outer
//! copies are what they were before IPv6 outers came.
//!
//! ```text
//! Outer4: [eth][IPv4 worker → gateway | UDP | VXLAN | eth: 50][IPv6 pod → remote]...
//! Outer6: [eth][IPv6 pod → gateway    | UDP | VXLAN | eth: 70][IPv6 pod → remote]...
//! ```
//!
//! An IPv6 outer's source is the pod's own IPv6 address, and the inner
//! packet must carry the same (checked here, `drop_spoofed_inner_source`):
//! a binding's `client_ip` is then where its replies are tunnelled, and
//! the binding says so with `FLOW_OUTER_IPV6`.
use aya_ebpf::{
    bindings::{bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO},
    programs::TcContext,
};
use egress_common::{
    config::{GatewayConfig, TUNNEL_OVERHEAD, TUNNEL_OVERHEAD6},
    conntrack::FLOW_OUTER_IPV6,
    counters::Counter,
    maps::{
        CLIENT_TUNNEL_IPV6, IPV6_CLIENT_ERROR_PROGRAM_SLOT, IPV6_FRAGMENT_PROGRAM_SLOT,
        IPV6_OUTER_CLIENT_ERROR_PROGRAM_SLOT, IPV6_OUTER_FRAGMENT_PROGRAM_SLOT,
        IPV6_OUTER_TIME_EXCEEDED_PROGRAM_SLOT, IPV6_TIME_EXCEEDED_PROGRAM_SLOT,
    },
};

use crate::{
    headers::{Ipv4Header, Ipv6Header, ETH_HLEN, ETH_P_IPV6, ETH_TYPE_OFF, IPV6_SRC_OFF, VXLAN_HLEN},
    maps::{CLIENTS, CLIENTS6},
    tunnel::{
        decap::{check_vxlan, strip_tunnel6},
        encap::{write_tunnel_header, write_tunnel_header6, InnerFamily, TunnelTarget, TunnelTarget6},
    },
};

/// What the tunnel around a client's IPv6 packet says about its sender.
pub struct Sender {
    /// The worker pod's outer IPv4, where replies are tunnelled to; 0 with
    /// an IPv6 outer, whose address is the inner source's.
    pub outer_ip_be: u32,
    /// The outer header's DSCP and ECN (RFC 6040).
    pub outer_tos: u8,
    pub client_id: u32,
}

/// A worker's tunnel, by its outer header.
pub trait Outer {
    /// What the tunnel adds in front of the inner IP packet, after the
    /// outer Ethernet header: outer IP, UDP, VXLAN, inner Ethernet.
    const OVERHEAD: usize;
    const INNER_IP_OFF: usize = ETH_HLEN + Self::OVERHEAD;
    const INNER_ETH_OFF: usize = Self::INNER_IP_OFF - ETH_HLEN;
    const VXLAN_OFF: usize = Self::INNER_ETH_OFF - VXLAN_HLEN;
    /// What a binding made in this tunnel carries in its flags.
    const BINDING_FLAGS: u8;
    /// The slots of this tunnel's copies of the programs the client path
    /// hands on to.
    const CLIENT_ERROR_SLOT: u32;
    const FRAGMENT_SLOT: u32;
    const TIME_EXCEEDED_SLOT: u32;

    /// The labeled pod that sent the tunnel packet, or why it is dropped.
    fn sender(ctx: &TcContext, cfg: &GatewayConfig) -> Result<Sender, Counter>;

    /// Removes the tunnel, leaving the inner IPv6 packet behind the outer
    /// Ethernet header, skb->protocol IPv6.
    fn strip(ctx: &TcContext) -> Result<(), Counter>;

    /// Writes the tunnel headers back to `sender` (the pod whose address
    /// is `client_ip`) in front of a packet that has room for them: the
    /// gateway's own answer to a client.
    fn write_answer_tunnel(
        ctx: &TcContext,
        cfg: &GatewayConfig,
        sender: &Sender,
        client_ip: &[u8; 16],
        macs: ([u8; 6], [u8; 6]),
    ) -> Result<(), Counter>;
}

/// VXLAN over IPv4. The main program checked the VXLAN header, the inner
/// ethertype and that the outer source is a labeled pod before the tail
/// call; the client is found again (a tail call carries nothing over but
/// the packet).
pub struct Outer4;

impl Outer for Outer4 {
    const OVERHEAD: usize = TUNNEL_OVERHEAD;
    const BINDING_FLAGS: u8 = 0;
    const CLIENT_ERROR_SLOT: u32 = IPV6_CLIENT_ERROR_PROGRAM_SLOT;
    const FRAGMENT_SLOT: u32 = IPV6_FRAGMENT_PROGRAM_SLOT;
    const TIME_EXCEEDED_SLOT: u32 = IPV6_TIME_EXCEEDED_PROGRAM_SLOT;

    #[inline(always)]
    fn sender(ctx: &TcContext, _cfg: &GatewayConfig) -> Result<Sender, Counter> {
        let outer = Ipv4Header::load(ctx, ETH_HLEN).map_err(|_| Counter::DropMalformed)?;
        let client = unsafe { CLIENTS.get(&outer.src_be) }.ok_or(Counter::DropUnknownClient)?;
        Ok(Sender { outer_ip_be: outer.src_be, outer_tos: outer.tos, client_id: client.client_id })
    }

    #[inline(always)]
    fn strip(ctx: &TcContext) -> Result<(), Counter> {
        strip_tunnel6(ctx)
    }

    #[inline(always)]
    fn write_answer_tunnel(
        ctx: &TcContext,
        cfg: &GatewayConfig,
        sender: &Sender,
        _client_ip: &[u8; 16],
        (client_mac, tunnel_gateway_mac): ([u8; 6], [u8; 6]),
    ) -> Result<(), Counter> {
        let target = TunnelTarget {
            outer_ip_be: sender.outer_ip_be,
            client_mac,
            tunnel_gateway_mac,
            inner: InnerFamily::Ipv6,
        };
        write_tunnel_header(ctx, cfg, &target)
    }
}

/// VXLAN over IPv6. Nothing was checked before the tail call but the
/// destination (the gateway's IPv6 address, UDP to the tunnel port): the
/// VXLAN header, the inner ethertype, the client (listed by its IPv6
/// address, `CLIENT_TUNNEL_IPV6`) and its address are all checked here,
/// by every program of this tunnel.
pub struct Outer6;

impl Outer for Outer6 {
    const OVERHEAD: usize = TUNNEL_OVERHEAD6;
    const BINDING_FLAGS: u8 = FLOW_OUTER_IPV6;
    const CLIENT_ERROR_SLOT: u32 = IPV6_OUTER_CLIENT_ERROR_PROGRAM_SLOT;
    const FRAGMENT_SLOT: u32 = IPV6_OUTER_FRAGMENT_PROGRAM_SLOT;
    const TIME_EXCEEDED_SLOT: u32 = IPV6_OUTER_TIME_EXCEEDED_PROGRAM_SLOT;

    #[inline(always)]
    fn sender(ctx: &TcContext, cfg: &GatewayConfig) -> Result<Sender, Counter> {
        check_vxlan(ctx, cfg, Self::VXLAN_OFF)?;
        // IPv6 only: a pod that tunnels over IPv6 has no IPv4 to send.
        let ethertype: [u8; 2] =
            ctx.load(Self::INNER_ETH_OFF + ETH_TYPE_OFF).map_err(|_| Counter::DropMalformed)?;
        if u16::from_be_bytes(ethertype) != ETH_P_IPV6 {
            return Err(Counter::DropUnsupportedProtocol);
        }
        // Whole, as `classify` wants an outer IPv4 header.
        let outer = Ipv6Header::load_whole(ctx, ETH_HLEN).ok_or(Counter::DropMalformed)?;
        // A pod listed by this address alone: a dual-stack pod's IPv6
        // address comes inside its IPv4 tunnel, never as one's source.
        let client = unsafe { CLIENTS6.get(&outer.src) }
            .filter(|client| client.flags & CLIENT_TUNNEL_IPV6 != 0)
            .ok_or(Counter::DropUnknownClient)?;
        // Replies go back to the inner source: it must be the outer one,
        // the listed pod's own address.
        let inner_src: [u8; 16] =
            ctx.load(Self::INNER_IP_OFF + IPV6_SRC_OFF).map_err(|_| Counter::DropMalformed)?;
        if inner_src != outer.src {
            return Err(Counter::DropSpoofedInnerSource);
        }
        Ok(Sender { outer_ip_be: 0, outer_tos: outer.traffic_class(), client_id: client.client_id })
    }

    /// The family stays IPv6, so no `bpf_skb_change_proto`: one
    /// `bpf_skb_adjust_room`, which also takes UDP GSO packets.
    /// BPF_F_ADJ_ROOM_FIXED_GSO for the reason `strip_tunnel` gives.
    #[inline(always)]
    fn strip(ctx: &TcContext) -> Result<(), Counter> {
        ctx.adjust_room(-(Self::OVERHEAD as i32), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO as u64)
            .map_err(|_| Counter::DropRewriteFailed)
    }

    #[inline(always)]
    fn write_answer_tunnel(
        ctx: &TcContext,
        cfg: &GatewayConfig,
        _sender: &Sender,
        client_ip: &[u8; 16],
        (client_mac, tunnel_gateway_mac): ([u8; 6], [u8; 6]),
    ) -> Result<(), Counter> {
        let target = TunnelTarget6 {
            outer_ip: client_ip,
            client_mac: &client_mac,
            tunnel_gateway_mac: &tunnel_gateway_mac,
        };
        write_tunnel_header6(ctx, cfg, &target)
    }
}
