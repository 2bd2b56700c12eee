//! The storport.sys exports, defined for the host: the miniport's real FFI calls land here.
//!
//! The three variadic exports (StorPortNotification, StorPortExtendedFunction,
//! StorPortDebugPrint) are defined in `shim.c`, which unpacks the arguments per notification
//! type / function code and calls the fixed-argument `storport_sim_*` functions below.

#![allow(non_snake_case, reason = "the exports keep Storport's C names")]

use std::alloc::Layout;
use std::collections::VecDeque;
use std::ffi::{CStr, c_char, c_void};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::abi::{self, StorLockHandle, SyncFn, irql};
use crate::adapter::{Adapter, AdapterInner, gate, phase, with_adapter};
use crate::cpu::{self, AcquireApi, Callback, LockRef};
use crate::rules::Rule;

static UNATTRIBUTED: AtomicU64 = AtomicU64::new(0);

// ---- The lock-call log (tests of a miniport's lock wrappers) --------------------------------

/// The Storport entry a logged call went through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockApi {
    /// StorPortAcquireSpinLockEx: StorPortExtendedFunction(ExtFunctionAcquireSpinLock = 93).
    AcquireEx,
    /// StorPortAcquireSpinLock: StorPortNotification(AcquireSpinLock = 0x1003).
    Acquire,
    /// StorPortReleaseSpinLock: StorPortNotification(ReleaseSpinLock = 0x1004).
    Release,
    /// StorPortAcquireMSISpinLock: StorPortExtendedFunction(11).
    AcquireMsi,
    /// StorPortReleaseMSISpinLock: StorPortExtendedFunction(12).
    ReleaseMsi,
    /// StorPortSynchronizeAccess (an export; `code` 0).
    SynchronizeAccess,
    /// StorPortInitializeDpc: StorPortNotification(InitializeDpc = 0x1001).
    InitializeDpc,
    /// StorPortIssueDpc: StorPortNotification(IssueDpc = 0x1002).
    IssueDpc,
}

/// One lock or DPC call a miniport made, as Storport received it (see [`record_lock_calls`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockCall {
    /// Which entry.
    pub api: LockApi,
    /// The function code or notification type the call carried (93, 0x1003, 0x1004, 11, 12,
    /// 0x1001, 0x1002; 0 for StorPortSynchronizeAccess).
    pub code: u32,
    /// STOR_SPINLOCK (acquires; for a release, the kind the handle records); the MessageId for
    /// the MSI calls; 0 otherwise.
    pub kind: u32,
    /// LockContext (acquires), the STOR_DPC (DPC calls), the routine's Context
    /// (StorPortSynchronizeAccess); 0 otherwise.
    pub context: usize,
    /// The STOR_LOCK_HANDLE address (acquire, release); 0 otherwise.
    pub handle: usize,
    /// The STOR_STATUS answered (STOR_STATUS_SUCCESS for the notifications, which return none).
    pub status: u32,
    /// The callback that made the call ("HwStorStartIo", ...), or "port".
    pub callback: &'static str,
    /// The host thread (simulated CPU) that made it.
    pub thread: std::thread::ThreadId,
}

/// Whether lock calls are logged (off by default: the log is a process-wide lock).
static RECORD_LOCK_CALLS: AtomicBool = AtomicBool::new(false);
/// The log: (adapter serial, call), the most recent [`LOCK_CALL_LOG_CAPACITY`] calls.
static LOCK_CALLS: Mutex<VecDeque<(u64, LockCall)>> = Mutex::new(VecDeque::new());
const LOCK_CALL_LOG_CAPACITY: usize = 1 << 18;

/// Turns the process-wide log of spin-lock, StorPortSynchronizeAccess and DPC calls on or off;
/// [`Adapter::lock_calls`] reads one adapter's entries. For tests of lock wrappers.
pub fn record_lock_calls(on: bool) {
    RECORD_LOCK_CALLS.store(on, Ordering::SeqCst);
}

fn log_lock_call(
    a: &AdapterInner,
    api: LockApi,
    code: u32,
    kind: u32,
    context: *mut c_void,
    handle: *mut c_void,
    status: u32,
) {
    if !RECORD_LOCK_CALLS.load(Ordering::Relaxed) {
        return;
    }
    let call = LockCall {
        api,
        code,
        kind,
        context: context as usize,
        handle: handle as usize,
        status,
        callback: cpu::current_callback().map_or("port", Callback::name),
        thread: std::thread::current().id(),
    };
    let mut log = LOCK_CALLS.lock().unwrap_or_else(|e| e.into_inner());
    if log.len() == LOCK_CALL_LOG_CAPACITY {
        log.pop_front();
    }
    log.push_back((a.serial, call));
}

impl Adapter {
    /// The lock and DPC calls this adapter's miniport made while [`record_lock_calls`] was on,
    /// oldest first.
    pub fn lock_calls(&self) -> Vec<LockCall> {
        LOCK_CALLS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(serial, _)| *serial == self.inner.serial)
            .map(|(_, call)| *call)
            .collect()
    }
}

/// Storport calls whose device extension matched no adapter (each also printed to stderr).
pub fn unattributed_calls() -> u64 {
    UNATTRIBUTED.load(Ordering::Relaxed)
}

fn on<R: Default>(devext: *mut c_void, what: &str, f: impl FnOnce(&AdapterInner) -> R) -> R {
    crate::sched::switch(what);
    match with_adapter(devext, f) {
        Some(r) => r,
        None => {
            UNATTRIBUTED.fetch_add(1, Ordering::Relaxed);
            eprintln!("storport-sim: {what} with unknown device extension {devext:p}");
            R::default()
        }
    }
}

/// The adapter of the innermost callback on this CPU (for calls without a device extension).
fn on_current(f: impl FnOnce(&AdapterInner)) {
    let p = cpu::CTX.with(|c| c.frames.borrow().last().map(|f| f.adapter));
    if let Some(p) = p {
        // SAFETY: a frame's adapter is alive for the whole callback (see `with_adapter`).
        f(unsafe { &*p });
    }
}

// ---- StorPortInitialize -------------------------------------------------------------------

/// StorPortInitialize.
///
/// # Safety
/// Called by a miniport's DriverEntry with its arguments and a HW_INITIALIZATION_DATA.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortInitialize(
    Argument1: *mut c_void,
    _Argument2: *mut c_void,
    HwInitializationData: *mut c_void,
    _HwContext: *mut c_void,
) -> u32 {
    crate::port::initialize(Argument1, HwInitializationData)
}

