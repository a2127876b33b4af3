#!/usr/bin/env bash
# moecast demo: builds the command-line tool, replays the bundled traces
# (recorded from real MoE training runs, plus one synthetic trace) through the
# engine, printing what was ingested and how the load is spread, then compares
# the predictors on one of them.
#
#   bash bench/demo.sh           # whole traces
#   bash bench/demo.sh --short   # first 2,000 steps of each (what CI runs)
#
# Installs what it needs on Debian 12 first (third_party/install_deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

limit=()
case "${1:-}" in
  --short) limit=(--max_steps=2000) ;;
  "") ;;
  *) echo "usage: bash bench/demo.sh [--short]" >&2; exit 2 ;;
esac

bash third_party/install_deps.sh
bazel build //:moecast

data=bench/traces/data
# top_k of a bundled trace, from its sidecar NAME.meta.json.
top_k_of() {
  sed -n 's/.*"top_k": *\([0-9][0-9]*\).*/\1/p' "$data/$1.meta.json" | head -n1
}

ran=0
for name in tiny_moe_aux tiny_moe_noaux; do
  counts="$data/$name.counts.csv.gz"
  router="$data/$name.router.csv.gz"
  [[ -f "$counts" ]] || continue
  echo
  echo "== $name: recorded MoE training run (see bench/traces/README.md)"
  args=(--counts "$counts" --top_k "$(top_k_of "$name")" "${limit[@]}")
  [[ -f "$router" ]] && args+=(--router "$router")
  bazel-bin/moecast replay "${args[@]}"
  ran=$((ran + 1))
done
for counts in "$data"/synthetic_*.counts.csv.gz; do
  [[ -f "$counts" ]] || continue
  name=$(basename "$counts" .counts.csv.gz)
  echo
  echo "== $name: SYNTHETIC trace (bench/traces/synth_trace.py)"
  bazel-bin/moecast replay --counts "$counts" --top_k "$(top_k_of "$name")" "${limit[@]}"
  ran=$((ran + 1))
done
if [[ $ran -eq 0 ]]; then
  echo "demo: no bundled traces found under $data" >&2
  exit 1
fi

# The server path: moecastd on a free loopback port, fed by `moecast client`
# (gRPC) with the same trace; forecasts, a placement and health come back as
# JSON; Prometheus metrics on a second port.
echo
echo "== server: moecastd + moecast client on tiny_moe_aux"
bazel build //integrations/grpc:moecastd
log=$(mktemp)
bazel-bin/integrations/grpc/moecastd --listen 127.0.0.1:0 --metrics_listen 127.0.0.1:0 >"$log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null || true; rm -f "$log"' EXIT
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on .* (port \([0-9]*\)).*/\1/p' "$log")
  [[ -n "$port" ]] && break
  sleep 0.1
done
[[ -n "$port" ]] || { cat "$log"; echo "demo: moecastd did not start" >&2; exit 1; }
metrics_port=""
for _ in $(seq 50); do
  metrics_port=$(sed -n 's/.*metrics on .* (port \([0-9]*\)).*/\1/p' "$log")
  [[ -n "$metrics_port" ]] && break
  sleep 0.1
done
cat "$log"
server=(--server "127.0.0.1:$port")
trace="$data/tiny_moe_aux"
bazel-bin/moecast client register "${server[@]}" --job demo --counts "$trace.counts.csv.gz" \
  --top_k "$(top_k_of tiny_moe_aux)"
bazel-bin/moecast client ingest "${server[@]}" --job demo --counts "$trace.counts.csv.gz" \
  --router "$trace.router.csv.gz" "${limit[@]}"
echo "-- forecast (layer 0, h = 10 and 100)"
bazel-bin/moecast client forecast "${server[@]}" --job demo --horizons 10,100 --layers 0 \
  | /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
for layer in r["layers"]:
    for h in layer["horizons"]:
        top = sorted(range(len(h["means"])), key=lambda e: -h["means"][e])[:3]
        print("  layer %d h=%-4d %-28s hottest experts: %s" % (layer["layer"], h["horizon"], h["predictor"],
              ", ".join("%d (%.3f)" % (e, h["means"][e]) for e in top)))'

echo "-- placement (16 experts on 4 GPUs, 20 slots)"
bazel-bin/moecast client placement "${server[@]}" --job demo --slots 20 --gpus 4 \
  | grep -E '"(balancedness|max_over_mean|mode|horizon|as_of_step)"' || true
echo "-- health (layer summaries)"
bazel-bin/moecast client health "${server[@]}" --job demo \
  | grep -E '"(gamma_f|phase|max_over_mean|as_of_step)"' | head -n 12 || true
if [[ -n "$metrics_port" ]]; then
  echo "-- Prometheus metrics (http://127.0.0.1:$metrics_port/metrics), job series"
  /usr/bin/python3 -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())" \
    "http://127.0.0.1:$metrics_port/metrics" | grep -E '^moecast_(jobs|job_committed|job_stable|forecast_error|job_gamma)' || true
fi
kill -TERM $daemon
wait $daemon
trap - EXIT
rm -f "$log"

# Forecasting: every predictor and auto on the run with a balance loss, by
# horizon and by transient/stable state, next to the noise floors. The list is
# `--predictors all` (the default bank and arima) plus lstm_e, the per-expert
# LSTM whose one weights file serves any number of experts (bench/lstm/README.md;
# lstm_e_h8, the cheaper of the two files: about 0.03 ms per 16-expert layer-step).
echo
echo "== forecasting: moecast bench on tiny_moe_aux (docs/forecasting.md)"
bazel-bin/moecast bench --counts "$data/tiny_moe_aux.counts.csv.gz" \
  --top_k "$(top_k_of tiny_moe_aux)" --horizons 1,10,100,1000 "${limit[@]}" \
  --predictors "last_value,sw_avg(100),ema(0.9),holt,ewm(300),ewm(3000),arima(5,1,5),lstm_e(bench/lstm/lstm_e_h8.lstm)"

# Health: gamma_eff, phases and dead experts on the run without a balance
# loss (docs/health.md).
echo
echo "== health: moecast health on tiny_moe_noaux"
bazel-bin/moecast health --counts "$data/tiny_moe_noaux.counts.csv.gz" \
  --router "$data/tiny_moe_noaux.router.csv.gz" --top_k "$(top_k_of tiny_moe_noaux)" \
  --aux_coef 0 "${limit[@]}"

# Placement: periodic (vLLM's policy), oracle and moecast on the synthetic
# trace (regime switches), 8 GPUs on 2 nodes (docs/placement.md).
echo
echo "== placement: moecast simulate on synthetic_moe_2x32"
sim_limit=()
[[ ${#limit[@]} -gt 0 ]] && sim_limit=(--max_steps=10000)
bazel-bin/moecast simulate --counts "$data/synthetic_moe_2x32.counts.csv.gz" \
  --top_k "$(top_k_of synthetic_moe_2x32)" --slots 48 --gpus 8 --nodes 2 --groups 4 \
  --window 500 --interval 1000 "${sim_limit[@]}"
