#!/usr/bin/env bash
# Builds //bench/grpc_load:grpc_load and runs the standard matrix of the gRPC
# load bench (BENCHMARKS.md, "gRPC load (moecastd over loopback)"): every case
# once through a MoecastServer over loopback and once in-process
# (Engine::Ingest) in the same process, median of the repetitions. Prints a
# Markdown table and writes the JSON report (one object per case).
#
#   bash bench/grpc_load/run_load.sh                 # full matrix, ~4 min
#   bash bench/grpc_load/run_load.sh --short         # two cases, ~10 s
#   bash bench/grpc_load/run_load.sh --server=HOST:PORT   # an external moecastd
#   options: --reps=N (3), --seconds=S (1.5), --out=FILE (report JSON)
set -euo pipefail
cd "$(dirname "$0")/../.."

short=0
reps=3
seconds=1.5
warmup=0.5
out=""
extra=()
for arg in "$@"; do
  case "$arg" in
    --short) short=1 ;;
    --reps=*) reps="${arg#*=}" ;;
    --seconds=*) seconds="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    --server=*) extra+=("$arg") ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

bazel build //bench/grpc_load:grpc_load >&2
bin=bazel-bin/bench/grpc_load/grpc_load
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
jsonl="$tmp/report.jsonl"

run() {  # label, then grpc_load flags
  local label="$1"
  shift
  "$bin" --label="$label" --json_out="$jsonl" "${extra[@]}" "$@" >"$tmp/last.txt" ||
    { cat "$tmp/last.txt" >&2; echo "case failed: $label" >&2; exit 1; }
  if [[ $short == 1 ]]; then cat "$tmp/last.txt"; fi
}

if [[ $short == 1 ]]; then
  q=(--repetitions=1 --seconds=1 --warmup=0.3)
  run "58x256 history, unary B=1, 2 jobs" --shape=58x256 --job=history --clients=2 --jobs=2 "${q[@]}"
  run "58x256 default, unary B=1, 1 job" --shape=58x256 --job=default --clients=1 --jobs=1 "${q[@]}"
else
  q=(--repetitions="$reps" --seconds="$seconds" --warmup="$warmup")
  # 58 x 256, K=8 (DeepSeek-V3), history-only jobs (forecasting and health off).
  run "58x256 history, unary B=1, 1 job"   --shape=58x256 --job=history --clients=1 --jobs=1 "${q[@]}"
  run "58x256 history, unary B=1, 2 jobs"  --shape=58x256 --job=history --clients=2 --jobs=2 "${q[@]}"
  run "58x256 history, unary B=1, 4 jobs"  --shape=58x256 --job=history --clients=4 --jobs=4 "${q[@]}"
  run "58x256 history, unary B=4, 1 job"   --shape=58x256 --job=history --clients=1 --jobs=1 --batch=4 "${q[@]}"
  run "58x256 history, unary B=4, 2 jobs"  --shape=58x256 --job=history --clients=2 --jobs=2 --batch=4 "${q[@]}"
  run "58x256 history, unary B=16, 2 jobs" --shape=58x256 --job=history --clients=2 --jobs=2 --batch=16 "${q[@]}"
  run "58x256 history, stream B=1, 1 job"  --shape=58x256 --job=history --clients=1 --jobs=1 --mode=stream "${q[@]}"
  run "58x256 history, stream B=1, 4 jobs" --shape=58x256 --job=history --clients=4 --jobs=4 --mode=stream "${q[@]}"
  # 58 x 256, default jobs (forecasting and health on).
  run "58x256 default, unary B=1, 1 job"   --shape=58x256 --job=default --clients=1 --jobs=1 "${q[@]}"
  run "58x256 default, unary B=1, 2 jobs"  --shape=58x256 --job=default --clients=2 --jobs=2 "${q[@]}"
  run "58x256 default, unary B=1, 4 jobs"  --shape=58x256 --job=default --clients=4 --jobs=4 "${q[@]}"
  run "58x256 default, mixed B=1 + Forecast(h=100) every 50 steps on 2 of 4 jobs" \
      --shape=58x256 --job=default --clients=4 --jobs=4 --mode=mixed --forecast_clients=2 \
      --forecast_every=50 "${q[@]}"
  # 16 x 64, K=2.
  run "16x64 history, unary B=1, 1 job"    --shape=16x64 --job=history --clients=1 --jobs=1 "${q[@]}"
  run "16x64 history, unary B=1, 4 jobs"   --shape=16x64 --job=history --clients=4 --jobs=4 "${q[@]}"
  run "16x64 history, stream B=1, 4 jobs"  --shape=16x64 --job=history --clients=4 --jobs=4 --mode=stream "${q[@]}"
  run "16x64 default, unary B=1, 4 jobs"   --shape=16x64 --job=default --clients=4 --jobs=4 "${q[@]}"
  run "16x64 default, mixed B=1 + Forecast(h=100) every 50 steps on 2 of 4 jobs" \
      --shape=16x64 --job=default --clients=4 --jobs=4 --mode=mixed --forecast_clients=2 \
      --forecast_every=50 "${q[@]}"
