//! Fault injection: the device misbehaving on purpose, for the driver's trust tests and
//! `vioblk-sim run --fault`.
//!
//! A request fault is armed with [`FaultMode`], an optional queue and a count `nth`: the `nth`
//! request the device takes off that queue (or any queue) after arming (1 = the next one) is the
//! one that misbehaves, once; then the switch disarms itself. Requests are counted in the order
//! the queue threads take them, so with one queue, or one request in flight, the victim is
//! exactly determined. Device faults (a reset ignored, surprise removal, a capacity change) are
//! methods of the device model ([`super::VirtioBlkDevice`]).

use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

/// How the device misbehaves on the chosen request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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
    /// The request is completed twice: a second used entry repeats its id.
    DuplicateUsedId,
    /// The used length is 0 (the device claims it wrote nothing, status byte included).
    UsedLenZero,
    /// The request is held for the device's slow time (see
    /// [`super::VirtioBlkDevice::set_slow_ms`]) before it is executed and completed.
    Slow,
    /// The request is executed, then completed with VIRTIO_BLK_S_IOERR (a well-formed failure:
    /// not in [`FaultMode::ALL`], which lists the faults that break the protocol).
    IoErrStatus,
    /// The request is executed, then completed with VIRTIO_BLK_S_UNSUPP (not in
    /// [`FaultMode::ALL`]).
    UnsuppStatus,
}

impl FaultMode {
    /// Every request fault, for tests and the command line.
    pub const ALL: [FaultMode; 9] = [
        FaultMode::UsedIdOutOfRange,
        FaultMode::DuplicateUsedId,
        FaultMode::UsedLenTooLarge,
        FaultMode::UsedLenZero,
        FaultMode::UsedIdxJump,
        FaultMode::BadStatus,
        FaultMode::LostRequest,
        FaultMode::NeedsReset,
        FaultMode::Slow,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultMode::None => "none",
            FaultMode::UsedIdOutOfRange => "bad-id",
            FaultMode::DuplicateUsedId => "duplicate-id",
            FaultMode::UsedLenTooLarge => "len-too-long",
            FaultMode::UsedLenZero => "len-zero",
            FaultMode::UsedIdxJump => "idx-jump",
            FaultMode::BadStatus => "bad-status",
            FaultMode::LostRequest => "lost",
            FaultMode::NeedsReset => "needs-reset",
            FaultMode::Slow => "slow",
            FaultMode::IoErrStatus => "ioerr",
            FaultMode::UnsuppStatus => "unsupp",
        }
    }
}

impl FaultMode {
    /// The status byte the device writes in place of `status`, the one its executor produced.
    pub fn status(self, status: u8) -> u8 {
        match self {
            FaultMode::BadStatus => 0x7F,
            FaultMode::IoErrStatus => 1,
            FaultMode::UnsuppStatus => 2,
            _ => status,
        }
    }
}

impl FromStr for FaultMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown request fault `{s}`"))
    }
}

#[derive(Default)]
struct Armed {
    mode: FaultMode,
    queue: Option<u16>,
    remaining: u64,
    fired: u64,
    log: Vec<(FaultMode, u16)>,
}

/// The switch.
#[derive(Default)]
pub struct FaultInjector {
    armed: Mutex<Armed>,
}

impl FaultInjector {
    /// Arms `mode` for the `nth` request from now (`nth` 0 is taken as 1) on any queue.
    pub fn arm(&self, mode: FaultMode, nth: u64) {
        self.arm_on(mode, None, nth);
    }

    /// Arms `mode` for the `nth` request from now taken off `queue` (any queue if `None`).
    pub fn arm_on(&self, mode: FaultMode, queue: Option<u16>, nth: u64) {
        let mut a = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        a.mode = mode;
        a.queue = queue;
        a.remaining = nth.max(1);
    }

    /// Whether a fault is armed and has not fired yet.
    pub fn armed(&self) -> bool {
        self.armed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .mode
            != FaultMode::None
    }

    /// Counts one request taken off `queue`; returns the fault to apply to it, if it is the
    /// chosen one.
    pub fn next_request(&self, queue: u16) -> FaultMode {
        let mut a = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        if a.mode == FaultMode::None || a.queue.is_some_and(|q| q != queue) {
            return FaultMode::None;
        }
        a.remaining -= 1;
        if a.remaining > 0 {
            return FaultMode::None;
        }
        a.fired += 1;
        let mode = std::mem::take(&mut a.mode);
        a.log.push((mode, queue));
        storport_sim::sched::note(&format!("fault {mode:?}"), u64::from(queue));
        mode
    }

    /// How many faults have fired since the device was created.
    pub fn fired(&self) -> u64 {
        self.armed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fired
    }

    /// The faults that fired, with the queue of each, in order.
    pub fn fired_log(&self) -> Vec<(FaultMode, u16)> {
        self.armed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .log
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_on_the_nth_request() {
        let f = FaultInjector::default();
        assert_eq!(f.next_request(0), FaultMode::None);
        f.arm(FaultMode::BadStatus, 3);
        assert_eq!(f.next_request(0), FaultMode::None);
        assert_eq!(f.next_request(1), FaultMode::None);
        assert_eq!(f.next_request(0), FaultMode::BadStatus);
        assert_eq!(f.next_request(0), FaultMode::None);
        assert_eq!(f.fired(), 1);
    }

    #[test]
    fn a_queue_fault_counts_only_that_queue() {
        let f = FaultInjector::default();
        f.arm_on(FaultMode::LostRequest, Some(2), 2);
        assert_eq!(f.next_request(0), FaultMode::None);
        assert_eq!(f.next_request(2), FaultMode::None);
        assert_eq!(f.next_request(1), FaultMode::None);
        assert_eq!(f.next_request(2), FaultMode::LostRequest);
        assert_eq!(f.fired_log(), vec![(FaultMode::LostRequest, 2)]);
    }

    #[test]
    fn names_round_trip() {
        for m in FaultMode::ALL {
            assert_eq!(m.name().parse::<FaultMode>(), Ok(m));
        }
        assert!("nonsense".parse::<FaultMode>().is_err());
    }
}
