//! Simulated CPUs: the thread-local execution context (CPU number, IRQL, the callback frames and
//! the locks this CPU holds), the spin locks themselves, and the wrapper every miniport callback
//! runs through, which checks the lock and IRQL rules on entry and on return.
//!
//! A simulated CPU is a host thread: the submitting test thread, an interrupt thread, a DPC
//! thread, the timer thread. Storport's locks are real mutual exclusion here (the miniport's data
//! depends on them); IRQL is bookkeeping (nothing preempts a host thread), checked against the
//! rules of `reference/storport.md` section 1 and seed 003.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::abi::irql;
use crate::adapter::AdapterInner;
use crate::rules::{Rule, Violation};

/// A Storport spin lock: real mutual exclusion that spins briefly and then yields, because the
/// host has fewer cores than simulated CPUs.
#[derive(Default)]
pub(crate) struct RawSpinLock {
    locked: AtomicBool,
}

impl RawSpinLock {
    pub fn lock(&self) {
        let mut spins = 0u32;
        loop {
            if !self.locked.swap(true, Ordering::Acquire) {
                return;
            }
            // The wait's CPU time is not the waiter's cost: see `watchdog`.
            crate::watchdog::lock_wait(|| {
                while self.locked.load(Ordering::Relaxed) {
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else if spins < 20_000 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(std::time::Duration::from_micros(50));
                    }
                }
            });
        }
    }

    pub fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

/// The callbacks a miniport registers, as the rules name them (the one table: `storport-rules`).
pub(crate) use storport_rules::Callback;

/// A lock of one adapter: `storport-rules`' `Lock` (its level, its overlaps and its name are the
/// rules' own).
pub(crate) type LockRef = storport_rules::Lock;

/// What the simulator adds to the rules' lock: the IRQL it raises to.
pub(crate) trait LockIrql {
    /// DISPATCH for the StartIo and DPC locks, DIRQL for the interrupt and MSI locks.
    fn irql(self) -> u8;
    /// The lock's name in reports.
    fn describe(self) -> String;
}

impl LockIrql for LockRef {
    fn irql(self) -> u8 {
        if self.is_interrupt() {
            irql::DIRQL
        } else {
            irql::DISPATCH
        }
    }

    fn describe(self) -> String {
        self.to_string()
    }
}

/// A lock held by this CPU.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Held {
    pub adapter: u64,
    pub lock: LockRef,
    /// Taken by the port around a callback (not releasable by the miniport).
    pub by_port: bool,
    /// Whether the lock was physically taken (a re-acquire is recorded but not taken).
    pub physical: bool,
    pub serial: u64,
}

/// One callback invocation on this CPU.
#[allow(dead_code, reason = "kept for debugging dumps")]
pub(crate) struct Frame {
    pub callback: Callback,
    pub adapter: *const AdapterInner,
    pub devext: usize,
    pub entry_irql: u8,
    pub held_at_entry: usize,
}

type Deferred = Box<dyn FnOnce()>;

