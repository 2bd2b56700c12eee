//! State shared between callbacks, in cells that name the lock protecting it.
//!
//! Storport runs a miniport's callbacks on several CPUs at once; the state they share lives in
//! the device extension inside one of these cells, and `&mut T` to it exists only while its lock
//! is held:
//!
//! | cell                 | lock (STOR_SPINLOCK)             | `&mut T` from                                                              |
//! |----------------------|----------------------------------|----------------------------------------------------------------------------|
//! | [`InterruptShared`]  | the interrupt lock (InterruptLock) | a callback Storport runs holding it ([`HoldsInterrupt`]: ISR, SynchronizeAll MSI routine, HwStorInitialize, half-duplex StartIo/Timer/ResetBus), the StorPortSynchronizeAccess closure ([`InterruptShared::synchronize`]), or a StorPortAcquireSpinLockEx guard ([`InterruptShared::lock`], [`InterruptShared::with`]) |
//! | [`StartIoShared`]    | the adapter's StartIo lock (StartIoLock) | a callback Storport runs holding it ([`HoldsStartIo`]: one-channel StartIo, Timer, ResetBus), or a guard |
//! | [`DpcShared`]        | its own STOR_DPC's lock (DpcLock) | a guard                                                                    |
//! | [`crate::msi::MsiShared`] | one MSI message's lock      | that message's PerMessage routine, or a StorPortAcquireMSISpinLock guard  |
//!
//! Every access borrows the callback's token mutably for as long as the `&mut T` lives, so one
//! token reaches one cell at a time, and a closure's borrow is higher-ranked so nothing escapes
//! it. A cell is created in the miniport's initial state (`const fn new`) and learns its adapter
//! in HwStorFindAdapter ([`InterruptShared::bind`] with the `Port`), where `&mut self` also gives
//! plain access ([`InterruptShared::get_mut`]).
//!
//! [`synchronize`] is the closure wrapper over StorPortSynchronizeAccess (seeds 000-002): the
//! closure slot lives on the caller's stack, its address is the `Context`, and a monomorphised
//! `extern "C"` trampoline runs it and returns its BOOLEAN.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::pin::Pin;
use core::ptr;

use crate::context::Synchronized;
use crate::dpc::StorDpc;
use crate::ffi;
use crate::lock::{
    self, DpcLevel, Guard, Held, HoldsInterrupt, HoldsStartIo, InterruptLevel, LockError,
    LockHandle, MayAcquireDpc, MayAcquireInterrupt, MayAcquireStartIo, StartIoLevel,
};
use crate::port::Port;

/// Runs `routine` through StorPortSynchronizeAccess: holding the interrupt lock(s), at the
/// synchronize IRQL, with the [`Synchronized`] token. Returns the routine's BOOLEAN as Storport
/// passes it back.
///
/// Keep the routine short (seed 001): prepare before, complete after.
#[inline]
pub fn synchronize<C, F>(port: Port, ctx: &mut C, routine: F) -> bool
where
    C: MayAcquireInterrupt,
    F: FnOnce(&mut Synchronized) -> bool,
{
    let _ = ctx;
    let mut slot = Some(routine);
    // SAFETY: `run_bool::<F>` reads `Context` as the `Option<F>` it is; `slot` outlives the call;
    // the caller's token may take the interrupt lock (MayAcquireInterrupt).
    let result = unsafe {
        ffi::StorPortSynchronizeAccess(
            port.extension(),
            Some(run_bool::<F>),
            ptr::from_mut(&mut slot).cast::<c_void>(),
        )
    };
    result != ffi::FALSE
}

