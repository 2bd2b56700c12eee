//! The rules the user-mode Storport enforces and the violations it reports.
//!
//! A violation reads like a bug check: a code (0xF1 SCSI_VERIFIER_DETECTED_VIOLATION with
//! 0x2001..0x2005, 0xF0 STORAGE_MINIPORT_ERROR with 1..3, 0x133 DPC_WATCHDOG_VIOLATION) and four
//! parameters, plus what Driver Verifier would not tell you: the callback that was running, the
//! simulated CPU, its IRQL, the locks it held and its recent lock history. Rules that Static Driver
//! Verifier checks but no bug check reports get project codes `0x5D00_0000 | n` ([`SDV_CODE`]).
//! `crates/storport-sim/RULES.md` maps every rule to its Windows equivalent and its test.

use std::fmt;
use std::sync::Mutex;

/// The project code base for rules without a Windows bug check ("SDV", Static Driver Verifier).
pub const SDV_CODE: u32 = 0x5D00_0000;
/// Bug check SCSI_VERIFIER_DETECTED_VIOLATION.
pub const SCSI_VERIFIER_DETECTED_VIOLATION: u32 = 0xF1;
/// Bug check STORAGE_MINIPORT_ERROR.
pub const STORAGE_MINIPORT_ERROR: u32 = 0xF0;
/// Bug check DPC_WATCHDOG_VIOLATION.
pub const DPC_WATCHDOG_VIOLATION: u32 = 0x133;

/// One rule of the model. `code()` gives the bug-check code it reports under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// 0xF1/0x2001: StorPortStallExecution longer than 100 ms.
    StallTooLong,
    /// 0xF1/0x2002: StorPortGetUncachedExtension outside HwStorFindAdapter, or before the final
    /// SrbExtensionSize was set.
    UncachedExtension,
    /// 0xF1/0x2003: StorPortGetDeviceBase for an address outside the adapter's access ranges.
    BadDeviceBase,
    /// 0xF1/0x2004: a request completed twice.
    DoubleCompletion,
    /// 0xF1/0x2005: a register access outside the ranges mapped by StorPortGetDeviceBase.
    BadRegisterAddress,
    /// 0xF0/1: requests not completed after HwStorResetBus.
    NotCompletedAfterReset,
    /// 0xF0/3: a request not completed within its timeout (reported when the port is told not to
    /// reset on timeouts).
    NotCompletedInTime,
    /// 0x133: an ISR or DPC ran longer than its budget.
    Watchdog,
    /// SDV StorPortSpinLock / seed 003: a callback acquired a lock its row of the table forbids.
    LockNotAllowed,
    /// SDV StorPortSpinLock3: the order StartIo < DPC < Interrupt (and MSI locks ascending).
    LockOrder,
    /// SDV StorPortSpinLock: re-acquiring a held lock (a deadlock on Windows).
    LockReacquire,
    /// SDV StorPortSpinLock: releasing a lock that is not held (or was taken by the port).
    LockReleaseNotHeld,
    /// SDV StorPortSpinLock: a lock still held when the callback returns.
    LockHeldAtReturn,
    /// Project rule (seed 003): two DPC locks held at once.
    TwoDpcLocks,
    /// SDV SpChangeIrql: a callback returned at an IRQL other than its entry IRQL.
    IrqlChanged,
    /// SDV StorPortNotification2: a notification type Storport miniports must not send.
    NotificationType,
    /// SDV StorPortStatusPending: a request completed with SRB_STATUS_PENDING.
    StatusPending,
    /// SDV StorPortBuildIo: BuildIo returned FALSE without completing the request (or completed
    /// it and returned TRUE).
    BuildIoCompletion,
    /// SDV StorPortEnablePassive: EnablePassiveInitialization outside HwStorInitialize.
    PassiveInitContext,
    /// StorPortInitializePerfOpts outside HwStorInitialize and the passive-init routine.
    PerfOptsContext,
    /// SDV SpReturnValue: HwStorFindAdapter returned something other than SP_RETURN_*.
    FindAdapterReturn,
    /// SDV StorPortFindAdapter: MaximumTransferLength or NumberOfPhysicalBreaks left unset.
    FindAdapterLimits,
    /// Completing an SRB the port never sent (or no longer owns).
    UnknownSrb,
    /// A DMA address asked for memory outside the guest region.
    DmaOutsideGuestMemory,
    /// StorPortSynchronizeAccess from the ISR or HwStorInitialize, or with the interrupt lock held.
    SynchronizeAccessContext,
    /// SDV StorPortMSILock: MSI lock calls outside InterruptSynchronizePerMessage, or bad ids.
    MsiLock,
    /// SDV HwStorPortProhibitedDDIs: a WDM routine called by a physical miniport.
    ProhibitedDdi,
    /// SDV SpNoWait / StorPortStartIo: stalls, waits or allocations in StartIo or at DIRQL.
    NoWait,
    /// SDV SpDuplex: the miniport kept the half-duplex synchronization model.
    HalfDuplex,
    /// HW_INITIALIZATION_DATA rejected (size, missing callbacks, SrbTypeFlags).
    Registration,
    /// A call refused in dump mode (DPC, MSI, perf options, pool allocation).
    DumpMode,
    /// A bad argument to a Storport call (lock kind, context, handle, DPC object, code).
    InvalidParameter,
    /// A Storport call from a thread that is not inside a callback of that adapter.
    OutsideCallback,
    /// The adapter-control protocol: Stop/Restart not supported, or writes past MaxControlType.
    AdapterControl,
    /// The device wrote into the memory of a request the miniport had already completed (a reset
    /// that handed requests back before the device stopped: virtio-win #1326).
    WriteAfterCompletion,
    /// A registry call above PASSIVE_LEVEL, StorPortRegistryRead into a buffer that is not the
    /// adapter's registry buffer (StorPortAllocateRegistryBuffer), or freeing one it does not hold.
    RegistryAccess,
}

