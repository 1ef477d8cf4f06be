//! Userspace view of the conntrack maps: listing flows, sweeping expired
//! ones, and forgetting a client's flows when it stops being a client.
use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd},
};

use anyhow::{Context, Result};
use aya::maps::{IterableMap, MapData, MapError};
use egress_common::{
    conntrack::{Binding, FlowState, FlowTuple, NatEntry},
    ip::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
};

use super::{
    map_batch::{self, Cursor},
    maps::DatapathMaps,
    sys_bpf,
};

type CtMap = aya::maps::HashMap<MapData, FlowTuple, NatEntry>;

/// linux/bpf.h: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

pub fn protocol_name(protocol: u8) -> &'static str {
    match protocol {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_ICMP => "icmp",
        _ => "other",
    }
}

/// All bindings, from the original half (one per flow).
pub fn flows(maps: &DatapathMaps) -> Result<Vec<NatEntry>> {
    let mut out = Vec::new();
    map_batch::for_each_chunk(&maps.ct_original, |_, entries| {
        out.extend_from_slice(entries);
        Ok(())
    })
    .context("reading CT_ORIGINAL")?;
    Ok(out)
}

/// The TCP flows that still carry a connection, counted chunk by chunk
/// (nothing is copied): what a draining gateway waits for.
pub fn open_tcp_connections(maps: &DatapathMaps) -> Result<usize> {
    let mut open = 0;
    map_batch::for_each_chunk(&maps.ct_original, |_, entries| {
        open += entries
            .iter()
            .filter(|e| e.protocol == IPPROTO_TCP && FlowState::from_u8(e.state).carries_connection())
            .count();
        Ok(())
    })
    .context("reading CT_ORIGINAL")?;
    Ok(open)
}

/// What the metrics need of the flows, counted as a walk goes: the sweep
/// counts what it keeps, so one walk per interval serves both.
#[derive(Debug, Default)]
pub struct FlowTally {
    pub by_protocol: BTreeMap<&'static str, u64>,
    /// Bindings towards each destination (address, port, protocol): each
    /// holds one of that destination's NAT ports.
    per_destination: HashMap<(u32, u16, u8), u64>,
}

