//! The PCI configuration space of the virtio-blk function (PCI 3.0 type-0 header, VIRTIO 1.2
//! 4.1.2 and 4.1.4, PCI 3.0 6.8.2 for MSI-X).
//!
//! The space is a 256-byte image plus a write mask, as in QEMU: a write changes only the bits
//! its mask allows, so the BAR sizing protocol (write all-ones, read back the size mask) falls
//! out of the BAR masks. The one live register is the `pci_cfg_data` window of the
//! VIRTIO_PCI_CAP_PCI_CFG capability, which the caller forwards to the BARs ([`PciCfgWindow`]).
//!
//! Layout (QEMU-like): MSI-X capability at 0x40, then the virtio capabilities common (1), ISR
//! (3), device (4), notify (2) and pci-cfg (5), all pointing into BAR 4.

use super::transport::layout;
use super::{MSIX_BAR, VIRTIO_BAR};

/// PCI vendor ID of virtio devices (Red Hat / Qumranet).
pub const VENDOR_ID: u16 = 0x1AF4;
/// Modern virtio-blk: 0x1040 + device type 2.
pub const DEVICE_ID: u16 = 0x1042;
/// Subsystem ID: the virtio device type.
pub const SUBSYSTEM_ID: u16 = 2;

const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
const BAR0: usize = 0x10;
const CAP_PTR: usize = 0x34;

/// Command register bits the driver may change: memory space, bus master, interrupt disable.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Bus master enable.
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// INTx disable.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;

/// Offset of the MSI-X capability.
pub const MSIX_CAP: usize = 0x40;
/// MSI-X message control: enable bit.
pub const MSIX_ENABLE: u16 = 1 << 15;
/// MSI-X message control: function mask bit.
pub const MSIX_FUNCTION_MASK: u16 = 1 << 14;

/// Capability ID of vendor-specific capabilities (the virtio ones).
pub const CAP_ID_VENDOR: u8 = 0x09;
/// Capability ID of MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;

/// virtio capability `cfg_type` values (VIRTIO 1.2 4.1.4).
pub mod cfg_type {
    /// Common configuration.
    pub const COMMON: u8 = 1;
    /// Notifications.
    pub const NOTIFY: u8 = 2;
    /// ISR status.
    pub const ISR: u8 = 3;
    /// Device-specific configuration.
    pub const DEVICE: u8 = 4;
    /// PCI configuration access.
    pub const PCI: u8 = 5;
}

const CAP_COMMON: usize = 0x50;
const CAP_ISR: usize = 0x60;
const CAP_DEVICE: usize = 0x70;
const CAP_NOTIFY: usize = 0x80;
const CAP_PCI: usize = 0x94;
/// Offset of `pci_cfg_data` in the configuration space.
pub const PCI_CFG_DATA: usize = CAP_PCI + 16;

/// Notify offset multiplier: queue N's doorbell is at `notify + N * 4`.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;

/// Size of BAR 4 (the virtio registers).
pub const VIRTIO_BAR_SIZE: u64 = layout::BAR_SIZE;
/// Default address of BAR 4 before the port moves it (firmware-assigned, above 4 GiB's end of
/// the default guest memory so the two never overlap).
const VIRTIO_BAR_DEFAULT: u64 = 0x0000_0080_0000_0000;
/// Default address of BAR 1 (the MSI-X table).
const MSIX_BAR_DEFAULT: u64 = 0xFEB0_0000;

/// Where the BAR-backed `pci_cfg_data` window currently points.
#[derive(Clone, Copy, Debug)]
pub struct PciCfgWindow {
    /// BAR index.
    pub bar: u8,
    /// Offset in the BAR.
    pub offset: u32,
    /// Access width (1, 2 or 4).
    pub length: u32,
}

/// The configuration-space image and write mask.
pub struct ConfigSpace {
    data: [u8; 256],
    wmask: [u8; 256],
    msix_bar_size: u64,
}

