/* The compat header's test miniport (tools/peer/test/tiny.sh builds it; crates/storport-sim's
 * peer_compat test runs that). It uses every part of vioblk_storport_compat.h viostor needs:
 * SRB_EX and the srbhelper routines, STOR_DPC, perf options, the Ex and MSI locks, the log-system-
 * event extended function, the register macros, and the extra imports (StorPortSetDeviceQueueDepth,
 * StorPortMoveMemory, MmGetPhysicalAddress, KeQueryActiveProcessorCountEx, KeBugCheck, DbgPrint).
 * It drives no device; it is compiled and linked, not run. */
#include <storport.h>
#include <srbhelper.h>

typedef struct _TINY_EXT {
    PVOID Bar;
    STOR_DPC Dpc;
    ULONG Cpus;
    ULONG Completed;
} TINY_EXT, *PTINY_EXT;

static HW_DPC_ROUTINE TinyDpc;
static VOID TinyDpc(PSTOR_DPC Dpc, PVOID DevExt, PVOID A1, PVOID A2)
{
    PTINY_EXT e = DevExt;
    STOR_LOCK_HANDLE lh;
    (void)Dpc, (void)A2;
    StorPortAcquireSpinLock(DevExt, DpcLock, &e->Dpc, &lh);
    e->Completed += (ULONG)(ULONG_PTR)A1;
    StorPortReleaseSpinLock(DevExt, &lh);
}

static BOOLEAN TinyMsi(PVOID DevExt, ULONG MessageId)
{
    PTINY_EXT e = DevExt;
    ULONG old = 0;
    StorPortAcquireMSISpinLock(DevExt, MessageId, &old);
    ULONG isr = StorPortReadRegisterUlong(NULL, (PULONG)e->Bar);
    StorPortReleaseMSISpinLock(DevExt, MessageId, old);
    StorPortIssueDpc(DevExt, &e->Dpc, (PVOID)(ULONG_PTR)isr, NULL);
    return TRUE;
}

static ULONG TinyFindAdapter(PVOID DevExt, PVOID Ctx, PVOID Bus, PCHAR Args,
                             PPORT_CONFIGURATION_INFORMATION Config, PBOOLEAN Again)
{
    PTINY_EXT e = DevExt;
    (void)Ctx, (void)Bus, (void)Args, (void)Again;
    e->Cpus = KeQueryActiveProcessorCountEx(ALL_PROCESSOR_GROUPS);
    Config->MaximumTransferLength = 0x10000;
    Config->NumberOfPhysicalBreaks = 16;
    Config->SynchronizationModel = StorSynchronizeFullDuplex;
    Config->HwMSInterruptRoutine = TinyMsi;
    Config->InterruptSynchronizationMode = InterruptSynchronizePerMessage;
    e->Bar = StorPortGetDeviceBase(DevExt, PCIBus, Config->SystemIoBusNumber,
                                   (*Config->AccessRanges)[0].RangeStart, 0x1000, FALSE);
    return e->Bar ? SP_RETURN_FOUND : SP_RETURN_NOT_FOUND;
}

static BOOLEAN TinyInitialize(PVOID DevExt)
{
    PTINY_EXT e = DevExt;
    PERF_CONFIGURATION_DATA perf = {0};
    perf.Version = STOR_PERF_VERSION;
    perf.Size = sizeof perf;
    if (StorPortInitializePerfOpts(DevExt, TRUE, &perf) == STOR_STATUS_SUCCESS) {
        perf.Flags &= STOR_PERF_DPC_REDIRECTION | STOR_PERF_CONCURRENT_CHANNELS;
        perf.ConcurrentChannels = e->Cpus;
        StorPortInitializePerfOpts(DevExt, FALSE, &perf);
    }
    StorPortInitializeDpc(DevExt, &e->Dpc, TinyDpc);
    StorPortWriteRegisterUlong(DevExt, (PULONG)e->Bar + 1, 1);
    return TRUE;
}

static BOOLEAN TinyBuildIo(PVOID DevExt, PSCSI_REQUEST_BLOCK Srb)
{
    (void)DevExt;
    return SrbGetCdb(Srb) != NULL;
}

