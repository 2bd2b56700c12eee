//! What `vioblk-sim` prints: the job report (text and JSON), the `cdb` answer and the `info` page.
//!
//! Formatting only: the data it formats ([`Report`], [`QueueStats`], [`DriverRegistration`])
//! lives in [`crate::stats`] and is re-exported here.
//!
//! # The JSON report (`vioblk-sim --json`), schema `vioblk-sim/report/v1`
//!
//! One object on stdout. Fields are only ever added within a schema version; a removal or a
//! change of meaning bumps the version in `schema`. Times are in seconds unless the name says
//! `_us` (microseconds); sizes in bytes unless the name says otherwise.
//!
//! ```text
//! {
//!   "schema": "vioblk-sim/report/v1",
//!   "passed": bool,                 // no failed request (with faults: recovered), no mismatch,
//!                                   // no violation
//!   "target": string,               // the backend: "ram", "driver", ...
//!   "job": {
//!     "threads": u32, "outstanding_per_thread": u32, "io_size": u32,
//!     "pattern": "random" | "sequential",
//!     "write_percent": u8, "unmap_percent": u8, "flush_every": u32, "fua": bool,
//!     "duration_s": f64 | null, "ios": u64 | null,   // exactly one is non-null
//!     "seed": u64, "verify": bool
//!   },
//!   "disk": {
//!     "vendor": string, "product": string, "revision": string, "serial": string | null,
//!     "logical_block_size": u32, "physical_block_size": u64,
//!     "capacity_blocks": u64, "capacity_bytes": u64,
//!     "write_cache_enabled": bool, "fua_supported": bool,
//!     "unmap_supported": bool, "lbprz": bool,
//!     "max_transfer_blocks": u32 | null, "max_unmap_lba_count": u32 | null,
//!     "queues": u16, "interrupts": "msix" | "msi" | "intx" | "none", "backing": string  // "ram" or a file path
//!   },
//!   "result": {
//!     "elapsed_s": f64, "ios": u64, "reads": u64, "writes": u64, "unmaps": u64,
//!     "flushes": u64, "bytes_read": u64, "bytes_written": u64,
//!     "iops": f64, "mib_per_s": f64,  // MiB = 2^20 bytes
//!     "errors": u64, "error_samples": [string],       // the first 8 failures, described
//!     "failures": [{ "how": string, "count": u64 }],  // failures by status and sense
//!     "retries": u64,                 // sent again after BUSY, TASK SET FULL, UNIT ATTENTION
//!     "transfers": u64,               // SRBs sent for READ/WRITE requests (retries included)
//!     "transfers_per_request": u32    // SRBs one READ/WRITE became (split at the disk's maximum transfer length)
//!   },
//!   "latency_us": {                   // each: null when no such request completed
//!     "read" | "write" | "all": {
//!       "count": u64, "min": f64, "mean": f64, "p50": f64, "p90": f64,
//!       "p99": f64, "p99_9": f64, "max": f64
//!     } | null
//!   },
//!   "verification": {
//!     "enabled": bool, "blocks_verified": u64, "blocks_unchecked": u64, "mismatches": u64,
//!     "samples": [ {                  // the first 8 mismatches
//!       "lba": u64, "expected_generation": u32,    // 0: zeroes expected
//!       "kind": "not_zeroes" | "zeroes" | "no_stamp" | "wrong_lba" | "stale_generation"
//!             | "unexpected_generation" | "checksum",
//!       "found": u64 | null,          // the LBA (wrong_lba) or generation found
//!       "description": string
//!     } ]
//!   },
//!   "queues": null | [ {              // null when the backend has no per-queue counters
//!     "queue": u16, "reads": u64, "writes": u64, "flushes": u64, "discards": u64,
//!     "other": u64, "errors": u64, "bytes_read": u64, "bytes_written": u64,
//!     "notifications": u64 | null, "interrupts": u64 | null
//!   } ],
//!   "violations": [string]            // Storport rule violations, as the port reported them
//!   "threads": [ {                    // each workload thread (diskspd's per-thread table)
//!     "thread": u32, "ios": u64, "reads": u64, "writes": u64, "bytes": u64,
//!     "mean_us": f64, "stdev_us": f64
//!   } ],
//!   "timeline": {                     // successful I/Os completed per interval, from the start
//!     "interval_s": f64, "ios": [u64], "bytes": [u64]
//!   },
//!   "latency_curve_us": [ { "quantile": f64, "us": f64 } ],  // every request; [] if none
//!   "event_log": [ {                  // the system event log entries of the run (StorPortLogError)
//!     "code": u32, "unique_id": u32, "address": [u8; 3], "event": string
//!   } ],
//!   "etw_events": usize,              // ETW events published (`--trace`)
//!   "faults": null | {                 // `--fault`: what was injected and how the driver recovered
//!     "specs": [string], "injected": [string],
//!     "injected_at_ms": [u64],         // when each was injected, from the start of the job
//!     "resets": { "lu": u64, "device": u64, "bus": u64, "detected": u64, "dma_cut": u64 },
//!     "removal_detected": bool, "removed": bool,
//!     "check": { "reads": u32, "as_expected": u32 },  // reads after the job: served, or
//!     "recovered": bool                               // NO_DEVICE after a removal
//!   }
//! }
//! ```

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::scsi::{Sense, scsi_status_name, srb_status_name};
pub use crate::stats::{DriverRegistration, QueueStats, Report, Setup};
use crate::target::{ScsiCompletion, ScsiRequest};
use crate::workload::{LatencySummary, Pattern, Stop, TIMELINE_INTERVAL};

