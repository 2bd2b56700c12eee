//! The adapter: vioblk's implementation of [`storport::Miniport`].
//!
//! This is where the three layers meet (DESIGN.md): Storport's callbacks come in through the
//! `Miniport` trait, SCSI commands are decoded by [`crate::scsi`], and block requests go to the
//! device through [`crate::virtio`].
//!
//! | file | concept |
//! |---|---|
//! | `mod.rs` | the adapter state and the callbacks; [`Found`], what HwStorFindAdapter established (one value, set once: each callback checks for it once and hands it down) |
//! | `setup.rs` | HwStorFindAdapter / HwStorInitialize / passive init: bring-up and memory plan |
//! | `build_io.rs` | HwStorBuildIo: decode, answer what needs no device, lay out block requests |
//! | `start_io.rs` | HwStorStartIo: put a prepared request on its queue's ring |
//! | `completion.rs` | interrupts, DPCs, completing what the device used, configuration change |
//! | `request.rs` | laying out one virtio-blk request in the SRB extension |
//! | `queue.rs` | one queue: its ring and requests in flight |
//! | `reset.rs` | bus reset, stop, ScsiSetRunningConfig and restart, and failing a broken device |
//! | `disk.rs` | the disk as SCSI sees it, and what changes at run time |
//!
//! # Locks
//!
//! With MSI-X and several queues, each queue is a [`DpcShared`] bound to that queue's STOR_DPC:
//! StartIo takes the queue's DPC lock to put one request on the ring, the queue's MSI-X
//! interrupt issues the DPC, and the DPC drains the ring under the same lock and completes
//! after releasing it. No interrupt lock and no adapter-wide lock is taken per I/O. With one
//! interrupt (INTx, one MSI message) or in a dump stack, the one queue is [`InterruptShared`]:
//! StartIo submits through StorPortSynchronizeAccess and the ISR (or the dump stack's polling)
//! completes.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod build_io;
mod completion;
mod disk;
mod events;
mod queue;
mod request;
mod reset;
mod setup;
mod start_io;
mod tunables;

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32};

use storport::context;
use storport::dma::DmaRegion;
use storport::dpc::StorDpc;
use storport::miniport::{
    AdapterControl, AdapterControlStatus, BuildIoOutcome, FindAdapterStatus, MessageContext,
    UnitControl, UnitControlStatus, UnitPowerState,
};
use storport::srb::Status as SrbStatus;
use storport::sync::{DpcShared, InterruptShared};
use storport::{AdapterControlType, Miniport, Port, PortConfiguration, Srb, UnitControlType};

use crate::virtio::{BlkConfig, DeviceRegisters, QueueAddresses, RequestBuilder, Transport};

pub use disk::{DiskState, PRODUCT, REVISION, VENDOR};
pub use queue::SLOTS;
pub use request::{MAX_SEGMENTS, SRB_EXTENSION_SIZE};
pub use tunables::Tunables;

/// Bytes of the device extension Storport allocates per adapter (the driver's [`Adapter`]
/// behind the safe layer's header).
pub const DEVICE_EXTENSION_SIZE: usize =
    core::mem::size_of::<storport::miniport::Extension<Adapter>>();

/// Most request queues the driver uses (one MSI-X message each, plus one for configuration).
pub const MAX_QUEUES: usize = MAX_QUEUES_U16 as usize;
/// [`MAX_QUEUES`] as the `u16` queue counts are kept in.
const MAX_QUEUES_U16: u16 = 16;
/// [`SLOTS`] as a `u16` (ring sizes).
#[expect(
    clippy::cast_possible_truncation,
    reason = "SLOTS fits a u16: the assertion below fails the build otherwise"
)]
const SLOTS_U16: u16 = SLOTS as u16;
const _: () = assert!(SLOTS_U16 as usize == SLOTS);
const _: () = assert!(SRB_EXTENSION_SIZE <= u32::MAX as usize);

/// How requests complete, decided in HwStorInitialize from the interrupts Storport connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Not initialised.
    Stopped = 0,
    /// One MSI-X message per queue, DPC per queue, per-queue DPC locks.
    MultiQueue = 1,
    /// One queue behind the interrupt lock: INTx, or a single MSI message.
    SingleInterrupt = 2,
    /// A crash-dump or hibernation stack: one queue, polled, no DPCs.
    Dump = 3,
}