impl ConfigSpace {
    /// Builds the configuration space for `msix_vectors` vectors (0: no MSI-X capability).
    pub fn new(msix_vectors: u16) -> Self {
        let mut s = Self {
            data: [0; 256],
            wmask: [0; 256],
            msix_bar_size: 0,
        };
        s.put16(0x00, VENDOR_ID);
        s.put16(0x02, DEVICE_ID);
        s.put16(STATUS, 1 << 4); // capabilities list
        s.data[0x08] = 1; // revision 1: a modern-only device (VIRTIO 1.2 4.1.2.1)
        s.data[0x09] = 0x00; // prog-if
        s.data[0x0A] = 0x00; // subclass: SCSI, as QEMU's PCI_CLASS_STORAGE_SCSI
        s.data[0x0B] = 0x01; // class: mass storage
        s.data[0x0E] = 0x00; // header type 0
        s.put16(0x2C, VENDOR_ID);
        s.put16(0x2E, SUBSYSTEM_ID);
        s.data[0x3D] = 1; // INTA#
        s.wmask[0x3C] = 0xFF; // interrupt line
        s.set_wmask16(
            COMMAND,
            COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE,
        );

        // BAR 4/5: 64-bit prefetchable memory.
        let bar4 = BAR0 + 4 * usize::from(VIRTIO_BAR);
        let low_mask = !(VIRTIO_BAR_SIZE - 1) as u32 & !0xF;
        s.put32(bar4, (VIRTIO_BAR_DEFAULT as u32) | 0xC);
        s.put32(bar4 + 4, (VIRTIO_BAR_DEFAULT >> 32) as u32);
        s.set_wmask32(bar4, low_mask);
        s.set_wmask32(bar4 + 4, 0xFFFF_FFFF);

        let mut next = CAP_COMMON as u8;
        if msix_vectors > 0 {
            let (pba_offset, bar_size) = layout::msix(msix_vectors);
            s.msix_bar_size = bar_size;
            let bar1 = BAR0 + 4 * usize::from(MSIX_BAR);
            s.put32(bar1, MSIX_BAR_DEFAULT as u32);
            s.set_wmask32(bar1, !(bar_size - 1) as u32 & !0xF);
            s.data[MSIX_CAP] = CAP_ID_MSIX;
            s.data[MSIX_CAP + 1] = CAP_COMMON as u8;
            s.put16(MSIX_CAP + 2, msix_vectors - 1); // table size N-1
            s.wmask[MSIX_CAP + 3] = 0xC0; // enable, function mask
            s.put32(MSIX_CAP + 4, u32::from(MSIX_BAR)); // table at offset 0
            s.put32(MSIX_CAP + 8, pba_offset as u32 | u32::from(MSIX_BAR));
            next = MSIX_CAP as u8;
        }
        s.data[CAP_PTR] = next;

        s.virtio_cap(
            CAP_COMMON,
            CAP_ISR,
            cfg_type::COMMON,
            16,
            layout::COMMON,
            0x1000,
        );
        s.virtio_cap(CAP_ISR, CAP_DEVICE, cfg_type::ISR, 16, layout::ISR, 0x1000);
        s.virtio_cap(
            CAP_DEVICE,
            CAP_NOTIFY,
            cfg_type::DEVICE,
            16,
            layout::DEVICE,
            0x1000,
        );
        s.virtio_cap(
            CAP_NOTIFY,
            CAP_PCI,
            cfg_type::NOTIFY,
            20,
            layout::NOTIFY,
            0x1000,
        );
        s.put32(CAP_NOTIFY + 16, NOTIFY_OFF_MULTIPLIER);
        s.virtio_cap(CAP_PCI, 0, cfg_type::PCI, 20, 0, 0);
        s.data[CAP_PCI + 4] = 0; // the driver selects the BAR
        s.wmask[CAP_PCI + 4] = 0xFF;
        s.set_wmask32(CAP_PCI + 8, 0xFFFF_FFFF); // offset
        s.set_wmask32(CAP_PCI + 12, 0xFFFF_FFFF); // length
        s
    }

    /// Writes one `struct virtio_pci_cap` (VIRTIO 1.2 4.1.4).
    fn virtio_cap(&mut self, at: usize, next: usize, kind: u8, len: u8, offset: u64, size: u32) {
        self.data[at] = CAP_ID_VENDOR;
        self.data[at + 1] = next as u8;
        self.data[at + 2] = len;
        self.data[at + 3] = kind;
        self.data[at + 4] = VIRTIO_BAR;
        self.data[at + 5] = 0; // id
        self.put32(at + 8, offset as u32);
        self.put32(at + 12, size);
    }

