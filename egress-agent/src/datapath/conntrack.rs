//! Userspace view of the conntrack maps: listing flows, sweeping expired
//! ones, and forgetting a client's flows when it stops being a client.
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use aya::maps::MapError;
use egress_common::conntrack::{FlowTuple, NatEntry, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

use super::maps::DatapathMaps;

pub fn protocol_name(protocol: u8) -> &'static str {
    match protocol {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        PROTO_ICMP => "icmp",
        _ => "other",
    }
}

/// All bindings, from the original half (one per flow).
pub fn flows(maps: &DatapathMaps) -> Result<Vec<NatEntry>> {
    let mut out = Vec::new();
    for item in maps.ct_original.iter() {
        match item {
            Ok((_, entry)) => out.push(entry),
            // An entry deleted while we walk the map is not an error.
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(e).context("reading CT_ORIGINAL"),
        }
    }
    Ok(out)
}

fn remove_quietly(
    map: &mut aya::maps::HashMap<aya::maps::MapData, FlowTuple, NatEntry>,
    key: &FlowTuple,
) -> Result<bool> {
    match map.remove(key) {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(e) => Err(e).context("removing a conntrack entry"),
    }
}

/// Removes both halves of every binding that matches `doomed`. Returns how
/// many bindings went. Both maps are walked so halves whose partner the LRU
/// already evicted go too.
///
/// The walk is a snapshot while the datapath keeps working: each entry is
/// read again just before it is deleted and kept if it changed meanwhile
/// (refreshed, or replaced by a new binding under the same key), and a
/// partner half is deleted only if it still belongs to the same binding.
pub fn remove_where(maps: &mut DatapathMaps, doomed: impl Fn(&NatEntry) -> bool) -> Result<usize> {
    let gateway_ip_be = maps.read_config()?.gateway_ip_be;
    let mut removed = 0;
    let originals: Vec<(FlowTuple, NatEntry)> = maps.ct_original.iter().filter_map(|r| r.ok()).collect();
    for (key, entry) in originals.iter().filter(|(_, e)| doomed(e)) {
        if maps.ct_original.get(key, 0).ok().as_ref() != Some(entry) {
            continue;
        }
        if remove_quietly(&mut maps.ct_original, key)? {
            removed += 1;
        }
        let reply_key = entry.reply_tuple(gateway_ip_be);
        if maps.ct_reply.get(&reply_key, 0).is_ok_and(|r| r.same_binding(entry)) {
            remove_quietly(&mut maps.ct_reply, &reply_key)?;
        }
    }
    let replies: Vec<(FlowTuple, NatEntry)> = maps.ct_reply.iter().filter_map(|r| r.ok()).collect();
    for (key, entry) in replies.iter().filter(|(_, e)| doomed(e)) {
        if maps.ct_reply.get(key, 0).ok().as_ref() == Some(entry) {
            remove_quietly(&mut maps.ct_reply, key)?;
        }
    }
    Ok(removed)
}

/// Sweeps bindings idle past their timeout. The datapath also expires
/// entries it meets; this catches the ones no packet comes for.
pub fn sweep_expired(maps: &mut DatapathMaps, now_ns: u64) -> Result<usize> {
    let cfg = maps.read_config()?;
    remove_where(maps, |e| e.is_expired(&cfg, now_ns))
}

/// Forgets every flow of a client that is no longer one: its replies must
/// never reach whoever gets its IP next.
pub fn forget_client(maps: &mut DatapathMaps, client_outer_ip: Ipv4Addr) -> Result<usize> {
    let ip_be = u32::from(client_outer_ip).to_be();
    remove_where(maps, |e| e.client_outer_ip_be == ip_be)
}
