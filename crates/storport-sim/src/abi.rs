//! The sim's own reading of the Storport ABI (x64), transcribed from `reference/layouts.md`.
//!
//! The user-mode Storport deliberately does not reuse `storport_sys`: it is an independent reading
//! of the same tables, so a wrong offset in the driver's declarations shows up as a disagreement at
//! run time instead of being silently shared. Every structure carries `const` offset checks.

#![allow(
    dead_code,
    reason = "the ABI tables are transcribed whole; not every constant is used"
)]
#![allow(
    missing_docs,
    reason = "constants keep their C names; layouts.md documents them"
)]

use core::ffi::c_void;
use core::mem::{offset_of, size_of};

/// `PHW_FIND_ADAPTER`.
pub type FindAdapterFn = unsafe extern "C" fn(
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut u8,
    *mut PortConfigurationInformation,
    *mut u8,
) -> u32;
/// `PHW_INITIALIZE`, `PHW_INTERRUPT`, `PHW_TIMER`-like shapes.
pub type DevExtBoolFn = unsafe extern "C" fn(*mut c_void) -> u8;
/// `PHW_TIMER`, `PHW_PASSIVE_INITIALIZE_ROUTINE` returns BOOLEAN: see [`DevExtBoolFn`].
pub type DevExtVoidFn = unsafe extern "C" fn(*mut c_void);
/// `PHW_STARTIO`, `PHW_BUILDIO`.
pub type SrbFn = unsafe extern "C" fn(*mut c_void, *mut c_void) -> u8;
/// `PHW_RESET_BUS`.
pub type ResetBusFn = unsafe extern "C" fn(*mut c_void, u32) -> u8;
/// `PHW_ADAPTER_CONTROL`.
pub type AdapterControlFn = unsafe extern "C" fn(*mut c_void, u32, *mut c_void) -> u32;
/// `PHW_TRACING_ENABLED`: the adapter and whether tracing is now on.
pub type TracingFn = unsafe extern "C" fn(*mut c_void, u8);
/// `PHW_UNIT_CONTROL`.
pub type UnitControlFn = unsafe extern "C" fn(*mut c_void, u32, *mut c_void) -> u32;
/// `PHW_MESSAGE_SIGNALED_INTERRUPT_ROUTINE`.
pub type MsiFn = unsafe extern "C" fn(*mut c_void, u32) -> u8;
/// `PHW_DPC_ROUTINE`.
pub type DpcFn = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void, *mut c_void);
/// `PSTOR_SYNCHRONIZED_ACCESS`.
pub type SyncFn = unsafe extern "C" fn(*mut c_void, *mut c_void) -> u8;
/// `DRIVER_INITIALIZE` as the test harness calls it.
pub type DriverEntryFn = unsafe extern "C" fn(*mut c_void, *mut c_void) -> u32;

