//! Storport's spin locks as types: levels, the seed-003 tables, guards and the acquire wrapper.
//!
//! Storport has three lock kinds a miniport names (STOR_SPINLOCK): the adapter's StartIo lock,
//! one lock per STOR_DPC, and the interrupt lock (all MSI messages' locks, in message order). They
//! are taken in the order **StartIo < DPC < Interrupt** (seed 003 orders DPC-or-StartIo before
//! Interrupt; this project fixes StartIo before DPC and never holds two DPC locks), and which
//! callback may take which is fixed by seed 003's second table. Both are types here:
//!
//! | Rust                                    | C / seed 003                                        |
//! |-----------------------------------------|-----------------------------------------------------|
//! | [`StartIoLevel`], [`DpcLevel`], [`InterruptLevel`] | STOR_SPINLOCK StartIoLock (2), DpcLock (1), InterruptLock (3) |
//! | [`Rules`] (one impl per token, `rules!`) | the "allowed spin locks" table                     |
//! | [`MayAcquireStartIo`], [`MayAcquireDpc`], [`MayAcquireInterrupt`] | "may acquire" per callback  |
//! | [`HoldsStartIo`], [`HoldsInterrupt`]    | the "spin lock held by port driver" table           |
//! | [`Held<L>`]                             | "this CPU now holds a lock of level L"             |
//! | [`Guard`], [`LockHandle`]               | STOR_LOCK_HANDLE between acquire and release       |
//! | `acquire` / `release`                 | StorPortAcquireSpinLockEx (ExtendedFunction 93), fallback StorPortAcquireSpinLock (Notification 0x1003); StorPortReleaseSpinLock (Notification 0x1004) |
//!
//! A forbidden acquisition does not compile: the token's [`Rules`] name, for that lock, a type
//! from [`forbidden`] whose name is the rule, and the compiler's message quotes it ("seed 003
//! forbids this lock acquisition: `forbidden::TwoDpcLocksAtOnce`").
//!
//! A STOR_LOCK_HANDLE is an in-stack queued spin lock handle: other CPUs link themselves to it
//! while it is held, so it must stay at one address from acquire to release. Guards therefore
//! borrow a pinned [`LockHandle`] (whose own `Drop` releases a lock still held, so even a leaked
//! guard cannot let the memory be reused under a held lock); the closure forms (`with`) keep the
//! handle on their own stack frame.

use core::cell::{Cell, UnsafeCell};
use core::ffi::c_void;
use core::marker::{PhantomData, PhantomPinned};
use core::ops::{Deref, DerefMut};
use core::pin::Pin;
use core::ptr::{self, NonNull};

use crate::context::{
    AdapterControl, BuildIo, Dpc, FindAdapter, FullDuplex, HalfDuplex, Initialize, Interrupt,
    MessageInterrupt, MessageInterruptPerMessage, PassiveInitialize, ResetBus, StartIoConcurrent,
    StartIoSerialized, StateChange, Synchronized, Timer, TracingEnabled, UnitControl,
};
use crate::ffi;
use crate::port::Port;

mod sealed {
    pub trait Sealed {}
}
use sealed::Sealed;

/// A lock level: one of the three lock kinds, in the order StartIo < DPC < Interrupt.
pub trait Level: Sealed + 'static {
    /// The STOR_SPINLOCK value.
    const KIND: ffi::STOR_SPINLOCK;
}

/// The adapter's StartIo lock (StartIoLock).
pub enum StartIoLevel {}
/// The lock of one STOR_DPC (DpcLock).
pub enum DpcLevel {}
/// The interrupt lock: all messages' (InterruptLock), or one MSI message's.
pub enum InterruptLevel {}

impl Sealed for StartIoLevel {}
impl Sealed for DpcLevel {}
impl Sealed for InterruptLevel {}
impl Level for StartIoLevel {
    const KIND: ffi::STOR_SPINLOCK = ffi::StartIoLock;
}
impl Level for DpcLevel {
    const KIND: ffi::STOR_SPINLOCK = ffi::DpcLock;
}
impl Level for InterruptLevel {
    const KIND: ffi::STOR_SPINLOCK = ffi::InterruptLock;
}

/// Proof that this CPU holds a lock of level `L`, taken through the lock wrappers.
///
/// Handed out by a [`Guard`] (see [`Guard::split`]) or to a `with` closure; it may acquire only
/// locks above `L`. It does not reach cells of level `L` itself: the guard that made it already
/// lends out the one cell it locked.
pub struct Held<L: Level> {
    _not_send: PhantomData<*mut ()>,
    _level: PhantomData<fn() -> L>,
}

