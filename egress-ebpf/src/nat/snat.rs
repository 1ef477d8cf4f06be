//! Client -> remote: a tunnel packet from a labeled pod is validated,
//! bound to a NAT port, rewritten to the gateway's address and sent out.
use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use egress_common::{
    config::GatewayConfig,
    conntrack::{FlowState, FlowTuple, NatEntry},
    counters::Counter,
    gro::UploadRoute,
    ip::is_martian_destination,
    maps::IPV6_PROGRAM_SLOT,
};

use crate::{
    conntrack::{self, BindingRef, Half, Tracked},
    headers::{
        load_l4, Ipv4Header, L4Ports, ETH_HLEN, ICMP_ECHO_REQUEST, IPPROTO_ICMP, IPPROTO_TCP, TCP_RST,
    },
    maps::{account, count, wire_segments, Direction, CLIENTS, EXCLUDED_DSTS},
    nat::{
        fragments, icmp_error, probe,
        rewrite::{nat_v4_rewrite_headers, End},
        time_exceeded,
    },
    tunnel::decap::{merge_ecn, parse_tunnel, strip_tunnel, Inner, InnerFrame, INNER_IP_OFF},
    verdict::Verdict,
};

const INNER_L4_OFF: usize = INNER_IP_OFF + crate::headers::IPV4_HLEN;

/// What became of a client's packet.
enum Sent {
    /// Translated; the route says where it goes next.
    Out(UploadRoute),
    /// Its TTL ran out here: it became the gateway's time-exceeded answer.
    TimeExceeded,
    /// A ping of the tunnel's gateway address: it became its echo reply.
    ProbeAnswered,
    /// An IPv6 packet, for the IPv6 program.
    Ipv6,
}

#[inline(always)]
pub fn from_client(ctx: &TcContext, cfg: &GatewayConfig, outer: &Ipv4Header) -> Verdict {
    match snat_v4_process(ctx, cfg, outer) {
        Ok(Sent::Out(UploadRoute::GroStage)) => Verdict::ToGroStage { ifindex: cfg.gro_ifindex },
        Ok(Sent::Out(_)) => Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::ForwardedToRemote },
        Ok(Sent::TimeExceeded) => {
            Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::IcmpErrorToClient }
        }
        Ok(Sent::ProbeAnswered) => {
            Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::ProbeAnswered }
        }
        Ok(Sent::Ipv6) => Verdict::ToIpv6Program { slot: IPV6_PROGRAM_SLOT },
        Err(reason) => Verdict::Drop(reason),
    }
}

