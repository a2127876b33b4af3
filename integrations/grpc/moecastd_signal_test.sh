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
# A bad flag is a usage error.
"$BIN" --bogus >/dev/null 2>&1
[ $? -eq 2 ] || { echo "bad flag did not exit 2"; exit 1; }
echo PASS
