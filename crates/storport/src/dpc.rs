//! Storport DPCs: a STOR_DPC in the device extension, its routine, and issuing it.
//!
//! | Rust                       | C                                                                  |
//! |----------------------------|--------------------------------------------------------------------|
//! | [`StorDpc`]                | STOR_DPC (`{ DPC_BUFFER Dpc; ULONG_PTR Lock; }`, 72 bytes)         |
//! | [`StorDpc::initialize`]    | StorPortInitializeDpc = Notification(InitializeDpc 0x1001, ext, STOR_DPC*, routine) |
//! | [`StorDpc::issue`]         | StorPortIssueDpc = Notification(IssueDpc 0x1002, ext, STOR_DPC*, arg1, arg2, LONG* result) |
//! | [`DpcHandler::dpc`]        | HwStorDpcRoutine(PSTOR_DPC, HwDeviceExtension, SystemArgument1, SystemArgument2) |
//!
//! Storport keeps the address of an initialised STOR_DPC (the kernel queues the KDPC inside it),
//! so a [`StorDpc`] must not move or die while it may be queued. The token of
//! HwStorPassiveInitializeRoutine, where storport.md section 1 puts StorPortInitializeDpc, carries
//! the device extension's lifetime `'a`, and [`StorDpc::initialize`] wants the DPC and its handler
//! borrowed for `'a`: only objects in the device extension (or statics) qualify. The routine Storport
//! calls is one non-generic trampoline: the handler is recorded in the `StorDpc` itself, so no
//! wiring through the `Miniport` trait is needed. The DPC's lock (DpcLock) guards a
//! [`crate::sync::DpcShared`], which owns its `StorDpc`.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::marker::PhantomPinned;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU8, Ordering};

use crate::context::{self, PassiveInitialize};
use crate::ffi;
use crate::port::Port;

/// The miniport's routine for a [`StorDpc`] (HwStorDpcRoutine).
///
/// Runs at DISPATCH_LEVEL holding no lock (seed 003); it may acquire DPC, StartIo and Interrupt
/// locks. `arg1` and `arg2` are what [`StorDpc::issue`] passed.
pub trait DpcHandler: Sync {
    /// Handles one run of `dpc`.
    fn dpc(&self, ctx: &mut context::Dpc, dpc: &StorDpc, arg1: usize, arg2: usize);
}

/// `state`: not initialised.
const UNINITIALISED: u8 = 0;
/// `state`: `initialize` is writing the fields.
const INITIALISING: u8 = 1;
/// `state`: initialised; `port` and `handler` are fixed.
const READY: u8 = 2;

/// The type-erased handler: its address and the function that calls it.
#[derive(Clone, Copy)]
struct Handler {
    object: NonNull<c_void>,
    call: unsafe fn(NonNull<c_void>, &mut context::Dpc, &StorDpc, usize, usize),
}

/// Calls `H::dpc` on the erased `object`.
///
/// # Safety
///
/// `object` is the `&H` [`StorDpc::initialize`] recorded, still alive.
unsafe fn call<H: DpcHandler>(
    object: NonNull<c_void>,
    ctx: &mut context::Dpc,
    dpc: &StorDpc,
    arg1: usize,
    arg2: usize,
) {
    // SAFETY: by this function's `# Safety`.
    let handler = unsafe { object.cast::<H>().as_ref() };
    handler.dpc(ctx, dpc, arg1, arg2);
}

/// A Storport DPC object (STOR_DPC), living in the device extension.
///
/// # Invariants
///
/// `raw` is the first field (`repr(C)`), so the PSTOR_DPC Storport passes back is the address of
/// the `StorDpc`. `port` and `handler` are written once, while `state` is INITIALISING, and read
/// only after `state` is READY (Acquire). Once READY, the `StorDpc` and the handler live as long
/// as the adapter's device extension (the `'a` of [`StorDpc::initialize`]).
#[repr(C)]
pub struct StorDpc {
    raw: UnsafeCell<ffi::STOR_DPC>,
    state: AtomicU8,
    port: UnsafeCell<Option<Port>>,
    handler: UnsafeCell<Option<Handler>>,
    _pinned: PhantomPinned,
}

// SAFETY: `port` and `handler` are written once before `state` becomes READY and only read after
// (type invariant); the STOR_DPC itself is Storport's, used through Storport calls, which may come
// from any CPU; the handler is `Sync` (DpcHandler: Sync).
unsafe impl Sync for StorDpc {}
// SAFETY: as for Sync; the raw pointers inside are addresses of objects that are Sync themselves.
unsafe impl Send for StorDpc {}

impl StorDpc {
    /// A DPC not yet initialised (all zero, as Storport expects before StorPortInitializeDpc).
    #[inline]
    pub const fn new() -> Self {
        Self {
            raw: UnsafeCell::new(ffi::STOR_DPC {
                Dpc: ffi::DPC_BUFFER { Buffer: [0; 64] },
                Lock: 0,
            }),
            state: AtomicU8::new(UNINITIALISED),
            port: UnsafeCell::new(None),
            handler: UnsafeCell::new(None),
            _pinned: PhantomPinned,
        }
    }

