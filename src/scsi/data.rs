//! Building data-in responses on the stack.
//!
//! Every response this module produces is short (the longest, standard INQUIRY data, is 74
//! bytes), so it is built whole into a fixed array and then copied out truncated to the
//! allocation length and to the caller's buffer (SPC-4 4.2.5.6: the device server transfers
//! the lesser of the allocation length and the data available, and no error arises from it).

use super::sense::copy_truncated;

/// A response under construction: a fixed buffer and a fill level.
///
/// # Invariants
///
/// `len <= CAPACITY`. Writes past the capacity are dropped and recorded in `overflowed`
/// (never a panic); the unit tests assert that no response overflows.
pub(super) struct Response {
    bytes: [u8; Self::CAPACITY],
    len: usize,
    overflowed: bool,
}

impl Response {
    const CAPACITY: usize = 128;

    pub(super) const fn new() -> Self {
        Self {
            bytes: [0; Self::CAPACITY],
            len: 0,
            overflowed: false,
        }
    }

    /// The bytes written so far.
    pub(super) fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(super) fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Appends `data`.
    pub(super) fn put(&mut self, data: &[u8]) {
        let end = self.len.checked_add(data.len());
        match end.and_then(|end| self.bytes.get_mut(self.len..end).map(|dst| (end, dst))) {
            Some((end, dst)) => {
                dst.copy_from_slice(data);
                // INVARIANT: `end` indexes `bytes`, so it is at most CAPACITY.
                self.len = end;
            }
            None => self.overflowed = true,
        }
    }

    pub(super) fn u8(&mut self, value: u8) {
        self.put(&[value]);
    }

    pub(super) fn be16(&mut self, value: u16) {
        self.put(&value.to_be_bytes());
    }

    pub(super) fn be32(&mut self, value: u32) {
        self.put(&value.to_be_bytes());
    }

    pub(super) fn be64(&mut self, value: u64) {
        self.put(&value.to_be_bytes());
    }

    /// Appends `count` zero bytes.
    pub(super) fn zeros(&mut self, count: usize) {
        for _ in 0..count {
            self.u8(0);
        }
    }

    /// Appends `text` as an ASCII field of exactly `width` bytes: cut, or padded with spaces
    /// (SPC-4 4.4.1: ASCII fields are left-aligned and space-padded).
    pub(super) fn ascii(&mut self, text: &[u8], width: usize) {
        for i in 0..width {
            let byte = text.get(i).copied().filter(|b| (0x20..0x7F).contains(b));
            self.u8(byte.unwrap_or(b' '));
        }
    }

    /// Overwrites bytes already written at `at` (used to fill in length fields at the end).
    pub(super) fn patch(&mut self, at: usize, data: &[u8]) {
        let end = at.checked_add(data.len()).filter(|&end| end <= self.len);
        match end.and_then(|end| self.bytes.get_mut(at..end)) {
            Some(dst) => dst.copy_from_slice(data),
            None => self.overflowed = true,
        }
    }

    /// Copies the response to `buf`, truncated to `allocation_length` and to `buf.len()`;
    /// returns the number of bytes copied.
    pub(super) fn copy_out(&self, allocation_length: usize, buf: &mut [u8]) -> usize {
        let data = self.as_bytes();
        let data = data.get(..allocation_length).unwrap_or(data);
        copy_truncated(data, buf)
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        clippy::panic,
        reason = "tests index fixed buffers and fail by panicking"
    )]

    use super::*;

    #[test]
    fn builds_and_truncates() {
        let mut r = Response::new();
        r.u8(1);
        r.be16(0x0203);
        r.be32(0x0405_0607);
        r.ascii(b"ab\x01", 4);
        r.patch(0, &[9]);
        assert_eq!(r.as_bytes(), [9, 2, 3, 4, 5, 6, 7, b'a', b'b', b' ', b' ']);
        let mut buf = [0u8; 4];
        assert_eq!(r.copy_out(100, &mut buf), 4);
        assert_eq!(buf, [9, 2, 3, 4]);
        assert_eq!(r.copy_out(2, &mut buf), 2);
        assert_eq!(r.copy_out(0, &mut buf), 0);
        assert!(!r.overflowed());
    }

    #[test]
    fn overflow_is_recorded_not_a_panic() {
        let mut r = Response::new();
        r.zeros(Response::CAPACITY);
        assert!(!r.overflowed());
        r.u8(1);
        assert!(r.overflowed());
        assert_eq!(r.len(), Response::CAPACITY);
        let mut r = Response::new();
        r.patch(0, &[1]);
        assert!(r.overflowed());
    }
}
