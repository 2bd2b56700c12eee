//! Deterministic mode: one seeded scheduler steps every simulated thread over virtual time.
//!
//! In the threaded mode (the default) the simulated CPUs, the device's queue workers, the timer
//! and the workload are host threads that the host schedules as it likes: a failure seen once may
//! never come back. In deterministic mode the same host threads exist, but only one of them runs
//! at a time: it holds the run token. At each *switch point* (a Storport call, a spin-lock
//! acquisition, a register access, a device step, the start and end of a miniport callback) the
//! running thread asks the scheduler who runs next, and a seeded generator picks among the
//! threads that can run (itself included). A thread that waits for something (a parked DPC CPU,
//! an interrupt line with nothing pending, a queue worker with no doorbell, a spin lock held
//! elsewhere, a request's completion) gives the token up with [`wait`] and can be picked again
//! after any other thread made progress. Time is virtual: [`now`] is a clock that moves by a
//! fixed quantum per step and, when every thread waits on time (StallExecution, timers, SRB
//! timeouts, the slow-device fault), jumps to the earliest deadline. The same seed thus gives the
//! same run, switch for switch; the [`Report::digest`] (FNV-1a over every scheduling decision and
//! every event noted with [`note`]) shows it.
//!
//! Membership is per host thread: a thread joins the scheduler by being the one that called
//! [`run`] or by being spawned with [`spawn`] from a member. Threads of other tests in the same
//! process are not affected, and every function here is the plain host operation on them.
//!
//! Why not the `shuttle` crate: shuttle runs a test body as user-level tasks and needs every
//! thread, lock, condition variable and atomic of the code under test to be its own
//! (`shuttle::sync`, `shuttle::thread`), with no time at all. Here the code under test is the
//! driver's unmodified FFI code (or a loaded `vioblk.sys`) plus storport-sim's locks, which are
//! atomics the driver's trampolines reach through `extern "C"`, and the behaviour to explore is
//! driven by time (timers, SRB timeouts, resets, stalls). Keeping the host threads and
//! serialising them with a token keeps every line of the threaded mode and adds virtual time.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

/// Virtual time each step (switch point) costs: a simulated CPU is not infinitely fast.
const QUANTUM_NS: u64 = 1_000;

/// What wakes a waiting thread besides its deadline.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wake {
    /// Any step of another thread (it polls a condition over shared state).
    Progress,
    /// A [`notify`] of this key after the key's count was the second value.
    Key(usize, u64),
    /// Nothing (a sleep).
    Time,
}

/// The state of one member thread.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Can run (or is running).
    Runnable,
    /// Waits for any progress after `seen` (the epoch it last checked at), or for `deadline`.
    Waiting {
        seen: u64,
        deadline: Option<u64>,
        /// What wakes it besides the deadline.
        on: Wake,
    },
    /// Has returned.
    Finished,
}

struct Member {
    state: State,
    name: String,
    os: Option<ThreadId>,
    wake: Arc<Condvar>,
}

struct Inner {
    members: Vec<Member>,
    current: usize,
    /// Moves at every step and every [`changed`]: waiters re-check their condition after it.
    epoch: u64,
    /// Notifications per key (see [`wait_on`]).
    keys: std::collections::HashMap<usize, u64>,
    now_ns: u64,
    rng: u64,
    digest: u64,
    steps: u64,
    switches: u64,
    /// The next CPU number for a thread that has none (see `cpu::current_cpu`).
    next_cpu: u32,
    max_steps: u64,
    /// Why the run cannot go on (every thread waits with no deadline, or the step budget ran
    /// out): set once, and every member then runs freely to its end.
    failure: Option<String>,
}

/// A deterministic run's scheduler (shared by its member threads).
pub struct Scheduler {
    inner: Mutex<Inner>,
    base: Instant,
    /// Read without the lock by [`now`] callers.
    now_ns: AtomicU64,
}

