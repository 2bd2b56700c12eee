//! Run-time tests of the storport crate's safe lock wrappers against the user-mode Storport.
//!
//! A small miniport written on `storport::Miniport` (not raw FFI) exercises every wrapper from
//! the callbacks that may use it: `DpcShared::with`/`lock` from StartIo and the DPC,
//! `StartIoShared` from BuildIo (and from StartIo with concurrent channels, and the DPC),
//! `InterruptShared::synchronize` (StorPortSynchronizeAccess) from StartIo and the DPC and `get`
//! from the ISR, the StorPortAcquireSpinLockEx(InterruptLock) guard from the DPC, the MSI
//! per-message lock (`MsiShared`) under InterruptSynchronizePerMessage, and `StorDpc`
//! initialised in passive initialization and issued from the ISR. The port's log of lock calls
//! (`Adapter::lock_calls`) shows what reached Storport: function code 93 / notification
//! 0x1003/0x1004, the lock kind, the LockContext (the STOR_DPC for DpcLock, NULL otherwise), the
//! handle; the port's rule checks show every lock released, on early-return paths too.
//!
//! Every cell counts its updates with a read-yield-write inside the lock, so a wrapper that did
//! not really exclude the other CPUs would lose updates and fail the count checks.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::c_void;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use storport::config::MessageSynchronization;
use storport::context::{self, StartIo};
use storport::dpc::{DpcHandler, MayIssueDpc, StorDpc};
use storport::lock::{LockError, LockHandle, MayAcquireDpc, MayAcquireInterrupt};
use storport::miniport::{BuildIoOutcome, MessageContext, enable_passive_initialization};
use storport::msi::MsiShared;
use storport::perf::{self, PerfGranted, PerfRequest};
use storport::sync::{DpcShared, InterruptShared, StartIoShared};
use storport::{
    AdapterControl, AdapterControlStatus, FindAdapterStatus, Miniport, Port, PortConfiguration, Srb,
};
use storport_sim::abi;
use storport_sim::{
    Adapter, AdapterOptions, InterruptMode, LockApi, LockCall, PATIENCE, PortOptions, Request,
    Rule, Violation, record_lock_calls,
};

// ------------------------------------------------------------------------------------------------
// What a run does and what the miniport saw.
// ------------------------------------------------------------------------------------------------

/// How the adapter's interrupts are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Irq {
    /// INTx: HwStorInterrupt (the `Interrupt` token).
    Line,
    /// MSI-X, InterruptSynchronizeAll (the `MessageInterrupt` token).
    MsiAll,
    /// MSI-X, InterruptSynchronizePerMessage (`MessageInterruptPerMessage`, `MsiShared`).
    MsiPerMessage,
}

/// A deliberate leak (negative tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leak {
    None,
    /// The DPC forgets a `DpcShared` guard whose handle outlives the callback.
    DpcGuard,
    /// The DPC forgets an `MsiShared` guard.
    MsiGuard,
}

#[derive(Clone, Copy, Debug)]
struct Scenario {
    irq: Irq,
    /// Concurrent channels requested in passive initialization (1: none requested).
    channels: u32,
    /// Run the early-return paths (closure returns, `?`, guards dropped on errors).
    early_returns: bool,
    leak: Leak,
    /// The port answers StorPortAcquireSpinLockEx with STOR_STATUS_NOT_IMPLEMENTED.
    ex_not_implemented: bool,
    /// HwStorFindAdapter describes the adapter with `set_bus_master_adapter` (false: only the
    /// transfer limits; the synchronization model then comes from `Miniport::Duplex` alone).
    bus_master: bool,
    /// The port runs a StartIo on another CPU while it grants concurrent channels
    /// (`PortOptions::start_io_while_granting_channels`).
    start_io_during_grant: bool,
}

const BASE: Scenario = Scenario {
    irq: Irq::MsiPerMessage,
    channels: 2,
    early_returns: false,
    leak: Leak::None,
    ex_not_implemented: false,
    bus_master: true,
    start_io_during_grant: false,
};

/// Updates of one cell: how many, and the highest value seen (equal when no update was lost).
#[derive(Default)]
struct Counter {
    updates: AtomicU64,
    max: AtomicU64,
}

/// Read, let another CPU in, write: a lost update if the lock did not exclude the others.
fn bump(value: &mut u64, counter: &Counter) {
    let old = *value;
    std::thread::yield_now();
    *value = old + 1;
    counter.updates.fetch_add(1, Ordering::SeqCst);
    counter.max.fetch_max(old + 1, Ordering::SeqCst);
}

/// What the miniport observed, shared with the test through `REGISTRY`.
struct Obs {
    scenario: Scenario,
    /// The address of the STOR_DPC of `TestMiniport::chan`.
    stor_dpc: AtomicUsize,
    /// `StorDpc::initialize` results: first call, second call.
    dpc_init: Mutex<Option<(bool, bool)>>,
    /// `perf::initialize` result, when concurrent channels were requested.
    granted: Mutex<Option<Option<PerfGranted>>>,
    /// Passive initialization is inside `perf::initialize`.
    granting: AtomicBool,
    /// The tokens StartIo got while `granting` ("concurrent" or "serialized").
    during_grant: Mutex<Vec<&'static str>>,
    start_io_concurrent: AtomicU64,
    start_io_serialized: AtomicU64,
    /// ISR runs (all kinds), counted as each ISR returns.
    isr_runs: AtomicU64,
    /// PerMessage routine runs where `MsiShared::get` answered `Some` (its own message).
    msi_own_message: AtomicU64,
    /// PerMessage routine runs where `MsiShared::get` answered `None` (another message).
    msi_other_message: AtomicU64,
    issue_attempts: AtomicU64,
    issued: AtomicU64,
    dpc_done: AtomicU64,
    dpc_bad_arguments: AtomicU64,
    early_return_runs: AtomicU64,
    irq: Counter,
    start_io: Counter,
    chan: Counter,
    msi: Counter,
    errors: Mutex<Vec<String>>,
}

