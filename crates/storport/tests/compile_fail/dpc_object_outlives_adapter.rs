//! Storport keeps the address of an initialised STOR_DPC: a DPC (and its handler) must live as
//! long as the device extension, so a local cannot be initialised.
use storport::Port;
use storport::context::{self, PassiveInitialize};
use storport::dpc::{DpcHandler, StorDpc};

struct Adapter;

impl DpcHandler for Adapter {
    fn dpc(&self, _ctx: &mut context::Dpc, _dpc: &StorDpc, _arg1: usize, _arg2: usize) {}
}

fn passive_initialize<'a>(adapter: &'a Adapter, ctx: &mut PassiveInitialize<'a>, port: Port) {
    let local = StorDpc::new();
    local.initialize(ctx, port, adapter);
}

fn main() {}
