/*
 * vioblk_storport_compat.h: the Storport interface a modern (SRB_EX, STOR_DPC, perf options,
 * Ex locks, MSI) physical miniport needs, for Debian's mingw-w64 (gcc, x86_64-w64-mingw32).
 *
 * Written for vioblk's tools/peer from ../shared/reference/layouts.md (x64 layouts checked there
 * against the real WDK headers) and Microsoft's public DDI documentation; it copies no WDK,
 * ReactOS or mingw storport text. It takes from mingw-w64 only what mingw legitimately provides:
 * ntddk.h (kernel types, the Ke and Mm declarations) and ddk/scsi.h (CDB, INQUIRYDATA, SENSE_DATA,
 * mode and VPD pages). mingw's ddk/srb.h (ScsiPort's older HW_INITIALIZATION_DATA and
 * PORT_CONFIGURATION_INFORMATION) is kept out: its include guard is defined below and the SRB
 * definitions Storport miniports need are here instead.
 *
 * Every structure's size and the offsets layouts.md gives are checked with _Static_assert at the
 * end, so a mistake here fails the compile rather than the driver.
 */
#ifndef VIOBLK_STORPORT_COMPAT_H
#define VIOBLK_STORPORT_COMPAT_H

#ifndef _AMD64_
#define _AMD64_ 1
#endif

#include <ntddk.h>

/* Storport's structures are laid out with the default packing whatever the includer set. */
#pragma pack(push, 8)

/* MSVC's __forceinline is `inline` with a strong hint; mingw's is `extern __inline__` (gnu_inline),
 * which cannot be combined with `static` (VirtIO's osdep.h defines inline as __forceinline and
 * then writes `static inline`). */
#undef __forceinline
#define __forceinline __inline__ __attribute__((__always_inline__))
#undef FORCEINLINE
#define FORCEINLINE __forceinline

/* Keep ScsiPort's srb.h out (see the top of this file). */
#define _NTSRB_ 1
#define _NTSTORPORT_ 1

/* ---- SRB constants (layouts.md "#define constants") ---------------------------------------- */
#define SRB_FUNCTION_EXECUTE_SCSI 0x00
#define SRB_FUNCTION_CLAIM_DEVICE 0x01
#define SRB_FUNCTION_IO_CONTROL 0x02
#define SRB_FUNCTION_RECEIVE_EVENT 0x03
#define SRB_FUNCTION_RELEASE_QUEUE 0x04
#define SRB_FUNCTION_ATTACH_DEVICE 0x05
#define SRB_FUNCTION_RELEASE_DEVICE 0x06
#define SRB_FUNCTION_SHUTDOWN 0x07
#define SRB_FUNCTION_FLUSH 0x08
#define SRB_FUNCTION_PROTOCOL_COMMAND 0x09
#define SRB_FUNCTION_EXECUTE_NVME 0x0A
#define SRB_FUNCTION_ABORT_COMMAND 0x10
#define SRB_FUNCTION_RELEASE_RECOVERY 0x11
#define SRB_FUNCTION_RESET_BUS 0x12
#define SRB_FUNCTION_RESET_DEVICE 0x13
#define SRB_FUNCTION_TERMINATE_IO 0x14
#define SRB_FUNCTION_FLUSH_QUEUE 0x15
#define SRB_FUNCTION_REMOVE_DEVICE 0x16
#define SRB_FUNCTION_WMI 0x17
#define SRB_FUNCTION_LOCK_QUEUE 0x18
#define SRB_FUNCTION_UNLOCK_QUEUE 0x19
#define SRB_FUNCTION_QUIESCE_DEVICE 0x1A
#define SRB_FUNCTION_RESET_LOGICAL_UNIT 0x20
#define SRB_FUNCTION_SET_LINK_TIMEOUT 0x21
#define SRB_FUNCTION_LINK_TIMEOUT_OCCURRED 0x22
#define SRB_FUNCTION_LINK_TIMEOUT_COMPLETE 0x23
#define SRB_FUNCTION_POWER 0x24
#define SRB_FUNCTION_PNP 0x25
#define SRB_FUNCTION_DUMP_POINTERS 0x26
#define SRB_FUNCTION_FREE_DUMP_POINTERS 0x27
#define SRB_FUNCTION_STORAGE_REQUEST_BLOCK 0x28

#define SRB_STATUS_PENDING 0x00
#define SRB_STATUS_SUCCESS 0x01
#define SRB_STATUS_ABORTED 0x02
#define SRB_STATUS_ABORT_FAILED 0x03
#define SRB_STATUS_ERROR 0x04
#define SRB_STATUS_BUSY 0x05
#define SRB_STATUS_INVALID_REQUEST 0x06
#define SRB_STATUS_INVALID_PATH_ID 0x07
#define SRB_STATUS_NO_DEVICE 0x08
#define SRB_STATUS_TIMEOUT 0x09
#define SRB_STATUS_SELECTION_TIMEOUT 0x0A
#define SRB_STATUS_COMMAND_TIMEOUT 0x0B
#define SRB_STATUS_MESSAGE_REJECTED 0x0D
#define SRB_STATUS_BUS_RESET 0x0E
#define SRB_STATUS_PARITY_ERROR 0x0F
#define SRB_STATUS_REQUEST_SENSE_FAILED 0x10
#define SRB_STATUS_NO_HBA 0x11
#define SRB_STATUS_DATA_OVERRUN 0x12
#define SRB_STATUS_UNEXPECTED_BUS_FREE 0x13
#define SRB_STATUS_PHASE_SEQUENCE_FAILURE 0x14
#define SRB_STATUS_BAD_SRB_BLOCK_LENGTH 0x15
#define SRB_STATUS_REQUEST_FLUSHED 0x16
#define SRB_STATUS_INVALID_LUN 0x20
#define SRB_STATUS_INVALID_TARGET_ID 0x21
#define SRB_STATUS_BAD_FUNCTION 0x22
#define SRB_STATUS_ERROR_RECOVERY 0x23
#define SRB_STATUS_NOT_POWERED 0x24
#define SRB_STATUS_LINK_DOWN 0x25
#define SRB_STATUS_INSUFFICIENT_RESOURCES 0x26
#define SRB_STATUS_THROTTLED_REQUEST 0x27
#define SRB_STATUS_INVALID_PARAMETER 0x28
#define SRB_STATUS_INTERNAL_ERROR 0x30
#define SRB_STATUS_QUEUE_FROZEN 0x40
#define SRB_STATUS_AUTOSENSE_VALID 0x80
#define SRB_STATUS(Status) ((Status) & ~(SRB_STATUS_AUTOSENSE_VALID | SRB_STATUS_QUEUE_FROZEN))

#define SRB_FLAGS_QUEUE_ACTION_ENABLE 0x00000002
#define SRB_FLAGS_DISABLE_DISCONNECT 0x00000004
#define SRB_FLAGS_DISABLE_SYNCH_TRANSFER 0x00000008
#define SRB_FLAGS_BYPASS_FROZEN_QUEUE 0x00000010
#define SRB_FLAGS_DISABLE_AUTOSENSE 0x00000020
#define SRB_FLAGS_DATA_IN 0x00000040
#define SRB_FLAGS_DATA_OUT 0x00000080
#define SRB_FLAGS_NO_DATA_TRANSFER 0x00000000
#define SRB_FLAGS_UNSPECIFIED_DIRECTION (SRB_FLAGS_DATA_IN | SRB_FLAGS_DATA_OUT)
#define SRB_FLAGS_NO_QUEUE_FREEZE 0x00000100
#define SRB_FLAGS_ADAPTER_CACHE_ENABLE 0x00000200
#define SRB_FLAGS_FREE_SENSE_BUFFER 0x00000400
#define SRB_FLAGS_D3_PROCESSING 0x00000800
#define SRB_FLAGS_SEQUENTIAL_REQUIRED 0x00001000
#define SRB_FLAGS_IS_ACTIVE 0x00010000
#define SRB_FLAGS_NO_KEEP_AWAKE 0x00100000

#define SRB_SIMPLE_TAG_REQUEST 0x20
#define SRB_HEAD_OF_QUEUE_TAG_REQUEST 0x21
#define SRB_ORDERED_QUEUE_TAG_REQUEST 0x22
#define SP_UNTAGGED 0xFF
#define SP_UNINITIALIZED_VALUE ((ULONG)~0)

#define SRB_SIGNATURE 0x53524258
#define STORAGE_REQUEST_BLOCK_VERSION_1 1
#define SRBEX_DATA_SCSI_CDB16_LENGTH 32
#define SRBEX_DATA_SCSI_CDB32_LENGTH 48

#define SRB_TYPE_FLAG_SCSI_REQUEST_BLOCK 0x1
#define SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK 0x2
#define ADDRESS_TYPE_FLAG_BTL8 0x1
#define SRB_TYPE_SCSI_REQUEST_BLOCK 0
#define SRB_TYPE_STORAGE_REQUEST_BLOCK 1
#define STORAGE_ADDRESS_TYPE_BTL8 0
#define STOR_ADDRESS_TYPE_BTL8 1
#define STOR_ADDRESS_TYPE_UNKNOWN 0
#define STOR_ADDR_BTL8_ADDRESS_LENGTH 4

#define STOR_MAP_NO_BUFFERS 0
#define STOR_MAP_ALL_BUFFERS 1
#define STOR_MAP_NON_READ_WRITE_BUFFERS 2
#define STOR_MAP_ALL_BUFFERS_INCLUDING_READ_WRITE 3

#define SP_RETURN_NOT_FOUND 0
#define SP_RETURN_FOUND 1
#define SP_RETURN_ERROR 2
#define SP_RETURN_BAD_CONFIG 3

#define SCSI_DMA64_MINIPORT_SUPPORTED 0x01
#define SCSI_DMA64_MINIPORT_FULL64BIT_SUPPORTED 0x02
#define SCSI_DMA64_MINIPORT_FULL64BIT_NO_BOUNDARY_REQ_SUPPORTED 0x03
#define SCSI_DMA64_SYSTEM_SUPPORTED 0x80
#define SCSI_MINIMUM_PHYSICAL_BREAKS 16
#define SCSI_MAXIMUM_PHYSICAL_BREAKS 255

#define DUMP_MODE_CRASH 1
#define DUMP_MODE_HIBER 2
#define DUMP_MODE_MARK_MEMORY 3
#define DUMP_MODE_RESUME 4