/// `HW_INITIALIZATION_DATA` (Win8+), 208 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_snake_case, missing_docs)]
pub struct HwInitializationData {
    pub HwInitializationDataSize: u32,
    pub AdapterInterfaceType: u32,
    pub HwInitialize: Option<DevExtBoolFn>,
    pub HwStartIo: Option<SrbFn>,
    pub HwInterrupt: Option<DevExtBoolFn>,
    pub HwFindAdapter: Option<FindAdapterFn>,
    pub HwResetBus: Option<ResetBusFn>,
    pub HwDmaStarted: *mut c_void,
    pub HwAdapterState: *mut c_void,
    pub DeviceExtensionSize: u32,
    pub SpecificLuExtensionSize: u32,
    pub SrbExtensionSize: u32,
    pub NumberOfAccessRanges: u32,
    pub Reserved: *mut c_void,
    pub MapBuffers: u8,
    pub NeedPhysicalAddresses: u8,
    pub TaggedQueuing: u8,
    pub AutoRequestSense: u8,
    pub MultipleRequestPerLu: u8,
    pub ReceiveEvent: u8,
    pub VendorIdLength: u16,
    pub VendorId: *mut c_void,
    pub PortVersionFlags: u16,
    pub DeviceIdLength: u16,
    pub DeviceId: *mut c_void,
    pub HwAdapterControl: Option<AdapterControlFn>,
    pub HwBuildIo: Option<SrbFn>,
    pub HwFreeAdapterResources: *mut c_void,
    pub HwProcessServiceRequest: *mut c_void,
    pub HwCompleteServiceIrp: *mut c_void,
    pub HwInitializeTracing: *mut c_void,
    pub HwCleanupTracing: *mut c_void,
    pub HwTracingEnabled: Option<TracingFn>,
    pub FeatureSupport: u32,
    pub SrbTypeFlags: u32,
    pub AddressTypeFlags: u32,
    pub Reserved1: u32,
    pub HwUnitControl: Option<UnitControlFn>,
}
const _: () = {
    assert!(size_of::<HwInitializationData>() == 208);
    assert!(offset_of!(HwInitializationData, HwFindAdapter) == 0x20);
    assert!(offset_of!(HwInitializationData, DeviceExtensionSize) == 0x40);
    assert!(offset_of!(HwInitializationData, MapBuffers) == 0x58);
    assert!(offset_of!(HwInitializationData, VendorId) == 0x60);
    assert!(offset_of!(HwInitializationData, DeviceIdLength) == 0x6A);
    assert!(offset_of!(HwInitializationData, HwAdapterControl) == 0x78);
    assert!(offset_of!(HwInitializationData, HwBuildIo) == 0x80);
    assert!(offset_of!(HwInitializationData, FeatureSupport) == 0xB8);
    assert!(offset_of!(HwInitializationData, SrbTypeFlags) == 0xBC);
    assert!(offset_of!(HwInitializationData, HwUnitControl) == 0xC8);
};
// SAFETY: a plain copy of what the miniport registered; the pointers are code or static data
// addresses of the loaded driver, never dereferenced through this copy by safe code.
unsafe impl Send for HwInitializationData {}
// SAFETY: as for Send: read-only after registration.
unsafe impl Sync for HwInitializationData {}

/// `ACCESS_RANGE`, 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_snake_case, missing_docs)]
pub struct AccessRange {
    pub RangeStart: i64,
    pub RangeLength: u32,
    pub RangeInMemory: u8,
}
const _: () = assert!(size_of::<AccessRange>() == 16);

/// `MEMORY_REGION`, 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_snake_case, missing_docs)]
pub struct MemoryRegion {
    pub VirtualBase: *mut u8,
    pub PhysicalBase: i64,
    pub Length: u32,
}
const _: () = assert!(size_of::<MemoryRegion>() == 24);

