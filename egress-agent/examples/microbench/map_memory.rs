//! Kernel memory of the conntrack maps, from this process's own map file
//! descriptors (`/proc/self/fdinfo`: `map_id` and `memlock`), without
//! bpftool. `memlock` is what the kernel charges for the map; the LRU
//! hashes are preallocated, so it depends on `--conntrack-size`, not on
//! how many flows are live.
use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use aya::maps::MapInfo;
use egress_common::maps::{CT_ORIGINAL, CT_REPLY};

/// `memlock` bytes of every map of this process called `name`.
fn memlock_of(name: &str) -> Result<Vec<u64>> {
    // First the fds' map ids, then their names: looking a name up opens
    // another fd on the map, which the directory walk must not count.
    let mut by_id = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo").context("reading /proc/self/fdinfo")? {
        // An fd may close while we look (e.g. read_dir's own): skip it.
        let Ok(text) = std::fs::read_to_string(entry?.path()) else { continue };
        let field = |key: &str| {
            text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:")) {
            by_id.insert(id as u32, memlock);
        }
    }
    let mut found = Vec::new();
    for (id, memlock) in by_id {
        let info = MapInfo::from_id(id).with_context(|| format!("map id {id}"))?;
        if info.name_as_str() == Some(name) {
            found.push(memlock);
        }
    }
    Ok(found)
}

/// Bytes the kernel holds for both conntrack halves of the one datapath
/// this process has loaded.
pub fn conntrack_bytes() -> Result<u64> {
    let mut total = 0;
    for name in [CT_ORIGINAL, CT_REPLY] {
        match memlock_of(name)?.as_slice() {
            [bytes] => total += bytes,
            other => bail!("expected one {name} map in this process, found {}", other.len()),
        }
    }
    Ok(total)
}
