//! The simulated machine and its Storport: options, the loaded driver (DriverEntry and
//! StorPortInitialize), and where violations are collected.

use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::abi::{self, DriverEntryFn, HwInitializationData};
use crate::adapter::{Adapter, AdapterOptions, StartError};
use crate::device::{GuestMemory, PciDevice};
use crate::rules::{Reporter, Rule, Violation};
use crate::wait::Signal;

/// How the port describes a data buffer to the miniport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SgMode {
    /// One scatter-gather element per 4 KiB page (what a real, physically scattered buffer gives).
    #[default]
    PerPage,
    /// One element for the whole (physically contiguous) buffer.
    Contiguous,
}

/// Options of one simulated machine and its Storport.
#[derive(Clone, Debug)]
pub struct PortOptions {
    /// Number of simulated CPUs (DPC threads per adapter; round-robin CPU numbers for callers).
    pub cpus: u32,
    /// Rules not checked (every rule is checked by default).
    pub disabled_rules: Vec<Rule>,
    /// Panic at the first violation (a bug check) instead of collecting them.
    pub panic_on_violation: bool,
    /// Answer ExtendedFunction 93 (StorPortAcquireSpinLockEx) with STOR_STATUS_NOT_IMPLEMENTED,
    /// like Storport before Windows 10 1809, to exercise the classic fallback.
    pub acquire_spinlock_ex_not_implemented: bool,
    /// An ISR (or a StorPortSynchronizeAccess routine, which runs at DIRQL) charged more CPU
    /// time than this is a 0x133 (Windows guidance: 25 us; generous for tests). The watchdog
    /// charges CPU time, not wall-clock time: see the `watchdog` module.
    pub isr_budget: Duration,
    /// A DPC charged more CPU time than this is a 0x133 (Windows guidance: 100 us).
    pub dpc_budget: Duration,
    /// Any other callback entered at DISPATCH or above (BuildIo, StartIo, HwStorTimer,
    /// HwStorResetBus, HwStorInitialize, AdapterControl at raised IRQL) charged more CPU time
    /// than this is a 0x133.
    pub raised_irql_budget: Duration,
    /// A callback still running this much CPU time past its budget never returns: the watchdog
    /// prints the bug check and ends the process (exit status `HANG_EXIT_CODE`).
    pub watchdog_hang_margin: Duration,
    /// A callback (at any IRQL) still running after this much wall-clock time is hung (a
    /// deadlock burns no CPU here): the watchdog ends the process the same way.
    pub watchdog_hang_wall: Duration,
    /// Multiplies every SRB's TimeOutValue.
    pub timeout_scale: f64,
    /// On an SRB timeout, call HwStorResetBus (Storport's behaviour); otherwise report 0xF0/3.
    pub reset_on_timeout: bool,
    /// How long requests may stay outstanding after HwStorResetBus before 0xF0/1.
    pub reset_grace: Duration,
    /// How long past Storport's report that a request was not completed after a bus reset
    /// (0xF0/1), or past its timeout and `reset_grace` when there was none, a request may stay
    /// outstanding before `RequestHandle::wait` (and `Adapter::execute`) calls it lost and
    /// panics: on Windows the I/O would hang forever; a test that waits on it fails instead.
    pub lost_request_margin: Duration,
    /// Delay before an SRB_STATUS_BUSY request is sent again.
    pub busy_retry_delay: Duration,
    /// How data buffers are split into scatter-gather elements.
    pub sg_mode: SgMode,
    /// Fill SRB extensions and data-in buffers with a pattern (catches reads of unset memory).
    pub poison: bool,
    /// Print StorPortDebugPrint output to stderr.
    pub debug_print: bool,
    /// On an SRB timeout (with `reset_on_timeout`), Storport's multi-tier reset: an
    /// SRB_FUNCTION_RESET_LOGICAL_UNIT, then SRB_FUNCTION_RESET_DEVICE, then HwStorResetBus, each
    /// given `reset_tier_wait` to bring the timed-out requests back. Off (the default, for
    /// miniports written against the simpler model): HwStorResetBus at once.
    pub multi_tier_reset: bool,
    /// How long each tier of the multi-tier reset waits before the next.
    pub reset_tier_wait: Duration,
    /// Check Windows' rules only: the project's own stricter rules (`Rule::PROJECT_ONLY`,
    /// RULES.md) are off, so a driver not written to them (viostor) is measured fairly.
    pub windows_rules_only: bool,
    /// While StorPortInitializePerfOpts grants more than one concurrent channel, before the call
    /// returns, run one TEST UNIT READY through HwStorBuildIo and HwStorStartIo on another CPU
    /// (a thread of its own) and wait for it: Storport may start StartIo in parallel as soon as
    /// the channels are in force. For tests of the layer's StartIo token.
    pub start_io_while_granting_channels: bool,
}