thread_local! {
    static MEMBER: RefCell<Option<(Arc<Scheduler>, usize)>> = const { RefCell::new(None) };
}

/// What a deterministic run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// FNV-1a (64 bits) over the transcript: every scheduling decision and noted event.
    pub digest: u64,
    /// Switch points passed.
    pub steps: u64,
    /// Steps at which another thread was picked.
    pub switches: u64,
    /// Virtual time at the end.
    pub virtual_time: Duration,
    /// Threads that took part.
    pub threads: usize,
    /// Why the scheduler stopped stepping (deadlock, step budget), if it did.
    pub failure: Option<String>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Deterministic runs under way in this process: while 0 (the threaded mode), every function
/// here costs one relaxed load before doing the host operation.
static RUNS: AtomicUsize = AtomicUsize::new(0);

fn member() -> Option<(Arc<Scheduler>, usize)> {
    if RUNS.load(Ordering::Relaxed) == 0 {
        return None;
    }
    MEMBER.with(|m| m.borrow().clone())
}

/// Whether this thread runs under a deterministic scheduler.
pub fn active() -> bool {
    RUNS.load(Ordering::Relaxed) != 0 && MEMBER.with(|m| m.borrow().is_some())
}

/// Now: virtual time in deterministic mode, the host's clock otherwise.
pub fn now() -> Instant {
    match member() {
        Some((s, _)) => s.base + Duration::from_nanos(s.now_ns.load(Ordering::Acquire)),
        None => Instant::now(),
    }
}

/// Runs `body` on this thread as the first member of a new scheduler seeded with `seed`, and
/// reports what happened once `body` returned and every thread it spawned has finished.
/// `max_steps` bounds the run (a livelock ends as a failure, not a hang).
pub fn run<R>(seed: u64, max_steps: u64, body: impl FnOnce() -> R) -> (R, Report) {
    let sched = Arc::new(Scheduler {
        inner: Mutex::new(Inner {
            members: vec![Member {
                state: State::Runnable,
                name: "main".into(),
                os: Some(std::thread::current().id()),
                wake: Arc::new(Condvar::new()),
            }],
            current: 0,
            epoch: 0,
            keys: std::collections::HashMap::new(),
            now_ns: 0,
            rng: seed,
            digest: fnv(FNV_OFFSET, &seed.to_le_bytes()),
            steps: 0,
            switches: 0,
            next_cpu: 0,
            max_steps,
            failure: None,
        }),
        base: Instant::now(),
        now_ns: AtomicU64::new(0),
    });
    RUNS.fetch_add(1, Ordering::SeqCst);
    let previous = MEMBER.with(|m| m.borrow_mut().replace((sched.clone(), 0)));
    assert!(previous.is_none(), "sched::run inside a deterministic run");
    crate::cpu::forget_cpu();
    let r = body();
    // Let the threads the body left running (the device's workers, simulated CPUs shutting
    // down) reach their end under the scheduler, so that the transcript covers them too.
    loop {
        let done = {
            let g = sched.lock();
            g.failure.is_some()
                || g.members
                    .iter()
                    .enumerate()
                    .all(|(i, m)| i == 0 || m.state == State::Finished)
        };
        if done {
            break;
        }
        wait(None);
    }
    let report = {
        let mut g = sched.lock();
        g.members[0].state = State::Finished;
        let report = Report {
            digest: g.digest,
            steps: g.steps,
            switches: g.switches,
            virtual_time: Duration::from_nanos(g.now_ns),
            threads: g.members.len(),
            failure: g.failure.clone(),
        };
        sched.pick(&mut g, 0);
        report
    };
    MEMBER.with(|m| m.borrow_mut().take());
    crate::cpu::forget_cpu();
    RUNS.fetch_sub(1, Ordering::SeqCst);
    (r, report)
}