/// `PORT_CONFIGURATION_INFORMATION` (Win8+), 224 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_snake_case, missing_docs)]
pub struct PortConfigurationInformation {
    pub Length: u32,
    pub SystemIoBusNumber: u32,
    pub AdapterInterfaceType: u32,
    pub BusInterruptLevel: u32,
    pub BusInterruptVector: u32,
    pub InterruptMode: u32,
    pub MaximumTransferLength: u32,
    pub NumberOfPhysicalBreaks: u32,
    pub DmaChannel: u32,
    pub DmaPort: u32,
    pub DmaWidth: u32,
    pub DmaSpeed: u32,
    pub AlignmentMask: u32,
    pub NumberOfAccessRanges: u32,
    pub AccessRanges: *mut AccessRange,
    pub MiniportDumpData: *mut c_void,
    pub NumberOfBuses: u8,
    pub InitiatorBusId: [u8; 8],
    pub ScatterGather: u8,
    pub Master: u8,
    pub CachesData: u8,
    pub AdapterScansDown: u8,
    pub AtdiskPrimaryClaimed: u8,
    pub AtdiskSecondaryClaimed: u8,
    pub Dma32BitAddresses: u8,
    pub DemandMode: u8,
    pub MapBuffers: u8,
    pub NeedPhysicalAddresses: u8,
    pub TaggedQueuing: u8,
    pub AutoRequestSense: u8,
    pub MultipleRequestPerLu: u8,
    pub ReceiveEvent: u8,
    pub RealModeInitialized: u8,
    pub BufferAccessScsiPortControlled: u8,
    pub MaximumNumberOfTargets: u8,
    pub SrbType: u8,
    pub AddressType: u8,
    pub SlotNumber: u32,
    pub BusInterruptLevel2: u32,
    pub BusInterruptVector2: u32,
    pub InterruptMode2: u32,
    pub DmaChannel2: u32,
    pub DmaPort2: u32,
    pub DmaWidth2: u32,
    pub DmaSpeed2: u32,
    pub DeviceExtensionSize: u32,
    pub SpecificLuExtensionSize: u32,
    pub SrbExtensionSize: u32,
    pub Dma64BitAddresses: u8,
    pub ResetTargetSupported: u8,
    pub MaximumNumberOfLogicalUnits: u8,
    pub WmiDataProvider: u8,
    pub SynchronizationModel: u32,
    pub HwMSInterruptRoutine: Option<MsiFn>,
    pub InterruptSynchronizationMode: u32,
    pub DumpRegion: MemoryRegion,
    pub RequestedDumpBufferSize: u32,
    pub VirtualDevice: u8,
    pub DumpMode: u8,
    pub DmaAddressWidth: u8,
    pub ExtendedFlags1: u32,
    pub MaxNumberOfIO: u32,
    pub MaxIOsPerLun: u32,
    pub InitialLunQueueDepth: u32,
    pub BusResetHoldTime: u32,
    pub FeatureSupport: u32,
}
const _: () = {
    assert!(size_of::<PortConfigurationInformation>() == 224);
    assert!(offset_of!(PortConfigurationInformation, AccessRanges) == 0x38);
    assert!(offset_of!(PortConfigurationInformation, NumberOfBuses) == 0x48);
    assert!(offset_of!(PortConfigurationInformation, ScatterGather) == 0x51);
    assert!(offset_of!(PortConfigurationInformation, AddressType) == 0x63);
    assert!(offset_of!(PortConfigurationInformation, SlotNumber) == 0x64);
    assert!(offset_of!(PortConfigurationInformation, DeviceExtensionSize) == 0x84);
    assert!(offset_of!(PortConfigurationInformation, SrbExtensionSize) == 0x8C);
    assert!(offset_of!(PortConfigurationInformation, Dma64BitAddresses) == 0x90);
    assert!(offset_of!(PortConfigurationInformation, SynchronizationModel) == 0x94);
    assert!(offset_of!(PortConfigurationInformation, HwMSInterruptRoutine) == 0x98);
    assert!(offset_of!(PortConfigurationInformation, InterruptSynchronizationMode) == 0xA0);
    assert!(offset_of!(PortConfigurationInformation, DumpRegion) == 0xA8);
    assert!(offset_of!(PortConfigurationInformation, RequestedDumpBufferSize) == 0xC0);
    assert!(offset_of!(PortConfigurationInformation, DumpMode) == 0xC5);
    assert!(offset_of!(PortConfigurationInformation, ExtendedFlags1) == 0xC8);
    assert!(offset_of!(PortConfigurationInformation, FeatureSupport) == 0xDC);
};

/// `STORAGE_REQUEST_BLOCK` header (128 bytes; `SrbExDataOffset` continues past the end).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_snake_case, missing_docs)]
pub struct StorageRequestBlock {
    pub Length: u16,
    pub Function: u8,
    pub SrbStatus: u8,
    pub ReservedUlong1: u32,
    pub Signature: u32,
    pub Version: u32,
    pub SrbLength: u32,
    pub SrbFunction: u32,
    pub SrbFlags: u32,
    pub ReservedUlong2: u32,
    pub RequestTag: u32,
    pub RequestPriority: u16,
    pub RequestAttribute: u16,
    pub TimeOutValue: u32,
    pub SystemStatus: u32,
    pub ZeroGuard1: u32,
    pub AddressOffset: u32,
    pub NumSrbExData: u32,
    pub DataTransferLength: u32,
    pub DataBuffer: u64,
    pub ZeroGuard2: u64,
    pub OriginalRequest: u64,
    pub ClassContext: u64,
    pub PortContext: u64,
    pub MiniportContext: u64,
    pub NextSrb: u64,
    pub SrbExDataOffset: [u32; 2],
}
const _: () = {
    assert!(size_of::<StorageRequestBlock>() == 128);
    assert!(offset_of!(StorageRequestBlock, TimeOutValue) == 0x28);
    assert!(offset_of!(StorageRequestBlock, AddressOffset) == 0x34);
    assert!(offset_of!(StorageRequestBlock, DataTransferLength) == 0x3C);
    assert!(offset_of!(StorageRequestBlock, DataBuffer) == 0x40);
    assert!(offset_of!(StorageRequestBlock, MiniportContext) == 0x68);
    assert!(offset_of!(StorageRequestBlock, SrbExDataOffset) == 0x78);
};
/// Offsets of the SRB fields the port reads back after the miniport has run.
pub mod srb_off {
    /// `SrbStatus`.
    pub const SRB_STATUS: usize = 3;
    /// `Function`.
    pub const FUNCTION: usize = 2;
    /// `Signature`.
    pub const SIGNATURE: usize = 8;
    /// `DataTransferLength`.
    pub const DATA_TRANSFER_LENGTH: usize = 0x3C;
}

