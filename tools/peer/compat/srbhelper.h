/* srbhelper.h: the SrbGet and SrbSet helpers, written for vioblk tools/peer (see vioblk_storport_compat.h). */
#include "vioblk_storport_compat.h"