impl Rule {
    /// The rules that are this project's own, with no Windows mechanism behind them (RULES.md):
    /// `PortOptions::windows_rules_only` turns them off. TwoDpcLocks is seed 003's project rule
    /// (Windows allows a DPC routine to hold two STOR_DPC locks); OutsideCallback has no Windows
    /// check (a lock taken on a thread running no callback: Windows cannot tell). The project's
    /// other own rule, the register-access form (marker + fixed `mov`/`movzx`), is the image
    /// loader's and is relaxed with `image::accept_plain_register_accesses`.
    pub const PROJECT_ONLY: &'static [Rule] = &[Rule::TwoDpcLocks, Rule::OutsideCallback];

    /// The bug-check code and first parameter this rule reports.
    pub fn code(self) -> (u32, u64) {
        use Rule::*;
        let sdv = |n: u32| (SDV_CODE | n, 0);
        match self {
            StallTooLong => (SCSI_VERIFIER_DETECTED_VIOLATION, 0x2001),
            UncachedExtension => (SCSI_VERIFIER_DETECTED_VIOLATION, 0x2002),
            BadDeviceBase => (SCSI_VERIFIER_DETECTED_VIOLATION, 0x2003),
            DoubleCompletion => (SCSI_VERIFIER_DETECTED_VIOLATION, 0x2004),
            BadRegisterAddress => (SCSI_VERIFIER_DETECTED_VIOLATION, 0x2005),
            NotCompletedAfterReset => (STORAGE_MINIPORT_ERROR, 1),
            NotCompletedInTime => (STORAGE_MINIPORT_ERROR, 3),
            Watchdog => (DPC_WATCHDOG_VIOLATION, 0),
            LockNotAllowed => sdv(1),
            LockOrder => sdv(2),
            LockReacquire => sdv(3),
            LockReleaseNotHeld => sdv(4),
            LockHeldAtReturn => sdv(5),
            TwoDpcLocks => sdv(6),
            IrqlChanged => sdv(7),
            NotificationType => sdv(8),
            StatusPending => sdv(9),
            BuildIoCompletion => sdv(10),
            PassiveInitContext => sdv(11),
            PerfOptsContext => sdv(12),
            FindAdapterReturn => sdv(13),
            FindAdapterLimits => sdv(14),
            UnknownSrb => sdv(15),
            DmaOutsideGuestMemory => sdv(16),
            SynchronizeAccessContext => sdv(17),
            MsiLock => sdv(18),
            ProhibitedDdi => sdv(19),
            NoWait => sdv(20),
            HalfDuplex => sdv(21),
            Registration => sdv(22),
            DumpMode => sdv(23),
            InvalidParameter => sdv(24),
            OutsideCallback => sdv(25),
            AdapterControl => sdv(26),
            WriteAfterCompletion => sdv(27),
            RegistryAccess => sdv(28),
        }
    }
}

/// One rule violation, reported like a bug check.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The rule broken.
    pub rule: Rule,
    /// Bug-check code (0xF1, 0xF0, 0x133 or `SDV_CODE | n`).
    pub code: u32,
    /// Bug-check parameters; the first is the subcode for 0xF1/0xF0.
    pub params: [u64; 4],
    /// The adapter (its serial number), if the violation belongs to one.
    pub adapter: Option<u64>,
    /// The callback running when it happened ("HwStorStartIo", ...), or "port".
    pub callback: &'static str,
    /// The simulated CPU.
    pub cpu: u32,
    /// The IRQL at the time.
    pub irql: u8,
    /// Locks held by this CPU at the time.
    pub locks_held: Vec<String>,
    /// This CPU's recent lock operations, oldest first.
    pub lock_history: Vec<String>,
    /// What happened, in a sentence.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "*** STOP 0x{:X} ({:#x}, {:#x}, {:#x}, {:#x}) {:?}: {}",
            self.code,
            self.params[0],
            self.params[1],
            self.params[2],
            self.params[3],
            self.rule,
            self.message
        )?;
        writeln!(
            f,
            "    in {} on CPU {} at IRQL {}, adapter {:?}",
            self.callback, self.cpu, self.irql, self.adapter
        )?;
        writeln!(f, "    locks held: {:?}", self.locks_held)?;
        write!(f, "    lock history: {:?}", self.lock_history)
    }
}

/// Where a port's violations are collected.
pub(crate) struct Reporter {
    pub violations: Mutex<Vec<Violation>>,
    pub disabled: Vec<Rule>,
    pub panic: bool,
}

impl Reporter {
    pub fn enabled(&self, rule: Rule) -> bool {
        !self.disabled.contains(&rule)
    }

    pub fn push(&self, v: Violation) {
        if !self.enabled(v.rule) {
            return;
        }
        if self.panic {
            // A bug check: stop at once. Inside an `extern "C"` callback path this aborts the
            // process, which is what a bug check does to a machine.
            panic!("storport-sim violation\n{v}");
        }
        eprintln!("storport-sim: {v}");
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(v);
    }
}
