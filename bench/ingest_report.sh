#!/usr/bin/env bash
# Runs the ingest benchmark on one core and prints a Markdown table of each
# size's ingest time next to the memcpy floor measured in the same process,
# with their ratio (the figures in BENCHMARKS.md).
#
#   bash bench/ingest_report.sh [--repetitions=N]
set -euo pipefail
cd "$(dirname "$0")/.."
reps="${1:---repetitions=5}"
bazel build //bench:ingest_benchmark >&2
json=$(mktemp)
trap 'rm -f "$json"' EXIT
cpu=$(( $(nproc) - 1 ))
taskset -c "$cpu" bazel-bin/bench/ingest_benchmark --benchmark_min_time=0.5 \
  "--benchmark_${reps#--}" --benchmark_report_aggregates_only=true \
  --benchmark_format=json >"$json"
/usr/bin/python3 - "$json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
ctx = data["context"]
rows = {}
for b in data["benchmarks"]:
    if b.get("aggregate_name") != "median":
        continue
    kind, size = b["run_name"].split("/", 1)
    rows.setdefault(size, {})[kind] = b
medians = [b for b in data["benchmarks"] if b.get("aggregate_name") == "median"]
reps = medians[0].get("repetitions", "?") if medians else "?"
print(f"host: {ctx.get('host_name')}, {ctx.get('num_cpus')} CPUs @ {ctx.get('mhz_per_cpu')} MHz, "
      f"pinned to one core; median of {reps} repetitions")
print()
print("| size | ingest per step | counts/s | memcpy floor | ratio ingest/memcpy |")
print("|---|---|---|---|---|")
for size, r in rows.items():
    ing, cp = r["BM_Ingest"], r["BM_MemcpyFloor"]
    t_ing = ing["real_time"]
    t_cp = cp["real_time"]
    unit = ing["time_unit"]
    print(f"| {size} | {t_ing/1000 if unit=='ns' else t_ing:.2f} us | "
          f"{ing['items_per_second']/1e6:.0f} M | "
          f"{t_cp/1000 if unit=='ns' else t_cp:.2f} us | {t_ing/t_cp:.1f}x |")
PY
