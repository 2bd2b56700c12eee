//! Storport's lock rules, written once: the seed-003 tables and a checker for one CPU.
//!
//! `reference/storport.md` section 1 lists, for every miniport callback, the locks Storport holds
//! when it calls the routine and the locks the routine may acquire; this project adds the total
//! order **StartIo < DPC < Interrupt**, never two DPC locks at once, and Static Driver Verifier's
//! StorPortSpinLock rules (no re-acquire, no unpaired release, nothing held when a callback
//! returns). This crate is those tables ([`held_on_entry`], [`may_acquire`],
//! [`may_synchronize`], [`Lock::level`]) plus [`Cpu`], a fixed-capacity tracker of the callbacks
//! and locks of one CPU that reports each broken rule as a [`Violation`].
//!
//! It is `no_std` and allocates nothing, so a Storport that runs on a single CPU without an
//! operating system (the UEFI application in `uefi/`) and the user-mode Storport
//! (`crates/storport-sim`) can both use it. On a single CPU nothing spins: a rule is checked and
//! reported, never enforced by waiting, so a broken rule cannot deadlock the checker.
#![no_std]
#![forbid(unsafe_code)]

use core::fmt;

/// A miniport routine Storport calls, as the rules name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callback {
    /// DriverEntry (not a Storport callback, but code runs in it).
    DriverEntry,
    /// HwStorFindAdapter.
    FindAdapter,
    /// HwStorInitialize.
    Initialize,
    /// HwStorPassiveInitializeRoutine.
    PassiveInitialize,
    /// HwStorBuildIo.
    BuildIo,
    /// HwStorStartIo.
    StartIo,
    /// HwStorInterrupt.
    Interrupt,
    /// HwMSInterruptRoutine.
    MsiInterrupt,
    /// HwStorDpcRoutine.
    Dpc,
    /// HwStorTimer.
    Timer,
    /// HwStorResetBus.
    ResetBus,
    /// HwStorAdapterControl.
    AdapterControl,
    /// HwStorUnitControl.
    UnitControl,
    /// HwStorStateChange.
    StateChange,
    /// HwStorTracingEnabled (no row in seed 003: this project lets it acquire no lock).
    TracingEnabled,
    /// The routine StorPortSynchronizeAccess runs.
    SynchronizedAccess,
}

impl Callback {
    /// The routine's name as the WDK documents it.
    pub const fn name(self) -> &'static str {
        match self {
            Callback::DriverEntry => "DriverEntry",
            Callback::FindAdapter => "HwStorFindAdapter",
            Callback::Initialize => "HwStorInitialize",
            Callback::PassiveInitialize => "HwStorPassiveInitializeRoutine",
            Callback::BuildIo => "HwStorBuildIo",
            Callback::StartIo => "HwStorStartIo",
            Callback::Interrupt => "HwStorInterrupt",
            Callback::MsiInterrupt => "HwMSInterruptRoutine",
            Callback::Dpc => "HwStorDpcRoutine",
            Callback::Timer => "HwStorTimer",
            Callback::ResetBus => "HwStorResetBus",
            Callback::AdapterControl => "HwStorAdapterControl",
            Callback::UnitControl => "HwStorUnitControl",
            Callback::StateChange => "HwStorStateChange",
            Callback::TracingEnabled => "HwStorTracingEnabled",
            Callback::SynchronizedAccess => "StorPortSynchronizeAccess routine",
        }
    }
}

/// One lock of an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    /// The StartIo lock (STOR_SPINLOCK StartIoLock).
    StartIo,
    /// A STOR_DPC's lock (DpcLock); the value names the STOR_DPC (its address).
    Dpc(usize),
    /// The interrupt lock (InterruptLock): with MSI, every message's lock.
    Interrupt,
    /// One MSI message's lock (StorPortAcquireMSISpinLock, InterruptSynchronizePerMessage).
    Message(u32),
}

impl Lock {
    /// The lock's place in the order StartIo (1) < DPC (2) < Interrupt (3).
    pub const fn level(self) -> u8 {
        match self {
            Lock::StartIo => 1,
            Lock::Dpc(_) => 2,
            Lock::Interrupt | Lock::Message(_) => 3,
        }
    }

