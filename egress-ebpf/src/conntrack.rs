//! Connection tracking: lookup with expiry, pairwise creation with NAT port
//! allocation, refresh and TCP state. The two halves are `CT_ORIGINAL`
//! (keyed by what the client sends) and `CT_REPLY` (keyed by what replies
//! carry). Neither evicts on its own; a binding leaves the table only
//! through these functions or the agent's sweep:
//!
//! - expired, when a packet meets it (`ct_lookup`);
//! - to make room in a full table, or for a client at its share (then only
//!   one of its own), and only if it never saw a reply, has ended (a closed
//!   TCP flow) or has expired (`ct_make_room`): a live flow the remote has
//!   answered keeps its NAT port until it ends, and a full table refuses
//!   the new flow instead;
//! - replaced, when its other tuple went to a newer binding (`snat`).
//!
//! A half missing its partner (the sweep removes one after the other) is
//! re-created from it, never on top of a newer binding.
//!
//! Written once for both address families over [`Tracked`]: a family is
//! its entry type, which names its maps.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    maps::{HashMap, PerCpuArray},
};
use egress_common::{
    config::{GatewayConfig, MAX_PORT_RETRIES},
    conntrack::{Binding, FlowState, FlowTuple, FlowTuple6, NatEntry, NatEntry6, FLOW_SEEN_REPLY},
    counters::Counter,
    maps::{NatDestination, NatDestination6, CT_RECENT_SLOTS},
    ports::{candidate_port, preserved_port},
};

use crate::{
    headers::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    maps::{
        client_flow_count, client_flows_add, count, count_nat_exhausted, count_refusal, Refusal,
        CT6_ORIGINAL, CT6_RECENT, CT6_RECENT_CURSOR, CT6_REPLY, CT6_SCRATCH, CT_ORIGINAL, CT_RECENT,
        CT_RECENT_CURSOR, CT_REPLY, CT_SCRATCH, NAT_EXHAUSTED, NAT_EXHAUSTED6,
    },
};

/// An address family's bindings and the maps that hold them. The client's
/// share (`CLIENT_FLOWS`) counts the bindings of both families together.
pub trait Tracked: Binding + 'static {
    /// The half keyed by the tuple the client sends.
    fn original_map() -> &'static HashMap<Self::Tuple, Self>;
    /// The half keyed by the tuple replies carry.
    fn reply_map() -> &'static HashMap<Self::Tuple, Self>;
    /// Each CPU's ring of the original tuples of the bindings it made last.
    fn recent_map() -> &'static PerCpuArray<Self::Tuple>;
    /// Where each CPU writes next in its ring.
    fn recent_cursor_map() -> &'static PerCpuArray<u32>;
    /// One entry per CPU to copy a binding into, off the stack.
    fn scratch_map() -> &'static PerCpuArray<Self>;
    /// The gateway's address of this family: replies are sent to it.
    fn gateway(cfg: &GatewayConfig) -> Self::Address;
    /// Counts a new flow dropped because every NAT port towards
    /// `destination` was bound.
    fn count_exhausted(destination: &Self::Destination);
    /// Counts a new flow of `client_id` refused for `refusal`.
    fn count_refused(client_id: u32, refusal: Refusal, destination: &Self::Destination);
}

impl Tracked for NatEntry {
    #[inline(always)]
    fn original_map() -> &'static HashMap<FlowTuple, NatEntry> {
        &CT_ORIGINAL
    }
    #[inline(always)]
    fn reply_map() -> &'static HashMap<FlowTuple, NatEntry> {
        &CT_REPLY
    }
    #[inline(always)]
    fn recent_map() -> &'static PerCpuArray<FlowTuple> {
        &CT_RECENT
    }
    #[inline(always)]
    fn recent_cursor_map() -> &'static PerCpuArray<u32> {
        &CT_RECENT_CURSOR
    }
    #[inline(always)]
    fn scratch_map() -> &'static PerCpuArray<NatEntry> {
        &CT_SCRATCH
    }
    #[inline(always)]
    fn gateway(cfg: &GatewayConfig) -> u32 {
        cfg.gateway_ip_be
    }
    #[inline(always)]
    fn count_exhausted(destination: &NatDestination) {
        count_nat_exhausted(&NAT_EXHAUSTED, destination)
    }
    #[inline(always)]
    fn count_refused(client_id: u32, refusal: Refusal, destination: &NatDestination) {
        count_refusal(client_id, refusal, Some(destination))
    }
}