impl<L: Level> Held<L> {
    /// # Safety
    ///
    /// This CPU holds a lock of level `L` for as long as the token is reachable.
    #[inline(always)]
    pub(crate) unsafe fn new() -> Self {
        Self {
            _not_send: PhantomData,
            _level: PhantomData,
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The seed-003 tables.
// ------------------------------------------------------------------------------------------------

/// What a context may acquire, per lock kind: [`May`] or the [`forbidden`] rule that says no.
///
/// Implemented, once, for every token (the `rules!` table below is seed 003's second table).
pub trait Rules: Sealed {
    /// Verdict for the StartIo lock.
    type StartIo: Verdict;
    /// Verdict for a DPC lock.
    type Dpc: Verdict;
    /// Verdict for the interrupt lock (and MSI message locks, and StorPortSynchronizeAccess).
    type Interrupt: Verdict;
}

/// A verdict of the table, as a value: [`May`] allows, every type of [`forbidden`] forbids. It
/// lets a test hold the type-level table to `storport-rules`, the run-time checkers' table.
pub trait Verdict: Sealed {
    /// Whether the verdict allows the acquisition.
    const ALLOWED: bool;
}

impl Verdict for May {
    const ALLOWED: bool = true;
}

/// The verdicts of `C`'s row (StartIo lock, DPC lock, interrupt lock) as values.
pub const fn verdicts<C: Rules>() -> [bool; 3] {
    [
        <C::StartIo as Verdict>::ALLOWED,
        <C::Dpc as Verdict>::ALLOWED,
        <C::Interrupt as Verdict>::ALLOWED,
    ]
}

/// Implemented by [`May`] alone: a verdict that allows the acquisition.
#[diagnostic::on_unimplemented(
    message = "seed 003 forbids this lock acquisition: `{Self}`",
    label = "this callback or held lock may not take the lock this call takes",
    note = "seed 003 (reference/storport.md section 1): each callback takes only the locks of the \
            second table, in the order StartIo < DPC < Interrupt, never a lock it holds and never \
            two DPC locks; `{Self}` names the rule"
)]
pub trait Permit: Sealed {}

/// The verdict "allowed".
pub enum May {}
impl Sealed for May {}
impl Permit for May {}

/// The rules that forbid an acquisition; each name states one (seed 003).
pub mod forbidden {
    macro_rules! reasons {
        ($($(#[$doc:meta])* $name:ident,)*) => {$(
            $(#[$doc])*
            pub enum $name {}
            impl super::Sealed for $name {}
            impl super::Verdict for $name {
                const ALLOWED: bool = false;
            }
        )*};
    }
    reasons! {
        /// HwStorFindAdapter may acquire no lock.
        FindAdapterMayAcquireNoLock,
        /// HwStorInitialize may acquire no lock (it runs holding the interrupt lock).
        InitializeMayAcquireNoLock,
        /// HwStorPassiveInitializeRoutine may acquire no lock.
        PassiveInitializeMayAcquireNoLock,
        /// HwStorInterrupt may acquire no lock (it runs holding the interrupt lock).
        InterruptRoutineMayAcquireNoLock,
        /// HwMSInterruptRoutine may acquire no lock (it runs holding its message's lock).
        MessageInterruptRoutineMayAcquireNoLock,
        /// HwStorStartIo with concurrent channels <= 1 runs holding the StartIo lock: taking it
        /// again deadlocks.
        StartIoLockHeldByStorportWithOneChannel,
        /// In half duplex, HwStorStartIo runs holding the StartIo and interrupt locks: it may
        /// acquire none.
        HalfDuplexStartIoMayAcquireNoLock,
        /// In full duplex, HwStorTimer (holding the StartIo lock) may acquire only the interrupt
        /// lock.
        FullDuplexTimerMayAcquireOnlyInterrupt,
        /// In half duplex, HwStorTimer holds the StartIo and interrupt locks: it may acquire none.
        HalfDuplexTimerMayAcquireNoLock,
        /// In full duplex, HwStorResetBus (holding the StartIo lock) may acquire only the
        /// interrupt lock.
        FullDuplexResetBusMayAcquireOnlyInterrupt,
        /// In half duplex, HwStorResetBus holds the StartIo and interrupt locks: it may acquire
        /// none.
        HalfDuplexResetBusMayAcquireNoLock,
        /// In full duplex, HwStorStateChange (holding the StartIo lock) may acquire only the
        /// interrupt lock.
        FullDuplexStateChangeMayAcquireOnlyInterrupt,
        /// In half duplex, HwStorStateChange holds the StartIo and interrupt locks: it may
        /// acquire none.
        HalfDuplexStateChangeMayAcquireNoLock,
        /// HwStorTracingEnabled (PASSIVE, no row in seed 003) may acquire no lock: it only
        /// records whether tracing is on.
        TracingEnabledMayAcquireNoLock,
        /// The StorPortSynchronizeAccess routine runs holding the interrupt lock: it may acquire
        /// no lock (DPC and StartIo are below Interrupt; Interrupt is held).
        SynchronizedRoutineHoldsInterruptLock,
        /// The StartIo lock is held already: taking it again deadlocks.
        StartIoLockAlreadyHeld,
        /// A DPC lock is held: the StartIo lock comes before DPC locks (StartIo < DPC < Interrupt).
        StartIoLockBelowHeldDpcLock,
        /// A DPC lock is held: never two DPC locks at once.
        TwoDpcLocksAtOnce,
        /// An interrupt-level lock is held: nothing is above it, and it is not re-entrant.
        InterruptLockHeldMayAcquireNoLock,
    }
}

/// A context that may acquire the StartIo lock.
#[diagnostic::on_unimplemented(message = "`{Self}` may not acquire the StartIo lock (seed 003)")]
pub trait MayAcquireStartIo: Rules {}
impl<C: Rules> MayAcquireStartIo for C where C::StartIo: Permit {}

/// A context that may acquire a DPC lock.
#[diagnostic::on_unimplemented(message = "`{Self}` may not acquire a DPC lock (seed 003)")]
pub trait MayAcquireDpc: Rules {}
impl<C: Rules> MayAcquireDpc for C where C::Dpc: Permit {}

/// A context that may acquire the interrupt lock, an MSI message lock, or call
/// StorPortSynchronizeAccess.
#[diagnostic::on_unimplemented(message = "`{Self}` may not acquire the interrupt lock (seed 003)")]
pub trait MayAcquireInterrupt: Rules {}
impl<C: Rules> MayAcquireInterrupt for C where C::Interrupt: Permit {}

use forbidden::*;

/// Writes seed 003's second table: `token => StartIo, DPC, Interrupt;`.
macro_rules! rules {
    ($($({$($generics:tt)*})? $token:ty => $start_io:ty, $dpc:ty, $interrupt:ty;)*) => {$(
        impl$(<$($generics)*>)? Sealed for $token {}
        impl$(<$($generics)*>)? Rules for $token {
            type StartIo = $start_io;
            type Dpc = $dpc;
            type Interrupt = $interrupt;
        }
    )*};
}

rules! {
    // callback token                    StartIo lock                                  DPC lock                                      Interrupt lock
    FindAdapter                       => FindAdapterMayAcquireNoLock,                 FindAdapterMayAcquireNoLock,                 FindAdapterMayAcquireNoLock;
    Initialize                        => InitializeMayAcquireNoLock,                  InitializeMayAcquireNoLock,                  InitializeMayAcquireNoLock;
    {'a} PassiveInitialize<'a>        => PassiveInitializeMayAcquireNoLock,           PassiveInitializeMayAcquireNoLock,           PassiveInitializeMayAcquireNoLock;
    BuildIo                           => May,                                         May,                                         May;
    StartIoSerialized<FullDuplex>     => StartIoLockHeldByStorportWithOneChannel,     May,                                         May;
    StartIoSerialized<HalfDuplex>     => HalfDuplexStartIoMayAcquireNoLock,           HalfDuplexStartIoMayAcquireNoLock,           HalfDuplexStartIoMayAcquireNoLock;
    StartIoConcurrent                 => May,                                         May,                                         May;
    Interrupt                         => InterruptRoutineMayAcquireNoLock,            InterruptRoutineMayAcquireNoLock,            InterruptRoutineMayAcquireNoLock;
    MessageInterrupt                  => MessageInterruptRoutineMayAcquireNoLock,     MessageInterruptRoutineMayAcquireNoLock,     MessageInterruptRoutineMayAcquireNoLock;
    MessageInterruptPerMessage        => MessageInterruptRoutineMayAcquireNoLock,     MessageInterruptRoutineMayAcquireNoLock,     MessageInterruptRoutineMayAcquireNoLock;
    Dpc                               => May,                                         May,                                         May;
    Timer<FullDuplex>                 => FullDuplexTimerMayAcquireOnlyInterrupt,      FullDuplexTimerMayAcquireOnlyInterrupt,      May;
    Timer<HalfDuplex>                 => HalfDuplexTimerMayAcquireNoLock,             HalfDuplexTimerMayAcquireNoLock,             HalfDuplexTimerMayAcquireNoLock;
    ResetBus<FullDuplex>              => FullDuplexResetBusMayAcquireOnlyInterrupt,   FullDuplexResetBusMayAcquireOnlyInterrupt,   May;
    ResetBus<HalfDuplex>              => HalfDuplexResetBusMayAcquireNoLock,          HalfDuplexResetBusMayAcquireNoLock,          HalfDuplexResetBusMayAcquireNoLock;
    AdapterControl                    => May,                                         May,                                         May;
    UnitControl                       => May,                                         May,                                         May;
    TracingEnabled                    => TracingEnabledMayAcquireNoLock,              TracingEnabledMayAcquireNoLock,              TracingEnabledMayAcquireNoLock;
    StateChange<FullDuplex>           => FullDuplexStateChangeMayAcquireOnlyInterrupt, FullDuplexStateChangeMayAcquireOnlyInterrupt, May;
    StateChange<HalfDuplex>           => HalfDuplexStateChangeMayAcquireNoLock,       HalfDuplexStateChangeMayAcquireNoLock,       HalfDuplexStateChangeMayAcquireNoLock;
    Synchronized                      => SynchronizedRoutineHoldsInterruptLock,       SynchronizedRoutineHoldsInterruptLock,       SynchronizedRoutineHoldsInterruptLock;
    // held levels: only upwards, never the same level again, never two DPC locks
    Held<StartIoLevel>                => StartIoLockAlreadyHeld,                      May,                                         May;
    Held<DpcLevel>                    => StartIoLockBelowHeldDpcLock,                 TwoDpcLocksAtOnce,                           May;
    Held<InterruptLevel>              => InterruptLockHeldMayAcquireNoLock,           InterruptLockHeldMayAcquireNoLock,           InterruptLockHeldMayAcquireNoLock;
}

/// A callback in which Storport itself holds the StartIo lock (seed 003, first table).
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not hold the StartIo lock: reach a `StartIoShared` through `with` or `lock`",
    label = "Storport does not hold the StartIo lock in this callback (seed 003, first table)"
)]
pub trait HoldsStartIo: Rules {}

/// A callback in which Storport itself holds the interrupt lock (seed 003, first table), or the
/// routine run by StorPortSynchronizeAccess.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not hold the interrupt lock: reach an `InterruptShared` through \
               `synchronize` (StorPortSynchronizeAccess), `with` or `lock`",
    label = "Storport does not hold the interrupt lock in this callback (seed 003, first table)"
)]
pub trait HoldsInterrupt: Rules {}

