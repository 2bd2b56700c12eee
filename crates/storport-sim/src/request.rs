//! Requests as disk.sys sends them: the port builds an SRB_EX (with its STOR_ADDR_BTL8 and
//! SRBEX_DATA_SCSI_CDB16/32 blocks), a data buffer and a fresh SRB extension in guest memory and a
//! scatter-gather list, calls HwStorBuildIo and HwStorStartIo with Storport's locks, and turns
//! StorPortNotification(RequestComplete) into a [`Completion`].

use std::collections::{HashMap, VecDeque};
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::abi::{self, cdb_off, irql};
use crate::adapter::{Adapter, AdapterInner};
use crate::cpu::{self, Callback, LockRef};
use crate::memory::Block;
use crate::port::SgMode;
use crate::rules::Rule;

/// SRB_FUNCTION_* values (SrbFunction of an SRB_EX).
pub mod function {
    /// SRB_FUNCTION_EXECUTE_SCSI.
    pub const EXECUTE_SCSI: u32 = 0;
    /// SRB_FUNCTION_IO_CONTROL.
    pub const IO_CONTROL: u32 = 2;
    /// SRB_FUNCTION_SHUTDOWN.
    pub const SHUTDOWN: u32 = 7;
    /// SRB_FUNCTION_FLUSH.
    pub const FLUSH: u32 = 8;
    /// SRB_FUNCTION_ABORT_COMMAND.
    pub const ABORT_COMMAND: u32 = 0x10;
    /// SRB_FUNCTION_RESET_BUS.
    pub const RESET_BUS: u32 = 0x12;
    /// SRB_FUNCTION_RESET_DEVICE.
    pub const RESET_DEVICE: u32 = 0x13;
    /// SRB_FUNCTION_RESET_LOGICAL_UNIT.
    pub const RESET_LOGICAL_UNIT: u32 = 0x20;
    /// SRB_FUNCTION_POWER.
    pub const POWER: u32 = 0x24;
    /// SRB_FUNCTION_PNP.
    pub const PNP: u32 = 0x25;
}

/// SRB_FLAGS_* values.
pub mod flags {
    /// SRB_FLAGS_DISABLE_AUTOSENSE.
    pub const DISABLE_AUTOSENSE: u32 = 0x20;
    /// SRB_FLAGS_DATA_IN.
    pub const DATA_IN: u32 = 0x40;
    /// SRB_FLAGS_DATA_OUT.
    pub const DATA_OUT: u32 = 0x80;
}

/// One request as the class driver would build it.
#[derive(Clone, Debug)]
pub struct Request {
    /// SRB_FUNCTION_* ([`function`]).
    pub function: u32,
    /// CDB bytes (EXECUTE_SCSI): up to 16 go in SRBEX_DATA_SCSI_CDB16, up to 32 in CDB32.
    pub cdb: Vec<u8>,
    /// STOR_ADDR_BTL8 Path.
    pub path: u8,
    /// STOR_ADDR_BTL8 Target.
    pub target: u8,
    /// STOR_ADDR_BTL8 Lun.
    pub lun: u8,
    /// SRB_FLAGS_* ([`flags`]); DATA_IN/DATA_OUT decide the transfer direction.
    pub flags: u32,
    /// DataTransferLength.
    pub transfer_length: u32,
    /// Bytes written to the data buffer before the request is sent (DATA_OUT).
    pub data_out: Vec<u8>,
    /// TimeOutValue in seconds (scaled by `PortOptions::timeout_scale`).
    pub timeout_secs: u32,
    /// SenseInfoBufferLength (0: no sense buffer).
    pub sense_len: u8,
    /// Offset of the data buffer in its first page (0: page aligned).
    pub buffer_offset: u32,
    /// Extra SRBEX_DATA blocks (raw bytes, each starting with Type and Length), e.g. PnP/power.
    pub ex_data: Vec<Vec<u8>>,
}

impl Request {
    /// An EXECUTE_SCSI request without data.
    pub fn scsi(cdb: &[u8]) -> Self {
        Request {
            function: function::EXECUTE_SCSI,
            cdb: cdb.to_vec(),
            path: 0,
            target: 0,
            lun: 0,
            flags: 0,
            transfer_length: 0,
            data_out: Vec::new(),
            timeout_secs: 10,
            sense_len: 32,
            buffer_offset: 0,
            ex_data: Vec::new(),
        }
    }

    /// An EXECUTE_SCSI request reading `len` bytes.
    pub fn data_in(cdb: &[u8], len: u32) -> Self {
        Request {
            flags: flags::DATA_IN,
            transfer_length: len,
            ..Self::scsi(cdb)
        }
    }

    /// An EXECUTE_SCSI request writing `data`.
    pub fn data_out(cdb: &[u8], data: Vec<u8>) -> Self {
        Request {
            flags: flags::DATA_OUT,
            transfer_length: data.len() as u32,
            data_out: data,
            ..Self::scsi(cdb)
        }
    }

    /// A request of another SRB function (FLUSH, SHUTDOWN, RESET_*, PNP, POWER...), no CDB.
    pub fn function(f: u32) -> Self {
        Request {
            function: f,
            cdb: Vec::new(),
            sense_len: 0,
            ..Self::scsi(&[])
        }
    }

    /// Sets the address.
    pub fn at(mut self, path: u8, target: u8, lun: u8) -> Self {
        (self.path, self.target, self.lun) = (path, target, lun);
        self
    }

    /// Sets TimeOutValue.
    pub fn timeout(mut self, secs: u32) -> Self {
        self.timeout_secs = secs;
        self
    }
}

