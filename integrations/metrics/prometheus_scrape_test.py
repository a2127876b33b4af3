"""Debian's real Prometheus scrapes moecastd's /metrics and answers queries.

moecastd runs with --metrics_listen on a free port; a client registers a job
and ingests steps over gRPC; Prometheus (scrape interval 1 s) is started
against the metrics port, and the test queries its HTTP API until the job's
series shows every committed step.

    prometheus_scrape_test.py MOECASTD
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import numpy as np
from moecast import Client, Step

MOECASTD = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MOECASTD", "")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_line(proc, pattern, timeout=30):
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError("no line matching %r; output:\n%s" % (pattern, "".join(seen)))


class PrometheusScrapeTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def start(self, args, **kw):
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, **kw)
        self.procs.append(p)
        return p

    def query(self, prom_port, expr):
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (
            prom_port, urllib.parse.urlencode({"query": expr}))
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
        self.assertEqual(body["status"], "success", body)
        return body["data"]["result"]

    def test_prometheus_reads_job_series(self):
        d = self.start([MOECASTD, "--listen", "127.0.0.1:0",
                        "--metrics_listen", "127.0.0.1:0", "--metrics_per_layer"])
        grpc_port = int(wait_for_line(d, r"listening on \S+ \(port (\d+)\)").group(1))
        metrics_port = int(wait_for_line(d, r"metrics on \S+ \(port (\d+)\)").group(1))

        steps = 250
        with Client("127.0.0.1:%d" % grpc_port) as c:
            c.register_job("scraped", num_layers=2, num_experts=4, top_k=2)
            counts = np.array([[40, 20, 20, 20], [10, 30, 30, 30]], dtype=float)
            c.ingest_batch("scraped", [Step(t, counts) for t in range(steps)])

        # The page itself, straight from moecastd.
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics_port,
                                    timeout=5) as r:
            page = r.read().decode()
        self.assertIn('moecast_job_committed_steps_total{job_id="scraped"} %d' % steps, page)
        self.assertIn('moecast_layer_stable{job_id="scraped",layer="1"}', page)

        prom_port = free_port()
        config = os.path.join(self.tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n"
                    "scrape_configs:\n"
                    "  - job_name: moecastd\n"
                    "    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % metrics_port)
        self.start(["/usr/bin/prometheus", "--config.file", config,
                    "--storage.tsdb.path", os.path.join(self.tmp, "tsdb"),
                    "--web.listen-address", "127.0.0.1:%d" % prom_port])

        expr = 'moecast_job_committed_steps_total{job_id="scraped"}'
        deadline = time.time() + 60
        result = []
        while time.time() < deadline:
            try:
                result = self.query(prom_port, expr)
            except OSError:
                result = []  # Prometheus still starting
            if result:
                break
            time.sleep(0.5)
        self.assertEqual(len(result), 1, "Prometheus never returned %s" % expr)
        series = result[0]
        self.assertEqual(series["metric"]["job"], "moecastd")  # the scrape job
        self.assertEqual(series["metric"]["job_id"], "scraped")
        self.assertEqual(float(series["value"][1]), steps)
        # A gauge and a per-layer series through the same path.
        stable = self.query(prom_port, 'moecast_layer_stable{job_id="scraped"}')
        self.assertEqual(sorted(s["metric"]["layer"] for s in stable), ["0", "1"])
        self.assertEqual(float(self.query(prom_port, "moecast_jobs")[0]["value"][1]), 1)
        up = self.query(prom_port, 'up{job="moecastd"}')
        self.assertEqual(float(up[0]["value"][1]), 1)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]])
