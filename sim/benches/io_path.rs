//! The I/O-path benchmark: `cargo bench -p vioblk-sim --bench io_path` (or `tools/bench.sh`,
//! which first builds the `qd32_reads` example the callgrind part runs).
//!
//! One run prints, for 4 KiB random reads at queue depth 32 on one queue (MSI-X, indirect
//! descriptors, event idx):
//!
//! - (a) driver-side instructions per read, measured with valgrind's callgrind over the
//!   `qd32_reads` example: collection is toggled on only inside the driver's Storport entry
//!   points (the `extern "C"` trampolines of `crates/storport`), once for submission (HwStorBuildIo,
//!   HwStorStartIo) and once for completion (HwMSInterruptRoutine/HwStorInterrupt, the
//!   HwStorDpcRoutine); the cost of the calls the driver makes into the user-mode Storport (the
//!   `StorPort*` exports, which include the device model's register handlers) is subtracted, and
//!   a run with 0 reads gives the setup cost to subtract. What is left is the `vioblk` crate and
//!   the `storport` safe layer (plus the libc/core code they call).
//! - (b) lock acquisitions per read by kind and by callback, from storport-sim's counters
//!   (`Adapter::lock_counts`).
//! - (c) IOPS through the driver on storport-sim vs the device model driven directly
//!   (`oracle::random_reads`), best of 3 alternating rounds, and the ratio.
//! - (d) the SRB extension size at `MAX_SEGMENTS` scatter-gather segments.
//! - (e) when `VIOBLK_BENCH_IMAGE` names a vioblk.sys (tools/bench.sh passes
//!   `target/package/vioblk.sys` when it exists): the shipped image's own instructions per read,
//!   from callgrind runs of `qd32_reads` on the image with per-instruction costs
//!   (`--dump-instr=yes`), counting only instructions inside the image's address range (the
//!   example prints it): the image's code, none of the user-mode Storport's, the gates' or the
//!   MMIO emulation's. Submission and completion together: the image has no symbols to split
//!   them by. A run with 0 reads gives the setup cost to subtract.
//! - (f) one job three ways (`io_path_parts/three_way.rs`): the driver over the device model,
//!   the driver over qemu-storage-daemon, a vhost-user client with no driver; IOPS and CPU time
//!   per read.
//!
//! Targets are reported, never asserted: the process exits non-zero only when a run is broken
//! (failed reads, Storport rule violations, a failed valgrind run).
#![forbid(unsafe_code)]
#![allow(missing_docs)]

#[path = "../examples/qd32_reads.rs"]
mod qd32;
#[path = "io_path_parts/three_way.rs"]
mod three_way;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use storport_sim::{CallbackKind, LockCounts, LockKind};

/// Reads per callgrind run at QD32 (fixed, with a fixed seed, so the count is repeatable).
const CALLGRIND_IOS: u64 = 20_000;
/// Reads per callgrind run at QD1 (each read waits for the device thread: slower under valgrind).
const CALLGRIND_QD1_IOS: u64 = 5_000;
/// Requests per native run of the example (CPU time, context switches, allocations).
const NATIVE_IOS: u64 = 200_000;
/// Native rounds (stack and direct alternate; the median of each is reported).
const ROUNDS: usize = 3;
/// Reads of the in-process lock-count run.
const LOCK_IOS: u64 = 50_000;
/// Queue depth of the full-ring run: far above the 128 requests one queue holds.
const FULL_RING_QD: usize = 1024;

/// Targets (issue 15), reported beside the figures, never asserted.
const TARGET_READ_QD32: f64 = 500.0;
const TARGET_READ_QD1: f64 = 700.0;
const TARGET_RATIO: f64 = 0.5;
const TARGET_ALLOCATIONS: f64 = 0.0;
const TARGET_CONTEXT_SWITCHES: f64 = 0.3;
const TARGET_SRB_EXTENSION: usize = 1088;
const TARGET_DEVICE_EXTENSION: usize = 48 * 1024;

