"""moecast without a server: the generated stubs, input validation and
the trace reader. Validation happens before any call, so the client here
points at a port nothing listens on."""

import gzip
import os
import socket
import unittest

import numpy as np

import moecast
from moecast import Client, MoecastError, Step, ValidationError
from moecast import _convert as cv
from moecast._stubs import pb, pb_grpc

from moecastd_fixture import scratch_dir


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StubsTest(unittest.TestCase):
    def test_stubs_are_generated_from_the_proto(self):
        self.assertEqual(pb.DESCRIPTOR.name, "moecast/v1/moecast.proto")
        self.assertEqual(pb.DESCRIPTOR.package, "moecast.v1")
        self.assertEqual(pb.Step.__module__, "moecast._proto.moecast_pb2")
        self.assertTrue(hasattr(pb_grpc, "MoecastStub"))
        # proto3 `optional` survived generation (the reason for the system protoc).
        s = pb.Step()
        self.assertFalse(s.HasField("tokens"))
        s.tokens = 0.0
        self.assertTrue(s.HasField("tokens"))

    def test_client_wraps_every_rpc(self):
        wrapper = {
            "RegisterJob": "register_job", "ListJobs": "list_jobs", "DeleteJob": "delete_job",
            "GetJobInfo": "job_info", "FlushPending": "flush_pending",
            "IngestBatch": "ingest_batch", "Ingest": "ingest_stream", "Forecast": "forecast",
            "GetState": "get_state", "GetHealth": "get_health",
            "RecommendPlacement": "recommend_placement", "Watch": "watch",
        }
        methods = [m.name for m in pb.DESCRIPTOR.services_by_name["Moecast"].methods]
        self.assertEqual(sorted(methods), sorted(wrapper),
                         "the proto's RPCs changed; wrap the new ones in Client")
        for rpc, name in wrapper.items():
            self.assertTrue(callable(getattr(Client, name, None)), "Client.%s (for %s)" % (name, rpc))