// ---- Notifications and extended functions (from shim.c) -------------------------------------

/// Fixed-argument StorPortNotification, called by the C shim.
///
/// # Safety
/// `args` points at the (up to 6) arguments the shim unpacked for `ty`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn storport_sim_notification(ty: u32, devext: *mut c_void, args: *const u64) {
    // SAFETY: the shim always passes an array of 6 arguments.
    let args: [u64; 6] = unsafe { args.cast::<[u64; 6]>().read() };
    on(devext, "StorPortNotification", |a| {
        notification(a, ty, args)
    });
}

fn notification(a: &AdapterInner, ty: u32, args: [u64; 6]) {
    let p = |i: usize| args[i] as *mut c_void;
    match ty {
        abi::REQUEST_COMPLETE => crate::request::complete(a, p(0)),
        abi::NEXT_REQUEST | abi::NEXT_LU_REQUEST => a.report(
            Rule::NotificationType,
            [ty as u64, 0, 0],
            format!("StorPortNotification({ty}): NextRequest/NextLuRequest are not for Storport miniports"),
        ),
        abi::RESET_DETECTED => a.log(format!("ResetDetected(path {})", args[0])),
        abi::BUS_CHANGE_DETECTED => a.log(format!("BusChangeDetected(path {})", args[0])),
        abi::STATE_CHANGE_DETECTED_CALL => a.log(format!("StateChangeDetected(entity {:#x})", args[0])),
        abi::REQUEST_TIMER_CALL => {
            // SAFETY: a PHW_TIMER (or NULL) is one code pointer.
            let f: Option<abi::DevExtVoidFn> = unsafe { std::mem::transmute::<usize, Option<abi::DevExtVoidFn>>(args[0] as usize) };
            let us = args[1] as u32;
            match f {
                Some(f) if us != 0 => a.timer.set_hw_timer(Some((crate::sched::now() + Duration::from_micros(us as u64), f))),
                _ => a.timer.cancel_hw_timer(),
            }
        }
        abi::ENABLE_PASSIVE_INITIALIZATION => {
            // SAFETY: a PHW_PASSIVE_INITIALIZE_ROUTINE (or NULL) is one code pointer.
            let f: Option<abi::DevExtBoolFn> = unsafe { std::mem::transmute::<usize, Option<abi::DevExtBoolFn>>(args[0] as usize) };
            let ok = if cpu::current_callback() != Some(Callback::Initialize) {
                a.report(
                    Rule::PassiveInitContext,
                    [0; 3],
                    "StorPortEnablePassiveInitialization outside HwStorInitialize".into(),
                );
                false
            } else if a.dump_mode() || f.is_none() {
                false
            } else {
                *a.passive_init.lock().unwrap_or_else(|e| e.into_inner()) = f;
                true
            };
            put_long(p(1), ok as i32);
        }
        abi::INITIALIZE_DPC => {
            // SAFETY: a PHW_DPC_ROUTINE (or NULL) is one code pointer.
            let f: Option<abi::DpcFn> = unsafe { std::mem::transmute::<usize, Option<abi::DpcFn>>(args[1] as usize) };
            log_lock_call(a, LockApi::InitializeDpc, ty, 0, p(0), std::ptr::null_mut(), abi::STOR_STATUS_SUCCESS);
            crate::dpc::initialize(a, p(0), f);
        }
        abi::ISSUE_DPC => {
            log_lock_call(a, LockApi::IssueDpc, ty, 0, p(0), std::ptr::null_mut(), abi::STOR_STATUS_SUCCESS);
            let ok = crate::dpc::issue(a, p(0), args[1] as usize, args[2] as usize);
            put_long(p(3), ok as i32);
        }
        abi::ACQUIRE_SPIN_LOCK => {
            let status = acquire_handle(a, args[0] as u32, p(1), p(2).cast(), AcquireApi::Classic);
            log_lock_call(a, LockApi::Acquire, ty, args[0] as u32, p(1), p(2), status);
        }
        abi::RELEASE_SPIN_LOCK => {
            if !p(0).is_null() {
                // SAFETY: the miniport passes the STOR_LOCK_HANDLE it acquired with.
                let kind = unsafe { p(0).cast::<StorLockHandle>().read_unaligned() }.Lock;
                log_lock_call(a, LockApi::Release, ty, kind, std::ptr::null_mut(), p(0), abi::STOR_STATUS_SUCCESS);
            }
            release_handle(a, p(0).cast())
        }
        _ => a.report(
            Rule::NotificationType,
            [ty as u64, 0, 0],
            format!("StorPortNotification type {ty:#x} is not supported by this port"),
        ),
    }
}

fn put_long(p: *mut c_void, v: i32) {
    if !p.is_null() {
        // SAFETY: the inline wrappers pass the address of a LONG result variable.
        unsafe { p.cast::<i32>().write_unaligned(v) };
    }
}