impl Obs {
    fn new(scenario: Scenario) -> Self {
        Self {
            scenario,
            stor_dpc: AtomicUsize::new(0),
            dpc_init: Mutex::new(None),
            granted: Mutex::new(None),
            granting: AtomicBool::new(false),
            during_grant: Mutex::new(Vec::new()),
            start_io_concurrent: AtomicU64::new(0),
            start_io_serialized: AtomicU64::new(0),
            isr_runs: AtomicU64::new(0),
            msi_own_message: AtomicU64::new(0),
            msi_other_message: AtomicU64::new(0),
            issue_attempts: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            dpc_done: AtomicU64::new(0),
            dpc_bad_arguments: AtomicU64::new(0),
            early_return_runs: AtomicU64::new(0),
            irq: Counter::default(),
            start_io: Counter::default(),
            chan: Counter::default(),
            msi: Counter::default(),
            errors: Mutex::new(Vec::new()),
        }
    }

    fn error(&self, what: String) {
        self.errors.lock().unwrap().push(what);
    }
}

/// Observations by the id the test passes in FindAdapter's argument string ("id=N").
static REGISTRY: Mutex<BTreeMap<u32, Arc<Obs>>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

// ------------------------------------------------------------------------------------------------
// The test miniport.
// ------------------------------------------------------------------------------------------------

/// The MSI-X message whose lock guards `TestMiniport::msi`.
const MSI_MESSAGE: u32 = 1;
/// The first argument the ISR passes to StorPortIssueDpc.
const DPC_ARG1: usize = 0xD1;

struct TestMiniport {
    port: Option<Port>,
    obs: OnceLock<Arc<Obs>>,
    /// Touched by the ISR (`get`) and, through the interrupt lock, by everything else.
    irq: InterruptShared<u64>,
    /// Guarded by the StartIo lock.
    start_io: StartIoShared<u64>,
    /// Guarded by its own STOR_DPC's lock; the DPC the ISR issues.
    chan: DpcShared<u64>,
    /// Guarded by message `MSI_MESSAGE`'s lock (PerMessage only).
    msi: MsiShared<u64>,
}

/// An injected failure, for the `?` paths.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Injected,
    Lock(LockError),
}

fn fail() -> Result<(), Failure> {
    if std::hint::black_box(true) {
        Err(Failure::Injected)
    } else {
        Ok(())
    }
}

impl TestMiniport {
    fn obs(&self) -> &Obs {
        self.obs
            .get()
            .expect("FindAdapter registered the observations")
    }

    fn port(&self) -> Port {
        self.port.expect("FindAdapter stored the port")
    }

    fn per_message(&self) -> bool {
        self.obs().scenario.irq == Irq::MsiPerMessage
    }

