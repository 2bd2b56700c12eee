//! Storport's C declarations for x64: scalar aliases, enumerations, `#define` constants,
//! structures, callback typedefs and the routines storport.sys exports.
//!
//! This crate is the only place in the workspace where Storport's C ABI is spelt out (the
//! `wdk-sys` of this project, as windows-drivers-rs has `wdk-sys` under `wdk`). Every item keeps
//! its exact C name, so code here reads like `storport.h`/`srb.h`; the safe layer
//! (`crates/storport`, which keeps these declarations private) maps them onto Rust types, and
//! the user-mode and UEFI Storports implement them. With the `wdk` feature, on a Windows host with
//! the WDK, every structure is held to wdk-sys's bindgen output (`wdk_layout_check`).
//!
//! # Where the layouts come from
//!
//! Every structure follows `reference/layouts.md` (the oracle: transcribed from Microsoft's DDI
//! pages, laid out for MSVC x64 and checked against WDK 14393..22621 `storport.h`/`srb.h` and PDB
//! type dumps). Each structure is followed by compile-time assertions of its size, alignment and
//! every field offset against those tables. `SRBEX_DATA_PNP` and `SRBEX_DATA_POWER` are not in
//! the tables: their fields come from the DDI pages (`ns-srb-_srbex_data_pnp`,
//! `ns-srb-_srbex_data_power`) and their layout is computed here (4-byte fields, struct-level
//! `SRB_ALIGN`, so 24 bytes with align 8 each).
//!
//! The docs' Syntax blocks disagree with the header in places; the traps that matter here are:
//!
//! - **Trap 1** (`PORT_CONFIGURATION_INFORMATION`): the docs flatten two `#if NTDDI >= WIN8`
//!   branches. Only the Win8+ branch is declared (224 bytes); `MiniportDumpData` and
//!   `SrbType`/`AddressType` are the real fields, not `Reserved`/`ReservedUchars`.
//! - **Trap 2** (`STORAGE_REQUEST_BLOCK`): the docs show both a `SystemStatus` union and a second
//!   `SystemStatus`. The real structure has one 4-byte slot at 0x2C and is 128 bytes.
//! - **Trap 3**: `STOR_ADDRESS_ALIGN`/`SRB_ALIGN` (`__declspec(align(8))`) is missing from the
//!   docs, so `STOR_ADDRESS`, `STOR_ADDR_BTL8` and the `SRBEX_DATA*` family are
//!   `#[repr(C, align(8))]` (`STOR_ADDRESS` is 16 bytes, not 12).
//!
//! C enumerations are `u32` type aliases plus `pub const` enumerators (some take 0xFFFFFFFF, and a
//! value Storport hands us must never be undefined behaviour). `ANYSIZE_ARRAY` trailing arrays are
//! `[T; 1]` (they count in `sizeof`), flexible `[]` arrays are `[T; 0]`. Every `PHW_*` typedef is an
//! `Option<unsafe extern "C" fn(..)>`, one 8-byte code pointer; on Windows targets `extern "C"` is
//! the Microsoft x64 convention (`NTAPI`/`__cdecl` are the same there).
//!
//! # Functions
//!
//! The `extern` block declares the exports of storport.sys (`reference/storport.md` section 2). On
//! Windows they are imported with `raw-dylib` from `storport.sys`, so no import library or WDK is
//! needed; on Linux `crates/storport-sim` defines the same symbols and on UEFI a shim does. Many
//! well-known `StorPort*` routines are *not* exports but `FORCEINLINE` wrappers in `storport.h`:
//! `StorPortAcquireSpinLock`, `StorPortAcquireSpinLockEx`, `StorPortReleaseSpinLock`,
//! `StorPortInitializeDpc`, `StorPortIssueDpc`, `StorPortEnablePassiveInitialization`,
//! `StorPortInitializePerfOpts`, `StorPortGetStartIoPerfParams`, `StorPortAcquireMSISpinLock`,
//! `StorPortAllocatePool` and friends. `crates/storport` builds them on the variadic
//! exports [`StorPortNotification`] and [`StorPortExtendedFunction`], with the function codes and
//! argument orders of `layouts.md`. The `StorPortReadRegister*`/`StorPortWriteRegister*`
//! accessors are macros over volatile accesses on AMD64; only host builds declare them, as
//! functions the simulator defines.
#![no_std]
#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    missing_docs,
    reason = "C declarations keep their exact C names; their documentation is the WDK's"
)]

use core::ffi::c_void;
use core::mem::{align_of, offset_of, size_of};

// On a Windows host with the WDK: the hand-written declarations held to wdk-sys's.
#[cfg(feature = "wdk")]
mod wdk_layout_check;

/// Asserts at compile time a structure's size, alignment and field offsets.
macro_rules! assert_layout {
    ($t:ty, size = $size:expr, align = $align:expr $(, $($field:ident).+ = $off:expr)* $(,)?) => {
        const _: () = {
            assert!(size_of::<$t>() == $size);
            assert!(align_of::<$t>() == $align);
            $( assert!(offset_of!($t, $($field).+) == $off); )*
        };
    };
}

/// Implements `Default` and a `const fn zeroed()` for a plain-data structure.
macro_rules! impl_zeroed {
    ($($t:ty),+ $(,)?) => {$(
        impl $t {
            /// Returns the all-zero value, which is how C code initialises this structure.
            pub const fn zeroed() -> Self {
                // SAFETY: every field is an integer, an integer array, a raw pointer, an
                // `Option` of a function pointer or a structure of those, all of which are valid
                // when all bits are zero (null pointers, `None`).
                unsafe { core::mem::zeroed() }
            }
        }

        impl Default for $t {
            fn default() -> Self {
                Self::zeroed()
            }
        }
    )+};
}

// ---------------------------------------------------------------------------------------------
// Scalar aliases
// ---------------------------------------------------------------------------------------------

pub type ULONG = u32;
pub type USHORT = u16;
pub type UCHAR = u8;
pub type BOOLEAN = u8;
pub type CHAR = i8;
pub type CCHAR = i8;
pub type LONG = i32;
pub type SHORT = i16;
pub type ULONG64 = u64;
pub type ULONGLONG = u64;
pub type ULONG_PTR = usize;
pub type KAFFINITY = usize;
pub type PVOID = *mut c_void;
pub type PCHAR = *mut i8;
pub type PCCHAR = *const i8;
pub type PUCHAR = *mut u8;
pub type KIRQL = u8;
/// A `LARGE_INTEGER` (`QuadPart`): 8 bytes, align 8 on x64.
pub type STOR_PHYSICAL_ADDRESS = i64;

pub const TRUE: BOOLEAN = 1;
pub const FALSE: BOOLEAN = 0;

// ---------------------------------------------------------------------------------------------
// Enumerations (4 bytes each; values from WDK 22621)
// ---------------------------------------------------------------------------------------------

pub type INTERFACE_TYPE = u32;
pub const InterfaceTypeUndefined: INTERFACE_TYPE = 0xFFFF_FFFF;
pub const Internal: INTERFACE_TYPE = 0;
pub const Isa: INTERFACE_TYPE = 1;
pub const Eisa: INTERFACE_TYPE = 2;
pub const MicroChannel: INTERFACE_TYPE = 3;
pub const TurboChannel: INTERFACE_TYPE = 4;
pub const PCIBus: INTERFACE_TYPE = 5;

pub type KINTERRUPT_MODE = u32;
pub const LevelSensitive: KINTERRUPT_MODE = 0;
pub const Latched: KINTERRUPT_MODE = 1;

pub type DMA_WIDTH = u32;
pub const Width8Bits: DMA_WIDTH = 0;
pub const Width16Bits: DMA_WIDTH = 1;
pub const Width32Bits: DMA_WIDTH = 2;
pub const Width64Bits: DMA_WIDTH = 3;
pub const WidthNoWrap: DMA_WIDTH = 4;
pub const MaximumDmaWidth: DMA_WIDTH = 5;

pub type DMA_SPEED = u32;
pub const Compatible: DMA_SPEED = 0;
pub const TypeA: DMA_SPEED = 1;
pub const TypeB: DMA_SPEED = 2;
pub const TypeC: DMA_SPEED = 3;
pub const TypeF: DMA_SPEED = 4;
pub const MaximumDmaSpeed: DMA_SPEED = 5;

pub type BUS_DATA_TYPE = u32;
pub const ConfigurationSpaceUndefined: BUS_DATA_TYPE = 0xFFFF_FFFF;
pub const Cmos: BUS_DATA_TYPE = 0;
pub const EisaConfiguration: BUS_DATA_TYPE = 1;
pub const Pos: BUS_DATA_TYPE = 2;
pub const CbusConfiguration: BUS_DATA_TYPE = 3;
pub const PCIConfiguration: BUS_DATA_TYPE = 4;

pub type SCSI_NOTIFICATION_TYPE = u32;
pub const RequestComplete: SCSI_NOTIFICATION_TYPE = 0;
pub const NextRequest: SCSI_NOTIFICATION_TYPE = 1;
pub const NextLuRequest: SCSI_NOTIFICATION_TYPE = 2;
pub const ResetDetected: SCSI_NOTIFICATION_TYPE = 3;
pub const RequestTimerCall: SCSI_NOTIFICATION_TYPE = 6;
pub const BusChangeDetected: SCSI_NOTIFICATION_TYPE = 7;
pub const WMIEvent: SCSI_NOTIFICATION_TYPE = 8;
pub const WMIReregister: SCSI_NOTIFICATION_TYPE = 9;
pub const LinkUp: SCSI_NOTIFICATION_TYPE = 10;
pub const LinkDown: SCSI_NOTIFICATION_TYPE = 11;
pub const QueryTickCount: SCSI_NOTIFICATION_TYPE = 12;
pub const BufferOverrunDetected: SCSI_NOTIFICATION_TYPE = 13;
pub const TraceNotification: SCSI_NOTIFICATION_TYPE = 14;
pub const GetExtendedFunctionTable: SCSI_NOTIFICATION_TYPE = 15;
pub const EnablePassiveInitialization: SCSI_NOTIFICATION_TYPE = 0x1000;
pub const InitializeDpc: SCSI_NOTIFICATION_TYPE = 0x1001;
pub const IssueDpc: SCSI_NOTIFICATION_TYPE = 0x1002;
pub const AcquireSpinLock: SCSI_NOTIFICATION_TYPE = 0x1003;
pub const ReleaseSpinLock: SCSI_NOTIFICATION_TYPE = 0x1004;
pub const StateChangeDetectedCall: SCSI_NOTIFICATION_TYPE = 0x1005;
pub const IoTargetRequestServiceTime: SCSI_NOTIFICATION_TYPE = 0x1006;
pub const AsyncNotificationDetected: SCSI_NOTIFICATION_TYPE = 0x1007;
pub const RequestDirectComplete: SCSI_NOTIFICATION_TYPE = 0x1008;
pub const InitializeDpcWithContext: SCSI_NOTIFICATION_TYPE = 0x1009;
pub const InitializeThreadedDpc: SCSI_NOTIFICATION_TYPE = 0x100A;
pub const SetTargetProcessorDpc: SCSI_NOTIFICATION_TYPE = 0x100B;
pub const MarkDeviceFailed: SCSI_NOTIFICATION_TYPE = 0x100C;
pub const MarkDeviceFailedEx: SCSI_NOTIFICATION_TYPE = 0x100D;
pub const TerminateSystemThread: SCSI_NOTIFICATION_TYPE = 0x100E;

