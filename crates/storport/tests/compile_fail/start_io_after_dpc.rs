//! Lock order StartIo < DPC: holding a DPC lock, the StartIo lock may not be taken.
use storport::context::BuildIo;
use storport::sync::{DpcShared, StartIoShared};

fn build_io(ctx: &mut BuildIo, dpc: &DpcShared<u32>, start_io: &StartIoShared<u32>) {
    let _ = dpc.with(ctx, |_, held| {
        let _ = start_io.with(held, |_, _| ());
    });
}

fn main() {}
