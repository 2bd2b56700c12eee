//! Test support for fuzzing and property tests: [`Srb`]'s parsing over arbitrary SRB_EX bytes.
//!
//! Only with the `test-utils` feature and hidden from the documentation: this is not part of
//! the layer's API. [`Srb`] trusts Storport for exactly two things: the SRB is `SrbLength`
//! bytes of memory the miniport owns, and the pointers in it (`DataBuffer`, each CDB block's
//! `SenseInfoBuffer`) point at buffers of the lengths the SRB states. Everything else (the
//! offset table, the extended-data blocks, the CDB length, the address) it validates. [`parse`]
//! takes arbitrary bytes, makes just those two things true (clamps `SrbLength`, points the
//! pointers at the caller's buffers) and runs every accessor that does not call into Storport,
//! so a fuzzer exercises all the validation and nothing the validation is entitled to assume.

use core::ffi::c_void;
use core::mem::{offset_of, size_of};
use core::ptr::NonNull;

use crate::ffi;
use crate::port::Port;
use crate::srb::{Address, PnpRequest, PowerRequest, Srb};

/// What [`parse`] saw through [`Srb`]'s accessors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// `Srb::from_raw` accepted the request as an SRB_EX.
    pub accepted: bool,
    /// `Srb::function`.
    pub function: u32,
    /// `Srb::flags`.
    pub flags: u32,
    /// `Srb::address`.
    pub address: Option<Address>,
    /// `Srb::cdb`, copied (`cdb_len` bytes are meaningful).
    pub cdb: [u8; 32],
    /// Length of `Srb::cdb`.
    pub cdb_len: usize,
    /// The CDB slice lay entirely inside the SRB's `SrbLength` bytes.
    pub cdb_inside: bool,
    /// `Srb::cdb_head` gave `Srb::cdb`'s length and its first (up to 16) bytes.
    pub cdb_head_agrees: bool,
    /// `Srb::pnp`.
    pub pnp: Option<PnpRequest>,
    /// `Srb::power`.
    pub power: Option<PowerRequest>,
    /// Length of `Srb::data_buffer` (0 for none).
    pub data_len: usize,
    /// `Srb::write_sense`'s answer, when every CDB block's sense pointer was the caller's buffer
    /// or NULL (blocks may overlap and overwrite each other's pointers; then it is not called).
    pub sense_written: Option<usize>,
}

/// The largest SRB [`parse`] takes, in bytes.
pub const MAX_SRB: usize = 4096;

/// `SrbExDataOffset[0]`: where the offset table starts.
const TABLE: usize = offset_of!(ffi::STORAGE_REQUEST_BLOCK, SrbExDataOffset);
/// `SenseInfoBuffer` inside both CDB blocks (same offset in CDB16 and CDB32).
const SENSE_POINTER: usize = offset_of!(ffi::SRBEX_DATA_SCSI_CDB16, SenseInfoBuffer);
const _: () = assert!(SENSE_POINTER == offset_of!(ffi::SRBEX_DATA_SCSI_CDB32, SenseInfoBuffer));

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn write_u32(bytes: &mut [u8], at: usize, value: u32) {
    if let Some(b) = at.checked_add(4).and_then(|end| bytes.get_mut(at..end)) {
        b.copy_from_slice(&value.to_le_bytes());
    }
}

fn read_ptr(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?) as usize)
}

fn write_ptr(bytes: &mut [u8], at: usize, value: usize) {
    if let Some(b) = at.checked_add(8).and_then(|end| bytes.get_mut(at..end)) {
        b.copy_from_slice(&(value as u64).to_le_bytes());
    }
}

/// The offsets of the CDB blocks `Srb` could locate, as `Srb::ex_data` would find them.
fn cdb_blocks(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let count = read_u32(bytes, offset_of!(ffi::STORAGE_REQUEST_BLOCK, NumSrbExData))
        .unwrap_or(0)
        .min(16) as usize;
    (0..count).filter_map(move |i| {
        let offset = read_u32(bytes, TABLE + 4 * i)? as usize;
        let kind = read_u32(bytes, offset)?;
        let size = match kind {
            ffi::SrbExDataTypeScsiCdb16 => size_of::<ffi::SRBEX_DATA_SCSI_CDB16>(),
            ffi::SrbExDataTypeScsiCdb32 => size_of::<ffi::SRBEX_DATA_SCSI_CDB32>(),
            _ => return None,
        };
        // Offsets inside the header are refused by `Srb`; leave the header alone.
        (offset >= size_of::<ffi::STORAGE_REQUEST_BLOCK>()
            && offset.is_multiple_of(8)
            && offset.checked_add(size)? <= bytes.len())
        .then_some(offset)
    })
}