fn main() {
    let mut broken = Vec::<String>::new();
    println!("vioblk I/O path: 4 KiB random requests through the driver on the user-mode Storport");
    println!();
    let srb_ext = vioblk::hba::SRB_EXTENSION_SIZE;
    let dev_ext = vioblk::hba::DEVICE_EXTENSION_SIZE;

    // (b) locks, in process.
    let locks = if part("b") {
        lock_counts(&mut broken)
    } else {
        None
    };
    // (c) CPU time, context switches, allocations: the example run natively.
    let native = if part("c") {
        native_figures(&mut broken)
    } else {
        None
    };
    // (a) callgrind, per workload.
    let workloads = [
        ("read_qd32", CALLGRIND_IOS, vec!["--qd", "32"]),
        ("read_qd1", CALLGRIND_QD1_IOS, vec!["--qd", "1"]),
        ("write_qd32", CALLGRIND_IOS, vec!["--qd", "32", "--write"]),
    ];
    let mut cg = Vec::new();
    for (name, ios, args) in &workloads {
        if part("a") {
            cg.push((*name, callgrind(&mut broken, *ios, args)));
        }
    }
    // The instruction ratio: whole processes, device model direct vs the whole stack.
    let ratio = if part("h") {
        instruction_ratio(&mut broken)
    } else {
        Err("skipped: not in VIOBLK_BENCH_ONLY".into())
    };
    // (e) the shipped image under callgrind.
    let image = if part("e") {
        image_callgrind(&mut broken)
    } else {
        None
    };

    println!("{:<62} {:>12} {:>10}", "figure", "value", "target");
    println!("{}", "-".repeat(86));
    let row = |name: &str, v: f64, target: &str| println!("{name:<62} {v:>12.1} {target:>10}");
    for (name, c) in &cg {
        let target = match *name {
            "read_qd32" => format!("<= {TARGET_READ_QD32}"),
            "read_qd1" => format!("<= {TARGET_READ_QD1}"),
            _ => String::new(),
        };
        match c {
            Ok(c) => {
                row(
                    &format!("(a) {name}: driver instr / I/O, submission"),
                    c.submit.driver_per_io(),
                    "",
                );
                row(
                    &format!("(a) {name}: driver instr / I/O, completion"),
                    c.complete.driver_per_io(),
                    "",
                );
                row(
                    &format!("(a) {name}: driver instr / I/O, total"),
                    c.total(),
                    &target,
                );
                row(
                    "    storport-sim + device model under those callbacks",
                    c.submit.port_per_io() + c.complete.port_per_io(),
                    "",
                );
            }
            Err(e) => println!(
                "{:<62} {:>12} {target:>10}\n    {e}",
                format!("(a) {name}"),
                "n/a"
            ),
        }
    }
    if let Some(l) = &locks {
        let n = LOCK_IOS as f64;
        let per = |v: u64| v as f64 / n;
        let row3 = |name: &str, v: f64, target: &str| println!("{name:<62} {v:>12.3} {target:>10}");
        println!("(b) lock acquisitions / read (miniport's + port's):");
        for (name, kind) in [
            ("    StartIo lock", LockKind::StartIo),
            ("    DPC lock (the queue lock)", LockKind::Dpc),
            ("    Interrupt lock (all messages)", LockKind::Interrupt),
            ("    MSI message lock", LockKind::Msi),
        ] {
            let target = if kind == LockKind::Interrupt { "0" } else { "" };
            row3(name, per(l.total(kind)), target);
        }
        row3(
            "    StorPortSynchronizeAccess calls",
            per(l.synchronize_access),
            "0",
        );
        let sub_q = l.miniport[CallbackKind::StartIo as usize][LockKind::Dpc as usize]
            + l.miniport[CallbackKind::BuildIo as usize][LockKind::Dpc as usize];
        let dpcs = l.runs(CallbackKind::Dpc).max(1);
        let dpc_q = l.miniport[CallbackKind::Dpc as usize][LockKind::Dpc as usize];
        row3(
            "    queue lock per submission (BuildIo + StartIo)",
            per(sub_q),
            "<= 1",
        );
        row3(
            "    queue lock per DPC run (drains <= 32 per acquisition)",
            dpc_q as f64 / dpcs as f64,
            "<= 1",
        );
        row3("    ISR runs / read", per(l.runs(CallbackKind::Isr)), "");
        row3("    DPC runs / read", per(l.runs(CallbackKind::Dpc)), "");
    }
    if let Some(n) = &native {
        let row3 = |name: &str, v: f64, target: &str| println!("{name:<62} {v:>12.3} {target:>10}");
        row3(
            "(c) CPU us / read, whole stack (median of 3)",
            n.stack_qd32.cpu_us_per_io(),
            "",
        );
        row3(
            "(c) CPU us / read, device model driven directly (median of 3)",
            n.direct_qd32.cpu_us_per_io(),
            "",
        );
        row3(
            "(c) CPU us / read at QD1, whole stack",
            n.stack_qd1.cpu_us_per_io(),
            "",
        );
        row3(
            "(c) CPU us / read at QD1, device model directly",
            n.direct_qd1.cpu_us_per_io(),
            "",
        );
        row3(
            "(c) CPU us / write, whole stack",
            n.stack_write.cpu_us_per_io(),
            "",
        );
        row3(
            "(c) heap allocations / read, whole process",
            n.stack_qd32.allocations_per_io(),
            &format!("{TARGET_ALLOCATIONS}"),
        );
        row3(
            "(c) context switches / read at QD32",
            n.stack_qd32.switches_per_io(),
            &format!("<= {TARGET_CONTEXT_SWITCHES}"),
        );
        row3(
            "(c) context switches / read at QD1",
            n.stack_qd1.switches_per_io(),
            "",
        );
        row3(
            &format!("(g) full ring (QD{FULL_RING_QD}): CPU us / read"),
            n.full_ring.cpu_us_per_io(),
            "",
        );
        row3(
            &format!("(g) full ring (QD{FULL_RING_QD}): BUSY retries / read"),
            n.full_ring.busy_per_io(),
            "",
        );
        row3(
            &format!("(g) full ring (QD{FULL_RING_QD}): context switches / read"),
            n.full_ring.switches_per_io(),
            "",
        );
    }
    match &ratio {
        Ok(r) => {
            row(
                "(h) instructions / read, whole stack (callgrind)",
                r.stack,
                "",
            );
            row(
                "(h) instructions / read, device model directly",
                r.direct,
                "",
            );
            println!(
                "{:<62} {:>12.3} {:>10}",
                "(h) instruction ratio direct / stack",
                r.ratio(),
                format!(">= {TARGET_RATIO}")
            );
        }
        Err(e) => println!(
            "{:<62} {:>12} {:>10}\n    {e}",
            "(h) instruction ratio", "n/a", ""
        ),
    }
    println!(
        "{:<62} {:>12} {:>10}",
        format!(
            "(d) SRB extension bytes at {} SG segments",
            vioblk::hba::MAX_SEGMENTS
        ),
        srb_ext,
        format!("<= {TARGET_SRB_EXTENSION}")
    );
    println!(
        "{:<62} {:>12} {:>10}",
        "(d) device extension bytes",
        dev_ext,
        format!("<= {TARGET_DEVICE_EXTENSION}")
    );
    match &image {
        Some(Ok(per_read)) => {
            row(
                "(e) image instr / read (vioblk.sys, submission + completion)",
                *per_read,
                "",
            );
        }
        Some(Err(e)) => println!(
            "{:<62} {:>12} {:>10}\n    {e}",
            "(e) image instr / read", "n/a", ""
        ),
        None => println!(
            "{:<62} {:>12} {:>10}",
            "(e) image instr / read (set VIOBLK_BENCH_IMAGE)", "skipped", ""
        ),
    }
    println!();

    // Verdicts (reported, not asserted).
    let mut missed = Vec::new();
    for (name, c) in &cg {
        let target = match *name {
            "read_qd32" => TARGET_READ_QD32,
            "read_qd1" => TARGET_READ_QD1,
            _ => continue,
        };
        if let Ok(c) = c
            && c.total() > target
        {
            missed.push(format!("{name} {:.0} > {target}", c.total()));
        }
    }
    if let Some(n) = &native {
        if n.stack_qd32.allocations_per_io() > TARGET_ALLOCATIONS {
            missed.push(format!(
                "allocations/read {:.2} > 0",
                n.stack_qd32.allocations_per_io()
            ));
        }
        if n.stack_qd32.switches_per_io() > TARGET_CONTEXT_SWITCHES {
            missed.push(format!(
                "context switches/read {:.2} > {TARGET_CONTEXT_SWITCHES}",
                n.stack_qd32.switches_per_io()
            ));
        }
    }
    if let Ok(r) = &ratio
        && r.ratio() < TARGET_RATIO
    {
        missed.push(format!(
            "instruction ratio {:.3} < {TARGET_RATIO}",
            r.ratio()
        ));
    }
    if srb_ext > TARGET_SRB_EXTENSION {
        missed.push(format!("SRB extension {srb_ext} > {TARGET_SRB_EXTENSION}"));
    }
    if dev_ext > TARGET_DEVICE_EXTENSION {
        missed.push(format!(
            "device extension {dev_ext} > {TARGET_DEVICE_EXTENSION}"
        ));
    }
    if missed.is_empty() {
        println!("targets: all met");
    } else {
        println!("targets missed: {}", missed.join("; "));
    }

    for (name, c) in &cg {
        let Ok(c) = c else { continue };
        println!();
        println!(
            "{name}: top driver functions (self cost with what was inlined into them), \
             instructions / I/O; hottest driver line:"
        );
        for (phase, p) in [("submission", &c.submit), ("completion", &c.complete)] {
            println!("  {phase}:");
            for (func, v, hot) in p.top_driver_functions(10) {
                println!("    {v:>7.1}  {func}  ({hot})");
            }
        }
        println!(
            "{name}: top storport-sim/device costs under the driver's callbacks, instructions / I/O:"
        );
        for (phase, p) in [("submission", &c.submit), ("completion", &c.complete)] {
            let calls: Vec<String> = p
                .port_calls(6)
                .into_iter()
                .map(|(f, v)| format!("{f} {v:.0}"))
                .collect();
            println!("  {phase}: {}", calls.join(", "));
        }
        if c.inlined_port > 0.0 {
            println!(
                "note: {:.1} instructions/I/O of storport-sim code were inlined into driver \
                 functions and are counted as driver",
                c.inlined_port
            );
        }
    }

    let three = if part("f") {
        three_way_report(&mut broken)
    } else {
        None
    };

    // The figures as one JSON object on the last line (tools/bench.sh's contract).
    let mut json = serde_json::Map::new();
    let num = |v: f64| serde_json::json!((v * 1000.0).round() / 1000.0);
    for (name, c) in &cg {
        if let Ok(c) = c {
            json.insert(
                format!("driver_instructions_{name}"),
                serde_json::json!({
                    "submission": num(c.submit.driver_per_io()),
                    "completion": num(c.complete.driver_per_io()),
                    "total": num(c.total()),
                }),
            );
        }
    }
    if let Ok(r) = &ratio {
        json.insert("instructions_per_read_stack".into(), num(r.stack));
        json.insert("instructions_per_read_direct".into(), num(r.direct));
        json.insert("instruction_ratio_direct_over_stack".into(), num(r.ratio()));
    }
    if let Some(n) = &native {
        json.insert(
            "cpu_us_per_read_stack".into(),
            num(n.stack_qd32.cpu_us_per_io()),
        );
        json.insert(
            "cpu_us_per_read_direct".into(),
            num(n.direct_qd32.cpu_us_per_io()),
        );
        json.insert(
            "cpu_us_per_read_qd1_stack".into(),
            num(n.stack_qd1.cpu_us_per_io()),
        );
        json.insert(
            "cpu_us_per_read_qd1_direct".into(),
            num(n.direct_qd1.cpu_us_per_io()),
        );
        json.insert(
            "cpu_us_per_write_stack".into(),
            num(n.stack_write.cpu_us_per_io()),
        );
        json.insert(
            "allocations_per_io".into(),
            num(n.stack_qd32.allocations_per_io()),
        );
        json.insert(
            "allocations_per_io_write".into(),
            num(n.stack_write.allocations_per_io()),
        );
        json.insert(
            "context_switches_per_io".into(),
            num(n.stack_qd32.switches_per_io()),
        );
        json.insert(
            "context_switches_per_io_qd1".into(),
            num(n.stack_qd1.switches_per_io()),
        );
        json.insert(
            "full_ring".into(),
            serde_json::json!({
                "queue_depth": FULL_RING_QD,
                "cpu_us_per_read": num(n.full_ring.cpu_us_per_io()),
                "busy_retries_per_read": num(n.full_ring.busy_per_io()),
                "context_switches_per_read": num(n.full_ring.switches_per_io()),
            }),
        );
    }
    if let Some(l) = &locks {
        json.insert(
            "interrupt_locks_per_read".into(),
            num(l.total(LockKind::Interrupt) as f64 / LOCK_IOS as f64),
        );
    }
    json.insert("srb_extension_bytes".into(), serde_json::json!(srb_ext));
    json.insert("device_extension_bytes".into(), serde_json::json!(dev_ext));
    if let Some(Ok(v)) = &image {
        json.insert("image_instructions_per_read".into(), num(*v));
    }
    if let Some(ways) = three {
        json.insert("three_way".into(), serde_json::Value::Array(ways));
    }
    json.insert("targets_missed".into(), serde_json::json!(missed));

    if !broken.is_empty() {
        for b in &broken {
            eprintln!("io_path: broken run: {b}");
        }
        json.insert("broken".into(), serde_json::json!(broken));
    }
    println!("{}", serde_json::Value::Object(json));
    if !broken.is_empty() {
        std::process::exit(1);
    }
}