impl<D: crate::context::Duplex> HoldsStartIo for StartIoSerialized<D> where Self: Rules {}
impl<D: crate::context::Duplex> HoldsStartIo for Timer<D> where Self: Rules {}
impl<D: crate::context::Duplex> HoldsStartIo for ResetBus<D> where Self: Rules {}
impl<D: crate::context::Duplex> HoldsStartIo for StateChange<D> where Self: Rules {}

impl HoldsInterrupt for Initialize {}
impl HoldsInterrupt for Interrupt {}
impl HoldsInterrupt for MessageInterrupt {}
impl HoldsInterrupt for Synchronized {}
impl HoldsInterrupt for StartIoSerialized<HalfDuplex> {}
impl HoldsInterrupt for Timer<HalfDuplex> {}
impl HoldsInterrupt for ResetBus<HalfDuplex> {}
impl HoldsInterrupt for StateChange<HalfDuplex> {}

// ------------------------------------------------------------------------------------------------
// Acquire and release.
// ------------------------------------------------------------------------------------------------

/// Why a lock was not taken. The protected state was not touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockError {
    /// Storport refused: STOR_STATUS_INVALID_PARAMETER, STOR_STATUS_INVALID_IRQL or another
    /// status (already reported with StorPortDebugPrint and StorPortLogError).
    Refused(u32),
    /// The cell has no adapter yet (`bind` was not called), or its STOR_DPC is not initialised.
    Unbound,
    /// StorPortSynchronizeAccess returned without running the routine.
    NotRun,
}

