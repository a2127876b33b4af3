"""moecast.engine (the C++ engine in-process, pybind11 over the C API),
run against the installed wheel:

- a job's whole life: register, ingest, job info, forecast, state, placement
  (with a migration decision), health, flush of a multi-source job, delete;
- numpy in without a copy (a float64 C-contiguous array is not copied: the
  binding reads it in place) and converted once otherwise; arrays out;
- bad input of every kind raises EngineInvalidArgument / EngineError with the
  absl code (name and number) and a message naming what is wrong, and leaves
  the job unchanged;
- the GIL is released while the engine works (another Python thread runs
  during a long ingest);
- the same answers as the C++ engine behind moecastd on the bundled trace
  tiny_moe_aux (forecasts of fixed predictors and the placement planned on
  them).
"""

import math
import os
import sys
import threading
import time
import unittest

import numpy as np

import moecast
from moecast import Client, EngineError, EngineInvalidArgument, MoecastError, Step
from moecast import read_trace, trace_files
from moecast.engine import Engine
from moecastd_fixture import Moecastd

L, M, K = 3, 16, 2


def counts_for(step, rng, dead=None):
    """L x M counts: expert e's weight grows with e; `dead` gets none."""
    weights = np.arange(5, M + 5, dtype=np.float64)
    c = np.stack([rng.poisson(20 * weights) for _ in range(L)]).astype(np.float64)
    if dead is not None:
        c[dead[0], dead[1]] = 0
    return c


