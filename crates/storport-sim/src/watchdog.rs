//! The DPC watchdog: bug check 0x133 DPC_WATCHDOG_VIOLATION, checked while the callback runs.
//!
//! Windows stops the machine when one ISR or DPC (or any code at raised IRQL) keeps its processor
//! longer than its allotment, and it does so while that code is still running. Two things differ
//! in a user-mode simulation on a shared host, and this module corrects for both:
//!
//! - **Preemption.** A simulated CPU is a host thread, and the host preempts it whenever it likes
//!   (on Windows nothing preempts code at DISPATCH or above). Wall-clock time would charge a
//!   healthy callback for the time its thread waited for a host core, so a callback is charged
//!   with its thread's CPU time (`CLOCK_THREAD_CPUTIME_ID` through `pthread_getcpuclockid`).
//!   Two corrections keep that figure equal to what the callback would cost on Windows: time in
//!   `StorPortStallExecution` counts (a busy wait on Windows, a sleep here), and CPU burnt waiting
//!   for a spin lock does not (on Windows the holder runs until it releases; here the holder may
//!   be preempted, and the wait would charge the waiter for the host's scheduling).
//! - **Hangs.** A callback that never returns cannot be checked on return. A monitor thread looks
//!   at every running callback every few milliseconds and reports the violation as soon as the
//!   charged time passes the budget. A callback still running `hang_margin` of charged time later
//!   (or after `hang_wall` of wall-clock time, for a deadlock, which burns no CPU here because
//!   the simulator's spin locks sleep while they wait) is not coming back: Windows would be
//!   stopped, so the simulator prints the bug check and ends the process with [`HANG_EXIT_CODE`].
//!   A hung driver fails its test instead of hanging it.
//!
//! Reading a thread's CPU clock is a system call (microseconds on a busy virtual machine), far too
//! dear for every callback of every I/O. So entering and leaving a callback read no clock: the
//! monitor samples a callback's thread clock the first time it sees the callback running, and
//! charges it from there. A callback is thus charged for what it runs after its first 2 ms or so
//! (the monitor's period), which changes nothing for budgets of tens of milliseconds; one that
//! returns before the monitor saw it was short. A callback the monitor has sampled reads the
//! clock once more when it returns, and one over budget is reported then if the monitor has not
//! done it yet.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::cpu::Callback;
use crate::rules::{Rule, Violation};

/// The exit status of a process the watchdog ends because a callback never returned.
pub const HANG_EXIT_CODE: i32 = 0x33;

/// How often the monitor looks at the running callbacks.
const POLL: Duration = Duration::from_millis(2);

/// What the watchdog needs from the port to judge one callback.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Charged time above which the callback is a 0x133; `None`: no budget, only the hang limits.
    pub budget: Option<Duration>,
    /// Charged time past the budget after which a still-running callback is a hang.
    pub hang_margin: Duration,
    /// Wall-clock time after which a still-running callback is a hang.
    pub hang_wall: Duration,
}

/// One callback running on a thread.
struct Running {
    callback: Callback,
    adapter: u64,
    irql: u8,
    limits: Limits,
    /// Where the charge starts: set by the monitor when it first sees the callback.
    base: Option<Base>,
    /// Set once a violation was reported for this invocation (by the monitor or on return).
    reported: bool,
}

/// The clocks when the monitor first saw a callback running.
#[derive(Clone, Copy)]
struct Base {
    cpu: Duration,
    stalled: u64,
    lock_wait: u64,
    wall: Instant,
}

impl Base {
    fn now(clock: &ThreadClock, cpu: Duration) -> Self {
        Base {
            cpu,
            stalled: clock.stalled_ns.load(Ordering::Relaxed),
            lock_wait: clock.lock_wait_ns.load(Ordering::Relaxed),
            wall: Instant::now(),
        }
    }

