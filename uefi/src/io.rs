//! x86 port I/O: PCI configuration mechanism #1, the UART, isa-debug-exit.

use core::arch::asm;

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: the ports this application uses (COM1, 0xCF8/0xCFC, isa-debug-exit) have no
    // effect on memory; OVMF leaves I/O privilege to the application (CPL 0).
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes a 16-bit word to an I/O port.
pub fn outw(port: u16, value: u16) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a 16-bit word from an I/O port.
pub fn inw(port: u16) -> u16 {
    let value: u16;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in ax, dx", in("dx") port, out("ax") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes a 32-bit word to an I/O port.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a 32-bit word from an I/O port.
pub fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// QEMU's isa-debug-exit device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
const DEBUG_EXIT: u16 = 0xF4;
/// Written to isa-debug-exit on success: QEMU exits with (0x10 << 1) | 1 = 33.
pub const EXIT_PASS: u8 = 0x10;
/// Written to isa-debug-exit on failure: QEMU exits with (0x11 << 1) | 1 = 35.
pub const EXIT_FAIL: u8 = 0x11;

/// Ends the QEMU process with `code` (see [`EXIT_PASS`], [`EXIT_FAIL`]); never returns (spins
/// if the device is missing, so the harness's timeout notices).
pub fn exit_qemu(code: u8) -> ! {
    outl(DEBUG_EXIT, u32::from(code));
    loop {
        core::hint::spin_loop();
    }
}
