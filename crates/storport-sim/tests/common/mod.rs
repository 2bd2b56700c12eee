//! Test doubles: a tiny PCI device (a doorbell that "completes" whatever token is written to it)
//! and a raw `extern "C"` test miniport, well behaved unless its ArgumentString says `bad=N`.
#![allow(
    dead_code,
    non_snake_case,
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]

use std::collections::VecDeque;
use std::ffi::{CStr, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use storport_sim::abi::{
    self, HwInitializationData, PerfConfigurationData, PortConfigurationInformation, StorLockHandle,
};
use storport_sim::device::{Bar, GuestMemory, InterruptSink, PciDevice};
use storport_sim::*;

// ---------------------------------------------------------------- the device

/// BAR0 registers: 0x00 doorbell (write a u64 token), 0x08 done queue (read a token, 0 when
/// empty), 0x10 magic (u32), 0x18 interrupt status (read clears INTx).
pub struct FakeDevice {
    done: Mutex<VecDeque<u64>>,
    sink: Mutex<Option<Arc<dyn InterruptSink>>>,
    msix: u16,
    intx: AtomicBool,
    /// When false, doorbell writes are swallowed (a device that never answers).
    pub answer: AtomicBool,
    pub doorbells: AtomicU64,
}

pub const BAR0: u64 = 0xFE00_0000;

impl FakeDevice {
    pub fn new(msix: u16) -> Arc<Self> {
        Arc::new(Self {
            done: Mutex::new(VecDeque::new()),
            sink: Mutex::new(None),
            msix,
            intx: AtomicBool::new(false),
            answer: AtomicBool::new(true),
            doorbells: AtomicU64::new(0),
        })
    }
}

impl PciDevice for FakeDevice {
    fn config_read(&self, offset: u16, data: &mut [u8]) {
        let mut cfg = [0u8; 256];
        cfg[0..2].copy_from_slice(&0x1AF4u16.to_le_bytes());
        cfg[2..4].copy_from_slice(&0x1042u16.to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = cfg.get(offset as usize + i).copied().unwrap_or(0xFF);
        }
    }
    fn config_write(&self, _offset: u16, _data: &[u8]) {}
    fn bars(&self) -> Vec<Bar> {
        vec![Bar {
            index: 0,
            address: BAR0,
            size: 0x1000,
            is_64bit: true,
        }]
    }
    fn bar_read(&self, _bar: u8, offset: u64, data: &mut [u8]) {
        let v: u64 = match offset {
            0x08 => self.done.lock().unwrap().pop_front().unwrap_or(0),
            0x10 => 0xFEED_F00D,
            0x18 => self.intx.swap(false, Ordering::SeqCst) as u64,
            _ => 0,
        };
        data.copy_from_slice(&v.to_le_bytes()[..data.len()]);
    }
    fn bar_write(&self, _bar: u8, offset: u64, data: &[u8]) {
        if offset == 0 && data.len() == 8 {
            self.doorbells.fetch_add(1, Ordering::SeqCst);
            if !self.answer.load(Ordering::SeqCst) {
                return;
            }
            self.done
                .lock()
                .unwrap()
                .push_back(u64::from_le_bytes(data.try_into().unwrap()));
            self.intx.store(true, Ordering::SeqCst);
            let sink = self.sink.lock().unwrap().clone();
            if let Some(s) = sink {
                s.raise(if self.msix >= 2 { 1 } else { 0 });
            }
        }
    }
    fn connect_interrupts(&self, sink: Arc<dyn InterruptSink>) {
        *self.sink.lock().unwrap() = Some(sink);
    }
    fn msix_message_count(&self) -> u16 {
        self.msix
    }
    fn intx_asserted(&self) -> bool {
        self.intx.load(Ordering::SeqCst)
    }
}

struct Region(*mut u8, std::alloc::Layout);
unsafe impl Send for Region {}
unsafe impl Sync for Region {}
impl Drop for Region {
    fn drop(&mut self) {
        unsafe { std::alloc::dealloc(self.0, self.1) }
    }
}

pub fn memory(mib: usize) -> GuestMemory {
    let layout = std::alloc::Layout::from_size_align(mib << 20, 4096).unwrap();
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    GuestMemory {
        host_base: p,
        guest_base: 0x1_0000_0000,
        len: mib << 20,
        owner: Arc::new(Region(p, layout)),
    }
}

// ---------------------------------------------------------------- Storport declarations

unsafe extern "C" {
    fn StorPortInitialize(
        a1: *mut c_void,
        a2: *mut c_void,
        hw: *mut HwInitializationData,
        ctx: *mut c_void,
    ) -> u32;
    pub fn StorPortNotification(ty: u32, devext: *mut c_void, ...);
    pub fn StorPortExtendedFunction(code: u32, devext: *mut c_void, ...) -> u32;
    fn StorPortGetDeviceBase(
        d: *mut c_void,
        bus: u32,
        n: u32,
        addr: i64,
        len: u32,
        io: u8,
    ) -> *mut c_void;
    fn StorPortGetUncachedExtension(
        d: *mut c_void,
        cfg: *mut PortConfigurationInformation,
        len: u32,
    ) -> *mut c_void;
    fn StorPortGetPhysicalAddress(
        d: *mut c_void,
        srb: *mut c_void,
        va: *mut c_void,
        len: *mut u32,
    ) -> i64;
    fn StorPortGetScatterGatherList(d: *mut c_void, srb: *mut c_void) -> *mut c_void;
    fn StorPortSynchronizeAccess(
        d: *mut c_void,
        f: unsafe extern "C" fn(*mut c_void, *mut c_void) -> u8,
        c: *mut c_void,
    ) -> u8;
    fn StorPortStallExecution(us: u32);
    fn StorPortGetBusData(
        d: *mut c_void,
        t: u32,
        b: u32,
        s: u32,
        buf: *mut c_void,
        len: u32,
    ) -> u32;
    fn StorPortReadRegisterUlong64(d: *mut c_void, r: *mut u64) -> u64;
    fn StorPortReadRegisterUlong(d: *mut c_void, r: *mut u32) -> u32;
    fn StorPortWriteRegisterUlong64(d: *mut c_void, r: *mut u64, v: u64);
    fn StorPortDebugPrint(level: u32, fmt: *const i8, ...);
    fn KeInsertQueueDpc() -> u8;
    fn StorPortAllocateRegistryBuffer(d: *mut c_void, len: *mut u32) -> *mut u8;
    fn StorPortFreeRegistryBuffer(d: *mut c_void, buf: *mut u8);
    fn StorPortRegistryRead(
        d: *mut c_void,
        name: *const u8,
        global: u32,
        ty: u32,
        buf: *mut u8,
        len: *mut u32,
    ) -> u8;
}

// ---------------------------------------------------------------- the miniport

/// What the test miniport does wrong (`bad=N` in its ArgumentString).
pub mod bad {
    pub const NONE: u32 = 0;
    pub const LOCK_ORDER: u32 = 1;
    pub const REACQUIRE: u32 = 2;
    pub const RELEASE_NOT_HELD: u32 = 3;
    pub const HELD_AT_RETURN: u32 = 4;
    pub const TWO_DPC: u32 = 5;
    pub const NOT_ALLOWED: u32 = 6;
    pub const IRQL_CHANGED: u32 = 7;
    pub const NOTIFICATION: u32 = 8;
    pub const STATUS_PENDING: u32 = 9;
    pub const BUILDIO_FALSE: u32 = 10;
    pub const PASSIVE_CONTEXT: u32 = 11;
    pub const PERF_CONTEXT: u32 = 12;
    pub const UNCACHED_CONTEXT: u32 = 13;
    pub const UNCACHED_ORDER: u32 = 14;
    pub const FIND_RETURN: u32 = 15;
    pub const LIMITS: u32 = 16;
    pub const DOUBLE_COMPLETE: u32 = 17;
    pub const UNKNOWN_SRB: u32 = 18;
    pub const WATCHDOG: u32 = 19;
    pub const DMA_OUTSIDE: u32 = 20;
    pub const BAD_REGISTER: u32 = 21;
    pub const BAD_DEVICE_BASE: u32 = 22;
    pub const STALL: u32 = 23;
    pub const SYNC_FROM_ISR: u32 = 24;
    pub const MSI_LOCK_MODE: u32 = 25;
    pub const PROHIBITED: u32 = 26;
    pub const NO_WAIT: u32 = 27;
    pub const HALF_DUPLEX: u32 = 28;
    pub const DUMP_DPC: u32 = 29;
    pub const INVALID_KIND: u32 = 30;
    pub const ADAPTER_CONTROL: u32 = 31;
    pub const BUILDIO_TRUE_COMPLETED: u32 = 32;
    pub const SYNC_HOLDING_INTERRUPT: u32 = 33;
    pub const BUSY_ONCE: u32 = 34;
    /// Not a misbehaviour: BuildIo asks for a HwStorTimer call.
    pub const TIMER: u32 = 35;
    /// The DPC burns at least 200 ms of its thread's CPU, then goes on until `Ext::release`.
    pub const DPC_BURN: u32 = 36;
    /// The DPC stays 250 ms (wall-clock) on its CPU with at most 30 ms of CPU time: the rest of
    /// the time its thread is descheduled (pinned to host core 0 with the test's CPU hogs).
    pub const DPC_DESCHEDULED: u32 = 37;
    /// The DPC never returns (a spin at DISPATCH).
    pub const DPC_HANG: u32 = 38;
    /// FindAdapter reads the registry into a buffer of its own, not the registry buffer.
    pub const REGISTRY_FOREIGN_BUFFER: u32 = 39;
    /// The DPC allocates the registry buffer at DISPATCH_LEVEL.
    pub const REGISTRY_AT_DISPATCH: u32 = 40;
    /// Not a misbehaviour: FindAdapter reads `Tunable` properly (the rule's clean twin).
    pub const REGISTRY_GOOD: u32 = 41;
}

#[repr(C)]
pub struct Ext {
    pub bad: u32,
    pub dump: u32,
    /// The DumpRegion a dump instance was given: (virtual, physical, length).
    pub dump_region: (usize, i64, u32),
    pub regs: *mut u8,
    pub uncached: *mut u8,
    pub dpc: [u64; 9],
    pub dpc2: [u64; 9],
    pub passive_ran: u32,
    pub msi: u32,
    pub busy_done: AtomicBool,
    pub ex_fallbacks: AtomicU64,
    pub completions: AtomicU64,
    pub timer_calls: AtomicU64,
    /// Lets a `DPC_BURN` DPC return.
    pub release: AtomicBool,
    /// What the last `DPC_BURN`/`DPC_DESCHEDULED` DPC measured: its thread's CPU time and its
    /// wall-clock time, in nanoseconds, stored when it returns.
    pub dpc_cpu_ns: AtomicU64,
    pub dpc_wall_ns: AtomicU64,
    /// Requests BuildIo saw without an SRB extension (`Adapter::withhold_srb_extensions`).
    pub no_srb_extension: AtomicU64,
}

/// The calling thread's CPU time.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) },
        0
    );
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Pins the calling thread to host core 0; returns the affinity it had.
pub fn pin_to_core0() -> libc::cpu_set_t {
    let mut old: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old) };
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(0, &mut one) };
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) };
    old
}