    /// What the callback is charged at thread CPU time `cpu_now`: its CPU time since the base,
    /// plus its stalls, less its spin-lock waits.
    fn charged(&self, clock: &ThreadClock, cpu_now: Duration) -> Duration {
        let stalled = clock
            .stalled_ns
            .load(Ordering::Relaxed)
            .saturating_sub(self.stalled);
        let waited = clock
            .lock_wait_ns
            .load(Ordering::Relaxed)
            .saturating_sub(self.lock_wait);
        (cpu_now.saturating_sub(self.cpu) + Duration::from_nanos(stalled))
            .saturating_sub(Duration::from_nanos(waited))
    }
}

/// A thread's CPU clock and the callbacks it is running, shared with the monitor.
struct ThreadClock {
    clock: libc::clockid_t,
    cpu: AtomicU32,
    stalled_ns: AtomicU64,
    lock_wait_ns: AtomicU64,
    /// Whether the monitor has sampled a callback this thread is running (then spin-lock waits
    /// are measured, to be excused).
    sampled: AtomicBool,
    running: Mutex<Vec<Running>>,
}

impl ThreadClock {
    fn now(&self) -> Option<Duration> {
        read_clock(self.clock)
    }
}

fn read_clock(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; a clock id of a thread that has exited makes
    // clock_gettime fail with EINVAL, which is handled, not undefined.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

fn this_thread_clock() -> libc::clockid_t {
    let mut clock: libc::clockid_t = libc::CLOCK_THREAD_CPUTIME_ID;
    // SAFETY: pthread_self has no preconditions.
    let this = unsafe { libc::pthread_self() };
    // SAFETY: `this` is the calling, live thread, and `clock` is a valid out pointer.
    let rc = unsafe { libc::pthread_getcpuclockid(this, &mut clock) };
    if rc != 0 {
        // Only this thread reads it then: the calling thread's own clock is always valid.
        clock = libc::CLOCK_THREAD_CPUTIME_ID;
    }
    clock
}

thread_local! {
    static THIS_THREAD: RefCell<Option<Arc<ThreadClock>>> = const { RefCell::new(None) };
}

/// Every thread that ever ran a callback (dead ones are pruned by the monitor).
static THREADS: Mutex<Vec<Weak<ThreadClock>>> = Mutex::new(Vec::new());
static MONITOR: OnceLock<()> = OnceLock::new();

/// Runs `f` on this thread's clock record (made on first use), without taking a reference
/// count on it: callbacks enter and leave often.
fn with_thread_clock<R>(f: impl FnOnce(&ThreadClock) -> R) -> R {
    THIS_THREAD.with(|t| {
        if let Some(c) = t.borrow().as_deref() {
            return f(c);
        }
        let c = thread_clock();
        f(&c)
    })
}

fn thread_clock() -> Arc<ThreadClock> {
    THIS_THREAD.with(|t| {
        t.borrow_mut()
            .get_or_insert_with(|| {
                let c = Arc::new(ThreadClock {
                    clock: this_thread_clock(),
                    cpu: AtomicU32::new(0),
                    stalled_ns: AtomicU64::new(0),
                    lock_wait_ns: AtomicU64::new(0),
                    sampled: AtomicBool::new(false),
                    running: Mutex::new(Vec::new()),
                });
                THREADS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Arc::downgrade(&c));
                MONITOR.get_or_init(start_monitor);
                c
            })
            .clone()
    })
}

/// The charge of the callback that ends: what [`leave`] measured.
pub(crate) struct Charge {
    pub charged: Duration,
    /// Whether the monitor already reported this invocation.
    pub reported: bool,
}

/// Starts watching a callback on this thread (simulated CPU `cpu`); pair with [`leave`]. Reads
/// no clock.
pub(crate) fn enter(callback: Callback, adapter: u64, cpu: u32, irql: u8, limits: Limits) {
    with_thread_clock(|clock| enter_on(clock, callback, adapter, cpu, irql, limits));
}

fn enter_on(
    clock: &ThreadClock,
    callback: Callback,
    adapter: u64,
    cpu: u32,
    irql: u8,
    limits: Limits,
) {
    clock.cpu.store(cpu, Ordering::Relaxed);
    clock
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Running {
            callback,
            adapter,
            irql,
            limits,
            base: None,
            reported: false,
        });
}

