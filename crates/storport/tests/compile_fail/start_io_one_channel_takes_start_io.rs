//! Seed 003: HwStorStartIo with concurrent channels <= 1 runs holding the StartIo lock; taking it
//! again deadlocks.
use storport::context::StartIoSerialized;
use storport::sync::StartIoShared;

fn start_io(ctx: &mut StartIoSerialized, start_io: &StartIoShared<u32>) {
    let _ = start_io.with(ctx, |_, _| ());
}

fn main() {}
