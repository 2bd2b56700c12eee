//! One adapter: PnP start (HwStorFindAdapter, HwStorInitialize, passive initialization), its
//! locks, its threads (interrupts, per-CPU DPCs, timer), stop, restart and bus reset.

use std::alloc::Layout;
use std::collections::{HashMap, VecDeque};
use std::ffi::{CString, c_void};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::abi::{
    self, AccessRange, DevExtBoolFn, HwInitializationData, MsiFn, PortConfigurationInformation,
    irql,
};
use crate::cpu::{self, Callback, LockRef, RawSpinLock};
use crate::device::{GuestMemory, PciDevice};
use crate::dpc::{CpuQueue, DpcObject};
use crate::interrupt::IrqLines;
use crate::memory::{FifoPool, GuestAllocator};
use crate::port::PortShared;
use crate::registers::Window;
use crate::request::{Record, RequestTable};
use crate::rules::{Rule, Violation};
use crate::timer::TimerShared;

/// How the adapter's interrupts are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InterruptMode {
    /// MSI-X: one message per vector the device offers (HwMSInterruptRoutine when registered).
    #[default]
    MsiX,
    /// A level-triggered INTx line (HwStorInterrupt).
    Intx,
}

/// Options of one PnP start.
#[derive(Clone, Debug, Default)]
pub struct AdapterOptions {
    /// MSI-X or INTx.
    pub interrupts: InterruptMode,
    /// Crash-dump mode (DUMP_MODE_CRASH 1, HIBER 2, MARK_MEMORY 3, RESUME 4): DriverEntry runs
    /// again with NULL arguments, one CPU, no interrupts (the port polls HwStorInterrupt).
    pub dump_mode: Option<u8>,
    /// FindAdapter's ArgumentString (dump mode passes "dump=1" when this is None).
    pub argument_string: Option<String>,
    /// ConfigInfo->SystemIoBusNumber.
    pub bus_number: u32,
    /// ConfigInfo->SlotNumber.
    pub slot_number: u32,
    /// Offer at most this many MSI-X messages.
    pub max_messages: Option<u16>,
    /// REG_DWORD values under the miniport's `Parameters\\Device` key, as StorPortRegistryRead
    /// finds them (name, value). The simulated machine has one adapter per registry, so
    /// `Parameters\\Device<N>` (Global = 0) holds the same values.
    pub registry: Vec<(String, u32)>,
    /// Tell the miniport that an ETW session enabled its tracing (HwStorTracingEnabled) once it
    /// has started, as Storport does when a trace session enables the storport provider.
    pub tracing: bool,
    /// For a dump stack: what the running instance answered to SRB_FUNCTION_DUMP_POINTERS
    /// ([`Adapter::dump_pointers`]): its private data becomes `MiniportDumpData`, its
    /// RequestedDumpBufferSize a `DumpRegion` of that many bytes, and the dump instance's
    /// HwStorFindAdapter is held to the MaximumTransferLength it promised.
    pub dump_pointers: Option<DumpPointers>,
}

/// The running instance's answer to SRB_FUNCTION_DUMP_POINTERS (MINIPORT_DUMP_POINTERS), and the
/// RequestedDumpBufferSize its HwStorFindAdapter asked for: what Storport carries over to the
/// dump stack it builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpPointers {
    /// `Version` (DUMP_MINIPORT_VERSION_1 = 0x0100).
    pub version: u16,
    /// `Size` (sizeof(MINIPORT_DUMP_POINTERS) = 0x70 on x64).
    pub size: u16,
    /// `MaximumTransferLength` in crash-dump mode (SP_UNINITIALIZED_VALUE: not given).
    pub max_transfer: u32,
    /// `NumberOfPhysicalBreaks` in crash-dump mode.
    pub breaks: u32,
    /// `MiniportPrivateDumpData`.
    pub private_data: usize,
    /// `CommonBufferSize` (at most 64 KiB).
    pub common_buffer_size: u32,
    /// The running instance's `PORT_CONFIGURATION_INFORMATION.RequestedDumpBufferSize`.
    pub requested_dump_buffer: u32,
}

/// One entry the miniport wrote to the system event log (StorPortLogError).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventLogEntry {
    /// The unit's address (path, target, lun), 0:0:0 for the adapter.
    pub address: (u8, u8, u8),
    /// The miniport's error code.
    pub code: u32,
    /// The miniport's unique id.
    pub unique_id: u32,
}

/// One ETW event the miniport published (StorPortEtwEvent2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtwEvent {
    /// The miniport's event id.
    pub id: u32,
    /// The description string.
    pub description: String,
    /// STORPORT_ETW_EVENT_KEYWORD_* bits.
    pub keywords: u64,
    /// STORPORT_ETW_LEVEL.
    pub level: u32,
    /// STORPORT_ETW_EVENT_OPCODE.
    pub opcode: u32,
    /// Whether an SRB was named.
    pub with_srb: bool,
    /// The two (name, value) parameters.
    pub parameters: [(String, u64); 2],
}

/// Why a PnP start failed.
#[derive(Clone, Debug)]
pub enum StartError {
    /// No driver loaded (or the dump-mode DriverEntry failed).
    NotLoaded(Option<crate::port::LoadError>),
    /// HwStorFindAdapter returned this (not SP_RETURN_FOUND).
    FindAdapter(u32),
    /// HwStorInitialize returned FALSE.
    Initialize,
    /// The passive-initialization routine returned FALSE.
    PassiveInitialize,
    /// The guest memory region is too small.
    OutOfGuestMemory,
}

/// Values the miniport chose in HwStorFindAdapter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Negotiated {
    pub half_duplex: bool,
    pub msi: Option<MsiFn>,
    pub per_message: bool,
    pub srb_ext_size: u32,
    pub max_transfer: u32,
    pub max_breaks: u32,
    pub max_ios_per_lun: u32,
}

/// Adapter lifecycle phase.
pub(crate) mod phase {
    pub const FIND_ADAPTER: u8 = 0;
    pub const INITIALIZE: u8 = 1;
    pub const PASSIVE_INIT: u8 = 2;
    pub const RUNNING: u8 = 3;
    pub const STOPPED: u8 = 4;
}

/// Gate bits: while any is set, new requests wait in the pending queue.
pub(crate) mod gate {
    pub const STOPPED: u32 = 1;
    pub const PAUSED: u32 = 2;
    pub const BUSY: u32 = 4;
    pub const RESET: u32 = 8;
    pub const DEVICE_BUSY: u32 = 16;
}

/// Decides, from the offset and the bytes, whether a StorPortSetBusDataByOffset write fails.
pub type BusDataRefusal = Box<dyn Fn(u32, &[u8]) -> bool + Send + Sync>;

pub(crate) struct AdapterInner {
    pub serial: u64,
    pub self_weak: Weak<AdapterInner>,
    pub port: Arc<PortShared>,
    pub hw: HwInitializationData,
    pub device: Arc<dyn PciDevice>,
    pub alloc: GuestAllocator,
    devext: usize,
    devext_layout: Layout,
    /// The device extension's guest-memory block (`PortOptions::windows_rules_only`).
    devext_block: Option<crate::memory::Block>,
    pub dump: Option<u8>,
    cpus: u32,
    /// Interrupt lines: MSI-X messages offered, or 1.
    pub lines: u32,
    /// MSI-X messages the device offers (0 with INTx).
    pub messages: u32,
    pub neg: OnceLock<Negotiated>,
    pub phase: AtomicU8,
    pub channels: AtomicU32,
    pub perf_flags: AtomicU32,
    pub first_msg: AtomicU32,
    pub last_msg: AtomicU32,
    pub startio_lock: RawSpinLock,
    /// The HwStorAdapterControl type being run (u32::MAX: none).
    pub control_in_progress: AtomicU32,
    /// StorPortMarkDumpMemory calls accepted: (address, length, flags).
    pub marked_dump_memory: Mutex<Vec<(usize, usize, u32)>>,
    /// What HwStorFindAdapter set in RequestedDumpBufferSize.
    pub requested_dump_buffer: AtomicU32,
    /// The DumpRegion handed to a dump instance: (virtual, physical, length).
    pub dump_region: Mutex<Option<(usize, u64, u32)>>,
    /// What the running instance promised in its dump pointers (dump stacks only).
    dump_pointers: Option<DumpPointers>,
    pub int_locks: Box<[RawSpinLock]>,
    pub windows: RwLock<Vec<Window>>,
    pub access_ranges: Vec<AccessRange>,
    /// (host, len, SrbExtensionSize at the time of the call).
    pub uncached: Mutex<Option<(usize, usize, u32)>>,
    /// Which StorPortSetBusDataByOffset writes fail ([`Adapter::refuse_bus_data_writes`]).
    pub bus_data_refusal: Mutex<Option<BusDataRefusal>>,
    /// Requests are sent without an SRB extension ([`Adapter::withhold_srb_extensions`]).
    pub withhold_srb_extensions: AtomicBool,
    pub passive_init: Mutex<Option<DevExtBoolFn>>,
    pub dpcs: Mutex<Vec<Arc<DpcObject>>>,
    pub cpu_queues: Box<[CpuQueue]>,
    pub requests: RequestTable,
    pub gate: AtomicU32,
    pub active: AtomicUsize,
    pub pending: Mutex<VecDeque<Box<Record>>>,
    pub busy_remaining: AtomicU32,
    pub device_busy: Mutex<HashMap<(u8, u8, u8), u32>>,
    /// `device_busy` may hold entries (completions skip its lock while it does not).
    pub device_busy_entries: AtomicBool,
    /// Finished request records, reused by the next requests (no allocation per request).
    #[expect(
        clippy::vec_box,
        reason = "records travel as Box<Record> (the request table, the timer, the parked list); the pool keeps those boxes"
    )]
    pub record_pool: Mutex<Vec<Box<crate::request::Record>>>,
    pub timer: TimerShared,
    pub irq: Arc<IrqLines>,
    pub pool: Mutex<HashMap<usize, Layout>>,
    pub srb_pool: FifoPool,
    pub supported_controls: Mutex<Vec<bool>>,
    pub log: Mutex<Vec<String>>,
    pub shutdown: AtomicBool,
    pub interrupts_enabled: AtomicBool,
    pub reset_epoch: AtomicU64,
    pub next_request: AtomicU64,
    pub lock_counts: LockCounters,
    pub activity: ActivityCounters,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The most RequestComplete calls one DPC or ISR run made.
    pub max_completions_per_run: AtomicU32,
    /// A multi-tier reset is running.
    escalating: AtomicBool,
    /// `AdapterOptions::registry`.
    pub registry: Vec<(String, u32)>,
    /// The registry buffer the miniport holds (StorPortAllocateRegistryBuffer): address, layout.
    pub registry_buffer: Mutex<Option<(usize, Layout)>>,
    /// StorPortLogError entries, in order.
    pub event_log: Mutex<Vec<EventLogEntry>>,
    /// Whether HwStorTracingEnabled(TRUE) was the last call.
    pub tracing: AtomicBool,
    /// StorPortEtwEvent2 events, in order.
    pub etw: Mutex<Vec<EtwEvent>>,
}

