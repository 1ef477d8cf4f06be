//! Per-client allowances the datapath keeps for work a client can make the
//! gateway do on everyone's behalf (its own ICMP answers, entries in the
//! shared fragment map): so many at once, then so many a second. One `u64`
//! per client holds the state, the GCRA way: the time at which the
//! client's allowance will next be whole again, plus one interval. Racing
//! CPUs may let one extra through; the rate stays bounded.

/// `burst` at once, then one every `interval_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub interval_ns: u64,
    pub burst: u64,
}

impl Allowance {
    /// What the client's slot becomes if one more is allowed at `now_ns`
    /// with the slot at `slot_ns` (0 for a client never charged); None when
    /// the allowance is spent.
    #[inline(always)]
    pub const fn take(&self, slot_ns: u64, now_ns: u64) -> Option<u64> {
        let start = if slot_ns > now_ns { slot_ns } else { now_ns };
        // Spent when the next one would be due more than burst - 1
        // intervals from now.
        if start - now_ns > (self.burst - 1) * self.interval_ns {
            return None;
        }
        Some(start + self.interval_ns)
    }
}

/// The gateway's own ICMP errors to one client (time exceeded, and
/// fragmentation needed to its remotes): Linux's icmp_ratelimit (1 s) and
/// its burst (6).
pub const ICMP_ANSWERS: Allowance = Allowance { interval_ns: 1_000_000_000, burst: 6 };

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    /// How many of `tries` events spread evenly over `span_ns` (from
    /// `start_ns`) the allowance lets through.
    fn allowed(allowance: &Allowance, start_ns: u64, span_ns: u64, tries: u64) -> u64 {
        let mut slot = 0;
        let mut passed = 0;
        for i in 0..tries {
            if let Some(next) = allowance.take(slot, start_ns + span_ns * i / tries) {
                slot = next;
                passed += 1;
            }
        }
        passed
    }

    #[test]
    fn a_burst_passes_at_once_then_nothing_until_an_interval_has_gone() {
        let a = Allowance { interval_ns: 10, burst: 3 };
        let now = 1_000;
        let mut slot = 0;
        for i in 0..3 {
            slot = a.take(slot, now).unwrap_or_else(|| panic!("burst item {i}"));
        }
        assert_eq!(a.take(slot, now), None);
        assert_eq!(a.take(slot, now + 9), None);
        assert!(a.take(slot, now + 10).is_some());
    }

    #[test]
    fn a_steady_flood_gets_the_rate_plus_the_burst() {
        // 100,000 tries within a second against 6 at once then 1 a second:
        // the burst, the next one being due a second after the first.
        assert_eq!(allowed(&ICMP_ANSWERS, 5 * SECOND, SECOND, 100_000), 6);
        assert_eq!(allowed(&ICMP_ANSWERS, 5 * SECOND, 3 * SECOND, 100_000), 6 + 2);
        let fast = Allowance { interval_ns: SECOND / 1_000, burst: 50 };
        let passed = allowed(&fast, SECOND, SECOND, 100_000);
        assert!((1_000..=1_000 + 50).contains(&passed), "{passed}");
    }

    #[test]
    fn an_idle_client_gets_its_whole_burst_back_and_no_more() {
        let a = Allowance { interval_ns: 10, burst: 3 };
        let mut slot = 0;
        for _ in 0..3 {
            slot = a.take(slot, 100).unwrap();
        }
        // Long idle: a burst again, not the idle time's worth.
        let later = 10_000;
        for _ in 0..3 {
            slot = a.take(slot, later).unwrap();
        }
        assert_eq!(a.take(slot, later), None);
    }
}
