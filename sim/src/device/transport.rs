//! The virtio-pci modern registers in BAR 4 (VIRTIO 1.2 4.1.4.3 to 4.1.4.8).
//!
//! [`CommonCfg`] is `struct virtio_pci_common_cfg`: feature windows, status, and the per-queue
//! registers behind `queue_select`. Any access width works: a write is merged into a snapshot
//! of the structure and every field it touched is then stored with its own rules, so a 64-bit
//! ring address written as two 32-bit halves behaves as one 64-bit write. `device_status` is
//! handed back to the caller, which owns the lifecycle (reset, FEATURES_OK, DRIVER_OK).
//! [`blk_config`] builds `struct virtio_blk_config` (VIRTIO 1.2 5.2.4).

use super::config::{DeviceConfig, features};
use super::msix::NO_VECTOR;

/// Where things are in BAR 4 and BAR 1.
pub mod layout {
    /// Common configuration.
    pub const COMMON: u64 = 0x0000;
    /// ISR status.
    pub const ISR: u64 = 0x1000;
    /// Device-specific configuration.
    pub const DEVICE: u64 = 0x2000;
    /// Notify doorbells (`NOTIFY_OFF_MULTIPLIER` bytes apart).
    pub const NOTIFY: u64 = 0x3000;
    /// Size of each region.
    pub const REGION: u64 = 0x1000;
    /// Size of BAR 4.
    pub const BAR_SIZE: u64 = 0x4000;

    /// MSI-X layout in BAR 1 for `vectors` vectors: (PBA offset, BAR size). The table is at 0.
    pub fn msix(vectors: u16) -> (u64, u64) {
        let table = u64::from(vectors) * 16;
        let pba_offset = table.next_multiple_of(0x800).max(0x800);
        let pba_size = u64::from(vectors).div_ceil(64) * 8;
        let size = (pba_offset + pba_size).next_power_of_two().max(0x1000);
        (pba_offset, size)
    }
}

/// `device_status` bits (VIRTIO 1.2 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest knows how to drive it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    /// The guest gave up on the device.
    pub const FAILED: u8 = 0x80;
}

/// Offsets in `struct virtio_pci_common_cfg`.
pub mod common {
    /// le32 device_feature_select.
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    /// le32 device_feature (read-only).
    pub const DEVICE_FEATURE: u64 = 0x04;
    /// le32 driver_feature_select.
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    /// le32 driver_feature.
    pub const DRIVER_FEATURE: u64 = 0x0C;
    /// le16 config_msix_vector.
    pub const MSIX_CONFIG: u64 = 0x10;
    /// le16 num_queues (read-only).
    pub const NUM_QUEUES: u64 = 0x12;
    /// u8 device_status.
    pub const DEVICE_STATUS: u64 = 0x14;
    /// u8 config_generation (read-only).
    pub const CONFIG_GENERATION: u64 = 0x15;
    /// le16 queue_select.
    pub const QUEUE_SELECT: u64 = 0x16;
    /// le16 queue_size.
    pub const QUEUE_SIZE: u64 = 0x18;
    /// le16 queue_msix_vector.
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1A;
    /// le16 queue_enable.
    pub const QUEUE_ENABLE: u64 = 0x1C;
    /// le16 queue_notify_off (read-only).
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1E;
    /// le64 queue_desc.
    pub const QUEUE_DESC: u64 = 0x20;
    /// le64 queue_driver (the available ring).
    pub const QUEUE_DRIVER: u64 = 0x28;
    /// le64 queue_device (the used ring).
    pub const QUEUE_DEVICE: u64 = 0x30;
    /// Size of the structure this model decodes.
    pub const SIZE: u64 = 0x38;
}

/// Offsets in `struct virtio_blk_config`.
pub mod blk {
    /// u8 writeback.
    pub const WRITEBACK: u64 = 32;
    /// Size of the structure.
    pub const SIZE: usize = 0x48;
}

const FIELDS: [(u64, usize); 16] = [
    (0x00, 4),
    (0x04, 4),
    (0x08, 4),
    (0x0C, 4),
    (0x10, 2),
    (0x12, 2),
    (0x14, 1),
    (0x15, 1),
    (0x16, 2),
    (0x18, 2),
    (0x1A, 2),
    (0x1C, 2),
    (0x1E, 2),
    (0x20, 8),
    (0x28, 8),
    (0x30, 8),
];

/// The registers of one virtqueue as the driver set them.
#[derive(Clone, Copy, Debug)]
pub struct QueueRegs {
    /// queue_size.
    pub size: u16,
    /// queue_msix_vector.
    pub msix_vector: u16,
    /// queue_enable.
    pub enabled: bool,
    /// queue_desc.
    pub desc: u64,
    /// queue_driver.
    pub driver: u64,
    /// queue_device.
    pub device: u64,
}