impl Default for PortOptions {
    fn default() -> Self {
        Self {
            cpus: 4,
            disabled_rules: Vec::new(),
            panic_on_violation: false,
            acquire_spinlock_ex_not_implemented: false,
            isr_budget: Duration::from_millis(50),
            dpc_budget: Duration::from_millis(100),
            raised_irql_budget: Duration::from_millis(100),
            watchdog_hang_margin: Duration::from_secs(1),
            watchdog_hang_wall: Duration::from_secs(120),
            timeout_scale: 1.0,
            reset_on_timeout: true,
            reset_grace: Duration::from_secs(2),
            lost_request_margin: Duration::from_secs(10),
            busy_retry_delay: Duration::from_millis(1),
            sg_mode: SgMode::PerPage,
            poison: true,
            debug_print: false,
            multi_tier_reset: false,
            reset_tier_wait: Duration::from_secs(1),
            windows_rules_only: false,
            start_io_while_granting_channels: false,
        }
    }
}

/// What the driver registered through StorPortInitialize, as Storport recorded it.
#[derive(Clone, Copy, Debug)]
pub struct Registration {
    /// A copy of the HW_INITIALIZATION_DATA.
    pub hw_init: HwInitializationData,
    /// What StorPortInitialize returned (STATUS_SUCCESS = 0).
    pub status: u32,
}

/// Why a driver did not load.
#[derive(Clone, Debug)]
pub enum LoadError {
    /// DriverEntry returned this NTSTATUS.
    DriverEntry(u32),
    /// DriverEntry returned success without calling StorPortInitialize.
    NotRegistered,
    /// StorPortInitialize rejected the registration (status, data).
    Rejected(Box<Registration>),
}

pub(crate) struct PortShared {
    pub options: PortOptions,
    pub reporter: Reporter,
    /// Notified whenever something tests may wait for happens on this machine (see
    /// [`Port::wait_until`]).
    pub events: Signal,
    pub registration: Mutex<Option<Registration>>,
    pub driver_entry: Mutex<Option<DriverEntryFn>>,
    /// The machine's system event log: every adapter's StorPortLogError entries, in order,
    /// with the adapter's serial number (kept when an adapter failed to start or is gone).
    pub event_log: Mutex<Vec<(u64, crate::adapter::EventLogEntry)>>,
}

impl PortShared {
    pub fn report(&self, rule: Rule, params: [u64; 3], adapter: Option<u64>, message: String) {
        if self.reporter.enabled(rule) {
            self.reporter
                .push(crate::cpu::violation(rule, params, adapter, message));
        }
        self.events.notify();
    }
}

/// One simulated machine with its Storport.
pub struct Port {
    pub(crate) shared: Arc<PortShared>,
}

/// The driver object DriverEntry's Argument1 points at: how StorPortInitialize finds its port.
#[repr(C)]
pub(crate) struct DriverObject {
    magic: u64,
    port: *const PortShared,
}

const DRIVER_OBJECT_MAGIC: u64 = 0x3153_494D_5352_4F54;

struct Loading {
    port: Arc<PortShared>,
    object: usize,
    dump: bool,
    result: Option<Registration>,
}

thread_local! {
    static LOADING: RefCell<Option<Loading>> = const { RefCell::new(None) };
}

static NEXT_PORT: AtomicU64 = AtomicU64::new(1);

impl Port {
    /// A new machine with `options`.
    pub fn new(options: PortOptions) -> Self {
        NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        std::hint::black_box(crate::keep_exports());
        let reporter = Reporter {
            violations: Mutex::new(Vec::new()),
            disabled: {
                let mut disabled = options.disabled_rules.clone();
                if options.windows_rules_only {
                    disabled.extend_from_slice(Rule::PROJECT_ONLY);
                }
                disabled
            },
            panic: options.panic_on_violation,
        };
        Port {
            shared: Arc::new(PortShared {
                options,
                reporter,
                events: Signal::new(),
                registration: Mutex::new(None),
                event_log: Mutex::new(Vec::new()),
                driver_entry: Mutex::new(None),
            }),
        }
    }