    /// Whether holding `self` means holding `other` too (the interrupt lock covers every MSI
    /// message's lock), so that taking `other` would deadlock.
    pub fn overlaps(self, other: Lock) -> bool {
        match (self, other) {
            (Lock::Interrupt, Lock::Message(_)) | (Lock::Message(_), Lock::Interrupt) => true,
            (a, b) => a == b,
        }
    }

    /// Whether this is the interrupt lock or an MSI message's lock.
    pub const fn is_interrupt(self) -> bool {
        matches!(self, Lock::Interrupt | Lock::Message(_))
    }
}

impl fmt::Display for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lock::StartIo => f.write_str("StartIoLock"),
            Lock::Dpc(dpc) => write!(f, "DpcLock({dpc:#x})"),
            Lock::Interrupt => f.write_str("InterruptLock"),
            Lock::Message(id) => write!(f, "MSILock({id})"),
        }
    }
}

/// How the adapter is configured, as far as the tables depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Model {
    /// StorSynchronizeHalfDuplex (the default) rather than full duplex.
    pub half_duplex: bool,
    /// Concurrent channels Storport granted (1 when none were asked for).
    pub concurrent_channels: u32,
    /// InterruptSynchronizePerMessage: each MSI message has its own lock.
    pub per_message: bool,
}

impl Model {
    /// A full-duplex adapter with one channel and no per-message locks: a dump stack, or an
    /// adapter before it sets performance options.
    pub const FULL_DUPLEX: Model = Model {
        half_duplex: false,
        concurrent_channels: 1,
        per_message: false,
    };
}

/// The locks Storport holds when it calls `callback` (storport.md section 1, "held by Storport
/// on entry"), at most two, in acquisition order. An MSI routine under
/// InterruptSynchronizePerMessage holds its own message's lock, which this table cannot name:
/// the caller passes it to [`Cpu::enter_holding`] instead.
pub fn held_on_entry(callback: Callback, model: Model) -> [Option<Lock>; 2] {
    let start_io_held = model.concurrent_channels <= 1;
    match callback {
        Callback::Initialize | Callback::Interrupt | Callback::SynchronizedAccess => {
            [Some(Lock::Interrupt), None]
        }
        Callback::MsiInterrupt => [(!model.per_message).then_some(Lock::Interrupt), None],
        Callback::StartIo => match (start_io_held, model.half_duplex) {
            (true, true) => [Some(Lock::StartIo), Some(Lock::Interrupt)],
            (true, false) => [Some(Lock::StartIo), None],
            (false, _) => [None, None],
        },
        Callback::Timer | Callback::ResetBus | Callback::StateChange => [
            Some(Lock::StartIo),
            model.half_duplex.then_some(Lock::Interrupt),
        ],
        Callback::DriverEntry
        | Callback::FindAdapter
        | Callback::PassiveInitialize
        | Callback::BuildIo
        | Callback::Dpc
        | Callback::AdapterControl
        | Callback::UnitControl
        | Callback::TracingEnabled => [None, None],
    }
}

/// Whether `callback` may acquire `lock` (storport.md section 1, "may acquire").
pub fn may_acquire(callback: Callback, lock: Lock, model: Model) -> bool {
    match callback {
        Callback::BuildIo | Callback::Dpc | Callback::AdapterControl | Callback::UnitControl => {
            true
        }
        Callback::StartIo => {
            !model.half_duplex && (lock != Lock::StartIo || model.concurrent_channels > 1)
        }
        Callback::Timer | Callback::ResetBus | Callback::StateChange => {
            !model.half_duplex && lock.is_interrupt()
        }
        Callback::MsiInterrupt => matches!(lock, Lock::Message(_)) && model.per_message,
        Callback::DriverEntry
        | Callback::FindAdapter
        | Callback::Initialize
        | Callback::PassiveInitialize
        | Callback::Interrupt
        | Callback::SynchronizedAccess
        | Callback::TracingEnabled => false,
    }
}

