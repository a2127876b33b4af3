"""Soak: many clients on many jobs against one moecastd for a bounded time,
with the server's resident memory sampled.

The server runs with small limits. Well-behaved clients stream steps (unary
batches and client streams of one-step messages) and ask for forecasts;
misbehaving ones try to exceed every limit: more jobs than --max_jobs, more
streams than --max_concurrent_streams, messages over --max_message_bytes,
and a stream of many tiny messages. The checks:

  * every over-limit attempt is RESOURCE_EXHAUSTED, and nothing else fails;
  * the server's resident memory stays under a bound derived from the
    limits (--max_total_memory_bytes plus a fixed allowance for the process
    and gRPC, a functional check with a generous margin, not a benchmark);
  * the server is alive at the end and exits 0 on SIGTERM;
  * every step a client saw committed is in the job (committed_steps).

SOAK_SECONDS (default 20) sets the duration. Prints one summary line
("soak: ...") with the load held and the memory, for BENCHMARKS.md.
"""

import os
import threading
import time
import unittest

import numpy as np
from moecast import Client, MoecastError, Step

from moecastd_fixture import Moecastd

SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))
MAX_JOBS = 6
MAX_STREAMS = 2
TOTAL_MEMORY = 256 << 20          # --max_total_memory_bytes
PROCESS_ALLOWANCE = 192 << 20     # binary, gRPC buffers, threads, allocator slack
L, M, K = 16, 64, 2


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS for pid %d" % pid)


def counts(rng, step):
    """[L, M] counts: a drifting Zipf-like load, 512 tokens x K per layer."""
    w = 1.0 / np.arange(1, M + 1) ** 0.8
    w = np.roll(w, step // 500)
    return np.stack([rng.multinomial(512 * K, w / w.sum()) for _ in range(L)]).astype(float)


class SoakTest(unittest.TestCase):
    def test_soak(self):
        server = Moecastd(["--max_jobs", MAX_JOBS, "--max_concurrent_streams", MAX_STREAMS,
                           "--max_total_memory_bytes", TOTAL_MEMORY, "--history_steps", 256,
                           "--max_message_bytes", 1 << 20])
        server.start()
        pid = server.proc.pid
        try:
            self.run_soak(server, pid)
        finally:
            rc = server.stop()
        self.assertEqual(rc, 0, server.output())

    def run_soak(self, server, pid):
        stop = threading.Event()
        lock = threading.Lock()
        committed = {}                 # job -> steps the client saw committed
        unexpected = []                # (who, error) that were not expected
        refused = {"jobs": 0, "streams": 0, "message": 0}
        samples = []
        forecasts = [0]

        def sampler():
            while not stop.is_set():
                samples.append(rss_bytes(pid))
                time.sleep(0.25)

        def producer(job, streaming):
            rng = np.random.default_rng(abs(hash(job)) % (1 << 32))
            step = 0
            with Client(server.target) as c:
                while not stop.is_set():
                    try:
                        if streaming:
                            def gen(start):
                                for t in range(start, start + 50):
                                    yield Step(t, counts(rng, t))
                            summary = c.ingest_stream(job, gen(step), batch_size=1)
                            n = summary.committed
                        else:
                            result = c.ingest_batch(job, [Step(t, counts(rng, t))
                                                          for t in range(step, step + 10)])
                            n = sum(1 for r in result.results if r.outcome == "committed")
                        step += 50 if streaming else 10
                        with lock:
                            committed[job] = committed.get(job, 0) + n
                        if step % 200 == 0:
                            c.forecast(job, horizons=[10])
                            with lock:
                                forecasts[0] += 1
                    except MoecastError as e:
                        if streaming and e.code == "RESOURCE_EXHAUSTED" and "streams" in e.message:
                            with lock:
                                refused["streams"] += 1  # all slots busy: retry
                            time.sleep(0.05)
                            continue
                        with lock:
                            unexpected.append((job, e))
                        return

        def abuser():
            """Tries to exceed each limit in turn, expecting RESOURCE_EXHAUSTED."""
            with Client(server.target) as c:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        c.register_job("extra-%d" % i, L, M, K)
                        with lock:
                            unexpected.append(("abuser", "registered a job over max_jobs"))
                        return
                    except MoecastError as e:
                        if e.code != "RESOURCE_EXHAUSTED":
                            with lock:
                                unexpected.append(("abuser", e))
                            return
                        with lock:
                            refused["jobs"] += 1
                    # One step of 1M experts' counts: over --max_message_bytes.
                    try:
                        huge = np.ones((L, 8192 * 16), dtype=float)
                        c.ingest_batch("job-0", [Step(10 ** 9 + i, huge)], validate_job=False)
                        with lock:
                            unexpected.append(("abuser", "an oversized message was accepted"))
                        return
                    except MoecastError as e:
                        if e.code != "RESOURCE_EXHAUSTED":
                            with lock:
                                unexpected.append(("abuser-message", e))
                            return
                        with lock:
                            refused["message"] += 1
                    time.sleep(0.2)

        with Client(server.target) as c:
            for j in range(MAX_JOBS):
                c.register_job("job-%d" % j, L, M, K)
        threads = [threading.Thread(target=sampler)]
        # Two producers per job would interleave step numbers: one each, half
        # of them streaming one-step messages (3 streams for 2 slots, so
        # some stream attempts are refused and retried).
        for j in range(MAX_JOBS):
            threads.append(threading.Thread(target=producer, args=("job-%d" % j, j % 2 == 1)))
        threads.append(threading.Thread(target=abuser))
        start = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(SECONDS)
        stop.set()
        for t in threads:
            t.join(60)
        elapsed = time.monotonic() - start
        self.assertFalse(any(t.is_alive() for t in threads), "a client thread hung")

        self.assertEqual(unexpected, [], "unexpected failures")
        self.assertGreater(refused["jobs"], 0)
        self.assertGreater(refused["message"], 0)
        self.assertGreater(refused["streams"], 0)  # 3 streaming producers, 2 slots
        self.assertIsNone(server.proc.poll(), "moecastd died:\n" + server.output())
        total = 0
        with Client(server.target) as c:
            for j in range(MAX_JOBS):
                info = c.job_info("job-%d" % j)
                self.assertEqual(info.committed_steps, committed.get("job-%d" % j, 0), j)
                self.assertGreater(info.committed_steps, 0, j)
                total += info.committed_steps
        bound = TOTAL_MEMORY + PROCESS_ALLOWANCE
        peak = max(samples)
        print("soak: %.0f s, %d jobs of %dx%d, %d steps (%.0f steps/s), %d forecasts, "
              "refused: %d jobs, %d streams, %d oversized messages; RSS start %.0f MiB, "
              "peak %.0f MiB, end %.0f MiB, bound %.0f MiB"
              % (elapsed, MAX_JOBS, L, M, total, total / elapsed, forecasts[0], refused["jobs"],
                 refused["streams"], refused["message"], samples[0] / 2**20, peak / 2**20,
                 samples[-1] / 2**20, bound / 2**20))
        self.assertLess(peak, bound, "resident memory went over the bound")


if __name__ == "__main__":
    unittest.main()
