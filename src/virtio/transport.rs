//! The modern virtio-pci transport: common configuration, notifications, ISR and device
//! configuration (VIRTIO 1.2 4.1.4.3 - 4.1.4.8), and the initialization sequence of 3.1.1.
//!
//! [`Transport`] owns the four register windows named by the capability list
//! ([`VirtioPciLayout`]). It drives the device-status handshake (reset, ACKNOWLEDGE, DRIVER,
//! feature negotiation, FEATURES_OK, queue setup, DRIVER_OK), assigns MSI-X vectors and reads
//! them back, and hands out a [`QueueNotifier`] per queue so that a notification is a single
//! 16-bit store. Device configuration reads go through [`Transport::read_device_config`], which
//! repeats them until `config_generation` is stable (4.1.4.3.1).
//!
//! Register values are untrusted: the status register is never read-modified-written (the
//! driver writes the bits it has set, kept in [`Transport`]), a queue size is checked against
//! what the driver can use, a notify offset against the notify window, and a vector against the
//! one written.

use storport::register::RegisterWindow;

use super::pci::{COMMON_CFG_MIN_LEN, Structure, StructureType, VirtioPciLayout};
use super::ring::QueueAddresses;

/// Transport feature bits (VIRTIO 1.2 6), as masks of the 64-bit feature word.
pub mod feature {
    /// VIRTIO_F_INDIRECT_DESC (28): indirect descriptor tables (2.7.5.3).
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// VIRTIO_F_EVENT_IDX (29): `used_event` / `avail_event` notification suppression (2.7.10).
    pub const EVENT_IDX: u64 = 1 << 29;
    /// VIRTIO_F_VERSION_1 (32): a modern device; required by this driver.
    pub const VERSION_1: u64 = 1 << 32;
    /// VIRTIO_F_ACCESS_PLATFORM (33): the device goes through the platform's DMA translation.
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
    /// VIRTIO_F_RING_PACKED (34): packed virtqueues (VIRTIO 1.2 2.8).
    pub const RING_PACKED: u64 = 1 << 34;
    /// VIRTIO_F_IN_ORDER (35).
    pub const IN_ORDER: u64 = 1 << 35;
    /// VIRTIO_F_NOTIFICATION_DATA (38): notifications carry more than the queue index.
    pub const NOTIFICATION_DATA: u64 = 1 << 38;
    /// VIRTIO_F_RING_RESET (40).
    pub const RING_RESET: u64 = 1 << 40;

    /// The transport features this driver implements; others are never accepted.
    pub const TRANSPORT_SUPPORTED: u64 =
        INDIRECT_DESC | EVENT_IDX | VERSION_1 | ACCESS_PLATFORM | RING_PACKED;
}

/// Device status bits (VIRTIO 1.2 2.1).
mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    pub const FAILED: u8 = 0x80;
}

/// Offsets in `struct virtio_pci_common_cfg` (VIRTIO 1.2 4.1.4.3).
mod common {
    pub const DEVICE_FEATURE_SELECT: usize = 0;
    pub const DEVICE_FEATURE: usize = 4;
    pub const DRIVER_FEATURE_SELECT: usize = 8;
    pub const DRIVER_FEATURE: usize = 12;
    pub const CONFIG_MSIX_VECTOR: usize = 16;
    pub const NUM_QUEUES: usize = 18;
    pub const DEVICE_STATUS: usize = 20;
    pub const CONFIG_GENERATION: usize = 21;
    pub const QUEUE_SELECT: usize = 22;
    pub const QUEUE_SIZE: usize = 24;
    pub const QUEUE_MSIX_VECTOR: usize = 26;
    pub const QUEUE_ENABLE: usize = 28;
    pub const QUEUE_NOTIFY_OFF: usize = 30;
    pub const QUEUE_DESC: usize = 32;
    pub const QUEUE_DRIVER: usize = 40;
    pub const QUEUE_DEVICE: usize = 48;
}

/// `VIRTIO_MSI_NO_VECTOR`: no MSI-X vector (also what the device answers when it cannot
/// assign the one written, 4.1.5.1.2).
pub const NO_VECTOR: u16 = 0xFFFF;

/// How often [`Transport::reset`] polls `device_status`, and how long it stalls between polls:
/// 100 x 10 us, 1 ms in all. A device that takes longer is reset with the adapter's state machine
/// (`hba::reset`), which writes the reset and watches for it from a timer, never waiting at
/// raised IRQL.
const RESET_POLLS: u32 = 100;
const RESET_POLL_INTERVAL_US: u32 = 10;

/// How long [`Transport::begin_init_patient`] waits for a reset: 1000 x 1 ms. Only for
/// HwStorFindAdapter, which runs at PASSIVE_LEVEL (a device may take that long to come up).
const PATIENT_RESET_POLLS: u32 = 1000;
const PATIENT_RESET_POLL_INTERVAL_US: u32 = 1000;

/// How often a device configuration read is repeated while `config_generation` changes.
const CONFIG_READ_ATTEMPTS: u32 = 16;

