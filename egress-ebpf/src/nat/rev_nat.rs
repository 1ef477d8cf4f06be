//! Remote -> client: a reply to a NAT port is mapped back to its client's
//! address and port, then tunnelled to the client's worker. ICMP errors
//! about a client's flow take the same way through `icmp_error`; a
//! datagram's later fragments follow its first (`fragments`). A reply too
//! big for the tunnel is answered with fragmentation needed when DF is
//! set (`frag_needed`) and sent in two fragments when it is clear
//! (`tunnel::split`).
use aya_ebpf::programs::TcContext;
use egress_common::{
    config::GatewayConfig,
    conntrack::{FlowTuple, NatEntry},
    counters::Counter,
};

use super::{frag_needed, fragments, icmp_error};
use crate::{
    conntrack::{self, BindingRef, Half, Tracked},
    headers::{is_icmp_error, load_l4, Ipv4Header, ETH_HLEN, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    maps::wire_segments,
    nat::{
        rewrite::{nat_v4_rewrite_headers, End},
        to_client::{tunnel_to_client, Returned, IP_OFF, L4_OFF},
    },
    tunnel::{
        encap::{fits_tunnel, TunnelTarget},
        split,
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
    let returned = if ip.is_later_fragment() {
        rev_nat_v4_later_fragment(ctx, cfg, ip, arrival)
    } else {
        rev_nat_v4_process(ctx, cfg, ip, arrival)
    };
    match returned {
        Ok(Returned::NotOurs) => Verdict::NOT_OURS,
        Ok(Returned::ToClient) => {
            Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::ForwardedToClient }
        }
        Ok(Returned::Resegment) => Verdict::Resegment { ifindex: cfg.resegment_ifindex },
        Ok(Returned::FragNeeded) => {
            Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::IcmpFragNeededToRemote }
        }
        Err(reason) => Verdict::Drop(reason),
    }
}

/// How a reply goes to its client's worker.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// Encapsulated as it is.
    Whole,
    /// Encapsulated as two fragments (`tunnel::split`).
    InTwo,
}

/// Translates the packet in place.
#[inline(always)]
fn rev_nat_v4_process(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    ip: &Ipv4Header,
    arrival: Arrival,
) -> Result<Returned, Counter> {
    // Before anything may return: whatever this datagram becomes, its later
    // fragments must not follow an earlier one's flow. On its first pass
    // only: back from the pair, its entry is its own, and later fragments
    // may be looking it up on another CPU.
    if arrival == Arrival::Wire {
        fragments::forget_first(ip);
    }
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
    let Some((binding, entry)) = conntrack::ct_lookup::<NatEntry>(cfg, Half::Reply, &tuple, now) else {
        // Echo replies may be the gateway pod's own pings; anything else on
        // a NAT port is unsolicited and must not reach the pod or a worker.
        return if ip.protocol == IPPROTO_ICMP { Ok(Returned::NotOurs) } else { Err(Counter::DropNoMapping) };
    };
    // Once per datagram: back from the pair, it was charged on the wire.
    if arrival == Arrival::Wire {
        fragments::charge_first(ip, entry.client_id, now)?;
    }
    let fit = match rev_nat_v4_size_check(ctx, cfg, ip, arrival, entry.client_id)? {
        Ok(fit) => fit,
        Err(Returned::Resegment) => {
            // Before the resegmentation pair's detour: its datagram's later
            // fragments come straight from the wire and do not wait for it.
            fragments::remember_first(ip, &tuple, entry.client_id, entry.created_ns, now);
            return Ok(Returned::Resegment);
        }
        Err(returned) => return Ok(returned),
    };
    if ip.ttl <= 1 {
        return Err(Counter::DropTtlExceeded);
    }
    live_reply(cfg, &tuple, tuple.protocol, ports.flags_or_type, &binding, &entry, now)?;
    nat_v4_rewrite_headers(
        ctx,
        IP_OFF,
        ip,
        End::Destination,
        entry.client_ip_be,
        ports.dst_port_be,
        entry.client_port_be,
    )?;
    fragments::remember_first(ip, &tuple, entry.client_id, entry.created_ns, now);
    rev_nat_v4_deliver(ctx, cfg, &entry, fit)
}

