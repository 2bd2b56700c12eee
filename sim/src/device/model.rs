//! [`VirtioBlkDevice`]: the PCI function, its lifecycle, and the state its queue threads share.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use storport_sim::Signal;
use storport_sim::device::{Bar, DmaWatch, GuestMemory, InterruptSink, PciDevice};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::backend::Backend;
use super::blk::Context;
use super::config::{DeviceConfig, features};
use super::fault::{FaultInjector, FaultMode};
use super::msix::{ISR_CONFIG, Interrupts, NO_VECTOR};
use super::packed::PackedRing;
use super::pci::{ConfigSpace, NOTIFY_OFF_MULTIPLIER, PCI_CFG_DATA};
use super::queue_thread::{self, QueueControl, QueueCounters, QueueStats};
use super::transport::{self, CommonCfg, blk as blk_cfg, layout, status};
use super::{MSIX_BAR, VIRTIO_BAR};

/// Why a device could not be built.
#[derive(Debug)]
pub enum DeviceError {
    /// A configuration value is out of range.
    Config(&'static str),
    /// Guest memory or the backend could not be set up.
    Io(std::io::Error),
}

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(what) => write!(f, "invalid device configuration: {what}"),
            Self::Io(e) => write!(f, "device setup failed: {e}"),
        }
    }
}

impl std::error::Error for DeviceError {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by the register side and the queue threads.
pub struct Shared {
    pub(crate) config: DeviceConfig,
    pub(crate) mem: Arc<GuestMemoryMmap>,
    pub(crate) backend: Backend,
    pub(crate) interrupts: Interrupts,
    pub(crate) fault: FaultInjector,
    pub(crate) queue_ctl: Vec<QueueControl>,
    pub(crate) queue_stats: Vec<QueueStats>,
    queue_vectors: Vec<AtomicU16>,
    msix_config: AtomicU16,
    capacity: AtomicU64,
    generation: AtomicU8,
    negotiated: AtomicU64,
    writeback: AtomicBool,
    needs_reset: AtomicBool,
    driver_ok: AtomicBool,
    /// Notified when a queue thread is done with a chain and when the device sets
    /// DEVICE_NEEDS_RESET ([`VirtioBlkDevice::wait_until`]).
    pub(crate) events: Signal,
    /// Bus Master Enable was cleared in the PCI command register: no DMA (as QEMU: memory
    /// accesses of a function without bus mastering fail).
    dma_off: AtomicBool,
    /// The device was surprise-removed: registers read all ones, nothing is processed.
    removed: AtomicBool,
    /// Resets (writes of 0 to `device_status`) to ignore.
    ignore_resets: AtomicU32,
    /// How long a `Slow` request is held, in milliseconds.
    slow_ms: AtomicU64,
    /// `Slow` holds that ended (the request was then served, dropped, or abandoned).
    pub(crate) holds_ended: AtomicU64,
    /// Queue interrupts are held back (recorded, sent on release).
    hold_interrupts: AtomicBool,
    /// Queues whose interrupt was held back, as a bit mask (queues 0..63).
    held_queues: AtomicU64,
    /// Device writes into completed requests' memory are reported here.
    pub(crate) watch: Arc<DmaWatch>,
    /// A reset was written but a queue thread has not stopped yet: `device_status` keeps its
    /// value until they all have (the driver polls it, VIRTIO 1.2 4.1.4.3.2).
    reset_pending: AtomicBool,
    /// How long a reset takes at least, in milliseconds (a device slow to reset).
    reset_delay_ms: AtomicU64,
    /// When the pending reset was written.
    reset_started: Mutex<Option<std::time::Instant>>,
}

impl Shared {
    /// Whether the device may access guest memory: bus mastering on and still present.
    pub(crate) fn dma_allowed(&self) -> bool {
        !self.dma_off.load(Ordering::Acquire) && !self.removed.load(Ordering::Acquire)
    }

    /// Whether the device was surprise-removed.
    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// How long a `Slow` request is held.
    pub(crate) fn slow_time(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.slow_ms.load(Ordering::Relaxed))
    }

