//! The independent oracle: a small virtio-blk driver that drives [`VirtioBlkDevice`] directly,
//! without Storport and without any of the vioblk driver's code.
//!
//! It is written from the VIRTIO 1.2 specification alone (2.7 split virtqueues, 4.1 the PCI
//! transport, 5.2 virtio-blk), so that a bug the vioblk driver and the device model might share
//! through common code cannot hide: when the model disagrees with this driver, one of the two
//! is wrong, and the vioblk driver is not the judge. It uses the model only through the
//! [`PciDevice`] interface the port uses, plus the model's register-layout constants.
//!
//! It does what a guest driver does, through the same [`PciDevice`] interface the port uses:
//! walks the PCI capabilities, enables MSI-X as a PnP manager would, performs the status and
//! feature handshake, lays out split virtqueues in the device's guest memory, submits requests
//! and reaps the used ring, checking every value the device wrote (the index may not move by
//! more than the queue size, ids must be in flight, lengths must fit the chain).
//!
//! Two users: the device model's tests, and [`random_reads`], the benchmark's "device model
//! driven directly" baseline that the vioblk driver under storport-sim is compared against.

use std::num::Wrapping;
use std::sync::atomic::{Ordering, fence};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use storport_sim::PATIENCE;
use storport_sim::device::{InterruptSink, PciDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::blk::{HEADER_LEN, req_type};
use super::msix::NO_VECTOR;
use super::pci::{
    CAP_ID_MSIX, CAP_ID_VENDOR, COMMAND_BUS_MASTER, COMMAND_MEMORY, MSIX_ENABLE, cfg_type,
};
use super::transport::{common, status};
use super::{MSIX_BAR, VIRTIO_BAR, VirtioBlkDevice};

pub use super::blk::{req_status, req_type as types};

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
/// VRING_USED_F_NO_NOTIFY.
const USED_F_NO_NOTIFY: u16 = 1;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts the interrupts the device raises, per message.
#[derive(Default)]
pub struct CountingSink {
    counts: Mutex<Vec<u64>>,
    cv: Condvar,
}

impl CountingSink {
    /// Messages received on `message` so far.
    pub fn count(&self, message: u16) -> u64 {
        lock(&self.counts)
            .get(usize::from(message))
            .copied()
            .unwrap_or(0)
    }

    /// Messages received on all vectors.
    pub fn total(&self) -> u64 {
        lock(&self.counts).iter().sum()
    }

    /// Waits until more than `seen` messages arrived on `message`, at most `timeout`; returns
    /// the count, or an error saying none came.
    pub fn wait(&self, message: u16, seen: u64, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        let mut counts = lock(&self.counts);
        loop {
            let now = counts.get(usize::from(message)).copied().unwrap_or(0);
            if now > seen {
                return Ok(now);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "waited {timeout:?} for interrupt {} on message {message}, and it did not \
                     come",
                    seen + 1
                ));
            }
            counts = self
                .cv
                .wait_timeout(counts, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl InterruptSink for CountingSink {
    fn raise(&self, message: u16) {
        let mut counts = lock(&self.counts);
        let i = usize::from(message);
        if counts.len() <= i {
            counts.resize(i + 1, 0);
        }
        counts[i] += 1;
        self.cv.notify_all();
    }
}

/// What went wrong while driving the device.
#[derive(Debug, PartialEq, Eq)]
pub enum DriverError {
    /// A virtio capability of this `cfg_type` is missing.
    NoCapability(u8),
    /// FEATURES_OK did not stick: the device refused the features.
    FeaturesRefused,
    /// The device set DEVICE_NEEDS_RESET.
    NeedsReset,
    /// A queue is unavailable (queue_size reads 0).
    NoQueue(u16),
    /// No completion within the time allowed.
    Timeout,
    /// The device wrote something invalid into the used ring.
    Ring(RingError),
    /// The guest-memory region is exhausted.
    NoMemory,
    /// The ring has no room for the request.
    RingFull,
}

/// An invalid used ring, as the driver detects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// used.idx moved by more than the queue size.
    IdxJump {
        /// Last index consumed.
        last: u16,
        /// Index the device published.
        idx: u16,
    },
    /// A used id that is not a chain in flight.
    BadId(u32),
    /// A used length larger than the chain's device-writable bytes.
    BadLen {
        /// The chain.
        id: u16,
        /// What the device claimed.
        len: u32,
        /// The most it could have written.
        max: u32,
    },
}

/// The virtio register block of BAR 4, located through the PCI capabilities.
pub struct Regs {
    dev: Arc<VirtioBlkDevice>,
    common: u64,
    isr: u64,
    device: u64,
    notify: u64,
    notify_multiplier: u32,
}

impl Regs {
    fn find(dev: Arc<VirtioBlkDevice>) -> Result<Self, DriverError> {
        let cfg8 = |at: u16| {
            let mut b = [0u8; 1];
            dev.config_read(at, &mut b);
            b[0]
        };
        let cfg32 = |at: u16| {
            let mut b = [0u8; 4];
            dev.config_read(at, &mut b);
            u32::from_le_bytes(b)
        };
        let mut found = [None::<u64>; 6];
        let mut multiplier = 0;
        let mut at = u16::from(cfg8(0x34));
        let mut hops = 0;
        while at != 0 && hops < 48 {
            if cfg8(at) == CAP_ID_VENDOR && cfg8(at + 4) == VIRTIO_BAR {
                let kind = cfg8(at + 3);
                if let Some(slot) = found.get_mut(usize::from(kind))
                    && slot.is_none()
                {
                    *slot = Some(u64::from(cfg32(at + 8)));
                    if kind == cfg_type::NOTIFY {
                        multiplier = cfg32(at + 16);
                    }
                }
            }
            at = u16::from(cfg8(at + 1));
            hops += 1;
        }
        let get = |k: u8| found[usize::from(k)].ok_or(DriverError::NoCapability(k));
        Ok(Self {
            common: get(cfg_type::COMMON)?,
            isr: get(cfg_type::ISR)?,
            device: get(cfg_type::DEVICE)?,
            notify: get(cfg_type::NOTIFY)?,
            notify_multiplier: multiplier,
            dev,
        })
    }

    fn read<const N: usize>(&self, offset: u64) -> [u8; N] {
        let mut b = [0u8; N];
        self.dev.bar_read(VIRTIO_BAR, offset, &mut b);
        b
    }

    /// Reads a 8-bit common-configuration register.
    pub fn common8(&self, reg: u64) -> u8 {
        self.read::<1>(self.common + reg)[0]
    }

    /// Reads a 16-bit common-configuration register.
    pub fn common16(&self, reg: u64) -> u16 {
        u16::from_le_bytes(self.read(self.common + reg))
    }

    /// Reads a 32-bit common-configuration register.
    pub fn common32(&self, reg: u64) -> u32 {
        u32::from_le_bytes(self.read(self.common + reg))
    }

    /// Writes a common-configuration register (1, 2, 4 or 8 bytes).
    pub fn write_common(&self, reg: u64, bytes: &[u8]) {
        self.dev.bar_write(VIRTIO_BAR, self.common + reg, bytes);
    }

    /// Reads `out.len()` bytes of the virtio-blk configuration at `offset`.
    pub fn device_cfg(&self, offset: u64, out: &mut [u8]) {
        self.dev.bar_read(VIRTIO_BAR, self.device + offset, out);
    }

    /// Writes the virtio-blk configuration.
    pub fn write_device_cfg(&self, offset: u64, bytes: &[u8]) {
        self.dev.bar_write(VIRTIO_BAR, self.device + offset, bytes);
    }

    /// Reads (and so clears) the ISR status.
    pub fn isr(&self) -> u8 {
        self.read::<1>(self.isr)[0]
    }

    /// The device status.
    pub fn status(&self) -> u8 {
        self.common8(common::DEVICE_STATUS)
    }

    fn set_status(&self, s: u8) {
        self.write_common(common::DEVICE_STATUS, &[s]);
    }

    /// The device's offered features.
    pub fn device_features(&self) -> u64 {
        self.write_common(common::DEVICE_FEATURE_SELECT, &0u32.to_le_bytes());
        let lo = self.common32(common::DEVICE_FEATURE);
        self.write_common(common::DEVICE_FEATURE_SELECT, &1u32.to_le_bytes());
        let hi = self.common32(common::DEVICE_FEATURE);
        u64::from(lo) | (u64::from(hi) << 32)
    }
}

/// One guest buffer of a request.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Whether the device writes it.
    pub device_writable: bool,
}

/// A used-ring entry that passed the driver's checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    /// Head descriptor of the chain.
    pub id: u16,
    /// Bytes the device says it wrote.
    pub len: u32,
}

