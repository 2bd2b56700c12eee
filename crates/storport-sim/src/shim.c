/*
 * The variadic storport.sys exports for the host build of storport-sim.
 *
 * Rust cannot define C-variadic functions on stable, so these three unpack their arguments
 * (per notification type or function code, with C's default promotions: BOOLEAN, UCHAR and
 * USHORT arrive as int) and call fixed-argument Rust functions. Argument lists: layouts.md,
 * "Which Storport helpers are exports, and how to call the others".
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

typedef uint32_t ULONG;

extern void storport_sim_notification(ULONG type, void *devext, const uint64_t *args);
extern ULONG storport_sim_extended_function(ULONG code, void *devext, const uint64_t *args);
extern void storport_sim_debug_print(ULONG level, const char *msg);

#define P() ((uint64_t)(uintptr_t)va_arg(ap, void *))
#define U() ((uint64_t)va_arg(ap, unsigned int))

void StorPortNotification(ULONG type, void *devext, ...)
{
    uint64_t a[6] = {0};
    va_list ap;
    va_start(ap, devext);
    switch (type) {
    case 0x0000: /* RequestComplete: Srb */
        a[0] = P();
        break;
    case 0x0001: /* NextRequest */
        break;
    case 0x0002: /* NextLuRequest: PathId, TargetId, Lun */
        a[0] = U(); a[1] = U(); a[2] = U();
        break;
    case 0x0003: /* ResetDetected: PathId */
    case 0x0007: /* BusChangeDetected: PathId */
        a[0] = U();
        break;
    case 0x0006: /* RequestTimerCall: HwTimer, MiniportTimerValue */
        a[0] = P(); a[1] = U();
        break;
    case 0x1000: /* EnablePassiveInitialization: routine, LONG *result */
        a[0] = P(); a[1] = P();
        break;
    case 0x1001: /* InitializeDpc: STOR_DPC *, routine */
        a[0] = P(); a[1] = P();
        break;
    case 0x1002: /* IssueDpc: STOR_DPC *, arg1, arg2, LONG *result */
        a[0] = P(); a[1] = P(); a[2] = P(); a[3] = P();
        break;
    case 0x1003: /* AcquireSpinLock: STOR_SPINLOCK, context, STOR_LOCK_HANDLE * */
        a[0] = U(); a[1] = P(); a[2] = P();
        break;
    case 0x1004: /* ReleaseSpinLock: STOR_LOCK_HANDLE * */
        a[0] = P();
        break;
    case 0x1005: /* StateChangeDetectedCall: ChangedEntity, Address (further args UNVERIFIED) */
        a[0] = U(); a[1] = P();
        break;
    default:
        break;
    }
    va_end(ap);
    storport_sim_notification(type, devext, a);
}

#define Q() ((uint64_t)va_arg(ap, unsigned long long))

ULONG StorPortExtendedFunction(ULONG code, void *devext, ...)
{
    uint64_t a[12] = {0};
    va_list ap;
    va_start(ap, devext);
    switch (code) {
    case 0: /* AllocatePool: bytes, tag, PVOID * */
        a[0] = U(); a[1] = U(); a[2] = P();
        break;
    case 1: /* FreePool: PVOID */
        a[0] = P();
        break;
    case 11: /* AcquireMSISpinLock: MessageId, PULONG OldIrql */
    case 13: /* GetMessageInterruptInformation: MessageId, MESSAGE_INTERRUPT_INFORMATION * */
    case 14: /* InitializePerformanceOptimizations: BOOLEAN Query (promoted), PERF_CONFIGURATION_DATA * */
        a[0] = U(); a[1] = P();
        break;
    case 12: /* ReleaseMSISpinLock: MessageId, ULONG OldIrql */
        a[0] = U(); a[1] = U();
        break;
    case 15: /* GetStartIoPerformanceParameters: Srb, STARTIO_PERFORMANCE_PARAMETERS * */
        a[0] = P(); a[1] = P();
        break;
    case 58: /* MiniportEtwEvent2: Address, EventId, Description, Keywords (ULONGLONG), Level,
                Opcode, Srb, Parameter1Name, Parameter1Value (ULONGLONG), Parameter2Name,
                Parameter2Value (ULONGLONG) */
        a[0] = P(); a[1] = U(); a[2] = P(); a[3] = Q(); a[4] = U(); a[5] = U();
        a[6] = P(); a[7] = P(); a[8] = Q(); a[9] = P(); a[10] = Q();
        break;
    case 45: /* MarkDumpMemory: PVOID Address, ULONG_PTR Length, ULONG Flags */
        a[0] = P(); a[1] = Q(); a[2] = U();
        break;
    case 93: /* AcquireSpinLock (Ex): STOR_SPINLOCK, context, STOR_LOCK_HANDLE * */
        a[0] = U(); a[1] = P(); a[2] = P();
        break;
    default:
        break;
    }
    va_end(ap);
    return storport_sim_extended_function(code, devext, a);
}

void StorPortDebugPrint(ULONG level, const char *format, ...)
{
    char buf[1024];
    va_list ap;
    if (format == 0)
        return;
    va_start(ap, format);
    vsnprintf(buf, sizeof buf, format, ap);
    va_end(ap);
    storport_sim_debug_print(level, buf);
}

/* Referenced from Rust so this object is always linked. */
uintptr_t storport_sim_shim_anchor(void)
{
    return (uintptr_t)&StorPortNotification ^ (uintptr_t)&StorPortExtendedFunction ^
           (uintptr_t)&StorPortDebugPrint;
}