    /// Sends queue `index`'s interrupt, or records it while interrupts are held back.
    pub(crate) fn signal_queue(&self, index: u16) {
        if self.hold_interrupts.load(Ordering::Acquire) {
            self.held_queues
                .fetch_or(1u64 << (index % 64), Ordering::AcqRel);
            // Released between the check and the record: send it now.
            if self.hold_interrupts.load(Ordering::Acquire) {
                return;
            }
        }
        self.interrupts
            .signal(self.queue_vector(index), super::msix::ISR_QUEUE);
    }

    /// Whether the device stopped processing (DEVICE_NEEDS_RESET).
    pub(crate) fn is_broken(&self) -> bool {
        self.needs_reset.load(Ordering::Acquire)
    }

    /// Sets DEVICE_NEEDS_RESET and sends a configuration-change notification (VIRTIO 1.2 2.1.2).
    pub(crate) fn set_needs_reset(&self) {
        if !self.needs_reset.swap(true, Ordering::AcqRel) {
            self.signal_config();
        }
        self.events.notify();
    }

    fn signal_config(&self) {
        self.interrupts
            .signal(self.msix_config.load(Ordering::Acquire), ISR_CONFIG);
    }

    /// The MSI-X vector of queue `index`.
    pub(crate) fn queue_vector(&self, index: u16) -> u16 {
        self.queue_vectors
            .get(usize::from(index))
            .map_or(NO_VECTOR, |v| v.load(Ordering::Acquire))
    }

    /// Whether writes are cached: with CONFIG_WCE the `writeback` field decides; with FLUSH
    /// alone the device is write-back; with neither, write-through (VIRTIO 1.2 5.2.6.3).
    fn writeback_effective(&self) -> bool {
        let n = self.negotiated.load(Ordering::Acquire);
        if n & features::CONFIG_WCE != 0 {
            self.writeback.load(Ordering::Acquire)
        } else {
            n & features::FLUSH != 0 && self.config.writeback
        }
    }

    /// What the request executor needs.
    pub(crate) fn blk_context(&self) -> Context<'_> {
        Context {
            config: &self.config,
            capacity: self.capacity.load(Ordering::Acquire),
            negotiated: self.negotiated.load(Ordering::Acquire),
            writeback: self.writeback_effective(),
            backend: &self.backend,
            mem: &self.mem,
        }
    }
}

/// A virtio-blk PCI function (modern, virtio 1.x) with its guest memory and disk.
pub struct VirtioBlkDevice {
    shared: Arc<Shared>,
    pci: Mutex<ConfigSpace>,
    common: Mutex<CommonCfg>,
    /// Queue threads; this lock also serialises lifecycle changes (status writes, reset).
    workers: Mutex<Vec<Option<JoinHandle<()>>>>,
    msix_pba_offset: u64,
    guest_memory: GuestMemory,
}

