//! What the driver tells the administrator: system event log entries (StorPortLogError) and,
//! while a trace session listens (HwStorTracingEnabled), ETW events (StorPortEtwEvent2).
//!
//! Every event kind has its own error code, in the range the driver has always used
//! (0x0013_xxxx); the unique id says which instance of the kind it is (the queue, the reset's
//! tier, the tunable), so two entries of one run are told apart without their text.
//!
//! | code | event | unique id |
//! |---|---|---|
//! | 0x0013_0000 | the device completed a request it could not have (length, status) | the request's virtio type |
//! | 0x0013_0001 | the device ignored a reset: its DMA was cut (Bus Master Enable) | polls waited |
//! | 0x0013_0002 | the device could not be brought back after a reset | polls waited |
//! | 0x0013_0003 | surprise removal (the device's registers read all ones) | 0 |
//! | 0x0013_0004 | a capacity change to a value the driver refuses | 0 |
//! | 0x0013_0005 | the device broke a queue's ring | the queue's index |
//! | 0x0013_0006 | a reset started | its tier ([`Cause`]) |
//! | 0x0013_0007 | a reset ended with the device back | its tier ([`Cause`]) |
//! | 0x0013_0008 | the capacity changed | the new capacity's low 32 bits (sectors) |
//! | 0x0013_0009 | a registry tunable out of range was clamped | the tunable ([`super::tunables`]) |
//! | 0x0013_000A | a device configuration refused at start | the reason ([`Refused`]) |

use storport::Port;
use storport::etw::{Event, Level, Text};
use storport::ffi;
use storport::srb::Srb;

/// The device completed a request with a length or status it could not have.
pub(super) const BAD_COMPLETION: u32 = 0x0013_0000;
/// The device ignored a reset; its DMA was cut.
pub(super) const RESET_NOT_ACKNOWLEDGED: u32 = 0x0013_0001;
/// The device could not be brought back.
pub(super) const DEVICE_GIVEN_UP: u32 = 0x0013_0002;
/// Surprise removal.
pub(super) const SURPRISE_REMOVAL: u32 = 0x0013_0003;
/// A capacity change to a value the driver refuses.
pub(super) const CAPACITY_REFUSED: u32 = 0x0013_0004;
/// The device broke a queue's ring.
pub(super) const RING_BROKEN: u32 = 0x0013_0005;
/// A reset started.
pub(super) const RESET_STARTED: u32 = 0x0013_0006;
/// A reset ended with the device back.
pub(super) const RESET_COMPLETED: u32 = 0x0013_0007;
/// The capacity changed.
pub(super) const CAPACITY_CHANGED: u32 = 0x0013_0008;
/// A registry tunable was clamped.
pub(super) const TUNABLE_CLAMPED: u32 = 0x0013_0009;
/// A device configuration was refused at start.
pub(super) const CONFIGURATION_REFUSED: u32 = 0x0013_000A;

/// Why a reset started: its tier in Storport's multi-tier reset, or the driver's own reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cause {
    /// SRB_FUNCTION_RESET_LOGICAL_UNIT (unique id 1).
    LogicalUnit,
    /// SRB_FUNCTION_RESET_DEVICE (2).
    Device,
    /// HwStorResetBus or SRB_FUNCTION_RESET_BUS (3).
    Bus,
    /// The device broke this queue's ring (4; RING_BROKEN names the queue).
    BrokenRing(usize),
    /// The device set DEVICE_NEEDS_RESET, or a restart found it not acknowledging (5).
    NeedsReset,
    /// The device vanished (6).
    Removal,
}

impl Cause {
    /// The unique id of RESET_STARTED and RESET_COMPLETED for this cause.
    pub(super) fn id(self) -> u8 {
        match self {
            Cause::LogicalUnit => 1,
            Cause::Device => 2,
            Cause::Bus => 3,
            Cause::BrokenRing(_) => 4,
            Cause::NeedsReset => 5,
            Cause::Removal => 6,
        }
    }

    /// The cause a stored id names (a broken ring's queue is not kept).
    pub(super) fn from_id(value: u8) -> Cause {
        match value {
            1 => Cause::LogicalUnit,
            2 => Cause::Device,
            3 => Cause::Bus,
            4 => Cause::BrokenRing(0),
            6 => Cause::Removal,
            _ => Cause::NeedsReset,
        }
    }

    /// The tier of a reset SRB's function.
    pub(super) fn of_function(function: u32) -> Cause {
        if function == u32::from(ffi::SRB_FUNCTION_RESET_LOGICAL_UNIT) {
            Cause::LogicalUnit
        } else if function == u32::from(ffi::SRB_FUNCTION_RESET_DEVICE) {
            Cause::Device
        } else {
            Cause::Bus
        }
    }
}

/// Why a device was refused at start (CONFIGURATION_REFUSED's unique id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum Refused {
    /// A capacity whose byte count does not fit 64 bits.
    Capacity = 1,
    /// A queue too small, or a segment limit too low, to carry one block.
    Limits = 2,
    /// The feature negotiation failed (FEATURES_OK not kept).
    Features = 3,
}

/// ETW event ids (StorPortEtwEvent2's EventId).
const ETW_IO_COMPLETED: u32 = 1;
const ETW_UNIT_POWER: u32 = 2;

static IO_COMPLETED: Text<21> = Text::new("vioblk I/O completed");
static UNIT_POWER: Text<18> = Text::new("vioblk unit power");
static OPCODE: Text<7> = Text::new("Opcode");
static VIRTIO_STATUS: Text<13> = Text::new("VirtioStatus");
static STATE: Text<6> = Text::new("State");
static ACTION: Text<7> = Text::new("Action");

/// The per-I/O ETW event: the request's CDB opcode and the status byte the device wrote.
pub(super) fn io_completed(port: Port, srb: &Srb, virtio_status: u8) {
    let opcode = srb.cdb().first().copied().unwrap_or(0);
    let _ = port.etw_event2(
        srb.address(),
        Some(srb),
        &Event {
            id: ETW_IO_COMPLETED,
            description: &IO_COMPLETED,
            keywords: ffi::STORPORT_ETW_EVENT_KEYWORD_IO,
            level: Level::Informational,
            first: (&OPCODE, u64::from(opcode)),
            second: (&VIRTIO_STATUS, u64::from(virtio_status)),
        },
    );
}

/// The unit's power event (ScsiUnitPower): the D-state (1 = D0 .. 4 = D3) and the system action.
pub(super) fn unit_power(port: Port, state: u32, action: u32) {
    let _ = port.etw_event2(
        None,
        None,
        &Event {
            id: ETW_UNIT_POWER,
            description: &UNIT_POWER,
            keywords: ffi::STORPORT_ETW_EVENT_KEYWORD_POWER,
            level: Level::Informational,
            first: (&STATE, u64::from(state)),
            second: (&ACTION, u64::from(action)),
        },
    );
}