impl Mode {
    fn from_u8(value: u8) -> Mode {
        match value {
            1 => Mode::MultiQueue,
            2 => Mode::SingleInterrupt,
            3 => Mode::Dump,
            _ => Mode::Stopped,
        }
    }
}

/// What HwStorFindAdapter established: one value, set once when it finds the device and never
/// changed after. Each later callback checks for it once (`Adapter::found`, in the `Miniport`
/// impl below) and hands it down.
pub struct Found {
    port: Port,
    /// The device's registers for reads from any context (ISR status, device configuration);
    /// every `device_status` write goes through the one `Transport`, in `control`.
    registers: DeviceRegisters,
    /// The transport, for anything that writes the device's common configuration (queue setup,
    /// reset, status): only under the interrupt lock.
    control: InterruptShared<Transport>,
    /// Features accepted at start.
    features: u64,
    /// The device configuration read at start.
    config: BlkConfig,
    builder: RequestBuilder,
    /// Rings laid out in the uncached extension: how many, and where.
    planned_queues: u16,
    rings: [Option<(QueueAddresses, DmaRegion<'static>)>; MAX_QUEUES],
    /// The GET_ID request area and its 20-byte buffer, in the uncached extension.
    identify: DmaRegion<'static>,
    /// The registry tunables read in HwStorFindAdapter.
    tunables: Tunables,
}

/// A virtio-blk adapter.
pub struct Adapter {
    /// `None` until HwStorFindAdapter finds the device.
    found: Option<Found>,
    disk: DiskState,
    /// `Mode` as u8.
    mode: AtomicU8,
    /// Queues in use (MultiQueue).
    active_queues: AtomicU16,
    /// The device's interrupts are MSI-X messages (else INTx, or none in a dump stack).
    message_interrupts: AtomicBool,
    /// Bumped when the device was re-initialised with the rings zeroed (restart): each queue
    /// forgets its ring state when it next sees a new epoch.
    epoch: AtomicU32,
    queues: [DpcShared<queue::Queue>; MAX_QUEUES],
    single: InterruptShared<queue::Queue>,
    /// Drains `single` when its interrupt is a message (DPC, then StorPortSynchronizeAccess).
    single_dpc: StorDpc,
    /// Runs a bus reset's work that needs the queues' DPC locks.
    reset_dpc: StorDpc,
    /// The reset machine's stage (`reset::Stage` as u8); while it is not idle, new requests are
    /// answered BUSY.
    reset_stage: AtomicU8,
    /// A reset was asked for while one was ending: the machine starts again.
    reset_again: AtomicBool,
    /// A dump stack's reset waits for the polled ISR, which holds the interrupt lock, to write it.
    dump_reset_pending: AtomicBool,
    /// Looks at `device_status` in the current stage.
    reset_polls: AtomicU32,
    /// Bus Master Enable was cleared because the device ignored a reset.
    dma_cut: AtomicBool,
    /// The device vanished (surprise removal): it is never touched again.
    removed: AtomicBool,
    /// LU, device and bus reset SRBs waiting for the reset in progress.
    held_resets: InterruptShared<reset::HeldResets>,
    /// A reset could not bring the device back; requests fail until another reset does.
    broken: AtomicBool,
    /// Why the reset in progress started (`events::Cause` as u8).
    reset_cause: AtomicU8,
    /// An ETW session listens (HwStorTracingEnabled): publish per-I/O events.
    tracing: AtomicBool,
    /// The unit's device power state from ScsiUnitPower (1 = D0 .. 4 = D3; 0 before any).
    unit_power: AtomicU8,
    /// What a dump instance of this adapter allows (MaximumTransferLength,
    /// NumberOfPhysicalBreaks), for SRB_FUNCTION_DUMP_POINTERS; `None` in a dump stack.
    dump_limits: Option<(u32, u32)>,
}

/// `arg1` of the reset DPC (queue DPCs get their queue index).
const RESET_DPC: usize = usize::MAX;

impl Adapter {
    /// What HwStorFindAdapter established; `None` before it found the device (Storport calls
    /// no other callback then).
    fn found(&self) -> Option<&Found> {
        self.found.as_ref()
    }

    fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(core::sync::atomic::Ordering::Acquire))
    }

