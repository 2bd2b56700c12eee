//! Data verification: stamped blocks, the shadow map, and what a read is checked against.
//!
//! Every logical block the workload writes starts with a 32-byte header, little-endian:
//!
//! | bytes  | field                                                        |
//! |--------|--------------------------------------------------------------|
//! | 0..8   | magic `VIOBLKWL`                                             |
//! | 8..16  | the block's LBA                                              |
//! | 16..24 | the generation: 1 for the first write of the block, then +1 |
//! | 24..32 | a checksum of every other byte of the block                 |
//!
//! and the rest is a pattern drawn from (LBA, generation), so two generations of one block differ
//! everywhere. The [`Shadow`] map holds, per block, the generation of the last write that
//! completed with success: 0 for a block never written (it must read as zeroes) and
//! [`UNKNOWN`] for a block whose contents the workload cannot know (a write or an unmap failed, an
//! unmap on a disk whose unmapped blocks need not read as zeroes, or a disk that was not empty).
//! The generator never has two I/Os on one block outstanding, so the shadow entry of a block
//! being read is exact.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::generator::Rng;

/// The magic at the start of every stamped block.
pub const MAGIC: [u8; 8] = *b"VIOBLKWL";
/// The size of the stamp header.
pub const HEADER: usize = 32;
/// The shadow value of a block whose contents are not known.
pub const UNKNOWN: u32 = u32::MAX;

/// A checksum of `block` without its checksum field (bytes 24..32): word-wise multiply-rotate,
/// fast enough to run on every byte read.
pub fn checksum(block: &[u8]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64 ^ block.len() as u64;
    let mut mix = |word: u64| {
        h = (h ^ word)
            .wrapping_mul(0x0000_0100_0000_01B3)
            .rotate_left(29)
    };
    let (head, rest) = block.split_at(24.min(block.len()));
    let rest = rest.get(8..).unwrap_or(&[]);
    for part in [head, rest] {
        let mut chunks = part.chunks_exact(8);
        for c in &mut chunks {
            // chunks_exact yields 8-byte slices.
            mix(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        }
        for &b in chunks.remainder() {
            mix(u64::from(b));
        }
    }
    h
}

/// Writes the stamp of (`lba`, `generation`) over `block` (at least [`HEADER`] bytes).
pub fn stamp(block: &mut [u8], lba: u64, generation: u32) {
    let mut rng = Rng::new(lba.rotate_left(32) ^ u64::from(generation) ^ 0x05EE_D0FB_10C0);
    for chunk in block[HEADER..].chunks_mut(8) {
        let word = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    block[0..8].copy_from_slice(&MAGIC);
    block[8..16].copy_from_slice(&lba.to_le_bytes());
    block[16..24].copy_from_slice(&u64::from(generation).to_le_bytes());
    let sum = checksum(block);
    block[24..32].copy_from_slice(&sum.to_le_bytes());
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// What was wrong with one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MismatchKind {
    /// A block never written (or unmapped with LBPRZ) does not read as zeroes.
    NotZeroes,
    /// A written block reads as zeroes: the write was lost.
    Zeroes,
    /// The block is not zero and carries no stamp.
    NoStamp,
    /// The stamp names another LBA: the data landed in the wrong place.
    WrongLba {
        /// The LBA in the stamp.
        found: u64,
    },
    /// An older generation: a completed write was lost or reordered behind an older one.
    Stale {
        /// The generation read.
        found: u64,
    },
    /// A generation never completed (newer than the last completed write, or out of range).
    Unexpected {
        /// The generation read.
        found: u64,
    },
    /// The stamp is right but the checksum of the rest of the block is not: corrupted data.
    Checksum,
}

/// A block that did not read back as the shadow map says it must.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The block's LBA.
    pub lba: u64,
    /// The generation expected (0: zeroes).
    pub expected: u32,
    /// What was wrong.
    pub kind: MismatchKind,
}

impl Mismatch {
    /// A short machine name for the kind (the `kind` field of the JSON report).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            MismatchKind::NotZeroes => "not_zeroes",
            MismatchKind::Zeroes => "zeroes",
            MismatchKind::NoStamp => "no_stamp",
            MismatchKind::WrongLba { .. } => "wrong_lba",
            MismatchKind::Stale { .. } => "stale_generation",
            MismatchKind::Unexpected { .. } => "unexpected_generation",
            MismatchKind::Checksum => "checksum",
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lba = self.lba;
        let expected = self.expected;
        match self.kind {
            MismatchKind::NotZeroes => {
                write!(f, "LBA {lba}: never written, expected zeroes, found data")
            }
            MismatchKind::Zeroes => {
                write!(
                    f,
                    "LBA {lba}: expected generation {expected}, found zeroes (lost write)"
                )
            }
            MismatchKind::NoStamp => write!(
                f,
                "LBA {lba}: expected {}, found data without a stamp",
                if expected == 0 {
                    "zeroes".to_owned()
                } else {
                    format!("generation {expected}")
                }
            ),
            MismatchKind::WrongLba { found } => write!(
                f,
                "LBA {lba}: found the block written for LBA {found} (misdirected I/O)"
            ),
            MismatchKind::Stale { found } => write!(
                f,
                "LBA {lba}: expected generation {expected}, found generation {found} (stale data)"
            ),
            MismatchKind::Unexpected { found } => write!(
                f,
                "LBA {lba}: expected generation {expected}, found generation {found} (never \
                 completed)"
            ),
            MismatchKind::Checksum => write!(
                f,
                "LBA {lba}: generation {expected} stamp intact but the block's checksum is wrong \
                 (corrupted data)"
            ),
        }
    }
}

