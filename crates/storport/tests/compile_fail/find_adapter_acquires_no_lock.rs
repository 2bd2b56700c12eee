//! Seed 003: HwStorFindAdapter may acquire no lock.
use storport::context::FindAdapter;
use storport::sync::{DpcShared, InterruptShared, StartIoShared};

fn find_adapter(
    ctx: &mut FindAdapter,
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
