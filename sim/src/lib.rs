//! vioblk-sim: virtio-blk device model, class-driver model and workloads.
#![forbid(unsafe_code)]
pub mod class;
pub mod cli;
pub mod device;
pub mod faults;
pub mod image_report;
pub mod qemu;
pub mod report;
pub mod stack;
pub mod target;
pub mod workload;
