//! The application's entry point, its verdict and its panic handler.

use core::sync::atomic::Ordering;

use uefi::{Status, boot, entry};

use crate::io::{EXIT_FAIL, EXIT_PASS, exit_qemu};
use crate::pci::{self, COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE, COMMAND_MEMORY};
use crate::port::{self, Adapter, VIOLATIONS};
use crate::{expect, ovmf, say, scenario};

/// Buses scanned for the device (q35 puts it on bus 0, or behind a root port).
const LAST_BUS: u8 = 255;

/// Prints the verdict and ends QEMU with the pass or fail code.
fn finish(failures: u32) -> ! {
    let violations = VIOLATIONS.load(Ordering::Relaxed);
    if failures == 0 && violations == 0 {
        say!("VIOBLK-UEFI RESULT: PASS");
        exit_qemu(EXIT_PASS)
    }
    say!("VIOBLK-UEFI RESULT: FAIL ({failures} failed checks, {violations} rule violations)");
    exit_qemu(EXIT_FAIL)
}

#[entry]
fn main() -> Status {
    say!("");
    say!("vioblk-uefi: the vioblk driver's dump path on a polled, single-CPU Storport");
    // The firmware's 5-minute watchdog must not reset the machine mid-run (the harness has its
    // own timeout).
    let _ = boot::set_watchdog_timer(0, 0x10000, None);
    let Ok(expect) = expect::load() else {
        finish(1)
    };
    say!(
        "configuration `{}`: seed {:#x}, expected seed {:#x}, block size {:?}, capacity {:?}, read-only {}, LBPME {:?}, LBPRZ {:?}, unmap {}",
        expect.name(),
        expect.seed,
        expect.expect_seed,
        expect.block_size,
        expect.capacity,
        expect.read_only,
        expect.lbpme,
        expect.lbprz,
        expect.unmap
    );

    let Some((at, id)) = pci::find_virtio_blk(LAST_BUS) else {
        say!("FAIL: no virtio-blk PCI function (1AF4:1042 or 1AF4:1001) on buses 0..={LAST_BUS}");
        finish(1)
    };
    say!(
        "pci: virtio-blk {:04x}:{id:04x} at {:02x}:{:02x}.{}",
        pci::VIRTIO_VENDOR,
        at.bus,
        at.device,
        at.function
    );
    ovmf::detach(at);
    let (bars, count) = pci::size_bars(at);
    let mut list = [pci::Bar {
        index: 0,
        address: 0,
        size: 0,
        memory: false,
        wide: false,
        prefetchable: false,
    }; 6];
    for (slot, bar) in list.iter_mut().zip(bars.iter().flatten()) {
        *slot = *bar;
        say!(
            "pci: BAR{} {} {:#x} size {:#x}{}{}",
            bar.index,
            if bar.memory { "memory" } else { "I/O" },
            bar.address,
            bar.size,
            if bar.wide { " 64-bit" } else { "" },
            if bar.prefetchable {
                " prefetchable"
            } else {
                ""
            }
        );
    }
    let command = at.read16(0x04);
    let enabled = command | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
    at.write16(0x04, enabled);
    say!(
        "pci: command {command:#06x} -> {:#06x} (memory, bus master, INTx disabled)",
        at.read16(0x04)
    );

    let Ok(mut adapter) = Adapter::bring_up(at, &list[..count]) else {
        finish(1)
    };
    let failures = scenario::run(&mut adapter, &expect);
    let (held, running, calls) =
        port::with(|s| (s.cpu.held().count(), s.cpu.current(), s.lock_calls));
    say!(
        "locks: {} acquired, {} released, {} StorPortSynchronizeAccess calls; order, pairing and \
         the callback tables checked on each",
        calls[0],
        calls[1],
        calls[2]
    );
    if held != 0 || running.is_some() {
        port::violation(format_args!(
            "{held} lock(s) still held, callback {running:?} still running at the end"
        ));
    }
    finish(failures)
}

/// A panic anywhere (driver or port) fails the run at once, with the message on the transcript.
#[panic_handler]
fn on_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    say!("PANIC: {info}");
    say!("VIOBLK-UEFI RESULT: FAIL (panic)");
    exit_qemu(EXIT_FAIL)
}