fn acquire_handle(
    a: &AdapterInner,
    kind: u32,
    ctx: *mut c_void,
    handle: *mut StorLockHandle,
    api: AcquireApi,
) -> u32 {
    if handle.is_null() {
        a.report(
            Rule::InvalidParameter,
            [kind as u64, 0, 0],
            "spin-lock acquire with a NULL STOR_LOCK_HANDLE".into(),
        );
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    let lock = match kind {
        abi::DPC_LOCK => match crate::dpc::resolve(a, ctx) {
            Some(obj) => LockRef::Dpc(obj as *const _ as usize),
            None => {
                a.report(
                    Rule::InvalidParameter,
                    [kind as u64, ctx as u64, 0],
                    "DpcLock with a LockContext that is not an initialised STOR_DPC".into(),
                );
                return abi::STOR_STATUS_INVALID_PARAMETER;
            }
        },
        abi::START_IO_LOCK | abi::INTERRUPT_LOCK if !ctx.is_null() && api == AcquireApi::Ex => {
            a.report(
                Rule::InvalidParameter,
                [kind as u64, ctx as u64, 0],
                "StartIoLock/InterruptLock take a NULL LockContext".into(),
            );
            return abi::STOR_STATUS_INVALID_PARAMETER;
        }
        abi::START_IO_LOCK => LockRef::StartIo,
        abi::INTERRUPT_LOCK => LockRef::Interrupt,
        _ => {
            a.report(
                Rule::InvalidParameter,
                [kind as u64, 0, 0],
                format!("spin-lock kind {kind} is not supported"),
            );
            return abi::STOR_STATUS_INVALID_PARAMETER;
        }
    };
    match cpu::miniport_acquire(a, lock, api) {
        Ok(acq) => {
            let ident = match lock {
                LockRef::Dpc(p) => p as u64,
                _ => a.serial,
            };
            let h = StorLockHandle {
                Lock: kind,
                Next: acq.serial,
                LockPtr: ident,
                OldIrql: acq.old_irql,
            };
            // SAFETY: the miniport passes its STOR_LOCK_HANDLE (32 bytes).
            unsafe { handle.write_unaligned(h) };
            abi::STOR_STATUS_SUCCESS
        }
        Err(status) => status,
    }
}

fn release_handle(a: &AdapterInner, handle: *mut StorLockHandle) {
    if handle.is_null() {
        a.report(
            Rule::InvalidParameter,
            [0; 3],
            "StorPortReleaseSpinLock with a NULL handle".into(),
        );
        return;
    }
    // SAFETY: the miniport passes the STOR_LOCK_HANDLE it acquired with.
    let h = unsafe { handle.read_unaligned() };
    let lock = match h.Lock {
        abi::DPC_LOCK => LockRef::Dpc(h.LockPtr as usize),
        abi::START_IO_LOCK => LockRef::StartIo,
        abi::INTERRUPT_LOCK => LockRef::Interrupt,
        k => {
            a.report(
                Rule::LockReleaseNotHeld,
                [k as u64, 0, 0],
                format!("release of a handle with lock kind {k}"),
            );
            return;
        }
    };
    cpu::miniport_release(a, lock, Some(h.Next), h.OldIrql);
    // A second release with the same handle then matches nothing.
    let next = handle.cast::<u8>().wrapping_add(8).cast::<u64>();
    // SAFETY: as above (Next is at offset 8 of the handle).
    unsafe { next.write_unaligned(0) };
}

/// Fixed-argument StorPortExtendedFunction, called by the C shim.
///
/// # Safety
/// `args` points at the (up to 6) arguments the shim unpacked for `code`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn storport_sim_extended_function(
    code: u32,
    devext: *mut c_void,
    args: *const u64,
) -> u32 {
    // SAFETY: the shim always passes an array of 12 arguments.
    let args: [u64; 12] = unsafe { args.cast::<[u64; 12]>().read() };
    on(devext, "StorPortExtendedFunction", |a| {
        extended(a, code, args)
    })
}

fn extended(a: &AdapterInner, code: u32, args: [u64; 12]) -> u32 {
    let p = |i: usize| args[i] as *mut c_void;
    match code {
        abi::EXT_ALLOCATE_POOL => {
            if a.dump_mode() {
                a.report(
                    Rule::DumpMode,
                    [0; 3],
                    "StorPortAllocatePool in dump mode".into(),
                );
                return abi::STOR_STATUS_UNSUCCESSFUL;
            }
            no_wait(a, "StorPortAllocatePool");
            let bytes = (args[0] as u32).max(1) as usize;
            let out = p(2).cast::<*mut c_void>();
            if out.is_null() {
                return abi::STOR_STATUS_INVALID_PARAMETER;
            }
            let layout = Layout::from_size_align(bytes, 16).expect("pool layout");
            // SAFETY: non-zero size.
            let mem = unsafe { std::alloc::alloc_zeroed(layout) };
            a.pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(mem as usize, layout);
            // SAFETY: the wrapper passes a PVOID* for the result.
            unsafe { out.write_unaligned(mem.cast()) };
            abi::STOR_STATUS_SUCCESS
        }
        abi::EXT_MARK_DUMP_MEMORY => {
            // StorPortMarkDumpMemory(Address, Length, Flags): only from DriverEntry or
            // HwStorFindAdapter; Flags 0 or MARK_DUMP_MEMORY_FLAG_PHYSICAL_ADDRESS (the DDI page).
            let (address, length, flags) = (args[0] as usize, args[1] as usize, args[2] as u32);
            let cb = cpu::current_callback();
            if !matches!(cb, Some(Callback::FindAdapter | Callback::DriverEntry)) {
                a.report(
                    Rule::DumpMode,
                    [address as u64, length as u64, 0],
                    format!(
                        "StorPortMarkDumpMemory outside DriverEntry and HwStorFindAdapter ({cb:?})"
                    ),
                );
                return abi::STOR_STATUS_INVALID_DEVICE_REQUEST;
            }
            if flags & !1 != 0 || address == 0 {
                return abi::STOR_STATUS_INVALID_PARAMETER;
            }
            a.marked_dump_memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((address, length, flags));
            abi::STOR_STATUS_SUCCESS
        }
        abi::EXT_MINIPORT_ETW_EVENT2 => {
            if cpu::current_irql() > irql::DISPATCH {
                a.report(
                    Rule::InvalidParameter,
                    [code as u64, 0, 0],
                    "StorPortEtwEvent2 above DISPATCH_LEVEL".into(),
                );
                return abi::STOR_STATUS_INVALID_IRQL;
            }
            // SAFETY: the wrapper passes NUL-terminated UTF-16 strings (or NULL) for the
            // description and both parameter names.
            let text = |i: usize| unsafe { wide(args[i] as *const u16) };
            let event = crate::adapter::EtwEvent {
                id: args[1] as u32,
                description: text(2),
                keywords: args[3],
                level: args[4] as u32,
                opcode: args[5] as u32,
                with_srb: args[6] != 0,
                parameters: [(text(7), args[8]), (text(9), args[10])],
            };
            if event.description.is_empty() {
                a.report(
                    Rule::InvalidParameter,
                    [code as u64, 0, 0],
                    "StorPortEtwEvent2 without a description (it is required)".into(),
                );
                return abi::STOR_STATUS_INVALID_PARAMETER;
            }
            if !a.tracing.load(Ordering::SeqCst) {
                // No session listens: Storport drops the event.
                return abi::STOR_STATUS_SUCCESS;
            }
            a.etw.lock().unwrap_or_else(|e| e.into_inner()).push(event);
            a.port.events.notify();
            abi::STOR_STATUS_SUCCESS
        }
        abi::EXT_FREE_POOL => {
            let mem = args[0] as usize;
            match a
                .pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&mem)
            {
                Some(l) => {
                    // SAFETY: allocated by EXT_ALLOCATE_POOL with this layout.
                    unsafe { std::alloc::dealloc(mem as *mut u8, l) };
                    abi::STOR_STATUS_SUCCESS
                }
                None => {
                    a.report(
                        Rule::InvalidParameter,
                        [mem as u64, 0, 0],
                        "StorPortFreePool of memory not from StorPortAllocatePool".into(),
                    );
                    abi::STOR_STATUS_INVALID_PARAMETER
                }
            }
        }
        abi::EXT_ACQUIRE_MSI_SPIN_LOCK | abi::EXT_RELEASE_MSI_SPIN_LOCK => {
            let msg = args[0] as u32;
            if a.dump_mode() {
                a.report(Rule::DumpMode, [0; 3], "MSI spin lock in dump mode".into());
                return abi::STOR_STATUS_INVALID_DEVICE_STATE;
            }
            if !a.per_message() {
                a.report(
                    Rule::MsiLock,
                    [msg as u64, 0, 0],
                    "MSI spin lock used without InterruptSynchronizePerMessage".into(),
                );
            }
            if msg >= a.lines {
                a.report(
                    Rule::MsiLock,
                    [msg as u64, a.lines as u64, 0],
                    format!("MSI spin lock of message {msg} (only {} messages)", a.lines),
                );
                return abi::STOR_STATUS_INVALID_PARAMETER;
            }
            if code == abi::EXT_ACQUIRE_MSI_SPIN_LOCK {
                let status = match cpu::miniport_acquire(a, LockRef::Message(msg), AcquireApi::Msi)
                {
                    Ok(acq) => {
                        let out = p(1).cast::<u32>();
                        if !out.is_null() {
                            // SAFETY: the wrapper passes a PULONG for OldIrql.
                            unsafe { out.write_unaligned(acq.old_irql as u32) };
                        }
                        abi::STOR_STATUS_SUCCESS
                    }
                    Err(s) => s,
                };
                log_lock_call(
                    a,
                    LockApi::AcquireMsi,
                    code,
                    msg,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    status,
                );
                status
            } else {
                log_lock_call(
                    a,
                    LockApi::ReleaseMsi,
                    code,
                    msg,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    abi::STOR_STATUS_SUCCESS,
                );
                cpu::miniport_release(a, LockRef::Message(msg), None, args[1] as u8);
                abi::STOR_STATUS_SUCCESS
            }
        }
        abi::EXT_GET_MESSAGE_INTERRUPT_INFORMATION => {
            let msg = args[0] as u32;
            let out = p(1).cast::<abi::MessageInterruptInformation>();
            if a.dump_mode() || msg >= a.messages || out.is_null() {
                return abi::STOR_STATUS_INVALID_PARAMETER;
            }
            let info = abi::MessageInterruptInformation {
                MessageId: msg,
                MessageData: 0x4000 + msg,
                MessageAddress: 0xFEE0_0000,
                InterruptVector: 0x60 + msg,
                InterruptLevel: irql::DIRQL as u32,
                InterruptMode: 1,
            };
            // SAFETY: the wrapper passes a MESSAGE_INTERRUPT_INFORMATION*.
            unsafe { out.write_unaligned(info) };
            abi::STOR_STATUS_SUCCESS
        }
        abi::EXT_INITIALIZE_PERFORMANCE_OPTIMIZATIONS => {
            perf_opts(a, args[0] as u32 & 0xFF != 0, p(1).cast())
        }
        abi::EXT_GET_START_IO_PERFORMANCE_PARAMETERS => startio_params(a, p(0), p(1).cast()),
        abi::EXT_ACQUIRE_SPIN_LOCK => {
            let status = if a.port.options.acquire_spinlock_ex_not_implemented {
                abi::STOR_STATUS_NOT_IMPLEMENTED
            } else {
                acquire_handle(a, args[0] as u32, p(1), p(2).cast(), AcquireApi::Ex)
            };
            log_lock_call(
                a,
                LockApi::AcquireEx,
                code,
                args[0] as u32,
                p(1),
                p(2),
                status,
            );
            status
        }
        _ => abi::STOR_STATUS_NOT_IMPLEMENTED,
    }
}