impl Scheduler {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether member `i` could run now.
    fn eligible(g: &Inner, i: usize) -> bool {
        match g.members[i].state {
            State::Runnable => true,
            State::Waiting { seen, deadline, on } => {
                deadline.is_some_and(|d| d <= g.now_ns)
                    || match on {
                        Wake::Progress => seen < g.epoch,
                        Wake::Key(k, n) => g.keys.get(&k).copied().unwrap_or(0) > n,
                        Wake::Time => false,
                    }
            }
            State::Finished => false,
        }
    }

    /// Picks who runs next (the caller `me` included if it can) and hands it the token.
    fn pick(&self, g: &mut Inner, me: usize) {
        if g.failure.is_some() {
            for m in &g.members {
                m.wake.notify_all();
            }
            return;
        }
        loop {
            let n = g.members.len();
            let candidates = (0..n).filter(|&i| Self::eligible(g, i)).count();
            if candidates > 0 {
                let r = splitmix(&mut g.rng);
                // The running thread goes on half of the time (when it can): a switch costs a
                // host context switch, and the interleavings that break code need few of them.
                let stay = g.members[me].state == State::Runnable && r & 1 == 0;
                let k = ((r >> 1) % candidates as u64) as usize;
                let chosen = if stay {
                    me
                } else {
                    (0..n)
                        .filter(|&i| Self::eligible(g, i))
                        .nth(k)
                        .unwrap_or(me)
                };
                if chosen != me {
                    g.switches += 1;
                }
                g.digest = fnv(g.digest, &(chosen as u32).to_le_bytes());
                g.current = chosen;
                if let State::Waiting { .. } = g.members[chosen].state {
                    g.members[chosen].state = State::Runnable;
                }
                g.members[chosen].wake.notify_all();
                return;
            }
            // Nobody can run: time passes to the earliest deadline.
            let next = g
                .members
                .iter()
                .filter_map(|m| match m.state {
                    State::Waiting { deadline, .. } => deadline,
                    _ => None,
                })
                .min();
            match next {
                Some(t) => {
                    g.now_ns = g.now_ns.max(t);
                    self.now_ns.store(g.now_ns, Ordering::Release);
                    g.digest = fnv(g.digest, b"tick");
                }
                None => {
                    let waiting: Vec<&str> = g
                        .members
                        .iter()
                        .filter(|m| m.state != State::Finished)
                        .map(|m| m.name.as_str())
                        .collect();
                    g.failure = Some(format!(
                        "deadlock: every simulated thread waits for something no other thread \
                         will do ({})",
                        waiting.join(", ")
                    ));
                    for m in &g.members {
                        m.wake.notify_all();
                    }
                    return;
                }
            }
        }
    }

