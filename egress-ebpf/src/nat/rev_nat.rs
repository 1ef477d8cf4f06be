//! Remote -> client: a reply to a NAT port is mapped back to its client's
//! address and port, then tunnelled to the client's worker. ICMP errors
//! about a client's flow take the same way through `icmp_error`.
use aya_ebpf::programs::TcContext;
use egress_common::{
    config::{tunnel_outer_ip_len, GatewayConfig},
    conntrack::{FlowTuple, NatEntry},
    counters::Counter,
};

use super::icmp_error;
use crate::{
    conntrack::{self, BindingRef, Half},
    headers::{
        is_icmp_error, load_l4, Ipv4Header, L4Ports, ETH_HLEN, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
        TUNNEL_OVERHEAD,
    },
    maps::{wire_segments, CT_REPLY},
    nat::{
        rewrite::{nat_v4_rewrite_headers, End},
        to_client::{nat_v4_to_client, Returned, IP_OFF, L4_OFF},
    },
    verdict::Verdict,
};

/// Where a packet for the gateway came in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// On the attached interface, from the node.
    Wire,
    /// Out of the resegmentation pair: one segment of a reply that was too
    /// big to be encapsulated whole. It is never sent round again.
    Resegmented,
}

#[inline(always)]
pub fn from_remote(ctx: &TcContext, cfg: &GatewayConfig, ip: &Ipv4Header, arrival: Arrival) -> Verdict {
    match rev_nat_v4_process(ctx, cfg, ip, arrival) {
        Ok(Returned::NotOurs) => Verdict::NotOurs,
        Ok(Returned::ToClient) => {
            Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::ForwardedToClient }
        }
        Ok(Returned::Resegment) => Verdict::Resegment { ifindex: cfg.resegment_ifindex },
        Err(reason) => Verdict::Drop(reason),
    }
}

/// Translates the packet in place.
#[inline(always)]
fn rev_nat_v4_process(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    ip: &Ipv4Header,
    arrival: Arrival,
) -> Result<Returned, Counter> {
    if !matches!(ip.protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP) {
        return Ok(Returned::NotOurs);
    }
    if ip.protocol == IPPROTO_ICMP {
        if let Ok(icmp_type) = ctx.load::<u8>(L4_OFF) {
            if is_icmp_error(icmp_type) {
                return icmp_error::rev_nat_v4_icmp_error(ctx, cfg, ip, icmp_type);
            }
        }
    }
    // Truncated or untranslatable (other ICMP): the pod's stack deals with
    // it, as it would without us.
    let Ok(Some(ports)) = load_l4(ctx, L4_OFF, ip.protocol) else {
        return Ok(Returned::NotOurs);
    };
    if !cfg.is_nat_port(u16::from_be(ports.dst_port_be)) {
        return Ok(Returned::NotOurs);
    }
    let tuple = FlowTuple::new(ip.src_be, ip.dst_be, ports.src_port_be, ports.dst_port_be, ip.protocol);
    let now = conntrack::now_ns();
    let Some((binding, entry)) = conntrack::ct_lookup(cfg, Half::Reply, &tuple, now) else {
        // Echo replies may be the gateway pod's own pings; anything else on
        // a NAT port is unsolicited and must not reach the pod or a worker.
        return if ip.protocol == IPPROTO_ICMP { Ok(Returned::NotOurs) } else { Err(Counter::DropNoMapping) };
    };
    if let Some(resegment) = rev_nat_v4_size_check(ctx, cfg, arrival)? {
        return Ok(resegment);
    }
    if ip.ttl <= 1 {
        return Err(Counter::DropTtlExceeded);
    }
    rev_nat_v4_refresh(cfg, &tuple, &binding, &entry, &ports, now)?;
    nat_v4_rewrite_headers(
        ctx,
        IP_OFF,
        ip,
        End::Destination,
        entry.client_ip_be,
        ports.dst_port_be,
        entry.client_port_be,
    )?;
    let bytes = (ctx.len() - ETH_HLEN as u32) as u64;
    let segments = wire_segments(ctx);
    nat_v4_to_client(ctx, cfg, &entry, segments, bytes)?;
    Ok(Returned::ToClient)
}

/// Whether the reply can be encapsulated as it is. A packet that would
/// exceed the interface MTU once encapsulated is dropped here, where it is
/// counted, rather than by the device after we let it go (TCP never gets
/// here: the client's MSS comes from the tunnel MTU). A GSO aggregate is
/// segmented to fit later, but its outer length must fit 16 bits: a longer
/// one (GRO merged 46 full segments and a short one) is sent to be cut into
/// segments, which come back one by one (`Arrival::Resegmented`).
#[inline(always)]
fn rev_nat_v4_size_check(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    arrival: Arrival,
) -> Result<Option<Returned>, Counter> {
    let ip_len = ctx.len() - ETH_HLEN as u32;
    let gso_size = unsafe { (*ctx.skb.skb).gso_size };
    if gso_size == 0 {
        if cfg.mtu != 0 && ip_len + TUNNEL_OVERHEAD as u32 > cfg.mtu {
            return Err(Counter::DropTooBigForTunnel);
        }
        return Ok(None);
    }
    if tunnel_outer_ip_len(ip_len).is_some() {
        return Ok(None);
    }
    if arrival == Arrival::Wire && cfg.resegment_ifindex != 0 {
        Ok(Some(Returned::Resegment))
    } else {
        Err(Counter::DropTooBigForTunnel)
    }
}

/// Refreshes the binding with this reply (which marks it answered) and its
/// TCP flags. Fails when this reply half outlived its flow, which was
/// rebound: the half is stale and goes.
#[inline(always)]
fn rev_nat_v4_refresh(
    cfg: &GatewayConfig,
    tuple: &FlowTuple,
    binding: &BindingRef,
    entry: &NatEntry,
    ports: &L4Ports,
    now: u64,
) -> Result<(), Counter> {
    let state = if tuple.protocol == IPPROTO_TCP {
        conntrack::next_tcp_state(entry.state, ports.flags_or_type, Half::Reply)
    } else {
        entry.state
    };
    if binding.touch(cfg, entry, state, now) {
        return Ok(());
    }
    let _ = CT_REPLY.remove(tuple);
    Err(Counter::DropNoMapping)
}
