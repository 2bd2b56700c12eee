//! The transcript: lines on COM1 (0x3F8), written directly to the 16550 UART.
//!
//! OVMF's own serial console uses the same UART; while the application runs the firmware is idle,
//! so writing the transmit register directly (after waiting for it to be empty) is enough and
//! cannot lose output when the application ends QEMU right after.

use core::fmt::{self, Write};

use crate::io::{inb, outb};

const COM1: u16 = 0x3F8;
/// Line status register: bit 5, transmit holding register empty.
const LSR: u16 = COM1 + 5;
const THR_EMPTY: u8 = 0x20;

fn put(byte: u8) {
    // Bounded wait: QEMU's UART is always ready, real ones within a character time.
    for _ in 0..100_000 {
        if inb(LSR) & THR_EMPTY != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    outb(COM1, byte);
}

/// The COM1 writer.
pub struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                put(b'\r');
            }
            put(byte);
        }
        Ok(())
    }
}

/// Writes formatted text to COM1.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    // The writer never fails.
    let _ = Serial.write_fmt(args);
}

/// Prints one transcript line on COM1.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::serial::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}