/// Callbacks run and lock acquisitions of one adapter, for the I/O-path benchmark
/// ([`Adapter::lock_counts`]). Relaxed counters bumped once per event: callbacks and the locks
/// the port holds around them in `cpu::invoke`, the miniport's own acquisitions in
/// `cpu::miniport_acquire` (by the callback they happen in), StorPortSynchronizeAccess calls in
/// the export. Nothing reads them but `Adapter::lock_counts`.
#[derive(Default)]
pub(crate) struct LockCounters {
    callbacks: [AtomicU64; CallbackKind::COUNT],
    miniport: [[AtomicU64; LockKind::COUNT]; CallbackKind::COUNT],
    port: [[AtomicU64; LockKind::COUNT]; CallbackKind::COUNT],
    sync_access: AtomicU64,
}

impl LockCounters {
    /// Counts one run of callback `cb`.
    pub fn callback(&self, cb: Option<Callback>) {
        self.callbacks[CallbackKind::of(cb) as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one acquisition of `l` in callback `cb`, by the port around the callback
    /// (`by_port`) or by the miniport.
    pub fn acquired(&self, cb: Option<Callback>, l: LockRef, by_port: bool) {
        let side = if by_port { &self.port } else { &self.miniport };
        side[CallbackKind::of(cb) as usize][LockKind::of(l) as usize]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one StorPortSynchronizeAccess call.
    pub fn synchronize_access(&self) {
        self.sync_access.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LockCounts {
        let load =
            |a: &[AtomicU64; LockKind::COUNT]| a.each_ref().map(|c| c.load(Ordering::Relaxed));
        LockCounts {
            callbacks: self.callbacks.each_ref().map(|c| c.load(Ordering::Relaxed)),
            miniport: self.miniport.each_ref().map(load),
            port: self.port.each_ref().map(load),
            synchronize_access: self.sync_access.load(Ordering::Relaxed),
        }
    }
}

/// The kinds of lock [`LockCounts`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// The StartIo lock.
    StartIo,
    /// A STOR_DPC's lock.
    Dpc,
    /// The interrupt lock (all messages).
    Interrupt,
    /// One MSI message's lock.
    Msi,
}

impl LockKind {
    /// Number of kinds.
    pub const COUNT: usize = 4;
    /// Every kind, in index order.
    pub const ALL: [LockKind; Self::COUNT] = [Self::StartIo, Self::Dpc, Self::Interrupt, Self::Msi];

    fn of(l: LockRef) -> Self {
        match l {
            LockRef::StartIo => Self::StartIo,
            LockRef::Dpc(_) => Self::Dpc,
            LockRef::Interrupt => Self::Interrupt,
            LockRef::Message(_) => Self::Msi,
        }
    }
}

/// The callbacks [`LockCounts`] tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallbackKind {
    /// HwStorBuildIo.
    BuildIo,
    /// HwStorStartIo.
    StartIo,
    /// HwStorInterrupt or HwMSInterruptRoutine.
    Isr,
    /// A HwStorDpcRoutine.
    Dpc,
    /// A StorPortSynchronizeAccess routine.
    Synchronized,
    /// Any other callback (or none).
    Other,
}

impl CallbackKind {
    /// Number of kinds.
    pub const COUNT: usize = 6;
    /// Every kind, in index order.
    pub const ALL: [CallbackKind; Self::COUNT] = [
        Self::BuildIo,
        Self::StartIo,
        Self::Isr,
        Self::Dpc,
        Self::Synchronized,
        Self::Other,
    ];

    fn of(cb: Option<Callback>) -> Self {
        match cb {
            Some(Callback::BuildIo) => Self::BuildIo,
            Some(Callback::StartIo) => Self::StartIo,
            Some(Callback::Interrupt | Callback::MsiInterrupt) => Self::Isr,
            Some(Callback::Dpc) => Self::Dpc,
            Some(Callback::SynchronizedAccess) => Self::Synchronized,
            _ => Self::Other,
        }
    }
}

/// Callbacks and lock acquisitions of one adapter since it started ([`Adapter::lock_counts`]).
/// Arrays are indexed by [`CallbackKind`] and [`LockKind`] (`as usize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockCounts {
    /// Callbacks run, by kind.
    pub callbacks: [u64; CallbackKind::COUNT],
    /// Locks the miniport acquired (StorPortAcquireSpinLock(Ex), StorPortAcquireMSISpinLock),
    /// by the callback it was in and the lock.
    pub miniport: [[u64; LockKind::COUNT]; CallbackKind::COUNT],
    /// Locks the port held around callbacks (StartIo with one channel, the ISR's interrupt or
    /// message lock, a SynchronizeAccess routine's interrupt lock), by callback and lock.
    pub port: [[u64; LockKind::COUNT]; CallbackKind::COUNT],
    /// StorPortSynchronizeAccess calls.
    pub synchronize_access: u64,
}

impl LockCounts {
    /// Runs of callback `cb`.
    pub fn runs(&self, cb: CallbackKind) -> u64 {
        self.callbacks[cb as usize]
    }

    /// Acquisitions of `lock` by the miniport and the port together, in callback `cb`.
    pub fn taken(&self, cb: CallbackKind, lock: LockKind) -> u64 {
        self.miniport[cb as usize][lock as usize] + self.port[cb as usize][lock as usize]
    }

    /// Acquisitions of `lock` by anyone in any callback.
    pub fn total(&self, lock: LockKind) -> u64 {
        CallbackKind::ALL
            .iter()
            .map(|&cb| self.taken(cb, lock))
            .sum()
    }

    /// `self - earlier`, counter by counter.
    pub fn since(&self, earlier: &LockCounts) -> LockCounts {
        let sub = |a: u64, b: u64| a.saturating_sub(b);
        let mut d = *self;
        for c in 0..CallbackKind::COUNT {
            d.callbacks[c] = sub(self.callbacks[c], earlier.callbacks[c]);
            for k in 0..LockKind::COUNT {
                d.miniport[c][k] = sub(self.miniport[c][k], earlier.miniport[c][k]);
                d.port[c][k] = sub(self.port[c][k], earlier.port[c][k]);
            }
        }
        d.synchronize_access = sub(self.synchronize_access, earlier.synchronize_access);
        d
    }
}

/// The counters behind [`Activity`]: each is bumped once its event is over (the callback
/// returned, the completion was delivered), then the port's [`Signal`](crate::Signal) is
/// notified ([`AdapterInner::happened`]).
#[derive(Default)]
pub(crate) struct ActivityCounters {
    pub completions: AtomicU64,
    pub interrupts: AtomicU64,
    pub dpcs: AtomicU64,
    pub timer_calls: AtomicU64,
    pub timeouts: AtomicU64,
    pub resets: AtomicU64,
}

/// What happened on one adapter since it started ([`Adapter::activity`]): counts a test can wait
/// for with [`Adapter::wait_until`] instead of sleeping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Requests whose completion was delivered to the submitter (after RequestComplete and the
    /// callback it happened in).
    pub completions: u64,
    /// Runs of HwStorInterrupt or HwMSInterruptRoutine that returned.
    pub interrupts: u64,
    /// Runs of a DPC routine that returned.
    pub dpcs: u64,
    /// HwStorTimer calls that returned.
    pub timer_calls: u64,
    /// Requests the port found outstanding past their TimeOutValue.
    pub timeouts: u64,
    /// HwStorResetBus calls that returned (on a timeout or from [`Adapter::reset_bus`]).
    pub resets: u64,
}