/// Checks one block read from `lba` against the expected generation (0: zeroes).
pub fn check_block(block: &[u8], lba: u64, expected: u32) -> Result<(), Mismatch> {
    let fail = |kind| {
        Err(Mismatch {
            lba,
            expected,
            kind,
        })
    };
    let stamped = block.len() >= HEADER && block[0..8] == MAGIC;
    if !stamped {
        return if block.iter().all(|&b| b == 0) {
            if expected == 0 {
                Ok(())
            } else {
                fail(MismatchKind::Zeroes)
            }
        } else if expected == 0 {
            fail(MismatchKind::NotZeroes)
        } else {
            fail(MismatchKind::NoStamp)
        };
    }
    let found_lba = le64(block, 8);
    let found = le64(block, 16);
    let sum = le64(block, 24);
    if found_lba != lba {
        return fail(MismatchKind::WrongLba { found: found_lba });
    }
    if found != u64::from(expected) {
        if expected == 0 {
            return fail(MismatchKind::NotZeroes);
        }
        return if found < u64::from(expected) {
            fail(MismatchKind::Stale { found })
        } else {
            fail(MismatchKind::Unexpected { found })
        };
    }
    if sum != checksum(block) {
        return fail(MismatchKind::Checksum);
    }
    Ok(())
}

/// How many mismatches are kept with their details.
pub const SAMPLES: usize = 8;

/// The shadow map and the verification tally, shared by all workload threads.
pub struct Shadow {
    generations: Vec<AtomicU32>,
    verified: AtomicU64,
    unchecked: AtomicU64,
    mismatches: AtomicU64,
    samples: Mutex<Vec<Mismatch>>,
}

impl Shadow {
    /// A map of `blocks` blocks, all zeroes (`known_empty`) or all [`UNKNOWN`].
    pub fn new(blocks: u64, known_empty: bool) -> Self {
        let init = if known_empty { 0 } else { UNKNOWN };
        Self {
            generations: (0..blocks).map(|_| AtomicU32::new(init)).collect(),
            verified: AtomicU64::new(0),
            unchecked: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
        }
    }

    fn entry(&self, lba: u64) -> &AtomicU32 {
        // The workload only touches LBAs inside the disk it sized this map for.
        &self.generations[usize::try_from(lba).unwrap_or(usize::MAX)]
    }

    /// The generation of the next write of `lba` (the caller has the block to itself).
    pub fn next_generation(&self, lba: u64) -> u32 {
        match self.entry(lba).load(Ordering::Acquire) {
            // After an unknown state, start over high enough to differ from anything earlier.
            UNKNOWN => 1,
            g if g >= UNKNOWN - 1 => 1,
            g => g + 1,
        }
    }

    /// Records what a completed write, unmap or failure left in `lba`.
    pub fn set(&self, lba: u64, generation: u32) {
        self.entry(lba).store(generation, Ordering::Release);
    }

    /// The generation `lba` must hold.
    pub fn expected(&self, lba: u64) -> u32 {
        self.entry(lba).load(Ordering::Acquire)
    }