/// The schema name of the JSON report.
pub const SCHEMA: &str = "vioblk-sim/report/v1";

/// What an event log code of vioblk means (`src/hba/events.rs`).
pub fn event_name(code: u32) -> &'static str {
    match code {
        0x0013_0000 => "bad completion",
        0x0013_0001 => "reset ignored, DMA cut",
        0x0013_0002 => "device given up",
        0x0013_0003 => "surprise removal",
        0x0013_0004 => "capacity refused",
        0x0013_0005 => "ring broken",
        0x0013_0006 => "reset started",
        0x0013_0007 => "reset completed",
        0x0013_0008 => "capacity changed",
        0x0013_0009 => "tunable clamped",
        0x0013_000A => "configuration refused",
        _ => "other",
    }
}

/// `bytes` in the largest binary unit that divides it: "64 MiB", "4 KiB", "1000 bytes".
pub fn size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (unit, n) in UNITS {
        if bytes >= n && bytes.is_multiple_of(n) {
            return format!("{} {unit}iB", bytes / n);
        }
    }
    format!("{bytes} bytes")
}

fn latency_json(l: &LatencySummary) -> Value {
    if l.count == 0 {
        return Value::Null;
    }
    json!({
        "count": l.count, "min": l.min_us, "mean": l.mean_us, "p50": l.p50_us,
        "p90": l.p90_us, "p99": l.p99_us, "p99_9": l.p99_9_us, "max": l.max_us,
    })
}