/// Why the transport could not bring the device up or use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The adapter could not map a structure (or mapped fewer bytes than it needs).
    Map(StructureType),
    /// `device_status` did not read 0 after a reset (4.1.4.3.2).
    ResetTimeout,
    /// The device does not offer VIRTIO_F_VERSION_1.
    NoVersion1,
    /// The device did not keep FEATURES_OK set: it cannot work with the accepted features.
    FeaturesRefused,
    /// The queue does not exist or is unavailable (`queue_size` reads 0).
    QueueUnavailable {
        /// The queue index.
        queue: u16,
    },
    /// The queue size given is 0, not a power of two, or larger than the device allows.
    QueueSize {
        /// The queue index.
        queue: u16,
    },
    /// The device did not accept an MSI-X vector (it read back differently, e.g. 0xFFFF).
    VectorRefused {
        /// The queue index, or `None` for the configuration-change vector.
        queue: Option<u16>,
        /// What was read back.
        read_back: u16,
    },
    /// A queue's notify address lies outside the notify structure.
    NotifyOutOfRange {
        /// The queue index.
        queue: u16,
    },
    /// `config_generation` kept changing while device configuration was read.
    ConfigUnstable,
}

/// The value of `device_status` as the device reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceStatus(pub u8);

impl DeviceStatus {
    /// DEVICE_NEEDS_RESET (0x40): the device is unusable until it is reset (2.1).
    pub fn needs_reset(self) -> bool {
        self.0 & status::DEVICE_NEEDS_RESET != 0
    }

    /// FAILED (0x80) is set.
    #[cfg(test)]
    pub fn failed(self) -> bool {
        self.0 & status::FAILED != 0
    }

    /// DRIVER_OK (4) is set.
    #[cfg(test)]
    pub fn driver_ok(self) -> bool {
        self.0 & status::DRIVER_OK != 0
    }

    /// Whether the device can be used: DRIVER_OK set, neither NEEDS_RESET nor FAILED. A
    /// surprise-removed device reads all ones and is therefore broken.
    #[cfg(test)]
    pub fn is_live(self) -> bool {
        self.driver_ok() && !self.needs_reset() && !self.failed()
    }

    /// Whether the register reads all ones: no device answers (surprise removal). No valid
    /// status has every bit set (bits 4 and 5 are reserved, 2.1).
    pub fn vanished(self) -> bool {
        self.0 == 0xFF
    }
}

/// The ISR status byte (VIRTIO 1.2 4.1.4.5); reading it clears it and de-asserts INTx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isr(pub u8);

impl Isr {
    /// Bit 0: a queue interrupt.
    pub fn queue(self) -> bool {
        self.0 & 1 != 0
    }

    /// Bit 1: a configuration change.
    pub fn config_changed(self) -> bool {
        self.0 & 2 != 0
    }
}

/// Notifies one queue (VIRTIO 1.2 4.1.4.4): one 16-bit store of the queue index.
///
/// # Invariants
///
/// `window` is the two bytes at `notify.offset + queue_notify_off * notify_off_multiplier`
/// inside the notify structure, as the device reported for `queue` at setup.
#[derive(Clone, Copy, Debug)]
pub struct QueueNotifier {
    window: RegisterWindow,
    queue: u16,
}

impl QueueNotifier {
    /// Tells the device that `queue` has new available buffers.
    pub fn notify(&self) {
        self.window.write_u16(0, self.queue);
    }

    /// The queue index this notifier rings for.
    #[cfg(test)]
    pub fn queue(&self) -> u16 {
        self.queue
    }
}

/// A read-only view of the device-specific configuration, valid inside one
/// [`DeviceRegisters::read_device_config`] attempt.
///
/// Reads use the natural width of the field (4.1.3.1); a field outside the structure reads as
/// `None`, never as the all-ones a window gives outside its range.
pub struct DeviceConfig<'a> {
    window: &'a RegisterWindow,
}

impl DeviceConfig<'_> {
    fn fits(&self, offset: usize, width: usize) -> bool {
        offset
            .checked_add(width)
            .is_some_and(|end| end <= self.window.len())
    }

    /// The byte at `offset`.
    pub fn u8(&self, offset: usize) -> Option<u8> {
        self.fits(offset, 1).then(|| self.window.read_u8(offset))
    }

    /// The little-endian 16-bit field at `offset`.
    pub fn u16(&self, offset: usize) -> Option<u16> {
        self.fits(offset, 2).then(|| self.window.read_u16(offset))
    }

    /// The little-endian 32-bit field at `offset`.
    pub fn u32(&self, offset: usize) -> Option<u32> {
        self.fits(offset, 4).then(|| self.window.read_u32(offset))
    }

    /// The little-endian 64-bit field at `offset`, as two 32-bit reads (the generation check
    /// around the whole read makes the pair consistent).
    pub fn u64(&self, offset: usize) -> Option<u64> {
        let low = self.u32(offset)?;
        let high = self.u32(offset.checked_add(4)?)?;
        Some(u64::from(high) << 32 | u64::from(low))
    }

    /// Length of the device configuration structure in bytes.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// Whether the device configuration structure is empty.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }
}

/// The device's registers for reading (device status, ISR status, device configuration), from
/// any context: [`Transport::registers`].
///
/// It writes no `device_status`: those writes (reset, the initialization steps, FAILED) go
/// through the one [`Transport`], which is not `Clone` and which the driver keeps where its
/// writes are serialised (the adapter's interrupt-lock cell), so the status bits it holds are the
/// ones the device was last given.
#[derive(Clone, Copy, Debug)]
pub struct DeviceRegisters {
    common: RegisterWindow,
    isr: RegisterWindow,
    device: RegisterWindow,
}

