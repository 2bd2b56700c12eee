//! The synchronization model is the miniport type's (`Miniport::Duplex`): the StartIo of a
//! half-duplex miniport gets the half-duplex token, which holds the StartIo and interrupt locks
//! and may acquire none.
use storport::Miniport;
use storport::context::{HalfDuplex, StartIo};
use storport::sync::DpcShared;

fn start_io<M: Miniport<Duplex = HalfDuplex>>(ctx: StartIo<'_, M::Duplex>, dpc: &DpcShared<u32>) {
    if let StartIo::Serialized(token) = ctx {
        let _ = dpc.with(token, |_, _| ());
    }
}

fn main() {}
