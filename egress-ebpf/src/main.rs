//! egress-gateway's TC classifier, attached to the gateway pod's eth0 ingress.
//!
//! Two kinds of packets are ours; everything else goes on to the pod's own
//! stack untouched:
//! - VXLAN from a labeled worker pod to `gateway_ip:vxlan_port`: decapsulate,
//!   SNAT to the gateway's address, send out (`egress::from_client`);
//! - replies to `gateway_ip` on a NAT port, and the later fragments of their
//!   datagrams: reverse the NAT, encapsulate back to the client's worker,
//!   send out (`rev_nat::from_remote`).
//!
//! A labeled pod's IPv6 packets go on to `egress_gateway6` by a tail call
//! (`egress_o6_gw` when its tunnel is over IPv6), IPv6 packets for the
//! gateway's IPv6 address to `egress_remote6`, and ICMPv6 errors for it to
//! `egress_icmp6_error`.
//! A second classifier, `egress_gro_stage`, sends on what the GRO stage
//! (`egress_common::gro`) re-aggregated from a client's upload; a third,
//! `egress_resegmented`, takes back the segments of a reply that was too
//! big to be encapsulated whole, one by one, on the same veth pair's other
//! end.
#![no_std]
#![no_main]
// `atomic_xadd`: the BPF target has no atomic read-modify-write types.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod conntrack;
mod csum;
mod floor;
mod gro_stage;
mod headers;
mod ipv6;
mod maps;
mod nat;
mod tunnel;
mod verdict;
mod wire;

use aya_ebpf::{macros::classifier, programs::TcContext};
use egress_common::{
    config::GatewayConfig,
    counters::Counter,
    ip::IPPROTO_ICMPV6,
    maps::{IPV6_ERROR_PROGRAM_SLOT, IPV6_OUTER_PROGRAM_SLOT, IPV6_REPLY_PROGRAM_SLOT},
};
use headers::{
    Ipv4Header, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP, IPV4_HLEN, IPV6_DST_OFF, IPV6_HLEN,
    IPV6_NEXT_HEADER_OFF,
};
use nat::rev_nat::Arrival;
use tunnel::outer::{Outer4, Outer6};
use verdict::Verdict;

// Inlined into the entry point the macro wraps it in: a tail call
// (`Verdict::ToIpv6Program`) from a subprogram needs BTF the object does not
// carry, and the verifier refuses it.
#[classifier]
#[inline(always)]
pub fn egress_gateway(ctx: TcContext) -> i32 {
    let verdict = classify(&ctx, Arrival::Wire);
    verdict::apply(verdict, &ctx)
}

/// A labeled pod's IPv6 packet, still in its tunnel: reached only by the
/// tail call in `verdict::apply` (`ipv6`).
#[classifier]
pub fn egress_gateway6(ctx: TcContext) -> i32 {
    let verdict = ipv6::from_client::<Outer4>(&ctx);
    verdict::apply(verdict, &ctx)
}

/// `egress_gateway6` for a tunnel over IPv6, which checks the tunnel
/// itself: reached only by the tail call in `verdict::apply`.
#[classifier]
pub fn egress_o6_gw(ctx: TcContext) -> i32 {
    let verdict = ipv6::from_client::<Outer6>(&ctx);
    verdict::apply(verdict, &ctx)
}

/// An IPv6 packet for the gateway's IPv6 address, perhaps a reply of a
/// client's flow: reached only by the tail call in `verdict::apply`.
#[classifier]
pub fn egress_remote6(ctx: TcContext) -> i32 {
    let verdict = ipv6::from_remote(&ctx);
    verdict::apply(verdict, &ctx)
}

/// An ICMPv6 error to the gateway's IPv6 address, perhaps about a client's
/// flow: reached only by the tail call in `verdict::apply`.
#[classifier]
pub fn egress_icmp6_error(ctx: TcContext) -> i32 {
    let verdict = ipv6::error_from_remote(&ctx);
    verdict::apply(verdict, &ctx)
}

/// An IPv6 reply too big for the tunnel, to be answered with Packet Too
/// Big: reached only by `egress_remote6`'s tail call.
#[classifier]
pub fn egress_too_big6(ctx: TcContext) -> i32 {
    let verdict = ipv6::too_big(&ctx);
    verdict::apply(verdict, &ctx)
}

/// A client's ICMPv6 error about a reply of its flow, still in its
/// tunnel: reached only by `egress_gateway6`'s tail call.
#[classifier]
pub fn egress_client_error6(ctx: TcContext) -> i32 {
    let verdict = ipv6::error_from_client::<Outer4>(&ctx);
    verdict::apply(verdict, &ctx)
}