/// Whether `callback` may call StorPortSynchronizeAccess (storport.md section 3: from StartIo,
/// BuildIo, a DPC or a timer; from the ISR or HwStorInitialize it deadlocks).
pub fn may_synchronize(callback: Callback) -> bool {
    matches!(
        callback,
        Callback::StartIo
            | Callback::BuildIo
            | Callback::Dpc
            | Callback::Timer
            | Callback::ResetBus
            | Callback::AdapterControl
            | Callback::UnitControl
            | Callback::StateChange
    )
}

/// A broken rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A lock was taken outside any callback.
    OutsideCallback {
        /// The lock.
        lock: Lock,
    },
    /// `callback` may not acquire `lock` (seed 003, SDV StorPortSpinLock).
    NotAllowed {
        /// The running callback.
        callback: Callback,
        /// The lock it asked for.
        lock: Lock,
    },
    /// `lock` was taken while `held`, which comes later in StartIo < DPC < Interrupt (SDV
    /// StorPortSpinLock3).
    Order {
        /// The lock asked for.
        lock: Lock,
        /// The lock already held.
        held: Lock,
    },
    /// `lock` was taken while already held: a deadlock on Windows.
    Reacquire {
        /// The lock.
        lock: Lock,
    },
    /// A second DPC lock was taken while one was held.
    TwoDpcLocks {
        /// The lock asked for.
        lock: Lock,
        /// The DPC lock already held.
        held: Lock,
    },
    /// `lock` was released but the miniport does not hold it.
    ReleaseNotHeld {
        /// The lock.
        lock: Lock,
    },
    /// `callback` returned still holding `lock`.
    HeldAtReturn {
        /// The callback that returned.
        callback: Callback,
        /// The lock left held.
        lock: Lock,
    },
    /// StorPortSynchronizeAccess was called where it is not allowed (or while the interrupt lock
    /// is held, a deadlock).
    Synchronize {
        /// The running callback, if any.
        callback: Option<Callback>,
    },
    /// The tracker's fixed capacity was exceeded (callbacks nested or locks held too deeply).
    TooDeep,
    /// A callback returned that was not entered.
    Unbalanced,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Violation::OutsideCallback { lock } => {
                write!(f, "{lock} acquired outside any callback")
            }
            Violation::NotAllowed { callback, lock } => {
                write!(f, "{} may not acquire {lock}", callback.name())
            }
            Violation::Order { lock, held } => {
                write!(
                    f,
                    "{lock} acquired while holding {held} (order is StartIo < DPC < Interrupt)"
                )
            }
            Violation::Reacquire { lock } => {
                write!(f, "{lock} re-acquired while held (deadlock on Windows)")
            }
            Violation::TwoDpcLocks { lock, held } => {
                write!(f, "{lock} acquired while holding {held}")
            }
            Violation::ReleaseNotHeld { lock } => {
                write!(f, "{lock} released but not held by the miniport")
            }
            Violation::HeldAtReturn { callback, lock } => {
                write!(f, "{} returned holding {lock}", callback.name())
            }
            Violation::Synchronize {
                callback: Some(callback),
            } => {
                write!(
                    f,
                    "StorPortSynchronizeAccess called from {}",
                    callback.name()
                )
            }
            Violation::Synchronize { callback: None } => {
                f.write_str("StorPortSynchronizeAccess called outside any callback")
            }
            Violation::TooDeep => {
                f.write_str("callbacks or locks nested beyond the checker's capacity")
            }
            Violation::Unbalanced => f.write_str("a callback returned that was not entered"),
        }
    }
}

/// One lock this CPU holds.
#[derive(Clone, Copy, Debug)]
struct Held {
    lock: Lock,
    /// Taken by the port around a callback, not releasable by the miniport.
    by_port: bool,
}

/// One callback running on this CPU.
#[derive(Clone, Copy, Debug)]
struct Frame {
    callback: Callback,
    /// How many locks were held when the callback was entered (port locks included).
    held_at_entry: usize,
    /// How many of those the port took for this callback.
    port_locks: usize,
}