// SAFETY: the raw addresses inside (device extension, guest blocks) are plain addresses of
// memory the adapter owns; all shared state is behind atomics or locks.
unsafe impl Send for AdapterInner {}
// SAFETY: as for Send.
unsafe impl Sync for AdapterInner {}

static ADAPTERS: LazyLock<RwLock<HashMap<usize, Weak<AdapterInner>>>> =
    LazyLock::new(Default::default);
static BY_SERIAL: LazyLock<RwLock<HashMap<u64, Weak<AdapterInner>>>> =
    LazyLock::new(Default::default);
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// Runs `f` on the adapter whose device extension is `devext`: the current callback's adapter
/// when it matches (no global lock), else the global registry.
pub(crate) fn with_adapter<R>(
    devext: *mut c_void,
    f: impl FnOnce(&AdapterInner) -> R,
) -> Option<R> {
    if let Some(p) = cpu::frame_adapter(devext as usize) {
        // SAFETY: a frame's adapter is kept alive by whoever invoked the callback (it holds an
        // `Arc` or a reference for the whole call).
        return Some(f(unsafe { &*p }));
    }
    let a = ADAPTERS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(devext as usize))
        .and_then(Weak::upgrade)?;
    Some(f(&a))
}

pub(crate) fn lookup_serial(serial: u64) -> Option<Arc<AdapterInner>> {
    BY_SERIAL
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&serial)
        .and_then(Weak::upgrade)
}

impl AdapterInner {
    /// A record from the pool (or a new one).
    pub(crate) fn take_record(&self) -> Box<crate::request::Record> {
        self.record_pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(crate::request::Record::blank)
    }