/// A fragment without ports: translated with its datagram's flow, if its
/// first fragment passed here; otherwise the pod's own (its stack
/// reassembles its own datagrams, and discards what it cannot).
#[inline(always)]
fn rev_nat_v4_later_fragment(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    ip: &Ipv4Header,
    arrival: Arrival,
) -> Result<Returned, Counter> {
    let now = conntrack::now_ns();
    let Some(entry) = fragments::binding_of_later(cfg, ip, Half::Reply, now) else {
        return Ok(Returned::NotOurs);
    };
    let fit = match rev_nat_v4_size_check(ctx, cfg, ip, arrival, entry.client_id)? {
        Ok(fit) => fit,
        Err(returned) => return Ok(returned),
    };
    if ip.ttl <= 1 {
        return Err(Counter::DropTtlExceeded);
    }
    fragments::rewrite_later(ctx, IP_OFF, ip, End::Destination, entry.client_ip_be)?;
    rev_nat_v4_deliver(ctx, cfg, &entry, fit)
}

/// Tunnels the translated reply to `entry`'s worker, whole or in two.
#[inline(always)]
fn rev_nat_v4_deliver(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    entry: &NatEntry,
    fit: Fit,
) -> Result<Returned, Counter> {
    if fit == Fit::InTwo {
        let translated = Ipv4Header::load(ctx, IP_OFF).map_err(|_| Counter::DropMalformed)?;
        split::send_in_two(ctx, cfg, &translated, entry)?;
        return Ok(Returned::ToClient);
    }
    let bytes = (ctx.len() - ETH_HLEN as u32) as u64;
    let segments = wire_segments(ctx);
    tunnel_to_client(ctx, cfg, &TunnelTarget::of(entry), entry.client_id, segments, bytes)?;
    Ok(Returned::ToClient)
}

/// Whether the reply can be encapsulated as it is (`Ok(Ok(_))`), or what
/// becomes of it instead (`Ok(Err(_))`). TCP rarely gets past the first
/// check: the client's MSS comes from the tunnel MTU.
///
/// - A single packet too big for the tunnel goes through the
///   resegmentation pair first (its UDP checksum is then computed whole).
///   When it comes back, with DF set it is answered with fragmentation
///   needed (`frag_needed`), with DF clear sent in two fragments.
/// - A GSO aggregate is segmented to fit later, but its outer length must
///   fit 16 bits: a longer one (GRO merged 46 full segments and a short
///   one) is sent to be cut into segments, which come back one by one.
///
/// Without the pair (`--no-gro-stage`) what would need it is dropped.
#[inline(always)]
fn rev_nat_v4_size_check(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    ip: &Ipv4Header,
    arrival: Arrival,
    client_id: u32,
) -> Result<Result<Fit, Returned>, Counter> {
    if fits_tunnel(ctx, cfg) {
        return Ok(Ok(Fit::Whole));
    }
    let resegment = arrival == Arrival::Wire && cfg.resegment_ifindex != 0;
    if unsafe { (*ctx.skb.skb).gso_size } != 0 {
        return if resegment { Ok(Err(Returned::Resegment)) } else { Err(Counter::DropTooBigForTunnel) };
    }
    if ip.dont_fragment() {
        // DF on a fragment is not what a sender makes, and an answer
        // about a later one would quote no ports: dropped.
        if ip.is_fragment() {
            return Err(Counter::DropTooBigForTunnel);
        }
        // Through the pair first, when there is one: a local sender's
        // reply may still have its UDP checksum pending, which the
        // answer's quote must not carry.
        if resegment {
            return Ok(Err(Returned::Resegment));
        }
        frag_needed::answer(ctx, cfg, ip, client_id)?;
        return Ok(Err(Returned::FragNeeded));
    }
    match arrival {
        Arrival::Resegmented => Ok(Ok(Fit::InTwo)),
        Arrival::Wire if resegment => Ok(Err(Returned::Resegment)),
        Arrival::Wire => Err(Counter::DropTooBigForTunnel),
    }
}

/// Refreshes the binding with this reply (which marks it answered) and its
/// TCP flags. Fails when this reply half outlived its flow, which was
/// rebound: the half is stale and goes. Either family's: `protocol` is the
/// tuple's, `tcp_flags` the packet's.
#[inline(always)]
pub fn live_reply<B: Tracked>(
    cfg: &GatewayConfig,
    tuple: &B::Tuple,
    protocol: u8,
    tcp_flags: u8,
    binding: &BindingRef<B>,
    entry: &B,
    now: u64,
) -> Result<(), Counter> {
    let state = if protocol == IPPROTO_TCP {
        conntrack::next_tcp_state(entry.state(), tcp_flags, Half::Reply)
    } else {
        entry.state()
    };
    if binding.touch(cfg, entry, state, now) {
        return Ok(());
    }
    let _ = B::reply_map().remove(tuple);
    Err(Counter::DropNoMapping)
}
