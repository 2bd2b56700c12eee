//! No `&mut T` escapes the StorPortSynchronizeAccess closure or a lock closure.
use storport::Port;
use storport::context::{Dpc, Synchronized};
use storport::sync::{self, InterruptShared, StartIoShared};

fn synchronize<'a>(ctx: &mut Dpc, cell: &'a InterruptShared<u32>) -> &'a mut u32 {
    cell.synchronize(ctx, |value| value).unwrap()
}

fn with<'a>(ctx: &mut Dpc, cell: &'a StartIoShared<u32>) -> &'a mut u32 {
    cell.with(ctx, |value, _| value).unwrap()
}

fn token(port: Port, ctx: &mut Dpc, cell: &InterruptShared<u32>) {
    let mut stolen: Option<&mut Synchronized> = None;
    sync::synchronize(port, ctx, |token| {
        stolen = Some(token);
        true
    });
    let _ = cell.get(stolen.unwrap());
}

fn main() {}
