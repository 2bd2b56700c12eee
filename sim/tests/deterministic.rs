//! Deterministic mode (`storport_sim::sched`): the same seed replays a run exactly, and
//! thousands of seeded schedules of the real driver (I/O on several queues, every fault mode,
//! bus, LU and device resets, stop and restart while I/O runs) all pass.
//!
//! Each schedule is a small job (a few I/Os in flight on two threads) so that 10,000 of them run
//! in a few minutes; a failure names the seed and the command (or scenario) that replays it.

use storport_sim::{PortOptions, Request, function, sched};
use vioblk_sim::cli::{self, Command, RunArgs};
use vioblk_sim::device::DeviceConfig;
use vioblk_sim::driver::DriverBackend;
use vioblk_sim::stack::{Stack, StackOptions};
use vioblk_sim::workload::{self, Mix, Pattern, Stop, WorkloadOptions};

/// Schedules each of the four `schedules_*` tests runs: 10,000 in all (`VIOBLK_SCHEDULES`
/// overrides it, e.g. for a longer exploration).
fn schedules_per_test() -> u64 {
    std::env::var("VIOBLK_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_500)
}

/// A livelock bound for one small schedule (they take a few thousand steps).
const MAX_STEPS: u64 = 20_000_000;

fn run_args(line: &str) -> RunArgs {
    let argv: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    match cli::parse(&argv, &["driver"]) {
        Ok(Command::Run(r)) => r,
        other => panic!("{line}: {other:?}"),
    }
}

/// Runs `vioblk-sim run <line>` (which must say `--deterministic --seed N`) in this process:
/// the digest, or why it failed.
fn run_line(line: &str) -> Result<u64, String> {
    let r = run_args(line);
    assert!(r.deterministic, "{line}");
    let (report, _) = cli::job_report(&DriverBackend, "driver", &r).map_err(String::from)?;
    let det = report
        .deterministic
        .as_ref()
        .expect("a deterministic report");
    if let Some(f) = &det.failure {
        return Err(f.clone());
    }
    if !report.passed() {
        return Err(format!(
            "the job failed: {} errors, {} mismatches, violations {:?}, faults {:?}",
            report.result.counts.errors,
            report.result.verification.mismatches,
            report.violations,
            report.faults.as_ref().map(|f| f.to_text())
        ));
    }
    Ok(det.digest)
}

#[test]
fn the_same_seed_gives_the_same_digest_and_other_seeds_differ() {
    let line = |seed: u64| {
        format!("--deterministic --seed {seed} --ios 48 -t 2 -o 8 --fault chaos,seed=3,every=1")
    };
    let first = run_line(&line(11)).expect("seed 11");
    let mut others = std::collections::BTreeSet::new();
    for seed in 12..=19 {
        others.insert(run_line(&line(seed)).expect("seeds 12 to 19"));
    }
    // The same seed again, in the same process, after other runs: bit-identical.
    assert_eq!(run_line(&line(11)), Ok(first), "seed 11 replayed");
    // And every other seed took another path.
    assert_eq!(others.len(), 8, "distinct digests of seeds 12 to 19");
    assert!(!others.contains(&first), "seed 11's digest is its own");
}

#[test]
fn failed_ios_count_against_a_seed_only_when_no_fault_explains_them() {
    // A bad status byte fails the request (HARDWARE ERROR): explained, the seed passes.
    let r = run_args("--deterministic --seed 3 --ios 16 -o 4 --fault bad-status,at=2");
    let (report, _) = cli::job_report(&DriverBackend, "driver", &r).expect("job");
    assert_eq!(report.result.counts.errors, 1, "{}", report.to_text());
    assert!(report.passed(), "{}", report.to_text());
    // The planted race of sim/tests/explore_planted.rs is the case where nothing explains one.
}

#[test]
fn the_threaded_mode_has_no_digest() {
    // The negative of the test above: without --deterministic nothing claims to replay.
    let r = run_args("--seed 11 --ios 16 --no-progress");
    assert!(!r.deterministic);
    let (report, _) = cli::job_report(&DriverBackend, "driver", &r).expect("job");
    assert!(report.passed());
    assert_eq!(report.deterministic, None);
    assert!(!report.to_text().contains("digest"));
}

/// Runs `count` seeds from `first` of `line(seed)`, stopping at the first failure with the
/// command that replays it.
fn explore(count: u64, first: u64, line: impl Fn(u64) -> String) -> Result<u64, String> {
    for seed in first..first + count {
        let l = line(seed);
        if let Err(e) = run_line(&l) {
            return Err(format!(
                "seed {seed}: {e}\nreplay: vioblk-sim run {}",
                l.trim()
            ));
        }
    }
    Ok(count)
}

const INTERRUPTS: [&str; 3] = ["msix", "intx", "msi"];

/// I/O on four queues (one queue behind the interrupt lock for INTx and one MSI).
#[test]
fn schedules_io_on_several_queues() {
    let line = |seed: u64| {
        let interrupts = INTERRUPTS[(seed % 3) as usize];
        let extra = match seed % 4 {
            0 => "-w 50 --flush-every 2",
            1 => "--unmap-percent 20",
            2 => "-b 64K -w 60",
            _ => "-s --fua",
        };
        format!(
            "--deterministic --seed {seed} --queues 4 --interrupts {interrupts} --ios 8 -t 2 -o 4 \
             {extra}"
        )
    };
    let n = schedules_per_test();
    assert_eq!(explore(n, 1, line), Ok(n));
}

const FAULTS: [&str; 13] = [
    "bad-id",
    "duplicate-id",
    "len-too-long",
    "len-zero",
    "idx-jump",
    "bad-status",
    "lost",
    "needs-reset",
    "slow,ms=50",
    "reset-ignored",
    "reset-slow,ms=20",
    "removal",
    "capacity",
];

/// Every fault mode at a seed-chosen request, in the three interrupt modes.
#[test]
fn schedules_fault_modes() {
    let line = |seed: u64| {
        let fault = FAULTS[(seed % 13) as usize];
        let interrupts = INTERRUPTS[((seed / 13) % 3) as usize];
        let at = seed % 7 + 1;
        // reset-* and removal take no request number.
        let spec = if fault.starts_with("reset-") || fault == "removal" || fault == "capacity" {
            fault.to_owned()
        } else {
            format!("{fault},at={at}")
        };
        format!(
            "--deterministic --seed {seed} --interrupts {interrupts} --ios 8 -t 2 -o 4 \
             --fault {spec}"
        )
    };
    let n = schedules_per_test();
    assert_eq!(explore(n, 1, line), Ok(n));
}

/// Chaos (a random fault every millisecond of virtual time) and faults in sequence.
#[test]
fn schedules_chaos_and_fault_sequences() {
    let line = |seed: u64| {
        let interrupts = INTERRUPTS[(seed % 3) as usize];
        let faults = match seed % 3 {
            0 => format!("--fault chaos,seed={seed},every=1"),
            1 => "--fault reset-ignored --fault needs-reset,at=2 --fault capacity".to_owned(),
            _ => "--fault lost,at=2 --fault bad-id,at=1".to_owned(),
        };
        format!(
            "--deterministic --seed {seed} --interrupts {interrupts} --ios 12 -t 2 -o 4 {faults}"
        )
    };
    let n = schedules_per_test();
    assert_eq!(explore(n, 1, line), Ok(n));
}

/// What the port does to the adapter while a job runs.
#[derive(Clone, Copy, Debug)]
enum Lifecycle {
    /// HwStorResetBus.
    BusReset,
    /// SRB_FUNCTION_RESET_LOGICAL_UNIT.
    LuReset,
    /// SRB_FUNCTION_RESET_DEVICE.
    DeviceReset,
    /// PnP stop, then restart.
    StopRestart,
}

const LIFECYCLE: [Lifecycle; 4] = [
    Lifecycle::BusReset,
    Lifecycle::LuReset,
    Lifecycle::DeviceReset,
    Lifecycle::StopRestart,
];

/// One lifecycle schedule: a verified job on two threads while the port resets or stops and
/// restarts the adapter. The digest, or what went wrong.
fn lifecycle(seed: u64) -> Result<u64, String> {
    let what = LIFECYCLE[(seed % 4) as usize];
    let interrupts = (seed / 4) % 3;
    let (result, report) = sched::run(seed, MAX_STEPS, || -> Result<(), String> {
        let stack = Stack::start(StackOptions {
            device: DeviceConfig {
                num_queues: 2,
                ..DeviceConfig::default()
            },
            port: PortOptions {
                multi_tier_reset: true,
                ..PortOptions::default()
            },
            intx: interrupts == 1,
            max_messages: (interrupts == 2).then_some(1),
            ..StackOptions::default()
        })?;
        let geometry = vioblk_sim::class::start_disk(&stack).map_err(|e| format!("{e:?}"))?;
        let job = WorkloadOptions {
            threads: 2,
            outstanding: 4,
            io_size: 4096,
            pattern: Pattern::Random,
            mix: Mix {
                write_percent: 50,
                unmap_percent: 0,
            },
            stop: Stop::Ios(12),
            seed,
            progress: false,
            ..WorkloadOptions::default()
        };
        let outcome = std::thread::scope(|scope| {
            let running = sched::spawn_scoped(scope, "job".into(), || {
                workload::run(&stack, &geometry, &job)
            })
            .map_err(|e| e.to_string())?;
            let acted = match what {
                Lifecycle::BusReset => stack.adapter.reset_bus().then_some(()),
                Lifecycle::LuReset | Lifecycle::DeviceReset => {
                    let f = if matches!(what, Lifecycle::LuReset) {
                        function::RESET_LOGICAL_UNIT
                    } else {
                        function::RESET_DEVICE
                    };
                    let c = stack.adapter.execute(Request::function(f).timeout(40));
                    (c.srb_status & 0x3F == 1).then_some(())
                }
                Lifecycle::StopRestart => {
                    let stopped = stack.adapter.stop();
                    let restarted = stack.adapter.restart();
                    (stopped == Some(0) && restarted.is_ok()).then_some(())
                }
            };
            let result =
                sched::join_scoped(running).map_err(|_| "the job panicked".to_owned())??;
            acted.ok_or(format!("{what:?} did not succeed"))?;
            Ok::<_, String>(result)
        })?;
        let violations = stack.violations();
        if !violations.is_empty() {
            return Err(format!("violations: {violations:?}"));
        }
        if outcome.counts.errors > 0 || outcome.verification.mismatches > 0 {
            return Err(format!(
                "{} failed I/Os ({:?}), {} mismatches",
                outcome.counts.errors, outcome.failures, outcome.verification.mismatches
            ));
        }
        Ok(())
    });
    if let Some(f) = report.failure {
        return Err(f);
    }
    result.map(|()| report.digest)
}

/// Bus, LU and device resets and stop/restart while a verified job runs.
#[test]
fn schedules_resets_and_stop_restart() {
    for seed in 1..=schedules_per_test() {
        if let Err(e) = lifecycle(seed) {
            panic!(
                "seed {seed} ({:?}): {e}\nreplay: lifecycle({seed}) in sim/tests/deterministic.rs",
                LIFECYCLE[(seed % 4) as usize]
            );
        }
    }
}

#[test]
fn a_lifecycle_schedule_replays_bit_for_bit() {
    let a = lifecycle(7).expect("seed 7");
    let b = lifecycle(7).expect("seed 7 again");
    assert_eq!(a, b);
    assert_ne!(lifecycle(11).expect("seed 11"), a);
}

#[test]
fn explore_prints_the_replay_command_and_a_summary() {
    let argv: Vec<String> = "explore --seeds 3..5 --ios 8 -o 2 --fault bad-id"
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run_cli(&argv, &[("driver", &DriverBackend)], &mut out, &mut err);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{out}{}", String::from_utf8_lossy(&err));
    assert!(
        out.contains("explored seeds 3..5: 3 schedule(s) passed, 3 distinct digest(s)"),
        "{out}"
    );
}

#[test]
fn explore_and_deterministic_refuse_what_cannot_be_replayed() {
    for (line, message) in [
        ("explore --ios 4", "explore needs --seeds A..B"),
        (
            "explore --seeds 5..2",
            "--seeds must be A..B with A <= B, got 5..2",
        ),
        (
            "run --deterministic --device qemu",
            "--deterministic and explore need the model device on RAM",
        ),
        (
            "run --deterministic --target ram",
            "--deterministic and explore run the driver target only",
        ),
        ("soak --ios 4", "soak needs --total-ios N or --hours H"),
        ("soak --hours 0", "--hours must be a positive number, got 0"),
        (
            "soak --total-ios 5 --chaos-every 0",
            "--chaos-every must be at least 1, got 0",
        ),
    ] {
        let argv: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let e = cli::parse(&argv, &["driver", "ram"]).expect_err(line);
        assert!(e.to_string().contains(message), "{line}: {e}");
    }
}

#[test]
fn the_watchdog_counts_virtual_time_in_deterministic_mode() {
    let (violations, report) = sched::run(1, MAX_STEPS, || {
        let stack = Stack::start(StackOptions {
            port: PortOptions {
                // Every ISR and DPC runs a few steps (a microsecond of virtual time each).
                isr_budget: std::time::Duration::from_nanos(1),
                dpc_budget: std::time::Duration::from_nanos(1),
                ..PortOptions::default()
            },
            ..StackOptions::default()
        })
        .expect("start");
        let _ = vioblk_sim::class::start_disk(&stack);
        stack.violations()
    });
    assert_eq!(report.failure, None);
    assert!(
        violations
            .iter()
            .any(|v| v.contains("of virtual time (budget 1ns)")),
        "{violations:?}"
    );
}

#[test]
fn soak_runs_rounds_until_its_total_and_sums_them() {
    let argv: Vec<String> = "soak --total-ios 20 --ios 8 -o 2 --deterministic"
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run_cli(&argv, &[("driver", &DriverBackend)], &mut out, &mut err);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{out}{}", String::from_utf8_lossy(&err));
    // Three rounds of 8 reach 20; the interrupt mode turns, chaos comes from the round.
    assert!(out.contains("round 1 (intx, seed 24302): 8 I/Os"), "{out}");
    assert!(out.contains("round 2 (msi, seed 24303): 8 I/Os"), "{out}");
    assert!(out.contains("round 3 (msix, seed 24304): 8 I/Os"), "{out}");
    assert!(out.contains("soak: 3 rounds, 24 I/Os"), "{out}");
    assert!(out.contains("0 mismatches, 0 violations"), "{out}");
}

#[test]
fn soak_chaos_every_sets_the_rounds_fault_interval() {
    let parse = |line: &str| {
        let argv: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        match cli::parse(&argv, &["driver", "ram"]).expect(line) {
            cli::Command::Soak(s) => s.chaos_every_ms,
            other => panic!("{line}: {other:?}"),
        }
    };
    assert_eq!(parse("soak --total-ios 5"), 5);
    assert_eq!(parse("soak --total-ios 5 --chaos-every 20"), 20);
    assert_eq!(parse("soak --chaos-every=50 --hours 1"), 50);
}