    /// Blocks member `me` until it holds the token (or the run failed and everyone runs free).
    fn await_token<'a>(&'a self, mut g: MutexGuard<'a, Inner>, me: usize) -> MutexGuard<'a, Inner> {
        let wake = g.members[me].wake.clone();
        while g.current != me && g.failure.is_none() {
            g = wake.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
        g
    }

    fn step(&self, g: &mut Inner, what: &str) {
        g.steps += 1;
        g.epoch += 1;
        g.now_ns += QUANTUM_NS;
        self.now_ns.store(g.now_ns, Ordering::Release);
        g.digest = fnv(g.digest, what.as_bytes());
        if g.steps > g.max_steps && g.failure.is_none() {
            g.failure = Some(format!(
                "no end after {} steps ({:?} of virtual time): a livelock",
                g.max_steps,
                Duration::from_nanos(g.now_ns)
            ));
        }
    }
}

/// A switch point: notes `what` in the transcript, lets the scheduler pick who runs next, and
/// returns when this thread holds the token again.
pub fn switch(what: &str) {
    let Some((s, me)) = member() else { return };
    let mut g = s.lock();
    s.step(&mut g, what);
    s.pick(&mut g, me);
    drop(s.await_token(g, me));
}

/// Notes an event (a Storport call, a completion, an injected fault) in the transcript without
/// giving up the token.
pub fn note(what: &str, value: u64) {
    let Some((s, _)) = member() else { return };
    let mut g = s.lock();
    g.digest = fnv(g.digest, what.as_bytes());
    g.digest = fnv(g.digest, &value.to_le_bytes());
}

/// Something a waiter may be waiting for changed (a notification without a switch point).
pub fn changed() {
    let Some((s, _)) = member() else { return };
    s.lock().epoch += 1;
}

/// Gives the token up until another thread made progress or `deadline` passed; the caller then
/// checks its condition again. Outside a deterministic run: a short host sleep (or none past
/// the deadline), so that callers can share one loop.
pub fn wait(deadline: Option<Instant>) {
    wait_as(deadline, Wake::Progress);
}

/// Gives the token up until [`notify`]`(key)` or `deadline`; outside a deterministic run, a
/// short host sleep. `key` names what the caller waits for (the address of a queue, a line).
pub fn wait_on(key: usize, deadline: Option<Instant>) {
    let n = member().map_or(0, |(s, _)| s.lock().keys.get(&key).copied().unwrap_or(0));
    wait_as(deadline, Wake::Key(key, n));
}

/// Wakes the threads in [`wait_on`]`(key)` (and counts as a change for every waiter).
pub fn notify(key: usize) {
    let Some((s, _)) = member() else { return };
    let mut g = s.lock();
    g.epoch += 1;
    *g.keys.entry(key).or_insert(0) += 1;
}

/// Sleeps until `deadline`: in deterministic mode only time wakes it (virtual time jumps there
/// when every thread waits).
pub fn sleep_until(deadline: Instant) {
    if !active() {
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
        return;
    }
    while now() < deadline {
        wait_as(Some(deadline), Wake::Time);
    }
}

/// [`sleep_until`] `d` from now.
pub fn sleep(d: Duration) {
    sleep_until(now() + d);
}

fn wait_as(deadline: Option<Instant>, on: Wake) {
    let Some((s, me)) = member() else {
        let pause = Duration::from_micros(50);
        let pause = deadline.map_or(pause, |d| {
            d.saturating_duration_since(Instant::now()).min(pause)
        });
        std::thread::sleep(pause);
        return;
    };
    let mut g = s.lock();
    if g.failure.is_some() {
        drop(g);
        std::thread::sleep(Duration::from_micros(50));
        return;
    }
    let deadline = deadline.map(|d| d.saturating_duration_since(s.base).as_nanos() as u64);
    g.members[me].state = State::Waiting {
        seen: g.epoch,
        deadline,
        on,
    };
    s.pick(&mut g, me);
    drop(s.await_token(g, me));
}

/// Spawns a host thread; from a member of a deterministic run, the new thread is a member too
/// and first runs when the scheduler picks it.
pub fn spawn<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    let Some((s, _)) = member() else {
        return std::thread::Builder::new().name(name).spawn(f);
    };
    let id = s.enlist(&name);
    let child = s.clone();
    let spawned = std::thread::Builder::new()
        .name(name)
        .spawn(move || child.clone().body(id, f));
    s.enlisted(id, spawned.as_ref().ok().map(|h| h.thread().id()));
    spawned
}

/// Whether the thread behind `handle` has finished (as the scheduler saw it, in deterministic
/// mode, so that the answer does not depend on the host).
pub fn is_finished<T>(handle: &JoinHandle<T>) -> bool {
    match member() {
        Some((s, _)) => s.finished(handle.thread().id()),
        None => handle.is_finished(),
    }
}

/// Joins a thread: in deterministic mode, waits (giving the token up) until the scheduler saw it
/// finish, then joins the host thread, which does nothing more under the scheduler.
pub fn join<T>(handle: JoinHandle<T>) -> std::thread::Result<T> {
    if active() {
        while !is_finished(&handle) {
            wait(None);
        }
    }
    handle.join()
}

