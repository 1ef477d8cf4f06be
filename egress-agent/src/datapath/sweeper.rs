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
use egress_common::{
    config::GatewayConfig,
    conntrack::{NatEntry, NatEntry6},
};

use super::{
    conntrack::{record_swept, walk_originals, walk_replies, Family, FlowTally},
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

/// Where the sweep stands between intervals: each family's table is
/// swept on its own, a slice of each per interval.
#[derive(Debug)]
pub struct Sweeper {
    ipv4: FamilySweep<NatEntry>,
    ipv6: FamilySweep<NatEntry6>,
}

/// Where the sweep of one family's table stands.
#[derive(Debug)]
struct FamilySweep<B> {
    slice: usize,
    phase: Phase,
    cursor: Cursor,
    /// What the pass over the original halves under way has kept so far.
    tally: FlowTally,
    /// What the last pass that ended kept.
    last_tally: FlowTally,
    /// Passes over the original halves ended.
    passes: u64,
    family: std::marker::PhantomData<B>,
}

/// What one interval's slice did.
#[derive(Debug, Default)]
pub struct SweepStep {
    /// Bindings removed.
    pub removed: usize,
    /// When a pass over the original halves of either family ended in
    /// this slice (and each has ended one): the flows of both as their
    /// last passes kept, for the metrics until the next pass ends.
    pub tally: Option<FlowTally>,
}

impl Default for Sweeper {
    fn default() -> Self {
        Sweeper::with_slice(SWEEP_SLICE)
    }
}

impl Sweeper {
    /// A sweep that reads at least `slice` entries of each family's table
    /// an interval (or the rest of the table).
    pub fn with_slice(slice: usize) -> Sweeper {
        Sweeper { ipv4: FamilySweep::with_slice(slice), ipv6: FamilySweep::with_slice(slice) }
    }

    /// One interval's slice of each family's table: removes the bindings
    /// idle past their timeout among the entries it reads. An error starts
    /// that family's pass over at the next interval (what went before it
    /// is still counted); the other family's slice is taken all the same.
    pub fn step(&mut self, maps: &mut DatapathMaps, now_ns: u64) -> Result<SweepStep> {
        let cfg = maps.read_config()?;
        let ipv4 = self.ipv4.step(maps, &cfg, now_ns);
        let ipv6 = self.ipv6.step(maps, &cfg, now_ns);
        let (ipv4_removed, ipv4_ended) = ipv4?;
        let (ipv6_removed, ipv6_ended) = ipv6?;
        // Once each family has ended a pass, so that a tally never stands
        // for a table not yet counted.
        let both_counted = self.ipv4.passes > 0 && self.ipv6.passes > 0;
        let tally = ((ipv4_ended || ipv6_ended) && both_counted).then(|| {
            let mut both = self.ipv4.last_tally.clone();
            both.merge(self.ipv6.last_tally.clone());
            both
        });
        Ok(SweepStep { removed: ipv4_removed + ipv6_removed, tally })
    }
}

impl<B: Family> FamilySweep<B> {
    fn with_slice(slice: usize) -> FamilySweep<B> {
        FamilySweep {
            slice,
            phase: Phase::Originals,
            cursor: Cursor::default(),
            tally: FlowTally::default(),
            last_tally: FlowTally::default(),
            passes: 0,
            family: std::marker::PhantomData,
        }
    }

    /// One interval's slice of this family's table. Returns how many
    /// bindings went, and whether a pass over the original halves ended.
    fn step(&mut self, maps: &mut DatapathMaps, cfg: &GatewayConfig, now_ns: u64) -> Result<(usize, bool)> {
        let gateway = B::gateway(cfg);
        let doomed = |entry: &B| entry.is_expired(cfg, now_ns);
        let mut removed: BTreeMap<u32, u64> = BTreeMap::new();
        let mut pass_ended = false;
        let mut budget = self.slice;
        let walked = loop {
            let walked = match self.phase {
                Phase::Originals => walk_originals(
                    maps,
                    gateway,
                    &doomed,
                    &mut removed,
                    &mut self.tally,
                    &mut self.cursor,
                    budget,
                ),
                Phase::Replies => walk_replies(maps, gateway, &doomed, &mut self.cursor, budget),
            };
            let (ended, read) = match walked {
                Ok(walked) => walked,
                Err(err) => break Err(err),
            };
            if !ended {
                break Ok(());
            }
            if self.phase == Phase::Originals {
                self.last_tally = std::mem::take(&mut self.tally);
                pass_ended = true;
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
        let total = removed.values().sum::<u64>() as usize;
        record_swept(maps, removed)?;
        walked.map(|()| (total, pass_ended))
    }
}