static BOOLEAN TinyStartIo(PVOID DevExt, PSCSI_REQUEST_BLOCK Srb)
{
    PSTORAGE_REQUEST_BLOCK srb = (PSTORAGE_REQUEST_BLOCK)Srb;
    PCDB cdb = SrbGetCdb(srb);
    STARTIO_PERFORMANCE_PARAMETERS p = {0};
    STOR_LOCK_HANDLE lh;
    UCHAR status = SCSISTAT_GOOD;
    p.Size = sizeof p;
    StorPortGetStartIoPerfParams(DevExt, Srb, &p);
    StorPortAcquireSpinLockEx(DevExt, StartIoLock, NULL, &lh);
    StorPortReleaseSpinLock(DevExt, &lh);
    if (cdb->CDB6GENERIC.OperationCode == SCSIOP_INQUIRY && SrbGetDataTransferLength(srb) >= 36) {
        static const INQUIRYDATA inq = {.DeviceType = DIRECT_ACCESS_DEVICE, .VendorId = "tiny"};
        StorPortMoveMemory(SrbGetDataBuffer(srb), (PVOID)&inq, 36);
        StorPortSetDeviceQueueDepth(DevExt, SrbGetPathId(srb), SrbGetTargetId(srb), SrbGetLun(srb), 32);
    } else if (SrbGetSrbFunction(srb) == SRB_FUNCTION_PNP) {
        PSRBEX_DATA_PNP pnp = (PSRBEX_DATA_PNP)SrbGetSrbExDataByType(srb, SrbExDataTypePnP);
        if (pnp == NULL || pnp->PnPAction > StorSurpriseRemoval)
            KeBugCheck(0xE0000001);
    }
    SrbSetScsiData(srb, NULL, NULL, &status, NULL, NULL);
    SrbSetSrbStatus(srb, SRB_STATUS_SUCCESS);
    if (MmGetPhysicalAddress(srb).QuadPart == 0)
        DbgPrint("tiny: no physical address for %p\n", srb);
    StorPortNotification(RequestComplete, DevExt, Srb);
    return TRUE;
}

static BOOLEAN TinyResetBus(PVOID DevExt, ULONG PathId)
{
    STOR_LOG_EVENT_DETAILS ev = {0};
    ULONG id = PathId;
    ev.InterfaceRevision = STOR_CURRENT_LOG_INTERFACE_REVISION;
    ev.Size = sizeof ev;
    ev.EventAssociation = StorEventAdapterAssociation;
    ev.StorportSpecificErrorCode = TRUE;
    ev.ErrorCode = SP_INTERNAL_ADAPTER_ERROR;
    ev.DumpDataSize = sizeof id;
    ev.DumpData = &id;
    StorPortLogSystemEvent(DevExt, &ev, NULL);
    return TRUE;
}

static SCSI_ADAPTER_CONTROL_STATUS TinyAdapterControl(PVOID DevExt, SCSI_ADAPTER_CONTROL_TYPE Type,
                                                      PVOID Parameters)
{
    (void)DevExt;
    if (Type == ScsiQuerySupportedControlTypes) {
        PSCSI_SUPPORTED_CONTROL_TYPE_LIST l = Parameters;
        if (l->MaxControlType > ScsiRestartAdapter) {
            l->SupportedTypeList[ScsiQuerySupportedControlTypes] = TRUE;
            l->SupportedTypeList[ScsiStopAdapter] = TRUE;
            l->SupportedTypeList[ScsiRestartAdapter] = TRUE;
        }
    }
    return ScsiAdapterControlSuccess;
}

static BOOLEAN TinyInterrupt(PVOID DevExt)
{
    return TinyMsi(DevExt, 0);
}

ULONG DriverEntry(PVOID DriverObject, PVOID RegistryPath)
{
    HW_INITIALIZATION_DATA hw;
    memset(&hw, 0, sizeof hw);
    hw.HwInitializationDataSize = sizeof hw;
    hw.AdapterInterfaceType = PCIBus;
    hw.HwInitialize = TinyInitialize;
    hw.HwBuildIo = TinyBuildIo;
    hw.HwStartIo = TinyStartIo;
    hw.HwInterrupt = TinyInterrupt;
    hw.HwFindAdapter = TinyFindAdapter;
    hw.HwResetBus = TinyResetBus;
    hw.HwAdapterControl = TinyAdapterControl;
    hw.DeviceExtensionSize = sizeof(TINY_EXT);
    hw.NumberOfAccessRanges = 1;
    hw.MapBuffers = STOR_MAP_NON_READ_WRITE_BUFFERS;
    hw.TaggedQueuing = TRUE;
    hw.AutoRequestSense = TRUE;
    hw.MultipleRequestPerLu = TRUE;
    hw.SrbTypeFlags = SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK;
    return StorPortInitialize(DriverObject, RegistryPath, &hw, NULL);
}