/// The failure of the current deterministic run, if any (deadlock or livelock).
pub fn failure() -> Option<String> {
    let (s, _) = member()?;
    s.lock().failure.clone()
}

/// Receives from `rx`: in deterministic mode by giving the token up until a message is there
/// (the sender is another member thread), otherwise [`Receiver::recv`](std::sync::mpsc::Receiver::recv).
/// Every send must be followed by [`notify`]`(key_of(rx))`.
pub fn recv<T>(rx: &std::sync::mpsc::Receiver<T>) -> Result<T, std::sync::mpsc::RecvError> {
    if !active() {
        return rx.recv();
    }
    loop {
        match rx.try_recv() {
            Ok(t) => return Ok(t),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                return Err(std::sync::mpsc::RecvError);
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => wait_on(key_of(rx), None),
        }
    }
}

/// The key [`wait_on`] and [`notify`] name `value` by: its address.
pub fn key_of<T: ?Sized>(value: &T) -> usize {
    (value as *const T).cast::<u8>() as usize
}

/// [`spawn`] for a scoped thread.
pub fn spawn_scoped<'scope, 'env, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    name: String,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::io::Result<std::thread::ScopedJoinHandle<'scope, T>> {
    let Some((s, _)) = member() else {
        return std::thread::Builder::new()
            .name(name)
            .spawn_scoped(scope, f);
    };
    let id = s.enlist(&name);
    let child = s.clone();
    let spawned = std::thread::Builder::new()
        .name(name)
        .spawn_scoped(scope, move || child.clone().body(id, f));
    s.enlisted(id, spawned.as_ref().ok().map(|h| h.thread().id()));
    spawned
}

/// Joins a scoped thread (see [`join`]).
pub fn join_scoped<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> std::thread::Result<T> {
    if let Some((s, _)) = member() {
        let id = handle.thread().id();
        while !s.finished(id) {
            wait(None);
        }
    }
    handle.join()
}

impl Scheduler {
    /// Adds a member for a thread about to be spawned.
    fn enlist(&self, name: &str) -> usize {
        let mut g = self.lock();
        g.members.push(Member {
            state: State::Runnable,
            name: name.to_owned(),
            os: None,
            wake: Arc::new(Condvar::new()),
        });
        g.digest = fnv(g.digest, name.as_bytes());
        g.members.len() - 1
    }

    /// Records the host thread of member `id` (`None`: it could not be spawned).
    fn enlisted(&self, id: usize, os: Option<ThreadId>) {
        let mut g = self.lock();
        match os {
            Some(os) => g.members[id].os = Some(os),
            None => g.members[id].state = State::Finished,
        }
    }

    /// Runs `f` as member `id`: waits to be picked first, and hands the token on at the end.
    fn body<T>(self: Arc<Self>, id: usize, f: impl FnOnce() -> T) -> T {
        MEMBER.with(|m| *m.borrow_mut() = Some((self.clone(), id)));
        drop(self.await_token(self.lock(), id));
        let r = f();
        let mut g = self.lock();
        g.members[id].state = State::Finished;
        g.epoch += 1;
        if g.current == id {
            self.pick(&mut g, id);
        }
        drop(g);
        MEMBER.with(|m| m.borrow_mut().take());
        r
    }

    fn finished(&self, os: ThreadId) -> bool {
        let g = self.lock();
        g.members
            .iter()
            .find(|m| m.os == Some(os))
            .is_none_or(|m| m.state == State::Finished)
    }
}