#define STOR_FEATURE_VIRTUAL_MINIPORT 0x00000001
#define STOR_FEATURE_ATA_PASS_THROUGH 0x00000002
#define STOR_FEATURE_FULL_PNP_DEVICE_CAPABILITIES 0x00000004
#define STOR_FEATURE_DUMP_POINTERS 0x00000008
#define STOR_FEATURE_DEVICE_NAME_NO_SUFFIX 0x00000010
#define STOR_FEATURE_DUMP_RESUME_CAPABLE 0x00000020
#define STOR_FEATURE_DEVICE_DESCRIPTOR_FROM_ATA_INFO_VPD 0x00000040
#define STOR_FEATURE_EXTRA_IO_INFORMATION 0x00000080
#define STOR_FEATURE_ADAPTER_CONTROL_PRE_FINDADAPTER 0x00000100
#define STOR_FEATURE_ADAPTER_NOT_REQUIRE_IO_PORT 0x00000200
#define STOR_FEATURE_DUMP_16_BYTE_ALIGNMENT 0x00000400
#define STOR_FEATURE_SET_ADAPTER_INTERFACE_TYPE 0x00000800
#define STOR_FEATURE_DUMP_INFO 0x00001000
#define STOR_FEATURE_DMA_ALLOCATION_NO_BOUNDARY 0x00002000
#define STOR_FEATURE_NVME 0x00004000
#define STOR_FEATURE_REPORT_INTERNAL_DATA 0x00008000
#define STOR_FEATURE_EARLY_DUMP 0x00010000

#define STOR_ADAPTER_FEATURE_DEVICE_TELEMETRY 0x00000001
#define STOR_ADAPTER_FEATURE_STOP_UNIT_DURING_POWER_DOWN 0x00000002
#define STOR_ADAPTER_UNCACHED_EXTENSION_NUMA_NODE_PREFERRED 0x00000004
#define STOR_ADAPTER_DMA_V3_PREFERRED 0x00000008
#define STOR_ADAPTER_FEATURE_ABORT_COMMAND 0x00000010
#define STOR_ADAPTER_FEATURE_RICH_TEMPERATURE_THRESHOLD 0x00000020
#define STOR_ADAPTER_DMA_ADDRESS_WIDTH_SPECIFIED 0x00000040

#define STOR_STATUS_SUCCESS 0x00000000UL
#define STOR_STATUS_UNSUCCESSFUL 0xC1000001UL
#define STOR_STATUS_NOT_IMPLEMENTED 0xC1000002UL
#define STOR_STATUS_INSUFFICIENT_RESOURCES 0xC1000003UL
#define STOR_STATUS_BUFFER_TOO_SMALL 0xC1000004UL
#define STOR_STATUS_ACCESS_DENIED 0xC1000005UL
#define STOR_STATUS_INVALID_PARAMETER 0xC1000006UL
#define STOR_STATUS_INVALID_DEVICE_REQUEST 0xC1000007UL
#define STOR_STATUS_INVALID_IRQL 0xC1000008UL
#define STOR_STATUS_INVALID_DEVICE_STATE 0xC1000009UL
#define STOR_STATUS_INVALID_BUFFER_SIZE 0xC100000AUL
#define STOR_STATUS_UNSUPPORTED_VERSION 0xC100000BUL
#define STOR_STATUS_BUSY 0xC100000CUL

#define STOR_PERF_DPC_REDIRECTION 0x00000001
#define STOR_PERF_CONCURRENT_CHANNELS 0x00000002
#define STOR_PERF_INTERRUPT_MESSAGE_RANGES 0x00000004
#define STOR_PERF_ADV_CONFIG_LOCALITY 0x00000008
#define STOR_PERF_OPTIMIZE_FOR_COMPLETION_DURING_STARTIO 0x00000010
#define STOR_PERF_DPC_REDIRECTION_CURRENT_CPU 0x00000020
#define STOR_PERF_NO_SGL 0x00000040
#define STOR_PERF_SOFT_NUMA 0x00000080
#define STOR_PERF_HETEROGENEOUS_CPU 0x00000100
#define STOR_PERF_VERSION_2 2
#define STOR_PERF_VERSION_3 3
#define STOR_PERF_VERSION_4 4
#define STOR_PERF_VERSION_5 5
#define STOR_PERF_VERSION STOR_PERF_VERSION_5

#define CONFIG_INFO_VERSION_2 208
#define CONFIG_INFO_VERSION_3 224
#define HW_INIT_DATA_SIZE_PHYSICAL 136

/* Error-log codes for StorPortLogError / LogSystemEvent (ErrorCode). */
#define SP_BUS_PARITY_ERROR 0x0001
#define SP_UNEXPECTED_DISCONNECT 0x0002
#define SP_INVALID_RESELECTION 0x0003
#define SP_BUS_TIME_OUT 0x0004
#define SP_PROTOCOL_ERROR 0x0005
#define SP_INTERNAL_ADAPTER_ERROR 0x0006
#define SP_REQUEST_TIMEOUT 0x0007
#define SP_IRQ_NOT_RESPONDING 0x0008
#define SP_BAD_FW_WARNING 0x0009
#define SP_BAD_FW_ERROR 0x000a
#define SP_LOST_WMI_MINIPORT_REQUEST 0x000b

/* PnP SRB flags and state-change entities. */
#define SRB_PNP_FLAGS_ADAPTER_REQUEST 0x00000001
#define STATE_CHANGE_LUN 0x1
#define STATE_CHANGE_TARGET 0x2
#define STATE_CHANGE_BUS 0x4

#include <scsi.h>
#include <ntddscsi.h>


/* ---- Firmware IOCTL (IOCTL_SCSI_MINIPORT_FIRMWARE) structures, from the public DDI docs;
 * mingw's ntddscsi.h predates them. Only viostor's firmware-query path uses them. ------------ */
#ifndef IOCTL_SCSI_MINIPORT_FIRMWARE
#define IOCTL_SCSI_MINIPORT_FIRMWARE ((0x0000001bUL << 16) + 0x0780)
#endif
#define FIRMWARE_FUNCTION_GET_INFO 0x01
#define FIRMWARE_FUNCTION_DOWNLOAD 0x02
#define FIRMWARE_FUNCTION_ACTIVATE 0x03
#define FIRMWARE_STATUS_SUCCESS 0x0
#define FIRMWARE_STATUS_ERROR 0x1
#define FIRMWARE_STATUS_ILLEGAL_REQUEST 0x2
#define FIRMWARE_STATUS_INVALID_PARAMETER 0x3
#define FIRMWARE_STATUS_INPUT_BUFFER_TOO_BIG 0x4
#define FIRMWARE_STATUS_OUTPUT_BUFFER_TOO_SMALL 0x5
#define FIRMWARE_REQUEST_BLOCK_STRUCTURE_VERSION 0x1
typedef struct _FIRMWARE_REQUEST_BLOCK {
    ULONG Version;
    ULONG Size;
    ULONG Function;
    ULONG Flags;
    ULONG DataBufferOffset;
    ULONG DataBufferLength;
} FIRMWARE_REQUEST_BLOCK, *PFIRMWARE_REQUEST_BLOCK;
#define STORAGE_FIRMWARE_INFO_STRUCTURE_VERSION_V2 0x2
#define STORAGE_FIRMWARE_INFO_INVALID_SLOT 0xFF
#define STORAGE_FIRMWARE_SLOT_INFO_V2_REVISION_LENGTH 16
typedef struct _STORAGE_FIRMWARE_SLOT_INFO_V2 {
    UCHAR SlotNumber;
    BOOLEAN ReadOnly;
    UCHAR Reserved[6];
    UCHAR Revision[STORAGE_FIRMWARE_SLOT_INFO_V2_REVISION_LENGTH];
} STORAGE_FIRMWARE_SLOT_INFO_V2, *PSTORAGE_FIRMWARE_SLOT_INFO_V2;
typedef struct _STORAGE_FIRMWARE_INFO_V2 {
    ULONG Version;
    ULONG Size;
    BOOLEAN UpgradeSupport;
    UCHAR SlotCount;
    UCHAR ActiveSlot;
    UCHAR PendingActivateSlot;
    BOOLEAN FirmwareShared;
    UCHAR Reserved[3];
    ULONG ImagePayloadAlignment;
    ULONG ImagePayloadMaxSize;
    STORAGE_FIRMWARE_SLOT_INFO_V2 Slot[1];
} STORAGE_FIRMWARE_INFO_V2, *PSTORAGE_FIRMWARE_INFO_V2;
#define STORAGE_FIRMWARE_DOWNLOAD_STRUCTURE_VERSION_V2 0x2
typedef struct _STORAGE_FIRMWARE_DOWNLOAD_V2 {
    ULONG Version;
    ULONG Size;
    ULONGLONG Offset;
    ULONGLONG BufferSize;
    UCHAR Slot;
    UCHAR Reserved[3];
    ULONG ImageSize;
    UCHAR ImageBuffer[1];
} STORAGE_FIRMWARE_DOWNLOAD_V2, *PSTORAGE_FIRMWARE_DOWNLOAD_V2;
#define STORAGE_FIRMWARE_ACTIVATE_STRUCTURE_VERSION 0x1
typedef struct _STORAGE_FIRMWARE_ACTIVATE {
    ULONG Version;
    ULONG Size;
    UCHAR SlotToActivate;
    UCHAR Reserved0[3];
} STORAGE_FIRMWARE_ACTIVATE, *PSTORAGE_FIRMWARE_ACTIVATE;


/* ---- SBC-3 data formats mingw's scsi.h lacks (written from the SCSI standard's byte tables;
 * multi-byte fields are big-endian byte arrays, bit fields fill from bit 0 as in MSVC) ------- */
#define VPD_BLOCK_LIMITS 0xB0
#define VPD_BLOCK_DEVICE_CHARACTERISTICS 0xB1
#define VPD_LOGICAL_BLOCK_PROVISIONING 0xB2
#define SCSI_SENSE_ERRORCODE_FIXED_CURRENT 0x70
#define SCSI_SENSE_ERRORCODE_FIXED_DEFERRED 0x71
#define SCSI_SENSEQ_CAPACITY_DATA_CHANGED 0x09
#define SCSI_SENSEQ_SPACE_ALLOC_FAILED_WRITE_PROTECT 0x07
#define PROVISIONING_TYPE_UNKNOWN 0x0
#define PROVISIONING_TYPE_RESOURCE 0x1
#define PROVISIONING_TYPE_THIN 0x2
#pragma pack(push, 1)
typedef struct _READ_CAPACITY16_DATA {
    LARGE_INTEGER LogicalBlockAddress;  /* bytes 0-7 */
    ULONG BytesPerBlock;                /* bytes 8-11 */
    UCHAR ProtectionEnable : 1;         /* byte 12 */
    UCHAR ProtectionType : 3;
    UCHAR Reserved : 4;
    UCHAR LogicalPerPhysicalExponent : 4; /* byte 13 */
    UCHAR ProtectionInfoExponent : 4;
    UCHAR LowestAlignedBlock_MSB : 6;   /* byte 14 */
    UCHAR LBPRZ : 1;
    UCHAR LBPME : 1;
    UCHAR LowestAlignedBlock_LSB;       /* byte 15 */
    UCHAR Reserved3[16];                /* bytes 16-31 */
} READ_CAPACITY16_DATA, *PREAD_CAPACITY16_DATA;

