"""libmoecast.so from Python through ctypes (moecast_ctypes.py): the struct
layouts agree with the library, a job's whole life (register, ingest,
forecast, state, placement, health, delete) with numpy buffers, errors for
bad input, and the per-thread last error under concurrent calls.

    /usr/bin/python3 ctypes_test.py  (MOECAST_LIB=path/to/libmoecast.so)
"""
import ctypes
import math
import os
import sys
import threading
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "python"))
import moecast_ctypes as mc  # noqa: E402

LIB = mc.load(os.environ["MOECAST_LIB"])
L, M, K = 3, 16, 2


def counts_for(step, rng, dead=None):
    """L x M counts: expert e's weight grows with e; `dead` gets none."""
    weights = np.arange(5, M + 5, dtype=np.float64)  # least share 2.5%
    c = np.stack([rng.poisson(20 * weights) for _ in range(L)]).astype(
        np.float64)
    if dead is not None:
        c[dead[0], dead[1]] = 0
    return np.ascontiguousarray(c)


class Engine:
    """A moecast_engine* that is destroyed with the context."""

    def __init__(self, **options):
        self.handle = ctypes.c_void_p()
        opts = mc.EngineOptions()
        LIB.moecast_engine_options_init(ctypes.byref(opts))
        for k, v in options.items():
            setattr(opts, k, v)
        mc.check(LIB, LIB.moecast_engine_create(ctypes.byref(opts),
                                                ctypes.byref(self.handle)))

    def __enter__(self):
        return self.handle

    def __exit__(self, *exc):
        LIB.moecast_engine_destroy(self.handle)


def spec_for(job_id, predictors=(b"last_value", b"ema(0.9)"),
             horizons=(1, 10), sources=1):
    spec = mc.JobSpec()
    LIB.moecast_job_spec_init(ctypes.byref(spec))
    spec.job_id = job_id
    spec.num_layers, spec.num_experts, spec.top_k = L, M, K
    spec.num_sources = sources
    # Keep the arrays alive with the spec.
    spec._preds = (ctypes.c_char_p * len(predictors))(*predictors)
    spec._hor = (ctypes.c_int32 * len(horizons))(*horizons)
    spec.predictors = spec._preds
    spec.num_predictors = len(predictors)
    spec.horizons = spec._hor
    spec.num_horizons = len(horizons)
    return spec


def ingest(engine, job, step, counts, logits=None, source=0):
    result = mc.IngestResult()
    status = LIB.moecast_ingest(
        engine, job, step, source, mc.ptr(counts, ctypes.c_double),
        counts.size, mc.ptr(logits, ctypes.c_double),
        0 if logits is None else logits.size, None, ctypes.byref(result))
    return status, result


def last_error():
    return LIB.moecast_last_error().decode()


class LayoutTest(unittest.TestCase):

    def test_struct_sizes_match_the_library(self):
        for cls, init in [
            (mc.EngineOptions, LIB.moecast_engine_options_init),
            (mc.JobSpec, LIB.moecast_job_spec_init),
            (mc.PlacementRequest, LIB.moecast_placement_request_init),
            (mc.MigrationModel, LIB.moecast_migration_model_init),
        ]:
            s = cls()
            init(ctypes.byref(s))
            self.assertEqual(s.struct_size, ctypes.sizeof(cls), cls.__name__)

    def test_version(self):
        self.assertEqual(LIB.moecast_abi_version(), 1)
        self.assertRegex(LIB.moecast_version().decode(), r"^\d+\.\d+\.\d+$")
        self.assertEqual(LIB.moecast_status_name(mc.NOT_FOUND), b"NOT_FOUND")

    def test_defaults(self):
        s = mc.JobSpec()
        LIB.moecast_job_spec_init(ctypes.byref(s))
        self.assertEqual((s.num_sources, s.forecasting, s.health), (1, 1, 1))
        self.assertTrue(math.isnan(s.aux_loss_coef))
        o = mc.EngineOptions()
        LIB.moecast_engine_options_init(ctypes.byref(o))
        self.assertEqual(o.max_jobs, 1024)
        self.assertEqual(o.source_timeout_s, 30.0)