/// `struct virtio_pci_common_cfg` state.
pub struct CommonCfg {
    offered: u64,
    max_queue_size: u16,
    vectors: u16,
    /// device_feature_select.
    pub device_feature_select: u32,
    /// driver_feature_select.
    pub driver_feature_select: u32,
    /// The features the driver wrote.
    pub driver_features: u64,
    /// config_msix_vector.
    pub msix_config: u16,
    /// device_status as the driver set it (DEVICE_NEEDS_RESET lives in the device).
    pub status: u8,
    /// queue_select.
    pub queue_select: u16,
    /// Per-queue registers.
    pub queues: Vec<QueueRegs>,
}

/// What a common-configuration write asks of the device beyond storing registers.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteEffect {
    /// A value written to `device_status`.
    pub status: Option<u8>,
    /// A queue the driver enabled.
    pub enabled_queue: Option<u16>,
}

impl CommonCfg {
    /// The registers after a device reset.
    pub fn new(offered: u64, num_queues: u16, max_queue_size: u16, vectors: u16) -> Self {
        Self {
            offered,
            max_queue_size,
            vectors,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            msix_config: NO_VECTOR,
            status: 0,
            queue_select: 0,
            queues: vec![
                QueueRegs {
                    size: max_queue_size,
                    msix_vector: NO_VECTOR,
                    enabled: false,
                    desc: 0,
                    driver: 0,
                    device: 0,
                };
                usize::from(num_queues)
            ],
        }
    }

    fn clamp(&self, v: u16) -> u16 {
        if v < self.vectors { v } else { NO_VECTOR }
    }

    /// The structure as the driver reads it, given the device-owned status bits and generation.
    pub fn snapshot(&self, device_status: u8, generation: u8) -> [u8; common::SIZE as usize] {
        let mut s = [0u8; common::SIZE as usize];
        let mut put = |at: u64, bytes: &[u8]| {
            let at = at as usize;
            s[at..at + bytes.len()].copy_from_slice(bytes);
        };
        let feature = match self.device_feature_select {
            0 => self.offered as u32,
            1 => (self.offered >> 32) as u32,
            _ => 0,
        };
        put(
            common::DEVICE_FEATURE_SELECT,
            &self.device_feature_select.to_le_bytes(),
        );
        put(common::DEVICE_FEATURE, &feature.to_le_bytes());
        put(
            common::DRIVER_FEATURE_SELECT,
            &self.driver_feature_select.to_le_bytes(),
        );
        let driver = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        put(common::DRIVER_FEATURE, &driver.to_le_bytes());
        put(common::MSIX_CONFIG, &self.msix_config.to_le_bytes());
        put(
            common::NUM_QUEUES,
            &(self.queues.len() as u16).to_le_bytes(),
        );
        put(common::DEVICE_STATUS, &[self.status | device_status]);
        put(common::CONFIG_GENERATION, &[generation]);
        put(common::QUEUE_SELECT, &self.queue_select.to_le_bytes());
        if let Some(q) = self.queues.get(usize::from(self.queue_select)) {
            put(common::QUEUE_SIZE, &q.size.to_le_bytes());
            put(common::QUEUE_MSIX_VECTOR, &q.msix_vector.to_le_bytes());
            put(common::QUEUE_ENABLE, &u16::from(q.enabled).to_le_bytes());
            put(common::QUEUE_NOTIFY_OFF, &self.queue_select.to_le_bytes());
            put(common::QUEUE_DESC, &q.desc.to_le_bytes());
            put(common::QUEUE_DRIVER, &q.driver.to_le_bytes());
            put(common::QUEUE_DEVICE, &q.device.to_le_bytes());
        } else {
            // A queue that does not exist reads size 0 (VIRTIO 1.2 4.1.4.3.2).
            put(common::QUEUE_MSIX_VECTOR, &NO_VECTOR.to_le_bytes());
        }
        s
    }

