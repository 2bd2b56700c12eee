//! Execution-context tokens: proof of which Storport callback is running.
//!
//! Each `Miniport` method receives a token of its callback kind from its trampoline, as `&mut`:
//! a token is zero-sized, cannot be built outside this crate, is neither `Send` nor `Sync` (it
//! proves something about the current CPU), and states in its documentation the IRQL Storport
//! runs the callback at and the locks Storport holds on entry (seed 003, first table). The locks
//! a token may acquire (seed 003, second table) are the `lock::MayAcquire*` traits it implements;
//! the table itself is written once, in `lock.rs` (`rules!`). Acquiring a lock borrows the token
//! mutably, so while a lock taken through it is held the token cannot take another one: the held
//! level's own token ([`crate::lock::Held`]) is what may go on up the order.
//!
//! | callback (C)                   | full duplex                      | half duplex                         |
//! |--------------------------------|----------------------------------|-------------------------------------|
//! | HwStorFindAdapter              | [`FindAdapter`]                  | same                                |
//! | HwStorInitialize               | [`Initialize`]                   | same                                |
//! | HwStorPassiveInitializeRoutine | [`PassiveInitialize`]            | same                                |
//! | HwStorBuildIo                  | [`BuildIo`]                      | same                                |
//! | HwStorStartIo, channels <= 1   | [`StartIoSerialized`]            | `StartIoSerialized<HalfDuplex>`     |
//! | HwStorStartIo, channels > 1    | [`StartIoConcurrent`]            | (not offered: needs full duplex)    |
//! | HwStorInterrupt                | [`Interrupt`]                    | same                                |
//! | HwMSInterruptRoutine           | [`MessageInterrupt`] (SynchronizeAll), [`MessageInterruptPerMessage`] (PerMessage) | same |
//! | HwStorDpcRoutine               | [`Dpc`]                          | same                                |
//! | HwStorTimer                    | [`Timer`]                        | `Timer<HalfDuplex>`                 |
//! | HwStorResetBus                 | [`ResetBus`]                     | `ResetBus<HalfDuplex>`              |
//! | HwStorAdapterControl           | [`AdapterControl`]               | same                                |
//! | HwStorUnitControl              | [`UnitControl`]                  | same                                |
//! | HwStorStateChange              | [`StateChange`]                  | `StateChange<HalfDuplex>`           |
//! | StorPortSynchronizeAccess routine | [`Synchronized`]              | same                                |

use core::marker::PhantomData;

use crate::ffi;

/// The `SynchronizationModel` a miniport declares in PORT_CONFIGURATION_INFORMATION.
///
/// Storport holds more locks around HwStorStartIo, HwStorTimer, HwStorResetBus and
/// HwStorStateChange in half duplex (seed 003, first table), so those tokens take the model as a
/// type parameter, full duplex by default.
pub trait Duplex: sealed::Sealed + 'static {
    /// The STOR_SYNCHRONIZATION_MODEL value.
    const MODEL: ffi::STOR_SYNCHRONIZATION_MODEL;
}

/// StorSynchronizeFullDuplex: StartIo runs at DISPATCH_LEVEL, concurrently with the ISR.
pub enum FullDuplex {}

/// StorSynchronizeHalfDuplex (Storport's default): StartIo runs at DIRQL under the interrupt lock.
pub enum HalfDuplex {}

impl Duplex for FullDuplex {
    const MODEL: ffi::STOR_SYNCHRONIZATION_MODEL = ffi::StorSynchronizeFullDuplex;
}

impl Duplex for HalfDuplex {
    const MODEL: ffi::STOR_SYNCHRONIZATION_MODEL = ffi::StorSynchronizeHalfDuplex;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::FullDuplex {}
    impl Sealed for super::HalfDuplex {}
}

/// Marks a type as neither `Send` nor `Sync`.
type NotSend = PhantomData<*mut ()>;

