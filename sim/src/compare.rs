//! `vioblk-sim compare A.json B.json`: two JSON reports side by side, with the differences that
//! matter called out (a verdict that changed, new failures, throughput and tail latency that
//! moved more than run-to-run noise, jobs that were not the same work).
//!
//! Reads the JSON report (schema `vioblk-sim/report/v1`, [`crate::report`]); formatting only.

use std::fmt::Write as _;

use serde_json::Value;

/// A relative change smaller than this is called noise (5%).
pub const NOISE: f64 = 0.05;

/// Loads one report.
///
/// # Errors
/// A sentence naming the file: unreadable, not JSON, or not a vioblk-sim report.
pub fn load(path: &str) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_owned(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
            std::io::ErrorKind::IsADirectory => "a directory".to_owned(),
            _ => e.to_string(),
        };
        format!("cannot read {path}: {why} (give a report written by vioblk-sim --json)")
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        format!("{path} is not JSON ({e}): give a report written by vioblk-sim --json")
    })?;
    match v["schema"].as_str() {
        Some(crate::report::SCHEMA) => Ok(v),
        Some(other) => Err(format!(
            "{path} is a {other} report; this vioblk-sim reads {}",
            crate::report::SCHEMA
        )),
        None => Err(format!(
            "{path} is JSON but not a vioblk-sim report (no \"schema\"): give a report written \
             by vioblk-sim --json"
        )),
    }
}