    /// Applies a write of `input` at `offset`.
    pub fn write(&mut self, offset: u64, input: &[u8]) -> WriteEffect {
        let mut effect = WriteEffect::default();
        let mut s = self.snapshot(0, 0);
        let end = offset.saturating_add(input.len() as u64);
        for (i, v) in input.iter().enumerate() {
            if let Some(b) = s.get_mut(offset as usize + i) {
                *b = *v;
            }
        }
        for (at, size) in FIELDS {
            if at >= end || at + size as u64 <= offset {
                continue;
            }
            let mut raw = [0u8; 8];
            raw[..size].copy_from_slice(&s[at as usize..at as usize + size]);
            let v = u64::from_le_bytes(raw);
            let q = usize::from(self.queue_select);
            let frozen = self.status & status::FEATURES_OK != 0;
            match at {
                common::DEVICE_FEATURE_SELECT => self.device_feature_select = v as u32,
                common::DRIVER_FEATURE_SELECT => self.driver_feature_select = v as u32,
                common::DRIVER_FEATURE if !frozen => match self.driver_feature_select {
                    0 => self.driver_features = (self.driver_features & !0xFFFF_FFFF) | v,
                    1 => self.driver_features = (self.driver_features & 0xFFFF_FFFF) | (v << 32),
                    _ => {}
                },
                common::MSIX_CONFIG => self.msix_config = self.clamp(v as u16),
                common::DEVICE_STATUS => effect.status = Some(v as u8),
                common::QUEUE_SELECT => self.queue_select = v as u16,
                common::QUEUE_MSIX_VECTOR => {
                    let v = self.clamp(v as u16);
                    if let Some(r) = self.queues.get_mut(q) {
                        r.msix_vector = v;
                    }
                }
                _ => {}
            }
            let Some(r) = self.queues.get_mut(q) else {
                continue;
            };
            // The ring layout is fixed once the queue is enabled (VIRTIO 1.2 4.1.4.3.2).
            match at {
                common::QUEUE_SIZE if !r.enabled => r.size = v as u16,
                common::QUEUE_ENABLE if v == 1 && !r.enabled => {
                    r.enabled = true;
                    effect.enabled_queue = Some(q as u16);
                }
                common::QUEUE_DESC if !r.enabled => r.desc = v,
                common::QUEUE_DRIVER if !r.enabled => r.driver = v,
                common::QUEUE_DEVICE if !r.enabled => r.device = v,
                _ => {}
            }
        }
        effect
    }

    /// Whether the driver's features may be accepted (VIRTIO 1.2 2.2.1 and 6.1): a subset of
    /// what was offered, including VERSION_1 (virtio-queue only does little-endian rings).
    pub fn features_acceptable(&self) -> bool {
        self.driver_features & !self.offered == 0 && self.driver_features & features::VERSION_1 != 0
    }

    /// The largest queue size.
    pub fn max_queue_size(&self) -> u16 {
        self.max_queue_size
    }
}

/// `struct virtio_blk_config` for the current state.
pub fn blk_config(cfg: &DeviceConfig, capacity: u64, writeback: bool) -> [u8; blk::SIZE] {
    let mut s = [0u8; blk::SIZE];
    let mut put = |at: usize, bytes: &[u8]| s[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &capacity.to_le_bytes());
    put(8, &cfg.size_max.to_le_bytes());
    put(12, &cfg.seg_max.to_le_bytes());
    // Geometry (only meaningful with GEOMETRY): 16 heads, 63 sectors per track.
    let cylinders = (capacity / (16 * 63)).min(u64::from(u16::MAX)) as u16;
    put(16, &cylinders.to_le_bytes());
    put(18, &[16, 63]);
    put(20, &cfg.logical_block_size.to_le_bytes());
    put(24, &[cfg.physical_block_exp, 0]);
    put(26, &1u16.to_le_bytes()); // min_io_size, in logical blocks
    put(28, &(1u32 << cfg.physical_block_exp).to_le_bytes()); // opt_io_size
    put(32, &[u8::from(writeback), 0]);
    put(34, &cfg.num_queues.to_le_bytes());
    put(36, &cfg.max_discard_sectors.to_le_bytes());
    put(40, &cfg.max_discard_seg.to_le_bytes());
    put(44, &(cfg.logical_block_size / 512).to_le_bytes()); // discard_sector_alignment
    put(48, &cfg.max_write_zeroes_sectors.to_le_bytes());
    put(52, &cfg.max_write_zeroes_seg.to_le_bytes());
    put(56, &[1]); // write_zeroes_may_unmap
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_address_halves_combine() {
        let mut c = CommonCfg::new(features::DEFAULT, 2, 256, 3);
        c.write(common::QUEUE_SELECT, &1u16.to_le_bytes());
        c.write(common::QUEUE_DESC, &0x1234_5000u32.to_le_bytes());
        c.write(common::QUEUE_DESC + 4, &1u32.to_le_bytes());
        assert_eq!(c.queues[1].desc, 0x1_1234_5000);
        c.write(common::QUEUE_MSIX_VECTOR, &7u16.to_le_bytes());
        assert_eq!(c.queues[1].msix_vector, NO_VECTOR);
        c.write(common::QUEUE_MSIX_VECTOR, &2u16.to_le_bytes());
        assert_eq!(c.queues[1].msix_vector, 2);
        c.write(common::QUEUE_SELECT, &5u16.to_le_bytes());
        let s = c.snapshot(0, 0);
        assert_eq!(&s[0x18..0x1A], &[0, 0]);
    }
}
