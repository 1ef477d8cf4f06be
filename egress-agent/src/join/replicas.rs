//! Which gateway replica a worker's tunnel points at, when the worker
//! steers itself (`join --follow --replicas NAME`).
//!
//! Workers spread over the ready replicas by rendezvous hashing: each
//! worker ranks every replica by a hash of the pair (its own address, the
//! replica's) and takes the first. Adding or removing a replica moves only
//! the workers that ranked it first, and every worker computes its choice
//! alone, with nothing shared.
//!
//! A replica that missed this worker's probes is passed over for
//! `MISSED_HOLD`: long enough for the cluster to take a dead pod out of the
//! headless Service's answer, so the worker does not go back to try it.
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

/// How long a replica that missed probes (or said it is draining) is
/// passed over.
pub const MISSED_HOLD: Duration = Duration::from_secs(30);

/// The ready replicas as last resolved, and the ones that recently failed
/// this worker.
#[derive(Debug)]
pub struct Replicas {
    worker: Ipv4Addr,
    ready: Vec<Ipv4Addr>,
    missed: BTreeMap<Ipv4Addr, Instant>,
}

impl Replicas {
    pub fn new(worker: Ipv4Addr) -> Replicas {
        Replicas { worker, ready: Vec::new(), missed: BTreeMap::new() }
    }

    /// The headless Service's latest answer (ready pods only).
    pub fn set_ready(&mut self, ready: Vec<Ipv4Addr>) {
        self.ready = ready;
    }

    /// Passes `replica` over for `MISSED_HOLD` from `now` (it missed its
    /// probes, or it is draining); whether it was not passed over already.
    pub fn pass_over(&mut self, replica: Ipv4Addr, now: Instant) -> bool {
        self.missed.insert(replica, now).is_none()
    }

    /// The replica this worker should be on: the best-ranked ready one
    /// that has not missed its probes within `MISSED_HOLD`; None when
    /// there is none (the Service then decides).
    pub fn choice(&mut self, now: Instant) -> Option<Ipv4Addr> {
        self.missed.retain(|_, at| now.duration_since(*at) < MISSED_HOLD);
        let worker = self.worker;
        self.ready.iter().copied().filter(|r| !self.missed.contains_key(r)).max_by_key(|r| weight(worker, *r))
    }
}

/// The rendezvous weight of `replica` for `worker`: a 64-bit mix of both
/// addresses, the same in every worker and every version of this program.
pub fn weight(worker: Ipv4Addr, replica: Ipv4Addr) -> u64 {
    splitmix64(u64::from(u32::from(worker)) << 32 | u64::from(u32::from(replica)))
}

/// SplitMix64's finaliser: every input bit flips about half the output's.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(n: u8) -> Vec<Ipv4Addr> {
        (0..n).map(|i| Ipv4Addr::new(10, 244, 0, 10 + i)).collect()
    }

    fn workers(n: u16) -> impl Iterator<Item = Ipv4Addr> {
        (0..n).map(|i| Ipv4Addr::new(10, 244, 1 + (i >> 8) as u8, i as u8))
    }

    fn choice_of(worker: Ipv4Addr, ready: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let mut r = Replicas::new(worker);
        r.set_ready(ready.to_vec());
        r.choice(Instant::now())
    }

    #[test]
    fn workers_spread_evenly_over_replicas() {
        let ready = replicas(3);
        let mut count = BTreeMap::new();
        for w in workers(3000) {
            *count.entry(choice_of(w, &ready).unwrap()).or_insert(0) += 1;
        }
        for (replica, n) in count {
            assert!((900..=1100).contains(&n), "{replica} got {n} of 3000");
        }
    }

    #[test]
    fn losing_a_replica_moves_only_its_workers() {
        let before = replicas(4);
        let after: Vec<_> = before.iter().copied().filter(|r| *r != before[1]).collect();
        for w in workers(1000) {
            let was = choice_of(w, &before).unwrap();
            let now = choice_of(w, &after).unwrap();
            if was != before[1] {
                assert_eq!(was, now, "{w} moved off a replica that stayed");
            }
        }
    }

    #[test]
    fn the_order_of_the_answer_does_not_matter() {
        let mut ready = replicas(5);
        for w in workers(200) {
            let first = choice_of(w, &ready);
            ready.reverse();
            assert_eq!(choice_of(w, &ready), first);
        }
    }

    #[test]
    fn a_replica_that_missed_is_passed_over_for_the_hold() {
        let ready = replicas(3);
        let w = Ipv4Addr::new(10, 244, 1, 7);
        let mut r = Replicas::new(w);
        r.set_ready(ready.clone());
        let t0 = Instant::now();
        let first = r.choice(t0).unwrap();
        r.pass_over(first, t0);
        let second = r.choice(t0).unwrap();
        assert_ne!(second, first);
        r.pass_over(second, t0);
        let third = r.choice(t0).unwrap();
        r.pass_over(third, t0);
        assert_eq!(r.choice(t0), None, "every replica missed");
        assert_eq!(r.choice(t0 + MISSED_HOLD), Some(first), "the hold is over");
    }
}