/// How a request ended.
#[derive(Debug, Default)]
pub struct Completion {
    /// SrbStatus as completed (with the AUTOSENSE_VALID / QUEUE_FROZEN bits).
    pub srb_status: u8,
    /// ScsiStatus from the CDB block.
    pub scsi_status: u8,
    /// Sense bytes (when SRB_STATUS_AUTOSENSE_VALID), SenseInfoBufferLength of them.
    pub sense: Vec<u8>,
    /// Data-in bytes (DataTransferLength of them), copied out of the guest buffer; empty when
    /// the buffer itself is lent ([`Completion::lent`]).
    pub data: Vec<u8>,
    /// The data-in bytes in the guest buffer the device wrote, lent instead of copied, for a
    /// [`CompletionQueue::lending`] queue ([`Completion::data_bytes`] reads either).
    pub lent: Option<GuestData>,
    /// DataTransferLength as completed.
    pub data_transfer_length: u32,
    /// How many times the miniport answered SRB_STATUS_BUSY first.
    pub busy_retries: u32,
    /// The port refused the request without sending it (too long, too fragmented, no memory,
    /// or timed out in dump mode).
    pub port_rejected: bool,
    /// Time from submit to completion.
    pub latency: Duration,
}

impl Clone for Completion {
    /// A copy; lent data is copied into [`Completion::data`] (a guest buffer has one owner).
    fn clone(&self) -> Self {
        Completion {
            srb_status: self.srb_status,
            scsi_status: self.scsi_status,
            sense: self.sense.clone(),
            data: self.data_bytes().to_vec(),
            lent: None,
            data_transfer_length: self.data_transfer_length,
            busy_retries: self.busy_retries,
            port_rejected: self.port_rejected,
            latency: self.latency,
        }
    }
}

impl Completion {
    /// The data-in bytes, lent or copied.
    pub fn data_bytes(&self) -> &[u8] {
        match &self.lent {
            Some(lent) => lent.as_slice(),
            None => &self.data,
        }
    }

    /// SrbStatus without the modifier bits (`SRB_STATUS(s)`).
    pub fn status(&self) -> u8 {
        self.srb_status & !(abi::SRB_STATUS_AUTOSENSE_VALID | abi::SRB_STATUS_QUEUE_FROZEN)
    }

    /// SRB_STATUS_SUCCESS.
    pub fn is_success(&self) -> bool {
        self.status() == abi::SRB_STATUS_SUCCESS
    }
}

/// A completed read's data in the guest buffer the device wrote it to, lent to the submitter
/// instead of copied (Windows has no such copy either: the class driver's buffer is the one the
/// device writes). The port gives the buffer back to its allocator when this is dropped.
///
/// The request is complete, so neither the miniport nor the device may write the buffer any
/// more: the port marks it freed for the device model's DMA watch at completion, as it does a
/// buffer it takes back, and a device writing it now is reported as
/// [`crate::Rule::WriteAfterCompletion`] rather than changing bytes under the reader.
pub struct GuestData {
    adapter: Arc<AdapterInner>,
    block: Block,
    host: usize,
    len: usize,
}

impl GuestData {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `host .. host + len` lies inside `block` (checked when it was lent), which
        // nothing else owns until this is dropped; `adapter` keeps the guest region mapped.
        unsafe { std::slice::from_raw_parts(self.host as *const u8, self.len) }
    }
}

impl std::ops::Deref for GuestData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for GuestData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestData").field("len", &self.len).finish()
    }
}

impl Drop for GuestData {
    fn drop(&mut self) {
        self.adapter.alloc.free(self.block);
    }
}

#[derive(Default)]
struct Slot {
    done: Mutex<Option<Completion>>,
    cv: Condvar,
    /// When Storport reported the request not completed after a bus reset (0xF0/1).
    reported_lost: Mutex<Option<Instant>>,
}

/// A submitted request.
pub struct RequestHandle {
    slot: Arc<Slot>,
    adapter: Option<Arc<AdapterInner>>,
    /// How long [`RequestHandle::wait`] waits before it calls the request lost.
    lost_after: Duration,
    /// How long it waits once Storport has reported the request lost (0xF0/1).
    margin: Duration,
}

/// How long a request may stay outstanding before [`RequestHandle::wait`] calls it lost: its
/// TimeOutValue (scaled), then the bus reset Storport starts and the grace it gives the
/// miniport, then `PortOptions::lost_request_margin` for a loaded machine.
fn lost_after(a: &AdapterInner, req: &Request) -> Duration {
    let timeout =
        Duration::from_secs_f64(req.timeout_secs.max(1) as f64 * a.port.options.timeout_scale);
    timeout + a.port.options.reset_grace + a.port.options.lost_request_margin
}

impl RequestHandle {
    /// Waits for the completion.
    ///
    /// # Panics
    ///
    /// When the request is not completed `PortOptions::lost_request_margin` after Storport
    /// reported it not completed after the bus reset its timeout caused (0xF0/1), or, without
    /// such a report, by its timeout, the reset grace and that margin: Storport has done all it does for a request, and on
    /// Windows this I/O would never end (the caller hangs, and a flush or shutdown behind it).
    /// The simulator reports that hang instead of hanging with it, so a test that waits on a
    /// lost request fails, naming it, rather than running until something kills it.
    pub fn wait(self) -> Completion {
        // Storport's report (0xF0/1, the reset's grace over) says the request is lost sooner
        // than the fixed bound: from then on it gets the margin alone.
        let start = crate::sched::now();
        loop {
            if let Some(c) = self.wait_timeout(Duration::from_millis(100)) {
                return c;
            }
            let now = crate::sched::now();
            let reported = *self
                .slot
                .reported_lost
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let given_up = match reported {
                Some(at) => now.saturating_duration_since(at) >= self.margin,
                None => now.saturating_duration_since(start) >= self.lost_after,
            };
            if given_up {
                panic!(
                    "storport-sim: a request is still outstanding {:?} after it was sent{}: the \
                     miniport lost it, and on Windows this I/O would hang",
                    now.saturating_duration_since(start),
                    if reported.is_some() {
                        " and after Storport reported it not completed after the bus reset"
                    } else {
                        " (its timeout, the reset grace and the lost-request margin)"
                    }
                );
            }
        }
    }

