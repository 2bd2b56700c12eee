//! The DPC watchdog (bug check 0x133): it charges a callback with CPU time, not wall-clock time,
//! and it judges the callback while it runs, so that a hang ends the test instead of hanging it.
//!
//! - a DPC that burns 200 ms of CPU is reported while it still runs (it does not return until
//!   the test has seen the report);
//! - a DPC that stays on its CPU for 250 ms but is descheduled for most of it (pinned to one host
//!   core with CPU hogs beside it) is not reported;
//! - a DPC that never returns is reported and its process ends with `HANG_EXIT_CODE` (run in a
//!   child process, since a hang stops the whole machine).

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use storport_sim::*;

/// How long a test waits for something the simulator must do; its expiry is a failure.
const DEADLINE: Duration = Duration::from_secs(60);

/// Waits until `cond` holds; fails, saying `what` did not happen, at the deadline.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            Instant::now() < end,
            "{what} did not happen within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn ext(a: &Adapter) -> &Ext {
    // SAFETY: the test miniport's device extension is an `Ext`, alive as long as the adapter.
    unsafe { &*(a.device_extension() as *const Ext) }
}

fn watchdog_reports(p: &Port) -> Vec<Violation> {
    p.violations()
        .into_iter()
        .filter(|v| v.rule == Rule::Watchdog)
        .collect()
}

#[test]
fn a_dpc_burning_200_ms_of_cpu_is_reported_while_it_runs() {
    let p = port(PortOptions::default());
    let budget = p.options().dpc_budget;
    let (a, _dev) = start(&p, bad::DPC_BURN, 2);
    // The DPC completes the read, then burns; it returns only after the report was seen (and
    // Storport hands the completion to its requester after the DPC returns).
    let h = a.submit(Request::data_in(&READ10, 4096));
    wait_until("a 0x133 report for the burning DPC", || {
        !watchdog_reports(&p).is_empty()
    });
    ext(&a).release.store(true, Ordering::SeqCst);
    wait_until("the burning DPC's return", || {
        ext(&a).dpc_cpu_ns.load(Ordering::SeqCst) != 0
    });
    let burnt = Duration::from_nanos(ext(&a).dpc_cpu_ns.load(Ordering::SeqCst));
    assert!(h.wait().is_success());
    drop(a);
    let v = watchdog_reports(&p);
    assert_eq!(v.len(), 1, "one report per callback: {v:#?}");
    let v = &v[0];
    assert_eq!((v.code, v.callback), (0x133, "HwStorDpcRoutine"), "{v}");
    assert!(v.message.contains("still running"), "{v}");
    // DPC_WATCHDOG_VIOLATION's parameters: 0 (one DPC over its allotment), the time charged and
    // the allotment, here in microseconds.
    assert_eq!(v.params[0], 0, "{v}");
    assert!(v.params[1] > budget.as_micros() as u64, "{v}");
    assert_eq!(v.params[2], budget.as_micros() as u64, "{v}");
    assert!(
        burnt >= Duration::from_millis(200),
        "the DPC burnt {burnt:?}"
    );
}

/// Threads that keep host core 0 busy until dropped.
struct CpuHogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHogs {
    fn on_core0(n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    pin_to_core0();
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn a_descheduled_dpc_is_not_reported() {
    let p = port(PortOptions::default());
    let budget = p.options().dpc_budget;
    let (a, _dev) = start(&p, bad::DPC_DESCHEDULED, 2);
    let hogs = CpuHogs::on_core0(3);
    assert!(read(&a).is_success());
    wait_until("the descheduled DPC's return", || {
        ext(&a).dpc_wall_ns.load(Ordering::SeqCst) != 0
    });
    drop(hogs);
    let wall = Duration::from_nanos(ext(&a).dpc_wall_ns.load(Ordering::SeqCst));
    let cpu = Duration::from_nanos(ext(&a).dpc_cpu_ns.load(Ordering::SeqCst));
    drop(a);
    // The scenario happened: on its CPU for longer than the budget, running for less.
    assert!(wall > budget * 2, "the DPC ran {wall:?} of wall-clock time");
    assert!(cpu < budget / 2, "the DPC used {cpu:?} of CPU");
    let v = watchdog_reports(&p);
    assert!(v.is_empty(), "a descheduled DPC was charged: {v:#?}");
}

/// The environment variable that makes `hung_dpc_child` run its scenario.
const CHILD: &str = "STORPORT_SIM_WATCHDOG_CHILD";

#[test]
#[ignore = "run by a_dpc_that_never_returns_is_reported_and_the_process_ends, in a child process"]
fn hung_dpc_child() {
    if std::env::var_os(CHILD).is_none() {
        eprintln!("{CHILD} is not set: this scenario hangs its process and is run as a child");
        return;
    }
    let p = port(PortOptions::default());
    let (a, _dev) = start(&p, bad::DPC_HANG, 2);
    // The read completes before the DPC starts spinning; the next one waits behind the DPC.
    let first = read(&a);
    let second = a.submit(storport_sim::Request::data_in(&READ10, 4096));
    let _ = second.wait_timeout(Duration::from_secs(600));
    eprintln!("the simulation went on after a DPC that never returns: {first:?}");
    std::process::exit(1);
}

#[test]
fn a_dpc_that_never_returns_is_reported_and_the_process_ends() {
    let mut child = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([
            "--ignored",
            "--exact",
            "hung_dpc_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the child test starts");
    let mut stderr = child.stderr.take().expect("the child's stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    // Deadline for the whole child: budget 100 ms, hang margin 1 s of CPU, plus start-up, on a
    // machine that may be very busy.
    let end = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for the child") {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the watchdog did not end a DPC that never returns: the child still ran after 180 s\n{}",
                reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = reader.join().expect("the child's stderr");
    assert_eq!(
        status.code(),
        Some(HANG_EXIT_CODE),
        "the child should end with the watchdog's exit status; stderr:\n{err}"
    );
    assert!(err.contains("STOP 0x133"), "{err}");
    assert!(err.contains("HwStorDpcRoutine"), "{err}");
    assert!(
        err.contains("still running"),
        "the budget report comes first:\n{err}"
    );
    assert!(err.contains("has not returned"), "then the hang:\n{err}");
}
