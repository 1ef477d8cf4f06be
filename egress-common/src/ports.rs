//! NAT port range arithmetic, kept free of kernel types so it is unit-tested
//! in userspace and used unchanged by the program.

/// Number of ports in the inclusive range `min..=max` (0 when inverted).
#[inline(always)]
pub fn range_len(min: u16, max: u16) -> u32 {
    if max < min {
        0
    } else {
        (max - min) as u32 + 1
    }
}

/// The `attempt`-th candidate port for a new flow, starting from a random
/// offset and walking the range with a large prime stride: consecutive attempts land far apart so that a crowded region
/// of the range does not cost every retry.
#[inline(always)]
pub fn candidate_port(min: u16, max: u16, random: u32, attempt: u32) -> u16 {
    let len = range_len(min, max);
    if len == 0 {
        return min;
    }
    // 65537 is prime and larger than any range (at most 65536 ports), so it
    // is coprime to every range length: `len` attempts visit `len` ports.
    // Each factor is below `len`, so the product fits in u32.
    const STRIDE: u32 = 65_537;
    let offset = (random % len + (attempt % len) * (STRIDE % len)) % len;
    min + offset as u16
}

/// Whether two inclusive ranges overlap.
pub fn ranges_overlap(a: (u16, u16), b: (u16, u16)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn candidates_stay_in_range_and_spread() {
        let (min, max) = (10_240, 10_250);
        let mut seen = [false; 11];
        for attempt in 0..11 {
            let p = candidate_port(min, max, 123_456, attempt);
            assert!((min..=max).contains(&p));
            seen[(p - min) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s), "11 attempts visit all 11 ports");
    }

    #[test]
    fn every_range_length_is_walked_completely() {
        // Lengths with small factors (3, 9, 13501...) caught an earlier stride.
        for len in [2u32, 3, 9, 27, 64, 1000, 13_501, 40_503, 64_512] {
            let (min, max) = (1024u16, (1024 + len - 1) as u16);
            let mut seen = std::collections::HashSet::new();
            for attempt in 0..len {
                seen.insert(candidate_port(min, max, 987_654_321, attempt));
            }
            assert_eq!(seen.len() as u32, len, "range of {len} ports");
        }
    }

    #[test]
    fn single_port_range() {
        assert_eq!(candidate_port(5, 5, u32::MAX, 7), 5);
        assert_eq!(range_len(5, 5), 1);
        assert_eq!(range_len(6, 5), 0);
    }

    #[test]
    fn overlap() {
        assert!(ranges_overlap((10, 20), (20, 30)));
        assert!(!ranges_overlap((10, 19), (20, 30)));
        assert!(ranges_overlap((32_768, 60_999), (10_240, 40_000)));
    }
}