/// Whether section `name` ("a" .. "h") runs: all of them, unless `VIOBLK_BENCH_ONLY` names
/// some (comma-separated, e.g. `VIOBLK_BENCH_ONLY=a,h` for the callgrind figures alone).
fn part(name: &str) -> bool {
    match std::env::var("VIOBLK_BENCH_ONLY") {
        Ok(only) if !only.trim().is_empty() => only.split(',').any(|p| p.trim() == name),
        _ => true,
    }
}

fn three_way_report(broken: &mut Vec<String>) -> Option<Vec<serde_json::Value>> {
    println!();
    println!(
        "(f) one job three ways: {} random 4 KiB reads at QD{}, CPU time per read from /proc",
        three_way::IOS,
        qd32::QUEUE_DEPTH
    );
    if std::env::var_os("VIOBLK_BENCH_NO_THREE_WAY").is_some() {
        println!("  skipped: VIOBLK_BENCH_NO_THREE_WAY is set");
        return None;
    }
    match three_way::run(broken) {
        Ok(ways) => {
            println!(
                "  {:<34} {:>10} {:>16} {:>16} {:>12}",
                "way", "IOPS", "CPU us/read sim", "CPU us/read qsd", "total"
            );
            let mut out = Vec::new();
            for w in ways {
                let daemon = w.cpu_us_daemon.unwrap_or(0.0);
                println!(
                    "  {:<34} {:>10.0} {:>16.2} {:>16} {:>12.2}",
                    w.name,
                    w.iops,
                    w.cpu_us_self,
                    w.cpu_us_daemon
                        .map_or_else(|| "-".to_owned(), |d| format!("{d:.2}")),
                    w.cpu_us_self + daemon
                );
                out.push(serde_json::json!({
                    "way": w.name,
                    "iops": w.iops.round(),
                    "cpu_us_per_read_simulator": w.cpu_us_self,
                    "cpu_us_per_read_daemon": w.cpu_us_daemon,
                }));
            }
            Some(out)
        }
        Err(e) => {
            println!("  skipped: {e}");
            None
        }
    }
}

