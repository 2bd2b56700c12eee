//! Seed 003: HwStorPassiveInitializeRoutine may acquire no lock.
use storport::context::PassiveInitialize;
use storport::sync::{DpcShared, InterruptShared, StartIoShared};

fn passive_initialize(
    ctx: &mut PassiveInitialize<'_>,
    start_io: &StartIoShared<u32>,
    dpc: &DpcShared<u32>,
    interrupt: &InterruptShared<u32>,
) {
    let _ = start_io.with(ctx, |_, _| ());
    let _ = dpc.with(ctx, |_, _| ());
    let _ = interrupt.with(ctx, |_, _| ());
}

fn main() {}
