//! Storport's multi-tier reset (`PortOptions::multi_tier_reset`): on an SRB timeout the port sends
//! SRB_FUNCTION_RESET_LOGICAL_UNIT, then SRB_FUNCTION_RESET_DEVICE, then calls HwStorResetBus,
//! moving to the next tier only while the timed-out request is still outstanding. The test
//! miniport answers reset SRBs SUCCESS at once without completing anything (what vioblk did
//! before issue 10), so every tier is tried, and the request left after the last one is reported.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use storport_sim::*;

/// Waits for `cond` before a deadline whose expiry fails the test.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn every_tier_is_tried_while_the_request_stays_outstanding() {
    let p = port(PortOptions {
        timeout_scale: 0.2,
        reset_grace: Duration::from_millis(300),
        multi_tier_reset: true,
        reset_tier_wait: Duration::from_millis(100),
        ..PortOptions::default()
    });
    let (a, dev) = start(&p, bad::NONE, 2);
    dev.answer.store(false, std::sync::atomic::Ordering::SeqCst);
    let _lost = a.submit(Request::data_in(&READ10, 4096).timeout(1));
    wait_for("the 0xF0/1 report after the bus reset", || {
        p.violations()
            .iter()
            .any(|v| v.rule == Rule::NotCompletedAfterReset)
    });
    let log = a.log();
    let tiers: Vec<&str> = log
        .iter()
        .filter_map(|l| l.strip_prefix("multi-tier reset: "))
        .filter(|l| !l.contains("completed with"))
        .collect();
    assert_eq!(
        tiers,
        [
            "SRB_FUNCTION_RESET_LOGICAL_UNIT",
            "SRB_FUNCTION_RESET_DEVICE",
            "HwStorResetBus"
        ],
        "{log:#?}"
    );
    // Each reset SRB itself was answered (SUCCESS), which alone is not enough.
    assert_eq!(
        log.iter()
            .filter(|l| l.ends_with("completed with Some(1)"))
            .count(),
        2,
        "{log:#?}"
    );
}

#[test]
fn without_multi_tier_the_bus_is_reset_at_once() {
    let p = port(PortOptions {
        timeout_scale: 0.2,
        reset_grace: Duration::from_millis(300),
        ..PortOptions::default()
    });
    let (a, dev) = start(&p, bad::NONE, 2);
    dev.answer.store(false, std::sync::atomic::Ordering::SeqCst);
    let _lost = a.submit(Request::data_in(&READ10, 4096).timeout(1));
    wait_for("the 0xF0/1 report after the bus reset", || {
        p.violations()
            .iter()
            .any(|v| v.rule == Rule::NotCompletedAfterReset)
    });
    assert!(
        !a.log().iter().any(|l| l.starts_with("multi-tier reset")),
        "{:#?}",
        a.log()
    );
}

/// A request the miniport never completes, even after the bus reset, is not waited on forever:
/// `wait` (and `execute`) panics once its timeout, the reset grace and the lost-request margin
/// have passed, naming the loss, so a test over a hanging miniport fails instead of hanging.
#[test]
fn waiting_on_a_lost_request_fails_instead_of_hanging() {
    let p = port(PortOptions {
        timeout_scale: 0.2,
        reset_grace: Duration::from_millis(300),
        lost_request_margin: Duration::from_millis(500),
        ..PortOptions::default()
    });
    let (a, dev) = start(&p, bad::NONE, 2);
    dev.answer.store(false, std::sync::atomic::Ordering::SeqCst);
    let lost = a.submit(Request::data_in(&READ10, 4096).timeout(1));
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lost.wait()));
    let message = waited.expect_err("wait gives up on a lost request");
    let message = message
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(message.contains("the miniport lost it"), "{message}");
    assert!(
        message.contains("after Storport reported it not completed after the bus reset"),
        "{message}"
    );
    // Storport's own report of the same request came first.
    assert!(
        p.violations()
            .iter()
            .any(|v| v.rule == Rule::NotCompletedAfterReset),
        "{:#?}",
        p.violations()
    );
    // A request the miniport does complete is waited for as before.
    dev.answer.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        a.execute(Request::data_in(&READ10, 4096).timeout(1))
            .srb_status
            & 0x3F,
        1
    );
}