impl VirtioBlkDevice {
    /// Builds the device, its guest memory (`config.guest_memory_size` bytes at
    /// `config.guest_memory_base`) and its backend.
    pub fn new(config: DeviceConfig) -> Result<Self, DeviceError> {
        if config.num_queues == 0 || config.num_queues > 1024 {
            return Err(DeviceError::Config("num_queues must be 1..=1024"));
        }
        // Not necessarily a power of two: a hostile device may offer 3 (the driver must then use
        // a power of two below it, or refuse the device).
        if config.max_queue_size == 0 || config.max_queue_size > 32768 {
            return Err(DeviceError::Config("max_queue_size must be 1..=32768"));
        }
        if !matches!(config.logical_block_size, 512 | 1024 | 2048 | 4096) {
            return Err(DeviceError::Config("logical_block_size must be 512..=4096"));
        }
        if config.msix_vector_count() > 2048 {
            return Err(DeviceError::Config("at most 2048 MSI-X vectors"));
        }
        if config.guest_memory_base == 0 || config.guest_memory_size == 0 {
            return Err(DeviceError::Config(
                "guest memory must be nonempty at a nonzero base",
            ));
        }
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(
            GuestAddress(config.guest_memory_base),
            config.guest_memory_size,
        )])
        .map_err(|e| DeviceError::Io(std::io::Error::other(e.to_string())))?;
        let host_base = mem
            .get_host_address(GuestAddress(config.guest_memory_base))
            .map_err(|e| DeviceError::Io(std::io::Error::other(e.to_string())))?;
        let mem = Arc::new(mem);
        let bytes = config
            .capacity_sectors
            .checked_mul(512)
            .ok_or(DeviceError::Config("capacity overflows"))?;
        let backend = Backend::new(&config.backend, bytes).map_err(DeviceError::Io)?;
        let vectors = config.msix_vector_count();
        let n = usize::from(config.num_queues);
        let guest_memory = GuestMemory {
            host_base,
            guest_base: config.guest_memory_base,
            len: config.guest_memory_size,
            owner: mem.clone(),
        };
        let common = CommonCfg::new(
            config.offered_features(),
            config.num_queues,
            config.max_queue_size,
            vectors,
        );
        let (msix_pba_offset, _) = layout::msix(vectors);
        let shared = Shared {
            capacity: AtomicU64::new(config.capacity_sectors),
            writeback: AtomicBool::new(config.writeback),
            mem,
            backend,
            interrupts: Interrupts::new(vectors),
            fault: FaultInjector::default(),
            queue_ctl: (0..n).map(|_| QueueControl::default()).collect(),
            queue_stats: (0..n).map(|_| QueueStats::default()).collect(),
            queue_vectors: (0..n).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
            msix_config: AtomicU16::new(NO_VECTOR),
            generation: AtomicU8::new(0),
            negotiated: AtomicU64::new(0),
            needs_reset: AtomicBool::new(false),
            driver_ok: AtomicBool::new(false),
            events: Signal::new(),
            dma_off: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            ignore_resets: AtomicU32::new(0),
            slow_ms: AtomicU64::new(200),
            holds_ended: AtomicU64::new(0),
            hold_interrupts: AtomicBool::new(false),
            held_queues: AtomicU64::new(0),
            watch: Arc::new(DmaWatch::new()),
            reset_pending: AtomicBool::new(false),
            reset_delay_ms: AtomicU64::new(0),
            reset_started: Mutex::new(None),
            config,
        };
        Ok(Self {
            shared: Arc::new(shared),
            pci: Mutex::new(ConfigSpace::new(vectors)),
            common: Mutex::new(common),
            workers: Mutex::new((0..n).map(|_| None).collect()),
            msix_pba_offset,
            guest_memory,
        })
    }

    /// The region all DMA-able memory is carved from (hand it to storport-sim).
    pub fn guest_memory(&self) -> GuestMemory {
        self.guest_memory.clone()
    }

    /// The device's view of guest memory.
    pub fn memory(&self) -> &Arc<GuestMemoryMmap> {
        &self.shared.mem
    }

    /// The configuration the device was built from.
    pub fn config(&self) -> &DeviceConfig {
        &self.shared.config
    }

    /// Current capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.shared.capacity.load(Ordering::Acquire)
    }

    /// Features the driver and device agreed on (0 before FEATURES_OK).
    pub fn negotiated_features(&self) -> u64 {
        self.shared.negotiated.load(Ordering::Acquire)
    }

    /// The device status as the driver would read it.
    pub fn status(&self) -> u8 {
        let needs_reset = if self.shared.is_broken() {
            status::DEVICE_NEEDS_RESET
        } else {
            0
        };
        lock(&self.common).status | needs_reset
    }

    /// Changes the capacity (the backend grows or shrinks), bumps `config_generation` and,
    /// once the driver is running, signals a configuration change.
    pub fn resize(&self, capacity_sectors: u64) -> std::io::Result<()> {
        let bytes = capacity_sectors
            .checked_mul(512)
            .ok_or_else(|| std::io::Error::other("capacity overflows"))?;
        self.shared.backend.resize(bytes)?;
        self.shared
            .capacity
            .store(capacity_sectors, Ordering::Release);
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        if self.shared.driver_ok.load(Ordering::Acquire) {
            self.shared.signal_config();
        }
        Ok(())
    }

    /// Arms a fault for the `nth` request from now (1 = the next one).
    pub fn arm_fault(&self, mode: FaultMode, nth: u64) {
        self.shared.fault.arm(mode, nth);
    }

    /// Arms a fault for the `nth` request from now taken off `queue` (any queue if `None`).
    pub fn arm_fault_on(&self, mode: FaultMode, queue: Option<u16>, nth: u64) {
        self.shared.fault.arm_on(mode, queue, nth);
    }

    /// Whether an armed fault has not fired yet.
    pub fn fault_armed(&self) -> bool {
        self.shared.fault.armed()
    }

    /// How many armed faults have fired.
    pub fn faults_fired(&self) -> u64 {
        self.shared.fault.fired()
    }

    /// The request faults that fired, with their queues, in order.
    pub fn fired_faults(&self) -> Vec<(FaultMode, u16)> {
        self.shared.fault.fired_log()
    }

    /// How long a [`FaultMode::Slow`] request is held (default 200 ms).
    pub fn set_slow_ms(&self, ms: u64) {
        self.shared.slow_ms.store(ms, Ordering::Relaxed);
    }

    /// The next `count` resets (writes of 0 to `device_status`) are ignored: the status stays,
    /// the queues keep running (a device that does not acknowledge its reset).
    pub fn ignore_resets(&self, count: u32) {
        self.shared.ignore_resets.store(count, Ordering::Release);
    }

    /// Surprise removal: from now on every register and configuration read returns all ones,
    /// writes are dropped, no request is processed and no interrupt is sent.
    pub fn surprise_remove(&self) {
        self.shared.removed.store(true, Ordering::Release);
        for ctl in &self.shared.queue_ctl {
            ctl.kick();
        }
    }

    /// `Slow` holds that have ended (the request then served, dropped or abandoned).
    pub fn holds_ended(&self) -> u64 {
        self.shared.holds_ended.load(Ordering::Acquire)
    }

    /// Holds queue interrupts back (`true`) or sends every held one (`false`): completions pile
    /// up in the used rings meanwhile.
    pub fn hold_interrupts(&self, hold: bool) {
        self.shared.hold_interrupts.store(hold, Ordering::Release);
        if !hold {
            let held = self.shared.held_queues.swap(0, Ordering::AcqRel);
            for q in 0..self.shared.queue_ctl.len().min(64) {
                if held & (1u64 << q) != 0 {
                    self.shared.signal_queue(q as u16);
                }
            }
        }
    }

    /// Whether the device was surprise-removed.
    pub fn removed(&self) -> bool {
        self.shared.is_removed()
    }

    /// Whether Bus Master Enable is cleared (the driver cut the device's DMA).
    pub fn dma_cut(&self) -> bool {
        self.shared.dma_off.load(Ordering::Acquire)
    }

    /// Announces `capacity_sectors` in the configuration (with a configuration interrupt)
    /// without resizing the backend: a device reporting a capacity it does not have.
    pub fn announce_capacity(&self, capacity_sectors: u64) {
        self.shared
            .capacity
            .store(capacity_sectors, Ordering::Release);
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        if self.shared.driver_ok.load(Ordering::Acquire) {
            self.shared.signal_config();
        }
    }

    /// The watch that records device writes into completed requests' memory.
    pub fn watch(&self) -> &Arc<DmaWatch> {
        &self.shared.watch
    }

    /// Counters of queue `index`.
    pub fn queue_counters(&self, index: u16) -> Option<QueueCounters> {
        self.shared
            .queue_stats
            .get(usize::from(index))
            .map(QueueStats::snapshot)
    }

    /// Counters of every queue.
    pub fn counters(&self) -> Vec<QueueCounters> {
        self.shared
            .queue_stats
            .iter()
            .map(QueueStats::snapshot)
            .collect()
    }

    /// Waits until `condition` holds, checking it at once, whenever a queue thread is done with
    /// a chain (after its used entry and interrupt, if any) and when the device sets
    /// DEVICE_NEEDS_RESET, and when an armed fault fires, at most `timeout`; the error names
    /// `what` did not happen.
    pub fn wait_until(
        &self,
        what: impl std::fmt::Display,
        timeout: std::time::Duration,
        condition: impl FnMut() -> bool,
    ) -> Result<(), String> {
        self.shared.events.wait_until(what, timeout, condition)
    }

    /// Number of queue threads running.
    pub fn running_queues(&self) -> usize {
        lock(&self.workers).iter().filter(|w| w.is_some()).count()
    }

    /// Reads disk contents directly, bypassing the queues (for verification).
    pub fn read_disk(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.shared.backend.read_bytes(offset, out)
    }

    /// Writes disk contents directly, bypassing the queues (to prepare a test).
    pub fn write_disk(&self, offset: u64, input: &[u8]) -> std::io::Result<()> {
        self.shared.backend.write_bytes(offset, input)
    }

    /// Device reset (VIRTIO 1.2 4.1.4.3.1): stops the queue threads, so that no device write to
    /// guest memory follows, then returns every register to its initial value. A thread busy with
    /// a request gets 1 ms to stop; after that the write returns and the reset completes when the
    /// last thread has stopped, seen at a later register access (`device_status` keeps its
    /// value until then, as a device whose reset takes a while).
    pub fn reset(&self) {
        let mut workers = lock(&self.workers);
        // A device already at its reset state (status 0, no queue running, no reset pending)
        // has nothing to stop: the reset is done at once, however slow its resets otherwise
        // are. Held pending instead, it would read 0 all the while (the status it keeps) and
        // tell the driver it may initialise a device that then drops every write until the
        // reset ends: no real device acknowledges a reset it has not finished.
        let idle = lock(&self.common).status == 0;
        if idle
            && workers.iter().all(Option::is_none)
            && !self.shared.reset_pending.load(Ordering::Acquire)
        {
            self.complete_reset(&mut workers);
            return;
        }
        for (i, w) in workers.iter().enumerate() {
            if w.is_some() {
                self.shared.queue_ctl[i].stop();
            }
        }
        let now = storport_sim::sched::now();
        *lock(&self.shared.reset_started) = Some(now);
        let slow = self.shared.reset_delay_ms.load(Ordering::Acquire) > 0;
        let end = now + std::time::Duration::from_millis(1);
        while slow || !Self::workers_stopped(&workers) {
            if slow || storport_sim::sched::now() >= end {
                self.shared.reset_pending.store(true, Ordering::Release);
                return;
            }
            if storport_sim::sched::active() {
                storport_sim::sched::wait(Some(end));
            } else {
                std::thread::yield_now();
            }
        }
        self.complete_reset(&mut workers);
    }

    /// Every reset from now on takes at least `ms` milliseconds: `device_status` keeps its value
    /// that long after the write of 0 (0: as fast as the queue threads stop).
    pub fn set_reset_delay_ms(&self, ms: u64) {
        self.shared.reset_delay_ms.store(ms, Ordering::Release);
    }

    /// Whether the reset's minimum time has passed.
    fn reset_time_passed(&self) -> bool {
        let delay = self.shared.reset_delay_ms.load(Ordering::Acquire);
        lock(&self.shared.reset_started).is_none_or(|started| {
            storport_sim::sched::now().saturating_duration_since(started)
                >= std::time::Duration::from_millis(delay)
        })
    }

    /// Whether every queue thread has ended (or is the calling thread, which a port delivering an
    /// interrupt synchronously could make it: it ends on its own).
    fn workers_stopped(workers: &[Option<JoinHandle<()>>]) -> bool {
        let me = std::thread::current().id();
        workers
            .iter()
            .flatten()
            .all(|h| storport_sim::sched::is_finished(h) || h.thread().id() == me)
    }

    /// A reset waiting for its queue threads: completed once they have all stopped.
    fn settle_reset(&self) {
        if !self.shared.reset_pending.load(Ordering::Acquire) {
            return;
        }
        let mut workers = lock(&self.workers);
        if self.shared.reset_pending.load(Ordering::Acquire)
            && Self::workers_stopped(&workers)
            && self.reset_time_passed()
        {
            self.complete_reset(&mut workers);
        }
    }

    /// Joins the (stopped) queue threads and returns every register to its initial value.
    fn complete_reset(&self, workers: &mut [Option<JoinHandle<()>>]) {
        self.stop_workers(workers);
        self.shared.reset_pending.store(false, Ordering::Release);
        let mut common = lock(&self.common);
        *common = CommonCfg::new(
            self.shared.config.offered_features(),
            self.shared.config.num_queues,
            self.shared.config.max_queue_size,
            self.shared.interrupts.vectors(),
        );
        for v in &self.shared.queue_vectors {
            v.store(NO_VECTOR, Ordering::Release);
        }
        self.shared.msix_config.store(NO_VECTOR, Ordering::Release);
        self.shared.negotiated.store(0, Ordering::Release);
        self.shared
            .writeback
            .store(self.shared.config.writeback, Ordering::Release);
        self.shared.driver_ok.store(false, Ordering::Release);
        self.shared.needs_reset.store(false, Ordering::Release);
        self.shared.interrupts.clear_isr();
    }

    fn stop_workers(&self, workers: &mut [Option<JoinHandle<()>>]) {
        for (i, w) in workers.iter().enumerate() {
            if w.is_some() {
                self.shared.queue_ctl[i].stop();
            }
        }
        for w in workers.iter_mut() {
            if let Some(handle) = w.take() {
                // A queue thread never resets the device itself, but if a port delivered an
                // interrupt synchronously and its handler reset the device, joining ourselves
                // would deadlock: that thread exits on its own after this returns.
                if handle.thread().id() != std::thread::current().id() {
                    let _ = storport_sim::sched::join(handle);
                }
            }
        }
    }

    fn write_status(&self, value: u8) {
        if value == 0 {
            let ignored = self
                .shared
                .ignore_resets
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok();
            if !ignored {
                self.reset();
            }
            return;
        }
        let mut workers = lock(&self.workers);
        let mut common = lock(&self.common);
        let old = common.status;
        // DEVICE_NEEDS_RESET belongs to the device.
        let mut new = value & !status::DEVICE_NEEDS_RESET;
        if new & status::FEATURES_OK != 0 && old & status::FEATURES_OK == 0 {
            if common.features_acceptable() {
                self.shared
                    .negotiated
                    .store(common.driver_features, Ordering::Release);
            } else {
                // VIRTIO 1.2 2.2.2: the device does not accept the features by leaving
                // FEATURES_OK clear when the driver re-reads it.
                new &= !status::FEATURES_OK;
            }
        }
        common.status = new;
        if new & status::DRIVER_OK != 0 && old & status::DRIVER_OK == 0 {
            if new & status::FEATURES_OK == 0 {
                self.shared.set_needs_reset();
                return;
            }
            self.shared.driver_ok.store(true, Ordering::Release);
            for q in 0..common.queues.len() {
                if common.queues[q].enabled {
                    self.start_queue(&common, &mut workers, q as u16);
                }
            }
        }
    }

    /// Builds queue `q` from its registers and starts its thread; a bad ring layout sets
    /// DEVICE_NEEDS_RESET.
    fn start_queue(&self, common: &CommonCfg, workers: &mut [Option<JoinHandle<()>>], q: u16) {
        let regs = common.queues[usize::from(q)];
        let negotiated = self.shared.negotiated.load(Ordering::Acquire);
        if negotiated & features::RING_PACKED != 0 {
            self.start_packed_queue(common, workers, q, negotiated);
            return;
        }
        let built = (|| -> Option<Queue> {
            // virtio-queue wants a power-of-two maximum; the size the driver chose is checked
            // against the register value below.
            let max = common.max_queue_size();
            if regs.size > max {
                return None;
            }
            let mut queue = Queue::new(max.checked_next_power_of_two()?).ok()?;
            queue.try_set_size(regs.size).ok()?;
            queue
                .try_set_desc_table_address(GuestAddress(regs.desc))
                .ok()?;
            queue
                .try_set_avail_ring_address(GuestAddress(regs.driver))
                .ok()?;
            queue
                .try_set_used_ring_address(GuestAddress(regs.device))
                .ok()?;
            queue.set_event_idx(negotiated & features::EVENT_IDX != 0);
            queue.set_ready(true);
            // Rings inside guest memory and not at address 0 (which virtio-queue treats as unset).
            (regs.desc != 0
                && regs.driver != 0
                && regs.device != 0
                && queue.is_valid(&*self.shared.mem))
            .then_some(queue)
        })();
        self.start_queue_thread(workers, q, built);
    }

    /// Starts queue `q`'s thread on `ring` (unless it runs already); a ring that could not be
    /// built, or a thread that could not start, is a device that needs a reset.
    fn start_queue_thread<R: queue_thread::DeviceRing>(
        &self,
        workers: &mut [Option<JoinHandle<()>>],
        q: u16,
        ring: Option<R>,
    ) {
        let Some(ring) = ring else {
            self.shared.set_needs_reset();
            return;
        };
        if workers[usize::from(q)].is_some() {
            return;
        }
        self.shared.queue_ctl[usize::from(q)].rearm();
        match queue_thread::spawn(self.shared.clone(), q, ring) {
            Ok(handle) => workers[usize::from(q)] = Some(handle),
            Err(_) => self.shared.set_needs_reset(),
        }
    }

    /// Builds packed queue `q` (VIRTIO 1.2 2.8) from its registers and starts its thread.
    fn start_packed_queue(
        &self,
        common: &CommonCfg,
        workers: &mut [Option<JoinHandle<()>>],
        q: u16,
        negotiated: u64,
    ) {
        let regs = common.queues[usize::from(q)];
        let ring = PackedRing::new(
            regs.desc,
            regs.driver,
            regs.device,
            regs.size,
            negotiated & features::EVENT_IDX != 0,
        );
        self.start_queue_thread(workers, q, ring.ok());
    }

    fn common_write(&self, offset: u64, data: &[u8]) {
        self.settle_reset();
        if self.shared.reset_pending.load(Ordering::Acquire) {
            // Still resetting: only another reset is taken.
            if offset == transport::common::DEVICE_STATUS && data.first() == Some(&0) {
                self.reset();
            }
            return;
        }
        let effect = {
            let mut common = lock(&self.common);
            let effect = common.write(offset, data);
            self.shared
                .msix_config
                .store(common.msix_config, Ordering::Release);
            for (i, r) in common.queues.iter().enumerate() {
                self.shared.queue_vectors[i].store(r.msix_vector, Ordering::Release);
            }
            effect
        };
        if let Some(q) = effect.enabled_queue {
            // Enabling a queue after DRIVER_OK starts it at once.
            if self.shared.driver_ok.load(Ordering::Acquire) {
                let mut workers = lock(&self.workers);
                let common = lock(&self.common);
                self.start_queue(&common, &mut workers, q);
            }
        }
        if let Some(value) = effect.status {
            self.write_status(value);
        }
    }

    fn device_cfg_read(&self, offset: u64, out: &mut [u8]) {
        let s = transport::blk_config(
            &self.shared.config,
            self.shared.capacity.load(Ordering::Acquire),
            self.shared.writeback.load(Ordering::Acquire),
        );
        copy_out(&s, offset, out);
    }

    fn device_cfg_write(&self, offset: u64, data: &[u8]) {
        // Only `writeback` is writable, and only with CONFIG_WCE (VIRTIO 1.2 5.2.4).
        let negotiated = self.shared.negotiated.load(Ordering::Acquire);
        if negotiated & features::CONFIG_WCE == 0 || offset > blk_cfg::WRITEBACK {
            return;
        }
        if let Some(&v) = data.get((blk_cfg::WRITEBACK - offset) as usize) {
            self.shared.writeback.store(v != 0, Ordering::Release);
        }
    }

    fn notify(&self, offset: u64) {
        let q = offset / u64::from(NOTIFY_OFF_MULTIPLIER);
        if let Some(ctl) = usize::try_from(q)
            .ok()
            .and_then(|q| self.shared.queue_ctl.get(q))
        {
            self.shared.queue_stats[q as usize].notified();
            ctl.kick();
        }
    }
}

