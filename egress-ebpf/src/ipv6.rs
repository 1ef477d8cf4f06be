//! `egress_gateway6`: IPv6 egress in a dual-stack cluster. A labeled
//! pod's IPv6 packets come in the same IPv4 tunnel as its IPv4 ones; they
//! leave as IPv6 from the gateway's IPv6 address (`nat::snat6`), and the
//! replies to that address go back through the tunnel (`nat::rev_nat6`).
//!
//! Two programs of their own, one a direction, reached only by the main
//! classifier's tail calls (`Verdict::ToIpv6Program`): `egress_gateway6`
//! for a tunnel packet once the main one has checked the outer headers,
//! the VNI and that the outer source is a labeled pod; `egress_remote6`
//! for an IPv6 packet to the gateway's IPv6 address. The IPv4 paths
//! already take most of what the verifier accepts in one program
//! (`egress-agent/tests/prog_verifier.rs`), and the two IPv6 directions
//! together more stack than one program has (`egress_common::maps::IPV6_PROGRAMS`).
use aya_ebpf::programs::TcContext;
use egress_common::counters::Counter;

use crate::{
    maps,
    nat::{rev_nat6, snat6},
    verdict::Verdict,
};

/// `egress_gateway6`: a labeled pod's packet, in its tunnel.
#[inline(always)]
pub fn from_client(ctx: &TcContext) -> Verdict {
    let Some(cfg) = maps::config() else {
        return Verdict::Drop(Counter::DropNotConfigured);
    };
    snat6::from_client(ctx, cfg)
}

/// `egress_remote6`: a packet for the gateway's IPv6 address.
#[inline(always)]
pub fn from_remote(ctx: &TcContext) -> Verdict {
    let Some(cfg) = maps::config() else {
        return Verdict::Drop(Counter::DropNotConfigured);
    };
    rev_nat6::from_remote(ctx, cfg)
}