/// The StorPortSynchronizeAccess routine of [`synchronize`]: runs the closure in `context`.
///
/// # Safety
///
/// `context` is the `&mut Option<F>` [`synchronize`] passed, and Storport holds the interrupt
/// lock(s) of the adapter.
unsafe extern "C" fn run_bool<F: FnOnce(&mut Synchronized) -> bool>(
    _extension: ffi::PVOID,
    context: ffi::PVOID,
) -> ffi::BOOLEAN {
    // SAFETY: by this function's `# Safety`; nothing else uses the slot during the call.
    let slot = unsafe { &mut *context.cast::<Option<F>>() };
    let Some(routine) = slot.take() else {
        return ffi::FALSE;
    };
    // SAFETY: this is the StorPortSynchronizeAccess routine: Storport holds the interrupt lock.
    let mut token = unsafe { Synchronized::new() };
    ffi::BOOLEAN::from(routine(&mut token))
}

/// The closure and its result, for [`run_value`].
struct Slot<F, R> {
    routine: Option<F>,
    result: Option<R>,
}

/// Runs `routine` through StorPortSynchronizeAccess and returns its value, or `None` if Storport
/// did not run it.
#[inline]
fn synchronize_value<F, R>(port: Port, routine: F) -> Option<R>
where
    F: FnOnce(&mut Synchronized) -> R,
{
    let mut slot = Slot {
        routine: Some(routine),
        result: None,
    };
    // SAFETY: `run_value::<F, R>` reads `Context` as the `Slot<F, R>` it is; `slot` outlives the
    // call; the callers hold a token that may take the interrupt lock.
    unsafe {
        ffi::StorPortSynchronizeAccess(
            port.extension(),
            Some(run_value::<F, R>),
            ptr::from_mut(&mut slot).cast::<c_void>(),
        )
    };
    slot.result
}

/// The StorPortSynchronizeAccess routine of the cells: runs the closure, keeps its value.
///
/// # Safety
///
/// `context` is the `&mut Slot<F, R>` [`synchronize_value`] passed, and Storport holds the
/// interrupt lock(s) of the adapter.
unsafe extern "C" fn run_value<F: FnOnce(&mut Synchronized) -> R, R>(
    _extension: ffi::PVOID,
    context: ffi::PVOID,
) -> ffi::BOOLEAN {
    // SAFETY: by this function's `# Safety`; nothing else uses the slot during the call.
    let slot = unsafe { &mut *context.cast::<Slot<F, R>>() };
    let Some(routine) = slot.routine.take() else {
        return ffi::FALSE;
    };
    // SAFETY: this is the StorPortSynchronizeAccess routine: Storport holds the interrupt lock.
    let mut token = unsafe { Synchronized::new() };
    slot.result = Some(routine(&mut token));
    ffi::TRUE
}

/// Writes the parts every cell has: the value, binding, plain access through `&mut self`.
macro_rules! cell_common {
    ($cell:ident) => {
        impl<T> $cell<T> {
            /// A cell holding `value`, not yet bound to an adapter.
            #[inline]
            pub const fn new(value: T) -> Self {
                Self {
                    port: None,
                    data: UnsafeCell::new(value),
                }
            }

            /// Binds the cell to its adapter (in HwStorFindAdapter, with the `Port` it receives).
            #[inline]
            pub fn bind(&mut self, port: Port) {
                self.port = Some(port);
            }

            /// The value, when nothing else can reach the cell (`&mut self`: HwStorFindAdapter).
            #[inline]
            pub fn get_mut(&mut self) -> &mut T {
                self.data.get_mut()
            }

            /// The adapter, or [`LockError::Unbound`].
            #[inline]
            fn port(&self) -> Result<Port, LockError> {
                self.port.ok_or(LockError::Unbound)
            }
        }
    };
}

/// State the interrupt routine shares with the rest of the miniport: guarded by the interrupt
/// lock.
///
/// # Invariants
///
/// `data` is only accessed by a CPU holding the interrupt lock of the adapter `port` (or through
/// `&mut self`).
pub struct InterruptShared<T> {
    port: Option<Port>,
    data: UnsafeCell<T>,
}

// SAFETY: the interrupt lock serialises every access to `data` (type invariant), so sharing the
// cell moves `T` between CPUs but never aliases it: `T: Send` suffices, as for a mutex.
unsafe impl<T: Send> Sync for InterruptShared<T> {}