/// Makes a token type with a crate-private constructor.
macro_rules! token {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name {
            _not_send: NotSend,
        }

        impl $name {
            /// Makes the token.
            ///
            /// # Safety
            ///
            /// The caller is the trampoline of this callback kind, running on the CPU, at the
            /// IRQL and with the locks that the token's documentation states.
            #[inline(always)]
            #[allow(dead_code, reason = "used by trampolines and tests as they are added")]
            pub(crate) unsafe fn new() -> Self {
                Self { _not_send: PhantomData }
            }
        }
    };
    ($(#[$doc:meta])* $name:ident<D>) => {
        $(#[$doc])*
        pub struct $name<D: Duplex = FullDuplex> {
            _not_send: PhantomData<(*mut (), D)>,
        }

        impl<D: Duplex> $name<D> {
            /// Makes the token.
            ///
            /// # Safety
            ///
            /// The caller is the trampoline of this callback kind for a miniport that declared
            /// the synchronization model `D`, running on the CPU, at the IRQL and with the locks
            /// that the token's documentation states for `D`.
            #[inline(always)]
            #[allow(dead_code, reason = "used by trampolines and tests as they are added")]
            pub(crate) unsafe fn new() -> Self {
                Self { _not_send: PhantomData }
            }
        }
    };
}

token!(
    /// HwStorFindAdapter: PASSIVE_LEVEL (DISPATCH on some restarts, HIGH in dump mode); Storport
    /// holds no lock; the routine may acquire none.
    FindAdapter
);
token!(
    /// HwStorInitialize: DIRQL; Storport holds the interrupt lock (physical miniport); the routine
    /// may acquire none.
    Initialize
);
token!(
    /// HwStorBuildIo: DISPATCH_LEVEL, concurrently on several CPUs; no lock held; may acquire
    /// DPC, StartIo and Interrupt locks.
    BuildIo
);
token!(
    /// HwStorStartIo.
    ///
    /// - Full duplex, at most one concurrent channel: DISPATCH_LEVEL; Storport holds the StartIo
    ///   lock; may acquire DPC and Interrupt locks (not StartIo: it is held).
    /// - Half duplex: DIRQL; Storport holds the StartIo and the interrupt lock; may acquire none.
    StartIoSerialized<D>
);
token!(
    /// HwStorStartIo with more than one concurrent channel (full duplex only): DISPATCH_LEVEL,
    /// concurrently on several CPUs; no lock held; may acquire StartIo, DPC and Interrupt locks.
    StartIoConcurrent
);
token!(
    /// HwStorInterrupt: DIRQL; Storport holds the interrupt lock; may acquire none.
    Interrupt
);
token!(
    /// HwMSInterruptRoutine with InterruptSynchronizeAll: DIRQL; Storport holds the one interrupt
    /// lock of the adapter; may acquire none.
    MessageInterrupt
);
token!(
    /// HwStorDpcRoutine: DISPATCH_LEVEL; no lock held (not even the DPC's own); may acquire DPC,
    /// StartIo and Interrupt locks.
    Dpc
);
token!(
    /// HwStorTimer.
    ///
    /// - Full duplex: DISPATCH_LEVEL; Storport holds the StartIo lock; may acquire the Interrupt
    ///   lock only.
    /// - Half duplex: Storport holds the StartIo and the interrupt lock; may acquire none.
    Timer<D>
);
token!(
    /// HwStorResetBus: all LU queues paused.
    ///
    /// - Full duplex: DISPATCH_LEVEL; Storport holds the StartIo lock (and every channel's when
    ///   channels > 1); may acquire the Interrupt lock only.
    /// - Half duplex: Storport holds the StartIo and the interrupt lock; may acquire none.
    ResetBus<D>
);
token!(
    /// HwStorAdapterControl: the IRQL depends on the control type (PASSIVE for queries and
    /// configuration, DIRQL for stop/restart); no lock held (docs conflict for stop/restart); may
    /// acquire DPC, StartIo and Interrupt locks (seed 003). Storport answers
    /// STOR_STATUS_INVALID_IRQL where the IRQL forbids one; the lock wrappers report that.
    AdapterControl
);
token!(
    /// HwStorUnitControl: PASSIVE or DISPATCH; no lock held; may acquire DPC, StartIo and
    /// Interrupt locks.
    UnitControl
);
token!(
    /// HwStorTracingEnabled: PASSIVE_LEVEL; no lock held. Seed 003 has no row for it: this
    /// project's conservative reading lets it acquire no lock (it only records the flag).
    TracingEnabled
);
token!(
    /// HwStorStateChange.
    ///
    /// - Full duplex: DISPATCH_LEVEL; Storport holds the StartIo lock; may acquire the Interrupt
    ///   lock only.
    /// - Half duplex: Storport holds the StartIo and the interrupt lock; may acquire none.
    StateChange<D>
);
token!(
    /// The routine run by StorPortSynchronizeAccess: the synchronize IRQL holding the interrupt
    /// lock(s) (all MSI messages in order); may acquire none.
    Synchronized
);

/// HwStorPassiveInitializeRoutine: PASSIVE_LEVEL; no lock held; may acquire none.
///
/// The lifetime `'a` is that of the device extension the routine runs for: objects Storport
/// keeps the address of (a [`crate::dpc::StorDpc`]) can only be registered if they live that
/// long, which a local cannot. Trampoline and trait method tie it to `&'a self`:
/// `fn passive_initialize<'a>(&'a self, ctx: &mut PassiveInitialize<'a>) -> bool`.
pub struct PassiveInitialize<'a> {
    _not_send: NotSend,
    // Invariant in 'a: a `&mut PassiveInitialize<'long>` cannot be passed as a shorter one.
    _brand: PhantomData<fn(&'a ()) -> &'a ()>,
}

impl PassiveInitialize<'_> {
    /// Makes the token.
    ///
    /// # Safety
    ///
    /// The caller is the HwStorPassiveInitializeRoutine trampoline, at PASSIVE_LEVEL, and the
    /// device extension of the adapter lives at least as long as the token's lifetime.
    #[inline(always)]
    #[allow(dead_code, reason = "used by trampolines and tests as they are added")]
    pub(crate) unsafe fn new() -> Self {
        Self {
            _not_send: PhantomData,
            _brand: PhantomData,
        }
    }
}

