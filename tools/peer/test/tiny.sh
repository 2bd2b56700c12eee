#!/usr/bin/env bash
# Builds tools/peer/test/tiny_miniport.c into a native PE with the compat header and the .def
# import libraries: tools/peer/test/tiny.sh OUT. Exit status 2 when mingw-w64 is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:?usage: tools/peer/test/tiny.sh OUT.sys}"
. "$here/../mingw.sh"
peer_check_tools
build="$(dirname "$out")/tiny-build"
mkdir -p "$build"
"$cc" "${peer_cflags[@]}" -Wall -Wextra -Werror -Wno-unused-parameter -c "$here/tiny_miniport.c" -o "$build/tiny.o"
peer_link "$out" "$build" "$build/tiny.o"