impl Tracked for NatEntry6 {
    #[inline(always)]
    fn original_map() -> &'static HashMap<FlowTuple6, NatEntry6> {
        &CT6_ORIGINAL
    }
    #[inline(always)]
    fn reply_map() -> &'static HashMap<FlowTuple6, NatEntry6> {
        &CT6_REPLY
    }
    #[inline(always)]
    fn recent_map() -> &'static PerCpuArray<FlowTuple6> {
        &CT6_RECENT
    }
    #[inline(always)]
    fn recent_cursor_map() -> &'static PerCpuArray<u32> {
        &CT6_RECENT_CURSOR
    }
    #[inline(always)]
    fn scratch_map() -> &'static PerCpuArray<NatEntry6> {
        &CT6_SCRATCH
    }
    #[inline(always)]
    fn gateway(cfg: &GatewayConfig) -> [u8; 16] {
        cfg.gateway_ip6
    }
    #[inline(always)]
    fn count_exhausted(destination: &NatDestination6) {
        count_nat_exhausted(&NAT_EXHAUSTED6, destination)
    }
    #[inline(always)]
    fn count_refused(client_id: u32, refusal: Refusal, _destination: &NatDestination6) {
        count_refusal(client_id, refusal, None)
    }
}

const NS_PER_S: u64 = 1_000_000_000;
/// Timestamps are written at most this often per flow: a write per packet
/// would bounce the entry's cache line between CPUs for nothing.
const REFRESH_INTERVAL_NS: u64 = NS_PER_S;
/// Recent bindings looked at for one to make room with, when the table is
/// full (Linux's early_drop looks at a few hash buckets in the same spirit).
const MAKE_ROOM_SAMPLES: u32 = 16;

/// `-EEXIST`, what an insert with `BPF_NOEXIST` returns for a taken key; any
/// other failure means the map is full (`-E2BIG`) or out of memory.
const EEXIST: i32 = 17;

/// The delta that takes one from a client's flow count (wrapping add).
const ONE_LESS: u64 = u64::MAX;

#[inline(always)]
pub fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// Which half of a binding a handle came from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Original,
    Reply,
}

/// A binding found in one half of the table, and the copy of it that the
/// caller decides on.
///
/// The handle points into the map. The memory stays valid for this run of
/// the program (a preallocated hash never frees its elements), but another
/// CPU may change it, or delete it and reuse the element for another
/// binding, at any moment. So nothing is decided on the pointer itself:
/// [`ct_lookup`] copies the entry out and checks that the copy still
/// belongs to the packet's tuple; writes go through [`BindingRef::touch`]
/// and [`BindingRef::set_upload_route`], which only store small fields.
pub struct BindingRef<B: Tracked> {
    ptr: *mut B,
    half: Half,
}

/// A live binding for `tuple` in `half`'s map, with a copy of it that
/// belongs to `tuple`; an expired one is removed.
#[inline(always)]
pub fn ct_lookup<B: Tracked>(
    cfg: &GatewayConfig,
    half: Half,
    tuple: &B::Tuple,
    now: u64,
) -> Option<(BindingRef<B>, B)> {
    let ptr = match half {
        Half::Original => B::original_map().get_ptr_mut(tuple),
        Half::Reply => B::reply_map().get_ptr_mut(tuple),
    }?;
    // SAFETY: a value pointer the map lookup just returned: valid memory for
    // this program run (see `BindingRef`); the copy is checked below.
    let entry = unsafe { copy_binding(ptr) };
    let belongs = match half {
        Half::Original => entry.original_tuple() == *tuple,
        Half::Reply => entry.reply_tuple(B::gateway(cfg)) == *tuple,
    };
    if !belongs {
        // Deleted and reused for another binding since the lookup: for this
        // packet, the tuple has no binding.
        return None;
    }
    if entry.is_expired(cfg, now) {
        count(Counter::FlowExpiredInDatapath);
        ct_remove_binding(cfg, &entry);
        return None;
    }
    Some((BindingRef { ptr, half }, entry))
}