impl Report {
    /// The report as JSON (the schema is in this module's documentation).
    pub fn to_json(&self) -> Value {
        let job = &self.job;
        let disk = &self.disk;
        let r = &self.result;
        let (duration_s, ios) = match job.stop {
            Stop::Duration(d) => (Some(d.as_secs_f64()), None),
            Stop::Ios(n) => (None, Some(n)),
        };
        let samples: Vec<Value> = r
            .verification
            .samples
            .iter()
            .map(|m| {
                use crate::workload::MismatchKind as K;
                let found = match m.kind {
                    K::WrongLba { found } | K::Stale { found } | K::Unexpected { found } => {
                        Some(found)
                    }
                    _ => None,
                };
                json!({
                    "lba": m.lba, "expected_generation": m.expected, "kind": m.kind_name(),
                    "found": found, "description": m.to_string(),
                })
            })
            .collect();
        let queues = self.queues.as_ref().map(|qs| {
            qs.iter()
                .map(|q| {
                    json!({
                        "queue": q.queue, "reads": q.reads, "writes": q.writes,
                        "flushes": q.flushes, "discards": q.discards, "other": q.other,
                        "errors": q.errors, "bytes_read": q.bytes_read,
                        "bytes_written": q.bytes_written, "notifications": q.notifications,
                        "interrupts": q.interrupts,
                    })
                })
                .collect::<Vec<_>>()
        });
        json!({
            "schema": SCHEMA,
            "passed": self.passed(),
            "target": self.setup.target,
            "job": {
                "threads": job.threads,
                "outstanding_per_thread": job.outstanding,
                "io_size": job.io_size,
                "pattern": match job.pattern { Pattern::Random => "random", Pattern::Sequential => "sequential" },
                "write_percent": job.mix.write_percent,
                "unmap_percent": job.mix.unmap_percent,
                "flush_every": job.flush_every,
                "fua": job.fua,
                "duration_s": duration_s,
                "ios": ios,
                "seed": job.seed,
                "verify": job.verify,
            },
            "disk": {
                "vendor": disk.vendor,
                "product": disk.product,
                "revision": disk.revision,
                "serial": disk.serial,
                "logical_block_size": disk.logical_block_size,
                "physical_block_size": disk.physical_block_size(),
                "capacity_blocks": disk.capacity_blocks,
                "capacity_bytes": disk.capacity_bytes(),
                "write_cache_enabled": disk.write_cache_enabled,
                "fua_supported": disk.fua_supported,
                "unmap_supported": disk.unmap_supported(),
                "lbprz": disk.lbprz,
                "max_transfer_blocks": disk.limits.map(|l| l.max_transfer_blocks),
                "max_unmap_lba_count": disk.limits.map(|l| l.max_unmap_lba_count),
                "queues": self.setup.queues,
                "interrupts": self.setup.interrupts,
                "backing": self.setup.backing,
            },
            "result": {
                "elapsed_s": r.elapsed.as_secs_f64(),
                "ios": r.counts.ios(),
                "reads": r.counts.reads,
                "writes": r.counts.writes,
                "unmaps": r.counts.unmaps,
                "flushes": r.counts.flushes,
                "bytes_read": r.counts.bytes_read,
                "bytes_written": r.counts.bytes_written,
                "iops": r.iops(),
                "mib_per_s": r.mib_per_s(),
                "errors": r.counts.errors,
                "error_samples": r.errors,
                "failures": r.failures.iter().map(|(how, n)| json!({ "how": how, "count": n })).collect::<Vec<_>>(),
                "retries": r.counts.retries,
                "transfers": r.counts.transfers,
                "transfers_per_request": r.transfers_per_request,
            },
            "latency_us": {
                "read": latency_json(&r.latencies.read),
                "write": latency_json(&r.latencies.write),
                "all": latency_json(&r.latencies.all),
            },
            "verification": {
                "enabled": r.verification.enabled,
                "blocks_verified": r.verification.blocks_verified,
                "blocks_unchecked": r.verification.blocks_unchecked,
                "mismatches": r.verification.mismatches,
                "samples": samples,
            },
            "queues": queues,
            "violations": self.violations,
            "threads": r.threads.iter().map(|t| json!({
                "thread": t.thread, "ios": t.counts.ios(), "reads": t.counts.reads,
                "writes": t.counts.writes,
                "bytes": t.counts.bytes_read + t.counts.bytes_written,
                "mean_us": t.mean_us, "stdev_us": t.stdev_us,
            })).collect::<Vec<_>>(),
            "timeline": {
                "interval_s": TIMELINE_INTERVAL.as_secs_f64(),
                "ios": r.timeline.iter().map(|i| i.ios).collect::<Vec<_>>(),
                "bytes": r.timeline.iter().map(|i| i.bytes).collect::<Vec<_>>(),
            },
            "latency_curve_us": r.latency_curve.iter()
                .map(|(q, us)| json!({ "quantile": q, "us": us }))
                .collect::<Vec<_>>(),
            "event_log": self.event_log.iter().map(|e| json!({
                "code": e.code,
                "unique_id": e.unique_id,
                "address": [e.address.0, e.address.1, e.address.2],
                "event": event_name(e.code),
            })).collect::<Vec<_>>(),
            "etw_events": self.etw_events,
            "faults": self.faults.as_ref().map_or(Value::Null, crate::faults::FaultReport::to_json),
        })
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        let job = &self.job;
        let disk = &self.disk;
        let r = &self.result;
        let mut s = String::new();
        let stop = match job.stop {
            Stop::Duration(d) => format!("{:.2} s", d.as_secs_f64()),
            Stop::Ios(n) => format!("{n} I/Os"),
        };
        let pattern = match job.pattern {
            Pattern::Random => "random",
            Pattern::Sequential => "sequential",
        };
        let mut mix = format!("{}% writes", job.mix.write_percent);
        if job.mix.unmap_percent > 0 {
            let _ = write!(mix, ", {}% unmaps", job.mix.unmap_percent);
        }
        if job.flush_every > 0 {
            let _ = write!(mix, ", a flush every {} writes", job.flush_every);
        }
        if job.fua {
            mix.push_str(", FUA");
        }
        let _ = writeln!(
            s,
            "job:     {} threads x {} outstanding, {} {pattern}, {mix}, {stop}, seed {}",
            job.threads,
            job.outstanding,
            size(u64::from(job.io_size)),
            job.seed
        );
        let mut features = vec![format!(
            "write cache {}",
            if disk.write_cache_enabled {
                "on"
            } else {
                "off"
            }
        )];
        if disk.unmap_supported() {
            features.push(if disk.lbprz {
                "UNMAP (LBPRZ)".into()
            } else {
                "UNMAP".into()
            });
        }
        if disk.fua_supported {
            features.push("FUA".into());
        }
        let _ = writeln!(
            s,
            "disk:    {} {} {}, serial {}, {} x {}-byte blocks ({}), {}",
            disk.vendor,
            disk.product,
            disk.revision,
            disk.serial.as_deref().unwrap_or("none"),
            disk.capacity_blocks,
            disk.logical_block_size,
            size(disk.capacity_bytes()),
            features.join(", ")
        );
        let _ = writeln!(
            s,
            "setup:   target {}, {} queue{}, interrupts {}, backing {}",
            self.setup.target,
            self.setup.queues,
            if self.setup.queues == 1 { "" } else { "s" },
            self.setup.interrupts,
            self.setup.backing
        );
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        let _ = writeln!(s, "\n{:<10}{:>12}{:>12}{:>10}", "", "I/Os", "IOPS", "MiB/s");
        let mib = |b: u64| b as f64 / secs / (1024.0 * 1024.0);
        let row = |s: &mut String, name: &str, n: u64, bytes: Option<u64>| {
            let _ = write!(s, "{name:<10}{n:>12}{:>12.1}", n as f64 / secs);
            match bytes {
                Some(b) => {
                    let _ = writeln!(s, "{:>10.2}", mib(b));
                }
                None => s.push('\n'),
            }
        };
        row(
            &mut s,
            "total",
            r.counts.ios(),
            Some(r.counts.bytes_read + r.counts.bytes_written),
        );
        row(&mut s, "reads", r.counts.reads, Some(r.counts.bytes_read));
        row(
            &mut s,
            "writes",
            r.counts.writes,
            Some(r.counts.bytes_written),
        );
        if r.counts.unmaps > 0 || job.mix.unmap_percent > 0 {
            row(&mut s, "unmaps", r.counts.unmaps, None);
        }
        if r.counts.flushes > 0 || job.flush_every > 0 {
            row(&mut s, "flushes", r.counts.flushes, None);
        }
        if r.counts.retries > 0 {
            let _ = writeln!(s, "{:<10}{:>12}", "retries", r.counts.retries);
        }
        if r.transfers_per_request > 1 {
            let _ = writeln!(
                s,
                "split     each request larger than the disk's maximum transfer length became {} \
                 transfers ({} SRBs in all), as classpnp splits it",
                r.transfers_per_request, r.counts.transfers
            );
        }
        let _ = writeln!(
            s,
            "{:<10}{:>12}   in {:.3} s",
            "errors", r.counts.errors, secs
        );
        for e in &r.errors {
            let _ = writeln!(s, "  {e}");
        }
        s.push_str(&thread_table(r, &self.setup.backing, disk.capacity_bytes()));

        let _ = writeln!(
            s,
            "\n{:<10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "latency", "count", "min", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        for (name, l) in [
            ("read", &r.latencies.read),
            ("write", &r.latencies.write),
            ("all", &r.latencies.all),
        ] {
            if l.count == 0 {
                continue;
            }
            let _ = writeln!(
                s,
                "{:<10}{:>10}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}",
                format!("{name} (us)"),
                l.count,
                l.min_us,
                l.p50_us,
                l.p90_us,
                l.p99_us,
                l.p99_9_us,
                l.max_us,
                l.mean_us
            );
        }

        let v = &r.verification;
        s.push('\n');
        if v.enabled {
            let _ = write!(
                s,
                "verify:  {} blocks verified, {} mismatch{}",
                v.blocks_verified,
                v.mismatches,
                if v.mismatches == 1 { "" } else { "es" }
            );
            if v.blocks_unchecked > 0 {
                let _ = write!(
                    s,
                    " ({} blocks read with unknown contents)",
                    v.blocks_unchecked
                );
            }
            s.push('\n');
            for m in &v.samples {
                let _ = writeln!(s, "  {m}");
            }
            if v.mismatches > v.samples.len() as u64 {
                let _ = writeln!(
                    s,
                    "  ... and {} more",
                    v.mismatches - v.samples.len() as u64
                );
            }
        } else {
            s.push_str("verify:  off\n");
        }

        if let Some(queues) = &self.queues {
            let _ = writeln!(
                s,
                "\n{:<7}{:>10}{:>10}{:>9}{:>10}{:>8}{:>8}{:>12}{:>12}",
                "queue",
                "reads",
                "writes",
                "flushes",
                "discards",
                "other",
                "errors",
                "notifies",
                "interrupts"
            );
            let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            for q in queues {
                let _ = writeln!(
                    s,
                    "{:<7}{:>10}{:>10}{:>9}{:>10}{:>8}{:>8}{:>12}{:>12}",
                    q.queue,
                    q.reads,
                    q.writes,
                    q.flushes,
                    q.discards,
                    q.other,
                    q.errors,
                    opt(q.notifications),
                    opt(q.interrupts)
                );
            }
        }

        if let Some(f) = &self.faults {
            s.push_str(&f.to_text());
            for (how, n) in &r.failures {
                let _ = writeln!(s, "  failed:     {n} x {how}");
            }
        }
        if self.event_log.is_empty() {
            s.push_str("\nevent log: no entries\n");
        } else {
            let n = self.event_log.len();
            let _ = writeln!(
                s,
                "\nevent log: {n} {}",
                if n == 1 { "entry" } else { "entries" }
            );
            for e in &self.event_log {
                let _ = writeln!(
                    s,
                    "  - {:#010x} id {} ({}:{}:{}): {}",
                    e.code,
                    e.unique_id,
                    e.address.0,
                    e.address.1,
                    e.address.2,
                    event_name(e.code)
                );
            }
        }
        if self.etw_events > 0 {
            let _ = writeln!(s, "etw: {} events", self.etw_events);
        }
        if self.violations.is_empty() {
            s.push_str("\nstorport: no violations\n");
        } else {
            let _ = writeln!(s, "\nstorport: {} violation(s)", self.violations.len());
            for v in &self.violations {
                for (i, line) in v.lines().enumerate() {
                    let _ = writeln!(s, "{}{line}", if i == 0 { "  - " } else { "    " });
                }
            }
        }
        let _ = writeln!(
            s,
            "result:  {}",
            if self.passed() { "PASS" } else { "FAIL" }
        );
        s
    }
}