typedef struct _VPD_BLOCK_LIMITS_PAGE {
    UCHAR DeviceType : 5;
    UCHAR DeviceTypeQualifier : 3;
    UCHAR PageCode;
    UCHAR PageLength[2];
    UCHAR Reserved0;                            /* byte 4: the page length counts from here */
    UCHAR MaximumCompareAndWriteLength;
    UCHAR OptimalTransferLengthGranularity[2];
    UCHAR MaximumTransferLength[4];
    UCHAR OptimalTransferLength[4];
    UCHAR MaxPrefetchXDReadXDWriteTransferLength[4];
    UCHAR MaximumUnmapLBACount[4];              /* byte 20 */
    UCHAR MaximumUnmapBlockDescriptorCount[4];
    UCHAR OptimalUnmapGranularity[4];
    union {                                     /* byte 32 */
        struct {
            UCHAR UnmapGranularityAlignmentByte3 : 7;
            UCHAR UGAValid : 1;
            UCHAR UnmapGranularityAlignmentByte2;
            UCHAR UnmapGranularityAlignmentByte1;
            UCHAR UnmapGranularityAlignmentByte0;
        };
        UCHAR UnmapGranularityAlignment[4];
    };
    UCHAR MaxWriteSameLength[8];
    UCHAR Reserved1[20];                        /* to byte 63 */
} VPD_BLOCK_LIMITS_PAGE, *PVPD_BLOCK_LIMITS_PAGE;

typedef struct _VPD_BLOCK_DEVICE_CHARACTERISTICS_PAGE {
    UCHAR DeviceType : 5;
    UCHAR DeviceTypeQualifier : 3;
    UCHAR PageCode;
    UCHAR Reserved0;
    UCHAR PageLength;
    UCHAR MediumRotationRateMsb;
    UCHAR MediumRotationRateLsb;
    UCHAR MediumProductType;
    UCHAR NominalFormFactor : 4;
    UCHAR Reserved1 : 4;
    UCHAR Reserved2[56];
} VPD_BLOCK_DEVICE_CHARACTERISTICS_PAGE, *PVPD_BLOCK_DEVICE_CHARACTERISTICS_PAGE;

typedef struct _VPD_LOGICAL_BLOCK_PROVISIONING_PAGE {
    UCHAR DeviceType : 5;
    UCHAR DeviceTypeQualifier : 3;
    UCHAR PageCode;
    UCHAR PageLength[2];
    UCHAR ThresholdExponent;
    UCHAR DP : 1;
    UCHAR ANC_SUP : 1;
    UCHAR LBPRZ : 1;
    UCHAR Reserved0 : 2;
    UCHAR LBPWS10 : 1;
    UCHAR LBPWS : 1;
    UCHAR LBPU : 1;
    UCHAR ProvisioningType : 3;
    UCHAR Reserved1 : 5;
    UCHAR Reserved2;
    UCHAR ProvisioningGroupDescr[];
} VPD_LOGICAL_BLOCK_PROVISIONING_PAGE, *PVPD_LOGICAL_BLOCK_PROVISIONING_PAGE;

typedef struct _UNMAP_BLOCK_DESCRIPTOR {
    UCHAR StartingLba[8];
    UCHAR LbaCount[4];
    UCHAR Reserved[4];
} UNMAP_BLOCK_DESCRIPTOR, *PUNMAP_BLOCK_DESCRIPTOR;

typedef struct _UNMAP_LIST_HEADER {
    UCHAR DataLength[2];
    UCHAR BlockDescrDataLength[2];
    UCHAR Reserved[4];
    UNMAP_BLOCK_DESCRIPTOR Descriptors[];
} UNMAP_LIST_HEADER, *PUNMAP_LIST_HEADER;
#pragma pack(pop)
_Static_assert(sizeof(READ_CAPACITY16_DATA) == 32, "READ CAPACITY(16) data is 32 bytes");
_Static_assert(__builtin_offsetof(VPD_BLOCK_LIMITS_PAGE, UnmapGranularityAlignment) == 32, "UGA at 32");
_Static_assert(sizeof(VPD_BLOCK_LIMITS_PAGE) == 64, "block limits page is 64 bytes");
_Static_assert(sizeof(VPD_BLOCK_DEVICE_CHARACTERISTICS_PAGE) == 64, "characteristics page is 64 bytes");
_Static_assert(sizeof(UNMAP_BLOCK_DESCRIPTOR) == 16, "UNMAP descriptor is 16 bytes");

/* ---- Enums (layouts.md "Enums"; 4 bytes each) --------------------------------------------- */
typedef enum _STORPORT_FUNCTION_CODE {
    ExtFunctionAllocatePool = 0,
    ExtFunctionFreePool = 1,
    ExtFunctionAllocateMdl = 2,
    ExtFunctionFreeMdl = 3,
    ExtFunctionBuildMdlForNonPagedPool = 4,
    ExtFunctionGetSystemAddress = 5,
    ExtFunctionGetOriginalMdl = 6,
    ExtFunctionCompleteServiceIrp = 7,
    ExtFunctionGetDeviceObjects = 8,
    ExtFunctionBuildScatterGatherList = 9,
    ExtFunctionPutScatterGatherList = 10,
    ExtFunctionAcquireMSISpinLock = 11,
    ExtFunctionReleaseMSISpinLock = 12,
    ExtFunctionGetMessageInterruptInformation = 13,
    ExtFunctionInitializePerformanceOptimizations = 14,
    ExtFunctionGetStartIoPerformanceParameters = 15,
    ExtFunctionLogSystemEvent = 16,
    ExtFunctionInitializeWorker = 29,
    ExtFunctionQueueWorkItem = 30,
    ExtFunctionFreeWorker = 31,
    ExtFunctionInitializeTimer = 32,
    ExtFunctionRequestTimer = 33,
    ExtFunctionFreeTimer = 34,
    ExtFunctionGetSystemPortNumber = 41,
    ExtFunctionSetUnitAttributes = 46,
    ExtFunctionQueryPerformanceCounter = 47,
    ExtFunctionInitializeSpinlock = 75,
    ExtFunctionDelayExecution = 81,
    ExtFunctionAllocateDmaMemory = 82,
    ExtFunctionFreeDmaMemory = 83,
    ExtFunctionAcquireSpinLock = 93,
    ExtFunctionSetFeatureList = 103,
    ExtFunctionGetCurrentIrql = 109,
} STORPORT_FUNCTION_CODE;

typedef enum _SCSI_NOTIFICATION_TYPE {
    RequestComplete = 0,
    NextRequest = 1,
    NextLuRequest = 2,
    ResetDetected = 3,
    CallDisableInterrupts = 4,
    CallEnableInterrupts = 5,
    RequestTimerCall = 6,
    BusChangeDetected = 7,
    WMIEvent = 8,
    WMIReregister = 9,
    LinkUp = 10,
    LinkDown = 11,
    QueryTickCount = 12,
    BufferOverrunDetected = 13,
    TraceNotification = 14,
    GetExtendedFunctionTable = 15,
    EnablePassiveInitialization = 0x1000,
    InitializeDpc = 0x1001,
    IssueDpc = 0x1002,
    AcquireSpinLock = 0x1003,
    ReleaseSpinLock = 0x1004,
    StateChangeDetectedCall = 0x1005,
    IoTargetRequestServiceTime = 0x1006,
    AsyncNotificationDetected = 0x1007,
    RequestDirectComplete = 0x1008,
    InitializeDpcWithContext = 0x1009,
    InitializeThreadedDpc = 0x100A,
    SetTargetProcessorDpc = 0x100B,
    MarkDeviceFailed = 0x100C,
    MarkDeviceFailedEx = 0x100D,
    TerminateSystemThread = 0x100E,
} SCSI_NOTIFICATION_TYPE, *PSCSI_NOTIFICATION_TYPE;

typedef enum _SCSI_ADAPTER_CONTROL_TYPE {
    ScsiQuerySupportedControlTypes = 0,
    ScsiStopAdapter = 1,
    ScsiRestartAdapter = 2,
    ScsiSetBootConfig = 3,
    ScsiSetRunningConfig = 4,
    ScsiPowerSettingNotification = 5,
    ScsiAdapterPower = 6,
    ScsiAdapterPoFxPowerRequired = 7,
    ScsiAdapterPoFxPowerActive = 8,
    ScsiAdapterPoFxPowerSetFState = 9,
    ScsiAdapterPoFxPowerControl = 10,
    ScsiAdapterPrepareForBusReScan = 11,
    ScsiAdapterSystemPowerHints = 12,
    ScsiAdapterFilterResourceRequirements = 13,
    ScsiAdapterPoFxMaxOperationalPower = 14,
    ScsiAdapterPoFxSetPerfState = 15,
    ScsiAdapterSurpriseRemoval = 16,
    ScsiAdapterSerialNumber = 17,
    ScsiAdapterCryptoOperation = 18,
    ScsiAdapterQueryFruId = 19,
    ScsiAdapterSetEventLogging = 20,
    ScsiAdapterReportInternalData = 21,
    ScsiAdapterResetBusSynchronous = 22,
    ScsiAdapterPostHwInitialize = 23,
    ScsiAdapterPrepareEarlyDumpData = 24,
    ScsiAdapterRestoreEarlyDumpData = 25,
    ScsiAdapterControlMax = 26,
    MakeAdapterControlTypeSizeOfUlong = 0xffffffff
} SCSI_ADAPTER_CONTROL_TYPE, *PSCSI_ADAPTER_CONTROL_TYPE;

typedef enum _SCSI_ADAPTER_CONTROL_STATUS {
    ScsiAdapterControlSuccess = 0,
    ScsiAdapterControlUnsuccessful = 1,
    ScsiAdapterControlRetryNeeded = 2,
    ScsiAdapterControlBufferTooSmall = 3,
} SCSI_ADAPTER_CONTROL_STATUS, *PSCSI_ADAPTER_CONTROL_STATUS;

typedef enum _SCSI_UNIT_CONTROL_TYPE {
    ScsiQuerySupportedUnitControlTypes = 0,
    ScsiUnitUsage = 1,
    ScsiUnitStart = 2,
    ScsiUnitPower = 3,
    ScsiUnitPoFxPowerInfo = 4,
    ScsiUnitPoFxPowerRequired = 5,
    ScsiUnitPoFxPowerActive = 6,
    ScsiUnitPoFxPowerSetFState = 7,
    ScsiUnitPoFxPowerControl = 8,
    ScsiUnitRemove = 9,
    ScsiUnitSurpriseRemoval = 10,
    ScsiUnitRichDescription = 11,
    ScsiUnitQueryBusType = 12,
    ScsiUnitQueryFruId = 13,
    ScsiUnitReportInternalData = 14,
    ScsiUnitControlMax,
    MakeUnitControlTypeSizeOfUlong = 0xffffffff
} SCSI_UNIT_CONTROL_TYPE, *PSCSI_UNIT_CONTROL_TYPE;

typedef enum _SCSI_UNIT_CONTROL_STATUS {
    ScsiUnitControlSuccess = 0,
    ScsiUnitControlUnsuccessful = 1,
} SCSI_UNIT_CONTROL_STATUS, *PSCSI_UNIT_CONTROL_STATUS;

typedef enum _STOR_SYNCHRONIZATION_MODEL {
    StorSynchronizeHalfDuplex = 0,
    StorSynchronizeFullDuplex = 1,
} STOR_SYNCHRONIZATION_MODEL;

