/* stortrce.h: WPP tracing compiled out (vioblk tools/peer builds without WPP). The miniport's
 * trace calls expand to nothing; WPP_INIT_TRACING/WPP_CLEANUP do nothing. */
#ifndef VIOBLK_PEER_STORTRCE_H
#define VIOBLK_PEER_STORTRCE_H
#include "vioblk_storport_compat.h"
typedef struct _STORAGE_TRACE_INIT_INFO {
    ULONG Size;
    PVOID DriverObject;
    ULONG NumErrorLogRecords;
    VOID (*TraceCleanupRoutine)(PVOID);
    PVOID TraceContext;
} STORAGE_TRACE_INIT_INFO, *PSTORAGE_TRACE_INIT_INFO;
#define WPP_INIT_TRACING(d, r, i) ((void)(d), (void)(r), (void)(i))
#define WPP_CLEANUP(d, c)         ((void)(c))
#define RhelDbgPrint(...)         ((void)0)
#define WPP_DEFINE_CONTROL_GUID(...)
#define WPP_DEFINE_BIT(...)
#endif