/// The thread-local state of a simulated CPU.
pub(crate) struct Ctx {
    pub cpu: Cell<Option<u32>>,
    pub irql: Cell<u8>,
    pub frames: RefCell<Vec<Frame>>,
    pub held: RefCell<Vec<Held>>,
    history: RefCell<VecDeque<(bool, u64, LockRef, &'static str)>>,
    deferred: RefCell<Vec<Deferred>>,
    serial: Cell<u64>,
}

thread_local! {
    pub(crate) static CTX: Ctx = const {
        Ctx {
            cpu: Cell::new(None),
            irql: Cell::new(irql::PASSIVE),
            frames: RefCell::new(Vec::new()),
            held: RefCell::new(Vec::new()),
            history: RefCell::new(VecDeque::new()),
            deferred: RefCell::new(Vec::new()),
            serial: Cell::new(0),
        }
    };
}

static NEXT_CPU: AtomicU32 = AtomicU32::new(0);

/// This thread's CPU number, assigning one (round robin over `cpus`) on first use.
pub(crate) fn current_cpu(cpus: u32) -> u32 {
    CTX.with(|c| match c.cpu.get() {
        Some(n) => n % cpus.max(1),
        None => {
            let n = NEXT_CPU.fetch_add(1, Ordering::Relaxed);
            c.cpu.set(Some(n));
            n % cpus.max(1)
        }
    })
}

/// Pins this thread to a CPU (interrupt and DPC threads).
pub(crate) fn set_cpu(n: u32) {
    CTX.with(|c| c.cpu.set(Some(n)));
}

pub(crate) fn current_irql() -> u8 {
    CTX.with(|c| c.irql.get())
}

pub(crate) fn set_irql(v: u8) {
    CTX.with(|c| c.irql.set(v));
}

/// The callback running on this CPU (innermost), if any.
pub(crate) fn current_callback() -> Option<Callback> {
    CTX.with(|c| c.frames.borrow().last().map(|f| f.callback))
}

/// The adapter of the innermost frame whose device extension is `devext`.
pub(crate) fn frame_adapter(devext: usize) -> Option<*const AdapterInner> {
    CTX.with(|c| {
        c.frames
            .borrow()
            .iter()
            .rev()
            .find(|f| f.devext == devext)
            .map(|f| f.adapter)
    })
}

/// Runs `f` after the outermost callback on this CPU returns (at once when none is running):
/// where Storport processes completions, outside every miniport lock.
pub(crate) fn defer(f: Box<dyn FnOnce()>) {
    let now = CTX.with(|c| {
        if c.frames.borrow().is_empty() {
            Some(f)
        } else {
            c.deferred.borrow_mut().push(f);
            None
        }
    });
    if let Some(f) = now {
        f();
    }
}

/// Whether a callback is running on this CPU (completions are then handed over when the
/// outermost one returns).
pub(crate) fn in_callback() -> bool {
    CTX.with(|c| !c.frames.borrow().is_empty())
}

fn run_deferred() {
    crate::request::flush_queued();
    let mut batch = Vec::new();
    loop {
        // Swap rather than take: both vectors keep their capacity (no allocation per run).
        CTX.with(|c| std::mem::swap(&mut *c.deferred.borrow_mut(), &mut batch));
        if batch.is_empty() {
            break;
        }
        for f in batch.drain(..) {
            f();
        }
        crate::request::flush_queued();
    }
    CTX.with(|c| {
        let mut d = c.deferred.borrow_mut();
        if d.capacity() < batch.capacity() {
            std::mem::swap(&mut *d, &mut batch);
        }
    });
}

/// Fills the context fields of a violation from this CPU.
pub(crate) fn violation(
    rule: Rule,
    params: [u64; 3],
    adapter: Option<u64>,
    message: String,
) -> Violation {
    let (code, p0) = rule.code();
    let p = if p0 != 0 {
        [p0, params[0], params[1], params[2]]
    } else {
        [params[0], params[1], params[2], 0]
    };
    CTX.with(|c| Violation {
        rule,
        code,
        params: p,
        adapter,
        callback: c
            .frames
            .borrow()
            .last()
            .map(|f| f.callback.name())
            .unwrap_or("port"),
        cpu: c.cpu.get().unwrap_or(0),
        irql: c.irql.get(),
        locks_held: c
            .held
            .borrow()
            .iter()
            .map(|h| {
                format!(
                    "{}{}",
                    h.lock.describe(),
                    if h.by_port { " (port)" } else { "" }
                )
            })
            .collect(),
        lock_history: c
            .history
            .borrow()
            .iter()
            .map(|(acq, _, l, cb)| {
                format!(
                    "{} {} in {}",
                    if *acq { "acquire" } else { "release" },
                    l.describe(),
                    cb
                )
            })
            .collect(),
        message,
    })
}

fn record(acquire: bool, adapter: u64, lock: LockRef) {
    CTX.with(|c| {
        let cb = c
            .frames
            .borrow()
            .last()
            .map(|f| f.callback.name())
            .unwrap_or("port");
        let mut h = c.history.borrow_mut();
        if h.len() == 32 {
            h.pop_front();
        }
        h.push_back((acquire, adapter, lock, cb));
    });
}

fn next_serial() -> u64 {
    CTX.with(|c| {
        let s = c.serial.get().wrapping_add(1);
        c.serial.set(s);
        s
    })
}

/// The seed-003 "may acquire" table, as `storport-rules` writes it, for this adapter's model.
pub(crate) fn may_acquire(a: &AdapterInner, cb: Callback, lock: LockRef) -> bool {
    storport_rules::may_acquire(
        cb,
        lock,
        storport_rules::Model {
            half_duplex: a.half_duplex(),
            concurrent_channels: a.concurrent_channels(),
            per_message: a.per_message(),
        },
    )
}

/// What an acquire produced.
pub(crate) struct Acquired {
    pub old_irql: u8,
    pub serial: u64,
}

/// How the miniport asked for a lock (the Ex form reports errors as a status).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcquireApi {
    Classic,
    Ex,
    Msi,
}

