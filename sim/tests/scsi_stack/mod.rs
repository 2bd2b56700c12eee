//! The stack and the checks the SCSI suites (driver_scsi, driver_scsi_forms) share.

use storport_sys as ffi;
use vioblk_sim::device::DeviceConfig;
use vioblk_sim::stack::{Stack, StackOptions};
use vioblk_sim::target::ScsiCompletion;

/// The driver's stack over a device model configured as `device`.
pub fn start(device: DeviceConfig) -> Stack {
    Stack::start(StackOptions {
        device,
        ..StackOptions::default()
    })
    .expect("the stack starts")
}

/// The stack over the default device model.
pub fn default_stack() -> Stack {
    start(DeviceConfig::default())
}

/// The simulated Storport saw no rule broken.
pub fn assert_clean(stack: &Stack) {
    let violations = stack.violations();
    assert!(
        violations.is_empty(),
        "Storport violations:\n{}",
        violations.join("\n")
    );
}

/// GOOD status, SRB_STATUS_SUCCESS.
pub fn assert_good(c: &ScsiCompletion, what: &str) {
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{what}: {c:?}");
    assert_eq!(c.scsi_status, ffi::SCSISTAT_GOOD, "{what}");
}
