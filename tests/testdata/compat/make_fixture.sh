#!/usr/bin/env bash
# Regenerates the moecastd data-directory compatibility fixture
# (tests/testdata/compat/datadir_v1) and the answers recorded with it.
#
# Run from the repository root of the moecast commit the fixture is meant to
# capture, after building the two binaries:
#
#   bazel build -c opt //:moecast //integrations/grpc:moecastd
#   bash tests/testdata/compat/make_fixture.sh [OUT_DIR]
#
# OUT_DIR defaults to tests/testdata/compat; the script replaces
# OUT_DIR/datadir_v1, OUT_DIR/expected and OUT_DIR/trace. MOECAST and
# MOECASTD override the binaries (default bazel-bin/moecast and
# bazel-bin/integrations/grpc/moecastd). Needs python3, gzip, timeout.
#
# What it does (README.md next to this script has the details):
#   1. make_trace.py writes a deterministic 2-layer x 8-expert trace with
#      router logits: steps 0..199 (part 1) and 200..299 (part 2).
#   2. moecastd --data_dir D --wal_sync=batch --snapshot_every_s=0 (snapshots
#      only at clean shutdown); register job compat-v1 (top_k 2, defaults
#      otherwise); ingest part 1; record info/forecast/health/state/events.
#   3. SIGTERM: moecastd writes snapshot set 1 (the 200 steps) and exits 0.
#   4. Restart on D (recovers set 1); ingest part 2 (steps 200..299, which
#      close the third health window); record the same answers.
#   5. SIGKILL: steps 200..299 exist only in the write-ahead log after set 1.
#   6. D is copied to OUT_DIR/datadir_v1; a throw-away copy is recovered by
#      the same moecastd and its answers must equal those recorded in step 4
#      (idle_seconds aside), or the script fails.
set -euo pipefail

OUT=${1:-tests/testdata/compat}
MOECAST=${MOECAST:-bazel-bin/moecast}
MOECASTD=${MOECASTD:-bazel-bin/integrations/grpc/moecastd}
HERE=$(cd "$(dirname "$0")" && pwd)
JOB=compat-v1
for b in "$MOECAST" "$MOECASTD"; do
  [[ -x $b ]] || { echo "make_fixture.sh: $b not found (build it first)" >&2; exit 2; }
done
MOECAST=$(realpath "$MOECAST"); MOECASTD=$(realpath "$MOECASTD")

WORK=$(mktemp -d /tmp/moecast_compat.XXXXXX)
PID=
cleanup() {
  if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# start DIR LOG: starts moecastd on a free loopback port; sets PID and S.
start() {
  "$MOECASTD" --listen 127.0.0.1:0 --data_dir "$1" --wal_sync batch \
      --snapshot_every_s 0 >"$2" 2>&1 &
  PID=$!
  local port=
  for _ in $(seq 100); do
    port=$(sed -n 's/^moecastd: listening on .* (port \([0-9]*\)).*/\1/p' "$2")
    [[ -n $port ]] && break
    kill -0 "$PID" 2>/dev/null || { cat "$2" >&2; exit 1; }
    sleep 0.1
  done
  [[ -n $port ]] || { echo "moecastd did not start" >&2; cat "$2" >&2; exit 1; }
  S="--server 127.0.0.1:$port --timeout 60"
}

# record PREFIX: the job's answers as JSON files PREFIX_*.json.
record() {
  "$MOECAST" client jobs $S >"$1_jobs.txt"
  "$MOECAST" client info $S --job $JOB >"$1_info.json"
  "$MOECAST" client forecast $S --job $JOB >"$1_forecast.json"
  "$MOECAST" client health $S --job $JOB >"$1_health.json"
  "$MOECAST" client state $S --job $JOB >"$1_state.json"
  # Watch streams the job's events from the start; it stays open, so stop it.
  "$MOECAST" client watch $S --job $JOB --duration 2 >"$1_events.jsonl"
}

python3 "$HERE/make_trace.py" --out "$WORK/part1" --first 0 --steps 200
python3 "$HERE/make_trace.py" --out "$WORK/part2" --first 200 --steps 100
python3 "$HERE/make_trace.py" --out "$WORK/compat_v1" --first 0 --steps 300
D=$WORK/datadir
E=$WORK/expected
mkdir -p "$E"

# Phase 1: register, 200 steps, clean shutdown (snapshot set 1).
start "$D" "$E/moecastd_run1.log"
"$MOECAST" client register $S --job $JOB --layers 2 --experts 8 --top_k 2 \
    | tee "$E/register.txt"
"$MOECAST" client ingest $S --job $JOB --counts "$WORK/part1.counts.csv" \
    --router "$WORK/part1.router.csv" --progress off | tee "$E/ingest_part1.txt"
record "$E/after_part1"
kill -TERM "$PID"; wait "$PID"; PID=
grep -q '^moecastd: snapshot set 1 written (shutdown)' "$E/moecastd_run1.log" \
  || { echo "no shutdown snapshot" >&2; cat "$E/moecastd_run1.log" >&2; exit 1; }

# Phase 2: restart, 100 more steps, SIGKILL (they stay in the log only).
start "$D" "$E/moecastd_run2.log"
"$MOECAST" client ingest $S --job $JOB --counts "$WORK/part2.counts.csv" \
    --router "$WORK/part2.router.csv" --progress off | tee "$E/ingest_part2.txt"
record "$E/final"
kill -KILL "$PID"; wait "$PID" || true; PID=

rm -rf "$OUT/datadir_v1" "$OUT/expected" "$OUT/trace"
mkdir -p "$OUT/trace"
cp -a "$D" "$OUT/datadir_v1"
cp -a "$E" "$OUT/expected"
gzip -9n -c "$WORK/compat_v1.counts.csv" >"$OUT/trace/compat_v1.counts.csv.gz"
gzip -9n -c "$WORK/compat_v1.router.csv" >"$OUT/trace/compat_v1.router.csv.gz"

# Check: a copy recovers to exactly the answers recorded before the kill.
cp -a "$OUT/datadir_v1" "$WORK/verify"
start "$WORK/verify" "$WORK/verify.log"
record "$WORK/verify"
kill -TERM "$PID"; wait "$PID"; PID=
cp "$WORK/verify.log" "$OUT/expected/moecastd_verify.log"
sed -i "s|$WORK|WORK|g; s|$(realpath "$OUT")|OUT|g" "$OUT"/expected/*.log \
    "$OUT"/expected/*.txt
for f in jobs.txt info.json forecast.json health.json state.json events.jsonl; do
  if ! diff <(grep -v idle_seconds "$OUT/expected/final_$f") \
            <(grep -v idle_seconds "$WORK/verify_$f") >/dev/null; then
    echo "make_fixture.sh: recovered $f differs from the recorded one" >&2
    diff <(grep -v idle_seconds "$OUT/expected/final_$f") \
         <(grep -v idle_seconds "$WORK/verify_$f") | head -20 >&2
    exit 1
  fi
done
echo "make_fixture.sh: fixture in $OUT/datadir_v1, answers in $OUT/expected (recovery checked)"
