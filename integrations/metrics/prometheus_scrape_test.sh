#!/bin/bash
# Runs prometheus_scrape_test.py with Debian's Prometheus, against the
# installed moecast package (integrations/python/tests/run_test.sh builds the
# wheel and installs it into a fresh venv).
set -euo pipefail
[[ -x /usr/bin/prometheus ]] || { echo "FAILED: /usr/bin/prometheus is missing (bash third_party/install_deps.sh)" >&2; exit 1; }
root="${TEST_SRCDIR}/${TEST_WORKSPACE}"
exec bash "${root}/integrations/python/tests/run_test.sh" \
  integrations/metrics/prometheus_scrape_test.py "${root}/integrations/grpc/moecastd"