/// diskspd's "Total IO" table: one row per workload thread, then the total.
fn thread_table(r: &crate::workload::WorkloadResult, backing: &str, capacity: u64) -> String {
    if r.threads.is_empty() {
        return String::new();
    }
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let rule = "-".repeat(103);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nTotal IO (AvgLat and LatStdDev in ms)\n{:>6} | {:>15} | {:>12} | {:>10} | {:>10} | {:>8} | {:>9} | file",
        "thread", "bytes", "I/Os", "MiB/s", "I/O per s", "AvgLat", "LatStdDev"
    );
    let _ = writeln!(s, "{rule}");
    let file = format!("{backing} ({})", size(capacity));
    for t in &r.threads {
        let bytes = t.counts.bytes_read + t.counts.bytes_written;
        let _ = writeln!(
            s,
            "{:>6} | {:>15} | {:>12} | {:>10.2} | {:>10.2} | {:>8.3} | {:>9.3} | {file}",
            t.thread,
            bytes,
            t.counts.ios(),
            bytes as f64 / secs / (1024.0 * 1024.0),
            t.counts.ios() as f64 / secs,
            t.mean_us / 1000.0,
            t.stdev_us / 1000.0,
        );
    }
    let _ = writeln!(s, "{rule}");
    let bytes = r.counts.bytes_read + r.counts.bytes_written;
    let _ = writeln!(
        s,
        "{:>6}   {:>15} | {:>12} | {:>10.2} | {:>10.2} | {:>8.3} |",
        "total:",
        bytes,
        r.counts.ios(),
        bytes as f64 / secs / (1024.0 * 1024.0),
        r.counts.ios() as f64 / secs,
        r.latencies.all.mean_us / 1000.0,
    );
    s
}

