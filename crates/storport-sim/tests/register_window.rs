//! The safe layer's register window (`storport::register::RegisterWindow`) over a test register
//! file: every access is bounds-checked and naturally aligned before it reaches the registers
//! (the offsets come from the device's capabilities, which are not trusted). Linked with the
//! user-mode Storport, which provides the StorPortRead/WriteRegister exports the window names.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use storport::register::{RegisterWindow, TestRegisters};
// The exports the window names (StorPortReadRegisterUlong, ...) come from the user-mode Storport.
use storport_sim as _;

/// 64 bytes of registers, each reading as its offset, counting the accesses that reach it.
struct Counted(AtomicUsize);

impl TestRegisters for Counted {
    fn read(&self, offset: usize, _width: u8) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed);
        offset as u64
    }
    fn write(&self, _offset: usize, _width: u8, _value: u64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn len(&self) -> usize {
        64
    }
}

/// A misaligned access never reaches the device, at an offset of the window or through a
/// subwindow that starts misaligned; aligned ones do.
#[test]
fn misaligned_accesses_never_reach_the_registers() {
    static DEV: Counted = Counted(AtomicUsize::new(0));
    let window = RegisterWindow::from_test_device(&DEV);
    assert_eq!(window.read_u32(2), u32::MAX);
    assert_eq!(window.read_u16(1), u16::MAX);
    assert_eq!(window.read_u64(4), u64::MAX);
    window.write_u32(6, 1);
    let odd = window.subwindow(2, 16).expect("inside the window");
    assert_eq!(
        odd.read_u32(0),
        u32::MAX,
        "offset 0 of a window at 2 is misaligned"
    );
    assert_eq!(
        DEV.0.load(Ordering::Relaxed),
        0,
        "no misaligned access went through"
    );
    assert_eq!(window.read_u32(4), 4);
    assert_eq!(
        odd.read_u16(2),
        4,
        "offset 2 of a window at 2 is register 4"
    );
    assert_eq!(window.read_u8(3), 3);
    assert_eq!(DEV.0.load(Ordering::Relaxed), 3);
}

/// A register file of no bytes is empty, and a window over it refuses every access.
#[test]
fn an_empty_register_file_is_empty() {
    struct Empty;
    impl TestRegisters for Empty {
        fn read(&self, _offset: usize, _width: u8) -> u64 {
            unreachable!("nothing to read")
        }
        fn write(&self, _offset: usize, _width: u8, _value: u64) {
            unreachable!("nothing to write")
        }
        fn len(&self) -> usize {
            0
        }
    }
    static EMPTY: Empty = Empty;
    static DEV: Counted = Counted(AtomicUsize::new(0));
    assert!(EMPTY.is_empty());
    assert!(!DEV.is_empty());
    let window = RegisterWindow::from_test_device(&EMPTY);
    assert!(window.is_empty());
    assert_eq!(window.read_u32(0), u32::MAX);
}