    /// Waits at most `d`.
    pub fn wait_timeout(&self, d: Duration) -> Option<Completion> {
        if let Some(a) = &self.adapter {
            // Dump mode: the waiting thread is the CPU that polls the ISR.
            let end = crate::sched::now() + d;
            loop {
                if let Some(c) = self.try_take() {
                    return Some(c);
                }
                if crate::sched::now() >= end {
                    return None;
                }
                poll_once(a);
                std::thread::sleep(Duration::from_micros(20));
            }
        }
        if crate::sched::active() {
            let end = crate::sched::now() + d;
            loop {
                if let Some(c) = self.try_take() {
                    return Some(c);
                }
                if crate::sched::now() >= end {
                    return None;
                }
                crate::sched::wait_on(Arc::as_ptr(&self.slot) as usize, Some(end));
            }
        }
        let g = self.slot.done.lock().unwrap_or_else(|e| e.into_inner());
        let (mut g, _) = self
            .slot
            .cv
            .wait_timeout_while(g, d, |c| c.is_none())
            .unwrap_or_else(|e| e.into_inner());
        g.take()
    }

    /// The completion, if it arrived.
    pub fn try_take(&self) -> Option<Completion> {
        self.slot
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

enum Waiter {
    Slot(Arc<Slot>),
    Callback(Box<dyn FnOnce(Completion) + Send>),
    Queue(Arc<CompletionQueue>, u64),
}

/// Where [`Adapter::submit_to`] delivers completions: a queue the submitter drains, handed
/// over once per DPC (or ISR) run rather than once per request, with data buffers the
/// submitter gives back ([`CompletionQueue::recycle`]). Nothing in it allocates once its
/// vectors have grown to the number of requests in flight.
#[derive(Default)]
pub struct CompletionQueue {
    ready: Mutex<Vec<(u64, Completion)>>,
    cv: Condvar,
    buffers: Mutex<Vec<Vec<u8>>>,
    lend: bool,
}

impl CompletionQueue {
    /// An empty queue.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// An empty queue whose completions lend the guest data buffer ([`Completion::lent`])
    /// instead of copying it into [`Completion::data`].
    pub fn lending() -> Arc<Self> {
        Arc::new(Self {
            lend: true,
            ..Self::default()
        })
    }

    /// Waits at most `d` for completions and swaps them into `out` (which should be empty:
    /// its capacity is reused for the next batch). Returns whether any arrived.
    pub fn wait_into(&self, out: &mut Vec<(u64, Completion)>, d: Duration) -> bool {
        let g = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        let (mut g, _) = self
            .cv
            .wait_timeout_while(g, d, |r| r.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *g, out);
        !out.is_empty()
    }

    /// Gives a completion's data buffer back for a later completion.
    pub fn recycle(&self, mut data: Vec<u8>) {
        if data.capacity() > 0 {
            data.clear();
            self.buffers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(data);
        }
    }

    /// A copy of `len` bytes at `host` in a recycled buffer (no zero-fill).
    fn copy_out(&self, alloc: &crate::memory::GuestAllocator, host: usize, len: usize) -> Vec<u8> {
        let mut v = self
            .buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        alloc.read_into(host, len, &mut v);
        v
    }
}

/// A completion waiting for its queue: the adapter (for its activity counter), the queue, the
/// tag and the completion.
type Queued = (Arc<AdapterInner>, Arc<CompletionQueue>, u64, Completion);

thread_local! {
    /// Completions for [`CompletionQueue`]s made in the callbacks running on this CPU, handed
    /// over when the outermost callback returns (`flush_queued`).
    static QUEUED: std::cell::RefCell<Vec<Queued>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Hands this CPU's queued completions to their queues: one lock and one wake-up per queue
/// per run of consecutive completions for it.
pub(crate) fn flush_queued() {
    QUEUED.with(|q| {
        let mut q = q.borrow_mut();
        let mut i = 0;
        while i < q.len() {
            let (adapter, queue) = (q[i].0.clone(), q[i].1.clone());
            let mut n = 0u64;
            {
                let mut ready = queue.ready.lock().unwrap_or_else(|e| e.into_inner());
                while i < q.len() && Arc::ptr_eq(&q[i].1, &queue) {
                    let c = std::mem::take(&mut q[i].3);
                    ready.push((q[i].2, c));
                    i += 1;
                    n += 1;
                }
            }
            queue.cv.notify_all();
            adapter
                .activity
                .completions
                .fetch_add(n.saturating_sub(1), Ordering::Relaxed);
            adapter.happened(&adapter.activity.completions);
        }
        q.clear();
    });
}

/// Size of a pooled SRB block (header, address, CDB block, a few extra blocks).
pub(crate) const SRB_BLOCK_BYTES: usize = 512;

/// The port's record of one request.
pub(crate) struct Record {
    pub id: u64,
    srb: *mut u64,
    srb_words: usize,
    ext: Option<Block>,
    sense_host: usize,
    data: Option<Block>,
    data_host: usize,
    data_len: u32,
    /// The STOR_SCATTER_GATHER_LIST (header and elements), kept with the pooled record.
    sg: Vec<u64>,
    sg_pages: bool,
    cdb_off: Option<usize>,
    sense_len: u8,
    data_in: bool,
    timeout: Duration,
    pub cpu: u32,
    deadline: Instant,
    reset_epoch: u64,
    reported: bool,
    timed_out: bool,
    busy_retries: u32,
    target: (u8, u8, u8),
    submitted: Instant,
    waiter: Option<Waiter>,
}

// SAFETY: the raw pointers are owned buffers of this record (SRB block, SG list) or guest
// addresses; the record moves between simulated CPUs as a request does.
unsafe impl Send for Record {}

impl Record {
    fn srb_addr(&self) -> usize {
        self.srb as usize
    }
}

/// # Safety
/// `base + off .. + size_of::<T>()` must be writable memory the caller owns or may write.
unsafe fn wr<T>(base: usize, off: usize, v: T) {
    // SAFETY: by this function's contract.
    unsafe { std::ptr::write_unaligned((base + off) as *mut T, v) }
}

/// # Safety
/// `base + off .. + size_of::<T>()` must be readable memory.
unsafe fn rd<T>(base: usize, off: usize) -> T {
    // SAFETY: by this function's contract.
    unsafe { std::ptr::read_unaligned((base + off) as *const T) }
}

fn alloc_words(words: usize) -> *mut u64 {
    Box::into_raw(vec![0u64; words].into_boxed_slice()).cast()
}

/// # Safety
/// `p` came from `alloc_words(words)` (or the SRB pool with that size) and is not used again.
unsafe fn free_words(p: *mut u64, words: usize) -> Box<[u64]> {
    // SAFETY: by this function's contract.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, words)) }
}

const SHARDS: usize = 64;

/// A hasher for SRB addresses: one multiplication (Fibonacci hashing), no SipHash. The keys
/// are addresses the port itself handed out, not input an attacker chooses.
#[derive(Default)]
struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, v: usize) {
        self.0 = (v as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<usize, Box<Record>, std::hash::BuildHasherDefault<AddrHasher>>,
    recent: VecDeque<usize>,
}

/// Outstanding requests by SRB address, sharded so completions on different CPUs rarely meet.
pub(crate) struct RequestTable {
    shards: Box<[Mutex<Shard>]>,
    count: AtomicUsize,
}

pub(crate) enum Missing {
    Recent,
    Unknown,
}

impl RequestTable {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            count: AtomicUsize::new(0),
        }
    }

    fn shard(&self, srb: usize) -> std::sync::MutexGuard<'_, Shard> {
        let i = ((srb as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn outstanding(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn insert(&self, r: Box<Record>) {
        let srb = r.srb_addr();
        let mut s = self.shard(srb);
        if let Some(p) = s.recent.iter().position(|&x| x == srb) {
            s.recent.remove(p);
        }
        s.map.insert(srb, r);
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn remove(&self, srb: usize) -> Result<Box<Record>, Missing> {
        let mut s = self.shard(srb);
        match s.map.remove(&srb) {
            Some(r) => {
                if s.recent.len() >= 16 {
                    s.recent.pop_front();
                }
                s.recent.push_back(srb);
                self.count.fetch_sub(1, Ordering::SeqCst);
                Ok(r)
            }
            None if s.recent.contains(&srb) => Err(Missing::Recent),
            None => Err(Missing::Unknown),
        }
    }

    fn contains(&self, srb: usize, id: u64) -> bool {
        self.shard(srb).map.get(&srb).is_some_and(|r| r.id == id)
    }

    fn with<R>(&self, srb: usize, f: impl FnOnce(&Record) -> R) -> Option<R> {
        self.shard(srb).map.get(&srb).map(|r| f(r))
    }

    fn each(&self, mut f: impl FnMut(&mut Record)) {
        for s in self.shards.iter() {
            let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
            for r in s.map.values_mut() {
                f(r);
            }
        }
    }

    pub fn mark_reset(&self, epoch: u64) {
        self.each(|r| {
            if r.reset_epoch == 0 {
                r.reset_epoch = epoch;
            }
        });
    }

    /// Requests marked by a reset that are neither completed nor reported yet.
    pub fn unsettled_after_reset(&self) -> usize {
        let mut n = 0;
        self.each(|r| n += usize::from(r.reset_epoch != 0 && !r.reported));
        n
    }

    pub fn still_outstanding(&self, epoch: u64) -> Vec<(usize, u64)> {
        let mut v = Vec::new();
        self.each(|r| {
            if r.reset_epoch == epoch && !r.reported {
                r.reported = true;
                if let Some(Waiter::Slot(slot)) = &r.waiter {
                    *slot.reported_lost.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(crate::sched::now());
                }
                v.push((r.srb_addr(), r.id));
            }
        });
        v.sort_by_key(|&(_, id)| id);
        v
    }

    /// Whether any of the requests `ids` is still outstanding.
    pub fn any_outstanding(&self, ids: &[u64]) -> bool {
        let mut found = false;
        self.each(|r| found |= ids.contains(&r.id));
        found
    }

    pub fn expired(&self, now: Instant) -> Vec<(usize, u64)> {
        let mut v = Vec::new();
        self.each(|r| {
            if r.deadline <= now && !r.timed_out {
                r.timed_out = true;
                v.push((r.srb_addr(), r.id));
            }
        });
        // In request order, not the order of SRB addresses in a hash map.
        v.sort_by_key(|&(_, id)| id);
        v
    }
}

fn rejected(status: u8, submitted: Instant) -> Completion {
    Completion {
        srb_status: status,
        port_rejected: true,
        latency: crate::sched::now().saturating_duration_since(submitted),
        ..Default::default()
    }
}

/// Builds the SRB, data buffer and SG list of `req` in a pooled record.
#[expect(
    clippy::result_large_err,
    reason = "the error is a rejection handed straight to the waiter (rare); boxing it would \
              allocate where nothing else does"
)]
fn prepare(
    a: &AdapterInner,
    req: &Request,
    waiter: Waiter,
) -> Result<Box<Record>, (Waiter, Completion)> {
    let now = crate::sched::now();
    let neg = a.neg.get().copied();
    let max_transfer = neg.map_or(u32::MAX, |n| n.max_transfer);
    if req.transfer_length > max_transfer
        || req.cdb.len() > 32
        || req.data_out.len() > req.transfer_length as usize
    {
        return Err((waiter, rejected(abi::SRB_STATUS_INVALID_REQUEST, now)));
    }
    let with_cdb = !req.cdb.is_empty();
    let n_ex = with_cdb as usize + req.ex_data.len();
    let hdr = (0x78 + 4 * n_ex.max(1)).next_multiple_of(8);
    let addr_off = hdr;
    let cdb_at = with_cdb.then_some(addr_off + 16);
    // The SRBEX_DATA blocks: the CDB block, then each extra block 8-aligned.
    let ex_blocks = || {
        let mut off = addr_off + 16;
        if with_cdb {
            off += if req.cdb.len() > 16 { 56 } else { 40 };
        }
        req.ex_data.iter().map(move |e| {
            off = off.next_multiple_of(8);
            let at = off;
            off += e.len().max(8);
            (at, e)
        })
    };
    // The last block (the offsets are a running sum, so it is found by walking them).
    let srb_len = ex_blocks().fold(None, |_, b| Some(b)).map_or(
        addr_off + 16 + cdb_at.map_or(0, |_| if req.cdb.len() > 16 { 56 } else { 40 }),
        |(at, e)| at + e.len().max(8),
    );
    let (srb, srb_words) = if srb_len <= SRB_BLOCK_BYTES {
        (
            Box::into_raw(a.srb_pool.get(srb_len)).cast::<u64>(),
            SRB_BLOCK_BYTES / 8,
        )
    } else {
        let w = srb_len.div_ceil(8);
        (alloc_words(w), w)
    };
    let s = srb as usize;
    // Data buffer.
    let len = req.transfer_length as usize;
    let (data, data_host) = if len > 0 {
        match a.alloc.alloc(len + req.buffer_offset as usize) {
            Some(b) => {
                let host = b.host + req.buffer_offset as usize;
                if !req.data_out.is_empty() {
                    a.alloc.write(host, &req.data_out);
                } else if a.port.options.poison {
                    a.alloc.fill(host, len, 0xDB);
                }
                (Some(b), host)
            }
            None => {
                // SAFETY: `srb` was allocated above with `srb_words` words and is not used again.
                drop(unsafe { free_words(srb, srb_words) });
                return Err((waiter, rejected(abi::SRB_STATUS_INVALID_REQUEST, now)));
            }
        }
    } else {
        (None, 0)
    };
    // Scatter-gather list: the elements (address, length) the port's mode gives the buffer.
    let pa = if len > 0 {
        let Some(pa) = a.alloc.to_guest(data_host) else {
            unreachable!("data buffers come from guest memory")
        };
        pa
    } else {
        0
    };
    let sg_pages = a.port.options.sg_mode == SgMode::PerPage;
    let elements = move || {
        let mut done = 0usize;
        std::iter::from_fn(move || {
            if done >= len {
                return None;
            }
            let p = pa + done as u64;
            let chunk = if sg_pages {
                (4096 - (p % 4096) as usize).min(len - done)
            } else {
                len - done
            };
            done += chunk;
            Some((p, chunk as u32))
        })
    };
    let n_elems = if sg_pages {
        elements().count()
    } else {
        usize::from(len > 0)
    };
    let max_breaks = neg.map_or(u32::MAX, |n| n.max_breaks);
    if max_breaks != abi::SP_UNINITIALIZED_VALUE && n_elems > max_breaks as usize + 1 {
        if let Some(b) = data {
            a.alloc.free(b);
        }
        // SAFETY: as above.
        drop(unsafe { free_words(srb, srb_words) });
        return Err((waiter, rejected(abi::SRB_STATUS_INVALID_REQUEST, now)));
    }
    let mut r = a.take_record();
    // A STOR_SCATTER_GATHER_LIST: NumberOfElements, Reserved, then 24-byte elements
    // (PhysicalAddress, Length, Reserved), three words each.
    r.sg.clear();
    r.sg.resize(2 + 3 * n_elems, 0);
    r.sg[0] = n_elems as u64;
    for (i, (pa, l)) in elements().enumerate() {
        r.sg[2 + 3 * i] = pa;
        r.sg[3 + 3 * i] = u64::from(l);
    }
    let id = a.next_request.fetch_add(1, Ordering::Relaxed);
    let header = abi::StorageRequestBlock {
        Length: 8,
        Function: abi::SRB_FUNCTION_STORAGE_REQUEST_BLOCK,
        SrbStatus: abi::SRB_STATUS_PENDING,
        Signature: abi::SRB_SIGNATURE,
        Version: 1,
        SrbLength: srb_len as u32,
        SrbFunction: req.function,
        SrbFlags: req.flags,
        RequestTag: id as u32,
        TimeOutValue: req.timeout_secs,
        AddressOffset: addr_off as u32,
        NumSrbExData: n_ex as u32,
        DataTransferLength: req.transfer_length,
        DataBuffer: data_host as u64,
        OriginalRequest: id,
        ..Default::default()
    };
    // SAFETY: the SRB block holds at least `srb_len` bytes, more than the 0x78-byte header.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&header as *const abi::StorageRequestBlock).cast::<u8>(),
            s as *mut u8,
            0x78,
        )
    };
    let offsets = cdb_at.into_iter().chain(ex_blocks().map(|(at, _)| at));
    for (i, o) in offsets.enumerate() {
        // SAFETY: SrbExDataOffset[i] lies inside the header area sized for `n_ex` entries.
        unsafe { wr(s, 0x78 + 4 * i, o as u32) };
    }
    let addr = abi::StorAddrBtl8 {
        Type: abi::STOR_ADDRESS_TYPE_BTL8,
        Port: 0,
        AddressLength: 4,
        Path: req.path,
        Target: req.target,
        Lun: req.lun,
        Reserved: 0,
    };
    // SAFETY: the address block lies inside the SRB block.
    unsafe { wr(s, addr_off, addr) };
    if let Some(c) = cdb_at {
        let big = req.cdb.len() > 16;
        // SAFETY: the CDB block lies inside the SRB block (so do all writes below).
        unsafe {
            wr(
                s,
                c,
                if big {
                    abi::SRBEX_DATA_SCSI_CDB32
                } else {
                    abi::SRBEX_DATA_SCSI_CDB16
                },
            )
        };
        // SAFETY: as above.
        unsafe { wr(s, c + 4, if big { 48u32 } else { 32u32 }) };
        // SAFETY: as above.
        unsafe { wr(s, c + cdb_off::CDB_LENGTH, req.cdb.len() as u8) };
        // SAFETY: as above; the CDB fits its 16- or 32-byte field.
        unsafe {
            std::ptr::copy_nonoverlapping(
                req.cdb.as_ptr(),
                (s + c + cdb_off::CDB) as *mut u8,
                req.cdb.len(),
            )
        };
    }
    for (o, e) in ex_blocks() {
        // SAFETY: the block was sized for `e` inside the SRB block.
        unsafe { std::ptr::copy_nonoverlapping(e.as_ptr(), (s + o) as *mut u8, e.len()) };
    }
    r.id = id;
    r.srb = srb;
    r.srb_words = srb_words;
    r.ext = None;
    r.sense_host = 0;
    r.data = data;
    r.data_host = data_host;
    r.data_len = req.transfer_length;
    r.sg_pages = sg_pages;
    r.cdb_off = cdb_at;
    r.sense_len = if with_cdb { req.sense_len } else { 0 };
    r.data_in = req.flags & flags::DATA_IN != 0;
    r.timeout =
        Duration::from_secs_f64(req.timeout_secs.max(1) as f64 * a.port.options.timeout_scale);
    r.cpu = cpu::current_cpu(a.cpus());
    r.deadline = now;
    r.reset_epoch = 0;
    r.reported = false;
    r.timed_out = false;
    r.busy_retries = 0;
    r.target = (req.path, req.target, req.lun);
    r.submitted = now;
    r.waiter = Some(waiter);
    Ok(r)
}

impl Record {
    /// A blank record for the pool.
    pub(crate) fn blank() -> Box<Record> {
        Box::new(Record {
            id: 0,
            srb: std::ptr::null_mut(),
            srb_words: 0,
            ext: None,
            sense_host: 0,
            data: None,
            data_host: 0,
            data_len: 0,
            sg: Vec::new(),
            sg_pages: false,
            cdb_off: None,
            sense_len: 0,
            data_in: false,
            timeout: Duration::ZERO,
            cpu: 0,
            deadline: Instant::now(),
            reset_epoch: 0,
            reported: false,
            timed_out: false,
            busy_retries: 0,
            target: (0, 0, 0),
            submitted: Instant::now(),
            waiter: None,
        })
    }
}

/// Gives the request a fresh SRB extension and resets what the miniport may have changed.
fn arm(a: &AdapterInner, r: &mut Record) -> bool {
    if let Some(b) = r.ext.take() {
        a.alloc.free(b);
    }
    let ext_size = a
        .neg
        .get()
        .map_or(0, |n| n.srb_ext_size as usize)
        .next_multiple_of(16);
    let Some(b) = a.alloc.alloc(ext_size + 256) else {
        return false;
    };
    if a.port.options.poison && ext_size > 0 {
        a.alloc.fill(b.host, ext_size, 0xCD);
    }
    a.alloc.fill(b.host + ext_size, 256, 0);
    r.sense_host = b.host + ext_size;
    let s = r.srb_addr();
    let withheld = a.withhold_srb_extensions.load(Ordering::Acquire);
    // SAFETY: fields of the SRB block this record owns (so are all writes below).
    unsafe {
        wr(
            s,
            0x68,
            if ext_size > 0 && !withheld {
                b.host as u64
            } else {
                0u64
            },
        )
    };
    // SAFETY: as above.
    unsafe { wr(s, abi::srb_off::SRB_STATUS, abi::SRB_STATUS_PENDING) };
    // SAFETY: as above.
    unsafe { wr(s, abi::srb_off::DATA_TRANSFER_LENGTH, r.data_len) };
    if let Some(c) = r.cdb_off {
        // SAFETY: as above.
        unsafe { wr(s, c + cdb_off::SCSI_STATUS, 0u8) };
        // SAFETY: as above.
        unsafe { wr(s, c + cdb_off::SENSE_LEN, r.sense_len) };
        // SAFETY: as above.
        unsafe {
            wr(
                s,
                c + cdb_off::SENSE_BUFFER,
                if r.sense_len > 0 {
                    r.sense_host as u64
                } else {
                    0u64
                },
            )
        };
    }
    r.ext = Some(b);
    r.deadline = crate::sched::now() + r.timeout;
    r.reset_epoch = 0;
    r.timed_out = false;
    r.reported = false;
    true
}

fn free_record(a: &AdapterInner, mut r: Box<Record>) -> Option<Waiter> {
    if let Some(b) = r.ext.take() {
        a.alloc.free(b);
    }
    if let Some(b) = r.data.take() {
        a.alloc.free(b);
    }
    // SAFETY: the SRB block came from the pool or `alloc_words(srb_words)`; the request is
    // finished, so nothing uses it again (the FIFO pool delays its reuse).
    a.srb_pool.put(unsafe { free_words(r.srb, r.srb_words) });
    r.srb = std::ptr::null_mut();
    let w = r.waiter.take();
    a.put_record(r);
    w
}

fn deliver(w: Waiter, c: Completion) {
    match w {
        Waiter::Slot(s) => {
            *s.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
            crate::sched::notify(Arc::as_ptr(&s) as usize);
            s.cv.notify_all();
        }
        Waiter::Callback(f) => f(c),
        Waiter::Queue(q, tag) => {
            q.ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((tag, c));
            q.cv.notify_all();
        }
    }
}

fn finish_rejected(w: Waiter, c: Completion) {
    cpu::defer(Box::new(move || deliver(w, c)));
}

/// Sends a request to the miniport (or parks it while the adapter is paused, busy or reset).
pub(crate) fn dispatch(a: &AdapterInner, r: Box<Record>) {
    if a.gate.load(Ordering::SeqCst) != 0 {
        park(a, r);
        return;
    }
    a.active.fetch_add(1, Ordering::SeqCst);
    if a.gate.load(Ordering::SeqCst) != 0 {
        a.active.fetch_sub(1, Ordering::SeqCst);
        park(a, r);
        return;
    }
    run(a, r);
}

/// Sends one TEST UNIT READY straight to HwStorBuildIo and HwStorStartIo on a thread of its own
/// (another CPU), past the gate, and waits for that thread
/// (`PortOptions::start_io_while_granting_channels`).
pub(crate) fn probe_start_io(a: &AdapterInner) {
    let Some(me) = a.self_weak.upgrade() else {
        return;
    };
    let slot = Arc::new(Slot::default());
    let Ok(r) = prepare(a, &Request::scsi(&[0; 6]), Waiter::Slot(slot)) else {
        return;
    };
    let r = SendRecord(r);
    let worker = std::thread::spawn(move || {
        let SendRecord(r) = r;
        me.active.fetch_add(1, Ordering::SeqCst);
        run(&me, r);
    });
    let _ = worker.join();
}

/// A record moved to the probe's thread.
struct SendRecord(Box<Record>);
// SAFETY: the record is handed over whole to the one thread that sends it; nothing else holds it.
unsafe impl Send for SendRecord {}

/// BuildIo, then StartIo, for a request the gate let through (`active` counted).
fn run(a: &AdapterInner, mut r: Box<Record>) {
    if !arm(a, &mut r) {
        a.active.fetch_sub(1, Ordering::SeqCst);
        let sub = r.submitted;
        if let Some(w) = free_record(a, r) {
            finish_rejected(w, rejected(abi::SRB_STATUS_INVALID_REQUEST, sub));
        }
        return;
    }
    let srb = r.srb_addr();
    let id = r.id;
    a.requests.insert(r);
    let devext = a.devext_ptr();
    let srbp = srb as *mut c_void;
    let dump = a.dump_mode();
    let lvl = if dump { irql::HIGH } else { irql::DISPATCH };
    let go = match a.hw.HwBuildIo {
        Some(b) => {
            // SAFETY: `b` is the miniport's HwBuildIo, given an SRB the port owns and sends.
            let call = || unsafe { b(devext, srbp) };
            cpu::invoke(a, Callback::BuildIo, lvl, &[], call) != 0
        }
        None => true,
    };
    let still = a.requests.contains(srb, id);
    if go && !still {
        a.report(
            Rule::BuildIoCompletion,
            [srb as u64, id, 0],
            "HwStorBuildIo completed the request and returned TRUE".into(),
        );
    } else if !go && still {
        a.report(
            Rule::BuildIoCompletion,
            [srb as u64, id, 0],
            "HwStorBuildIo returned FALSE without completing the request".into(),
        );
    } else if go && let Some(f) = a.hw.HwStartIo {
        let (lvl, locks): (u8, &[LockRef]) = if dump {
            (irql::HIGH, &[])
        } else if a.half_duplex() {
            (irql::DIRQL, &[LockRef::StartIo, LockRef::Interrupt])
        } else if a.concurrent_channels() > 1 {
            (irql::DISPATCH, &[])
        } else {
            (irql::DISPATCH, &[LockRef::StartIo])
        };
        // SAFETY: `f` is the miniport's HwStartIo, given an SRB the port owns and sends.
        cpu::invoke(a, Callback::StartIo, lvl, locks, || unsafe {
            f(devext, srbp)
        });
    }
    a.active.fetch_sub(1, Ordering::SeqCst);
}

fn park(a: &AdapterInner, r: Box<Record>) {
    a.pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push_back(r);
    if a.gate.load(Ordering::SeqCst) == 0 {
        a.kick();
    }
}

impl AdapterInner {
    /// Sends what waited while the gate was closed (after the current callback returns).
    pub fn kick(&self) {
        let me = self.arc();
        cpu::defer(Box::new(move || {
            while me.gate.load(Ordering::SeqCst) == 0 {
                let Some(r) = me
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop_front()
                else {
                    break;
                };
                dispatch(&me, r);
            }
        }));
    }
}

/// StorPortNotification(RequestComplete).
pub(crate) fn complete(a: &AdapterInner, srb: *mut c_void) {
    COMPLETIONS.with(|c| c.set(c.get().saturating_add(1)));
    let addr = srb as usize;
    let mut r = match a.requests.remove(addr) {
        Ok(r) => r,
        Err(Missing::Recent) => {
            a.report(
                Rule::DoubleCompletion,
                [addr as u64, 0, 0],
                format!("SRB {addr:#x} completed twice"),
            );
            return;
        }
        Err(Missing::Unknown) => {
            a.report(
                Rule::UnknownSrb,
                [addr as u64, 0, 0],
                format!("SRB {addr:#x} completed but the port never sent it"),
            );
            return;
        }
    };
    let s = r.srb_addr();
    // SAFETY: the SRB block belongs to this record, which the port owns again.
    let status: u8 = unsafe { rd(s, abi::srb_off::SRB_STATUS) };
    crate::sched::note("complete", u64::from(status));
    let base = status & 0x3F;
    if base == abi::SRB_STATUS_PENDING {
        a.report(
            Rule::StatusPending,
            [addr as u64, 0, 0],
            "request completed with SRB_STATUS_PENDING".into(),
        );
    }
    if base == abi::SRB_STATUS_BUSY {
        r.busy_retries += 1;
        let at = crate::sched::now() + a.port.options.busy_retry_delay;
        if a.dump_mode() {
            let me = a.arc();
            cpu::defer(Box::new(move || {
                std::thread::sleep(me.port.options.busy_retry_delay);
                dispatch(&me, r)
            }));
        } else {
            a.timer.retry(at, r);
        }
        return;
    }
    // SAFETY: as above.
    let dtl: u32 = unsafe { rd(s, abi::srb_off::DATA_TRANSFER_LENGTH) };
    let (scsi_status, sense_len_now) = match r.cdb_off {
        Some(c) => {
            // SAFETY: the CDB block lies inside this record's SRB block.
            let st = unsafe { rd::<u8>(s, c + cdb_off::SCSI_STATUS) };
            // SAFETY: as above.
            (st, unsafe { rd::<u8>(s, c + cdb_off::SENSE_LEN) })
        }
        None => (0, 0),
    };
    let mut lent = None;
    let data = if r.data_in && r.data_len > 0 {
        let len = dtl.min(r.data_len) as usize;
        match &r.waiter {
            Some(Waiter::Queue(q, _)) if q.lend => {
                if let Some(block) = r.data.take() {
                    // The buffer leaves the port with the completion: from now on a device
                    // write to it is a write after completion.
                    a.alloc.retire(&block);
                    assert!(
                        r.data_host >= block.host && r.data_host + len <= block.host + block.size
                    );
                    lent = Some(GuestData {
                        adapter: a.arc(),
                        block,
                        host: r.data_host,
                        len,
                    });
                }
                Vec::new()
            }
            Some(Waiter::Queue(q, _)) => q.copy_out(&a.alloc, r.data_host, len),
            _ => a.alloc.read(r.data_host, len),
        }
    } else {
        Vec::new()
    };
    let sense = if status & abi::SRB_STATUS_AUTOSENSE_VALID != 0 && r.sense_len > 0 {
        a.alloc
            .read(r.sense_host, sense_len_now.min(r.sense_len) as usize)
    } else {
        Vec::new()
    };
    let c = Completion {
        srb_status: status,
        scsi_status,
        sense,
        data,
        lent,
        data_transfer_length: dtl,
        busy_retries: r.busy_retries,
        port_rejected: false,
        latency: crate::sched::now().saturating_duration_since(r.submitted),
    };
    let target = r.target;
    match free_record(a, r) {
        Some(Waiter::Queue(q, tag)) => {
            let me = a.arc();
            QUEUED.with(|p| p.borrow_mut().push((me, q, tag, c)));
            if !cpu::in_callback() {
                flush_queued();
            }
        }
        Some(w) => {
            let me = a.arc();
            cpu::defer(Box::new(move || {
                deliver(w, c);
                me.happened(&me.activity.completions);
            }));
        }
        None => {}
    }
    // StorPortBusy / StorPortDeviceBusy count completions.
    if a.busy_remaining.load(Ordering::SeqCst) > 0
        && a.busy_remaining.fetch_sub(1, Ordering::SeqCst) == 1
    {
        a.open(crate::adapter::gate::BUSY);
    }
    // StorPortDeviceBusy is rare: look at its table only when the gate says it is in force or
    // the table may hold entries.
    if a.gate.load(Ordering::SeqCst) & crate::adapter::gate::DEVICE_BUSY == 0
        && !a.device_busy_entries.load(Ordering::SeqCst)
    {
        return;
    }
    let reopen = {
        let mut d = a.device_busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = d.get_mut(&target) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                d.remove(&target);
            }
        }
        a.device_busy_entries.store(!d.is_empty(), Ordering::SeqCst);
        d.is_empty()
    };
    if reopen && a.gate.load(Ordering::SeqCst) & crate::adapter::gate::DEVICE_BUSY != 0 {
        a.open(crate::adapter::gate::DEVICE_BUSY);
    }
}

