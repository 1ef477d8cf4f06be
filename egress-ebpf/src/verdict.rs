//! The one place a path's outcome becomes a TC action and a counter.
use aya_ebpf::{
    bindings::{TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::generated::{bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};
use egress_common::counters::Counter;

use crate::maps;

pub enum Verdict {
    /// Not a tunnel packet nor a reply: the next program / the pod's stack.
    NotOurs,
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
    Drop(Counter),
}

#[inline(always)]
pub fn apply(verdict: Verdict, _ctx: &TcContext) -> i32 {
    match verdict {
        Verdict::NotOurs => {
            maps::count(Counter::PassedToStack);
            TC_ACT_UNSPEC
        }
        Verdict::Drop(reason) => {
            maps::count(reason);
            TC_ACT_SHOT
        }
        Verdict::ToGroStage { ifindex } => {
            // Plain redirect: the veth pair needs no next-hop MAC, and GRO
            // merges only packets whose Ethernet headers match, as these do.
            let ret = unsafe { bpf_redirect(ifindex, 0) };
            if ret == TC_ACT_REDIRECT as i64 {
                maps::count(Counter::ForwardedToRemote);
                maps::count(Counter::GroStageIn);
                TC_ACT_REDIRECT
            } else {
                maps::count(Counter::DropRedirectFailed);
                TC_ACT_SHOT
            }
        }
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
