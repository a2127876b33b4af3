#!/usr/bin/env bash
# Streaming check: writes a 1,000,000-step trace (2 layers x 8 experts, random
# counts, gzip level 1, about 30 MB) to a temporary directory and replays it
# under /usr/bin/time, printing the engine's rate and the peak resident memory.
# The reader holds one step at a time, so memory must not grow with the file.
#
#   bash bench/streaming_check.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-1000000}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bazel build //:moecast >&2
/usr/bin/python3 - "$tmp/big.counts.csv.gz" "$steps" <<'PY'
import gzip, random, sys
random.seed(1)
path, steps = sys.argv[1], int(sys.argv[2])
with gzip.open(path, "wt", compresslevel=1) as f:
    f.write("step,layer,tokens," + ",".join("c%d" % e for e in range(8)) + "\n")
    for t in range(steps):
        for layer in range(2):
            c = [random.randint(0, 100) for _ in range(8)]
            f.write("%d,%d,500,%s\n" % (t, layer, ",".join(map(str, c))))
PY
ls -l "$tmp/big.counts.csv.gz" | awk '{print "trace bytes (gzip):", $5}'
/usr/bin/time -v bazel-bin/moecast replay --counts "$tmp/big.counts.csv.gz" \
  --top_k 2 --progress=off 2>&1 |
  grep -E "steps  |ingest|wall|Maximum resident"
