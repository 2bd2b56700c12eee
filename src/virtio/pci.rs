//! The modern virtio-pci capability walk (VIRTIO 1.2 4.1.4).
//!
//! A modern virtio device describes where its register structures live with vendor-specific
//! PCI capabilities (`struct virtio_pci_cap`, capability id 0x09): each names a BAR, an offset
//! and a length for one structure type (common configuration 1, notifications 2, ISR 3,
//! device-specific configuration 4, PCI configuration access 5). The adapter reads the first
//! 256 bytes of configuration space (`StorPortGetBusData`) and [`VirtioPciLayout::parse`] walks
//! the list.
//!
//! The configuration space comes from the device and is not trusted: the walk is bounded (at
//! most 48 capabilities, each dword position visited once, so a loop ends the walk), every
//! pointer and every field read is checked against the 256 bytes, and a capability naming a
//! reserved BAR, a too-short structure or an overflowing range is ignored, as 4.1.4.1 asks
//! ("The driver MUST ignore any vendor-specific capability structure which has a reserved bar
//! value").

/// Offset of the PCI status register (`PCI_COMMON_CONFIG.Status`).
const PCI_STATUS: usize = 0x06;
/// Status bit: the capability list at [`PCI_CAPABILITIES_POINTER`] is valid.
const PCI_STATUS_CAPABILITY_LIST: u16 = 1 << 4;
/// Offset of the capabilities pointer in a type 0 header.
const PCI_CAPABILITIES_POINTER: usize = 0x34;
/// First byte after the type 0 header; capabilities live in `0x40..0x100`.
const PCI_HEADER_END: usize = 0x40;
/// Size of the standard configuration space the capability list lives in.
const PCI_CONFIG_SIZE: usize = 0x100;

/// Capability id of a vendor-specific capability (virtio's `virtio_pci_cap`).
const CAP_ID_VENDOR: u8 = 0x09;
/// Capability id of MSI-X.
const CAP_ID_MSIX: u8 = 0x11;

/// Size of `struct virtio_pci_cap`.
const VIRTIO_CAP_LEN: usize = 16;
/// Size of `struct virtio_pci_notify_cap` (the cap plus `notify_off_multiplier`).
const VIRTIO_NOTIFY_CAP_LEN: usize = 20;

/// Size of `virtio_pci_common_cfg` up to and including `queue_device` (VIRTIO 1.0 layout);
/// shorter common structures are ignored.
pub(crate) const COMMON_CFG_MIN_LEN: u32 = 56;

/// The highest BAR index a capability may name (4.1.4: "values 0x0 to 0x5 specify a BAR").
const MAX_BAR: u8 = 5;

/// A virtio structure type (`cfg_type` of `struct virtio_pci_cap`, VIRTIO 1.2 4.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StructureType {
    /// `VIRTIO_PCI_CAP_COMMON_CFG` (1).
    Common,
    /// `VIRTIO_PCI_CAP_NOTIFY_CFG` (2).
    Notify,
    /// `VIRTIO_PCI_CAP_ISR_CFG` (3).
    Isr,
    /// `VIRTIO_PCI_CAP_DEVICE_CFG` (4).
    Device,
}

impl StructureType {
    fn from_cfg_type(cfg_type: u8) -> Option<Self> {
        match cfg_type {
            1 => Some(Self::Common),
            2 => Some(Self::Notify),
            3 => Some(Self::Isr),
            4 => Some(Self::Device),
            // 5 (PCI configuration access), 8 (shared memory) and vendor types are not used.
            _ => None,
        }
    }

    /// The shortest structure of this type the driver can use.
    fn min_len(self) -> u32 {
        match self {
            Self::Common => COMMON_CFG_MIN_LEN,
            // One 16-bit queue index write (4.1.4.4).
            Self::Notify => 2,
            Self::Isr => 1,
            // Any device configuration; the device layer checks each field it reads.
            Self::Device => 0,
        }
    }

    /// The alignment the structure's offset must have (VIRTIO 1.2 4.1.4.3-4.1.4.6): the common
    /// and device configurations hold 32-bit fields read with aligned accesses (4.1.3.1), the
    /// notify structure is written 16 bits at a time, the ISR byte has no constraint.
    fn offset_alignment(self) -> u32 {
        match self {
            Self::Common | Self::Device => 4,
            Self::Notify => 2,
            Self::Isr => 1,
        }
    }
}