typedef enum _INTERRUPT_SYNCHRONIZATION_MODE {
    InterruptSupportNone = 0,
    InterruptSynchronizeAll = 1,
    InterruptSynchronizePerMessage = 2,
} INTERRUPT_SYNCHRONIZATION_MODE;

typedef enum _STOR_SPINLOCK {
    DpcLock = 1,
    StartIoLock = 2,
    InterruptLock = 3,
    ThreadedDpcLock = 4,
    DpcLevelLock = 5,
} STOR_SPINLOCK;

typedef enum _SRBEXDATATYPE {
    SrbExDataTypeUnknown = 0,
    SrbExDataTypeBidirectional = 1,
    SrbExDataTypeScsiCdb16 = 0x40,
    SrbExDataTypeScsiCdb32 = 0x41,
    SrbExDataTypeScsiCdbVar = 0x42,
    SrbExDataTypeNvmeCommand = 0x43,
    SrbExDataTypeWmi = 0x60,
    SrbExDataTypePower = 0x61,
    SrbExDataTypePnP = 0x62,
    SrbExDataTypeIoInfo = 0x80,
    SrbExDataTypeMSReservedStart = 0xf0000000,
    SrbExDataTypeReserved = 0xffffffff
} SRBEXDATATYPE, *PSRBEXDATATYPE;

/* The PnP SRB's action and the storage device power and capability types (DDI docs). */
typedef enum _STOR_PNP_ACTION {
    StorStartDevice = 0x0,
    StorRemoveDevice = 0x2,
    StorStopDevice = 0x4,
    StorQueryCapabilities = 0x9,
    StorQueryResourceRequirements = 0xB,
    StorFilterResourceRequirements = 0xD,
    StorSurpriseRemoval = 0x17
} STOR_PNP_ACTION, *PSTOR_PNP_ACTION;

typedef enum _STOR_DEVICE_POWER_STATE {
    StorPowerDeviceUnspecified = 0,
    StorPowerDeviceD0,
    StorPowerDeviceD1,
    StorPowerDeviceD2,
    StorPowerDeviceD3,
    StorPowerDeviceMaximum
} STOR_DEVICE_POWER_STATE, *PSTOR_DEVICE_POWER_STATE;

typedef enum _STOR_POWER_ACTION {
    StorPowerActionNone = 0,
    StorPowerActionReserved,
    StorPowerActionSleep,
    StorPowerActionHibernate,
    StorPowerActionShutdown,
    StorPowerActionShutdownReset,
    StorPowerActionShutdownOff,
    StorPowerActionWarmEject
} STOR_POWER_ACTION, *PSTOR_POWER_ACTION;

typedef enum _STOR_EVENT_ASSOCIATION_ENUM {
    StorEventAdapterAssociation = 0,
    StorEventLunAssociation,
    StorEventTargetAssociation,
    StorEventInvalidAssociation
} STOR_EVENT_ASSOCIATION_ENUM;

/* ---- Structures (layouts.md; asserted at the end) ----------------------------------------- */
typedef PHYSICAL_ADDRESS STOR_PHYSICAL_ADDRESS, *PSTOR_PHYSICAL_ADDRESS;
typedef PHYSICAL_ADDRESS SCSI_PHYSICAL_ADDRESS, *PSCSI_PHYSICAL_ADDRESS;

typedef struct _ACCESS_RANGE {
    STOR_PHYSICAL_ADDRESS RangeStart;
    ULONG RangeLength;
    BOOLEAN RangeInMemory;
} ACCESS_RANGE, *PACCESS_RANGE;

typedef struct _MEMORY_REGION {
    PUCHAR VirtualBase;
    PHYSICAL_ADDRESS PhysicalBase;
    ULONG Length;
} MEMORY_REGION, *PMEMORY_REGION;

typedef struct _STOR_SCATTER_GATHER_ELEMENT {
    STOR_PHYSICAL_ADDRESS PhysicalAddress;
    ULONG Length;
    ULONG_PTR Reserved;
} STOR_SCATTER_GATHER_ELEMENT, *PSTOR_SCATTER_GATHER_ELEMENT;

typedef struct _STOR_SCATTER_GATHER_LIST {
    ULONG NumberOfElements;
    ULONG_PTR Reserved;
    STOR_SCATTER_GATHER_ELEMENT List[];
} STOR_SCATTER_GATHER_LIST, *PSTOR_SCATTER_GATHER_LIST;

typedef struct _STOR_LOCK_HANDLE {
    STOR_SPINLOCK Lock;
    struct {
        struct {
            PVOID Next;
            PVOID Lock;
        } LockQueue;
        KIRQL OldIrql;
    } Context;
} STOR_LOCK_HANDLE, *PSTOR_LOCK_HANDLE;

typedef struct _DPC_BUFFER {
    UCHAR Opaque[64];
} DPC_BUFFER;

typedef struct _STOR_DPC {
    DPC_BUFFER Dpc;
    ULONG_PTR Lock;
} STOR_DPC, *PSTOR_DPC;

typedef struct _PERF_CONFIGURATION_DATA {
    ULONG Version;
    ULONG Size;
    ULONG Flags;
    ULONG ConcurrentChannels;
    ULONG FirstRedirectionMessageNumber;
    ULONG LastRedirectionMessageNumber;
    ULONG DeviceNode;
    ULONG Reserved;
    PGROUP_AFFINITY MessageTargets;
} PERF_CONFIGURATION_DATA, *PPERF_CONFIGURATION_DATA;

typedef struct _STARTIO_PERFORMANCE_PARAMETERS {
    ULONG Version;
    ULONG Size;
    ULONG MessageNumber;
    ULONG ChannelNumber;
} STARTIO_PERFORMANCE_PARAMETERS, *PSTARTIO_PERFORMANCE_PARAMETERS;

typedef struct _MESSAGE_INTERRUPT_INFORMATION {
    ULONG MessageId;
    ULONG MessageData;
    STOR_PHYSICAL_ADDRESS MessageAddress;
    ULONG InterruptVector;
    ULONG InterruptLevel;
    KINTERRUPT_MODE InterruptMode;
} MESSAGE_INTERRUPT_INFORMATION, *PMESSAGE_INTERRUPT_INFORMATION;

typedef struct _SCSI_SUPPORTED_CONTROL_TYPE_LIST {
    ULONG MaxControlType;
    BOOLEAN SupportedTypeList[];
} SCSI_SUPPORTED_CONTROL_TYPE_LIST, *PSCSI_SUPPORTED_CONTROL_TYPE_LIST;

typedef struct _SCSI_REQUEST_BLOCK {
    USHORT Length;
    UCHAR Function;
    UCHAR SrbStatus;
    UCHAR ScsiStatus;
    UCHAR PathId;
    UCHAR TargetId;
    UCHAR Lun;
    UCHAR QueueTag;
    UCHAR QueueAction;
    UCHAR CdbLength;
    UCHAR SenseInfoBufferLength;
    ULONG SrbFlags;
    ULONG DataTransferLength;
    ULONG TimeOutValue;
    PVOID DataBuffer;
    PVOID SenseInfoBuffer;
    struct _SCSI_REQUEST_BLOCK *NextSrb;
    PVOID OriginalRequest;
    PVOID SrbExtension;
    union {
        ULONG InternalStatus;
        ULONG QueueSortKey;
        ULONG LinkTimeoutValue;
    };
    ULONG Reserved;
    UCHAR Cdb[16];
} SCSI_REQUEST_BLOCK, *PSCSI_REQUEST_BLOCK;

typedef struct _SCSI_PNP_REQUEST_BLOCK {
    USHORT Length;
    UCHAR Function;
    UCHAR SrbStatus;
    UCHAR PnPSubFunction;
    UCHAR PathId;
    UCHAR TargetId;
    UCHAR Lun;
    STOR_PNP_ACTION PnPAction;
    ULONG SrbFlags;
    ULONG DataTransferLength;
    ULONG TimeOutValue;
    PVOID DataBuffer;
    PVOID SenseInfoBuffer;
    struct _SCSI_REQUEST_BLOCK *NextSrb;
    PVOID OriginalRequest;
    PVOID SrbExtension;
    ULONG SrbPnPFlags;
    ULONG Reserved;
    UCHAR Reserved4[16];
} SCSI_PNP_REQUEST_BLOCK, *PSCSI_PNP_REQUEST_BLOCK;

typedef struct _SCSI_WMI_REQUEST_BLOCK {
    USHORT Length;
    UCHAR Function;
    UCHAR SrbStatus;
    UCHAR WMISubFunction;
    UCHAR PathId;
    UCHAR TargetId;
    UCHAR Lun;
    UCHAR Reserved1;
    UCHAR WMIFlags;
    UCHAR Reserved2[2];
    ULONG SrbFlags;
    ULONG DataTransferLength;
    ULONG TimeOutValue;
    PVOID DataBuffer;
    PVOID DataPath;
    PVOID Reserved3;
    PVOID OriginalRequest;
    PVOID SrbExtension;
    ULONG Reserved4;
    ULONG Reserved6;
    UCHAR Reserved5[16];
} SCSI_WMI_REQUEST_BLOCK, *PSCSI_WMI_REQUEST_BLOCK;

/* STOR_ADDRESS_ALIGN / SRB_ALIGN: struct-level 8-byte alignment (layouts.md trap 3). */
typedef struct __attribute__((aligned(8))) _STOR_ADDRESS {
    USHORT Type;
    USHORT Port;
    ULONG AddressLength;
    UCHAR AddressData[4];
} STOR_ADDRESS, *PSTOR_ADDRESS;

typedef struct __attribute__((aligned(8))) _STOR_ADDR_BTL8 {
    USHORT Type;
    USHORT Port;
    ULONG AddressLength;
    UCHAR Path;
    UCHAR Target;
    UCHAR Lun;
    UCHAR Reserved;
} STOR_ADDR_BTL8, *PSTOR_ADDR_BTL8;

typedef struct __attribute__((aligned(8))) _SRBEX_DATA {
    SRBEXDATATYPE Type;
    ULONG Length;
    UCHAR Data[1];
} SRBEX_DATA, *PSRBEX_DATA;

typedef struct __attribute__((aligned(8))) _SRBEX_DATA_SCSI_CDB16 {
    SRBEXDATATYPE Type;
    ULONG Length;
    UCHAR ScsiStatus;
    UCHAR SenseInfoBufferLength;
    UCHAR CdbLength;
    UCHAR Reserved;
    ULONG Reserved1;
    PVOID SenseInfoBuffer;
    UCHAR Cdb[16];
} SRBEX_DATA_SCSI_CDB16, *PSRBEX_DATA_SCSI_CDB16;

typedef struct __attribute__((aligned(8))) _SRBEX_DATA_SCSI_CDB32 {
    SRBEXDATATYPE Type;
    ULONG Length;
    UCHAR ScsiStatus;
    UCHAR SenseInfoBufferLength;
    UCHAR CdbLength;
    UCHAR Reserved;
    ULONG Reserved1;
    PVOID SenseInfoBuffer;
    UCHAR Cdb[32];
} SRBEX_DATA_SCSI_CDB32, *PSRBEX_DATA_SCSI_CDB32;

