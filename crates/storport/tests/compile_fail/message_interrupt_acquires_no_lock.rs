//! Seed 003: HwMSInterruptRoutine may acquire no lock, in either interrupt synchronization mode.
use storport::context::{MessageInterrupt, MessageInterruptPerMessage};
use storport::msi::MsiShared;
use storport::sync::{DpcShared, InterruptShared, StartIoShared};

fn all_messages(
    ctx: &mut MessageInterrupt,
    start_io: &StartIoShared<u32>,
    dpc: &DpcShared<u32>,
    interrupt: &InterruptShared<u32>,
) {
    let _ = start_io.with(ctx, |_, _| ());
    let _ = dpc.with(ctx, |_, _| ());
    let _ = interrupt.with(ctx, |_, _| ());
}

fn per_message(
    ctx: &mut MessageInterruptPerMessage,
    dpc: &DpcShared<u32>,
    interrupt: &InterruptShared<u32>,
    other_message: &MsiShared<u32>,
) {
    let _ = dpc.with(ctx, |_, _| ());
    let _ = interrupt.synchronize(ctx, |_| ());
    let _ = other_message.with(ctx, |_, _| ());
}

fn main() {}