    fn put16(&mut self, at: usize, v: u16) {
        self.data[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn put32(&mut self, at: usize, v: u32) {
        self.data[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn set_wmask16(&mut self, at: usize, v: u16) {
        self.wmask[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn set_wmask32(&mut self, at: usize, v: u32) {
        self.wmask[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn get16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.data[at], self.data[at + 1]])
    }

    fn get32(&self, at: usize) -> u32 {
        u32::from_le_bytes([
            self.data[at],
            self.data[at + 1],
            self.data[at + 2],
            self.data[at + 3],
        ])
    }

    /// Reads the image; bytes past 256 read as 0xFF.
    pub fn read(&self, offset: u16, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = usize::from(offset)
                .checked_add(i)
                .and_then(|at| self.data.get(at).copied())
                .unwrap_or(0xFF);
        }
    }

    /// Writes the image through the write mask (read-only bits are ignored).
    pub fn write(&mut self, offset: u16, input: &[u8]) {
        for (i, v) in input.iter().enumerate() {
            let Some(at) = usize::from(offset).checked_add(i) else {
                return;
            };
            if at >= 256 {
                return;
            }
            let m = self.wmask[at];
            self.data[at] = (self.data[at] & !m) | (v & m);
        }
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.get16(COMMAND)
    }

    /// The MSI-X message control register (0 without MSI-X).
    pub fn msix_control(&self) -> u16 {
        if self.msix_bar_size == 0 {
            0
        } else {
            self.get16(MSIX_CAP + 2)
        }
    }

    /// Where `pci_cfg_data` currently points.
    pub fn pci_cfg_window(&self) -> PciCfgWindow {
        PciCfgWindow {
            bar: self.data[CAP_PCI + 4],
            offset: self.get32(CAP_PCI + 8),
            length: self.get32(CAP_PCI + 12),
        }
    }

    /// The memory BARs as currently programmed: (index, address, size, is_64bit).
    pub fn bars(&self) -> Vec<(u8, u64, u64, bool)> {
        let mut out = Vec::new();
        if self.msix_bar_size > 0 {
            let at = BAR0 + 4 * usize::from(MSIX_BAR);
            out.push((
                MSIX_BAR,
                u64::from(self.get32(at) & !0xF),
                self.msix_bar_size,
                false,
            ));
        }
        let at = BAR0 + 4 * usize::from(VIRTIO_BAR);
        let address = u64::from(self.get32(at) & !0xF) | (u64::from(self.get32(at + 4)) << 32);
        out.push((VIRTIO_BAR, address, VIRTIO_BAR_SIZE, true));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_sizing_reads_back_the_size_mask() {
        let mut cs = ConfigSpace::new(5);
        cs.write(0x20, &[0xFF; 4]);
        cs.write(0x24, &[0xFF; 4]);
        let mut b = [0u8; 8];
        cs.read(0x20, &mut b);
        let v = u64::from_le_bytes(b);
        assert_eq!(v & 0xF, 0xC);
        assert_eq!(!(v & !0xF) + 1, VIRTIO_BAR_SIZE);
        cs.write(0x14, &[0xFF; 4]);
        let mut b = [0u8; 4];
        cs.read(0x14, &mut b);
        assert_eq!(!u32::from_le_bytes(b) + 1, 0x1000);
        // Unimplemented BARs read 0.
        cs.write(0x10, &[0xFF; 4]);
        cs.read(0x10, &mut b);
        assert_eq!(b, [0; 4]);
        // Read-only IDs stay.
        cs.write(0, &[0; 4]);
        cs.read(0, &mut b);
        assert_eq!(b, [0xF4, 0x1A, 0x42, 0x10]);
    }

    #[test]
    fn capability_chain_is_well_formed() {
        let cs = ConfigSpace::new(3);
        let mut at = cs.data[CAP_PTR] as usize;
        let mut kinds = Vec::new();
        while at != 0 {
            if cs.data[at] == CAP_ID_VENDOR {
                kinds.push(cs.data[at + 3]);
            } else {
                assert_eq!(cs.data[at], CAP_ID_MSIX);
                assert_eq!(cs.get16(at + 2) & 0x7FF, 2);
            }
            at = cs.data[at + 1] as usize;
        }
        assert_eq!(kinds, [1, 3, 4, 2, 5]);
        let none = ConfigSpace::new(0);
        assert_eq!(none.data[CAP_PTR] as usize, CAP_COMMON);
    }
}