    /// The options this port runs with.
    pub fn options(&self) -> &PortOptions {
        &self.shared.options
    }

    /// Runs the driver's DriverEntry at PASSIVE; returns what it registered with
    /// StorPortInitialize (validated as Storport validates it).
    pub fn load_driver(&self, driver_entry: DriverEntryFn) -> Result<Registration, LoadError> {
        let reg = load(&self.shared, driver_entry, false)?;
        *self
            .shared
            .registration
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(reg);
        *self
            .shared
            .driver_entry
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(driver_entry);
        Ok(reg)
    }

    /// What the driver registered, once loaded.
    pub fn registration(&self) -> Option<Registration> {
        *self
            .shared
            .registration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// PnP start of one adapter on `device`, with DMA memory carved from `memory`.
    pub fn start_adapter(
        &self,
        device: Arc<dyn PciDevice>,
        memory: GuestMemory,
        options: AdapterOptions,
    ) -> Result<Adapter, StartError> {
        crate::adapter::start(&self.shared, device, memory, options)
    }

    /// The machine's system event log: every adapter's StorPortLogError entries in order, with
    /// the adapter's serial number, including those of adapters that did not start.
    pub fn event_log(&self) -> Vec<(u64, crate::adapter::EventLogEntry)> {
        self.shared
            .event_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every violation reported so far on this machine.
    pub fn violations(&self) -> Vec<Violation> {
        self.shared
            .reporter
            .violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until `condition` holds, checking it at once and whenever something happens on this
    /// machine (a callback returns, a request completes, a violation is reported, a line is
    /// logged, a reset or a timeout), at most `timeout`; the error names `what` did not happen.
    pub fn wait_until(
        &self,
        what: impl std::fmt::Display,
        timeout: Duration,
        condition: impl FnMut() -> bool,
    ) -> Result<(), String> {
        self.shared.events.wait_until(what, timeout, condition)
    }

    /// Waits until a violation of `rule` is reported, at most `timeout`, and returns it; the
    /// error lists what was reported instead.
    pub fn wait_for_violation(&self, rule: Rule, timeout: Duration) -> Result<Violation, String> {
        self.shared
            .events
            .wait_for(format!("a {rule:?} violation"), timeout, || {
                self.violations().into_iter().find(|v| v.rule == rule)
            })
            .map_err(|e| format!("{e}; reported instead: {:#?}", self.violations()))
    }

    /// Removes and returns the violations reported so far.
    pub fn take_violations(&self) -> Vec<Violation> {
        std::mem::take(
            &mut *self
                .shared
                .reporter
                .violations
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }
}

/// Runs DriverEntry; with `dump`, with NULL arguments as the crash-dump stack does.
pub(crate) fn load(
    port: &Arc<PortShared>,
    entry: DriverEntryFn,
    dump: bool,
) -> Result<Registration, LoadError> {
    let mut object = Box::new(DriverObject {
        magic: DRIVER_OBJECT_MAGIC,
        port: Arc::as_ptr(port),
    });
    let path: Vec<u16> = "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\vioblk"
        .encode_utf16()
        .collect();
    // UNICODE_STRING { USHORT Length; USHORT MaximumLength; PWSTR Buffer; }
    let mut unicode = [0u64; 2];
    unicode[0] = ((path.len() * 2) as u64) | (((path.len() * 2) as u64) << 16);
    unicode[1] = path.as_ptr() as u64;
    let (a1, a2): (*mut c_void, *mut c_void) = if dump {
        (std::ptr::null_mut(), std::ptr::null_mut())
    } else {
        (
            (&mut *object as *mut DriverObject).cast(),
            unicode.as_mut_ptr().cast(),
        )
    };
    LOADING.with(|l| {
        *l.borrow_mut() = Some(Loading {
            port: port.clone(),
            object: a1 as usize,
            dump,
            result: None,
        })
    });
    let prev = crate::cpu::current_irql();
    crate::cpu::set_irql(abi::irql::PASSIVE);
    // SAFETY: `entry` is the driver's DriverEntry; its arguments are a live driver object and
    // registry path (or NULL in dump mode, as Windows passes them).
    let status = unsafe { entry(a1, a2) };
    crate::cpu::set_irql(prev);
    let loading = LOADING.with(|l| l.borrow_mut().take());
    drop(object);
    drop(path);
    if status != abi::STATUS_SUCCESS {
        return Err(LoadError::DriverEntry(status));
    }
    let reg = loading
        .and_then(|l| l.result)
        .ok_or(LoadError::NotRegistered)?;
    if reg.status != abi::STATUS_SUCCESS {
        return Err(LoadError::Rejected(Box::new(reg)));
    }
    Ok(reg)
}

/// StorPortInitialize: finds the loading port and records and validates the registration.
pub(crate) fn initialize(argument1: *mut c_void, hw: *mut c_void) -> u32 {
    let Some(port) = LOADING.with(|l| {
        l.borrow()
            .as_ref()
            .filter(|l| l.object == argument1 as usize || (l.dump && argument1.is_null()))
            .map(|l| l.port.clone())
    }) else {
        // Either no DriverEntry is running on this thread or Argument1 is not its driver object.
        eprintln!(
            "storport-sim: StorPortInitialize outside DriverEntry or with a foreign Argument1"
        );
        return abi::STATUS_INVALID_PARAMETER;
    };
    if !argument1.is_null() {
        // SAFETY: Argument1 equals the driver object this thread's DriverEntry received (checked
        // above), which lives until DriverEntry returns.
        let obj = unsafe { &*argument1.cast::<DriverObject>() };
        if obj.magic != DRIVER_OBJECT_MAGIC || obj.port != Arc::as_ptr(&port) {
            return abi::STATUS_INVALID_PARAMETER;
        }
    }
    let reject = |status: u32, why: String| {
        port.report(Rule::Registration, [status as u64, 0, 0], None, why);
        status
    };
    if hw.is_null() {
        return reject(
            abi::STATUS_INVALID_PARAMETER,
            "StorPortInitialize with NULL HwInitializationData".into(),
        );
    }
    // SAFETY: the miniport passes a HW_INITIALIZATION_DATA; its first ULONG is the size.
    let size = unsafe { hw.cast::<u32>().read_unaligned() };
    if size != abi::HW_INIT_DATA_SIZE {
        return reject(
            abi::STATUS_REVISION_MISMATCH,
            format!("HwInitializationDataSize is {size}, expected 208 (Win8+ layout)"),
        );
    }
    // SAFETY: the size field says the structure is 208 bytes, the size of `HwInitializationData`.
    let data = unsafe { hw.cast::<HwInitializationData>().read_unaligned() };
    let mut status = abi::STATUS_SUCCESS;
    let mut problems = Vec::new();
    let virt = data.FeatureSupport & abi::STOR_FEATURE_VIRTUAL_MINIPORT != 0;
    if data.HwFindAdapter.is_none() {
        problems.push("HwFindAdapter missing");
    }
    if data.HwInitialize.is_none() {
        problems.push("HwInitialize missing");
    }
    if data.HwStartIo.is_none() {
        problems.push("HwStartIo missing");
    }
    if data.HwResetBus.is_none() {
        problems.push("HwResetBus missing");
    }
    if data.HwAdapterControl.is_none() {
        problems.push("HwAdapterControl missing");
    }
    if !virt && data.HwInterrupt.is_none() {
        problems.push("HwInterrupt missing (physical miniport)");
    }
    if data.SrbTypeFlags & abi::SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK == 0 {
        problems.push(
            "SrbTypeFlags lacks SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK (this port sends SRB_EX only)",
        );
    }
    if data.AdapterInterfaceType != abi::PCI_BUS {
        problems.push("AdapterInterfaceType is not PCIBus");
    }
    if data.DeviceExtensionSize == 0 {
        problems.push("DeviceExtensionSize is 0");
    }
    if !problems.is_empty() {
        status = reject(abi::STATUS_INVALID_PARAMETER, problems.join("; "));
    }
    let reg = Registration {
        hw_init: data,
        status,
    };
    LOADING.with(|l| {
        if let Some(l) = l.borrow_mut().as_mut() {
            l.result = Some(reg);
        }
    });
    status
}
