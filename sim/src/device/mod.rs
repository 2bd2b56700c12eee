//! The virtio-blk PCI device the vioblk driver runs against in the simulator.
//!
//! A modern (virtio 1.x) virtio-blk PCI function, modelled on QEMU's `virtio-blk-pci`:
//!
//! - `pci`: the PCI configuration space (VIRTIO 1.2 4.1.2 and 4.1.4): IDs, BARs with the sizing
//!   protocol, the vendor-specific virtio capabilities and the MSI-X capability.
//! - `msix`: the MSI-X table and pending-bit array (in BAR 1, as QEMU places them), and the
//!   legacy INTx line with the ISR status register.
//! - `transport`: the virtio-pci modern registers in BAR 4 (common configuration, notify, ISR,
//!   device configuration; VIRTIO 1.2 4.1.4.3 to 4.1.4.8).
//! - `blk`: the virtio-blk request parser and executor (VIRTIO 1.2 5.2.6).
//! - `backend`: the disk contents, in RAM or in a file.
//! - `queue_thread`: one I/O thread per virtqueue, the loop both ring layouts share (faults,
//!   held requests, executing, counting, interrupting), and the split ring's part of it over
//!   rust-vmm `virtio-queue` (its `DeviceRing` trait).
//! - [`packed`]: the packed virtqueue's device side (VIRTIO 1.2 2.8), which `virtio-queue` lacks;
//!   `packed_thread`: its part of the queue thread's loop.
//! - `fault`: deterministic fault injection for the driver's trust tests.
//! - `vhost_user`: [`VhostUserDevice`], the same PCI function with a vhost-user back end (QEMU's
//!   block layer) serving the queues instead of the model's queue threads.
//! - [`oracle`]: the independent oracle: a small virtio driver written from the VIRTIO 1.2 spec,
//!   sharing no code with the vioblk driver, that drives the model without Storport. The device
//!   model's tests hold the model to it, and the benchmark uses it as the "device model driven
//!   directly" baseline.
//!
//! [`VirtioBlkDevice`] ties them together and implements [`storport_sim::device::PciDevice`].
//! All DMA goes through one `vm_memory::GuestMemoryMmap` region the device owns; the port carves
//! the miniport's DMA-able memory from the [`storport_sim::device::GuestMemory`] describing it.

mod backend;
mod blk;
mod config;
mod fault;
mod model;
mod msix;
pub mod oracle;
pub mod packed;
mod packed_thread;
mod pci;
mod queue_thread;
mod transport;
pub mod vhost_direct;
mod vhost_user;

pub use config::{BackendConfig, DeviceConfig, FEATURES_OFF_ENV, features, features_off_from_env};
pub use fault::FaultMode;
pub use model::{DeviceError, VirtioBlkDevice};
pub use queue_thread::QueueCounters;
pub use transport::status;
pub use vhost_user::{VhostUserDevice, VhostUserOptions};

/// BAR index of the virtio register block (common, ISR, device, notify), a 64-bit memory BAR.
pub const VIRTIO_BAR: u8 = 4;
/// BAR index of the MSI-X table and pending-bit array, a 32-bit memory BAR.
pub const MSIX_BAR: u8 = 1;
