//! The PnP surprise-removal sequence (`Adapter::surprise_remove`) with a miniport that supports
//! neither removal control type and keeps a request it will never complete: both controls are
//! skipped, and the request left after the wait is reported (0xF0/1, third parameter 1).
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use std::time::Duration;

use common::*;
use storport_sim::*;

#[test]
fn a_request_left_after_surprise_removal_is_reported() {
    let p = port(PortOptions {
        reset_grace: Duration::from_millis(200),
        ..PortOptions::default()
    });
    let (a, dev) = start(&p, bad::NONE, 2);
    dev.answer.store(false, std::sync::atomic::Ordering::SeqCst);
    let _lost = a.submit(Request::data_in(&READ10, 4096).timeout(600));
    let (adapter, unit) = a.surprise_remove();
    assert_eq!(
        (adapter, unit),
        (None, None),
        "the test miniport supports neither"
    );
    let v = p.violations();
    let left = v
        .iter()
        .find(|x| x.rule == Rule::NotCompletedAfterReset)
        .unwrap_or_else(|| panic!("{v:#?}"));
    assert_eq!((left.code, left.params[0], left.params[3]), (0xF0, 1, 1));
    assert!(a.log().iter().any(|l| l == "PnP: surprise removal"));
}