    /// Whether a reset is in progress.
    fn resetting(&self) -> bool {
        self.reset_stage.load(core::sync::atomic::Ordering::Acquire) != 0
    }

    fn set_mode(&self, mode: Mode) {
        self.mode
            .store(mode as u8, core::sync::atomic::Ordering::Release);
    }
}

impl Miniport for Adapter {
    type Duplex = storport::context::FullDuplex;
    const INITIAL: Self = Adapter {
        found: None,
        disk: DiskState::EMPTY,
        mode: AtomicU8::new(Mode::Stopped as u8),
        active_queues: AtomicU16::new(0),
        message_interrupts: AtomicBool::new(false),
        epoch: AtomicU32::new(0),
        queues: [const { DpcShared::new(queue::Queue::EMPTY) }; MAX_QUEUES],
        single: InterruptShared::new(queue::Queue::EMPTY),
        single_dpc: StorDpc::new(),
        reset_dpc: StorDpc::new(),
        reset_stage: AtomicU8::new(0),
        reset_again: AtomicBool::new(false),
        dump_reset_pending: AtomicBool::new(false),
        reset_polls: AtomicU32::new(0),
        dma_cut: AtomicBool::new(false),
        removed: AtomicBool::new(false),
        held_resets: InterruptShared::new(reset::HeldResets::EMPTY),
        broken: AtomicBool::new(false),
        reset_cause: AtomicU8::new(0),
        tracing: AtomicBool::new(false),
        unit_power: AtomicU8::new(0),
        dump_limits: None,
    };