class ValidationTest(unittest.TestCase):
    def setUp(self):
        self.client = Client("127.0.0.1:%d" % unused_port(), timeout=2)

    def tearDown(self):
        self.client.close()

    def assertInvalid(self, fn, *fragments):
        with self.assertRaises(ValidationError) as ctx:
            fn()
        e = ctx.exception
        self.assertEqual(e.code, "INVALID_ARGUMENT")
        self.assertTrue(e.local)
        self.assertIsInstance(e, ValueError)
        self.assertIsInstance(e, MoecastError)
        for f in fragments:
            self.assertIn(f, str(e))
        return e

    def batch(self, steps, **kw):
        # validate_job=False: no GetJobInfo (nothing listens); all checks below are local.
        return lambda: self.client.ingest_batch("job", steps, validate_job=False, **kw)

    def test_step_shapes(self):
        self.assertInvalid(self.batch([(0, np.ones(8))]), "step 0", "2-D", "(8,)")
        self.assertInvalid(self.batch([(0, np.ones((2, 2, 2)))]), "shape (2, 2, 2)")
        self.assertInvalid(self.batch([(0, [[1, 2], [3]])]), "not a rectangular array")
        self.assertInvalid(self.batch([(0, np.ones((0, 4)))]), "empty")
        self.assertInvalid(self.batch([(0, np.ones((2, 4))), (1, np.ones((2, 5)))]),
                           "step 1 (steps[1])", "(2, 5)", "first step", "(2, 4)")
        self.assertInvalid(self.batch([Step(0, np.ones((2, 4)), router_logits=np.ones((4, 2)))]),
                           "router_logits has shape (4, 2)", "counts has shape (2, 4)")

    def test_step_values(self):
        c = np.ones((2, 4))
        c[1, 3] = -2
        self.assertInvalid(self.batch([(5, c)]), "step 5", "counts[1, 3] = -2", "negative")
        c[1, 3] = np.nan
        self.assertInvalid(self.batch([(5, c)]), "counts[1, 3]", "finite")
        c[1, 3] = np.inf
        self.assertInvalid(self.batch([(5, c)]), "counts[1, 3] is inf")
        logits = np.zeros((2, 4))
        logits[0, 1] = np.nan
        self.assertInvalid(self.batch([Step(0, np.ones((2, 4)), router_logits=logits)]),
                           "router_logits[0, 1]", "finite")
        self.assertInvalid(self.batch([Step(0, np.ones((2, 4)), tokens=-1)]), "tokens", ">= 0")
        self.assertInvalid(self.batch([(0, [["a", "b"], ["c", "d"]])]), "not a rectangular array")

    def test_step_numbers(self):
        self.assertInvalid(self.batch([(-1, np.ones((2, 4)))]), "steps[0].step must be >= 0, got -1")
        self.assertInvalid(self.batch([(1.5, np.ones((2, 4)))]), "steps[0].step must be an integer")
        self.assertInvalid(self.batch([(True, np.ones((2, 4)))]), "must be an integer")
        self.assertInvalid(self.batch([(4, np.ones((2, 4))), (3, np.ones((2, 4)))]),
                           "out of order", "step 3 (steps[1])", "step 4 (steps[0])")
        self.assertInvalid(self.batch([Step(0, np.ones((2, 4)), source=-1)]), "source must be >= 0")
        # Equal step numbers are allowed (a re-send is the server's "duplicate").
        protos = self.client._steps_to_protos("job", [(4, np.ones((2, 4))), (4, np.ones((2, 4)))],
                                              validate_job=False)
        self.assertEqual([p.step for p in protos], [4, 4])
        # Different sources are ordered independently.
        protos = self.client._steps_to_protos(
            "job", [Step(4, np.ones((2, 4)), source=0), Step(2, np.ones((2, 4)), source=1)],
            validate_job=False)
        self.assertEqual([(p.step, p.source) for p in protos], [(4, 0), (2, 1)])

    def test_step_forms(self):
        counts = np.arange(8, dtype=float).reshape(2, 4)
        forms = [(3, counts), {"step": 3, "counts": counts.tolist()}, Step(3, counts),
                 (np.int64(3), counts.astype(np.int32))]
        for form in forms:
            p, shape = cv.step_to_proto(form, 0)
            self.assertEqual(p.step, 3)
            self.assertEqual(shape, (2, 4))
            self.assertEqual(list(p.counts), list(range(8)), "layer-major flattening of %r" % (form,))
            self.assertFalse(p.HasField("tokens"))
        self.assertInvalid(self.batch([{"step": 0, "count": counts}]), "unknown keys ['count']")
        self.assertInvalid(self.batch([{"counts": counts}]), "needs 'step' and 'counts'")
        self.assertInvalid(self.batch(["x"]), "steps[0]", "got str")
        self.assertInvalid(lambda: self.client.ingest_batch("job", 5, validate_job=False),
                           "steps must be a list")

    def test_array_form(self):
        counts = np.arange(3 * 2 * 4, dtype=float).reshape(3, 2, 4)
        logits = -counts
        steps = cv.steps_from_arrays(counts, 10, logits, [100, 101, 102])
        self.assertEqual([s.step for s in steps], [10, 11, 12])
        p, _ = cv.step_to_proto(steps[2], 2)
        self.assertEqual(list(p.counts), list(range(16, 24)))
        self.assertEqual(list(p.router_logits), [-v for v in range(16, 24)])
        self.assertEqual(p.tokens, 102)
        self.assertInvalid(self.batch(counts), "first_step is required")
        self.assertInvalid(self.batch(counts, first_step=0, router_logits=logits[:2]),
                           "router_logits has shape (2, 2, 4)")
        self.assertInvalid(self.batch(counts, first_step=0, tokens=[1, 2]),
                           "one value per step (3)")
        self.assertInvalid(self.batch(np.ones((2, 4)), first_step=0), "3-D array", "(2, 4)")

    def test_tokens_against_spec(self):
        spec = moecast.JobSpec("job", num_layers=2, num_experts=4, top_k=2)
        ok = Step(0, np.full((2, 4), 5.0), tokens=10)   # 20 assignments = 10 tokens x 2
        cv.step_to_proto(ok, 0, spec)
        e = self.assertInvalid(lambda: cv.step_to_proto(Step(0, np.full((2, 4), 5.0), tokens=9), 0, spec),
                               "layer 0 has 20 assignments", "9 x 2 = 18")
        self.assertFalse(hasattr(e, "spec_mismatch"))
        e = self.assertInvalid(lambda: cv.step_to_proto((0, np.ones((3, 4))), 0, spec),
                               "counts has shape (3, 4)", "job 'job' has 2 layers x 4 experts")
        self.assertTrue(e.spec_mismatch)
        self.assertInvalid(lambda: cv.step_to_proto(Step(0, np.ones((2, 4)), source=1), 0, spec),
                           "source 1 is out of range", "1 source(s)")

    def test_register_job_arguments(self):
        r = self.client.register_job
        self.assertInvalid(lambda: r("", 2, 4, 2), "job_id must not be empty")
        self.assertInvalid(lambda: r(7, 2, 4, 2), "job_id must be a str")
        self.assertInvalid(lambda: r("j", 0, 4, 2), "num_layers must be >= 1, got 0")
        self.assertInvalid(lambda: r("j", 2, 1, 1), "num_experts must be >= 2, got 1")
        self.assertInvalid(lambda: r("j", 2, 4, 5), "top_k (5) must be <= num_experts (4)")
        self.assertInvalid(lambda: r("j", 2, 4, 2, step_unit="epoch"), "step_unit must be one of")
        self.assertInvalid(lambda: r("j", 2, 4, 2, router="topk"), "router must be one of")
        self.assertInvalid(lambda: r("j", 2, 4, 2, aux_loss=0.1), "unknown keyword argument(s) ['aux_loss']")
        self.assertInvalid(lambda: r("j", 2, 4, 2, router_temperature=0), "router_temperature must be > 0")
        self.assertInvalid(lambda: r("j", 2, 4, 2, entropy_weight=-1), "entropy_weight must be >= 0")
        self.assertInvalid(lambda: r("j", 2, 4, 2, horizons=[10, 0]), "horizons[1] must be >= 1")
        self.assertInvalid(lambda: r("j", 2, 4, 2, predictors="ema"), "predictors must be a list")

    def test_query_arguments(self):
        c = self.client
        self.assertInvalid(lambda: c.forecast("j", horizons=[0]), "horizons[0] must be >= 1, got 0")
        self.assertInvalid(lambda: c.forecast("j", interval_level=1.0), "interval_level must be < 1")
        self.assertInvalid(lambda: c.forecast("j", interval_level=0), "interval_level must be > 0")
        self.assertInvalid(lambda: c.forecast("j", path_steps=-1), "path_steps must be >= 0")
        self.assertInvalid(lambda: c.forecast("j", layers=[-1]), "layers[0] must be >= 0")
        self.assertInvalid(lambda: c.recommend_placement("j", 0, 4), "num_slots must be >= 1")
        self.assertInvalid(lambda: c.recommend_placement("j", 8, 4, current_phy2log=[[0, 1, -2, 3, 4, 5, 6, 7]]),
                           "current_phy2log[0, 2] = -2 is below -1")
        self.assertInvalid(lambda: c.recommend_placement("j", 8, 4, current_phy2log=np.zeros((2, 6), int)),
                           "6 columns but num_slots is 8")
        self.assertInvalid(lambda: c.recommend_placement("j", 8, 4, current_phy2log=[0.5] * 8),
                           "must hold integers")
        self.assertInvalid(lambda: c.recommend_placement("j", 8, 4, migration={"speed": 1}),
                           "migration:", "speed")
        self.assertInvalid(lambda: c.recommend_placement(
            "j", 8, 4, migration=moecast.MigrationModel(0, 1, 1, 1, 1)),
            "migration.intra_node_bandwidth must be > 0")
        self.assertInvalid(lambda: c.watch("j", after_seq=-1), "after_seq must be >= 0")
        self.assertInvalid(lambda: c.watch("j", rebalance={"num_gpus": 4}), "rebalance needs num_slots")
        self.assertInvalid(lambda: c.ingest_stream("j", [], batch_size=0), "batch_size must be >= 1")

    def test_client_arguments(self):
        self.assertInvalid(lambda: Client(""), "target")
        self.assertInvalid(lambda: Client("h:1", token="a\nb"), "token must not contain line breaks")
        self.assertInvalid(lambda: Client("h:1", client_cert=b"-----BEGIN CERTIFICATE-----"),
                           "client_cert and client_key go together")
        self.assertInvalid(lambda: Client("h:1", root_ca="/nonexistent/ca.pem"),
                           "root_ca: cannot read '/nonexistent/ca.pem'")
        self.assertInvalid(lambda: Client("h:1", root_ca=b"not pem"), "does not look like PEM")
        self.assertInvalid(lambda: Client("h:1", timeout=0), "timeout must be > 0")

    def test_ingest_stream_validation_error_is_raised_after_sending_nothing_bad(self):
        # Nothing listens: the first (bad) step fails before any message is needed.
        def steps():
            yield (0, -np.ones((2, 4)))
        e = self.assertInvalid(lambda: self.client.ingest_stream("j", steps(), validate_job=False),
                               "counts[0, 0] = -1 is negative")
        self.assertEqual(e.code, "INVALID_ARGUMENT")

    def test_unreachable_server_is_unavailable(self):
        with self.assertRaises(MoecastError) as ctx:
            self.client.list_jobs()
        self.assertIn(ctx.exception.code, ("UNAVAILABLE", "DEADLINE_EXCEEDED"))
        self.assertFalse(ctx.exception.local)
        self.assertEqual(ctx.exception.method, "ListJobs")
        self.assertIn("ListJobs: ", str(ctx.exception))


