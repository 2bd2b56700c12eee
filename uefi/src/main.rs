//! vioblk-uefi: the vioblk driver's crash-dump path against a real virtio-blk-pci device.
//!
//! A Windows crash dump runs a storage miniport with no operating system under it: one CPU, no
//! interrupts, polled, synchronous I/O, a few pages of memory. This UEFI application recreates
//! those conditions under OVMF in QEMU and runs the unmodified driver crate in them: it finds the
//! virtio-blk-pci devices by PCI configuration and, for each disk `vioblk.cfg` names, calls the
//! driver's `DriverEntry`, plays Storport for it (a polled, single-CPU Storport whose `StorPort*`
//! symbols are defined in `shim`, started afresh for each disk as a dump stack of its own),
//! sends the requests a dump would send and checks every status and byte. It prints a transcript
//! on COM1 and exits QEMU with a pass or fail code through the isa-debug-exit device.
//! `tests/qemu.rs` boots it with one disk per device configuration and checks the disk images
//! afterwards from Linux.
//!
//! On the host the crate builds too (it is a workspace member), as a binary that only says what
//! it is.
#![cfg_attr(target_os = "uefi", no_std, no_main)]

#[cfg(target_os = "uefi")]
mod app;
#[cfg(target_os = "uefi")]
mod expect;
#[cfg(target_os = "uefi")]
mod io;
#[cfg(target_os = "uefi")]
mod memory;
#[cfg(target_os = "uefi")]
mod ovmf;
pub mod pattern;
#[cfg(target_os = "uefi")]
mod pci;
#[cfg(target_os = "uefi")]
mod port;
#[cfg(target_os = "uefi")]
mod scenario;
#[cfg(target_os = "uefi")]
mod serial;
#[cfg(target_os = "uefi")]
mod shim;

/// On the host this is not the application: it says what it is and where it runs.
#[cfg(not(target_os = "uefi"))]
fn main() {
    println!(
        "vioblk-uefi is a UEFI application: build it with `cargo build --release --target \
         x86_64-unknown-uefi -p vioblk-uefi`; `cargo test -p vioblk-uefi --test qemu` boots it \
         under QEMU (sample pattern word: {:#018x})",
        pattern::word(1, 0)
    );
}
