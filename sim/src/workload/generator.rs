//! The I/O generator: which slot and which operation comes next, and which slots are in flight.
//!
//! The disk is cut into slots of one I/O size each (the tail that does not fill a slot is never
//! touched), as diskspd aligns random I/O to the block size. A [`SlotMap`] shared by all threads
//! holds one bit per slot that is in flight; a [`Generator`] only hands out a slot it claimed in
//! the map, so no two outstanding I/Os ever overlap and the verifier's shadow map is exact.

use std::sync::atomic::{AtomicU64, Ordering};

/// The access pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Uniformly random slots (diskspd `-r`).
    Random,
    /// Consecutive slots, wrapping at the end of the disk; thread `t` of `n` starts at slot
    /// `t * slots / n` (diskspd `-s` with interlocked offsets off).
    Sequential,
}

/// What one I/O does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// READ and verify.
    Read,
    /// WRITE stamped blocks.
    Write,
    /// UNMAP the slot.
    Unmap,
}

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast and good enough for choosing offsets.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`), by Lemire's multiply-shift (bias below 2^-32 for our `n`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// One bit per slot: set while an I/O on the slot is outstanding.
pub struct SlotMap {
    words: Vec<AtomicU64>,
    slots: u64,
}

impl SlotMap {
    /// A map of `slots` free slots.
    pub fn new(slots: u64) -> Self {
        let words = slots.div_ceil(64);
        Self {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            slots,
        }
    }

    /// The number of slots.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    fn word(&self, slot: u64) -> (&AtomicU64, u64) {
        // slot < slots, so slot / 64 < words.len().
        (&self.words[(slot / 64) as usize], 1u64 << (slot % 64))
    }

    /// Claims `slot`; false if it is already in flight.
    pub fn try_claim(&self, slot: u64) -> bool {
        let (word, bit) = self.word(slot);
        word.fetch_or(bit, Ordering::AcqRel) & bit == 0
    }

    /// Releases a slot this caller claimed.
    pub fn release(&self, slot: u64) {
        let (word, bit) = self.word(slot);
        let was = word.fetch_and(!bit, Ordering::AcqRel);
        debug_assert!(was & bit != 0, "slot {slot} released but not claimed");
    }

    /// Whether `slot` is in flight.
    pub fn is_claimed(&self, slot: u64) -> bool {
        let (word, bit) = self.word(slot);
        word.load(Ordering::Acquire) & bit != 0
    }
}

/// The operation mix, in percent of all I/Os.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Percentage of writes.
    pub write_percent: u8,
    /// Percentage of unmaps (taken from the reads' share).
    pub unmap_percent: u8,
}

/// One thread's sequence of I/Os.
pub struct Generator {
    pattern: Pattern,
    mix: Mix,
    rng: Rng,
    next: u64,
}

/// Random probes before a random pick falls back to a scan.
const RANDOM_PROBES: usize = 16;

impl Generator {
    /// The generator of thread `thread` of `threads` over `slots` slots.
    pub fn new(
        pattern: Pattern,
        mix: Mix,
        slots: u64,
        thread: u32,
        threads: u32,
        seed: u64,
    ) -> Self {
        let start = slots * u64::from(thread) / u64::from(threads.max(1));
        // Each thread gets its own stream: the seed mixed with the thread number.
        let rng = Rng::new(seed ^ u64::from(thread).wrapping_mul(0xD1B5_4A32_D192_ED03));
        Self {
            pattern,
            mix,
            rng,
            next: start,
        }
    }

    /// The next operation kind, drawn from the mix.
    pub fn next_kind(&mut self) -> OpKind {
        let r = self.rng.below(100);
        if r < u64::from(self.mix.write_percent) {
            OpKind::Write
        } else if r < u64::from(self.mix.write_percent) + u64::from(self.mix.unmap_percent) {
            OpKind::Unmap
        } else {
            OpKind::Read
        }
    }

    /// Claims the next slot in `map`: `None` when none was free (the caller waits for one of its
    /// I/Os to complete, or yields, and asks again).
    pub fn next_slot(&mut self, map: &SlotMap) -> Option<u64> {
        let slots = map.slots();
        if slots == 0 {
            return None;
        }
        match self.pattern {
            Pattern::Random => {
                for _ in 0..RANDOM_PROBES {
                    let slot = self.rng.below(slots);
                    if map.try_claim(slot) {
                        return Some(slot);
                    }
                }
                // Nearly everything is in flight: scan from a random point.
                let start = self.rng.below(slots);
                (0..slots)
                    .map(|i| (start + i) % slots)
                    .find(|&s| map.try_claim(s))
            }
            Pattern::Sequential => {
                // Skip over slots still in flight (another thread's, after a wrap); at most one
                // lap.
                for _ in 0..slots {
                    let slot = self.next;
                    self.next = (self.next + 1) % slots;
                    if map.try_claim(slot) {
                        return Some(slot);
                    }
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READS: Mix = Mix {
        write_percent: 0,
        unmap_percent: 0,
    };

    #[test]
    fn claimed_slots_are_never_handed_out_twice() {
        let map = SlotMap::new(100);
        let mut g = Generator::new(Pattern::Random, READS, 100, 0, 1, 7);
        let mut held = Vec::new();
        for _ in 0..100 {
            let s = g.next_slot(&map).expect("a free slot exists");
            assert!(!held.contains(&s), "slot {s} handed out while in flight");
            held.push(s);
        }
        assert_eq!(g.next_slot(&map), None);
        map.release(held[40]);
        assert_eq!(g.next_slot(&map), Some(held[40]));
    }

    #[test]
    fn random_threads_never_overlap() {
        let map = SlotMap::new(64);
        let mut gens: Vec<_> = (0..4)
            .map(|t| Generator::new(Pattern::Random, READS, 64, t, 4, 1))
            .collect();
        let mut held: Vec<Vec<u64>> = vec![Vec::new(); 4];
        let mut rng = Rng::new(3);
        for step in 0..20_000 {
            let t = step % 4;
            // Keep 12 outstanding per thread; release a random one when full.
            if held[t].len() == 12 {
                let i = rng.below(12) as usize;
                map.release(held[t].swap_remove(i));
            }
            let s = gens[t]
                .next_slot(&map)
                .expect("48 of 64 slots at most are held");
            assert!(held.iter().all(|h| !h.contains(&s)), "overlap at slot {s}");
            held[t].push(s);
        }
    }

    #[test]
    fn sequential_wraps_and_skips_busy_slots() {
        let map = SlotMap::new(8);
        let mut g = Generator::new(Pattern::Sequential, READS, 8, 1, 2, 0);
        let order: Vec<u64> = (0..6)
            .map(|_| {
                let s = g.next_slot(&map).expect("free");
                map.release(s);
                s
            })
            .collect();
        assert_eq!(order, [4, 5, 6, 7, 0, 1]);
        assert!(map.try_claim(3));
        assert_eq!(g.next_slot(&map), Some(2));
        assert_eq!(g.next_slot(&map), Some(4), "slot 3 is busy and skipped");
    }

    #[test]
    fn write_percentage_is_respected() {
        for (w, u) in [(0u8, 0u8), (30, 0), (50, 10), (100, 0)] {
            let mut g = Generator::new(
                Pattern::Random,
                Mix {
                    write_percent: w,
                    unmap_percent: u,
                },
                1,
                0,
                1,
                9,
            );
            let n = 20_000;
            let (mut writes, mut unmaps) = (0u32, 0u32);
            for _ in 0..n {
                match g.next_kind() {
                    OpKind::Write => writes += 1,
                    OpKind::Unmap => unmaps += 1,
                    OpKind::Read => {}
                }
            }
            let pct = |k: u32| f64::from(k) * 100.0 / f64::from(n);
            assert!(
                (pct(writes) - f64::from(w)).abs() < 1.5,
                "{w}% writes gave {}",
                pct(writes)
            );
            assert!(
                (pct(unmaps) - f64::from(u)).abs() < 1.5,
                "{u}% unmaps gave {}",
                pct(unmaps)
            );
        }
    }

    #[test]
    fn rng_below_stays_in_range() {
        let mut r = Rng::new(0);
        assert!((0..10_000).all(|_| r.below(3) < 3));
    }
}