    /// Records a wrapper's error; the value on success.
    fn note<T>(&self, what: &str, result: Result<T, LockError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.obs().error(format!("{what}: {e:?}"));
                None
            }
        }
    }

    /// What StartIo (either token) and the DPC both do: DPC and interrupt-level wrappers.
    fn dpc_and_interrupt_paths<C: MayAcquireDpc + MayAcquireInterrupt>(&self, ctx: &mut C) {
        let o = self.obs();
        // DpcShared::with: StorPortAcquireSpinLockEx(DpcLock, the STOR_DPC).
        self.note(
            "DpcShared::with",
            self.chan.with(ctx, |c, _| bump(c, &o.chan)),
        );
        // DpcShared::lock: the guard form, released when it drops.
        {
            let handle = pin!(LockHandle::new());
            if let Some(mut guard) = self.note("DpcShared::lock", self.chan.lock(ctx, handle)) {
                bump(&mut guard, &o.chan);
            }
        }
        // InterruptShared::synchronize: StorPortSynchronizeAccess.
        self.note(
            "InterruptShared::synchronize",
            self.irq.synchronize(ctx, |i| bump(i, &o.irq)),
        );
        // The BOOLEAN form: the routine's value comes back.
        if !storport::sync::synchronize(self.port(), ctx, |_| std::hint::black_box(true)) {
            o.error("sync::synchronize lost the routine's TRUE".into());
        }
        if self.per_message() {
            // MsiShared: StorPortAcquireMSISpinLock / StorPortReleaseMSISpinLock.
            self.note(
                "MsiShared::with",
                self.msi.with(ctx, |m, _| bump(m, &o.msi)),
            );
            if let Some(mut guard) = self.note("MsiShared::lock", self.msi.lock(ctx)) {
                bump(&mut guard, &o.msi);
            }
        }
        if o.scenario.early_returns {
            self.early_returns(ctx);
        }
    }

    /// Every way out of a locked section that is not its end.
    fn early_returns<C: MayAcquireDpc + MayAcquireInterrupt>(&self, ctx: &mut C) {
        let o = self.obs();
        // 1. A `with` closure that returns early.
        let r = self.chan.with(ctx, |c, _| {
            bump(c, &o.chan);
            if *c > 0 {
                return 1;
            }
            bump(c, &o.chan);
            2
        });
        if r != Ok(1) {
            o.error(format!("early return from with: {r:?}"));
        }
        // 2. `?` inside `with`.
        let r = self.chan.with(ctx, |c, _| -> Result<(), Failure> {
            bump(c, &o.chan);
            fail()?;
            bump(c, &o.chan);
            Ok(())
        });
        if r != Ok(Err(Failure::Injected)) {
            o.error(format!("? inside with: {r:?}"));
        }
        // 3. A guard alive when `?` leaves the function.
        let r = self.dpc_guard_then_fail(ctx);
        if r != Err(Failure::Injected) {
            o.error(format!("DpcShared guard on an error path: {r:?}"));
        }
        // 4. A forgotten guard over a handle on this frame: the handle lets the lock go when it
        //    is reused, and when it drops at the end of the block.
        {
            let mut handle = pin!(LockHandle::new());
            if let Some(guard) = self.note(
                "InterruptShared::lock (forgotten)",
                self.irq.lock(ctx, handle.as_mut()),
            ) {
                core::mem::forget(guard);
            }
            if let Some(mut guard) = self.note(
                "InterruptShared::lock (same handle again)",
                self.irq.lock(ctx, handle.as_mut()),
            ) {
                bump(&mut guard, &o.irq);
                core::mem::forget(guard);
            }
        }
        // 5. An MSI guard on an error path.
        if self.per_message() {
            let r = self.msi_guard_then_fail(ctx);
            if r != Err(Failure::Injected) {
                o.error(format!("MsiShared guard on an error path: {r:?}"));
            }
        }
        o.early_return_runs.fetch_add(1, Ordering::SeqCst);
    }

    fn dpc_guard_then_fail<C: MayAcquireDpc>(&self, ctx: &mut C) -> Result<(), Failure> {
        let handle = pin!(LockHandle::new());
        let mut guard = self.chan.lock(ctx, handle).map_err(Failure::Lock)?;
        bump(&mut guard, &self.obs().chan);
        fail()?;
        bump(&mut guard, &self.obs().chan);
        Ok(())
    }

    fn msi_guard_then_fail<C: MayAcquireInterrupt>(&self, ctx: &mut C) -> Result<(), Failure> {
        let mut guard = self.msi.lock(ctx).map_err(Failure::Lock)?;
        bump(&mut guard, &self.obs().msi);
        fail()?;
        bump(&mut guard, &self.obs().msi);
        Ok(())
    }

    /// StorPortIssueDpc from an interrupt routine.
    fn issue<C: MayIssueDpc>(&self, ctx: &C) {
        let o = self.obs();
        let n = o.issue_attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if self.chan.dpc().issue(ctx, DPC_ARG1, n as usize) {
            o.issued.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Miniport for TestMiniport {
    type Duplex = storport::context::FullDuplex;
    const INITIAL: Self = Self {
        port: None,
        obs: OnceLock::new(),
        irq: InterruptShared::new(0),
        start_io: StartIoShared::new(0),
        chan: DpcShared::new(0),
        msi: MsiShared::new(MSI_MESSAGE, 0),
    };
    const SRB_EXTENSION_SIZE: u32 = 64;

    fn find_adapter(
        &mut self,
        _ctx: &mut context::FindAdapter,
        port: Port,
        config: &mut PortConfiguration<'_>,
    ) -> FindAdapterStatus {
        let arguments = String::from_utf8_lossy(config.argument_string()).into_owned();
        let Some(id) = arguments
            .strip_prefix("id=")
            .and_then(|id| id.parse::<u32>().ok())
        else {
            return FindAdapterStatus::NotFound;
        };
        let Some(obs) = REGISTRY.lock().unwrap().get(&id).cloned() else {
            return FindAdapterStatus::NotFound;
        };
        self.port = Some(port);
        self.irq.bind(port);
        self.start_io.bind(port);
        self.msi.bind(port);
        config.set_transfer_limits(64 * 1024, 16);
        if obs.scenario.bus_master {
            config.set_bus_master_adapter(3, 1);
        }
        match obs.scenario.irq {
            Irq::Line => {}
            Irq::MsiAll => config.use_message_interrupts::<Self>(MessageSynchronization::All),
            Irq::MsiPerMessage => {
                config.use_message_interrupts::<Self>(MessageSynchronization::PerMessage)
            }
        }
        let _ = self.obs.set(obs);
        FindAdapterStatus::Found
    }

    fn initialize(&self, ctx: &mut context::Initialize) -> bool {
        // HwStorInitialize runs holding the interrupt lock.
        bump(self.irq.get(ctx), &self.obs().irq);
        enable_passive_initialization::<Self>(ctx, self.port())
    }

    fn passive_initialize<'a>(&'a self, ctx: &mut context::PassiveInitialize<'a>) -> bool {
        let o = self.obs();
        let port = self.port();
        let first = self.chan.dpc().initialize(ctx, port, self);
        let again = self.chan.dpc().initialize(ctx, port, self);
        *o.dpc_init.lock().unwrap() = Some((first, again));
        o.stor_dpc.store(
            std::ptr::from_ref(self.chan.dpc()) as usize,
            Ordering::SeqCst,
        );
        if o.scenario.channels > 1 {
            let request = PerfRequest {
                concurrent_channels: o.scenario.channels,
                ..PerfRequest::default()
            };
            o.granting.store(true, Ordering::SeqCst);
            *o.granted.lock().unwrap() = Some(perf::initialize(&*ctx, port, request));
            o.granting.store(false, Ordering::SeqCst);
        }
        true
    }

    fn build_io(&self, ctx: &mut context::BuildIo, srb: Srb) -> BuildIoOutcome {
        let o = self.obs();
        // StartIo < DPC < Interrupt, nested: each held level's token takes the next.
        let nested = self.start_io.with(ctx, |s, held| {
            bump(s, &o.start_io);
            self.chan.with(held, |c, held| {
                bump(c, &o.chan);
                self.irq.with(held, |i, _| bump(i, &o.irq))
            })
        });
        self.note(
            "BuildIo nested with",
            nested.and_then(|r| r).and_then(|r| r),
        );
        // StartIoShared::lock, the guard form.
        {
            let handle = pin!(LockHandle::new());
            if let Some(mut guard) =
                self.note("StartIoShared::lock", self.start_io.lock(ctx, handle))
            {
                bump(&mut guard, &o.start_io);
            }
        }
        if self.per_message() {
            self.note(
                "BuildIo MsiShared::with",
                self.msi.with(ctx, |m, _| bump(m, &o.msi)),
            );
        }
        BuildIoOutcome::StartIo(srb)
    }

    fn start_io(&self, ctx: StartIo<'_>, srb: Srb) {
        let o = self.obs();
        if o.granting.load(Ordering::SeqCst) {
            let token = match ctx {
                StartIo::Concurrent(_) => "concurrent",
                StartIo::Serialized(_) => "serialized",
            };
            o.during_grant.lock().unwrap().push(token);
        }
        match ctx {
            StartIo::Concurrent(c) => {
                o.start_io_concurrent.fetch_add(1, Ordering::SeqCst);
                // Concurrent channels: Storport holds no StartIo lock, so StartIo takes it.
                self.note(
                    "StartIo StartIoShared::with",
                    self.start_io.with(c, |s, _| bump(s, &o.start_io)),
                );
                self.dpc_and_interrupt_paths(c);
            }
            StartIo::Serialized(s) => {
                o.start_io_serialized.fetch_add(1, Ordering::SeqCst);
                // Storport holds the StartIo lock: the cell is reached without a call.
                bump(self.start_io.get(s), &o.start_io);
                self.dpc_and_interrupt_paths(s);
            }
        }
        let _ = srb.complete(storport::srb::Status::Success);
    }

    fn interrupt(&self, ctx: &mut context::Interrupt) -> bool {
        let o = self.obs();
        // The ISR holds the interrupt lock: `get`, no Storport call.
        bump(self.irq.get(ctx), &o.irq);
        self.issue(ctx);
        o.isr_runs.fetch_add(1, Ordering::SeqCst);
        true
    }

    fn message_interrupt(&self, ctx: MessageContext<'_>, _message_id: u32) -> bool {
        let o = self.obs();
        match ctx {
            MessageContext::PerMessage(m) => {
                match self.msi.get(m) {
                    Some(value) => {
                        bump(value, &o.msi);
                        o.msi_own_message.fetch_add(1, Ordering::SeqCst);
                    }
                    None => {
                        o.msi_other_message.fetch_add(1, Ordering::SeqCst);
                    }
                }
                self.issue(m);
            }
            MessageContext::All(m) => {
                bump(self.irq.get(m), &o.irq);
                self.issue(m);
            }
        }
        o.isr_runs.fetch_add(1, Ordering::SeqCst);
        true
    }

    fn reset_bus(&self, _ctx: &mut context::ResetBus, _path_id: u32) -> bool {
        true
    }

    fn adapter_control(
        &self,
        _ctx: &mut context::AdapterControl,
        _control: AdapterControl,
    ) -> AdapterControlStatus {
        AdapterControlStatus::Success
    }
}

impl DpcHandler for TestMiniport {
    fn dpc(&self, ctx: &mut context::Dpc, dpc: &StorDpc, arg1: usize, arg2: usize) {
        let o = self.obs();
        if !std::ptr::eq(dpc, self.chan.dpc()) || arg1 != DPC_ARG1 || arg2 == 0 {
            o.dpc_bad_arguments.fetch_add(1, Ordering::SeqCst);
        }
        self.dpc_and_interrupt_paths(ctx);
        // StorPortAcquireSpinLockEx(InterruptLock): the guard form, from a DPC.
        {
            let handle = pin!(LockHandle::new());
            if let Some(mut guard) =
                self.note("DPC InterruptShared::lock", self.irq.lock(ctx, handle))
            {
                bump(&mut guard, &o.irq);
            }
        }
        self.note(
            "DPC InterruptShared::with",
            self.irq.with(ctx, |i, _| bump(i, &o.irq)),
        );
        // A DPC may take the StartIo lock too; here right after dropping a DPC-lock guard whose
        // handle is still alive: the drop itself must release, or StartIo < DPC is broken.
        {
            let handle = pin!(LockHandle::new());
            if let Some(mut guard) =
                self.note("DPC DpcShared::lock (dropped)", self.chan.lock(ctx, handle))
            {
                bump(&mut guard, &o.chan);
                drop(guard);
            }
            self.note(
                "DPC StartIoShared::with",
                self.start_io.with(ctx, |s, _| bump(s, &o.start_io)),
            );
        }
        match o.scenario.leak {
            Leak::None => {}
            Leak::DpcGuard => {
                // A handle that outlives the callback, and its guard forgotten: nothing releases
                // the lock before the DPC returns.
                let handle = Pin::static_mut(Box::leak(Box::new(LockHandle::new())));
                if let Some(guard) =
                    self.note("leaked DpcShared::lock", self.chan.lock(ctx, handle))
                {
                    core::mem::forget(guard);
                }
            }
            Leak::MsiGuard => {
                if let Some(guard) = self.note("leaked MsiShared::lock", self.msi.lock(ctx)) {
                    core::mem::forget(guard);
                }
            }
        }
        o.dpc_done.fetch_add(1, Ordering::SeqCst);
    }
}

/// DriverEntry: registers `TestMiniport` through the storport crate's trampolines.
#[allow(non_snake_case, reason = "the Windows entry point's name")]
extern "C" fn DriverEntry(driver_object: *mut c_void, registry_path: *mut c_void) -> u32 {
    storport::miniport::driver_entry::<TestMiniport>(driver_object, registry_path)
}

// ------------------------------------------------------------------------------------------------
// Harness.
// ------------------------------------------------------------------------------------------------

struct Run {
    port: storport_sim::Port,
    adapter: Adapter,
    obs: Arc<Obs>,
    /// Last: outlives the adapter, whose drop joins the simulated CPUs.
    _watchdog: Watchdog,
}

/// Turns a deadlock (a lock never released: the port reports it, then a CPU spins on it for
/// ever, as on Windows) into a failure instead of a hung test run. It waits twice as long as
/// any wait in a test ([`PATIENCE`]), so a failed wait's own message comes first.
struct Watchdog(#[allow(dead_code, reason = "dropped to stop the watchdog")] mpsc::Sender<()>);

fn watchdog(what: String) -> Watchdog {
    let (tx, rx) = mpsc::channel::<()>();
    let limit = 2 * PATIENCE;
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!(
                "lock_wrappers: {what} still running after {limit:?}: a lock was never released \
                 (deadlock); see the violations above"
            );
            std::process::exit(101);
        }
    });
    Watchdog(tx)
}