impl DeviceRegisters {
    /// `device_status` as the device reports it.
    pub fn device_status(&self) -> DeviceStatus {
        DeviceStatus(self.common.read_u8(common::DEVICE_STATUS))
    }

    /// Whether the device finished a reset: `device_status` reads 0 (4.1.4.3.2).
    pub fn reset_acknowledged(&self) -> bool {
        self.common.read_u8(common::DEVICE_STATUS) == 0
    }

    /// Reads (and thereby clears) the ISR status byte.
    pub fn read_isr(&self) -> Isr {
        Isr(self.isr.read_u8(0))
    }

    /// `config_generation`.
    pub fn config_generation(&self) -> u8 {
        self.common.read_u8(common::CONFIG_GENERATION)
    }

    /// Runs `read` over the device configuration until `config_generation` is the same before
    /// and after it (4.1.4.3.1, 2.5.1), at most 16 times.
    pub fn read_device_config<T>(
        &self,
        mut read: impl FnMut(&DeviceConfig<'_>) -> T,
    ) -> Result<T, TransportError> {
        let view = DeviceConfig {
            window: &self.device,
        };
        for _ in 0..CONFIG_READ_ATTEMPTS {
            let before = self.config_generation();
            let value = read(&view);
            if self.config_generation() == before {
                return Ok(value);
            }
        }
        Err(TransportError::ConfigUnstable)
    }

    /// Writes a byte of device configuration (e.g. virtio-blk `writeback`; not a status).
    pub fn write_device_config_u8(&self, offset: usize, value: u8) {
        self.device.write_u8(offset, value);
    }
}

/// The modern virtio-pci transport of one device.
///
/// Not `Clone`: `driver_status` is the driver's record of what it wrote to `device_status`, and a
/// copy would write from a stale record. Reads from elsewhere use [`Transport::registers`].
///
/// ```compile_fail,E0599
/// // A second transport with its own record of the status bits does not exist.
/// fn copy(transport: &vioblk::virtio::Transport) -> vioblk::virtio::Transport {
///     transport.clone()
/// }
/// ```
///
/// # Invariants
///
/// `common` is at least `COMMON_CFG_MIN_LEN` bytes, `notify` at least 2, `isr` at least 1.
/// `driver_status` holds the status bits the driver has set since the last reset.
#[derive(Debug)]
pub struct Transport {
    common: RegisterWindow,
    notify: RegisterWindow,
    isr: RegisterWindow,
    device: RegisterWindow,
    notify_off_multiplier: u32,
    driver_status: u8,
}

impl Transport {
    /// Maps the four structures of `layout` with `map(bar, offset, length)`, which the adapter
    /// implements over `StorPortGetDeviceBase` (and which must check the range against the BAR).
    pub fn new(
        layout: &VirtioPciLayout,
        map: &mut dyn FnMut(u8, u32, u32) -> Option<RegisterWindow>,
    ) -> Result<Self, TransportError> {
        let mut window = |s: &Structure, kind: StructureType, min: u32| {
            map(s.bar, s.offset, s.length)
                .filter(|w| w.len() >= min as usize)
                .ok_or(TransportError::Map(kind))
        };
        let common = window(&layout.common, StructureType::Common, COMMON_CFG_MIN_LEN)?;
        let notify = window(&layout.notify, StructureType::Notify, 2)?;
        let isr = window(&layout.isr, StructureType::Isr, 1)?;
        let device = window(&layout.device, StructureType::Device, 0)?;
        Ok(Self::from_windows(
            common,
            notify,
            isr,
            device,
            layout.notify_off_multiplier,
        ))
    }

    /// Builds a transport over windows mapped elsewhere (tests, the simulator).
    pub fn from_windows(
        common: RegisterWindow,
        notify: RegisterWindow,
        isr: RegisterWindow,
        device: RegisterWindow,
        notify_off_multiplier: u32,
    ) -> Self {
        Self {
            common,
            notify,
            isr,
            device,
            notify_off_multiplier,
            driver_status: 0,
        }
    }

    /// The registers for reading, to be used where this transport is not reachable.
    pub fn registers(&self) -> DeviceRegisters {
        DeviceRegisters {
            common: self.common,
            isr: self.isr,
            device: self.device,
        }
    }

    /// Resets the device: writes 0 to `device_status` and waits until it reads 0
    /// (4.1.4.3.2), polling with `stall(microseconds)` in between, for at most about 1 ms.
    ///
    /// Only after `Ok` may the driver reuse memory the device could write (rings, request
    /// areas): the device no longer accesses it.
    pub fn reset(&mut self, stall: &mut dyn FnMut(u32)) -> Result<(), TransportError> {
        self.reset_within(stall, RESET_POLLS, RESET_POLL_INTERVAL_US)
    }