    /// Returns a finished record to the pool.
    pub(crate) fn put_record(&self, r: Box<crate::request::Record>) {
        self.record_pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r);
    }

    pub fn arc(&self) -> Arc<AdapterInner> {
        self.self_weak
            .upgrade()
            .expect("adapter alive while its code runs")
    }

    pub fn devext_addr(&self) -> usize {
        self.devext
    }

    pub fn devext_ptr(&self) -> *mut c_void {
        self.devext as *mut c_void
    }

    pub fn cpus(&self) -> u32 {
        self.cpus
    }

    pub fn dump_mode(&self) -> bool {
        self.dump.is_some()
    }

    pub fn half_duplex(&self) -> bool {
        self.neg.get().is_some_and(|n| n.half_duplex)
    }

    pub fn per_message(&self) -> bool {
        self.neg.get().is_some_and(|n| n.per_message)
    }

    pub fn msi_routine(&self) -> Option<MsiFn> {
        self.neg.get().and_then(|n| n.msi)
    }

    pub fn concurrent_channels(&self) -> u32 {
        self.channels.load(Ordering::Relaxed)
    }

    pub fn report(&self, rule: Rule, params: [u64; 3], message: String) {
        self.port.report(rule, params, Some(self.serial), message);
    }

    pub fn log(&self, line: String) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
        self.port.events.notify();
    }

    /// Counts one event of `counter` (one of `self.activity`'s) and wakes whoever waits.
    pub fn happened(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.port.events.notify();
    }

    fn int_lock(&self, m: u32) -> &RawSpinLock {
        if self.per_message() {
            &self.int_locks[m as usize % self.int_locks.len()]
        } else {
            &self.int_locks[0]
        }
    }

    pub fn lock_raw(&self, l: LockRef) {
        match l {
            LockRef::StartIo => self.startio_lock.lock(),
            LockRef::Interrupt => {
                if self.per_message() {
                    self.int_locks.iter().for_each(RawSpinLock::lock);
                } else {
                    self.int_locks[0].lock();
                }
            }
            LockRef::Message(m) => self.int_lock(m).lock(),
            LockRef::Dpc(p) => {
                // SAFETY: `p` names a DPC object of this adapter (validated when the miniport's
                // STOR_DPC was resolved); the adapter keeps every DPC object alive.
                unsafe { &*(p as *const DpcObject) }.lock.lock()
            }
        }
    }

    pub fn unlock_raw(&self, l: LockRef) {
        match l {
            LockRef::StartIo => self.startio_lock.unlock(),
            LockRef::Interrupt => {
                if self.per_message() {
                    self.int_locks.iter().rev().for_each(RawSpinLock::unlock);
                } else {
                    self.int_locks[0].unlock();
                }
            }
            LockRef::Message(m) => self.int_lock(m).unlock(),
            LockRef::Dpc(p) => {
                // SAFETY: as in `lock_raw`.
                unsafe { &*(p as *const DpcObject) }.lock.unlock()
            }
        }
    }

    /// The locks and IRQL Storport holds around a callback that runs "with the interrupt lock".
    pub fn interrupt_context(&self) -> (u8, &'static [LockRef]) {
        if self.dump_mode() {
            (irql::HIGH, &[LockRef::Interrupt])
        } else {
            (irql::DIRQL, &[LockRef::Interrupt])
        }
    }

    /// The locks Storport holds around HwStorTimer, HwStorResetBus and HwStorStateChange.
    pub fn startio_context(&self) -> (u8, &'static [LockRef]) {
        if self.half_duplex() {
            (irql::DIRQL, &[LockRef::StartIo, LockRef::Interrupt])
        } else {
            (irql::DISPATCH, &[LockRef::StartIo])
        }
    }

    fn spawn(&self, name: String, f: impl FnOnce() + Send + 'static) {
        let h = crate::sched::spawn(name, f).expect("spawn a simulated CPU thread");
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(h);
    }

    /// Reports the device's writes into memory of completed requests against this adapter (the
    /// latest one to take the device).
    fn connect_dma_watch(&self) {
        if let Some(watch) = self.device.dma_watch() {
            let weak = self.self_weak.clone();
            watch.connect(Box::new(move |addr, len| {
                if let Some(a) = weak.upgrade() {
                    a.report(
                        Rule::WriteAfterCompletion,
                        [addr, len as u64, 0],
                        format!(
                            "the device wrote {len} bytes at {addr:#x}, memory of a request already completed"
                        ),
                    );
                }
            }));
        }
    }

    /// Calls HwAdapterControl with the port's locks for `control`.
    pub fn adapter_control(&self, control: u32, param: *mut c_void) -> Option<u32> {
        let f = self.hw.HwAdapterControl?;
        let (lvl, locks): (u8, &[LockRef]) = match control {
            abi::SCSI_STOP_ADAPTER | abi::SCSI_RESTART_ADAPTER => self.interrupt_context(),
            _ => (
                if self.dump_mode() {
                    irql::HIGH
                } else {
                    irql::PASSIVE
                },
                &[],
            ),
        };
        let devext = self.devext_ptr();
        let outer = self.control_in_progress.swap(control, Ordering::SeqCst);
        // SAFETY: `f` is the miniport's HwAdapterControl, called with its device extension and
        // a parameter buffer of the shape `control` requires.
        let status = cpu::invoke(self, Callback::AdapterControl, lvl, locks, || unsafe {
            f(devext, control, param)
        });
        self.control_in_progress.store(outer, Ordering::SeqCst);
        Some(status)
    }

    /// ScsiQuerySupportedControlTypes: records which types the miniport supports.
    fn query_controls(&self) {
        if self.hw.HwAdapterControl.is_none() {
            return;
        }
        let max = abi::SCSI_ADAPTER_CONTROL_MAX as usize;
        // SCSI_SUPPORTED_CONTROL_TYPE_LIST { ULONG MaxControlType; BOOLEAN SupportedTypeList[]; }
        // followed by guard bytes.
        let mut buf = vec![0u8; 4 + max + 16];
        buf[..4].copy_from_slice(&(max as u32).to_le_bytes());
        buf[4 + max..].fill(0xA5);
        self.adapter_control(
            abi::SCSI_QUERY_SUPPORTED_CONTROL_TYPES,
            buf.as_mut_ptr().cast(),
        );
        if buf[4 + max..].iter().any(|&b| b != 0xA5) {
            self.report(
                Rule::AdapterControl,
                [0; 3],
                "HwAdapterControl wrote past SupportedTypeList[MaxControlType]".into(),
            );
        }
        let list: Vec<bool> = buf[4..4 + max].iter().map(|&b| b != 0).collect();
        if !list[abi::SCSI_STOP_ADAPTER as usize] || !list[abi::SCSI_RESTART_ADAPTER as usize] {
            self.report(
                Rule::AdapterControl,
                [0; 3],
                "ScsiStopAdapter and ScsiRestartAdapter must be supported".into(),
            );
        }
        *self
            .supported_controls
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = list;
    }

    fn supports(&self, control: u32) -> bool {
        self.supported_controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(control as usize)
            .copied()
            .unwrap_or(false)
    }

    /// Builds the PORT_CONFIGURATION_INFORMATION and calls HwStorFindAdapter.
    fn find_adapter(&self, opts: &AdapterOptions, restart: bool) -> Result<(), StartError> {
        let find = self
            .hw
            .HwFindAdapter
            .ok_or(StartError::FindAdapter(abi::SP_RETURN_NOT_FOUND))?;
        let mut ranges = vec![
            AccessRange::default();
            (self.hw.NumberOfAccessRanges as usize).max(self.access_ranges.len())
        ];
        ranges[..self.access_ranges.len()].copy_from_slice(&self.access_ranges);
        let mut cfg = Box::new(base_config(
            &self.hw,
            opts,
            self.dump,
            self.messages,
            &mut ranges,
        ));
        let arg = opts
            .argument_string
            .clone()
            .or_else(|| self.dump.map(|_| "dump=1".to_string()))
            .map(|s| CString::new(s).unwrap_or_default());
        let argp = arg
            .as_ref()
            .map_or(std::ptr::null_mut(), |c| c.as_ptr() as *mut u8);
        if let Some(pointers) = self.dump_pointers {
            // What Storport carries from the running instance to the dump stack it builds.
            cfg.MiniportDumpData = pointers.private_data as *mut c_void;
            if pointers.requested_dump_buffer > 0 {
                let mut region = self.dump_region.lock().unwrap_or_else(|e| e.into_inner());
                if region.is_none() {
                    let block = self
                        .alloc
                        .alloc(pointers.requested_dump_buffer as usize)
                        .ok_or(StartError::OutOfGuestMemory)?;
                    self.alloc.fill(block.host, block.size, 0);
                    let physical = self
                        .alloc
                        .to_guest(block.host)
                        .ok_or(StartError::OutOfGuestMemory)?;
                    *region = Some((block.host, physical, pointers.requested_dump_buffer));
                }
                if let Some((virt, phys, len)) = *region {
                    cfg.DumpRegion = abi::MemoryRegion {
                        VirtualBase: virt as *mut u8,
                        PhysicalBase: phys as i64,
                        Length: len,
                    };
                }
            }
        }
        let mut bus_info = vec![0u8; 256];
        self.device.config_read(0, &mut bus_info);
        let mut again = 0u8;
        self.phase.store(phase::FIND_ADAPTER, Ordering::SeqCst);
        let lvl = if self.dump_mode() {
            irql::HIGH
        } else if restart {
            irql::DISPATCH
        } else {
            irql::PASSIVE
        };
        let devext = self.devext_ptr();
        let cfgp: *mut PortConfigurationInformation = &mut *cfg;
        let ret = cpu::invoke(self, Callback::FindAdapter, lvl, &[], || {
            // SAFETY: `find` is the miniport's HwFindAdapter; every pointer argument is live for
            // the call (configuration, access ranges, bus data, argument string, Again).
            unsafe {
                find(
                    devext,
                    std::ptr::null_mut(),
                    bus_info.as_mut_ptr().cast(),
                    argp,
                    cfgp,
                    &mut again,
                )
            }
        });
        if ret > abi::SP_RETURN_BAD_CONFIG {
            self.report(
                Rule::FindAdapterReturn,
                [ret as u64, 0, 0],
                format!("HwStorFindAdapter returned {ret}, not an SP_RETURN_* value"),
            );
        }
        if ret != abi::SP_RETURN_FOUND {
            return Err(StartError::FindAdapter(ret));
        }
        if cfg.MaximumTransferLength == abi::SP_UNINITIALIZED_VALUE
            || cfg.NumberOfPhysicalBreaks == abi::SP_UNINITIALIZED_VALUE
        {
            self.report(
                Rule::FindAdapterLimits,
                [
                    cfg.MaximumTransferLength as u64,
                    cfg.NumberOfPhysicalBreaks as u64,
                    0,
                ],
                "HwStorFindAdapter left MaximumTransferLength or NumberOfPhysicalBreaks unset"
                    .into(),
            );
        }
        if let Some((_, _, ext_at_call)) = *self.uncached.lock().unwrap_or_else(|e| e.into_inner())
            && ext_at_call != cfg.SrbExtensionSize
        {
            self.report(
                Rule::UncachedExtension,
                [ext_at_call as u64, cfg.SrbExtensionSize as u64, 0],
                "SrbExtensionSize changed after StorPortGetUncachedExtension".into(),
            );
        }
        self.requested_dump_buffer
            .store(cfg.RequestedDumpBufferSize, Ordering::SeqCst);
        if let Some(pointers) = self.dump_pointers
            && pointers.max_transfer != abi::SP_UNINITIALIZED_VALUE
            && cfg.MaximumTransferLength < pointers.max_transfer
        {
            self.report(
                Rule::DumpMode,
                [
                    cfg.MaximumTransferLength as u64,
                    pointers.max_transfer as u64,
                    0,
                ],
                format!(
                    "the dump instance allows {} bytes per request, less than the {} its running instance promised in MINIPORT_DUMP_POINTERS",
                    cfg.MaximumTransferLength, pointers.max_transfer
                ),
            );
        }
        let half = cfg.SynchronizationModel == abi::STOR_SYNCHRONIZE_HALF_DUPLEX;
        if half && !self.dump_mode() {
            self.report(
                Rule::HalfDuplex,
                [0; 3],
                "SynchronizationModel left at StorSynchronizeHalfDuplex".into(),
            );
        }
        let mut msi = cfg.HwMSInterruptRoutine;
        if self.dump_mode() && msi.is_some() {
            self.report(
                Rule::DumpMode,
                [0; 3],
                "HwMSInterruptRoutine set in dump mode (ignored)".into(),
            );
            msi = None;
        }
        if self.messages == 0 {
            msi = None;
        }
        let neg = Negotiated {
            half_duplex: half,
            msi,
            per_message: msi.is_some()
                && cfg.InterruptSynchronizationMode == abi::INTERRUPT_SYNCHRONIZE_PER_MESSAGE,
            srb_ext_size: cfg.SrbExtensionSize,
            max_transfer: cfg.MaximumTransferLength,
            max_breaks: cfg.NumberOfPhysicalBreaks,
            max_ios_per_lun: cfg.MaxIOsPerLun,
        };
        let _ = self.neg.set(neg);
        drop(ranges);
        Ok(())
    }

    fn initialize(&self) -> Result<(), StartError> {
        let init = self.hw.HwInitialize.ok_or(StartError::Initialize)?;
        self.phase.store(phase::INITIALIZE, Ordering::SeqCst);
        let devext = self.devext_ptr();
        let (lvl, locks) = self.interrupt_context();
        // SAFETY: `init` is the miniport's HwInitialize, called with its device extension.
        let ok = cpu::invoke(self, Callback::Initialize, lvl, locks, || unsafe {
            init(devext)
        });
        if ok == 0 {
            return Err(StartError::Initialize);
        }
        let passive = self
            .passive_init
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(p) = passive {
            self.phase.store(phase::PASSIVE_INIT, Ordering::SeqCst);
            // SAFETY: `p` is the routine the miniport passed to EnablePassiveInitialization.
            let ok = cpu::invoke(
                self,
                Callback::PassiveInitialize,
                irql::PASSIVE,
                &[],
                || unsafe { p(devext) },
            );
            if ok == 0 {
                return Err(StartError::PassiveInitialize);
            }
        }
        self.phase.store(phase::RUNNING, Ordering::SeqCst);
        Ok(())
    }

    /// Closes `bits` of the gate and waits until no request is between BuildIo and StartIo.
    pub fn quiesce(&self, bits: u32) {
        self.gate.fetch_or(bits, Ordering::SeqCst);
        while self.active.load(Ordering::SeqCst) != 0 {
            if crate::sched::active() {
                crate::sched::wait(None);
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Opens `bits` of the gate and sends what waited.
    pub fn open(&self, bits: u32) {
        self.gate.fetch_and(!bits, Ordering::SeqCst);
        self.kick();
    }

    /// HwStorResetBus with the port's locks, then the 0xF0/1 watch on what is outstanding.
    pub fn reset_bus(&self, path: u32) -> bool {
        let Some(f) = self.hw.HwResetBus else {
            return false;
        };
        self.quiesce(gate::RESET);
        let epoch = self.reset_epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let devext = self.devext_ptr();
        let (lvl, locks) = self.startio_context();
        // SAFETY: `f` is the miniport's HwResetBus.
        let ok = cpu::invoke(self, Callback::ResetBus, lvl, locks, || unsafe {
            f(devext, path)
        });
        self.requests.mark_reset(epoch);
        self.timer
            .reset_check(crate::sched::now() + self.port.options.reset_grace, epoch);
        self.open(gate::RESET);
        self.happened(&self.activity.resets);
        ok != 0
    }

    /// Storport's answer to SRB timeouts (multi-tier reset), on a thread of its own so that the
    /// timer keeps running HwStorTimer meanwhile: SRB_FUNCTION_RESET_LOGICAL_UNIT to the LU, then
    /// SRB_FUNCTION_RESET_DEVICE, then HwStorResetBus, each waiting `reset_tier_wait` for the
    /// timed-out requests `ids` to come back. One escalation at a time.
    pub fn escalate(&self, ids: Vec<u64>) {
        if !self.port.options.multi_tier_reset {
            self.reset_bus(0);
            return;
        }
        if self.escalating.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(me) = self.self_weak.upgrade() else {
            return;
        };
        self.spawn("sim-reset".into(), move || {
            me.run_escalation(&ids);
            me.escalating.store(false, Ordering::Release);
        });
    }

    fn run_escalation(&self, ids: &[u64]) {
        let wait = self.port.options.reset_tier_wait;
        for (name, function) in [
            (
                "RESET_LOGICAL_UNIT",
                crate::request::function::RESET_LOGICAL_UNIT,
            ),
            ("RESET_DEVICE", crate::request::function::RESET_DEVICE),
        ] {
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            self.log(format!("multi-tier reset: SRB_FUNCTION_{name}"));
            // The reset SRB itself gets a long timeout: it is the port's, and the next tier
            // follows after `wait` whatever became of it.
            let request = crate::request::Request::function(function).timeout(600);
            let handle = crate::request::submit_internal(self, request);
            let end = crate::sched::now() + wait;
            let completion = handle.wait_timeout(wait);
            while self.requests.any_outstanding(ids) && crate::sched::now() < end {
                crate::sched::sleep(Duration::from_millis(1));
            }
            let status = completion.map(|c| c.srb_status & 0x3F);
            self.log(format!(
                "multi-tier reset: SRB_FUNCTION_{name} completed with {status:?}"
            ));
            if status == Some(abi::SRB_STATUS_SUCCESS) && !self.requests.any_outstanding(ids) {
                return;
            }
        }
        self.log("multi-tier reset: HwStorResetBus".into());
        self.reset_bus(0);
    }

    /// HwStorUnitControl with the port's locks (none, PASSIVE_LEVEL).
    pub fn unit_control(&self, control: u32, param: *mut c_void) -> Option<u32> {
        let f = self.hw.HwUnitControl?;
        let devext = self.devext_ptr();
        // SAFETY: `f` is the miniport's HwUnitControl, called with its device extension and a
        // parameter of the shape `control` requires.
        Some(cpu::invoke(
            self,
            Callback::UnitControl,
            irql::PASSIVE,
            &[],
            || unsafe { f(devext, control, param) },
        ))
    }

    /// Whether the miniport supports unit-control type `control`
    /// (ScsiQuerySupportedUnitControlTypes).
    fn supports_unit(&self, control: u32) -> bool {
        const MAX: usize = 20;
        let mut buf = vec![0u8; 4 + MAX + 16];
        buf[..4].copy_from_slice(&(MAX as u32).to_le_bytes());
        buf[4 + MAX..].fill(0xA5);
        if self.unit_control(0, buf.as_mut_ptr().cast()).is_none() {
            return false;
        }
        if buf[4 + MAX..].iter().any(|&b| b != 0xA5) {
            self.report(
                Rule::AdapterControl,
                [0; 3],
                "HwUnitControl wrote past SupportedTypeList[MaxControlType]".into(),
            );
        }
        buf.get(4 + control as usize).is_some_and(|&b| b != 0)
    }

    fn shutdown_threads(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.irq.wake_all();
        for q in self.cpu_queues.iter() {
            q.wake();
        }
        self.timer.wake();
        let hs = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let me = std::thread::current().id();
        for h in hs {
            if h.thread().id() != me {
                let _ = crate::sched::join(h);
            }
        }
    }
}

impl Drop for AdapterInner {
    fn drop(&mut self) {
        ADAPTERS
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.devext);
        BY_SERIAL
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.serial);
        match self.devext_block {
            Some(b) => self.alloc.free(b),
            // SAFETY: allocated in `start` with this layout and not freed elsewhere.
            None => unsafe { std::alloc::dealloc(self.devext as *mut u8, self.devext_layout) },
        }
        if let Some((p, l)) = self
            .registry_buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            // SAFETY: allocated by StorPortAllocateRegistryBuffer with this layout, not freed.
            unsafe { std::alloc::dealloc(p as *mut u8, l) };
        }
        for (p, l) in self.pool.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            // SAFETY: allocated by ExtFunctionAllocatePool with this layout and never freed.
            unsafe { std::alloc::dealloc(p as *mut u8, l) };
        }
    }
}