fn perf_opts(a: &AdapterInner, query: bool, data: *mut abi::PerfConfigurationData) -> u32 {
    if a.dump_mode() {
        a.report(
            Rule::DumpMode,
            [0; 3],
            "StorPortInitializePerfOpts in dump mode".into(),
        );
        return abi::STOR_STATUS_UNSUCCESSFUL;
    }
    if data.is_null() {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    let cb = cpu::current_callback();
    if !matches!(cb, Some(Callback::Initialize | Callback::PassiveInitialize)) {
        a.report(
            Rule::PerfOptsContext,
            [query as u64, 0, 0],
            "StorPortInitializePerfOpts outside HwStorInitialize and the passive-init routine"
                .into(),
        );
        return abi::STOR_STATUS_INVALID_DEVICE_STATE;
    }
    // SAFETY: the wrapper passes a PERF_CONFIGURATION_DATA*.
    let mut d = unsafe { data.read_unaligned() };
    if query {
        d.Flags = abi::SUPPORTED_PERF_FLAGS;
        d.ConcurrentChannels = a.cpus();
        d.FirstRedirectionMessageNumber = 0;
        d.LastRedirectionMessageNumber = a.lines.saturating_sub(1);
        // SAFETY: as above.
        unsafe { data.write_unaligned(d) };
        return abi::STOR_STATUS_SUCCESS;
    }
    if d.Flags & !abi::SUPPORTED_PERF_FLAGS != 0 {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    if d.Flags & abi::STOR_PERF_INTERRUPT_MESSAGE_RANGES != 0 {
        if d.Flags & abi::STOR_PERF_DPC_REDIRECTION == 0
            || d.FirstRedirectionMessageNumber > d.LastRedirectionMessageNumber
            || d.LastRedirectionMessageNumber >= a.lines
        {
            return abi::STOR_STATUS_INVALID_PARAMETER;
        }
        a.first_msg
            .store(d.FirstRedirectionMessageNumber, Ordering::SeqCst);
        a.last_msg
            .store(d.LastRedirectionMessageNumber, Ordering::SeqCst);
    }
    let ch = if d.Flags & abi::STOR_PERF_CONCURRENT_CHANNELS != 0 {
        d.ConcurrentChannels.max(1)
    } else {
        1
    };
    a.channels.store(ch, Ordering::SeqCst);
    a.perf_flags.store(d.Flags, Ordering::SeqCst);
    if ch > 1 && a.port.options.start_io_while_granting_channels {
        crate::request::probe_start_io(a);
    }
    abi::STOR_STATUS_SUCCESS
}

fn startio_params(
    a: &AdapterInner,
    srb: *mut c_void,
    out: *mut abi::StartIoPerformanceParameters,
) -> u32 {
    if out.is_null() {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the wrapper passes a STARTIO_PERFORMANCE_PARAMETERS* whose Size the caller set.
    let mut p = unsafe { out.read_unaligned() };
    if (p.Size as usize) < size_of::<abi::StartIoPerformanceParameters>() {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    let Some(cpu) = crate::request::request_cpu(a, srb) else {
        a.report(
            Rule::UnknownSrb,
            [srb as u64, 0, 0],
            "StorPortGetStartIoPerfParams for an SRB the port did not send".into(),
        );
        return abi::STOR_STATUS_INVALID_PARAMETER;
    };
    let flags = a.perf_flags.load(Ordering::Relaxed);
    p.MessageNumber = if flags & abi::STOR_PERF_INTERRUPT_MESSAGE_RANGES != 0 {
        let first = a.first_msg.load(Ordering::Relaxed);
        let last = a.last_msg.load(Ordering::Relaxed);
        first + cpu % (last - first + 1)
    } else {
        cpu % a.lines
    };
    p.ChannelNumber = cpu % a.concurrent_channels().max(1);
    // SAFETY: as above.
    unsafe { out.write_unaligned(p) };
    abi::STOR_STATUS_SUCCESS
}

fn no_wait(a: &AdapterInner, what: &str) {
    if cpu::current_callback() == Some(Callback::StartIo) {
        a.report(Rule::NoWait, [0; 3], format!("{what} in HwStorStartIo"));
    }
}

/// StorPortDebugPrint's formatted text, from the C shim.
///
/// # Safety
/// `msg` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn storport_sim_debug_print(level: u32, msg: *const c_char) {
    if msg.is_null() {
        return;
    }
    // SAFETY: the shim passes its NUL-terminated formatting buffer.
    let s = unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned();
    on_current(|a| {
        if a.port.options.debug_print {
            eprint!("[vioblk {level}] {s}");
        }
        a.log(s.trim_end().to_string());
    });
}

// ---- Fixed-argument exports ------------------------------------------------------------------

/// StorPortSynchronizeAccess.
///
/// # Safety
/// Storport contract: called from a miniport callback with a valid routine.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortSynchronizeAccess(
    HwDeviceExtension: *mut c_void,
    SynchronizedAccessRoutine: Option<SyncFn>,
    Context: *mut c_void,
) -> u8 {
    on(HwDeviceExtension, "StorPortSynchronizeAccess", |a| {
        a.lock_counts.synchronize_access();
        let Some(f) = SynchronizedAccessRoutine else {
            a.report(
                Rule::InvalidParameter,
                [0; 3],
                "StorPortSynchronizeAccess with a NULL routine".into(),
            );
            return 0;
        };
        log_lock_call(
            a,
            LockApi::SynchronizeAccess,
            0,
            0,
            Context,
            std::ptr::null_mut(),
            abi::STOR_STATUS_SUCCESS,
        );
        let devext = a.devext_ptr();
        let cb = cpu::current_callback();
        let bad_context = matches!(
            cb,
            Some(
                Callback::Interrupt
                    | Callback::MsiInterrupt
                    | Callback::Initialize
                    | Callback::SynchronizedAccess
            )
        );
        let miniport_holds = cpu::holds(a.serial, |h| {
            !h.by_port && matches!(h.lock, LockRef::Interrupt | LockRef::Message(_))
        });
        let port_holds = cpu::holds(a.serial, |h| {
            h.by_port && matches!(h.lock, LockRef::Interrupt | LockRef::Message(_))
        });
        if bad_context || miniport_holds {
            a.report(
                Rule::SynchronizeAccessContext,
                [0; 3],
                format!(
                    "StorPortSynchronizeAccess from {} {}(deadlock on Windows)",
                    cb.map_or("no callback", Callback::name),
                    if miniport_holds {
                        "holding the interrupt lock "
                    } else {
                        ""
                    }
                ),
            );
        }
        if bad_context || miniport_holds || port_holds {
            // Already under the interrupt lock (half-duplex StartIo, or the violation above).
            // SAFETY: `f` is the miniport's synchronized routine.
            return unsafe { f(devext, Context) };
        }
        let (lvl, locks) = a.interrupt_context();
        // SAFETY: as above.
        cpu::invoke(a, Callback::SynchronizedAccess, lvl, locks, || unsafe {
            f(devext, Context)
        })
    })
}

/// StorPortGetDeviceBase.
///
/// # Safety
/// Storport contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortGetDeviceBase(
    HwDeviceExtension: *mut c_void,
    BusType: u32,
    _SystemIoBusNumber: u32,
    IoAddress: i64,
    NumberOfBytes: u32,
    InIoSpace: u8,
) -> *mut c_void {
    on_ptr(HwDeviceExtension, "StorPortGetDeviceBase", |a| {
        crate::registers::map(a, BusType, IoAddress, NumberOfBytes, InIoSpace)
    })
}

fn on_ptr(
    devext: *mut c_void,
    what: &str,
    f: impl FnOnce(&AdapterInner) -> *mut c_void,
) -> *mut c_void {
    on(devext, what, |a| f(a) as usize) as *mut c_void
}

/// StorPortFreeDeviceBase.
///
/// # Safety
/// Storport contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortFreeDeviceBase(
    HwDeviceExtension: *mut c_void,
    MappedAddress: *mut c_void,
) {
    on(HwDeviceExtension, "StorPortFreeDeviceBase", |a| {
        crate::registers::unmap(a, MappedAddress)
    });
}