#[derive(Clone, Copy, Default)]
struct InFlight {
    descriptors: u16,
    writable: u32,
    busy: bool,
}

/// The driver side of one split virtqueue (VIRTIO 1.2 2.7).
pub struct DriverQueue {
    mem: Arc<GuestMemoryMmap>,
    index: u16,
    size: u16,
    vector: u16,
    desc: u64,
    avail: u64,
    used: u64,
    notify_offset: u64,
    event_idx: bool,
    free: Vec<u16>,
    next: Vec<u16>,
    in_flight: Vec<InFlight>,
    avail_idx: Wrapping<u16>,
    kicked_idx: Wrapping<u16>,
    last_used: Wrapping<u16>,
    scratch: u64,
    scratch_len: u64,
}

impl DriverQueue {
    /// Queue index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// MSI-X vector (or `NO_VECTOR` for INTx).
    pub fn vector(&self) -> u16 {
        self.vector
    }

    /// Descriptors not in use.
    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    fn write_desc(&self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        // The ring memory was allocated from the region, so the write cannot fail.
        let _ = self
            .mem
            .write_slice(&d, GuestAddress(table + u64::from(i) * 16));
    }

    fn publish(&mut self, head: u16, descriptors: u16, writable: u32) {
        self.in_flight[usize::from(head)] = InFlight {
            descriptors,
            writable,
            busy: true,
        };
        let slot = u64::from(self.avail_idx.0 % self.size);
        let _ = self
            .mem
            .write_obj(head.to_le(), GuestAddress(self.avail + 4 + slot * 2));
        self.avail_idx += Wrapping(1);
        // Release: the descriptors and the ring entry are visible before the index.
        let _ = self.mem.store(
            self.avail_idx.0.to_le(),
            GuestAddress(self.avail + 2),
            Ordering::Release,
        );
    }

