#!/bin/bash
# install.sh lays out PREFIX/{lib,include,lib/pkgconfig}; pkg-config reads
# moecast.pc; example/ builds with plain gcc and make through pkg-config and
# runs against the installed library; moecast_c.h compiles as strict C99,
# C11 and C++.
#
#   install_test.sh INSTALL_SH LIBMOECAST_SO MOECAST_C_H EXAMPLE_C
# (bazel test cannot run Bazel, so install.sh gets the built files with
# --prebuilt.)
set -euo pipefail
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
install_sh=$(abs "$1"); lib=$(abs "$2"); header=$(abs "$3"); example_c=$(abs "$4")
work="${TEST_TMPDIR:-$(mktemp -d)}/install_test"
rm -rf "$work"; mkdir -p "$work"
prefix="$work/prefix"
fail=0
error() { echo "FAILED: $*" >&2; fail=1; }
ok() { echo "ok: $*"; }

bash "$install_sh" "$prefix" --prebuilt "$lib" "$header"
for f in lib/libmoecast.so include/moecast_c.h lib/pkgconfig/moecast.pc; do
  [[ -f "$prefix/$f" ]] && ok "$f installed" || error "$prefix/$f missing"
done
cmp -s "$lib" "$prefix/lib/libmoecast.so" || error "installed library differs"
cmp -s "$header" "$prefix/include/moecast_c.h" || error "installed header differs"

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
want_version=$(sed -nE 's/^#define MOECAST_VERSION_STRING "([^"]+)"/\1/p' "$header")
[[ "$(pkg-config --modversion moecast)" == "$want_version" ]] \
  && ok "pkg-config --modversion = $want_version" \
  || error "modversion $(pkg-config --modversion moecast) != $want_version"
[[ "$(pkg-config --cflags moecast)" == "-I$prefix/include"* ]] \
  && ok "cflags" || error "cflags: $(pkg-config --cflags moecast)"
[[ "$(pkg-config --libs moecast | xargs)" == "-L$prefix/lib -lmoecast" ]] \
  && ok "libs" || error "libs: $(pkg-config --libs moecast)"
static_libs=$(pkg-config --libs --static moecast)
for l in -labsl_status -labsl_statusor -lstdc++; do
  grep -q -- "$l" <<<"$static_libs" && ok "Libs.private has $l" \
    || error "Libs.private lacks $l: $static_libs"
done
[[ "$(pkg-config --variable=libdir moecast)" == "$prefix/lib" ]] \
  || error "libdir variable is $(pkg-config --variable=libdir moecast)"

# The example, built by its Makefile with gcc, outside the source tree.
mkdir -p "$work/example"
cp "$example_c" "$(dirname "$example_c")/Makefile" "$work/example/"
make -C "$work/example" CC=gcc >"$work/make.log" 2>&1 \
  && ok "example built" || { cat "$work/make.log" >&2; error "make failed"; }
grep -q -- "-lmoecast" "$work/make.log" || error "make did not use pkg-config's -lmoecast"
if [[ -x "$work/example/example" ]]; then
  resolved=$(ldd "$work/example/example" | awk '$1 == "libmoecast.so" {print $3}')
  [[ "$resolved" == "$prefix/lib/libmoecast.so" ]] \
    && ok "example loads $resolved" || error "example resolves libmoecast.so to '$resolved'"
  out=$(env -u LD_LIBRARY_PATH "$work/example/example" 2>&1) || error "example failed: $out"
  echo "$out"
  grep -q '^example: OK$' <<<"$out" || error "example did not print 'example: OK'"
  grep -q "^moecast $want_version\$" <<<"$out" || error "example printed no version"
fi

# The installed header alone compiles as strict C and C++.
for std in c99 c11; do
  echo '#include <moecast_c.h>
int main(void) { return moecast_abi_version() == MOECAST_ABI_VERSION ? 0 : 1; }' \
    > "$work/h.c"
  gcc -std=$std -pedantic -Wall -Wextra -Werror $(pkg-config --cflags moecast) \
    -c "$work/h.c" -o "$work/h_$std.o" && ok "header compiles as $std" \
    || error "header does not compile as $std"
done
echo '#include <moecast_c.h>
int main() { moecast_engine* e = nullptr; return moecast_engine_create(nullptr, &e) == MOECAST_OK ? (moecast_engine_destroy(e), 0) : 1; }' \
  > "$work/h.cc"
g++ -std=c++11 -pedantic -Wall -Wextra -Werror $(pkg-config --cflags moecast) \
  "$work/h.cc" -o "$work/h_cc" $(pkg-config --libs moecast) -Wl,-rpath,"$prefix/lib" \
  && "$work/h_cc" && ok "header compiles, links and runs as C++11" \
  || error "C++ use of the header failed"

if (( fail )); then echo "install_test: FAILED"; exit 1; fi
echo "install_test: PASSED"
