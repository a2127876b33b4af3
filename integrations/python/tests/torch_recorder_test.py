"""moecast.torch_recorder: counts and router statistics from forward
hooks on a small synthetic MoE model against reference computations, the
trace it writes (read back with moecast.read_trace and `moecast
replay`; byte-identical to bench/traces/train_moe.py's own trace), and
streaming into a real moecastd.

Skipped (with the reason) when torch is not importable; the moecastd and
moecast replay cases are skipped when $MOECASTD / $MOECAST are unset.
"""

import csv
import gzip
import os
import subprocess
import sys
import unittest

import numpy as np

try:
    import torch
    import torch.nn as nn
    TORCH_ERROR = None
except ImportError as error:  # CI does not install torch by default
    torch = None
    TORCH_ERROR = str(error)

from moecast import Client, read_trace, trace_files
from moecastd_fixture import Moecastd, scratch_dir

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench"))

M, K = 8, 2


def skip_without_torch(cls):
    if torch is None:
        return unittest.skip("torch is not importable (%s): the recorder tests need PyTorch "
                             "(Debian: apt-get install python3-torch)" % TORCH_ERROR)(cls)
    return cls


if torch is not None:
    class Gate(nn.Module):
        """Returns (weights, indices) or (weights, indices, logits)."""

        def __init__(self, d, with_logits):
            super().__init__()
            self.proj = nn.Linear(d, M, bias=False)
            self.with_logits = with_logits

        def forward(self, x):
            logits = self.proj(x)
            w, i = logits.softmax(-1).topk(K, dim=-1)
            return (w, i, logits) if self.with_logits else (w, i)

    class Layer(nn.Module):
        def __init__(self, d, kind, ref):
            super().__init__()
            self.kind, self.ref = kind, ref
            self.router = nn.Linear(d, M, bias=False) if kind == "linear" else Gate(d, kind == "gate+logits")
            self.experts = nn.ModuleList([nn.Linear(d, d) for _ in range(M)])

        def forward(self, x):
            h = x.reshape(-1, x.shape[-1])
            if self.kind == "linear":
                logits = self.router(h)
                w, idx = logits.softmax(-1).topk(K, dim=-1)
            else:
                out = self.router(h)
                w, idx = out[0], out[1]
                logits = out[2] if len(out) > 2 else None
            self.ref.append((idx.detach().clone(),
                             None if logits is None else logits.detach().double().clone()))
            y = torch.zeros_like(h)
            for e in range(M):
                rows, slot = (idx == e).nonzero(as_tuple=True)
                if rows.numel():
                    y.index_add_(0, rows, self.experts[e](h[rows]) * w[rows, slot].unsqueeze(1))
            return (h + y).reshape(x.shape)

    class Model(nn.Module):
        def __init__(self, kinds, d=16):
            super().__init__()
            self.refs = [[] for _ in kinds]
            self.layers = nn.ModuleList([Layer(d, k, self.refs[i]) for i, k in enumerate(kinds)])
            self.inp = nn.Linear(4, d)

        def forward(self, x):
            h = self.inp(x)
            for layer in self.layers:
                h = layer(h)
            return h.pow(2).mean()


def reference(refs_of_step):
    """[L][(idx, logits)] of one step -> counts [L, M], z, p, s [L, M], tokens."""
    counts, zps, tokens = [], [], 0
    for passes in refs_of_step:
        idx = torch.cat([i.reshape(-1, K) for i, _ in passes])
        counts.append(torch.bincount(idx.reshape(-1), minlength=M).double().numpy())
        tokens = idx.shape[0]
        if passes[0][1] is not None:
            z = torch.cat([lg for _, lg in passes])
            p = z.softmax(-1)
            s = (z - z.mean(-1, keepdim=True)) / (z.std(-1, unbiased=False, keepdim=True) + 1e-6)
            zps.append(np.concatenate([z.mean(0).numpy(), p.mean(0).numpy(), s.mean(0).numpy()]))
    return np.stack(counts), (np.stack(zps) if zps else None), tokens


