//! vioblk-sim: virtio-blk device model, class-driver model and workloads.