/// srb.h SP_INTERNAL_ADAPTER_ERROR, the StorPortLogError code for a refused lock.
const SP_INTERNAL_ADAPTER_ERROR: u32 = 6;
/// DPFLTR_ERROR_LEVEL, StorPortDebugPrint's level for errors.
const DPFLTR_ERROR_LEVEL: u32 = 0;

/// Reports a lock Storport refused: a debug print and an event-log entry (unique id = status).
#[cold]
#[inline(never)]
pub(crate) fn report(port: Port, what: &core::ffi::CStr, kind: u32, status: u32) {
    // SAFETY: StorPortDebugPrint is printf-like: the format takes one string and two ULONGs,
    // which follow; `what` is NUL-terminated and outlives the call.
    unsafe {
        ffi::StorPortDebugPrint(
            DPFLTR_ERROR_LEVEL,
            c"storport: %s(%u) failed with status 0x%08x\n".as_ptr(),
            what.as_ptr(),
            kind,
            status,
        )
    };
    // SAFETY: StorPortLogError takes the adapter (`port`'s invariant), an optional SRB (none),
    // a BTL address and two codes.
    unsafe {
        ffi::StorPortLogError(
            port.extension(),
            ptr::null_mut(),
            0,
            0,
            0,
            SP_INTERNAL_ADAPTER_ERROR,
            status,
        )
    };
}

