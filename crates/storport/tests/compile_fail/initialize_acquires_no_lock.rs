//! Seed 003: HwStorInitialize may acquire no lock (Storport holds the interrupt lock).
use storport::context::Initialize;
use storport::sync::{DpcShared, InterruptShared, StartIoShared};

fn initialize(
    ctx: &mut Initialize,
    start_io: &StartIoShared<u32>,
    dpc: &DpcShared<u32>,
    interrupt: &InterruptShared<u32>,
) {
    let _ = start_io.with(ctx, |_, _| ());
    let _ = dpc.with(ctx, |_, _| ());
    let _ = interrupt.with(ctx, |_, _| ());
    let _ = interrupt.synchronize(ctx, |_| ());
}

fn main() {}