/// StorPortGetScatterGatherList.
pub(crate) fn sg_list(a: &AdapterInner, srb: *mut c_void) -> *mut c_void {
    a.requests
        .with(srb as usize, |r| {
            if r.data_len > 0 {
                r.sg.as_ptr() as *mut c_void
            } else {
                std::ptr::null_mut()
            }
        })
        .unwrap_or(std::ptr::null_mut())
}

/// The contiguous length from `host` inside the request's extension or data buffer, if `host`
/// lies in one of them.
pub(crate) fn contiguous_in_request(
    a: &AdapterInner,
    srb: *mut c_void,
    host: usize,
) -> Option<usize> {
    a.requests
        .with(srb as usize, |r| {
            if let Some(b) = r.ext
                && host >= b.host
                && host < b.host + b.size
            {
                return Some(b.host + b.size - host);
            }
            let end = r.data_host + r.data_len as usize;
            if r.data_len > 0 && host >= r.data_host && host < end {
                let run = end - host;
                if r.sg_pages {
                    let pa = a.alloc.to_guest(host).unwrap_or(0);
                    return Some(run.min(4096 - (pa % 4096) as usize));
                }
                return Some(run);
            }
            None
        })
        .flatten()
}

/// The submitting CPU of an outstanding request.
pub(crate) fn request_cpu(a: &AdapterInner, srb: *mut c_void) -> Option<u32> {
    a.requests.with(srb as usize, |r| r.cpu)
}