/// A copy of the binding at `ptr`, read once and in 8-byte words.
/// Volatile, so the compiler neither reads the map again later instead of
/// the copy nor moves the reads past the checks made on it. In words,
/// because a volatile read of the whole struct is made field by field and
/// its arrays byte by byte: an IPv6 binding's two addresses were 32
/// one-byte loads, each spilled to an 8-byte stack slot (`ct_lookup` took
/// 400 bytes of stack for IPv6).
///
/// # Safety
/// `ptr` points to a live, 8-byte aligned binding (a map value).
#[inline(always)]
unsafe fn copy_binding<B: Tracked>(ptr: *const B) -> B {
    const { assert!(core::mem::size_of::<B>() % 8 == 0 && core::mem::align_of::<B>() == 8) };
    let mut copy = core::mem::MaybeUninit::<B>::uninit();
    let (from, to) = (ptr as *const u64, copy.as_mut_ptr() as *mut u64);
    for word in 0..core::mem::size_of::<B>() / 8 {
        // SAFETY: within both bindings, aligned (asserted above).
        unsafe { to.add(word).write(core::ptr::read_volatile(from.add(word))) };
    }
    // SAFETY: every byte was written; any bit pattern is a binding.
    unsafe { copy.assume_init() }
}

/// Removes both halves of a binding, each only if it still belongs to it,
/// and takes the binding off its client's count. Returns whether the
/// original half was removed here.
#[inline(always)]
pub fn ct_remove_binding<B: Tracked>(cfg: &GatewayConfig, entry: &B) -> bool {
    let reply = entry.reply_tuple(B::gateway(cfg));
    if let Some(ptr) = B::reply_map().get_ptr(&reply) {
        if unsafe { &*ptr }.same_binding(entry) {
            let _ = B::reply_map().remove(&reply);
        }
    }
    let original = entry.original_tuple();
    let Some(ptr) = B::original_map().get_ptr(&original) else { return false };
    if !unsafe { &*ptr }.same_binding(entry) {
        return false;
    }
    ct_remove_original::<B>(&original, entry.client_id())
}

/// Removes the original half under `tuple` (a binding of `client_id`) and
/// takes it off the client's count, if the removal was ours.
#[inline(always)]
pub fn ct_remove_original<B: Tracked>(tuple: &B::Tuple, client_id: u32) -> bool {
    if B::original_map().remove(tuple).is_err() {
        return false;
    }
    client_flows_add(client_id, ONE_LESS);
    true
}

/// Why a new binding could not be made.
fn refuse<B: Tracked>(entry: &B, refusal: Refusal) -> Counter {
    B::count_refused(entry.client_id(), refusal, &entry.nat_destination());
    match refusal {
        Refusal::OverShare => Counter::DropClientFlowLimit,
        Refusal::TableFull => Counter::DropConntrackFull,
    }
}

