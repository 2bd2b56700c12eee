//! Links the Windows image of vioblk as a kernel driver.
//!
//! Two ways, one result (a native-subsystem image whose entry point is `DriverEntry`):
//!
//! - **Windows host with the WDK** (the `cargo make` flow): wdk-build configures the link
//!   (link.exe, the WDK library paths and the WindowsDriver.KernelMode props' arguments).
//! - **Anywhere else** (Linux, or Windows without a WDK): rust-lld with the arguments below. No
//!   .lib file is needed: every import is declared in a `raw-dylib` extern block.
//!
//! Builds for any other target (the host rlib for tests and the simulator, UEFI) get nothing.

/// Kernel-driver link arguments for rust-lld (lld-link syntax, which is link.exe's).
///
/// - `/NODEFAULTLIB`: no C runtime or default libraries; ntoskrnl.exe and storport.sys provide
///   what the image imports.
/// - `/DRIVER`: a kernel-mode driver image.
/// - `/SUBSYSTEM:NATIVE,10.0`: the kernel loads it, not the Win32 loader; Windows 10 minimum.
/// - `/ENTRY:DriverEntry`: the I/O manager calls `DriverEntry` (the `#[no_mangle]` function of
///   the driver crate, which rustc also exports from the cdylib; `pecheck` checks the entry point
///   equals that export).
const KERNEL_DRIVER_LINK_ARGS: [&str; 4] = [
    "/NODEFAULTLIB",
    "/DRIVER",
    "/SUBSYSTEM:NATIVE,10.0",
    "/ENTRY:DriverEntry",
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=TARGET");

    let target = std::env::var("TARGET").unwrap_or_default();
    if target != "x86_64-pc-windows-msvc" {
        return;
    }

    #[cfg(windows)]
    {
        // A Windows host: the WDK flow decides the link when a WDK is installed.
        match wdk_build::configure_wdk_binary_build() {
            Ok(()) => return,
            Err(error) => println!(
                "cargo::warning=no usable WDK ({error}); linking with rust-lld's kernel-driver arguments"
            ),
        }
    }

    for arg in KERNEL_DRIVER_LINK_ARGS {
        println!("cargo::rustc-cdylib-link-arg={arg}");
    }
}