/// `STOR_ADDR_BTL8`, 16 bytes, align 8.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_snake_case, missing_docs)]
pub struct StorAddrBtl8 {
    pub Type: u16,
    pub Port: u16,
    pub AddressLength: u32,
    pub Path: u8,
    pub Target: u8,
    pub Lun: u8,
    pub Reserved: u8,
}
const _: () = assert!(size_of::<StorAddrBtl8>() == 16);

/// `SRBEX_DATA_SCSI_CDB16` (40 bytes) and, with a 32-byte CDB, `SRBEX_DATA_SCSI_CDB32` (56).
pub mod cdb_off {
    /// `ScsiStatus`.
    pub const SCSI_STATUS: usize = 8;
    /// `SenseInfoBufferLength`.
    pub const SENSE_LEN: usize = 9;
    /// `CdbLength`.
    pub const CDB_LENGTH: usize = 0xA;
    /// `SenseInfoBuffer`.
    pub const SENSE_BUFFER: usize = 0x10;
    /// `Cdb`.
    pub const CDB: usize = 0x18;
}

/// `STOR_SCATTER_GATHER_ELEMENT`, 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_snake_case, missing_docs)]
pub struct ScatterGatherElement {
    pub PhysicalAddress: i64,
    pub Length: u32,
    pub Reserved: u64,
}
const _: () = assert!(size_of::<ScatterGatherElement>() == 24);

/// `STOR_LOCK_HANDLE`, 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_snake_case, missing_docs)]
pub struct StorLockHandle {
    pub Lock: u32,
    pub Next: u64,
    pub LockPtr: u64,
    pub OldIrql: u8,
}
const _: () = {
    assert!(size_of::<StorLockHandle>() == 32);
    assert!(offset_of!(StorLockHandle, OldIrql) == 0x18);
};

/// `STOR_DPC`, 72 bytes: the sim keeps its own DPC object's address in the first word of the
/// DPC buffer and a tag in the second.
pub const STOR_DPC_SIZE: usize = 72;

/// `PERF_CONFIGURATION_DATA`, 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_snake_case, missing_docs)]
pub struct PerfConfigurationData {
    pub Version: u32,
    pub Size: u32,
    pub Flags: u32,
    pub ConcurrentChannels: u32,
    pub FirstRedirectionMessageNumber: u32,
    pub LastRedirectionMessageNumber: u32,
    pub DeviceNode: u32,
    pub Reserved: u32,
    pub MessageTargets: u64,
}
const _: () = assert!(size_of::<PerfConfigurationData>() == 40);

/// `STARTIO_PERFORMANCE_PARAMETERS`, 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_snake_case, missing_docs)]
pub struct StartIoPerformanceParameters {
    pub Version: u32,
    pub Size: u32,
    pub MessageNumber: u32,
    pub ChannelNumber: u32,
}

/// `MESSAGE_INTERRUPT_INFORMATION`, 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_snake_case, missing_docs)]
pub struct MessageInterruptInformation {
    pub MessageId: u32,
    pub MessageData: u32,
    pub MessageAddress: i64,
    pub InterruptVector: u32,
    pub InterruptLevel: u32,
    pub InterruptMode: u32,
}
const _: () = assert!(size_of::<MessageInterruptInformation>() == 32);