/// StorPortAcquireSpinLockEx, falling back to StorPortAcquireSpinLock on an older Storport.
///
/// Returns `Ok` when the lock is held; then it must be released with StorPortReleaseSpinLock
/// on `handle`. A refusal is reported and returned.
///
/// # Safety
///
/// `handle` is valid for reads and writes and stays at its address until the release; `kind`
/// and `context` agree (the STOR_DPC for DpcLock, NULL otherwise); the caller's context may
/// take the lock (the [`Rules`]) and does not hold it.
#[inline]
pub(crate) unsafe fn acquire(
    port: Port,
    kind: ffi::STOR_SPINLOCK,
    context: *mut c_void,
    handle: *mut ffi::STOR_LOCK_HANDLE,
) -> Result<(), LockError> {
    // SAFETY: ExtendedFunction(ExtFunctionAcquireSpinLock) takes (STOR_SPINLOCK, PVOID
    // LockContext, STOR_LOCK_HANDLE*) after the extension (layouts.md); the arguments are valid by
    // this function's `# Safety`.
    let status = unsafe {
        ffi::StorPortExtendedFunction(
            ffi::ExtFunctionAcquireSpinLock,
            port.extension(),
            kind,
            context,
            handle,
        )
    };
    match status {
        ffi::STOR_STATUS_SUCCESS => Ok(()),
        ffi::STOR_STATUS_NOT_IMPLEMENTED
            if matches!(kind, ffi::DpcLock | ffi::StartIoLock | ffi::InterruptLock) =>
        {
            // An older Storport: the classic acquire knows these three kinds.
            // SAFETY: Notification(AcquireSpinLock) takes (STOR_SPINLOCK, PVOID LockContext,
            // STOR_LOCK_HANDLE*) after the extension (layouts.md); as above.
            unsafe {
                ffi::StorPortNotification(
                    ffi::AcquireSpinLock,
                    port.extension(),
                    kind,
                    context,
                    handle,
                )
            };
            Ok(())
        }
        status => {
            report(port, c"StorPortAcquireSpinLockEx", kind, status);
            Err(LockError::Refused(status))
        }
    }
}

/// StorPortReleaseSpinLock.
///
/// # Safety
///
/// `handle` is the handle of a lock [`acquire`] took on `port` and that is still held.
#[inline]
pub(crate) unsafe fn release(port: Port, handle: *mut ffi::STOR_LOCK_HANDLE) {
    // SAFETY: Notification(ReleaseSpinLock) takes (STOR_LOCK_HANDLE*) after the extension
    // (layouts.md); the handle is a held one, by this function's `# Safety`.
    unsafe { ffi::StorPortNotification(ffi::ReleaseSpinLock, port.extension(), handle) };
}

/// The STOR_LOCK_HANDLE of one acquisition, kept in place while the lock is held.
///
/// Pin it (`core::pin::pin!(LockHandle::new())`) and lend it to a cell's `lock`.
///
/// # Invariants
///
/// `held` is `Some(port)` exactly while `raw` is the handle of a lock held on `port`. Once
/// pinned, `raw` does not move until `Drop` has released such a lock.
pub struct LockHandle {
    raw: UnsafeCell<ffi::STOR_LOCK_HANDLE>,
    held: Cell<Option<Port>>,
    _pinned: PhantomPinned,
}

