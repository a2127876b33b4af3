#!/bin/bash
# Installs the moecast C API:
#   PREFIX/lib/libmoecast.so
#   PREFIX/include/moecast_c.h
#   PREFIX/lib/pkgconfig/moecast.pc
#
#   integrations/c_api/install.sh PREFIX
#       builds //integrations/c_api:libmoecast.so with Bazel, then installs;
#   integrations/c_api/install.sh PREFIX --prebuilt LIBMOECAST_SO MOECAST_C_H
#       installs files built already (what the install test does inside
#       `bazel test`, where Bazel cannot run).
#
# Then: cc app.c $(pkg-config --cflags --libs moecast)  (with
# PKG_CONFIG_PATH=PREFIX/lib/pkgconfig if PREFIX is not a system prefix).
#
# Runtime dependencies: the shared Abseil libraries of Debian 12
# (libabsl20220623), libstdc++6 and libc6; moecast's own code is inside
# libmoecast.so. Their list goes into moecast.pc's Libs.private, read from the
# library's DT_NEEDED entries so it cannot drift from what was linked.
set -euo pipefail

usage() {
  echo "usage: $0 PREFIX [--prebuilt LIBMOECAST_SO MOECAST_C_H]" >&2
  exit 2
}
[[ $# -ge 1 ]] || usage
prefix="$1"
shift
here="$(cd "$(dirname "$(readlink -f "$0")")" && pwd)"

if [[ $# -eq 0 ]]; then
  repo="$(cd "$here/../.." && pwd)"
  (cd "$repo" && bazel build //integrations/c_api:libmoecast.so)
  lib="$(cd "$repo" && bazel info bazel-bin 2>/dev/null)/integrations/c_api/libmoecast.so"
  header="$here/moecast_c.h"
elif [[ $# -eq 3 && "$1" == "--prebuilt" ]]; then
  lib="$2"
  header="$3"
else
  usage
fi
for f in "$lib" "$header"; do
  [[ -f "$f" ]] || { echo "install.sh: $f does not exist" >&2; exit 1; }
done

version=$(sed -nE 's/^#define MOECAST_VERSION_STRING "([^"]+)"/\1/p' "$header")
[[ -n "$version" ]] || { echo "install.sh: no MOECAST_VERSION_STRING in $header" >&2; exit 1; }

mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
prefix="$(cd "$prefix" && pwd)"
install -m 0755 "$lib" "$prefix/lib/libmoecast.so"
install -m 0644 "$header" "$prefix/include/moecast_c.h"

# -lfoo for every DT_NEEDED library but the ones every C link has anyway.
private=""
while read -r so; do
  case "$so" in
    libc.so.*|libm.so.*|ld-linux*|libgcc_s.so.*) continue ;;
    libstdc++.so.*) private+=" -lstdc++" ;;
    lib*.so*) name="${so#lib}"; private+=" -l${name%%.so*}" ;;
  esac
done < <(readelf -d "$lib" | sed -nE 's/.*\(NEEDED\).*\[(.*)\]/\1/p')

cat > "$prefix/lib/pkgconfig/moecast.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: moecast
Description: MoE expert-load forecasting engine, C API (moecast_c.h)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lmoecast
# libmoecast.so records these itself (DT_NEEDED); listed for static-minded
# tools. At run time: Debian's libabsl20220623, libstdc++6, libc6.
Libs.private:$private -lm
PC

echo "installed moecast $version into $prefix:"
echo "  $prefix/lib/libmoecast.so"
echo "  $prefix/include/moecast_c.h"
echo "  $prefix/lib/pkgconfig/moecast.pc"
