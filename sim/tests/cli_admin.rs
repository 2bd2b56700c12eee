//! `vioblk-sim` with the administrator's knobs (issue 17 items 2, 4, 5): `--param NAME=VALUE`
//! sets a registry tunable the driver reads, the report lists the run's event log entries, and
//! `info` shows the unit-control and tracing callbacks registered.
#![forbid(unsafe_code)]

use std::process::{Command, Output};

fn vioblk_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vioblk-sim"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn info_shows_unit_control_and_tracing_registered() {
    let out = vioblk_sim(&["info"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let info = text(&out.stdout);
    for callback in ["HwUnitControl", "HwTracingEnabled"] {
        assert!(
            info.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [callback, "set"]),
            "{callback} not registered:\n{info}"
        );
    }
    // Hibernation: the dump pointers and resume through the dump stack are declared.
    assert!(
        info.lines()
            .any(|l| l.trim_start().starts_with("FeatureSupport")
                && l.contains("(DUMP_POINTERS | DUMP_RESUME_CAPABLE)")),
        "{info}"
    );
}

#[test]
fn a_clamped_param_is_in_the_reports_event_log() {
    let out = vioblk_sim(&[
        "--ios",
        "100",
        "--no-progress",
        "--json",
        "--param",
        "NumberOfQueues=99",
        "--param=MaxTransferKB=64",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let log = report["event_log"].as_array().expect("an event log");
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["code"], 0x0013_0009);
    assert_eq!(log[0]["unique_id"], 1);
    assert_eq!(log[0]["event"], "tunable clamped");

    let out = vioblk_sim(&["--ios", "100", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("event log: no entries"));
}

#[test]
fn trace_publishes_etw_events() {
    let out = vioblk_sim(&["--ios", "50", "--no-progress", "--json", "--trace"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        report["etw_events"].as_u64().unwrap() >= 50,
        "{}",
        report["etw_events"]
    );
    let out = vioblk_sim(&["--ios", "50", "--no-progress", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["etw_events"], 0);
}

#[test]
fn a_bad_param_is_a_usage_error() {
    for (arg, shown) in [
        ("NumberOfQueues", "NumberOfQueues"),
        ("=4", "=4"),
        ("QueueDepth=-1", "QueueDepth=-1"),
        ("QueueDepth=4294967296", "QueueDepth=4294967296"),
        ("Queue Depth=4", "Queue Depth=4"),
    ] {
        let out = vioblk_sim(&["--param", arg]);
        assert_eq!(out.status.code(), Some(2), "{arg}");
        assert_eq!(
            text(&out.stderr),
            format!(
                "error: --param must be NAME=VALUE with VALUE a number from 0 to 4294967295, \
                 got '{shown}'\n"
            ),
            "{arg}"
        );
    }
}