/// Runs [`Srb`]'s parsing over `words` (the SRB's bytes, little-endian, as 8-aligned words).
///
/// Before parsing, `SrbLength` is clamped to the buffer, `DataBuffer` (when not NULL) is
/// pointed at `data` with `DataTransferLength` clamped to it, and every CDB block's
/// `SenseInfoBuffer` (when not NULL) at `sense`, which holds the largest `SenseInfoBufferLength`.
/// `sense_data` is what `write_sense` is asked to copy.
pub fn parse(
    words: &mut [u64],
    data: &mut [u8],
    sense: &mut [u8; 255],
    sense_data: &[u8],
) -> Parsed {
    let len_bytes = size_of_val(words);
    // Work on a byte copy of the words; the SRB itself is read back through `Srb`.
    let mut scratch = [0u8; MAX_SRB];
    if len_bytes > MAX_SRB || len_bytes < size_of::<ffi::STORAGE_REQUEST_BLOCK>() {
        return Parsed::default();
    }
    for (chunk, word) in scratch.chunks_exact_mut(8).zip(words.iter()) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    let bytes = &mut scratch[..len_bytes];
    let data_ptr = data.as_mut_ptr() as usize;
    let sense_ptr = sense.as_mut_ptr() as usize;

    // What Storport guarantees, made true.
    let srb_length = offset_of!(ffi::STORAGE_REQUEST_BLOCK, SrbLength);
    let claimed = read_u32(bytes, srb_length).unwrap_or(0);
    write_u32(bytes, srb_length, claimed.min(len_bytes as u32));
    let buffer_at = offset_of!(ffi::STORAGE_REQUEST_BLOCK, DataBuffer);
    let length_at = offset_of!(ffi::STORAGE_REQUEST_BLOCK, DataTransferLength);
    if read_ptr(bytes, buffer_at).unwrap_or(0) != 0 {
        write_ptr(bytes, buffer_at, data_ptr);
        let length = read_u32(bytes, length_at).unwrap_or(0);
        write_u32(
            bytes,
            length_at,
            length.min(u32::try_from(data.len()).unwrap_or(u32::MAX)),
        );
    }
    for field in [
        offset_of!(ffi::STORAGE_REQUEST_BLOCK, ZeroGuard2),
        offset_of!(ffi::STORAGE_REQUEST_BLOCK, OriginalRequest),
        offset_of!(ffi::STORAGE_REQUEST_BLOCK, ClassContext),
        offset_of!(ffi::STORAGE_REQUEST_BLOCK, PortContext),
        offset_of!(ffi::STORAGE_REQUEST_BLOCK, MiniportContext),
        offset_of!(ffi::STORAGE_REQUEST_BLOCK, NextSrb),
    ] {
        write_ptr(bytes, field, 0);
    }
    let blocks: [usize; 16] = {
        let mut found = [usize::MAX; 16];
        for (slot, offset) in found.iter_mut().zip(cdb_blocks(bytes)) {
            *slot = offset;
        }
        found
    };
    for offset in blocks.into_iter().filter(|&o| o != usize::MAX) {
        let at = offset + SENSE_POINTER;
        if read_ptr(bytes, at).unwrap_or(0) != 0 {
            write_ptr(bytes, at, sense_ptr);
        }
    }
    // Blocks may overlap: check the final bytes, which are what `Srb` will read.
    let sense_safe = cdb_blocks(bytes).all(|offset| {
        read_ptr(bytes, offset + SENSE_POINTER).is_some_and(|p| p == 0 || p == sense_ptr)
    });
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        *word = u64::from_le_bytes(w);
    }
    let srb_ptr = words.as_mut_ptr();

    // The `Port` is never used: none of the accessors called below names the adapter.
    // SAFETY: a dangling but non-NULL extension; `Srb` only passes it to Storport in
    // `scatter_gather`, `extension` and `complete`, which are not called here.
    let port = unsafe { Port::new(NonNull::<c_void>::dangling()) };
    // SAFETY: `words` is `len_bytes` bytes this function owns (by `&mut`) for the whole call,
    // at least the SRB_EX header, `SrbLength` <= `len_bytes`, and its pointers are NULL or the
    // caller's buffers of the stated lengths (fixed above): what Storport guarantees for a
    // request it hands a miniport.
    let Some(mut srb) = (unsafe { Srb::from_raw(srb_ptr.cast(), port) }) else {
        return Parsed::default();
    };
    let mut parsed = Parsed {
        accepted: true,
        function: srb.function_code(),
        flags: srb.flags(),
        address: srb.address(),
        pnp: srb.pnp(),
        power: srb.power(),
        ..Parsed::default()
    };
    let _ = srb.timeout();
    let cdb = srb.cdb();
    let start = srb_ptr as usize;
    let cdb_at = cdb.as_ptr() as usize;
    let srb_len = claimed.min(len_bytes as u32) as usize;
    parsed.cdb_inside = cdb.is_empty()
        || (cdb_at >= start && cdb_at.saturating_add(cdb.len()) <= start.saturating_add(srb_len));
    let (head_len, head) = srb.cdb_head();
    let shown = cdb.len().min(16);
    parsed.cdb_head_agrees = head_len == cdb.len() && head.get(..shown) == cdb.get(..shown);
    parsed.cdb_len = cdb.len().min(32);
    if let Some(dst) = parsed.cdb.get_mut(..parsed.cdb_len) {
        dst.copy_from_slice(cdb.get(..parsed.cdb_len).unwrap_or(&[]));
    }
    srb.set_scsi_status(crate::srb::ScsiStatus::CheckCondition);
    if sense_safe {
        parsed.sense_written = Some(srb.write_sense(sense_data));
    }
    let _ = srb.data_transfer_length();
    if let Some(buffer) = srb.data_buffer() {
        parsed.data_len = buffer.len();
        // Touch every byte, as a miniport copying data would.
        for b in buffer.iter_mut() {
            *b = b.wrapping_add(1);
        }
    }
    srb.forget();
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    type Header = ffi::STORAGE_REQUEST_BLOCK;

    /// An SRB_EX of `words` whose one extended-data offset names a CDB16 block at `block_at`,
    /// with a data buffer of `data_len` bytes.
    fn srb_with_block_at(block_at: usize, data_len: u32) -> [u64; 64] {
        srb_with(ffi::SrbExDataTypeScsiCdb16, block_at, data_len)
    }

    /// As [`srb_with_block_at`], with a block of type `kind`.
    fn srb_with(kind: u32, block_at: usize, data_len: u32) -> [u64; 64] {
        let mut bytes = [0u8; 512];
        bytes[offset_of!(Header, Function)] = ffi::SRB_FUNCTION_STORAGE_REQUEST_BLOCK;
        let put = |bytes: &mut [u8; 512], at: usize, value: u32| {
            bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        };
        put(
            &mut bytes,
            offset_of!(Header, Signature),
            ffi::SRB_SIGNATURE,
        );
        put(&mut bytes, offset_of!(Header, SrbLength), 512);
        put(&mut bytes, offset_of!(Header, NumSrbExData), 1);
        put(&mut bytes, TABLE, block_at as u32);
        put(&mut bytes, block_at, kind);
        put(&mut bytes, offset_of!(Header, DataTransferLength), data_len);
        // Any non-NULL pointer: `parse` points it at the caller's buffer.
        put(&mut bytes, offset_of!(Header, DataBuffer), 1);
        let mut words = [0u64; 64];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_le_bytes(chunk.try_into().unwrap());
        }
        words
    }

    /// A CDB block the offset table places inside the header is not a block: its "sense pointer"
    /// is a header field (here `DataBuffer`), which must keep pointing at the data buffer.
    #[test]
    fn a_block_inside_the_header_leaves_the_header_alone() {
        let inside = offset_of!(Header, DataBuffer) - SENSE_POINTER;
        assert!(inside.is_multiple_of(8) && inside < size_of::<Header>());
        let mut words = srb_with_block_at(inside, 16);
        let (mut data, mut sense) = ([0u8; 16], [0u8; 255]);
        let parsed = parse(&mut words, &mut data, &mut sense, &[0x70; 18]);
        assert!(parsed.accepted);
        assert_eq!(parsed.data_len, 16);
        assert_eq!(
            data, [1; 16],
            "the data buffer is the caller's, touched once"
        );
        assert!(
            sense.iter().all(|&b| b == 0),
            "nothing wrote through a header field"
        );
    }

    /// A CDB16 or CDB32 block at a proper offset past the header is one: its sense pointer is
    /// pointed at the caller's sense buffer, and its CDB is read from inside the SRB.
    #[test]
    fn a_block_past_the_header_gets_the_sense_buffer() {
        let past = size_of::<Header>().next_multiple_of(8) + 64;
        for kind in [ffi::SrbExDataTypeScsiCdb16, ffi::SrbExDataTypeScsiCdb32] {
            let mut words = srb_with(kind, past, 16);
            let sense_at = (past + SENSE_POINTER) / 8;
            words[sense_at] = 1;
            // CdbLength 10 (byte 10 of the block), the CDB at byte 24: READ(10).
            let cdb_length_at = offset_of!(ffi::SRBEX_DATA_SCSI_CDB16, CdbLength);
            let cdb_at = offset_of!(ffi::SRBEX_DATA_SCSI_CDB16, Cdb);
            assert_eq!(cdb_at, offset_of!(ffi::SRBEX_DATA_SCSI_CDB32, Cdb));
            let word = (past + cdb_length_at) / 8;
            words[word] |= 10 << (8 * ((past + cdb_length_at) % 8));
            words[(past + cdb_at) / 8] |= 0x28 << (8 * ((past + cdb_at) % 8));
            let (mut data, mut sense) = ([0u8; 16], [0u8; 255]);
            let parsed = parse(&mut words, &mut data, &mut sense, &[0x70; 18]);
            assert!(parsed.accepted, "{kind:#x}");
            assert_eq!(data, [1; 16], "{kind:#x}");
            assert_eq!(words[sense_at], sense.as_ptr() as u64, "{kind:#x}");
            assert_eq!(parsed.cdb_len, 10, "{kind:#x}");
            assert_eq!(parsed.cdb[0], 0x28, "{kind:#x}");
            assert!(parsed.cdb_inside, "{kind:#x}");
        }
    }
}