typedef struct __attribute__((aligned(8))) _SRBEX_DATA_SCSI_CDB_VAR {
    SRBEXDATATYPE Type;
    ULONG Length;
    UCHAR ScsiStatus;
    UCHAR SenseInfoBufferLength;
    UCHAR Reserved[2];
    ULONG CdbLength;
    ULONG Reserved1[2];
    PVOID SenseInfoBuffer;
    UCHAR Cdb[1];
} SRBEX_DATA_SCSI_CDB_VAR, *PSRBEX_DATA_SCSI_CDB_VAR;

/* PnP and WMI extended data (DDI docs: SRBEX_DATA_PNP, SRBEX_DATA_WMI). */
typedef struct __attribute__((aligned(8))) _SRBEX_DATA_PNP {
    SRBEXDATATYPE Type;
    ULONG Length;
    UCHAR PnPSubFunction;
    UCHAR Reserved[3];
    STOR_PNP_ACTION PnPAction;
    ULONG SrbPnPFlags;
    ULONG Reserved1;
} SRBEX_DATA_PNP, *PSRBEX_DATA_PNP;

typedef struct __attribute__((aligned(8))) _SRBEX_DATA_WMI {
    SRBEXDATATYPE Type;
    ULONG Length;
    UCHAR WMISubFunction;
    UCHAR WMIFlags;
    UCHAR Reserved[2];
    ULONG Reserved1;
    PVOID DataPath;
} SRBEX_DATA_WMI, *PSRBEX_DATA_WMI;

typedef struct __attribute__((aligned(8))) _STORAGE_REQUEST_BLOCK {
    USHORT Length;
    UCHAR Function;
    UCHAR SrbStatus;
    ULONG ReservedUlong1;
    ULONG Signature;
    ULONG Version;
    ULONG SrbLength;
    ULONG SrbFunction;
    ULONG SrbFlags;
    ULONG ReservedUlong2;
    ULONG RequestTag;
    USHORT RequestPriority;
    USHORT RequestAttribute;
    ULONG TimeOutValue;
    ULONG SystemStatus;
    ULONG ZeroGuard1;
    ULONG AddressOffset;
    ULONG NumSrbExData;
    ULONG DataTransferLength;
    PVOID DataBuffer;
    PVOID ZeroGuard2;
    PVOID OriginalRequest;
    PVOID ClassContext;
    PVOID PortContext;
    PVOID MiniportContext;
    struct _STORAGE_REQUEST_BLOCK *NextSrb;
    ULONG SrbExDataOffset[1];
} STORAGE_REQUEST_BLOCK, *PSTORAGE_REQUEST_BLOCK;

typedef struct _STOR_DEVICE_CAPABILITIES {
    USHORT Version;
    ULONG DeviceD1 : 1;
    ULONG DeviceD2 : 1;
    ULONG LockSupported : 1;
    ULONG EjectSupported : 1;
    ULONG Removable : 1;
    ULONG DockDevice : 1;
    ULONG UniqueID : 1;
    ULONG SilentInstall : 1;
    ULONG SurpriseRemovalOK : 1;
    ULONG NoDisplayInUI : 1;
} STOR_DEVICE_CAPABILITIES, *PSTOR_DEVICE_CAPABILITIES;

typedef struct _STOR_DEVICE_CAPABILITIES_EX {
    USHORT Version;
    USHORT Size;
    ULONG DeviceD1 : 1;
    ULONG DeviceD2 : 1;
    ULONG LockSupported : 1;
    ULONG EjectSupported : 1;
    ULONG Removable : 1;
    ULONG DockDevice : 1;
    ULONG UniqueID : 1;
    ULONG SilentInstall : 1;
    ULONG SurpriseRemovalOK : 1;
    ULONG NoDisplayInUI : 1;
    ULONG Reserved1 : 22;
    ULONG Reserved2;
    ULONG Address;
    ULONG UINumber;
    ULONG Reserved3;
} STOR_DEVICE_CAPABILITIES_EX, *PSTOR_DEVICE_CAPABILITIES_EX;

typedef struct _STOR_UNIT_ATTRIBUTES {
    ULONG DeviceAttentionSupported : 1;
    ULONG AsyncNotificationSupported : 1;
    ULONG D3ColdNotSupported : 1;
    ULONG Reserved : 29;
} STOR_UNIT_ATTRIBUTES, *PSTOR_UNIT_ATTRIBUTES;

#define STOR_CURRENT_LOG_INTERFACE_REVISION 0x100
typedef struct _STOR_LOG_EVENT_DETAILS {
    ULONG InterfaceRevision;
    ULONG Size;
    ULONG Flags;
    STOR_EVENT_ASSOCIATION_ENUM EventAssociation;
    ULONG PathId;
    ULONG TargetId;
    ULONG LunId;
    BOOLEAN StorportSpecificErrorCode;
    ULONG ErrorCode;
    ULONG UniqueId;
    ULONG DumpDataSize;
    PVOID DumpData;
    ULONG StringCount;
    PWSTR *StringList;
} STOR_LOG_EVENT_DETAILS, *PSTOR_LOG_EVENT_DETAILS;

struct _PORT_CONFIGURATION_INFORMATION;

/* ---- Callback types (every PHW_* is one code pointer, Microsoft x64 ABI) ------------------- */
typedef BOOLEAN HW_INITIALIZE(PVOID DeviceExtension);
typedef HW_INITIALIZE *PHW_INITIALIZE;
typedef BOOLEAN HW_BUILDIO(PVOID DeviceExtension, PSCSI_REQUEST_BLOCK Srb);
typedef HW_BUILDIO *PHW_BUILDIO;
typedef BOOLEAN HW_STARTIO(PVOID DeviceExtension, PSCSI_REQUEST_BLOCK Srb);
typedef HW_STARTIO *PHW_STARTIO;
typedef BOOLEAN HW_INTERRUPT(PVOID DeviceExtension);
typedef HW_INTERRUPT *PHW_INTERRUPT;
typedef VOID HW_TIMER(PVOID DeviceExtension);
typedef HW_TIMER *PHW_TIMER;
typedef VOID HW_DMA_STARTED(PVOID DeviceExtension);
typedef HW_DMA_STARTED *PHW_DMA_STARTED;
typedef ULONG HW_FIND_ADAPTER(PVOID DeviceExtension, PVOID HwContext, PVOID BusInformation,
                              PCHAR ArgumentString, struct _PORT_CONFIGURATION_INFORMATION *ConfigInfo,
                              PBOOLEAN Reserved3);
typedef HW_FIND_ADAPTER *PHW_FIND_ADAPTER;
typedef BOOLEAN HW_RESET_BUS(PVOID DeviceExtension, ULONG PathId);
typedef HW_RESET_BUS *PHW_RESET_BUS;
typedef BOOLEAN HW_ADAPTER_STATE(PVOID DeviceExtension, PVOID Context, BOOLEAN SaveState);
typedef HW_ADAPTER_STATE *PHW_ADAPTER_STATE;
typedef SCSI_ADAPTER_CONTROL_STATUS HW_ADAPTER_CONTROL(PVOID DeviceExtension,
                                                       SCSI_ADAPTER_CONTROL_TYPE ControlType,
                                                       PVOID Parameters);
typedef HW_ADAPTER_CONTROL *PHW_ADAPTER_CONTROL;
typedef SCSI_UNIT_CONTROL_STATUS HW_UNIT_CONTROL(PVOID DeviceExtension, SCSI_UNIT_CONTROL_TYPE ControlType,
                                                 PVOID Parameters);
typedef HW_UNIT_CONTROL *PHW_UNIT_CONTROL;
typedef BOOLEAN HW_PASSIVE_INITIALIZE_ROUTINE(PVOID DeviceExtension);
typedef HW_PASSIVE_INITIALIZE_ROUTINE *PHW_PASSIVE_INITIALIZE_ROUTINE;
typedef VOID HW_DPC_ROUTINE(PSTOR_DPC Dpc, PVOID HwDeviceExtension, PVOID SystemArgument1,
                            PVOID SystemArgument2);
typedef HW_DPC_ROUTINE *PHW_DPC_ROUTINE;
typedef BOOLEAN HW_MESSAGE_SIGNALED_INTERRUPT_ROUTINE(PVOID HwDeviceExtension, ULONG MessageId);
typedef HW_MESSAGE_SIGNALED_INTERRUPT_ROUTINE *PHW_MESSAGE_SIGNALED_INTERRUPT_ROUTINE;
typedef BOOLEAN STOR_SYNCHRONIZED_ACCESS(PVOID HwDeviceExtension, PVOID Context);
typedef STOR_SYNCHRONIZED_ACCESS *PSTOR_SYNCHRONIZED_ACCESS;
typedef VOID HW_STATE_CHANGE(PVOID HwDeviceExtension, PVOID Context, SHORT AddressType, PVOID Address,
                             ULONG Status);
typedef HW_STATE_CHANGE *PHW_STATE_CHANGE;
typedef VOID HW_TIMER_EX(PVOID DeviceExtension, PVOID Context);
typedef HW_TIMER_EX *PHW_TIMER_EX;
typedef PVOID PHW_INITIALIZE_TRACING;
typedef PVOID PHW_CLEANUP_TRACING;
typedef PVOID PHW_TRACING_ENABLED;
typedef ULONG sp_DRIVER_INITIALIZE(PVOID DriverObject, PVOID RegistryPath);

typedef struct _HW_INITIALIZATION_DATA {
    ULONG HwInitializationDataSize;
    INTERFACE_TYPE AdapterInterfaceType;
    PHW_INITIALIZE HwInitialize;
    PHW_STARTIO HwStartIo;
    PHW_INTERRUPT HwInterrupt;
    PVOID HwFindAdapter;
    PHW_RESET_BUS HwResetBus;
    PHW_DMA_STARTED HwDmaStarted;
    PHW_ADAPTER_STATE HwAdapterState;
    ULONG DeviceExtensionSize;
    ULONG SpecificLuExtensionSize;
    ULONG SrbExtensionSize;
    ULONG NumberOfAccessRanges;
    PVOID Reserved;
    UCHAR MapBuffers;
    BOOLEAN NeedPhysicalAddresses;
    BOOLEAN TaggedQueuing;
    BOOLEAN AutoRequestSense;
    BOOLEAN MultipleRequestPerLu;
    BOOLEAN ReceiveEvent;
    USHORT VendorIdLength;
    PVOID VendorId;
    union {
        USHORT ReservedUshort;
        USHORT PortVersionFlags;
    };
    USHORT DeviceIdLength;
    PVOID DeviceId;
    PHW_ADAPTER_CONTROL HwAdapterControl;
    PHW_BUILDIO HwBuildIo;
    PVOID HwFreeAdapterResources;
    PVOID HwProcessServiceRequest;
    PVOID HwCompleteServiceIrp;
    PHW_INITIALIZE_TRACING HwInitializeTracing;
    PHW_CLEANUP_TRACING HwCleanupTracing;
    PHW_TRACING_ENABLED HwTracingEnabled;
    ULONG FeatureSupport;
    ULONG SrbTypeFlags;
    ULONG AddressTypeFlags;
    ULONG Reserved1;
    PHW_UNIT_CONTROL HwUnitControl;
} HW_INITIALIZATION_DATA, *PHW_INITIALIZATION_DATA;

