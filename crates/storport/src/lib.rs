//! The safe Storport layer: declarations, the `Miniport` trait and its trampolines, context
//! tokens, lock cells, SRBs, DPCs, registers and DMA. Device-agnostic; all the unsafe code of the
//! driver lives here.
#![no_std]

// Storport's raw declarations (crates/storport-sys), private: drivers see typed values only.
pub(crate) use storport_sys as ffi;

#[cfg(target_os = "windows")]
pub mod kernel_rt;

pub mod config;
pub mod context;
pub mod dma;
pub mod dpc;
pub mod dump;
pub mod etw;
// Fuzzing and property-test support (SRB parsing over arbitrary bytes); not the layer's API.
#[cfg(feature = "test-utils")]
#[doc(hidden)]
pub mod fuzzing;
pub mod lock;
pub mod miniport;
pub mod msi;
pub mod perf;
pub mod port;
pub mod register;
pub mod srb;
pub mod sync;

pub use config::PortConfiguration;
pub use miniport::{
    AdapterControl, AdapterControlStatus, AdapterControlType, BuildIoOutcome, FindAdapterStatus,
    MapBuffers, MessageContext, Miniport, UnitControlType,
};
pub use port::Port;
pub use srb::Srb;