cell_common!(InterruptShared);

impl<T> InterruptShared<T> {
    /// The value, in a callback Storport runs holding the interrupt lock (the ISR, the
    /// SynchronizeAll MSI routine, HwStorInitialize, the StorPortSynchronizeAccess routine,
    /// half-duplex StartIo/Timer/ResetBus).
    #[inline]
    pub fn get<'a, C: HoldsInterrupt>(&'a self, ctx: &'a mut C) -> &'a mut T {
        let _ = ctx;
        // SAFETY: `C: HoldsInterrupt` proves this CPU holds the interrupt lock for as long as the
        // token is borrowed, and the token stays borrowed mutably for 'a, so no second `&mut`
        // can be made through it.
        unsafe { &mut *self.data.get() }
    }

    /// Runs `f` on the value through StorPortSynchronizeAccess (seeds 000-002): the way a
    /// full-duplex StartIo or a DPC reaches what the ISR touches.
    ///
    /// Returns [`LockError::Unbound`] before `bind` and [`LockError::NotRun`] if Storport did not
    /// run the routine.
    #[inline]
    pub fn synchronize<C: MayAcquireInterrupt, R>(
        &self,
        ctx: &mut C,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R, LockError> {
        let _ = ctx;
        let port = self.port()?;
        synchronize_value(port, |token: &mut Synchronized| f(self.get(token)))
            .ok_or(LockError::NotRun)
    }

    /// Takes the interrupt lock (StorPortAcquireSpinLockEx InterruptLock) through `handle`.
    #[inline]
    pub fn lock<'a, C: MayAcquireInterrupt>(
        &'a self,
        ctx: &'a mut C,
        handle: Pin<&'a mut LockHandle>,
    ) -> Result<Guard<'a, InterruptLevel, T>, LockError> {
        let _ = ctx;
        // SAFETY: the interrupt lock guards `data` (type invariant); the token may take it
        // (MayAcquireInterrupt) and so does not hold it; InterruptLock takes a NULL context.
        unsafe { Guard::acquire(self.port()?, ptr::null_mut(), &self.data, handle) }
    }

    /// Runs `f` on the value under the interrupt lock (StorPortAcquireSpinLockEx InterruptLock).
    #[inline]
    pub fn with<C: MayAcquireInterrupt, R>(
        &self,
        ctx: &mut C,
        f: impl FnOnce(&mut T, &mut Held<InterruptLevel>) -> R,
    ) -> Result<R, LockError> {
        let _ = ctx;
        // SAFETY: as for `lock`.
        unsafe { lock::with(self.port()?, ptr::null_mut(), &self.data, f) }
    }
}

/// State guarded by the adapter's StartIo lock.
///
/// # Invariants
///
/// `data` is only accessed by a CPU holding the StartIo lock of the adapter `port` (or through
/// `&mut self`).
pub struct StartIoShared<T> {
    port: Option<Port>,
    data: UnsafeCell<T>,
}

// SAFETY: the StartIo lock serialises every access to `data` (type invariant).
unsafe impl<T: Send> Sync for StartIoShared<T> {}

cell_common!(StartIoShared);

impl<T> StartIoShared<T> {
    /// The value, in a callback Storport runs holding the StartIo lock (StartIo with one
    /// channel, Timer, ResetBus).
    #[inline]
    pub fn get<'a, C: HoldsStartIo>(&'a self, ctx: &'a mut C) -> &'a mut T {
        let _ = ctx;
        // SAFETY: `C: HoldsStartIo` proves this CPU holds the StartIo lock while the token is
        // borrowed; the token stays borrowed mutably for 'a.
        unsafe { &mut *self.data.get() }
    }

