#!/usr/bin/env bash
# The sanitizer and analysis phases of CI (docs/RELIABILITY.md, "bad input"),
# run after tests/run_all.sh:
#
#   asan     AddressSanitizer + UndefinedBehaviorSanitizer (gcc,
#            --config=asan) on the engine's unit tests, the fuzz corpus
#            replays and selected end-to-end tests
#   tsan     ThreadSanitizer (gcc, --config=tsan) on the concurrency tests
#   tsa      clang -Wthread-safety -Werror=thread-safety build of the engine
#            (--config=clang-tsa)
#   fuzz     every libFuzzer target for $MOECAST_FUZZ_SECONDS (default 30) s
#            (fuzz/run_fuzzers.sh)
#
#   bash tests/run_sanitizers.sh              # every phase
#   bash tests/run_sanitizers.sh asan tsan    # some phases
#
# Each phase prints its duration. Test phases are counted per test case from
# their test.xml (tests/summarize.py), the build phase as one case, the fuzz
# phase one case per target; the last line is "N passed, M failed" over all
# phases. Exit status 0 only when nothing failed.
#
# Output bases: the gcc phases use Bazel's default output base (the one
# tests/run_all.sh built in); --platform_suffix keeps their outputs apart
# from the normal build's, so neither evicts the other. The clang phases use
# their own ($MOECAST_CLANG_OUTPUT_BASE, default ~/.cache/moecast-bazel-clang):
# CC=clang re-configures the C++ toolchain, which in a shared output base would
# throw away the normal build's cache. Set MOECAST_GCC_OUTPUT_BASE to move the
# gcc phases too. --symlink_prefix=/ leaves bazel-bin & co. pointing at the
# normal build.
set -uo pipefail
cd "$(dirname "$0")/.."

phases=("$@")
[[ ${#phases[@]} -gt 0 ]] || phases=(asan tsan fuzz)  # tsa: by hand (the fuzz build checks thread safety too)

gcc_bazel=(bazel)
[[ -n "${MOECAST_GCC_OUTPUT_BASE:-}" ]] && gcc_bazel+=("--output_base=$MOECAST_GCC_OUTPUT_BASE")
clang_base=${MOECAST_CLANG_OUTPUT_BASE:-${XDG_CACHE_HOME:-$HOME/.cache}/moecast-bazel-clang}
export MOECAST_CLANG_OUTPUT_BASE=$clang_base
clang_bazel=(bazel "--output_base=$clang_base")
common=(--keep_going --symlink_prefix=/ --test_summary=short)

# ASan+UBSan: C++ tests only (sh/py tests run tools under interpreters that
# do not load the ASan runtime first).
asan_targets=(
  //engine/...
  # Replaces malloc to count allocations; ASan must own malloc.
  -//engine/predict/lstm:lstm_alloc_test
  //fuzz/...
  //integrations/grpc:service_e2e_test
  //integrations/grpc:status_conversion_test
  //integrations/c_api:c_api_test
  //integrations/cli:flags_test
)
# TSan: the tests that run threads against the engine (its concurrency tests,
# the background analysis stage) and the write-ahead log (concurrent appends sharing one fdatasync). Not the
# gRPC tests: gRPC hands data between its threads through Debian's
# uninstrumented Abseil and gpr primitives, so TSan reports races inside
# every call (e.g. a metadata string written by the caller and read by a gRPC
# thread); suppressing those would hide real races in our handlers too.
tsan_targets=(
  //engine:engine_test
  //engine/analysis:analysis_test
  //engine/durability:wal_test
)
tsan_supp="$PWD/tests/tsan.supp"

log_dir=$(mktemp -d /tmp/moecast_sanitizers.XXXXXX)
total_pass=0
total_fail=0
report=()

add_summary() {  # PHASE LINE
  local p f
  p=$(sed -nE 's/^([0-9]+) passed, ([0-9]+) failed.*/\1/p' <<<"$2")
  f=$(sed -nE 's/^([0-9]+) passed, ([0-9]+) failed.*/\2/p' <<<"$2")
  if [[ -z "$p" ]]; then p=0; f=1; fi
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
  report+=("$(printf '%-5s %s' "$1" "$p passed, $f failed")")
}

run_test_phase() {  # PHASE CONFIG BAZEL... -- TARGETS...
  local phase=$1 config=$2
  shift 2
  local -a bz=()
  while [[ $1 != -- ]]; do bz+=("$1"); shift; done
  shift
  local log="$log_dir/$phase.log" t0 testlogs line
  t0=$(date +%s)
  echo "[sanitizers] $phase: bazel test --config=$config $*"
  "${bz[@]}" test --config="$config" "${common[@]}" --test_lang_filters=cc \
      --build_tests_only "${extra_args[@]}" -- "$@" 2>&1 | tee "$log"
  testlogs=$("${bz[@]}" info --config="$config" bazel-testlogs 2>/dev/null)
  local summary
  summary=$(/usr/bin/python3 tests/summarize.py --label "$phase" "$log" "$testlogs")
  sed '$d' <<<"$summary"
  line=$(tail -n1 <<<"$summary")
  add_summary "$phase" "$line"
  echo "[sanitizers] $phase took $(( $(date +%s) - t0 )) s: $line"
}

extra_args=()
for phase in "${phases[@]}"; do
  case $phase in
    asan)
      run_test_phase asan asan "${gcc_bazel[@]}" -- "${asan_targets[@]}"
      ;;
    tsan)
      extra_args=("--test_env=TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$tsan_supp")
      run_test_phase tsan tsan "${gcc_bazel[@]}" -- "${tsan_targets[@]}"
      extra_args=()
      ;;
    tsa)
      t0=$(date +%s)
      echo "[sanitizers] tsa: bazel build --config=clang-tsa //engine/..."
      if "${clang_bazel[@]}" build --config=clang-tsa "${common[@]}" //engine/... \
          2>&1 | tee "$log_dir/tsa.log"; then
        line="1 passed, 0 failed"
      else
        line="0 passed, 1 failed"
        grep -E 'error:.*thread-safety|\[-Werror' "$log_dir/tsa.log" | head -n 20
      fi
      add_summary tsa "$line"
      echo "[sanitizers] tsa took $(( $(date +%s) - t0 )) s: $line"
      ;;
    fuzz)
      t0=$(date +%s)
      bash fuzz/run_fuzzers.sh "${MOECAST_FUZZ_SECONDS:-30}" 2>&1 | tee "$log_dir/fuzz.log"
      line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log_dir/fuzz.log" | tail -n1)
      add_summary fuzz "${line:-0 passed, 1 failed}"
      echo "[sanitizers] fuzz took $(( $(date +%s) - t0 )) s: ${line:-0 passed, 1 failed}"
      ;;
    *)
      echo "[sanitizers] unknown phase '$phase' (asan, tsan, tsa, fuzz)"
      add_summary "$phase" "0 passed, 1 failed"
      ;;
  esac
done

echo
echo "Sanitizer summary (logs in $log_dir):"
for r in "${report[@]}"; do echo "  $r"; done
echo "$total_pass passed, $total_fail failed"
[[ $total_fail -eq 0 && $total_pass -gt 0 ]]
