# Sourced by tools/peer/*.sh: the mingw-w64 tools, compile flags and the native-PE link shared by
# viostor.sh and the compat header's own test miniport (tools/peer/test/tiny.sh).
cc=x86_64-w64-mingw32-gcc
dlltool=x86_64-w64-mingw32-dlltool
peer_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

peer_check_tools() {
    local tool
    for tool in "$cc" "$dlltool"; do
        if ! command -v "$tool" >/dev/null; then
            echo "tools/peer: $tool not found; install Debian's mingw-w64: apt-get install -y mingw-w64" >&2
            exit 2
        fi
    done
}

# Kernel code: no CRT, no stack probes (__chkstk is not an ntoskrnl export), no red zone, no
# unwind tables; the compat header is included first in every file so that its __forceinline and
# packing fixes apply to the VirtIO library too.
peer_cflags=(
    -O2 -std=gnu11 -ffreestanding -fno-builtin-printf -fno-stack-protector -mno-stack-arg-probe
    -fno-asynchronous-unwind-tables -fno-strict-aliasing -mno-red-zone
    -D_AMD64_ -D_WIN64 -DNTDDI_VERSION=0x0A000000 -D_WIN32_WINNT=0x0A00 -DNDEBUG
    -include vioblk_storport_compat.h
    -I"$peer_dir/compat" -I/usr/x86_64-w64-mingw32/include/ddk
    -Wno-attributes -Wno-unknown-pragmas -Wno-int-to-pointer-cast -Wno-pointer-to-int-cast
)

# peer_link OUT BUILD-DIR OBJECTS...: import libraries from the .def files, then a native
# (subsystem 1) PE entered at DriverEntry with base relocations.
peer_link() {
    local out="$1" build="$2"
    shift 2
    "$dlltool" -d "$peer_dir/storport.def" -l "$build/libstorport.a" -D storport.sys
    "$dlltool" -d "$peer_dir/ntoskrnl.def" -l "$build/libntoskrnl.a" -D ntoskrnl.exe
    "$cc" -o "$out" "$@" -nostdlib -nostartfiles -shared \
        -Wl,--subsystem,native -Wl,--entry,DriverEntry -Wl,--image-base,0x140000000 \
        -Wl,--dynamicbase -Wl,--nxcompat -Wl,--file-alignment,0x200 -Wl,--section-alignment,0x1000 \
        -Wl,--no-insert-timestamp \
        "$build/libstorport.a" "$build/libntoskrnl.a" -lgcc
}