/// STOR_ADDR_BTL8 of LU 0:0:0 { Type = STOR_ADDRESS_TYPE_BTL8 (1), Port 0, AddressLength 4,
/// Path 0, Target 0, Lun 0, Reserved 0 }.
fn unit_address() -> [u8; 16] {
    let mut address = [0u8; 16];
    address[0] = 1;
    address[4] = 4;
    address
}

fn base_config(
    hw: &HwInitializationData,
    opts: &AdapterOptions,
    dump: Option<u8>,
    messages: u32,
    ranges: &mut [AccessRange],
) -> PortConfigurationInformation {
    PortConfigurationInformation {
        Length: abi::CONFIG_INFO_LENGTH,
        SystemIoBusNumber: opts.bus_number,
        AdapterInterfaceType: abi::PCI_BUS,
        BusInterruptLevel: if messages == 0 { 11 } else { 0 },
        BusInterruptVector: if messages == 0 { 11 } else { 0 },
        InterruptMode: if messages == 0 { 0 } else { 1 },
        MaximumTransferLength: abi::SP_UNINITIALIZED_VALUE,
        NumberOfPhysicalBreaks: abi::SP_UNINITIALIZED_VALUE,
        DmaChannel: abi::SP_UNINITIALIZED_VALUE,
        DmaPort: abi::SP_UNINITIALIZED_VALUE,
        DmaWidth: 0,
        DmaSpeed: 0,
        AlignmentMask: 0,
        NumberOfAccessRanges: ranges.len() as u32,
        AccessRanges: ranges.as_mut_ptr(),
        MiniportDumpData: std::ptr::null_mut(),
        NumberOfBuses: 1,
        InitiatorBusId: [0xFF; 8],
        ScatterGather: 1,
        Master: 1,
        CachesData: 0,
        AdapterScansDown: 0,
        AtdiskPrimaryClaimed: 0,
        AtdiskSecondaryClaimed: 0,
        Dma32BitAddresses: 1,
        DemandMode: 0,
        MapBuffers: hw.MapBuffers,
        NeedPhysicalAddresses: hw.NeedPhysicalAddresses,
        TaggedQueuing: hw.TaggedQueuing,
        AutoRequestSense: hw.AutoRequestSense,
        MultipleRequestPerLu: hw.MultipleRequestPerLu,
        ReceiveEvent: hw.ReceiveEvent,
        RealModeInitialized: 0,
        BufferAccessScsiPortControlled: 0,
        MaximumNumberOfTargets: 8,
        SrbType: abi::SRB_TYPE_STORAGE_REQUEST_BLOCK,
        AddressType: 0,
        SlotNumber: opts.slot_number,
        BusInterruptLevel2: 0,
        BusInterruptVector2: 0,
        InterruptMode2: 0,
        DmaChannel2: 0,
        DmaPort2: 0,
        DmaWidth2: 0,
        DmaSpeed2: 0,
        DeviceExtensionSize: hw.DeviceExtensionSize,
        SpecificLuExtensionSize: hw.SpecificLuExtensionSize,
        SrbExtensionSize: hw.SrbExtensionSize,
        Dma64BitAddresses: 0x80,
        ResetTargetSupported: 0,
        MaximumNumberOfLogicalUnits: 8,
        WmiDataProvider: 0,
        SynchronizationModel: abi::STOR_SYNCHRONIZE_HALF_DUPLEX,
        HwMSInterruptRoutine: None,
        InterruptSynchronizationMode: abi::INTERRUPT_SYNCHRONIZE_NONE,
        DumpRegion: abi::MemoryRegion {
            VirtualBase: std::ptr::null_mut(),
            PhysicalBase: 0,
            Length: 0,
        },
        RequestedDumpBufferSize: 0,
        VirtualDevice: 0,
        DumpMode: dump.unwrap_or(0),
        DmaAddressWidth: 0,
        ExtendedFlags1: 0,
        MaxNumberOfIO: 1000,
        MaxIOsPerLun: 1000,
        InitialLunQueueDepth: 32,
        BusResetHoldTime: 0,
        FeatureSupport: 0,
    }
}

/// A started adapter: submit requests to it, stop, restart or reset it. Dropping it stops its
/// threads (the miniport is not called).
pub struct Adapter {
    pub(crate) inner: Arc<AdapterInner>,
}

