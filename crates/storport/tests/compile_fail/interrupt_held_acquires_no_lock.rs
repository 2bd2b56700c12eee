//! Lock order StartIo < DPC < Interrupt: holding an interrupt-level lock (taken with
//! AcquireSpinLockEx, by StorPortSynchronizeAccess, or an MSI message's), nothing more may be
//! taken: not DPC, not StartIo, not Interrupt again.
use storport::Port;
use storport::context::BuildIo;
use storport::msi::MsiShared;
use storport::sync::{self, DpcShared, InterruptShared, StartIoShared};

fn guard(
    ctx: &mut BuildIo,
    interrupt: &InterruptShared<u32>,
    other: &InterruptShared<u32>,
    dpc: &DpcShared<u32>,
    start_io: &StartIoShared<u32>,
) {
    let _ = interrupt.with(ctx, |_, held| {
        let _ = dpc.with(held, |_, _| ());
        let _ = start_io.with(held, |_, _| ());
        let _ = other.with(held, |_, _| ());
    });
}

fn synchronized(
    port: Port,
    ctx: &mut BuildIo,
    dpc: &DpcShared<u32>,
    start_io: &StartIoShared<u32>,
    interrupt: &InterruptShared<u32>,
) {
    sync::synchronize(port, ctx, |token| {
        let _ = dpc.with(token, |_, _| ());
        let _ = start_io.with(token, |_, _| ());
        let _ = interrupt.synchronize(token, |_| ());
        true
    });
}

fn message(ctx: &mut BuildIo, message: &MsiShared<u32>, interrupt: &InterruptShared<u32>) {
    let _ = message.with(ctx, |_, held| {
        let _ = interrupt.with(held, |_, _| ());
    });
}

fn main() {}
