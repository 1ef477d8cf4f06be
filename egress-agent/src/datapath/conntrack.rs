//! Userspace view of the conntrack maps: listing flows, sweeping expired
//! ones, and forgetting a client's flows when it stops being a client.
//! Written once over [`Family`]: the IPv4 and the IPv6 tables follow the
//! same rules.
use std::{
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd},
};

use anyhow::{Context, Result};
use aya::{
    maps::{IterableMap, MapData, MapError},
    Pod,
};
use egress_common::{
    config::GatewayConfig,
    conntrack::{Binding, FlowState, NatEntry, NatEntry6},
    ip::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    maps as names,
};

use super::{
    map_batch::{self, Cursor},
    maps::DatapathMaps,
    sys_bpf,
};

/// One half of a family's conntrack: its bindings under one direction's
/// tuples.
pub type CtMap<B> = aya::maps::HashMap<MapData, <B as Binding>::Tuple, B>;

/// One address family's conntrack as the agent walks it: its two tables,
/// and what its bindings are judged by.
pub trait Family: Binding<Tuple: Pod> + Pod + Default {
    /// The tables' names, for errors.
    const ORIGINALS: &'static str;
    const REPLIES: &'static str;
    fn originals(maps: &DatapathMaps) -> &CtMap<Self>;
    fn originals_mut(maps: &mut DatapathMaps) -> &mut CtMap<Self>;
    fn replies(maps: &DatapathMaps) -> &CtMap<Self>;
    fn replies_mut(maps: &mut DatapathMaps) -> &mut CtMap<Self>;
    /// The gateway's address of the family: the reply tuples' destination.
    fn gateway(cfg: &GatewayConfig) -> Self::Address;
    /// The destination whose NAT ports the binding takes one of, as the
    /// tally keys it (an IPv4 address as IPv4-mapped IPv6).
    fn destination_key(&self) -> ([u8; 16], u16, u8);
}

impl Family for NatEntry {
    const ORIGINALS: &'static str = names::CT_ORIGINAL;
    const REPLIES: &'static str = names::CT_REPLY;
    fn originals(maps: &DatapathMaps) -> &CtMap<Self> {
        &maps.ct_original
    }
    fn originals_mut(maps: &mut DatapathMaps) -> &mut CtMap<Self> {
        &mut maps.ct_original
    }
    fn replies(maps: &DatapathMaps) -> &CtMap<Self> {
        &maps.ct_reply
    }
    fn replies_mut(maps: &mut DatapathMaps) -> &mut CtMap<Self> {
        &mut maps.ct_reply
    }
    fn gateway(cfg: &GatewayConfig) -> u32 {
        cfg.gateway_ip_be
    }
    fn destination_key(&self) -> ([u8; 16], u16, u8) {
        let remote = Ipv4Addr::from(u32::from_be(self.remote_ip_be)).to_ipv6_mapped().octets();
        (remote, self.remote_port_be, self.protocol)
    }
}

impl Family for NatEntry6 {
    const ORIGINALS: &'static str = names::CT6_ORIGINAL;
    const REPLIES: &'static str = names::CT6_REPLY;
    fn originals(maps: &DatapathMaps) -> &CtMap<Self> {
        &maps.ct6_original
    }
    fn originals_mut(maps: &mut DatapathMaps) -> &mut CtMap<Self> {
        &mut maps.ct6_original
    }
    fn replies(maps: &DatapathMaps) -> &CtMap<Self> {
        &maps.ct6_reply
    }
    fn replies_mut(maps: &mut DatapathMaps) -> &mut CtMap<Self> {
        &mut maps.ct6_reply
    }
    fn gateway(cfg: &GatewayConfig) -> [u8; 16] {
        cfg.gateway_ip6
    }
    fn destination_key(&self) -> ([u8; 16], u16, u8) {
        (self.remote_ip, self.remote_port_be, self.protocol)
    }
}

/// linux/bpf.h: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

pub fn protocol_name(protocol: u8) -> &'static str {
    match protocol {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_ICMP => "icmp",
        IPPROTO_ICMPV6 => "icmpv6",
        _ => "other",
    }
}

/// All bindings of family `B`, from the original half (one per flow).
pub fn flows<B: Family>(maps: &DatapathMaps) -> Result<Vec<B>> {
    let mut out = Vec::new();
    map_batch::for_each_chunk(B::originals(maps), |_, entries| {
        out.extend_from_slice(entries);
        Ok(())
    })
    .with_context(|| format!("reading {}", B::ORIGINALS))?;
    Ok(out)
}

/// The TCP flows that still carry a connection, counted chunk by chunk
/// (nothing is copied): what a draining gateway waits for.
pub fn open_tcp_connections(maps: &DatapathMaps) -> Result<usize> {
    Ok(open_tcp_connections_of::<NatEntry>(maps)? + open_tcp_connections_of::<NatEntry6>(maps)?)
}

