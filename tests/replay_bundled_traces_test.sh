#!/usr/bin/env bash
# End to end through the real binary: `moecast replay` on every bundled trace
# (recorded by the Python training script, i.e. by another tool than the C++
# writer), and on broken copies of one, which must fail with FILE:LINE:COLUMN.
set -euo pipefail

moecast="$1"
shift
fail() { echo "FAIL: $*" >&2; exit 1; }

n=0
for counts in "$@"; do
  [[ "$counts" == *.counts.csv.gz ]] || continue
  base="${counts%.counts.csv.gz}"
  meta="$base.meta.json"
  [[ -f "$meta" ]] || fail "$meta is missing"
  top_k=$(sed -n 's/.*"top_k": *\([0-9][0-9]*\).*/\1/p' "$meta" | head -n1)
  [[ -n "$top_k" ]] || fail "no top_k in $meta"
  args=(replay --counts "$counts" --top_k "$top_k" --progress=off)
  [[ -f "$base.router.csv.gz" ]] && args+=(--router "$base.router.csv.gz")
  out=$("$moecast" "${args[@]}") || fail "replay of $counts exited $?"
  steps=$(sed -n 's/^  steps  *\([0-9,]*\) .*/\1/p' <<<"$out" | tr -d ,)
  [[ "${steps:-0}" -gt 1000 ]] || fail "$counts: expected > 1000 steps, got '$steps'"
  grep -q "load over the whole trace" <<<"$out" || fail "$counts: no load summary"
  echo "ok: $counts ($steps steps)"
  n=$((n + 1))
done
[[ $n -ge 2 ]] || fail "expected at least two bundled traces, found $n"

# Health on a bundled trace with its router file (gamma_eff needs the logits).
for counts in "$@"; do
  [[ "$counts" == *tiny_moe_noaux.counts.csv.gz ]] || continue
  router="${counts%.counts.csv.gz}.router.csv.gz"
  out=$("$moecast" health --counts "$counts" --router "$router" --top_k 2 \
        --max_steps 1000 --bootstrap 20) || fail "health on $counts exited $?"
  grep -q "gamma_eff windows: 40 fitted" <<<"$out" || fail "health: unexpected output: $out"
  echo "ok: health on $counts"
done

# Broken copies of the first trace must be rejected with file:line:column.
first=""
for counts in "$@"; do
  [[ "$counts" == *.counts.csv.gz ]] && { first="$counts"; break; }
done
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
{ gzip -dc "$first" || true; } 2>/dev/null | head -n 40 >"$tmp/cut.counts.csv"
# Row 30: make one count negative.
awk -F, 'BEGIN{OFS=","} NR==30{$4="-1"} {print}' "$tmp/cut.counts.csv" >"$tmp/neg.counts.csv"
if err=$("$moecast" replay --counts "$tmp/neg.counts.csv" --top_k 2 --progress=off 2>&1); then
  fail "a negative count was accepted"
fi
grep -q "neg.counts.csv:30:[0-9]*: column 'c[0-9]*': count '-1' is negative" <<<"$err" \
  || fail "unexpected message for a negative count: $err"
# A truncated gzip file.
head -c 20000 "$first" >"$tmp/trunc.counts.csv.gz"
if err=$("$moecast" replay --counts "$tmp/trunc.counts.csv.gz" --top_k 2 --progress=off 2>&1); then
  fail "a truncated gzip file was accepted"
fi
grep -q "trunc.counts.csv.gz:[0-9]*: cannot read" <<<"$err" \
  || fail "unexpected message for a truncated file: $err"
echo "ok: malformed copies rejected"