class EngineLifeTest(unittest.TestCase):
    def test_register_ingest_forecast_place_health_delete(self):
        rng = np.random.default_rng(1)
        with Engine(analysis="inline", health_window_steps=50, dead_window_steps=50) as eng:
            eng.register_job("life", L, M, K, predictors=["last_value", "ema(0.9)"],
                             horizons=[1, 10], aux_loss_coef=0.01)
            self.assertEqual(eng.num_jobs(), 1)
            last = None
            for s in range(200):
                last = counts_for(s, rng, dead=(1, 3))
                z = rng.normal(size=(L, M))
                r = eng.ingest("life", s, last, router_logits=z)
                self.assertEqual((r.outcome, r.num_committed), ("committed", 1))
            dup = eng.ingest("life", 199, last)
            self.assertEqual(dup.outcome, "duplicate")
            info = eng.job_info("life")
            self.assertEqual((info.num_layers, info.num_experts, info.top_k), (L, M, K))
            self.assertEqual((info.committed_steps, info.first_step, info.last_step),
                             (200, 0, 199))
            self.assertEqual(info.duplicate_calls, 1)

            f = eng.forecast("life", 1, predictor="last_value")
            self.assertEqual(f.mean.shape, (L, M))
            self.assertEqual(f.mean.dtype, np.float64)
            np.testing.assert_allclose(f.mean, last / last.sum(axis=1, keepdims=True),
                                       rtol=1e-6)
            auto = eng.forecast("life", 10)
            np.testing.assert_allclose(auto.mean.sum(axis=1), np.ones(L), rtol=1e-9)
            self.assertTrue(np.all(auto.lower <= auto.mean + 1e-12))

            st = eng.state("life")
            self.assertEqual(st.as_of_step, 199)
            self.assertIn(st.job_state, ("transient", "stable"))
            self.assertEqual(len(st.layer_states), L)

            p = eng.recommend_placement("life", num_slots=2 * M, num_gpus=4, predictor="last_value")
            self.assertEqual(p.phy2log.shape, (L, 2 * M))
            self.assertEqual(p.phy2log.dtype, np.int32)
            for layer in range(L):   # every expert has a replica; counts agree
                self.assertEqual(set(p.phy2log[layer].tolist()), set(range(M)))
                np.testing.assert_array_equal(
                    np.bincount(p.phy2log[layer], minlength=M), p.logcnt[layer])
            self.assertIsNone(p.rebalance)
            moved = eng.recommend_placement(
                "life", num_slots=2 * M, num_gpus=4, current_phy2log=p.phy2log[:, ::-1].copy(),
                migration={"intra_node_bandwidth": 1e9, "inter_node_bandwidth": 1e9,
                           "bytes_per_expert": 1e6, "tokens_per_step": 1e4,
                           "time_per_token_s": 1e-6, "horizon_steps": 100})
            self.assertIn(moved.rebalance, (True, False))
            self.assertTrue(moved.decision_reason)

            h = eng.health("life")
            self.assertEqual(len(h.layers), L)
            self.assertGreaterEqual(h.layers[1].num_dead_experts, 1)
            self.assertEqual(h.layers[0].num_dead_experts, 0)
            self.assertIn(h.e_kind, ("finite", "unbounded", "indeterminate", "missing"))

            eng.delete_job("life")
            self.assertEqual(eng.num_jobs(), 0)
            with self.assertRaises(EngineError) as ctx:
                eng.job_info("life")
            self.assertEqual((ctx.exception.code, ctx.exception.code_value), ("NOT_FOUND", 5))

    def test_multi_source_pending_and_flush(self):
        with Engine(analysis="inline") as eng:
            eng.register_job("ms", L, M, K, num_sources=2)
            c = np.ones((L, M))
            self.assertEqual(eng.ingest("ms", 0, c, source=0).outcome, "pending")
            self.assertEqual(eng.ingest("ms", 0, c, source=1).outcome, "committed")
            self.assertEqual(eng.ingest("ms", 1, c, source=0).outcome, "pending")
            self.assertEqual(eng.flush_pending("ms"), 1)
            info = eng.job_info("ms")
            self.assertEqual((info.committed_steps, info.incomplete_steps), (2, 1))

    def test_threads_analysis_and_await(self):
        rng = np.random.default_rng(2)
        with Engine(analysis="threads", analysis_threads=1) as eng:
            eng.register_job("t", L, M, K, predictors=["last_value"], horizons=[1])
            for s in range(50):
                eng.ingest("t", s, counts_for(s, rng))
            prog = eng.await_analysis("t", timeout_s=60)
            self.assertEqual((prog.as_of_step, prog.committed_step, prog.lag_steps), (49, 49, 0))

    def test_integer_counts_are_converted(self):
        with Engine(analysis="inline") as eng:
            eng.register_job("ints", L, M, K, predictors=["last_value"], horizons=[1])
            counts = np.arange(L * M, dtype=np.int32).reshape(L, M) + 1
            eng.ingest("ints", 0, counts)
            np.testing.assert_allclose(eng.forecast("ints", 1).mean,
                                       counts / counts.sum(axis=1, keepdims=True), rtol=1e-6)

    def test_version(self):
        self.assertEqual(moecast.engine.version(), moecast.__version__)


class ZeroCopyTest(unittest.TestCase):
    """The binding hands float64 C-contiguous arrays to the engine in place."""

    def test_float64_is_not_copied_other_layouts_are(self):
        from moecast import _moecast_ext as ext
        shape = [L, M]
        self.assertFalse(ext._input_is_copied(np.full((L, M), 3.0), shape))
        readonly = np.full((L, M), 3.0)
        readonly.setflags(write=False)
        self.assertFalse(ext._input_is_copied(readonly, shape))
        self.assertTrue(ext._input_is_copied(np.full((L, 2 * M), 3.0)[:, ::2], shape))
        self.assertTrue(ext._input_is_copied(np.asfortranarray(np.full((L, M), 3.0)), shape))
        self.assertTrue(ext._input_is_copied(np.full((L, M), 3, dtype=np.int64), shape))
        self.assertTrue(ext._input_is_copied(np.full((L, M), 3, dtype=np.float32), shape))
        with Engine(analysis="inline") as eng:   # every layout ingests the same
            eng.register_job("zc", L, M, K, predictors=["last_value"], horizons=[1])
            base = np.arange(L * M, dtype=np.float64).reshape(L, M) + 1
            for s, arr in enumerate((base, np.asfortranarray(base), base.astype(np.float32),
                                     np.repeat(base, 2, axis=1)[:, ::2])):
                eng.ingest("zc", s, arr)
                np.testing.assert_allclose(eng.forecast("zc", 1).mean,
                                           base / base.sum(axis=1, keepdims=True), rtol=1e-6)