pub type STORPORT_FUNCTION_CODE = u32;
pub const ExtFunctionAllocatePool: STORPORT_FUNCTION_CODE = 0;
pub const ExtFunctionFreePool: STORPORT_FUNCTION_CODE = 1;
pub const ExtFunctionAllocateMdl: STORPORT_FUNCTION_CODE = 2;
pub const ExtFunctionFreeMdl: STORPORT_FUNCTION_CODE = 3;
pub const ExtFunctionBuildMdlForNonPagedPool: STORPORT_FUNCTION_CODE = 4;
pub const ExtFunctionGetSystemAddress: STORPORT_FUNCTION_CODE = 5;
pub const ExtFunctionGetOriginalMdl: STORPORT_FUNCTION_CODE = 6;
pub const ExtFunctionCompleteServiceIrp: STORPORT_FUNCTION_CODE = 7;
pub const ExtFunctionGetDeviceObjects: STORPORT_FUNCTION_CODE = 8;
pub const ExtFunctionBuildScatterGatherList: STORPORT_FUNCTION_CODE = 9;
pub const ExtFunctionPutScatterGatherList: STORPORT_FUNCTION_CODE = 10;
pub const ExtFunctionAcquireMSISpinLock: STORPORT_FUNCTION_CODE = 11;
pub const ExtFunctionReleaseMSISpinLock: STORPORT_FUNCTION_CODE = 12;
pub const ExtFunctionGetMessageInterruptInformation: STORPORT_FUNCTION_CODE = 13;
pub const ExtFunctionInitializePerformanceOptimizations: STORPORT_FUNCTION_CODE = 14;
pub const ExtFunctionGetStartIoPerformanceParameters: STORPORT_FUNCTION_CODE = 15;
pub const ExtFunctionLogSystemEvent: STORPORT_FUNCTION_CODE = 16;
pub const ExtFunctionInitializeWorker: STORPORT_FUNCTION_CODE = 29;
pub const ExtFunctionQueueWorkItem: STORPORT_FUNCTION_CODE = 30;
pub const ExtFunctionFreeWorker: STORPORT_FUNCTION_CODE = 31;
pub const ExtFunctionInitializeTimer: STORPORT_FUNCTION_CODE = 32;
pub const ExtFunctionRequestTimer: STORPORT_FUNCTION_CODE = 33;
pub const ExtFunctionFreeTimer: STORPORT_FUNCTION_CODE = 34;
pub const ExtFunctionGetSystemPortNumber: STORPORT_FUNCTION_CODE = 41;
pub const ExtFunctionQueryPerformanceCounter: STORPORT_FUNCTION_CODE = 47;
pub const ExtFunctionInitializeSpinlock: STORPORT_FUNCTION_CODE = 75;
pub const ExtFunctionDelayExecution: STORPORT_FUNCTION_CODE = 81;
pub const ExtFunctionAllocateDmaMemory: STORPORT_FUNCTION_CODE = 82;
pub const ExtFunctionFreeDmaMemory: STORPORT_FUNCTION_CODE = 83;
pub const ExtFunctionAcquireSpinLock: STORPORT_FUNCTION_CODE = 93;
pub const ExtFunctionSetFeatureList: STORPORT_FUNCTION_CODE = 103;
pub const ExtFunctionGetCurrentIrql: STORPORT_FUNCTION_CODE = 109;
pub const ExtFunctionPoFxRegisterPerfStatesEx: STORPORT_FUNCTION_CODE = 119;

pub type STOR_SPINLOCK = u32;
pub const InvalidLock: STOR_SPINLOCK = 0;
pub const DpcLock: STOR_SPINLOCK = 1;
pub const StartIoLock: STOR_SPINLOCK = 2;
pub const InterruptLock: STOR_SPINLOCK = 3;
pub const ThreadedDpcLock: STOR_SPINLOCK = 4;
pub const DpcLevelLock: STOR_SPINLOCK = 5;

pub type STOR_SYNCHRONIZATION_MODEL = u32;
pub const StorSynchronizeHalfDuplex: STOR_SYNCHRONIZATION_MODEL = 0;
pub const StorSynchronizeFullDuplex: STOR_SYNCHRONIZATION_MODEL = 1;

pub type INTERRUPT_SYNCHRONIZATION_MODE = u32;
pub const InterruptSupportNone: INTERRUPT_SYNCHRONIZATION_MODE = 0;
pub const InterruptSynchronizeAll: INTERRUPT_SYNCHRONIZATION_MODE = 1;
pub const InterruptSynchronizePerMessage: INTERRUPT_SYNCHRONIZATION_MODE = 2;

pub type SCSI_ADAPTER_CONTROL_TYPE = u32;
pub const ScsiQuerySupportedControlTypes: SCSI_ADAPTER_CONTROL_TYPE = 0;
pub const ScsiStopAdapter: SCSI_ADAPTER_CONTROL_TYPE = 1;
pub const ScsiRestartAdapter: SCSI_ADAPTER_CONTROL_TYPE = 2;
pub const ScsiSetBootConfig: SCSI_ADAPTER_CONTROL_TYPE = 3;
pub const ScsiSetRunningConfig: SCSI_ADAPTER_CONTROL_TYPE = 4;
pub const ScsiPowerSettingNotification: SCSI_ADAPTER_CONTROL_TYPE = 5;
pub const ScsiAdapterPower: SCSI_ADAPTER_CONTROL_TYPE = 6;
pub const ScsiAdapterPoFxPowerRequired: SCSI_ADAPTER_CONTROL_TYPE = 7;
pub const ScsiAdapterPoFxPowerActive: SCSI_ADAPTER_CONTROL_TYPE = 8;
pub const ScsiAdapterPoFxPowerSetFState: SCSI_ADAPTER_CONTROL_TYPE = 9;
pub const ScsiAdapterPoFxPowerControl: SCSI_ADAPTER_CONTROL_TYPE = 10;
pub const ScsiAdapterPrepareForBusReScan: SCSI_ADAPTER_CONTROL_TYPE = 11;
pub const ScsiAdapterSystemPowerHints: SCSI_ADAPTER_CONTROL_TYPE = 12;
pub const ScsiAdapterFilterResourceRequirements: SCSI_ADAPTER_CONTROL_TYPE = 13;
pub const ScsiAdapterPoFxMaxOperationalPower: SCSI_ADAPTER_CONTROL_TYPE = 14;
pub const ScsiAdapterPoFxSetPerfState: SCSI_ADAPTER_CONTROL_TYPE = 15;
pub const ScsiAdapterSurpriseRemoval: SCSI_ADAPTER_CONTROL_TYPE = 16;
pub const ScsiAdapterSerialNumber: SCSI_ADAPTER_CONTROL_TYPE = 17;
pub const ScsiAdapterCryptoOperation: SCSI_ADAPTER_CONTROL_TYPE = 18;
pub const ScsiAdapterQueryFruId: SCSI_ADAPTER_CONTROL_TYPE = 19;
pub const ScsiAdapterSetEventLogging: SCSI_ADAPTER_CONTROL_TYPE = 20;
pub const ScsiAdapterReportInternalData: SCSI_ADAPTER_CONTROL_TYPE = 21;
pub const ScsiAdapterResetBusSynchronous: SCSI_ADAPTER_CONTROL_TYPE = 22;
pub const ScsiAdapterPostHwInitialize: SCSI_ADAPTER_CONTROL_TYPE = 23;
pub const ScsiAdapterPrepareEarlyDumpData: SCSI_ADAPTER_CONTROL_TYPE = 24;
pub const ScsiAdapterRestoreEarlyDumpData: SCSI_ADAPTER_CONTROL_TYPE = 25;
pub const ScsiAdapterControlMax: SCSI_ADAPTER_CONTROL_TYPE = 26;

pub type SCSI_ADAPTER_CONTROL_STATUS = u32;
pub const ScsiAdapterControlSuccess: SCSI_ADAPTER_CONTROL_STATUS = 0;
pub const ScsiAdapterControlUnsuccessful: SCSI_ADAPTER_CONTROL_STATUS = 1;
pub const ScsiAdapterControlRetryNeeded: SCSI_ADAPTER_CONTROL_STATUS = 2;
pub const ScsiAdapterControlBufferTooSmall: SCSI_ADAPTER_CONTROL_STATUS = 3;

pub type SCSI_UNIT_CONTROL_TYPE = u32;
pub const ScsiQuerySupportedUnitControlTypes: SCSI_UNIT_CONTROL_TYPE = 0;
pub const ScsiUnitUsage: SCSI_UNIT_CONTROL_TYPE = 1;
pub const ScsiUnitStart: SCSI_UNIT_CONTROL_TYPE = 2;
pub const ScsiUnitPower: SCSI_UNIT_CONTROL_TYPE = 3;
pub const ScsiUnitPoFxPowerInfo: SCSI_UNIT_CONTROL_TYPE = 4;
pub const ScsiUnitPoFxPowerRequired: SCSI_UNIT_CONTROL_TYPE = 5;
pub const ScsiUnitPoFxPowerActive: SCSI_UNIT_CONTROL_TYPE = 6;
pub const ScsiUnitPoFxPowerSetFState: SCSI_UNIT_CONTROL_TYPE = 7;
pub const ScsiUnitPoFxPowerControl: SCSI_UNIT_CONTROL_TYPE = 8;
pub const ScsiUnitRemove: SCSI_UNIT_CONTROL_TYPE = 9;
pub const ScsiUnitSurpriseRemoval: SCSI_UNIT_CONTROL_TYPE = 10;
pub const ScsiUnitRichDescription: SCSI_UNIT_CONTROL_TYPE = 11;
pub const ScsiUnitQueryBusType: SCSI_UNIT_CONTROL_TYPE = 12;
pub const ScsiUnitQueryFruId: SCSI_UNIT_CONTROL_TYPE = 13;
pub const ScsiUnitReportInternalData: SCSI_UNIT_CONTROL_TYPE = 14;

pub type SCSI_UNIT_CONTROL_STATUS = u32;
pub const ScsiUnitControlSuccess: SCSI_UNIT_CONTROL_STATUS = 0;
pub const ScsiUnitControlUnsuccessful: SCSI_UNIT_CONTROL_STATUS = 1;

pub type SRBEXDATATYPE = u32;
pub const SrbExDataTypeUnknown: SRBEXDATATYPE = 0;
pub const SrbExDataTypeBidirectional: SRBEXDATATYPE = 1;
pub const SrbExDataTypeScsiCdb16: SRBEXDATATYPE = 0x40;
pub const SrbExDataTypeScsiCdb32: SRBEXDATATYPE = 0x41;
pub const SrbExDataTypeScsiCdbVar: SRBEXDATATYPE = 0x42;
pub const SrbExDataTypeNvmeCommand: SRBEXDATATYPE = 0x43;
pub const SrbExDataTypeWmi: SRBEXDATATYPE = 0x60;
pub const SrbExDataTypePower: SRBEXDATATYPE = 0x61;
pub const SrbExDataTypePnP: SRBEXDATATYPE = 0x62;
pub const SrbExDataTypeIoInfo: SRBEXDATATYPE = 0x80;
pub const SrbExDataTypeMSReservedStart: SRBEXDATATYPE = 0xF000_0000;
pub const SrbExDataTypeReserved: SRBEXDATATYPE = 0xFFFF_FFFF;

pub type STOR_PNP_ACTION = u32;
pub const StorStartDevice: STOR_PNP_ACTION = 0x0;
pub const StorRemoveDevice: STOR_PNP_ACTION = 0x2;
pub const StorStopDevice: STOR_PNP_ACTION = 0x4;
pub const StorQueryCapabilities: STOR_PNP_ACTION = 0x9;
pub const StorQueryResourceRequirements: STOR_PNP_ACTION = 0xB;
pub const StorFilterResourceRequirements: STOR_PNP_ACTION = 0xD;
pub const StorSurpriseRemoval: STOR_PNP_ACTION = 0x17;

