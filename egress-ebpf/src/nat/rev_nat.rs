//! Remote -> client: a reply to a NAT port is mapped back to its client's
//! address and port, then tunnelled to the client's worker.
use aya_ebpf::programs::TcContext;
use egress_common::{
    config::GatewayConfig,
    conntrack::{FlowTuple, PROTO_TCP},
    counters::Counter,
};

use super::icmp_error;
use crate::{
    conntrack::{self, Half},
    csum,
    headers::{
        load_l4, Ipv4Header, ETH_HLEN, ICMP_ID_OFF, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV4_HLEN,
        IP_DST_OFF, TUNNEL_OVERHEAD,
    },
    maps::{account, wire_segments, Direction, CT_REPLY},
    tunnel::encap::push_tunnel,
    verdict::Verdict,
};

const IP_OFF: usize = ETH_HLEN;
const L4_OFF: usize = ETH_HLEN + IPV4_HLEN;
/// Destination port field offset in TCP and UDP headers.
const DST_PORT_OFF: usize = 2;

#[inline(always)]
pub fn from_remote(ctx: &TcContext, cfg: &GatewayConfig, ip: &Ipv4Header) -> Verdict {
    if !matches!(ip.protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP) {
        return Verdict::NotOurs;
    }
    if ip.protocol == IPPROTO_ICMP {
        if let Ok(icmp_type) = ctx.load::<u8>(L4_OFF) {
            if icmp_error::is_translated_error(icmp_type) {
                return icmp_error::from_remote(ctx, cfg, ip);
            }
        }
    }
    // Truncated or untranslatable (other ICMP): the pod's stack deals with
    // it, as it would without us.
    let Ok(Some(ports)) = load_l4(ctx, L4_OFF, ip.protocol) else {
        return Verdict::NotOurs;
    };
    if !cfg.is_nat_port(u16::from_be(ports.dst_port_be)) {
        return Verdict::NotOurs;
    }
    let tuple = FlowTuple::new(ip.src_be, ip.dst_be, ports.src_port_be, ports.dst_port_be, ip.protocol);
    let now = conntrack::now_ns();
    let Some(ptr) = conntrack::lookup(cfg, Half::Reply, &tuple, now) else {
        // Echo replies may be the gateway pod's own pings; anything else on
        // a NAT port is unsolicited and must not reach the pod or a worker.
        return if ip.protocol == IPPROTO_ICMP {
            Verdict::NotOurs
        } else {
            Verdict::Drop(Counter::DropNoMapping)
        };
    };
    if ip.ttl <= 1 {
        return Verdict::Drop(Counter::DropTtlExceeded);
    }
    // A full-size packet plus the tunnel would be dropped by the device
    // after we let it go; drop it here, where it is counted. (TCP never
    // gets here: the client's MSS comes from the tunnel MTU.)
    let gso_size = unsafe { (*ctx.skb.skb).gso_size };
    if gso_size == 0 && cfg.mtu != 0 && ctx.len() - ETH_HLEN as u32 + TUNNEL_OVERHEAD as u32 > cfg.mtu {
        return Verdict::Drop(Counter::DropTooBigForTunnel);
    }
    let state = unsafe { (*ptr).state };
    let state = if ip.protocol == PROTO_TCP {
        conntrack::next_tcp_state(state, ports.flags_or_type, Half::Reply)
    } else {
        state
    };
    if !conntrack::touch(cfg, Half::Reply, ptr, state, now) {
        // This reply half outlived its flow, which was rebound: stale.
        let _ = CT_REPLY.remove(&tuple);
        return Verdict::Drop(Counter::DropNoMapping);
    }
    let entry = unsafe { *ptr };

    let port_off = if ip.protocol == IPPROTO_ICMP { ICMP_ID_OFF } else { DST_PORT_OFF };
    let rewritten =
        csum::rewrite_l4_port(ctx, L4_OFF, port_off, ip.protocol, ports.dst_port_be, entry.client_port_be)
            .and_then(|_| {
                csum::rewrite_ipv4_addr(
                    ctx,
                    IP_OFF,
                    IP_DST_OFF,
                    L4_OFF,
                    ip.protocol,
                    ip.dst_be,
                    entry.client_ip_be,
                )
            })
            .and_then(|_| csum::decrement_ttl(ctx, IP_OFF, ip.ttl, ip.protocol));
    if rewritten.is_err() {
        return Verdict::Drop(Counter::DropRewriteFailed);
    }
    let bytes = (ctx.len() - ETH_HLEN as u32) as u64;
    // Before the tunnel is pushed: bpf_skb_adjust_room zeroes a GSO
    // packet's gso_segs, which would count it as one packet.
    let segments = wire_segments(ctx);
    match push_tunnel(ctx, cfg, &entry) {
        Ok(()) => {
            account(entry.client_id, Direction::ToClient, segments, bytes);
            Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::ForwardedToClient }
        }
        Err(reason) => Verdict::Drop(reason),
    }
}