/// Stops watching this thread's innermost callback and returns what it was charged (nothing
/// when the monitor never saw it running, and then it reads no clock either).
pub(crate) fn leave() -> Charge {
    with_thread_clock(leave_on)
}

fn leave_on(clock: &ThreadClock) -> Charge {
    let r = {
        let mut running = clock.running.lock().unwrap_or_else(|e| e.into_inner());
        let r = running.pop();
        // Under the lock, so that the monitor's sampling and this store cannot interleave.
        clock
            .sampled
            .store(running.iter().any(|r| r.base.is_some()), Ordering::Relaxed);
        r
    };
    let Some(r) = r else {
        return Charge {
            charged: Duration::ZERO,
            reported: false,
        };
    };
    // The clock is read only for a callback the monitor sampled (it set `base`).
    let charged = match r.base {
        Some(base) => clock
            .now()
            .map_or(Duration::ZERO, |now| base.charged(clock, now)),
        None => Duration::ZERO,
    };
    Charge {
        charged,
        reported: r.reported,
    }
}

/// Charges this thread's running callbacks with `d` spent in StorPortStallExecution's sleep.
pub(crate) fn stalled(d: Duration) {
    THIS_THREAD.with(|t| {
        if let Some(c) = t.borrow().as_ref() {
            c.stalled_ns
                .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        }
    });
}

/// Excuses this thread's running callbacks from the CPU time of one spin-lock wait; `wait` runs
/// the wait. Only the contended path calls it, and it reads the clock only while the monitor
/// charges one of this thread's callbacks.
pub(crate) fn lock_wait(wait: impl FnOnce()) {
    let clock = THIS_THREAD.with(|t| t.borrow().clone());
    let Some(clock) = clock else {
        wait();
        return;
    };
    if !clock.sampled.load(Ordering::Relaxed) {
        wait();
        if clock.sampled.load(Ordering::Relaxed) {
            // The monitor began charging during the wait: the charge starts after it instead.
            if let Some(now) = clock.now() {
                let mut running = clock.running.lock().unwrap_or_else(|e| e.into_inner());
                for base in running.iter_mut().filter_map(|r| r.base.as_mut()) {
                    *base = Base::now(&clock, now);
                }
            }
        }
        return;
    }
    let before = clock.now();
    wait();
    if let (Some(b), Some(a)) = (before, clock.now()) {
        clock
            .lock_wait_ns
            .fetch_add(a.saturating_sub(b).as_nanos() as u64, Ordering::Relaxed);
    }
}

/// The violation for a callback charged `charged` against `budget`.
pub(crate) fn violation_params(charged: Duration, budget: Duration) -> [u64; 3] {
    [0, charged.as_micros() as u64, budget.as_micros() as u64]
}

fn start_monitor() {
    std::thread::Builder::new()
        .name("storport-sim watchdog".into())
        .spawn(monitor)
        .expect("the watchdog's monitor thread starts");
}

fn monitor() {
    loop {
        std::thread::sleep(POLL);
        let threads: Vec<Arc<ThreadClock>> = {
            let mut all = THREADS.lock().unwrap_or_else(|e| e.into_inner());
            all.retain(|w| w.strong_count() > 0);
            all.iter().filter_map(Weak::upgrade).collect()
        };
        for t in threads {
            // The monitor must survive whatever it meets: a dead monitor turns every hang back
            // into a hung test.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&t))).is_err() {
                say(format_args!(
                    "storport-sim: the watchdog's check panicked; it goes on"
                ));
            }
        }
    }
}

