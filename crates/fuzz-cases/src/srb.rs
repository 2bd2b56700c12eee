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
    /// The SRB: laid out from parts, or raw bytes.
    pub srb: Layout,
    /// Bytes overwritten after layout: (offset modulo the SRB's length, value).
    pub patches: Vec<(u16, u8)>,
    /// Make the header an SRB_EX (Function, Signature, SrbLength at least the header) so
    /// parsing goes past the first check; otherwise the bytes are used as they are.
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

/// How the SRB's bytes are made.
#[derive(Arbitrary, Debug, Clone)]
pub enum Layout {
    /// As a class driver lays it out: header, offset table, address, extended-data blocks.
    Parts {
        /// SrbFunction.
        function: u32,
        /// SrbFlags.
        flags: u32,
        /// The STOR_ADDR_BTL8: (Type, Path, Target, Lun), or no address.
        address: Option<(u16, u8, u8, u8)>,
        /// The extended-data blocks (at most 16 are listed in the offset table).
        blocks: Vec<Block>,
        /// NumSrbExData, if not the number of blocks.
        count: Option<u32>,
        /// SrbLength, if not the laid-out length.
        length: Option<u16>,
    },
    /// Any bytes (at most 4 KiB; at least the 128-byte header, zero-padded).
    Raw(Vec<u8>),
}

/// One extended-data block.
#[derive(Arbitrary, Debug, Clone)]
pub enum Block {
    /// SRBEX_DATA_SCSI_CDB16 (or CDB32 when `long`).
    Cdb {
        /// SRBEX_DATA_SCSI_CDB32.
        long: bool,
        /// CdbLength (any value).
        cdb_len: u8,
        /// The CDB bytes.
        cdb: [u8; 32],
        /// SenseInfoBufferLength.
        sense_len: u8,
        /// SenseInfoBuffer is not NULL.
        sense: bool,
    },
    /// SRBEX_DATA_PNP.
    Pnp {
        /// PnPAction.
        action: u32,
        /// SrbPnPFlags.
        flags: u32,
    },
    /// SRBEX_DATA_POWER.
    Power {
        /// DevicePowerState.
        state: u32,
        /// PowerAction.
        action: u32,
    },
    /// Any type and bytes.
    Other {
        /// Type.
        kind: u32,
        /// The rest.
        bytes: Vec<u8>,
    },
    /// The offset table names this offset (anything: inside the header, misaligned, past
    /// the end) instead of a block.
    Offset(u32),
}

fn put(bytes: &mut Vec<u8>, at: usize, data: &[u8]) {
    if bytes.len() < at + data.len() {
        bytes.resize(at + data.len(), 0);
    }
    bytes[at..at + data.len()].copy_from_slice(data);
}

