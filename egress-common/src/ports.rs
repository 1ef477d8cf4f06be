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
    // A prime stride is coprime to every range length except its own
    // multiples, so `len` attempts visit `len` distinct ports.
    const STRIDE: u32 = 40_503;
    let stride = if len % STRIDE == 0 { 1 } else { STRIDE };
    let offset = (random % len + (attempt % len) * stride % len) % len;
    min + offset as u16
}

/// Whether two inclusive ranges overlap.
pub fn ranges_overlap(a: (u16, u16), b: (u16, u16)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

#[cfg(test)]
mod tests {
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
    fn range_as_long_as_the_stride_still_walks() {
        let (min, max) = (1_000, 1_000 + 40_503 - 1);
        assert_ne!(candidate_port(min, max, 9, 0), candidate_port(min, max, 9, 1));
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
