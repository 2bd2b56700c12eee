//! vioblk-sim: virtio-blk device model, class-driver model and workloads.
//!
//! The modules, leaves first (each names only modules listed before it, so there is no import
//! cycle; `tests/module_graph.rs` checks that there is none):
//!
//! - [`scsi`], [`target`]: the SCSI vocabulary, and the SRB exchange a disk answers.
//! - [`device`]: the virtio-blk PCI device model (and [`device::oracle`], the independent
//!   driver that checks it); [`faults`], [`image_report`].
//! - [`class`]: what disk.sys sends; [`workload`]: the diskspd-like job.
//! - [`stats`]: what a run produced, as data.
//! - [`report`], [`html`], [`compare`]: formatting (text, JSON, HTML, comparison) and nothing
//!   else.
//! - [`ram`]: the in-memory double; [`disk`]: what the command line asks a backend for, and the
//!   `ram` backend.
//! - [`stack`], [`qemu`], [`driver`]: the driver on storport-sim, and the `driver` backend.
//! - [`cli`]: the command.
#![forbid(unsafe_code)]
pub mod class;
pub mod cli;
pub mod compare;
pub mod device;
pub mod disk;
pub mod driver;
pub mod faults;
pub mod html;
pub mod image_report;
pub mod qemu;
pub mod ram;
pub mod report;
pub mod scsi;
pub mod stack;
pub mod stats;
pub mod target;
pub mod workload;