    /// Makes `bufs` available as one chain of direct descriptors; returns its head.
    pub fn add(&mut self, bufs: &[Buf]) -> Option<u16> {
        if bufs.is_empty() || bufs.len() > self.free.len() {
            return None;
        }
        let ids: Vec<u16> = (0..bufs.len()).filter_map(|_| self.free.pop()).collect();
        let mut writable = 0u32;
        for (k, b) in bufs.iter().enumerate() {
            let mut flags = if b.device_writable { DESC_F_WRITE } else { 0 };
            let next = ids.get(k + 1).copied();
            if next.is_some() {
                flags |= DESC_F_NEXT;
            }
            if b.device_writable {
                writable = writable.saturating_add(b.len);
            }
            self.next[usize::from(ids[k])] = next.unwrap_or(u16::MAX);
            self.write_desc(self.desc, ids[k], b.addr, b.len, flags, next.unwrap_or(0));
        }
        self.publish(ids[0], bufs.len() as u16, writable);
        Some(ids[0])
    }

    /// Makes `bufs` available through an indirect table at `table` (16 bytes per buffer);
    /// the chain takes one ring descriptor.
    pub fn add_indirect(&mut self, table: u64, bufs: &[Buf]) -> Option<u16> {
        let head = self.free.pop()?;
        let mut writable = 0u32;
        for (k, b) in bufs.iter().enumerate() {
            let mut flags = if b.device_writable { DESC_F_WRITE } else { 0 };
            if k + 1 < bufs.len() {
                flags |= DESC_F_NEXT;
            }
            if b.device_writable {
                writable = writable.saturating_add(b.len);
            }
            self.write_desc(table, k as u16, b.addr, b.len, flags, k as u16 + 1);
        }
        self.next[usize::from(head)] = u16::MAX;
        let len = (bufs.len() * 16) as u32;
        self.write_desc(self.desc, head, table, len, DESC_F_INDIRECT, 0);
        self.publish(head, 1, writable);
        Some(head)
    }