fn copy_out(src: &[u8], offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|at| src.get(at).copied())
            .unwrap_or(0);
    }
}

impl Drop for VirtioBlkDevice {
    fn drop(&mut self) {
        let mut workers = lock(&self.workers);
        self.stop_workers(&mut workers);
    }
}

impl PciDevice for VirtioBlkDevice {
    fn config_read(&self, offset: u16, data: &mut [u8]) {
        if self.shared.is_removed() {
            data.fill(0xFF);
            return;
        }
        let window = {
            let pci = lock(&self.pci);
            pci.read(offset, data);
            pci.pci_cfg_window()
        };
        let start = usize::from(offset);
        if start < PCI_CFG_DATA + 4 && start + data.len() > PCI_CFG_DATA {
            // VIRTIO 1.2 4.1.4.9: pci_cfg_data reads the selected BAR bytes.
            let mut bytes = [0u8; 4];
            let len = (window.length as usize).min(4);
            if matches!(len, 1 | 2 | 4) {
                self.bar_read(window.bar, u64::from(window.offset), &mut bytes[..len]);
            }
            for (i, b) in data.iter_mut().enumerate() {
                if let Some(k) = (start + i).checked_sub(PCI_CFG_DATA).filter(|k| *k < 4) {
                    *b = bytes[k];
                }
            }
        }
    }