/// Acquires a lock for the miniport, checking every rule first. `Err` is a STOR_STATUS.
pub(crate) fn miniport_acquire(
    a: &AdapterInner,
    lock: LockRef,
    api: AcquireApi,
) -> Result<Acquired, u32> {
    let cb = current_callback();
    let cur = current_irql();
    let dump = a.dump_mode();
    if let Some(cb) = cb {
        if !dump && !may_acquire(a, cb, lock) {
            a.report(
                Rule::LockNotAllowed,
                [lock.level() as u64, 0, 0],
                format!("{} may not acquire {}", cb.name(), lock.describe()),
            );
        }
    } else {
        a.report(
            Rule::OutsideCallback,
            [0; 3],
            format!("{} acquired outside any callback", lock.describe()),
        );
    }
    let (reacquire, order, two_dpc) = CTX.with(|c| {
        let held = c.held.borrow();
        let mine = held.iter().filter(|h| h.adapter == a.serial);
        let mut re = false;
        let mut order = None;
        let mut dpc = false;
        for h in mine {
            if h.lock.overlaps(lock) {
                re = true;
            } else if matches!((h.lock, lock), (LockRef::Dpc(_), LockRef::Dpc(_))) {
                dpc = true;
            } else if h.lock.level() > lock.level() {
                order = Some(h.lock);
            } else if let (LockRef::Message(x), LockRef::Message(y)) = (h.lock, lock)
                && x > y
            {
                order = Some(h.lock);
            }
        }
        (re, order, dpc)
    });
    let serial = next_serial();
    let old_irql = cur;
    if reacquire {
        a.report(
            Rule::LockReacquire,
            [lock.level() as u64, 0, 0],
            format!(
                "{} re-acquired while held (deadlock on Windows)",
                lock.describe()
            ),
        );
    } else if two_dpc {
        a.report(
            Rule::TwoDpcLocks,
            [0; 3],
            format!(
                "{} acquired while another DPC lock is held",
                lock.describe()
            ),
        );
    }
    if let Some(h) = order {
        a.report(
            Rule::LockOrder,
            [lock.level() as u64, h.level() as u64, 0],
            format!(
                "{} acquired while holding {} (order is StartIo < DPC < Interrupt)",
                lock.describe(),
                h.describe()
            ),
        );
    }
    if api == AcquireApi::Ex && !dump && cur > lock.irql() {
        return Err(crate::abi::STOR_STATUS_INVALID_IRQL);
    }
    let physical = !reacquire;
    if physical {
        a.lock_raw(lock);
    }
    a.lock_counts.acquired(cb, lock, false);
    CTX.with(|c| {
        c.held.borrow_mut().push(Held {
            adapter: a.serial,
            lock,
            by_port: false,
            physical,
            serial,
        });
        if !dump {
            c.irql.set(cur.max(lock.irql()));
        }
    });
    record(true, a.serial, lock);
    Ok(Acquired { old_irql, serial })
}

/// Releases a lock the miniport acquired; `serial` (from the lock handle) picks the acquisition.
pub(crate) fn miniport_release(
    a: &AdapterInner,
    lock: LockRef,
    serial: Option<u64>,
    restore_irql: u8,
) {
    let found = CTX.with(|c| {
        let mut held = c.held.borrow_mut();
        let pos = held.iter().rposition(|h| {
            h.adapter == a.serial
                && h.lock == lock
                && !h.by_port
                && serial.is_none_or(|s| s == h.serial)
        });
        pos.map(|p| held.remove(p))
    });
    match found {
        None => {
            a.report(
                Rule::LockReleaseNotHeld,
                [lock.level() as u64, 0, 0],
                format!(
                    "{} released but not held by the miniport on this CPU",
                    lock.describe()
                ),
            );
        }
        Some(h) => {
            if h.physical {
                a.unlock_raw(lock);
            }
            record(false, a.serial, lock);
            if !a.dump_mode() {
                set_irql(restore_irql);
            }
        }
    }
}

/// Whether this CPU holds `lock` of adapter `serial` (by the port or the miniport).
pub(crate) fn holds(serial: u64, pred: impl Fn(&Held) -> bool) -> bool {
    CTX.with(|c| {
        c.held
            .borrow()
            .iter()
            .any(|h| h.adapter == serial && pred(h))
    })
}

