//! Re-acquiring a held lock deadlocks: the StartIo lock's token cannot take the StartIo lock.
use storport::context::Dpc;
use storport::sync::StartIoShared;

fn dpc(ctx: &mut Dpc, a: &StartIoShared<u32>, b: &StartIoShared<u32>) {
    let _ = a.with(ctx, |_, held| {
        let _ = b.with(held, |_, _| ());
    });
}

fn main() {}
