//! [`RamScsiTarget`]: an in-memory SCSI disk, the test double and the `ram` target.
//!
//! Written here from SPC-4 and SBC-3 and independent of the driver's own SCSI translation, so
//! the workload, the class model and the command line can be tested without the driver, and so
//! `vioblk-sim --target ram` shows what the numbers look like with no driver at all. It keeps
//! the disk in a `Vec`, answers on one worker thread per queue, and has test hooks to corrupt
//! blocks, lose writes and raise a unit attention.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;

use storport::ffi::{
    SCSISTAT_CHECK_CONDITION, SRB_FLAGS_DATA_IN, SRB_FLAGS_DATA_OUT, SRB_FUNCTION_EXECUTE_SCSI,
    SRB_FUNCTION_FLUSH, SRB_FUNCTION_RESET_BUS, SRB_FUNCTION_RESET_DEVICE,
    SRB_FUNCTION_RESET_LOGICAL_UNIT, SRB_FUNCTION_SHUTDOWN, SRB_STATUS_AUTOSENSE_VALID,
    SRB_STATUS_ERROR, SRB_STATUS_INVALID_LUN, SRB_STATUS_INVALID_REQUEST, SRB_STATUS_NO_DEVICE,
    SRB_STATUS_SUCCESS,
};

use crate::scsi::{opcode, sense_key};
use crate::stats::QueueStats;
use crate::target::{Done, ScsiCompletion, ScsiRequest, ScsiTarget};

/// What the RAM disk looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamConfig {
    /// Capacity in bytes (rounded down to whole logical blocks).
    pub capacity_bytes: u64,
    /// Logical block size: 512 or 4096.
    pub logical_block_size: u32,
    /// Worker threads, one per simulated queue (at least 1).
    pub queues: u16,
    /// Whether the write cache is enabled (the caching mode page's WCE).
    pub write_cache: bool,
    /// The unit serial number (VPD page 80h).
    pub serial: String,
    /// MAXIMUM TRANSFER LENGTH in logical blocks (0: no limit).
    pub max_transfer_blocks: u32,
    /// MAXIMUM UNMAP LBA COUNT (0: UNMAP not supported).
    pub max_unmap_lba_count: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u32,
}

impl Default for RamConfig {
    fn default() -> Self {
        Self {
            capacity_bytes: 64 << 20,
            logical_block_size: 512,
            queues: 1,
            write_cache: true,
            serial: "RAM0001".to_owned(),
            max_transfer_blocks: 0,
            max_unmap_lba_count: 0x0040_0000,
            max_unmap_descriptors: 256,
        }
    }
}

/// Per-queue counters of the RAM disk.
#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    flushes: AtomicU64,
    unmaps: AtomicU64,
    other: AtomicU64,
    errors: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

struct RamShared {
    config: RamConfig,
    blocks: u64,
    data: RwLock<Vec<u8>>,
    unit_attention: AtomicBool,
    drop_writes: AtomicBool,
    counters: Vec<Counters>,
}

type Job = (ScsiRequest, Done);