class JobLifeTest(unittest.TestCase):

    def test_register_ingest_forecast_plan_health(self):
        rng = np.random.default_rng(7)
        with Engine(health_window_steps=10, dead_window_steps=10,
                    health_bootstrap_replicates=10) as engine:
            job = b"py-job"
            spec = spec_for(job)
            mc.check(LIB, LIB.moecast_register_job(engine, ctypes.byref(spec)))
            self.assertEqual(LIB.moecast_num_jobs(engine), 1)

            last = None
            for step in range(50):
                last = counts_for(step, rng, dead=(2, 0))
                logits = np.ascontiguousarray(
                    np.log(last + 1.0) - np.log(last + 1.0).mean())
                status, result = ingest(engine, job, step, last, logits)
                mc.check(LIB, status)
                self.assertEqual(result.outcome, mc.INGEST_COMMITTED)
                self.assertEqual(result.last_committed_step, step)

            info = mc.JobInfo()
            mc.check(LIB, LIB.moecast_get_job_info(engine, job,
                                                   ctypes.byref(info)))
            self.assertEqual(info.committed_steps, 50)
            self.assertEqual((info.first_step, info.last_step), (0, 49))

            # last_value at horizon 1 is the last step's proportions.
            mean = np.zeros(L * M)
            lower = np.zeros(L * M)
            upper = np.zeros(L * M)
            mc.check(LIB, LIB.moecast_forecast_into(
                engine, job, 1, b"last_value", 0.9,
                mc.ptr(mean, ctypes.c_double), mc.ptr(lower, ctypes.c_double),
                mc.ptr(upper, ctypes.c_double), mean.size))
            expected = (last / last.sum(axis=1, keepdims=True)).ravel()
            # The history ring keeps proportions as float (7 digits).
            np.testing.assert_allclose(mean, expected, rtol=1e-6, atol=1e-9)
            self.assertFalse(np.isnan(lower).any())
            self.assertTrue((lower <= mean + 1e-12).all())
            self.assertTrue((mean <= upper + 1e-12).all())

            # The handle API agrees with forecast_into.
            fh = ctypes.c_void_p()
            horizons = np.array([1, 10], dtype=np.int32)
            mc.check(LIB, LIB.moecast_forecast_create(
                engine, job, mc.ptr(horizons, ctypes.c_int32), 2,
                b"last_value", 0.9, ctypes.byref(fh)))
            try:
                nl, ne, nh = ctypes.c_int32(), ctypes.c_int32(), ctypes.c_int32()
                as_of = ctypes.c_int64()
                mc.check(LIB, LIB.moecast_forecast_shape(
                    fh, ctypes.byref(nl), ctypes.byref(ne), ctypes.byref(nh),
                    ctypes.byref(as_of), None))
                self.assertEqual((nl.value, ne.value, nh.value, as_of.value),
                                 (L, M, 2, 49))
                row = np.zeros(M)
                for layer in range(L):
                    mc.check(LIB, LIB.moecast_forecast_values(
                        fh, layer, 0, mc.ptr(row, ctypes.c_double), None, None,
                        M, None))
                    np.testing.assert_allclose(row, mean[layer * M:(layer + 1) * M])
                self.assertEqual(LIB.moecast_forecast_predictor(fh, 0, 1),
                                 b"last_value")
            finally:
                LIB.moecast_forecast_destroy(fh)

            states = np.full(L, -1, dtype=np.int32)
            drift = np.zeros(L)
            mc.check(LIB, LIB.moecast_get_state(
                engine, job, None, None, mc.ptr(states, ctypes.c_int32),
                mc.ptr(drift, ctypes.c_double), L))
            self.assertTrue(set(states.tolist()) <= {0, 1})

            # Placement: 4 GPUs x 5 slots; each expert at least once, and the
            # plan beats a round-robin current placement on the same loads.
            S, P = 20, 4
            current = np.array([[s % M for s in range(S)]] * L,
                               dtype=np.int32)
            req = mc.PlacementRequest()
            LIB.moecast_placement_request_init(ctypes.byref(req))
            req.num_slots, req.num_gpus, req.horizon = S, P, 1
            req.current_phy2log = mc.ptr(current, ctypes.c_int32)
            req.num_current_phy2log = current.size
            ph = ctypes.c_void_p()
            mc.check(LIB, LIB.moecast_recommend_placement(
                engine, job, ctypes.byref(req), ctypes.byref(ph)))
            try:
                summary = mc.PlacementSummary()
                mc.check(LIB, LIB.moecast_placement_get_summary(
                    ph, ctypes.byref(summary)))
                self.assertEqual((summary.num_layers, summary.num_slots),
                                 (L, S))
                self.assertEqual(summary.has_current, 1)
                self.assertEqual(summary.has_decision, 0)
                self.assertGreaterEqual(summary.balancedness,
                                        summary.current_balancedness)
                phy2log = np.zeros(L * S, dtype=np.int32)
                mc.check(LIB, LIB.moecast_placement_phy2log(
                    ph, mc.ptr(phy2log, ctypes.c_int32), phy2log.size))
                for layer in range(L):
                    self.assertEqual(
                        set(phy2log[layer * S:(layer + 1) * S].tolist()),
                        set(range(M)))
                gpu = np.zeros(L * P)
                mc.check(LIB, LIB.moecast_placement_gpu_loads(
                    ph, mc.ptr(gpu, ctypes.c_double), gpu.size))
                gpu = gpu.reshape(L, P)
                ratio = (gpu.mean(axis=1) / gpu.max(axis=1)).mean()
                self.assertAlmostEqual(ratio, summary.balancedness, places=9)
                transfers = (mc.Transfer * max(summary.num_transfers, 1))()
                mc.check(LIB, LIB.moecast_placement_transfers(
                    ph, transfers, summary.num_transfers))
                self.assertEqual(sum(1 for t in transfers[:summary.num_transfers]
                                     if 0 <= t.to_gpu < P),
                                 summary.num_transfers)
            finally:
                LIB.moecast_placement_destroy(ph)

            hs = mc.HealthSummary()
            layers = (mc.LayerHealth * L)()
            mc.check(LIB, LIB.moecast_health(engine, job, ctypes.byref(hs),
                                             layers, L))
            self.assertEqual(hs.num_layers, L)
            self.assertEqual([x.num_dead_experts for x in layers], [0, 0, 1])
            self.assertEqual(hs.total_dead_experts, 1)
            self.assertTrue(all(x.window_steps == 10 for x in layers))
            for x in layers:
                if x.has_gamma:
                    self.assertTrue(math.isfinite(x.gamma_f))
                else:
                    self.assertTrue(x.gamma_status)

            mc.check(LIB, LIB.moecast_delete_job(engine, job))
            self.assertEqual(LIB.moecast_num_jobs(engine), 0)

    def test_multi_source_pending_and_flush(self):
        rng = np.random.default_rng(1)
        with Engine() as engine:
            spec = spec_for(b"two", sources=2)
            mc.check(LIB, LIB.moecast_register_job(engine, ctypes.byref(spec)))
            status, result = ingest(engine, b"two", 0, counts_for(0, rng))
            mc.check(LIB, status)
            self.assertEqual(result.outcome, mc.INGEST_PENDING)
            self.assertEqual(result.num_committed, 0)
            status, result = ingest(engine, b"two", 0, counts_for(0, rng),
                                    source=1)
            mc.check(LIB, status)
            self.assertEqual(result.outcome, mc.INGEST_COMMITTED)
            self.assertEqual(result.last_committed_step, 0)
            status, _ = ingest(engine, b"two", 1, counts_for(1, rng))
            mc.check(LIB, status)
            n = ctypes.c_int64(-1)
            mc.check(LIB, LIB.moecast_flush_pending(engine, b"two",
                                                    ctypes.byref(n)))
            self.assertEqual(n.value, 1)
            info = mc.JobInfo()
            mc.check(LIB, LIB.moecast_get_job_info(engine, b"two",
                                                   ctypes.byref(info)))
            self.assertEqual((info.committed_steps, info.incomplete_steps),
                             (2, 1))


