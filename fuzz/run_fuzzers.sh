#!/usr/bin/env bash
# Builds the libFuzzer targets (bazel --config=fuzz, clang) and runs each for a
# bounded time, starting from its seed corpus in fuzz/corpus/NAME/.
#
#   bash fuzz/run_fuzzers.sh               # 30 s per target (what CI runs)
#   bash fuzz/run_fuzzers.sh 600 plan      # 10 min on one target, by hand
#
# New corpus entries go to a scratch directory ($MOECAST_FUZZ_WORK, default a
# temporary one), not into the repository. A crash, leak, sanitizer report,
# timeout (> 25 s on one input) or out-of-memory (> 2 GiB) fails the run: the
# script prints the reproducer's path and how to replay it, and the last line
# is "N passed, M failed" over the targets. To keep a finding as a
# regression test, fix it and copy the reproducer to
# fuzz/corpus/NAME/regress_<what> (the :NAME_corpus_test replays it).
#
# Bazel runs under its own --output_base ($MOECAST_CLANG_OUTPUT_BASE, default
# ~/.cache/moecast-bazel-clang): --config=fuzz switches CC to clang, which
# would otherwise re-configure the main output base's C++ toolchain.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(trace_reader ingest plan c_api)
  # Added when the decoders exist (see fuzz/BUILD.bazel).
  for optional in snapshot wal; do
    if grep -q "name = \"$optional\"" fuzz/BUILD.bazel; then targets+=("$optional"); fi
  done
fi
output_base=${MOECAST_CLANG_OUTPUT_BASE:-${XDG_CACHE_HOME:-$HOME/.cache}/moecast-bazel-clang}
work=${MOECAST_FUZZ_WORK:-$(mktemp -d /tmp/moecast_fuzz.XXXXXX)}
mkdir -p "$work"
bazel_cmd=(bazel "--output_base=$output_base")

start=$(date +%s)
labels=()
for t in "${targets[@]}"; do labels+=("//fuzz:${t}_fuzzer"); done
if ! "${bazel_cmd[@]}" build --config=fuzz --symlink_prefix=/ "${labels[@]}"; then
  echo "[fuzz] building the fuzzers failed"
  echo "0 passed, ${#targets[@]} failed"
  exit 1
fi
bin=$("${bazel_cmd[@]}" info --config=fuzz bazel-bin 2>/dev/null)
echo "[fuzz] build took $(( $(date +%s) - start )) s; running ${#targets[@]} targets for ${seconds} s each in $work"

passed=0
failed=0
# CI replays the same exploration every run (-seed=1), so a red run means a
# change, not luck; by hand each run explores anew (MOECAST_FUZZ_SEED=N to
# repeat one).
seed_arg=()
if [[ -n "${MOECAST_FUZZ_SEED:-}" ]]; then
  seed_arg=(-seed="$MOECAST_FUZZ_SEED")
elif [[ "${CI:-}" == "true" ]]; then
  seed_arg=(-seed=1)
fi
for t in "${targets[@]}"; do
  corpus="$work/corpus/$t"
  artifacts="$work/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  log="$work/$t.log"
  t0=$(date +%s)
  # -rss_limit_mb: the engine's own limits keep a job small; more is a bug.
  # Targets whose format changes (snapshot, wal) write seeds from the real
  # encoder into the scratch corpus first (LLVMFuzzerInitialize).
  MOECAST_FUZZ_WRITE_SEEDS="$corpus" \
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$bin/fuzz/${t}_fuzzer" "$corpus" "fuzz/corpus/$t" \
      -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 "${seed_arg[@]}" \
      -malloc_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  stats=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  cov=$(grep -E '^#[0-9]+.*(DONE|INITED)' "$log" | tail -n1 | grep -oE 'cov: [0-9]+' || true)
  if [[ $rc -eq 0 ]]; then
    passed=$((passed + 1))
    echo "[fuzz] PASSED $t: ${stats:-?} runs, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) files, $(( $(date +%s) - t0 )) s"
  else
    failed=$((failed + 1))
    echo "[fuzz] FAILED $t (exit $rc) after $(( $(date +%s) - t0 )) s; last lines of $log:"
    grep -E 'ERROR|runtime error|invariant failed|SUMMARY|Test unit written|==[0-9]+==' "$log" | head -n 20 | sed 's/^/    /'
    for r in "$artifacts"/*; do
      [[ -e "$r" ]] || continue
      echo "[fuzz]   reproducer: $r"
      echo "[fuzz]   replay:     $bin/fuzz/${t}_fuzzer $r"
    done
  fi
done
echo "[fuzz] done in $(( $(date +%s) - start )) s"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