/// Runs one miniport callback on this CPU: takes `port_locks` for it (as Storport does), sets the
/// IRQL, has the watchdog watch it while it runs, and on return checks the IRQL, the locks left
/// held and the time budget.
pub(crate) fn invoke<R>(
    a: &AdapterInner,
    cb: Callback,
    irql_level: u8,
    port_locks: &[LockRef],
    f: impl FnOnce() -> R,
) -> R {
    current_cpu(a.cpus());
    let prev_irql = current_irql();
    a.lock_counts.callback(Some(cb));
    for &l in port_locks {
        a.lock_raw(l);
        a.lock_counts.acquired(Some(cb), l, true);
        CTX.with(|c| {
            c.held.borrow_mut().push(Held {
                adapter: a.serial,
                lock: l,
                by_port: true,
                physical: true,
                serial: 0,
            })
        });
        record(true, a.serial, l);
    }
    let held_at_entry = CTX.with(|c| c.held.borrow().len());
    set_irql(irql_level);
    CTX.with(|c| {
        c.frames.borrow_mut().push(Frame {
            callback: cb,
            adapter: a,
            devext: a.devext_addr(),
            entry_irql: irql_level,
            held_at_entry,
        })
    });
    let limits = watchdog_limits(a, cb, irql_level);
    crate::watchdog::enter(cb, a.serial, current_cpu(a.cpus()), irql_level, limits);
    let r = f();
    let charge = crate::watchdog::leave();
    // Locks the callback left held.
    let leaked: Vec<Held> = CTX.with(|c| {
        let mut held = c.held.borrow_mut();
        if held.len() > held_at_entry {
            held.split_off(held_at_entry)
        } else {
            Vec::new()
        }
    });
    for h in leaked.iter().rev() {
        a.report(
            Rule::LockHeldAtReturn,
            [h.lock.level() as u64, 0, 0],
            format!("{} returned holding {}", cb.name(), h.lock.describe()),
        );
        if h.physical {
            // Release it so the simulation can go on.
            if let Some(other) = crate::adapter::lookup_serial(h.adapter) {
                other.unlock_raw(h.lock);
            }
        }
    }
    let missing = CTX.with(|c| c.held.borrow().len() < held_at_entry);
    if missing {
        a.report(
            Rule::LockReleaseNotHeld,
            [0; 3],
            format!("{} released a lock the port held for it", cb.name()),
        );
    }
    let now_irql = current_irql();
    if now_irql != irql_level && !a.dump_mode() {
        a.report(
            Rule::IrqlChanged,
            [irql_level as u64, now_irql as u64, 0],
            format!(
                "{} entered at IRQL {} and returned at {}",
                cb.name(),
                irql_level,
                now_irql
            ),
        );
    }
    if let Some(b) = limits.budget
        && charge.charged > b
        && !charge.reported
    {
        a.report(
            Rule::Watchdog,
            crate::watchdog::violation_params(charge.charged, b),
            format!(
                "{} ran {:?} of CPU (budget {:?})",
                cb.name(),
                charge.charged,
                b
            ),
        );
    }
    CTX.with(|c| c.frames.borrow_mut().pop());
    // Release the port's locks (whatever the callback did to the held list above them).
    for &l in port_locks.iter().rev() {
        let removed = CTX.with(|c| {
            let mut held = c.held.borrow_mut();
            held.iter()
                .rposition(|h| h.adapter == a.serial && h.lock == l && h.by_port)
                .map(|p| held.remove(p))
        });
        if removed.is_some() {
            a.unlock_raw(l);
            record(false, a.serial, l);
        }
    }
    set_irql(prev_irql);
    let outermost = CTX.with(|c| c.frames.borrow().is_empty());
    if outermost {
        run_deferred();
    }
    r
}

/// The watchdog's budget for `cb` entered at `irql_level` (none at PASSIVE, and none in a dump
/// stack, which runs with interrupts off and no DPC watchdog), and its hang limits.
fn watchdog_limits(a: &AdapterInner, cb: Callback, irql_level: u8) -> crate::watchdog::Limits {
    let o = &a.port.options;
    let budget = if a.dump_mode() {
        None
    } else {
        match cb {
            Callback::Interrupt | Callback::MsiInterrupt | Callback::SynchronizedAccess => {
                Some(o.isr_budget)
            }
            Callback::Dpc => Some(o.dpc_budget),
            _ if irql_level >= irql::DISPATCH => Some(o.raised_irql_budget),
            _ => None,
        }
    };
    crate::watchdog::Limits {
        budget,
        hang_margin: o.watchdog_hang_margin,
        hang_wall: o.watchdog_hang_wall,
    }
}
