//! Reading a whole hash map many entries per syscall.
//!
//! aya walks a map one key at a time (`BPF_MAP_GET_NEXT_KEY` then
//! `BPF_MAP_LOOKUP_ELEM`: two syscalls per entry, about 2 µs), which at a
//! million flows is seconds per walk. `BPF_MAP_LOOKUP_BATCH` (hash maps,
//! Linux 5.6+) copies whole buckets at a time; aya has no wrapper for it,
//! so this is the raw `bpf(2)` call. On a kernel without it the same
//! chunks come from aya's walk, so callers see one interface.
//!
//! Like aya's walk, a batched walk is not a snapshot: the datapath goes on
//! while it runs. Each bucket is copied under its lock, so every entry read
//! is whole; an entry added or removed meanwhile may or may not be seen.
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result};
use aya::{
    maps::{HashMap, IterableMap, MapData, MapError},
    Pod,
};

use super::sys_bpf;

/// Entries asked for per syscall: a few hundred KiB of buffer, and few
/// enough syscalls that their fixed cost vanishes at a million entries.
const CHUNK: usize = 4096;

/// linux/bpf.h `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// linux/bpf.h `union bpf_attr`, the member the `*_BATCH` commands use.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    /// Where to resume (a bucket index for hash maps); null at the start.
    in_batch: u64,
    /// Written: where the next call resumes.
    out_batch: u64,
    keys: u64,
    values: u64,
    /// In: room for this many entries; out: how many were written.
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Where a walk taken a part at a time stands: at the start of the map,
/// or at the bucket the kernel said to resume from.
#[derive(Debug, Default)]
pub struct Cursor {
    resume: Option<u64>,
}

/// Calls `each` with every entry of `map`, a chunk at a time (keys and
/// values side by side). An error from `each` stops the walk and is
/// returned.
pub fn for_each_chunk<K: Pod, V: Pod>(
    map: &HashMap<MapData, K, V>,
    each: impl FnMut(&[K], &[V]) -> Result<()>,
) -> Result<()> {
    for_each_chunk_from(map, &mut Cursor::default(), usize::MAX, each).map(|_| ())
}

/// Calls `each` with the entries of `map` from `cursor` on, a chunk at a
/// time, until `budget` entries or more were read or the map ended.
/// Returns whether it ended (the cursor is then back at the start); an
/// error leaves the cursor where it was. A bucket is never split between
/// two parts; entries added behind the cursor wait for the next round.
/// Without batch lookups the whole map is read at once.
pub fn for_each_chunk_from<K: Pod, V: Pod>(
    map: &HashMap<MapData, K, V>,
    cursor: &mut Cursor,
    budget: usize,
    mut each: impl FnMut(&[K], &[V]) -> Result<()>,
) -> Result<bool> {
    let mut batch = Batched::<K, V>::new(CHUNK);
    match batch.call(map.map(), cursor.resume) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(524 /* ENOTSUPP */)) => {
            *cursor = Cursor::default();
            walk_one_by_one(map, each)?;
            return Ok(true);
        }
        other => other.context("reading a map (BPF_MAP_LOOKUP_BATCH)")?,
    }
    let mut read = 0;
    loop {
        each(&batch.keys[..batch.filled], &batch.values[..batch.filled])?;
        read += batch.filled;
        if batch.done {
            *cursor = Cursor::default();
            return Ok(true);
        }
        if read >= budget {
            cursor.resume = Some(batch.resume);
            return Ok(false);
        }
        batch.call(map.map(), Some(batch.resume)).context("reading a map (BPF_MAP_LOOKUP_BATCH)")?;
    }
}

/// Before Linux 5.6 (or for a map type without batch lookups): aya's walk,
/// handed on in chunks of the same size.
fn walk_one_by_one<K: Pod, V: Pod>(
    map: &HashMap<MapData, K, V>,
    mut each: impl FnMut(&[K], &[V]) -> Result<()>,
) -> Result<()> {
    let (mut keys, mut values) = (Vec::with_capacity(CHUNK), Vec::with_capacity(CHUNK));
    for item in map.iter() {
        match item {
            Ok((key, value)) => {
                keys.push(key);
                values.push(value);
            }
            // An entry deleted while we walk the map is not an error.
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(e).context("reading a map entry by entry"),
        }
        if keys.len() == CHUNK {
            each(&keys, &values)?;
            keys.clear();
            values.clear();
        }
    }
    each(&keys, &values)
}

/// The buffers of one batched walk and where it stands.
struct Batched<K, V> {
    keys: Vec<K>,
    values: Vec<V>,
    filled: usize,
    /// The bucket to resume from, as the kernel wrote it.
    resume: u64,
    done: bool,
}

impl<K: Pod, V: Pod> Batched<K, V> {
    fn new(capacity: usize) -> Self {
        Batched { keys: zeroed(capacity), values: zeroed(capacity), filled: 0, resume: 0, done: false }
    }

    /// One `BPF_MAP_LOOKUP_BATCH` from the bucket `from` (None: the
    /// first). `ENOENT` is the end of the map (the entries of that last
    /// call are valid); `ENOSPC`, a bucket holding more entries than the
    /// buffer, grows the buffer and asks again.
    fn call(&mut self, map: &MapData, from: Option<u64>) -> std::io::Result<()> {
        let token = from.unwrap_or(0);
        loop {
            let mut attr = BatchAttr {
                in_batch: if from.is_some() { &token as *const u64 as u64 } else { 0 },
                out_batch: &mut self.resume as *mut u64 as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: self.keys.len() as u32,
                map_fd: map.fd().as_fd().as_raw_fd() as u32,
                ..BatchAttr::default()
            };
            // SAFETY: the kernel reads the attribute and at most one batch
            // token, and writes at most `count` keys and values of the
            // map's key and value sizes (K's and V's, checked when aya
            // opened the map) and one token into `resume` (a hash map's
            // token is a u32; `resume` has room for eight bytes).
            let Err(err) = (unsafe { sys_bpf::bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) }) else {
                self.filled = attr.count as usize;
                return Ok(());
            };
            match err.raw_os_error() {
                Some(libc::ENOENT) => {
                    self.filled = attr.count as usize;
                    self.done = true;
                    return Ok(());
                }
                Some(libc::ENOSPC) if self.keys.len() < 1 << 20 => {
                    self.keys = zeroed(self.keys.len() * 2);
                    self.values = zeroed(self.values.len() * 2);
                }
                _ => return Err(err),
            }
        }
    }
}

/// `n` zeroed values: Pod types are plain data, valid for any bytes.
fn zeroed<T: Pod>(n: usize) -> Vec<T> {
    // SAFETY: T is Pod, so all-zero bytes are a valid T.
    (0..n).map(|_| unsafe { std::mem::zeroed() }).collect()
}
