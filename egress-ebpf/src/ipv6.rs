//! `egress_gateway6`: a labeled pod's IPv6 packets, carried in the same
//! IPv4 tunnel as its IPv4 ones (a dual-stack cluster).
//!
//! A program of its own, reached only by the main classifier's tail call
//! (`Verdict::ToIpv6Program`) once it has checked the outer headers, the
//! VNI and that the outer source is a labeled pod: the IPv4 paths already
//! take most of what the verifier accepts in one program
//! (`egress-agent/tests/prog_verifier.rs`).
//!
//! IPv6 egress is not translated yet (issue 14): a client's packet is
//! checked as its translation will need it (`nat::snat6`) and dropped,
//! each for its reason, so a labeled pod's IPv6 never leaves with any
//! address but, one day, the gateway's.
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
