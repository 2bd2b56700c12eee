//! `InterruptShared` is reached only holding the interrupt lock: not from BuildIo, a full-duplex
//! StartIo, a DPC or a full-duplex timer without `synchronize`/`with`/`lock`.
use storport::context::{BuildIo, Dpc, StartIoConcurrent, StartIoSerialized, Timer};
use storport::sync::InterruptShared;

fn build_io(ctx: &mut BuildIo, cell: &InterruptShared<u32>) {
    *cell.get(ctx) += 1;
}

fn start_io(ctx: &mut StartIoSerialized, cell: &InterruptShared<u32>) {
    *cell.get(ctx) += 1;
}

fn start_io_concurrent(ctx: &mut StartIoConcurrent, cell: &InterruptShared<u32>) {
    *cell.get(ctx) += 1;
}

fn dpc(ctx: &mut Dpc, cell: &InterruptShared<u32>) {
    *cell.get(ctx) += 1;
}

fn timer(ctx: &mut Timer, cell: &InterruptShared<u32>) {
    *cell.get(ctx) += 1;
}

fn main() {}