fn open_tcp_connections_of<B: Family>(maps: &DatapathMaps) -> Result<usize> {
    let mut open = 0;
    map_batch::for_each_chunk(B::originals(maps), |_, entries| {
        open += entries
            .iter()
            .filter(|e| e.protocol() == IPPROTO_TCP && FlowState::from_u8(e.state()).carries_connection())
            .count();
        Ok(())
    })
    .with_context(|| format!("reading {}", B::ORIGINALS))?;
    Ok(open)
}

/// What the metrics need of the flows, counted as a walk goes: the sweep
/// counts what it keeps, so one walk per interval serves both.
#[derive(Debug, Default, Clone)]
pub struct FlowTally {
    pub by_protocol: BTreeMap<&'static str, u64>,
    /// Bindings towards each destination (address, port, protocol; both
    /// families): each holds one of that destination's NAT ports.
    per_destination: HashMap<([u8; 16], u16, u8), u64>,
}

impl FlowTally {
    pub fn of<'a, B: Family + 'a>(flows: impl IntoIterator<Item = &'a B>) -> FlowTally {
        let mut tally = FlowTally::default();
        flows.into_iter().for_each(|flow| tally.count(flow));
        tally
    }

    pub(super) fn count<B: Family>(&mut self, flow: &B) {
        *self.by_protocol.entry(protocol_name(flow.protocol())).or_default() += 1;
        *self.per_destination.entry(flow.destination_key()).or_default() += 1;
    }

