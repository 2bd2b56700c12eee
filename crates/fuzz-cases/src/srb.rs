//! SRB_EX parsing in `crates/storport` over arbitrary SRB bytes, and the driver's use of a
//! request's scatter-gather list over arbitrary lists.
//!
//! [`storport::Srb`] is where the driver's unsafe code meets bytes a class driver built: the
//! offset table, the extended-data blocks, the CDB length, the address. `storport::fuzzing::parse`
//! runs its accessors over any bytes (after making true the two things Storport guarantees: the
//! SRB is `SrbLength` bytes long, its pointers point at buffers of the stated lengths). Checked:
//! no panic and no access outside the SRB (the fuzz build runs under AddressSanitizer; the CDB
//! slice is checked to lie inside `SrbLength`), at most 32 CDB bytes, sense data written only up
//! to `SenseInfoBufferLength`, the data buffer exactly `DataTransferLength` bytes.
//!
//! The scatter-gather list Storport hands over is turned into an indirect descriptor table by
//! `vioblk::virtio::RequestBuilder::build_data` (BuildIo). For any list and any device limits,
//! a built request must describe exactly the list's bytes, in order, split at `size_max`, within
//! `seg_max` and the table, header first and status last; a refused one must not be built.

use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::Arbitrary;
use storport::dma::DmaRegion;
use vioblk::virtio::{RequestArea, RequestBuilder, RequestLimits, RequestType, area_size};

/// One fuzz input.
#[derive(Arbitrary, Debug, Clone)]
pub struct Input {
    /// The SRB's bytes (at most 4 KiB are used; the rest of the first 128 bytes is zero).
    pub srb: Vec<u8>,
    /// Make the header an SRB_EX (Function, Signature, a plausible SrbLength) so parsing goes
    /// past the first check; otherwise the bytes are used as they are.
    pub well_formed_header: bool,
    /// The data buffer's size.
    pub data_len: u16,
    /// What `write_sense` is asked to copy.
    pub sense: Vec<u8>,
    /// The scatter-gather list: (bus address, length).
    pub sg: Vec<(u64, u32)>,
    /// Request type: IN, OUT or GET_ID (modulo 3).
    pub kind: u8,
    /// Starting sector.
    pub sector: u64,
    /// `seg_max` (data descriptors per request).
    pub max_data_segments: u16,
    /// `size_max` (bytes per data descriptor).
    pub max_segment_size: u32,
}

/// Runs one input; panics naming the broken invariant.
pub fn run(input: &Input) {
    parse_srb(input);
    build_from_sg(input);
}

fn parse_srb(input: &Input) {
    let len = input.srb.len().clamp(128, storport::fuzzing::MAX_SRB);
    let mut bytes = vec![0u8; len.next_multiple_of(8)];
    let n = input.srb.len().min(bytes.len());
    bytes[..n].copy_from_slice(&input.srb[..n]);
    if input.well_formed_header {
        bytes[2] = 0x28; // Function = SRB_FUNCTION_STORAGE_REQUEST_BLOCK
        bytes[8..12].copy_from_slice(&0x5352_4258u32.to_le_bytes()); // "SRBX"
        let claimed = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        let length = 128 + claimed % (bytes.len() as u32 - 127);
        bytes[16..20].copy_from_slice(&length.to_le_bytes());
    }
    let mut words: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let mut data = vec![0u8; usize::from(input.data_len)];
    let mut sense = [0u8; 255];
    let parsed = storport::fuzzing::parse(&mut words, &mut data, &mut sense, &input.sense);
    if !parsed.accepted {
        return;
    }
    assert!(parsed.cdb_inside, "the CDB slice lies outside the SRB");
    assert!(parsed.cdb_len <= 32, "a CDB of {} bytes", parsed.cdb_len);
    assert!(parsed.data_len <= data.len());
    if let Some(written) = parsed.sense_written {
        assert!(written <= input.sense.len() && written <= sense.len());
        assert!(
            sense[written..].iter().all(|&b| b == 0),
            "sense bytes written past what write_sense reported"
        );
    }
    // Every byte of the data buffer the accessor handed out was touched once.
    assert!(data[..parsed.data_len].iter().all(|&b| b == 1));
    assert!(data[parsed.data_len..].iter().all(|&b| b == 0));
}

