//! The data pattern written to the disk, shared by the application and the host test.
//!
//! Every 8-byte word of the disk gets a value derived from a seed and the word's byte offset on
//! the disk, so the pattern depends on where the data lands, not on the block size or on how the
//! writes were split: a block written to the wrong LBA, a torn or shifted transfer, or stale data
//! all show up, both in the read-back inside the guest and in the image file on Linux.

/// The pattern word at byte offset `offset` (a multiple of 8) of the disk, for `seed`
/// (splitmix64 of the two).
pub const fn word(seed: u64, offset: u64) -> u64 {
    let mut z =
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (offset / 8).wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `buffer`, which lands at byte offset `offset` (a multiple of 8) of the disk.
pub fn fill(seed: u64, offset: u64, buffer: &mut [u8]) {
    let mut at = offset;
    for chunk in buffer.chunks_mut(8) {
        let bytes = word(seed, at).to_le_bytes();
        chunk.copy_from_slice(bytes.get(..chunk.len()).unwrap_or(&bytes));
        at = at.wrapping_add(8);
    }
}

/// The first byte offset (relative to `buffer`) where `buffer`, read from byte offset `offset`
/// of the disk, differs from the pattern.
pub fn mismatch(seed: u64, offset: u64, buffer: &[u8]) -> Option<usize> {
    let mut at = offset;
    for (i, chunk) in buffer.chunks(8).enumerate() {
        let bytes = word(seed, at).to_le_bytes();
        if let Some(j) = chunk.iter().zip(bytes.iter()).position(|(a, b)| a != b) {
            return Some(i * 8 + j);
        }
        at = at.wrapping_add(8);
    }
    None
}
