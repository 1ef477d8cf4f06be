//! The program's maps. Names and value types come from egress-common so the
//! agent and `status` read exactly these.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use crate::wire::ICMP6_ANSWER_MAX_QUOTE;
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::bpf_tail_call,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, ProgramArray},
    programs::TcContext,
    EbpfContext,
};
use egress_common::{
    allowance::{Allowance, ICMP_ANSWERS},
    config::{GatewayConfig, CONFIG_LAYOUT_VERSION, TUNNEL_OVERHEAD6},
    conntrack::{FlowTuple, FlowTuple6, NatEntry, NatEntry6},
    counters::{Counter, COUNTER_SLOTS},
    fragments::{
        FragmentFlow, FragmentFlow6, FragmentKey, FragmentKey6, FIRST_FRAGMENTS, FRAGMENTS_MAX,
        SPLIT_TAIL_MAX,
    },
    maps::{
        ClientInfo, ClientRefusals, ClientTraffic, NatDestination, NatDestination6, CLIENTS_MAX,
        CLIENT_ID_MAX, CT_MAX_DEFAULT, CT_RECENT_SLOTS, EXCLUDED_DESTINATIONS_MAX, IPV6_PROGRAM_SLOTS,
        NAT_EXHAUSTED_MAX,
    },
};

#[map]
pub static CONFIG: Array<GatewayConfig> = Array::with_max_entries(1, 0);

#[map]
pub static CLIENTS: HashMap<u32, ClientInfo> = HashMap::with_max_entries(CLIENTS_MAX, 0);

#[map]
pub static EXCLUDED_DSTS: LpmTrie<u32, u8> =
    LpmTrie::with_max_entries(EXCLUDED_DESTINATIONS_MAX, BPF_F_NO_PREALLOC);

/// `egress_common::maps::CLIENTS6`.
#[map]
pub static CLIENTS6: HashMap<[u8; 16], ClientInfo> = HashMap::with_max_entries(CLIENTS_MAX, 0);

#[map]
pub static EXCLUDED_DSTS6: LpmTrie<[u8; 16], u8> =
    LpmTrie::with_max_entries(EXCLUDED_DESTINATIONS_MAX, BPF_F_NO_PREALLOC);

/// Preallocated hashes, not LRUs: an LRU takes entries back on its own,
/// so a live flow could lose a half and, with it, its NAT port. Here only
/// the rules in `conntrack` (and the agent's sweep) remove a binding.
#[map]
pub static CT_ORIGINAL: HashMap<FlowTuple, NatEntry> = HashMap::with_max_entries(CT_MAX_DEFAULT, 0);

#[map]
pub static CT_REPLY: HashMap<FlowTuple, NatEntry> = HashMap::with_max_entries(CT_MAX_DEFAULT, 0);

#[map]
pub static CT_RECENT: PerCpuArray<FlowTuple> = PerCpuArray::with_max_entries(CT_RECENT_SLOTS, 0);

#[map]
pub static CT_RECENT_CURSOR: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// One entry per CPU: room for a copy of a binding off the 512-byte stack,
/// which the whole program shares.
#[map]
pub static CT_SCRATCH: PerCpuArray<NatEntry> = PerCpuArray::with_max_entries(1, 0);

/// The IPv6 conntrack, as the IPv4 one above (the agent sizes the halves).
#[map]
pub static CT6_ORIGINAL: HashMap<FlowTuple6, NatEntry6> = HashMap::with_max_entries(CT_MAX_DEFAULT, 0);

#[map]
pub static CT6_REPLY: HashMap<FlowTuple6, NatEntry6> = HashMap::with_max_entries(CT_MAX_DEFAULT, 0);

#[map]
pub static CT6_RECENT: PerCpuArray<FlowTuple6> = PerCpuArray::with_max_entries(CT_RECENT_SLOTS, 0);

#[map]
pub static CT6_RECENT_CURSOR: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static CT6_SCRATCH: PerCpuArray<NatEntry6> = PerCpuArray::with_max_entries(1, 0);

/// One entry per CPU where a new IPv6 binding is filled in before it is
/// inserted (`CT6_SCRATCH` is where making room copies a victim).
#[map]
pub static CT6_TEMPLATE: PerCpuArray<NatEntry6> = PerCpuArray::with_max_entries(1, 0);

/// An LRU: in-flight datagrams are worth remembering only briefly, and a
/// flood of first fragments must cost bounded memory (`fragments`).
#[map]
pub static FRAGMENTS: LruHashMap<FragmentKey, FragmentFlow> = LruHashMap::with_max_entries(FRAGMENTS_MAX, 0);

/// One entry per CPU where an IPv6 fragment's key and flow are put
/// together (`nat::fragments6`): off the stack, which the reply path's
/// translation and tunnel fill.
#[map]
pub static FRAGMENT6_SCRATCH: PerCpuArray<FragmentScratch6> = PerCpuArray::with_max_entries(1, 0);

