//! vioblk: a Storport miniport for virtio-blk PCI disks.
//!
//! The driver implements [`storport::Miniport`] for [`hba::Adapter`] and contains no unsafe code:
//! everything that touches Storport's ABI, device registers or DMA memory goes through the safe
//! layer in `crates/storport`. Layers (DESIGN.md): `hba` (the adapter: state, queues, request
//! lifecycle) over `scsi` (pure SCSI translation) and `virtio` (transport, split ring, virtio-blk
//! requests).
#![no_std]
// The one exception to "no unsafe in the driver" is the `#[unsafe(no_mangle)]` on DriverEntry,
// which the kernel's loader needs; everything else stays safe, so the lint is denied, not
// forbidden, and allowed on that item alone.
#![deny(unsafe_code)]

// The host build (tests and the simulator) links std so that the cdylib has a panic handler;
// driver code itself never names std.
#[cfg(not(any(target_os = "windows", target_os = "uefi")))]
extern crate std;

// The unit tests link the driver's StorPort* imports: the user-mode Storport defines them.
#[cfg(test)]
use storport_sim as _;

pub mod hba;
pub mod scsi;
pub mod virtio;

use core::ffi::c_void;

/// The driver's entry point: registers the adapter's callbacks with Storport
/// (`StorPortInitialize`). Both arguments are NULL when a crash-dump or hibernation stack loads
/// the driver; they are passed through unchanged.
#[allow(
    unsafe_code,
    reason = "the kernel's loader finds DriverEntry by its unmangled name"
)]
#[unsafe(no_mangle)]
pub extern "C" fn DriverEntry(driver_object: *mut c_void, registry_path: *mut c_void) -> u32 {
    storport::miniport::driver_entry::<hba::Adapter>(driver_object, registry_path)
}

/// A panic in kernel mode stops the machine with a bug check naming the driver, rather than
/// running on with broken state. Driver code has no panic path by design (no unwrap, checked
/// arithmetic and indexing); this is the backstop.
#[cfg(all(target_os = "windows", not(test)))]
#[panic_handler]
fn on_panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    storport::kernel_rt::bug_check(storport::kernel_rt::PANIC_BUG_CHECK_CODE, 0, 0, 0, 0)
}