    fn config_write(&self, offset: u16, data: &[u8]) {
        if self.shared.is_removed() {
            return;
        }
        let start = usize::from(offset);
        let (command, msix_control, window) = {
            let mut pci = lock(&self.pci);
            pci.write(offset, data);
            (pci.command(), pci.msix_control(), pci.pci_cfg_window())
        };
        if start <= 4 && start + data.len() > 4 {
            self.shared.dma_off.store(
                command & super::pci::COMMAND_BUS_MASTER == 0,
                Ordering::Release,
            );
        }
        self.shared.interrupts.update_pci(command, msix_control);
        if start == PCI_CFG_DATA {
            let len = (window.length as usize).min(data.len());
            if matches!(len, 1 | 2 | 4) {
                self.bar_write(window.bar, u64::from(window.offset), &data[..len]);
            }
        }
    }

    fn bars(&self) -> Vec<Bar> {
        lock(&self.pci)
            .bars()
            .into_iter()
            .map(|(index, address, size, is_64bit)| Bar {
                index,
                address,
                size,
                is_64bit,
            })
            .collect()
    }

    fn bar_read(&self, bar: u8, offset: u64, data: &mut [u8]) {
        if self.shared.is_removed() {
            data.fill(0xFF);
            return;
        }
        data.fill(0);
        match bar {
            VIRTIO_BAR => match offset & !(layout::REGION - 1) {
                layout::COMMON => {
                    self.settle_reset();
                    let s = lock(&self.common).snapshot(
                        if self.shared.is_broken() {
                            status::DEVICE_NEEDS_RESET
                        } else {
                            0
                        },
                        self.shared.generation.load(Ordering::Acquire),
                    );
                    copy_out(&s, offset, data);
                }
                layout::ISR => {
                    if offset == layout::ISR
                        && let Some(b) = data.first_mut()
                    {
                        *b = self.shared.interrupts.read_isr();
                    }
                }
                layout::DEVICE => self.device_cfg_read(offset - layout::DEVICE, data),
                _ => {}
            },
            MSIX_BAR if self.shared.interrupts.vectors() > 0 => {
                self.shared
                    .interrupts
                    .bar_read(offset, self.msix_pba_offset, data);
            }
            _ => {}
        }
    }

    fn bar_write(&self, bar: u8, offset: u64, data: &[u8]) {
        if self.shared.is_removed() {
            return;
        }
        match bar {
            VIRTIO_BAR => match offset & !(layout::REGION - 1) {
                layout::COMMON => self.common_write(offset, data),
                layout::DEVICE => self.device_cfg_write(offset - layout::DEVICE, data),
                layout::NOTIFY => self.notify(offset - layout::NOTIFY),
                _ => {}
            },
            MSIX_BAR if self.shared.interrupts.vectors() > 0 => {
                self.shared
                    .interrupts
                    .bar_write(offset, self.msix_pba_offset, data);
            }
            _ => {}
        }
    }

    fn connect_interrupts(&self, sink: Arc<dyn InterruptSink>) {
        self.shared.interrupts.connect(sink);
    }

    fn msix_message_count(&self) -> u16 {
        self.shared.interrupts.vectors()
    }

    fn intx_asserted(&self) -> bool {
        !self.shared.is_removed() && self.shared.interrupts.intx_asserted()
    }

    fn dma_watch(&self) -> Option<Arc<DmaWatch>> {
        Some(self.shared.watch.clone())
    }
}
