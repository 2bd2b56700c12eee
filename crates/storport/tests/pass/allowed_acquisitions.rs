//! Every acquisition seed 003's second table allows compiles: one function per (callback, lock).
//! Also every access Storport's own locks allow (first table), and the DPC calls.
//!
//! Nothing here runs (the functions are not called, so no Storport symbol is linked); what runs
//! against the user-mode Storport is `crates/storport-sim/tests/lock_wrappers.rs`.
#![allow(dead_code)]

use core::pin::pin;
use storport::Port;
use storport::context::{
    self, AdapterControl, BuildIo, Dpc, HalfDuplex, Initialize, Interrupt, MessageInterrupt,
    MessageInterruptPerMessage, PassiveInitialize, ResetBus, StartIo, StartIoConcurrent,
    StartIoSerialized, Synchronized, Timer, UnitControl,
};
use storport::dpc::{DpcHandler, StorDpc};
use storport::lock::{
    Held, LockHandle, MayAcquireDpc, MayAcquireInterrupt, MayAcquireStartIo, StartIoLevel,
};
use storport::msi::MsiShared;
use storport::sync::{self, DpcShared, InterruptShared, StartIoShared};

/// The adapter's shared state, as a miniport would lay it out.
struct Adapter {
    start_io: StartIoShared<u32>,
    queue: DpcShared<u32>,
    interrupt: InterruptShared<u32>,
    message: MsiShared<u32>,
}

// Each allowed lock, once, through the closure form and the guard form.
fn start_io_lock<C: MayAcquireStartIo>(ctx: &mut C, adapter: &Adapter) {
    let _ = adapter.start_io.with(ctx, |value, _held| *value += 1);
    let handle = pin!(LockHandle::new());
    if let Ok(mut guard) = adapter.start_io.lock(ctx, handle) {
        *guard += 1;
    }
}

fn dpc_lock<C: MayAcquireDpc>(ctx: &mut C, adapter: &Adapter) {
    let _ = adapter.queue.with(ctx, |value, _held| *value += 1);
    let handle = pin!(LockHandle::new());
    if let Ok(mut guard) = adapter.queue.lock(ctx, handle) {
        *guard += 1;
    }
}

fn interrupt_lock<C: MayAcquireInterrupt>(ctx: &mut C, adapter: &Adapter, port: Port) {
    let _ = adapter.interrupt.synchronize(ctx, |value| *value += 1);
    let _ = adapter.interrupt.with(ctx, |value, _held| *value += 1);
    let handle = pin!(LockHandle::new());
    if let Ok(mut guard) = adapter.interrupt.lock(ctx, handle) {
        *guard += 1;
    }
    let _ = adapter.message.with(ctx, |value, _held| *value += 1);
    sync::synchronize(port, ctx, |token: &mut Synchronized| {
        *adapter.interrupt.get(token) += 1;
        true
    });
}

// Seed 003, second table, row by row.
fn build_io(ctx: &mut BuildIo, a: &Adapter, port: Port) {
    start_io_lock(ctx, a);
    dpc_lock(ctx, a);
    interrupt_lock(ctx, a, port);
}

fn start_io(ctx: StartIo<'_>, a: &Adapter, port: Port) {
    match ctx {
        // One channel: DPC and Interrupt; the StartIo state is reachable without a lock.
        StartIo::Serialized(ctx) => {
            *a.start_io.get(ctx) += 1;
            dpc_lock(ctx, a);
            interrupt_lock(ctx, a, port);
        }
        // Concurrent channels: StartIo too.
        StartIo::Concurrent(ctx) => {
            start_io_lock(ctx, a);
            dpc_lock(ctx, a);
            interrupt_lock(ctx, a, port);
        }
    }
}

fn start_io_concurrent(ctx: &mut StartIoConcurrent, a: &Adapter, port: Port) {
    start_io_lock(ctx, a);
    dpc_lock(ctx, a);
    interrupt_lock(ctx, a, port);
}

fn dpc(ctx: &mut Dpc, a: &Adapter, port: Port) {
    start_io_lock(ctx, a);
    dpc_lock(ctx, a);
    interrupt_lock(ctx, a, port);
}