// Constants (layouts.md, "#define constants" and "Enums").
pub const SP_RETURN_NOT_FOUND: u32 = 0;
pub const SP_RETURN_FOUND: u32 = 1;
pub const SP_RETURN_ERROR: u32 = 2;
pub const SP_RETURN_BAD_CONFIG: u32 = 3;
pub const SP_UNINITIALIZED_VALUE: u32 = !0;
pub const PCI_BUS: u32 = 5;
pub const PCI_CONFIGURATION: u32 = 4;
pub const HW_INIT_DATA_SIZE: u32 = 208;
pub const CONFIG_INFO_LENGTH: u32 = 224;
pub const SRB_TYPE_FLAG_SCSI_REQUEST_BLOCK: u32 = 1;
pub const SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK: u32 = 2;
pub const SRB_TYPE_STORAGE_REQUEST_BLOCK: u8 = 1;
pub const STOR_ADDRESS_TYPE_BTL8: u16 = 1;
pub const SRB_SIGNATURE: u32 = 0x5352_4258;
pub const SRB_FUNCTION_STORAGE_REQUEST_BLOCK: u8 = 0x28;
pub const SRBEX_DATA_SCSI_CDB16: u32 = 0x40;
pub const SRBEX_DATA_SCSI_CDB32: u32 = 0x41;
pub const STOR_FEATURE_VIRTUAL_MINIPORT: u32 = 1;

pub const SRB_STATUS_PENDING: u8 = 0;
pub const SRB_STATUS_SUCCESS: u8 = 1;
pub const SRB_STATUS_BUSY: u8 = 5;
pub const SRB_STATUS_INVALID_REQUEST: u8 = 6;
pub const SRB_STATUS_TIMEOUT: u8 = 9;
pub const SRB_STATUS_BUS_RESET: u8 = 0xE;
pub const SRB_STATUS_AUTOSENSE_VALID: u8 = 0x80;
pub const SRB_STATUS_QUEUE_FROZEN: u8 = 0x40;

pub const STOR_STATUS_SUCCESS: u32 = 0;
pub const STOR_STATUS_UNSUCCESSFUL: u32 = 0xC100_0001;
pub const STOR_STATUS_NOT_IMPLEMENTED: u32 = 0xC100_0002;
pub const STOR_STATUS_INSUFFICIENT_RESOURCES: u32 = 0xC100_0003;
pub const STOR_STATUS_INVALID_PARAMETER: u32 = 0xC100_0006;
pub const STOR_STATUS_INVALID_DEVICE_REQUEST: u32 = 0xC100_0007;
pub const STOR_STATUS_INVALID_IRQL: u32 = 0xC100_0008;
pub const STOR_STATUS_INVALID_DEVICE_STATE: u32 = 0xC100_0009;

pub const STATUS_SUCCESS: u32 = 0;
pub const STATUS_INVALID_PARAMETER: u32 = 0xC000_000D;
pub const STATUS_REVISION_MISMATCH: u32 = 0xC000_0059;

// SCSI_NOTIFICATION_TYPE.
pub const REQUEST_COMPLETE: u32 = 0;
pub const NEXT_REQUEST: u32 = 1;
pub const NEXT_LU_REQUEST: u32 = 2;
pub const RESET_DETECTED: u32 = 3;
pub const REQUEST_TIMER_CALL: u32 = 6;
pub const BUS_CHANGE_DETECTED: u32 = 7;
pub const ENABLE_PASSIVE_INITIALIZATION: u32 = 0x1000;
pub const INITIALIZE_DPC: u32 = 0x1001;
pub const ISSUE_DPC: u32 = 0x1002;
pub const ACQUIRE_SPIN_LOCK: u32 = 0x1003;
pub const RELEASE_SPIN_LOCK: u32 = 0x1004;
pub const STATE_CHANGE_DETECTED_CALL: u32 = 0x1005;