// ---- (b) locks --------------------------------------------------------------------------------

fn lock_counts(broken: &mut Vec<String>) -> Option<LockCounts> {
    let stack = match qd32::start_stack() {
        Ok(s) => s,
        Err(e) => {
            broken.push(format!("stack start: {e}"));
            return None;
        }
    };
    let warm = qd32::run(&stack, 5_000, 7);
    let before = stack.adapter.lock_counts();
    let r = qd32::run(&stack, LOCK_IOS, 1);
    let after = stack.adapter.lock_counts();
    let violations = stack.violations();
    if warm.failed + r.failed != 0 || !violations.is_empty() {
        broken.push(format!(
            "driver run: {} failed reads, violations: {violations:?}",
            warm.failed + r.failed
        ));
        return None;
    }
    Some(after.since(&before))
}

// ---- (c) native runs of the example -----------------------------------------------------------

/// One `--stats` line of the example.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    ios: u64,
    cpu_us: u64,
    context_switches: u64,
    allocations: u64,
    busy_retries: u64,
}

impl Stats {
    fn per(&self, v: u64) -> f64 {
        v as f64 / self.ios.max(1) as f64
    }
    fn cpu_us_per_io(&self) -> f64 {
        self.per(self.cpu_us)
    }
    fn switches_per_io(&self) -> f64 {
        self.per(self.context_switches)
    }
    fn allocations_per_io(&self) -> f64 {
        self.per(self.allocations)
    }
    fn busy_per_io(&self) -> f64 {
        self.per(self.busy_retries)
    }
}