class ErrorTest(unittest.TestCase):
    def setUp(self):
        self.eng = Engine(analysis="inline")
        self.eng.register_job("e", L, M, K, predictors=["last_value"], horizons=[1])
        self.good = np.ones((L, M))

    def tearDown(self):
        self.eng.close()

    def assertInvalid(self, pattern, fn, *args, **kwargs):
        with self.assertRaises(EngineInvalidArgument) as ctx:
            fn(*args, **kwargs)
        e = ctx.exception
        self.assertIsInstance(e, ValueError)
        self.assertIsInstance(e, MoecastError)
        self.assertEqual((e.code, e.code_value), ("INVALID_ARGUMENT", 3))
        self.assertRegex(e.message, pattern)
        return e

    def test_wrong_shapes(self):
        self.assertInvalid(r"counts has shape \(16, 3\), the job needs \(3, 16\)",
                           self.eng.ingest, "e", 0, np.ones((M, L)))
        self.assertInvalid(r"counts has shape \(48,\), the job needs \(3, 16\)",
                           self.eng.ingest, "e", 0, np.ones(L * M))
        self.assertInvalid(r"router_logits has shape \(3, 15\)",
                           self.eng.ingest, "e", 0, self.good, router_logits=np.ones((L, M - 1)))

    def test_wrong_dtypes_and_types(self):
        e = self.assertInvalid(r"counts must hold real numbers .* got dtype complex128",
                               self.eng.ingest, "e", 0, np.ones((L, M), dtype=complex))
        self.assertEqual(e.method, "ingest")
        self.assertInvalid(r"counts must hold real numbers .* got dtype bool",
                           self.eng.ingest, "e", 0, np.ones((L, M), dtype=bool))
        self.assertInvalid(r"counts must hold real numbers .* got dtype object",
                           self.eng.ingest, "e", 0, np.full((L, M), None, dtype=object))
        self.assertInvalid(r"counts must be a numpy array, got list",
                           self.eng.ingest, "e", 0, [[1.0] * M] * L)
        self.assertInvalid(r"tokens must be a number or None, got str",
                           self.eng.ingest, "e", 0, self.good, tokens="100")

    def test_bad_values_from_the_engine(self):
        bad = self.good.copy()
        bad[1, 2] = -1
        e = self.assertInvalid(r"layer 1.*expert 2|expert 2.*layer 1", self.eng.ingest, "e", 0, bad)
        bad[1, 2] = math.nan
        self.assertInvalid(r"layer 1|expert 2", self.eng.ingest, "e", 0, bad)
        self.eng.ingest("e", 5, self.good)
        self.assertInvalid(r"step", self.eng.ingest, "e", 4, self.good)
        self.assertInvalid(r"source", self.eng.ingest, "e", 6, self.good, source=3)
        self.assertInvalid(r"horizon", self.eng.forecast, "e", 0)
        self.assertInvalid(r"interval|level", self.eng.forecast, "e", 1, interval_level=1.5)
        # Nothing was committed by the failed calls.
        self.assertEqual(self.eng.job_info("e").committed_steps, 1)
        self.assertEqual(e.method, "ingest")

    def test_unknown_job_predictor_and_duplicates(self):
        for call in (lambda: self.eng.ingest("nope", 0, self.good),
                     lambda: self.eng.forecast("nope", 1),
                     lambda: self.eng.delete_job("nope"),
                     lambda: self.eng.health("nope")):
            with self.assertRaises(EngineError) as ctx:
                call()
            self.assertEqual((ctx.exception.code, ctx.exception.code_value), ("NOT_FOUND", 5))
            self.assertIn("nope", ctx.exception.message)
        with self.assertRaises(EngineError) as ctx:
            self.eng.register_job("e", L, M, K)
        self.assertEqual(ctx.exception.code, "ALREADY_EXISTS")
        with self.assertRaises(EngineError) as ctx:
            self.eng.forecast("e", 1)          # nothing committed yet
        self.assertEqual(ctx.exception.code, "FAILED_PRECONDITION")
        self.eng.ingest("e", 0, self.good)
        with self.assertRaises(EngineError) as ctx:
            self.eng.forecast("e", 1, predictor="no_such_predictor")
        self.assertEqual(ctx.exception.code, "NOT_FOUND")

    def test_bad_register_and_options(self):
        self.assertInvalid(r"top_k|top-k|K", self.eng.register_job, "k", L, M, M + 1)
        self.assertInvalid(r"step_unit must be one of", self.eng.register_job, "k", L, M, K,
                           step_unit="epoch")
        self.assertInvalid(r"job", self.eng.register_job, "bad id/", L, M, K)
        self.assertInvalid(r"predictors must be a sequence of str", self.eng.register_job,
                           "k", L, M, K, predictors="ema(0.9)")
        self.assertInvalid(r"unknown engine option 'max_job'", Engine, max_job=3)
        self.assertInvalid(r"max_jobs", Engine, max_jobs=-1)
        self.assertInvalid(r"analysis must be", Engine, analysis="sometimes")

    def test_bad_placement(self):
        self.eng.ingest("e", 0, self.good)
        self.assertInvalid(r"current_phy2log must be an integer array of shape \(3, 32\)",
                           self.eng.recommend_placement, "e", 2 * M, 4,
                           current_phy2log=np.zeros((L, M), dtype=np.int32))
        self.assertInvalid(r"current_phy2log must hold integers",
                           self.eng.recommend_placement, "e", 2 * M, 4,
                           current_phy2log=np.zeros((L, 2 * M)))
        self.assertInvalid(r"unknown migration field 'bandwidth'",
                           self.eng.recommend_placement, "e", 2 * M, 4,
                           migration={"bandwidth": 1.0})
        self.assertInvalid(r"mode must be one of", self.eng.recommend_placement, "e", 2 * M, 4,
                           mode="round_robin")
        self.assertInvalid(r"slot|gpu|GPU", self.eng.recommend_placement, "e", 2 * M + 1, 4)
        self.assertInvalid(r"horizon 0 must be >= 1", self.eng.recommend_placement, "e", 2 * M,
                           4, horizon=0)

    def test_closed_engine(self):
        self.eng.close()
        self.assertTrue(self.eng.closed)
        with self.assertRaises(EngineError) as ctx:
            self.eng.ingest("e", 0, self.good)
        self.assertEqual(ctx.exception.code, "FAILED_PRECONDITION")
        self.eng.close()   # idempotent


