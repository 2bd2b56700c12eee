//! Seed 003 (full duplex): HwResetBus runs holding the StartIo lock and may acquire only the
//! interrupt lock: neither the StartIo lock nor a DPC lock.
use storport::context::ResetBus;
use storport::sync::{DpcShared, StartIoShared};

fn reset_bus(ctx: &mut ResetBus, start_io: &StartIoShared<u32>, dpc: &DpcShared<u32>) {
    let _ = start_io.with(ctx, |_, _| ());
    let _ = dpc.with(ctx, |_, _| ());
}

fn main() {}
