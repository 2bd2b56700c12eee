//! Deterministic fault injection: the device misbehaving on purpose, for the driver's trust tests.
//!
//! A fault is armed with [`FaultMode`] and a count `nth`: the `nth` request the device takes off
//! any queue after arming (1 = the next one) is the one that misbehaves, once; then the switch
//! disarms itself. Requests are counted in the order the queue threads take them, so with one
//! queue, or one request in flight, the victim is exactly determined.

use std::sync::{Mutex, PoisonError};

/// How the device misbehaves on the chosen request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FaultMode {
    /// Behave.
    #[default]
    None,
    /// The used-ring entry carries an id outside the queue (`queue_size + 7`).
    UsedIdOutOfRange,
    /// The used length exceeds the chain's total length by 4096.
    UsedLenTooLarge,
    /// After the used entry, `used.idx` jumps ahead by `queue_size + 1`.
    UsedIdxJump,
    /// The status byte is 0x7F instead of the real status.
    BadStatus,
    /// The request is executed but never completed (no used entry, no interrupt).
    LostRequest,
    /// The device sets DEVICE_NEEDS_RESET (with a configuration interrupt) instead of
    /// completing the request, and stops processing until reset.
    NeedsReset,
}

#[derive(Default)]
struct Armed {
    mode: FaultMode,
    remaining: u64,
    fired: u64,
}

/// The switch.
#[derive(Default)]
pub struct FaultInjector {
    armed: Mutex<Armed>,
}

impl FaultInjector {
    /// Arms `mode` for the `nth` request from now (`nth` 0 is taken as 1).
    pub fn arm(&self, mode: FaultMode, nth: u64) {
        let mut a = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        a.mode = mode;
        a.remaining = nth.max(1);
    }

    /// Counts one request; returns the fault to apply to it, if it is the chosen one.
    pub fn next_request(&self) -> FaultMode {
        let mut a = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        if a.mode == FaultMode::None {
            return FaultMode::None;
        }
        a.remaining -= 1;
        if a.remaining > 0 {
            return FaultMode::None;
        }
        a.fired += 1;
        std::mem::take(&mut a.mode)
    }

    /// How many faults have fired since the device was created.
    pub fn fired(&self) -> u64 {
        self.armed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_on_the_nth_request() {
        let f = FaultInjector::default();
        assert_eq!(f.next_request(), FaultMode::None);
        f.arm(FaultMode::BadStatus, 3);
        assert_eq!(f.next_request(), FaultMode::None);
        assert_eq!(f.next_request(), FaultMode::None);
        assert_eq!(f.next_request(), FaultMode::BadStatus);
        assert_eq!(f.next_request(), FaultMode::None);
        assert_eq!(f.fired(), 1);
    }
}
