//! Connection tracking: lookup with expiry, pairwise creation with NAT port
//! allocation, refresh and TCP state. The two halves are `CT_ORIGINAL`
//! (keyed by what the client sends) and `CT_REPLY` (keyed by what replies
//! carry); a half evicted by the LRU is re-created from the other.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
};
use egress_common::{
    config::GatewayConfig,
    conntrack::{FlowState, FlowTuple, NatEntry},
    counters::Counter,
    ports::candidate_port,
};

use crate::{
    headers::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    maps::{count, count_nat_exhausted, CT_ORIGINAL, CT_REPLY},
};

const NS_PER_S: u64 = 1_000_000_000;
/// Timestamps are written at most this often per flow: a write per packet
/// would bounce the entry's cache line between CPUs for nothing.
const REFRESH_INTERVAL_NS: u64 = NS_PER_S;
/// Upper bound for the verifier; the configured retry count is below it.
const MAX_PORT_RETRIES: u32 = 32;

#[inline(always)]
pub fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// Which half of a binding a pointer came from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Original,
    Reply,
}

/// Removes both halves of a binding, each only if it still belongs to it.
#[inline(always)]
pub fn remove_binding(cfg: &GatewayConfig, entry: &NatEntry) {
    let original = entry.original_tuple();
    if let Some(ptr) = CT_ORIGINAL.get_ptr(&original) {
        if unsafe { &*ptr }.same_binding(entry) {
            let _ = CT_ORIGINAL.remove(&original);
        }
    }
    let reply = entry.reply_tuple(cfg.gateway_ip_be);
    if let Some(ptr) = CT_REPLY.get_ptr(&reply) {
        if unsafe { &*ptr }.same_binding(entry) {
            let _ = CT_REPLY.remove(&reply);
        }
    }
}

/// A live binding for `tuple` in `half`'s map; an expired one is removed.
#[inline(always)]
pub fn lookup(cfg: &GatewayConfig, half: Half, tuple: &FlowTuple, now: u64) -> Option<*mut NatEntry> {
    let ptr = match half {
        Half::Original => CT_ORIGINAL.get_ptr_mut(tuple),
        Half::Reply => CT_REPLY.get_ptr_mut(tuple),
    }?;
    let entry = unsafe { &*ptr };
    if entry.is_expired(cfg, now) {
        count(Counter::FlowExpiredInDatapath);
        let copy = *entry;
        remove_binding(cfg, &copy);
        return None;
    }
    Some(ptr)
}

/// Creates a binding for `template` (everything but the NAT port filled
/// in): tries random NAT ports until one is free for this remote endpoint
/// (endpoint-dependent mapping), inserting the reply half first so two flows
/// can never share a reply tuple.
///
/// Each attempt is one insert and nothing else: a loop body with several
/// ways to continue multiplies the verifier's states per iteration. Ports of
/// expired flows are freed by the agent's sweep and by the LRU, not here.
#[inline(always)]
pub fn create_binding(cfg: &GatewayConfig, template: &NatEntry) -> Result<NatEntry, Counter> {
    let mut entry = *template;
    let random = unsafe { bpf_get_prandom_u32() };
    let retries = if cfg.port_retries < MAX_PORT_RETRIES { cfg.port_retries } else { MAX_PORT_RETRIES };
    let mut bound = false;
    for attempt in 0..MAX_PORT_RETRIES {
        if attempt >= retries {
            break;
        }
        let fresh = unsafe { bpf_get_prandom_u32() };
        let nat_port = candidate_port(cfg.nat_port_min, cfg.nat_port_max, random, fresh, attempt);
        entry.nat_port_be = nat_port.to_be();
        if CT_REPLY.insert(&entry.reply_tuple(cfg.gateway_ip_be), &entry, BPF_NOEXIST as u64).is_ok() {
            bound = true;
            break;
        }
    }
    if !bound {
        count_nat_exhausted(&entry.nat_destination());
        return Err(Counter::DropNatPortsExhausted);
    }
    let original = entry.original_tuple();
    if CT_ORIGINAL.insert(&original, &entry, BPF_NOEXIST as u64).is_err() {
        // Another CPU created this flow between our lookup and now: give our
        // port back and use theirs.
        let _ = CT_REPLY.remove(&entry.reply_tuple(cfg.gateway_ip_be));
        return match CT_ORIGINAL.get_ptr(&original) {
            Some(theirs) => Ok(unsafe { *theirs }),
            None => Err(Counter::DropConntrackInsert),
        };
    }
    count(Counter::FlowCreated);
    Ok(entry)
}