pub type STOR_DEVICE_POWER_STATE = u32;
pub const StorPowerDeviceUnspecified: STOR_DEVICE_POWER_STATE = 0;
pub const StorPowerDeviceD0: STOR_DEVICE_POWER_STATE = 1;
pub const StorPowerDeviceD1: STOR_DEVICE_POWER_STATE = 2;
pub const StorPowerDeviceD2: STOR_DEVICE_POWER_STATE = 3;
pub const StorPowerDeviceD3: STOR_DEVICE_POWER_STATE = 4;
pub const StorPowerDeviceMaximum: STOR_DEVICE_POWER_STATE = 5;

pub type STOR_POWER_ACTION = u32;
pub const StorPowerActionNone: STOR_POWER_ACTION = 0;
pub const StorPowerActionReserved: STOR_POWER_ACTION = 1;
pub const StorPowerActionSleep: STOR_POWER_ACTION = 2;
pub const StorPowerActionHibernate: STOR_POWER_ACTION = 3;
pub const StorPowerActionShutdown: STOR_POWER_ACTION = 4;
pub const StorPowerActionShutdownReset: STOR_POWER_ACTION = 5;
pub const StorPowerActionShutdownOff: STOR_POWER_ACTION = 6;
pub const StorPowerActionWarmEject: STOR_POWER_ACTION = 7;

// ---------------------------------------------------------------------------------------------
// #define constants (WDK 22621)
// ---------------------------------------------------------------------------------------------

pub const STOR_STATUS_SUCCESS: ULONG = 0;
pub const STOR_STATUS_UNSUCCESSFUL: ULONG = 0xC100_0001;
pub const STOR_STATUS_NOT_IMPLEMENTED: ULONG = 0xC100_0002;
pub const STOR_STATUS_INSUFFICIENT_RESOURCES: ULONG = 0xC100_0003;
pub const STOR_STATUS_BUFFER_TOO_SMALL: ULONG = 0xC100_0004;
pub const STOR_STATUS_ACCESS_DENIED: ULONG = 0xC100_0005;
pub const STOR_STATUS_INVALID_PARAMETER: ULONG = 0xC100_0006;
pub const STOR_STATUS_INVALID_DEVICE_REQUEST: ULONG = 0xC100_0007;
pub const STOR_STATUS_INVALID_IRQL: ULONG = 0xC100_0008;
pub const STOR_STATUS_INVALID_DEVICE_STATE: ULONG = 0xC100_0009;
pub const STOR_STATUS_INVALID_BUFFER_SIZE: ULONG = 0xC100_000A;
pub const STOR_STATUS_UNSUPPORTED_VERSION: ULONG = 0xC100_000B;
pub const STOR_STATUS_BUSY: ULONG = 0xC100_000C;
pub const STOR_STATUS_THROTTLED_REQUEST: ULONG = 0xC100_000D;
pub const STOR_STATUS_TIMEOUT: ULONG = 0xC100_000E;
pub const STOR_STATUS_INVALID_DATA: ULONG = 0xC100_000F;

// HW_INITIALIZATION_DATA.SrbTypeFlags and .AddressTypeFlags.
pub const SRB_TYPE_FLAG_SCSI_REQUEST_BLOCK: ULONG = 0x1;
pub const SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK: ULONG = 0x2;
pub const ADDRESS_TYPE_FLAG_BTL8: ULONG = 0x1;

// PORT_CONFIGURATION_INFORMATION.SrbType and .AddressType.
pub const SRB_TYPE_SCSI_REQUEST_BLOCK: UCHAR = 0;
pub const SRB_TYPE_STORAGE_REQUEST_BLOCK: UCHAR = 1;
pub const STORAGE_ADDRESS_TYPE_BTL8: UCHAR = 0;

// STOR_ADDRESS.Type (not the same value as STORAGE_ADDRESS_TYPE_BTL8).
pub const STOR_ADDRESS_TYPE_UNKNOWN: USHORT = 0;
pub const STOR_ADDRESS_TYPE_BTL8: USHORT = 1;
pub const STOR_ADDR_BTL8_ADDRESS_LENGTH: ULONG = 4;

pub const SRB_SIGNATURE: ULONG = 0x5352_4258;
pub const STORAGE_REQUEST_BLOCK_VERSION_1: ULONG = 1;
pub const SRBEX_DATA_SCSI_CDB16_LENGTH: ULONG = 32;
pub const SRBEX_DATA_SCSI_CDB32_LENGTH: ULONG = 48;
pub const SRBEX_DATA_SCSI_CDB_VAR_LENGTH_MIN: ULONG = 24;
pub const SRBEX_DATA_POWER_LENGTH: ULONG = 12;
pub const SRBEX_DATA_PNP_LENGTH: ULONG = 16;
pub const SRB_PNP_FLAGS_ADAPTER_REQUEST: ULONG = 0x1;
pub const SRB_POWER_FLAGS_ADAPTER_REQUEST: UCHAR = 0x1;

pub const SRB_FUNCTION_EXECUTE_SCSI: UCHAR = 0x00;
pub const SRB_FUNCTION_CLAIM_DEVICE: UCHAR = 0x01;
pub const SRB_FUNCTION_IO_CONTROL: UCHAR = 0x02;
pub const SRB_FUNCTION_RECEIVE_EVENT: UCHAR = 0x03;
pub const SRB_FUNCTION_RELEASE_QUEUE: UCHAR = 0x04;
pub const SRB_FUNCTION_ATTACH_DEVICE: UCHAR = 0x05;
pub const SRB_FUNCTION_RELEASE_DEVICE: UCHAR = 0x06;
pub const SRB_FUNCTION_SHUTDOWN: UCHAR = 0x07;
pub const SRB_FUNCTION_FLUSH: UCHAR = 0x08;
pub const SRB_FUNCTION_PROTOCOL_COMMAND: UCHAR = 0x09;
pub const SRB_FUNCTION_EXECUTE_NVME: UCHAR = 0x0A;
pub const SRB_FUNCTION_ABORT_COMMAND: UCHAR = 0x10;
pub const SRB_FUNCTION_RELEASE_RECOVERY: UCHAR = 0x11;
pub const SRB_FUNCTION_RESET_BUS: UCHAR = 0x12;
pub const SRB_FUNCTION_RESET_DEVICE: UCHAR = 0x13;
pub const SRB_FUNCTION_TERMINATE_IO: UCHAR = 0x14;
pub const SRB_FUNCTION_FLUSH_QUEUE: UCHAR = 0x15;
pub const SRB_FUNCTION_REMOVE_DEVICE: UCHAR = 0x16;
pub const SRB_FUNCTION_WMI: UCHAR = 0x17;
pub const SRB_FUNCTION_LOCK_QUEUE: UCHAR = 0x18;
pub const SRB_FUNCTION_UNLOCK_QUEUE: UCHAR = 0x19;
pub const SRB_FUNCTION_QUIESCE_DEVICE: UCHAR = 0x1A;
pub const SRB_FUNCTION_RESET_LOGICAL_UNIT: UCHAR = 0x20;
pub const SRB_FUNCTION_SET_LINK_TIMEOUT: UCHAR = 0x21;
pub const SRB_FUNCTION_LINK_TIMEOUT_OCCURRED: UCHAR = 0x22;
pub const SRB_FUNCTION_LINK_TIMEOUT_COMPLETE: UCHAR = 0x23;
pub const SRB_FUNCTION_POWER: UCHAR = 0x24;
pub const SRB_FUNCTION_PNP: UCHAR = 0x25;
pub const SRB_FUNCTION_DUMP_POINTERS: UCHAR = 0x26;
pub const SRB_FUNCTION_FREE_DUMP_POINTERS: UCHAR = 0x27;
pub const SRB_FUNCTION_STORAGE_REQUEST_BLOCK: UCHAR = 0x28;

pub const SRB_FLAGS_QUEUE_ACTION_ENABLE: ULONG = 0x0000_0002;
pub const SRB_FLAGS_DISABLE_DISCONNECT: ULONG = 0x0000_0004;
pub const SRB_FLAGS_DISABLE_SYNCH_TRANSFER: ULONG = 0x0000_0008;
pub const SRB_FLAGS_BYPASS_FROZEN_QUEUE: ULONG = 0x0000_0010;
pub const SRB_FLAGS_DISABLE_AUTOSENSE: ULONG = 0x0000_0020;
pub const SRB_FLAGS_DATA_IN: ULONG = 0x0000_0040;
pub const SRB_FLAGS_DATA_OUT: ULONG = 0x0000_0080;
pub const SRB_FLAGS_NO_DATA_TRANSFER: ULONG = 0x0000_0000;
pub const SRB_FLAGS_UNSPECIFIED_DIRECTION: ULONG = SRB_FLAGS_DATA_IN | SRB_FLAGS_DATA_OUT;
pub const SRB_FLAGS_NO_QUEUE_FREEZE: ULONG = 0x0000_0100;
pub const SRB_FLAGS_ADAPTER_CACHE_ENABLE: ULONG = 0x0000_0200;
pub const SRB_FLAGS_FREE_SENSE_BUFFER: ULONG = 0x0000_0400;
pub const SRB_FLAGS_D3_PROCESSING: ULONG = 0x0000_0800;
pub const SRB_FLAGS_SEQUENTIAL_REQUIRED: ULONG = 0x0000_1000;
pub const SRB_FLAGS_IS_ACTIVE: ULONG = 0x0001_0000;
pub const SRB_FLAGS_NO_KEEP_AWAKE: ULONG = 0x0010_0000;

pub const SRB_STATUS_PENDING: UCHAR = 0x00;
pub const SRB_STATUS_SUCCESS: UCHAR = 0x01;
pub const SRB_STATUS_ABORTED: UCHAR = 0x02;
pub const SRB_STATUS_ABORT_FAILED: UCHAR = 0x03;
pub const SRB_STATUS_ERROR: UCHAR = 0x04;
pub const SRB_STATUS_BUSY: UCHAR = 0x05;
pub const SRB_STATUS_INVALID_REQUEST: UCHAR = 0x06;
pub const SRB_STATUS_INVALID_PATH_ID: UCHAR = 0x07;
pub const SRB_STATUS_NO_DEVICE: UCHAR = 0x08;
pub const SRB_STATUS_TIMEOUT: UCHAR = 0x09;
pub const SRB_STATUS_SELECTION_TIMEOUT: UCHAR = 0x0A;
pub const SRB_STATUS_COMMAND_TIMEOUT: UCHAR = 0x0B;
pub const SRB_STATUS_MESSAGE_REJECTED: UCHAR = 0x0D;
pub const SRB_STATUS_BUS_RESET: UCHAR = 0x0E;
pub const SRB_STATUS_PARITY_ERROR: UCHAR = 0x0F;
pub const SRB_STATUS_REQUEST_SENSE_FAILED: UCHAR = 0x10;
pub const SRB_STATUS_NO_HBA: UCHAR = 0x11;
pub const SRB_STATUS_DATA_OVERRUN: UCHAR = 0x12;
pub const SRB_STATUS_UNEXPECTED_BUS_FREE: UCHAR = 0x13;
pub const SRB_STATUS_PHASE_SEQUENCE_FAILURE: UCHAR = 0x14;
pub const SRB_STATUS_BAD_SRB_BLOCK_LENGTH: UCHAR = 0x15;
pub const SRB_STATUS_REQUEST_FLUSHED: UCHAR = 0x16;
pub const SRB_STATUS_INVALID_LUN: UCHAR = 0x20;
pub const SRB_STATUS_INVALID_TARGET_ID: UCHAR = 0x21;
pub const SRB_STATUS_BAD_FUNCTION: UCHAR = 0x22;
pub const SRB_STATUS_ERROR_RECOVERY: UCHAR = 0x23;
pub const SRB_STATUS_NOT_POWERED: UCHAR = 0x24;
pub const SRB_STATUS_LINK_DOWN: UCHAR = 0x25;
pub const SRB_STATUS_INSUFFICIENT_RESOURCES: UCHAR = 0x26;
pub const SRB_STATUS_THROTTLED_REQUEST: UCHAR = 0x27;
pub const SRB_STATUS_INVALID_PARAMETER: UCHAR = 0x28;
pub const SRB_STATUS_INTERNAL_ERROR: UCHAR = 0x30;
pub const SRB_STATUS_QUEUE_FROZEN: UCHAR = 0x40;
pub const SRB_STATUS_AUTOSENSE_VALID: UCHAR = 0x80;