/// Gives the calling thread back the affinity `pin_to_core0` returned.
pub fn unpin(old: &libc::cpu_set_t) {
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), old) };
}

/// What the watchdog DPC modes do after the DPC completed its requests.
fn dpc_watchdog_modes(e: &Ext) {
    let (cpu0, wall0) = (thread_cpu_time(), std::time::Instant::now());
    match e.bad {
        bad::DPC_BURN => {
            // The fail-safe bound only keeps a broken test from burning a core for ever.
            while (thread_cpu_time() - cpu0 < Duration::from_millis(200)
                || !e.release.load(Ordering::SeqCst))
                && wall0.elapsed() < Duration::from_secs(120)
            {
                std::hint::spin_loop();
            }
        }
        bad::DPC_DESCHEDULED => {
            let old = pin_to_core0();
            while wall0.elapsed() < Duration::from_millis(250) {
                if thread_cpu_time() - cpu0 < Duration::from_millis(30) {
                    std::hint::spin_loop();
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            unpin(&old);
        }
        bad::DPC_HANG => {
            // Spins until the watchdog ends the process; the bound only keeps a broken watchdog
            // from leaving a process spinning for ever.
            while wall0.elapsed() < Duration::from_secs(600) {
                std::hint::spin_loop();
            }
        }
        _ => return,
    }
    e.dpc_cpu_ns.store(
        (thread_cpu_time() - cpu0).as_nanos() as u64,
        Ordering::SeqCst,
    );
    e.dpc_wall_ns
        .store(wall0.elapsed().as_nanos() as u64, Ordering::SeqCst);
}

// SRB_EX offsets (layouts.md).
const SRB_STATUS: usize = 3;
const SRB_FUNCTION: usize = 0x14;
const DATA_TRANSFER_LENGTH: usize = 0x3C;
const DATA_BUFFER: usize = 0x40;
const MINIPORT_CONTEXT: usize = 0x68;

unsafe fn rd<T: Copy>(p: *mut c_void, off: usize) -> T {
    unsafe { (p as *mut u8).add(off).cast::<T>().read_unaligned() }
}
unsafe fn wr<T>(p: *mut c_void, off: usize, v: T) {
    unsafe { (p as *mut u8).add(off).cast::<T>().write_unaligned(v) }
}
fn ext(d: *mut c_void) -> &'static mut Ext {
    unsafe { &mut *(d as *mut Ext) }
}

pub const EXT_SRB_SIZE: u32 = 64;

thread_local! {
    /// DriverEntry variations: 0 good, 1 size 136, 2 no HwStartIo, 3 SCSI_REQUEST_BLOCK only.
    pub static DRIVER_MODE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

pub unsafe extern "C" fn DriverEntry(a1: *mut c_void, a2: *mut c_void) -> u32 {
    let mut hw: HwInitializationData = unsafe { std::mem::zeroed() };
    hw.HwInitializationDataSize = 208;
    hw.AdapterInterfaceType = abi::PCI_BUS;
    hw.HwInitialize = Some(initialize);
    hw.HwStartIo = Some(start_io);
    hw.HwInterrupt = Some(isr);
    hw.HwFindAdapter = Some(find_adapter);
    hw.HwResetBus = Some(reset_bus);
    hw.HwAdapterControl = Some(adapter_control);
    hw.HwBuildIo = Some(build_io);
    hw.DeviceExtensionSize = size_of::<Ext>() as u32;
    hw.SrbExtensionSize = EXT_SRB_SIZE;
    hw.NumberOfAccessRanges = 1;
    hw.TaggedQueuing = 1;
    hw.AutoRequestSense = 1;
    hw.MultipleRequestPerLu = 1;
    hw.SrbTypeFlags = abi::SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK;
    hw.AddressTypeFlags = 1;
    match DRIVER_MODE.with(|m| m.get()) {
        1 => hw.HwInitializationDataSize = 136,
        2 => hw.HwStartIo = None,
        3 => hw.SrbTypeFlags = abi::SRB_TYPE_FLAG_SCSI_REQUEST_BLOCK,
        _ => {}
    }
    unsafe { StorPortInitialize(a1, a2, &mut hw, std::ptr::null_mut()) }
}

unsafe extern "C" fn find_adapter(
    d: *mut c_void,
    _ctx: *mut c_void,
    _bus: *mut c_void,
    arg: *mut u8,
    cfg: *mut PortConfigurationInformation,
    _again: *mut u8,
) -> u32 {
    let e = ext(d);
    if !arg.is_null() {
        let s = unsafe { CStr::from_ptr(arg as *const _) }
            .to_string_lossy()
            .into_owned();
        if let Some(n) = s.strip_prefix("bad=") {
            e.bad = n.parse().unwrap();
        }
    }
    let cfg = unsafe { &mut *cfg };
    e.dump = cfg.DumpMode as u32;
    if cfg.DumpMode == 0 {
        // The dump stack is to get an 8 KiB buffer.
        cfg.RequestedDumpBufferSize = 8192;
    } else {
        let r = cfg.DumpRegion;
        e.dump_region = (r.VirtualBase as usize, r.PhysicalBase, r.Length);
    }
    let range = unsafe { *cfg.AccessRanges };
    let addr = if e.bad == bad::BAD_DEVICE_BASE {
        range.RangeStart + 0x10_0000
    } else {
        range.RangeStart
    };
    e.regs = unsafe {
        StorPortGetDeviceBase(
            d,
            abi::PCI_BUS,
            cfg.SystemIoBusNumber,
            addr,
            range.RangeLength,
            0,
        )
    }
    .cast();
    if e.bad == bad::BAD_DEVICE_BASE {
        e.regs = unsafe {
            StorPortGetDeviceBase(
                d,
                abi::PCI_BUS,
                cfg.SystemIoBusNumber,
                range.RangeStart,
                range.RangeLength,
                0,
            )
        }
        .cast();
    }
    if e.bad != bad::LIMITS {
        cfg.MaximumTransferLength = 1 << 20;
        cfg.NumberOfPhysicalBreaks = 257;
    }
    if e.bad != bad::HALF_DUPLEX {
        cfg.SynchronizationModel = abi::STOR_SYNCHRONIZE_FULL_DUPLEX;
    }
    if e.dump == 0 {
        cfg.HwMSInterruptRoutine = Some(msi_isr);
        cfg.InterruptSynchronizationMode = if e.bad == bad::MSI_LOCK_MODE {
            abi::INTERRUPT_SYNCHRONIZE_ALL
        } else {
            abi::INTERRUPT_SYNCHRONIZE_PER_MESSAGE
        };
    }
    cfg.SrbExtensionSize = EXT_SRB_SIZE;
    e.uncached = unsafe { StorPortGetUncachedExtension(d, cfg, 8192) }.cast();
    if e.bad == bad::UNCACHED_ORDER {
        cfg.SrbExtensionSize = 128;
    }
    let mut buf = [0u8; 4];
    unsafe { StorPortGetBusData(d, 4, 0, 0, buf.as_mut_ptr().cast(), 4) };
    assert_eq!(buf, [0xF4, 0x1A, 0x42, 0x10]);
    assert_eq!(
        unsafe { StorPortReadRegisterUlong(d, e.regs.add(0x10).cast()) },
        0xFEED_F00D
    );
    if e.bad == bad::REGISTRY_FOREIGN_BUFFER || e.bad == bad::REGISTRY_GOOD {
        let mut len = 4u32;
        let buffer = unsafe { StorPortAllocateRegistryBuffer(d, &mut len) };
        assert!(!buffer.is_null());
        // One buffer at a time: a second answers NULL.
        let mut len2 = 4u32;
        assert!(unsafe { StorPortAllocateRegistryBuffer(d, &mut len2) }.is_null());
        let mut own = [0u8; 4];
        let target = if e.bad == bad::REGISTRY_GOOD {
            buffer
        } else {
            own.as_mut_ptr()
        };
        let mut read = 4u32;
        let found = unsafe {
            StorPortRegistryRead(
                d,
                c"Tunable".as_ptr().cast(),
                1,
                abi::MINIPORT_REG_DWORD,
                target,
                &mut read,
            )
        };
        if e.bad == bad::REGISTRY_GOOD {
            assert_eq!(found, 1);
            assert_eq!(unsafe { buffer.cast::<u32>().read_unaligned() }, 77);
        }
        unsafe { StorPortFreeRegistryBuffer(d, buffer) };
    }
    if e.bad == bad::FIND_RETURN {
        7
    } else {
        abi::SP_RETURN_FOUND
    }
}

unsafe extern "C" fn initialize(d: *mut c_void) -> u8 {
    let e = ext(d);
    if e.bad == bad::UNCACHED_CONTEXT {
        unsafe { StorPortGetUncachedExtension(d, std::ptr::null_mut(), 4096) };
    }
    if e.dump != 0 {
        if e.bad == bad::DUMP_DPC {
            unsafe {
                StorPortNotification(
                    abi::INITIALIZE_DPC,
                    d,
                    e.dpc.as_mut_ptr(),
                    dpc as *const c_void,
                )
            };
        }
        return 1;
    }
    let mut ok: i32 = 0;
    unsafe {
        StorPortNotification(
            abi::ENABLE_PASSIVE_INITIALIZATION,
            d,
            passive as *const c_void,
            &mut ok as *mut i32,
        )
    };
    assert_eq!(ok, 1);
    1
}

unsafe extern "C" fn passive(d: *mut c_void) -> u8 {
    let e = ext(d);
    e.passive_ran = 1;
    unsafe {
        StorPortNotification(
            abi::INITIALIZE_DPC,
            d,
            e.dpc.as_mut_ptr(),
            dpc as *const c_void,
        )
    };
    unsafe {
        StorPortNotification(
            abi::INITIALIZE_DPC,
            d,
            e.dpc2.as_mut_ptr(),
            dpc as *const c_void,
        )
    };
    let mut perf = PerfConfigurationData {
        Version: 5,
        Size: 40,
        ..Default::default()
    };
    let st = unsafe {
        StorPortExtendedFunction(
            abi::EXT_INITIALIZE_PERFORMANCE_OPTIMIZATIONS,
            d,
            1u32,
            &mut perf as *mut _,
        )
    };
    assert_eq!(st, 0);
    assert!(perf.Flags & abi::STOR_PERF_CONCURRENT_CHANNELS != 0);
    let mut set = PerfConfigurationData {
        Version: 5,
        Size: 40,
        Flags: abi::STOR_PERF_DPC_REDIRECTION | abi::STOR_PERF_CONCURRENT_CHANNELS,
        ConcurrentChannels: 2,
        ..Default::default()
    };
    let st = unsafe {
        StorPortExtendedFunction(
            abi::EXT_INITIALIZE_PERFORMANCE_OPTIMIZATIONS,
            d,
            0u32,
            &mut set as *mut _,
        )
    };
    assert_eq!(st, 0);
    1
}

/// Acquires with StorPortAcquireSpinLockEx, falling back to the classic call.
pub unsafe fn acquire(d: *mut c_void, kind: u32, ctx: *mut c_void, h: &mut StorLockHandle) -> u32 {
    let st = unsafe {
        StorPortExtendedFunction(
            abi::EXT_ACQUIRE_SPIN_LOCK,
            d,
            kind,
            ctx,
            h as *mut StorLockHandle,
        )
    };
    if st == abi::STOR_STATUS_NOT_IMPLEMENTED {
        ext(d).ex_fallbacks.fetch_add(1, Ordering::Relaxed);
        unsafe {
            StorPortNotification(
                abi::ACQUIRE_SPIN_LOCK,
                d,
                kind,
                ctx,
                h as *mut StorLockHandle,
            )
        };
        return 0;
    }
    st
}

pub unsafe fn release(d: *mut c_void, h: &mut StorLockHandle) {
    unsafe { StorPortNotification(abi::RELEASE_SPIN_LOCK, d, h as *mut StorLockHandle) };
}

unsafe fn complete(d: *mut c_void, srb: *mut c_void, status: u8) {
    unsafe { wr(srb, SRB_STATUS, status) };
    ext(d).completions.fetch_add(1, Ordering::Relaxed);
    unsafe { StorPortNotification(abi::REQUEST_COMPLETE, d, srb) };
}

unsafe extern "C" fn build_io(d: *mut c_void, srb: *mut c_void) -> u8 {
    let e = ext(d);
    let f: u32 = unsafe { rd(srb, SRB_FUNCTION) };
    if unsafe { rd::<u64>(srb, MINIPORT_CONTEXT) } == 0 {
        e.no_srb_extension.fetch_add(1, Ordering::SeqCst);
    }
    match e.bad {
        bad::BUILDIO_FALSE => return 0,
        bad::PASSIVE_CONTEXT => {
            let mut ok = 0i32;
            unsafe {
                StorPortNotification(
                    abi::ENABLE_PASSIVE_INITIALIZATION,
                    d,
                    passive as *const c_void,
                    &mut ok as *mut i32,
                )
            };
        }
        bad::PERF_CONTEXT => {
            let mut perf = PerfConfigurationData {
                Version: 5,
                Size: 40,
                ..Default::default()
            };
            unsafe {
                StorPortExtendedFunction(
                    abi::EXT_INITIALIZE_PERFORMANCE_OPTIMIZATIONS,
                    d,
                    1u32,
                    &mut perf as *mut _,
                )
            };
        }
        bad::TIMER => unsafe {
            StorPortNotification(abi::REQUEST_TIMER_CALL, d, timer as *const c_void, 1000u32)
        },
        bad::BUILDIO_TRUE_COMPLETED => {
            unsafe { complete(d, srb, abi::SRB_STATUS_SUCCESS) };
            return 1;
        }
        _ => {}
    }
    if f != 0 {
        // Non-I/O functions are answered at once.
        unsafe { complete(d, srb, abi::SRB_STATUS_SUCCESS) };
        return 0;
    }
    1
}

unsafe extern "C" fn start_io(d: *mut c_void, srb: *mut c_void) -> u8 {
    let e = ext(d);
    let len: u32 = unsafe { rd(srb, DATA_TRANSFER_LENGTH) };
    // Scatter-gather list and the SRB extension's physical address.
    if len > 0 {
        let sg = unsafe { StorPortGetScatterGatherList(d, srb) };
        assert!(!sg.is_null());
        let n: u32 = unsafe { rd(sg, 0) };
        let total: u32 = (0..n as usize)
            .map(|i| unsafe { rd::<u32>(sg, 16 + 24 * i + 8) })
            .sum();
        assert_eq!(total, len);
        let buf: u64 = unsafe { rd(srb, DATA_BUFFER) };
        unsafe { std::ptr::write_bytes(buf as *mut u8, 0x42, len as usize) };
    }
    let srbext: u64 = unsafe { rd(srb, MINIPORT_CONTEXT) };
    if srbext != 0 {
        let mut plen = 0u32;
        let pa = unsafe { StorPortGetPhysicalAddress(d, srb, srbext as *mut c_void, &mut plen) };
        assert!(pa != 0 && plen >= EXT_SRB_SIZE);
    }
    let mut pp = abi::StartIoPerformanceParameters {
        Version: 1,
        Size: 16,
        ..Default::default()
    };
    assert_eq!(
        unsafe {
            StorPortExtendedFunction(
                abi::EXT_GET_START_IO_PERFORMANCE_PARAMETERS,
                d,
                srb,
                &mut pp as *mut _,
            )
        },
        0
    );
    match e.bad {
        bad::NOTIFICATION => unsafe { StorPortNotification(abi::NEXT_REQUEST, d) },
        bad::NO_WAIT => unsafe { StorPortStallExecution(10) },
        bad::BUSY_ONCE if !e.busy_done.swap(true, Ordering::SeqCst) => {
            unsafe { complete(d, srb, abi::SRB_STATUS_BUSY) };
            return 1;
        }
        _ => {}
    }
    if e.dump != 0 || e.bad == bad::HALF_DUPLEX {
        unsafe { StorPortWriteRegisterUlong64(d, e.regs.cast(), srb as u64) };
        return 1;
    }
    // With concurrent channels StartIo may take the StartIo lock itself.
    let mut h = StorLockHandle::default();
    assert_eq!(
        unsafe { acquire(d, abi::START_IO_LOCK, std::ptr::null_mut(), &mut h) },
        0
    );
    unsafe { StorPortWriteRegisterUlong64(d, e.regs.cast(), srb as u64) };
    unsafe { release(d, &mut h) };
    1
}

unsafe extern "C" fn msi_isr(d: *mut c_void, msg: u32) -> u8 {
    let e = ext(d);
    e.msi += 1;
    match e.bad {
        bad::NOT_ALLOWED => {
            let mut h = StorLockHandle::default();
            unsafe {
                StorPortNotification(
                    abi::ACQUIRE_SPIN_LOCK,
                    d,
                    abi::DPC_LOCK,
                    e.dpc.as_mut_ptr(),
                    &mut h as *mut _,
                )
            };
            unsafe { release(d, &mut h) };
        }
        bad::WATCHDOG => unsafe { StorPortStallExecution(30_000) },
        bad::SYNC_FROM_ISR => {
            unsafe { StorPortSynchronizeAccess(d, sync_noop, std::ptr::null_mut()) };
        }
        _ => {}
    }
    if msg == 1 {
        let mut r = 0i32;
        unsafe {
            StorPortNotification(
                abi::ISSUE_DPC,
                d,
                e.dpc.as_mut_ptr(),
                std::ptr::null_mut::<c_void>(),
                std::ptr::null_mut::<c_void>(),
                &mut r as *mut i32,
            )
        };
    }
    1
}

unsafe extern "C" fn sync_noop(_d: *mut c_void, c: *mut c_void) -> u8 {
    if !c.is_null() {
        unsafe { *(c as *mut u32) += 1 };
    }
    1
}

/// Line-based ISR: INTx and dump mode (where it completes inline).
unsafe extern "C" fn isr(d: *mut c_void) -> u8 {
    let e = ext(d);
    let st = unsafe { StorPortReadRegisterUlong64(d, e.regs.add(0x18).cast()) };
    if e.dump != 0 {
        loop {
            let t = unsafe { StorPortReadRegisterUlong64(d, e.regs.add(8).cast()) };
            if t == 0 {
                break;
            }
            unsafe { complete(d, t as *mut c_void, abi::SRB_STATUS_SUCCESS) };
        }
        return (st != 0) as u8;
    }
    if st == 0 {
        return 0;
    }
    let mut r = 0i32;
    unsafe {
        StorPortNotification(
            abi::ISSUE_DPC,
            d,
            e.dpc.as_mut_ptr(),
            std::ptr::null_mut::<c_void>(),
            std::ptr::null_mut::<c_void>(),
            &mut r as *mut i32,
        )
    };
    1
}

unsafe extern "C" fn dpc(dpc: *mut c_void, d: *mut c_void, _a1: *mut c_void, _a2: *mut c_void) {
    let e = ext(d);
    let null = std::ptr::null_mut::<c_void>();
    // The normal completion path: DPC lock, then the interrupt lock for the device queue.
    let mut done = Vec::new();
    let mut dl = StorLockHandle::default();
    assert_eq!(unsafe { acquire(d, abi::DPC_LOCK, dpc, &mut dl) }, 0);
    loop {
        let mut il = StorLockHandle::default();
        assert_eq!(unsafe { acquire(d, abi::INTERRUPT_LOCK, null, &mut il) }, 0);
        let t = unsafe { StorPortReadRegisterUlong64(d, e.regs.add(8).cast()) };
        unsafe { release(d, &mut il) };
        if t == 0 {
            break;
        }
        done.push(t);
    }
    unsafe { release(d, &mut dl) };
    let mut n = 0u32;
    unsafe { StorPortSynchronizeAccess(d, sync_noop, (&mut n as *mut u32).cast()) };
    assert_eq!(n, 1);
    for t in done {
        let srb = t as *mut c_void;
        match e.bad {
            bad::STATUS_PENDING => unsafe { complete(d, srb, abi::SRB_STATUS_PENDING) },
            bad::DOUBLE_COMPLETE => {
                unsafe { complete(d, srb, abi::SRB_STATUS_SUCCESS) };
                unsafe { complete(d, srb, abi::SRB_STATUS_SUCCESS) };
            }
            bad::UNKNOWN_SRB => {
                let mut fake = [0u8; 128];
                unsafe { complete(d, fake.as_mut_ptr().cast(), abi::SRB_STATUS_SUCCESS) };
                unsafe { complete(d, srb, abi::SRB_STATUS_SUCCESS) };
            }
            _ => unsafe { complete(d, srb, abi::SRB_STATUS_SUCCESS) },
        }
    }
    unsafe { StorPortDebugPrint(1, c"dpc done %d\n".as_ptr(), 1i32) };
    dpc_watchdog_modes(e);
    if e.bad == bad::REGISTRY_AT_DISPATCH {
        let mut len = 4u32;
        let buffer = unsafe { StorPortAllocateRegistryBuffer(d, &mut len) };
        assert!(buffer.is_null(), "refused at DISPATCH_LEVEL");
    }
    match e.bad {
        bad::LOCK_ORDER => {
            let (mut a, mut b) = (StorLockHandle::default(), StorLockHandle::default());
            unsafe { acquire(d, abi::INTERRUPT_LOCK, null, &mut a) };
            unsafe { acquire(d, abi::START_IO_LOCK, null, &mut b) };
            unsafe { release(d, &mut b) };
            unsafe { release(d, &mut a) };
        }
        bad::REACQUIRE => {
            let (mut a, mut b) = (StorLockHandle::default(), StorLockHandle::default());
            unsafe { acquire(d, abi::DPC_LOCK, dpc, &mut a) };
            unsafe { acquire(d, abi::DPC_LOCK, dpc, &mut b) };
            unsafe { release(d, &mut b) };
            unsafe { release(d, &mut a) };
        }
        bad::RELEASE_NOT_HELD => {
            let mut a = StorLockHandle {
                Lock: abi::START_IO_LOCK,
                ..Default::default()
            };
            unsafe { release(d, &mut a) };
        }
        bad::HELD_AT_RETURN => {
            let mut a = StorLockHandle::default();
            unsafe { acquire(d, abi::START_IO_LOCK, null, &mut a) };
            // Not released.
        }
        bad::TWO_DPC => {
            let (mut a, mut b) = (StorLockHandle::default(), StorLockHandle::default());
            unsafe { acquire(d, abi::DPC_LOCK, e.dpc.as_mut_ptr().cast(), &mut a) };
            unsafe { acquire(d, abi::DPC_LOCK, e.dpc2.as_mut_ptr().cast(), &mut b) };
            unsafe { release(d, &mut b) };
            unsafe { release(d, &mut a) };
        }
        bad::IRQL_CHANGED => {
            let mut a = StorLockHandle::default();
            unsafe { acquire(d, abi::START_IO_LOCK, null, &mut a) };
            a.OldIrql = 5;
            unsafe { release(d, &mut a) };
        }
        bad::DMA_OUTSIDE => {
            let mut x = 0u64;
            let mut l = 0u32;
            unsafe { StorPortGetPhysicalAddress(d, null, (&mut x as *mut u64).cast(), &mut l) };
        }
        bad::BAD_REGISTER => {
            unsafe { StorPortReadRegisterUlong(d, e.regs.add(0x2000).cast()) };
        }
        bad::STALL => unsafe { StorPortStallExecution(150_000) },
        bad::MSI_LOCK_MODE => {
            let mut old = 0u32;
            unsafe {
                StorPortExtendedFunction(
                    abi::EXT_ACQUIRE_MSI_SPIN_LOCK,
                    d,
                    1u32,
                    &mut old as *mut u32,
                )
            };
            unsafe { StorPortExtendedFunction(abi::EXT_RELEASE_MSI_SPIN_LOCK, d, 1u32, old) };
        }
        bad::PROHIBITED => {
            unsafe { KeInsertQueueDpc() };
        }
        bad::INVALID_KIND => {
            let mut a = StorLockHandle::default();
            let st = unsafe {
                StorPortExtendedFunction(
                    abi::EXT_ACQUIRE_SPIN_LOCK,
                    d,
                    7u32,
                    null,
                    &mut a as *mut _,
                )
            };
            assert_eq!(st, abi::STOR_STATUS_INVALID_PARAMETER);
        }
        bad::SYNC_HOLDING_INTERRUPT => {
            let mut a = StorLockHandle::default();
            unsafe { acquire(d, abi::INTERRUPT_LOCK, null, &mut a) };
            unsafe { StorPortSynchronizeAccess(d, sync_noop, null) };
            unsafe { release(d, &mut a) };
        }
        _ => {}
    }
}

unsafe extern "C" fn timer(d: *mut c_void) {
    // HwStorTimer holds the StartIo lock (full duplex) and may take the interrupt lock.
    let mut h = StorLockHandle::default();
    assert_eq!(
        unsafe { acquire(d, abi::INTERRUPT_LOCK, std::ptr::null_mut(), &mut h) },
        0
    );
    unsafe { release(d, &mut h) };
    ext(d).timer_calls.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn reset_bus(_d: *mut c_void, _path: u32) -> u8 {
    1
}

unsafe extern "C" fn adapter_control(d: *mut c_void, ty: u32, p: *mut c_void) -> u32 {
    if ty == abi::SCSI_QUERY_SUPPORTED_CONTROL_TYPES {
        let max: u32 = unsafe { rd(p, 0) };
        let supported: &[u32] = if ext(d).bad == bad::ADAPTER_CONTROL {
            &[0]
        } else {
            &[0, 1, 2]
        };
        for &t in supported {
            if t < max {
                unsafe { wr(p, 4 + t as usize, 1u8) };
            }
        }
        return 0;
    }
    match ty {
        abi::SCSI_STOP_ADAPTER | abi::SCSI_RESTART_ADAPTER => 0,
        _ => 1,
    }
}

// ---------------------------------------------------------------- harness

pub fn port(opts: PortOptions) -> Port {
    let p = Port::new(opts);
    p.load_driver(DriverEntry).expect("driver loads");
    p
}

pub fn start(port: &Port, bad: u32, msix: u16) -> (Adapter, Arc<FakeDevice>) {
    start_with(
        port,
        bad,
        AdapterOptions {
            argument_string: Some(format!("bad={bad}")),
            ..Default::default()
        },
        msix,
    )
    .unwrap()
}

pub fn start_with(
    port: &Port,
    _bad: u32,
    opts: AdapterOptions,
    msix: u16,
) -> Result<(Adapter, Arc<FakeDevice>), StartError> {
    let dev = FakeDevice::new(msix);
    let a = port.start_adapter(dev.clone(), memory(16), opts)?;
    Ok((a, dev))
}

pub const INQUIRY: [u8; 6] = [0x12, 0, 0, 0, 36, 0];
pub const READ10: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0];

pub fn read(a: &Adapter) -> Completion {
    a.execute(Request::data_in(&READ10, 4096))
}

/// Runs one request through a misbehaving miniport until it breaks `rule` and returns the
/// violations seen (all of them, once the adapter is stopped). The request may never complete
/// (BuildIo returning FALSE, a completion with SRB_STATUS_PENDING), so the wait is for the
/// violation, not for the request.
pub fn provoke(bad: u32, rule: Rule, opts: PortOptions) -> Vec<Violation> {
    let p = port(opts);
    let (a, _dev) = start(&p, bad, 2);
    let _h = a.submit(Request::data_in(&READ10, 4096));
    if let Err(e) = p.wait_for_violation(rule, PATIENCE) {
        panic!("bad={bad}: {e}");
    }
    drop(a);
    p.violations()
}

pub fn has(v: &[Violation], rule: Rule) -> bool {
    v.iter().any(|x| x.rule == rule)
}
