//! `StartIoShared` is reached without `with`/`lock` only where Storport holds the StartIo lock:
//! not in BuildIo, a concurrent-channel StartIo, a DPC or the ISR.
use storport::context::{BuildIo, Dpc, Interrupt, StartIoConcurrent};
use storport::sync::StartIoShared;

fn build_io(ctx: &mut BuildIo, cell: &StartIoShared<u32>) {
    *cell.get(ctx) += 1;
}

fn start_io_concurrent(ctx: &mut StartIoConcurrent, cell: &StartIoShared<u32>) {
    *cell.get(ctx) += 1;
}

fn dpc(ctx: &mut Dpc, cell: &StartIoShared<u32>) {
    *cell.get(ctx) += 1;
}

fn isr(ctx: &mut Interrupt, cell: &StartIoShared<u32>) {
    *cell.get(ctx) += 1;
}

fn main() {}