/// The callbacks and locks of one CPU, checked against the tables.
///
/// `FRAMES` bounds how deeply callbacks nest (a StartIo that calls StorPortSynchronizeAccess is
/// two), `LOCKS` how many locks are held at once. Every method reports the first rule it finds
/// broken and keeps the bookkeeping consistent anyway, so checking can go on.
#[derive(Debug)]
pub struct Cpu<const FRAMES: usize, const LOCKS: usize> {
    model: Model,
    frames: [Option<Frame>; FRAMES],
    depth: usize,
    held: [Option<Held>; LOCKS],
    count: usize,
}

impl<const FRAMES: usize, const LOCKS: usize> Cpu<FRAMES, LOCKS> {
    /// A CPU running nothing, holding nothing.
    pub const fn new(model: Model) -> Self {
        Self {
            model,
            frames: [None; FRAMES],
            depth: 0,
            held: [None; LOCKS],
            count: 0,
        }
    }

    /// The adapter model the tables are read with.
    pub fn model(&self) -> Model {
        self.model
    }

    /// Changes the adapter model (after HwStorFindAdapter chose the synchronization model, or
    /// after performance options were granted).
    pub fn set_model(&mut self, model: Model) {
        self.model = model;
    }

    /// The innermost running callback.
    pub fn current(&self) -> Option<Callback> {
        self.depth
            .checked_sub(1)
            .and_then(|i| self.frames.get(i).copied().flatten())
            .map(|f| f.callback)
    }

    /// Whether any running callback is `callback`.
    pub fn within(&self, callback: Callback) -> bool {
        self.frames
            .iter()
            .take(self.depth)
            .flatten()
            .any(|f| f.callback == callback)
    }

