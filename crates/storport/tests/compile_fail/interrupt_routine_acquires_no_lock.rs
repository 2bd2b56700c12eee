//! Seed 003: HwStorInterrupt may acquire no lock (Storport holds the interrupt lock).
use storport::context::Interrupt;
use storport::msi::MsiShared;
use storport::sync::{DpcShared, InterruptShared, StartIoShared};

fn isr(
    ctx: &mut Interrupt,
    start_io: &StartIoShared<u32>,
    dpc: &DpcShared<u32>,
    interrupt: &InterruptShared<u32>,
    message: &MsiShared<u32>,
) {
    let _ = start_io.with(ctx, |_, _| ());
    let _ = dpc.with(ctx, |_, _| ());
    let _ = interrupt.with(ctx, |_, _| ());
    let _ = interrupt.synchronize(ctx, |_| ());
    let _ = message.with(ctx, |_, _| ());
}

fn main() {}