/// The `SRB_STATUS(Status)` macro: the status without the QUEUE_FROZEN and AUTOSENSE_VALID bits.
pub const fn SRB_STATUS(Status: UCHAR) -> UCHAR {
    Status & !(SRB_STATUS_QUEUE_FROZEN | SRB_STATUS_AUTOSENSE_VALID)
}

pub const SCSISTAT_GOOD: UCHAR = 0x00;
pub const SCSISTAT_CHECK_CONDITION: UCHAR = 0x02;
pub const SCSISTAT_CONDITION_MET: UCHAR = 0x04;
pub const SCSISTAT_BUSY: UCHAR = 0x08;
pub const SCSISTAT_INTERMEDIATE: UCHAR = 0x10;
pub const SCSISTAT_INTERMEDIATE_COND_MET: UCHAR = 0x14;
pub const SCSISTAT_RESERVATION_CONFLICT: UCHAR = 0x18;
pub const SCSISTAT_COMMAND_TERMINATED: UCHAR = 0x22;
pub const SCSISTAT_QUEUE_FULL: UCHAR = 0x28;

pub const SRB_SIMPLE_TAG_REQUEST: UCHAR = 0x20;
pub const SRB_HEAD_OF_QUEUE_TAG_REQUEST: UCHAR = 0x21;
pub const SRB_ORDERED_QUEUE_TAG_REQUEST: UCHAR = 0x22;
pub const SP_UNTAGGED: UCHAR = 0xFF;

pub const STOR_MAP_NO_BUFFERS: UCHAR = 0;
pub const STOR_MAP_ALL_BUFFERS: UCHAR = 1;
pub const STOR_MAP_NON_READ_WRITE_BUFFERS: UCHAR = 2;
pub const STOR_MAP_ALL_BUFFERS_INCLUDING_READ_WRITE: UCHAR = 3;

pub const STOR_FEATURE_VIRTUAL_MINIPORT: ULONG = 0x0000_0001;
pub const STOR_FEATURE_ATA_PASS_THROUGH: ULONG = 0x0000_0002;
pub const STOR_FEATURE_FULL_PNP_DEVICE_CAPABILITIES: ULONG = 0x0000_0004;
pub const STOR_FEATURE_DUMP_POINTERS: ULONG = 0x0000_0008;
pub const STOR_FEATURE_DEVICE_NAME_NO_SUFFIX: ULONG = 0x0000_0010;
pub const STOR_FEATURE_DUMP_RESUME_CAPABLE: ULONG = 0x0000_0020;
pub const STOR_FEATURE_DEVICE_DESCRIPTOR_FROM_ATA_INFO_VPD: ULONG = 0x0000_0040;
pub const STOR_FEATURE_EXTRA_IO_INFORMATION: ULONG = 0x0000_0080;
pub const STOR_FEATURE_ADAPTER_CONTROL_PRE_FINDADAPTER: ULONG = 0x0000_0100;
pub const STOR_FEATURE_ADAPTER_NOT_REQUIRE_IO_PORT: ULONG = 0x0000_0200;
pub const STOR_FEATURE_DUMP_16_BYTE_ALIGNMENT: ULONG = 0x0000_0400;
pub const STOR_FEATURE_SET_ADAPTER_INTERFACE_TYPE: ULONG = 0x0000_0800;
pub const STOR_FEATURE_DUMP_INFO: ULONG = 0x0000_1000;
pub const STOR_FEATURE_DMA_ALLOCATION_NO_BOUNDARY: ULONG = 0x0000_2000;
pub const STOR_FEATURE_NVME: ULONG = 0x0000_4000;
pub const STOR_FEATURE_REPORT_INTERNAL_DATA: ULONG = 0x0000_8000;
pub const STOR_FEATURE_EARLY_DUMP: ULONG = 0x0001_0000;

pub const STOR_ADAPTER_FEATURE_DEVICE_TELEMETRY: ULONG = 0x0000_0001;
pub const STOR_ADAPTER_FEATURE_STOP_UNIT_DURING_POWER_DOWN: ULONG = 0x0000_0002;
pub const STOR_ADAPTER_UNCACHED_EXTENSION_NUMA_NODE_PREFERRED: ULONG = 0x0000_0004;
pub const STOR_ADAPTER_DMA_V3_PREFERRED: ULONG = 0x0000_0008;
pub const STOR_ADAPTER_FEATURE_ABORT_COMMAND: ULONG = 0x0000_0010;
pub const STOR_ADAPTER_FEATURE_RICH_TEMPERATURE_THRESHOLD: ULONG = 0x0000_0020;
pub const STOR_ADAPTER_DMA_ADDRESS_WIDTH_SPECIFIED: ULONG = 0x0000_0040;

pub const SP_RETURN_NOT_FOUND: ULONG = 0;
pub const SP_RETURN_FOUND: ULONG = 1;
pub const SP_RETURN_ERROR: ULONG = 2;
pub const SP_RETURN_BAD_CONFIG: ULONG = 3;

pub const DUMP_MODE_CRASH: UCHAR = 0x01;
pub const DUMP_MODE_HIBER: UCHAR = 0x02;
pub const DUMP_MODE_MARK_MEMORY: UCHAR = 0x03;
pub const DUMP_MODE_RESUME: UCHAR = 0x04;

pub const SCSI_DMA64_MINIPORT_SUPPORTED: UCHAR = 0x01;
pub const SCSI_DMA64_MINIPORT_FULL64BIT_SUPPORTED: UCHAR = 0x02;
pub const SCSI_DMA64_MINIPORT_FULL64BIT_NO_BOUNDARY_REQ_SUPPORTED: UCHAR = 0x03;
pub const SCSI_DMA64_SYSTEM_SUPPORTED: UCHAR = 0x80;

pub const STOR_PERF_DPC_REDIRECTION: ULONG = 0x0000_0001;
pub const STOR_PERF_CONCURRENT_CHANNELS: ULONG = 0x0000_0002;
pub const STOR_PERF_INTERRUPT_MESSAGE_RANGES: ULONG = 0x0000_0004;
pub const STOR_PERF_ADV_CONFIG_LOCALITY: ULONG = 0x0000_0008;
pub const STOR_PERF_OPTIMIZE_FOR_COMPLETION_DURING_STARTIO: ULONG = 0x0000_0010;
pub const STOR_PERF_DPC_REDIRECTION_CURRENT_CPU: ULONG = 0x0000_0020;
pub const STOR_PERF_NO_SGL: ULONG = 0x0000_0040;
pub const STOR_PERF_SOFT_NUMA: ULONG = 0x0000_0080;
pub const STOR_PERF_HETEROGENEOUS_CPU: ULONG = 0x0000_0100;
pub const STOR_PERF_VERSION_2: ULONG = 2;
pub const STOR_PERF_VERSION_3: ULONG = 3;
pub const STOR_PERF_VERSION_4: ULONG = 4;
pub const STOR_PERF_VERSION_5: ULONG = 5;
pub const STOR_PERF_VERSION_6: ULONG = 6;
pub const STOR_PERF_VERSION_7: ULONG = 7;
pub const STOR_PERF_VERSION: ULONG = STOR_PERF_VERSION_7;

pub const HW_INIT_DATA_SIZE_PHYSICAL: ULONG = 136;
pub const HW_INIT_DATA_SIZE_VIRTUAL: ULONG = 176;
pub const CONFIG_INFO_VERSION_2: ULONG = 208;
pub const CONFIG_INFO_VERSION_3: ULONG = 224;
pub const EXTENDED_FLAG_POWER: ULONG = 0x0000_0001;

// ---------------------------------------------------------------------------------------------
// Callback typedefs
// ---------------------------------------------------------------------------------------------

pub type PSCSI_REQUEST_BLOCK = *mut SCSI_REQUEST_BLOCK;
pub type PSTORAGE_REQUEST_BLOCK = *mut STORAGE_REQUEST_BLOCK;
pub type PSTOR_DPC = *mut STOR_DPC;
pub type PPORT_CONFIGURATION_INFORMATION = *mut PORT_CONFIGURATION_INFORMATION;
pub type PHW_INITIALIZATION_DATA = *mut HW_INITIALIZATION_DATA;

pub type PHW_INITIALIZE = Option<unsafe extern "C" fn(HwDeviceExtension: PVOID) -> BOOLEAN>;
pub type PHW_STARTIO =
    Option<unsafe extern "C" fn(HwDeviceExtension: PVOID, Srb: PSCSI_REQUEST_BLOCK) -> BOOLEAN>;
pub type PHW_BUILDIO =
    Option<unsafe extern "C" fn(HwDeviceExtension: PVOID, Srb: PSCSI_REQUEST_BLOCK) -> BOOLEAN>;
pub type PHW_INTERRUPT = Option<unsafe extern "C" fn(HwDeviceExtension: PVOID) -> BOOLEAN>;
pub type PHW_FIND_ADAPTER = Option<
    unsafe extern "C" fn(
        HwDeviceExtension: PVOID,
        HwContext: PVOID,
        BusInformation: PVOID,
        ArgumentString: PCHAR,
        ConfigInfo: *mut PORT_CONFIGURATION_INFORMATION,
        Again: *mut BOOLEAN,
    ) -> ULONG,
>;
pub type PHW_RESET_BUS =
    Option<unsafe extern "C" fn(HwDeviceExtension: PVOID, PathId: ULONG) -> BOOLEAN>;
pub type PHW_DMA_STARTED = Option<unsafe extern "C" fn(HwDeviceExtension: PVOID)>;
pub type PHW_ADAPTER_STATE = Option<
    unsafe extern "C" fn(HwDeviceExtension: PVOID, Context: PVOID, SaveState: BOOLEAN) -> BOOLEAN,
>;
pub type PHW_ADAPTER_CONTROL = Option<
    unsafe extern "C" fn(
        HwDeviceExtension: PVOID,
        ControlType: SCSI_ADAPTER_CONTROL_TYPE,
        Parameters: PVOID,
    ) -> SCSI_ADAPTER_CONTROL_STATUS,
>;
pub type PHW_UNIT_CONTROL = Option<
    unsafe extern "C" fn(
        HwDeviceExtension: PVOID,
        ControlType: SCSI_UNIT_CONTROL_TYPE,
        Parameters: PVOID,
    ) -> SCSI_UNIT_CONTROL_STATUS,
>;
pub type PHW_MESSAGE_SIGNALED_INTERRUPT_ROUTINE =
    Option<unsafe extern "C" fn(HwDeviceExtension: PVOID, MessageId: ULONG) -> BOOLEAN>;
pub type PHW_PASSIVE_INITIALIZE_ROUTINE =
    Option<unsafe extern "C" fn(HwDeviceExtension: PVOID) -> BOOLEAN>;
pub type PHW_DPC_ROUTINE = Option<
    unsafe extern "C" fn(
        Dpc: PSTOR_DPC,
        HwDeviceExtension: PVOID,
        SystemArgument1: PVOID,
        SystemArgument2: PVOID,
    ),
>;
pub type PHW_TIMER = Option<unsafe extern "C" fn(HwDeviceExtension: PVOID)>;
pub type PHW_TIMER_EX = Option<unsafe extern "C" fn(HwDeviceExtension: PVOID, Context: PVOID)>;
pub type PSTOR_SYNCHRONIZED_ACCESS =
    Option<unsafe extern "C" fn(HwDeviceExtension: PVOID, Context: PVOID) -> BOOLEAN>;
