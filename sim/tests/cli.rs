//! The `vioblk-sim` binary end to end: the jobs run against the driver target (the real driver
//! on the user-mode Storport over the device model, where "storport: no violations" means the
//! rules were checked) and against the `ram` target (the workload and report alone).
#![forbid(unsafe_code)]

use std::process::{Command, Output};

/// Both targets: the driver first (the one that matters), then the model-free RAM disk.
const TARGETS: [&str; 2] = ["driver", "ram"];

/// Runs the binary on the `ram` target (argument parsing, which does not depend on it).
fn vioblk_sim(args: &[&str]) -> Output {
    vioblk_sim_on("ram", args)
}

fn vioblk_sim_on(target: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vioblk-sim"))
        .args(args)
        .args(
            ["--target", target]
                .iter()
                .filter(|_| !args.contains(&"--help")),
        )
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_every_flag() {
    let out = vioblk_sim(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for flag in [
        "--threads",
        "--outstanding",
        "--io-size",
        "--random",
        "--sequential",
        "--write-percent",
        "--unmap-percent",
        "--flush-every",
        "--fua",
        "--duration",
        "--ios",
        "--seed",
        "--no-verify",
        "--json",
        "--no-progress",
        "--target",
        "--capacity",
        "--block-size",
        "--file",
        "--queues",
        "--interrupts",
        "--device",
        "--vhost-user",
        "--data-out",
        "--data-in-len",
        "cdb",
        "info",
        "compare",
        "--html",
        "-Sh",
        "-L",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

#[test]
fn a_small_verified_job_passes() {
    for target in TARGETS {
        a_small_verified_job_passes_on(target);
    }
}

fn a_small_verified_job_passes_on(target: &str) {
    let out = vioblk_sim_on(target, &["--ios", "2000", "-c", "8M"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("setup:   target {target}")),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("job:     2 threads x 16 outstanding, 4 KiB random, 30% writes, 2000 I/Os"),
        "{stdout}"
    );
    assert!(stdout.contains("total             2000"), "{stdout}");
    assert!(stdout.contains(" mismatches"), "{stdout}");
    assert!(stdout.contains("storport: no violations"), "{stdout}");
    assert!(stdout.ends_with("result:  PASS\n"), "{stdout}");
    // No progress bar when stderr is not a terminal.
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn json_report_is_machine_readable() {
    for target in TARGETS {
        json_report_is_machine_readable_on(target);
    }
}

fn json_report_is_machine_readable_on(target: &str) {
    let out = vioblk_sim_on(
        target,
        &[
            "--json",
            "--ios",
            "600",
            "-s",
            "-b",
            "64K",
            "-w",
            "50",
            "--block-size",
            "4096",
            "-t1",
            "-o4",
            "--queues",
            "3",
            "--flush-every",
            "10",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(j["schema"], "vioblk-sim/report/v1");
    assert_eq!(j["passed"], true);
    assert_eq!(j["target"], target);
    assert_eq!(j["violations"].as_array().map(Vec::len), Some(0), "{j}");
    assert_eq!(j["job"]["pattern"], "sequential");
    assert_eq!(j["job"]["io_size"], 65536);
    assert_eq!(j["disk"]["logical_block_size"], 4096);
    assert_eq!(j["result"]["ios"], 600);
    assert_eq!(j["result"]["errors"], 0);
    assert!(j["result"]["flushes"].as_u64().is_some_and(|f| f > 0));
    assert!(j["latency_us"]["all"]["p99_9"].as_f64().is_some());
    assert_eq!(j["verification"]["mismatches"], 0);
    assert!(
        j["verification"]["blocks_verified"]
            .as_u64()
            .is_some_and(|v| v > 0)
    );
    assert_eq!(j["queues"].as_array().map(Vec::len), Some(3));
    if target == "driver" {
        // The requests went through the driver and the device: the device served every one
        // and interrupted (the RAM disk has no interrupts).
        let queues = j["queues"].as_array().unwrap();
        let sum = |field: &str| queues.iter().filter_map(|q| q[field].as_u64()).sum::<u64>();
        assert_eq!(sum("reads") + sum("writes"), 600, "{j}");
        assert!(sum("interrupts") > 0, "{j}");
    }
}

#[test]
fn a_short_timed_job() {
    for target in TARGETS {
        a_short_timed_job_on(target);
    }
}

fn a_short_timed_job_on(target: &str) {
    let out = vioblk_sim_on(target, &["-d", "0.3", "-c", "4M", "--unmap-percent", "10"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("0.30 s"));
}

#[test]
fn bad_flags_exit_2_with_a_clear_error() {
    for (args, message) in [
        (
            &["--block-size", "1000"][..],
            "error: --block-size must be 512 or 4096, got 1000\n",
        ),
        (
            &["-b", "1000"],
            "error: -b must be a multiple of the logical block size (512), got 1000\n",
        ),
        (
            &["-w", "101"],
            "error: -w must be between 0 and 100, got 101\n",
        ),
        (
            &["--bogus"],
            "error: unknown option '--bogus' (see vioblk-sim --help)\n",
        ),
    ] {
        let out = vioblk_sim(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(text(&out.stderr), message);
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn cdb_inquiry_and_a_failing_read() {
    for target in TARGETS {
        cdb_inquiry_and_a_failing_read_on(target);
    }
}

fn cdb_inquiry_and_a_failing_read_on(target: &str) {
    let vioblk_sim = |args: &[&str]| vioblk_sim_on(target, args);
    let product = if target == "ram" {
        "RAM disk"
    } else {
        "virtio-blk disk"
    };
    let out = vioblk_sim(&["cdb", "12", "00", "00", "00", "24", "00"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("SRB status:  SUCCESS (0x01)"), "{stdout}");
    assert!(stdout.contains("SCSI status: GOOD (0x00)"), "{stdout}");
    assert!(stdout.contains("data in:     36 of 36 bytes"), "{stdout}");
    assert!(
        stdout.contains("VIOBLK  \n") && stdout.contains(product),
        "{stdout}"
    );

    // READ (10) of the last block and one past it, on a 1 MiB disk.
    let out = vioblk_sim(&["cdb", "28000000 07ff 00 0002 00", "-c", "1M"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("SRB status:  ERROR | AUTOSENSE_VALID (0x84)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ILLEGAL REQUEST: LOGICAL BLOCK ADDRESS OUT OF RANGE (21h/00h)"),
        "{stdout}"
    );

    // WRITE (10) of one block, then read it back.
    let block = "ab ".repeat(512);
    let out = vioblk_sim(&["cdb", "2a 00 00000005 00 0001 00", "--data-out", &block]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn info_needs_a_driver() {
    let out = vioblk_sim(&["info"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: the ram target loads no driver: info needs the driver target\n"
    );
}

/// `-b 1M` through the driver, whose disk reports a maximum transfer length of 252 KiB (63
/// pages: NumberOfPhysicalBreaks 63): the class model splits each request as classpnp does,
/// the report says into how many transfers, and every block read back verifies. A request that
/// fits is one transfer.
#[test]
fn requests_above_the_maximum_transfer_length_are_split_and_verified() {
    let run = |size: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_vioblk-sim"))
            .args(["run", "--target", "driver", "-s", "-b", size, "-w", "50"])
            .args(["--ios", "48", "-t1", "-o4", "-c", "16M", "--json"])
            .output()
            .expect("the binary runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "-b {size}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
        assert_eq!(j["passed"], true, "-b {size}");
        assert_eq!(j["result"]["errors"], 0, "-b {size}");
        assert_eq!(j["verification"]["mismatches"], 0, "-b {size}");
        assert!(
            j["verification"]["blocks_verified"]
                .as_u64()
                .is_some_and(|v| v > 0),
            "-b {size}: nothing was verified"
        );
        (
            j["result"]["transfers_per_request"].as_u64(),
            j["result"]["transfers"].as_u64(),
        )
    };
    // 1 MiB = 4 x 252 KiB + 16 KiB.
    let (per, all) = run("1M");
    assert_eq!(per, Some(5));
    assert!(all.is_some_and(|n| n >= 48 * 5), "{all:?}");
    assert_eq!(run("64K"), (Some(1), Some(48)));
}
