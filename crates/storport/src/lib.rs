//! The safe Storport layer: declarations, the `Miniport` trait and its trampolines, context
//! tokens, lock cells, SRBs, DPCs, registers and DMA. Device-agnostic; all the unsafe code of the
//! driver lives here.
#![no_std]

#[cfg(target_os = "windows")]
pub mod kernel_rt;

pub mod config;
pub mod context;
pub mod dma;
pub mod ffi;
pub mod miniport;
pub mod perf;
pub mod port;
pub mod register;
pub mod srb;

pub use config::PortConfiguration;
pub use miniport::{AdapterControl, AdapterControlStatus, BuildIoOutcome, FindAdapterStatus, Miniport};
pub use port::Port;
pub use srb::Srb;
