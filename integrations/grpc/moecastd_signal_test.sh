#!/bin/bash
# moecastd starts on a free port and exits 0 on SIGTERM and on SIGINT.
set -u
BIN="${TEST_SRCDIR}/${TEST_WORKSPACE}/integrations/grpc/moecastd"
OUT="$(mktemp "${TEST_TMPDIR:-/tmp}/moecastd.XXXXXX")"
for SIG in TERM INT; do
  "$BIN" --listen 127.0.0.1:0 --max_message_bytes=1048576 >"$OUT" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    grep -q "listening" "$OUT" && break
    sleep 0.1
  done
  grep -q "listening on 127.0.0.1:0 (port [1-9]" "$OUT" || { cat "$OUT"; echo "no listening line"; kill -9 $PID; exit 1; }
  kill -$SIG $PID
  wait $PID
  RC=$?
  [ $RC -eq 0 ] || { cat "$OUT"; echo "SIG$SIG: exit $RC"; exit 1; }
  grep -q "stopped" "$OUT" || { cat "$OUT"; echo "no stopped line"; exit 1; }
done
# A bad flag is a usage error that names the flag.
for ARGS in "--bogus" "--max_jobs=0" "--auth_token_file=/nonexistent/token" "--tls_key=x" \
    "--wal_sync=sometimes"; do
  "$BIN" $ARGS >"$OUT" 2>&1
  RC=$?
  [ $RC -eq 2 ] || { cat "$OUT"; echo "$ARGS: exit $RC, want 2"; exit 1; }
  NAME="${ARGS%%=*}"
  grep -q -- "${NAME#--}" "$OUT" || { cat "$OUT"; echo "$ARGS: message does not name the flag"; exit 1; }
done
# With a token file and idle expiry the daemon starts and says so.
TOKEN="$(mktemp "${TEST_TMPDIR:-/tmp}/token.XXXXXX")"
echo "t0ken" >"$TOKEN"
"$BIN" --listen 127.0.0.1:0 --auth_token_file "$TOKEN" --idle_job_expiry_s 60 >"$OUT" 2>&1 &
PID=$!
for _ in $(seq 100); do
  grep -q "listening" "$OUT" && break
  sleep 0.1
done
grep -q "bearer token required" "$OUT" || { cat "$OUT"; kill -9 $PID; echo "no token line"; exit 1; }
kill -TERM $PID
wait $PID || { cat "$OUT"; echo "exit $?"; exit 1; }
# With a data directory: recovers (empty), snapshots on SIGTERM, restarts.
DATA="$(mktemp -d "${TEST_TMPDIR:-/tmp}/data.XXXXXX")/d"
for RUN in 1 2; do
  "$BIN" --listen 127.0.0.1:0 --data_dir "$DATA" --wal_sync=interval --wal_sync_ms=5 >"$OUT" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    grep -q "listening" "$OUT" && break
    sleep 0.1
  done
  grep -q "recovered" "$OUT" || { cat "$OUT"; kill -9 $PID; echo "no recovery line"; exit 1; }
  kill -TERM $PID
  wait $PID || { cat "$OUT"; echo "data_dir run $RUN: exit $?"; exit 1; }
done
[ -d "$DATA/wal" ] && [ -f "$DATA/LOCK" ] || { ls -R "$DATA"; echo "no wal directory"; exit 1; }
echo PASS
