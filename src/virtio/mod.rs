//! The virtio layer: the modern virtio-pci transport, the split virtqueue (driver side) and
//! virtio-blk requests.
//!
//! Everything here is built on the safe primitives of `storport::register` (MMIO windows) and
//! `storport::dma` (memory shared with the device); this module has no `unsafe`, never
//! allocates and never panics. It names neither an SRB nor a CDB: the adapter (`hba`) turns
//! Storport requests into the block requests built here.
//!
//! The device is not trusted (VIRTIO 1.2 treats it as a peer, the driver treats it as a
//! possibly hostile one): every value read from the configuration space, the common
//! configuration or the used ring is bounds-checked before it is used, and a bad value becomes
//! an error, never an out-of-bounds access.
//!
//! | Rust | virtio 1.2 |
//! |---|---|
//! | [`VirtioPciLayout`] | the `virtio_pci_cap` list, 4.1.4 |
//! | [`Transport`] | `virtio_pci_common_cfg`, notify, ISR and device config, 4.1.4.3 - 4.1.4.8 |
//! | [`SplitQueue`] | the split virtqueue, driver side, 2.7 |
//! | [`PackedQueue`], [`IndirectTable`] | the packed virtqueue, driver side, 2.8 (`struct pvirtq_desc[]`) |
//! | [`DescriptorTable`] | `struct virtq_desc[]`, 2.7.5 (also indirect tables, 2.7.5.3) |
//! | [`BlkConfig`], [`RequestBuilder`] | `virtio_blk_config`, `virtio_blk_req`, 5.2 |

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod blk;
mod packed;
mod pci;
mod ring;
mod transport;
mod virtqueue;

pub use blk::{
    AREA_SIZE, BlkConfig, BlkConfigError, BuildError, BuiltRequest, CompletedArea, DiscardLimits,
    Geometry, MAX_DATA_SEGMENTS, PRIVATE_OFFSET, RangeSegment, RequestArea, RequestBuilder,
    RequestHeader, RequestLimits, RequestType, SECTOR_SIZE, Status, Topology, WriteCache,
    WriteZeroesLimits, area_size,
};
pub use packed::{IndirectTable, PackedQueue, PackedRingError};
pub use pci::{PciError, Structure, StructureType, VirtioPciLayout};
pub use ring::{
    Descriptor, DescriptorTable, LayoutError, MAX_QUEUE_SIZE, PushError, QueueAddresses, QueueSize,
    RawDescriptor, RingError, SplitQueue, UsedElem,
};
pub use transport::{
    DeviceConfig, DeviceRegisters, DeviceStatus, Isr, NO_VECTOR, QueueNotifier, Transport,
    TransportError,
};
pub use virtqueue::{QueueError, Virtqueue};

/// Feature bits, as masks of the 64-bit feature word (VIRTIO 1.2 6 and 5.2.3).
pub mod feature {
    pub use super::blk::feature::*;
    pub use super::transport::feature::*;
}