impl LockHandle {
    /// An empty handle.
    #[inline]
    pub const fn new() -> Self {
        Self {
            raw: UnsafeCell::new(ffi::STOR_LOCK_HANDLE {
                Lock: ffi::InvalidLock,
                Context: ffi::STOR_LOCK_HANDLE_CONTEXT {
                    LockQueue: ffi::STOR_LOCK_QUEUE {
                        Next: ptr::null_mut(),
                        Lock: ptr::null_mut(),
                    },
                    OldIrql: 0,
                },
            }),
            held: Cell::new(None),
            _pinned: PhantomPinned,
        }
    }

    /// Releases the lock this handle holds, if any.
    #[inline]
    fn release(&self) {
        if let Some(port) = self.held.take() {
            // SAFETY: by the type invariant, `raw` holds a lock on `port` and has not moved.
            unsafe { release(port, self.raw.get()) };
        }
    }
}

impl Default for LockHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for LockHandle {
    #[inline]
    fn drop(&mut self) {
        // A guard that was leaked left its lock held: release it before the memory goes.
        self.release();
    }
}

/// Exclusive access to the state a lock of level `L` protects, while the lock is held.
///
/// Derefs to `&mut T` for no longer than the guard lives; releases the lock
/// (StorPortReleaseSpinLock) when dropped, on every path. Not `Send`: the lock belongs to this
/// CPU.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct Guard<'a, L: Level, T> {
    data: NonNull<T>,
    handle: &'a LockHandle,
    held: Held<L>,
    _data: PhantomData<&'a mut T>,
}

impl<'a, L: Level, T> Guard<'a, L, T> {
    /// Takes lock `L` of `port` (with `context`) through `handle` for `data`.
    ///
    /// # Safety
    ///
    /// `data` is only ever accessed by whoever holds that lock; the caller's context may take
    /// it and does not hold it; `context` is the STOR_DPC for DpcLock and NULL otherwise.
    #[inline]
    pub(crate) unsafe fn acquire(
        port: Port,
        context: *mut c_void,
        data: &'a UnsafeCell<T>,
        handle: Pin<&'a mut LockHandle>,
    ) -> Result<Self, LockError> {
        let handle = handle.into_ref().get_ref();
        // A handle whose guard was leaked still holds its lock: let it go before reusing it.
        handle.release();
        // SAFETY: `handle` is pinned, so `raw` stays in place until `LockHandle::drop`, which
        // releases; `kind`, `context` and the caller's rights are as this function's `# Safety`.
        unsafe { acquire(port, L::KIND, context, handle.raw.get()) }?;
        // INVARIANT: the lock is held through `raw`.
        handle.held.set(Some(port));
        Ok(Self {
            // `UnsafeCell<T>` has the layout of `T`.
            data: NonNull::from(data).cast(),
            handle,
            // SAFETY: the lock of level `L` was just taken and is released only when the guard
            // (which owns this token) is dropped.
            held: unsafe { Held::new() },
            _data: PhantomData,
        })
    }

    /// The protected state and the token of the held level, to go on up the lock order.
    #[inline]
    pub fn split(&mut self) -> (&mut T, &mut Held<L>) {
        // SAFETY: the lock protecting `data` is held while the guard lives, and the returned
        // borrow cannot outlive `&mut self`.
        (unsafe { self.data.as_mut() }, &mut self.held)
    }
}

impl<L: Level, T> Deref for Guard<'_, L, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the lock protecting `data` is held while the guard lives.
        unsafe { self.data.as_ref() }
    }
}

impl<L: Level, T> DerefMut for Guard<'_, L, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the lock protecting `data` is held while the guard lives.
        unsafe { self.data.as_mut() }
    }
}

impl<L: Level, T> Drop for Guard<'_, L, T> {
    #[inline]
    fn drop(&mut self) {
        self.handle.release();
    }
}

/// Runs `f` with the state in `data` under lock `L`, the handle on this stack frame.
///
/// # Safety
///
/// As for [`Guard::acquire`].
#[inline]
pub(crate) unsafe fn with<L: Level, T, R>(
    port: Port,
    context: *mut c_void,
    data: &UnsafeCell<T>,
    f: impl FnOnce(&mut T, &mut Held<L>) -> R,
) -> Result<R, LockError> {
    let handle = core::pin::pin!(LockHandle::new());
    // SAFETY: by this function's `# Safety`.
    let mut guard = unsafe { Guard::<L, T>::acquire(port, context, data, handle) }?;
    let (data, held) = guard.split();
    Ok(f(data, held))
}
