//! A datagram's later fragments carry no ports: they are translated with
//! the flow their first fragment was, which `remember_first` keeps under
//! what all fragments share (`egress_common::fragments`). Each fragment is
//! sent on as it comes; nothing is held or reassembled, so a flood of
//! fragments costs an LRU map's fixed memory and nothing else.
use aya_ebpf::programs::TcContext;
use egress_common::{
    config::GatewayConfig,
    conntrack::{FlowTuple, NatEntry},
    counters::Counter,
    fragments::{FragmentFlow, FragmentKey, FRAGMENT_TIMEOUT_NS},
};

use crate::{
    conntrack::{self, Half},
    headers::Ipv4Header,
    maps::{count, take_first_fragment, FRAGMENTS},
    nat::rewrite::{rewrite_ipv4_hop, End},
};

#[inline(always)]
fn key_of(ip: &Ipv4Header) -> FragmentKey {
    FragmentKey::new(ip.src_be, ip.dst_be, ip.id_be, ip.protocol)
}

/// Before a first fragment of `client_id`'s flow is translated (and
/// remembered): refused once the client has used up its allowance of
/// entries in the shared map, so that one pod's spray of first fragments
/// cannot push other pods' datagrams out before their later fragments
/// come. Any other packet passes.
#[inline(always)]
pub fn charge_first(ip: &Ipv4Header, client_id: u32, now: u64) -> Result<(), Counter> {
    if ip.is_first_fragment() && !take_first_fragment(client_id, now) {
        return Err(Counter::DropFragmentOverBudget);
    }
    Ok(())
}

/// After a first fragment was translated with the binding `tuple` keys
/// (in the half it arrived on), `client_id`'s made at `binding_created_ns`
/// (0: any of that client's): its datagram's other fragments will follow
/// it. `ip` is its header as it arrived. Any other packet is left alone.
#[inline(always)]
pub fn remember_first(ip: &Ipv4Header, tuple: &FlowTuple, client_id: u32, binding_created_ns: u64, now: u64) {
    if ip.is_first_fragment() {
        let flow =
            FragmentFlow { tuple: *tuple, client_id, _pad0: 0, binding_created_ns, first_seen_ns: now };
        // A full LRU forgets its oldest datagram; a failed insert only
        // loses this one's later fragments, which are then counted.
        let _ = FRAGMENTS.insert(key_of(ip), flow, 0);
    }
}

/// A first fragment that is not (or not yet) translated: whatever an
/// earlier datagram with the same key left is forgotten, so this one's
/// later fragments never follow that one's flow.
#[inline(always)]
pub fn forget_first(ip: &Ipv4Header) {
    if ip.is_first_fragment() {
        let _ = FRAGMENTS.remove(key_of(ip));
    }
}

/// The live binding of a later fragment's datagram, in `half`; None when
/// its first fragment has not passed here, passed longer ago than the
/// fragment timeout, or its flow has ended since (its port may now be
/// another client's).
#[inline(always)]
pub fn binding_of_later(cfg: &GatewayConfig, ip: &Ipv4Header, half: Half, now: u64) -> Option<NatEntry> {
    let key = key_of(ip);
    // SAFETY: copied out at once; a concurrent update can only make the
    // copy another datagram's flow under the same key, which the binding
    // checks below treat like any packet's.
    let flow = unsafe { *FRAGMENTS.get(key)? };
    if now.saturating_sub(flow.first_seen_ns) > FRAGMENT_TIMEOUT_NS {
        let _ = FRAGMENTS.remove(key);
        return None;
    }
    let (_, entry) = conntrack::ct_lookup::<NatEntry>(cfg, half, &flow.tuple, now)?;
    let same_binding = entry.client_id == flow.client_id
        && (flow.binding_created_ns == 0 || entry.created_ns == flow.binding_created_ns);
    same_binding.then_some(entry)
}

/// Translates a later fragment in place: `end`'s address becomes
/// `new_addr_be`, the TTL drops by one (the caller has checked it is above
/// 1). It has no L4 header, so only the IP checksum follows.
#[inline(always)]
pub fn rewrite_later(
    ctx: &TcContext,
    ip_off: usize,
    ip: &Ipv4Header,
    end: End,
    new_addr_be: u32,
) -> Result<(), Counter> {
    rewrite_ipv4_hop(ctx, ip_off, ip, end, new_addr_be)?;
    count(Counter::FragmentTranslated);
    Ok(())
}