/// StorPortGetUncachedExtension.
///
/// # Safety
/// Storport contract: `ConfigInfo` is the PORT_CONFIGURATION_INFORMATION FindAdapter received.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortGetUncachedExtension(
    HwDeviceExtension: *mut c_void,
    ConfigInfo: *mut c_void,
    NumberOfBytes: u32,
) -> *mut c_void {
    on_ptr(HwDeviceExtension, "StorPortGetUncachedExtension", |a| {
        if cpu::current_callback() != Some(Callback::FindAdapter) || ConfigInfo.is_null() {
            a.report(
                Rule::UncachedExtension,
                [NumberOfBytes as u64, 0, 0],
                "StorPortGetUncachedExtension outside HwStorFindAdapter".into(),
            );
            return std::ptr::null_mut();
        }
        // ConfigInfo is the PORT_CONFIGURATION_INFORMATION passed to FindAdapter.
        let at = ConfigInfo.cast::<u8>().wrapping_add(0x8C).cast::<u32>();
        // SAFETY: as above; SrbExtensionSize is at 0x8C.
        let srb_ext = unsafe { at.read_unaligned() };
        let mut u = a.uncached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((host, len, _)) = *u {
            return if (NumberOfBytes as usize) <= len {
                host as *mut c_void
            } else {
                std::ptr::null_mut()
            };
        }
        let bytes = (NumberOfBytes as usize).max(1).next_multiple_of(4096);
        match a.alloc.alloc(bytes) {
            Some(b) => {
                a.alloc.fill(b.host, bytes, 0);
                *u = Some((b.host, NumberOfBytes as usize, srb_ext));
                b.host as *mut c_void
            }
            None => std::ptr::null_mut(),
        }
    })
}