thread_local! {
    // One leaked request area per thread, reused by every input.
    static AREA: &'static [AtomicU64] = {
        let words: Vec<AtomicU64> = (0..AREA_BYTES / 8 + 8).map(|_| AtomicU64::new(0)).collect();
        let words: &'static [AtomicU64] = Box::leak(words.into_boxed_slice());
        let skip = (64 - (words.as_ptr() as usize % 64)) % 64 / 8;
        &words[skip..skip + AREA_BYTES / 8]
    };
}

/// A request area for the largest table the driver builds.
const AREA_BYTES: usize = 8192;
const AREA_BASE: u64 = 0x7000_0000;

fn build_from_sg(input: &Input) {
    let kind = [RequestType::In, RequestType::Out, RequestType::GetId][usize::from(input.kind % 3)];
    let limits = RequestLimits {
        max_data_segments: input.max_data_segments,
        max_segment_size: input.max_segment_size,
        flush: true,
        discard: None,
        write_zeroes: None,
    };
    let builder = RequestBuilder::new(limits);
    AREA.with(|&words| {
        for w in words {
            w.store(0, Ordering::Relaxed);
        }
        let size = area_size(input.max_data_segments).min(AREA_BYTES);
        let region = DmaRegion::from_test_buffer(&words[..size.div_ceil(8)], AREA_BASE);
        let Some(area) = RequestArea::new(region) else {
            return;
        };
        let built = builder.build_data(&area, kind, input.sector, input.sg.iter().copied());
        let Ok(built) = built else {
            return;
        };
        let total: u64 = input.sg.iter().map(|&(_, l)| u64::from(l)).sum();
        assert!(
            input.sg.iter().all(|&(_, l)| l > 0),
            "an empty segment was built"
        );
        assert!(total <= u64::from(u32::MAX), "more than 4 GiB was built");
        if kind != RequestType::GetId {
            assert_eq!(total % 512, 0, "a partial sector was built");
        }
        // Read the table back: header, data (the list, split at size_max), status.
        let table = built.table_address - AREA_BASE;
        let descriptor = |i: u64| {
            let at = ((table + 16 * i) / 8) as usize;
            let address = words[at].load(Ordering::Relaxed);
            let meta = words[at + 1].load(Ordering::Relaxed);
            (
                address,
                meta as u32,
                (meta >> 32) as u16,
                (meta >> 48) as u16,
            )
        };
        let count = u64::from(built.descriptors);
        assert_eq!(u64::from(built.table_len), 16 * count);
        assert!(count >= 3, "a data request of {count} descriptors");
        assert!(count - 2 <= u64::from(input.max_data_segments.max(1)));
        let max_piece = input.max_segment_size.max(1);
        let mut expected = input.sg.iter().flat_map(|&(address, len)| {
            let pieces = len.div_ceil(max_piece);
            (0..pieces).map(move |p| {
                let offset = u64::from(p) * u64::from(max_piece);
                let piece = (u64::from(len) - offset).min(u64::from(max_piece)) as u32;
                (address.wrapping_add(offset), piece)
            })
        });
        let device_writable = kind != RequestType::Out;
        for i in 1..count - 1 {
            let (address, len, flags, _) = descriptor(i);
            let want = expected
                .next()
                .expect("more data descriptors than the list holds");
            assert_eq!((address, len), want, "data descriptor {i}");
            assert!(len <= max_piece);
            assert_eq!(
                flags & 2 != 0,
                device_writable,
                "direction of descriptor {i}"
            );
        }
        assert!(expected.next().is_none(), "the list was not built whole");
        let (_, status_len, status_flags, _) = descriptor(count - 1);
        assert_eq!(status_len, 1, "status descriptor");
        assert_eq!(status_flags & 2, 2, "status must be device-writable");
        assert_eq!(status_flags & 1, 0, "the chain must end at the status");
        let written = if device_writable { total } else { 0 };
        // The status byte on top; a used length is 32 bits, so 4 GiB - 1 of data saturates.
        assert_eq!(
            u64::from(built.max_written),
            (written + 1).min(u64::from(u32::MAX))
        );
    });
}
