//! The expiry sweep the gateway runs every interval, taken a slice at a
//! time. Reading an entry costs about 450 ns in the kernel's batch copy
//! (a cache and a TLB miss each, in this VM), so reading a million flows
//! takes about half a second; the loop that runs the sweep also applies
//! client changes. So each interval reads about [`SWEEP_SLICE`] entries
//! and carries on from there at the next: up to a quarter of a million
//! flows a pass still ends every interval, a million take four.
//!
//! Nothing waits on a pass: the datapath expires the idle bindings it
//! meets itself and makes room in a full table from unreplied or expired
//! ones, so the sweep only collects what no packet comes for.
use std::collections::BTreeMap;

use anyhow::Result;
use egress_common::conntrack::{Binding, NatEntry};

use super::{
    conntrack::{record_swept, walk_originals, walk_replies, FlowTally},
    map_batch::Cursor,
    maps::DatapathMaps,
};

/// Entries read per interval: whole chunks until there are this many (so
/// less than one chunk of 4,096 more), or the rest of the table.
pub const SWEEP_SLICE: usize = 262_144;

/// The reply halves are walked after every this many passes over the
/// original halves (the first pass included). Only a reply half whose
/// original went without it needs that walk (a race in the datapath), and
/// it holds one NAT port until then.
pub const REPLY_HALVES_EVERY: u64 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Originals,
    Replies,
}

/// Where the sweep stands between intervals.
#[derive(Debug)]
pub struct Sweeper {
    slice: usize,
    phase: Phase,
    cursor: Cursor,
    /// What the pass over the original halves under way has kept so far.
    tally: FlowTally,
    /// Passes over the original halves ended.
    passes: u64,
}

/// What one interval's slice did.
#[derive(Debug, Default)]
pub struct SweepStep {
    /// Bindings removed.
    pub removed: usize,
    /// When a pass over the original halves ended in this slice: the flows
    /// it kept, for the metrics until the next pass ends.
    pub tally: Option<FlowTally>,
}

impl Default for Sweeper {
    fn default() -> Self {
        Sweeper::with_slice(SWEEP_SLICE)
    }
}

impl Sweeper {
    /// A sweep that reads at least `slice` entries an interval (or the
    /// rest of the table).
    pub fn with_slice(slice: usize) -> Sweeper {
        Sweeper {
            slice,
            phase: Phase::Originals,
            cursor: Cursor::default(),
            tally: FlowTally::default(),
            passes: 0,
        }
    }

    /// One interval's slice: removes the bindings idle past their timeout
    /// among the entries it reads. An error starts the pass over at the
    /// next interval (what went before it is still counted).
    pub fn step(&mut self, maps: &mut DatapathMaps, now_ns: u64) -> Result<SweepStep> {
        let cfg = maps.read_config()?;
        let doomed = |entry: &NatEntry| entry.is_expired(&cfg, now_ns);
        let mut removed: BTreeMap<u32, u64> = BTreeMap::new();
        let mut step = SweepStep::default();
        let mut budget = self.slice;
        let walked = loop {
            let walked = match self.phase {
                Phase::Originals => walk_originals(
                    maps,
                    cfg.gateway_ip_be,
                    &doomed,
                    &mut removed,
                    &mut self.tally,
                    &mut self.cursor,
                    budget,
                ),
                Phase::Replies => walk_replies(maps, cfg.gateway_ip_be, &doomed, &mut self.cursor, budget),
            };
            let (ended, read) = match walked {
                Ok(walked) => walked,
                Err(err) => break Err(err),
            };
            if !ended {
                break Ok(());
            }
            if self.phase == Phase::Originals {
                step.tally = Some(std::mem::take(&mut self.tally));
                self.passes += 1;
            }
            let replies_due = self.phase == Phase::Originals && self.passes % REPLY_HALVES_EVERY == 1;
            self.phase = if replies_due { Phase::Replies } else { Phase::Originals };
            budget = budget.saturating_sub(read);
            if !replies_due || budget == 0 {
                break Ok(());
            }
        };
        if walked.is_err() {
            (self.phase, self.cursor, self.tally) =
                (Phase::Originals, Cursor::default(), FlowTally::default());
        }
        step.removed = removed.values().sum::<u64>() as usize;
        record_swept(maps, removed)?;
        walked.map(|()| step)
    }
}