struct Native {
    stack_qd32: Stats,
    direct_qd32: Stats,
    stack_qd1: Stats,
    direct_qd1: Stats,
    stack_write: Stats,
    full_ring: Stats,
}

fn run_native(bin: &Path, ios: u64, args: &[&str]) -> Result<Stats, String> {
    let o = Command::new(bin)
        .env_remove("VIOBLK_DRIVER_IMAGE")
        .arg(ios.to_string())
        .arg("1")
        .arg("--stats")
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        return Err(format!(
            "{} {ios} {args:?} failed ({}): {} {}",
            bin.display(),
            o.status,
            stdout.trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("qd32_reads: stats "))
        .ok_or("the example printed no stats line")?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let f = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    Ok(Stats {
        ios: f("ios"),
        cpu_us: f("cpu_us"),
        context_switches: f("context_switches"),
        allocations: f("allocations"),
        busy_retries: f("busy_retries"),
    })
}

fn native_figures(broken: &mut Vec<String>) -> Option<Native> {
    let Some(bin) = example_binary() else {
        println!("(c) skipped: no qd32_reads binary (run tools/bench.sh)");
        return None;
    };
    let result = (|| -> Result<Native, String> {
        let mut stack = Vec::new();
        let mut direct = Vec::new();
        for _ in 0..ROUNDS {
            stack.push(run_native(&bin, NATIVE_IOS, &[])?);
            direct.push(run_native(&bin, NATIVE_IOS, &["--direct"])?);
        }
        let median = |mut v: Vec<Stats>| {
            v.sort_by(|a, b| a.cpu_us_per_io().total_cmp(&b.cpu_us_per_io()));
            v[v.len() / 2]
        };
        Ok(Native {
            stack_qd32: median(stack),
            direct_qd32: median(direct),
            stack_qd1: run_native(&bin, NATIVE_IOS / 4, &["--qd", "1"])?,
            direct_qd1: run_native(&bin, NATIVE_IOS / 4, &["--qd", "1", "--direct"])?,
            stack_write: run_native(&bin, NATIVE_IOS, &["--write"])?,
            full_ring: run_native(&bin, NATIVE_IOS, &["--qd", &FULL_RING_QD.to_string()])?,
        })
    })();
    match result {
        Ok(n) => Some(n),
        Err(e) => {
            broken.push(e);
            None
        }
    }
}

// ---- (h) the instruction ratio ----------------------------------------------------------------

struct Ratio {
    stack: f64,
    direct: f64,
}

impl Ratio {
    fn ratio(&self) -> f64 {
        self.direct / self.stack.max(1.0)
    }
}

/// Whole-process instructions per read (every thread, every crate), each side's 0-read run
/// subtracted: the device model driven directly against the driver on the user-mode Storport.
fn instruction_ratio(broken: &mut Vec<String>) -> Result<Ratio, String> {
    let Some(bin) = example_binary() else {
        return Err("skipped: no qd32_reads binary".into());
    };
    if Command::new("valgrind").arg("--version").output().is_err() {
        return Err("skipped: valgrind is not installed".into());
    }
    let dir = std::env::temp_dir().join(format!("vioblk-io-path-ratio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let per_read = |args: &[&str]| -> Result<f64, String> {
        let run = run_callgrind(&bin, &[], CALLGRIND_IOS, args, &dir.join("n.out"))?;
        let setup = run_callgrind(&bin, &[], 0, args, &dir.join("0.out"))?;
        Ok((run.total as f64 - setup.total as f64) / CALLGRIND_IOS as f64)
    };
    let result = (|| -> Result<Ratio, String> {
        Ok(Ratio {
            stack: per_read(&[])?,
            direct: per_read(&["--direct"])?,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = &result {
        broken.push(e.clone());
    }
    result
}

// ---- (a) callgrind ----------------------------------------------------------------------------

/// Entry points whose execution is collected, per phase (callgrind --toggle-collect patterns).
const SUBMIT_ENTRIES: &[&str] = &[
    "storport::miniport::build_io_trampoline*",
    "storport::miniport::start_io_trampoline*",
];
const COMPLETE_ENTRIES: &[&str] = &[
    "storport::miniport::message_interrupt_trampoline*",
    "storport::miniport::interrupt_trampoline*",
    "storport::dpc::routine*",
];

struct Callgrind {
    submit: Phase,
    complete: Phase,
    /// Instructions per read of storport-sim / device-model source lines found inside driver
    /// functions (LTO inlining across the FFI boundary); they stay in the driver figure.
    inlined_port: f64,
}

impl Callgrind {
    fn total(&self) -> f64 {
        self.submit.driver_per_io() + self.complete.driver_per_io()
    }
}

/// One phase: the run with `ios` reads minus the run with none.
struct Phase {
    ios: u64,
    run: Profile,
    setup: Profile,
}

impl Phase {
    fn driver_per_io(&self) -> f64 {
        (self.run.driver() as f64 - self.setup.driver() as f64) / self.ios as f64
    }

    fn port_per_io(&self) -> f64 {
        (self.run.port() as f64 - self.setup.port() as f64) / self.ios as f64
    }

    /// The driver functions (after inlining) with the most self cost, per read, each with its
    /// costliest source line in the driver's files.
    fn top_driver_functions(&self, n: usize) -> Vec<(String, f64, String)> {
        // function -> (self cost, its costliest driver line: file, line, cost)
        type Hot<'a> = Option<(&'a str, u32, u64)>;
        let mut by: HashMap<&str, (u64, Hot<'_>)> = HashMap::new();
        for ((file, line, func), &c) in &self.run.lines {
            if !is_driver_fn(func) {
                continue;
            }
            let e = by.entry(func.as_str()).or_default();
            e.0 += c;
            if is_driver_file(file) && *line != 0 && e.1.is_none_or(|(_, _, best)| c > best) {
                e.1 = Some((file.as_str(), *line, c));
            }
        }
        let mut v: Vec<_> = by
            .into_iter()
            .map(|(func, (c, hot))| {
                let hot = hot.map_or(String::new(), |(file, line, hc)| {
                    format!(
                        "{}:{line} {:.0}",
                        short_path(file),
                        hc as f64 / self.ios as f64
                    )
                });
                (func.to_string(), c as f64 / self.ios as f64, hot)
            })
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(n);
        v
    }

    fn port_calls(&self, n: usize) -> Vec<(String, f64)> {
        let mut by: HashMap<&str, u64> = HashMap::new();
        for ((caller, callee), &c) in &self.run.calls {
            if is_export(callee) && !is_port_fn(caller) {
                *by.entry(callee.as_str()).or_default() += c;
            }
        }
        let mut v: Vec<_> = by
            .into_iter()
            .map(|(f, c)| (f.to_string(), c as f64 / self.ios as f64))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(n);
        v
    }
}

/// `file` relative to the workspace root (the parent of this crate's directory).
fn short_path(file: &str) -> &str {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::to_str)
        .unwrap_or("/");
    file.strip_prefix(root)
        .and_then(|f| f.strip_prefix('/'))
        .unwrap_or(file)
}

/// The driver's sources: the vioblk crate and crates/storport.
fn is_driver_file(file: &str) -> bool {
    let f = short_path(file);
    f.starts_with("src/") || f.starts_with("crates/storport/src/")
}

/// Source of storport-sim or the device model.
fn is_port_file(file: &str) -> bool {
    let f = short_path(file);
    f.starts_with("crates/storport-sim/") || f.starts_with("sim/")
}

fn is_driver_fn(func: &str) -> bool {
    let f = func.trim_start_matches('<');
    (f.starts_with("vioblk::") || f.starts_with("storport::")) && !func.contains("storport_sim")
}

/// A storport.sys export as storport-sim defines it (the driver's calls into the port).
fn is_export(func: &str) -> bool {
    func.starts_with("StorPort")
        || matches!(
            func,
            "KeAcquireSpinLockRaiseToDpc"
                | "KeReleaseSpinLock"
                | "KeInsertQueueDpc"
                | "ExAllocatePoolWithTag"
                | "ExAllocatePool2"
                | "ExFreePoolWithTag"
                | "KeWaitForSingleObject"
                | "KeDelayExecutionThread"
                | "KeStallExecutionProcessor"
        )
}

fn is_port_fn(func: &str) -> bool {
    is_export(func) || func.contains("storport_sim") || func.contains("vioblk_sim")
}

/// A driver routine storport-sim calls back from inside an export (the SynchronizeAccess
/// routine): its cost is the driver's again.
fn is_nested_driver_entry(func: &str) -> bool {
    func.starts_with("storport::sync::run_value")
}

#[derive(Default)]
struct Profile {
    total: u64,
    /// Self cost by (source file, line, function).
    lines: HashMap<(String, u32, String), u64>,
    /// Inclusive cost of calls by (caller, callee).
    calls: HashMap<(String, String), u64>,
}

impl Profile {
    /// Cost of the calls from the driver into the port's exports, minus the driver routines the
    /// port calls back from inside them.
    fn port(&self) -> u64 {
        let mut out = 0u64;
        let mut back = 0u64;
        for ((caller, callee), &c) in &self.calls {
            if is_export(callee) && !is_port_fn(caller) {
                out += c;
            }
            if is_nested_driver_entry(callee) && is_port_fn(caller) {
                back += c;
            }
        }
        out.saturating_sub(back)
    }

    fn driver(&self) -> u64 {
        self.total.saturating_sub(self.port())
    }

    /// Self cost of port source lines inside driver functions.
    fn inlined_port(&self) -> u64 {
        self.lines
            .iter()
            .filter(|((file, _, func), _)| is_port_file(file) && is_driver_fn(func))
            .map(|(_, &c)| c)
            .sum()
    }
}

/// Parses a callgrind output file (format version 1: name compression, relative positions,
/// one event).
fn parse_callgrind(text: &str) -> Result<Profile, String> {
    let mut p = Profile::default();
    let mut names: HashMap<(&'static str, String), String> = HashMap::new();
    let mut name = |space: &'static str, raw: &str| -> String {
        let raw = raw.trim();
        if let Some(rest) = raw.strip_prefix('(')
            && let Some(end) = rest.find(')')
        {
            let id = rest[..end].to_string();
            let given = rest[end + 1..].trim();
            if given.is_empty() {
                return names.get(&(space, id)).cloned().unwrap_or_default();
            }
            names.insert((space, id), given.to_string());
            return given.to_string();
        }
        raw.to_string()
    };
    let mut file = String::new();
    let mut func = String::new();
    let mut callee = String::new();
    let mut pending_call = false;
    let mut line: i64 = 0;
    let mut totals = None;
    for l in text.lines() {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let first = l.as_bytes()[0];
        if first.is_ascii_digit() || first == b'+' || first == b'-' || first == b'*' {
            let mut parts = l.split_ascii_whitespace();
            let pos = parts.next().unwrap_or("*");
            line = match pos.as_bytes()[0] {
                b'+' => line + pos[1..].parse::<i64>().unwrap_or(0),
                b'-' => line - pos[1..].parse::<i64>().unwrap_or(0),
                b'*' => line,
                _ => pos.parse().unwrap_or(line),
            };
            let cost: u64 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            if pending_call {
                *p.calls.entry((func.clone(), callee.clone())).or_default() += cost;
                pending_call = false;
            } else {
                *p.lines
                    .entry((file.clone(), line.max(0) as u32, func.clone()))
                    .or_default() += cost;
            }
            continue;
        }
        let Some((key, value)) = l.split_once('=') else {
            if let Some(t) = l
                .strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
            {
                totals = t
                    .split_ascii_whitespace()
                    .next()
                    .and_then(|v| v.parse().ok());
            }
            continue;
        };
        match key {
            "fl" => {
                file = name("fl", value);
            }
            "fi" | "fe" => file = name("fl", value),
            "fn" => func = name("fn", value),
            "cfi" | "cfl" => {
                let _ = name("fl", value);
            }
            "cfn" => callee = name("fn", value),
            "ob" | "cob" => {
                let _ = name("ob", value);
            }
            "jfi" => {
                let _ = name("fl", value);
            }
            "jfn" => {
                let _ = name("fn", value);
            }
            "calls" => pending_call = true,
            _ => {}
        }
    }
    p.total = totals.ok_or("no totals line")?;
    let self_sum: u64 = p.lines.values().sum();
    if self_sum != p.total {
        return Err(format!(
            "parsed self costs {self_sum} != totals {}: unexpected callgrind format",
            p.total
        ));
    }
    Ok(p)
}

fn example_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("VIOBLK_QD32_BIN") {
        return Some(PathBuf::from(p));
    }
    // target/<profile>/deps/io_path-<hash> -> target/release/examples/qd32_reads
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?.parent()?;
    let p = target.join("release/examples/qd32_reads");
    p.exists().then_some(p)
}

fn run_callgrind(
    bin: &Path,
    entries: &[&str],
    ios: u64,
    args: &[&str],
    out: &Path,
) -> Result<Profile, String> {
    let mut cmd = Command::new("valgrind");
    // The rlib's figures: never the image, whatever the environment says.
    cmd.env_remove("VIOBLK_DRIVER_IMAGE");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--dump-instr=no")
        .arg("--compress-strings=yes");
    for e in entries {
        cmd.arg(format!("--toggle-collect={e}"));
    }
    cmd.arg(bin).arg(ios.to_string()).arg("1").args(args);
    let o = cmd
        .output()
        .map_err(|e| format!("valgrind could not be started: {e}"))?;
    if !o.status.success() {
        let program: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .chain(
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .filter(|l| !l.starts_with("==")),
            )
            .take(8)
            .map(str::to_owned)
            .collect();
        return Err(format!(
            "valgrind {} {ios} failed ({}): {}",
            bin.display(),
            o.status,
            program.join(" | ")
        ));
    }
    let text = std::fs::read_to_string(out).map_err(|e| format!("{}: {e}", out.display()))?;
    parse_callgrind(&text)
}

fn callgrind(broken: &mut Vec<String>, ios: u64, args: &[&str]) -> Result<Callgrind, String> {
    let Some(bin) = example_binary() else {
        return Err(
            "skipped: no qd32_reads binary (run tools/bench.sh, or build \
                    `cargo build --release -p vioblk-sim --example qd32_reads` first)"
                .into(),
        );
    };
    if Command::new("valgrind").arg("--version").output().is_err() {
        return Err("skipped: valgrind is not installed".into());
    }
    let dir = std::env::temp_dir().join(format!(
        "vioblk-io-path-{}-{}",
        std::process::id(),
        args.join("")
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let phase = |tag: &str, entries: &[&str]| -> Result<Phase, String> {
        let run = run_callgrind(&bin, entries, ios, args, &dir.join(format!("{tag}.out")))?;
        let setup = run_callgrind(&bin, entries, 0, args, &dir.join(format!("{tag}.0.out")))?;
        Ok(Phase { ios, run, setup })
    };
    let result = phase("submit", SUBMIT_ENTRIES).and_then(|submit| {
        let complete = phase("complete", COMPLETE_ENTRIES)?;
        let inlined = (submit.run.inlined_port() + complete.run.inlined_port()) as f64 / ios as f64;
        Ok(Callgrind {
            submit,
            complete,
            inlined_port: inlined,
        })
    });
    if std::env::var_os("VIOBLK_KEEP_CALLGRIND").is_some() {
        println!("callgrind outputs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(c) => Ok(c),
        Err(e) => {
            // valgrind is there but the run failed: a broken run.
            broken.push(e.clone());
            Err(e)
        }
    }
}

// ---- (e) the shipped image --------------------------------------------------------------------

/// Reads per image callgrind run (every notify is an emulated MMIO fault: slower than (a)).
const IMAGE_CALLGRIND_IOS: u64 = 5_000;

/// Instructions per read inside the image, or `None` when no image is configured.
fn image_callgrind(broken: &mut Vec<String>) -> Option<Result<f64, String>> {
    let image = PathBuf::from(std::env::var_os("VIOBLK_BENCH_IMAGE").filter(|v| !v.is_empty())?);
    let result = (|| {
        let bin = example_binary().ok_or("skipped: no qd32_reads binary (run tools/bench.sh)")?;
        if Command::new("valgrind").arg("--version").output().is_err() {
            return Err("skipped: valgrind is not installed".to_owned());
        }
        let dir = std::env::temp_dir().join(format!("vioblk-io-path-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let run = |ios: u64| -> Result<u64, String> {
            let out = dir.join(format!("image.{ios}.out"));
            let o = Command::new("valgrind")
                .env("VIOBLK_DRIVER_IMAGE", &image)
                .arg("--tool=callgrind")
                // Exact guest registers at every memory access: the MMIO fault handler reads
                // and writes the interrupted instruction's registers.
                .arg("--vex-iropt-register-updates=allregs-at-mem-access")
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg("--dump-instr=yes")
                .arg("--dump-line=no")
                .arg("--compress-pos=no")
                .arg(&bin)
                .arg(ios.to_string())
                .arg("1")
                .output()
                .map_err(|e| format!("valgrind could not be started: {e}"))?;
            let stdout = String::from_utf8_lossy(&o.stdout);
            if !o.status.success() {
                return Err(format!(
                    "valgrind {} {ios} on {} failed ({}): {}",
                    bin.display(),
                    image.display(),
                    o.status,
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .filter(|l| !l.starts_with("=="))
                        .take(4)
                        .collect::<Vec<_>>()
                        .join(" | ")
                ));
            }
            let range = stdout
                .lines()
                .find_map(|l| {
                    let rest = l.strip_prefix("qd32_reads: image ")?;
                    let mut words = rest.split_whitespace().rev();
                    let size =
                        u64::from_str_radix(words.next()?.trim_start_matches("0x"), 16).ok()?;
                    let _ = words.next()?;
                    let base =
                        u64::from_str_radix(words.next()?.trim_start_matches("0x"), 16).ok()?;
                    Some((base, base + size))
                })
                .ok_or("qd32_reads did not print the image's address range")?;
            let text =
                std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            instructions_in(&text, range)
        };
        let with_reads = run(IMAGE_CALLGRIND_IOS)?;
        let setup = run(0)?;
        if std::env::var_os("VIOBLK_KEEP_CALLGRIND").is_some() {
            println!("image callgrind outputs kept in {}", dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(with_reads.saturating_sub(setup) as f64 / IMAGE_CALLGRIND_IOS as f64)
    })();
    if let Err(e) = &result
        && !e.starts_with("skipped")
    {
        broken.push(e.clone());
    }
    Some(result)
}

/// Instructions executed at addresses in `range`, from a callgrind output written with
/// `--dump-instr=yes --compress-pos=no` (positions are instruction addresses; a cost line after
/// `calls=` is the inclusive cost of a call and is not counted).
fn instructions_in(text: &str, range: (u64, u64)) -> Result<u64, String> {
    let mut position = 0u64;
    let mut after_calls = false;
    let mut total = 0u64;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        let is_cost = first.starts_with("0x")
            || first.starts_with('+')
            || first.starts_with('-')
            || first == "*";
        if !is_cost {
            after_calls = line.starts_with("calls=");
            continue;
        }
        position = if let Some(hex) = first.strip_prefix("0x") {
            u64::from_str_radix(hex, 16).map_err(|e| format!("bad position {first}: {e}"))?
        } else if let Some(d) = first.strip_prefix('+') {
            position + parse_number(d)?
        } else if let Some(d) = first.strip_prefix('-') {
            position - parse_number(d)?
        } else {
            position
        };
        if after_calls {
            after_calls = false;
            continue;
        }
        let cost = line.split_whitespace().nth(1).map_or(Ok(0), parse_number)?;
        if position >= range.0 && position < range.1 {
            total += cost;
        }
    }
    Ok(total)
}

fn parse_number(text: &str) -> Result<u64, String> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|e| format!("bad number {text}: {e}"))
}