    /// Takes the StartIo lock (StorPortAcquireSpinLockEx StartIoLock) through `handle`.
    #[inline]
    pub fn lock<'a, C: MayAcquireStartIo>(
        &'a self,
        ctx: &'a mut C,
        handle: Pin<&'a mut LockHandle>,
    ) -> Result<Guard<'a, StartIoLevel, T>, LockError> {
        let _ = ctx;
        // SAFETY: the StartIo lock guards `data` (type invariant); the token may take it
        // (MayAcquireStartIo) and so does not hold it; StartIoLock takes a NULL context.
        unsafe { Guard::acquire(self.port()?, ptr::null_mut(), &self.data, handle) }
    }

    /// Runs `f` on the value under the StartIo lock.
    #[inline]
    pub fn with<C: MayAcquireStartIo, R>(
        &self,
        ctx: &mut C,
        f: impl FnOnce(&mut T, &mut Held<StartIoLevel>) -> R,
    ) -> Result<R, LockError> {
        let _ = ctx;
        // SAFETY: as for `lock`.
        unsafe { lock::with(self.port()?, ptr::null_mut(), &self.data, f) }
    }
}

/// State guarded by the lock of one STOR_DPC, which the cell owns.
///
/// Initialise the DPC ([`StorDpc::initialize`], from HwStorPassiveInitializeRoutine) before
/// locking: until then the lock answers [`LockError::Unbound`].
///
/// # Invariants
///
/// `data` is only accessed by a CPU holding the lock of `dpc` (or through `&mut self`).
pub struct DpcShared<T> {
    dpc: StorDpc,
    data: UnsafeCell<T>,
}

// SAFETY: the DPC's lock serialises every access to `data` (type invariant); `StorDpc` is Sync.
unsafe impl<T: Send> Sync for DpcShared<T> {}

impl<T> DpcShared<T> {
    /// A cell holding `value`, with a STOR_DPC not yet initialised.
    #[inline]
    pub const fn new(value: T) -> Self {
        Self {
            dpc: StorDpc::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// The data, during HwStorInitialize.
    ///
    /// Storport runs nothing else of the adapter while HwStorInitialize runs (StartIo, DPCs,
    /// timers and resets start only after it returns, and the DPC of this cell is initialised
    /// later, in passive initialization), so the data is the miniport's alone for the call.
    #[inline]
    pub fn get_in_initialize<'a>(&'a self, ctx: &'a mut crate::context::Initialize) -> &'a mut T {
        let _ = ctx;
        // SAFETY: by the Storport contract above, nothing else can reach the data while the
        // Initialize token is borrowed.
        unsafe { &mut *self.data.get() }
    }

    /// The DPC whose lock guards the value (to initialise and issue it).
    #[inline]
    pub fn dpc(&self) -> &StorDpc {
        &self.dpc
    }

    /// The value, when nothing else can reach the cell (`&mut self`).
    #[inline]
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Takes the DPC's lock (StorPortAcquireSpinLockEx DpcLock) through `handle`.
    #[inline]
    pub fn lock<'a, C: MayAcquireDpc>(
        &'a self,
        ctx: &'a mut C,
        handle: Pin<&'a mut LockHandle>,
    ) -> Result<Guard<'a, DpcLevel, T>, LockError> {
        let _ = ctx;
        let port = self.dpc.port().ok_or(LockError::Unbound)?;
        // SAFETY: the DPC's lock guards `data` (type invariant); the token may take a DPC lock
        // (MayAcquireDpc), so it holds none; DpcLock takes the initialised STOR_DPC.
        unsafe { Guard::acquire(port, self.dpc.as_raw().cast(), &self.data, handle) }
    }

    /// Runs `f` on the value under the DPC's lock.
    #[inline]
    pub fn with<C: MayAcquireDpc, R>(
        &self,
        ctx: &mut C,
        f: impl FnOnce(&mut T, &mut Held<DpcLevel>) -> R,
    ) -> Result<R, LockError> {
        let _ = ctx;
        let port = self.dpc.port().ok_or(LockError::Unbound)?;
        // SAFETY: as for `lock`.
        unsafe { lock::with(port, self.dpc.as_raw().cast(), &self.data, f) }
    }
}