/// Where one virtio structure lives: a BAR, an offset into it and a length.
///
/// # Invariants
///
/// `bar <= 5` and `offset + length` does not overflow a `u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Structure {
    /// BAR index (0..=5).
    pub bar: u8,
    /// Offset of the structure from the start of the BAR.
    pub offset: u32,
    /// Length of the structure in bytes.
    pub length: u32,
}

/// The register layout of a modern virtio-pci device, from its capability list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioPciLayout {
    /// The common configuration structure (at least `COMMON_CFG_MIN_LEN` bytes).
    pub common: Structure,
    /// The notification structure (at least 2 bytes).
    pub notify: Structure,
    /// `notify_off_multiplier`: a queue's notify address is `notify.offset + queue_notify_off *
    /// notify_off_multiplier` (4.1.4.4).
    pub notify_off_multiplier: u32,
    /// The ISR status byte (at least 1 byte).
    pub isr: Structure,
    /// The device-specific configuration (virtio-blk: `virtio_blk_config`).
    pub device: Structure,
    /// Number of MSI-X table entries, if the device has an MSI-X capability.
    pub msix_table_size: Option<u16>,
}

/// Why a configuration space does not describe a usable modern virtio-pci device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// Fewer than 64 bytes of configuration space were given.
    TooShort,
    /// The status register says there is no capability list.
    NoCapabilityList,
    /// A capability pointer points into the header or past the configuration space.
    BadPointer {
        /// The offending pointer.
        pointer: u8,
    },
    /// The list visits a capability twice.
    Loop {
        /// The capability visited twice.
        pointer: u8,
    },
    /// No usable capability of this structure type was found.
    Missing(StructureType),
}

impl VirtioPciLayout {
    /// Walks the capability list in `config` (the start of configuration space, at least the
    /// 64-byte header; bytes past 256 are ignored).
    ///
    /// The first usable capability of each structure type wins (4.1.4.1: "The driver SHOULD use
    /// the first instance of each virtio structure type they can support").
    pub fn parse(config: &[u8]) -> Result<Self, PciError> {
        let config = config.get(..PCI_CONFIG_SIZE).unwrap_or(config);
        if config.len() < PCI_HEADER_END {
            return Err(PciError::TooShort);
        }
        let status = le16(config, PCI_STATUS).ok_or(PciError::TooShort)?;
        if status & PCI_STATUS_CAPABILITY_LIST == 0 {
            return Err(PciError::NoCapabilityList);
        }

        let mut found = Found::default();
        // One bit per dword position of configuration space (a pointer is a byte: at most 64): a
        // second visit is a loop, so the walk ends within the 48 positions of `0x40..0x100`.
        let mut visited: u64 = 0;
        // The bottom two bits of a capability pointer are reserved (PCI 3.0 6.7).
        let mut pointer = byte(config, PCI_CAPABILITIES_POINTER).ok_or(PciError::TooShort)? & 0xFC;
        while pointer != 0 {
            let at = usize::from(pointer);
            // A capability needs its id and next bytes inside the device-specific region.
            if at < PCI_HEADER_END || at.checked_add(2).is_none_or(|end| end > config.len()) {
                return Err(PciError::BadPointer { pointer });
            }
            let bit = 1u64 << (at / 4);
            if visited & bit != 0 {
                return Err(PciError::Loop { pointer });
            }
            visited |= bit;

            match byte(config, at) {
                Some(CAP_ID_VENDOR) => found.virtio_cap(config, at),
                Some(CAP_ID_MSIX) => found.msix_cap(config, at),
                _ => {}
            }
            pointer = at
                .checked_add(1)
                .and_then(|next| byte(config, next))
                .unwrap_or(0)
                & 0xFC;
        }
        found.finish()
    }
}

/// What the walk has found so far.
#[derive(Default)]
struct Found {
    common: Option<Structure>,
    notify: Option<(Structure, u32)>,
    isr: Option<Structure>,
    device: Option<Structure>,
    msix_table_size: Option<u16>,
}

