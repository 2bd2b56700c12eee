//! vioblk-sim: virtio-blk device model, class-driver model and workloads.
pub mod device;
pub mod class;
pub mod cli;
pub mod report;
pub mod target;
pub mod workload;