/// An in-memory SCSI disk answering on worker threads: the test double and the `ram` target.
///
/// Requests from one submitting thread always go to the same queue (as Storport maps a CPU to a
/// queue); each queue has one worker thread that completes its requests in order.
pub struct RamScsiTarget {
    shared: Arc<RamShared>,
    queues: Vec<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

thread_local! {
    /// The queue this submitting thread was given, like a CPU's queue under Storport.
    static QUEUE_HINT: Cell<Option<usize>> = const { Cell::new(None) };
}

static NEXT_HINT: AtomicUsize = AtomicUsize::new(0);

fn queue_hint() -> usize {
    QUEUE_HINT.with(|hint| {
        hint.get().unwrap_or_else(|| {
            let h = NEXT_HINT.fetch_add(1, Ordering::Relaxed);
            hint.set(Some(h));
            h
        })
    })
}

impl RamScsiTarget {
    /// A zero-filled disk described by `config`.
    ///
    /// # Errors
    /// A block size other than 512 or 4096, or a capacity below one block.
    pub fn new(config: RamConfig) -> Result<Self, String> {
        if !matches!(config.logical_block_size, 512 | 4096) {
            return Err(format!(
                "logical block size must be 512 or 4096, got {}",
                config.logical_block_size
            ));
        }
        let blocks = config.capacity_bytes / u64::from(config.logical_block_size);
        if blocks == 0 {
            return Err("the disk must hold at least one block".to_owned());
        }
        let len = usize::try_from(blocks * u64::from(config.logical_block_size))
            .map_err(|_| "the disk does not fit in this process's memory".to_owned())?;
        // `vec!` aborts the process when the memory is not there; ask first, so that a -c too
        // large is a sentence. (The probe is dropped untouched: it costs no page.)
        let mut probe: Vec<u8> = Vec::new();
        if probe.try_reserve_exact(len).is_err() {
            return Err(format!(
                "the ram target keeps the disk in memory, and -c {} is more than this process \
                 can allocate: give a smaller -c, or use the driver target",
                crate::report::size(len as u64)
            ));
        }
        drop(probe);
        let queues = usize::from(config.queues.max(1));
        let shared = Arc::new(RamShared {
            // vec! of zeroes comes from calloc: pages are only touched when written.
            data: RwLock::new(vec![0u8; len]),
            blocks,
            unit_attention: AtomicBool::new(false),
            drop_writes: AtomicBool::new(false),
            counters: (0..queues).map(|_| Counters::default()).collect(),
            config,
        });
        let mut senders = Vec::with_capacity(queues);
        let mut workers = Vec::with_capacity(queues);
        for index in 0..queues {
            let (tx, rx): (Sender<Job>, Receiver<Job>) = mpsc::channel();
            let shared = Arc::clone(&shared);
            let worker = std::thread::Builder::new()
                .name(format!("ram-queue-{index}"))
                .spawn(move || {
                    for (request, done) in rx {
                        done(shared.handle(&request, index));
                    }
                })
                .map_err(|e| format!("cannot start a RAM disk worker: {e}"))?;
            senders.push(tx);
            workers.push(worker);
        }
        Ok(Self {
            shared,
            queues: senders,
            workers,
        })
    }

    /// The number of logical blocks.
    pub fn blocks(&self) -> u64 {
        self.shared.blocks
    }

    /// Per-queue request counts.
    pub fn queue_stats(&self) -> Vec<QueueStats> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (0u16..)
            .zip(&self.shared.counters)
            .map(|(queue, c)| QueueStats {
                queue,
                reads: g(&c.reads),
                writes: g(&c.writes),
                flushes: g(&c.flushes),
                discards: g(&c.unmaps),
                other: g(&c.other),
                errors: g(&c.errors),
                bytes_read: g(&c.bytes_read),
                bytes_written: g(&c.bytes_written),
                notifications: None,
                interrupts: None,
            })
            .collect()
    }

    /// Reads raw disk bytes (test hook; out-of-range bytes are not returned).
    pub fn peek(&self, offset: u64, len: usize) -> Vec<u8> {
        let data = self
            .shared
            .data
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = start.saturating_add(len).min(data.len());
        data[start..end].to_vec()
    }

    /// Overwrites raw disk bytes behind the initiator's back (test hook; clipped to the disk).
    pub fn poke(&self, offset: u64, bytes: &[u8]) {
        let mut data = self
            .shared
            .data
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = start.saturating_add(bytes.len()).min(data.len());
        data[start..end].copy_from_slice(&bytes[..end - start]);
    }

    /// Makes WRITEs complete with GOOD status without storing anything (test hook: lost writes).
    pub fn set_drop_writes(&self, drop: bool) {
        self.shared.drop_writes.store(drop, Ordering::Relaxed);
    }

    /// Reports POWER ON OR RESET OCCURRED (29h/00h) to the next command that reports unit
    /// attentions (test hook).
    pub fn raise_unit_attention(&self) {
        self.shared.unit_attention.store(true, Ordering::Relaxed);
    }
}

impl ScsiTarget for RamScsiTarget {
    fn execute(&self, request: ScsiRequest) -> ScsiCompletion {
        let queue = queue_hint() % self.queues.len();
        self.shared.handle(&request, queue)
    }

    fn submit(&self, request: ScsiRequest, done: Done) {
        let queue = queue_hint() % self.queues.len();
        if let Err(mpsc::SendError((request, done))) = self.queues[queue].send((request, done)) {
            // The worker is gone (it panicked): complete here rather than lose the request.
            drop(request);
            done(ScsiCompletion::port_error(SRB_STATUS_NO_DEVICE));
        }
    }
}