impl FlowTally {
    pub fn of<'a>(flows: impl IntoIterator<Item = &'a NatEntry>) -> FlowTally {
        let mut tally = FlowTally::default();
        flows.into_iter().for_each(|flow| tally.count(flow));
        tally
    }

    pub(super) fn count(&mut self, flow: &NatEntry) {
        *self.by_protocol.entry(protocol_name(flow.protocol)).or_default() += 1;
        *self.per_destination.entry((flow.remote_ip_be, flow.remote_port_be, flow.protocol)).or_default() +=
            1;
    }

    /// NAT bindings held (one per flow).
    pub fn bindings(&self) -> u64 {
        self.by_protocol.values().sum()
    }

    /// The most bindings towards one destination.
    pub fn most_towards_one_destination(&self) -> u64 {
        self.per_destination.values().copied().max().unwrap_or(0)
    }
}

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` (hash maps: Linux 5.14+): removes the
/// entry under `key` and returns what it was, in one step, so what is
/// removed is exactly what is judged. `Ok(None)`: no entry. `Err` with
/// `EINVAL`/`ENOTSUPP`: an older kernel (the caller falls back).
fn take(map: &CtMap, key: &FlowTuple) -> std::io::Result<Option<NatEntry>> {
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
    let mut value = NatEntry::default();
    let mut attr = Attr {
        map_fd: map.map().fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: key as *const FlowTuple as u64,
        value: &mut value as *mut NatEntry as u64,
        flags: 0,
    };
    // SAFETY: bpf(2) reads the attribute and the key, and writes exactly
    // one value of the map's value size (NatEntry's, checked at load).
    match unsafe { sys_bpf::bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) } {
        Ok(()) => Ok(Some(value)),
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Removes the entry under `key` only if it is still `judged`'s binding
/// and still `doomed`; says whether it did.
///
/// The datapath keeps working during a sweep: between the walk and now the
/// binding may have been refreshed, or removed and replaced by a new one
/// for the same tuple. A plain look comes first; then the entry is taken
/// out and what was taken is looked at, so only a judged binding is ever
/// removed, and anything else is put back at once. If a packet made an
/// entry under the key in that moment, the put-back fails: what was taken
/// is gone (and counted as removed; the datapath counted what it made).
fn remove_judged(
    map: &mut CtMap,
    key: &FlowTuple,
    judged: &NatEntry,
    doomed: &impl Fn(&NatEntry) -> bool,
) -> Result<Removal> {
    match map.get(key, 0) {
        Ok(now) if now.same_binding(judged) && doomed(&now) => {}
        Ok(_) => return Ok(Removal::Kept),
        Err(MapError::KeyNotFound) => return Ok(Removal::Gone),
        Err(e) => return Err(e).context("reading a conntrack entry"),
    }
    let taken = match take(map, key) {
        Ok(Some(taken)) => taken,
        Ok(None) => return Ok(Removal::Gone),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(524 /* ENOTSUPP */)) => {
            // Before 5.14: the look above, then delete (microseconds apart).
            return match map.remove(key) {
                Ok(()) => Ok(Removal::Removed(*judged)),
                Err(MapError::KeyNotFound) => Ok(Removal::Gone),
                Err(e) => Err(e).context("removing a conntrack entry"),
            };
        }
        Err(e) => return Err(e).context("removing a conntrack entry (BPF_MAP_LOOKUP_AND_DELETE_ELEM)"),
    };
    if taken.same_binding(judged) && doomed(&taken) {
        return Ok(Removal::Removed(taken));
    }
    match map.insert(key, taken, BPF_NOEXIST) {
        Ok(()) => Ok(Removal::Kept),
        Err(e) => {
            tracing::debug!("a conntrack entry changed while the sweep held it and could not go back: {e}");
            Ok(Removal::Removed(taken))
        }
    }
}

enum Removal {
    /// This binding was removed (its value as it was).
    Removed(NatEntry),
    /// Still there, and not judged: kept.
    Kept,
    /// Nothing under the key any more.
    Gone,
}

/// Removes `judged`'s binding, both halves, if the table still holds that
/// very binding under its original tuple and `doomed` still says so of
/// what it holds now, and takes it off its client's count. Returns whether
/// it did (false: kept, or already gone).
pub fn remove_binding(
    maps: &mut DatapathMaps,
    judged: &NatEntry,
    doomed: impl Fn(&NatEntry) -> bool,
) -> Result<bool> {
    let gateway_ip_be = maps.read_config()?.gateway_ip_be;
    let mut removed = BTreeMap::new();
    let result = take_binding(maps, gateway_ip_be, judged, &doomed, &mut removed);
    record_swept(maps, removed)?;
    result
}

/// [`remove_binding`], with the removal added to `removed` (by client id)
/// instead of the count. The reply half goes first: a reply arriving in
/// between then finds no binding, rather than re-creating the original
/// half of a flow that is going (the flow of a client that left, above
/// all). Returns whether the binding went.
fn take_binding(
    maps: &mut DatapathMaps,
    gateway_ip_be: u32,
    judged: &NatEntry,
    doomed: &impl Fn(&NatEntry) -> bool,
    removed: &mut BTreeMap<u32, u64>,
) -> Result<bool> {
    let key = judged.original_tuple();
    match maps.ct_original.get(&key, 0) {
        Ok(now) if now.same_binding(judged) && doomed(&now) => {}
        Ok(_) | Err(MapError::KeyNotFound) => return Ok(false),
        Err(e) => return Err(e).context("reading CT_ORIGINAL"),
    }
    let reply_key = judged.reply_tuple(gateway_ip_be);
    remove_judged(&mut maps.ct_reply, &reply_key, judged, doomed)?;
    let Removal::Removed(gone) = remove_judged(&mut maps.ct_original, &key, judged, doomed)? else {
        return Ok(false);
    };
    *removed.entry(gone.client_id).or_default() += 1;
    Ok(true)
}

/// Tells the datapath how many bindings of each client the agent removed.
pub(super) fn record_swept(maps: &mut DatapathMaps, removed: BTreeMap<u32, u64>) -> Result<()> {
    for (client_id, count) in removed {
        maps.add_flows_swept(client_id, count)?;
    }
    Ok(())
}

/// Which halves a sweep walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halves {
    /// Every binding through its original half, and the reply halves left
    /// without one (only a race in the datapath leaves those).
    Both,
    /// Every binding through its original half only: one walk instead of
    /// two, for the sweeps between two that look for stray reply halves.
    Originals,
}

/// Removes both halves of every binding that matches `doomed`. Returns how
/// many bindings went. With [`Halves::Both`] the reply half is walked too,
/// so a reply half whose original went first (and was not re-created)
/// goes too; a reply half whose original is still there and still its own
/// is left to that binding. An entry whose key is not its own binding's
/// tuple (only a race in the datapath could leave one) goes too: nothing
/// else would ever remove it.
///
/// Each binding's client is told (CLIENT_FLOWS_SWEPT), so its share of the
/// table counts only what it holds; also for what went before an error.
/// `kept` counts the bindings that stay.
pub fn remove_where(
    maps: &mut DatapathMaps,
    halves: Halves,
    doomed: impl Fn(&NatEntry) -> bool,
    kept: &mut FlowTally,
) -> Result<usize> {
    let gateway_ip_be = maps.read_config()?.gateway_ip_be;
    let mut removed: BTreeMap<u32, u64> = BTreeMap::new();
    let mut walked =
        walk_originals(maps, gateway_ip_be, &doomed, &mut removed, kept, &mut Cursor::default(), usize::MAX);
    if walked.is_ok() && halves == Halves::Both {
        walked = walk_replies(maps, gateway_ip_be, &doomed, &mut Cursor::default(), usize::MAX);
    }
    let total = removed.values().sum::<u64>() as usize;
    record_swept(maps, removed)?;
    walked.map(|_| total)
}

/// Reads the original halves in chunks from `cursor` until `budget` or
/// more entries were read (`map_batch::for_each_chunk_from`), keeping only
/// what may go (a handful per sweep, against every live flow read) and
/// counting the rest into `kept`; then removes what may go entry by entry,
/// each judged again as it goes. Returns whether the walk reached the end
/// and how many entries it read.
pub(super) fn walk_originals(
    maps: &mut DatapathMaps,
    gateway_ip_be: u32,
    doomed: &impl Fn(&NatEntry) -> bool,
    removed: &mut BTreeMap<u32, u64>,
    kept: &mut FlowTally,
    cursor: &mut Cursor,
    budget: usize,
) -> Result<(bool, usize)> {
    let mut originals: Vec<(FlowTuple, NatEntry)> = Vec::new();
    let mut read = 0;
    let ended = map_batch::for_each_chunk_from(&maps.ct_original, cursor, budget, |keys, entries| {
        read += keys.len();
        for (key, entry) in keys.iter().zip(entries) {
            if *key != entry.original_tuple() || doomed(entry) {
                originals.push((*key, *entry));
            } else {
                kept.count(entry);
            }
        }
        Ok(())
    })
    .context("reading CT_ORIGINAL")?;
    for (key, entry) in &originals {
        if *key != entry.original_tuple() {
            if let Removal::Removed(gone) = remove_judged(&mut maps.ct_original, key, entry, &|_| true)? {
                *removed.entry(gone.client_id).or_default() += 1;
            }
        } else {
            take_binding(maps, gateway_ip_be, entry, doomed, removed)?;
        }
    }
    Ok((ended, read))
}

/// Reads the reply halves the same way and removes the ones `doomed` whose
/// original is gone, and any under a key not its own.
pub(super) fn walk_replies(
    maps: &mut DatapathMaps,
    gateway_ip_be: u32,
    doomed: &impl Fn(&NatEntry) -> bool,
    cursor: &mut Cursor,
    budget: usize,
) -> Result<(bool, usize)> {
    let mut replies: Vec<(FlowTuple, NatEntry)> = Vec::new();
    let mut read = 0;
    let ended = map_batch::for_each_chunk_from(&maps.ct_reply, cursor, budget, |keys, entries| {
        read += keys.len();
        let candidates = keys
            .iter()
            .zip(entries)
            .filter(|(key, entry)| **key != entry.reply_tuple(gateway_ip_be) || doomed(entry));
        replies.extend(candidates.map(|(key, entry)| (*key, *entry)));
        Ok(())
    })
    .context("reading CT_REPLY")?;
    for (key, entry) in &replies {
        if *key != entry.reply_tuple(gateway_ip_be) {
            remove_judged(&mut maps.ct_reply, key, entry, &|_| true)?;
            continue;
        }
        let original_lives =
            maps.ct_original.get(&entry.original_tuple(), 0).is_ok_and(|o| o.same_binding(entry));
        if !original_lives {
            remove_judged(&mut maps.ct_reply, key, entry, doomed)?;
        }
    }
    Ok((ended, read))
}

/// Sweeps bindings idle past their timeout. The datapath also expires
/// entries it meets; this catches the ones no packet comes for.
/// Returns how many went, and a tally of the flows that stay (a binding
/// judged expired that a packet revived meanwhile is not in it).
pub fn sweep_expired(maps: &mut DatapathMaps, halves: Halves, now_ns: u64) -> Result<(usize, FlowTally)> {
    let cfg = maps.read_config()?;
    let mut kept = FlowTally::default();
    let removed = remove_where(maps, halves, |e| e.is_expired(&cfg, now_ns), &mut kept)?;
    Ok((removed, kept))
}

/// Forgets every flow of a client that is no longer one: its replies must
/// never reach whoever gets its IP next.
pub fn forget_client(maps: &mut DatapathMaps, client_outer_ip: Ipv4Addr) -> Result<usize> {
    let ip_be = u32::from(client_outer_ip).to_be();
    remove_where(maps, Halves::Both, |e| e.client_outer_ip_be == ip_be, &mut FlowTally::default())
}