    /// Notifies the device unless it asked not to be (VIRTIO 1.2 2.7.10 and 2.7.7); returns
    /// whether the doorbell was rung.
    pub fn kick(&mut self, regs: &Regs) -> bool {
        fence(Ordering::SeqCst);
        let new = self.avail_idx;
        let old = self.kicked_idx;
        self.kicked_idx = new;
        let needed = if self.event_idx {
            let at = self.used + 4 + 8 * u64::from(self.size);
            let event = Wrapping(u16::from_le(
                self.mem
                    .load(GuestAddress(at), Ordering::Relaxed)
                    .unwrap_or(0),
            ));
            (new - event - Wrapping(1)).0 < (new - old).0
        } else {
            let flags: u16 = self
                .mem
                .load(GuestAddress(self.used), Ordering::Relaxed)
                .unwrap_or(0);
            u16::from_le(flags) & USED_F_NO_NOTIFY == 0
        };
        if needed {
            regs.dev.bar_write(
                VIRTIO_BAR,
                regs.notify + self.notify_offset,
                &self.index.to_le_bytes(),
            );
        }
        needed
    }

    /// The device's used.idx.
    pub fn used_idx(&self) -> u16 {
        u16::from_le(
            self.mem
                .load(GuestAddress(self.used + 2), Ordering::Acquire)
                .unwrap_or(0),
        )
    }

    /// Sets used_event: the device interrupts once used.idx passes `value`.
    pub fn set_used_event(&self, value: u16) {
        let at = self.avail + 4 + 2 * u64::from(self.size);
        let _ = self
            .mem
            .store(value.to_le(), GuestAddress(at), Ordering::Release);
    }

    /// Asks for an interrupt at the next completion (event idx: used_event = last seen).
    pub fn enable_interrupts(&self) {
        if self.event_idx {
            self.set_used_event(self.last_used.0);
        }
        fence(Ordering::SeqCst);
    }

    /// Takes one used entry, checking what the device wrote.
    pub fn pop_used(&mut self) -> Result<Option<Used>, RingError> {
        let idx = Wrapping(self.used_idx());
        let pending = (idx - self.last_used).0;
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.size {
            return Err(RingError::IdxJump {
                last: self.last_used.0,
                idx: idx.0,
            });
        }
        let slot = u64::from(self.last_used.0 % self.size);
        let elem = GuestAddress(self.used + 4 + slot * 8);
        let id: u32 = u32::from_le(self.mem.read_obj(elem).unwrap_or(u32::MAX));
        let len: u32 = u32::from_le(
            self.mem
                .read_obj(GuestAddress(elem.0 + 4))
                .unwrap_or(u32::MAX),
        );
        let Some(f) = u16::try_from(id)
            .ok()
            .and_then(|i| self.in_flight.get(usize::from(i)).copied())
            .filter(|f| f.busy)
        else {
            return Err(RingError::BadId(id));
        };
        let id = id as u16;
        if len > f.writable {
            return Err(RingError::BadLen {
                id,
                len,
                max: f.writable,
            });
        }
        self.last_used += Wrapping(1);
        self.in_flight[usize::from(id)].busy = false;
        let mut d = id;
        for _ in 0..f.descriptors {
            self.free.push(d);
            d = self.next[usize::from(d)];
        }
        Ok(Some(Used { id, len }))
    }
}

/// A finished request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The status byte.
    pub status: u8,
    /// The device-writable data (for IN and GET_ID).
    pub data: Vec<u8>,
    /// The used length.
    pub used_len: u32,
}

/// The driver.
pub struct DirectDriver {
    dev: Arc<VirtioBlkDevice>,
    regs: Regs,
    sink: Arc<CountingSink>,
    mem: Arc<GuestMemoryMmap>,
    bump: Mutex<(u64, u64)>,
    queues: Vec<Mutex<DriverQueue>>,
    features: u64,
    timeout: Duration,
}

