//! No `&mut T` outlives the guard that holds the lock.
use core::pin::pin;
use storport::context::BuildIo;
use storport::lock::LockHandle;
use storport::sync::InterruptShared;

fn after_drop(ctx: &mut BuildIo, cell: &InterruptShared<u32>) {
    let handle = pin!(LockHandle::new());
    let mut guard = cell.lock(ctx, handle).unwrap();
    let value: &mut u32 = &mut guard;
    drop(guard);
    *value += 1;
}

fn returned<'a>(ctx: &'a mut BuildIo, cell: &'a InterruptShared<u32>) -> &'a mut u32 {
    let handle = pin!(LockHandle::new());
    let mut guard = cell.lock(ctx, handle).unwrap();
    &mut *guard
}

fn main() {}