    /// Both families' tallies as one (their destinations never meet).
    pub fn merge(&mut self, other: FlowTally) {
        for (protocol, count) in other.by_protocol {
            *self.by_protocol.entry(protocol).or_default() += count;
        }
        for (destination, count) in other.per_destination {
            *self.per_destination.entry(destination).or_default() += count;
        }
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
fn take<B: Family>(map: &CtMap<B>, key: &B::Tuple) -> std::io::Result<Option<B>> {
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
    let mut value = B::default();
    let mut attr = Attr {
        map_fd: map.map().fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: key as *const B::Tuple as u64,
        value: &mut value as *mut B as u64,
        flags: 0,
    };
    // SAFETY: bpf(2) reads the attribute and the key, and writes exactly
    // one value of the map's value size (B's, checked at load).
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
fn remove_judged<B: Family>(
    map: &mut CtMap<B>,
    key: &B::Tuple,
    judged: &B,
    doomed: &impl Fn(&B) -> bool,
) -> Result<Removal<B>> {
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

enum Removal<B> {
    /// This binding was removed (its value as it was).
    Removed(B),
    /// Still there, and not judged: kept.
    Kept,
    /// Nothing under the key any more.
    Gone,
}

/// Removes `judged`'s binding, both halves, if the table still holds that
/// very binding under its original tuple and `doomed` still says so of
/// what it holds now, and takes it off its client's count. Returns whether
/// it did (false: kept, or already gone).
pub fn remove_binding<B: Family>(
    maps: &mut DatapathMaps,
    judged: &B,
    doomed: impl Fn(&B) -> bool,
) -> Result<bool> {
    let gateway = B::gateway(&maps.read_config()?);
    let mut removed = BTreeMap::new();
    let result = take_binding(maps, gateway, judged, &doomed, &mut removed);
    record_swept(maps, removed)?;
    result
}

/// [`remove_binding`], with the removal added to `removed` (by client id)
/// instead of the count. The reply half goes first: a reply arriving in
/// between then finds no binding, rather than re-creating the original
/// half of a flow that is going (the flow of a client that left, above
/// all). Returns whether the binding went.
fn take_binding<B: Family>(
    maps: &mut DatapathMaps,
    gateway: B::Address,
    judged: &B,
    doomed: &impl Fn(&B) -> bool,
    removed: &mut BTreeMap<u32, u64>,
) -> Result<bool> {
    let key = judged.original_tuple();
    match B::originals(maps).get(&key, 0) {
        Ok(now) if now.same_binding(judged) && doomed(&now) => {}
        Ok(_) | Err(MapError::KeyNotFound) => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", B::ORIGINALS)),
    }
    let reply_key = judged.reply_tuple(gateway);
    remove_judged(B::replies_mut(maps), &reply_key, judged, doomed)?;
    let Removal::Removed(gone) = remove_judged(B::originals_mut(maps), &key, judged, doomed)? else {
        return Ok(false);
    };
    *removed.entry(gone.client_id()).or_default() += 1;
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
pub fn remove_where<B: Family>(
    maps: &mut DatapathMaps,
    halves: Halves,
    doomed: impl Fn(&B) -> bool,
    kept: &mut FlowTally,
) -> Result<usize> {
    let gateway = B::gateway(&maps.read_config()?);
    let mut removed: BTreeMap<u32, u64> = BTreeMap::new();
    let mut walked =
        walk_originals(maps, gateway, &doomed, &mut removed, kept, &mut Cursor::default(), usize::MAX);
    if walked.is_ok() && halves == Halves::Both {
        walked = walk_replies(maps, gateway, &doomed, &mut Cursor::default(), usize::MAX);
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
pub(super) fn walk_originals<B: Family>(
    maps: &mut DatapathMaps,
    gateway: B::Address,
    doomed: &impl Fn(&B) -> bool,
    removed: &mut BTreeMap<u32, u64>,
    kept: &mut FlowTally,
    cursor: &mut Cursor,
    budget: usize,
) -> Result<(bool, usize)> {
    let mut originals: Vec<(B::Tuple, B)> = Vec::new();
    let mut read = 0;
    let ended = map_batch::for_each_chunk_from(B::originals(maps), cursor, budget, |keys, entries| {
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
    .with_context(|| format!("reading {}", B::ORIGINALS))?;
    for (key, entry) in &originals {
        if *key != entry.original_tuple() {
            if let Removal::Removed(gone) = remove_judged(B::originals_mut(maps), key, entry, &|_| true)? {
                *removed.entry(gone.client_id()).or_default() += 1;
            }
        } else {
            take_binding(maps, gateway, entry, doomed, removed)?;
        }
    }
    Ok((ended, read))
}

/// Reads the reply halves the same way and removes the ones `doomed` whose
/// original is gone, and any under a key not its own.
pub(super) fn walk_replies<B: Family>(
    maps: &mut DatapathMaps,
    gateway: B::Address,
    doomed: &impl Fn(&B) -> bool,
    cursor: &mut Cursor,
    budget: usize,
) -> Result<(bool, usize)> {
    let mut replies: Vec<(B::Tuple, B)> = Vec::new();
    let mut read = 0;
    let ended = map_batch::for_each_chunk_from(B::replies(maps), cursor, budget, |keys, entries| {
        read += keys.len();
        let candidates = keys
            .iter()
            .zip(entries)
            .filter(|(key, entry)| **key != entry.reply_tuple(gateway) || doomed(entry));
        replies.extend(candidates.map(|(key, entry)| (*key, *entry)));
        Ok(())
    })
    .with_context(|| format!("reading {}", B::REPLIES))?;
    for (key, entry) in &replies {
        if *key != entry.reply_tuple(gateway) {
            remove_judged(B::replies_mut(maps), key, entry, &|_| true)?;
            continue;
        }
        let original_lives =
            B::originals(maps).get(&entry.original_tuple(), 0).is_ok_and(|o| o.same_binding(entry));
        if !original_lives {
            remove_judged(B::replies_mut(maps), key, entry, doomed)?;
        }
    }
    Ok((ended, read))
}

/// Sweeps bindings idle past their timeout. The datapath also expires
/// entries it meets; this catches the ones no packet comes for.
/// Returns how many went, and a tally of the flows that stay (a binding
/// judged expired that a packet revived meanwhile is not in it).
/// Both families' tables are swept, IPv4's first.
pub fn sweep_expired(maps: &mut DatapathMaps, halves: Halves, now_ns: u64) -> Result<(usize, FlowTally)> {
    let cfg = maps.read_config()?;
    let mut kept = FlowTally::default();
    let ipv4 = remove_where(maps, halves, |e: &NatEntry| e.is_expired(&cfg, now_ns), &mut kept)?;
    let ipv6 = remove_where(maps, halves, |e: &NatEntry6| e.is_expired(&cfg, now_ns), &mut kept)?;
    Ok((ipv4 + ipv6, kept))
}

/// Forgets every flow of a client that is no longer one, both families:
/// its replies must never reach whoever gets its addresses next. The
/// bindings are the ones tunnelled to its outer IPv4, whichever address
/// inside the tunnel they are of.
pub fn forget_client(maps: &mut DatapathMaps, client_outer_ip: Ipv4Addr) -> Result<usize> {
    let ip_be = u32::from(client_outer_ip).to_be();
    let mut kept = FlowTally::default();
    let ipv4 = remove_where(maps, Halves::Both, |e: &NatEntry| e.client_outer_ip_be == ip_be, &mut kept)?;
    let ipv6 = remove_where(maps, Halves::Both, |e: &NatEntry6| e.client_outer_ip_be == ip_be, &mut kept)?;
    Ok(ipv4 + ipv6)
}

/// Forgets every IPv6 flow of `client_ip`, an address its client no longer
/// holds.
pub fn forget_client_ipv6(maps: &mut DatapathMaps, client_ip: Ipv6Addr) -> Result<usize> {
    let client_ip = client_ip.octets();
    remove_where(maps, Halves::Both, |e: &NatEntry6| e.client_ip == client_ip, &mut FlowTally::default())
}
