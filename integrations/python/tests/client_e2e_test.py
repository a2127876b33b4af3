"""moecast against a real moecastd (127.0.0.1, ephemeral port): every
RPC, the error codes, concurrency, Watch ordering and resumption, and the
stream_trace.py example."""

import os
import shutil
import subprocess
import sys
import threading
import time
import unittest
import zlib

import numpy as np

from moecast import Client, MigrationModel, MoecastError, Step

from moecastd_fixture import Moecastd, drifting_steps, log, stationary_steps

L, M, K = 2, 8, 2
SKEWED = np.array([[0.30, 0.20, 0.15, 0.10, 0.10, 0.05, 0.05, 0.05],
                   [0.05, 0.05, 0.05, 0.10, 0.10, 0.15, 0.20, 0.30]])
UNIFORM = np.full((L, M), 1.0 / M)

SERVER = None


def setUpModule():
    global SERVER
    SERVER = Moecastd().start()


def tearDownModule():
    rc = SERVER.stop()
    if rc != 0:
        raise AssertionError("moecastd exited with %s on SIGTERM; output:\n%s" % (rc, SERVER.output()))


class Base(unittest.TestCase):
    def setUp(self):
        self.client = Client(SERVER.target, timeout=30)
        self.client.wait_for_ready(10)
        self.rng = np.random.default_rng(zlib.crc32(self.id().encode()))  # fixed per test

    def tearDown(self):
        self.client.close()

    def register(self, job_id, **kw):
        kw.setdefault("num_layers", L)
        kw.setdefault("num_experts", M)
        kw.setdefault("top_k", K)
        return self.client.register_job(job_id, **kw)

    def assertCode(self, code, fn, *fragments):
        with self.assertRaises(MoecastError) as ctx:
            fn()
        e = ctx.exception
        self.assertEqual(e.code, code, "expected %s, got %s" % (code, e))
        self.assertFalse(e.local, "expected the server's answer, got a local check: %s" % e)
        self.assertTrue(e.message, "the server's message is empty")
        for f in fragments:
            self.assertIn(f, e.message)
        return e

    def feed(self, job_id, steps, batch=100):
        for i in range(0, len(steps), batch):
            r = self.client.ingest_batch(job_id, steps[i:i + batch])
            self.assertEqual(r.rejected, 0, [x for x in r.results if x.outcome == "rejected"][:3])


class JobsTest(Base):
    def test_register_list_info_delete(self):
        self.register("jobs-a", horizons=[1, 10], aux_loss_coef=0.01, router_temperature=1.0,
                      step_unit="forward_pass")
        self.register("jobs-b", num_sources=3, forecasting=False, health=False)
        jobs = self.client.list_jobs()
        self.assertIn("jobs-a", jobs)
        self.assertIn("jobs-b", jobs)
        self.assertEqual(jobs, sorted(jobs))
        info = self.client.job_info("jobs-a")
        self.assertEqual((info.spec.num_layers, info.spec.num_experts, info.spec.top_k), (L, M, K))
        self.assertEqual(info.spec.horizons, [1, 10])
        self.assertEqual(info.spec.step_unit, "forward_pass")
        self.assertEqual(info.spec.hyperparameters, {"aux_loss_coef": 0.01, "router_temperature": 1.0})
        self.assertEqual(info.committed_steps, 0)
        self.assertIsNone(info.first_step)
        self.assertIsNone(info.last_step)
        self.assertIsNone(info.expires_after_idle_seconds)
        self.assertGreater(info.history_bytes, 0)
        b = self.client.job_info("jobs-b").spec
        self.assertEqual((b.num_sources, b.forecasting, b.health), (3, False, False))
        self.client.delete_job("jobs-a")
        self.assertNotIn("jobs-a", self.client.list_jobs())
        self.assertCode("NOT_FOUND", lambda: self.client.job_info("jobs-a"), "jobs-a")
        self.assertCode("NOT_FOUND", lambda: self.client.delete_job("jobs-a"), "jobs-a")
        self.client.delete_job("jobs-b")

    def test_register_errors(self):
        self.register("dup")
        e = self.assertCode("ALREADY_EXISTS", lambda: self.register("dup"), "dup")
        self.assertEqual(e.method, "RegisterJob")
        # Characters are the server's to check (the engine names the character).
        self.assertCode("INVALID_ARGUMENT", lambda: self.register("bad id/x"))
        self.assertCode("INVALID_ARGUMENT", lambda: self.register("x" * 129))
        self.assertCode("INVALID_ARGUMENT", lambda: self.register("badpred", predictors=["prophet"]),
                        "unknown predictor 'prophet'")
        self.assertNotIn("bad id/x", self.client.list_jobs())