impl DirectDriver {
    /// Takes the device as a PnP manager would: memory decoding and bus mastering on, MSI-X
    /// enabled with every vector unmasked (when the device has MSI-X), interrupts connected.
    pub fn new(dev: Arc<VirtioBlkDevice>) -> Result<Self, DriverError> {
        let sink = Arc::new(CountingSink::default());
        dev.connect_interrupts(sink.clone());
        dev.config_write(0x04, &(COMMAND_MEMORY | COMMAND_BUS_MASTER).to_le_bytes());
        let vectors = dev.msix_message_count();
        if vectors > 0 {
            let mut at = {
                let mut b = [0u8];
                dev.config_read(0x34, &mut b);
                u16::from(b[0])
            };
            while at != 0 {
                let mut b = [0u8; 2];
                dev.config_read(at, &mut b);
                if b[0] == CAP_ID_MSIX {
                    dev.config_write(at + 2, &MSIX_ENABLE.to_le_bytes());
                    break;
                }
                at = u16::from(b[1]);
            }
            for v in 0..u64::from(vectors) {
                dev.bar_write(MSIX_BAR, v * 16 + 12, &0u32.to_le_bytes());
            }
        }
        let mem = dev.memory().clone();
        let base = dev.config().guest_memory_base;
        let end = base + dev.config().guest_memory_size as u64;
        Ok(Self {
            regs: Regs::find(dev.clone())?,
            dev,
            sink,
            mem,
            bump: Mutex::new((base, end)),
            queues: Vec::new(),
            features: 0,
            timeout: PATIENCE,
        })
    }

    /// Reset, handshake with `features`, `queues` queues of `size`, DRIVER_OK.
    pub fn start(
        dev: Arc<VirtioBlkDevice>,
        features: u64,
        queues: u16,
        size: u16,
    ) -> Result<Self, DriverError> {
        let mut d = Self::new(dev)?;
        d.negotiate(features)?;
        d.setup_queues(queues, size)?;
        d.driver_ok();
        Ok(d)
    }

    /// How long [`Self::request`] waits for a completion (default [`PATIENCE`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The device.
    pub fn device(&self) -> &Arc<VirtioBlkDevice> {
        &self.dev
    }

    /// The interrupt counters.
    pub fn sink(&self) -> &Arc<CountingSink> {
        &self.sink
    }

    /// The register block.
    pub fn regs(&self) -> &Regs {
        &self.regs
    }