fn start(scenario: Scenario) -> Run {
    let dog = watchdog(format!("starting {scenario:?}"));
    record_lock_calls(true);
    let obs = Arc::new(Obs::new(scenario));
    let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    REGISTRY.lock().unwrap().insert(id, obs.clone());
    let port = storport_sim::Port::new(PortOptions {
        acquire_spinlock_ex_not_implemented: scenario.ex_not_implemented,
        start_io_while_granting_channels: scenario.start_io_during_grant,
        ..PortOptions::default()
    });
    port.load_driver(DriverEntry)
        .expect("the test driver loads");
    let (interrupts, messages) = match scenario.irq {
        Irq::Line => (InterruptMode::Intx, 0),
        Irq::MsiAll | Irq::MsiPerMessage => (InterruptMode::MsiX, 2),
    };
    let adapter = port
        .start_adapter(
            common::FakeDevice::new(messages),
            common::memory(4),
            AdapterOptions {
                interrupts,
                argument_string: Some(format!("id={id}")),
                ..AdapterOptions::default()
            },
        )
        .expect("the test adapter starts");
    drop(dog);
    Run {
        port,
        adapter,
        obs,
        _watchdog: watchdog(format!("{scenario:?}")),
    }
}

/// Waits until `cond` holds: the port re-checks it whenever a callback (the ISR, a DPC) returns.
fn wait_for(run: &Run, what: &str, cond: impl FnMut() -> bool) {
    if let Err(e) = run.adapter.wait_until(what, PATIENCE, cond) {
        panic!("{e}\n{}", show(&run.port.violations()));
    }
}