pub type PHW_STATE_CHANGE = Option<
    unsafe extern "C" fn(
        HwDeviceExtension: PVOID,
        Context: PVOID,
        AddressType: SHORT,
        Address: PVOID,
        Status: ULONG,
    ),
>;

// The tracing and virtual-miniport routines are never supplied by this physical miniport; their
// slots are declared with the WDK signatures so the structure holds the right 8-byte pointers.
pub type PHW_INITIALIZE_TRACING = Option<unsafe extern "C" fn(Arg1: PVOID, Arg2: PVOID)>;
pub type PHW_CLEANUP_TRACING = Option<unsafe extern "C" fn(Arg1: PVOID)>;
pub type PHW_TRACING_ENABLED =
    Option<unsafe extern "C" fn(HwDeviceExtension: PVOID, Enabled: BOOLEAN)>;
pub type PHW_FREE_ADAPTER_RESOURCES = Option<unsafe extern "C" fn(DeviceExtension: PVOID)>;
pub type PHW_PROCESS_SERVICE_REQUEST =
    Option<unsafe extern "C" fn(DeviceExtension: PVOID, Irp: PVOID)>;
pub type PHW_COMPLETE_SERVICE_IRP = Option<unsafe extern "C" fn(DeviceExtension: PVOID)>;

// ---------------------------------------------------------------------------------------------
// HW_INITIALIZATION_DATA
// ---------------------------------------------------------------------------------------------

/// The miniport's registration with Storport, passed to `StorPortInitialize` (Win8+ layout).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HW_INITIALIZATION_DATA {
    pub HwInitializationDataSize: ULONG,
    pub AdapterInterfaceType: INTERFACE_TYPE,
    pub HwInitialize: PHW_INITIALIZE,
    pub HwStartIo: PHW_STARTIO,
    pub HwInterrupt: PHW_INTERRUPT,
    pub HwFindAdapter: PHW_FIND_ADAPTER,
    pub HwResetBus: PHW_RESET_BUS,
    pub HwDmaStarted: PHW_DMA_STARTED,
    pub HwAdapterState: PHW_ADAPTER_STATE,
    pub DeviceExtensionSize: ULONG,
    pub SpecificLuExtensionSize: ULONG,
    pub SrbExtensionSize: ULONG,
    pub NumberOfAccessRanges: ULONG,
    pub Reserved: PVOID,
    pub MapBuffers: UCHAR,
    pub NeedPhysicalAddresses: BOOLEAN,
    pub TaggedQueuing: BOOLEAN,
    pub AutoRequestSense: BOOLEAN,
    pub MultipleRequestPerLu: BOOLEAN,
    pub ReceiveEvent: BOOLEAN,
    pub VendorIdLength: USHORT,
    pub VendorId: PVOID,
    /// `union { USHORT ReservedUshort; USHORT PortVersionFlags; }`.
    pub PortVersionFlags: USHORT,
    pub DeviceIdLength: USHORT,
    pub DeviceId: PVOID,
    pub HwAdapterControl: PHW_ADAPTER_CONTROL,
    pub HwBuildIo: PHW_BUILDIO,
    pub HwFreeAdapterResources: PHW_FREE_ADAPTER_RESOURCES,
    pub HwProcessServiceRequest: PHW_PROCESS_SERVICE_REQUEST,
    pub HwCompleteServiceIrp: PHW_COMPLETE_SERVICE_IRP,
    pub HwInitializeTracing: PHW_INITIALIZE_TRACING,
    pub HwCleanupTracing: PHW_CLEANUP_TRACING,
    pub HwTracingEnabled: PHW_TRACING_ENABLED,
    pub FeatureSupport: ULONG,
    pub SrbTypeFlags: ULONG,
    pub AddressTypeFlags: ULONG,
    pub Reserved1: ULONG,
    pub HwUnitControl: PHW_UNIT_CONTROL,
}

assert_layout!(
    HW_INITIALIZATION_DATA,
    size = 0xD0,
    align = 8,
    HwInitializationDataSize = 0x00,
    AdapterInterfaceType = 0x04,
    HwInitialize = 0x08,
    HwStartIo = 0x10,
    HwInterrupt = 0x18,
    HwFindAdapter = 0x20,
    HwResetBus = 0x28,
    HwDmaStarted = 0x30,
    HwAdapterState = 0x38,
    DeviceExtensionSize = 0x40,
    SpecificLuExtensionSize = 0x44,
    SrbExtensionSize = 0x48,
    NumberOfAccessRanges = 0x4C,
    Reserved = 0x50,
    MapBuffers = 0x58,
    NeedPhysicalAddresses = 0x59,
    TaggedQueuing = 0x5A,
    AutoRequestSense = 0x5B,
    MultipleRequestPerLu = 0x5C,
    ReceiveEvent = 0x5D,
    VendorIdLength = 0x5E,
    VendorId = 0x60,
    PortVersionFlags = 0x68,
    DeviceIdLength = 0x6A,
    DeviceId = 0x70,
    HwAdapterControl = 0x78,
    HwBuildIo = 0x80,
    HwFreeAdapterResources = 0x88,
    HwProcessServiceRequest = 0x90,
    HwCompleteServiceIrp = 0x98,
    HwInitializeTracing = 0xA0,
    HwCleanupTracing = 0xA8,
    HwTracingEnabled = 0xB0,
    FeatureSupport = 0xB8,
    SrbTypeFlags = 0xBC,
    AddressTypeFlags = 0xC0,
    Reserved1 = 0xC4,
    HwUnitControl = 0xC8,
);
const _: () = assert!(offset_of!(HW_INITIALIZATION_DATA, HwFreeAdapterResources) == 136);
const _: () = assert!(offset_of!(HW_INITIALIZATION_DATA, HwInitializeTracing) == 160);

// ---------------------------------------------------------------------------------------------
// PORT_CONFIGURATION_INFORMATION and its parts
// ---------------------------------------------------------------------------------------------

/// One bus-relative address range of the adapter (a BAR), as Storport reports it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ACCESS_RANGE {
    pub RangeStart: STOR_PHYSICAL_ADDRESS,
    pub RangeLength: ULONG,
    pub RangeInMemory: BOOLEAN,
}

assert_layout!(
    ACCESS_RANGE,
    size = 16,
    align = 8,
    RangeStart = 0x0,
    RangeLength = 0x8,
    RangeInMemory = 0xC
);

/// A memory region described by its virtual and physical base (used for the dump region).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MEMORY_REGION {
    pub VirtualBase: PVOID,
    pub PhysicalBase: STOR_PHYSICAL_ADDRESS,
    pub Length: ULONG,
}

assert_layout!(
    MEMORY_REGION,
    size = 24,
    align = 8,
    VirtualBase = 0x0,
    PhysicalBase = 0x8,
    Length = 0x10
);

/// The adapter's configuration, filled in by Storport and completed by HwStorFindAdapter
/// (Win8+ layout, trap 1).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PORT_CONFIGURATION_INFORMATION {
    pub Length: ULONG,
    pub SystemIoBusNumber: ULONG,
    pub AdapterInterfaceType: INTERFACE_TYPE,
    pub BusInterruptLevel: ULONG,
    pub BusInterruptVector: ULONG,
    pub InterruptMode: KINTERRUPT_MODE,
    pub MaximumTransferLength: ULONG,
    pub NumberOfPhysicalBreaks: ULONG,
    pub DmaChannel: ULONG,
    pub DmaPort: ULONG,
    pub DmaWidth: DMA_WIDTH,
    pub DmaSpeed: DMA_SPEED,
    pub AlignmentMask: ULONG,
    pub NumberOfAccessRanges: ULONG,
    /// `ACCESS_RANGE (*AccessRanges)[]`: the first of `NumberOfAccessRanges` entries.
    pub AccessRanges: *mut ACCESS_RANGE,
    pub MiniportDumpData: PVOID,
    pub NumberOfBuses: UCHAR,
    pub InitiatorBusId: [CCHAR; 8],
    pub ScatterGather: BOOLEAN,
    pub Master: BOOLEAN,
    pub CachesData: BOOLEAN,
    pub AdapterScansDown: BOOLEAN,
    pub AtdiskPrimaryClaimed: BOOLEAN,
    pub AtdiskSecondaryClaimed: BOOLEAN,
    pub Dma32BitAddresses: BOOLEAN,
    pub DemandMode: BOOLEAN,
    pub MapBuffers: UCHAR,
    pub NeedPhysicalAddresses: BOOLEAN,
    pub TaggedQueuing: BOOLEAN,
    pub AutoRequestSense: BOOLEAN,
    pub MultipleRequestPerLu: BOOLEAN,
    pub ReceiveEvent: BOOLEAN,
    pub RealModeInitialized: BOOLEAN,
    pub BufferAccessScsiPortControlled: BOOLEAN,
    pub MaximumNumberOfTargets: UCHAR,
    pub SrbType: UCHAR,
    pub AddressType: UCHAR,
    pub SlotNumber: ULONG,
    pub BusInterruptLevel2: ULONG,
    pub BusInterruptVector2: ULONG,
    pub InterruptMode2: KINTERRUPT_MODE,
    pub DmaChannel2: ULONG,
    pub DmaPort2: ULONG,
    pub DmaWidth2: DMA_WIDTH,
    pub DmaSpeed2: DMA_SPEED,
    pub DeviceExtensionSize: ULONG,
    pub SpecificLuExtensionSize: ULONG,
    pub SrbExtensionSize: ULONG,
    pub Dma64BitAddresses: UCHAR,
    pub ResetTargetSupported: BOOLEAN,
    pub MaximumNumberOfLogicalUnits: UCHAR,
    pub WmiDataProvider: BOOLEAN,
    pub SynchronizationModel: STOR_SYNCHRONIZATION_MODEL,
    pub HwMSInterruptRoutine: PHW_MESSAGE_SIGNALED_INTERRUPT_ROUTINE,
    pub InterruptSynchronizationMode: INTERRUPT_SYNCHRONIZATION_MODE,
    pub DumpRegion: MEMORY_REGION,
    pub RequestedDumpBufferSize: ULONG,
    pub VirtualDevice: BOOLEAN,
    pub DumpMode: UCHAR,
    /// WDK 19041 and later; padding in older kits (check `Length`/the OS version before relying
    /// on Storport reading it).
    pub DmaAddressWidth: UCHAR,
    pub ExtendedFlags1: ULONG,
    pub MaxNumberOfIO: ULONG,
    pub MaxIOsPerLun: ULONG,
    pub InitialLunQueueDepth: ULONG,
    pub BusResetHoldTime: ULONG,
    pub FeatureSupport: ULONG,
}