/// StorPortGetPhysicalAddress.
///
/// # Safety
/// Storport contract; `Length` is a writable ULONG.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortGetPhysicalAddress(
    HwDeviceExtension: *mut c_void,
    Srb: *mut c_void,
    VirtualAddress: *mut c_void,
    Length: *mut u32,
) -> i64 {
    let (pa, len) = on(HwDeviceExtension, "StorPortGetPhysicalAddress", |a| {
        let host = VirtualAddress as usize;
        let Some(pa) = a.alloc.to_guest(host) else {
            a.report(
                Rule::DmaOutsideGuestMemory,
                [host as u64, 0, 0],
                format!("StorPortGetPhysicalAddress({host:#x}): not DMA-able memory from the port"),
            );
            return (0u64, 0usize);
        };
        let mut run = None;
        if !Srb.is_null() {
            run = crate::request::contiguous_in_request(a, Srb, host);
        }
        if run.is_none()
            && let Some((h, l, _)) = *a.uncached.lock().unwrap_or_else(|e| e.into_inner())
            && host >= h
            && host < h + l
        {
            run = Some(h + l - host);
        }
        (pa, run.unwrap_or_else(|| a.alloc.remaining(host)))
    });
    if !Length.is_null() {
        // SAFETY: the caller passes a ULONG for the length.
        unsafe { Length.write_unaligned(len.min(u32::MAX as usize) as u32) };
    }
    pa as i64
}

/// StorPortGetScatterGatherList.
///
/// # Safety
/// Storport contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortGetScatterGatherList(
    HwDeviceExtension: *mut c_void,
    Srb: *mut c_void,
) -> *mut c_void {
    on_ptr(HwDeviceExtension, "StorPortGetScatterGatherList", |a| {
        crate::request::sg_list(a, Srb)
    })
}

/// StorPortGetBusData.
///
/// # Safety
/// Storport contract: `Buffer` holds `Length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortGetBusData(
    DeviceExtension: *mut c_void,
    BusDataType: u32,
    _SystemIoBusNumber: u32,
    _SlotNumber: u32,
    Buffer: *mut c_void,
    Length: u32,
) -> u32 {
    on(DeviceExtension, "StorPortGetBusData", |a| {
        if BusDataType != abi::PCI_CONFIGURATION || Buffer.is_null() {
            return 0;
        }
        let n = (Length as usize).min(256);
        let mut v = vec![0u8; n];
        a.device.config_read(0, &mut v);
        // SAFETY: the caller's buffer holds `Length` >= n bytes.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), Buffer.cast::<u8>(), n) };
        n as u32
    })
}

/// StorPortSetBusDataByOffset.
///
/// # Safety
/// Storport contract: `Buffer` holds `Length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortSetBusDataByOffset(
    DeviceExtension: *mut c_void,
    BusDataType: u32,
    _SystemIoBusNumber: u32,
    _SlotNumber: u32,
    Buffer: *mut c_void,
    Offset: u32,
    Length: u32,
) -> u32 {
    on(DeviceExtension, "StorPortSetBusDataByOffset", |a| {
        // The HwStorAdapterControl page: ScsiRestartAdapter must not call it; a miniport that
        // needs it to restart implements ScsiSetRunningConfig.
        if a.control_in_progress.load(Ordering::SeqCst) == abi::SCSI_RESTART_ADAPTER {
            a.report(
                Rule::AdapterControl,
                [u64::from(Offset), u64::from(Length), 0],
                "StorPortSetBusDataByOffset from HwStorAdapterControl(ScsiRestartAdapter) (only from HwStorFindAdapter or ScsiSetRunningConfig)".into(),
            );
        }
        if BusDataType != abi::PCI_CONFIGURATION || Buffer.is_null() || Offset >= 4096 {
            return 0;
        }
        let n = (Length as usize).min(4096 - Offset as usize);
        // SAFETY: the caller's buffer holds `Length` >= n bytes.
        let s = unsafe { std::slice::from_raw_parts(Buffer.cast::<u8>(), n) };
        let refused = a
            .bus_data_refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|refuse| refuse(Offset, s));
        if refused {
            a.log(format!(
                "StorPortSetBusDataByOffset({Offset:#x}, {s:02x?}) refused"
            ));
            return 0;
        }
        a.device.config_write(Offset as u16, s);
        n as u32
    })
}

/// StorPortStallExecution.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortStallExecution(Delay: u32) {
    on_current(|a| {
        if Delay > 100_000 {
            a.report(
                Rule::StallTooLong,
                [Delay as u64, 0, 0],
                format!("StorPortStallExecution({Delay} us) > 100 ms"),
            );
        }
        no_wait(a, "StorPortStallExecution");
    });
    let d = Duration::from_micros(Delay.min(1_000_000) as u64);
    if crate::sched::active() {
        // Virtual time: the stall passes while the other simulated threads run.
        crate::sched::sleep(d);
        crate::watchdog::stalled(d);
    } else if d < Duration::from_micros(500) {
        let end = crate::sched::now() + d;
        while crate::sched::now() < end {
            std::hint::spin_loop();
        }
    } else {
        // A busy wait on Windows: the watchdog charges the sleep to the running callback.
        std::thread::sleep(d);
        crate::watchdog::stalled(d);
    }
}

