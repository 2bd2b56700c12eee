//! Re-acquiring through the callback's own token while its guard lives: the token is borrowed
//! by the guard, so a second acquisition (which could be the same lock) does not compile.
use core::pin::pin;
use storport::context::BuildIo;
use storport::lock::LockHandle;
use storport::sync::StartIoShared;

fn build_io(ctx: &mut BuildIo, a: &StartIoShared<u32>) {
    let mut h1 = pin!(LockHandle::new());
    let mut h2 = pin!(LockHandle::new());
    let first = a.lock(ctx, h1.as_mut());
    let second = a.lock(ctx, h2.as_mut());
    drop((first, second));
}

fn main() {}
