/* ntstrsafe.h for tools/peer: viostor includes it but calls its routines only in the COM_DEBUG
 * configuration, which this build does not use; mingw's version would pull in the CRT's
 * _vsnprintf, which a kernel image has no import for. Declared, never defined: a use fails to link. */
#ifndef VIOBLK_PEER_NTSTRSAFE_H
#define VIOBLK_PEER_NTSTRSAFE_H
#include "vioblk_storport_compat.h"
NTSTATUS RtlStringCbVPrintfA(char *dst, size_t cb, const char *fmt, va_list args);
#endif