/// StorPortBusy.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortBusy(HwDeviceExtension: *mut c_void, RequestsToComplete: u32) -> u8 {
    on(HwDeviceExtension, "StorPortBusy", |a| {
        let n = RequestsToComplete.min(a.requests.outstanding() as u32);
        a.busy_remaining.store(n, Ordering::SeqCst);
        a.gate.fetch_or(gate::BUSY, Ordering::SeqCst);
        if n == 0 {
            a.timer
                .busy_clear_at(Some(crate::sched::now() + Duration::from_millis(10)));
        }
        1
    })
}

/// StorPortReady.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortReady(HwDeviceExtension: *mut c_void) -> u8 {
    on(HwDeviceExtension, "StorPortReady", |a| {
        a.busy_remaining.store(0, Ordering::SeqCst);
        a.open(gate::BUSY);
        1
    })
}

/// StorPortPause.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortPause(HwDeviceExtension: *mut c_void, TimeOut: u32) -> u8 {
    on(HwDeviceExtension, "StorPortPause", |a| {
        a.gate.fetch_or(gate::PAUSED, Ordering::SeqCst);
        let secs = TimeOut as f64 * a.port.options.timeout_scale;
        a.timer
            .resume_at(Some(crate::sched::now() + Duration::from_secs_f64(secs)));
        1
    })
}

/// StorPortResume.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortResume(HwDeviceExtension: *mut c_void) -> u8 {
    on(HwDeviceExtension, "StorPortResume", |a| {
        a.timer.resume_at(None);
        a.open(gate::PAUSED);
        1
    })
}

/// StorPortDeviceBusy.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortDeviceBusy(
    HwDeviceExtension: *mut c_void,
    PathId: u8,
    TargetId: u8,
    Lun: u8,
    RequestsToComplete: u32,
) -> u8 {
    on(HwDeviceExtension, "StorPortDeviceBusy", |a| {
        let n = RequestsToComplete.min(a.requests.outstanding() as u32);
        a.gate.fetch_or(gate::DEVICE_BUSY, Ordering::SeqCst);
        if n == 0 {
            a.timer
                .busy_clear_at(Some(crate::sched::now() + Duration::from_millis(10)));
        } else {
            let mut d = a.device_busy.lock().unwrap_or_else(|e| e.into_inner());
            d.insert((PathId, TargetId, Lun), n);
            a.device_busy_entries.store(true, Ordering::SeqCst);
        }
        1
    })
}

/// StorPortDeviceReady.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortDeviceReady(
    HwDeviceExtension: *mut c_void,
    PathId: u8,
    TargetId: u8,
    Lun: u8,
) -> u8 {
    on(HwDeviceExtension, "StorPortDeviceReady", |a| {
        let empty = {
            let mut d = a.device_busy.lock().unwrap_or_else(|e| e.into_inner());
            d.remove(&(PathId, TargetId, Lun));
            a.device_busy_entries.store(!d.is_empty(), Ordering::SeqCst);
            d.is_empty()
        };
        if empty {
            a.open(gate::DEVICE_BUSY);
        }
        1
    })
}

/// StorPortLogError.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortLogError(
    HwDeviceExtension: *mut c_void,
    _Srb: *mut c_void,
    PathId: u8,
    TargetId: u8,
    Lun: u8,
    ErrorCode: u32,
    UniqueId: u32,
) {
    on(HwDeviceExtension, "StorPortLogError", |a| {
        let entry = crate::adapter::EventLogEntry {
            address: (PathId, TargetId, Lun),
            code: ErrorCode,
            unique_id: UniqueId,
        };
        a.event_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
        a.port
            .event_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((a.serial, entry));
        a.log(format!(
            "LogError({PathId}:{TargetId}:{Lun}) code {ErrorCode:#x} id {UniqueId:#x}"
        ));
        a.port.events.notify();
    });
}

/// A NUL-terminated UTF-16 string, at most 256 code units (more is cut).
///
/// # Safety
/// `p` is NULL or a NUL-terminated UTF-16 string.
unsafe fn wide(p: *const u16) -> String {
    if p.is_null() {
        return String::new();
    }
    let mut units = Vec::new();
    while units.len() < 256 {
        // SAFETY: the units before the NUL are readable (this function's `# Safety`).
        let u = unsafe { p.wrapping_add(units.len()).read_unaligned() };
        if u == 0 {
            break;
        }
        units.push(u);
    }
    String::from_utf16_lossy(&units)
}

/// The registry rules: PASSIVE_LEVEL only. Whether the call may go on.
fn registry_passive(a: &AdapterInner, what: &str) -> bool {
    let irql = cpu::current_irql();
    if irql != irql::PASSIVE {
        a.report(
            Rule::RegistryAccess,
            [u64::from(irql), 0, 0],
            format!("{what} at IRQL {irql} (PASSIVE_LEVEL only)"),
        );
        return false;
    }
    true
}

/// StorPortAllocateRegistryBuffer: one buffer per adapter at a time; a second answers NULL.
///
/// # Safety
/// `Length` is NULL or points at a ULONG.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortAllocateRegistryBuffer(
    HwDeviceExtension: *mut c_void,
    Length: *mut u32,
) -> *mut u8 {
    on(HwDeviceExtension, "StorPortAllocateRegistryBuffer", |a| {
        if !registry_passive(a, "StorPortAllocateRegistryBuffer") || Length.is_null() {
            return 0usize;
        }
        let mut held = a.registry_buffer.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_some() {
            return 0;
        }
        // SAFETY: a non-NULL ULONG pointer (this function's `# Safety`).
        let want = unsafe { Length.read_unaligned() }.clamp(1, 64 * 1024) as usize;
        let layout = Layout::from_size_align(want, 8).expect("registry buffer layout");
        // SAFETY: non-zero size.
        let mem = unsafe { std::alloc::alloc_zeroed(layout) };
        if mem.is_null() {
            return 0;
        }
        *held = Some((mem as usize, layout));
        // SAFETY: as above.
        unsafe { Length.write_unaligned(want as u32) };
        mem as usize
    }) as *mut u8
}

/// StorPortFreeRegistryBuffer.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortFreeRegistryBuffer(HwDeviceExtension: *mut c_void, Buffer: *mut u8) {
    on(HwDeviceExtension, "StorPortFreeRegistryBuffer", |a| {
        if !registry_passive(a, "StorPortFreeRegistryBuffer") {
            return;
        }
        let mut held = a.registry_buffer.lock().unwrap_or_else(|e| e.into_inner());
        match *held {
            Some((p, layout)) if p == Buffer as usize => {
                *held = None;
                // SAFETY: allocated by StorPortAllocateRegistryBuffer with this layout.
                unsafe { std::alloc::dealloc(p as *mut u8, layout) };
            }
            _ => a.report(
                Rule::RegistryAccess,
                [Buffer as u64, 0, 0],
                "StorPortFreeRegistryBuffer of a buffer the adapter does not hold".into(),
            ),
        }
    })
}

