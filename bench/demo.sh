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

# Forecasting: every predictor and auto on the run with a balance loss, by
# horizon and by transient/stable state, next to the noise floors.
echo
echo "== forecasting: moecast bench on tiny_moe_aux (docs/forecasting.md)"
bazel-bin/moecast bench --counts "$data/tiny_moe_aux.counts.csv.gz" \
  --top_k "$(top_k_of tiny_moe_aux)" --horizons 1,10,100,1000 "${limit[@]}"

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