assert_layout!(
    PORT_CONFIGURATION_INFORMATION,
    size = 0xE0,
    align = 8,
    Length = 0x00,
    SystemIoBusNumber = 0x04,
    AdapterInterfaceType = 0x08,
    BusInterruptLevel = 0x0C,
    BusInterruptVector = 0x10,
    InterruptMode = 0x14,
    MaximumTransferLength = 0x18,
    NumberOfPhysicalBreaks = 0x1C,
    DmaChannel = 0x20,
    DmaPort = 0x24,
    DmaWidth = 0x28,
    DmaSpeed = 0x2C,
    AlignmentMask = 0x30,
    NumberOfAccessRanges = 0x34,
    AccessRanges = 0x38,
    MiniportDumpData = 0x40,
    NumberOfBuses = 0x48,
    InitiatorBusId = 0x49,
    ScatterGather = 0x51,
    Master = 0x52,
    CachesData = 0x53,
    AdapterScansDown = 0x54,
    AtdiskPrimaryClaimed = 0x55,
    AtdiskSecondaryClaimed = 0x56,
    Dma32BitAddresses = 0x57,
    DemandMode = 0x58,
    MapBuffers = 0x59,
    NeedPhysicalAddresses = 0x5A,
    TaggedQueuing = 0x5B,
    AutoRequestSense = 0x5C,
    MultipleRequestPerLu = 0x5D,
    ReceiveEvent = 0x5E,
    RealModeInitialized = 0x5F,
    BufferAccessScsiPortControlled = 0x60,
    MaximumNumberOfTargets = 0x61,
    SrbType = 0x62,
    AddressType = 0x63,
    SlotNumber = 0x64,
    BusInterruptLevel2 = 0x68,
    BusInterruptVector2 = 0x6C,
    InterruptMode2 = 0x70,
    DmaChannel2 = 0x74,
    DmaPort2 = 0x78,
    DmaWidth2 = 0x7C,
    DmaSpeed2 = 0x80,
    DeviceExtensionSize = 0x84,
    SpecificLuExtensionSize = 0x88,
    SrbExtensionSize = 0x8C,
    Dma64BitAddresses = 0x90,
    ResetTargetSupported = 0x91,
    MaximumNumberOfLogicalUnits = 0x92,
    WmiDataProvider = 0x93,
    SynchronizationModel = 0x94,
    HwMSInterruptRoutine = 0x98,
    InterruptSynchronizationMode = 0xA0,
    DumpRegion = 0xA8,
    RequestedDumpBufferSize = 0xC0,
    VirtualDevice = 0xC4,
    DumpMode = 0xC5,
    DmaAddressWidth = 0xC6,
    ExtendedFlags1 = 0xC8,
    MaxNumberOfIO = 0xCC,
    MaxIOsPerLun = 0xD0,
    InitialLunQueueDepth = 0xD4,
    BusResetHoldTime = 0xD8,
    FeatureSupport = 0xDC,
);
const _: () = assert!(
    offset_of!(PORT_CONFIGURATION_INFORMATION, MaxIOsPerLun) as ULONG == CONFIG_INFO_VERSION_2
);
const _: () =
    assert!(size_of::<PORT_CONFIGURATION_INFORMATION>() as ULONG == CONFIG_INFO_VERSION_3);

// ---------------------------------------------------------------------------------------------
// Scatter/gather, locks, DPCs
// ---------------------------------------------------------------------------------------------

/// One physically contiguous piece of a request's data buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct STOR_SCATTER_GATHER_ELEMENT {
    pub PhysicalAddress: STOR_PHYSICAL_ADDRESS,
    pub Length: ULONG,
    pub Reserved: ULONG_PTR,
}

assert_layout!(
    STOR_SCATTER_GATHER_ELEMENT,
    size = 24,
    align = 8,
    PhysicalAddress = 0x0,
    Length = 0x8,
    Reserved = 0x10
);

/// The scatter/gather list of a request: a header followed by `NumberOfElements` elements.
#[repr(C)]
pub struct STOR_SCATTER_GATHER_LIST {
    pub NumberOfElements: ULONG,
    pub Reserved: ULONG_PTR,
    pub List: [STOR_SCATTER_GATHER_ELEMENT; 0],
}

assert_layout!(
    STOR_SCATTER_GATHER_LIST,
    size = 16,
    align = 8,
    NumberOfElements = 0x0,
    Reserved = 0x8,
    List = 0x10
);

/// The in-stack queued spin lock inside [`STOR_LOCK_HANDLE_CONTEXT`] (C: an anonymous struct).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct STOR_LOCK_QUEUE {
    pub Next: PVOID,
    pub Lock: PVOID,
}

/// The `Context` member of [`STOR_LOCK_HANDLE`] (C: an anonymous struct).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct STOR_LOCK_HANDLE_CONTEXT {
    pub LockQueue: STOR_LOCK_QUEUE,
    pub OldIrql: KIRQL,
}

/// The handle of a Storport spin lock acquisition, filled in by the acquire and read by the release.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct STOR_LOCK_HANDLE {
    pub Lock: STOR_SPINLOCK,
    pub Context: STOR_LOCK_HANDLE_CONTEXT,
}

assert_layout!(
    STOR_LOCK_HANDLE,
    size = 32,
    align = 8,
    Lock = 0x0,
    Context = 0x8,
    Context.LockQueue = 0x8,
    Context.LockQueue.Next = 0x8,
    Context.LockQueue.Lock = 0x10,
    Context.OldIrql = 0x18
);

/// Opaque storage for the kernel DPC object inside a [`STOR_DPC`] (the size of an x64 KDPC).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct DPC_BUFFER {
    pub Buffer: [UCHAR; 64],
}

assert_layout!(DPC_BUFFER, size = 64, align = 8, Buffer = 0x0);

/// A Storport DPC object, initialised by `StorPortInitializeDpc`; opaque to the miniport.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct STOR_DPC {
    pub Dpc: DPC_BUFFER,
    pub Lock: ULONG_PTR,
}

assert_layout!(STOR_DPC, size = 72, align = 8, Dpc = 0x0, Lock = 0x40);

// ---------------------------------------------------------------------------------------------
// Performance options and interrupts
// ---------------------------------------------------------------------------------------------

/// A processor group and an affinity mask within it (`GROUP_AFFINITY`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GROUP_AFFINITY {
    pub Mask: KAFFINITY,
    pub Group: USHORT,
    pub Reserved: [USHORT; 3],
}

assert_layout!(
    GROUP_AFFINITY,
    size = 16,
    align = 8,
    Mask = 0x0,
    Group = 0x8,
    Reserved = 0xA
);

/// The performance options queried and set with `StorPortInitializePerfOpts`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PERF_CONFIGURATION_DATA {
    pub Version: ULONG,
    pub Size: ULONG,
    pub Flags: ULONG,
    pub ConcurrentChannels: ULONG,
    pub FirstRedirectionMessageNumber: ULONG,
    pub LastRedirectionMessageNumber: ULONG,
    pub DeviceNode: ULONG,
    pub Reserved: ULONG,
    pub MessageTargets: *mut GROUP_AFFINITY,
}

assert_layout!(
    PERF_CONFIGURATION_DATA,
    size = 40,
    align = 8,
    Version = 0x0,
    Size = 0x4,
    Flags = 0x8,
    ConcurrentChannels = 0xC,
    FirstRedirectionMessageNumber = 0x10,
    LastRedirectionMessageNumber = 0x14,
    DeviceNode = 0x18,
    Reserved = 0x1C,
    MessageTargets = 0x20
);

/// The channel and MSI message Storport chose for a request (`StorPortGetStartIoPerfParams`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct STARTIO_PERFORMANCE_PARAMETERS {
    pub Version: ULONG,
    pub Size: ULONG,
    pub MessageNumber: ULONG,
    pub ChannelNumber: ULONG,
}

assert_layout!(
    STARTIO_PERFORMANCE_PARAMETERS,
    size = 16,
    align = 4,
    Version = 0x0,
    Size = 0x4,
    MessageNumber = 0x8,
    ChannelNumber = 0xC
);

/// What Storport knows about one MSI/MSI-X message (`StorPortGetMSIInfo`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MESSAGE_INTERRUPT_INFORMATION {
    pub MessageId: ULONG,
    pub MessageData: ULONG,
    pub MessageAddress: STOR_PHYSICAL_ADDRESS,
    pub InterruptVector: ULONG,
    pub InterruptLevel: ULONG,
    pub InterruptMode: KINTERRUPT_MODE,
}

assert_layout!(
    MESSAGE_INTERRUPT_INFORMATION,
    size = 32,
    align = 8,
    MessageId = 0x0,
    MessageData = 0x4,
    MessageAddress = 0x8,
    InterruptVector = 0x10,
    InterruptLevel = 0x14,
    InterruptMode = 0x18
);

/// The list a miniport marks in answer to ScsiQuerySupportedControlTypes (and the unit variant):
/// `MaxControlType` BOOLEANs follow the header.
#[repr(C)]
pub struct SCSI_SUPPORTED_CONTROL_TYPE_LIST {
    pub MaxControlType: ULONG,
    pub SupportedTypeList: [BOOLEAN; 0],
}

assert_layout!(
    SCSI_SUPPORTED_CONTROL_TYPE_LIST,
    size = 4,
    align = 4,
    MaxControlType = 0x0,
    SupportedTypeList = 0x4
);

/// A GUID, as in `guiddef.h`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GUID {
    pub Data1: ULONG,
    pub Data2: USHORT,
    pub Data3: USHORT,
    pub Data4: [UCHAR; 8],
}

assert_layout!(
    GUID,
    size = 16,
    align = 4,
    Data1 = 0x0,
    Data2 = 0x4,
    Data3 = 0x6,
    Data4 = 0x8
);

/// The parameters of ScsiPowerSettingNotification: a power setting and its new value.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct STOR_POWER_SETTING_INFO {
    pub PowerSettingGuid: GUID,
    pub Value: PVOID,
    pub ValueLength: ULONG,
}

assert_layout!(
    STOR_POWER_SETTING_INFO,
    size = 32,
    align = 8,
    PowerSettingGuid = 0x0,
    Value = 0x10,
    ValueLength = 0x18
);

// ---------------------------------------------------------------------------------------------
// Request blocks
// ---------------------------------------------------------------------------------------------

/// The classic SCSI request block (`SRB_FUNCTION_*` in `Function`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SCSI_REQUEST_BLOCK {
    pub Length: USHORT,
    pub Function: UCHAR,
    pub SrbStatus: UCHAR,
    pub ScsiStatus: UCHAR,
    pub PathId: UCHAR,
    pub TargetId: UCHAR,
    pub Lun: UCHAR,
    pub QueueTag: UCHAR,
    pub QueueAction: UCHAR,
    pub CdbLength: UCHAR,
    pub SenseInfoBufferLength: UCHAR,
    pub SrbFlags: ULONG,
    pub DataTransferLength: ULONG,
    pub TimeOutValue: ULONG,
    pub DataBuffer: PVOID,
    pub SenseInfoBuffer: PVOID,
    pub NextSrb: *mut SCSI_REQUEST_BLOCK,
    pub OriginalRequest: PVOID,
    pub SrbExtension: PVOID,
    /// `union { ULONG InternalStatus; ULONG QueueSortKey; ULONG LinkTimeoutValue; }`.
    pub InternalStatus: ULONG,
    pub Reserved: ULONG,
    pub Cdb: [UCHAR; 16],
}

assert_layout!(
    SCSI_REQUEST_BLOCK,
    size = 0x58,
    align = 8,
    Length = 0x00,
    Function = 0x02,
    SrbStatus = 0x03,
    ScsiStatus = 0x04,
    PathId = 0x05,
    TargetId = 0x06,
    Lun = 0x07,
    QueueTag = 0x08,
    QueueAction = 0x09,
    CdbLength = 0x0A,
    SenseInfoBufferLength = 0x0B,
    SrbFlags = 0x0C,
    DataTransferLength = 0x10,
    TimeOutValue = 0x14,
    DataBuffer = 0x18,
    SenseInfoBuffer = 0x20,
    NextSrb = 0x28,
    OriginalRequest = 0x30,
    SrbExtension = 0x38,
    InternalStatus = 0x40,
    Reserved = 0x44,
    Cdb = 0x48
);