impl Found {
    /// Records the `struct virtio_pci_cap` at `at` if it is usable and the first of its type.
    fn virtio_cap(&mut self, config: &[u8], at: usize) {
        let Some(cap) = VirtioCap::read(config, at) else {
            return;
        };
        let Some(kind) = StructureType::from_cfg_type(cap.cfg_type) else {
            return;
        };
        if cap.bar > MAX_BAR || cap.length < kind.min_len() {
            return;
        }
        if cap.offset.checked_add(cap.length).is_none() {
            return;
        }
        // A misaligned structure would make every register access in it misaligned (the
        // register window refuses those): not usable.
        if !cap.offset.is_multiple_of(kind.offset_alignment()) {
            return;
        }
        // INVARIANT: bar <= 5 and offset + length fits a u32 (checked above).
        let structure = Structure {
            bar: cap.bar,
            offset: cap.offset,
            length: cap.length,
        };
        match kind {
            StructureType::Common => {
                self.common.get_or_insert(structure);
            }
            StructureType::Notify => {
                // `notify_off_multiplier` follows the cap (struct virtio_pci_notify_cap).
                if usize::from(cap.cap_len) < VIRTIO_NOTIFY_CAP_LEN {
                    return;
                }
                let multiplier = at
                    .checked_add(VIRTIO_CAP_LEN)
                    .and_then(|field| le32(config, field));
                let Some(multiplier) = multiplier else {
                    return;
                };
                // 4.1.4.4: an even power of 2, or 0; an odd one would misalign every queue's
                // notify address after the first.
                if multiplier % 2 != 0 {
                    return;
                }
                self.notify.get_or_insert((structure, multiplier));
            }
            StructureType::Isr => {
                self.isr.get_or_insert(structure);
            }
            StructureType::Device => {
                self.device.get_or_insert(structure);
            }
        }
    }

    /// Records the MSI-X table size from the MSI-X capability at `at`.
    fn msix_cap(&mut self, config: &[u8], at: usize) {
        if self.msix_table_size.is_some() {
            return;
        }
        // Message Control: bits 10:0 hold the table size minus one (PCI 3.0 6.8.2.3).
        if let Some(control) = at.checked_add(2).and_then(|field| le16(config, field)) {
            #[expect(
                clippy::arithmetic_side_effects,
                reason = "control & 0x07FF is at most 2047: adding 1 fits a u16"
            )]
            let size = (control & 0x07FF) + 1;
            self.msix_table_size = Some(size);
        }
    }

    fn finish(self) -> Result<VirtioPciLayout, PciError> {
        let common = self
            .common
            .ok_or(PciError::Missing(StructureType::Common))?;
        let (notify, notify_off_multiplier) = self
            .notify
            .ok_or(PciError::Missing(StructureType::Notify))?;
        let isr = self.isr.ok_or(PciError::Missing(StructureType::Isr))?;
        let device = self
            .device
            .ok_or(PciError::Missing(StructureType::Device))?;
        Ok(VirtioPciLayout {
            common,
            notify,
            notify_off_multiplier,
            isr,
            device,
            msix_table_size: self.msix_table_size,
        })
    }
}

/// The fields of one `struct virtio_pci_cap`, read from configuration space.
struct VirtioCap {
    cap_len: u8,
    cfg_type: u8,
    bar: u8,
    offset: u32,
    length: u32,
}

impl VirtioCap {
    /// Reads the capability at `at`, or `None` if it is shorter than `struct virtio_pci_cap`
    /// or runs past the configuration space.
    fn read(config: &[u8], at: usize) -> Option<Self> {
        let cap_len = byte(config, at.checked_add(2)?)?;
        if usize::from(cap_len) < VIRTIO_CAP_LEN
            || at.checked_add(usize::from(cap_len))? > config.len()
        {
            return None;
        }
        Some(Self {
            cap_len,
            cfg_type: byte(config, at.checked_add(3)?)?,
            bar: byte(config, at.checked_add(4)?)?,
            offset: le32(config, at.checked_add(8)?)?,
            length: le32(config, at.checked_add(12)?)?,
        })
    }
}

fn byte(config: &[u8], at: usize) -> Option<u8> {
    config.get(at).copied()
}