/// One polling step in dump mode: the ISR (and a due HwStorTimer).
pub(crate) fn poll_once(a: &AdapterInner) {
    crate::interrupt::service(a, 0);
    if let Some(f) = a.timer.take_due_hw_timer() {
        crate::timer::call_hw_timer(a, f);
    }
}

impl Adapter {
    fn submit_waiter(&self, req: Request, w: Waiter) {
        self.submit_ref(&req, w);
    }

    fn submit_ref(&self, req: &Request, w: Waiter) {
        let a = &self.inner;
        match prepare(a, req, w) {
            Ok(r) => dispatch(a, r),
            Err((w, c)) => finish_rejected(w, c),
        }
    }

    /// Sends a request; the handle waits for its completion.
    pub fn submit(&self, req: Request) -> RequestHandle {
        let slot = Arc::new(Slot::default());
        let lost_after = lost_after(&self.inner, &req);
        self.submit_waiter(req, Waiter::Slot(slot.clone()));
        RequestHandle {
            slot,
            adapter: self.inner.dump_mode().then(|| self.inner.clone()),
            lost_after,
            margin: self.inner.port.options.lost_request_margin,
        }
    }

    /// Sends a request; `done` runs on the completing CPU after the miniport's callback returns
    /// (it may submit further requests).
    pub fn submit_with(&self, req: Request, done: impl FnOnce(Completion) + Send + 'static) {
        self.submit_waiter(req, Waiter::Callback(Box::new(done)));
    }