pub(crate) fn start(
    port: &Arc<PortShared>,
    device: Arc<dyn PciDevice>,
    memory: GuestMemory,
    opts: AdapterOptions,
) -> Result<Adapter, StartError> {
    let reg = if opts.dump_mode.is_some() {
        let entry = (*port.driver_entry.lock().unwrap_or_else(|e| e.into_inner()))
            .ok_or(StartError::NotLoaded(None))?;
        crate::port::load(port, entry, true).map_err(|e| StartError::NotLoaded(Some(e)))?
    } else {
        (*port.registration.lock().unwrap_or_else(|e| e.into_inner()))
            .ok_or(StartError::NotLoaded(None))?
    };
    let hw = reg.hw_init;
    let dump = opts.dump_mode;
    let cpus = if dump.is_some() {
        1
    } else {
        port.options.cpus.max(1)
    };
    let offered = device.msix_message_count() as u32;
    let messages = match opts.interrupts {
        InterruptMode::MsiX if dump.is_none() => {
            offered.min(opts.max_messages.map_or(u32::MAX, u32::from))
        }
        _ => 0,
    };
    let lines = messages.max(1);
    // The PnP manager enables MSI-X before the miniport's HwStorFindAdapter; viostor reads the
    // enable bit there to choose MSI-X (vioblk does not look), so with Windows' rules only the
    // port does it this early (the same `enable_msix` as below, which then changes nothing).
    if port.options.windows_rules_only && dump.is_none() && lines > 1 {
        enable_msix(device.as_ref(), lines as usize);
    }
    let layout = Layout::from_size_align((hw.DeviceExtensionSize as usize).max(16), 16)
        .expect("device extension layout");
    // A dump stack's memory is its own, reserved when the stack was built, apart from the running
    // instance's (which may still hold its rings and requests there): the last quarter of the
    // region.
    let alloc = if dump.is_some() {
        let offset = memory.len / 4 * 3;
        GuestAllocator::starting_at(memory, offset)
    } else {
        GuestAllocator::new(memory)
    };
    // With Windows' rules only, the device extension is DMA-able (guest) memory, as nonpaged
    // pool is on Windows: viostor hands the device its own extension (the serial-number buffer).
    let devext_block = port
        .options
        .windows_rules_only
        .then(|| alloc.alloc(layout.size()))
        .flatten();
    let devext = match devext_block {
        Some(b) => {
            alloc.fill(b.host, b.size, 0);
            b.host
        }
        // SAFETY: the layout has a non-zero size.
        None => (unsafe { std::alloc::alloc_zeroed(layout) }) as usize,
    };
    assert!(devext != 0, "device extension allocation failed");
    let access_ranges: Vec<AccessRange> = device
        .bars()
        .iter()
        .map(|b| AccessRange {
            RangeStart: b.address as i64,
            RangeLength: b.size as u32,
            RangeInMemory: 1,
        })
        .collect();
    let serial = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
    let inner = Arc::new_cyclic(|weak| AdapterInner {
        serial,
        self_weak: weak.clone(),
        port: port.clone(),
        hw,
        device: device.clone(),
        alloc: alloc.with_watch(device.dma_watch()),
        devext,
        devext_layout: layout,
        devext_block,
        dump,
        cpus,
        lines,
        messages,
        neg: OnceLock::new(),
        phase: AtomicU8::new(phase::FIND_ADAPTER),
        channels: AtomicU32::new(1),
        perf_flags: AtomicU32::new(0),
        first_msg: AtomicU32::new(0),
        last_msg: AtomicU32::new(0),
        startio_lock: RawSpinLock::default(),
        control_in_progress: AtomicU32::new(u32::MAX),
        marked_dump_memory: Mutex::new(Vec::new()),
        requested_dump_buffer: AtomicU32::new(0),
        dump_region: Mutex::new(None),
        dump_pointers: opts.dump_pointers.filter(|_| dump.is_some()),
        int_locks: (0..lines).map(|_| RawSpinLock::default()).collect(),
        windows: RwLock::new(Vec::new()),
        access_ranges,
        uncached: Mutex::new(None),
        bus_data_refusal: Mutex::new(None),
        withhold_srb_extensions: AtomicBool::new(false),
        passive_init: Mutex::new(None),
        dpcs: Mutex::new(Vec::new()),
        cpu_queues: (0..cpus).map(|_| CpuQueue::default()).collect(),
        requests: RequestTable::new(),
        gate: AtomicU32::new(gate::STOPPED),
        active: AtomicUsize::new(0),
        pending: Mutex::new(VecDeque::new()),
        busy_remaining: AtomicU32::new(0),
        device_busy: Mutex::new(HashMap::new()),
        device_busy_entries: AtomicBool::new(false),
        record_pool: Mutex::new(Vec::new()),
        timer: TimerShared::default(),
        irq: Arc::new(IrqLines::new(lines, weak.clone())),
        pool: Mutex::new(HashMap::new()),
        srb_pool: FifoPool::new(crate::request::SRB_BLOCK_BYTES, 1024),
        supported_controls: Mutex::new(Vec::new()),
        log: Mutex::new(Vec::new()),
        shutdown: AtomicBool::new(false),
        interrupts_enabled: AtomicBool::new(false),
        reset_epoch: AtomicU64::new(0),
        next_request: AtomicU64::new(1),
        lock_counts: LockCounters::default(),
        activity: ActivityCounters::default(),
        threads: Mutex::new(Vec::new()),
        max_completions_per_run: AtomicU32::new(0),
        escalating: AtomicBool::new(false),
        registry: opts.registry.clone(),
        registry_buffer: Mutex::new(None),
        event_log: Mutex::new(Vec::new()),
        tracing: AtomicBool::new(false),
        etw: Mutex::new(Vec::new()),
    });
    ADAPTERS
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(devext, Arc::downgrade(&inner));
    BY_SERIAL
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(serial, Arc::downgrade(&inner));
    let adapter = Adapter { inner };
    let a = &adapter.inner;
    enable_function(device.as_ref());
    adapter.inner.connect_dma_watch();
    a.find_adapter(&opts, false)?;
    a.query_controls();
    // Threads: per-CPU DPCs, the timer, one per interrupt line.
    if dump.is_none() {
        for c in 0..cpus {
            let me = a.clone();
            a.spawn(format!("sim-dpc{c}"), move || crate::dpc::run_cpu(me, c));
        }
        for l in 0..lines {
            let me = a.clone();
            a.spawn(format!("sim-irq{l}"), move || {
                crate::interrupt::run_line(me, l)
            });
        }
        let me = a.clone();
        a.spawn("sim-timer".into(), move || crate::timer::run(me));
        a.interrupts_enabled.store(true, Ordering::SeqCst);
    }
    if dump.is_none() && lines > 1 {
        enable_msix(device.as_ref(), lines as usize);
    }
    device.connect_interrupts(a.irq.clone());
    a.initialize()?;
    a.open(gate::STOPPED);
    // The disk's PnP start: Storport tells the miniport with ScsiUnitStart (if supported).
    if dump.is_none() && a.supports_unit(abi::SCSI_UNIT_START) {
        let mut address = unit_address();
        let status = a.unit_control(abi::SCSI_UNIT_START, address.as_mut_ptr().cast());
        a.log(format!("UnitControl(ScsiUnitStart) = {status:?}"));
    }
    if opts.tracing && dump.is_none() {
        adapter.set_tracing(true);
    }
    Ok(adapter)
}

impl Adapter {
    /// This adapter's serial number (as in [`Violation::adapter`]).
    pub fn serial(&self) -> u64 {
        self.inner.serial
    }

    /// The miniport's device extension.
    pub fn device_extension(&self) -> *mut c_void {
        self.inner.devext_ptr()
    }

    /// From now on, a StorPortSetBusDataByOffset write for which `refuse(offset, bytes)` is
    /// true reaches nothing and returns 0, as Storport's does when the PCI bus driver cannot
    /// write the function's configuration space (the DDI gives no other sign of failure);
    /// `None` lets every write through again. For tests of what a miniport does when it cannot
    /// clear or set Bus Master Enable.
    pub fn refuse_bus_data_writes(&self, refuse: Option<BusDataRefusal>) {
        *self
            .inner
            .bus_data_refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = refuse;
    }

    /// A Storport that breaks its contract: while `withhold` is set, requests sent from now on
    /// have no SRB extension (SrbExtension NULL) although the miniport asked for one. For tests
    /// of a miniport's defensive checks; Storport always gives the extension.
    pub fn withhold_srb_extensions(&self, withhold: bool) {
        self.inner
            .withhold_srb_extensions
            .store(withhold, Ordering::Release);
    }

    /// Violations reported for this adapter.
    pub fn violations(&self) -> Vec<Violation> {
        let all = self
            .inner
            .port
            .reporter
            .violations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter(|v| v.adapter == Some(self.inner.serial))
            .cloned()
            .collect()
    }