fn le16(config: &[u8], at: usize) -> Option<u16> {
    let bytes = config.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(bytes.try_into().ok()?))
}

fn le32(config: &[u8], at: usize) -> Option<u32> {
    let bytes = config.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
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
    use core::sync::atomic::{AtomicU64, Ordering};

    /// A configuration space with a capability list, built capability by capability.
    struct Space {
        bytes: [u8; 256],
        next_free: usize,
        last: Option<usize>,
    }

    impl Space {
        fn new() -> Self {
            let mut bytes = [0u8; 256];
            bytes[0..2].copy_from_slice(&0x1AF4u16.to_le_bytes());
            bytes[2..4].copy_from_slice(&0x1042u16.to_le_bytes());
            bytes[PCI_STATUS] = PCI_STATUS_CAPABILITY_LIST as u8;
            Self {
                bytes,
                next_free: 0x40,
                last: None,
            }
        }

        /// Appends a capability with the given body (after the id and next bytes).
        fn cap(&mut self, id: u8, body: &[u8]) -> usize {
            let at = self.next_free;
            self.bytes[at] = id;
            self.bytes[at + 2..at + 2 + body.len()].copy_from_slice(body);
            match self.last {
                None => self.bytes[PCI_CAPABILITIES_POINTER] = at as u8,
                Some(prev) => self.bytes[prev + 1] = at as u8,
            }
            self.last = Some(at);
            self.next_free = (at + 2 + body.len() + 3) & !3;
            at
        }

        fn virtio(&mut self, cfg_type: u8, bar: u8, offset: u32, length: u32) -> usize {
            let mut body = [0u8; 14];
            body[0] = 16;
            body[1] = cfg_type;
            body[2] = bar;
            body[6..10].copy_from_slice(&offset.to_le_bytes());
            body[10..14].copy_from_slice(&length.to_le_bytes());
            self.cap(CAP_ID_VENDOR, &body)
        }

        fn notify(&mut self, bar: u8, offset: u32, length: u32, multiplier: u32) -> usize {
            let mut body = [0u8; 18];
            body[0] = 20;
            body[1] = 2;
            body[2] = bar;
            body[6..10].copy_from_slice(&offset.to_le_bytes());
            body[10..14].copy_from_slice(&length.to_le_bytes());
            body[14..18].copy_from_slice(&multiplier.to_le_bytes());
            self.cap(CAP_ID_VENDOR, &body)
        }

        /// The layout QEMU's virtio-blk-pci presents (all in BAR 4, MSI-X first).
        fn qemu() -> Self {
            let mut s = Self::new();
            s.cap(CAP_ID_MSIX, &[0x08, 0x80, 0x01, 0, 0, 0, 0x01, 0x08, 0, 0]);
            s.virtio(1, 4, 0x0000, 0x1000);
            s.virtio(3, 4, 0x1000, 0x1000);
            s.virtio(4, 4, 0x2000, 0x1000);
            s.notify(4, 0x3000, 0x1000, 4);
            s.virtio(5, 0, 0, 0);
            s
        }
    }

    #[test]
    fn qemu_layout() {
        let layout = VirtioPciLayout::parse(&Space::qemu().bytes).unwrap();
        assert_eq!(
            layout.common,
            Structure {
                bar: 4,
                offset: 0,
                length: 0x1000
            }
        );
        assert_eq!(layout.isr.offset, 0x1000);
        assert_eq!(layout.device.offset, 0x2000);
        assert_eq!(layout.notify.offset, 0x3000);
        assert_eq!(layout.notify_off_multiplier, 4);
        assert_eq!(layout.msix_table_size, Some(9));
    }

    #[test]
    fn first_of_each_type_wins_and_bad_caps_are_skipped() {
        let mut s = Space::new();
        s.virtio(1, 6, 0, 0x1000); // reserved BAR: ignored
        s.virtio(1, 0, 0, 16); // too short for a common structure: ignored
        s.virtio(1, 1, 0xFFFF_F000, 0x2000); // overflowing range: ignored
        s.virtio(1, 2, 0x100, 0x100); // the first usable one
        s.virtio(1, 3, 0x200, 0x100);
        s.virtio(3, 2, 0x300, 4);
        s.virtio(4, 2, 0x400, 0x40);
        s.virtio(2, 2, 0x500, 0x100); // a notify cap too short for the multiplier: ignored
        s.notify(2, 0x600, 0x100, 0);
        let layout = VirtioPciLayout::parse(&s.bytes).unwrap();
        assert_eq!(layout.common.bar, 2);
        assert_eq!(layout.common.offset, 0x100);
        assert_eq!(layout.notify.offset, 0x600);
        assert_eq!(layout.notify_off_multiplier, 0);
        assert_eq!(layout.msix_table_size, None);
    }

    #[test]
    fn missing_structures() {
        let mut s = Space::new();
        s.virtio(1, 0, 0, 0x100);
        s.virtio(3, 0, 0x100, 1);
        s.notify(0, 0x200, 0x100, 4);
        assert_eq!(
            VirtioPciLayout::parse(&s.bytes),
            Err(PciError::Missing(StructureType::Device))
        );
        let mut s = Space::new();
        s.virtio(5, 0, 0, 0);
        assert_eq!(
            VirtioPciLayout::parse(&s.bytes),
            Err(PciError::Missing(StructureType::Common))
        );
    }

    #[test]
    fn no_capability_list() {
        let mut s = Space::qemu();
        s.bytes[PCI_STATUS] = 0;
        assert_eq!(
            VirtioPciLayout::parse(&s.bytes),
            Err(PciError::NoCapabilityList)
        );
        assert_eq!(
            VirtioPciLayout::parse(&s.bytes[..63]),
            Err(PciError::TooShort)
        );
        assert_eq!(VirtioPciLayout::parse(&[]), Err(PciError::TooShort));
    }

    #[test]
    fn loops_end_the_walk() {
        // A capability pointing at itself.
        let mut s = Space::qemu();
        let at = s.last.unwrap();
        s.bytes[at + 1] = at as u8;
        assert_eq!(
            VirtioPciLayout::parse(&s.bytes),
            Err(PciError::Loop { pointer: at as u8 })
        );
        // A longer cycle back to the first capability; the reserved pointer bits are ignored.
        let mut s = Space::qemu();
        let last = s.last.unwrap();
        s.bytes[last + 1] = 0x40 | 0x3;
        assert_eq!(
            VirtioPciLayout::parse(&s.bytes),
            Err(PciError::Loop { pointer: 0x40 })
        );
    }

    #[test]
    fn pointers_outside_the_capability_area() {
        let mut s = Space::qemu();
        s.bytes[PCI_CAPABILITIES_POINTER] = 0x10;
        assert_eq!(
            VirtioPciLayout::parse(&s.bytes),
            Err(PciError::BadPointer { pointer: 0x10 })
        );
        // A list that runs off the end of a short (header + a little) configuration space.
        let s = Space::qemu();
        assert_eq!(
            VirtioPciLayout::parse(&s.bytes[..0x44]),
            Err(PciError::BadPointer { pointer: 0x4C })
        );
    }

    #[test]
    fn capability_running_past_the_end_is_ignored() {
        let mut s = Space::qemu();
        // Claim a 200-byte capability at the last one: it would run past 256 bytes.
        let at = s.last.unwrap();
        s.bytes[at + 2] = 200;
        s.bytes[at + 3] = 1;
        let layout = VirtioPciLayout::parse(&s.bytes).unwrap();
        assert_eq!(layout.common.offset, 0);
        // A capability in the last dword: only its id and next bytes fit.
        let mut s = Space::qemu();
        let last = s.last.unwrap();
        s.bytes[last + 1] = 0xFC;
        s.bytes[0xFC] = CAP_ID_VENDOR;
        s.bytes[0xFD] = 0;
        s.bytes[0xFE] = 16;
        s.bytes[0xFF] = 1;
        assert!(VirtioPciLayout::parse(&s.bytes).is_ok());
    }

    #[test]
    fn every_byte_pattern_is_handled() {
        // Not exhaustive, but every single-byte corruption of a good space must not panic.
        let good = Space::qemu().bytes;
        for at in 0..256 {
            for value in [0x00, 0x03, 0x11, 0x40, 0x7F, 0xFC, 0xFF] {
                let mut bytes = good;
                bytes[at] = value;
                let _ = VirtioPciLayout::parse(&bytes);
            }
        }
    }

    /// VIRTIO 1.2 4.1.4: a structure at a misaligned offset, or a notify multiplier that is odd,
    /// is not usable; an aligned one later in the list is taken instead.
    #[test]
    fn misaligned_structures_are_not_used() {
        for (bad, kind) in [(1u8, StructureType::Common), (4, StructureType::Device)] {
            let mut s = Space::new();
            s.virtio(bad, 4, 0x0002, 0x1000);
            for t in [1u8, 3, 4] {
                if t != bad {
                    s.virtio(t, 4, 0x1000 * u32::from(t), 0x1000);
                }
            }
            s.notify(4, 0x3000, 0x1000, 4);
            assert_eq!(
                VirtioPciLayout::parse(&s.bytes),
                Err(PciError::Missing(kind)),
                "{kind:?} at offset 2"
            );
            // The same with an aligned copy after it: that one is used.
            s.virtio(bad, 4, 0x5000, 0x1000);
            let layout = VirtioPciLayout::parse(&s.bytes).expect("the aligned copy is used");
            let used = if kind == StructureType::Common {
                layout.common
            } else {
                layout.device
            };
            assert_eq!(used.offset, 0x5000);
        }
        // Notify: 2-byte alignment and an even multiplier.
        for (offset, multiplier) in [(0x3001u32, 4u32), (0x3000, 3)] {
            let mut s = Space::new();
            s.virtio(1, 4, 0x0000, 0x1000);
            s.virtio(3, 4, 0x1000, 0x1000);
            s.virtio(4, 4, 0x2000, 0x1000);
            s.notify(4, offset, 0x1000, multiplier);
            assert_eq!(
                VirtioPciLayout::parse(&s.bytes),
                Err(PciError::Missing(StructureType::Notify)),
                "notify at {offset:#x}, multiplier {multiplier}"
            );
        }
        // The ISR byte may be anywhere.
        let mut s = Space::new();
        s.virtio(1, 4, 0x0000, 0x1000);
        s.virtio(3, 4, 0x1001, 1);
        s.virtio(4, 4, 0x2000, 0x1000);
        s.notify(4, 0x3000, 0x1000, 4);
        assert_eq!(
            VirtioPciLayout::parse(&s.bytes).map(|l| l.isr.offset),
            Ok(0x1001)
        );
    }

    /// 64 bytes that count the accesses that reach them.
    struct Counting {
        accesses: AtomicU64,
    }

    impl storport::register::TestRegisters for Counting {
        fn read(&self, _offset: usize, _width: u8) -> u64 {
            self.accesses.fetch_add(1, Ordering::Relaxed);
            0
        }
        fn write(&self, _offset: usize, _width: u8, _value: u64) {
            self.accesses.fetch_add(1, Ordering::Relaxed);
        }
        fn len(&self) -> usize {
            64
        }
    }

    #[test]
    fn misaligned_accesses_never_reach_the_device() {
        static DEV: Counting = Counting {
            accesses: AtomicU64::new(0),
        };
        let w = storport::register::RegisterWindow::from_test_device(&DEV);
        // Aligned accesses of every width reach the device.
        assert_eq!(w.read_u8(3), 0);
        assert_eq!(w.read_u16(2), 0);
        assert_eq!(w.read_u32(4), 0);
        assert_eq!(w.read_u64(8), 0);
        w.write_u32(12, 1);
        assert_eq!(DEV.accesses.load(Ordering::Relaxed), 5);
        // Misaligned ones read all ones and write nothing.
        assert_eq!(w.read_u16(1), u16::MAX);
        assert_eq!(w.read_u32(2), u32::MAX);
        assert_eq!(w.read_u64(4), u64::MAX);
        w.write_u16(3, 1);
        w.write_u32(6, 1);
        w.write_u64(12, 1);
        // A window at an odd offset (a device-given capability offset) misaligns everything
        // wider than a byte in it.
        let odd = w.subwindow(1, 32).expect("inside the window");
        assert_eq!(odd.read_u32(3), 0, "offset 1 + 3 is aligned");
        assert_eq!(odd.read_u32(0), u32::MAX);
        assert_eq!(DEV.accesses.load(Ordering::Relaxed), 6);
    }
}