typedef struct _PORT_CONFIGURATION_INFORMATION {
    ULONG Length;
    ULONG SystemIoBusNumber;
    INTERFACE_TYPE AdapterInterfaceType;
    ULONG BusInterruptLevel;
    ULONG BusInterruptVector;
    KINTERRUPT_MODE InterruptMode;
    ULONG MaximumTransferLength;
    ULONG NumberOfPhysicalBreaks;
    ULONG DmaChannel;
    ULONG DmaPort;
    DMA_WIDTH DmaWidth;
    DMA_SPEED DmaSpeed;
    ULONG AlignmentMask;
    ULONG NumberOfAccessRanges;
    ACCESS_RANGE (*AccessRanges)[];
    PVOID MiniportDumpData;
    UCHAR NumberOfBuses;
    CCHAR InitiatorBusId[8];
    BOOLEAN ScatterGather;
    BOOLEAN Master;
    BOOLEAN CachesData;
    BOOLEAN AdapterScansDown;
    BOOLEAN AtdiskPrimaryClaimed;
    BOOLEAN AtdiskSecondaryClaimed;
    BOOLEAN Dma32BitAddresses;
    BOOLEAN DemandMode;
    UCHAR MapBuffers;
    BOOLEAN NeedPhysicalAddresses;
    BOOLEAN TaggedQueuing;
    BOOLEAN AutoRequestSense;
    BOOLEAN MultipleRequestPerLu;
    BOOLEAN ReceiveEvent;
    BOOLEAN RealModeInitialized;
    BOOLEAN BufferAccessScsiPortControlled;
    UCHAR MaximumNumberOfTargets;
    UCHAR SrbType;
    UCHAR AddressType;
    ULONG SlotNumber;
    ULONG BusInterruptLevel2;
    ULONG BusInterruptVector2;
    KINTERRUPT_MODE InterruptMode2;
    ULONG DmaChannel2;
    ULONG DmaPort2;
    DMA_WIDTH DmaWidth2;
    DMA_SPEED DmaSpeed2;
    ULONG DeviceExtensionSize;
    ULONG SpecificLuExtensionSize;
    ULONG SrbExtensionSize;
    UCHAR Dma64BitAddresses;
    BOOLEAN ResetTargetSupported;
    UCHAR MaximumNumberOfLogicalUnits;
    BOOLEAN WmiDataProvider;
    STOR_SYNCHRONIZATION_MODEL SynchronizationModel;
    PHW_MESSAGE_SIGNALED_INTERRUPT_ROUTINE HwMSInterruptRoutine;
    INTERRUPT_SYNCHRONIZATION_MODE InterruptSynchronizationMode;
    MEMORY_REGION DumpRegion;
    ULONG RequestedDumpBufferSize;
    BOOLEAN VirtualDevice;
    UCHAR DumpMode;
    UCHAR DmaAddressWidth;
    ULONG ExtendedFlags1;
    ULONG MaxNumberOfIO;
    ULONG MaxIOsPerLun;
    ULONG InitialLunQueueDepth;
    ULONG BusResetHoldTime;
    ULONG FeatureSupport;
} PORT_CONFIGURATION_INFORMATION, *PPORT_CONFIGURATION_INFORMATION;

/* ---- storport.sys exports (the import library is made from tools/peer/storport.def) -------- */
#define STORPORT_API __declspec(dllimport)
STORPORT_API ULONG StorPortInitialize(PVOID Argument1, PVOID Argument2,
                                      PHW_INITIALIZATION_DATA HwInitializationData, PVOID HwContext);
STORPORT_API VOID StorPortNotification(SCSI_NOTIFICATION_TYPE NotificationType, PVOID HwDeviceExtension, ...);
STORPORT_API ULONG StorPortExtendedFunction(STORPORT_FUNCTION_CODE FunctionCode, PVOID HwDeviceExtension, ...);
STORPORT_API PVOID StorPortGetDeviceBase(PVOID HwDeviceExtension, INTERFACE_TYPE BusType,
                                         ULONG SystemIoBusNumber, STOR_PHYSICAL_ADDRESS IoAddress,
                                         ULONG NumberOfBytes, BOOLEAN InIoSpace);
STORPORT_API VOID StorPortFreeDeviceBase(PVOID HwDeviceExtension, PVOID MappedAddress);
STORPORT_API PVOID StorPortGetUncachedExtension(PVOID HwDeviceExtension,
                                                PPORT_CONFIGURATION_INFORMATION ConfigInfo,
                                                ULONG NumberOfBytes);
STORPORT_API STOR_PHYSICAL_ADDRESS StorPortGetPhysicalAddress(PVOID HwDeviceExtension,
                                                              PSCSI_REQUEST_BLOCK Srb, PVOID VirtualAddress,
                                                              ULONG *Length);
STORPORT_API PSTOR_SCATTER_GATHER_LIST StorPortGetScatterGatherList(PVOID DeviceExtension,
                                                                   PSCSI_REQUEST_BLOCK Srb);
STORPORT_API ULONG StorPortGetBusData(PVOID DeviceExtension, ULONG BusDataType, ULONG SystemIoBusNumber,
                                      ULONG SlotNumber, PVOID Buffer, ULONG Length);
STORPORT_API ULONG StorPortSetBusDataByOffset(PVOID DeviceExtension, ULONG BusDataType,
                                              ULONG SystemIoBusNumber, ULONG SlotNumber, PVOID Buffer,
                                              ULONG Offset, ULONG Length);
STORPORT_API VOID StorPortStallExecution(ULONG Delay);
STORPORT_API BOOLEAN StorPortBusy(PVOID HwDeviceExtension, ULONG RequestsToComplete);
STORPORT_API BOOLEAN StorPortReady(PVOID HwDeviceExtension);
STORPORT_API BOOLEAN StorPortPause(PVOID HwDeviceExtension, ULONG TimeOut);
STORPORT_API BOOLEAN StorPortResume(PVOID HwDeviceExtension);
STORPORT_API BOOLEAN StorPortDeviceBusy(PVOID HwDeviceExtension, UCHAR PathId, UCHAR TargetId, UCHAR Lun,
                                        ULONG RequestsToComplete);
STORPORT_API BOOLEAN StorPortDeviceReady(PVOID HwDeviceExtension, UCHAR PathId, UCHAR TargetId, UCHAR Lun);
STORPORT_API BOOLEAN StorPortSetDeviceQueueDepth(PVOID HwDeviceExtension, UCHAR PathId, UCHAR TargetId,
                                                 UCHAR Lun, ULONG Depth);
STORPORT_API VOID StorPortMoveMemory(PVOID WriteBuffer, PVOID ReadBuffer, ULONG Length);
STORPORT_API VOID StorPortLogError(PVOID HwDeviceExtension, PSCSI_REQUEST_BLOCK Srb, UCHAR PathId,
                                   UCHAR TargetId, UCHAR Lun, ULONG ErrorCode, ULONG UniqueId);
STORPORT_API BOOLEAN StorPortSynchronizeAccess(PVOID HwDeviceExtension,
                                               PSTOR_SYNCHRONIZED_ACCESS SynchronizedAccessRoutine,
                                               PVOID Context);
STORPORT_API VOID StorPortDebugPrint(ULONG DebugPrintLevel, PCCHAR DebugMessage, ...);

#define StorPortCopyMemory(Destination, Source, Length) memcpy((Destination), (Source), (Length))

/* ---- Register and port access: on AMD64 these are plain accesses (layouts.md, last section);
 * the extension argument is not used. ---------------------------------------------------------- */
#define StorPortReadRegisterUchar(h, r) ((void)(h), *(volatile UCHAR *)(r))
#define StorPortReadRegisterUshort(h, r) ((void)(h), *(volatile USHORT *)(r))
#define StorPortReadRegisterUlong(h, r) ((void)(h), *(volatile ULONG *)(r))
#define StorPortReadRegisterUlong64(h, r) ((void)(h), *(volatile ULONG64 *)(r))
#define StorPortWriteRegisterUchar(h, r, v) ((void)(h), *(volatile UCHAR *)(r) = (UCHAR)(v))
#define StorPortWriteRegisterUshort(h, r, v) ((void)(h), *(volatile USHORT *)(r) = (USHORT)(v))
#define StorPortWriteRegisterUlong(h, r, v) ((void)(h), *(volatile ULONG *)(r) = (ULONG)(v))
#define StorPortWriteRegisterUlong64(h, r, v) ((void)(h), *(volatile ULONG64 *)(r) = (ULONG64)(v))
static __inline__ UCHAR vioblk_compat_inb(PUCHAR p)
{
    UCHAR v;
    __asm__ __volatile__("inb %w1, %0" : "=a"(v) : "Nd"((USHORT)(ULONG_PTR)p));
    return v;
}
static __inline__ USHORT vioblk_compat_inw(PUSHORT p)
{
    USHORT v;
    __asm__ __volatile__("inw %w1, %0" : "=a"(v) : "Nd"((USHORT)(ULONG_PTR)p));
    return v;
}
static __inline__ ULONG vioblk_compat_inl(PULONG p)
{
    ULONG v;
    __asm__ __volatile__("inl %w1, %0" : "=a"(v) : "Nd"((USHORT)(ULONG_PTR)p));
    return v;
}
static __inline__ void vioblk_compat_outb(PUCHAR p, UCHAR v)
{
    __asm__ __volatile__("outb %0, %w1" : : "a"(v), "Nd"((USHORT)(ULONG_PTR)p));
}
static __inline__ void vioblk_compat_outw(PUSHORT p, USHORT v)
{
    __asm__ __volatile__("outw %0, %w1" : : "a"(v), "Nd"((USHORT)(ULONG_PTR)p));
}
static __inline__ void vioblk_compat_outl(PULONG p, ULONG v)
{
    __asm__ __volatile__("outl %0, %w1" : : "a"(v), "Nd"((USHORT)(ULONG_PTR)p));
}
#define StorPortReadPortUchar(h, p) ((void)(h), vioblk_compat_inb(p))
#define StorPortReadPortUshort(h, p) ((void)(h), vioblk_compat_inw(p))
#define StorPortReadPortUlong(h, p) ((void)(h), vioblk_compat_inl(p))
#define StorPortWritePortUchar(h, p, v) ((void)(h), vioblk_compat_outb((p), (v)))
#define StorPortWritePortUshort(h, p, v) ((void)(h), vioblk_compat_outw((p), (v)))
#define StorPortWritePortUlong(h, p, v) ((void)(h), vioblk_compat_outl((p), (v)))