class TraceReaderTest(unittest.TestCase):
    def setUp(self):
        self.dir = scratch_dir()

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "wt") as f:
            f.write(text)
        return path

    def test_reads_counts_and_router(self):
        counts = self.write("t.counts.csv.gz",
                            "step,layer,tokens,c0,c1,c2\n"
                            "0,0,3,1,2,3\n0,1,3,3,2,1\n1,0,3,0,0,6\n1,1,3,6,0,0\n")
        router = self.write("t.router.csv.gz",
                            "step,layer,z0,z1,z2,p0,p1,p2\n"
                            "0,0,0.1,0.2,0.3,0.3,0.3,0.4\n0,1,1,2,3,0.1,0.2,0.7\n"
                            "1,0,-1,0,1,0.2,0.3,0.5\n1,1,4,5,6,0.1,0.1,0.8\n")
        steps = list(moecast.read_trace(counts, router))
        self.assertEqual([s.step for s in steps], [0, 1])
        np.testing.assert_array_equal(steps[0].counts, [[1, 2, 3], [3, 2, 1]])
        np.testing.assert_array_equal(steps[1].router_logits, [[-1, 0, 1], [4, 5, 6]])
        self.assertEqual(steps[1].tokens, 3.0)
        self.assertEqual([s.step for s in moecast.read_trace(counts, max_steps=1)], [0])
        self.assertEqual([s.step for s in moecast.read_trace(counts, first_step=1)], [1])
        c, r, meta = moecast.trace_files(counts)
        self.assertEqual((c, r, meta), (counts, router, {}))

    def test_format_errors_name_file_and_line(self):
        bad_layer = self.write("b.counts.csv", "step,layer,c0,c1\n0,0,1,1\n0,2,1,1\n")
        with self.assertRaisesRegex(moecast.TraceFormatError,
                                    r"b.counts.csv:3: step 0 lists layer 2 where layer 1"):
            list(moecast.read_trace(bad_layer))
        bad_value = self.write("v.counts.csv", "step,layer,c0,c1\n0,0,1,x\n")
        with self.assertRaisesRegex(moecast.TraceFormatError, r"v.counts.csv:2: bad row"):
            list(moecast.read_trace(bad_value))
        bad_header = self.write("h.counts.csv", "layer,step,c0\n")
        with self.assertRaisesRegex(moecast.TraceFormatError, "header must start with step,layer"):
            list(moecast.read_trace(bad_header))


if __name__ == "__main__":
    unittest.main(verbosity=2)