fn timer(ctx: &mut Timer, a: &Adapter, port: Port) {
    *a.start_io.get(ctx) += 1;
    interrupt_lock(ctx, a, port);
}

fn reset_bus(ctx: &mut ResetBus, a: &Adapter, port: Port) {
    *a.start_io.get(ctx) += 1;
    interrupt_lock(ctx, a, port);
}

fn adapter_control(ctx: &mut AdapterControl, a: &Adapter, port: Port) {
    start_io_lock(ctx, a);
    dpc_lock(ctx, a);
    interrupt_lock(ctx, a, port);
}

fn unit_control(ctx: &mut UnitControl, a: &Adapter, port: Port) {
    start_io_lock(ctx, a);
    dpc_lock(ctx, a);
    interrupt_lock(ctx, a, port);
}

// The lock order, upwards: StartIo -> DPC -> Interrupt, StartIo -> Interrupt, DPC -> Interrupt.
fn in_order(ctx: &mut BuildIo, a: &Adapter, port: Port) {
    let _ = a.start_io.with(ctx, |_, held: &mut Held<StartIoLevel>| {
        let _ = a.queue.with(held, |_, held| {
            interrupt_lock(held, a, port);
        });
        interrupt_lock(held, a, port);
    });
    let _ = a.queue.with(ctx, |_, held| interrupt_lock(held, a, port));
    // Nested guards, the inner one taken with the outer's held-level token.
    let outer = pin!(LockHandle::new());
    if let Ok(mut guard) = a.start_io.lock(ctx, outer) {
        let (value, held) = guard.split();
        *value += 1;
        let inner = pin!(LockHandle::new());
        if let Ok(mut inner) = a.queue.lock(held, inner) {
            *inner += 1;
        }
    }
}

// Seed 003, first table: state reachable where Storport holds the lock.
fn isr(ctx: &mut Interrupt, a: &Adapter) {
    *a.interrupt.get(ctx) += 1;
    a.queue.dpc().issue(ctx, 0, 0);
}

fn message_interrupt(ctx: &mut MessageInterrupt, a: &Adapter) {
    *a.interrupt.get(ctx) += 1;
    a.queue.dpc().issue(ctx, 1, 2);
}

fn message_interrupt_per_message(ctx: &mut MessageInterruptPerMessage, a: &Adapter) {
    if let Some(value) = a.message.get(ctx) {
        *value += 1;
    }
    a.queue.dpc().issue(ctx, 1, 2);
}

fn initialize(ctx: &mut Initialize, a: &Adapter) {
    *a.interrupt.get(ctx) += 1;
}

fn half_duplex(
    start_io: &mut StartIoSerialized<HalfDuplex>,
    timer: &mut Timer<HalfDuplex>,
    reset_bus: &mut ResetBus<HalfDuplex>,
    a: &Adapter,
) {
    *a.interrupt.get(start_io) += 1;
    *a.start_io.get(start_io) += 1;
    *a.interrupt.get(timer) += 1;
    *a.start_io.get(timer) += 1;
    *a.interrupt.get(reset_bus) += 1;
}

// The DPC: initialised from passive initialisation with the adapter's lifetime, run by Storport.
impl DpcHandler for Adapter {
    fn dpc(&self, ctx: &mut context::Dpc, _dpc: &StorDpc, _arg1: usize, _arg2: usize) {
        let _ = self.queue.with(ctx, |value, _| *value += 1);
    }
}

fn passive_initialize<'a>(
    adapter: &'a Adapter,
    ctx: &mut PassiveInitialize<'a>,
    port: Port,
) -> bool {
    adapter.queue.dpc().initialize(ctx, port, adapter)
}

// Binding cells in FindAdapter, with `&mut` access.
fn find_adapter(adapter: &mut Adapter, port: Port) {
    adapter.start_io.bind(port);
    adapter.interrupt.bind(port);
    adapter.message.bind(port);
    *adapter.interrupt.get_mut() = 0;
}

fn main() {}