    /// The system event log entries the miniport wrote (StorPortLogError), in order.
    pub fn event_log(&self) -> Vec<EventLogEntry> {
        self.inner
            .event_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The ETW events the miniport published (StorPortEtwEvent2), in order.
    pub fn etw_events(&self) -> Vec<EtwEvent> {
        self.inner
            .etw
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A trace session enabled (`true`) or disabled the miniport's tracing: Storport calls
    /// HwStorTracingEnabled (PASSIVE_LEVEL, no lock), when the miniport registered one.
    pub fn set_tracing(&self, enabled: bool) {
        let a = &self.inner;
        a.tracing.store(enabled, Ordering::SeqCst);
        let Some(f) = a.hw.HwTracingEnabled else {
            return;
        };
        let devext = a.devext_ptr();
        // SAFETY: the miniport's HwTracingEnabled with its device extension and a BOOLEAN.
        cpu::invoke(a, Callback::TracingEnabled, irql::PASSIVE, &[], || unsafe {
            f(devext, u8::from(enabled))
        });
    }

    /// StorPortDebugPrint / StorPortLogError / notification lines recorded for this adapter.
    pub fn log(&self) -> Vec<String> {
        self.inner
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Callbacks and lock acquisitions since the adapter started (see [`LockCounts`]).
    pub fn lock_counts(&self) -> LockCounts {
        self.inner.lock_counts.snapshot()
    }

    /// The concurrent channels and perf flags the miniport enabled.
    pub fn perf(&self) -> (u32, u32) {
        (
            self.inner.concurrent_channels(),
            self.inner.perf_flags.load(Ordering::Relaxed),
        )
    }

    /// Whether the miniport chose full duplex and per-message interrupt synchronization.
    pub fn synchronization(&self) -> (bool, bool) {
        (!self.inner.half_duplex(), self.inner.per_message())
    }

    /// Requests sent to the miniport and not completed yet.
    pub fn outstanding(&self) -> usize {
        self.inner.requests.outstanding()
    }

    /// Requests that were outstanding when HwStorResetBus returned and are still neither
    /// completed nor reported (0xF0/1 comes `reset_grace` after the reset). Once it is 0, every
    /// reset so far is settled: no further NotCompletedAfterReset can come of it.
    pub fn outstanding_after_reset(&self) -> usize {
        self.inner.requests.unsettled_after_reset()
    }

    /// What happened on this adapter so far (see [`Activity`]).
    pub fn activity(&self) -> Activity {
        let c = &self.inner.activity;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Activity {
            completions: load(&c.completions),
            interrupts: load(&c.interrupts),
            dpcs: load(&c.dpcs),
            timer_calls: load(&c.timer_calls),
            timeouts: load(&c.timeouts),
            resets: load(&c.resets),
        }
    }

    /// Waits until `check` answers `Some`, checking it at once and whenever something happens
    /// on this machine (a callback returns, a request completes, a violation is reported, the
    /// port logs a line or notification, a reset or a timeout), at most `timeout`; the error says
    /// `what` did not happen. For conditions over [`activity`](Self::activity),
    /// [`outstanding`](Self::outstanding), [`log`](Self::log), [`violations`](Self::violations)
    /// and whatever the miniport's callbacks change.
    pub fn wait_for<T>(
        &self,
        what: impl std::fmt::Display,
        timeout: Duration,
        check: impl FnMut() -> Option<T>,
    ) -> Result<T, String> {
        self.inner.port.events.wait_for(what, timeout, check)
    }

    /// [`wait_for`](Self::wait_for) with a condition that is true or false.
    pub fn wait_until(
        &self,
        what: impl std::fmt::Display,
        timeout: Duration,
        condition: impl FnMut() -> bool,
    ) -> Result<(), String> {
        self.inner.port.events.wait_until(what, timeout, condition)
    }

    fn waiting_to_be_sent(&self) -> usize {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Waits until no request is outstanding or waiting to be sent, at most `timeout`; the
    /// error says how many were left.
    pub fn drain(&self, timeout: Duration) -> Result<(), String> {
        let idle = || self.outstanding() == 0 && self.waiting_to_be_sent() == 0;
        let waited = if self.inner.dump_mode() {
            // A dump stack has no interrupts: the waiting thread is the CPU that polls the ISR.
            let start = crate::sched::now();
            loop {
                if idle() {
                    break Ok(());
                }
                if crate::sched::now().saturating_duration_since(start) > timeout {
                    break Err(format!("waited {timeout:?} for the adapter to drain"));
                }
                crate::request::poll_once(&self.inner);
                std::thread::sleep(Duration::from_micros(200));
            }
        } else {
            self.wait_until("the adapter to drain", timeout, idle)
        };
        waited.map_err(|e| {
            format!(
                "{e}: {} request(s) outstanding, {} waiting to be sent",
                self.outstanding(),
                self.waiting_to_be_sent()
            )
        })
    }

    /// PnP stop: waits for outstanding requests, then HwAdapterControl(ScsiStopAdapter) at DIRQL
    /// with the interrupt lock held. Returns the SCSI_ADAPTER_CONTROL_STATUS.
    pub fn stop(&self) -> Option<u32> {
        self.stop_after(Duration::from_secs(30))
    }

    /// [`Adapter::stop`], waiting at most `drain` for outstanding requests.
    fn stop_after(&self, drain: Duration) -> Option<u32> {
        let a = &self.inner;
        a.quiesce(gate::STOPPED);
        let _ = self.drain(drain);
        let r = a.adapter_control(abi::SCSI_STOP_ADAPTER, std::ptr::null_mut());
        a.interrupts_enabled.store(false, Ordering::SeqCst);
        a.timer.cancel_hw_timer();
        a.phase.store(phase::STOPPED, Ordering::SeqCst);
        r
    }

    /// Restart after [`stop`](Self::stop): HwAdapterControl(ScsiRestartAdapter) at DIRQL with the
    /// interrupt lock held when supported, else HwStorFindAdapter (DISPATCH) and HwStorInitialize.
    pub fn restart(&self) -> Result<(), StartError> {
        let a = &self.inner;
        a.interrupts_enabled
            .store(a.dump.is_none(), Ordering::SeqCst);
        if a.supports(abi::SCSI_RESTART_ADAPTER) {
            // ScsiSetRunningConfig first (PASSIVE_LEVEL, no lock, the interrupt not connected
            // yet), when supported: the HwStorAdapterControl page.
            if a.supports(abi::SCSI_SET_RUNNING_CONFIG) {
                a.interrupts_enabled.store(false, Ordering::SeqCst);
                let r = a.adapter_control(abi::SCSI_SET_RUNNING_CONFIG, std::ptr::null_mut());
                a.log(format!("AdapterControl(ScsiSetRunningConfig) = {r:?}"));
                a.interrupts_enabled
                    .store(a.dump.is_none(), Ordering::SeqCst);
            }
            // The interrupt is connected again (a dump or resume instance may have used the
            // function meanwhile), then the restart proper.
            a.device.connect_interrupts(a.irq.clone());
            a.connect_dma_watch();
            let r = a.adapter_control(abi::SCSI_RESTART_ADAPTER, std::ptr::null_mut());
            if r != Some(0) {
                return Err(StartError::Initialize);
            }
            a.phase.store(phase::RUNNING, Ordering::SeqCst);
        } else {
            a.find_adapter(&AdapterOptions::default(), true)?;
            a.initialize()?;
        }
        a.open(gate::STOPPED);
        Ok(())
    }

    /// [`restart`](Self::restart) as a Storport that does not send ScsiSetRunningConfig would do
    /// it (ScsiRestartAdapter alone, the interrupt connected again): shows what the miniport does
    /// from ScsiRestartAdapter when nothing ran before it.
    pub fn restart_without_running_config(&self) -> Result<(), StartError> {
        let a = &self.inner;
        a.interrupts_enabled
            .store(a.dump.is_none(), Ordering::SeqCst);
        a.device.connect_interrupts(a.irq.clone());
        a.connect_dma_watch();
        let r = a.adapter_control(abi::SCSI_RESTART_ADAPTER, std::ptr::null_mut());
        if r != Some(0) {
            return Err(StartError::Initialize);
        }
        a.phase.store(phase::RUNNING, Ordering::SeqCst);
        a.open(gate::STOPPED);
        Ok(())
    }

    /// HwStorResetBus(PathId 0) as Storport calls it on a timeout; outstanding requests must be
    /// completed within `reset_grace` (else 0xF0/1).
    pub fn reset_bus(&self) -> bool {
        self.inner.reset_bus(0)
    }

    /// HwStorResetBus with `path_id`.
    pub fn reset_bus_path(&self, path_id: u32) -> bool {
        self.inner.reset_bus(path_id)
    }

    /// The most requests one DPC or ISR run completed (how much work the miniport does per run).
    pub fn max_completions_per_run(&self) -> u32 {
        self.inner.max_completions_per_run.load(Ordering::Relaxed)
    }

    /// PnP surprise removal as Windows does it: HwStorAdapterControl(ScsiAdapterSurpriseRemoval)
    /// when the miniport supports it (PASSIVE_LEVEL), HwStorUnitControl(ScsiUnitSurpriseRemoval)
    /// for LU 0:0:0 when supported; then outstanding requests get `reset_grace` to come back
    /// (any left is reported as 0xF0/1); then the remove: ScsiStopAdapter. Returns the adapter-
    /// and unit-control statuses (`None` when the type is not supported).
    pub fn surprise_remove(&self) -> (Option<u32>, Option<u32>) {
        let a = &self.inner;
        a.log("PnP: surprise removal".into());
        let adapter = a
            .supports(abi::SCSI_ADAPTER_SURPRISE_REMOVAL)
            .then(|| a.adapter_control(abi::SCSI_ADAPTER_SURPRISE_REMOVAL, std::ptr::null_mut()))
            .flatten();
        let unit = a
            .supports_unit(abi::SCSI_UNIT_SURPRISE_REMOVAL)
            .then(|| {
                let mut address = unit_address();
                a.unit_control(abi::SCSI_UNIT_SURPRISE_REMOVAL, address.as_mut_ptr().cast())
            })
            .flatten();
        let grace = a.port.options.reset_grace;
        if self.drain(grace).is_err() {
            for (srb, id) in a
                .requests
                .expired(crate::sched::now() + Duration::from_secs(1 << 30))
            {
                a.report(
                    Rule::NotCompletedAfterReset,
                    [srb as u64, id, 1],
                    format!("request {id} (SRB {srb:#x}) not completed after surprise removal"),
                );
            }
        }
        // The remove: Storport has waited for what it could.
        self.stop_after(Duration::ZERO);
        (adapter, unit)
    }

    /// What Storport does before it builds the crash-dump or hibernation stack of a miniport
    /// with STOR_FEATURE_DUMP_POINTERS: an SRB_FUNCTION_DUMP_POINTERS request to this (running)
    /// instance, its data buffer a MINIPORT_DUMP_POINTERS with Storport's fields filled in (bus,
    /// interface type, bus master, an unset MaximumTransferLength). Returns `None` when the
    /// miniport does not declare the feature (Storport then builds the dump stack from the
    /// adapter's resources alone), else the answer, checked: a completion other than SUCCESS, a
    /// Version other than DUMP_MINIPORT_VERSION_1, a Size other than the structure's or a
    /// CommonBufferSize over 64 KiB is reported (Rule::DumpMode) and gives `None`.
    pub fn dump_pointers(&self) -> Option<DumpPointers> {
        let a = &self.inner;
        if a.hw.FeatureSupport & abi::STOR_FEATURE_DUMP_POINTERS == 0 {
            return None;
        }
        let mut buffer = vec![0u8; abi::MINIPORT_DUMP_POINTERS_SIZE];
        // Storport's part: SystemIoBusNumber, AdapterInterfaceType, MaximumTransferLength
        // (SP_UNINITIALIZED_VALUE), NumberOfPhysicalBreaks (likewise), NumberOfBuses, Master.
        buffer[0x48..0x4C].copy_from_slice(&0u32.to_le_bytes());
        buffer[0x4C..0x50].copy_from_slice(&abi::PCI_BUS.to_le_bytes());
        buffer[0x50..0x54].copy_from_slice(&abi::SP_UNINITIALIZED_VALUE.to_le_bytes());
        buffer[0x54..0x58].copy_from_slice(&abi::SP_UNINITIALIZED_VALUE.to_le_bytes());
        buffer[0x68] = 1;
        buffer[0x69] = 1;
        let request = crate::Request {
            flags: crate::request::flags::DATA_IN,
            transfer_length: buffer.len() as u32,
            data_out: buffer,
            ..crate::Request::function(abi::SRB_FUNCTION_DUMP_POINTERS)
        };
        let c = self.execute(request);
        let answer = parse_dump_pointers(&c.data);
        let answer = answer.map(|p| DumpPointers {
            requested_dump_buffer: a.requested_dump_buffer.load(Ordering::SeqCst),
            ..p
        });
        match (c.srb_status & 0x3F, answer) {
            (abi::SRB_STATUS_SUCCESS, Ok(answer)) => {
                a.log(format!("SRB_FUNCTION_DUMP_POINTERS: {answer:?}"));
                Some(answer)
            }
            (status, answer) => {
                let why = match answer {
                    Err(why) => why,
                    Ok(_) => format!("completed with SRB status {status:#x}"),
                };
                a.report(
                    Rule::DumpMode,
                    [u64::from(status), 0, 0],
                    format!("SRB_FUNCTION_DUMP_POINTERS: {why}"),
                );
                None
            }
        }
    }

    /// What HwStorFindAdapter set in RequestedDumpBufferSize (bytes the dump stack is to get as
    /// its DumpRegion).
    pub fn requested_dump_buffer_size(&self) -> u32 {
        self.inner.requested_dump_buffer.load(Ordering::SeqCst)
    }

    /// The StorPortMarkDumpMemory calls Storport accepted: (address, length, flags).
    pub fn marked_dump_memory(&self) -> Vec<(usize, usize, u32)> {
        self.inner
            .marked_dump_memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The DumpRegion handed to this dump instance's HwStorFindAdapter: (virtual address,
    /// physical address, length), when the running instance asked for one.
    pub fn dump_region(&self) -> Option<(usize, u64, u32)> {
        *self
            .inner
            .dump_region
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// What HwStorFindAdapter told Storport: (MaximumTransferLength, NumberOfPhysicalBreaks,
    /// MaxIOsPerLun), or `None` before it ran.
    pub fn limits(&self) -> Option<(u32, u32, u32)> {
        self.inner
            .neg
            .get()
            .map(|n| (n.max_transfer, n.max_breaks, n.max_ios_per_lun))
    }

    /// The unit-control types the miniport reports (ScsiQuerySupportedUnitControlTypes).
    pub fn supported_unit_controls(&self) -> Vec<u32> {
        (0..20).filter(|&t| self.inner.supports_unit(t)).collect()
    }

    /// Storport's unit power transition: HwStorUnitControl(ScsiUnitPower) for LU 0:0:0 with a
    /// STOR_UNIT_CONTROL_POWER naming the D-state (1 = D0 .. 4 = D3) and the system power action,
    /// if the miniport supports it. The miniport's answer (ScsiUnitControlSuccess = 0).
    pub fn unit_power(&self, state: u32, action: u32) -> Option<u32> {
        let a = &self.inner;
        if !a.supports_unit(abi::SCSI_UNIT_POWER) {
            return None;
        }
        let mut address = unit_address();
        // STOR_UNIT_CONTROL_POWER { PSTOR_ADDRESS Address; STOR_POWER_ACTION PowerAction;
        // STOR_DEVICE_POWER_STATE PowerState; } (x64: 16 bytes).
        let mut power = [0u8; 16];
        power[..8].copy_from_slice(&(address.as_mut_ptr() as u64).to_le_bytes());
        power[8..12].copy_from_slice(&action.to_le_bytes());
        power[12..].copy_from_slice(&state.to_le_bytes());
        let status = a.unit_control(abi::SCSI_UNIT_POWER, power.as_mut_ptr().cast());
        a.log(format!(
            "UnitControl(ScsiUnitPower D{}) = {status:?}",
            state.saturating_sub(1)
        ));
        status
    }

    /// HwStorUnitControl(ScsiUnitStart) again (a unit restarted after a stop), if supported.
    pub fn unit_start(&self) -> Option<u32> {
        let a = &self.inner;
        if !a.supports_unit(abi::SCSI_UNIT_START) {
            return None;
        }
        let mut address = unit_address();
        a.unit_control(abi::SCSI_UNIT_START, address.as_mut_ptr().cast())
    }

    /// HwStorUnitControl(ScsiUnitRemove): the unit is removed in an orderly way (Storport has
    /// drained it), if supported.
    pub fn unit_remove(&self) -> Option<u32> {
        let a = &self.inner;
        if !a.supports_unit(abi::SCSI_UNIT_REMOVE) {
            return None;
        }
        let mut address = unit_address();
        a.unit_control(abi::SCSI_UNIT_REMOVE, address.as_mut_ptr().cast())
    }

    /// Raises interrupt line `message` as the device would (tests of ISR paths).
    pub fn raise_interrupt(&self, message: u16) {
        crate::device::InterruptSink::raise(&*self.inner.irq, message);
    }
}

impl Drop for Adapter {
    fn drop(&mut self) {
        self.inner.interrupts_enabled.store(false, Ordering::SeqCst);
        self.inner.shutdown_threads();
    }
}

/// What the PCI bus driver does when it starts a function: memory decoding and bus mastering on
/// (PCI 3.0 6.2.2, command register bits 1 and 2).
fn enable_function(device: &dyn crate::device::PciDevice) {
    let mut command = [0u8; 2];
    device.config_read(4, &mut command);
    let value = u16::from_le_bytes(command) | 0x6;
    device.config_write(4, &value.to_le_bytes());
}

/// What the PnP manager does before starting an adapter with MSI-X: enables the function's
/// MSI-X capability (PCI 3.0 6.8.2.3, Message Control bit 15) and unmasks the first `messages`
/// table entries (Vector Control bit 0). Device-agnostic: it only follows the standard
/// capability list.
fn enable_msix(device: &dyn crate::device::PciDevice, messages: usize) {
    let mut byte = [0u8; 1];
    device.config_read(0x34, &mut byte);
    let mut at = usize::from(byte[0] & !3);
    for _ in 0..48 {
        if !(0x40..=0xFC).contains(&at) {
            return;
        }
        let mut header = [0u8; 2];
        device.config_read(at as u16, &mut header);
        if header[0] == 0x11 {
            let mut control = [0u8; 2];
            device.config_read(at as u16 + 2, &mut control);
            let value = u16::from_le_bytes(control) | 0x8000;
            device.config_write(at as u16 + 2, &value.to_le_bytes());
            let mut table = [0u8; 4];
            device.config_read(at as u16 + 4, &mut table);
            let table = u32::from_le_bytes(table);
            let bar = (table & 7) as u8;
            let offset = u64::from(table & !7);
            for v in 0..messages as u64 {
                device.bar_write(bar, offset + 16 * v + 12, &0u32.to_le_bytes());
            }
            return;
        }
        at = usize::from(header[1] & !3);
    }
}

/// Reads a MINIPORT_DUMP_POINTERS as the miniport left it, or why it is not acceptable.
pub fn parse_dump_pointers(buffer: &[u8]) -> Result<DumpPointers, String> {
    if buffer.len() < abi::MINIPORT_DUMP_POINTERS_SIZE {
        return Err(format!("a {}-byte buffer came back", buffer.len()));
    }
    let u16_at = |o: usize| u16::from_le_bytes([buffer[o], buffer[o + 1]]);
    let u32_at =
        |o: usize| u32::from_le_bytes([buffer[o], buffer[o + 1], buffer[o + 2], buffer[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | u64::from(u32_at(o + 4)) << 32;
    let answer = DumpPointers {
        version: u16_at(0),
        size: u16_at(2),
        max_transfer: u32_at(0x50),
        breaks: u32_at(0x54),
        private_data: u64_at(0x40) as usize,
        common_buffer_size: u32_at(0x38),
        requested_dump_buffer: 0,
    };
    if answer.version != abi::DUMP_MINIPORT_VERSION_1 {
        return Err(format!(
            "Version {:#x}, not DUMP_MINIPORT_VERSION_1",
            answer.version
        ));
    }
    if usize::from(answer.size) != abi::MINIPORT_DUMP_POINTERS_SIZE {
        return Err(format!(
            "Size {}, not sizeof(MINIPORT_DUMP_POINTERS) = {}",
            answer.size,
            abi::MINIPORT_DUMP_POINTERS_SIZE
        ));
    }
    if answer.common_buffer_size > 64 * 1024 {
        return Err(format!(
            "CommonBufferSize {} over 64 KiB",
            answer.common_buffer_size
        ));
    }
    Ok(answer)
}