class GilTest(unittest.TestCase):
    """While one thread is inside the engine, another Python thread runs."""

    def test_other_threads_run_during_engine_calls(self):
        layers, experts = 64, 512
        with Engine(analysis="inline") as eng:
            eng.register_job("gil", layers, experts, 8)
            counts = np.ones((layers, experts))
            ticks = []
            done = threading.Event()

            def ticker():
                while not done.is_set():
                    ticks.append(time.monotonic())
                    time.sleep(0.0005)

            def ingester():
                for s in range(300):
                    eng.ingest("gil", s, counts)

            t = threading.Thread(target=ticker)
            t.start()
            # Calls made while the ticker keeps going: with the GIL held for
            # the whole of each call the ticker could only run between
            # calls; count ticks that fall strictly inside engine calls.
            inside = 0
            sys.setswitchinterval(1.0)   # no forced switches: only releases let it run
            try:
                for s in range(200):
                    before = len(ticks)
                    eng.ingest("gil", s, counts)
                    inside += len(ticks) - before
            finally:
                sys.setswitchinterval(0.005)
                done.set()
                t.join()
            # Released: the ticker runs every 0.5 ms inside the calls; held, it
            # could only run at a forced switch (once a second here).
            self.assertGreater(inside, 20, "other threads hardly ran during 200 ingest calls")
            # Many threads share the engine.
            threads = [threading.Thread(target=lambda i=i: eng.register_job("j%d" % i, 2, 8, 2))
                       for i in range(8)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            self.assertEqual(eng.num_jobs(), 9)
            del ingester

    def test_concurrent_producers_and_a_failing_thread(self):
        # Each thread's error carries its own call's message (the C API's
        # last error is per thread, read before the GIL is taken back).
        with Engine(analysis="threads", analysis_threads=1) as eng:
            for i in range(3):
                eng.register_job("p%d" % i, L, M, K, predictors=["last_value"], horizons=[1])
            errors, messages = [], []

            def produce(i):
                try:
                    c = np.full((L, M), float(i + 1))
                    for s in range(300):
                        eng.ingest("p%d" % i, s, c)
                except Exception as e:  # recorded for the assertion below
                    errors.append(e)

            def fail():
                for s in range(300):
                    bad = np.ones((L, M))
                    bad[s % L, s % M] = -1.0
                    try:
                        eng.ingest("p0", 10 ** 6 + s, bad)
                    except EngineInvalidArgument as e:
                        messages.append((s, e.message))

            threads = [threading.Thread(target=produce, args=(i,)) for i in range(3)]
            threads.append(threading.Thread(target=fail))
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertEqual(errors, [])
            self.assertEqual(len(messages), 300)
            for s, message in messages:
                self.assertRegex(message, r"\b%d\b" % (s % M), message)
            for i in range(3):
                self.assertEqual(eng.job_info("p%d" % i).committed_steps, 300)


class SameAsCppTest(unittest.TestCase):
    """The binding and moecastd (the C++ engine) agree on a bundled trace."""

    STEPS = 400
    PREDICTORS = ["last_value", "ema(0.9)", "sw_avg(32)"]

    def test_tiny_moe_aux_forecasts_and_placement_match_moecastd(self):
        counts_path, _, meta = trace_files(os.environ["MOECAST_TRACE"])
        top_k = int(meta["top_k"]) if meta and "top_k" in meta else 2
        steps = list(read_trace(counts_path, max_steps=self.STEPS))
        num_layers, num_experts = steps[0].counts.shape
        with Moecastd() as server, Client(server.target) as client, \
                Engine(analysis="inline") as eng:
            client.register_job("aux", num_layers, num_experts, top_k,
                                predictors=self.PREDICTORS, horizons=[1, 10])
            eng.register_job("aux", num_layers, num_experts, top_k,
                             predictors=self.PREDICTORS, horizons=[1, 10])
            client.ingest_stream("aux", iter(steps), batch_size=100)
            for s in steps:
                eng.ingest("aux", s.step, s.counts, tokens=s.tokens)
            self.assertEqual(client.job_info("aux").committed_steps,
                             eng.job_info("aux").committed_steps)
            for predictor in self.PREDICTORS:
                for h in (1, 10):
                    ours = eng.forecast("aux", h, predictor=predictor).mean
                    theirs = client.forecast("aux", [h], predictor=predictor).means(h)
                    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15,
                                               err_msg="%s at h=%d" % (predictor, h))
            ours = eng.recommend_placement("aux", num_slots=num_experts, num_gpus=4,
                                           predictor="ema(0.9)", horizon=10)
            theirs = client.recommend_placement("aux", num_slots=num_experts, num_gpus=4,
                                                predictor="ema(0.9)", horizon=10)
            np.testing.assert_array_equal(ours.phy2log, theirs.plan.phy2log)


if __name__ == "__main__":
    unittest.main(verbosity=2)