/// `egress_client_error6` for a tunnel over IPv6: reached only by
/// `egress_o6_gw`'s tail call.
#[classifier]
pub fn egress_o6_cerr(ctx: TcContext) -> i32 {
    let verdict = ipv6::error_from_client::<Outer6>(&ctx);
    verdict::apply(verdict, &ctx)
}

/// A client's IPv6 packet whose hop limit ends here, in its tunnel:
/// reached only by `egress_gateway6`'s tail call.
#[classifier]
pub fn egress_ttl6(ctx: TcContext) -> i32 {
    let verdict = ipv6::expired_from_client::<Outer4>(&ctx);
    verdict::apply(verdict, &ctx)
}

/// `egress_ttl6` for a tunnel over IPv6: reached only by `egress_o6_gw`'s
/// tail call.
#[classifier]
pub fn egress_o6_ttl(ctx: TcContext) -> i32 {
    let verdict = ipv6::expired_from_client::<Outer6>(&ctx);
    verdict::apply(verdict, &ctx)
}

/// A client's IPv6 fragment, in its tunnel: reached only by
/// `egress_gateway6`'s tail call.
#[classifier]
pub fn egress_frag6_out(ctx: TcContext) -> i32 {
    let verdict = ipv6::fragment_from_client::<Outer4>(&ctx);
    verdict::apply(verdict, &ctx)
}

/// `egress_frag6_out` for a tunnel over IPv6: reached only by
/// `egress_o6_gw`'s tail call.
#[classifier]
pub fn egress_o6_frag(ctx: TcContext) -> i32 {
    let verdict = ipv6::fragment_from_client::<Outer6>(&ctx);
    verdict::apply(verdict, &ctx)
}

/// A remote's IPv6 fragment to the gateway's IPv6 address: reached only
/// by `egress_remote6`'s tail call.
#[classifier]
pub fn egress_frag6_in(ctx: TcContext) -> i32 {
    let verdict = ipv6::fragment_from_remote(&ctx);
    verdict::apply(verdict, &ctx)
}

/// On the resegmentation pair's receiving end (the GRO stage's sending
/// end): the segments of a reply `egress_gateway` could not encapsulate
/// whole, a reply to be sent in two fragments, and the first of those two
/// fragments, tunnelled already (`tunnel::split`). Only these ever arrive
/// here; anything else is dropped.
#[classifier]
#[inline(always)]
pub fn egress_resegmented(ctx: TcContext) -> i32 {
    let Some(cfg) = maps::config() else {
        return verdict::apply(Verdict::Drop(Counter::DropNotConfigured), &ctx);
    };
    if tunnel::split::is_cloned_part(&ctx, cfg) {
        let verdict = Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::ForwardedToClient };
        return verdict::apply(verdict, &ctx);
    }
    // Only replies of live flows were sent round: one that is no longer
    // (its binding or its datagram's entry went meanwhile) has none.
    let verdict = match classify(&ctx, Arrival::Resegmented) {
        Verdict::Pass(_) => Verdict::Drop(Counter::DropNoMapping),
        verdict => verdict,
    };
    verdict::apply(verdict, &ctx)
}

/// On the GRO stage's receiving end (`egress_common::gro`), when the agent
/// sets the stage up.
#[classifier]
pub fn egress_gro_stage(ctx: TcContext) -> i32 {
    let verdict = gro_stage::forward(&ctx);
    verdict::apply(verdict, &ctx)
}

/// The micro-benchmarks' floor (`floor`): never loaded by the agent.
#[classifier]
pub fn egress_tunnel_floor(ctx: TcContext) -> i32 {
    let verdict = floor::tunnel_only(&ctx);
    verdict::apply(verdict, &ctx)
}