/* ---- The FORCEINLINE wrappers over the two variadic exports (layouts.md table) -------------- */
static __inline__ ULONG StorPortAllocatePool(PVOID h, ULONG n, ULONG tag, PVOID *out)
{
    return StorPortExtendedFunction(ExtFunctionAllocatePool, h, n, tag, out);
}
static __inline__ ULONG StorPortFreePool(PVOID h, PVOID p)
{
    return StorPortExtendedFunction(ExtFunctionFreePool, h, p);
}
static __inline__ ULONG StorPortAcquireMSISpinLock(PVOID h, ULONG id, PULONG old)
{
    return StorPortExtendedFunction(ExtFunctionAcquireMSISpinLock, h, id, old);
}
static __inline__ ULONG StorPortReleaseMSISpinLock(PVOID h, ULONG id, ULONG old)
{
    return StorPortExtendedFunction(ExtFunctionReleaseMSISpinLock, h, id, old);
}
static __inline__ ULONG StorPortGetMSIInfo(PVOID h, ULONG id, PMESSAGE_INTERRUPT_INFORMATION info)
{
    return StorPortExtendedFunction(ExtFunctionGetMessageInterruptInformation, h, id, info);
}
static __inline__ ULONG StorPortInitializePerfOpts(PVOID h, BOOLEAN query, PPERF_CONFIGURATION_DATA d)
{
    return StorPortExtendedFunction(ExtFunctionInitializePerformanceOptimizations, h, (ULONG)query, d);
}
static __inline__ ULONG StorPortGetStartIoPerfParams(PVOID h, PSCSI_REQUEST_BLOCK srb,
                                                     PSTARTIO_PERFORMANCE_PARAMETERS p)
{
    return StorPortExtendedFunction(ExtFunctionGetStartIoPerformanceParameters, h, srb, p);
}
static __inline__ ULONG StorPortLogSystemEvent(PVOID h, PSTOR_LOG_EVENT_DETAILS d, PULONG max)
{
    return StorPortExtendedFunction(ExtFunctionLogSystemEvent, h, d, max);
}
static __inline__ ULONG StorPortSetUnitAttributes(PVOID h, PSTOR_ADDRESS a, STOR_UNIT_ATTRIBUTES attr)
{
    ULONG bits;
    memcpy(&bits, &attr, sizeof bits);
    return StorPortExtendedFunction(ExtFunctionSetUnitAttributes, h, a, bits);
}
static __inline__ ULONG StorPortAcquireSpinLockEx(PVOID h, STOR_SPINLOCK lock, PVOID ctx, PSTOR_LOCK_HANDLE lh)
{
    return StorPortExtendedFunction(ExtFunctionAcquireSpinLock, h, lock, ctx, lh);
}
static __inline__ VOID StorPortAcquireSpinLock(PVOID h, STOR_SPINLOCK lock, PVOID ctx, PSTOR_LOCK_HANDLE lh)
{
    StorPortNotification(AcquireSpinLock, h, lock, ctx, lh);
}
static __inline__ VOID StorPortReleaseSpinLock(PVOID h, PSTOR_LOCK_HANDLE lh)
{
    StorPortNotification(ReleaseSpinLock, h, lh);
}
static __inline__ VOID StorPortInitializeDpc(PVOID h, PSTOR_DPC dpc, PHW_DPC_ROUTINE routine)
{
    StorPortNotification(InitializeDpc, h, dpc, routine);
}
static __inline__ BOOLEAN StorPortIssueDpc(PVOID h, PSTOR_DPC dpc, PVOID a1, PVOID a2)
{
    LONG done = 0;
    StorPortNotification(IssueDpc, h, dpc, a1, a2, &done);
    return (BOOLEAN)(done != 0);
}
static __inline__ BOOLEAN StorPortEnablePassiveInitialization(PVOID h, PHW_PASSIVE_INITIALIZE_ROUTINE r)
{
    LONG done = 0;
    StorPortNotification(EnablePassiveInitialization, h, r, &done);
    return (BOOLEAN)(done != 0);
}
static __inline__ VOID StorPortStateChangeDetected(PVOID h, ULONG entity, PSTOR_ADDRESS a, ULONG attrs,
                                                    PHW_STATE_CHANGE cb, PVOID ctx)
{
    StorPortNotification(StateChangeDetectedCall, h, entity, a, attrs, cb, ctx);
}

/* ---- srbhelper: SrbGet and SrbSet over both SRB kinds ---------------------------------------- */
static __inline__ BOOLEAN VioblkSrbIsEx(PVOID srb)
{
    return ((PSCSI_REQUEST_BLOCK)srb)->Function == SRB_FUNCTION_STORAGE_REQUEST_BLOCK;
}
static __inline__ PSRBEX_DATA SrbGetSrbExDataByIndex(PSTORAGE_REQUEST_BLOCK srb, ULONG i)
{
    if (i >= srb->NumSrbExData || srb->SrbExDataOffset[i] < sizeof(STORAGE_REQUEST_BLOCK) ||
        srb->SrbExDataOffset[i] >= srb->SrbLength)
        return NULL;
    return (PSRBEX_DATA)((PUCHAR)srb + srb->SrbExDataOffset[i]);
}
static __inline__ PSRBEX_DATA SrbGetSrbExDataByType(PSTORAGE_REQUEST_BLOCK srb, SRBEXDATATYPE type)
{
    for (ULONG i = 0; i < srb->NumSrbExData; i++) {
        PSRBEX_DATA d = SrbGetSrbExDataByIndex(srb, i);
        if (d != NULL && d->Type == type)
            return d;
    }
    return NULL;
}
static __inline__ PSRBEX_DATA VioblkSrbScsiExData(PSTORAGE_REQUEST_BLOCK srb)
{
    if (srb->SrbFunction != SRB_FUNCTION_EXECUTE_SCSI || srb->NumSrbExData == 0)
        return NULL;
    PSRBEX_DATA d = SrbGetSrbExDataByIndex(srb, 0);
    if (d != NULL && (d->Type == SrbExDataTypeScsiCdb16 || d->Type == SrbExDataTypeScsiCdb32 ||
                      d->Type == SrbExDataTypeScsiCdbVar))
        return d;
    return NULL;
}
static __inline__ PCDB SrbGetCdb(PVOID srb)
{
    if (!VioblkSrbIsEx(srb))
        return (PCDB)((PSCSI_REQUEST_BLOCK)srb)->Cdb;
    PSRBEX_DATA d = VioblkSrbScsiExData((PSTORAGE_REQUEST_BLOCK)srb);
    if (d == NULL)
        return NULL;
    switch (d->Type) {
    case SrbExDataTypeScsiCdb16: return (PCDB)((PSRBEX_DATA_SCSI_CDB16)d)->Cdb;
    case SrbExDataTypeScsiCdb32: return (PCDB)((PSRBEX_DATA_SCSI_CDB32)d)->Cdb;
    default: return (PCDB)((PSRBEX_DATA_SCSI_CDB_VAR)d)->Cdb;
    }
}
/* Any pointer may be NULL: only the others are read or written. */
static __inline__ VOID SrbGetScsiData(PVOID srb, PUCHAR cdbLen8, PULONG cdbLen32, PUCHAR scsiStatus,
                                      PVOID *sense, PUCHAR senseLen)
{
    if (!VioblkSrbIsEx(srb)) {
        PSCSI_REQUEST_BLOCK s = (PSCSI_REQUEST_BLOCK)srb;
        if (cdbLen8) *cdbLen8 = s->CdbLength;
        if (cdbLen32) *cdbLen32 = s->CdbLength;
        if (scsiStatus) *scsiStatus = s->ScsiStatus;
        if (sense) *sense = s->SenseInfoBuffer;
        if (senseLen) *senseLen = s->SenseInfoBufferLength;
        return;
    }
    PSRBEX_DATA d = VioblkSrbScsiExData((PSTORAGE_REQUEST_BLOCK)srb);
    if (d == NULL) {
        if (cdbLen8) *cdbLen8 = 0;
        if (cdbLen32) *cdbLen32 = 0;
        if (scsiStatus) *scsiStatus = 0xFF; /* SCSISTAT_GOOD is 0: no status is "none" */
        if (sense) *sense = NULL;
        if (senseLen) *senseLen = 0;
        return;
    }
    if (d->Type == SrbExDataTypeScsiCdbVar) {
        PSRBEX_DATA_SCSI_CDB_VAR v = (PSRBEX_DATA_SCSI_CDB_VAR)d;
        if (cdbLen8) *cdbLen8 = 0;
        if (cdbLen32) *cdbLen32 = v->CdbLength;
        if (scsiStatus) *scsiStatus = v->ScsiStatus;
        if (sense) *sense = v->SenseInfoBuffer;
        if (senseLen) *senseLen = v->SenseInfoBufferLength;
    } else {
        PSRBEX_DATA_SCSI_CDB16 c = (PSRBEX_DATA_SCSI_CDB16)d; /* CDB32 has the same head */
        if (cdbLen8) *cdbLen8 = c->CdbLength;
        if (cdbLen32) *cdbLen32 = 0;
        if (scsiStatus) *scsiStatus = c->ScsiStatus;
        if (sense) *sense = c->SenseInfoBuffer;
        if (senseLen) *senseLen = c->SenseInfoBufferLength;
    }
}
static __inline__ VOID SrbSetScsiData(PVOID srb, PUCHAR cdbLen8, PULONG cdbLen32, PUCHAR scsiStatus,
                                      PVOID *sense, PUCHAR senseLen)
{
    if (!VioblkSrbIsEx(srb)) {
        PSCSI_REQUEST_BLOCK s = (PSCSI_REQUEST_BLOCK)srb;
        if (cdbLen8) s->CdbLength = *cdbLen8;
        if (scsiStatus) s->ScsiStatus = *scsiStatus;
        if (sense) s->SenseInfoBuffer = *sense;
        if (senseLen) s->SenseInfoBufferLength = *senseLen;
        return;
    }
    PSRBEX_DATA d = VioblkSrbScsiExData((PSTORAGE_REQUEST_BLOCK)srb);
    if (d == NULL)
        return;
    if (d->Type == SrbExDataTypeScsiCdbVar) {
        PSRBEX_DATA_SCSI_CDB_VAR v = (PSRBEX_DATA_SCSI_CDB_VAR)d;
        if (cdbLen32) v->CdbLength = *cdbLen32;
        if (scsiStatus) v->ScsiStatus = *scsiStatus;
        if (sense) v->SenseInfoBuffer = *sense;
        if (senseLen) v->SenseInfoBufferLength = *senseLen;
    } else {
        PSRBEX_DATA_SCSI_CDB16 c = (PSRBEX_DATA_SCSI_CDB16)d;
        if (cdbLen8) c->CdbLength = *cdbLen8;
        if (scsiStatus) c->ScsiStatus = *scsiStatus;
        if (sense) c->SenseInfoBuffer = *sense;
        if (senseLen) c->SenseInfoBufferLength = *senseLen;
    }
}
static __inline__ PVOID SrbGetSenseInfoBuffer(PVOID srb)
{
    PVOID p = NULL;
    SrbGetScsiData(srb, NULL, NULL, NULL, &p, NULL);
    return p;
}
static __inline__ UCHAR SrbGetSenseInfoBufferLength(PVOID srb)
{
    UCHAR n = 0;
    SrbGetScsiData(srb, NULL, NULL, NULL, NULL, &n);
    return n;
}
static __inline__ PSTOR_ADDR_BTL8 VioblkSrbBtl8(PSTORAGE_REQUEST_BLOCK srb)
{
    PSTOR_ADDR_BTL8 a = (PSTOR_ADDR_BTL8)((PUCHAR)srb + srb->AddressOffset);
    return a->Type == STOR_ADDRESS_TYPE_BTL8 ? a : NULL;
}
static __inline__ UCHAR SrbGetPathId(PVOID srb)
{
    if (!VioblkSrbIsEx(srb)) return ((PSCSI_REQUEST_BLOCK)srb)->PathId;
    PSTOR_ADDR_BTL8 a = VioblkSrbBtl8((PSTORAGE_REQUEST_BLOCK)srb);
    return a ? a->Path : 0xFF;
}
static __inline__ UCHAR SrbGetTargetId(PVOID srb)
{
    if (!VioblkSrbIsEx(srb)) return ((PSCSI_REQUEST_BLOCK)srb)->TargetId;
    PSTOR_ADDR_BTL8 a = VioblkSrbBtl8((PSTORAGE_REQUEST_BLOCK)srb);
    return a ? a->Target : 0xFF;
}
static __inline__ UCHAR SrbGetLun(PVOID srb)
{
    if (!VioblkSrbIsEx(srb)) return ((PSCSI_REQUEST_BLOCK)srb)->Lun;
    PSTOR_ADDR_BTL8 a = VioblkSrbBtl8((PSTORAGE_REQUEST_BLOCK)srb);
    return a ? a->Lun : 0xFF;
}
static __inline__ PVOID SrbGetMiniportContext(PVOID srb)
{
    return VioblkSrbIsEx(srb) ? ((PSTORAGE_REQUEST_BLOCK)srb)->MiniportContext
                              : ((PSCSI_REQUEST_BLOCK)srb)->SrbExtension;
}
static __inline__ ULONG SrbGetSrbFunction(PVOID srb)
{
    return VioblkSrbIsEx(srb) ? ((PSTORAGE_REQUEST_BLOCK)srb)->SrbFunction
                              : ((PSCSI_REQUEST_BLOCK)srb)->Function;
}
static __inline__ ULONG SrbGetSrbFlags(PVOID srb)
{
    return VioblkSrbIsEx(srb) ? ((PSTORAGE_REQUEST_BLOCK)srb)->SrbFlags : ((PSCSI_REQUEST_BLOCK)srb)->SrbFlags;
}
static __inline__ PVOID SrbGetDataBuffer(PVOID srb)
{
    return VioblkSrbIsEx(srb) ? ((PSTORAGE_REQUEST_BLOCK)srb)->DataBuffer
                              : ((PSCSI_REQUEST_BLOCK)srb)->DataBuffer;
}
static __inline__ ULONG SrbGetDataTransferLength(PVOID srb)
{
    return VioblkSrbIsEx(srb) ? ((PSTORAGE_REQUEST_BLOCK)srb)->DataTransferLength
                              : ((PSCSI_REQUEST_BLOCK)srb)->DataTransferLength;
}
static __inline__ VOID SrbSetDataTransferLength(PVOID srb, ULONG n)
{
    if (VioblkSrbIsEx(srb)) ((PSTORAGE_REQUEST_BLOCK)srb)->DataTransferLength = n;
    else ((PSCSI_REQUEST_BLOCK)srb)->DataTransferLength = n;
}
static __inline__ ULONG SrbGetSrbLength(PVOID srb)
{
    return VioblkSrbIsEx(srb) ? ((PSTORAGE_REQUEST_BLOCK)srb)->SrbLength : ((PSCSI_REQUEST_BLOCK)srb)->Length;
}
static __inline__ VOID SrbSetSrbStatus(PVOID srb, UCHAR status)
{
    /* SrbStatus is at offset 3 in both kinds (layouts.md). */
    ((PSCSI_REQUEST_BLOCK)srb)->SrbStatus = status;
}
static __inline__ UCHAR SrbGetSrbStatus(PVOID srb)
{
    return ((PSCSI_REQUEST_BLOCK)srb)->SrbStatus;
}