class ErrorTest(unittest.TestCase):

    def setUp(self):
        self.engine_ctx = Engine()
        self.engine = self.engine_ctx.__enter__()
        self.spec = spec_for(b"err")
        mc.check(LIB, LIB.moecast_register_job(self.engine,
                                               ctypes.byref(self.spec)))

    def tearDown(self):
        self.engine_ctx.__exit__(None, None, None)

    def assertStatus(self, status, code, needle):
        self.assertEqual(status, code, last_error())
        self.assertEqual(LIB.moecast_last_status(), code)
        self.assertIn(needle, last_error())

    def test_null_engine_and_job(self):
        counts = np.ones(L * M)
        self.assertStatus(ingest(None, b"err", 0, counts)[0],
                          mc.INVALID_ARGUMENT, "engine is NULL")
        self.assertStatus(ingest(self.engine, None, 0, counts)[0],
                          mc.INVALID_ARGUMENT, "job_id is NULL")
        self.assertStatus(LIB.moecast_register_job(self.engine, None),
                          mc.INVALID_ARGUMENT, "spec")
        self.assertEqual(LIB.moecast_num_jobs(None), -1)

    def test_wrong_sizes(self):
        status, _ = ingest(self.engine, b"err", 0, np.ones(L * M - 3))
        self.assertStatus(status, mc.INVALID_ARGUMENT, str(L * M - 3))
        status, _ = ingest(self.engine, b"err", 0, np.ones(L * M),
                           logits=np.zeros(M))
        self.assertStatus(status, mc.INVALID_ARGUMENT, str(M))
        # counts NULL with a size, and a NULL logits pointer with a size.
        st = LIB.moecast_ingest(self.engine, b"err", 0, 0, None, L * M, None,
                                0, None, None)
        self.assertStatus(st, mc.INVALID_ARGUMENT, "counts is NULL")
        ones = np.ones(L * M)
        st = LIB.moecast_ingest(self.engine, b"err", 0, 0,
                                mc.ptr(ones, ctypes.c_double), L * M, None, 4,
                                None, None)
        self.assertStatus(st, mc.INVALID_ARGUMENT,
                          "router_logits is NULL but num_router_logits is 4")
        mc.check(LIB, ingest(self.engine, b"err", 0, ones)[0])
        mean = np.zeros(L * M + 1)
        st = LIB.moecast_forecast_into(self.engine, b"err", 1, None, 0,
                                       mc.ptr(mean, ctypes.c_double), None,
                                       None, mean.size)
        self.assertStatus(st, mc.INVALID_ARGUMENT,
                          f"size is {L * M + 1}, expected {L * M}")
        self.assertTrue((mean == 0).all())  # untouched
        layers = (mc.LayerHealth * 1)()
        st = LIB.moecast_health(self.engine, b"err", None, layers, 1)
        # No window has completed yet: that is reported first.
        self.assertStatus(st, mc.FAILED_PRECONDITION, "")

    def test_unknown_job_and_duplicates(self):
        status, _ = ingest(self.engine, b"nope", 0, np.ones(L * M))
        self.assertStatus(status, mc.NOT_FOUND, "nope")
        self.assertStatus(LIB.moecast_delete_job(self.engine, b"nope"),
                          mc.NOT_FOUND, "nope")
        self.assertStatus(LIB.moecast_register_job(self.engine,
                                                   ctypes.byref(self.spec)),
                          mc.ALREADY_EXISTS, "err")
        with self.assertRaises(mc.MoecastError) as ctx:
            mc.check(LIB, LIB.moecast_delete_job(self.engine, b"nope"))
        self.assertEqual(ctx.exception.code, mc.NOT_FOUND)

    def test_struct_size_mismatch(self):
        spec = spec_for(b"other")
        spec.struct_size = ctypes.sizeof(spec) - 8
        self.assertStatus(LIB.moecast_register_job(self.engine,
                                                   ctypes.byref(spec)),
                          mc.INVALID_ARGUMENT, "struct_size")
        req = mc.PlacementRequest()  # not initialized: struct_size 0
        out = ctypes.c_void_p(1)
        self.assertStatus(LIB.moecast_recommend_placement(
            self.engine, b"err", ctypes.byref(req), ctypes.byref(out)),
            mc.INVALID_ARGUMENT, "moecast_placement_request.struct_size is 0")
        self.assertIsNone(out.value)

    def test_bad_values_change_nothing(self):
        counts = np.ones(L * M)
        counts[5] = np.nan
        self.assertStatus(ingest(self.engine, b"err", 0, counts)[0],
                          mc.INVALID_ARGUMENT, "")
        counts[5] = -1
        self.assertStatus(ingest(self.engine, b"err", 0, counts)[0],
                          mc.INVALID_ARGUMENT, "")
        info = mc.JobInfo()
        mc.check(LIB, LIB.moecast_get_job_info(self.engine, b"err",
                                               ctypes.byref(info)))
        self.assertEqual(info.committed_steps, 0)
        self.assertEqual(info.rejected_calls, 2)
        self.assertStatus(LIB.moecast_forecast_into(
            self.engine, b"err", 1, None, 0,
            mc.ptr(np.zeros(L * M), ctypes.c_double), None, None, L * M),
            mc.FAILED_PRECONDITION, "")