/// Translates the packet in place.
#[inline(always)]
fn snat_v4_process(ctx: &TcContext, cfg: &GatewayConfig, outer: &Ipv4Header) -> Result<Sent, Counter> {
    // Only labeled pods may use the tunnel at all.
    let Some(client) = (unsafe { CLIENTS.get(&outer.src_be) }) else {
        return Err(Counter::DropUnknownClient);
    };
    let client_id = client.client_id;
    let inner = match parse_tunnel(ctx, cfg)? {
        Inner::Ipv4(frame) => frame,
        Inner::Ipv6 => return Ok(Sent::Ipv6),
    };
    // The pod may only send as itself: its tunnel carries its own address.
    if inner.ip.src_be != outer.src_be {
        return Err(Counter::DropSpoofedInnerSource);
    }
    // The worker asking whether its path to this gateway works.
    if probe::is_probe(ctx, &inner.ip) {
        return probe::answer(ctx, cfg, outer, &inner).map(|()| Sent::ProbeAnswered);
    }
    // Before anything answers it (time exceeded included): nothing about
    // these addresses leaves the gateway.
    if is_martian_destination(inner.ip.dst_be, cfg.gateway_ip_be) {
        return Err(Counter::DropMartianDestination);
    }
    if inner.ip.ttl <= 1 {
        return time_exceeded::answer(ctx, cfg, outer, &inner, client_id).map(|()| Sent::TimeExceeded);
    }
    if EXCLUDED_DSTS.get(Key::new(32, inner.ip.dst_be)).is_some() {
        return Err(Counter::DropExcludedDestination);
    }
    // Before any state is made for it: a packet RFC 6040 drops makes none.
    merge_ecn(ctx, outer.tos, &inner.ip)?;
    if inner.ip.is_later_fragment() {
        return snat_v4_later_fragment(ctx, cfg, &inner, client_id);
    }
    if inner.ip.protocol == IPPROTO_ICMP {
        let icmp_type: u8 = ctx.load(INNER_L4_OFF).map_err(|_| Counter::DropMalformed)?;
        if icmp_error::is_translated_error(icmp_type) {
            icmp_error::snat_v4_icmp_error(ctx, cfg, INNER_IP_OFF, &inner.ip)?;
            strip_tunnel(ctx)?;
            account(client_id, Direction::ToRemote, 1, (ctx.len() - ETH_HLEN as u32) as u64);
            return Ok(Sent::Out(UploadRoute::Direct));
        }
    }
    let ports = load_l4(ctx, INNER_L4_OFF, inner.ip.protocol)
        .map_err(|_| Counter::DropMalformed)?
        .ok_or(Counter::DropUnsupportedProtocol)?;
    // Clients start echo exchanges; an echo reply from a client answers an
    // inbound ping, which never reaches clients through us.
    if inner.ip.protocol == IPPROTO_ICMP && ports.flags_or_type != ICMP_ECHO_REQUEST {
        return Err(Counter::DropUnsupportedProtocol);
    }

    let tuple = FlowTuple::new(
        inner.ip.src_be,
        inner.ip.dst_be,
        ports.src_port_be,
        ports.dst_port_be,
        inner.ip.protocol,
    );
    let now = conntrack::now_ns();
    fragments::charge_first(&inner.ip, client_id, now)?;
    // A new flow's first packet always goes straight out (its route is
    // still undecided).
    let mut route = UploadRoute::Direct;
    let nat_port_be = match live_original::<NatEntry>(cfg, &tuple, tuple.protocol, ports.flags_or_type, now) {
        Some((binding, entry)) => {
            if cfg.gro_ifindex != 0 && tuple.protocol == IPPROTO_TCP {
                route = gro_route(ctx, &binding, &entry, inner.ip.total_len);
            }
            entry.nat_port_be
        }
        None => snat_v4_new_mapping(cfg, outer, &inner, &tuple, &ports, client_id, now)?,
    };

    nat_v4_rewrite_headers(
        ctx,
        INNER_IP_OFF,
        &inner.ip,
        End::Source,
        cfg.gateway_ip_be,
        ports.src_port_be,
        nat_port_be,
    )?;
    // Any binding of this client's: the key holds its own address, and a
    // new binding's identity is not returned here.
    fragments::remember_first(&inner.ip, &tuple, client_id, 0, now);
    // Before the tunnel goes: bpf_skb_adjust_room zeroes a GSO packet's
    // gso_segs ("to be recomputed"), which would count it as one packet.
    let segments = wire_segments(ctx);
    strip_tunnel(ctx)?;
    account(client_id, Direction::ToRemote, segments, (ctx.len() - ETH_HLEN as u32) as u64);
    Ok(Sent::Out(route))
}

/// A fragment without ports (the client's datagram was larger than its
/// tunnel MTU): translated with the flow its first fragment was, or
/// dropped when that is not known here.
#[inline(always)]
fn snat_v4_later_fragment(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    inner: &InnerFrame,
    client_id: u32,
) -> Result<Sent, Counter> {
    let now = conntrack::now_ns();
    // The key holds the inner source, checked to be this client's own.
    let entry = fragments::binding_of_later(cfg, &inner.ip, Half::Original, now)
        .ok_or(Counter::DropFragmentUnmatched)?;
    if entry.client_id != client_id {
        return Err(Counter::DropFragmentUnmatched);
    }
    fragments::rewrite_later(ctx, INNER_IP_OFF, &inner.ip, End::Source, cfg.gateway_ip_be)?;
    strip_tunnel(ctx)?;
    account(client_id, Direction::ToRemote, 1, (ctx.len() - ETH_HLEN as u32) as u64);
    Ok(Sent::Out(UploadRoute::Direct))
}

