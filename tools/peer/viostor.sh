#!/usr/bin/env bash
# Builds viostor.sys (virtio-win's Storport virtio-blk miniport) with Debian's mingw-w64, from a
# checkout of https://github.com/virtio-win/kvm-guest-drivers-windows that the user supplies.
# Nothing is downloaded, and nothing of viostor is ever committed to this repository.
#
#   tools/peer/viostor.sh PATH [OUT]      OUT defaults to target/peer/viostor.sys
#
# The headers are tools/peer/compat/ (written here from ../shared/reference/layouts.md) over
# mingw-w64's ntddk.h and ddk/scsi.h; the import libraries are made by dlltool from
# tools/peer/storport.def and tools/peer/ntoskrnl.def. Differences from virtio-win's MSVC build:
# gcc 12 -O2 instead of MSVC /O2, and no WPP (virtio_stor_trace.h's release configuration,
# EVENT_TRACING, with the WPP macros compiled to nothing; the VirtIO library's DPrintf calls still
# go to DbgPrint as in the release build). The sources are copied to a build directory, where
# two MSVC-isms gcc does not accept are rewritten (listed in patch_copy below); the checkout
# itself is never modified.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
src="${1:?usage: tools/peer/viostor.sh PATH-TO-kvm-guest-drivers-windows [OUT]}"
out="${2:-$root/target/peer/viostor.sys}"

. "$here/mingw.sh"
peer_check_tools
for f in viostor/virtio_stor.c viostor/virtio_stor_hw_helper.c VirtIO/VirtIOPCIModern.c; do
    if [ ! -f "$src/$f" ]; then
        echo "viostor.sh: $src has no $f: give the path of a kvm-guest-drivers-windows checkout" >&2
        exit 2
    fi
done

build="$(dirname "$out")/viostor-build"
rm -rf "$build"
mkdir -p "$build/src" "$build/obj"
cp -r "$src/viostor" "$src/VirtIO" "$build/src/"

# Which viostor this is: the checkout's commit if it is a git work tree, else a content hash.
if commit="$(git -C "$src" rev-parse HEAD 2>/dev/null)"; then
    dirty="$(git -C "$src" status --porcelain -- viostor VirtIO 2>/dev/null | head -c 1)"
    [ -n "$dirty" ] && commit="$commit (modified)"
else
    commit="unknown (not a git checkout; sources sha256 $(cd "$src" && find viostor VirtIO -type f -name '*.[ch]' | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16))"
fi
[ -n "${VIOSTOR_COMMIT:-}" ] && commit="$VIOSTOR_COMMIT"

patch_copy() {
    local s="$build/src"
    # 1. MSVC drops the comma before an empty __VA_ARGS__; gcc needs `##__VA_ARGS__`.
    sed -i 's/VirtioDebugPrintProc(MSG, __VA_ARGS__)/VirtioDebugPrintProc(MSG, ##__VA_ARGS__)/' \
        "$s/VirtIO/kdebugprint.h"
    # 2. Windows file names are case-insensitive and use backslashes: "virtio.h" is VirtIO.h,
    #    "windows\virtio_ring_allocation.h" is windows/virtio_ring_allocation.h.
    ln -sf VirtIO.h "$s/VirtIO/virtio.h"
    mkdir -p "$build/include"
    cp "$s/VirtIO/windows/virtio_ring_allocation.h" "$build/include/windows\\virtio_ring_allocation.h"
    # WPP's generated headers (.tmh) are empty: no WPP in this build.
    for f in "$s"/viostor/*.c "$s"/VirtIO/*.c; do
        : >"$build/include/$(basename "${f%.c}").tmh"
    done
}
patch_copy

cflags=("${peer_cflags[@]}" -I"$build/include" -I"$build/src/VirtIO" -I"$build/src/viostor")
objs=()
for f in viostor/virtio_stor.c viostor/virtio_pci.c viostor/virtio_stor_hw_helper.c \
    viostor/virtio_stor_utils.c VirtIO/VirtIOPCICommon.c VirtIO/VirtIOPCILegacy.c \
    VirtIO/VirtIOPCIModern.c VirtIO/VirtIORing.c VirtIO/VirtIORing-Packed.c; do
    o="$build/obj/$(basename "${f%.c}").o"
    "$cc" "${cflags[@]}" -c "$build/src/$f" -o "$o"
    objs+=("$o")
done

peer_link "$out" "$build" "${objs[@]}"

echo "$commit" >"$out.commit"
echo "viostor.sh: built $out from kvm-guest-drivers-windows $commit"
x86_64-w64-mingw32-objdump -p "$out" | grep -E "^Subsystem|DLL Name|^\s+[0-9a-f]+\s+[0-9]+\s+\w" | sed 's/^/  /' || true