/// Creates a binding for `template` (everything but the NAT port and the
/// creation time filled in): within the client's share of the table, finds
/// a NAT port free for this remote endpoint (endpoint-dependent mapping,
/// `ct_claim_nat_port`), inserting the reply half first so two flows can
/// never share a reply tuple.
///
/// A port is free only if no binding holds its reply tuple: a live flow's
/// port is never taken, and an expired flow's only once the sweep (or a
/// packet meeting it) removed it. When the table itself is full, one
/// unreplied or expired binding makes room (`ct_make_room`), or the flow is
/// refused.
///
/// Returns the flow's NAT port (network order).
#[inline(always)]
pub fn ct_create_binding<B: Tracked>(cfg: &GatewayConfig, entry: &mut B, now: u64) -> Result<u16, Counter> {
    entry.set_created_ns(now);
    let client_id = entry.client_id();
    // At its share, a client may only replace one of its own bindings that
    // may go (never answered, ended, expired); otherwise it is refused.
    if client_flow_count(client_id) >= cfg.max_flows_per_client as u64
        && !ct_make_room::<B>(cfg, now, client_id)
    {
        return Err(refuse(entry, Refusal::OverShare));
    }
    match ct_claim_nat_port(cfg, entry) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => {
            B::count_exhausted(&entry.nat_destination());
            return Err(Counter::DropNatPortsExhausted);
        }
        // The table is full: one binding that may go makes room, and the
        // port last tried (free of any reply tuple) is tried again.
        Err(_) => {
            if !ct_make_room::<B>(cfg, now, ANY_CLIENT)
                || B::reply_map()
                    .insert(&entry.reply_tuple(B::gateway(cfg)), &*entry, BPF_NOEXIST as u64)
                    .is_err()
            {
                return Err(refuse(entry, Refusal::TableFull));
            }
        }
    }
    let original = entry.original_tuple();
    match B::original_map().insert(&original, &*entry, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(e) => {
            // Give our port back either way.
            let _ = B::reply_map().remove(&entry.reply_tuple(B::gateway(cfg)));
            if e != -EEXIST {
                return Err(refuse(entry, Refusal::TableFull));
            }
            // Another CPU created this flow between our lookup and now: use
            // its NAT port, if the binding is still there and still this
            // flow's (the port read first, then the tuple checked: the
            // stack has no room for a whole copy here).
            let Some(theirs) = B::original_map().get_ptr(&original) else {
                return Err(Counter::DropConntrackFull);
            };
            // SAFETY: a value pointer the lookup just returned (see
            // `BindingRef`). Volatile loads keep their order: the port
            // first, then the tuple it must still belong to.
            let nat_port_be = unsafe { B::nat_port_be_volatile(theirs) };
            return if unsafe { B::original_tuple_volatile(theirs) } == original {
                Ok(nat_port_be)
            } else {
                Err(Counter::DropConntrackFull)
            };
        }
    }
    client_flows_add(client_id, 1);
    ct_remember_recent::<B>(&original);
    count(Counter::FlowCreated);
    Ok(entry.nat_port_be())
}

/// Claims a NAT port for `entry` by inserting its reply half (`BPF_NOEXIST`,
/// so a port held by any binding to this remote endpoint is never taken):
///
/// 1. the client's own port, when it lies in the NAT range (port
///    preservation, as Linux and Cilium do). At low occupancy it is nearly
///    always free, and costs one insert;
/// 2. then up to `port_retries` random ports: 128 of them fail 0.14 % of
///    new flows at 95 % occupancy (0.95^128), where 16 failed 44 %. Each is
///    one insert and nothing more: looking a candidate up first, to spare
///    the bucket lock of a failed insert, measured no faster
///    (`bench-micro`, within this VM's run-to-run noise).
///
/// Returns the last insert's result: `Err(-EEXIST)` when every candidate
/// was taken, another error when the table is full (the port last tried is
/// then in `entry`, free of any reply tuple).
///
/// The loop body has one way to continue and one to stop: each branch more
/// multiplies the verifier's states per iteration.
#[inline(always)]
fn ct_claim_nat_port<B: Tracked>(cfg: &GatewayConfig, entry: &mut B) -> Result<(), i32> {
    let gateway = B::gateway(cfg);
    if let Some(nat_port) =
        preserved_port(cfg.nat_port_min, cfg.nat_port_max, u16::from_be(entry.client_port_be()))
    {
        entry.set_nat_port_be(nat_port.to_be());
        let inserted = B::reply_map().insert(&entry.reply_tuple(gateway), &*entry, BPF_NOEXIST as u64);
        if inserted != Err(-EEXIST) {
            return inserted;
        }
    }
    let random = unsafe { bpf_get_prandom_u32() };
    let retries = if cfg.port_retries < MAX_PORT_RETRIES { cfg.port_retries } else { MAX_PORT_RETRIES };
    let mut inserted: Result<(), i32> = Err(-EEXIST);
    for attempt in 0..MAX_PORT_RETRIES {
        if attempt >= retries {
            break;
        }
        let fresh = unsafe { bpf_get_prandom_u32() };
        let nat_port = candidate_port(cfg.nat_port_min, cfg.nat_port_max, random, fresh, attempt);
        entry.set_nat_port_be(nat_port.to_be());
        inserted = B::reply_map().insert(&entry.reply_tuple(gateway), &*entry, BPF_NOEXIST as u64);
        if inserted != Err(-EEXIST) {
            break;
        }
    }
    inserted
}

