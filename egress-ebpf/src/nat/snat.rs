//! Client -> remote: a tunnel packet from a labeled pod is validated,
//! bound to a NAT port, rewritten to the gateway's address and sent out.
use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use egress_common::{
    config::GatewayConfig,
    conntrack::{FlowState, FlowTuple, NatEntry, PROTO_TCP},
    counters::Counter,
    gro::UploadRoute,
};

use crate::{
    conntrack::{self, Half},
    csum,
    headers::{
        load_l4, Ipv4Header, ETH_HLEN, ICMP_ECHO_REQUEST, ICMP_ID_OFF, IPPROTO_ICMP, IPV4_HLEN, IP_SRC_OFF,
        TCP_SYN,
    },
    maps::{account, count, wire_segments, Direction, CLIENTS, CT_ORIGINAL, EXCLUDED_DSTS},
    nat::time_exceeded,
    tunnel::decap::{parse_tunnel, strip_tunnel, INNER_IP_OFF},
    verdict::Verdict,
};

const INNER_L4_OFF: usize = INNER_IP_OFF + IPV4_HLEN;

/// What became of a client's packet.
enum Sent {
    /// Translated; the route says where it goes next.
    Out(UploadRoute),
    /// Its TTL ran out here: it became the gateway's time-exceeded answer.
    TimeExceeded,
}

#[inline(always)]
pub fn from_client(ctx: &TcContext, cfg: &GatewayConfig, outer: &Ipv4Header) -> Verdict {
    match snat_v4_process(ctx, cfg, outer) {
        Ok(Sent::Out(UploadRoute::GroStage)) => Verdict::ToGroStage { ifindex: cfg.gro_ifindex },
        Ok(Sent::Out(_)) => Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::ForwardedToRemote },
        Ok(Sent::TimeExceeded) => {
            Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::IcmpErrorToClient }
        }
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
    let inner = parse_tunnel(ctx, cfg)?;
    // The pod may only send as itself: its tunnel carries its own address.
    if inner.ip.src_be != outer.src_be {
        return Err(Counter::DropSpoofedInnerSource);
    }
    if inner.ip.ttl <= 1 {
        return time_exceeded::answer(ctx, cfg, outer, &inner).map(|()| Sent::TimeExceeded);
    }
    if EXCLUDED_DSTS.get(Key::new(32, inner.ip.dst_be)).is_some() {
        return Err(Counter::DropExcludedDestination);
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
    let bound = conntrack::lookup(cfg, Half::Original, &tuple, now).and_then(|ptr| {
        let entry = unsafe { &*ptr };
        let state = if tuple.protocol == PROTO_TCP {
            conntrack::next_tcp_state(entry.state, ports.flags_or_type, Half::Original)
        } else {
            entry.state
        };
        if conntrack::touch(cfg, Half::Original, ptr, state, now) {
            Some((entry.nat_port_be, ptr))
        } else {
            // Our reply tuple went to a newer binding: start over with a
            // new NAT port rather than share that flow's 5-tuple.
            let _ = CT_ORIGINAL.remove(&tuple);
            count(Counter::FlowRebound);
            None
        }
    });
    // A new flow's first packet always goes straight out (its route is
    // still undecided).
    let mut route = UploadRoute::Direct;
    let nat_port_be = match bound {
        Some((port, ptr)) => {
            if cfg.gro_ifindex != 0 && tuple.protocol == PROTO_TCP {
                route = gro_route(ctx, unsafe { &mut *ptr }, inner.ip.total_len);
            }
            port
        }
        None => {
            let template = NatEntry {
                client_ip_be: inner.ip.src_be,
                client_outer_ip_be: outer.src_be,
                remote_ip_be: inner.ip.dst_be,
                client_port_be: ports.src_port_be,
                remote_port_be: ports.dst_port_be,
                nat_port_be: 0,
                protocol: tuple.protocol,
                // A TCP flow picked up mid-stream (no SYN) is already open.
                state: if tuple.protocol == PROTO_TCP && ports.flags_or_type & TCP_SYN != 0 {
                    FlowState::SynSent as u8
                } else {
                    FlowState::Open as u8
                },
                client_mac: inner.client_mac,
                tunnel_gateway_mac: inner.tunnel_gateway_mac,
                last_seen_ns: now,
                client_id,
                upload_route: UploadRoute::Undecided as u8,
                _pad0: 0,
                _pad1: 0,
            };
            conntrack::create_binding(cfg, &template)?.nat_port_be
        }
    };

    snat_v4_rewrite_headers(ctx, cfg, &inner.ip, ports.src_port_be, nat_port_be)?;
    // Before the tunnel goes: bpf_skb_adjust_room zeroes a GSO packet's
    // gso_segs ("to be recomputed"), which would count it as one packet.
    let segments = wire_segments(ctx);
    strip_tunnel(ctx)?;
    account(client_id, Direction::ToRemote, segments, (ctx.len() - ETH_HLEN as u32) as u64);
    Ok(Sent::Out(route))
}

/// Where this packet of an established TCP flow goes, moving the flow's
/// route on as `UploadRoute::next` says (written only when it changes).
#[inline(always)]
fn gro_route(ctx: &TcContext, entry: &mut NatEntry, ip_total_len: u16) -> UploadRoute {
    let is_gso = unsafe { (*ctx.skb.skb).gso_size } != 0;
    let (next, via_stage) = UploadRoute::from_u8(entry.upload_route).next(is_gso, ip_total_len);
    if next as u8 != entry.upload_route {
        entry.upload_route = next as u8;
    }
    if via_stage {
        UploadRoute::GroStage
    } else {
        UploadRoute::Direct
    }
}

/// Source address -> gateway, source port (or echo identifier) -> NAT port,
/// TTL - 1, all while the tunnel headers are still in front.
#[inline(always)]
fn snat_v4_rewrite_headers(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    ip: &Ipv4Header,
    client_port_be: u16,
    nat_port_be: u16,
) -> Result<(), Counter> {
    let port_off = if ip.protocol == IPPROTO_ICMP { ICMP_ID_OFF } else { 0 };
    csum::rewrite_l4_port(ctx, INNER_L4_OFF, port_off, ip.protocol, client_port_be, nat_port_be)
        .and_then(|_| {
            csum::rewrite_ipv4_addr(
                ctx,
                INNER_IP_OFF,
                IP_SRC_OFF,
                INNER_L4_OFF,
                ip.protocol,
                ip.src_be,
                cfg.gateway_ip_be,
            )
        })
        .and_then(|_| csum::decrement_ttl(ctx, INNER_IP_OFF, ip.ttl, ip.protocol))
        .map_err(|_| Counter::DropRewriteFailed)
}