// STORPORT_FUNCTION_CODE.
pub const EXT_ALLOCATE_POOL: u32 = 0;
pub const EXT_FREE_POOL: u32 = 1;
pub const EXT_ACQUIRE_MSI_SPIN_LOCK: u32 = 11;
pub const EXT_RELEASE_MSI_SPIN_LOCK: u32 = 12;
pub const EXT_GET_MESSAGE_INTERRUPT_INFORMATION: u32 = 13;
pub const EXT_INITIALIZE_PERFORMANCE_OPTIMIZATIONS: u32 = 14;
pub const EXT_GET_START_IO_PERFORMANCE_PARAMETERS: u32 = 15;
pub const EXT_ACQUIRE_SPIN_LOCK: u32 = 93;
/// ExtFunctionMiniportEtwEvent2 (StorPortEtwEvent2).
pub const EXT_MINIPORT_ETW_EVENT2: u32 = 58;
pub const EXT_MARK_DUMP_MEMORY: u32 = 45;
pub const STOR_FEATURE_DUMP_POINTERS: u32 = 8;
pub const SRB_FUNCTION_DUMP_POINTERS: u32 = 0x26;
pub const DUMP_MINIPORT_VERSION_1: u16 = 0x0100;
pub const MINIPORT_DUMP_POINTERS_SIZE: usize = 0x70;
/// MINIPORT_REG_DWORD (StorPortRegistryRead's `Type`).
pub const MINIPORT_REG_DWORD: u32 = 4;

// STOR_SPINLOCK.
pub const DPC_LOCK: u32 = 1;
pub const START_IO_LOCK: u32 = 2;
pub const INTERRUPT_LOCK: u32 = 3;

// Synchronization.
pub const STOR_SYNCHRONIZE_HALF_DUPLEX: u32 = 0;
pub const STOR_SYNCHRONIZE_FULL_DUPLEX: u32 = 1;
pub const INTERRUPT_SYNCHRONIZE_NONE: u32 = 0;
pub const INTERRUPT_SYNCHRONIZE_ALL: u32 = 1;
pub const INTERRUPT_SYNCHRONIZE_PER_MESSAGE: u32 = 2;

// Perf options.
pub const STOR_PERF_DPC_REDIRECTION: u32 = 0x1;
pub const STOR_PERF_CONCURRENT_CHANNELS: u32 = 0x2;
pub const STOR_PERF_INTERRUPT_MESSAGE_RANGES: u32 = 0x4;
pub const STOR_PERF_ADV_CONFIG_LOCALITY: u32 = 0x8;
pub const STOR_PERF_OPTIMIZE_FOR_COMPLETION_DURING_STARTIO: u32 = 0x10;
pub const STOR_PERF_DPC_REDIRECTION_CURRENT_CPU: u32 = 0x20;
pub const STOR_PERF_NO_SGL: u32 = 0x40;
/// The flags this Storport supports (answer to a Query).
pub const SUPPORTED_PERF_FLAGS: u32 = STOR_PERF_DPC_REDIRECTION
    | STOR_PERF_CONCURRENT_CHANNELS
    | STOR_PERF_INTERRUPT_MESSAGE_RANGES
    | STOR_PERF_DPC_REDIRECTION_CURRENT_CPU
    | STOR_PERF_OPTIMIZE_FOR_COMPLETION_DURING_STARTIO;

// SCSI_ADAPTER_CONTROL_TYPE.
pub const SCSI_QUERY_SUPPORTED_CONTROL_TYPES: u32 = 0;
pub const SCSI_STOP_ADAPTER: u32 = 1;
pub const SCSI_RESTART_ADAPTER: u32 = 2;
pub const SCSI_SET_RUNNING_CONFIG: u32 = 4;
pub const SCSI_ADAPTER_CONTROL_MAX: u32 = 26;
pub const SCSI_ADAPTER_SURPRISE_REMOVAL: u32 = 16;
// SCSI_UNIT_CONTROL_TYPE.
pub const SCSI_UNIT_SURPRISE_REMOVAL: u32 = 10;
pub const SCSI_UNIT_START: u32 = 2;
pub const SCSI_UNIT_POWER: u32 = 3;
pub const SCSI_UNIT_REMOVE: u32 = 9;

/// IRQLs of the simulated machine.
pub mod irql {
    /// PASSIVE_LEVEL.
    pub const PASSIVE: u8 = 0;
    /// DISPATCH_LEVEL.
    pub const DISPATCH: u8 = 2;
    /// The device IRQL of every message (and the synchronize IRQL).
    pub const DIRQL: u8 = 8;
    /// HIGH_LEVEL.
    pub const HIGH: u8 = 15;
}
