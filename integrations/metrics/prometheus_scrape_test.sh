#!/bin/bash
# Runs prometheus_scrape_test.py with Debian's python3 and Prometheus.
set -euo pipefail
for tool in /usr/bin/python3 /usr/bin/prometheus; do
  [[ -x "$tool" ]] || { echo "FAILED: $tool is missing (bash third_party/install_deps.sh)" >&2; exit 1; }
done
root="${TEST_SRCDIR}/${TEST_WORKSPACE}"
export PYTHONPATH="${root}/integrations/python"
exec /usr/bin/python3 "${root}/integrations/metrics/prometheus_scrape_test.py" \
  "${root}/integrations/grpc/moecastd"
