//! vioblk: a Storport miniport for virtio-blk PCI disks.
#![no_std]
#![deny(unsafe_code)]