/// The TCP state after a packet with `flags` in the given direction. Each
/// side's FIN is tracked on its own: a half-closed flow may still carry data
/// the other way, so only both FINs (or an RST) close it: `TimeWait` when
/// the remote's FIN came first (the remote then holds TIME_WAIT on the NAT
/// port's tuple), `Closing` otherwise.
#[inline(always)]
pub fn next_tcp_state(state: u8, flags: u8, half: Half) -> u8 {
    const CLOSING: u8 = FlowState::Closing as u8;
    const TIME_WAIT: u8 = FlowState::TimeWait as u8;
    const BY_CLIENT: u8 = FlowState::HalfClosedByClient as u8;
    const BY_REMOTE: u8 = FlowState::HalfClosedByRemote as u8;
    let closed = state == CLOSING || state == TIME_WAIT;
    if flags & TCP_RST != 0 {
        // An RST does not end the remote's TIME_WAIT everywhere (RFC 1337):
        // the port stays held.
        return if state == TIME_WAIT { TIME_WAIT } else { CLOSING };
    }
    if flags & TCP_FIN != 0 {
        return match half {
            _ if closed => state,
            Half::Original if state == BY_REMOTE => TIME_WAIT,
            Half::Original => BY_CLIENT,
            Half::Reply if state == BY_CLIENT => CLOSING,
            Half::Reply => BY_REMOTE,
        };
    }
    match half {
        // A fresh SYN on a closed tuple is the client reusing its port: the
        // binding starts over (and keeps its NAT port; the remote accepts it
        // in TIME_WAIT, as the client's timestamps on one tuple only grow).
        Half::Original if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 && closed => FlowState::SynSent as u8,
        Half::Reply if state == FlowState::SynSent as u8 => FlowState::Open as u8,
        _ => state,
    }
}

/// Records activity (and a new state) on `ptr` and checks that the other
/// half still belongs to this binding; re-creates it if the LRU evicted it.
/// Returns false when the binding is lost: its other tuple now belongs to a
/// newer binding, and this half must not be used.
///
/// The client direction checks on every packet: with its reply half gone,
/// the NAT port could be handed to another flow, and this flow's packets
/// must never go out on that flow's 5-tuple. Timestamps are written at most
/// once per interval (or on a state change) to keep cache lines quiet.
#[inline(always)]
pub fn touch(cfg: &GatewayConfig, half: Half, ptr: *mut NatEntry, new_state: u8, now: u64) -> bool {
    let entry = unsafe { &mut *ptr };
    let write = entry.state != new_state || now >= entry.last_seen_ns + REFRESH_INTERVAL_NS;
    if half == Half::Reply && !write {
        return true;
    }
    if write {
        entry.state = new_state;
        entry.last_seen_ns = now;
    }
    let copy = *entry;
    let (other_tuple, other) = match half {
        Half::Original => {
            let t = copy.reply_tuple(cfg.gateway_ip_be);
            (t, CT_REPLY.get_ptr_mut(&t))
        }
        Half::Reply => {
            let t = copy.original_tuple();
            (t, CT_ORIGINAL.get_ptr_mut(&t))
        }
    };
    match other {
        Some(other) => {
            let other = unsafe { &mut *other };
            if !other.same_binding(&copy) {
                return false;
            }
            if write {
                other.state = new_state;
                other.last_seen_ns = now;
            }
            true
        }
        None => {
            // NOEXIST: if another CPU just bound this tuple, it is theirs.
            let restored = match half {
                Half::Original => CT_REPLY.insert(&other_tuple, &copy, BPF_NOEXIST as u64),
                Half::Reply => CT_ORIGINAL.insert(&other_tuple, &copy, BPF_NOEXIST as u64),
            };
            if restored.is_ok() {
                count(Counter::FlowHalfRestored);
            }
            restored.is_ok()
        }
    }
}
