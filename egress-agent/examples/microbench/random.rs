//! A small deterministic generator, so every run draws the same samples.

pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u32) -> u32 {
        (self.next() % n as u64) as u32
    }

    /// `count` distinct indexes below `n`, in random order.
    pub fn sample(&mut self, n: u32, count: usize) -> Vec<u32> {
        let mut all: Vec<u32> = (0..n).collect();
        for i in 0..count {
            let j = i + self.below(n - i as u32) as usize;
            all.swap(i, j);
        }
        all.truncate(count);
        all
    }

    pub fn shuffled(&mut self, items: &[u32]) -> Vec<u32> {
        let mut out = items.to_vec();
        for i in (1..out.len()).rev() {
            out.swap(i, self.below(i as u32 + 1) as usize);
        }
        out
    }
}