    /// Initialises the DPC for adapter `port` with `handler` as its routine
    /// (StorPortInitializeDpc), from HwStorPassiveInitializeRoutine.
    ///
    /// Returns `false`, and changes nothing, if the DPC was initialised already.
    pub fn initialize<'a, H: DpcHandler>(
        &'a self,
        ctx: &mut PassiveInitialize<'a>,
        port: Port,
        handler: &'a H,
    ) -> bool {
        let _ = ctx;
        if self
            .state
            .compare_exchange(
                UNINITIALISED,
                INITIALISING,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        // SAFETY: `state` is INITIALISING: this call alone writes the fields, and nothing reads
        // them before READY (type invariant).
        unsafe { *self.port.get() = Some(port) };
        let handler = Handler {
            object: NonNull::from(handler).cast(),
            call: call::<H>,
        };
        // SAFETY: as above.
        unsafe { *self.handler.get() = Some(handler) };
        let routine: ffi::PHW_DPC_ROUTINE = Some(routine);
        // SAFETY: Notification(InitializeDpc) takes (STOR_DPC*, PHW_DPC_ROUTINE) after the
        // extension (layouts.md). The STOR_DPC lives for 'a, as long as the extension (the token's
        // brand), and does not move (it is borrowed for 'a); `routine` reads the handler recorded
        // above, which lives as long.
        unsafe {
            ffi::StorPortNotification(ffi::InitializeDpc, port.extension(), self.as_raw(), routine)
        };
        // INVARIANT: the fields are written; publish them.
        self.state.store(READY, Ordering::Release);
        true
    }

    /// Queues the DPC (StorPortIssueDpc) with two arguments for its handler.
    ///
    /// Returns whether it was queued now: `false` if it was queued already (it will run once)
    /// or is not initialised yet. Callable from any callback up to DIRQL, the interrupt routines
    /// included.
    #[inline]
    pub fn issue<C: MayIssueDpc>(&self, ctx: &C, arg1: usize, arg2: usize) -> bool {
        let _ = ctx;
        let Some(port) = self.port() else {
            return false;
        };
        let mut queued: ffi::LONG = 0;
        // SAFETY: Notification(IssueDpc) takes (STOR_DPC*, PVOID, PVOID, LONG* result) after the
        // extension (layouts.md); the STOR_DPC is initialised (READY) and lives as long as the
        // adapter (type invariant); `queued` outlives the call.
        unsafe {
            ffi::StorPortNotification(
                ffi::IssueDpc,
                port.extension(),
                self.as_raw(),
                arg1 as *mut c_void,
                arg2 as *mut c_void,
                ptr::from_mut(&mut queued),
            )
        };
        queued != 0
    }

    /// The adapter, once initialised.
    #[inline]
    pub(crate) fn port(&self) -> Option<Port> {
        if self.state.load(Ordering::Acquire) != READY {
            return None;
        }
        // SAFETY: READY: `port` is written and no longer changes (type invariant).
        unsafe { *self.port.get() }
    }

    /// The PSTOR_DPC Storport knows.
    #[inline]
    pub(crate) fn as_raw(&self) -> *mut ffi::STOR_DPC {
        self.raw.get()
    }
}

impl Default for StorDpc {
    fn default() -> Self {
        Self::new()
    }
}

/// HwStorDpcRoutine of every [`StorDpc`]: finds the handler recorded in the STOR_DPC and calls it.
///
/// # Safety
///
/// Called by Storport for a STOR_DPC that [`StorDpc::initialize`] registered, at DISPATCH_LEVEL.
unsafe extern "C" fn routine(
    dpc: ffi::PSTOR_DPC,
    _extension: ffi::PVOID,
    arg1: ffi::PVOID,
    arg2: ffi::PVOID,
) {
    // SAFETY: `dpc` is the `raw` field, the first of a `repr(C)` StorDpc (type invariant), which
    // lives as long as the adapter.
    let Some(dpc) = (unsafe { dpc.cast::<StorDpc>().as_ref() }) else {
        return;
    };
    if dpc.state.load(Ordering::Acquire) != READY {
        return;
    }
    // SAFETY: READY: `handler` is written and no longer changes (type invariant).
    let Some(handler) = (unsafe { *dpc.handler.get() }) else {
        return;
    };
    // SAFETY: this is the HwStorDpcRoutine trampoline: DISPATCH_LEVEL, no lock held.
    let mut ctx = unsafe { context::Dpc::new() };
    // SAFETY: `handler` was recorded from a `&'a H` that lives as long as the adapter.
    unsafe { (handler.call)(handler.object, &mut ctx, dpc, arg1 as usize, arg2 as usize) };
}

/// A context from which a DPC may be issued (StorPortIssueDpc: any IRQL up to DIRQL, after
/// HwStorFindAdapter).
#[diagnostic::on_unimplemented(message = "`{Self}` may not issue a DPC")]
pub trait MayIssueDpc: sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
}

macro_rules! may_issue {
    ($($({$($generics:tt)*})? $token:ty,)*) => {$(
        impl$(<$($generics)*>)? sealed::Sealed for $token {}
        impl$(<$($generics)*>)? MayIssueDpc for $token {}
    )*};
}

may_issue! {
    context::Initialize,
    {'a} context::PassiveInitialize<'a>,
    context::BuildIo,
    {D: context::Duplex} context::StartIoSerialized<D>,
    context::StartIoConcurrent,
    context::Interrupt,
    context::MessageInterrupt,
    context::MessageInterruptPerMessage,
    context::Dpc,
    {D: context::Duplex} context::Timer<D>,
    {D: context::Duplex} context::ResetBus<D>,
    context::AdapterControl,
    context::AdapterStopRestart,
    context::UnitControl,
    context::Synchronized,
    {L: crate::lock::Level} crate::lock::Held<L>,
}