    /// The locks held now, innermost last.
    pub fn held(&self) -> impl Iterator<Item = Lock> + '_ {
        self.held.iter().take(self.count).flatten().map(|h| h.lock)
    }

    /// Storport calls `callback`, taking the locks of [`held_on_entry`] first.
    pub fn enter(&mut self, callback: Callback) -> Result<(), Violation> {
        let locks = held_on_entry(callback, self.model);
        let mut list = [Lock::StartIo; 2];
        let mut n = 0;
        for lock in locks.into_iter().flatten() {
            if let Some(slot) = list.get_mut(n) {
                *slot = lock;
                n += 1;
            }
        }
        self.enter_holding(callback, list.get(..n).unwrap_or(&[]))
    }

    /// Storport calls `callback` after taking `port_locks` for it (in that order).
    pub fn enter_holding(
        &mut self,
        callback: Callback,
        port_locks: &[Lock],
    ) -> Result<(), Violation> {
        let mut result = Ok(());
        if callback == Callback::SynchronizedAccess {
            let caller = self.current();
            let allowed = caller.is_some_and(may_synchronize);
            if !allowed || self.held().any(|h| h.is_interrupt()) {
                result = Err(Violation::Synchronize { callback: caller });
            }
        }
        let held_at_entry = self.count;
        let mut taken = 0;
        for &lock in port_locks {
            // The port's own locks obey the same deadlock rule: it cannot take a lock this CPU
            // already holds.
            if self.held().any(|h| h.overlaps(lock)) && result.is_ok() {
                result = Err(Violation::Reacquire { lock });
            }
            if self
                .push_lock(Held {
                    lock,
                    by_port: true,
                })
                .is_err()
            {
                result = result.and(Err(Violation::TooDeep));
            } else {
                taken += 1;
            }
        }
        let frame = Frame {
            callback,
            held_at_entry,
            port_locks: taken,
        };
        match self.frames.get_mut(self.depth) {
            Some(slot) => {
                *slot = Some(frame);
                self.depth += 1;
            }
            None => {
                // Undo the port locks: the callback is not tracked.
                self.count = held_at_entry;
                return Err(Violation::TooDeep);
            }
        }
        result
    }

    /// The innermost callback returns: the locks it still holds are reported (and dropped) and
    /// the port releases the locks it took for it.
    pub fn leave(&mut self) -> Result<(), Violation> {
        let Some(index) = self.depth.checked_sub(1) else {
            return Err(Violation::Unbalanced);
        };
        let Some(frame) = self.frames.get_mut(index).and_then(Option::take) else {
            return Err(Violation::Unbalanced);
        };
        self.depth = index;
        let port_end = frame.held_at_entry.saturating_add(frame.port_locks);
        let mut result = Ok(());
        // Anything above the port's locks was taken by the miniport and not released.
        if let Some(leaked) = self
            .held
            .iter()
            .take(self.count)
            .skip(port_end)
            .flatten()
            .next()
        {
            result = Err(Violation::HeldAtReturn {
                callback: frame.callback,
                lock: leaked.lock,
            });
        }
        if self.count < port_end && result.is_ok() {
            // The miniport released a lock the port took for it.
            result = Err(Violation::Unbalanced);
        }
        for slot in self.held.iter_mut().skip(frame.held_at_entry) {
            *slot = None;
        }
        self.count = frame.held_at_entry.min(self.count);
        result
    }

    /// The miniport acquires `lock` (StorPortAcquireSpinLock(Ex), StorPortAcquireMSISpinLock).
    /// The lock is recorded as held even when a rule is broken, so that its release pairs.
    pub fn acquire(&mut self, lock: Lock) -> Result<(), Violation> {
        let result = self.check_acquire(lock);
        match self.push_lock(Held {
            lock,
            by_port: false,
        }) {
            Ok(()) => result,
            Err(()) => result.and(Err(Violation::TooDeep)),
        }
    }

    fn check_acquire(&self, lock: Lock) -> Result<(), Violation> {
        let Some(callback) = self.current() else {
            return Err(Violation::OutsideCallback { lock });
        };
        for held in self.held() {
            if held.overlaps(lock) {
                return Err(Violation::Reacquire { lock });
            }
            if matches!((held, lock), (Lock::Dpc(_), Lock::Dpc(_))) {
                return Err(Violation::TwoDpcLocks { lock, held });
            }
            let out_of_order = held.level() > lock.level()
                || matches!((held, lock), (Lock::Message(x), Lock::Message(y)) if x > y);
            if out_of_order {
                return Err(Violation::Order { lock, held });
            }
        }
        if !may_acquire(callback, lock, self.model) {
            return Err(Violation::NotAllowed { callback, lock });
        }
        Ok(())
    }

    /// The miniport releases `lock` (StorPortReleaseSpinLock, StorPortReleaseMSISpinLock): the
    /// innermost acquisition of it by the miniport in the running callback.
    pub fn release(&mut self, lock: Lock) -> Result<(), Violation> {
        let floor = self
            .depth
            .checked_sub(1)
            .and_then(|i| self.frames.get(i).copied().flatten())
            .map_or(0, |f| f.held_at_entry.saturating_add(f.port_locks));
        let position = (floor..self.count)
            .rev()
            .find(|&i| matches!(self.held.get(i), Some(Some(h)) if h.lock == lock && !h.by_port));
        let Some(position) = position else {
            return Err(Violation::ReleaseNotHeld { lock });
        };
        // Close the gap: locks may be released out of acquisition order.
        for i in position..self.count.saturating_sub(1) {
            let next = self.held.get(i + 1).copied().flatten();
            if let Some(slot) = self.held.get_mut(i) {
                *slot = next;
            }
        }
        self.count -= 1;
        if let Some(slot) = self.held.get_mut(self.count) {
            *slot = None;
        }
        Ok(())
    }

    fn push_lock(&mut self, held: Held) -> Result<(), ()> {
        let slot = self.held.get_mut(self.count).ok_or(())?;
        *slot = Some(held);
        self.count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Single = Cpu<4, 8>;

    #[test]
    fn start_io_may_take_dpc_then_interrupt_in_full_duplex() {
        let mut cpu = Single::new(Model::FULL_DUPLEX);
        cpu.enter(Callback::StartIo).unwrap();
        assert_eq!(
            cpu.held().collect::<heapless_vec::V>().0,
            [Some(Lock::StartIo), None, None]
        );
        cpu.acquire(Lock::Dpc(0x10)).unwrap();
        cpu.acquire(Lock::Interrupt).unwrap();
        cpu.release(Lock::Interrupt).unwrap();
        cpu.release(Lock::Dpc(0x10)).unwrap();
        cpu.leave().unwrap();
        assert_eq!(cpu.held().count(), 0);
        assert_eq!(cpu.current(), None);
    }

    #[test]
    fn start_io_may_not_take_the_start_io_lock_it_holds() {
        let mut cpu = Single::new(Model::FULL_DUPLEX);
        cpu.enter(Callback::StartIo).unwrap();
        assert_eq!(
            cpu.acquire(Lock::StartIo),
            Err(Violation::Reacquire {
                lock: Lock::StartIo
            })
        );
        cpu.release(Lock::StartIo).unwrap();
        cpu.leave().unwrap();
    }

    #[test]
    fn concurrent_start_io_holds_nothing_and_may_take_start_io() {
        let model = Model {
            concurrent_channels: 4,
            ..Model::FULL_DUPLEX
        };
        let mut cpu = Single::new(model);
        cpu.enter(Callback::StartIo).unwrap();
        assert_eq!(cpu.held().count(), 0);
        cpu.acquire(Lock::StartIo).unwrap();
        cpu.release(Lock::StartIo).unwrap();
        cpu.leave().unwrap();
    }

    #[test]
    fn order_is_start_io_then_dpc_then_interrupt() {
        let mut cpu = Single::new(Model::FULL_DUPLEX);
        cpu.enter(Callback::BuildIo).unwrap();
        cpu.acquire(Lock::Interrupt).unwrap();
        assert_eq!(
            cpu.acquire(Lock::Dpc(1)),
            Err(Violation::Order {
                lock: Lock::Dpc(1),
                held: Lock::Interrupt
            })
        );
        cpu.release(Lock::Dpc(1)).unwrap();
        cpu.release(Lock::Interrupt).unwrap();
        cpu.acquire(Lock::Dpc(1)).unwrap();
        assert_eq!(
            cpu.acquire(Lock::StartIo),
            Err(Violation::Order {
                lock: Lock::StartIo,
                held: Lock::Dpc(1)
            })
        );
        cpu.release(Lock::StartIo).unwrap();
        assert_eq!(
            cpu.acquire(Lock::Dpc(2)),
            Err(Violation::TwoDpcLocks {
                lock: Lock::Dpc(2),
                held: Lock::Dpc(1)
            })
        );
        cpu.release(Lock::Dpc(2)).unwrap();
        cpu.release(Lock::Dpc(1)).unwrap();
        cpu.leave().unwrap();
    }

    #[test]
    fn interrupt_and_initialize_may_take_nothing() {
        for callback in [
            Callback::Interrupt,
            Callback::Initialize,
            Callback::FindAdapter,
        ] {
            let mut cpu = Single::new(Model::FULL_DUPLEX);
            cpu.enter(callback).unwrap();
            assert!(cpu.acquire(Lock::StartIo).is_err(), "{callback:?}");
            cpu.release(Lock::StartIo).unwrap();
            cpu.leave().unwrap();
        }
    }

    #[test]
    fn held_at_return_and_unpaired_release_are_reported() {
        let mut cpu = Single::new(Model::FULL_DUPLEX);
        cpu.enter(Callback::Dpc).unwrap();
        assert_eq!(
            cpu.release(Lock::Interrupt),
            Err(Violation::ReleaseNotHeld {
                lock: Lock::Interrupt
            })
        );
        cpu.acquire(Lock::Interrupt).unwrap();
        assert_eq!(
            cpu.leave(),
            Err(Violation::HeldAtReturn {
                callback: Callback::Dpc,
                lock: Lock::Interrupt
            })
        );
        assert_eq!(cpu.held().count(), 0);
        assert_eq!(cpu.leave(), Err(Violation::Unbalanced));
    }

    #[test]
    fn the_port_lock_cannot_be_released_by_the_miniport() {
        let mut cpu = Single::new(Model::FULL_DUPLEX);
        cpu.enter(Callback::Interrupt).unwrap();
        assert_eq!(
            cpu.release(Lock::Interrupt),
            Err(Violation::ReleaseNotHeld {
                lock: Lock::Interrupt
            })
        );
        cpu.leave().unwrap();
    }

    #[test]
    fn synchronize_access_from_start_io_but_not_from_the_isr() {
        let mut cpu = Single::new(Model::FULL_DUPLEX);
        cpu.enter(Callback::StartIo).unwrap();
        cpu.enter(Callback::SynchronizedAccess).unwrap();
        assert_eq!(cpu.held().count(), 2);
        cpu.leave().unwrap();
        cpu.leave().unwrap();

        cpu.enter(Callback::Interrupt).unwrap();
        assert!(matches!(
            cpu.enter(Callback::SynchronizedAccess),
            Err(Violation::Synchronize { .. })
        ));
        cpu.leave().unwrap();
        cpu.leave().unwrap();
        assert_eq!(cpu.held().count(), 0);

        cpu.enter(Callback::BuildIo).unwrap();
        cpu.acquire(Lock::Interrupt).unwrap();
        assert!(cpu.enter(Callback::SynchronizedAccess).is_err());
        cpu.leave().unwrap();
        cpu.release(Lock::Interrupt).unwrap();
        cpu.leave().unwrap();
    }

    #[test]
    fn half_duplex_start_io_holds_the_interrupt_lock_and_may_take_nothing() {
        let model = Model {
            half_duplex: true,
            ..Model::FULL_DUPLEX
        };
        let mut cpu = Single::new(model);
        cpu.enter(Callback::StartIo).unwrap();
        assert_eq!(cpu.held().count(), 2);
        assert!(cpu.acquire(Lock::Dpc(3)).is_err());
        cpu.release(Lock::Dpc(3)).unwrap();
        cpu.leave().unwrap();
    }

    #[test]
    fn msi_locks_ascend_and_only_per_message() {
        let per_message = Model {
            per_message: true,
            ..Model::FULL_DUPLEX
        };
        let mut cpu = Single::new(per_message);
        cpu.enter_holding(Callback::MsiInterrupt, &[Lock::Message(1)])
            .unwrap();
        assert_eq!(
            cpu.acquire(Lock::Message(1)),
            Err(Violation::Reacquire {
                lock: Lock::Message(1)
            })
        );
        cpu.release(Lock::Message(1)).unwrap();
        assert_eq!(
            cpu.acquire(Lock::Message(0)),
            Err(Violation::Order {
                lock: Lock::Message(0),
                held: Lock::Message(1)
            })
        );
        cpu.release(Lock::Message(0)).unwrap();
        cpu.acquire(Lock::Message(2)).unwrap();
        cpu.release(Lock::Message(2)).unwrap();
        cpu.leave().unwrap();

        let mut all = Single::new(Model::FULL_DUPLEX);
        all.enter(Callback::MsiInterrupt).unwrap();
        assert!(all.acquire(Lock::Message(2)).is_err());
        all.release(Lock::Message(2)).unwrap();
        all.leave().unwrap();
    }

    #[test]
    fn capacity_is_reported_not_overrun() {
        let mut cpu = Cpu::<1, 1>::new(Model::FULL_DUPLEX);
        cpu.enter(Callback::BuildIo).unwrap();
        cpu.acquire(Lock::StartIo).unwrap();
        assert_eq!(cpu.acquire(Lock::Interrupt), Err(Violation::TooDeep));
        assert_eq!(
            cpu.enter(Callback::SynchronizedAccess),
            Err(Violation::TooDeep)
        );
        cpu.release(Lock::StartIo).unwrap();
        cpu.leave().unwrap();
    }

    /// A tiny fixed-size collector so the tests need no allocator.
    mod heapless_vec {
        use super::Lock;

        pub struct V(pub [Option<Lock>; 3]);

        impl FromIterator<Lock> for V {
            fn from_iter<I: IntoIterator<Item = Lock>>(iter: I) -> Self {
                let mut v = [None; 3];
                for (slot, lock) in v.iter_mut().zip(iter) {
                    *slot = Some(lock);
                }
                V(v)
            }
        }
    }
}