impl Drop for RamScsiTarget {
    fn drop(&mut self) {
        // Closing the channels ends the workers once they have drained their queues.
        self.queues.clear();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// A CHECK CONDITION completion with fixed-format sense data (SPC-4 4.5.3).
fn check_condition(key: u8, asc: u8, ascq: u8) -> ScsiCompletion {
    let mut sense = vec![0u8; 18];
    sense[0] = 0x70; // Current error, fixed format.
    sense[2] = key;
    sense[7] = 10; // ADDITIONAL SENSE LENGTH.
    sense[12] = asc;
    sense[13] = ascq;
    ScsiCompletion {
        srb_status: SRB_STATUS_ERROR | SRB_STATUS_AUTOSENSE_VALID,
        scsi_status: SCSISTAT_CHECK_CONDITION,
        sense,
        ..ScsiCompletion::default()
    }
}

fn good() -> ScsiCompletion {
    ScsiCompletion {
        srb_status: SRB_STATUS_SUCCESS,
        ..ScsiCompletion::default()
    }
}

/// A GOOD completion returning `bytes`, cut to the allocation length and the buffer.
fn good_data(mut bytes: Vec<u8>, allocation: usize, request: &ScsiRequest) -> ScsiCompletion {
    let buffer = usize::try_from(request.data_in_len).unwrap_or(usize::MAX);
    bytes.truncate(allocation.min(buffer));
    let data_transfer_length = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    ScsiCompletion {
        data_in: bytes,
        data_transfer_length,
        ..good()
    }
}

fn invalid_opcode() -> ScsiCompletion {
    check_condition(sense_key::ILLEGAL_REQUEST, 0x20, 0x00)
}

fn invalid_field_in_cdb() -> ScsiCompletion {
    check_condition(sense_key::ILLEGAL_REQUEST, 0x24, 0x00)
}

fn lba_out_of_range() -> ScsiCompletion {
    check_condition(sense_key::ILLEGAL_REQUEST, 0x21, 0x00)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Pads or cuts `s` to `n` bytes of ASCII (SPC-4 4.3.1: left-aligned, space-filled).
fn ascii(s: &str, n: usize) -> Vec<u8> {
    let mut v: Vec<u8> = s
        .bytes()
        .filter(|b| b.is_ascii_graphic() || *b == b' ')
        .take(n)
        .collect();
    v.resize(n, b' ');
    v
}

impl RamShared {
    fn block_size(&self) -> u64 {
        u64::from(self.config.logical_block_size)
    }

    fn unmap_supported(&self) -> bool {
        self.config.max_unmap_lba_count != 0
    }

    /// Runs one SRB on queue `queue` (the worker's index, for the counters).
    fn handle(&self, request: &ScsiRequest, queue: usize) -> ScsiCompletion {
        let counters = &self.counters[queue];
        let completion = self.dispatch(request, counters);
        if !completion.is_success() {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        completion
    }

    fn dispatch(&self, request: &ScsiRequest, counters: &Counters) -> ScsiCompletion {
        let function = u8::try_from(request.function).unwrap_or(u8::MAX);
        match function {
            SRB_FUNCTION_EXECUTE_SCSI => {}
            SRB_FUNCTION_FLUSH | SRB_FUNCTION_SHUTDOWN => {
                counters.flushes.fetch_add(1, Ordering::Relaxed);
                return good();
            }
            SRB_FUNCTION_RESET_BUS
            | SRB_FUNCTION_RESET_DEVICE
            | SRB_FUNCTION_RESET_LOGICAL_UNIT => {
                counters.other.fetch_add(1, Ordering::Relaxed);
                return good();
            }
            _ => {
                counters.other.fetch_add(1, Ordering::Relaxed);
                return ScsiCompletion::port_error(SRB_STATUS_INVALID_REQUEST);
            }
        }
        if request.target != 0 {
            return ScsiCompletion::port_error(SRB_STATUS_NO_DEVICE);
        }
        if request.lun != 0 {
            return ScsiCompletion::port_error(SRB_STATUS_INVALID_LUN);
        }
        let cdb = request.cdb.as_slice();
        let Some(&op) = cdb.first() else {
            return ScsiCompletion::port_error(SRB_STATUS_INVALID_REQUEST);
        };
        // SPC-4 5.15 (and SAM-5 5.14): INQUIRY, REPORT LUNS and REQUEST SENSE neither report nor
        // clear a pending unit attention; any other command reports it once.
        if !matches!(
            op,
            opcode::INQUIRY | opcode::REPORT_LUNS | opcode::REQUEST_SENSE
        ) && self.unit_attention.swap(false, Ordering::Relaxed)
        {
            return check_condition(sense_key::UNIT_ATTENTION, 0x29, 0x00);
        }
        match op {
            opcode::READ_10 | opcode::READ_16 | opcode::WRITE_10 | opcode::WRITE_16 => {
                self.read_write(request, counters)
            }
            opcode::TEST_UNIT_READY => good(),
            opcode::REQUEST_SENSE => {
                let mut sense = vec![0u8; 18];
                sense[0] = 0x70;
                sense[7] = 10;
                good_data(
                    sense,
                    usize::from(cdb.get(4).copied().unwrap_or(0)),
                    request,
                )
            }
            opcode::INQUIRY => self.inquiry(request),
            opcode::READ_CAPACITY_10 => {
                let last = (self.blocks - 1).min(u64::from(u32::MAX));
                let mut d = Vec::with_capacity(8);
                d.extend_from_slice(&u32::try_from(last).unwrap_or(u32::MAX).to_be_bytes());
                d.extend_from_slice(&self.config.logical_block_size.to_be_bytes());
                good_data(d, 8, request)
            }
            opcode::SERVICE_ACTION_IN_16 => {
                if cdb.get(1).map(|b| b & 0x1F) != Some(0x10) || cdb.len() < 16 {
                    return invalid_field_in_cdb();
                }
                let allocation = be32(cdb, 10).unwrap_or(0);
                let mut d = vec![0u8; 32];
                d[0..8].copy_from_slice(&(self.blocks - 1).to_be_bytes());
                d[8..12].copy_from_slice(&self.config.logical_block_size.to_be_bytes());
                if self.unmap_supported() {
                    d[14] = 0x80 | 0x40; // LBPME, LBPRZ: unmapped blocks read as zeroes.
                }
                good_data(
                    d,
                    usize::try_from(allocation).unwrap_or(usize::MAX),
                    request,
                )
            }
            opcode::MODE_SENSE_6 | opcode::MODE_SENSE_10 => self.mode_sense(request),
            opcode::SYNCHRONIZE_CACHE_10 | opcode::SYNCHRONIZE_CACHE_16 => {
                counters.flushes.fetch_add(1, Ordering::Relaxed);
                good()
            }
            opcode::UNMAP if self.unmap_supported() => {
                counters.unmaps.fetch_add(1, Ordering::Relaxed);
                self.unmap(request)
            }
            opcode::REPORT_LUNS => {
                let allocation = be32(cdb, 6).unwrap_or(0);
                let mut d = vec![0u8; 16];
                d[3] = 8; // LUN LIST LENGTH: one LUN, LUN 0.
                good_data(
                    d,
                    usize::try_from(allocation).unwrap_or(usize::MAX),
                    request,
                )
            }
            _ => {
                counters.other.fetch_add(1, Ordering::Relaxed);
                invalid_opcode()
            }
        }
    }

    fn read_write(&self, request: &ScsiRequest, counters: &Counters) -> ScsiCompletion {
        let cdb = request.cdb.as_slice();
        let op = cdb[0];
        let (lba, count) = match op {
            opcode::READ_10 | opcode::WRITE_10 => {
                (be32(cdb, 2).map(u64::from), be16(cdb, 7).map(u32::from))
            }
            _ => (be64(cdb, 2), be32(cdb, 10)),
        };
        let (Some(lba), Some(count)) = (lba, count) else {
            return invalid_field_in_cdb();
        };
        let write = matches!(op, opcode::WRITE_10 | opcode::WRITE_16);
        if write {
            counters.writes.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.reads.fetch_add(1, Ordering::Relaxed);
        }
        // SBC-3 5.11: LBA + count beyond the capacity is LBA OUT OF RANGE.
        match lba.checked_add(u64::from(count)) {
            Some(end) if end <= self.blocks => {}
            _ => return lba_out_of_range(),
        }
        if count == 0 {
            return good();
        }
        if self.config.max_transfer_blocks != 0 && count > self.config.max_transfer_blocks {
            return invalid_field_in_cdb();
        }
        let bytes = u64::from(count) * self.block_size();
        let Ok(len) = usize::try_from(bytes) else {
            return invalid_field_in_cdb();
        };
        // The disk fits in memory, so its offsets fit in usize.
        let start = usize::try_from(lba * self.block_size()).unwrap_or(usize::MAX);
        if write {
            if request.data_out.len() != len || request.flags & SRB_FLAGS_DATA_OUT == 0 {
                return ScsiCompletion::port_error(SRB_STATUS_INVALID_REQUEST);
            }
            if !self.drop_writes.load(Ordering::Relaxed) {
                let mut data = self.data.write().unwrap_or_else(PoisonError::into_inner);
                data[start..start + len].copy_from_slice(&request.data_out);
            }
            counters.bytes_written.fetch_add(bytes, Ordering::Relaxed);
            ScsiCompletion {
                data_transfer_length: u32::try_from(len).unwrap_or(0),
                ..good()
            }
        } else {
            if usize::try_from(request.data_in_len).ok() != Some(len)
                || request.flags & SRB_FLAGS_DATA_IN == 0
            {
                return ScsiCompletion::port_error(SRB_STATUS_INVALID_REQUEST);
            }
            let data = self.data.read().unwrap_or_else(PoisonError::into_inner);
            let out = data[start..start + len].to_vec();
            drop(data);
            counters.bytes_read.fetch_add(bytes, Ordering::Relaxed);
            ScsiCompletion {
                data_in: out,
                data_transfer_length: u32::try_from(len).unwrap_or(0),
                ..good()
            }
        }
    }

    fn inquiry(&self, request: &ScsiRequest) -> ScsiCompletion {
        let cdb = request.cdb.as_slice();
        let evpd = cdb.get(1).is_some_and(|b| b & 1 != 0);
        let page = cdb.get(2).copied().unwrap_or(0);
        let allocation = usize::from(be16(cdb, 3).unwrap_or(0));
        if !evpd {
            if page != 0 {
                return invalid_field_in_cdb();
            }
            // Standard INQUIRY data (SPC-4 6.4.2), 36 bytes.
            let mut d = vec![0x00, 0x00, 0x06, 0x02, 31, 0x00, 0x00, 0x02];
            d.extend(ascii("VIOBLK", 8));
            d.extend(ascii("RAM disk", 16));
            d.extend(ascii("0001", 4));
            return good_data(d, allocation, request);
        }
        let body: Vec<u8> = match page {
            0x00 => {
                let mut pages = vec![0x00, 0x80, 0x83, 0xB0, 0xB1];
                if self.unmap_supported() {
                    pages.push(0xB2);
                }
                pages
            }
            0x80 => self.config.serial.bytes().collect(),
            0x83 => {
                // One T10 vendor ID designator (SPC-4 7.8.6.4): ASCII, LU association.
                let mut id = ascii("VIOBLK", 8);
                id.extend(self.config.serial.bytes());
                let mut d = vec![0x02, 0x01, 0x00, u8::try_from(id.len()).unwrap_or(u8::MAX)];
                id.truncate(usize::from(d[3]));
                d.extend(id);
                d
            }
            0xB0 => {
                // Block Limits (SBC-3 6.5.3), page length 3Ch.
                let mut d = vec![0u8; 0x3C];
                d[4..8].copy_from_slice(&self.config.max_transfer_blocks.to_be_bytes());
                if self.unmap_supported() {
                    d[16..20].copy_from_slice(&self.config.max_unmap_lba_count.to_be_bytes());
                    d[20..24].copy_from_slice(&self.config.max_unmap_descriptors.to_be_bytes());
                    d[24..28].copy_from_slice(&1u32.to_be_bytes());
                }
                d
            }
            0xB1 => {
                // Block Device Characteristics (SBC-3 6.5.2): non-rotating medium.
                let mut d = vec![0u8; 0x3C];
                d[1] = 0x01;
                d
            }
            0xB2 if self.unmap_supported() => {
                // Logical Block Provisioning (SBC-3 6.5.4): LBPU, LBPRZ, thin provisioned.
                vec![0x00, 0x80 | 0x04, 0x02, 0x00]
            }
            _ => return invalid_field_in_cdb(),
        };
        let mut d = vec![0x00, page];
        d.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_be_bytes());
        d.extend(body);
        good_data(d, allocation, request)
    }

    fn mode_sense(&self, request: &ScsiRequest) -> ScsiCompletion {
        let cdb = request.cdb.as_slice();
        let ten = cdb[0] == opcode::MODE_SENSE_10;
        let dbd = cdb.get(1).is_some_and(|b| b & 0x08 != 0);
        let page_byte = cdb.get(2).copied().unwrap_or(0);
        let (control, page) = (page_byte >> 6, page_byte & 0x3F);
        let allocation = if ten {
            usize::from(be16(cdb, 7).unwrap_or(0))
        } else {
            usize::from(cdb.get(4).copied().unwrap_or(0))
        };
        if control == 3 {
            // SAVING PARAMETERS NOT SUPPORTED.
            return check_condition(sense_key::ILLEGAL_REQUEST, 0x39, 0x00);
        }
        let wce = match control {
            0 => self.config.write_cache,
            1 => false, // Changeable values: nothing can be changed here.
            _ => true,  // Default values.
        };
        let caching = {
            let mut p = vec![0u8; 20];
            p[0] = 0x08;
            p[1] = 0x12;
            if wce {
                p[2] = 0x04;
            }
            p
        };
        let control_page = {
            let mut p = vec![0u8; 12];
            p[0] = 0x0A;
            p[1] = 0x0A;
            p
        };
        let pages = match page {
            0x08 => caching,
            0x0A => control_page,
            0x3F => [caching, control_page].concat(),
            _ => return invalid_field_in_cdb(),
        };
        let descriptor = if dbd {
            Vec::new()
        } else {
            let mut b = vec![0u8; 8];
            let count = u32::try_from(self.blocks).unwrap_or(u32::MAX);
            b[0..4].copy_from_slice(&count.to_be_bytes());
            b[5..8].copy_from_slice(&self.config.logical_block_size.to_be_bytes()[1..4]);
            b
        };
        // DEVICE-SPECIFIC PARAMETER: DPOFUA (SBC-3 6.4.1).
        let device_specific = 0x10;
        let mut d = if ten {
            let mut h = vec![0u8; 8];
            h[3] = device_specific;
            h[7] = u8::try_from(descriptor.len()).unwrap_or(0);
            h
        } else {
            vec![
                0,
                0,
                device_specific,
                u8::try_from(descriptor.len()).unwrap_or(0),
            ]
        };
        d.extend(descriptor);
        d.extend(pages);
        // MODE DATA LENGTH excludes itself.
        if ten {
            let n = u16::try_from(d.len() - 2).unwrap_or(u16::MAX);
            d[0..2].copy_from_slice(&n.to_be_bytes());
        } else {
            d[0] = u8::try_from(d.len() - 1).unwrap_or(u8::MAX);
        }
        good_data(d, allocation, request)
    }

    fn unmap(&self, request: &ScsiRequest) -> ScsiCompletion {
        let params = request.data_out.as_slice();
        let list_len = usize::from(be16(&request.cdb, 7).unwrap_or(0));
        if list_len == 0 {
            return good();
        }
        if params.len() < list_len || list_len < 8 {
            return check_condition(sense_key::ILLEGAL_REQUEST, 0x26, 0x00);
        }
        // SBC-3 5.28.2: an 8-byte header, then 16-byte block descriptors.
        let descriptors_len = usize::from(be16(params, 2).unwrap_or(0));
        let descriptors = &params[8..(8 + descriptors_len).min(list_len)];
        if descriptors.len() / 16 > usize::try_from(self.config.max_unmap_descriptors).unwrap_or(0)
        {
            return check_condition(sense_key::ILLEGAL_REQUEST, 0x26, 0x00);
        }
        let mut ranges = Vec::new();
        for d in descriptors.chunks_exact(16) {
            let (Some(lba), Some(count)) = (be64(d, 0), be32(d, 8)) else {
                return check_condition(sense_key::ILLEGAL_REQUEST, 0x26, 0x00);
            };
            if count > self.config.max_unmap_lba_count {
                return check_condition(sense_key::ILLEGAL_REQUEST, 0x26, 0x00);
            }
            match lba.checked_add(u64::from(count)) {
                Some(end) if end <= self.blocks => ranges.push((lba, u64::from(count))),
                _ => return lba_out_of_range(),
            }
        }
        let bs = self.block_size();
        let mut data = self.data.write().unwrap_or_else(PoisonError::into_inner);
        for (lba, count) in ranges {
            // In range, so these fit in usize (the disk is in memory).
            let start = usize::try_from(lba * bs).unwrap_or(0);
            let len = usize::try_from(count * bs).unwrap_or(0);
            data[start..start + len].fill(0);
        }
        good()
    }
}