/// A hex dump in the style of sg_raw: offset, 16 bytes in two groups of 8, then ASCII.
pub fn hex_dump(bytes: &[u8]) -> String {
    let mut s = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        let _ = write!(s, " {:04x}   ", i * 16);
        for j in 0..16 {
            match line.get(j) {
                Some(b) => {
                    let _ = write!(s, "{b:02x} ");
                }
                None => s.push_str("   "),
            }
            if j == 7 {
                s.push(' ');
            }
        }
        s.push_str("  ");
        s.extend(line.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        }));
        s.push('\n');
    }
    s
}

/// The answer to `vioblk-sim cdb`: statuses, sense in words, and the data in.
pub fn cdb_result(request: &ScsiRequest, c: &ScsiCompletion) -> String {
    let mut s = String::new();
    let cdb: Vec<String> = request.cdb.iter().map(|b| format!("{b:02x}")).collect();
    let _ = writeln!(s, "CDB:         {}", cdb.join(" "));
    let mut flags = Vec::new();
    if c.srb_status & storport::ffi::SRB_STATUS_AUTOSENSE_VALID != 0 {
        flags.push("AUTOSENSE_VALID");
    }
    if c.srb_status & storport::ffi::SRB_STATUS_QUEUE_FROZEN != 0 {
        flags.push("QUEUE_FROZEN");
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!(" | {}", flags.join(" | "))
    };
    let _ = writeln!(
        s,
        "SRB status:  {}{flags} (0x{:02x})",
        srb_status_name(c.srb_status),
        c.srb_status
    );
    let _ = writeln!(
        s,
        "SCSI status: {} (0x{:02x})",
        scsi_status_name(c.scsi_status),
        c.scsi_status
    );
    if !c.sense.is_empty() {
        let hex: Vec<String> = c.sense.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(s, "sense:       {}", hex.join(" "));
        match Sense::parse(&c.sense) {
            Some(sense) => {
                let _ = write!(s, "             {sense}");
                if let Some(info) = sense.information {
                    let _ = write!(s, ", information 0x{info:x}");
                }
                s.push('\n');
            }
            None => s.push_str("             (not sense data SPC-4 defines)\n"),
        }
    }
    if request.data_out.is_empty() {
        let _ = writeln!(
            s,
            "data in:     {} of {} bytes",
            c.data_transfer_length, request.data_in_len
        );
        s.push_str(&hex_dump(&c.data_in));
    } else {
        let _ = writeln!(
            s,
            "data out:    {} of {} bytes transferred",
            c.data_transfer_length,
            request.data_out.len()
        );
    }
    s
}

fn bit_names(value: u32, names: &[(u32, &str)]) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|(_, n)| (*n).to_owned())
        .collect();
    let rest = names.iter().fold(value, |v, (bit, _)| v & !bit);
    if rest != 0 {
        parts.push(format!("0x{rest:x}"));
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(" | ")
    }
}

