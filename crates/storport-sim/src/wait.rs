//! Waiting for something to happen in the simulation, not for time to pass.
//!
//! A test that sleeps "long enough" for a DPC to run or a timeout to fire fails on a machine
//! busy enough to make it not long enough. A [`Signal`] is what the simulation notifies when
//! something a test may wait for happens (a callback returned, a request completed, a violation
//! was reported, a line was logged, a reset or a timeout); [`Signal::wait_until`] re-checks the
//! test's condition at each notification and fails, with a message naming what did not happen,
//! only after a deadline generous enough ([`PATIENCE`]) that only a real hang reaches it.
//!
//! Notifying costs a fence and a load while nobody waits, so it sits on the I/O path.

use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long tests wait for an event before calling it lost: tens of seconds, so that only
/// something that will never happen, not a loaded machine, reaches it.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Something threads can wait on until a condition over the simulation's state holds.
///
/// # Invariants
///
/// Every change a waiter's condition may depend on is followed by [`notify`](Self::notify) (by
/// whoever owns that state), so a waiter that found the condition false is woken after the next
/// change.
#[derive(Default)]
pub struct Signal {
    /// Threads inside `wait_*`; while 0, `notify` takes no lock.
    waiters: AtomicUsize,
    /// Bumped (under its lock) by each notification seen by a waiter.
    generation: Mutex<u64>,
    cv: Condvar,
}

/// Removes a waiter on every exit path (also when its condition panics).
struct Registered<'a>(&'a AtomicUsize);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Signal {
    /// A signal nobody waits on yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn generation(&self) -> MutexGuard<'_, u64> {
        self.generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Something happened: wakes every waiter to check its condition again. Call it after the
    /// state change.
    pub fn notify(&self) {
        crate::sched::changed();
        // Pairs with the fence in `wait_for`: either this load sees the waiter registered, or
        // the waiter's first check sees the state change made before this fence.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) == 0 {
            return;
        }
        {
            let mut g = self.generation();
            *g = g.wrapping_add(1);
        }
        self.cv.notify_all();
    }

    /// Waits until `check` answers `Some`, checking at once and after every notification, at
    /// most `timeout`; the error says that `what` did not happen within it.
    pub fn wait_for<T>(
        &self,
        what: impl Display,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> Result<T, String> {
        if crate::sched::active() {
            // Deterministic mode: the scheduler runs the others until something changed, in
            // virtual time.
            let start = crate::sched::now();
            loop {
                if let Some(t) = check() {
                    return Ok(t);
                }
                let waited = crate::sched::now().saturating_duration_since(start);
                if waited >= timeout {
                    return Err(format!(
                        "waited {waited:.1?} (virtual) for {what}, and it did not happen"
                    ));
                }
                crate::sched::wait(Some(start + timeout));
            }
        }
        let start = Instant::now();
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let _registered = Registered(&self.waiters);
        fence(Ordering::SeqCst);
        loop {
            let seen = *self.generation();
            if let Some(t) = check() {
                return Ok(t);
            }
            let g = self.generation();
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(format!(
                    "waited {waited:.1?} for {what}, and it did not happen"
                ));
            }
            if *g != seen {
                continue;
            }
            // A spurious wake-up or the deadline only costs one more check.
            drop(
                self.cv
                    .wait_timeout(g, timeout - waited)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
    }

    /// [`wait_for`](Self::wait_for) with a condition that is true or false.
    pub fn wait_until(
        &self,
        what: impl Display,
        timeout: Duration,
        mut condition: impl FnMut() -> bool,
    ) -> Result<(), String> {
        self.wait_for(what, timeout, || condition().then_some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_notification_after_the_change_wakes_the_waiter() {
        let signal = Arc::new(Signal::new());
        let value = Arc::new(AtomicU64::new(0));
        let (s, v) = (signal.clone(), value.clone());
        let setter = std::thread::spawn(move || {
            for i in 1..=1000 {
                v.store(i, Ordering::Relaxed);
                s.notify();
            }
        });
        let got = signal.wait_for("the value to reach 1000", PATIENCE, || {
            (value.load(Ordering::Relaxed) == 1000).then_some(1000)
        });
        setter.join().unwrap();
        assert_eq!(got, Ok(1000));
        assert_eq!(signal.waiters.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_condition_that_never_holds_fails_naming_it() {
        let signal = Signal::new();
        let err = signal
            .wait_until("nothing at all", Duration::from_millis(1), || false)
            .unwrap_err();
        assert!(err.contains("for nothing at all"), "{err}");
        assert_eq!(signal.waiters.load(Ordering::Relaxed), 0);
    }
}