def read_router_rows(path):
    with gzip.open(path, "rt") as f:
        r = csv.reader(f)
        header = next(r)
        rows = [[float(v) for v in row] for row in r]
    return header, np.array(rows)


def run_steps(model, rec, steps, passes, rng_seed=0):
    """Training-like loop; returns the reference per step."""
    g = torch.Generator().manual_seed(rng_seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = []
    for t in range(steps):
        for r in model.refs:
            r.clear()
        for p in range(passes):
            x = torch.randn(3 + t + p, 5, 4, generator=g)   # a different token count each pass
            model(x).backward()
        opt.step()
        opt.zero_grad()
        if rec is not None:
            rec.step()
        out.append(reference([list(r) for r in model.refs]))
    return out


@skip_without_torch
class RecorderTest(unittest.TestCase):
    KINDS = ["linear", "gate+logits", "linear", "gate+logits"]

    def make(self, kinds, **kw):
        from moecast.torch_recorder import TorchRecorder, logits_topk, weights_indices
        torch.manual_seed(1)
        model = Model(kinds)
        adapters = [logits_topk(K) if k == "linear" else
                    weights_indices(indices_index=1, logits_index=2 if k == "gate+logits" else None)
                    for k in kinds]
        rec = TorchRecorder([l.router for l in model.layers], num_experts=M, top_k=K,
                            adapter=adapters, **kw)
        return model, rec

    def test_counts_and_router_means_match_reference(self):
        d = scratch_dir()
        prefix = os.path.join(d, "synthetic")
        model, rec = self.make(self.KINDS, trace=prefix, trace_fmt="%.17g")
        refs = run_steps(model, rec, steps=6, passes=2)
        rec.close()
        self.assertEqual(rec.steps_recorded, 6)
        counts_path, router_path, meta = trace_files(prefix)
        self.assertTrue(counts_path.endswith(".counts.csv.gz"))
        self.assertTrue(router_path.endswith(".router.csv.gz"))
        self.assertEqual((meta["layers"], meta["experts"], meta["top_k"], meta["steps"]),
                         (len(self.KINDS), M, K, 6))
        steps = list(read_trace(counts_path, router_path))
        self.assertEqual([s.step for s in steps], list(range(6)))
        header, rows = read_router_rows(router_path)
        self.assertEqual(header, ["step", "layer"] + ["%s%d" % (b, e) for b in "zps" for e in range(M)])
        for t, (s, (counts, zps, tokens)) in enumerate(zip(steps, refs)):
            np.testing.assert_array_equal(s.counts, counts)           # exact
            self.assertEqual(s.tokens, tokens)
            np.testing.assert_array_equal(s.counts.sum(axis=1), np.full(len(self.KINDS), tokens * K))
            got = rows[t * len(self.KINDS):(t + 1) * len(self.KINDS), 2:]
            np.testing.assert_allclose(got, zps, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(s.router_logits, zps[:, :M], rtol=1e-5, atol=1e-6)
            # p sums to 1, s to 0 per layer.
            np.testing.assert_allclose(got[:, M:2 * M].sum(1), 1.0, atol=1e-5)
            np.testing.assert_allclose(got[:, 2 * M:].sum(1), 0.0, atol=1e-4)

    def test_weights_indices_without_logits_writes_counts_only(self):
        d = scratch_dir()
        prefix = os.path.join(d, "nologits")
        model, rec = self.make(["gate", "gate", "linear"], trace=prefix, router_stats="auto")
        refs = run_steps(model, rec, steps=3, passes=1)
        rec.close()
        counts_path, router_path, _ = trace_files(prefix)
        self.assertIsNone(router_path)
        for s, (counts, _, tokens) in zip(read_trace(counts_path), refs):
            np.testing.assert_array_equal(s.counts, counts)
            self.assertIsNone(s.router_logits)

    def test_router_stats_required_but_missing_is_an_error(self):
        from moecast.torch_recorder import RecorderError
        model, rec = self.make(["gate", "linear"], trace=os.path.join(scratch_dir(), "x"),
                               router_stats=True)
        with self.assertRaisesRegex(RecorderError, r"layers \[0\] gave no logits"):
            run_steps(model, rec, steps=1, passes=1)
        rec.close()

    def test_skips_empty_steps_and_context_manager(self):
        d = scratch_dir()
        model, rec = self.make(["linear", "linear"], trace=os.path.join(d, "ctx"))
        self.assertIsNone(rec.step())                 # nothing ran
        self.assertEqual(rec.skipped_steps, 1)
        x = torch.randn(7, 4)
        with rec.recording():
            model(x)
        with self.assertRaises(ZeroDivisionError):
            with rec.recording():
                model(x)
                1 / 0                                  # discarded, not a step
        with rec.recording():
            model(x[:3])
        rec.close()
        steps = list(read_trace(trace_files(os.path.join(d, "ctx"))[0]))
        self.assertEqual([s.step for s in steps], [0, 1])
        self.assertEqual([s.tokens for s in steps], [7, 3])
        with self.assertRaises(Exception):
            rec.step()

    def test_bad_adapter_output_raises_in_forward(self):
        from moecast.torch_recorder import TorchRecorder, logits_topk
        model = Model(["linear"])
        rec = TorchRecorder([model.layers[0].router], num_experts=M, top_k=3,
                            adapter=logits_topk(2), trace=os.path.join(scratch_dir(), "bad"))
        with self.assertRaisesRegex(ValueError, "2 experts per token, top_k is 3"):
            model(torch.randn(4, 4))
        rec.close()

    def test_replay_reads_the_trace(self):
        moecast = os.environ.get("MOECAST")
        if not moecast:
            self.skipTest("MOECAST (the moecast binary) is not set")
        d = scratch_dir()
        prefix = os.path.join(d, "replay")
        model, rec = self.make(self.KINDS, trace=prefix)
        run_steps(model, rec, steps=5, passes=1)
        rec.close()
        counts_path, router_path, _ = trace_files(prefix)
        p = subprocess.run([moecast, "replay", "--counts", counts_path, "--router", router_path,
                            "--top_k", str(K), "--progress", "off"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertRegex(p.stdout, r"steps\s+5 \(steps 0\.\.4")
        self.assertRegex(p.stdout, r"layers\s+4 \(ids 0,1,2,3\)")
        self.assertRegex(p.stdout, r"experts\s+%d per layer, top_k %d" % (M, K))
        self.assertRegex(p.stdout, r"router\s+\S+ \(z,p,s\)")


@skip_without_torch
class TrainMoeIdenticalTest(unittest.TestCase):
    """The recorder on train_moe.py's model writes the same bytes as train_moe.py."""

    def test_trace_is_byte_identical(self):
        try:
            import recorder_overhead as ro
            tm = ro.load_train_moe()
        except FileNotFoundError as error:
            self.skipTest(str(error))
        from moecast.torch_recorder import TorchRecorder, logits_topk
        d = scratch_dir()
        argv = ["--steps", "6", "--text-glob", "/usr/lib/python3*/[a-c]*.py"]
        tm.main(["--name", "ref", "--out-dir", d, "--log-every", "1000"] + argv)
        tr = ro.Trainer(tm, argv)
        d2 = scratch_dir()       # same name (it is in the gzip header), another directory
        rec = TorchRecorder(tr.routers(), num_experts=tr.args.experts, top_k=tr.args.top_k,
                            adapter=logits_topk(tr.args.top_k), trace=os.path.join(d2, "ref"))
        for t in range(6):
            tr.step(t)
            rec.step()
        rec.close()
        for kind in ("counts", "router"):
            with open(os.path.join(d, "ref.%s.csv.gz" % kind), "rb") as f:
                want = f.read()
            with open(os.path.join(d2, "ref.%s.csv.gz" % kind), "rb") as f:
                got = f.read()
            if got != want:  # say where they differ
                a = gzip.decompress(want).decode().splitlines()
                b = gzip.decompress(got).decode().splitlines()
                diff = [(i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y][:3]
                self.fail("%s file differs from train_moe.py's (%d vs %d lines): %s"
                          % (kind, len(b), len(a), diff))


@skip_without_torch
class StreamingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.environ.get("MOECASTD"):
            raise unittest.SkipTest("MOECASTD is not set")
        cls.server = Moecastd().start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_every_step_is_committed(self):
        from moecast.torch_recorder import TorchRecorder, logits_topk, weights_indices
        torch.manual_seed(2)
        kinds = RecorderTest.KINDS
        model = Model(kinds)
        adapters = [logits_topk(K) if k == "linear" else weights_indices(1, 2) for k in kinds]
        d = scratch_dir()
        rec = TorchRecorder([l.router for l in model.layers], num_experts=M, top_k=K,
                            adapter=adapters, target=self.server.target, job_id="torch-rec",
                            register_kwargs={"aux_loss_coef": 0.01}, batch_size=8, queue_size=4,
                            trace=os.path.join(d, "both"))
        n = 40
        refs = run_steps(model, rec, steps=n, passes=1)
        rec.close()
        self.assertEqual((rec.sent_steps, rec.committed_steps, rec.dropped_steps), (n, n, 0))
        with Client(self.server.target) as c:
            info = c.job_info("torch-rec")
            self.assertEqual((info.spec.num_layers, info.spec.num_experts, info.spec.top_k),
                             (len(kinds), M, K))
            self.assertEqual((info.committed_steps, info.first_step, info.last_step, info.gaps,
                              info.rejected_calls, info.pending_steps), (n, 0, n - 1, 0, 0, 0))
            self.assertEqual(info.tokens, sum(tokens for _, _, tokens in refs))
            # The trace written alongside matches the reference too.
            steps = list(read_trace(trace_files(os.path.join(d, "both"))[0]))
            self.assertEqual(len(steps), n)
            for s, (counts, _, _) in zip(steps, refs):
                np.testing.assert_array_equal(s.counts, counts)
            # Forecasts exist for every layer after the stream.
            f = c.forecast("torch-rec", horizons=[1])
            self.assertEqual(f.means(1).shape, (len(kinds), M))

    def test_errors_surface_on_step_or_close(self):
        from moecast.torch_recorder import RecorderError, TorchRecorder, logits_topk
        model = Model(["linear", "linear"])
        with Client(self.server.target) as c:
            c.register_job("torch-rec-mismatch", num_layers=2, num_experts=M + 1, top_k=K)
        rec = TorchRecorder([l.router for l in model.layers], num_experts=M, top_k=K,
                            adapter=logits_topk(K), target=self.server.target,
                            job_id="torch-rec-mismatch", flush_interval_s=0.0)
        model(torch.randn(5, 4))
        rec.step()
        with self.assertRaises(RecorderError) as ctx:
            for _ in range(50):
                model(torch.randn(5, 4))
                rec.step()
                rec.flush(timeout=10)
            rec.close()
        self.assertIn("INVALID_ARGUMENT", repr(ctx.exception.__cause__) + str(ctx.exception))
        with self.assertRaises(RecorderError):
            rec.close()


class NoTorchImportTest(unittest.TestCase):
    """The package and the recorder module import without torch (CI's case)."""

    def test_imports_without_torch(self):
        code = "\n".join([
            "import sys",
            "sys.modules['torch'] = None            # import torch raises ImportError",
            "import moecast, moecast.torch_recorder as tr, moecast.serving",
            "from moecast.serving import vllm, sglang",
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]",
            "try:",
            "    tr.TorchRecorder([], 8, 2, trace='x')",
            "except ImportError as e:",
            "    print('ImportError:', e)",
        ])
        p = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("ImportError: moecast.torch_recorder needs PyTorch", p.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