/// The next CPU number of this deterministic run (`None` outside one).
pub(crate) fn next_cpu() -> Option<u32> {
    let (s, _) = member()?;
    let mut g = s.lock();
    let n = g.next_cpu;
    g.next_cpu = n.wrapping_add(1);
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Three threads that take turns at switch points and record who ran when.
    fn toy(seed: u64) -> (Vec<usize>, Report) {
        let order = Arc::new(Mutex::new(Vec::new()));
        let (_, report) = run(seed, 1_000_000, || {
            let handles: Vec<_> = (0..3)
                .map(|t| {
                    let order = order.clone();
                    spawn(format!("toy{t}"), move || {
                        for _ in 0..20 {
                            order.lock().unwrap().push(t);
                            switch("toy step");
                        }
                    })
                    .unwrap()
                })
                .collect();
            for h in handles {
                join(h).unwrap();
            }
        });
        let order = order.lock().unwrap().clone();
        (order, report)
    }

    #[test]
    fn the_same_seed_replays_the_same_interleaving() {
        let (a, ra) = toy(42);
        let (b, rb) = toy(42);
        assert_eq!(a, b);
        assert_eq!(ra, rb);
        assert_eq!(ra.failure, None);
        assert_eq!(a.len(), 60);
    }

    #[test]
    fn other_seeds_interleave_otherwise() {
        let (a, ra) = toy(1);
        let others: Vec<_> = (2..6).map(toy).collect();
        assert!(
            others.iter().all(|(o, _)| *o != a),
            "seed 1's order is not unique"
        );
        assert!(others.iter().all(|(_, r)| r.digest != ra.digest));
    }

    #[test]
    fn time_is_virtual_and_jumps_when_everyone_waits() {
        let (elapsed, report) = run(7, 1_000_000, || {
            let start = now();
            let sleeper = spawn("sleeper".into(), || sleep(Duration::from_secs(3600))).unwrap();
            sleep(Duration::from_secs(60));
            join(sleeper).unwrap();
            now() - start
        });
        assert!(elapsed >= Duration::from_secs(3600), "{elapsed:?}");
        assert!(report.virtual_time >= Duration::from_secs(3600));
        assert_eq!(report.failure, None);
    }

    #[test]
    fn a_notification_wakes_a_keyed_waiter() {
        let flag = Arc::new(AtomicBool::new(false));
        let (seen, report) = run(3, 1_000_000, || {
            let f = flag.clone();
            let waiter = spawn("waiter".into(), move || {
                while !f.load(Ordering::Acquire) {
                    wait_on(key_of(&*f), None);
                }
                true
            })
            .unwrap();
            switch("before");
            flag.store(true, Ordering::Release);
            notify(key_of(&*flag));
            join(waiter).unwrap()
        });
        assert!(seen);
        assert_eq!(report.failure, None);
    }

    #[test]
    fn threads_that_all_wait_for_nothing_are_a_deadlock() {
        let key = 0x1234;
        let (_, report) = run(5, 1_000_000, || {
            let stuck = spawn("stuck".into(), move || wait_on(key, None)).unwrap();
            // Nobody notifies `key`: the scheduler sees every thread waiting with no deadline.
            while !is_finished(&stuck) {
                wait(None);
                if failure().is_some() {
                    break;
                }
            }
            let _ = stuck.join();
        });
        let f = report.failure.expect("a deadlock");
        assert!(f.starts_with("deadlock:"), "{f}");
        assert!(f.contains("stuck"), "{f}");
    }

    #[test]
    fn a_run_that_never_ends_is_a_livelock_not_a_hang() {
        let (_, report) = run(9, 500, || {
            while failure().is_none() {
                switch("spin");
            }
        });
        let f = report.failure.expect("a livelock");
        assert!(f.contains("no end after 500 steps"), "{f}");
    }

    #[test]
    fn outside_a_run_everything_is_the_host_operation() {
        assert!(!active());
        switch("nothing");
        note("nothing", 0);
        notify(1);
        let before = Instant::now();
        assert!(now() >= before);
        let h = spawn("plain".into(), || 5).unwrap();
        assert_eq!(join(h).unwrap(), 5);
    }
}
