/* storport.h for building Storport miniports with Debian's mingw-w64 (vioblk tools/peer).
 * mingw's own ddk/storport.h predates SRB_EX and conflicts with its scsiport srb.h; this one
 * replaces it. Everything is in vioblk_storport_compat.h, written from
 * ../shared/reference/layouts.md (and checked there with static asserts). */
#include "vioblk_storport_compat.h"