const TEST_UNIT_READY: [u8; 6] = [0; 6];

/// Requests from several threads at once while the device interrupts `interrupts` times.
fn drive(run: &Run, threads: usize, requests: usize, interrupts: usize) {
    let o = &run.obs;
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..requests {
                    let c = run.adapter.execute(Request::scsi(&TEST_UNIT_READY));
                    assert!(c.is_success(), "{c:?}");
                }
            });
        }
        s.spawn(|| {
            let message = match o.scenario.irq {
                Irq::Line => 0,
                Irq::MsiAll | Irq::MsiPerMessage => MSI_MESSAGE as u16,
            };
            for _ in 0..interrupts {
                let before = o.isr_runs.load(Ordering::SeqCst);
                run.adapter.raise_interrupt(message);
                wait_for(run, "the ISR", || {
                    o.isr_runs.load(Ordering::SeqCst) > before
                });
                wait_for(run, "the DPC", || {
                    o.dpc_done.load(Ordering::SeqCst) >= o.issued.load(Ordering::SeqCst)
                });
            }
        });
    });
    if let Err(e) = run.adapter.drain(PATIENCE) {
        panic!("{e}");
    }
    wait_for(run, "the last DPC", || {
        o.dpc_done.load(Ordering::SeqCst) >= o.issued.load(Ordering::SeqCst)
    });
}

