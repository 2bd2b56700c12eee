//! Seed 003 (full duplex): HwStateChange runs holding the StartIo lock and may acquire only the
//! interrupt lock: neither the StartIo lock nor a DPC lock.
use storport::context::StateChange;
use storport::sync::{DpcShared, StartIoShared};

fn state_change(ctx: &mut StateChange, start_io: &StartIoShared<u32>, dpc: &DpcShared<u32>) {
    let _ = start_io.with(ctx, |_, _| ());
    let _ = dpc.with(ctx, |_, _| ());
}

fn main() {}
