//! The numbers a run produced, as data: [`Report`] (one job), [`QueueStats`] (one request
//! queue), [`DriverRegistration`] (what the driver told Storport). [`crate::report`] formats
//! them (text, JSON, HTML); nothing here prints.

use crate::class::DiskGeometry;
use crate::device::QueueCounters;
use crate::workload::{WorkloadOptions, WorkloadResult};

/// One request queue's counters, from the device model (or the RAM double's workers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue's index.
    pub queue: u16,
    /// Read requests.
    pub reads: u64,
    /// Write requests.
    pub writes: u64,
    /// Flush requests.
    pub flushes: u64,
    /// Discard (unmap) requests.
    pub discards: u64,
    /// Other requests.
    pub other: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Doorbell writes the device saw, when known.
    pub notifications: Option<u64>,
    /// Interrupts the device raised, when known.
    pub interrupts: Option<u64>,
}

impl QueueStats {
    /// The report's view of the device model's counters of queue `queue`.
    pub fn from_counters(queue: u16, c: &QueueCounters) -> Self {
        Self {
            queue,
            reads: c.reads,
            writes: c.writes,
            flushes: c.flushes,
            discards: c.discards + c.write_zeroes,
            other: c.other + c.get_ids,
            errors: c.errors,
            bytes_read: c.bytes_read,
            bytes_written: c.bytes_written,
            notifications: Some(c.notifications),
            interrupts: Some(c.interrupts),
        }
    }

    /// The report's view of every queue's counters, queue 0 first.
    pub fn from_all_counters(counters: &[QueueCounters]) -> Vec<Self> {
        counters
            .iter()
            .enumerate()
            .map(|(i, c)| Self::from_counters(u16::try_from(i).unwrap_or(u16::MAX), c))
            .collect()
    }
}

/// How the disk under the job was set up (what the command line asked the backend for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    /// The backend's name.
    pub target: String,
    /// Request queues.
    pub queues: u16,
    /// `"msix"` or `"intx"`.
    pub interrupts: String,
    /// `"ram"` or the backing file's path.
    pub backing: String,
}

/// Everything one job's report says.
#[derive(Clone, Debug)]
pub struct Report {
    /// How the disk was set up.
    pub setup: Setup,
    /// The job.
    pub job: WorkloadOptions,
    /// What the class model learnt at start.
    pub disk: DiskGeometry,
    /// What the job did.
    pub result: WorkloadResult,
    /// Per-queue counters, when the backend has them.
    pub queues: Option<Vec<QueueStats>>,
    /// Storport rule violations.
    pub violations: Vec<String>,
    /// The faults injected (`--fault`) and how the driver recovered.
    pub faults: Option<crate::faults::FaultReport>,
    /// The system event log entries the driver wrote during the run (StorPortLogError).
    pub event_log: Vec<storport_sim::EventLogEntry>,
    /// ETW events the driver published (`--trace`).
    pub etw_events: usize,
    /// `--deterministic`: the seeded scheduler's account of the run.
    pub deterministic: Option<Deterministic>,
}

impl Report {
    /// Whether the job passed: no failed request, no mismatch, no violation.
    pub fn passed(&self) -> bool {
        // With faults injected, failed requests are expected (and reported); wrong data never,
        // and the disk must serve I/O again afterwards (or, removed, fail it with NO_DEVICE).
        let errors_ok = match &self.faults {
            Some(f) => f.recovered(),
            None => self.result.counts.errors == 0,
        };
        errors_ok
            && self.result.verification.mismatches == 0
            && self.violations.is_empty()
            && self
                .deterministic
                .as_ref()
                .is_none_or(|d| d.failure.is_none())
    }
}

/// What the seeded scheduler of a deterministic run reports (`storport_sim::sched`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deterministic {
    /// The seed (also the job's `--seed`).
    pub seed: u64,
    /// FNV-1a over the transcript: the same seed gives the same digest.
    pub digest: u64,
    /// Switch points passed.
    pub steps: u64,
    /// Steps at which another thread was picked.
    pub switches: u64,
    /// Simulated threads.
    pub threads: usize,
    /// Virtual time the run took.
    pub virtual_time: std::time::Duration,
    /// Why the run failed beyond the job's own checks: a deadlock or livelock the scheduler
    /// saw, or failed I/Os that none of the injected faults can explain.
    pub failure: Option<String>,
}

/// What the driver handed Storport in `StorPortInitialize` (and, when the adapter started, in
/// `PORT_CONFIGURATION_INFORMATION`), for `vioblk-sim info`. The integrator fills it from the
/// port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverRegistration {
    /// The NTSTATUS `DriverEntry` returned.
    pub driver_entry_status: u32,
    /// `HW_INITIALIZATION_DATA.HwInitializationDataSize`.
    pub hw_initialization_data_size: u32,
    /// Each `Hw*` callback by name, and whether the driver supplied it.
    pub callbacks: Vec<(String, bool)>,
    /// `DeviceExtensionSize`.
    pub device_extension_size: u32,
    /// `SpecificLuExtensionSize`.
    pub specific_lu_extension_size: u32,
    /// `SrbExtensionSize`.
    pub srb_extension_size: u32,
    /// `SrbTypeFlags` (`SRB_TYPE_FLAG_*`).
    pub srb_type_flags: u32,
    /// `FeatureSupport` (`STOR_FEATURE_*`).
    pub feature_support: u32,
    /// `AdapterInterfaceType` (5 is PCIBus).
    pub adapter_interface_type: u32,
    /// `MapBuffers` (`STOR_MAP_*`).
    pub map_buffers: u8,
    /// `NumberOfAccessRanges`.
    pub number_of_access_ranges: u32,
    /// `NeedPhysicalAddresses`, `TaggedQueuing`, `AutoRequestSense`, `MultipleRequestPerLu`.
    pub flags: Vec<(String, bool)>,
    /// Anything else worth showing (port configuration after HwFindAdapter, perf options), as
    /// name and value, in order.
    pub extra: Vec<(String, String)>,
}