/// Looks at one thread's running callbacks: reports the first one over budget, ends the process
/// for one that is hung.
fn check(t: &ThreadClock) {
    let Some(now) = t.now() else { return };
    let mut running = t.running.lock().unwrap_or_else(|e| e.into_inner());
    let cpu = t.cpu.load(Ordering::Relaxed);
    for r in running.iter_mut() {
        let Some(base) = r.base else {
            r.base = Some(Base::now(t, now));
            t.sampled.store(true, Ordering::Relaxed);
            continue;
        };
        let charged = base.charged(t, now);
        let wall = base.wall.elapsed();
        if let Some(budget) = r.limits.budget
            && charged > budget
            && !r.reported
        {
            r.reported = true;
            report(r, cpu, charged, budget, false);
        }
        let over_margin = r
            .limits
            .budget
            .is_some_and(|b| charged > b.saturating_add(r.limits.hang_margin));
        if over_margin || wall > r.limits.hang_wall {
            hang(r, cpu, charged, wall);
        }
    }
}

fn report(r: &Running, cpu: u32, charged: Duration, budget: Duration, hung: bool) {
    let Some(a) = crate::adapter::lookup_serial(r.adapter) else {
        return;
    };
    let reporter = &a.port.reporter;
    if !reporter.enabled(Rule::Watchdog) && !hung {
        return;
    }
    let v = watchdog_violation(r, cpu, charged, budget, hung);
    // Not `Reporter::push`: with `panic_on_violation` it panics, and a panic here would end the
    // monitor, not the callback's thread.
    say(format_args!("storport-sim: {v}"));
    reporter
        .violations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(v);
    if reporter.panic && !hung {
        stop("panic_on_violation is set, and the callback runs on another thread");
    }
}

fn watchdog_violation(
    r: &Running,
    cpu: u32,
    charged: Duration,
    budget: Duration,
    hung: bool,
) -> Violation {
    let (code, _) = Rule::Watchdog.code();
    let params = violation_params(charged, budget);
    let message = if hung {
        format!(
            "{} has not returned after {:?} of CPU ({:?} wall-clock; budget {:?}): the machine is hung",
            r.callback.name(),
            charged,
            r.base.map(|b| b.wall.elapsed()).unwrap_or_default(),
            budget
        )
    } else {
        format!(
            "{} has run {:?} of CPU and is still running (budget {:?})",
            r.callback.name(),
            charged,
            budget
        )
    };
    Violation {
        rule: Rule::Watchdog,
        code,
        params: [params[0], params[1], params[2], 0],
        adapter: Some(r.adapter),
        callback: r.callback.name(),
        cpu,
        irql: r.irql,
        locks_held: Vec::new(),
        lock_history: vec!["(reported by the watchdog's monitor while the callback ran)".into()],
        message,
    }
}

fn hang(r: &Running, cpu: u32, charged: Duration, wall: Duration) -> ! {
    let budget = r.limits.budget.unwrap_or(r.limits.hang_wall);
    let why = if wall > r.limits.hang_wall {
        format!(
            "over the {:?} wall-clock limit for any callback",
            r.limits.hang_wall
        )
    } else {
        format!("{:?} of CPU past its budget", r.limits.hang_margin)
    };
    say(format_args!(
        "\nstorport-sim: *** the watchdog stops the machine: {} is still running, {why}",
        r.callback.name()
    ));
    report(r, cpu, charged, budget, true);
    stop("a callback never returned")
}

/// Ends the process as a bug check ends a machine: no unwinding, since the offending callback
/// runs on another thread and never returns.
fn stop(why: &str) -> ! {
    let context = CONTEXT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(line) = context {
        say(format_args!("storport-sim: {line}"));
    }
    say(format_args!(
        "storport-sim: process ended by the watchdog (exit status {HANG_EXIT_CODE}): {why}"
    ));
    std::process::exit(HANG_EXIT_CODE)
}

/// Writes a line to stderr, ignoring errors: `eprintln!` panics when stderr is a closed pipe,
/// and the monitor must outlive whoever reads its reports.
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// What the watchdog adds when it ends the process (e.g. the command that replays the run).
static CONTEXT: Mutex<Option<String>> = Mutex::new(None);

/// Sets (or clears) the line the watchdog prints when it ends the process.
pub fn set_context(line: Option<String>) {
    *CONTEXT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = line;
}