/// 8-byte aligned: `nat::fragments6` compares its key's addresses 8 bytes
/// at a time.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct FragmentScratch6 {
    pub key: FragmentKey6,
    pub flow: FragmentFlow6,
}

/// `FRAGMENTS` for IPv6 (`nat::fragments6`); the two families share each
/// client's allowance of first fragments.
#[map]
pub static FRAGMENTS6: LruHashMap<FragmentKey6, FragmentFlow6> =
    LruHashMap::with_max_entries(FRAGMENTS_MAX, 0);

/// Room for a split reply's second part (at most SPLIT_TAIL_MAX bytes): a
/// power of two, so a mask can bound the helpers' sizes for the verifier.
pub const SPLIT_TAIL_BUF: usize = 2 * SPLIT_TAIL_MAX;

#[map]
pub static SPLIT_TAIL: PerCpuArray<[u8; SPLIT_TAIL_BUF]> = PerCpuArray::with_max_entries(1, 0);

/// The head of an expired IPv6 packet that is longer than its answer may
/// quote (`nat::time_exceeded6`), off the stack while the packet shrinks.
#[map]
pub static QUOTE_HEAD: PerCpuArray<[u8; ICMP6_ANSWER_MAX_QUOTE]> = PerCpuArray::with_max_entries(1, 0);

/// The tunnel headers over IPv6 being written in front of a packet
/// (`tunnel::encap::write_tunnel_header6`): 70 bytes, off the stack of the
/// programs that were near its 512 bytes before IPv6 outers came.
#[map]
pub static TUNNEL_HEADER6: PerCpuArray<[u8; TUNNEL_OVERHEAD6]> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static CLIENT_FLOWS: Array<u64> = Array::with_max_entries(CLIENT_ID_MAX + 1, 0);

#[map]
pub static CLIENT_FLOWS_SWEPT: Array<u64> = Array::with_max_entries(CLIENT_ID_MAX + 1, 0);

#[map]
pub static CLIENT_REFUSALS: PerCpuArray<ClientRefusals> = PerCpuArray::with_max_entries(CLIENT_ID_MAX + 1, 0);

#[map]
pub static ICMP_ANSWER_RATE: Array<u64> = Array::with_max_entries(CLIENT_ID_MAX + 1, 0);

#[map]
pub static FRAGMENT_ALLOWANCE: Array<u64> = Array::with_max_entries(CLIENT_ID_MAX + 1, 0);

/// `egress_common::maps::IPV6_PROGRAMS`.
#[map]
pub static IPV6_PROGRAMS: ProgramArray = ProgramArray::with_max_entries(IPV6_PROGRAM_SLOTS.len() as u32, 0);

/// Hands the packet to the IPv6 program in `slot`; returns only if the
/// slot is empty. aya's `ProgramArray::tail_call` is left to the compiler to
/// inline, and a tail call from a subprogram needs BTF the object does not
/// carry (the verifier refuses it), so the helper is called here, inlined.
#[inline(always)]
pub fn tail_call_ipv6(ctx: &TcContext, slot: u32) {
    let map = &IPV6_PROGRAMS as *const ProgramArray as *mut core::ffi::c_void;
    // SAFETY: `ProgramArray` is `repr(transparent)` over its map
    // definition, which is what the helper's map argument points to.
    unsafe { bpf_tail_call(ctx.as_ptr(), map, slot) };
}

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map]
pub static CLIENT_TRAFFIC: PerCpuArray<ClientTraffic> = PerCpuArray::with_max_entries(CLIENT_ID_MAX + 1, 0);

#[map]
pub static NAT_EXHAUSTED: LruPerCpuHashMap<NatDestination, u64> =
    LruPerCpuHashMap::with_max_entries(NAT_EXHAUSTED_MAX, 0);

#[map]
pub static NAT_EXHAUSTED6: LruPerCpuHashMap<NatDestination6, u64> =
    LruPerCpuHashMap::with_max_entries(NAT_EXHAUSTED_MAX, 0);

/// The configuration, once the agent has written a layout we understand.
#[inline(always)]
pub fn config() -> Option<&'static GatewayConfig> {
    let cfg = CONFIG.get(0)?;
    if cfg.layout_version != CONFIG_LAYOUT_VERSION {
        return None;
    }
    Some(cfg)
}

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other writer, a plain add is exact.
        unsafe { *slot += 1 };
    }
}

/// A new flow to `destination` found no free NAT port: counted per
/// destination (in `NAT_EXHAUSTED` or `NAT_EXHAUSTED6`), so the agent can
/// say which one ran out.
#[inline(always)]
pub fn count_nat_exhausted<D>(map: &LruPerCpuHashMap<D, u64>, destination: &D) {
    match map.get_ptr_mut(destination) {
        // Per-CPU value: no other writer.
        Some(slot) => unsafe { *slot += 1 },
        None => {
            let _ = map.insert(destination, &1, 0);
        }
    }
}