    /// [`Self::reset`], polling `polls` times `interval_us` apart.
    fn reset_within(
        &mut self,
        stall: &mut dyn FnMut(u32),
        polls: u32,
        interval_us: u32,
    ) -> Result<(), TransportError> {
        self.request_reset();
        for _ in 0..polls {
            if self.reset_acknowledged() {
                return Ok(());
            }
            stall(interval_us);
        }
        if self.reset_acknowledged() {
            Ok(())
        } else {
            Err(TransportError::ResetTimeout)
        }
    }

    /// Writes the reset (0 to `device_status`, 4.1.4.3.2) without waiting for it: the caller
    /// watches [`Self::reset_acknowledged`] later.
    pub fn request_reset(&mut self) {
        self.driver_status = 0;
        self.common.write_u8(common::DEVICE_STATUS, 0);
    }

    /// Whether the device finished a reset: `device_status` reads 0 (4.1.4.3.2: "the driver
    /// MUST wait for a read of device_status to return 0 before reinitializing the device").
    pub fn reset_acknowledged(&self) -> bool {
        self.registers().reset_acknowledged()
    }

    /// Resets the device, sets ACKNOWLEDGE and DRIVER and returns the features it offers
    /// (3.1.1 steps 1-4).
    #[cfg(test)]
    pub fn begin_init(&mut self, stall: &mut dyn FnMut(u32)) -> Result<u64, TransportError> {
        self.reset(stall)?;
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::DRIVER);
        Ok(self.device_features())
    }

