//! The one place a path's outcome becomes a TC action and a counter.
use aya_ebpf::{
    bindings::{TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::generated::{bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};
use egress_common::counters::Counter;

use crate::maps;

/// Every variant carries data, the counter of `Pass` included: a
/// fieldless one left its payload undefined, and LLVM, merging it with the
/// other paths' verdicts into one register, shifted whatever that register
/// held, which the verifier refuses ("R7 pointer arithmetic with <<=
/// operator prohibited", "R5 !read_ok").
pub enum Verdict {
    /// For the next program / the pod's stack, counted as `counter`
    /// ([`Verdict::NOT_OURS`] for what is not a tunnel packet nor a reply).
    Pass(Counter),
    /// Translated; send it out of `ifindex`, resolving the next hop's MAC.
    Redirect {
        ifindex: u32,
        counter: Counter,
    },
    /// A translated client packet for the GRO stage's sending end
    /// (`egress_common::gro`); the stage's own classifier sends it on.
    ToGroStage {
        ifindex: u32,
    },
    /// A reply too big to encapsulate whole, for the resegmentation pair's
    /// sending end: it has no TSO, so the kernel cuts the packet into its
    /// segments there, and each comes back through `egress_resegmented`.
    Resegment {
        ifindex: u32,
    },
    /// For the IPv6 program in `slot` of `IPV6_PROGRAMS`, through a tail
    /// call (`egress_common::maps::IPV6_PROGRAM_SLOTS` names them all): a
    /// client's IPv6 packet in its IPv4 tunnel, its outer headers and
    /// client checked (`egress_gateway6`), UDP to the tunnel port at the
    /// gateway's IPv6 address, unchecked (`egress_o6_gw` checks it), an
    /// IPv6 packet for the gateway's IPv6 address (`egress_remote6`), or
    /// what those hand on.
    ToIpv6Program {
        slot: u32,
    },
    Drop(Counter),
}

impl Verdict {
    /// Not a tunnel packet nor a reply: the pod's stack's.
    pub const NOT_OURS: Verdict = Verdict::Pass(Counter::PassedToStack);
}

#[inline(always)]
pub fn apply(verdict: Verdict, ctx: &TcContext) -> i32 {
    match verdict {
        Verdict::ToIpv6Program { slot } => {
            // A tail call does not return when it happens; when it cannot
            // (an empty slot), execution goes on below.
            maps::tail_call_ipv6(ctx, slot);
            maps::count(Counter::DropNotConfigured);
            TC_ACT_SHOT
        }
        Verdict::Pass(counter) => {
            maps::count(counter);
            TC_ACT_UNSPEC
        }
        Verdict::Drop(reason) => {
            maps::count(reason);
            TC_ACT_SHOT
        }
        Verdict::ToGroStage { ifindex } => {
            // Plain redirect: the veth pair needs no next-hop MAC, and GRO
            // merges only packets whose Ethernet headers match, as these do.
            redirect_plain(ifindex, &[Counter::ForwardedToRemote, Counter::GroStageIn])
        }
        Verdict::Resegment { ifindex } => redirect_plain(ifindex, &[Counter::ReplyResegmented]),
        Verdict::Redirect { ifindex, counter } => {
            // bpf_redirect_neigh (5.10+) does the FIB lookup and neighbour
            // resolution in the pod's namespace, so the outer Ethernet header
            // we leave behind is rewritten for the real next hop.
            let ret = unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) };
            if ret == TC_ACT_REDIRECT as i64 {
                maps::count(counter);
                TC_ACT_REDIRECT
            } else {
                maps::count(Counter::DropRedirectFailed);
                TC_ACT_SHOT
            }
        }
    }
}

/// Sends the packet out of `ifindex` as it is (a veth pair inside the pod),
/// counting `counters` if it went.
#[inline(always)]
fn redirect_plain(ifindex: u32, counters: &[Counter]) -> i32 {
    let ret = unsafe { bpf_redirect(ifindex, 0) };
    if ret != TC_ACT_REDIRECT as i64 {
        maps::count(Counter::DropRedirectFailed);
        return TC_ACT_SHOT;
    }
    for counter in counters {
        maps::count(*counter);
    }
    TC_ACT_REDIRECT
}