/// Which way is better for a figure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn shown(x: Option<f64>) -> String {
    match x {
        None => "-".to_owned(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) if x.abs() >= 100.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

/// The two reports side by side (`names`: how to call them), then the differences that matter.
pub fn compare(a: &Value, b: &Value, names: (&str, &str)) -> String {
    let mut s = String::new();
    let mut findings: Vec<String> = Vec::new();

    // Was it the same work?
    let job_fields = [
        ("threads", "threads"),
        ("outstanding_per_thread", "outstanding"),
        ("io_size", "io_size"),
        ("pattern", "pattern"),
        ("write_percent", "write_percent"),
        ("unmap_percent", "unmap_percent"),
        ("flush_every", "flush_every"),
        ("fua", "fua"),
        ("duration_s", "duration_s"),
        ("ios", "ios"),
    ];
    let mut differs = Vec::new();
    for (key, name) in job_fields {
        if a["job"][key] != b["job"][key] {
            differs.push(format!("{name} {} vs {}", a["job"][key], b["job"][key]));
        }
    }
    for key in [
        "queues",
        "interrupts",
        "logical_block_size",
        "capacity_bytes",
    ] {
        if a["disk"][key] != b["disk"][key] {
            differs.push(format!("{key} {} vs {}", a["disk"][key], b["disk"][key]));
        }
    }
    if a["target"] != b["target"] {
        differs.push(format!("target {} vs {}", a["target"], b["target"]));
    }

    let w = names.0.len().max(names.1.len()).max(12);
    let _ = writeln!(
        s,
        "{:<22}{:>w$}  {:>w$}  {:>10}",
        "", names.0, names.1, "change"
    );
    let verdict = |v: &Value| match v["passed"].as_bool() {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "-",
    };
    let _ = writeln!(s, "{:<22}{:>w$}  {:>w$}", "result", verdict(a), verdict(b));
    match (a["passed"].as_bool(), b["passed"].as_bool()) {
        (Some(true), Some(false)) => {
            findings.push(format!("{} FAILS where {} passed", names.1, names.0))
        }
        (Some(false), Some(true)) => {
            findings.push(format!("{} passes where {} failed", names.1, names.0))
        }
        _ => {}
    }
    let _ = writeln!(
        s,
        "{:<22}{:>w$}  {:>w$}",
        "target",
        a["target"].as_str().unwrap_or("-"),
        b["target"].as_str().unwrap_or("-")
    );

    let rows: [(&str, &[&str], Better); 12] = [
        ("IOPS", &["result", "iops"], Better::Higher),
        ("MiB/s", &["result", "mib_per_s"], Better::Higher),
        (
            "latency p50 (us)",
            &["latency_us", "all", "p50"],
            Better::Lower,
        ),
        (
            "latency p90 (us)",
            &["latency_us", "all", "p90"],
            Better::Lower,
        ),
        (
            "latency p99 (us)",
            &["latency_us", "all", "p99"],
            Better::Lower,
        ),
        (
            "latency p99.9 (us)",
            &["latency_us", "all", "p99_9"],
            Better::Lower,
        ),
        (
            "latency max (us)",
            &["latency_us", "all", "max"],
            Better::Lower,
        ),
        (
            "latency mean (us)",
            &["latency_us", "all", "mean"],
            Better::Lower,
        ),
        ("I/Os", &["result", "ios"], Better::Higher),
        ("errors", &["result", "errors"], Better::Lower),
        ("retries", &["result", "retries"], Better::Lower),
        ("mismatches", &["verification", "mismatches"], Better::Lower),
    ];
    for (name, path, better) in rows {
        let (x, y) = (num(a, path), num(b, path));
        let change = match (x, y) {
            (Some(x), Some(y)) if x == y => "=".to_owned(),
            (Some(x), Some(y)) if x != 0.0 => {
                let r = (y - x) / x;
                let worse = match better {
                    Better::Higher => r < -NOISE,
                    Better::Lower => r > NOISE,
                };
                let better_by = match better {
                    Better::Higher => r > NOISE,
                    Better::Lower => r < -NOISE,
                };
                // Counts of failures are not rates: any increase matters, and is said below.
                let counted = matches!(name, "errors" | "retries" | "mismatches" | "I/Os");
                if !counted && (worse || better_by) {
                    findings.push(format!(
                        "{name} {} by {:.1}% ({} -> {})",
                        if worse { "worse" } else { "better" },
                        r.abs() * 100.0,
                        shown(Some(x)),
                        shown(Some(y))
                    ));
                }
                format!("{:+.1}%", r * 100.0)
            }
            (Some(_), Some(y)) => format!("+{}", shown(Some(y))),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "{name:<22}{:>w$}  {:>w$}  {change:>10}",
            shown(x),
            shown(y)
        );
        if let (true, Some(x), Some(y)) = (matches!(name, "errors" | "mismatches"), x, y)
            && y > x
        {
            findings.push(format!(
                "{} has {} more {name} ({} -> {})",
                names.1,
                y - x,
                shown(Some(x)),
                shown(Some(y))
            ));
        }
    }
    let count = |v: &Value| v["violations"].as_array().map_or(0, Vec::len);
    let _ = writeln!(
        s,
        "{:<22}{:>w$}  {:>w$}",
        "storport violations",
        count(a),
        count(b)
    );
    if count(b) > count(a) {
        findings.push(format!(
            "{} has {} Storport violation(s) ({} has {})",
            names.1,
            count(b),
            names.0,
            count(a)
        ));
    }

    s.push('\n');
    if !differs.is_empty() {
        let _ = writeln!(
            s,
            "not the same work: {} (figures compare different jobs)",
            differs.join(", ")
        );
    }
    if findings.is_empty() {
        let _ = writeln!(
            s,
            "no difference that matters: every figure within {:.0}% and no new failure",
            NOISE * 100.0
        );
    } else {
        s.push_str("differences that matter:\n");
        for f in &findings {
            let _ = writeln!(s, "  - {f}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report(iops: f64, p99: f64, errors: u64, passed: bool) -> Value {
        json!({
            "schema": crate::report::SCHEMA, "passed": passed, "target": "driver",
            "job": { "threads": 2, "outstanding_per_thread": 16, "io_size": 4096,
                     "pattern": "random", "write_percent": 30, "unmap_percent": 0,
                     "flush_every": 0, "fua": false, "duration_s": 3.0, "ios": null },
            "disk": { "queues": 2, "interrupts": "msix", "logical_block_size": 512,
                      "capacity_bytes": 67108864u64 },
            "result": { "iops": iops, "mib_per_s": iops / 256.0, "ios": 3000, "errors": errors,
                        "retries": 0 },
            "latency_us": { "all": { "p50": 100.0, "p90": 150.0, "p99": p99, "p99_9": 400.0,
                                     "max": 900.0, "mean": 110.0 } },
            "verification": { "mismatches": 0 },
            "violations": [],
        })
    }

    #[test]
    fn noise_is_not_a_difference() {
        let t = compare(
            &report(10000.0, 300.0, 0, true),
            &report(10200.0, 310.0, 0, true),
            ("a", "b"),
        );
        let row = format!(
            "{:<22}{:>12}  {:>12}  {:>10}\n",
            "IOPS", "10000", "10200", "+2.0%"
        );
        assert!(t.contains(&row), "{t}");
        let row = format!(
            "{:<22}{:>12}  {:>12}  {:>10}\n",
            "latency p50 (us)", "100", "100", "="
        );
        assert!(t.contains(&row), "{t}");
        assert!(
            t.ends_with("no difference that matters: every figure within 5% and no new failure\n"),
            "{t}"
        );
    }

    #[test]
    fn what_matters_is_called_out() {
        let mut b = report(7000.0, 600.0, 3, false);
        b["job"]["threads"] = json!(4);
        b["violations"] = json!(["STORPORT_VIOLATION 0x1"]);
        let t = compare(&report(10000.0, 300.0, 0, true), &b, ("old", "new"));
        for want in [
            format!("{:<22}{:>12}  {:>12}\n", "result", "PASS", "FAIL"),
            "not the same work: threads 2 vs 4 (figures compare different jobs)\n".into(),
            "  - new FAILS where old passed\n".into(),
            "  - IOPS worse by 30.0% (10000 -> 7000)\n".into(),
            "  - latency p99 (us) worse by 100.0% (300 -> 600)\n".into(),
            "  - new has 3 more errors (0 -> 3)\n".into(),
            "  - new has 1 Storport violation(s) (old has 0)\n".into(),
        ] {
            assert!(t.contains(&want), "want {want:?} in\n{t}");
        }
        let t = compare(&b, &report(10000.0, 300.0, 0, true), ("old", "new"));
        assert!(t.contains("  - new passes where old failed\n"), "{t}");
        assert!(
            t.contains("  - IOPS better by 42.9% (7000 -> 10000)\n"),
            "{t}"
        );
    }
}
