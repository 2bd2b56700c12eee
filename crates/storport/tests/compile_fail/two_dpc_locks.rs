//! Never two DPC locks at once.
use storport::context::Dpc;
use storport::sync::DpcShared;

fn dpc(ctx: &mut Dpc, a: &DpcShared<u32>, b: &DpcShared<u32>) {
    let _ = a.with(ctx, |_, held| {
        let _ = b.with(held, |_, _| ());
    });
}

fn main() {}