class IngestTest(Base):
    def test_ingest_batch_outcomes_and_counters(self):
        self.register("ing-a")
        steps = stationary_steps(self.rng, UNIFORM, 0, 5)
        r = self.client.ingest_batch("ing-a", steps)
        self.assertEqual([x.outcome for x in r.results], ["committed"] * 5)
        self.assertEqual([c.step for c in r.committed], [0, 1, 2, 3, 4])
        self.assertEqual(r.rejected, 0)
        # Re-sending the last step is a duplicate; a gap is recorded; an older
        # step is rejected by the server (one batch: the client would refuse
        # steps out of order within one call before sending).
        r = self.client.ingest_batch("ing-a", [steps[4]])
        self.assertEqual(r.results[0].outcome, "duplicate")
        r = self.client.ingest_batch("ing-a", [(8, steps[0][1])])
        self.assertEqual(r.results[0].outcome, "committed")
        self.assertEqual(r.results[0].committed[0].gap_before, 3)
        r = self.client.ingest_batch("ing-a", [steps[2]])
        self.assertEqual(r.results[0].outcome, "rejected")
        self.assertEqual(r.results[0].error_code, "INVALID_ARGUMENT")
        self.assertTrue(r.results[0].error_message)
        self.assertEqual(r.rejected, 1)
        with self.assertRaises(MoecastError) as ctx:
            r.raise_for_rejections()
        self.assertEqual(ctx.exception.code, "INVALID_ARGUMENT")
        self.assertIn("step 2 (source 0) rejected", str(ctx.exception))
        info = self.client.job_info("ing-a")
        self.assertEqual(info.committed_steps, 6)
        self.assertEqual((info.first_step, info.last_step), (0, 8))
        self.assertEqual((info.gaps, info.missing_steps), (1, 3))
        self.assertEqual(info.duplicate_calls, 1)
        self.assertGreaterEqual(info.rejected_calls, 1)
        expected_tokens = sum(c[0].sum() / K for _, c in steps) + steps[0][1][0].sum() / K
        self.assertAlmostEqual(info.tokens, expected_tokens, places=6)

    def test_server_side_rejections_with_local_checks_off(self):
        self.register("ing-b")
        r = self.client.ingest_batch("ing-b", [(0, np.ones((3, M)))], validate_job=False)
        self.assertEqual((r.results[0].outcome, r.results[0].error_code, r.rejected),
                         ("rejected", "INVALID_ARGUMENT", 1))
        r = self.client.ingest_batch("ing-b", [Step(1, np.full((L, M), 10.0), tokens=1),
                                               (2, np.ones((L, M)))], validate_job=False)
        self.assertEqual([x.outcome for x in r.results], ["rejected", "committed"])
        self.assertEqual(r.results[0].error_code, "INVALID_ARGUMENT")
        self.assertEqual(r.rejected, 1)
        # With the job's spec known, the client catches both before sending.
        with self.assertRaisesRegex(MoecastError, r"counts has shape \(3, 8\), but job 'ing-b' has 2 layers x 8 experts"):
            self.client.ingest_batch("ing-b", [(3, np.ones((3, M)))])
        with self.assertRaisesRegex(MoecastError, r"layer 0 has 80 assignments, more than tokens x top_k"):
            self.client.ingest_batch("ing-b", [Step(3, np.full((L, M), 10.0), tokens=1)])
        self.assertEqual(self.client.job_info("ing-b").committed_steps, 1)

    def test_stale_spec_is_refreshed(self):
        self.register("ing-c")
        self.client.ingest_batch("ing-c", [(0, np.ones((L, M)))])
        other = Client(SERVER.target)
        other.delete_job("ing-c")
        other.register_job("ing-c", num_layers=3, num_experts=4, top_k=1)
        other.close()
        r = self.client.ingest_batch("ing-c", [(0, np.ones((3, 4)))])
        self.assertEqual(r.results[0].outcome, "committed")

    def test_array_form_with_logits_and_tokens(self):
        self.register("ing-d")
        T = 20
        counts = np.stack([c for _, c in stationary_steps(self.rng, UNIFORM, 0, T)])
        tokens = counts[:, 0, :].sum(axis=1) / K
        r = self.client.ingest_batch("ing-d", counts, first_step=100,
                                     router_logits=self.rng.normal(size=(T, L, M)), tokens=tokens)
        self.assertEqual(len(r.committed), T)
        info = self.client.job_info("ing-d")
        self.assertEqual((info.first_step, info.last_step), (100, 100 + T - 1))
        self.assertAlmostEqual(info.tokens, tokens.sum(), places=6)

    def test_ingest_stream(self):
        self.register("str-a")
        n = 1000
        gen = (Step(t, c) for t, c in stationary_steps(self.rng, UNIFORM, 0, n))
        s = self.client.ingest_stream("str-a", gen, batch_size=64)
        self.assertEqual((s.batches, s.steps, s.committed, s.rejected), ((n + 63) // 64, n, n, 0))
        self.assertEqual(self.client.job_info("str-a").committed_steps, n)

    def test_ingest_stream_many_jobs_and_rejections(self):
        self.register("str-b")
        self.register("str-c")

        def items():
            for t in range(30):
                job = "str-b" if (t // 10) % 2 == 0 else "str-c"
                yield job, (t, np.ones((L, M)))
            yield "str-c", (19, np.ones((L, M)))                     # str-c's last step again: duplicate
            yield "str-c", Step(30, np.full((L, M), 10.0), tokens=1)  # server rejects (no local spec check)

        s = self.client.ingest_stream(None, items(), batch_size=4, validate_job=False)
        self.assertEqual(s.steps, 32)
        self.assertEqual(s.committed, 30)
        self.assertEqual(s.duplicates, 1)
        self.assertEqual(s.rejected, 1)
        self.assertEqual(s.first_rejections[0].step, 30)
        self.assertEqual(s.first_rejections[0].error_code, "INVALID_ARGUMENT")
        # Batches are cut at job changes: 10 + 10 + 10 steps in batches of 4 (4, 4, 2), then 2.
        self.assertEqual(s.batches, 3 + 3 + 3 + 1)
        self.assertEqual(self.client.job_info("str-b").committed_steps, 20)
        self.assertEqual(self.client.job_info("str-c").committed_steps, 10)

    def test_ingest_stream_errors(self):
        self.register("str-d")
        self.assertCode("NOT_FOUND", lambda: self.client.ingest_stream(
            "no-such-job", [(0, np.ones((L, M)))], validate_job=False))
        e = self.assertCode("NOT_FOUND", lambda: self.client.ingest_stream("no-such-job", [(0, np.ones((L, M)))]))
        self.assertEqual(e.method, "Ingest")
        e = self.assertCode("NOT_FOUND", lambda: self.client.ingest_batch("no-such-job", [(0, np.ones((L, M)))]))
        self.assertEqual(e.method, "IngestBatch")

        def bad():
            for t in range(10):
                yield (t, np.ones((L, M)))
            yield (10, -np.ones((L, M)))
        with self.assertRaisesRegex(MoecastError, r"step 10 \(steps\[10\]\): counts\[0, 0\] = -1 is negative") as ctx:
            self.client.ingest_stream("str-d", bad(), batch_size=5)
        self.assertTrue(ctx.exception.local)
        # The batches sent before the bad step stay ingested.
        self.assertEqual(self.client.job_info("str-d").committed_steps, 10)

    def test_flush_pending_multi_source(self):
        self.register("ms-a", num_sources=2)
        r = self.client.ingest_batch("ms-a", [Step(0, np.ones((L, M)), source=0),
                                              Step(1, np.ones((L, M)), source=0)])
        self.assertEqual([x.outcome for x in r.results], ["pending", "pending"])
        self.assertEqual(self.client.job_info("ms-a").pending_steps, 2)
        committed = self.client.flush_pending("ms-a")
        self.assertEqual([(c.step, c.incomplete) for c in committed], [(0, True), (1, True)])
        info = self.client.job_info("ms-a")
        self.assertEqual((info.committed_steps, info.incomplete_steps, info.pending_steps), (2, 2, 0))
        self.assertEqual(self.client.flush_pending("ms-a"), [])
        # A part for a step committed without it: FAILED_PRECONDITION for that step.
        r = self.client.ingest_batch("ms-a", [Step(1, np.ones((L, M)), source=1)])
        self.assertEqual(r.results[0].outcome, "rejected")
        self.assertEqual(r.results[0].error_code, "FAILED_PRECONDITION")
        # Both sources: complete commit.
        r = self.client.ingest_batch("ms-a", [Step(2, np.ones((L, M)), source=0),
                                              Step(2, np.ones((L, M)), source=1)])
        self.assertEqual([x.outcome for x in r.results], ["pending", "committed"])
        self.assertEqual([(c.step, c.incomplete) for c in r.committed], [(2, False)])
        self.assertCode("NOT_FOUND", lambda: self.client.flush_pending("no-such-job"))
        with self.assertRaisesRegex(MoecastError, "source 2 is out of range"):
            self.client.ingest_batch("ms-a", [Step(3, np.ones((L, M)), source=2)])


class QueryTest(Base):
    @classmethod
    def setUpClass(cls):
        client = Client(SERVER.target)
        client.register_job("q-stable", num_layers=L, num_experts=M, top_k=K, horizons=[1, 10],
                            router_temperature=1.0, entropy_weight=0.1, oracle_weight=0.5,
                            balance_weight=0.5)
        rng = np.random.default_rng(7)
        steps = [Step(t, c, router_logits=np.log(SKEWED) + rng.normal(0, 0.01, (L, M)))
                 for t, c in stationary_steps(rng, SKEWED, 0, 300)]
        s = client.ingest_stream("q-stable", steps, batch_size=50)
        assert s.committed == 300, s
        client.register_job("q-empty", num_layers=L, num_experts=M, top_k=K)
        client.register_job("q-nofc", num_layers=L, num_experts=M, top_k=K, forecasting=False,
                            health=False)
        client.ingest_batch("q-nofc", [(0, np.ones((L, M)))]).raise_for_rejections()
        client.close()

    def test_forecast(self):
        f = self.client.forecast("q-stable", horizons=[1, 10])
        self.assertEqual(f.as_of_step, 299)
        self.assertEqual(list(f.layers), [0, 1])
        self.assertEqual(f.horizons, [1, 10])
        for layer, lf in f.layers.items():
            for h in (1, 10):
                hf = lf.horizons[h]
                self.assertEqual(hf.means.shape, (M,))
                self.assertAlmostEqual(hf.means.sum(), 1.0, places=6)
                np.testing.assert_allclose(hf.means, SKEWED[layer], atol=0.03)
                self.assertTrue(hf.predictor)
                if hf.lower is not None:
                    self.assertTrue(np.all(hf.lower <= hf.means + 1e-12))
                    self.assertTrue(np.all(hf.upper >= hf.means - 1e-12))
        self.assertEqual(f.means(10).shape, (L, M))
        self.assertEqual(self.client.forecast("q-stable").horizons, [1, 10])  # the job's horizons
        only = self.client.forecast("q-stable", horizons=[5], layers=[1], path_steps=4,
                                    predictor="last_value", interval_level=0.8)
        self.assertEqual(list(only.layers), [1])
        self.assertEqual(only.layers[1].horizons[5].predictor, "last_value")
        self.assertEqual(only.layers[1].path.shape, (4, M))
        np.testing.assert_allclose(only.layers[1].path.sum(axis=1), 1.0, atol=1e-6)

    def test_forecast_errors(self):
        self.assertCode("NOT_FOUND", lambda: self.client.forecast("no-such-job"))
        self.assertCode("NOT_FOUND", lambda: self.client.forecast("q-stable", predictor="no_such_predictor"))
        self.assertCode("FAILED_PRECONDITION", lambda: self.client.forecast("q-empty"))
        self.assertCode("FAILED_PRECONDITION", lambda: self.client.forecast("q-nofc"))
        self.assertCode("INVALID_ARGUMENT", lambda: self.client.forecast("q-stable", layers=[L]))
        self.assertCode("INVALID_ARGUMENT", lambda: self.client.forecast("q-stable", path_steps=10**6))

    def test_get_state(self):
        s = self.client.get_state("q-stable")
        self.assertEqual(s.as_of_step, 299)
        self.assertEqual(s.job_state, "stable")
        self.assertEqual([l.layer for l in s.layers], [0, 1])
        for l in s.layers:
            self.assertEqual(l.state, "stable")
            self.assertEqual(l.window_steps, 100)
            self.assertLess(l.drift_ratio, 1.5)
            self.assertIsNone(l.variance_10)
        s = self.client.get_state("q-stable", per_expert=True)
        for l in s.layers:
            for series in (l.variance_10, l.range_10, l.variance_w, l.range_w):
                self.assertEqual(series.shape, (M,))
                self.assertTrue(np.all(series >= 0))
        self.assertCode("FAILED_PRECONDITION", lambda: self.client.get_state("q-empty"))
        self.assertCode("NOT_FOUND", lambda: self.client.get_state("no-such-job"))

    def test_get_health(self):
        h = self.client.get_health("q-stable")
        self.assertEqual(h.as_of_step, 299)
        self.assertEqual(h.e.kind, "finite")
        self.assertAlmostEqual(h.e.value, 1.0 * 0.1 / (0.5 + 0.5), places=9)
        self.assertEqual(len(h.layers), L)
        for l in h.layers:
            self.assertGreaterEqual(l.window_end_step, 99)
            self.assertGreater(l.window_steps, 0)
            self.assertGreater(l.max_over_mean, 1.5)   # SKEWED: max 0.30 vs mean 0.125
            self.assertLess(l.normalized_entropy, 1.0)
            self.assertEqual(l.dead_experts, [])
        self.assertCode("FAILED_PRECONDITION", lambda: self.client.get_health("q-empty"))
        self.assertCode("FAILED_PRECONDITION", lambda: self.client.get_health("q-nofc"))
        self.assertCode("NOT_FOUND", lambda: self.client.get_health("no-such-job"))

    def test_recommend_placement(self):
        p = self.client.recommend_placement("q-stable", num_slots=8, num_gpus=4, horizon=10)
        self.assertEqual(p.as_of_step, 299)
        self.assertEqual(p.plan.phy2log.shape, (L, 8))
        for row in p.plan.phy2log:
            self.assertEqual(sorted(row.tolist()), list(range(M)))  # each expert once
        self.assertEqual(p.plan.gpu_loads.shape, (L, 4))
        self.assertEqual(p.loads.shape, (L, M))
        np.testing.assert_allclose(p.loads.sum(axis=1), 1.0, atol=1e-6)
        self.assertIsNone(p.current)
        self.assertIsNone(p.decision)
        # The best plan beats experts 0,1 | 2,3 | ... in order (the heavy ones together).
        current = np.tile(np.arange(M), (L, 1))
        q = self.client.recommend_placement(
            "q-stable", num_slots=8, num_gpus=4, current_phy2log=current, bytes_per_expert=1 << 20,
            migration=MigrationModel(intra_node_bandwidth=1e11, inter_node_bandwidth=1e10,
                                     tokens_per_step=2048, time_per_token_s=1e-6,
                                     horizon_steps=1000, bytes_per_expert=1 << 20))
        self.assertIsNotNone(q.current)
        np.testing.assert_array_equal(q.current.phy2log, current)
        self.assertLessEqual(q.plan.max_over_mean, q.current.max_over_mean + 1e-9)
        self.assertIsNotNone(q.decision)
        self.assertTrue(q.decision.reason)
        self.assertTrue(q.decision.rebalance, q.decision.reason)
        self.assertGreater(q.plan.moved_experts, 0)
        self.assertEqual(len(q.plan.transfers), q.plan.moved_experts)

    def test_recommend_placement_errors(self):
        self.assertCode("INVALID_ARGUMENT", lambda: self.client.recommend_placement("q-stable", 6, 4))
        self.assertCode("INVALID_ARGUMENT", lambda: self.client.recommend_placement("q-stable", 8, 4, mode="bogus"))
        self.assertCode("INVALID_ARGUMENT", lambda: self.client.recommend_placement(
            "q-stable", 8, 4, current_phy2log=np.zeros((L, 8), int) + 9))
        self.assertCode("NOT_FOUND", lambda: self.client.recommend_placement("no-such-job", 8, 4))
        self.assertCode("FAILED_PRECONDITION", lambda: self.client.recommend_placement("q-empty", 8, 4))


class WatchTest(Base):
    def drive_states(self, job_id):
        """Stationary loads (-> stable around step 200), then a drift (-> transient)."""
        steps = (stationary_steps(self.rng, UNIFORM, 0, 320)
                 + drifting_steps(self.rng, UNIFORM, SKEWED, 320, 380, period=150))
        self.feed(job_id, steps, batch=40)

    def collect(self, stream, until, timeout_s=60):
        """Events from `stream` until until(events) is true; runs in a thread so a
        missing event fails the test instead of hanging it."""
        events, errors = [], []

        def run():
            try:
                for ev in stream:
                    events.append(ev)
                    if until(events):
                        return
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(timeout_s)
        stream.cancel()
        t.join(5)
        if errors:
            raise errors[0]
        return events

    def test_state_changes_live_in_order_replay_and_resume(self):
        self.register("w-a")
        live = self.client.watch("w-a")
        holder = {}

        def watcher():
            holder["events"] = self.collect(
                live, lambda evs: any(e.kind == "state_change" and e.layer == -1 and e.to == "transient"
                                      for e in evs), timeout_s=120)

        t = threading.Thread(target=watcher)
        t.start()
        time.sleep(0.2)
        self.drive_states("w-a")
        t.join(150)
        events = holder.get("events", [])
        kinds = [(e.kind, e.layer, e.from_, e.to, e.step) for e in events]
        log("w-a events:", kinds)
        self.assertTrue(events, "no events while driving the job stable then transient")
        self.assertEqual([e.seq for e in events], list(range(1, len(events) + 1)),
                         "seq must start at 1 and grow by one")
        self.assertEqual([e.step for e in events], sorted(e.step for e in events))
        changes = [e for e in events if e.kind == "state_change"]
        for layer in (0, 1, -1):
            mine = [(e.from_, e.to) for e in changes if e.layer == layer]
            self.assertGreaterEqual(len(mine), 2, "layer %d state changes: %s" % (layer, mine))
            self.assertEqual(mine[0], ("transient", "stable"), "layer %d" % layer)
            self.assertEqual(mine[1], ("stable", "transient"), "layer %d" % layer)
        to_stable = [e for e in changes if e.to == "stable" and e.layer >= 0]
        for e in to_stable:
            # The state may change once it has lasted min_dwell_steps (200): step 199 at the earliest.
            self.assertTrue(199 <= e.step < 320, "layer %d stable at step %d" % (e.layer, e.step))
            self.assertLess(e.value, 1.5)  # the drift ratio behind it
        to_transient = [e for e in changes if e.to == "transient" and e.layer >= 0]
        for e in to_transient:
            self.assertGreaterEqual(e.step, 320)
            self.assertGreater(e.value, 2.0)
        self.assertEqual(self.client.get_state("w-a").job_state, "transient")

        # Replay from the start: the same events, and nothing else yet.
        replay = self.collect(self.client.watch("w-a"), lambda evs: len(evs) >= len(events), 30)
        self.assertEqual([(e.seq, e.kind, e.layer, e.from_, e.to, e.step) for e in replay],
                         [(e.seq, e.kind, e.layer, e.from_, e.to, e.step) for e in events])
        # Resume after the second event.
        first = self.client.watch("w-a")
        got = self.collect(first, lambda evs: len(evs) >= 2, 30)
        self.assertEqual(first.last_seq, 2)
        rest = self.collect(first.resume(), lambda evs: evs[-1].seq >= len(events), 30)
        self.assertEqual([e.seq for e in got + rest], list(range(1, len(events) + 1)))
        after = self.collect(self.client.watch("w-a", after_seq=len(events) - 1), lambda evs: True, 30)
        self.assertEqual(after[0].seq, len(events))

    def test_watch_ends_not_found(self):
        stream = self.client.watch("no-such-job")
        self.assertCode("NOT_FOUND", lambda: next(stream))
        self.register("w-del")
        stream = self.client.watch("w-del", timeout=30)
        errors = []

        def run():
            try:
                for _ in stream:
                    pass
            except MoecastError as e:
                errors.append(e)

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.3)
        self.client.delete_job("w-del")
        t.join(20)
        self.assertFalse(t.is_alive(), "Watch did not end when its job was deleted")
        self.assertEqual([e.code for e in errors], ["NOT_FOUND"])

    def test_watch_cancel(self):
        self.register("w-cancel")
        with self.client.watch("w-cancel") as stream:
            pass
        self.assertEqual(list(stream), [])

    def test_rebalance_recommended_event(self):
        self.register("w-rb")
        current = np.tile(np.arange(M), (L, 1))   # heavy experts of each layer share a GPU
        rebalance = dict(num_slots=8, num_gpus=4, current_phy2log=current, horizon=10,
                         migration=MigrationModel(intra_node_bandwidth=1e11, inter_node_bandwidth=1e10,
                                                  tokens_per_step=2048, time_per_token_s=1e-6,
                                                  horizon_steps=1000, bytes_per_expert=1 << 20))
        self.feed("w-rb", stationary_steps(self.rng, SKEWED, 0, 20))
        stream = self.client.watch("w-rb", rebalance=rebalance, rebalance_every_steps=10)
        holder = {}
        t = threading.Thread(target=lambda: holder.setdefault("events", self.collect(
            stream, lambda evs: any(e.kind == "rebalance_recommended" for e in evs), 60)))
        t.start()
        time.sleep(0.2)
        self.feed("w-rb", stationary_steps(self.rng, SKEWED, 20, 200), batch=10)
        t.join(90)
        recs = [e for e in holder.get("events", []) if e.kind == "rebalance_recommended"]
        self.assertTrue(recs, "no rebalance_recommended event; events: %s"
                        % [(e.kind, e.layer, e.step) for e in holder.get("events", [])])
        r = recs[0].recommendation
        self.assertIsNotNone(r)
        self.assertTrue(r.decision.rebalance, r.decision.reason)
        self.assertGreater(recs[0].value, 0)   # seconds saved net of migration
        np.testing.assert_array_equal(r.current.phy2log, current)
        # Without a migration model the server refuses the rebalance watch.
        bad = dict(rebalance)
        del bad["migration"]
        self.assertCode("INVALID_ARGUMENT", lambda: next(self.client.watch("w-rb", rebalance=bad)))


class ConcurrencyTest(Base):
    def test_many_jobs_in_parallel_with_readers(self):
        n_jobs, n_steps = 8, 240
        errors = []

        def worker(i):
            try:
                c = Client(SERVER.target) if i % 2 else self.client   # shared and own clients
                job = "cc-%d" % i
                c.register_job(job, num_layers=L, num_experts=M, top_k=K)
                rng = np.random.default_rng(i)
                steps = stationary_steps(rng, UNIFORM, 0, n_steps)
                for b in range(0, n_steps, 20):
                    r = c.ingest_batch(job, steps[b:b + 20])
                    if r.rejected:
                        errors.append("%s: %s" % (job, r.rejections[0]))
                    if b >= 100:
                        f = c.forecast(job, horizons=[1])
                        if f.as_of_step != b + 19:
                            errors.append("%s: forecast as of %d after step %d" % (job, f.as_of_step, b + 19))
                        c.get_state(job)
                        c.list_jobs()
            except Exception as e:  # noqa: BLE001
                errors.append("worker %d: %r" % (i, e))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        jobs = self.client.list_jobs()
        for i in range(n_jobs):
            self.assertIn("cc-%d" % i, jobs)
            info = self.client.job_info("cc-%d" % i)
            self.assertEqual((info.committed_steps, info.last_step, info.rejected_calls),
                             (n_steps, n_steps - 1, 0))

    def test_one_job_many_sources_in_parallel(self):
        sources, rounds, per_round = 6, 12, 10
        self.register("cc-ms", num_sources=sources)
        barrier = threading.Barrier(sources)
        errors, done = [], threading.Event()
        total_tokens = [0.0] * sources

        def producer(src):
            try:
                rng = np.random.default_rng(100 + src)
                for r in range(rounds):
                    batch = []
                    for s in range(r * per_round, (r + 1) * per_round):
                        counts = sample_part(rng)
                        total_tokens[src] += counts[0].sum() / K
                        batch.append(Step(s, counts, source=src))
                    res = self.client.ingest_batch("cc-ms", batch)
                    if res.rejected:
                        errors.append("source %d: %s" % (src, res.rejections[0]))
                    barrier.wait(30)  # keep sources within max_pending_steps of each other
            except Exception as e:  # noqa: BLE001
                errors.append("source %d: %r" % (src, e))
                barrier.abort()

        def sample_part(rng):
            return np.stack([rng.multinomial(200, np.full(M, 1.0 / M)) for _ in range(L)]).astype(float)

        def reader():
            while not done.is_set():
                try:
                    self.client.job_info("cc-ms")
                    self.client.forecast("cc-ms", horizons=[1])
                except MoecastError as e:
                    if e.code != "FAILED_PRECONDITION":   # before the first commit
                        errors.append("reader: %s" % e)
                time.sleep(0.005)

        threads = [threading.Thread(target=producer, args=(s,)) for s in range(sources)]
        readers = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads + readers:
            t.start()
        for t in threads:
            t.join(120)
        done.set()
        for t in readers:
            t.join(10)
        self.assertEqual(errors, [])
        info = self.client.job_info("cc-ms")
        n = rounds * per_round
        self.assertEqual((info.committed_steps, info.incomplete_steps, info.pending_steps), (n, 0, 0))
        self.assertAlmostEqual(info.tokens, sum(total_tokens), places=3)

    def test_parallel_streams_and_watches(self):
        n_jobs = 4
        for i in range(n_jobs):
            self.register("cs-%d" % i)
        results, errors = {}, []

        def streamer(i):
            try:
                rng = np.random.default_rng(200 + i)
                steps = (Step(t, c) for t, c in stationary_steps(rng, UNIFORM, 0, 300))
                results[i] = self.client.ingest_stream("cs-%d" % i, steps, batch_size=25)
            except Exception as e:  # noqa: BLE001
                errors.append("stream %d: %r" % (i, e))

        watches = [self.client.watch("cs-%d" % i) for i in range(n_jobs)]
        seen = {i: [] for i in range(n_jobs)}

        def watcher(i):
            try:
                for ev in watches[i]:
                    seen[i].append(ev)
            except MoecastError as e:
                errors.append("watch %d: %s" % (i, e))

        wt = [threading.Thread(target=watcher, args=(i,)) for i in range(n_jobs)]
        st = [threading.Thread(target=streamer, args=(i,)) for i in range(n_jobs)]
        for t in wt + st:
            t.start()
        for t in st:
            t.join(120)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(
                any(e.kind == "state_change" and e.layer == -1 for e in seen[i]) for i in range(n_jobs)):
            time.sleep(0.05)
        for w in watches:
            w.cancel()
        for t in wt:
            t.join(10)
        self.assertEqual(errors, [])
        for i in range(n_jobs):
            self.assertEqual((results[i].committed, results[i].rejected), (300, 0))
            self.assertEqual([e.seq for e in seen[i]], list(range(1, len(seen[i]) + 1)), "job cs-%d" % i)
            self.assertTrue(any(e.kind == "state_change" and e.layer == -1 and e.to == "stable"
                                for e in seen[i]), "job cs-%d: %s" % (i, [(e.kind, e.layer) for e in seen[i]]))


class ExampleTest(Base):
    def test_stream_trace_example(self):
        # The installed console script (the venv's bin/ is on PATH).
        example = shutil.which("moecast-stream-trace")
        self.assertIsNotNone(example, "moecast-stream-trace is not on PATH")
        trace = os.environ["MOECAST_TRACE"]
        p = subprocess.run([example, "--target", SERVER.target,
                            "--trace", trace, "--steps", "600", "--job-id", "example-aux",
                            "--horizons", "1,10", "--gpus", "4"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
        log(p.stdout)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("streamed 600 steps", p.stdout)
        self.assertIn("forecast as of step 599", p.stdout)
        self.assertIn("layer 3", p.stdout)
        self.assertIn("placement", p.stdout)
        info = self.client.job_info("example-aux")
        self.assertEqual((info.committed_steps, info.spec.num_layers, info.spec.num_experts,
                          info.spec.top_k), (600, 4, 16, 2))


if __name__ == "__main__":
    unittest.main(verbosity=2)