/* KeMemoryBarrier on AMD64 is a full fence made of a locked no-op on the stack (FastFence). */
#ifndef KeMemoryBarrier
#define KeMemoryBarrier() __asm__ __volatile__("lock orl $0, (%%rsp)" ::: "memory", "cc")
#endif

/* ---- ntoskrnl routines a miniport may import (mingw's ntddk.h declares most; these it lacks) */
#ifndef ALL_PROCESSOR_GROUPS
#define ALL_PROCESSOR_GROUPS 0xffff
#endif

/* ---- Layout checks against layouts.md --------------------------------------------------------- */
#define VIOBLK_CHECK(t, f, off) _Static_assert(__builtin_offsetof(t, f) == (off), #t "." #f " at " #off)
#define VIOBLK_SIZE(t, n) _Static_assert(sizeof(t) == (n), "sizeof " #t " is " #n)
VIOBLK_SIZE(HW_INITIALIZATION_DATA, 208);
VIOBLK_CHECK(HW_INITIALIZATION_DATA, DeviceExtensionSize, 0x40);
VIOBLK_CHECK(HW_INITIALIZATION_DATA, MapBuffers, 0x58);
VIOBLK_CHECK(HW_INITIALIZATION_DATA, VendorId, 0x60);
VIOBLK_CHECK(HW_INITIALIZATION_DATA, DeviceIdLength, 0x6A);
VIOBLK_CHECK(HW_INITIALIZATION_DATA, HwAdapterControl, 0x78);
VIOBLK_CHECK(HW_INITIALIZATION_DATA, HwBuildIo, 0x80);
VIOBLK_CHECK(HW_INITIALIZATION_DATA, HwInitializeTracing, 0xA0);
VIOBLK_CHECK(HW_INITIALIZATION_DATA, FeatureSupport, 0xB8);
VIOBLK_CHECK(HW_INITIALIZATION_DATA, SrbTypeFlags, 0xBC);
VIOBLK_CHECK(HW_INITIALIZATION_DATA, HwUnitControl, 0xC8);
VIOBLK_SIZE(PORT_CONFIGURATION_INFORMATION, 224);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, AccessRanges, 0x38);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, MiniportDumpData, 0x40);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, InitiatorBusId, 0x49);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, ScatterGather, 0x51);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, MapBuffers, 0x59);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, AddressType, 0x63);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, SlotNumber, 0x64);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, DeviceExtensionSize, 0x84);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, Dma64BitAddresses, 0x90);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, SynchronizationModel, 0x94);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, HwMSInterruptRoutine, 0x98);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, InterruptSynchronizationMode, 0xA0);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, DumpRegion, 0xA8);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, RequestedDumpBufferSize, 0xC0);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, DumpMode, 0xC5);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, DmaAddressWidth, 0xC6);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, ExtendedFlags1, 0xC8);
VIOBLK_CHECK(PORT_CONFIGURATION_INFORMATION, FeatureSupport, 0xDC);
VIOBLK_SIZE(ACCESS_RANGE, 16);
VIOBLK_SIZE(MEMORY_REGION, 24);
VIOBLK_SIZE(STOR_SCATTER_GATHER_ELEMENT, 24);
VIOBLK_SIZE(STOR_SCATTER_GATHER_LIST, 16);
VIOBLK_SIZE(STOR_LOCK_HANDLE, 32);
VIOBLK_CHECK(STOR_LOCK_HANDLE, Context.OldIrql, 0x18);
VIOBLK_SIZE(STOR_DPC, 72);
VIOBLK_SIZE(PERF_CONFIGURATION_DATA, 40);
VIOBLK_CHECK(PERF_CONFIGURATION_DATA, MessageTargets, 0x20);
VIOBLK_SIZE(STARTIO_PERFORMANCE_PARAMETERS, 16);
VIOBLK_SIZE(MESSAGE_INTERRUPT_INFORMATION, 32);
VIOBLK_CHECK(MESSAGE_INTERRUPT_INFORMATION, InterruptMode, 0x18);
VIOBLK_SIZE(SCSI_SUPPORTED_CONTROL_TYPE_LIST, 4);
VIOBLK_SIZE(SCSI_REQUEST_BLOCK, 88);
VIOBLK_CHECK(SCSI_REQUEST_BLOCK, SrbFlags, 0x0C);
VIOBLK_CHECK(SCSI_REQUEST_BLOCK, DataBuffer, 0x18);
VIOBLK_CHECK(SCSI_REQUEST_BLOCK, SrbExtension, 0x38);
VIOBLK_CHECK(SCSI_REQUEST_BLOCK, Cdb, 0x48);
VIOBLK_SIZE(SCSI_PNP_REQUEST_BLOCK, 88);
VIOBLK_SIZE(STORAGE_REQUEST_BLOCK, 128);
VIOBLK_CHECK(STORAGE_REQUEST_BLOCK, Signature, 0x08);
VIOBLK_CHECK(STORAGE_REQUEST_BLOCK, SrbFunction, 0x14);
VIOBLK_CHECK(STORAGE_REQUEST_BLOCK, RequestTag, 0x20);
VIOBLK_CHECK(STORAGE_REQUEST_BLOCK, TimeOutValue, 0x28);
VIOBLK_CHECK(STORAGE_REQUEST_BLOCK, AddressOffset, 0x34);
VIOBLK_CHECK(STORAGE_REQUEST_BLOCK, DataTransferLength, 0x3C);
VIOBLK_CHECK(STORAGE_REQUEST_BLOCK, DataBuffer, 0x40);
VIOBLK_CHECK(STORAGE_REQUEST_BLOCK, MiniportContext, 0x68);
VIOBLK_CHECK(STORAGE_REQUEST_BLOCK, SrbExDataOffset, 0x78);
VIOBLK_SIZE(SRBEX_DATA, 16);
VIOBLK_SIZE(SRBEX_DATA_SCSI_CDB16, 40);
VIOBLK_CHECK(SRBEX_DATA_SCSI_CDB16, SenseInfoBuffer, 0x10);
VIOBLK_CHECK(SRBEX_DATA_SCSI_CDB16, Cdb, 0x18);
VIOBLK_SIZE(SRBEX_DATA_SCSI_CDB32, 56);
VIOBLK_SIZE(SRBEX_DATA_SCSI_CDB_VAR, 40);
VIOBLK_CHECK(SRBEX_DATA_SCSI_CDB_VAR, CdbLength, 0x0C);
VIOBLK_CHECK(SRBEX_DATA_SCSI_CDB_VAR, SenseInfoBuffer, 0x18);
VIOBLK_CHECK(SRBEX_DATA_SCSI_CDB_VAR, Cdb, 0x20);
VIOBLK_SIZE(STOR_ADDRESS, 16);
VIOBLK_SIZE(STOR_ADDR_BTL8, 16);
VIOBLK_CHECK(STOR_ADDR_BTL8, Path, 0x08);
_Static_assert(_Alignof(STOR_ADDR_BTL8) == 8, "STOR_ADDR_BTL8 align 8");

#pragma pack(pop)

#endif /* VIOBLK_STORPORT_COMPAT_H */
