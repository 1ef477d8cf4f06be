//! The hook's floor, for `cargo xtask bench-micro` only: what the two
//! established paths do for the tunnel and nothing else. A tunnel packet
//! is checked and decapsulated, a packet for the gateway encapsulated, and
//! each redirected; no conntrack, no NAT, no client check. The agent never
//! loads it. It shares every step with the real paths, so the difference
//! between the two is what conntrack and NAT cost.
use aya_ebpf::programs::TcContext;
use egress_common::counters::Counter;

use crate::{
    headers::{Ipv4Header, ETH_HLEN, ETH_P_IP, IPPROTO_UDP},
    maps,
    tunnel::{
        decap,
        encap::{self, TunnelTarget},
    },
    verdict::Verdict,
};

#[inline(always)]
pub fn tunnel_only(ctx: &TcContext) -> Verdict {
    let Some(cfg) = maps::config() else {
        return Verdict::Drop(Counter::DropNotConfigured);
    };
    if !ctx.load::<[u8; 2]>(12).is_ok_and(|b| u16::from_be_bytes(b) == ETH_P_IP) {
        return Verdict::NOT_OURS;
    }
    let Ok(outer) = Ipv4Header::load(ctx, ETH_HLEN) else {
        return Verdict::NOT_OURS;
    };
    if outer.dst_be != cfg.gateway_ip_be {
        return Verdict::NOT_OURS;
    }
    let to_tunnel = outer.protocol == IPPROTO_UDP
        && ctx
            .load::<[u8; 4]>(ETH_HLEN + outer.header_len())
            .is_ok_and(|ports| u16::from_ne_bytes([ports[2], ports[3]]) == cfg.vxlan_port_be);
    let sent = if to_tunnel {
        decap::parse_tunnel(ctx, cfg)
            .and_then(|inner| match inner {
                decap::Inner::Ipv4(_) => Ok(()),
                // Never sent out with the pod's own address.
                decap::Inner::Ipv6 => Err(Counter::DropUnsupportedProtocol),
            })
            .and_then(|()| decap::strip_tunnel(ctx))
            .map(|()| Counter::ForwardedToRemote)
    } else {
        // Where to is not the cost: back to the sender.
        let target = TunnelTarget {
            outer_ip_be: outer.src_be,
            client_mac: [0; 6],
            tunnel_gateway_mac: [0; 6],
            inner: encap::InnerFamily::Ipv4,
        };
        encap::push_tunnel(ctx, cfg, &target).map(|()| Counter::ForwardedToClient)
    };
    match sent {
        Ok(counter) => Verdict::Redirect { ifindex: cfg.ifindex, counter },
        Err(reason) => Verdict::Drop(reason),
    }
}
