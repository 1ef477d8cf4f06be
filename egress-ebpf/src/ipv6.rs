//! `egress_gateway6`: a labeled pod's IPv6 packets, carried in the same
//! IPv4 tunnel as its IPv4 ones (a dual-stack cluster).
//!
//! A program of its own, reached only by the main classifier's tail call
//! (`Verdict::ToIpv6Program`) once it has checked the outer headers, the
//! VNI and that the outer source is a labeled pod: the IPv4 paths already
//! take most of what the verifier accepts in one program
//! (`egress-agent/tests/prog_verifier.rs`).
//!
//! A client's packet is translated to the gateway's IPv6 address
//! (`nat::snat6`); replies to that address are not yet (issue 14): they
//! reach the gateway pod's stack.
use aya_ebpf::programs::TcContext;
use egress_common::counters::Counter;

use crate::{maps, nat::snat6, verdict::Verdict};

#[inline(always)]
pub fn from_client(ctx: &TcContext) -> Verdict {
    let Some(cfg) = maps::config() else {
        return Verdict::Drop(Counter::DropNotConfigured);
    };
    snat6::from_client(ctx, cfg)
}