impl DriverRegistration {
    /// The `info` page.
    pub fn to_text(&self) -> String {
        use storport::ffi as f;
        let mut s = String::new();
        let _ = writeln!(s, "DriverEntry returned 0x{:08x}", self.driver_entry_status);
        let _ = writeln!(
            s,
            "\nHW_INITIALIZATION_DATA ({} bytes)",
            self.hw_initialization_data_size
        );
        let _ = writeln!(s, "  callbacks:");
        let width = self
            .callbacks
            .iter()
            .map(|(n, _)| n.len())
            .max()
            .unwrap_or(0);
        for (name, set) in &self.callbacks {
            let _ = writeln!(s, "    {name:<width$}  {}", if *set { "set" } else { "-" });
        }
        let _ = writeln!(
            s,
            "  DeviceExtensionSize       {}",
            self.device_extension_size
        );
        let _ = writeln!(
            s,
            "  SpecificLuExtensionSize   {}",
            self.specific_lu_extension_size
        );
        let _ = writeln!(s, "  SrbExtensionSize          {}", self.srb_extension_size);
        let srb_types = bit_names(
            self.srb_type_flags,
            &[
                (f::SRB_TYPE_FLAG_SCSI_REQUEST_BLOCK, "SCSI_REQUEST_BLOCK"),
                (
                    f::SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK,
                    "STORAGE_REQUEST_BLOCK",
                ),
            ],
        );
        let _ = writeln!(
            s,
            "  SrbTypeFlags              0x{:x} ({srb_types})",
            self.srb_type_flags
        );
        let features = bit_names(
            self.feature_support,
            &[
                (f::STOR_FEATURE_VIRTUAL_MINIPORT, "VIRTUAL_MINIPORT"),
                (f::STOR_FEATURE_ATA_PASS_THROUGH, "ATA_PASS_THROUGH"),
                (
                    f::STOR_FEATURE_FULL_PNP_DEVICE_CAPABILITIES,
                    "FULL_PNP_DEVICE_CAPABILITIES",
                ),
                (f::STOR_FEATURE_DUMP_POINTERS, "DUMP_POINTERS"),
                (
                    f::STOR_FEATURE_DEVICE_NAME_NO_SUFFIX,
                    "DEVICE_NAME_NO_SUFFIX",
                ),
                (f::STOR_FEATURE_DUMP_RESUME_CAPABLE, "DUMP_RESUME_CAPABLE"),
                (
                    f::STOR_FEATURE_DEVICE_DESCRIPTOR_FROM_ATA_INFO_VPD,
                    "DEVICE_DESCRIPTOR_FROM_ATA_INFO_VPD",
                ),
                (f::STOR_FEATURE_EXTRA_IO_INFORMATION, "EXTRA_IO_INFORMATION"),
                (
                    f::STOR_FEATURE_ADAPTER_CONTROL_PRE_FINDADAPTER,
                    "ADAPTER_CONTROL_PRE_FINDADAPTER",
                ),
                (
                    f::STOR_FEATURE_ADAPTER_NOT_REQUIRE_IO_PORT,
                    "ADAPTER_NOT_REQUIRE_IO_PORT",
                ),
                (
                    f::STOR_FEATURE_DUMP_16_BYTE_ALIGNMENT,
                    "DUMP_16_BYTE_ALIGNMENT",
                ),
                (
                    f::STOR_FEATURE_SET_ADAPTER_INTERFACE_TYPE,
                    "SET_ADAPTER_INTERFACE_TYPE",
                ),
                (f::STOR_FEATURE_DUMP_INFO, "DUMP_INFO"),
                (
                    f::STOR_FEATURE_DMA_ALLOCATION_NO_BOUNDARY,
                    "DMA_ALLOCATION_NO_BOUNDARY",
                ),
                (f::STOR_FEATURE_NVME, "NVME"),
                (f::STOR_FEATURE_REPORT_INTERNAL_DATA, "REPORT_INTERNAL_DATA"),
                (f::STOR_FEATURE_EARLY_DUMP, "EARLY_DUMP"),
            ],
        );
        let _ = writeln!(
            s,
            "  FeatureSupport            0x{:x} ({features})",
            self.feature_support
        );
        let interface = match self.adapter_interface_type {
            5 => "PCIBus",
            1 => "Internal",
            _ => "other",
        };
        let _ = writeln!(
            s,
            "  AdapterInterfaceType      {} ({interface})",
            self.adapter_interface_type
        );
        let map = match self.map_buffers {
            f::STOR_MAP_NO_BUFFERS => "STOR_MAP_NO_BUFFERS",
            f::STOR_MAP_ALL_BUFFERS => "STOR_MAP_ALL_BUFFERS",
            f::STOR_MAP_NON_READ_WRITE_BUFFERS => "STOR_MAP_NON_READ_WRITE_BUFFERS",
            f::STOR_MAP_ALL_BUFFERS_INCLUDING_READ_WRITE => {
                "STOR_MAP_ALL_BUFFERS_INCLUDING_READ_WRITE"
            }
            _ => "unknown",
        };
        let _ = writeln!(
            s,
            "  MapBuffers                {} ({map})",
            self.map_buffers
        );
        let _ = writeln!(
            s,
            "  NumberOfAccessRanges      {}",
            self.number_of_access_ranges
        );
        for (name, on) in &self.flags {
            let _ = writeln!(s, "  {name:<25} {}", if *on { "TRUE" } else { "FALSE" });
        }
        if !self.extra.is_empty() {
            s.push('\n');
            let width = self.extra.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
            for (name, value) in &self.extra {
                let _ = writeln!(s, "  {name:<width$}  {value}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::class::DiskGeometry;
    use crate::workload::{
        Counts, Interval, Latencies, Mismatch, MismatchKind, Mix, ThreadSummary, Verification,
        WorkloadOptions, WorkloadResult,
    };

    fn report() -> Report {
        let latency = LatencySummary {
            count: 3,
            min_us: 10.0,
            mean_us: 20.0,
            p50_us: 15.0,
            p90_us: 30.0,
            p99_us: 35.0,
            p99_9_us: 35.0,
            max_us: 35.0,
        };
        Report {
            setup: Setup {
                target: "ram".into(),
                queues: 2,
                interrupts: "msix".into(),
                backing: "ram".into(),
            },
            job: WorkloadOptions {
                stop: Stop::Ios(3),
                mix: Mix {
                    write_percent: 30,
                    unmap_percent: 0,
                },
                ..WorkloadOptions::default()
            },
            disk: DiskGeometry {
                vendor: "VIOBLK".into(),
                product: "RAM disk".into(),
                revision: "0001".into(),
                serial: Some("RAM0001".into()),
                logical_block_size: 512,
                capacity_blocks: 131_072,
                write_cache_enabled: true,
                ..DiskGeometry::default()
            },
            result: WorkloadResult {
                elapsed: Duration::from_secs(2),
                counts: Counts {
                    reads: 2,
                    writes: 1,
                    bytes_read: 8192,
                    bytes_written: 4096,
                    ..Counts::default()
                },
                latencies: Latencies {
                    read: latency,
                    write: latency,
                    all: latency,
                },
                errors: Vec::new(),
                failures: Vec::new(),
                transfers_per_request: 1,
                verification: Verification {
                    enabled: true,
                    blocks_verified: 16,
                    blocks_unchecked: 0,
                    mismatches: 1,
                    samples: vec![Mismatch {
                        lba: 42,
                        expected: 3,
                        kind: MismatchKind::Stale { found: 2 },
                    }],
                },
                threads: vec![
                    ThreadSummary {
                        thread: 0,
                        counts: Counts {
                            reads: 2,
                            bytes_read: 8192,
                            ..Counts::default()
                        },
                        mean_us: 12.5,
                        stdev_us: 2.5,
                    },
                    ThreadSummary {
                        thread: 1,
                        counts: Counts {
                            writes: 1,
                            bytes_written: 4096,
                            ..Counts::default()
                        },
                        mean_us: 35.0,
                        stdev_us: 0.0,
                    },
                ],
                timeline: vec![
                    Interval {
                        ios: 2,
                        bytes: 8192,
                    },
                    Interval::default(),
                    Interval {
                        ios: 1,
                        bytes: 4096,
                    },
                ],
                latency_curve: vec![(0.0, 10.0), (0.5, 15.0), (0.9, 30.0), (1.0, 35.0)],
            },
            queues: Some(vec![QueueStats {
                queue: 0,
                reads: 2,
                writes: 1,
                ..QueueStats::default()
            }]),
            violations: vec!["STORPORT_VIOLATION 0x1: lock order\n  held: StartIo".into()],
            faults: None,
            event_log: vec![storport_sim::EventLogEntry {
                address: (0, 0, 0),
                code: 0x0013_0006,
                unique_id: 3,
            }],
            etw_events: 0,
        }
    }

    #[test]
    fn json_follows_the_schema() {
        let j = report().to_json();
        assert_eq!(j["schema"], SCHEMA);
        assert_eq!(j["passed"], false);
        assert_eq!(j["job"]["pattern"], "random");
        assert_eq!(j["job"]["ios"], 3);
        assert!(j["job"]["duration_s"].is_null());
        assert_eq!(j["disk"]["capacity_bytes"], 64u64 << 20);
        assert_eq!(j["result"]["ios"], 3);
        assert_eq!(j["result"]["iops"], 1.5);
        assert_eq!(j["latency_us"]["read"]["p99_9"], 35.0);
        assert_eq!(j["verification"]["samples"][0]["kind"], "stale_generation");
        assert_eq!(j["verification"]["samples"][0]["found"], 2);
        assert_eq!(
            j["verification"]["samples"][0]["description"],
            "LBA 42: expected generation 3, found generation 2 (stale data)"
        );
        assert!(j["queues"][0]["interrupts"].is_null());
        assert_eq!(j["violations"].as_array().map(Vec::len), Some(1));
        assert_eq!(j["event_log"][0]["code"], 0x0013_0006);
        assert_eq!(j["event_log"][0]["unique_id"], 3);
        assert_eq!(j["event_log"][0]["event"], "reset started");
        let text = report().to_text();
        assert!(
            text.contains("0x00130006 id 3 (0:0:0): reset started"),
            "{text}"
        );
        // Every top-level key the schema documents, and no other.
        let keys: Vec<&str> = j
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = [
            "schema",
            "passed",
            "target",
            "job",
            "disk",
            "result",
            "latency_us",
            "verification",
            "queues",
            "violations",
            "event_log",
            "etw_events",
            "faults",
            "threads",
            "timeline",
            "latency_curve_us",
        ];
        want.sort_unstable();
        assert_eq!(j["threads"][1]["bytes"], 4096);
        assert_eq!(j["threads"][0]["stdev_us"], 2.5);
        assert_eq!(j["timeline"]["interval_s"], 0.1);
        assert_eq!(j["timeline"]["ios"], json!([2, 0, 1]));
        assert_eq!(
            j["latency_curve_us"][3],
            json!({ "quantile": 1.0, "us": 35.0 })
        );
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, want);
    }

    #[test]
    fn text_report_has_the_numbers() {
        let t = report().to_text();
        assert!(
            t.contains("job:     2 threads x 16 outstanding, 4 KiB random, 30% writes, 3 I/Os"),
            "{t}"
        );
        assert!(t.contains("disk:    VIOBLK RAM disk 0001, serial RAM0001, 131072 x 512-byte blocks (64 MiB), write cache on"), "{t}");
        assert!(
            t.contains("total                3         1.5      0.01"),
            "{t}"
        );
        assert!(t.contains("read (us)          3      10.0      15.0      30.0      35.0      35.0      35.0      20.0"), "{t}");
        assert!(t.contains("verify:  16 blocks verified, 1 mismatch\n  LBA 42: expected generation 3, found generation 2 (stale data)"), "{t}");
        assert!(t.contains("storport: 1 violation(s)\n  - STORPORT_VIOLATION 0x1: lock order\n      held: StartIo"), "{t}");
        assert!(t.ends_with("result:  FAIL\n"), "{t}");
        // diskspd's per-thread table, AvgLat and LatStdDev in milliseconds.
        assert!(t.contains("\nTotal IO (AvgLat and LatStdDev in ms)\nthread |           bytes |         I/Os |      MiB/s |  I/O per s |   AvgLat | LatStdDev | file\n"), "{t}");
        assert!(t.contains("\n     0 |            8192 |            2 |       0.00 |       1.00 |    0.013 |     0.003 | ram (64 MiB)\n"), "{t}");
        assert!(t.contains("\n     1 |            4096 |            1 |       0.00 |       0.50 |    0.035 |     0.000 | ram (64 MiB)\n"), "{t}");
        assert!(
            t.contains(
                "\ntotal:             12288 |            3 |       0.01 |       1.50 |    0.020 |"
            ),
            "{t}"
        );
    }

    #[test]
    fn cdb_answer_decodes_sense() {
        let request = ScsiRequest::data_in(vec![0x12, 0, 0, 0, 36, 0], 36);
        let mut sense = vec![0u8; 18];
        sense[0] = 0x70;
        sense[2] = 5;
        sense[12] = 0x24;
        let c = ScsiCompletion {
            srb_status: 0x84,
            scsi_status: 2,
            sense,
            ..ScsiCompletion::default()
        };
        let text = cdb_result(&request, &c);
        assert!(
            text.contains("SRB status:  ERROR | AUTOSENSE_VALID (0x84)\n"),
            "{text}"
        );
        assert!(
            text.contains("SCSI status: CHECK CONDITION (0x02)\n"),
            "{text}"
        );
        assert!(
            text.contains("ILLEGAL REQUEST: INVALID FIELD IN CDB (24h/00h)"),
            "{text}"
        );
        assert_eq!(
            hex_dump(b"VIOBLK  RAM disk\x00\x01"),
            " 0000   56 49 4f 42 4c 4b 20 20  52 41 4d 20 64 69 73 6b   VIOBLK  RAM disk\n \
             0010   00 01                                              ..\n"
        );
    }

    #[test]
    fn registration_page_names_the_flags() {
        let r = DriverRegistration {
            callbacks: vec![
                ("HwInitialize".into(), true),
                ("HwAdapterState".into(), false),
            ],
            srb_type_flags: 2,
            feature_support: 0x201,
            map_buffers: 2,
            adapter_interface_type: 5,
            ..DriverRegistration::default()
        };
        let t = r.to_text();
        assert!(
            t.contains("    HwInitialize    set\n    HwAdapterState  -\n"),
            "{t}"
        );
        assert!(
            t.contains("SrbTypeFlags              0x2 (STORAGE_REQUEST_BLOCK)"),
            "{t}"
        );
        assert!(
            t.contains("(VIRTUAL_MINIPORT | ADAPTER_NOT_REQUIRE_IO_PORT)"),
            "{t}"
        );
        assert!(
            t.contains("MapBuffers                2 (STOR_MAP_NON_READ_WRITE_BUFFERS)"),
            "{t}"
        );
    }
}