/// The extended request block (SRB_EX): `Function` is `SRB_FUNCTION_STORAGE_REQUEST_BLOCK` and
/// the real function is `SrbFunction` (trap 2 and trap 3).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct STORAGE_REQUEST_BLOCK {
    pub Length: USHORT,
    pub Function: UCHAR,
    pub SrbStatus: UCHAR,
    pub ReservedUlong1: ULONG,
    pub Signature: ULONG,
    pub Version: ULONG,
    pub SrbLength: ULONG,
    pub SrbFunction: ULONG,
    pub SrbFlags: ULONG,
    pub ReservedUlong2: ULONG,
    pub RequestTag: ULONG,
    pub RequestPriority: USHORT,
    pub RequestAttribute: USHORT,
    pub TimeOutValue: ULONG,
    /// Newer kits: `union { ULONG SystemStatus; ULONG RequestTagHigh4Bytes; }`.
    pub SystemStatus: ULONG,
    pub ZeroGuard1: ULONG,
    pub AddressOffset: ULONG,
    pub NumSrbExData: ULONG,
    pub DataTransferLength: ULONG,
    pub DataBuffer: PVOID,
    pub ZeroGuard2: PVOID,
    pub OriginalRequest: PVOID,
    pub ClassContext: PVOID,
    pub PortContext: PVOID,
    pub MiniportContext: PVOID,
    pub NextSrb: *mut STORAGE_REQUEST_BLOCK,
    /// `ULONG SrbExDataOffset[ANYSIZE_ARRAY]`: `NumSrbExData` entries start here.
    pub SrbExDataOffset: [ULONG; 1],
}

assert_layout!(
    STORAGE_REQUEST_BLOCK,
    size = 0x80,
    align = 8,
    Length = 0x00,
    Function = 0x02,
    SrbStatus = 0x03,
    ReservedUlong1 = 0x04,
    Signature = 0x08,
    Version = 0x0C,
    SrbLength = 0x10,
    SrbFunction = 0x14,
    SrbFlags = 0x18,
    ReservedUlong2 = 0x1C,
    RequestTag = 0x20,
    RequestPriority = 0x24,
    RequestAttribute = 0x26,
    TimeOutValue = 0x28,
    SystemStatus = 0x2C,
    ZeroGuard1 = 0x30,
    AddressOffset = 0x34,
    NumSrbExData = 0x38,
    DataTransferLength = 0x3C,
    DataBuffer = 0x40,
    ZeroGuard2 = 0x48,
    OriginalRequest = 0x50,
    ClassContext = 0x58,
    PortContext = 0x60,
    MiniportContext = 0x68,
    NextSrb = 0x70,
    SrbExDataOffset = 0x78
);
const _: () = assert!(offset_of!(STORAGE_REQUEST_BLOCK, Signature) == 8);

/// The common header of every extended-data block of an SRB_EX (trap 3: align 8).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct SRBEX_DATA {
    pub Type: SRBEXDATATYPE,
    pub Length: ULONG,
    pub Data: [UCHAR; 1],
}

assert_layout!(
    SRBEX_DATA,
    size = 16,
    align = 8,
    Type = 0x0,
    Length = 0x4,
    Data = 0x8
);

/// The SCSI CDB (up to 16 bytes), status and sense buffer of an SRB_EX.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct SRBEX_DATA_SCSI_CDB16 {
    pub Type: SRBEXDATATYPE,
    pub Length: ULONG,
    pub ScsiStatus: UCHAR,
    pub SenseInfoBufferLength: UCHAR,
    pub CdbLength: UCHAR,
    pub Reserved: UCHAR,
    pub Reserved1: ULONG,
    pub SenseInfoBuffer: PVOID,
    pub Cdb: [UCHAR; 16],
}

assert_layout!(
    SRBEX_DATA_SCSI_CDB16,
    size = 40,
    align = 8,
    Type = 0x0,
    Length = 0x4,
    ScsiStatus = 0x8,
    SenseInfoBufferLength = 0x9,
    CdbLength = 0xA,
    Reserved = 0xB,
    Reserved1 = 0xC,
    SenseInfoBuffer = 0x10,
    Cdb = 0x18
);
const _: () = assert!(
    (size_of::<SRBEX_DATA_SCSI_CDB16>() - offset_of!(SRBEX_DATA_SCSI_CDB16, ScsiStatus)) as ULONG
        == SRBEX_DATA_SCSI_CDB16_LENGTH
);

/// The SCSI CDB (up to 32 bytes), status and sense buffer of an SRB_EX.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct SRBEX_DATA_SCSI_CDB32 {
    pub Type: SRBEXDATATYPE,
    pub Length: ULONG,
    pub ScsiStatus: UCHAR,
    pub SenseInfoBufferLength: UCHAR,
    pub CdbLength: UCHAR,
    pub Reserved: UCHAR,
    pub Reserved1: ULONG,
    pub SenseInfoBuffer: PVOID,
    pub Cdb: [UCHAR; 32],
}

assert_layout!(
    SRBEX_DATA_SCSI_CDB32,
    size = 56,
    align = 8,
    Type = 0x0,
    Length = 0x4,
    ScsiStatus = 0x8,
    SenseInfoBufferLength = 0x9,
    CdbLength = 0xA,
    Reserved = 0xB,
    Reserved1 = 0xC,
    SenseInfoBuffer = 0x10,
    Cdb = 0x18
);
const _: () = assert!(
    (size_of::<SRBEX_DATA_SCSI_CDB32>() - offset_of!(SRBEX_DATA_SCSI_CDB32, ScsiStatus)) as ULONG
        == SRBEX_DATA_SCSI_CDB32_LENGTH
);

/// A variable-length SCSI CDB, status and sense buffer of an SRB_EX; `CdbLength` bytes of CDB
/// start at `Cdb`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct SRBEX_DATA_SCSI_CDB_VAR {
    pub Type: SRBEXDATATYPE,
    pub Length: ULONG,
    pub ScsiStatus: UCHAR,
    pub SenseInfoBufferLength: UCHAR,
    pub Reserved: [UCHAR; 2],
    pub CdbLength: ULONG,
    pub Reserved1: [ULONG; 2],
    pub SenseInfoBuffer: PVOID,
    pub Cdb: [UCHAR; 1],
}

assert_layout!(
    SRBEX_DATA_SCSI_CDB_VAR,
    size = 40,
    align = 8,
    Type = 0x0,
    Length = 0x4,
    ScsiStatus = 0x8,
    SenseInfoBufferLength = 0x9,
    Reserved = 0xA,
    CdbLength = 0xC,
    Reserved1 = 0x10,
    SenseInfoBuffer = 0x18,
    Cdb = 0x20
);

/// The Plug and Play action of an SRB_EX with `SRB_FUNCTION_PNP`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct SRBEX_DATA_PNP {
    pub Type: SRBEXDATATYPE,
    pub Length: ULONG,
    pub PnPSubFunction: UCHAR,
    pub Reserved: [UCHAR; 3],
    pub PnPAction: STOR_PNP_ACTION,
    pub SrbPnPFlags: ULONG,
    pub Reserved1: ULONG,
}

assert_layout!(
    SRBEX_DATA_PNP,
    size = 24,
    align = 8,
    Type = 0x0,
    Length = 0x4,
    PnPSubFunction = 0x8,
    Reserved = 0x9,
    PnPAction = 0xC,
    SrbPnPFlags = 0x10,
    Reserved1 = 0x14
);
const _: () = assert!(
    (offset_of!(SRBEX_DATA_PNP, Reserved1) + 4 - offset_of!(SRBEX_DATA_PNP, PnPSubFunction))
        as ULONG
        == SRBEX_DATA_PNP_LENGTH
);

/// The requested device power state and system action of an SRB_EX with `SRB_FUNCTION_POWER`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct SRBEX_DATA_POWER {
    pub Type: SRBEXDATATYPE,
    pub Length: ULONG,
    pub SrbPowerFlags: UCHAR,
    pub Reserved: [UCHAR; 3],
    pub DevicePowerState: STOR_DEVICE_POWER_STATE,
    pub PowerAction: STOR_POWER_ACTION,
}

assert_layout!(
    SRBEX_DATA_POWER,
    size = 24,
    align = 8,
    Type = 0x0,
    Length = 0x4,
    SrbPowerFlags = 0x8,
    Reserved = 0x9,
    DevicePowerState = 0xC,
    PowerAction = 0x10
);
const _: () = assert!(
    (offset_of!(SRBEX_DATA_POWER, PowerAction) + 4 - offset_of!(SRBEX_DATA_POWER, SrbPowerFlags))
        as ULONG
        == SRBEX_DATA_POWER_LENGTH
);

/// The generic device address of an SRB_EX, at `AddressOffset` (trap 3: 16 bytes, align 8).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct STOR_ADDRESS {
    pub Type: USHORT,
    pub Port: USHORT,
    pub AddressLength: ULONG,
    pub AddressData: [UCHAR; 1],
}

assert_layout!(
    STOR_ADDRESS,
    size = 16,
    align = 8,
    Type = 0x0,
    Port = 0x2,
    AddressLength = 0x4,
    AddressData = 0x8
);

/// A bus/target/LUN device address (`Type == STOR_ADDRESS_TYPE_BTL8`; trap 3).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct STOR_ADDR_BTL8 {
    pub Type: USHORT,
    pub Port: USHORT,
    pub AddressLength: ULONG,
    pub Path: UCHAR,
    pub Target: UCHAR,
    pub Lun: UCHAR,
    pub Reserved: UCHAR,
}

assert_layout!(
    STOR_ADDR_BTL8,
    size = 16,
    align = 8,
    Type = 0x0,
    Port = 0x2,
    AddressLength = 0x4,
    Path = 0x8,
    Target = 0x9,
    Lun = 0xA,
    Reserved = 0xB
);

impl_zeroed!(
    HW_INITIALIZATION_DATA,
    PORT_CONFIGURATION_INFORMATION,
    ACCESS_RANGE,
    MEMORY_REGION,
    STOR_SCATTER_GATHER_ELEMENT,
    STOR_LOCK_HANDLE,
    DPC_BUFFER,
    STOR_DPC,
    GROUP_AFFINITY,
    PERF_CONFIGURATION_DATA,
    STARTIO_PERFORMANCE_PARAMETERS,
    MESSAGE_INTERRUPT_INFORMATION,
    STOR_POWER_SETTING_INFO,
    SCSI_REQUEST_BLOCK,
    STORAGE_REQUEST_BLOCK,
    SRBEX_DATA,
    SRBEX_DATA_SCSI_CDB16,
    SRBEX_DATA_SCSI_CDB32,
    SRBEX_DATA_SCSI_CDB_VAR,
    SRBEX_DATA_PNP,
    SRBEX_DATA_POWER,
    STOR_ADDRESS,
    STOR_ADDR_BTL8,
);

// ---------------------------------------------------------------------------------------------
// storport.sys exports
// ---------------------------------------------------------------------------------------------