    /// The negotiated features.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Queue `q` (locked).
    pub fn queue(&self, q: u16) -> MutexGuard<'_, DriverQueue> {
        lock(&self.queues[usize::from(q)])
    }

    /// Number of queues set up.
    pub fn queue_count(&self) -> u16 {
        self.queues.len() as u16
    }

    /// Allocates `len` bytes of guest memory aligned to `align` (a power of two).
    pub fn alloc(&self, len: u64, align: u64) -> Result<u64, DriverError> {
        let mut b = lock(&self.bump);
        let at = b.0.next_multiple_of(align.max(1));
        let end = at.checked_add(len).ok_or(DriverError::NoMemory)?;
        if end > b.1 {
            return Err(DriverError::NoMemory);
        }
        b.0 = end;
        Ok(at)
    }

    /// Resets the device and waits until the status reads 0.
    pub fn reset(&mut self) {
        self.regs.set_status(0);
        while self.regs.status() != 0 {
            std::thread::yield_now();
        }
        self.queues.clear();
        self.features = 0;
    }

    /// ACKNOWLEDGE, DRIVER, then offers exactly `features` (not masked by what the device
    /// offers, so tests can misbehave) and checks FEATURES_OK.
    pub fn negotiate(&mut self, features: u64) -> Result<u64, DriverError> {
        self.reset();
        self.regs.set_status(status::ACKNOWLEDGE);
        self.regs.set_status(status::ACKNOWLEDGE | status::DRIVER);
        self.regs
            .write_common(common::DRIVER_FEATURE_SELECT, &0u32.to_le_bytes());
        self.regs
            .write_common(common::DRIVER_FEATURE, &(features as u32).to_le_bytes());
        self.regs
            .write_common(common::DRIVER_FEATURE_SELECT, &1u32.to_le_bytes());
        self.regs.write_common(
            common::DRIVER_FEATURE,
            &((features >> 32) as u32).to_le_bytes(),
        );
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.regs.set_status(s);
        if self.regs.status() & status::FEATURES_OK == 0 {
            self.regs.set_status(s | status::FAILED);
            return Err(DriverError::FeaturesRefused);
        }
        self.features = features;
        Ok(features)
    }

    /// Sets up `count` queues of at most `size` entries, with MSI-X vectors 1.. (0 is the
    /// configuration vector) when the device has them.
    pub fn setup_queues(&mut self, count: u16, size: u16) -> Result<(), DriverError> {
        let vectors = self.dev.msix_message_count();
        if vectors > 0 {
            self.regs
                .write_common(common::MSIX_CONFIG, &0u16.to_le_bytes());
        }
        let event_idx = self.features & super::features::EVENT_IDX != 0;
        for q in 0..count {
            self.regs
                .write_common(common::QUEUE_SELECT, &q.to_le_bytes());
            let max = self.regs.common16(common::QUEUE_SIZE);
            if max == 0 {
                return Err(DriverError::NoQueue(q));
            }
            let size = size.min(max);
            let n = u64::from(size);
            let desc = self.alloc(16 * n, 4096)?;
            let avail = self.alloc(6 + 2 * n, 2)?;
            let used = self.alloc(6 + 8 * n, 4096)?;
            let scratch_len = 256 * 1024;
            let scratch = self.alloc(scratch_len, 4096)?;
            self.regs
                .write_common(common::QUEUE_SIZE, &size.to_le_bytes());
            // Addresses as two 32-bit halves, as drivers that avoid 64-bit MMIO do.
            for (reg, addr) in [
                (common::QUEUE_DESC, desc),
                (common::QUEUE_DRIVER, avail),
                (common::QUEUE_DEVICE, used),
            ] {
                self.regs.write_common(reg, &(addr as u32).to_le_bytes());
                self.regs
                    .write_common(reg + 4, &((addr >> 32) as u32).to_le_bytes());
            }
            let vector = match vectors {
                0 => NO_VECTOR,
                1 => 0,
                v => 1 + q % (v - 1),
            };
            self.regs
                .write_common(common::QUEUE_MSIX_VECTOR, &vector.to_le_bytes());
            let vector = self.regs.common16(common::QUEUE_MSIX_VECTOR);
            let notify_off = self.regs.common16(common::QUEUE_NOTIFY_OFF);
            self.regs
                .write_common(common::QUEUE_ENABLE, &1u16.to_le_bytes());
            self.queues.push(Mutex::new(DriverQueue {
                mem: self.mem.clone(),
                index: q,
                size,
                vector,
                desc,
                avail,
                used,
                notify_offset: u64::from(notify_off) * u64::from(self.regs.notify_multiplier),
                event_idx,
                free: (0..size).rev().collect(),
                next: vec![u16::MAX; usize::from(size)],
                in_flight: vec![InFlight::default(); usize::from(size)],
                avail_idx: Wrapping(0),
                kicked_idx: Wrapping(0),
                last_used: Wrapping(0),
                scratch,
                scratch_len,
            }));
        }
        Ok(())
    }

    /// Sets DRIVER_OK.
    pub fn driver_ok(&self) {
        let s = self.regs.status();
        self.regs.set_status(s | status::DRIVER_OK);
    }

    /// Waits for the next used entry of `q` (the queue is locked by the caller), at most
    /// `timeout`. The device is looked at again whenever it is done with a chain (after writing
    /// its used entry and interrupting) or sets DEVICE_NEEDS_RESET.
    pub fn wait_used(&self, q: &mut DriverQueue, timeout: Duration) -> Result<Used, DriverError> {
        let index = q.index;
        let mut outcome = None;
        let waited = self.dev.wait_until(
            format_args!("a used entry on queue {index}"),
            timeout,
            || {
                q.enable_interrupts();
                outcome = match q.pop_used() {
                    Err(e) => Some(Err(DriverError::Ring(e))),
                    Ok(Some(u)) => Some(Ok(u)),
                    Ok(None) if self.regs.status() & status::DEVICE_NEEDS_RESET != 0 => {
                        Some(Err(DriverError::NeedsReset))
                    }
                    Ok(None) => None,
                };
                outcome.is_some()
            },
        );
        if q.vector == NO_VECTOR {
            // INTx: reading the ISR lowers the line.
            let _ = self.regs.isr();
        }
        match (waited, outcome) {
            (Ok(()), Some(outcome)) => outcome,
            _ => Err(DriverError::Timeout),
        }
    }

    /// Performs one request synchronously on queue `q`: a header with `kind` and `sector`,
    /// `out` as device-readable data, `in_len` bytes of device-writable data, the status byte.
    pub fn request(
        &self,
        q: u16,
        kind: u32,
        sector: u64,
        out: &[u8],
        in_len: u32,
    ) -> Result<Completion, DriverError> {
        let mut queue = self.queue(q);
        let need = 16 + out.len() as u64 + u64::from(in_len) + 1;
        let base = if need <= queue.scratch_len {
            queue.scratch
        } else {
            self.alloc(need, 4096)?
        };
        let mut header = [0u8; HEADER_LEN as usize];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        let _ = self.mem.write_slice(&header, GuestAddress(base));
        let out_addr = base + 16;
        let _ = self.mem.write_slice(out, GuestAddress(out_addr));
        let in_addr = out_addr + out.len() as u64;
        let status_addr = in_addr + u64::from(in_len);
        let _ = self.mem.write_obj(0xFFu8, GuestAddress(status_addr));
        let mut bufs = vec![Buf {
            addr: base,
            len: 16,
            device_writable: false,
        }];
        if !out.is_empty() {
            bufs.push(Buf {
                addr: out_addr,
                len: out.len() as u32,
                device_writable: false,
            });
        }
        if in_len > 0 {
            bufs.push(Buf {
                addr: in_addr,
                len: in_len,
                device_writable: true,
            });
        }
        bufs.push(Buf {
            addr: status_addr,
            len: 1,
            device_writable: true,
        });
        queue.add(&bufs).ok_or(DriverError::RingFull)?;
        queue.kick(&self.regs);
        let used = self.wait_used(&mut queue, self.timeout)?;
        let mut data = vec![0u8; in_len as usize];
        let _ = self.mem.read_slice(&mut data, GuestAddress(in_addr));
        let status: u8 = self.mem.read_obj(GuestAddress(status_addr)).unwrap_or(0xFF);
        Ok(Completion {
            status,
            data,
            used_len: used.len,
        })
    }

    /// Reads `len` bytes at `sector` through queue `q`.
    pub fn read(&self, q: u16, sector: u64, len: u32) -> Result<Completion, DriverError> {
        self.request(q, req_type::IN, sector, &[], len)
    }

    /// Writes `data` at `sector` through queue `q`; returns the status.
    pub fn write(&self, q: u16, sector: u64, data: &[u8]) -> Result<u8, DriverError> {
        self.request(q, req_type::OUT, sector, data, 0)
            .map(|c| c.status)
    }
}