    /// Sets ACKNOWLEDGE and DRIVER after a reset the caller saw acknowledged (3.1.1 steps 2-3).
    pub fn begin_init_acknowledged(&mut self) {
        self.driver_status = 0;
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::DRIVER);
    }

    /// Resets the device waiting up to about a second for it, sets ACKNOWLEDGE and DRIVER and
    /// returns the features it offers (3.1.1 steps 1-4): for the first start, at PASSIVE_LEVEL,
    /// where a device slow to come up is worth waiting for.
    pub fn begin_init_patient(
        &mut self,
        stall: &mut dyn FnMut(u32),
    ) -> Result<u64, TransportError> {
        self.reset_within(stall, PATIENT_RESET_POLLS, PATIENT_RESET_POLL_INTERVAL_US)?;
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::DRIVER);
        Ok(self.device_features())
    }

    /// The 64-bit feature word the device offers.
    pub fn device_features(&self) -> u64 {
        self.common.write_u32(common::DEVICE_FEATURE_SELECT, 0);
        let low = self.common.read_u32(common::DEVICE_FEATURE);
        self.common.write_u32(common::DEVICE_FEATURE_SELECT, 1);
        let high = self.common.read_u32(common::DEVICE_FEATURE);
        u64::from(high) << 32 | u64::from(low)
    }

    /// Accepts `wanted & offered` (plus VERSION_1, which is required; transport features this
    /// driver does not implement are never accepted), sets FEATURES_OK and checks that the
    /// device kept it (3.1.1 steps 5-6). Returns the accepted features.
    ///
    /// On `FeaturesRefused` the device is marked FAILED; on `NoVersion1` nothing is written.
    pub fn negotiate(&mut self, wanted: u64) -> Result<u64, TransportError> {
        let offered = self.device_features();
        if offered & feature::VERSION_1 == 0 {
            return Err(TransportError::NoVersion1);
        }
        // Bits 0..=23 and 50.. are device-type bits, passed through; 24..=49 are transport
        // bits (6), of which only those implemented here are accepted.
        const DEVICE_RANGE: u64 = ((1 << 24) - 1) | !((1 << 50) - 1);
        let wanted =
            (wanted & DEVICE_RANGE) | (wanted & feature::TRANSPORT_SUPPORTED) | feature::VERSION_1;
        let accepted = wanted & offered;
        self.common.write_u32(common::DRIVER_FEATURE_SELECT, 0);
        self.common
            .write_u32(common::DRIVER_FEATURE, (accepted & 0xFFFF_FFFF) as u32);
        self.common.write_u32(common::DRIVER_FEATURE_SELECT, 1);
        self.common
            .write_u32(common::DRIVER_FEATURE, (accepted >> 32) as u32);
        self.set_status(status::FEATURES_OK);
        if self.device_status().0 & status::FEATURES_OK == 0 {
            self.fail();
            return Err(TransportError::FeaturesRefused);
        }
        Ok(accepted)
    }

    /// `num_queues`: how many virtqueues the device has (untrusted; queues are checked again
    /// one by one at setup).
    pub fn num_queues(&self) -> u16 {
        self.common.read_u16(common::NUM_QUEUES)
    }

    /// The largest size the device allows for `queue`, or `QueueUnavailable`.
    pub fn queue_max_size(&self, queue: u16) -> Result<u16, TransportError> {
        if queue >= self.num_queues() {
            return Err(TransportError::QueueUnavailable { queue });
        }
        self.common.write_u16(common::QUEUE_SELECT, queue);
        match self.common.read_u16(common::QUEUE_SIZE) {
            0 => Err(TransportError::QueueUnavailable { queue }),
            size => Ok(size),
        }
    }

    /// Sets `queue` up over the ring at `ring` (4.1.5.1.3): size, the three ring addresses, the
    /// MSI-X vector (read back; `None` writes [`NO_VECTOR`] for INTx), then `queue_enable`.
    /// Returns the queue's notifier.
    pub fn setup_queue(
        &mut self,
        queue: u16,
        ring: &QueueAddresses,
        vector: Option<u16>,
    ) -> Result<QueueNotifier, TransportError> {
        let max = self.queue_max_size(queue)?;
        // VIRTIO 1.2 2.7: a split queue's size is a power of two, at most the device's.
        if ring.size == 0 || !ring.size.is_power_of_two() || ring.size > max {
            return Err(TransportError::QueueSize { queue });
        }
        // queue_max_size selected the queue; everything below applies to it.
        self.common.write_u16(common::QUEUE_SIZE, ring.size);
        self.write_u64(common::QUEUE_DESC, ring.descriptors);
        self.write_u64(common::QUEUE_DRIVER, ring.driver);
        self.write_u64(common::QUEUE_DEVICE, ring.device);

        let wanted = vector.unwrap_or(NO_VECTOR);
        self.common.write_u16(common::QUEUE_MSIX_VECTOR, wanted);
        let read_back = self.common.read_u16(common::QUEUE_MSIX_VECTOR);
        if vector.is_some() && read_back != wanted {
            return Err(TransportError::VectorRefused {
                queue: Some(queue),
                read_back,
            });
        }

        let notify_off = self.common.read_u16(common::QUEUE_NOTIFY_OFF);
        let window = u64::from(notify_off)
            .checked_mul(u64::from(self.notify_off_multiplier))
            .and_then(|offset| usize::try_from(offset).ok())
            .and_then(|offset| self.notify.subwindow(offset, 2))
            .ok_or(TransportError::NotifyOutOfRange { queue })?;

        self.common.write_u16(common::QUEUE_ENABLE, 1);
        // INVARIANT: `window` is the queue's notify address, inside the notify structure.
        Ok(QueueNotifier { window, queue })
    }

    /// Sets the configuration-change MSI-X vector and reads it back (4.1.5.1.2); `None` writes
    /// [`NO_VECTOR`].
    pub fn set_config_vector(&mut self, vector: Option<u16>) -> Result<(), TransportError> {
        let wanted = vector.unwrap_or(NO_VECTOR);
        self.common.write_u16(common::CONFIG_MSIX_VECTOR, wanted);
        let read_back = self.common.read_u16(common::CONFIG_MSIX_VECTOR);
        if vector.is_some() && read_back != wanted {
            return Err(TransportError::VectorRefused {
                queue: None,
                read_back,
            });
        }
        Ok(())
    }

    /// Sets DRIVER_OK: the device is live (3.1.1 step 8).
    pub fn driver_ok(&mut self) {
        self.set_status(status::DRIVER_OK);
    }

    /// Sets FAILED: the driver has given up on the device (3.1.1).
    pub fn fail(&mut self) {
        self.set_status(status::FAILED);
    }

    /// `device_status` as the device reports it.
    pub fn device_status(&self) -> DeviceStatus {
        self.registers().device_status()
    }

    /// Reads (and thereby clears) the ISR status byte.
    #[cfg(test)]
    pub fn read_isr(&self) -> Isr {
        self.registers().read_isr()
    }

    fn set_status(&mut self, bit: u8) {
        self.driver_status |= bit;
        self.common
            .write_u8(common::DEVICE_STATUS, self.driver_status);
    }

    /// Writes a 64-bit common configuration field as two 32-bit halves, low first (4.1.3.1).
    fn write_u64(&self, offset: usize, value: u64) {
        self.common.write_u32(offset, (value & 0xFFFF_FFFF) as u32);
        #[expect(
            clippy::arithmetic_side_effects,
            reason = "offset is common::QUEUE_DESC, QUEUE_DRIVER or QUEUE_DEVICE (at most 48), the \
                      only callers' arguments"
        )]
        let high = offset + 4;
        self.common.write_u32(high, (value >> 32) as u32);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        clippy::panic,
        reason = "tests index fixed buffers and fail by panicking"
    )]

    extern crate std;
    use super::*;
    use std::boxed::Box;
    use std::sync::Mutex;
    use std::vec::Vec;
    use storport::register::TestRegisters;

    /// A virtio-pci device model, enough for the handshake: one register file holding the
    /// common configuration at 0, notify at 0x1000, ISR at 0x2000 and device config at 0x3000.
    pub(crate) struct FakeDevice {
        pub(crate) state: Mutex<FakeState>,
    }

    pub(crate) struct FakeState {
        pub(crate) offered: u64,
        pub(crate) accepted: u64,
        pub(crate) refuse_features: bool,
        pub(crate) status: u8,
        pub(crate) reset_delay: u32,
        pub(crate) device_feature_select: u32,
        pub(crate) driver_feature_select: u32,
        pub(crate) config_vector: u16,
        pub(crate) vectors: u16,
        pub(crate) select: u16,
        pub(crate) queues: Vec<FakeQueue>,
        pub(crate) generation: u8,
        pub(crate) generation_flips: u32,
        pub(crate) config: [u8; 64],
        pub(crate) notifications: Vec<(usize, u16)>,
        pub(crate) isr: u8,
    }

    #[derive(Clone, Default)]
    pub(crate) struct FakeQueue {
        pub(crate) max: u16,
        pub(crate) size: u16,
        pub(crate) vector: u16,
        pub(crate) enable: u16,
        pub(crate) notify_off: u16,
        pub(crate) addresses: [u64; 3],
    }

    pub(crate) const NOTIFY: usize = 0x1000;
    pub(crate) const ISR: usize = 0x2000;
    pub(crate) const DEVICE: usize = 0x3000;

    impl FakeDevice {
        pub(crate) fn new(offered: u64, queues: u16) -> &'static Self {
            let queue = FakeQueue {
                max: 256,
                vector: NO_VECTOR,
                ..FakeQueue::default()
            };
            let mut qs = Vec::new();
            for i in 0..queues {
                qs.push(FakeQueue {
                    notify_off: i,
                    ..queue.clone()
                });
            }
            Box::leak(Box::new(Self {
                state: Mutex::new(FakeState {
                    offered,
                    accepted: 0,
                    refuse_features: false,
                    status: 0,
                    reset_delay: 0,
                    device_feature_select: 0,
                    driver_feature_select: 0,
                    config_vector: NO_VECTOR,
                    vectors: 4,
                    select: 0,
                    queues: qs,
                    generation: 0,
                    generation_flips: 0,
                    config: [0; 64],
                    notifications: Vec::new(),
                    isr: 0,
                }),
            }))
        }

        pub(crate) fn transport(&'static self, multiplier: u32) -> Transport {
            let all = RegisterWindow::from_test_device(self);
            Transport::from_windows(
                all.subwindow(0, 64).unwrap(),
                all.subwindow(NOTIFY, 0x100).unwrap(),
                all.subwindow(ISR, 1).unwrap(),
                all.subwindow(DEVICE, 64).unwrap(),
                multiplier,
            )
        }
    }

    impl TestRegisters for FakeDevice {
        fn len(&self) -> usize {
            0x4000
        }

        fn read(&self, offset: usize, width: u8) -> u64 {
            let mut s = self.state.lock().unwrap();
            if offset >= DEVICE {
                let at = offset - DEVICE;
                let mut v = 0u64;
                for i in 0..usize::from(width) {
                    v |= u64::from(s.config[at + i]) << (8 * i);
                }
                return v;
            }
            if offset == ISR {
                let v = s.isr;
                s.isr = 0;
                return v.into();
            }
            let select = usize::from(s.select);
            let q = s.queues.get(select).cloned().unwrap_or_default();
            match (offset, width) {
                (common::DEVICE_FEATURE, 4) => {
                    (s.offered >> (32 * s.device_feature_select.min(1))) & 0xFFFF_FFFF
                }
                (common::NUM_QUEUES, 2) => s.queues.len() as u64,
                (common::DEVICE_STATUS, 1) => {
                    if s.reset_delay > 0 {
                        s.reset_delay -= 1;
                        return 0x0F;
                    }
                    s.status.into()
                }
                (common::CONFIG_GENERATION, 1) => {
                    if s.generation_flips > 0 {
                        s.generation_flips -= 1;
                        s.generation = s.generation.wrapping_add(1);
                    }
                    s.generation.into()
                }
                (common::CONFIG_MSIX_VECTOR, 2) => s.config_vector.into(),
                (common::QUEUE_SIZE, 2) => q.size.into(),
                (common::QUEUE_MSIX_VECTOR, 2) => q.vector.into(),
                (common::QUEUE_ENABLE, 2) => q.enable.into(),
                (common::QUEUE_NOTIFY_OFF, 2) => q.notify_off.into(),
                _ => panic!("unexpected read at {offset:#x} width {width}"),
            }
        }

        fn write(&self, offset: usize, width: u8, value: u64) {
            let mut s = self.state.lock().unwrap();
            if (NOTIFY..ISR).contains(&offset) {
                assert_eq!(width, 2);
                s.notifications.push((offset - NOTIFY, value as u16));
                return;
            }
            if offset >= DEVICE {
                s.config[offset - DEVICE] = value as u8;
                return;
            }
            let select = usize::from(s.select);
            let vectors = s.vectors;
            match (offset, width) {
                (common::DEVICE_FEATURE_SELECT, 4) => s.device_feature_select = value as u32,
                (common::DRIVER_FEATURE_SELECT, 4) => s.driver_feature_select = value as u32,
                (common::DRIVER_FEATURE, 4) => {
                    let shift = 32 * s.driver_feature_select.min(1);
                    s.accepted = (s.accepted & !(0xFFFF_FFFF << shift)) | (value << shift);
                }
                (common::DEVICE_STATUS, 1) => {
                    let mut v = value as u8;
                    if v == 0 {
                        s.accepted = 0;
                        s.config_vector = NO_VECTOR;
                        for q in &mut s.queues {
                            q.size = q.max;
                            q.enable = 0;
                            q.vector = NO_VECTOR;
                        }
                    }
                    if v & status::FEATURES_OK != 0
                        && (s.refuse_features || s.accepted & !s.offered != 0)
                    {
                        v &= !status::FEATURES_OK;
                    }
                    s.status = v;
                }
                (common::CONFIG_MSIX_VECTOR, 2) => {
                    s.config_vector = if (value as u16) < vectors {
                        value as u16
                    } else {
                        NO_VECTOR
                    }
                }
                (common::QUEUE_SELECT, 2) => s.select = value as u16,
                (common::QUEUE_SIZE, 2) => s.queues[select].size = value as u16,
                (common::QUEUE_MSIX_VECTOR, 2) => {
                    s.queues[select].vector = if (value as u16) < vectors {
                        value as u16
                    } else {
                        NO_VECTOR
                    }
                }
                (common::QUEUE_ENABLE, 2) => s.queues[select].enable = value as u16,
                (o, 4) if (common::QUEUE_DESC..common::QUEUE_DEVICE + 8).contains(&o) => {
                    let field = (o - common::QUEUE_DESC) / 8;
                    let shift = if (o - common::QUEUE_DESC) % 8 == 4 {
                        32
                    } else {
                        0
                    };
                    let a = &mut s.queues[select].addresses[field];
                    *a = (*a & !(0xFFFF_FFFF << shift)) | (value << shift);
                }
                _ => panic!("unexpected write at {offset:#x} width {width}"),
            }
        }
    }

    fn no_stall() -> impl FnMut(u32) {
        |_| {}
    }

    const OFFERED: u64 = feature::VERSION_1
        | feature::INDIRECT_DESC
        | feature::EVENT_IDX
        | feature::RING_PACKED
        | (1 << 9)
        | (1 << 12);

    fn ring(size: u16) -> QueueAddresses {
        QueueAddresses {
            size,
            descriptors: 0x1_2345_6000,
            driver: 0x1_2345_7000,
            device: 0x1_2345_8040,
        }
    }

    #[test]
    fn handshake() {
        let dev = FakeDevice::new(OFFERED, 2);
        let mut t = dev.transport(4);
        assert_eq!(t.begin_init(&mut no_stall()).unwrap(), OFFERED);
        assert_eq!(dev.state.lock().unwrap().status, 3);
        // Packed rings are accepted when offered; unknown transport bits never; bit 13 is not
        // offered.
        let wanted = feature::INDIRECT_DESC
            | feature::EVENT_IDX
            | feature::RING_PACKED
            | feature::RING_RESET
            | (1 << 9)
            | (1 << 13);
        let accepted = t.negotiate(wanted).unwrap();
        assert_eq!(
            accepted,
            feature::VERSION_1
                | feature::INDIRECT_DESC
                | feature::EVENT_IDX
                | feature::RING_PACKED
                | (1 << 9)
        );
        assert_eq!(dev.state.lock().unwrap().accepted, accepted);
        assert_eq!(dev.state.lock().unwrap().status, 0x0B);

        t.set_config_vector(Some(0)).unwrap();
        assert_eq!(t.num_queues(), 2);
        assert_eq!(t.queue_max_size(1).unwrap(), 256);
        let n0 = t.setup_queue(0, &ring(128), Some(1)).unwrap();
        let n1 = t.setup_queue(1, &ring(256), Some(2)).unwrap();
        t.driver_ok();
        {
            let s = dev.state.lock().unwrap();
            assert_eq!(s.status, 0x0F);
            assert_eq!(s.config_vector, 0);
            let q = &s.queues[0];
            assert_eq!((q.size, q.vector, q.enable), (128, 1, 1));
            assert_eq!(q.addresses, [0x1_2345_6000, 0x1_2345_7000, 0x1_2345_8040]);
            assert_eq!(s.queues[1].vector, 2);
        }
        assert!(t.device_status().is_live());
        n1.notify();
        n0.notify();
        assert_eq!(
            dev.state.lock().unwrap().notifications,
            std::vec![(4, 1), (0, 0)]
        );
    }

    /// Offered everything and asked for everything, the driver takes every device-type bit
    /// (0..=23 and 50..) and, of the transport bits (24..=49), only those it implements.
    #[test]
    fn only_implemented_transport_bits_are_accepted() {
        let dev = FakeDevice::new(u64::MAX, 1);
        let mut t = dev.transport(4);
        t.begin_init(&mut no_stall()).unwrap();
        let accepted = t.negotiate(u64::MAX).unwrap();
        let transport_bits: u64 = ((1 << 50) - 1) & !((1 << 24) - 1);
        assert_eq!(accepted & transport_bits, feature::TRANSPORT_SUPPORTED);
        assert_eq!(accepted & !transport_bits, !transport_bits);
    }

    #[test]
    fn version_1_is_required() {
        let dev = FakeDevice::new(OFFERED & !feature::VERSION_1, 1);
        let mut t = dev.transport(4);
        t.begin_init(&mut no_stall()).unwrap();
        assert_eq!(t.negotiate(u64::MAX), Err(TransportError::NoVersion1));
    }

    #[test]
    fn features_ok_refused_marks_failed() {
        let dev = FakeDevice::new(OFFERED, 1);
        dev.state.lock().unwrap().refuse_features = true;
        let mut t = dev.transport(4);
        t.begin_init(&mut no_stall()).unwrap();
        assert_eq!(t.negotiate(0), Err(TransportError::FeaturesRefused));
        assert!(t.device_status().failed());
    }

    #[test]
    fn reset_waits_and_times_out() {
        let dev = FakeDevice::new(OFFERED, 1);
        dev.state.lock().unwrap().reset_delay = 5;
        let mut stalls = 0;
        let mut t = dev.transport(4);
        t.reset(&mut |us| {
            assert!(us <= 100_000);
            stalls += 1;
        })
        .unwrap();
        assert_eq!(stalls, 5);

        dev.state.lock().unwrap().reset_delay = u32::MAX;
        let mut stalls = 0u32;
        assert_eq!(
            t.reset(&mut |_| stalls += 1),
            Err(TransportError::ResetTimeout)
        );
        assert_eq!(stalls, RESET_POLLS);
    }

    #[test]
    fn vector_read_back() {
        let dev = FakeDevice::new(OFFERED, 2);
        let mut t = dev.transport(4);
        t.begin_init(&mut no_stall()).unwrap();
        t.negotiate(0).unwrap();
        // The fake has 4 vectors: vector 7 reads back as NO_VECTOR.
        assert_eq!(
            t.setup_queue(0, &ring(64), Some(7)).unwrap_err(),
            TransportError::VectorRefused {
                queue: Some(0),
                read_back: NO_VECTOR
            }
        );
        assert_eq!(
            t.set_config_vector(Some(9)),
            Err(TransportError::VectorRefused {
                queue: None,
                read_back: NO_VECTOR
            })
        );
        // INTx: no vector wanted, none checked.
        t.setup_queue(1, &ring(64), None).unwrap();
        t.set_config_vector(None).unwrap();
    }

    #[test]
    fn queue_checks() {
        let dev = FakeDevice::new(OFFERED, 2);
        dev.state.lock().unwrap().queues[1].notify_off = 0x40;
        let mut t = dev.transport(4);
        t.begin_init(&mut no_stall()).unwrap();
        t.negotiate(0).unwrap();
        assert_eq!(
            t.queue_max_size(2),
            Err(TransportError::QueueUnavailable { queue: 2 })
        );
        assert_eq!(
            t.setup_queue(0, &ring(512), None).unwrap_err(),
            TransportError::QueueSize { queue: 0 }
        );
        assert_eq!(
            t.setup_queue(0, &ring(96), None).unwrap_err(),
            TransportError::QueueSize { queue: 0 }
        );
        // notify_off 0x40 * 4 = 0x100: past the 0x100-byte notify window.
        assert_eq!(
            t.setup_queue(1, &ring(64), None).unwrap_err(),
            TransportError::NotifyOutOfRange { queue: 1 }
        );
        dev.state.lock().unwrap().queues[0].max = 0;
        t.reset(&mut no_stall()).unwrap();
        assert_eq!(
            t.queue_max_size(0),
            Err(TransportError::QueueUnavailable { queue: 0 })
        );
    }

    #[test]
    fn device_config_under_generation() {
        let dev = FakeDevice::new(OFFERED, 1);
        dev.state.lock().unwrap().config[0..8]
            .copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        let t = dev.transport(4);
        let mut attempts = 0;
        dev.state.lock().unwrap().generation_flips = 3;
        let v = t
            .registers()
            .read_device_config(|c| {
                attempts += 1;
                (c.u64(0), c.u32(60), c.u32(61), c.u8(64))
            })
            .unwrap();
        assert_eq!(v, (Some(0x1122_3344_5566_7788), Some(0), None, None));
        assert!(attempts >= 2);
        dev.state.lock().unwrap().generation_flips = u32::MAX;
        assert_eq!(
            t.registers().read_device_config(|c| c.u8(0)),
            Err(TransportError::ConfigUnstable)
        );
    }

    #[test]
    fn isr_and_status() {
        let dev = FakeDevice::new(OFFERED, 1);
        let t = dev.transport(4);
        dev.state.lock().unwrap().isr = 3;
        let isr = t.read_isr();
        assert!(isr.queue() && isr.config_changed());
        assert_eq!(t.read_isr(), Isr(0));
        assert!(DeviceStatus(0xFF).needs_reset());
        assert!(!DeviceStatus(0xFF).is_live());
        assert!(!DeviceStatus(0x4F).is_live());
        assert!(DeviceStatus(0x0F).is_live());
    }

    #[test]
    fn map_checks_window_sizes() {
        let dev = FakeDevice::new(OFFERED, 1);
        let all = RegisterWindow::from_test_device(dev);
        let s = |offset, length| Structure {
            bar: 4,
            offset,
            length,
        };
        let layout = VirtioPciLayout {
            common: s(0, 64),
            notify: s(NOTIFY as u32, 0x100),
            notify_off_multiplier: 4,
            isr: s(ISR as u32, 1),
            device: s(DEVICE as u32, 64),
            msix_table_size: Some(3),
        };
        let mut map = |bar: u8, offset: u32, length: u32| {
            assert_eq!(bar, 4);
            all.subwindow(offset as usize, length as usize)
        };
        assert!(Transport::new(&layout, &mut map).is_ok());
        let mut short = |_: u8, offset: u32, _: u32| all.subwindow(offset as usize, 1);
        assert_eq!(
            Transport::new(&layout, &mut short).unwrap_err(),
            TransportError::Map(StructureType::Common)
        );
        let mut none = |_: u8, _: u32, _: u32| None;
        assert_eq!(
            Transport::new(&layout, &mut none).unwrap_err(),
            TransportError::Map(StructureType::Common)
        );
    }
}