fn show(v: &[Violation]) -> String {
    v.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a run's lock calls showed, once checked.
struct Calls {
    /// (callback, the call that took the lock, lock kind or message id).
    taken: HashSet<(&'static str, LockApi, u32)>,
    /// (callback, api) of the other logged calls.
    other: HashSet<(&'static str, LockApi)>,
    /// Acquisitions never released.
    outstanding: Vec<LockCall>,
    initialize_dpc: usize,
}

/// Checks every logged call's arguments and pairs each acquire with its release, per CPU.
fn check_calls(calls: &[LockCall], stor_dpc: usize, ex_implemented: bool) -> Calls {
    assert_ne!(stor_dpc, 0);
    let mut per_cpu: HashMap<std::thread::ThreadId, Vec<LockCall>> = HashMap::new();
    for c in calls {
        per_cpu.entry(c.thread).or_default().push(*c);
    }
    let mut out = Calls {
        taken: HashSet::new(),
        other: HashSet::new(),
        outstanding: Vec::new(),
        initialize_dpc: 0,
    };
    let check_arguments = |c: &LockCall| {
        assert!(
            matches!(
                c.kind,
                abi::DPC_LOCK | abi::START_IO_LOCK | abi::INTERRUPT_LOCK
            ),
            "{c:?}"
        );
        let expected = if c.kind == abi::DPC_LOCK { stor_dpc } else { 0 };
        assert_eq!(
            c.context, expected,
            "LockContext: the STOR_DPC for DpcLock, NULL otherwise: {c:?}"
        );
        assert_ne!(c.handle, 0, "a STOR_LOCK_HANDLE: {c:?}");
    };
    for calls in per_cpu.values() {
        let mut held: Vec<LockCall> = Vec::new();
        let mut msi_held: Vec<LockCall> = Vec::new();
        let mut i = 0;
        while i < calls.len() {
            let c = calls[i];
            i += 1;
            match c.api {
                LockApi::AcquireEx => {
                    assert_eq!(c.code, 93, "ExtFunctionAcquireSpinLock: {c:?}");
                    check_arguments(&c);
                    if ex_implemented {
                        assert_eq!(c.status, abi::STOR_STATUS_SUCCESS, "{c:?}");
                        held.push(c);
                    } else {
                        assert_eq!(c.status, abi::STOR_STATUS_NOT_IMPLEMENTED, "{c:?}");
                        // The classic acquire follows at once, with the same arguments.
                        let classic = calls.get(i).copied();
                        i += 1;
                        let classic = classic.expect("a classic acquire after NOT_IMPLEMENTED");
                        assert_eq!(classic.api, LockApi::Acquire, "{c:?} then {classic:?}");
                        assert_eq!(classic.code, 0x1003, "{classic:?}");
                        assert_eq!(
                            (classic.kind, classic.context, classic.handle),
                            (c.kind, c.context, c.handle),
                            "the fallback passes the same arguments"
                        );
                        assert_eq!(classic.status, abi::STOR_STATUS_SUCCESS, "{classic:?}");
                        held.push(classic);
                    }
                    let taken = held.last().copied().unwrap();
                    out.taken.insert((taken.callback, taken.api, taken.kind));
                }
                LockApi::Acquire => panic!("a classic acquire not preceded by a refused Ex: {c:?}"),
                LockApi::Release => {
                    assert_eq!(c.code, 0x1004, "ReleaseSpinLock: {c:?}");
                    let at = held
                        .iter()
                        .rposition(|h| h.handle == c.handle)
                        .unwrap_or_else(|| panic!("release of a handle not held: {c:?}"));
                    let acquired = held.remove(at);
                    assert_eq!(acquired.kind, c.kind, "{acquired:?} released as {c:?}");
                    assert_eq!(
                        acquired.callback, c.callback,
                        "released in the callback that took it"
                    );
                }
                LockApi::AcquireMsi => {
                    assert_eq!((c.code, c.kind), (11, MSI_MESSAGE), "{c:?}");
                    assert_eq!(c.status, abi::STOR_STATUS_SUCCESS, "{c:?}");
                    msi_held.push(c);
                    out.taken.insert((c.callback, c.api, c.kind));
                }
                LockApi::ReleaseMsi => {
                    assert_eq!((c.code, c.kind), (12, MSI_MESSAGE), "{c:?}");
                    let acquired = msi_held.pop().expect("an MSI release after an acquire");
                    assert_eq!(acquired.callback, c.callback);
                }
                LockApi::SynchronizeAccess => {
                    assert_eq!(c.code, 0, "{c:?}");
                    assert_ne!(c.context, 0, "the closure's slot is the Context: {c:?}");
                    out.other.insert((c.callback, c.api));
                }
                LockApi::InitializeDpc | LockApi::IssueDpc => {
                    let code = if c.api == LockApi::InitializeDpc {
                        0x1001
                    } else {
                        0x1002
                    };
                    assert_eq!(c.code, code, "{c:?}");
                    assert_eq!(c.context, stor_dpc, "the STOR_DPC: {c:?}");
                    if c.api == LockApi::InitializeDpc {
                        out.initialize_dpc += 1;
                    }
                    out.other.insert((c.callback, c.api));
                }
            }
        }
        out.outstanding.extend(held);
        out.outstanding.extend(msi_held);
    }
    out
}

/// Runs `scenario` and checks everything a clean run must show; returns the run and its calls.
fn exercise(scenario: Scenario) -> (Run, Calls) {
    let run = start(scenario);
    drive(&run, 4, 40, 8);
    let o = &run.obs;
    let violations = run.port.violations();
    assert!(violations.is_empty(), "{}", show(&violations));
    let errors = o.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "wrapper errors: {errors:?}");
    // Every cell: no update lost, so every lock excluded the other CPUs.
    for (name, c) in [
        ("InterruptShared", &o.irq),
        ("StartIoShared", &o.start_io),
        ("DpcShared", &o.chan),
        ("MsiShared", &o.msi),
    ] {
        let updates = c.updates.load(Ordering::SeqCst);
        assert_eq!(
            c.max.load(Ordering::SeqCst),
            updates,
            "{name}: an update was lost"
        );
    }
    // StorDpc: initialised once in passive initialization, issued from the ISR, run with its
    // arguments.
    assert_eq!(*o.dpc_init.lock().unwrap(), Some((true, false)));
    assert!(o.issued.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        o.dpc_done.load(Ordering::SeqCst),
        o.issued.load(Ordering::SeqCst)
    );
    assert_eq!(o.dpc_bad_arguments.load(Ordering::SeqCst), 0);

    let calls = check_calls(
        &run.adapter.lock_calls(),
        o.stor_dpc.load(Ordering::SeqCst),
        !scenario.ex_not_implemented,
    );
    assert!(
        calls.outstanding.is_empty(),
        "never released: {:?}",
        calls.outstanding
    );
    assert_eq!(calls.initialize_dpc, 1);
    // Each wrapper reached Storport from the callbacks that use it.
    let acquire = if scenario.ex_not_implemented {
        LockApi::Acquire
    } else {
        LockApi::AcquireEx
    };
    let start_io = "HwStorStartIo";
    let build_io = "HwStorBuildIo";
    let dpc = "HwStorDpcRoutine";
    let mut expected = vec![
        (build_io, acquire, abi::START_IO_LOCK),
        (build_io, acquire, abi::DPC_LOCK),
        (build_io, acquire, abi::INTERRUPT_LOCK),
        (start_io, acquire, abi::DPC_LOCK),
        (dpc, acquire, abi::DPC_LOCK),
        (dpc, acquire, abi::INTERRUPT_LOCK),
        (dpc, acquire, abi::START_IO_LOCK),
    ];
    if scenario.early_returns {
        expected.push((start_io, acquire, abi::INTERRUPT_LOCK));
    }
    if scenario.channels > 1 {
        expected.push((start_io, acquire, abi::START_IO_LOCK));
    }
    if scenario.irq == Irq::MsiPerMessage {
        for cb in [build_io, start_io, dpc] {
            expected.push((cb, LockApi::AcquireMsi, MSI_MESSAGE));
        }
    }
    for e in &expected {
        assert!(
            calls.taken.contains(e),
            "{e:?} not seen in {:?}",
            calls.taken
        );
    }
    if scenario.channels <= 1 {
        assert!(
            !calls
                .taken
                .contains(&(start_io, acquire, abi::START_IO_LOCK)),
            "a serialized StartIo never takes the StartIo lock (Storport holds it)"
        );
    }
    let isr = match scenario.irq {
        Irq::Line => "HwStorInterrupt",
        Irq::MsiAll | Irq::MsiPerMessage => "HwMSInterruptRoutine",
    };
    for e in [
        (start_io, LockApi::SynchronizeAccess),
        (dpc, LockApi::SynchronizeAccess),
        ("HwStorPassiveInitializeRoutine", LockApi::InitializeDpc),
        (isr, LockApi::IssueDpc),
    ] {
        assert!(
            calls.other.contains(&e),
            "{e:?} not seen in {:?}",
            calls.other
        );
    }
    (run, calls)
}

// ------------------------------------------------------------------------------------------------
// Tests.
// ------------------------------------------------------------------------------------------------

/// StorPortAcquireSpinLockEx path, MSI-X PerMessage, two concurrent channels: every wrapper
/// passes code 93 with the documented kind, context and handle, and releases with 0x1004.
#[test]
fn ex_wrappers_msi_per_message_concurrent_start_io() {
    let (run, _) = exercise(BASE);
    assert!(run.obs.msi.updates.load(Ordering::SeqCst) > 0);
}

/// The same on an INTx line (the ISR reaches `InterruptShared` with `get`), StartIo serialized.
#[test]
fn ex_wrappers_line_interrupt_serialized_start_io() {
    exercise(Scenario {
        irq: Irq::Line,
        channels: 1,
        ..BASE
    });
}

/// MSI-X with InterruptSynchronizeAll: the message routine reaches `InterruptShared` with `get`.
#[test]
fn ex_wrappers_msi_synchronize_all() {
    exercise(Scenario {
        irq: Irq::MsiAll,
        ..BASE
    });
}

/// The port answers StorPortAcquireSpinLockEx with STOR_STATUS_NOT_IMPLEMENTED: every acquire
/// is followed at once by the classic StorPortAcquireSpinLock (0x1003) with the same arguments,
/// and the same checks pass.
#[test]
fn classic_fallback_when_ex_not_implemented() {
    exercise(Scenario {
        ex_not_implemented: true,
        ..BASE
    });
    exercise(Scenario {
        irq: Irq::Line,
        channels: 1,
        ex_not_implemented: true,
        ..BASE
    });
}

/// A `with` closure that returns early, a `?` inside `with`, a guard alive when `?` leaves the
/// function, an MSI guard on an error path, a forgotten guard over a stack handle: every lock is
/// released before the callback returns (the port reports none held), on both acquire paths.
#[test]
fn early_returns_release_every_lock() {
    for ex_not_implemented in [false, true] {
        let (run, _) = exercise(Scenario {
            early_returns: true,
            ex_not_implemented,
            ..BASE
        });
        assert!(run.obs.early_return_runs.load(Ordering::SeqCst) > 0);
    }
}

/// Negative: a guard forgotten with a handle that outlives the callback (and a forgotten MSI
/// guard) leaves the lock held when the DPC returns, and the port reports it.
#[test]
fn leaked_guard_is_reported() {
    for (leak, lock_kind) in [
        (Leak::DpcGuard, abi::DPC_LOCK),
        (Leak::MsiGuard, MSI_MESSAGE),
    ] {
        let run = start(Scenario { leak, ..BASE });
        let o = &run.obs;
        run.adapter.raise_interrupt(MSI_MESSAGE as u16);
        let held = |v: &Violation| {
            v.rule == Rule::LockHeldAtReturn
                && v.callback == "HwStorDpcRoutine"
                && v.message.contains(if leak == Leak::DpcGuard {
                    "DpcLock"
                } else {
                    "MSILock(1)"
                })
        };
        // The port reports the leak when the DPC returns, after the DPC counted itself done.
        wait_for(&run, "the leaked lock to be reported", || {
            run.port.violations().iter().any(held)
        });
        assert!(
            o.dpc_done.load(Ordering::SeqCst) >= 1,
            "the leaking DPC ran"
        );
        let violations = run.port.violations();
        // A leaked interrupt-level lock also leaves the DPC at DIRQL.
        assert!(
            violations
                .iter()
                .all(|v| held(v) || (leak == Leak::MsiGuard && v.rule == Rule::IrqlChanged)),
            "{}",
            show(&violations)
        );
        let calls = check_calls(
            &run.adapter.lock_calls(),
            o.stor_dpc.load(Ordering::SeqCst),
            true,
        );
        assert_eq!(calls.outstanding.len(), 1, "{:?}", calls.outstanding);
        assert_eq!(calls.outstanding[0].callback, "HwStorDpcRoutine");
        assert_eq!(calls.outstanding[0].kind, lock_kind);
    }
}

/// The StartIo token follows what Storport granted: `StartIo::Concurrent` after perf options
/// granted more than one channel (and StartIo may then take the StartIo lock itself),
/// `StartIo::Serialized` otherwise (Storport holds the lock; `StartIoShared::get`).
#[test]
fn start_io_token_follows_granted_channels() {
    let (run, _) = exercise(Scenario {
        channels: 2,
        ..BASE
    });
    let o = &run.obs;
    assert_eq!(run.adapter.perf().0, 2);
    let granted = o.granted.lock().unwrap().expect("perf options requested");
    assert_eq!(granted.map(|g| g.concurrent_channels), Some(2));
    assert!(o.start_io_concurrent.load(Ordering::SeqCst) > 0);
    assert_eq!(o.start_io_serialized.load(Ordering::SeqCst), 0);

    let (run, _) = exercise(Scenario {
        channels: 1,
        ..BASE
    });
    let o = &run.obs;
    assert_eq!(run.adapter.perf().0, 1);
    assert!(o.granted.lock().unwrap().is_none());
    assert!(o.start_io_serialized.load(Ordering::SeqCst) > 0);
    assert_eq!(o.start_io_concurrent.load(Ordering::SeqCst), 0);
}

/// The synchronization model is the miniport type's (`Miniport::Duplex`), declared by the
/// HwStorFindAdapter trampoline itself: a find_adapter that describes nothing else still runs the
/// full-duplex model its tokens claim (a port left at half duplex would hold the interrupt lock
/// around StartIo, and the full-duplex StartIo token's acquisitions would be violations).
#[test]
fn duplex_model_is_declared_by_the_trampoline() {
    for channels in [1, 2] {
        let (run, _) = exercise(Scenario {
            bus_master: false,
            channels,
            ..BASE
        });
        assert_eq!(run.adapter.synchronization(), (true, true));
    }
}

/// Storport may run StartIo in parallel as soon as it grants concurrent channels, before
/// StorPortInitializePerfOpts returns. That StartIo already gets the concurrent token (the layer
/// records the channels before it asks), never the one-channel token, which would claim a StartIo
/// lock nobody holds.
#[test]
fn start_io_during_the_channel_grant_gets_the_concurrent_token() {
    let (run, _) = exercise(Scenario {
        start_io_during_grant: true,
        ..BASE
    });
    let o = &run.obs;
    assert_eq!(*o.during_grant.lock().unwrap(), ["concurrent"]);
    assert_eq!(o.start_io_serialized.load(Ordering::SeqCst), 0);
}

/// Under PerMessage, the routine of another message does not reach the cell of message 1
/// (`MsiShared::get` answers `None`), and still issues the DPC.
#[test]
fn msi_get_only_in_its_own_message() {
    let run = start(BASE);
    let o = &run.obs;
    run.adapter.raise_interrupt(0);
    wait_for(&run, "the ISR of message 0", || {
        o.isr_runs.load(Ordering::SeqCst) >= 1
    });
    assert_eq!(o.msi_other_message.load(Ordering::SeqCst), 1);
    assert_eq!(o.msi_own_message.load(Ordering::SeqCst), 0);
    wait_for(&run, "the DPC", || o.dpc_done.load(Ordering::SeqCst) >= 1);
    assert!(
        run.port.violations().is_empty(),
        "{}",
        show(&run.port.violations())
    );
}