/// Adds `delta` (wrapping: `u64::MAX` is -1) to the bindings the datapath
/// holds for `client_id`. Every CPU writes this slot: an atomic add, whose
/// result is not used (so it is BPF_XADD, which every kernel has; the BPF
/// target has no `AtomicU64::fetch_add`, hence the intrinsic).
#[inline(always)]
pub fn client_flows_add(client_id: u32, delta: u64) {
    if let Some(slot) = CLIENT_FLOWS.get_ptr_mut(client_id) {
        // SAFETY: an 8-byte aligned array value that lives as long as the map.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, delta) };
    }
}

/// The bindings `client_id` holds: what the datapath made minus what it
/// removed, minus what the agent removed (a count read a moment apart from
/// another CPU's update may be one off; a share is not exact to the flow).
#[inline(always)]
pub fn client_flow_count(client_id: u32) -> u64 {
    let read = |slot: Option<*const u64>| match slot {
        // SAFETY: an array value, read whole (an aligned 8-byte load).
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => 0,
    };
    let held =
        read(CLIENT_FLOWS.get_ptr(client_id)).wrapping_sub(read(CLIENT_FLOWS_SWEPT.get_ptr(client_id)));
    // Below zero only through a race with a client's removal: none held.
    if held > u64::MAX / 2 {
        0
    } else {
        held
    }
}

/// Why a client's new flow was refused.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    OverShare,
    TableFull,
}

/// Counts a refused new flow of `client_id`, and where it was going when
/// that is an IPv4 `destination` (an IPv6 one leaves the last IPv4 one).
#[inline(always)]
pub fn count_refusal(client_id: u32, refusal: Refusal, destination: Option<&NatDestination>) {
    if let Some(slot) = CLIENT_REFUSALS.get_ptr_mut(client_id) {
        // Per-CPU slot: no other writer.
        let refusals = unsafe { &mut *slot };
        match refusal {
            Refusal::OverShare => refusals.over_share += 1,
            Refusal::TableFull => refusals.table_full += 1,
        }
        if let Some(destination) = destination {
            refusals.last_destination = *destination;
        }
    }
}

/// Takes one from `client_id`'s allowance kept in `slots`; false when it
/// is spent. Plain loads and stores: racing CPUs may let one extra through
/// (`egress_common::allowance`).
#[inline(always)]
fn take_allowance(slots: &Array<u64>, allowance: &Allowance, client_id: u32, now_ns: u64) -> bool {
    let Some(slot) = slots.get_ptr_mut(client_id) else { return false };
    // SAFETY: an aligned array value that lives as long as the map.
    let next = allowance.take(unsafe { core::ptr::read_volatile(slot) }, now_ns);
    match next {
        Some(next) => {
            unsafe { core::ptr::write_volatile(slot, next) };
            true
        }
        None => false,
    }
}

/// Whether the gateway may answer `client_id` with an ICMP error of its
/// own now (and takes one answer from its allowance if so).
#[inline(always)]
pub fn take_icmp_answer(client_id: u32, now_ns: u64) -> bool {
    take_allowance(&ICMP_ANSWER_RATE, &ICMP_ANSWERS, client_id, now_ns)
}

/// Whether a first fragment of `client_id`'s flows may take an entry in
/// `FRAGMENTS` now (and takes one from its allowance if so).
#[inline(always)]
pub fn take_first_fragment(client_id: u32, now_ns: u64) -> bool {
    take_allowance(&FRAGMENT_ALLOWANCE, &FIRST_FRAGMENTS, client_id, now_ns)
}

/// Which way a packet of a client's flow went.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToRemote,
    ToClient,
}

/// Adds a forwarded packet (`segments` on the wire, `bytes` of IPv4) to
/// its client's traffic.
#[inline(always)]
pub fn account(client_id: u32, direction: Direction, segments: u64, bytes: u64) {
    if let Some(slot) = CLIENT_TRAFFIC.get_ptr_mut(client_id) {
        // Per-CPU slot: no other writer.
        let traffic = unsafe { &mut *slot };
        if direction == Direction::ToRemote {
            traffic.to_remote_packets += segments;
            traffic.to_remote_bytes += bytes;
        } else {
            traffic.to_client_packets += segments;
            traffic.to_client_bytes += bytes;
        }
    }
}

/// How many packets `ctx` is on the wire: a GSO super-packet is `gso_segs`.
/// Read it before `bpf_skb_adjust_room`, which sets a GSO packet's
/// `gso_segs` to 0 for the stack to recompute.
#[inline(always)]
pub fn wire_segments(ctx: &aya_ebpf::programs::TcContext) -> u64 {
    let segments = unsafe { (*ctx.skb.skb).gso_segs };
    if segments == 0 {
        1
    } else {
        segments as u64
    }
}