/// Parameters of the random-read benchmark.
#[derive(Clone, Copy, Debug)]
pub struct BenchParams {
    /// Queues used (one submitting thread each).
    pub queues: u16,
    /// Requests in flight per queue.
    pub queue_depth: u16,
    /// Requests completed per queue.
    pub requests_per_queue: u64,
    /// Bytes per read (a multiple of 512).
    pub block_size: u32,
    /// Seed of the sector generator.
    pub seed: u64,
}

impl Default for BenchParams {
    fn default() -> Self {
        Self {
            queues: 1,
            queue_depth: 32,
            requests_per_queue: 10_000,
            block_size: 4096,
            seed: 1,
        }
    }
}

/// What the benchmark measured.
#[derive(Clone, Copy, Debug)]
pub struct BenchReport {
    /// Requests completed.
    pub completions: u64,
    /// Requests completed with a status other than OK.
    pub errors: u64,
    /// Interrupts received.
    pub interrupts: u64,
    /// Wall time from the first submission to the last completion.
    pub elapsed: Duration,
    /// Completions per second.
    pub iops: f64,
}

/// Drives `dev` directly with random `block_size` reads, `queue_depth` in flight on each of
/// `queues` queues (indirect descriptors, event idx), and measures IOPS.
pub fn random_reads(
    dev: Arc<VirtioBlkDevice>,
    p: &BenchParams,
) -> Result<BenchReport, DriverError> {
    use super::features as f;
    let offered = dev.config().offered_features();
    let wanted = offered & (f::VERSION_1 | f::INDIRECT_DESC | f::EVENT_IDX | f::MQ | f::BLK_SIZE);
    let queues = if wanted & f::MQ != 0 {
        p.queues.max(1)
    } else {
        1
    };
    let size = dev.config().max_queue_size;
    let driver = DirectDriver::start(dev, wanted, queues, size)?;
    let blocks = (driver.device().capacity() * 512 / u64::from(p.block_size)).max(1);
    let start = Instant::now();
    let results: Vec<Result<(u64, u64), DriverError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..queues)
            .map(|q| {
                let driver = &driver;
                s.spawn(move || bench_queue(driver, q, p, blocks))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(DriverError::Timeout)))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut completions = 0;
    let mut errors = 0;
    for r in results {
        let (c, e) = r?;
        completions += c;
        errors += e;
    }
    let interrupts = driver.sink().total();
    Ok(BenchReport {
        completions,
        errors,
        interrupts,
        elapsed,
        iops: completions as f64 / elapsed.as_secs_f64().max(1e-9),
    })
}