/// HwMSInterruptRoutine with InterruptSynchronizePerMessage: DIRQL; Storport holds only this
/// message's lock; may acquire none (seed 003). Reaches the [`crate::msi::MsiShared`] cell of its
/// own message.
pub struct MessageInterruptPerMessage {
    message_id: u32,
    _not_send: NotSend,
}

impl MessageInterruptPerMessage {
    /// Makes the token for message `message_id`.
    ///
    /// # Safety
    ///
    /// The caller is the HwMSInterruptRoutine trampoline of a miniport that declared
    /// InterruptSynchronizePerMessage, called by Storport for `message_id`: Storport holds that
    /// message's lock.
    #[inline(always)]
    #[allow(dead_code, reason = "used by trampolines and tests as they are added")]
    pub(crate) unsafe fn new(message_id: u32) -> Self {
        Self {
            message_id,
            _not_send: PhantomData,
        }
    }

    /// The message whose lock Storport holds.
    #[inline]
    pub fn message_id(&self) -> u32 {
        self.message_id
    }
}

/// The StartIo token, by whether Storport serialises StartIo (concurrent channels <= 1, or half
/// duplex) or not.
pub enum StartIo<'a, D: Duplex = FullDuplex> {
    /// Concurrent channels <= 1: Storport holds the StartIo lock (and, in half duplex, the
    /// interrupt lock).
    Serialized(&'a mut StartIoSerialized<D>),
    /// Concurrent channels > 1 (full duplex): StartIo runs in parallel; no lock held.
    Concurrent(&'a mut StartIoConcurrent),
}
