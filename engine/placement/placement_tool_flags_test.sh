#!/bin/bash
# placement_tool's migration-model flags: bad values exit 2 naming the flag
# and the value; a model too dear to pay moves nothing where the same case
# without a model moves experts.
set -uo pipefail
tool="$1"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
# 1 layer, 4 experts, 4 slots, 2 GPUs; the current placement puts both heavy
# experts on GPU 0.
cat > "$dir/case.txt" <<'CASE'
case 1 4 4 1 1 2
10 9 1 1
current
0 1 2 3
CASE
fails=0
expect_error() {  # expect_error MESSAGE ARGS...
  local want="$1"
  shift
  local out rc
  out="$("$tool" --input="$dir/case.txt" "$@" 2>&1 >/dev/null)"
  rc=$?
  if [[ $rc -ne 2 || "$out" != *"$want"* ]]; then
    echo "FAIL: $* -> rc $rc, stderr '$out' (want rc 2 and '$want')"
    fails=$((fails + 1))
  fi
}
expect_error "intra_node_bandwidth must be finite and > 0, got 0" --intra_bw=0
expect_error "inter_node_bandwidth must be finite and > 0, got -1" --inter_bw=-1
expect_error "horizon_steps must be finite and >= 0" --horizon_steps=-3
expect_error "bad value for --horizon_steps: 'soon' is not a number" --horizon_steps=soon
expect_error "bad value for --tokens_per_step: '' is not a number" --tokens_per_step=
expect_error "bad value for --bytes_per_expert: -1" --bytes_per_expert=-1
expect_error "bad value for --move_budget: 'x' is not a number" --move_budget=x
expect_error "unknown argument: --horizon" --horizon=5

moved() {  # moved ARGS...: moved_experts of the case's plan
  "$tool" --input="$dir/case.txt" "$@" |
    sed -n 's/.*"moved_experts": \([0-9]*\).*/\1/p'
}
best="$(moved)"
dear="$(moved --marginal --bytes_per_expert=1e15)"
cheap="$(moved --horizon_steps=1e6 --bytes_per_expert=1)"
if [[ -z "$best" || "$best" -eq 0 ]]; then
  echo "FAIL: without a model the case should move experts (got '$best')"
  fails=$((fails + 1))
fi
if [[ "$dear" != "0" ]]; then
  echo "FAIL: a model too dear to pay should move nothing (got '$dear')"
  fails=$((fails + 1))
fi
if [[ "$cheap" != "$best" ]]; then
  echo "FAIL: cheap moves over a long horizon should move as the best plan ($best), got '$cheap'"
  fails=$((fails + 1))
fi
if [[ $fails -ne 0 ]]; then
  exit 1
fi
echo "PASS"
