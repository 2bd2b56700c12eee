//! The adapter's timer CPU: HwStorTimer (RequestTimerCall), SRB_STATUS_BUSY retries,
//! StorPortPause timeouts, SRB timeouts and the checks after a bus reset.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::abi::DevExtVoidFn;
use crate::adapter::{AdapterInner, gate};
use crate::cpu::{self, Callback};
use crate::request::Record;
use crate::rules::Rule;

#[derive(Default)]
struct State {
    hw_timer: Option<(Instant, DevExtVoidFn)>,
    retries: Vec<(Instant, Box<Record>)>,
    resume_at: Option<Instant>,
    busy_clear_at: Option<Instant>,
    reset_checks: Vec<(Instant, u64)>,
}

#[derive(Default)]
pub(crate) struct TimerShared {
    state: Mutex<State>,
    cv: Condvar,
}

const SCAN: Duration = Duration::from_millis(100);

impl TimerShared {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        crate::sched::notify(self as *const Self as usize);
        self.cv.notify_all();
        r
    }

    pub fn wake(&self) {
        crate::sched::notify(self as *const Self as usize);
        self.cv.notify_all();
    }

    pub fn set_hw_timer(&self, at: Option<(Instant, DevExtVoidFn)>) {
        self.with(|s| s.hw_timer = at);
    }

    pub fn cancel_hw_timer(&self) {
        self.set_hw_timer(None);
    }

    pub fn retry(&self, at: Instant, r: Box<Record>) {
        self.with(|s| s.retries.push((at, r)));
    }

    pub fn resume_at(&self, at: Option<Instant>) {
        self.with(|s| s.resume_at = at);
    }

    pub fn busy_clear_at(&self, at: Option<Instant>) {
        self.with(|s| s.busy_clear_at = at);
    }

    pub fn reset_check(&self, at: Instant, epoch: u64) {
        self.with(|s| s.reset_checks.push((at, epoch)));
    }

    /// Takes a due HwStorTimer call (dump-mode polling runs it inline).
    pub fn take_due_hw_timer(&self) -> Option<DevExtVoidFn> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.hw_timer {
            Some((at, f)) if at <= crate::sched::now() => {
                s.hw_timer = None;
                Some(f)
            }
            _ => None,
        }
    }
}

/// Runs HwStorTimer with Storport's locks.
pub(crate) fn call_hw_timer(a: &AdapterInner, f: DevExtVoidFn) {
    let devext = a.devext_ptr();
    let (lvl, locks) = a.startio_context();
    // SAFETY: `f` is the routine the miniport passed to RequestTimerCall.
    cpu::invoke(a, Callback::Timer, lvl, locks, || unsafe { f(devext) });
    a.happened(&a.activity.timer_calls);
}

pub(crate) fn run(a: Arc<AdapterInner>) {
    cpu::set_cpu(0);
    let mut next_scan = crate::sched::now() + SCAN;
    loop {
        if a.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let now = crate::sched::now();
        let (hw, retries, resume, busy, checks) = {
            let mut s = a.timer.state.lock().unwrap_or_else(|e| e.into_inner());
            let mut wake = next_scan;
            if let Some((t, _)) = s.hw_timer {
                wake = wake.min(t);
            }
            for (t, _) in &s.retries {
                wake = wake.min(*t);
            }
            for t in s.resume_at.iter().chain(s.busy_clear_at.iter()) {
                wake = wake.min(*t);
            }
            for (t, _) in &s.reset_checks {
                wake = wake.min(*t);
            }
            if wake > now {
                if crate::sched::active() {
                    drop(s);
                    crate::sched::wait_on(&a.timer as *const TimerShared as usize, Some(wake));
                } else {
                    let _ = a.timer.cv.wait_timeout(s, wake - now);
                }
                continue;
            }
            let hw = match s.hw_timer {
                Some((t, f)) if t <= now => {
                    s.hw_timer = None;
                    Some(f)
                }
                _ => None,
            };
            let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut s.retries)
                .into_iter()
                .partition(|(t, _)| *t <= now);
            s.retries = keep;
            let resume = s.resume_at.is_some_and(|t| t <= now);
            if resume {
                s.resume_at = None;
            }
            let busy = s.busy_clear_at.is_some_and(|t| t <= now);
            if busy {
                s.busy_clear_at = None;
            }
            let (checks, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut s.reset_checks)
                .into_iter()
                .partition(|(t, _)| *t <= now);
            s.reset_checks = keep;
            (hw, due, resume, busy, checks)
        };
        if let Some(f) = hw
            && a.interrupts_enabled.load(Ordering::SeqCst)
        {
            call_hw_timer(&a, f);
        }
        for (_, r) in retries {
            crate::request::dispatch(&a, r);
        }
        if resume {
            a.open(gate::PAUSED);
        }
        if busy {
            a.busy_remaining.store(0, Ordering::SeqCst);
            a.open(gate::BUSY);
        }
        for (_, epoch) in checks {
            for (srb, id) in a.requests.still_outstanding(epoch) {
                a.report(
                    Rule::NotCompletedAfterReset,
                    [srb as u64, id, 0],
                    format!("request {id} (SRB {srb:#x}) not completed after HwStorResetBus"),
                );
            }
        }
        if crate::sched::now() >= next_scan {
            next_scan = crate::sched::now() + SCAN;
            let expired = a.requests.expired(crate::sched::now());
            for _ in &expired {
                a.happened(&a.activity.timeouts);
            }
            if !expired.is_empty() {
                if a.port.options.reset_on_timeout {
                    a.log(format!(
                        "{} request(s) timed out: reset{}",
                        expired.len(),
                        if a.port.options.multi_tier_reset {
                            " (multi-tier)"
                        } else {
                            ": HwStorResetBus"
                        }
                    ));
                    a.escalate(expired.iter().map(|&(_, id)| id).collect());
                } else {
                    for (srb, id) in expired {
                        a.report(
                            Rule::NotCompletedInTime,
                            [srb as u64, id, 0],
                            format!("request {id} (SRB {srb:#x}) not completed within its timeout"),
                        );
                    }
                }
            }
        }
    }
}