fi

/usr/bin/python3 - "$jsonl" "${out:-}" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if len(sys.argv) > 2 and sys.argv[2]:
    json.dump(rows, open(sys.argv[2], "w"), indent=1)
m = rows[0]["machine"]
c0 = rows[0]["config"]
print(f"\nmachine: {m['host']}, nproc {m['nproc']}, {m['cpu_model']}; load average "
      f"{m['loadavg_before']} (first case) .. {rows[-1]['machine']['loadavg_after']} (last); "
      f"{rows[0]['date']}")
print(f"server: {c0['server']}; each case: {c0['repetitions']} repetitions x "
      f"{c0['seconds']} s after {c0['warmup_s']} s warm-up, gRPC and in-process in the "
      f"same process; medians")
print()
print("| case | gRPC steps/s | in-process steps/s | ratio | gRPC p50 / p99 / p999 us | "
      "in-process p50 / p99 / p999 us | Forecast p50 / p99 / p999 us (gRPC) | goal |")
print("|---|---|---|---|---|---|---|---|")
def f(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"
for r in rows:
    g, i = r["median"]["grpc"], r["median"]["inproc"] or {}
    stream = r["config"]["mode"] == "stream"
    lat = (f"{f(g['ingest_p50_us'])} / {f(g['ingest_p99_us'])} / {f(g['ingest_p999_us'])}"
           + (" (Write)" if stream else ""))
    ilat = (f"{f(i['ingest_p50_us'])} / {f(i['ingest_p99_us'])} / {f(i['ingest_p999_us'])}"
            if i else "")
    fc = (f"{f(g['forecast_p50_us'])} / {f(g['forecast_p99_us'])} / {f(g['forecast_p999_us'])}"
          if g["forecast_samples"] else "")
    goal = r["goal"]
    if not goal["applies"]:
        gs = "n/a"
    elif stream:
        gs = "throughput " + ("yes" if goal["throughput_met"] else "no") + ", p99 n/a"
    else:
        gs = "**met**" if goal["met"] else (
            "no (" + ", ".join(k for k, ok in (("steps/s", goal["throughput_met"]),
                                               ("p99", goal["p99_met"])) if not ok) + ")")
    note = ""
    if r["errors"] or r["rejected"]:
        note = f" ({r['errors']} errors, {r['rejected']} rejected)"
    print(f"| {r['label']}{note} | {f(g['steps_per_s'])} | {f(i.get('steps_per_s', 0))} | "
          f"{r['ratio_grpc_over_inproc']['steps_per_s']:.2f} | {lat} | {ilat} | {fc} | {gs} |")
print()
print("ratio: gRPC steps/s over in-process steps/s, median of the per-repetition ratios. "
      "goal (58x256 only): >= 5,000 steps/s through one server and p99 IngestBatch < 2 ms.")
PY
