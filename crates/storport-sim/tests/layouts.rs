//! The sim reads the Storport ABI independently of `storport_sys` (see `abi.rs`); here the two
//! readings must agree, so a layout slip on either side fails a test instead of corrupting memory.

use std::mem::{offset_of, size_of};

use storport_sim::abi;
use storport_sys as ffi;

#[test]
fn structure_sizes_agree() {
    assert_eq!(
        size_of::<ffi::HW_INITIALIZATION_DATA>(),
        size_of::<abi::HwInitializationData>()
    );
    assert_eq!(
        size_of::<ffi::PORT_CONFIGURATION_INFORMATION>(),
        size_of::<abi::PortConfigurationInformation>()
    );
    assert_eq!(
        size_of::<ffi::STORAGE_REQUEST_BLOCK>(),
        size_of::<abi::StorageRequestBlock>()
    );
    assert_eq!(
        size_of::<ffi::STOR_LOCK_HANDLE>(),
        size_of::<abi::StorLockHandle>()
    );
    assert_eq!(size_of::<ffi::STOR_DPC>(), abi::STOR_DPC_SIZE);
    assert_eq!(
        size_of::<ffi::PERF_CONFIGURATION_DATA>(),
        size_of::<abi::PerfConfigurationData>()
    );
    assert_eq!(
        size_of::<ffi::STARTIO_PERFORMANCE_PARAMETERS>(),
        size_of::<abi::StartIoPerformanceParameters>()
    );
    assert_eq!(
        size_of::<ffi::MESSAGE_INTERRUPT_INFORMATION>(),
        size_of::<abi::MessageInterruptInformation>()
    );
    assert_eq!(
        size_of::<ffi::STOR_ADDR_BTL8>(),
        size_of::<abi::StorAddrBtl8>()
    );
    assert_eq!(size_of::<ffi::SRBEX_DATA_SCSI_CDB16>(), 40);
}

#[test]
fn field_offsets_agree() {
    assert_eq!(
        offset_of!(ffi::HW_INITIALIZATION_DATA, HwBuildIo),
        offset_of!(abi::HwInitializationData, HwBuildIo)
    );
    assert_eq!(
        offset_of!(ffi::HW_INITIALIZATION_DATA, SrbTypeFlags),
        offset_of!(abi::HwInitializationData, SrbTypeFlags)
    );
    assert_eq!(
        offset_of!(ffi::PORT_CONFIGURATION_INFORMATION, SrbExtensionSize),
        offset_of!(abi::PortConfigurationInformation, SrbExtensionSize)
    );
    assert_eq!(
        offset_of!(ffi::PORT_CONFIGURATION_INFORMATION, HwMSInterruptRoutine),
        offset_of!(abi::PortConfigurationInformation, HwMSInterruptRoutine)
    );
    assert_eq!(
        offset_of!(ffi::PORT_CONFIGURATION_INFORMATION, DumpMode),
        offset_of!(abi::PortConfigurationInformation, DumpMode)
    );
    assert_eq!(
        offset_of!(ffi::STORAGE_REQUEST_BLOCK, MiniportContext),
        offset_of!(abi::StorageRequestBlock, MiniportContext)
    );
    assert_eq!(
        offset_of!(ffi::STORAGE_REQUEST_BLOCK, SrbExDataOffset),
        offset_of!(abi::StorageRequestBlock, SrbExDataOffset)
    );
}

#[test]
fn codes_agree() {
    assert_eq!(ffi::ExtFunctionAcquireSpinLock, abi::EXT_ACQUIRE_SPIN_LOCK);
    assert_eq!(
        ffi::ExtFunctionInitializePerformanceOptimizations,
        abi::EXT_INITIALIZE_PERFORMANCE_OPTIMIZATIONS
    );
    assert_eq!(
        ffi::EnablePassiveInitialization,
        abi::ENABLE_PASSIVE_INITIALIZATION
    );
    assert_eq!(ffi::IssueDpc, abi::ISSUE_DPC);
    assert_eq!(
        ffi::STOR_STATUS_NOT_IMPLEMENTED,
        abi::STOR_STATUS_NOT_IMPLEMENTED
    );
}