/// StorPortRegistryRead: REG_DWORD values from `AdapterOptions::registry`.
///
/// # Safety
/// `ValueName` is NULL or NUL-terminated; `BufferLength` is NULL or points at a ULONG.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortRegistryRead(
    HwDeviceExtension: *mut c_void,
    ValueName: *const u8,
    _Global: u32,
    Type: u32,
    Buffer: *mut u8,
    BufferLength: *mut u32,
) -> u8 {
    on(HwDeviceExtension, "StorPortRegistryRead", |a| {
        if !registry_passive(a, "StorPortRegistryRead") {
            return 0;
        }
        let held = *a.registry_buffer.lock().unwrap_or_else(|e| e.into_inner());
        let Some((base, layout)) = held.filter(|&(p, _)| p == Buffer as usize) else {
            a.report(
                Rule::RegistryAccess,
                [Buffer as u64, 0, 0],
                "StorPortRegistryRead into a buffer not from StorPortAllocateRegistryBuffer".into(),
            );
            return 0;
        };
        if ValueName.is_null() || BufferLength.is_null() {
            a.report(
                Rule::InvalidParameter,
                [0; 3],
                "StorPortRegistryRead without a value name or length".into(),
            );
            return 0;
        }
        // SAFETY: a NUL-terminated name (this function's `# Safety`).
        let name = unsafe { CStr::from_ptr(ValueName.cast()) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: a ULONG (this function's `# Safety`).
        let room = unsafe { BufferLength.read_unaligned() } as usize;
        let value = a
            .registry
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|&(_, v)| v);
        a.log(format!("RegistryRead({name}) = {value:?}"));
        let Some(value) = value else { return 0 };
        if Type != abi::MINIPORT_REG_DWORD || room < 4 || layout.size() < 4 {
            return 0;
        }
        // SAFETY: the registry buffer holds `layout.size()` >= 4 bytes.
        unsafe {
            (base as *mut u8)
                .cast::<u32>()
                .write_unaligned(value.to_le())
        };
        // SAFETY: as above.
        unsafe { BufferLength.write_unaligned(4) };
        1
    })
}

/// `on` for the register accessors: a NULL extension is resolved by the register's address
/// (the adapter whose StorPortGetDeviceBase made it), as Windows' x64 accessors never look at
/// the extension.
fn on_register<R: Default>(
    devext: *mut c_void,
    register: *mut c_void,
    what: &str,
    f: impl FnOnce(&AdapterInner) -> R,
) -> R {
    if devext.is_null()
        && let Some(serial) = crate::registers::serial_of(register)
        && let Some(a) = crate::adapter::lookup_serial(serial)
    {
        return f(&a);
    }
    on(devext, what, f)
}

macro_rules! registers {
    ($($read:ident $write:ident $t:ty;)*) => {$(
        /// Host-only register read: forwarded to the device's BAR.
        #[unsafe(no_mangle)]
        pub extern "C" fn $read(HwDeviceExtension: *mut c_void, Register: *mut $t) -> $t {
            on_register(HwDeviceExtension, Register.cast(), stringify!($read), |a| {
                let mut b = [0u8; size_of::<$t>()];
                crate::registers::read(a, Register.cast(), &mut b);
                <$t>::from_le_bytes(b)
            })
        }
        /// Host-only register write: forwarded to the device's BAR.
        #[unsafe(no_mangle)]
        pub extern "C" fn $write(HwDeviceExtension: *mut c_void, Register: *mut $t, Value: $t) {
            on_register(HwDeviceExtension, Register.cast(), stringify!($write), |a| {
                crate::registers::write(a, Register.cast(), &Value.to_le_bytes())
            })
        }
    )*};
}

registers! {
    StorPortReadRegisterUchar StorPortWriteRegisterUchar u8;
    StorPortReadRegisterUshort StorPortWriteRegisterUshort u16;
    StorPortReadRegisterUlong StorPortWriteRegisterUlong u32;
    StorPortReadRegisterUlong64 StorPortWriteRegisterUlong64 u64;
}

// ---- WDM routines a physical miniport must not call (HwStorPortProhibitedDDIs) ------------

macro_rules! prohibited {
    ($($name:ident -> $ret:ty;)*) => {$(
        /// A WDM routine Storport miniports must not call: reported, then a harmless no-op.
        #[unsafe(no_mangle)]
        pub extern "C" fn $name() -> $ret {
            on_current(|a| a.report(
                Rule::ProhibitedDdi,
                [0; 3],
                concat!(stringify!($name), " called by a Storport miniport").into(),
            ));
            Default::default()
        }
    )*};
}

prohibited! {
    KeAcquireSpinLockRaiseToDpc -> u8;
    KeReleaseSpinLock -> ();
    KeInsertQueueDpc -> u8;
    ExAllocatePoolWithTag -> usize;
    ExAllocatePool2 -> usize;
    ExFreePoolWithTag -> ();
    KeWaitForSingleObject -> u32;
    KeDelayExecutionThread -> u32;
    KeStallExecutionProcessor -> ();
}

/// Every export's address: referenced from `Port::new` so the linker keeps this object file
/// whichever order the archives come in.
pub(crate) fn keep() -> usize {
    let v: [usize; 12] = [
        StorPortInitialize as *const () as usize,
        StorPortSynchronizeAccess as *const () as usize,
        StorPortGetDeviceBase as *const () as usize,
        StorPortGetUncachedExtension as *const () as usize,
        StorPortGetPhysicalAddress as *const () as usize,
        StorPortGetScatterGatherList as *const () as usize,
        StorPortGetBusData as *const () as usize,
        StorPortReadRegisterUlong as *const () as usize,
        storport_sim_notification as *const () as usize,
        storport_sim_extended_function as *const () as usize,
        StorPortStallExecution as *const () as usize,
        phase::RUNNING as usize,
    ];
    std::hint::black_box(v).iter().sum()
}

/// The same, for the C shim's object file.
pub(crate) fn keep_shim() -> usize {
    unsafe extern "C" {
        fn storport_sim_shim_anchor() -> usize;
    }
    // SAFETY: a C function without arguments defined in shim.c.
    unsafe { storport_sim_shim_anchor() }
}