    #[expect(
        clippy::cast_possible_truncation,
        reason = "SRB_EXTENSION_SIZE is area_size(MAX_SEGMENTS), about 1 KiB: the assertion \
                  next to it fails the build otherwise"
    )]
    const SRB_EXTENSION_SIZE: u32 = SRB_EXTENSION_SIZE as u32;
    // The running instance tells Storport what its dump instance allows and which tunables it
    // takes (SRB_FUNCTION_DUMP_POINTERS), and the dump instance can read the hibernation file
    // back (DUMP_MODE_RESUME), so Windows may resume through it rather than through the firmware.
    const FEATURE_SUPPORT: u32 =
        storport::dump::feature::DUMP_POINTERS | storport::dump::feature::DUMP_RESUME_CAPABLE;
    const ADAPTER_CONTROL_TYPES: &'static [AdapterControlType] = &[
        AdapterControlType::SET_RUNNING_CONFIG,
        AdapterControlType::SURPRISE_REMOVAL,
    ];
    const UNIT_CONTROL_TYPES: &'static [UnitControlType] = &[
        UnitControlType::START,
        UnitControlType::POWER,
        UnitControlType::REMOVE,
        UnitControlType::SURPRISE_REMOVAL,
    ];

    fn find_adapter(
        &mut self,
        ctx: &mut context::FindAdapter,
        port: Port,
        config: &mut PortConfiguration<'_>,
    ) -> FindAdapterStatus {
        setup::find_adapter(self, ctx, port, config)
    }

    // Every callback below checks once that HwStorFindAdapter found the device, and hands
    // what it established down.

    fn initialize(&self, ctx: &mut context::Initialize) -> bool {
        let Some(found) = self.found() else {
            return false;
        };
        setup::initialize(self, found, ctx)
    }

    fn passive_initialize<'a>(&'a self, ctx: &mut context::PassiveInitialize<'a>) -> bool {
        let Some(found) = self.found() else {
            return false;
        };
        setup::passive_initialize(self, found, ctx)
    }

    fn build_io(&self, ctx: &mut context::BuildIo, srb: Srb) -> BuildIoOutcome {
        let Some(found) = self.found() else {
            return BuildIoOutcome::Completed(srb.complete(SrbStatus::NoDevice));
        };
        build_io::build_io(self, found, ctx, srb)
    }

    fn start_io(&self, ctx: context::StartIo<'_>, srb: Srb) {
        let Some(found) = self.found() else {
            let _ = srb.complete(SrbStatus::NoDevice);
            return;
        };
        start_io::start_io(self, found, ctx, srb)
    }

    fn interrupt(&self, ctx: &mut context::Interrupt) -> bool {
        let Some(found) = self.found() else {
            return false;
        };
        completion::interrupt(self, found, ctx)
    }

    fn message_interrupt(&self, ctx: MessageContext<'_>, message_id: u32) -> bool {
        let Some(found) = self.found() else {
            return false;
        };
        completion::message_interrupt(self, found, ctx, message_id)
    }

    fn reset_bus(&self, ctx: &mut context::ResetBus, path_id: u32) -> bool {
        // One bus: every path id names it.
        let _ = path_id;
        let Some(found) = self.found() else {
            return true;
        };
        reset::reset_bus(self, found, ctx)
    }

    fn tracing_enabled(&self, ctx: &mut context::TracingEnabled, enabled: bool) {
        let _ = ctx;
        self.tracing
            .store(enabled, core::sync::atomic::Ordering::Release);
    }

    fn timer(&self, ctx: &mut context::Timer) {
        reset::timer(self, ctx);
    }

    fn unit_control(
        &self,
        ctx: &mut context::UnitControl,
        control: UnitControl,
    ) -> UnitControlStatus {
        let Some(found) = self.found() else {
            return UnitControlStatus::Unsuccessful;
        };
        match control {
            UnitControl::SurpriseRemoval(_) => {
                reset::surprise_removal(self, found, &*ctx);
                UnitControlStatus::Success
            }
            // An orderly removal: Storport has drained the unit; nothing to do until the adapter
            // stops.
            UnitControl::Remove(_) => UnitControlStatus::Success,
            // The unit starts: it is ready as soon as the adapter is (a vanished device is not).
            UnitControl::Start(_) => {
                if self.removed.load(core::sync::atomic::Ordering::Acquire) {
                    UnitControlStatus::Unsuccessful
                } else {
                    UnitControlStatus::Success
                }
            }
            // A virtio-blk disk has no power states of its own: the D-state is recorded (and
            // traced); the disk class driver has already written the cache back (SYNCHRONIZE
            // CACHE) before a unit leaves D0, and the adapter's own power-down is
            // ScsiStopAdapter.
            UnitControl::Power { state, action, .. } => {
                let raw = match state {
                    UnitPowerState::D0 => 1,
                    UnitPowerState::D1 => 2,
                    UnitPowerState::D2 => 3,
                    UnitPowerState::D3 => 4,
                    UnitPowerState::Unspecified(_) => return UnitControlStatus::Unsuccessful,
                };
                self.unit_power
                    .store(raw, core::sync::atomic::Ordering::Release);
                if self.tracing.load(core::sync::atomic::Ordering::Acquire) {
                    events::unit_power(found.port, u32::from(raw), action);
                }
                UnitControlStatus::Success
            }
            UnitControl::Other(_) => UnitControlStatus::Unsuccessful,
        }
    }

    fn adapter_control(
        &self,
        ctx: &mut context::AdapterControl,
        control: AdapterControl,
    ) -> AdapterControlStatus {
        let Some(found) = self.found() else {
            return AdapterControlStatus::Unsuccessful;
        };
        match control {
            AdapterControl::Stop => reset::stop(self, found, ctx),
            AdapterControl::Restart => reset::restart(self, found, ctx),
            AdapterControl::Other(AdapterControlType::SET_RUNNING_CONFIG) => {
                reset::set_running_config(self, found)
            }
            AdapterControl::Other(AdapterControlType::SURPRISE_REMOVAL) => {
                reset::surprise_removal(self, found, &*ctx);
                AdapterControlStatus::Success
            }
            AdapterControl::Other(_) => AdapterControlStatus::Unsuccessful,
        }
    }
}

impl storport::dpc::DpcHandler for Adapter {
    fn dpc(&self, ctx: &mut context::Dpc, dpc: &StorDpc, arg1: usize, arg2: usize) {
        let _ = (dpc, arg2);
        let Some(found) = self.found() else {
            return;
        };
        if arg1 == RESET_DPC {
            reset::reset_dpc(self, found, ctx);
        } else {
            completion::queue_dpc(self, found, ctx, arg1);
        }
    }
}
