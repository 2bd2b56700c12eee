//! Execution-context tokens: proof of which Storport callback is running.
//!
//! Each `Miniport` method receives a token of its callback kind from its trampoline. A token is
//! zero-sized, cannot be built outside this crate, is neither `Send` nor `Sync` (it proves
//! something about the current CPU), and states in its documentation the IRQL Storport runs the
//! callback at and the locks Storport holds on entry (seed 003, first table). The lock methods a
//! token has (see `lock`) are exactly the locks that callback may acquire (seed 003, second
//! table).

use core::marker::PhantomData;

/// Makes a token type with a crate-private constructor.
macro_rules! token {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name {
            _not_send: PhantomData<*mut ()>,
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
    /// HwStorPassiveInitializeRoutine: PASSIVE_LEVEL; no lock held; may acquire none.
    PassiveInitialize
);
token!(
    /// HwStorBuildIo: DISPATCH_LEVEL, concurrently on several CPUs; no lock held; may acquire
    /// DPC, StartIo and Interrupt locks.
    BuildIo
);
token!(
    /// HwStorStartIo with at most one concurrent channel: DISPATCH_LEVEL (full duplex);
    /// Storport holds the StartIo lock; may acquire DPC and Interrupt locks.
    StartIoSerialized
);
token!(
    /// HwStorStartIo with more than one concurrent channel: DISPATCH_LEVEL (full duplex),
    /// concurrently on several CPUs; no lock held; may acquire StartIo, DPC and Interrupt locks.
    StartIoConcurrent
);
token!(
    /// HwStorInterrupt: DIRQL; Storport holds the interrupt lock; may acquire none.
    Interrupt
);
token!(
    /// HwMSInterruptRoutine: DIRQL; Storport holds this message's interrupt lock
    /// (InterruptSynchronizePerMessage) or the one interrupt lock (InterruptSynchronizeAll); may
    /// acquire none.
    MessageInterrupt
);
token!(
    /// HwStorDpcRoutine: DISPATCH_LEVEL; no lock held; may acquire DPC, StartIo and Interrupt
    /// locks.
    Dpc
);
token!(
    /// HwStorTimer (full duplex): DISPATCH_LEVEL; Storport holds the StartIo lock; may acquire
    /// the Interrupt lock.
    Timer
);
token!(
    /// HwStorResetBus (full duplex): DISPATCH_LEVEL; Storport holds the StartIo lock (and every
    /// channel); may acquire the Interrupt lock.
    ResetBus
);
token!(
    /// HwStorAdapterControl: the IRQL depends on the control type (PASSIVE for queries, DIRQL
    /// for stop/restart); no lock held (docs conflict for stop/restart); may acquire DPC, StartIo
    /// and Interrupt locks where the IRQL allows.
    AdapterControl
);
token!(
    /// HwStorUnitControl: PASSIVE or DISPATCH; no lock held; may acquire DPC, StartIo and
    /// Interrupt locks.
    UnitControl
);
token!(
    /// HwStorStateChange (full duplex): DISPATCH_LEVEL; Storport holds the StartIo lock; may
    /// acquire the Interrupt lock.
    StateChange
);
token!(
    /// The routine run by StorPortSynchronizeAccess: DIRQL holding the interrupt lock(s); may
    /// acquire none.
    Synchronized
);

/// The StartIo token, by whether Storport serialises StartIo (concurrent channels <= 1) or not.
pub enum StartIo<'a> {
    /// Concurrent channels <= 1: Storport holds the StartIo lock.
    Serialized(&'a StartIoSerialized),
    /// Concurrent channels > 1: StartIo runs in parallel; no lock held.
    Concurrent(&'a StartIoConcurrent),
}