    /// Checks the blocks of a completed read of `data` from `first_lba`, tallying the result.
    pub fn verify_read(&self, data: &[u8], first_lba: u64, block_size: usize) {
        for (lba, block) in (first_lba..).zip(data.chunks(block_size)) {
            let expected = self.expected(lba);
            if expected == UNKNOWN {
                self.unchecked.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.verified.fetch_add(1, Ordering::Relaxed);
            if let Err(m) = check_block(block, lba, expected) {
                self.record(m);
            }
        }
    }

    fn record(&self, m: Mismatch) {
        self.mismatches.fetch_add(1, Ordering::Relaxed);
        let mut samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if samples.len() < SAMPLES {
            samples.push(m);
        }
    }

    /// The tally so far.
    pub fn summary(&self) -> Verification {
        Verification {
            enabled: true,
            blocks_verified: self.verified.load(Ordering::Relaxed),
            blocks_unchecked: self.unchecked.load(Ordering::Relaxed),
            mismatches: self.mismatches.load(Ordering::Relaxed),
            samples: self
                .samples
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }

    /// Mismatches so far (for the progress line).
    pub fn mismatches(&self) -> u64 {
        self.mismatches.load(Ordering::Relaxed)
    }
}

/// The verification result of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verification {
    /// Whether reads were verified at all.
    pub enabled: bool,
    /// Blocks read and checked.
    pub blocks_verified: u64,
    /// Blocks read whose contents were unknown (not checked).
    pub blocks_unchecked: u64,
    /// Blocks that did not match.
    pub mismatches: u64,
    /// The first [`SAMPLES`] mismatches.
    pub samples: Vec<Mismatch>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(lba: u64, generation: u32) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        stamp(&mut b, lba, generation);
        b
    }

    #[test]
    fn a_stamped_block_checks() {
        assert_eq!(check_block(&block(9, 3), 9, 3), Ok(()));
        assert_eq!(check_block(&[0; 4096], 9, 0), Ok(()));
        assert_ne!(block(9, 3), block(9, 4));
    }

    #[test]
    fn every_kind_of_mismatch_is_named_with_its_lba() {
        let cases: Vec<(Vec<u8>, u64, u32, &str)> = vec![
            (
                block(5, 1),
                5,
                0,
                "LBA 5: never written, expected zeroes, found data",
            ),
            (
                vec![0; 512],
                5,
                2,
                "LBA 5: expected generation 2, found zeroes (lost write)",
            ),
            (
                vec![0xAB; 512],
                5,
                2,
                "LBA 5: expected generation 2, found data without a stamp",
            ),
            (
                block(6, 2),
                5,
                2,
                "LBA 5: found the block written for LBA 6 (misdirected I/O)",
            ),
            (
                block(5, 1),
                5,
                2,
                "LBA 5: expected generation 2, found generation 1 (stale data)",
            ),
            (
                block(5, 3),
                5,
                2,
                "LBA 5: expected generation 2, found generation 3 (never completed)",
            ),
        ];
        for (data, lba, expected, text) in cases {
            let m = check_block(&data, lba, expected).expect_err(text);
            assert_eq!(m.to_string(), text);
        }
        let mut corrupt = block(77, 4);
        corrupt[300] ^= 0x01;
        let m = check_block(&corrupt, 77, 4).expect_err("one flipped bit");
        assert_eq!(m.kind, MismatchKind::Checksum);
        assert_eq!(m.lba, 77);
        assert!(
            m.to_string()
                .starts_with("LBA 77: generation 4 stamp intact")
        );
    }

    #[test]
    fn shadow_tallies_reads() {
        let shadow = Shadow::new(8, true);
        assert_eq!(shadow.next_generation(2), 1);
        shadow.set(2, 1);
        shadow.set(3, UNKNOWN);
        let mut data = vec![0u8; 4 * 512];
        stamp(&mut data[512..1024], 2, 1);
        data[1536] = 1; // LBA 4 never written, not zero.
        shadow.verify_read(&data, 1, 512);
        let v = shadow.summary();
        assert_eq!(
            (v.blocks_verified, v.blocks_unchecked, v.mismatches),
            (3, 1, 1)
        );
        assert_eq!(v.samples[0].lba, 4);
        assert_eq!(v.samples[0].kind_name(), "not_zeroes");
        assert_eq!(shadow.next_generation(2), 2);
        assert_eq!(shadow.next_generation(3), 1);
    }
}