class ThreadTest(unittest.TestCase):

    def test_concurrent_ingest_and_thread_local_errors(self):
        with Engine() as engine:
            jobs = [f"t{i}".encode() for i in range(4)]
            specs = [spec_for(j) for j in jobs]
            for s in specs:
                mc.check(LIB, LIB.moecast_register_job(engine, ctypes.byref(s)))
            barrier = threading.Barrier(len(jobs) + 1)
            failures = []

            def producer(job, seed):
                rng = np.random.default_rng(seed)
                barrier.wait()
                for step in range(200):
                    status, _ = ingest(engine, job, step, counts_for(step, rng))
                    if status != mc.OK:
                        failures.append((job, step, last_error()))

            def bad_caller():
                barrier.wait()
                for _ in range(200):
                    st, _ = ingest(engine, b"missing", 0, np.ones(L * M))
                    # Other threads' successes never clear this thread's
                    # error, and their errors never appear here.
                    if st != mc.NOT_FOUND or "missing" not in last_error():
                        failures.append(("bad", st, last_error()))

            threads = [threading.Thread(target=producer, args=(j, i))
                       for i, j in enumerate(jobs)]
            threads.append(threading.Thread(target=bad_caller))
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertEqual(failures, [])
            for j in jobs:
                info = mc.JobInfo()
                mc.check(LIB, LIB.moecast_get_job_info(engine, j,
                                                       ctypes.byref(info)))
                self.assertEqual(info.committed_steps, 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