fn bench_queue(
    driver: &DirectDriver,
    q: u16,
    p: &BenchParams,
    blocks: u64,
) -> Result<(u64, u64), DriverError> {
    let mut queue = driver.queue(q);
    let indirect = driver.features() & super::features::INDIRECT_DESC != 0;
    let per_chain = if indirect { 1 } else { 3 };
    let depth = usize::from(p.queue_depth.max(1)).min(usize::from(queue.size()) / per_chain);
    let slot_len = 64 + u64::from(p.block_size);
    let area = driver.alloc(slot_len * depth as u64, 4096)?;
    let sectors_per_block = u64::from(p.block_size / 512);
    let mut rng = p.seed ^ (u64::from(q) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut slot_of = vec![0usize; usize::from(queue.size())];
    let mem = driver.mem.clone();
    let mut submit = |queue: &mut DriverQueue, slot: usize| -> Result<u16, DriverError> {
        // xorshift64*
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        let block = rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % blocks;
        let base = area + slot as u64 * slot_len;
        let mut header = [0u8; 16];
        header[8..16].copy_from_slice(&(block * sectors_per_block).to_le_bytes());
        let _ = mem.write_slice(&header, GuestAddress(base));
        let bufs = [
            Buf {
                addr: base,
                len: 16,
                device_writable: false,
            },
            Buf {
                addr: base + 64,
                len: p.block_size,
                device_writable: true,
            },
            Buf {
                addr: base + 16,
                len: 1,
                device_writable: true,
            },
        ];
        if indirect {
            queue.add_indirect(base + 32, &bufs)
        } else {
            queue.add(&bufs)
        }
        .ok_or(DriverError::RingFull)
    };
    let mut submitted = 0u64;
    let mut completed = 0u64;
    let mut errors = 0u64;
    for slot in 0..depth {
        if submitted == p.requests_per_queue {
            break;
        }
        let head = submit(&mut queue, slot)?;
        slot_of[usize::from(head)] = slot;
        submitted += 1;
    }
    queue.kick(&driver.regs);
    let message = if queue.vector() == NO_VECTOR {
        0
    } else {
        queue.vector()
    };
    while completed < p.requests_per_queue {
        let seen = driver.sink.count(message);
        let mut progressed = false;
        while let Some(u) = queue.pop_used().map_err(DriverError::Ring)? {
            progressed = true;
            completed += 1;
            let slot = slot_of[usize::from(u.id)];
            let st: u8 = driver
                .mem
                .read_obj(GuestAddress(area + slot as u64 * slot_len + 16))
                .unwrap_or(0xFF);
            if st != req_status::OK {
                errors += 1;
            }
            if submitted < p.requests_per_queue {
                let head = submit(&mut queue, slot)?;
                slot_of[usize::from(head)] = slot;
                submitted += 1;
            }
        }
        if progressed {
            queue.kick(&driver.regs);
            continue;
        }
        queue.enable_interrupts();
        if queue.used_idx() != queue.last_used.0 {
            continue;
        }
        if driver.regs.status() & status::DEVICE_NEEDS_RESET != 0 {
            return Err(DriverError::NeedsReset);
        }
        let interrupted = driver.sink.wait(message, seen, PATIENCE).is_ok();
        if !interrupted && queue.used_idx() == queue.last_used.0 {
            return Err(DriverError::Timeout);
        }
        if queue.vector() == NO_VECTOR {
            let _ = driver.regs.isr();
        }
    }
    Ok((completed, errors))
}
