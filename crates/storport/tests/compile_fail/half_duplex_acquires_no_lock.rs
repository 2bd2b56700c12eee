//! Seed 003 (half duplex): StartIo, Timer and ResetBus run holding the StartIo and
//! interrupt locks and may acquire none.
use storport::context::{HalfDuplex, ResetBus, StartIoSerialized, Timer};
use storport::sync::{DpcShared, InterruptShared};

fn start_io(
    ctx: &mut StartIoSerialized<HalfDuplex>,
    interrupt: &InterruptShared<u32>,
    dpc: &DpcShared<u32>,
) {
    let _ = interrupt.synchronize(ctx, |_| ());
    let _ = dpc.with(ctx, |_, _| ());
}

fn timer(ctx: &mut Timer<HalfDuplex>, interrupt: &InterruptShared<u32>) {
    let _ = interrupt.with(ctx, |_, _| ());
}

fn reset_bus(ctx: &mut ResetBus<HalfDuplex>, interrupt: &InterruptShared<u32>) {
    let _ = interrupt.synchronize(ctx, |_| ());
}

fn main() {}
