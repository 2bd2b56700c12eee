//! storport-sim: a user-mode Storport that runs a miniport's real code and checks Storport's rules.
//!
//! It defines the storport.sys exports (`StorPortInitialize`, `StorPortNotification`, ... and
//! the host-only register accessors) so a miniport's unmodified FFI code links against it, runs
//! each callback on a simulated CPU (a host thread with an IRQL and a set of held locks), and
//! reports every broken rule of `reference/storport.md` sections 1 and 6 like a bug check.
//!
//! ```text
//!   let port = Port::new(PortOptions::default());
//!   port.load_driver(DriverEntry)?;                      // DriverEntry -> StorPortInitialize
//!   let adapter = port.start_adapter(device, memory, AdapterOptions::default())?;
//!   let c = adapter.execute(Request::data_in(&inquiry_cdb, 36));
//!   assert!(port.violations().is_empty());
//! ```
//!
//! Execution model: the submitting thread runs HwStorBuildIo and HwStorStartIo; one thread per
//! interrupt line runs the ISR; one thread per simulated CPU runs DPCs; a timer thread runs
//! HwStorTimer, busy retries and SRB timeouts. Completions are delivered after the miniport's
//! callback returns, on the CPU that completed them. `RULES.md` lists the rules. Inside
//! [`sched::run`] the same threads run one at a time under a seeded scheduler over virtual time
//! (deterministic mode: a seed replays a run exactly).
//!
//! Tests wait for events, not for time: [`Adapter::wait_until`] (and [`Port::wait_until`],
//! [`Port::wait_for_violation`], [`Adapter::drain`]) re-check a condition whenever a callback
//! returns, a request completes, a violation is reported, the port logs a line, a request times
//! out or a bus reset is done ([`Adapter::activity`] counts these), and fail with a message
//! naming what did not happen only after [`PATIENCE`].

pub mod abi;
mod adapter;
mod cpu;
pub mod device;
mod dpc;
mod exports;
pub mod image;
mod interrupt;
pub mod measure;
pub mod memfd;
mod memory;
mod port;
mod registers;
mod request;
pub mod rules;
pub mod sched;
mod timer;
pub mod wait;
mod watchdog;

pub use adapter::{
    Activity, Adapter, AdapterOptions, BusDataRefusal, CallbackKind, DumpPointers, EtwEvent,
    EventLogEntry, InterruptMode, LockCounts, LockKind, StartError, parse_dump_pointers,
};
pub use exports::{LockApi, LockCall, record_lock_calls, unattributed_calls};
pub use port::{LoadError, Port, PortOptions, Registration, SgMode};
pub use request::{
    Completion, CompletionQueue, GuestData, Request, RequestHandle, flags, function,
};
pub use rules::{Rule, Violation};
pub use wait::{PATIENCE, Signal};
pub use watchdog::{HANG_EXIT_CODE, set_context as watchdog_context};

/// Keeps the export object files in every link (see `exports::keep`).
#[doc(hidden)]
pub fn keep_exports() -> usize {
    exports::keep() ^ exports::keep_shim()
}
