#!/bin/bash
# libmoecast.so exports exactly the functions moecast_c.h declares, nothing
# else (no C++ engine symbols, no Abseil, no version nodes), has the soname
# libmoecast.so, no RPATH/RUNPATH into the build tree, and needs only system
# libraries.
#
#   exported_symbols_test.sh LIBMOECAST_SO MOECAST_C_H
set -euo pipefail
lib="$1"
header="$2"
fail=0
error() { echo "FAILED: $*" >&2; fail=1; }

exported=$(nm -D --defined-only "$lib" | awk '{print $NF}' | sort)
[[ -n "$exported" ]] || error "nm -D --defined-only $lib exports nothing"
others=$(grep -v '^moecast_' <<<"$exported" || true)
[[ -z "$others" ]] && echo "ok: every exported symbol starts with moecast_" \
  || error "symbols outside moecast_*: $(echo $others | head -c 2000)"

# Function names declared with MOECAST_API in the header.
declared=$(grep -oE '^MOECAST_API [^(]*\bmoecast_[a-z0-9_]+\(' "$header" |
           grep -oE 'moecast_[a-z0-9_]+\($' | tr -d '(' | sort)
n_declared=$(wc -l <<<"$declared")
n_exported=$(wc -l <<<"$exported")
if [[ "$declared" == "$exported" ]]; then
  echo "ok: $n_exported exported = $n_declared declared in $(basename "$header")"
else
  error "exported and declared differ (< exported only, > declared only):"
  diff <(echo "$exported") <(echo "$declared") >&2 || true
fi
(( n_declared >= 30 )) || error "only $n_declared declarations found in $header"

# Every exported symbol is a function (T), not data.
non_text=$(nm -D --defined-only "$lib" | awk '$2 != "T" {print}')
[[ -z "$non_text" ]] && echo "ok: all exports are functions" \
  || error "non-function exports: $non_text"

dyn=$(readelf -d "$lib")
grep -q 'Library soname: \[libmoecast.so\]' <<<"$dyn" \
  && echo "ok: soname libmoecast.so" || error "soname is not libmoecast.so"
if grep -qE '\((RPATH|RUNPATH)\)' <<<"$dyn"; then
  error "has an RPATH/RUNPATH: $(grep -E 'RPATH|RUNPATH' <<<"$dyn")"
else
  echo "ok: no RPATH/RUNPATH"
fi
# Runtime dependencies: Abseil, the C++ runtime and libc only.
needed=$(grep NEEDED <<<"$dyn" | sed -E 's/.*\[(.*)\]/\1/')
bad_needed=$(grep -vE '^(libabsl_[a-z0-9_]+\.so\.[0-9]+|libstdc\+\+\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libc\.so\.6|ld-linux-x86-64\.so\.2|libpthread\.so\.0)$' <<<"$needed" || true)
[[ -z "$bad_needed" ]] && echo "ok: needs only $(echo $needed)" \
  || error "unexpected runtime dependencies: $bad_needed"

if (( fail )); then echo "exported_symbols_test: FAILED"; exit 1; fi
echo "exported_symbols_test: PASSED"