/// Decides which path a packet takes. Reads only; the paths do the writing.
#[inline(always)]
fn classify(ctx: &TcContext, arrival: Arrival) -> Verdict {
    let Some(cfg) = maps::config() else {
        return Verdict::Drop(Counter::DropNotConfigured);
    };
    let ethertype: u16 = match ctx.load::<[u8; 2]>(12) {
        Ok(b) => u16::from_be_bytes(b),
        Err(_) => return Verdict::NOT_OURS,
    };
    if ethertype == ETH_P_IPV6 {
        return to_gateway_ip6(ctx, cfg);
    }
    if ethertype != ETH_P_IP {
        return Verdict::NOT_OURS;
    }
    let outer = match Ipv4Header::load(ctx, ETH_HLEN) {
        Ok(h) => h,
        Err(_) => return Verdict::NOT_OURS,
    };
    if outer.dst_be != cfg.gateway_ip_be {
        return Verdict::NOT_OURS;
    }
    if outer.has_options() {
        return untranslatable(ctx, cfg, &outer);
    }
    // A header claiming more than arrived (truncated on the way, or forged):
    // translated, it would leave as a packet whose length lies. 0 is a BIG
    // TCP super-packet's (over 64 KiB); Ethernet padding makes a frame
    // longer than its IP length, never shorter.
    if outer.total_len != 0 && outer.total_len as u32 > ctx.len() - ETH_HLEN as u32 {
        return Verdict::Drop(Counter::DropMalformed);
    }
    let l4 = ETH_HLEN + outer.header_len();
    if outer.protocol == IPPROTO_UDP && !outer.is_later_fragment() {
        if let Ok(ports) = ctx.load::<[u8; 4]>(l4) {
            let dst_port_be = u16::from_ne_bytes([ports[2], ports[3]]);
            if dst_port_be == cfg.vxlan_port_be {
                // Workers' tunnel packets fit eth0: a fragmented one is
                // not a worker's.
                if outer.is_fragment() {
                    return Verdict::Drop(Counter::DropFragment);
                }
                return nat::snat::from_client(ctx, cfg, &outer);
            }
        }
    }
    nat::rev_nat::from_remote(ctx, cfg, &outer, arrival)
}

/// An IPv6 packet for the gateway's IPv6 address may be a client's
/// tunnel packet over IPv6 (UDP to the tunnel port: `egress_o6_gw` checks
/// the rest), a reply of a client's flow, or an ICMPv6 error about one:
/// the IPv6 programs decide (`ipv6::from_remote`,
/// `ipv6::error_from_remote`). Everything else IPv6 (neighbour discovery,
/// the pod's own traffic to other addresses) is the pod's.
#[inline(always)]
fn to_gateway_ip6(ctx: &TcContext, cfg: &GatewayConfig) -> Verdict {
    if !cfg.has_ipv6() {
        return Verdict::NOT_OURS;
    }
    match ctx.load::<[u8; 16]>(ETH_HLEN + IPV6_DST_OFF) {
        Ok(dst) if dst == cfg.gateway_ip6 => {}
        _ => return Verdict::NOT_OURS,
    }
    let next_header = ctx.load::<u8>(ETH_HLEN + IPV6_NEXT_HEADER_OFF);
    let icmp_type = ctx.load::<u8>(ETH_HLEN + IPV6_HLEN);
    match (next_header, icmp_type) {
        (Ok(IPPROTO_ICMPV6), Ok(icmp_type)) if nat::icmp_error6::is_translated_error(icmp_type) => {
            Verdict::ToIpv6Program { slot: IPV6_ERROR_PROGRAM_SLOT }
        }
        (Ok(IPPROTO_UDP), _) if ctx.load::<u16>(ETH_HLEN + IPV6_HLEN + 2) == Ok(cfg.vxlan_port_be) => {
            Verdict::ToIpv6Program { slot: IPV6_OUTER_PROGRAM_SLOT }
        }
        _ => Verdict::ToIpv6Program { slot: IPV6_REPLY_PROGRAM_SLOT },
    }
}

/// Packets for the gateway with IP options: not translated. Aimed at the
/// tunnel or a NAT port they are dropped and counted; left to the stack,
/// an options-carrying segment would draw an RST back to the remote,
/// breaking a client's flow. Everything else is the pod's own business.
#[inline(always)]
fn untranslatable(ctx: &TcContext, cfg: &GatewayConfig, outer: &Ipv4Header) -> Verdict {
    // Later fragments carry no ports. Without the first (dropped below)
    // the stack can never reassemble them, and it discards them silently.
    if outer.is_later_fragment() || !matches!(outer.protocol, IPPROTO_UDP | IPPROTO_TCP) {
        return Verdict::NOT_OURS;
    }
    let header_len = outer.header_len();
    if header_len < IPV4_HLEN {
        return Verdict::NOT_OURS;
    }
    let Ok(ports) = ctx.load::<[u8; 4]>(ETH_HLEN + header_len) else {
        return Verdict::NOT_OURS;
    };
    let dst_port_be = u16::from_ne_bytes([ports[2], ports[3]]);
    let tunnel = outer.protocol == IPPROTO_UDP && dst_port_be == cfg.vxlan_port_be;
    if !tunnel && !cfg.is_nat_port(u16::from_be(dst_port_be)) {
        return Verdict::NOT_OURS;
    }
    Verdict::Drop(Counter::DropIpOptions)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
