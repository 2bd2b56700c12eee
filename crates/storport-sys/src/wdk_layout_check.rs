//! Compile-time checks of this crate's Storport declarations against wdk-sys.
//!
//! `storport-sys` spells out Storport's C structures by hand (from `reference/layouts.md`), so
//! that the driver builds anywhere without the WDK. On a Windows host with the WDK, wdk-sys
//! (feature `storage`) runs bindgen over the real `storport.h`/`srb.h`: its types are the
//! authority. This module, compiled only with the `wdk` feature (which only a Windows host with
//! the WDK can build), fails the build if any hand-written structure differs from bindgen's in
//! size or alignment, or if a field the driver hands to Storport sits at another offset.
//!
//! bindgen keeps the C names (`typedef struct _X {..} X` becomes `struct _X` plus `type X`), so
//! both sides are named alike. Structures that are anonymous in C (`STOR_LOCK_QUEUE` and
//! `STOR_LOCK_HANDLE_CONTEXT`, the members of `STOR_LOCK_HANDLE`) have no bindgen name and are
//! covered by the size of their parent.

// wdk-sys is a Windows-only dependency: with `--all-features` on another host the feature is on
// but the crate is absent, so the checks exist only where wdk-sys does.
#![cfg(windows)]

use core::mem::{align_of, offset_of, size_of};

use crate as ffi;

/// Asserts that each named structure has the same size and alignment in both declarations.
macro_rules! same_layout {
    ($($name:ident),* $(,)?) => {
        $(
            const _: () = {
                assert!(
                    size_of::<ffi::$name>() == size_of::<wdk_sys::$name>(),
                    concat!("storport_sys::", stringify!($name), " differs in size from wdk-sys")
                );
                assert!(
                    align_of::<ffi::$name>() == align_of::<wdk_sys::$name>(),
                    concat!("storport_sys::", stringify!($name), " differs in alignment from wdk-sys")
                );
            };
        )*
    };
}

/// Asserts that each named field of a structure sits at the same offset in both declarations.
macro_rules! same_offsets {
    ($name:ident: $($field:ident),* $(,)?) => {
        $(
            const _: () = assert!(
                offset_of!(ffi::$name, $field) == offset_of!(wdk_sys::$name, $field),
                concat!(
                    "storport_sys::", stringify!($name), "::", stringify!($field),
                    " differs in offset from wdk-sys"
                )
            );
        )*
    };
}

same_layout!(
    HW_INITIALIZATION_DATA,
    ACCESS_RANGE,
    MEMORY_REGION,
    PORT_CONFIGURATION_INFORMATION,
    STOR_SCATTER_GATHER_ELEMENT,
    STOR_SCATTER_GATHER_LIST,
    STOR_LOCK_HANDLE,
    DPC_BUFFER,
    STOR_DPC,
    GROUP_AFFINITY,
    PERF_CONFIGURATION_DATA,
    STARTIO_PERFORMANCE_PARAMETERS,
    MESSAGE_INTERRUPT_INFORMATION,
    SCSI_SUPPORTED_CONTROL_TYPE_LIST,
    GUID,
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

// Every field of the structure StorPortInitialize reads.
same_offsets!(HW_INITIALIZATION_DATA:
    HwInitializationDataSize, AdapterInterfaceType, HwInitialize, HwStartIo, HwInterrupt,
    HwFindAdapter, HwResetBus, HwDmaStarted, HwAdapterState, DeviceExtensionSize,
    SpecificLuExtensionSize, SrbExtensionSize, NumberOfAccessRanges, Reserved, MapBuffers,
    NeedPhysicalAddresses, TaggedQueuing, AutoRequestSense, MultipleRequestPerLu, ReceiveEvent,
    VendorIdLength, VendorId, PortVersionFlags, DeviceIdLength, DeviceId, HwAdapterControl,
    HwBuildIo, HwFreeAdapterResources, HwProcessServiceRequest, HwCompleteServiceIrp,
    HwInitializeTracing, HwCleanupTracing, HwTracingEnabled, FeatureSupport, SrbTypeFlags,
    AddressTypeFlags, HwUnitControl,
);

// The fields of PORT_CONFIGURATION_INFORMATION a miniport reads or sets in HwFindAdapter.
same_offsets!(PORT_CONFIGURATION_INFORMATION:
    Length, SystemIoBusNumber, AdapterInterfaceType, BusInterruptLevel, BusInterruptVector,
    InterruptMode, MaximumTransferLength, NumberOfPhysicalBreaks, AlignmentMask,
    NumberOfAccessRanges, AccessRanges, NumberOfBuses, ScatterGather, Master, CachesData,
    Dma32BitAddresses, MapBuffers, NeedPhysicalAddresses, TaggedQueuing, AutoRequestSense,
    MultipleRequestPerLu, MaximumNumberOfTargets, SrbType, AddressType, SlotNumber,
    DeviceExtensionSize, SpecificLuExtensionSize, SrbExtensionSize, Dma64BitAddresses,
    MaximumNumberOfLogicalUnits, SynchronizationModel, HwMSInterruptRoutine,
    InterruptSynchronizationMode, DumpRegion, RequestedDumpBufferSize, VirtualDevice, DumpMode,
    DmaAddressWidth, ExtendedFlags1, MaxNumberOfIO, MaxIOsPerLun, InitialLunQueueDepth,
    BusResetHoldTime, FeatureSupport,
);