    /// Sends a request; its completion goes to `queue` with `tag`, handed over once per DPC
    /// or ISR run that completed it. `req` is only read: a submitter may reuse it. The path
    /// of a benchmark: with a warm queue nothing on it allocates.
    pub fn submit_to(&self, req: &Request, queue: &Arc<CompletionQueue>, tag: u64) {
        self.submit_ref(req, Waiter::Queue(queue.clone(), tag));
    }

    /// Sends a request and waits for it.
    pub fn execute(&self, req: Request) -> Completion {
        self.submit(req).wait()
    }
}

/// Sends a request of the port's own (the reset SRBs of the multi-tier reset).
pub(crate) fn submit_internal(a: &AdapterInner, req: Request) -> RequestHandle {
    let slot = Arc::new(Slot::default());
    match prepare(a, &req, Waiter::Slot(slot.clone())) {
        Ok(r) => dispatch(a, r),
        Err((w, c)) => finish_rejected(w, c),
    }
    RequestHandle {
        slot,
        adapter: a.dump_mode().then(|| a.self_weak.upgrade()).flatten(),
        lost_after: lost_after(a, &req),
        margin: a.port.options.lost_request_margin,
    }
}

thread_local! {
    /// RequestComplete calls in the callback running on this thread (DPC and ISR runs).
    static COMPLETIONS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Starts counting the completions of one DPC or ISR run.
pub(crate) fn begin_run() {
    COMPLETIONS.with(|c| c.set(0));
}

/// Ends one DPC or ISR run: records its completions in the adapter's maximum.
pub(crate) fn end_run(a: &AdapterInner) {
    let n = COMPLETIONS.with(|c| c.replace(0));
    a.max_completions_per_run.fetch_max(n, Ordering::Relaxed);
}