#[cfg_attr(
    target_os = "windows",
    link(name = "storport.sys", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "C" {
    pub fn StorPortInitialize(
        Argument1: PVOID,
        Argument2: PVOID,
        HwInitializationData: *mut HW_INITIALIZATION_DATA,
        HwContext: PVOID,
    ) -> ULONG;

    /// Variadic: the arguments after `HwDeviceExtension` depend on `NotificationType`.
    pub fn StorPortNotification(
        NotificationType: SCSI_NOTIFICATION_TYPE,
        HwDeviceExtension: PVOID,
        ...
    );

    /// Variadic: the arguments after `HwDeviceExtension` depend on `FunctionCode`; returns a
    /// `STOR_STATUS_*` value.
    pub fn StorPortExtendedFunction(
        FunctionCode: STORPORT_FUNCTION_CODE,
        HwDeviceExtension: PVOID,
        ...
    ) -> ULONG;

    pub fn StorPortSynchronizeAccess(
        HwDeviceExtension: PVOID,
        SynchronizedAccessRoutine: PSTOR_SYNCHRONIZED_ACCESS,
        Context: PVOID,
    ) -> BOOLEAN;

    pub fn StorPortGetDeviceBase(
        HwDeviceExtension: PVOID,
        BusType: INTERFACE_TYPE,
        SystemIoBusNumber: ULONG,
        IoAddress: STOR_PHYSICAL_ADDRESS,
        NumberOfBytes: ULONG,
        InIoSpace: BOOLEAN,
    ) -> PVOID;

    pub fn StorPortFreeDeviceBase(HwDeviceExtension: PVOID, MappedAddress: PVOID);

    pub fn StorPortGetUncachedExtension(
        HwDeviceExtension: PVOID,
        ConfigInfo: *mut PORT_CONFIGURATION_INFORMATION,
        NumberOfBytes: ULONG,
    ) -> PVOID;

    pub fn StorPortGetPhysicalAddress(
        HwDeviceExtension: PVOID,
        Srb: PSCSI_REQUEST_BLOCK,
        VirtualAddress: PVOID,
        Length: *mut ULONG,
    ) -> STOR_PHYSICAL_ADDRESS;

    pub fn StorPortGetScatterGatherList(
        HwDeviceExtension: PVOID,
        Srb: PSCSI_REQUEST_BLOCK,
    ) -> *mut STOR_SCATTER_GATHER_LIST;

    pub fn StorPortGetBusData(
        HwDeviceExtension: PVOID,
        BusDataType: ULONG,
        SystemIoBusNumber: ULONG,
        SlotNumber: ULONG,
        Buffer: PVOID,
        Length: ULONG,
    ) -> ULONG;

    pub fn StorPortSetBusDataByOffset(
        HwDeviceExtension: PVOID,
        BusDataType: ULONG,
        SystemIoBusNumber: ULONG,
        SlotNumber: ULONG,
        Buffer: PVOID,
        Offset: ULONG,
        Length: ULONG,
    ) -> ULONG;

    pub fn StorPortStallExecution(Delay: ULONG);

    pub fn StorPortBusy(HwDeviceExtension: PVOID, RequestsToComplete: ULONG) -> BOOLEAN;

    pub fn StorPortReady(HwDeviceExtension: PVOID) -> BOOLEAN;

    pub fn StorPortPause(HwDeviceExtension: PVOID, TimeOut: ULONG) -> BOOLEAN;

    pub fn StorPortResume(HwDeviceExtension: PVOID) -> BOOLEAN;

    pub fn StorPortDeviceBusy(
        HwDeviceExtension: PVOID,
        PathId: UCHAR,
        TargetId: UCHAR,
        Lun: UCHAR,
        RequestsToComplete: ULONG,
    ) -> BOOLEAN;

    pub fn StorPortDeviceReady(
        HwDeviceExtension: PVOID,
        PathId: UCHAR,
        TargetId: UCHAR,
        Lun: UCHAR,
    ) -> BOOLEAN;

    /// Variadic, `printf`-style.
    pub fn StorPortDebugPrint(DebugPrintLevel: ULONG, DebugMessage: PCCHAR, ...);

    pub fn StorPortLogError(
        HwDeviceExtension: PVOID,
        Srb: PSCSI_REQUEST_BLOCK,
        PathId: UCHAR,
        TargetId: UCHAR,
        Lun: UCHAR,
        ErrorCode: ULONG,
        UniqueId: ULONG,
    );

    /// PASSIVE_LEVEL; one registry buffer per adapter at a time (a second answers NULL).
    pub fn StorPortAllocateRegistryBuffer(HwDeviceExtension: PVOID, Length: *mut ULONG) -> PUCHAR;

    /// PASSIVE_LEVEL.
    pub fn StorPortFreeRegistryBuffer(HwDeviceExtension: PVOID, Buffer: PUCHAR);

    /// PASSIVE_LEVEL; `Buffer` comes from StorPortAllocateRegistryBuffer. `Global` nonzero reads
    /// `Parameters\Device`, zero `Parameters\Device<N>` of the miniport's service key.
    pub fn StorPortRegistryRead(
        HwDeviceExtension: PVOID,
        ValueName: PUCHAR,
        Global: ULONG,
        Type: ULONG,
        Buffer: PUCHAR,
        BufferLength: *mut ULONG,
    ) -> BOOLEAN;
}

/// `STOR_UNIT_CONTROL_POWER` (ScsiUnitPower's parameter): the unit, the system power action
/// and the device power state it moves to. x64: Address at 0, PowerAction at 8, PowerState at
/// 12; 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct STOR_UNIT_CONTROL_POWER {
    pub Address: *mut STOR_ADDR_BTL8,
    pub PowerAction: STOR_POWER_ACTION,
    pub PowerState: STOR_DEVICE_POWER_STATE,
}
const _: () = assert!(core::mem::size_of::<STOR_UNIT_CONTROL_POWER>() == 16);

/// StorPortExtendedFunction code of StorPortEtwEvent2 (STORPORT_FUNCTION_CODE, Windows 8.1:
/// ExtFunctionGetProcessorIndexFromNumber is 56, then PoFxSetIdleTimeout, MiniportEtwEvent2).
pub const ExtFunctionMiniportEtwEvent2: ULONG = 58;
/// STORPORT_ETW_LEVEL: Informational.
pub const StorportEtwLevelInformational: ULONG = 4;
/// STORPORT_ETW_LEVEL: Warning.
pub const StorportEtwLevelWarning: ULONG = 3;
/// STORPORT_ETW_EVENT_OPCODE: Info.
pub const StorportEtwEventOpcodeInfo: ULONG = 0;
/// STORPORT_ETW_EVENT_KEYWORD_IO.
pub const STORPORT_ETW_EVENT_KEYWORD_IO: u64 = 0x1;
/// STORPORT_ETW_EVENT_KEYWORD_POWER.
pub const STORPORT_ETW_EVENT_KEYWORD_POWER: u64 = 0x4;
/// Characters of an ETW event description, without the NUL (STORPORT_ETW_MAX_DESCRIPTION_LENGTH;
/// UNVERIFIED: the value is from memory of storport.h, not a header checked here).
pub const STORPORT_ETW_MAX_DESCRIPTION_LENGTH: usize = 32;
/// Characters of an ETW parameter name, without the NUL (STORPORT_ETW_MAX_PARAM_NAME_LENGTH;
/// UNVERIFIED as above).
pub const STORPORT_ETW_MAX_PARAM_NAME_LENGTH: usize = 16;

/// StorPortExtendedFunction code of StorPortMarkDumpMemory (STORPORT_FUNCTION_CODE, Windows 8:
/// GetSystemPortNumber is 41, then GetDataInBufferMdl, GetDataInBufferSystemAddress,
/// GetDataInBufferScatterGatherList, MarkDumpMemory; QueryPerformanceCounter is 47, two after).
/// Arguments after the extension: `PVOID Address, ULONG_PTR Length, ULONG Flags`.
pub const ExtFunctionMarkDumpMemory: ULONG = 45;
/// StorPortMarkDumpMemory `Flags`: `Address` is a physical address. UNVERIFIED: the value is not
/// on the DDI page; the layer never passes it (it marks by virtual address, `Flags` 0).
pub const MARK_DUMP_MEMORY_FLAG_PHYSICAL_ADDRESS: ULONG = 0x1;

/// `MINIPORT_DUMP_POINTERS.Version` (storport.h DUMP_MINIPORT_VERSION_1; the value is from the
/// storport.h enumeration as indexed publicly, not a header checked on this machine).
pub const DUMP_MINIPORT_VERSION_1: USHORT = 0x0100;
/// WCHARs of `MINIPORT_DUMP_POINTERS.DriverName` (DUMP_MINIPORT_NAME_LENGTH; as above).
pub const DUMP_MINIPORT_NAME_LENGTH: usize = 15;

/// `MINIPORT_DUMP_POINTERS`: the DataBuffer of an SRB_FUNCTION_DUMP_POINTERS request, which
/// Storport sends to the running instance of a miniport with STOR_FEATURE_DUMP_POINTERS before it
/// builds the crash-dump stack. `MiniportPrivateDumpData` comes back to the dump instance as
/// `PORT_CONFIGURATION_INFORMATION.MiniportDumpData`.
///
/// Not in `reference/layouts.md`: derived from the DDI page's declaration
/// (`ns-storport-_miniport_dump_pointers`) with MSVC x64 alignment (pointers 8, ULONG and the
/// INTERFACE_TYPE enumeration 4, WCHAR 2); UNVERIFIED against a WDK header or a PDB dump.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MINIPORT_DUMP_POINTERS {
    pub Version: USHORT,
    pub Size: USHORT,
    pub DriverName: [u16; DUMP_MINIPORT_NAME_LENGTH],
    pub AdapterObject: PVOID,
    pub MappedRegisterBase: PVOID,
    pub CommonBufferSize: ULONG,
    pub MiniportPrivateDumpData: PVOID,
    pub SystemIoBusNumber: ULONG,
    pub AdapterInterfaceType: INTERFACE_TYPE,
    pub MaximumTransferLength: ULONG,
    pub NumberOfPhysicalBreaks: ULONG,
    pub AlignmentMask: ULONG,
    pub NumberOfAccessRanges: ULONG,
    pub AccessRanges: *mut ACCESS_RANGE,
    pub NumberOfBuses: UCHAR,
    pub Master: BOOLEAN,
    pub MapBuffers: BOOLEAN,
    pub MaximumNumberOfTargets: UCHAR,
}

assert_layout!(
    MINIPORT_DUMP_POINTERS,
    size = 0x70,
    align = 8,
    Version = 0x0,
    Size = 0x2,
    DriverName = 0x4,
    AdapterObject = 0x28,
    MappedRegisterBase = 0x30,
    CommonBufferSize = 0x38,
    MiniportPrivateDumpData = 0x40,
    SystemIoBusNumber = 0x48,
    AdapterInterfaceType = 0x4C,
    MaximumTransferLength = 0x50,
    NumberOfPhysicalBreaks = 0x54,
    AlignmentMask = 0x58,
    NumberOfAccessRanges = 0x5C,
    AccessRanges = 0x60,
    NumberOfBuses = 0x68,
    Master = 0x69,
    MapBuffers = 0x6A,
    MaximumNumberOfTargets = 0x6B,
);

impl_zeroed!(MINIPORT_DUMP_POINTERS);

/// StorPortRegistryRead `Type`: a REG_DWORD value (storport.h MINIPORT_REG_DWORD).
pub const MINIPORT_REG_DWORD: ULONG = 4;

// ---------------------------------------------------------------------------------------------
// Host-only register accessors
// ---------------------------------------------------------------------------------------------

// On Windows these are `READ_REGISTER_*`/`WRITE_REGISTER_*` macros (volatile accesses) and on
// UEFI the same; on the host the simulator defines them as functions that route the access to
// its device model. The extra `HwDeviceExtension` argument lets it find the adapter.
#[cfg(not(any(target_os = "windows", target_os = "uefi")))]
unsafe extern "C" {
    pub fn StorPortReadRegisterUchar(HwDeviceExtension: PVOID, Register: *mut UCHAR) -> UCHAR;
    pub fn StorPortReadRegisterUshort(HwDeviceExtension: PVOID, Register: *mut USHORT) -> USHORT;
    pub fn StorPortReadRegisterUlong(HwDeviceExtension: PVOID, Register: *mut ULONG) -> ULONG;
    pub fn StorPortReadRegisterUlong64(HwDeviceExtension: PVOID, Register: *mut ULONG64)
    -> ULONG64;
    pub fn StorPortWriteRegisterUchar(HwDeviceExtension: PVOID, Register: *mut UCHAR, Value: UCHAR);
    pub fn StorPortWriteRegisterUshort(
        HwDeviceExtension: PVOID,
        Register: *mut USHORT,
        Value: USHORT,
    );
    pub fn StorPortWriteRegisterUlong(HwDeviceExtension: PVOID, Register: *mut ULONG, Value: ULONG);
    pub fn StorPortWriteRegisterUlong64(
        HwDeviceExtension: PVOID,
        Register: *mut ULONG64,
        Value: ULONG64,
    );
}
