//! `egress_gateway6`: IPv6 egress. In a dual-stack cluster a labeled
//! pod's IPv6 packets come in the same IPv4 tunnel as its IPv4 ones; in an
//! IPv6-only cluster, in a tunnel over IPv6 (`tunnel::outer`). They leave
//! as IPv6 from the gateway's IPv6 address (`nat::snat6`), and the
//! replies to that address go back through the client's tunnel
//! (`nat::rev_nat6`).
//!
//! Programs of their own, reached only by the main
//! classifier's tail calls (`Verdict::ToIpv6Program`): `egress_gateway6`
//! for a tunnel packet once the main one has checked the outer headers,
//! the VNI and that the outer source is a labeled pod; `egress_remote6`
//! for an IPv6 packet to the gateway's IPv6 address; `egress_icmp6_error`
//! for an ICMPv6 error to it (`nat::icmp_error6`); `egress_too_big6` for
//! a reply too big for the tunnel (`nat::too_big6`); `egress_client_error6`
//! for a client's ICMPv6 error about a reply (`nat::client_error6`);
//! `egress_frag6_out` and `egress_frag6_in` for fragments, each way
//! (`nat::fragments6`); `egress_ttl6` for a client's packet whose hop
//! limit ends here (`nat::time_exceeded6`). `egress_o6_gw`,
//! `egress_o6_cerr`, `egress_o6_frag` and `egress_o6_ttl` are the client
//! programs compiled for a tunnel over IPv6. The IPv4 paths
//! already take most of what the verifier accepts in one program
//! (`egress-agent/tests/prog_verifier.rs`), and the two IPv6 directions
//! together more stack than one program has (`egress_common::maps::IPV6_PROGRAMS`).
use aya_ebpf::programs::TcContext;
use egress_common::{
    config::{TUNNEL_OVERHEAD, TUNNEL_OVERHEAD6},
    counters::Counter,
    ip::IPPROTO_ICMPV6,
    maps::{IPV6_TOO_BIG_CLIENT_CB, IPV6_TOO_BIG_OVERHEAD_CB},
};

use crate::{
    headers::{Ipv6Header, ETH_HLEN},
    maps,
    nat::{fragments6, icmp_error6, rev_nat6, snat6, too_big6},
    tunnel::outer::Outer,
    verdict::Verdict,
};

/// `egress_gateway6` (`O`: `Outer4`) and `egress_o6_gw` (`Outer6`): a
/// labeled pod's packet, in its tunnel.
#[inline(always)]
pub fn from_client<O: Outer>(ctx: &TcContext) -> Verdict {
    let Some(cfg) = maps::config() else {
        return Verdict::Drop(Counter::DropNotConfigured);
    };
    snat6::from_client::<O>(ctx, cfg)
}

/// `egress_remote6`: a packet for the gateway's IPv6 address.
#[inline(always)]
pub fn from_remote(ctx: &TcContext) -> Verdict {
    let Some(cfg) = maps::config() else {
        return Verdict::Drop(Counter::DropNotConfigured);
    };
    rev_nat6::from_remote(ctx, cfg)
}

/// `egress_client_error6` and `egress_o6_cerr`: a client's ICMPv6 error,
/// in its tunnel, that `egress_gateway6` (`egress_o6_gw`) checked and
/// handed on.
#[inline(always)]
pub fn error_from_client<O: Outer>(ctx: &TcContext) -> Verdict {
    let Some(cfg) = maps::config() else {
        return Verdict::Drop(Counter::DropNotConfigured);
    };
    snat6::error_from_client::<O>(ctx, cfg)
}

/// `egress_ttl6` and `egress_o6_ttl`: a client's packet whose hop limit
/// ends here, that `egress_gateway6` (`egress_o6_gw`) checked.
#[inline(always)]
pub fn expired_from_client<O: Outer>(ctx: &TcContext) -> Verdict {
    let Some(cfg) = maps::config() else {
        return Verdict::Drop(Counter::DropNotConfigured);
    };
    snat6::expired_from_client::<O>(ctx, cfg)
}

/// `egress_frag6_out` and `egress_o6_frag`: a client's fragment that
/// `egress_gateway6` (`egress_o6_gw`) checked.
#[inline(always)]
pub fn fragment_from_client<O: Outer>(ctx: &TcContext) -> Verdict {
    let Some(cfg) = maps::config() else {
        return Verdict::Drop(Counter::DropNotConfigured);
    };
    fragments6::from_client::<O>(ctx, cfg)
}

/// `egress_frag6_in`: a remote's fragment that `egress_remote6` handed on.
#[inline(always)]
pub fn fragment_from_remote(ctx: &TcContext) -> Verdict {
    let Some(cfg) = maps::config() else {
        return Verdict::Drop(Counter::DropNotConfigured);
    };
    fragments6::from_remote(ctx, cfg)
}

/// `egress_too_big6`: a reply of client `cb[IPV6_TOO_BIG_CLIENT_CB]`'s
/// flow that `egress_remote6` found too big for the tunnel, whose
/// overhead is `cb[IPV6_TOO_BIG_OVERHEAD_CB]`.
#[inline(always)]
pub fn too_big(ctx: &TcContext) -> Verdict {
    let Some(cfg) = maps::config() else {
        return Verdict::Drop(Counter::DropNotConfigured);
    };
    let Some(ip) = Ipv6Header::load_whole(ctx, ETH_HLEN) else {
        return Verdict::Drop(Counter::DropMalformed);
    };
    // SAFETY: the context's socket buffer, valid for the program's run.
    let (client_id, overhead) =
        unsafe { ((*ctx.skb.skb).cb[IPV6_TOO_BIG_CLIENT_CB], (*ctx.skb.skb).cb[IPV6_TOO_BIG_OVERHEAD_CB]) };
    if overhead != TUNNEL_OVERHEAD as u32 && overhead != TUNNEL_OVERHEAD6 as u32 {
        return Verdict::Drop(Counter::DropNotConfigured);
    }
    match too_big6::answer(ctx, cfg, &ip, client_id, overhead) {
        Ok(()) => Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::IcmpTooBigToRemote },
        Err(reason) => Verdict::Drop(reason),
    }
}

/// `egress_icmp6_error`: an ICMPv6 error for the gateway's IPv6 address,
/// whole and without extension headers, or the pod's.
#[inline(always)]
pub fn error_from_remote(ctx: &TcContext) -> Verdict {
    let Some(cfg) = maps::config() else {
        return Verdict::Drop(Counter::DropNotConfigured);
    };
    match Ipv6Header::load_whole(ctx, ETH_HLEN) {
        Some(outer) if outer.next_header == IPPROTO_ICMPV6 => icmp_error6::from_remote(ctx, cfg, &outer),
        _ => Verdict::NOT_OURS,
    }
}