/// The flow's live binding, refreshed with this packet's TCP flags. None
/// if it has none, or if its reply tuple went to a newer binding (then it
/// starts over with a new NAT port rather than share that flow's 5-tuple).
/// Either family's: `protocol` is the tuple's, `tcp_flags` the packet's.
#[inline(always)]
pub fn live_original<B: Tracked>(
    cfg: &GatewayConfig,
    tuple: &B::Tuple,
    protocol: u8,
    tcp_flags: u8,
    now: u64,
) -> Option<(BindingRef<B>, B)> {
    let (binding, entry) = conntrack::ct_lookup::<B>(cfg, Half::Original, tuple, now)?;
    let state = if protocol == IPPROTO_TCP {
        conntrack::next_tcp_state(entry.state(), tcp_flags, Half::Original)
    } else {
        entry.state()
    };
    if binding.touch(cfg, &entry, state, now) {
        return Some((binding, entry));
    }
    conntrack::ct_remove_original::<B>(tuple, entry.client_id());
    count(Counter::FlowRebound);
    None
}

/// A binding for a flow the gateway does not know yet; returns its NAT port.
/// Only a packet that can open a connection makes one: a TCP RST makes
/// nothing (it would hold a NAT port for nothing); any other first packet
/// makes an unreplied binding, short-lived until the remote answers.
#[inline(always)]
fn snat_v4_new_mapping(
    cfg: &GatewayConfig,
    outer: &Ipv4Header,
    inner: &InnerFrame,
    tuple: &FlowTuple,
    ports: &L4Ports,
    client_id: u32,
    now: u64,
) -> Result<u16, Counter> {
    if tuple.protocol == IPPROTO_TCP && ports.flags_or_type & TCP_RST != 0 {
        return Err(Counter::DropRstWithoutFlow);
    }
    let mut entry = NatEntry {
        client_ip_be: inner.ip.src_be,
        client_outer_ip_be: outer.src_be,
        remote_ip_be: inner.ip.dst_be,
        client_port_be: ports.src_port_be,
        remote_port_be: ports.dst_port_be,
        nat_port_be: 0,
        protocol: tuple.protocol,
        // TCP becomes `Open` when the remote answers, whatever opened it.
        state: if tuple.protocol == IPPROTO_TCP { FlowState::SynSent as u8 } else { FlowState::Open as u8 },
        client_mac: inner.client_mac,
        tunnel_gateway_mac: inner.tunnel_gateway_mac,
        last_seen_ns: now,
        client_id,
        upload_route: UploadRoute::Undecided as u8,
        flags: 0,
        _pad0: 0,
        created_ns: 0,
    };
    conntrack::ct_create_binding(cfg, &mut entry, now)
}

/// Where this packet of an established TCP flow goes, moving the flow's
/// route on as `UploadRoute::next` says (written only when it changes).
/// `ip_len`: the inner packet's length from its IP header on.
#[inline(always)]
pub fn gro_route<B: Tracked>(
    ctx: &TcContext,
    binding: &BindingRef<B>,
    entry: &B,
    ip_len: u16,
) -> UploadRoute {
    let is_gso = unsafe { (*ctx.skb.skb).gso_size } != 0;
    let (next, via_stage) = UploadRoute::from_u8(entry.upload_route()).next(is_gso, ip_len);
    if next as u8 != entry.upload_route() {
        binding.set_upload_route(entry, next as u8);
    }
    if via_stage {
        UploadRoute::GroStage
    } else {
        UploadRoute::Direct
    }
}