/// Writes a new binding's original tuple to this CPU's ring of recent
/// bindings (`CT_RECENT`), where `ct_make_room` looks for one that may go.
#[inline(always)]
fn ct_remember_recent<B: Tracked>(original: &B::Tuple) {
    let Some(cursor) = B::recent_cursor_map().get_ptr_mut(0) else { return };
    // SAFETY: per-CPU values: this CPU is their only writer. The cursor
    // counts every binding this CPU made (wrapping); the slot is its rest.
    let made = unsafe { *cursor };
    unsafe { *cursor = made.wrapping_add(1) };
    if let Some(ring) = B::recent_map().get_ptr_mut(made % CT_RECENT_SLOTS) {
        unsafe { *ring = *original };
    }
}

/// `ct_make_room`'s owner for a full table: a binding of any client.
const ANY_CLIENT: u32 = 0;

/// Removes one binding of `owner` (or of anyone: `ANY_CLIENT`; client ids
/// start at 1) that may make room (`NatEntry::is_evictable`: never
/// answered, ended, or past its timeout) among a few of this CPU's recent
/// bindings: the newest eight, then eight at random. Never a live flow
/// that has seen replies. Returns whether room was made.
#[inline(always)]
fn ct_make_room<B: Tracked>(cfg: &GatewayConfig, now: u64, owner: u32) -> bool {
    let Some(cursor) = B::recent_cursor_map().get(0).copied() else { return false };
    let filled = if cursor < CT_RECENT_SLOTS { cursor } else { CT_RECENT_SLOTS };
    if filled == 0 {
        return false;
    }
    for sample in 0..MAKE_ROOM_SAMPLES {
        // The newest bindings first (a flood's, or the client's own, when
        // it is the one making flows), then any of the ring's at random.
        let back = if sample < MAKE_ROOM_SAMPLES / 2 { sample } else { unsafe { bpf_get_prandom_u32() } };
        let slot = cursor.wrapping_sub(1).wrapping_sub(back % filled) % CT_RECENT_SLOTS;
        let Some(tuple) = B::recent_map().get(slot).copied() else { continue };
        let Some(ptr) = B::original_map().get_ptr(&tuple) else { continue };
        // One copy, decided on and removed by: the slot may be recycled for
        // another binding meanwhile, which the removal then leaves alone.
        // The copy lives in this CPU's scratch entry (the stack is full).
        let Some(scratch) = B::scratch_map().get_ptr_mut(0) else { return false };
        // SAFETY: a per-CPU value nothing else on this CPU uses meanwhile.
        let victim = unsafe {
            core::ptr::copy_nonoverlapping(ptr, scratch, 1);
            &*scratch
        };
        let owned = owner == ANY_CLIENT || victim.client_id() == owner;
        if owned
            && victim.original_tuple() == tuple
            && victim.is_evictable(cfg, now)
            && ct_remove_binding(cfg, victim)
        {
            count(Counter::FlowEarlyDropped);
            return true;
        }
    }
    false
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

/// Writes a packet's activity into a binding's entry, if the entry (a map
/// slot) still holds the binding `copy` was taken from.
#[inline(always)]
fn write_activity<B: Tracked>(slot: &mut B, copy: &B, new_state: u8, new_flags: u8, now: u64) {
    if slot.same_binding(copy) {
        slot.set_activity(new_state, new_flags, now);
    }
}

impl<B: Tracked> BindingRef<B> {
    /// Records activity (and a new state) on this half and checks that the
    /// other half still belongs to this binding; re-creates it if it went
    /// missing. A packet of the reply half also marks the binding as
    /// answered. Returns false when the binding is lost: its other tuple
    /// now belongs to a newer binding, and this half must not be used.
    ///
    /// The client direction checks on every packet: with its reply half
    /// gone, the NAT port could be handed to another flow, and this flow's
    /// packets must never go out on that flow's 5-tuple. Timestamps are
    /// written at most once per interval (or on a change) to keep cache
    /// lines quiet.
    #[inline(always)]
    pub fn touch(&self, cfg: &GatewayConfig, copy: &B, new_state: u8, now: u64) -> bool {
        let new_flags = if self.half == Half::Reply { copy.flags() | FLOW_SEEN_REPLY } else { copy.flags() };
        let write = copy.state() != new_state
            || copy.flags() != new_flags
            || now >= copy.last_seen_ns() + REFRESH_INTERVAL_NS;
        if self.half == Half::Reply && !write {
            return true;
        }
        if write {
            // SAFETY: see `BindingRef`. Written only while the slot still
            // holds this binding: a slot another CPU just recycled for a
            // new binding must not get this one's state.
            write_activity(unsafe { &mut *self.ptr }, copy, new_state, new_flags, now);
        }
        let (other_tuple, other) = match self.half {
            Half::Original => {
                let t = copy.reply_tuple(B::gateway(cfg));
                (t, B::reply_map().get_ptr_mut(&t))
            }
            Half::Reply => {
                let t = copy.original_tuple();
                (t, B::original_map().get_ptr_mut(&t))
            }
        };
        if let Some(other) = other {
            let other = unsafe { &mut *other };
            if !other.same_binding(copy) {
                return false;
            }
            if write {
                write_activity(other, copy, new_state, new_flags, now);
            }
            return true;
        }
        self.restore(&other_tuple, copy, new_state, new_flags, now)
    }

    /// Re-creates the missing other half under `other_tuple` from this
    /// half, as long as its slot still holds the binding `copy` was taken
    /// from (another CPU may have recycled it). Returns false only when the
    /// binding is lost: the slot or the tuple now holds another binding.
    #[inline(always)]
    fn restore(&self, other_tuple: &B::Tuple, copy: &B, new_state: u8, new_flags: u8, now: u64) -> bool {
        // SAFETY: see `BindingRef`; inserted from in place (the stack has no
        // room for another copy), after checking what the slot holds.
        let this = unsafe { &*self.ptr };
        if !this.same_binding(copy) {
            return false;
        }
        // NOEXIST: if another CPU just bound this tuple, it is theirs (or
        // it restored the same half first, which is as good).
        let inserted = match self.half {
            Half::Original => B::reply_map().insert(other_tuple, this, BPF_NOEXIST as u64),
            Half::Reply => B::original_map().insert(other_tuple, this, BPF_NOEXIST as u64),
        };
        match inserted {
            Ok(()) => {
                if self.half == Half::Reply {
                    client_flows_add(copy.client_id(), 1);
                }
                count(Counter::FlowHalfRestored);
                true
            }
            // A full table: the half stays missing for now; the flow goes
            // on (its next packet tries again), nothing is taken from it.
            Err(e) if e != -EEXIST => true,
            Err(_) => {
                let now_there = match self.half {
                    Half::Original => B::reply_map().get_ptr_mut(other_tuple),
                    Half::Reply => B::original_map().get_ptr_mut(other_tuple),
                };
                match now_there {
                    Some(there) => {
                        let there = unsafe { &mut *there };
                        write_activity(there, copy, new_state, new_flags, now);
                        there.same_binding(copy)
                    }
                    None => true,
                }
            }
        }
    }

    /// Stores the flow's upload route (original half only), if the slot
    /// still holds the binding `copy` was taken from.
    #[inline(always)]
    pub fn set_upload_route(&self, copy: &B, route: u8) {
        // SAFETY: see `BindingRef`; one byte of the entry.
        let slot = unsafe { &mut *self.ptr };
        if self.half == Half::Original && slot.same_binding(copy) {
            slot.set_upload_route(route);
        }
    }
}
