//! The application's entry point, its verdict and its panic handler.

use core::sync::atomic::Ordering;

use uefi::{Status, boot, entry};

use crate::expect::{self, Expect};
use crate::io::{EXIT_FAIL, EXIT_PASS, exit_qemu};
use crate::pci::{self, COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE, COMMAND_MEMORY};
use crate::port::{self, Adapter, VIOLATIONS};
use crate::{ovmf, say, scenario};

/// Buses scanned for the devices (q35 puts them on bus 0, or behind root ports).
const LAST_BUS: u8 = 255;

/// The most virtio-blk functions the scan keeps.
const MAX_FUNCTIONS: usize = 2 * expect::MAX_DISKS;

/// Prints the verdict of the whole run and ends QEMU with the pass or fail code.
fn finish(failed_disks: u32, other_failures: u32) -> ! {
    if failed_disks == 0 && other_failures == 0 {
        say!("VIOBLK-UEFI RESULT: PASS");
        exit_qemu(EXIT_PASS)
    }
    say!("VIOBLK-UEFI RESULT: FAIL ({failed_disks} failed disks, {other_failures} other failures)");
    exit_qemu(EXIT_FAIL)
}

#[entry]
fn main() -> Status {
    say!("");
    say!("vioblk-uefi: the vioblk driver's dump path on a polled, single-CPU Storport");
    // The firmware's 5-minute watchdog must not reset the machine mid-run (the harness has its
    // own timeout).
    let _ = boot::set_watchdog_timer(0, 0x10000, None);
    let Ok(plan) = expect::load() else {
        finish(0, 1)
    };

    let mut found = [None; MAX_FUNCTIONS];
    let total = pci::find_virtio_blk(LAST_BUS, &mut found);
    for function in found.iter().flatten() {
        say!(
            "pci: virtio-blk {:04x}:{:04x} at {}",
            pci::VIRTIO_VENDOR,
            function.id,
            function.at
        );
    }
    let mut other_failures = 0;
    if total > found.len() {
        say!("FAIL: {total} virtio-blk functions; only {MAX_FUNCTIONS} are looked at");
        other_failures += 1;
    }
    // When the plan names the disks, a device it does not name means the harness and the
    // application disagree about the machine.
    let named = |at| plan.disks().iter().any(|d| d.location == Some(at));
    if plan.disks().iter().any(|d| d.location.is_some()) {
        for function in found.iter().flatten().filter(|f| !named(f.at)) {
            say!(
                "FAIL: virtio-blk at {} has no section in vioblk.cfg",
                function.at
            );
            other_failures += 1;
        }
    }

    // Each disk gets a dump stack of its own: a fresh port, DriverEntry, HwStorFindAdapter and
    // HwStorInitialize, then the scenario.
    let mut failed_disks = 0;
    for disk in plan.disks() {
        let function = match disk.location {
            Some(at) => found.iter().flatten().find(|f| f.at == at).copied(),
            None => found[0],
        };
        if !test_disk(function, disk) {
            failed_disks += 1;
        }
    }
    finish(failed_disks, other_failures)
}

/// Runs the scenario on one disk between its BEGIN and END lines; returns whether it passed.
fn test_disk(function: Option<pci::Function>, expect: &Expect) -> bool {
    match expect.location {
        Some(at) => say!("VIOBLK-UEFI DISK BEGIN {} at {at}", expect.name()),
        None => say!("VIOBLK-UEFI DISK BEGIN {} (the first found)", expect.name()),
    }
    let violations_before = VIOLATIONS.load(Ordering::Relaxed);
    let failures = match function {
        Some(function) => run_disk(function, expect),
        None => {
            say!("FAIL: no virtio-blk PCI function (1AF4:1042 or 1AF4:1001) for this disk");
            1
        }
    };
    let violations = VIOLATIONS.load(Ordering::Relaxed) - violations_before;
    if failures == 0 && violations == 0 {
        say!("VIOBLK-UEFI DISK END {}: PASS", expect.name());
        return true;
    }
    say!(
        "VIOBLK-UEFI DISK END {}: FAIL ({failures} failed checks, {violations} rule violations)",
        expect.name()
    );
    false
}

/// Brings the driver up on the device and runs the scenario; returns the failed checks.
fn run_disk(function: pci::Function, expect: &Expect) -> u32 {
    let at = function.at;
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
    say!(
        "pci: virtio-blk {:04x}:{:04x} at {at}",
        pci::VIRTIO_VENDOR,
        function.id
    );
    port::reset();
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
        return 1;
    };
    let failures = scenario::run(&mut adapter, expect);
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
    failures
}

/// A panic anywhere (driver or port) fails the run at once, with the message on the transcript.
#[panic_handler]
fn on_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    say!("PANIC: {info}");
    say!("VIOBLK-UEFI RESULT: FAIL (panic)");
    exit_qemu(EXIT_FAIL)
}
