//! `vioblk-sim run --fault SPEC` end to end (the binary, the driver target): every fault mode in
//! every interrupt mode, and seeded chaos jobs. A job passes when nothing hangs, no data is
//! wrong, Storport saw no violation, and the disk serves I/O afterwards (after a removal: fails
//! it with NO_DEVICE); the JSON report must say what was injected.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest one job may take before it counts as hung.
const DEADLINE: Duration = Duration::from_secs(120);

/// One job at a time: each is a whole machine of threads, and the user-mode Storport's watchdog
/// measures wall time, which several jobs at once on a small machine would eat.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs the binary with `args`, killing it at the deadline (a hang fails the test).
fn run(args: &[&str]) -> Output {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vioblk-sim"))
        .args(args)
        .args(["--json", "--no-progress"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let end = Instant::now() + DEADLINE;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("vioblk-sim {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn report(args: &[&str]) -> Value {
    let out = run(args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{args:?}: no JSON report ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?} failed:\nviolations {}\nfaults {}\nerrors {}\nverification {}\n{stderr}",
        json["violations"],
        json["faults"],
        json["result"]["error_samples"],
        json["verification"]
    );
    assert_eq!(json["passed"], true);
    assert_eq!(json["verification"]["mismatches"], 0, "{args:?}");
    assert_eq!(json["violations"].as_array().map(Vec::len), Some(0));
    json
}

const INTERRUPTS: [&str; 3] = ["msix", "intx", "msi"];

fn injected(json: &Value) -> Vec<String> {
    json["faults"]["injected"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every request fault, on a queue with requests in flight (two threads of 16), in each
/// interrupt mode: the fault fires, the job passes, the disk serves every read afterwards.
#[test]
fn every_request_fault_in_every_interrupt_mode() {
    let modes = [
        "bad-id",
        "duplicate-id",
        "len-too-long",
        "len-zero",
        "idx-jump",
        "bad-status",
        "lost",
        "needs-reset",
        "slow,ms=50",
    ];
    for interrupts in INTERRUPTS {
        for mode in modes {
            let spec = format!("{mode},at=300");
            let json = report(&[
                "--ios",
                "3000",
                "-c",
                "8M",
                "--interrupts",
                interrupts,
                "--fault",
                &spec,
            ]);
            let name = mode.split(',').next().unwrap_or(mode);
            let what = injected(&json);
            assert!(
                what.iter().any(|w| w.starts_with(name)),
                "{interrupts} {spec}: injected {what:?}"
            );
            assert_eq!(json["faults"]["recovered"], true, "{interrupts} {spec}");
            assert_eq!(json["faults"]["check"]["as_expected"], 32);
        }
    }
}

/// `reset_fault` (how the device treats resets), then a fault that needs a reset at the 300th
/// request, in every interrupt mode: the disk comes back, with the DMA cut `dma_cuts` times.
fn reset_then_needs_reset(reset_fault: &str, dma_cuts: u64) {
    for interrupts in INTERRUPTS {
        let json = report(&[
            "--ios",
            "3000",
            "-c",
            "8M",
            "--interrupts",
            interrupts,
            "--fault",
            reset_fault,
            "--fault",
            "needs-reset,at=300",
        ]);
        assert_eq!(
            json["faults"]["resets"]["dma_cut"], dma_cuts,
            "{interrupts} {reset_fault}"
        );
        assert_eq!(
            json["faults"]["recovered"], true,
            "{interrupts} {reset_fault}"
        );
    }
}

/// A reset the device ignores, then a fault that needs a reset: the DMA is cut, the disk comes
/// back.
#[test]
fn ignored_reset_in_every_interrupt_mode() {
    reset_then_needs_reset("reset-ignored", 1);
}

/// A device slow to reset, then a fault that needs a reset: the machine waits for it.
#[test]
fn slow_reset_in_every_interrupt_mode() {
    reset_then_needs_reset("reset-slow,ms=30", 0);
}

/// Surprise removal in the middle of a job: recognised, and afterwards every read fails with
/// NO_DEVICE.
#[test]
fn surprise_removal_in_every_interrupt_mode() {
    for interrupts in INTERRUPTS {
        let json = report(&[
            "-d",
            "1.5",
            "-c",
            "8M",
            "--interrupts",
            interrupts,
            "--fault",
            "removal,after=300",
        ]);
        assert_eq!(json["faults"]["removed"], true, "{interrupts}");
        assert_eq!(json["faults"]["removal_detected"], true, "{interrupts}");
        assert_eq!(json["faults"]["check"]["as_expected"], 32);
    }
}

/// The host grows the disk during the job: UNIT ATTENTION, no failure.
#[test]
fn capacity_change_in_every_interrupt_mode() {
    for interrupts in INTERRUPTS {
        let json = report(&[
            "-d",
            "1",
            "-c",
            "8M",
            "--interrupts",
            interrupts,
            "--fault",
            "capacity,after=200",
        ]);
        assert!(
            injected(&json).iter().any(|w| w.starts_with("capacity")),
            "{interrupts}"
        );
        assert_eq!(json["result"]["errors"], 0, "{interrupts}");
    }
}

/// Seeded chaos (a random fault every 5 ms) for several seeds per interrupt mode.
#[test]
fn chaos_jobs_pass() {
    for interrupts in INTERRUPTS {
        for seed in 1..=3 {
            let seed = format!("chaos,seed={seed},every=5");
            let json = report(&[
                "-d",
                "1",
                "-c",
                "8M",
                "--interrupts",
                interrupts,
                "--fault",
                &seed,
            ]);
            assert!(
                injected(&json).len() >= 5,
                "{interrupts} {seed}: {:?}",
                injected(&json)
            );
        }
    }
}

/// A SPEC the command line does not know is a usage error, not a job.
#[test]
fn a_bad_spec_is_a_usage_error() {
    for spec in ["frobnicate", "lost,at", "lost,colour=red"] {
        let out = Command::new(env!("CARGO_BIN_EXE_vioblk-sim"))
            .args(["--fault", spec])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{spec}");
    }
    // The ram target has no device to inject into: bad usage too.
    let out = Command::new(env!("CARGO_BIN_EXE_vioblk-sim"))
        .args(["--target", "ram", "--ios", "10", "--fault", "lost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: the ram target has no device to inject faults into: --fault needs the driver \
         target\n"
    );
}

/// `--help` documents `--fault` and every mode.
#[test]
fn help_lists_the_fault_modes() {
    let out = Command::new(env!("CARGO_BIN_EXE_vioblk-sim"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--fault",
        "bad-id",
        "duplicate-id",
        "len-too-long",
        "len-zero",
        "idx-jump",
        "bad-status",
        "lost",
        "needs-reset",
        "slow",
        "reset-ignored",
        "reset-slow",
        "removal",
        "capacity",
        "chaos",
        "msi",
    ] {
        assert!(help.contains(word), "--help does not mention {word}");
    }
}
