//! State guarded by one MSI/MSI-X message's interrupt lock (InterruptSynchronizePerMessage).
//!
//! | Rust                 | C                                                                           |
//! |----------------------|-----------------------------------------------------------------------------|
//! | [`MsiShared::lock`]  | StorPortAcquireMSISpinLock = ExtendedFunction(11, ext, ULONG MessageId, PULONG OldIrql) |
//! | `MsiGuard` drop      | StorPortReleaseSpinLock... = ExtendedFunction(12, ext, ULONG MessageId, ULONG OldIrql) |
//! | [`MsiShared::get`]   | HwMSInterruptRoutine for that message, which Storport runs holding its lock |
//!
//! With InterruptSynchronizePerMessage each message has its own lock, and the routine of message
//! `n` holds only lock `n`: state a queue's interrupt shares with the rest of the driver goes in
//! an `MsiShared` of that message. A message lock is an interrupt-level lock: acquiring it needs
//! [`MayAcquireInterrupt`] and yields [`Held<InterruptLevel>`], which acquires nothing more (the
//! MSI routines themselves acquire none, seed 003). The old IRQL comes back by value, so the guard
//! owns it and may move.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};

use crate::context::MessageInterruptPerMessage;
use crate::ffi;
use crate::lock::{self, Held, InterruptLevel, LockError, MayAcquireInterrupt};
use crate::port::Port;

/// State guarded by the interrupt lock of one message.
///
/// # Invariants
///
/// `data` is only accessed by a CPU holding message `message_id`'s lock of the adapter `port`
/// (or through `&mut self`).
pub struct MsiShared<T> {
    port: Option<Port>,
    message_id: u32,
    data: UnsafeCell<T>,
}

// SAFETY: the message's lock serialises every access to `data` (type invariant).
unsafe impl<T: Send> Sync for MsiShared<T> {}

impl<T> MsiShared<T> {
    /// A cell for message `message_id` holding `value`, not yet bound to an adapter.
    #[inline]
    pub const fn new(message_id: u32, value: T) -> Self {
        Self {
            port: None,
            message_id,
            data: UnsafeCell::new(value),
        }
    }

    /// Binds the cell to its adapter (in HwStorFindAdapter).
    #[inline]
    pub fn bind(&mut self, port: Port) {
        self.port = Some(port);
    }

    /// The message whose lock guards the value.
    #[inline]
    pub fn message_id(&self) -> u32 {
        self.message_id
    }

    /// The value, when nothing else can reach the cell (`&mut self`).
    #[inline]
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// The value, in the PerMessage routine of this cell's message; `None` in another message's.
    #[inline]
    pub fn get<'a>(&'a self, ctx: &'a mut MessageInterruptPerMessage) -> Option<&'a mut T> {
        if ctx.message_id() != self.message_id {
            return None;
        }
        // SAFETY: Storport holds this message's lock while the token lives (its `new`), and the
        // token stays borrowed mutably for 'a.
        Some(unsafe { &mut *self.data.get() })
    }

    /// Takes the message's lock (StorPortAcquireMSISpinLock).
    #[inline]
    pub fn lock<'a, C: MayAcquireInterrupt>(
        &'a self,
        ctx: &'a mut C,
    ) -> Result<MsiGuard<'a, T>, LockError> {
        let _ = ctx;
        let port = self.port.ok_or(LockError::Unbound)?;
        let mut old_irql: ffi::ULONG = 0;
        // SAFETY: ExtendedFunction(AcquireMSISpinLock) takes (ULONG MessageId, PULONG OldIrql)
        // after the extension (layouts.md); `old_irql` outlives the call.
        let status = unsafe {
            ffi::StorPortExtendedFunction(
                ffi::ExtFunctionAcquireMSISpinLock,
                port.extension(),
                self.message_id,
                ptr::from_mut(&mut old_irql),
            )
        };
        if status != ffi::STOR_STATUS_SUCCESS {
            lock::report(port, c"StorPortAcquireMSISpinLock", self.message_id, status);
            return Err(LockError::Refused(status));
        }
        Ok(MsiGuard {
            port,
            message_id: self.message_id,
            old_irql,
            // `UnsafeCell<T>` has the layout of `T`.
            data: NonNull::from(&self.data).cast(),
            // SAFETY: the message's lock is held until the guard drops.
            held: unsafe { Held::new() },
            _data: PhantomData,
        })
    }

    /// Runs `f` on the value under the message's lock.
    #[inline]
    pub fn with<C: MayAcquireInterrupt, R>(
        &self,
        ctx: &mut C,
        f: impl FnOnce(&mut T, &mut Held<InterruptLevel>) -> R,
    ) -> Result<R, LockError> {
        let mut guard = self.lock(ctx)?;
        let (data, held) = guard.split();
        Ok(f(data, held))
    }
}

/// Exclusive access to an [`MsiShared`] while its message's lock is held; releases it
/// (StorPortReleaseMSISpinLock) when dropped.
///
/// # Invariants
///
/// This CPU holds message `message_id`'s lock of `port`, taken at `old_irql`, until `drop`.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MsiGuard<'a, T> {
    port: Port,
    message_id: u32,
    old_irql: ffi::ULONG,
    data: NonNull<T>,
    held: Held<InterruptLevel>,
    _data: PhantomData<&'a mut T>,
}

impl<T> MsiGuard<'_, T> {
    /// The protected state and the token of the held (interrupt) level.
    #[inline]
    pub fn split(&mut self) -> (&mut T, &mut Held<InterruptLevel>) {
        // SAFETY: the lock is held while the guard lives (type invariant); the borrow cannot
        // outlive `&mut self`.
        (unsafe { self.data.as_mut() }, &mut self.held)
    }
}

impl<T> Deref for MsiGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the lock is held while the guard lives (type invariant).
        unsafe { self.data.as_ref() }
    }
}

impl<T> DerefMut for MsiGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the lock is held while the guard lives (type invariant).
        unsafe { self.data.as_mut() }
    }
}

impl<T> Drop for MsiGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: ExtendedFunction(ReleaseMSISpinLock) takes (ULONG MessageId, ULONG OldIrql)
        // after the extension (layouts.md); the lock is held at `old_irql` (type invariant).
        let status = unsafe {
            ffi::StorPortExtendedFunction(
                ffi::ExtFunctionReleaseMSISpinLock,
                self.port.extension(),
                self.message_id,
                self.old_irql,
            )
        };
        if status != ffi::STOR_STATUS_SUCCESS {
            lock::report(
                self.port,
                c"StorPortReleaseMSISpinLock",
                self.message_id,
                status,
            );
        }
    }
}