/// Lays out `layout` as a class driver would (SRB_EX header, `SrbExDataOffset[]` from 0x78,
/// address and blocks after it, 8-aligned).
pub fn lay_out(layout: &Layout, data_len: u16) -> Vec<u8> {
    let Layout::Parts {
        function,
        flags,
        address,
        blocks,
        count,
        length,
    } = layout
    else {
        let Layout::Raw(raw) = layout else {
            unreachable!()
        };
        let mut bytes = raw.clone();
        bytes.truncate(storport::fuzzing::MAX_SRB);
        bytes.resize(bytes.len().max(128), 0);
        return bytes;
    };
    let mut bytes = vec![0u8; 128];
    put(&mut bytes, 0, &128u16.to_le_bytes()); // Length
    bytes[2] = 0x28; // Function = SRB_FUNCTION_STORAGE_REQUEST_BLOCK
    put(&mut bytes, 8, &0x5352_4258u32.to_le_bytes()); // Signature "SRBX"
    put(&mut bytes, 12, &1u32.to_le_bytes()); // Version
    put(&mut bytes, 20, &function.to_le_bytes()); // SrbFunction
    put(&mut bytes, 24, &flags.to_le_bytes()); // SrbFlags
    put(&mut bytes, 40, &10u32.to_le_bytes()); // TimeOutValue
    if data_len > 0 {
        put(&mut bytes, 60, &u32::from(data_len).to_le_bytes()); // DataTransferLength
        put(&mut bytes, 64, &1u64.to_le_bytes()); // DataBuffer: not NULL
    }
    let blocks = &blocks[..blocks.len().min(16)];
    put(
        &mut bytes,
        56,
        &count.unwrap_or(blocks.len() as u32).to_le_bytes(),
    ); // NumSrbExData
    let mut next = (0x78 + 4 * blocks.len()).next_multiple_of(8);
    if let Some((kind, path, target, lun)) = *address {
        put(&mut bytes, 52, &(next as u32).to_le_bytes()); // AddressOffset
        put(&mut bytes, next, &kind.to_le_bytes());
        put(&mut bytes, next + 4, &4u32.to_le_bytes());
        put(&mut bytes, next + 8, &[path, target, lun, 0]);
        next += 16;
    }
    for (i, block) in blocks.iter().enumerate() {
        let table = 0x78 + 4 * i;
        let at = next;
        let size = match block {
            Block::Cdb {
                long,
                cdb_len,
                cdb,
                sense_len,
                sense,
            } => {
                let (kind, size, cdb_bytes) = if *long {
                    (0x41u32, 56, &cdb[..])
                } else {
                    (0x40u32, 40, &cdb[..16])
                };
                put(&mut bytes, at, &kind.to_le_bytes());
                put(&mut bytes, at + 4, &(size as u32 - 8).to_le_bytes());
                put(&mut bytes, at + 8, &[0, *sense_len, *cdb_len, 0]);
                put(&mut bytes, at + 16, &u64::from(*sense).to_le_bytes());
                put(&mut bytes, at + 24, cdb_bytes);
                size
            }
            Block::Pnp { action, flags } => {
                put(&mut bytes, at, &0x62u32.to_le_bytes());
                put(&mut bytes, at + 4, &16u32.to_le_bytes());
                put(&mut bytes, at + 12, &action.to_le_bytes());
                put(&mut bytes, at + 16, &flags.to_le_bytes());
                24
            }
            Block::Power { state, action } => {
                put(&mut bytes, at, &0x61u32.to_le_bytes());
                put(&mut bytes, at + 4, &16u32.to_le_bytes());
                put(&mut bytes, at + 12, &state.to_le_bytes());
                put(&mut bytes, at + 16, &action.to_le_bytes());
                24
            }
            Block::Other { kind, bytes: rest } => {
                put(&mut bytes, at, &kind.to_le_bytes());
                put(&mut bytes, at + 4, &(rest.len() as u32).to_le_bytes());
                put(&mut bytes, at + 8, rest);
                8 + rest.len()
            }
            Block::Offset(offset) => {
                put(&mut bytes, table, &offset.to_le_bytes());
                continue;
            }
        };
        put(&mut bytes, table, &(at as u32).to_le_bytes());
        next = (at + size).next_multiple_of(8);
        if next > storport::fuzzing::MAX_SRB {
            break;
        }
    }
    bytes.resize(next.max(bytes.len()), 0);
    bytes.truncate(storport::fuzzing::MAX_SRB);
    let srb_length = length.map_or(bytes.len() as u32, u32::from);
    put(&mut bytes, 16, &srb_length.to_le_bytes());
    bytes
}

/// Runs one input; panics naming the broken invariant.
pub fn run(input: &Input) {
    let _ = parse_srb(input);
    build_from_sg(input);
}

/// Parses the input's SRB and checks what came out; what [`storport::Srb`] saw.
pub fn parse_srb(input: &Input) -> storport::fuzzing::Parsed {
    let mut bytes = lay_out(&input.srb, input.data_len);
    bytes.resize(bytes.len().next_multiple_of(8), 0);
    let len = bytes.len();
    for &(offset, value) in &input.patches {
        bytes[usize::from(offset) % len] = value;
    }
    if input.well_formed_header {
        bytes[2] = 0x28; // Function = SRB_FUNCTION_STORAGE_REQUEST_BLOCK
        bytes[8..12].copy_from_slice(&0x5352_4258u32.to_le_bytes()); // "SRBX"
        let claimed = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        if !(128..=len as u32).contains(&claimed) {
            let length = 128 + claimed % (len as u32 - 127);
            bytes[16..20].copy_from_slice(&length.to_le_bytes());
        }
    }
    let mut words: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let mut data = vec![0u8; usize::from(input.data_len)];
    let mut sense = [0u8; 255];
    let parsed = storport::fuzzing::parse(&mut words, &mut data, &mut sense, &input.sense);
    if !parsed.accepted {
        return parsed;
    }
    assert!(parsed.cdb_inside, "the CDB slice lies outside the SRB");
    assert!(parsed.cdb_head_agrees, "cdb_head disagrees with cdb");
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
    parsed
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
