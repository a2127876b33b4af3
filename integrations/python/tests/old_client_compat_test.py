"""A client built from moecast.v1 as first released keeps working.

The stubs come from tests/testdata/compat/proto_v1 (the proto of the first
release, unchanged), generated at build time; the server is today's
moecastd. Every RPC such a client makes is answered with the meaning it had:
answers cover every step committed before the call (analysis now runs behind
ingestion, and the server waits for it), and fields it does not know are
skipped by its parser.
"""

import sys
import unittest

import grpc
import numpy as np

from moecast_v1_stubs import moecast_pb2 as pb
from moecast_v1_stubs import moecast_pb2_grpc as pb_grpc
from moecastd_fixture import Moecastd, stationary_steps

L, M, K = 3, 16, 2


class OldClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The stubs really are the old ones: no field added since.
        if "analysis" in pb.ForecastResponse.DESCRIPTOR.fields_by_name:
            raise RuntimeError("these stubs were not generated from the v1 proto")
        cls.server = Moecastd()
        cls.server.start()
        cls.channel = grpc.insecure_channel(cls.server.target)
        cls.stub = pb_grpc.MoecastStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()

    def test_every_rpc_of_the_first_release(self):
        stub = self.stub
        spec = pb.JobSpec(job_id="old", num_layers=L, num_experts=M, top_k=K)
        stub.RegisterJob(pb.RegisterJobRequest(spec=spec))
        rng = np.random.default_rng(5)
        probs = rng.dirichlet(np.ones(M), size=L)
        steps = stationary_steps(rng, probs, 0, 250, assignments=512)
        req = pb.IngestBatchRequest(job_id="old")
        for step, counts in steps:
            req.steps.add(step=step, counts=np.asarray(counts, float).ravel().tolist(),
                          router_logits=np.log(probs + 1e-3).ravel().tolist())
        resp = stub.IngestBatch(req, timeout=30)
        self.assertEqual(resp.rejected, 0)
        self.assertEqual(len(resp.results), 250)

        info = stub.GetJobInfo(pb.GetJobInfoRequest(job_id="old"), timeout=30)
        self.assertEqual(info.committed_steps, 250)
        self.assertEqual(info.last_step, 249)

        # Right after ingesting, an answer is as of the last committed step.
        f = stub.Forecast(pb.ForecastRequest(job_id="old", horizons=[1, 10]), timeout=30)
        self.assertEqual(f.as_of_step, 249)
        self.assertEqual(len(f.layers), L)
        for layer in f.layers:
            for h in layer.horizons:
                self.assertAlmostEqual(sum(h.means), 1.0, places=9)

        s = stub.GetState(pb.GetStateRequest(job_id="old"), timeout=30)
        self.assertEqual(s.as_of_step, 249)
        self.assertEqual(len(s.layers), L)

        h = stub.GetHealth(pb.GetHealthRequest(job_id="old"), timeout=30)
        self.assertEqual(h.as_of_step, 249)
        self.assertEqual([w.window_end_step for w in h.layers], [199] * L)

        p = stub.RecommendPlacement(pb.RecommendPlacementRequest(
            job_id="old", num_slots=2 * M, num_gpus=4), timeout=30)
        self.assertEqual(p.as_of_step, 249)
        self.assertEqual(len(p.plan.phy2log), L * 2 * M)

        stub.FlushPending(pb.FlushPendingRequest(job_id="old"), timeout=30)
        jobs = stub.ListJobs(pb.ListJobsRequest(), timeout=30)
        self.assertIn("old", list(jobs.job_ids))
        stub.DeleteJob(pb.DeleteJobRequest(job_id="old"), timeout=30)
        with self.assertRaises(grpc.RpcError) as e:
            stub.GetJobInfo(pb.GetJobInfoRequest(job_id="old"), timeout=30)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]])
