"""Tests of the installed `moecast-convert` (moecast.converters): every input
format is generated here, converted, and read back both as CSV and with
moecast's own trace reader (`moecast replay`); placements go through a real
`moecast plan`. Bad inputs are checked
for the file / record / field their message names.

  integrations/python/tests/run_test.sh converters_test.py - bazel-bin/moecast

Torch-file cases run only when torch is importable (they print a skip reason
otherwise); everything else needs numpy only.
"""

import csv
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# The console script of the installed package (the venv's bin/ is on PATH).
CONVERT = shutil.which("moecast-convert")
if CONVERT is None:
    raise SystemExit("FAILED: moecast-convert is not on PATH (install the moecast wheel)")
MOECAST = os.environ.get("MOECAST", "")

try:
    import torch
    HAVE_TORCH = True
except ImportError:
    torch = None
    HAVE_TORCH = False
NO_TORCH = "torch is not installed for %s: torch-file cases skipped" % sys.executable


def sample_counts(rng, steps, layers, experts, top_k, tokens):
    """[steps, layers, experts] counts of `tokens[t]` tokens each picking top_k
    distinct experts (so every row sums to tokens[t] * top_k)."""
    out = np.zeros((steps, layers, experts), dtype=np.int64)
    for t in range(steps):
        for l in range(layers):
            logits = rng.normal(size=experts) * 1.5
            g = logits + rng.gumbel(size=(tokens[t], experts))
            picks = np.argsort(-g, axis=1)[:, :top_k]
            out[t, l] = np.bincount(picks.ravel(), minlength=experts)
    return out


def read_trace_csv(path):
    """(header, rows as lists of str) of a plain or gzip trace file."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def trace_array(path):
    """counts [T, L, M], steps, layer ids of a counts trace (rows grouped by step)."""
    header, rows = read_trace_csv(path)
    ci = [i for i, h in enumerate(header) if re.fullmatch(r"c\d+", h)]
    steps, layers, data = [], [], {}
    for r in rows:
        s, l = int(r[0]), int(r[1])
        if s not in data:
            steps.append(s)
            data[s] = {}
        if l not in layers:
            layers.append(l)
        data[s][l] = [int(r[i]) for i in ci]
    arr = np.array([[data[s][l] for l in layers] for s in steps], dtype=np.int64)
    return arr, steps, layers


class ConverterTestBase(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="moecast_convert_test_")
        self.rng = np.random.default_rng(7)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def convert(self, *args, env=None):
        p = subprocess.run([CONVERT] + [str(a) for a in args],
                           capture_output=True, text=True, env=env)
        return p.returncode, p.stdout, p.stderr

    def convert_ok(self, *args):
        rc, out, err = self.convert(*args)
        self.assertEqual(rc, 0, "convert %s failed:\n%s%s" % (args, out, err))
        return out, err

    def convert_fails(self, pattern, *args):
        rc, out, err = self.convert(*args)
        self.assertEqual(rc, 1, "expected a failure for %s, got rc %d:\n%s%s" %
                         (args, rc, out, err))
        self.assertRegex(err, pattern)
        return err

    def replay(self, counts, top_k, router=None):
        """moecast's own reader: the replay summary as a dict."""
        if not MOECAST:
            self.skipTest("MOECAST (the moecast binary) is not set")
        cmd = [MOECAST, "replay", "--counts", counts, "--top_k", str(top_k), "--progress", "off"]
        if router:
            cmd += ["--router", router]
        p = subprocess.run(cmd, capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, "moecast replay failed:\n%s%s" % (p.stdout, p.stderr))
        out = p.stdout
        m = re.search(r"steps\s+([\d,]+) \(steps (\d+)\.\.(\d+);", out)
        lay = re.search(r"layers\s+(\d+) \(ids ([^)]*)\)", out)
        ex = re.search(r"experts\s+(\d+) per layer", out)
        tok = re.search(r"tokens\s+([\d,]+) ", out)
        rt = re.search(r"router\s+(.*)", out)
        self.assertTrue(m and lay and ex and tok and rt, out)
        return dict(steps=int(m.group(1).replace(",", "")), first=int(m.group(2)),
                    last=int(m.group(3)), layers=int(lay.group(1)), ids=lay.group(2),
                    experts=int(ex.group(1)), tokens=int(tok.group(1).replace(",", "")),
                    router=rt.group(1).strip(), text=out)


# ---------------------------------------------------------------------------
# SGLang


class SGLangTest(ConverterTestBase):
    def stat_counts(self):
        # 6 buffer rows (the last 2 unfilled), 5 model layers (0 and 1 dense), 8 experts.
        self.tokens = np.array([40, 33, 50, 21])
        lc = np.zeros((6, 5, 8), dtype=np.int32)
        lc[:4, 2:] = sample_counts(self.rng, 4, 3, 8, 2, self.tokens)
        return lc

    def check_stat_trace(self, out_path, lc):
        arr, steps, layers = trace_array(out_path)
        self.assertEqual(steps, [0, 1, 2, 3])
        self.assertEqual(layers, [2, 3, 4])
        np.testing.assert_array_equal(arr, lc[:4, 2:])
        r = self.replay(out_path, 2)
        self.assertEqual((r["steps"], r["first"], r["last"]), (4, 0, 3))
        self.assertEqual((r["layers"], r["ids"], r["experts"]), (3, "2,3,4", 8))
        self.assertEqual(r["tokens"], int(self.tokens.sum()))

    def test_stat_npz(self):
        lc = self.stat_counts()
        np.savez(self.path("dump.npz"), logical_count=lc)
        out, err = self.convert_ok("from-sglang", self.path("dump.npz"),
                                   "--counts", self.path("s.counts.csv.gz"))
        self.assertIn("4 steps (0..3), 3 layers (ids 2..4), 8 experts", out)
        self.assertIn("dropped 2 layer(s)", err)
        self.assertIn("dropped 2 all-zero step(s) of 6", err)
        self.check_stat_trace(self.path("s.counts.csv.gz"), lc)

    @unittest.skipUnless(HAVE_TORCH, NO_TORCH)
    def test_stat_torch_file(self):
        lc = self.stat_counts()
        # What _StatAccumulator.dump saves.
        torch.save({"rank": 0, "logical_count": torch.from_numpy(lc),
                    "average_utilization_rate_over_window": None},
                   self.path("expert_distribution_recorder_1.pt"))
        self.convert_ok("from-sglang", self.path("expert_distribution_recorder_1.pt"),
                        "--counts", self.path("s.counts.csv"))
        self.check_stat_trace(self.path("s.counts.csv"), lc)

    def test_keep_flags_and_relabel(self):
        lc = self.stat_counts()
        np.savez(self.path("dump.npz"), logical_count=lc)
        self.convert_ok("from-sglang", self.path("dump.npz"), "--counts", self.path("k.csv"),
                        "--keep-zero-layers", "--keep-empty-steps", "--step-offset", "100",
                        "--layer-ids", "10..14")
        arr, steps, layers = trace_array(self.path("k.csv"))
        self.assertEqual(steps, list(range(100, 106)))
        self.assertEqual(layers, [10, 11, 12, 13, 14])
        np.testing.assert_array_equal(arr, lc)

    def test_full_buffer_warns_about_rotation(self):
        lc = self.stat_counts()[:4]
        np.savez(self.path("dump.npz"), logical_count=lc)
        _, err = self.convert_ok("from-sglang", self.path("dump.npz"), "--counts",
                                 self.path("x.csv"))
        self.assertIn("rotated by an unknown amount", err)

    @unittest.skipUnless(HAVE_TORCH, NO_TORCH)
    def test_per_pass_two_ranks(self):
        # 2 layers, 6 logical experts on 8 physical slots (experts 0 and 3 twice).
        p2l = np.array([[0, 1, 2, 3, 4, 5, 0, 3], [5, 4, 3, 2, 1, 0, 1, 1]])
        want = {}
        for rank in range(2):
            records = []
            for fp in (3, 4, 7):
                c = self.rng.integers(0, 20, size=(2, 8)).astype(np.int32)
                records.append({"forward_pass_id": fp, "rank": rank, "gatherer_key": "primary",
                                "global_physical_count": torch.from_numpy(c)})
                logical = np.zeros((2, 6), dtype=np.int64)
                for l in range(2):
                    for s in range(8):
                        logical[l, p2l[l, s]] += c[l, s]
                want[fp] = want.get(fp, 0) + logical
            torch.save({"records": records,
                        "last_physical_to_logical_map": torch.from_numpy(p2l)},
                       self.path("rec_%d.pt" % rank))
        self.convert_ok("from-sglang", self.path("rec_0.pt"), self.path("rec_1.pt"),
                        "--counts", self.path("pp.csv"))
        arr, steps, layers = trace_array(self.path("pp.csv"))
        self.assertEqual(steps, [3, 4, 7])
        self.assertEqual(layers, [0, 1])
        np.testing.assert_array_equal(arr, np.stack([want[s] for s in (3, 4, 7)]))
        r = self.replay(self.path("pp.csv"), 2)
        self.assertEqual((r["steps"], r["first"], r["last"], r["experts"]), (3, 3, 7, 6))

    @unittest.skipUnless(HAVE_TORCH, NO_TORCH)
    def test_per_token_rejected(self):
        torch.save({"records": [{"forward_pass_id": 0, "rank": 0,
                                 "topk_ids_of_layer": torch.zeros(2, 3, 8)}],
                    "last_physical_to_logical_map": torch.zeros(2, 4, dtype=torch.long)},
                   self.path("tok.pt"))
        self.convert_fails(r"tok\.pt: records\[0\]: a per_token record",
                           "from-sglang", self.path("tok.pt"), "--counts", self.path("o.csv"))

    def test_bad_inputs(self):
        lc = self.stat_counts()
        lc[1, 2, 3] = -5
        np.savez(self.path("neg.npz"), logical_count=lc)
        self.convert_fails(r"neg\.npz: logical_count\[1, 2, 3\] = -5 is negative",
                           "from-sglang", self.path("neg.npz"), "--counts", self.path("o.csv"))
        self.assertFalse(os.path.exists(self.path("o.csv")))
        f = self.stat_counts().astype(np.float32)
        f[2, 3, 1] = np.nan
        np.savez(self.path("nan.npz"), logical_count=f)
        self.convert_fails(r"nan\.npz: logical_count\[2, 3, 1\] = nan is not finite",
                           "from-sglang", self.path("nan.npz"), "--counts", self.path("o.csv"))
        f[2, 3, 1] = 2.5
        np.savez(self.path("frac.npz"), logical_count=f)
        self.convert_fails(r"logical_count\[2, 3, 1\] = 2.5 is not an integer count",
                           "from-sglang", self.path("frac.npz"), "--counts", self.path("o.csv"))
        np.savez(self.path("4d.npz"), logical_count=np.zeros((2, 3, 4, 5)))
        self.convert_fails(r"4d\.npz: logical_count has shape \(2, 3, 4, 5\), expected 3 "
                           r"dimensions \[steps, layers, logical experts\]",
                           "from-sglang", self.path("4d.npz"), "--counts", self.path("o.csv"))
        np.savez(self.path("other.npz"), counts=np.zeros((2, 3, 4)))
        self.convert_fails(r"other\.npz: missing key 'records' \(an SGLang expert distribution "
                           r"dump: 'logical_count' \(stat mode\) or 'records'.*keys present: "
                           r"counts", "from-sglang", self.path("other.npz"), "--counts",
                           self.path("o.csv"))
        np.savez(self.path("zero.npz"), logical_count=np.zeros((2, 3, 4)))
        self.convert_fails(r"every count is zero", "from-sglang", self.path("zero.npz"),
                           "--counts", self.path("o.csv"))
        self.convert_fails(r"nope\.npz: no such file", "from-sglang", self.path("nope.npz"),
                           "--counts", self.path("o.csv"))
        np.savez(self.path("ok.npz"), logical_count=self.stat_counts())
        self.convert_fails(r"--layer-ids '0\.\.2' names 3 layers; the input has 5",
                           "from-sglang", self.path("ok.npz"), "--counts", self.path("o.csv"),
                           "--layer-ids", "0..2")

    def test_torch_file_without_torch(self):
        # A torch file with torch unimportable: a clear error, not a traceback.
        fake = self.path("fake_site")
        os.makedirs(os.path.join(fake, "torch"))
        with open(os.path.join(fake, "torch", "__init__.py"), "w") as f:
            f.write("raise ImportError('no torch here')\n")
        with open(self.path("dump.pt"), "wb") as f:
            f.write(b"PK\x03\x04 not really")
        env = dict(os.environ, PYTHONPATH=fake)
        rc, out, err = self.convert("from-sglang", self.path("dump.pt"), "--counts",
                                    self.path("o.csv"), env=env)
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(err, r"dump\.pt: reading a torch file needs PyTorch, which is not "
                              r"installed .*or use the \.npz form")
        self.assertNotIn("Traceback", err)


# ---------------------------------------------------------------------------
# vLLM


class VLLMTest(ConverterTestBase):
    # 3 MoE layers, 6 logical experts, 8 physical slots (2 redundant).
    P2L = np.array([[0, 1, 2, 3, 4, 5, 0, 1],
                    [0, 1, 2, 3, 4, 5, 5, 2],
                    [3, 1, 2, 0, 4, 5, 3, 3]])

    def window(self, W=5, filled=5):
        w = np.zeros((W, 3, 8), dtype=np.int32)
        w[:filled] = self.rng.integers(0, 30, size=(filled, 3, 8))
        return w

    @staticmethod
    def fold(w, p2l, M=6):
        out = np.zeros(w.shape[:2] + (M,), dtype=np.int64)
        for t in range(w.shape[0]):
            for l in range(w.shape[1]):
                for s in range(w.shape[2]):
                    if p2l[l, s] >= 0:
                        out[t, l, p2l[l, s]] += w[t, l, s]
        return out

    def test_window_npz_rotated(self):
        w = self.window()
        np.savez(self.path("eplb.npz"), expert_load_window=w, physical_to_logical_map=self.P2L,
                 expert_load_window_step=np.int64(2), layer_ids=np.array([3, 5, 7]))
        out, err = self.convert_ok("from-vllm", self.path("eplb.npz"), "--counts",
                                   self.path("v.counts.csv.gz"))
        self.assertIn("5 steps (0..4), 3 layers (ids 3,5,7), 6 experts", out)
        self.assertIn("expert_load_window_step = 2", err)
        arr, steps, layers = trace_array(self.path("v.counts.csv.gz"))
        self.assertEqual(layers, [3, 5, 7])
        # Oldest first: rows 2, 3, 4, 0, 1 of the ring.
        np.testing.assert_array_equal(arr, self.fold(w[[2, 3, 4, 0, 1]], self.P2L))
        r = self.replay(self.path("v.counts.csv.gz"), 2)
        self.assertEqual((r["steps"], r["layers"], r["ids"], r["experts"]), (5, 3, "3,5,7", 6))

    def test_unfilled_rows_dropped_and_ranks_summed(self):
        w0, w1 = self.window(W=6, filled=4), self.window(W=6, filled=4)
        for i, w in enumerate((w0, w1)):
            np.savez(self.path("rank%d.npz" % i), expert_load_window=w,
                     physical_to_logical_map=self.P2L, num_logical_experts=np.int64(6))
        _, err = self.convert_ok("from-vllm", self.path("rank0.npz"), self.path("rank1.npz"),
                                 "--counts", self.path("v.csv"))
        self.assertIn("dropped 2 all-zero step(s) of 6", err)
        arr, steps, _ = trace_array(self.path("v.csv"))
        self.assertEqual(steps, [0, 1, 2, 3])
        np.testing.assert_array_equal(arr, self.fold((w0 + w1)[:4], self.P2L))
        r = self.replay(self.path("v.csv"), 2)
        self.assertEqual(r["steps"], 4)

    @unittest.skipUnless(HAVE_TORCH, NO_TORCH)
    def test_window_torch_file(self):
        w = self.window()
        p2l = self.P2L.copy()
        p2l[2, 7] = -1  # an empty slot (elastic EP) with no load
        w[:, 2, 7] = 0
        torch.save({"expert_load_window": torch.from_numpy(w),
                    "physical_to_logical_map": torch.from_numpy(p2l),
                    "expert_load_window_step": 0}, self.path("eplb.pt"))
        self.convert_ok("from-vllm", self.path("eplb.pt"), "--counts", self.path("v.csv"))
        arr, _, _ = trace_array(self.path("v.csv"))
        np.testing.assert_array_equal(arr, self.fold(w, p2l))

    def test_bad_inputs(self):
        w = self.window()
        np.savez(self.path("shape.npz"), expert_load_window=w,
                 physical_to_logical_map=self.P2L[:, :7])
        self.convert_fails(r"shape\.npz: physical_to_logical_map has shape \(3, 7\), expected "
                           r"\(3, 8\) \[moe layers, physical experts\]",
                           "from-vllm", self.path("shape.npz"), "--counts", self.path("o.csv"))
        p2l = self.P2L.copy()
        p2l[1, 4] = -1
        np.savez(self.path("empty.npz"), expert_load_window=w, physical_to_logical_map=p2l)
        self.convert_fails(r"empty\.npz: expert_load_window has counts in layer 1 slot 4, which "
                           r"physical_to_logical_map\[1, 4\] = -1 marks as empty",
                           "from-vllm", self.path("empty.npz"), "--counts", self.path("o.csv"))
        np.savez(self.path("step.npz"), expert_load_window=w, physical_to_logical_map=self.P2L,
                 expert_load_window_step=np.int64(5))
        self.convert_fails(r"expert_load_window_step = 5 is outside \[0, 5\)",
                           "from-vllm", self.path("step.npz"), "--counts", self.path("o.csv"))
        np.savez(self.path("nomap.npz"), expert_load_window=w)
        self.convert_fails(r"nomap\.npz: missing key 'physical_to_logical_map'",
                           "from-vllm", self.path("nomap.npz"), "--counts", self.path("o.csv"))
        np.savez(self.path("m.npz"), expert_load_window=w, physical_to_logical_map=self.P2L,
                 num_logical_experts=np.int64(4))
        self.convert_fails(r"m\.npz: physical_to_logical_map names logical expert 5 but "
                           r"--num-experts is 4", "from-vllm", self.path("m.npz"),
                           "--counts", self.path("o.csv"))
        np.savez(self.path("a.npz"), expert_load_window=w, physical_to_logical_map=self.P2L)
        p2 = self.P2L.copy()
        p2[0, 6] = 2
        np.savez(self.path("b.npz"), expert_load_window=w, physical_to_logical_map=p2)
        self.convert_fails(r"b\.npz: physical_to_logical_map differs from the one in .*a\.npz",
                           "from-vllm", self.path("a.npz"), self.path("b.npz"), "--counts",
                           self.path("o.csv"))


# ---------------------------------------------------------------------------
# Megatron-LM


class MegatronTest(ConverterTestBase):
    def write_jsonl(self, name, records):
        with open(self.path(name), "w") as f:
            for r in records:
                f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
        return self.path(name)

    def test_jsonl_two_pipeline_stages_with_router(self):
        T, M, K = 4, 8, 2
        tokens = np.array([30, 31, 32, 33])
        counts = sample_counts(self.rng, T, 4, M, K, tokens)  # layers 1..4 (1-based)
        z = self.rng.normal(size=(T, 4, M))
        p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        stage = {0: [], 1: []}
        for t in range(T):
            for l in range(4):
                rec = {"iteration": 100 + t, "layer_number": l + 1,
                       "tokens_per_expert": [float(x) for x in counts[t, l]],  # float32 buffer
                       "tokens": int(tokens[t]), "router_z": z[t, l].tolist(),
                       "router_p": p[t, l].tolist(), "rank": l // 2}
                stage[l // 2].append(rec)
            stage[1][-2:] = stage[1][-2:][::-1]  # layer order within a step is free
        a = self.write_jsonl("pp0.jsonl", stage[0])
        b = self.write_jsonl("pp1.jsonl", stage[1])
        out, _ = self.convert_ok("from-megatron", a, b, "--counts", self.path("m.counts.csv.gz"),
                                 "--router", self.path("m.router.csv.gz"))
        self.assertIn("4 steps (100..103), 4 layers (ids 1..4), 8 experts", out)
        arr, steps, layers = trace_array(self.path("m.counts.csv.gz"))
        self.assertEqual(steps, [100, 101, 102, 103])
        self.assertEqual(layers, [1, 2, 3, 4])
        np.testing.assert_array_equal(arr, counts)
        header, rows = read_trace_csv(self.path("m.router.csv.gz"))
        self.assertEqual(header[:3], ["step", "layer", "z0"])
        self.assertEqual(header[2 + M], "p0")
        self.assertEqual(len(header), 2 + 2 * M)
        zz = np.array([[float(v) for v in r[2:2 + M]] for r in rows]).reshape(T, 4, M)
        np.testing.assert_allclose(zz, z, rtol=1e-8)
        header, _ = read_trace_csv(self.path("m.counts.csv.gz"))
        self.assertEqual(header[:3], ["step", "layer", "tokens"])
        r = self.replay(self.path("m.counts.csv.gz"), K, router=self.path("m.router.csv.gz"))
        self.assertEqual((r["steps"], r["first"], r["last"]), (4, 100, 103))
        self.assertEqual((r["layers"], r["ids"], r["experts"]), (4, "1,2,3,4", 8))
        self.assertEqual(r["tokens"], int(tokens.sum()))
        self.assertIn("(z,p)", r["router"])

    def test_jsonl_per_step_records(self):
        counts = sample_counts(self.rng, 3, 2, 4, 1, [10, 12, 14])
        recs = [{"step": s, "layers": [5, 9], "tokens_per_expert": counts[s].tolist()}
                for s in range(3)]
        path = self.write_jsonl("steps.jsonl", recs)
        self.convert_ok("from-megatron", path, "--counts", self.path("s.csv"),
                        "--step-offset", "1")
        arr, steps, layers = trace_array(self.path("s.csv"))
        self.assertEqual((steps, layers), ([1, 2, 3], [5, 9]))
        np.testing.assert_array_equal(arr, counts)
        r = self.replay(self.path("s.csv"), 1)
        self.assertEqual((r["steps"], r["tokens"]), (3, 36))

    def test_npz(self):
        counts = sample_counts(self.rng, 5, 3, 6, 2, [20] * 5)
        np.savez(self.path("tpe.npz"), tokens_per_expert=counts.astype(np.float32),
                 iterations=np.array([1, 2, 4, 8, 16]), layer_numbers=np.array([2, 4, 6]),
                 tokens=np.full((5, 3), 20))
        self.convert_ok("from-megatron", self.path("tpe.npz"), "--counts", self.path("n.csv"))
        arr, steps, layers = trace_array(self.path("n.csv"))
        self.assertEqual((steps, layers), ([1, 2, 4, 8, 16], [2, 4, 6]))
        np.testing.assert_array_equal(arr, counts)
        r = self.replay(self.path("n.csv"), 2)
        self.assertEqual((r["steps"], r["first"], r["last"], r["tokens"]), (5, 1, 16, 100))
        self.assertIn("3 gap(s), 11 step numbers missing", r["text"])

    @unittest.skipUnless(HAVE_TORCH, NO_TORCH)
    def test_torch_file(self):
        counts = sample_counts(self.rng, 2, 2, 4, 2, [9, 9])
        torch.save({"tokens_per_expert": torch.from_numpy(counts).float()}, self.path("t.pt"))
        self.convert_ok("from-megatron", self.path("t.pt"), "--counts", self.path("t.csv"))
        arr, _, _ = trace_array(self.path("t.csv"))
        np.testing.assert_array_equal(arr, counts)

    def test_bad_jsonl(self):
        ok = {"step": 1, "layer": 0, "tokens_per_expert": [1, 2, 3]}

        def case(pattern, lines):
            path = self.write_jsonl("bad.jsonl", lines)
            self.convert_fails(pattern, "from-megatron", path, "--counts", self.path("o.csv"))
            self.assertFalse(os.path.exists(self.path("o.csv")))

        case(r"bad\.jsonl:2: tokens_per_expert\[2\] = -1 is negative",
             [ok, dict(ok, step=2, tokens_per_expert=[1, 2, -1])])
        case(r"bad\.jsonl:1: tokens_per_expert\[1\] = 1\.5 is not an integer count",
             [dict(ok, tokens_per_expert=[1, 1.5, 2])])
        case(r"bad\.jsonl:1: tokens_per_expert\[0\] = nan is not finite",
             ['{"step": 1, "layer": 0, "tokens_per_expert": [NaN, 1, 2]}'])
        case(r"bad\.jsonl:2: missing key 'tokens_per_expert'",
             [ok, {"step": 2, "layer": 0, "counts": [1, 2, 3]}])
        case(r"bad\.jsonl:1: missing key 'step' or 'iteration'",
             [{"layer": 0, "tokens_per_expert": [1]}])
        case(r"bad\.jsonl:1: has both 'step' and 'iteration'", [dict(ok, iteration=1)])
        case(r"bad\.jsonl:3: step 1 comes after step 2: records must be in non-decreasing",
             [ok, dict(ok, step=2), dict(ok, step=1, layer=1)])
        case(r"bad\.jsonl:2: step 1 lists layer 0 again \(first at .*bad\.jsonl:1\)",
             [ok, ok])
        case(r"bad\.jsonl:3: step 2 has layers \[1\]; the first step \(1\) has \[0,1\]; "
             r"missing \[0\]", [ok, dict(ok, layer=1), dict(ok, step=2, layer=1)])
        case(r"bad\.jsonl:2: layer 0 has 2 experts in tokens_per_expert, the first step has 3",
             [ok, dict(ok, step=2, tokens_per_expert=[1, 2])])
        case(r"bad\.jsonl:2: step 1 layer 1 has tokens 5, layer 0 has 4: tokens is per step",
             [dict(ok, tokens=4), dict(ok, layer=1, tokens=5)])
        case(r"bad\.jsonl:2: not valid JSON", [ok, "{not json"])
        case(r"bad\.jsonl:1: 'tokens_per_expert'\[1\] has 2 values, 'tokens_per_expert'\[0\] "
             r"has 3", [{"step": 0, "tokens_per_expert": [[1, 2, 3], [1, 2]]}])
        case(r"bad\.jsonl:1: 'layer' = -2 must be >= 0", [dict(ok, layer=-2)])

    def test_bad_npz(self):
        c = np.ones((3, 2, 4))
        np.savez(self.path("a.npz"), tokens_per_expert=c, steps=np.array([0, 2, 2]))
        self.convert_fails(r"a\.npz: steps\[2\] = 2 does not increase \(steps\[1\] = 2\)",
                           "from-megatron", self.path("a.npz"), "--counts", self.path("o.csv"))
        np.savez(self.path("b.npz"), tokens_per_expert=c, tokens=np.array([[4, 4], [4, 5],
                                                                           [4, 4]]))
        self.convert_fails(r"b\.npz: tokens\[1, 1\] = 5 differs from tokens\[1, 0\] = 4",
                           "from-megatron", self.path("b.npz"), "--counts", self.path("o.csv"))
        np.savez(self.path("c.npz"), tokens_per_expert=c, router_z=np.ones((3, 2, 5)))
        self.convert_fails(r"c\.npz: router_z has shape \(3, 2, 5\), expected \(3, 2, 4\)",
                           "from-megatron", self.path("c.npz"), "--counts", self.path("o.csv"))
        np.savez(self.path("d.npz"), tokens_per_expert=c)
        self.convert_fails(r"--router .*: the input has no router statistics",
                           "from-megatron", self.path("d.npz"), "--counts", self.path("o.csv"),
                           "--router", self.path("o.router.csv"))


# ---------------------------------------------------------------------------
# Per-token routing logs: from-routing (continuous batching) and splice-routing


def reference_batching(lengths, order, batch, admit):
    """The serving README's simulation, step by step: admit from the queue
    front (at most `admit` per step, at most `batch` active), every active
    request decodes one token, finished requests leave. Returns the admission
    step of each request (by id) and the active count per step."""
    queue, active, start, tokens, step = list(order), {}, {}, [], 0
    while queue or active:
        a = 0
        while queue and len(active) < batch and a < admit:
            r = queue.pop(0)
            active[r], start[r], a = lengths[r], step, a + 1
        tokens.append(len(active))
        for r in list(active):
            active[r] -= 1
            if active[r] == 0:
                del active[r]
        step += 1
    return start, tokens


def reference_trace(ids, req, order, batch, admit, M):
    """counts [S, L, M] and tokens [S] of the simulation, token by token."""
    lengths = {r: int((req == r).sum()) for r in order}
    start, tokens = reference_batching(lengths, order, batch, admit)
    counts = np.zeros((len(tokens), ids.shape[1], M), dtype=np.int64)
    seen = {}
    for t in range(len(req)):
        r = int(req[t])
        if r not in start:
            continue
        s = start[r] + seen.get(r, 0)
        seen[r] = seen.get(r, 0) + 1
        for l in range(ids.shape[1]):
            for e in ids[t, l]:
                counts[s, l, e] += 1
    return counts, np.array(tokens), start


def trace_tokens(path):
    header, rows = read_trace_csv(path)
    ti = header.index("tokens")
    out = {}
    for r in rows:
        out.setdefault(int(r[0]), int(r[ti]))
    return [out[s] for s in sorted(out)]


class RoutingTest(ConverterTestBase):
    L, K, M = 3, 2, 8
    # request id -> (dataset, tokens)
    REQS = {0: ("alpha_dev", 5), 1: ("beta_x", 3), 2: ("alpha_test", 7), 3: ("beta_y", 2),
            4: ("alpha_dev", 4), 5: ("gamma", 6), 6: ("beta_x", 1)}

    def make_log(self, interleave=False):
        """Per-token rows: ids [T, L, K] (distinct experts), request [T],
        position [T]; rows of a request in decode order."""
        rows = [(r, i) for r, (_, n) in self.REQS.items() for i in range(n)]
        if interleave:  # requests interleaved, each still in decode order
            keys = self.rng.random(len(rows))
            rows = sorted(rows, key=lambda x: (x[1] + keys[rows.index(x)] * 0.5, x[0]))
        T = len(rows)
        ids = np.stack([np.stack([self.rng.permutation(self.M)[:self.K] for _ in range(self.L)])
                        for _ in range(T)])
        req = np.array([r for r, _ in rows])
        pos = np.array([10 + i for _, i in rows])
        return ids, req, pos

    def sidecar(self, name, key="generation", ids=None):
        doc = [{key: r, "dataset": ds, "category": "c", "tokens": n}
               for r, (ds, n) in self.REQS.items() if ids is None or r in ids]
        with open(self.path(name), "w") as f:
            json.dump(doc, f)
        return self.path(name)

    def phase_order(self, prefixes, seed, shuffle=True, req=None):
        """Phases in order, each in file order (first appearance in the log)
        shuffled with one numpy.random.default_rng(seed)."""
        base = list(self.REQS) if req is None else list(dict.fromkeys(req.tolist()))
        rng = np.random.default_rng(seed)
        order = []
        for p in prefixes:
            best = lambda ds: max((q for q in prefixes if ds.startswith(q)), key=len, default=None)
            g = np.array([r for r in base if best(self.REQS[r][0]) == p])
            if shuffle:
                rng.shuffle(g)
            order += g.tolist()
        return order

    def check_trace(self, path, ids, req, order, batch, admit, layers=None, M=None):
        M = M or self.M
        want, want_tok, start = reference_trace(ids, req, order, batch, admit, M)
        arr, steps, lay = trace_array(path)
        self.assertEqual(steps, list(range(len(want_tok))))
        self.assertEqual(lay, layers or list(range(self.L)))
        np.testing.assert_array_equal(arr, want)
        self.assertEqual(trace_tokens(path), want_tok.tolist())
        r = self.replay(path, ids.shape[2])
        self.assertEqual((r["steps"], r["layers"], r["experts"]), (len(want_tok), self.L, M))
        self.assertEqual(r["tokens"], int(want_tok.sum()))
        self.assertEqual(r["tokens"], sum(n for r_, (_, n) in self.REQS.items() if r_ in order))
        return start

    def test_dev_npz_phases(self):
        ids, req, pos = self.make_log()
        np.savez(self.path("dev.tokens.npz"), expert_ids=ids.astype(np.uint8), generation=req,
                 token_position=pos, router_probs=np.zeros(ids.shape, np.float16))
        self.sidecar("dev.generations.json")
        prefixes = ["beta", "alpha", "gamma"]
        out, err = self.convert_ok("from-routing", self.path("dev.tokens.npz"), "--counts",
                                   self.path("d.counts.csv.gz"), "--batch", "3", "--admit", "2",
                                   "--phase-prefixes", ",".join(prefixes), "--seed", "5",
                                   "--phases", self.path("d.phases.json"))
        self.assertIn("dataset names from", err)
        self.assertIn("7 requests, 28 tokens, batch 3, 2 admissions per step", out)
        order = self.phase_order(prefixes, 5)
        start = self.check_trace(self.path("d.counts.csv.gz"), ids, req, order, 3, 2)
        with open(self.path("d.phases.json")) as f:
            doc = json.load(f)
        phases = [(p, [r for r in order if self.REQS[r][0].startswith(p)]) for p in prefixes]
        self.assertEqual(doc["phases"], [{"step": min(start[r] for r in g), "dataset_prefix": p,
                                          "requests": len(g)} for p, g in phases])
        # halfway: first step at which the phase holds >= half of the active requests
        # (the later phase on a 1:1 tie), by brute force.
        _, tokens = reference_batching({r: self.REQS[r][1] for r in order}, order, 3, 2)
        holder = []
        for s in range(len(tokens)):
            act = [r for r in order if start[r] <= s < start[r] + self.REQS[r][1]]
            hit = [i for i, (_, g) in enumerate(phases)
                   if 2 * sum(r in g for r in act) >= len(act)]
            holder.append(hit[-1] if hit else None)
        want = [{"step": holder.index(i), "dataset_prefix": p}
                for i, (p, _) in enumerate(phases) if i in holder]
        self.assertEqual(doc["halfway"], want)
        self.assertEqual(doc["settings"]["seed"], 5)
        # Same input, same bytes (gzip mtime 0, seeded shuffle).
        self.convert_ok("from-routing", self.path("dev.tokens.npz"), "--counts",
                        self.path("d2.counts.csv.gz"), "--batch", "3", "--admit", "2",
                        "--phase-prefixes", ",".join(prefixes), "--seed", "5")
        with open(self.path("d.counts.csv.gz"), "rb") as a, \
                open(self.path("d2.counts.csv.gz"), "rb") as b:
            self.assertEqual(a.read(), b.read())
        # No shuffle: file order within the phases; --drop-unmatched leaves gamma out.
        self.convert_ok("from-routing", self.path("dev.tokens.npz"), "--counts",
                        self.path("n.csv"), "--batch", "2", "--admit", "1",
                        "--phase-prefixes", "alpha,beta", "--no-shuffle", "--drop-unmatched")
        self.check_trace(self.path("n.csv"), ids, req, [0, 2, 4, 1, 3, 6], 2, 1)

    def test_dev_npz_file_order_top_k_and_experts(self):
        ids, req, pos = self.make_log()
        np.savez(self.path("g.npz"), expert_ids=ids, generation=req, token_position=pos)
        # No sidecar: file order needs no dataset names. First slot only, M = 10.
        out, err = self.convert_ok("from-routing", self.path("g.npz"), "--counts",
                                   self.path("f.csv"), "--batch", "4", "--admit", "4",
                                   "--top-k", "1", "--num-experts", "10",
                                   "--layer-ids", "3..5", "--step-offset", "7")
        self.assertIn("kept the first 1 of 2 slots", err)
        want, want_tok, _ = reference_trace(ids[:, :, :1], req, list(self.REQS), 4, 4, 10)
        arr, steps, lay = trace_array(self.path("f.csv"))
        self.assertEqual((steps[0], lay), (7, [3, 4, 5]))
        np.testing.assert_array_equal(arr, want)
        r = self.replay(self.path("f.csv"), 1)
        self.assertEqual((r["first"], r["experts"], r["tokens"]), (7, 10, 28))

    def test_hf_npz_interleaved(self):
        ids, req, pos = self.make_log(interleave=True)
        rid = req * 10 + 100  # request ids need not be 0..R-1
        np.savez(self.path("hf.npz"), topk_ids=ids.astype(np.int64), request=rid, position=pos,
                 layers=np.array([1, 3, 5]))
        meta = [{"request": int(r) * 10 + 100, "dataset": ds, "tokens": n}
                for r, (ds, n) in self.REQS.items()]
        with open(self.path("hf.requests.json"), "w") as f:
            json.dump(meta, f)
        self.convert_ok("from-routing", self.path("hf.npz"), "--requests",
                        self.path("hf.requests.json"), "--counts", self.path("h.csv"),
                        "--batch", "3", "--admit", "1", "--phase-prefixes", "alpha,beta,gamma",
                        "--seed", "2")
        order = self.phase_order(["alpha", "beta", "gamma"], 2, req=req)
        self.check_trace(self.path("h.csv"), ids, req, order, 3, 1, layers=[1, 3, 5])
        # File order = order of first appearance in the log.
        first = list(dict.fromkeys(req.tolist()))
        self.convert_ok("from-routing", self.path("hf.npz"), "--counts", self.path("h2.csv"),
                        "--batch", "2", "--admit", "2")
        self.check_trace(self.path("h2.csv"), ids, req, first, 2, 2, layers=[1, 3, 5])

    def test_hf_router_logits(self):
        ids, req, _ = self.make_log()
        logits = self.rng.normal(size=ids.shape[:2] + (self.M,))
        for t in range(ids.shape[0]):  # the chosen experts get the largest logits
            for l in range(self.L):
                logits[t, l, ids[t, l]] = 10.0 - np.arange(self.K)
        np.savez(self.path("lg.npz"), router_logits=logits.astype(np.float32), request=req)
        self.convert_fails(r"lg\.npz: router_logits needs --top-k K", "from-routing",
                           self.path("lg.npz"), "--counts", self.path("o.csv"))
        self.convert_ok("from-routing", self.path("lg.npz"), "--top-k", str(self.K),
                        "--counts", self.path("lg.csv"), "--batch", "3", "--admit", "2")
        self.check_trace(self.path("lg.csv"), ids, req, list(self.REQS), 3, 2)

    def write_jsonl(self, name, lines):
        with open(self.path(name), "w") as f:
            for x in lines:
                f.write((x if isinstance(x, str) else json.dumps(x)) + "\n")
        return self.path(name)

    def test_vllm_jsonl(self):
        ids, req, pos = self.make_log(interleave=True)
        names = {r: "req-%d" % r for r in self.REQS}
        lines = [{"request": names[int(r)], "layer_topk": ids[t].tolist(),
                  "dataset": self.REQS[int(r)][0], "position": int(pos[t])}
                 for t, r in enumerate(req)]
        lines.insert(3, "")  # blank lines are skipped
        path = self.write_jsonl("v.jsonl", lines)
        self.convert_ok("from-routing", path, "--counts", self.path("v.counts.csv.gz"),
                        "--batch", "3", "--admit", "2", "--phase-prefixes", "gamma,beta,alpha",
                        "--seed", "9", "--phases", self.path("v.json"))
        self.check_trace(self.path("v.counts.csv.gz"), ids, req,
                         self.phase_order(["gamma", "beta", "alpha"], 9, req=req), 3, 2)
        # Datasets from --requests instead of the lines.
        for x in lines:
            if isinstance(x, dict):
                del x["dataset"]
        path = self.write_jsonl("v2.jsonl", lines)
        meta = [{"request": names[r], "dataset": ds} for r, (ds, n) in self.REQS.items()]
        with open(self.path("v2.json"), "w") as f:
            json.dump(meta, f)
        self.convert_ok("from-routing", path, "--requests", self.path("v2.json"), "--counts",
                        self.path("v2.csv"), "--batch", "3", "--admit", "2",
                        "--phase-prefixes", "gamma,beta,alpha", "--seed", "9")
        with gzip.open(self.path("v.counts.csv.gz"), "rt") as a, open(self.path("v2.csv")) as b:
            self.assertEqual(a.read(), b.read())

    def splice_input(self):
        """Two pools with disjoint experts: 'lo*' uses 0..3, 'hi*' 4..7."""
        rows, req = [], []
        for r, ds, n in ((0, "lo_a", 30), (1, "hi_a", 20), (2, "lo_b", 10)):
            base = 0 if ds.startswith("lo") else 4
            for _ in range(n):
                rows.append([base + self.rng.permutation(4)[:2] for _ in range(self.L)])
                req.append(r)
        np.savez(self.path("sp.npz"), topk_ids=np.array(rows), request=np.array(req))
        with open(self.path("sp.json"), "w") as f:
            json.dump([{"request": 0, "dataset": "lo_a"}, {"request": 1, "dataset": "hi_a"},
                       {"request": 2, "dataset": "lo_b"}], f)

    def test_splice(self):
        self.splice_input()
        args = ["splice-routing", self.path("sp.npz"), "--requests", self.path("sp.json"),
                "--segments", "lo:5,hi:3,lo_b:4", "--tokens-per-step", "6", "--seed", "4",
                "--num-experts", "8"]
        out, _ = self.convert_ok(*args, "--counts", self.path("s.counts.csv.gz"), "--changes",
                                 self.path("s.changes.json"), "--step-offset", "10")
        self.assertIn("change steps [15, 18]", out)
        arr, steps, _ = trace_array(self.path("s.counts.csv.gz"))
        self.assertEqual(steps, list(range(10, 22)))
        np.testing.assert_array_equal(arr.sum(2), 6 * 2)  # T tokens x K per layer
        self.assertEqual(arr[:5, :, 4:].sum() + arr[5:8, :, :4].sum() + arr[8:, :, 4:].sum(), 0)
        self.assertEqual(trace_tokens(self.path("s.counts.csv.gz")), [6] * 12)
        with open(self.path("s.changes.json")) as f:
            doc = json.load(f)
        self.assertEqual(doc["change_steps"], [15, 18])
        self.assertEqual([(s["pool"], s["start"], s["end"], s["pool_tokens"], s["pool_requests"])
                          for s in doc["segments"]],
                         [("lo", 10, 15, 40, 2), ("hi", 15, 18, 20, 1), ("lo_b", 18, 22, 10, 1)])
        r = self.replay(self.path("s.counts.csv.gz"), 2)
        self.assertEqual((r["steps"], r["first"], r["experts"], r["tokens"]), (12, 10, 8, 72))
        # Seeded: same seed same bytes, another seed other draws.
        self.convert_ok(*args, "--counts", self.path("s2.counts.csv.gz"), "--step-offset", "10")
        with open(self.path("s.counts.csv.gz"), "rb") as a, \
                open(self.path("s2.counts.csv.gz"), "rb") as b:
            self.assertEqual(a.read(), b.read())
        self.convert_ok(*args[:-4], "--seed", "5", "--num-experts", "8", "--counts",
                        self.path("s3.csv"), "--step-offset", "10")
        self.assertFalse(np.array_equal(trace_array(self.path("s3.csv"))[0], arr))

    def test_bad_inputs(self):
        ids, req, pos = self.make_log()
        side = self.sidecar("g.generations.json")

        def dev(name, **kw):
            d = dict(expert_ids=ids, generation=req, token_position=pos)
            d.update(kw)
            np.savez(self.path(name), **{k: v for k, v in d.items() if v is not None})
            return self.path(name)

        def fails(pattern, *args):
            for p in ("o.csv", "o.json"):
                if os.path.exists(self.path(p)):
                    os.remove(self.path(p))
            self.convert_fails(pattern, *args, "--counts", self.path("o.csv"))
            self.assertFalse(os.path.exists(self.path("o.csv")))
            self.assertFalse(os.path.exists(self.path("o.json")))

        bad = ids.copy()
        bad[4, 1] = [3, 3]
        fails(r"d\.npz: expert_ids\[4, 1\] = \[3, 3\] lists expert 3 twice",
              "from-routing", dev("d.npz", expert_ids=bad))
        fails(r"m\.npz: expert_ids\[\d+, \d+, \d+\] = \d+ is not an expert id in \[0, 3\]",
              "from-routing", dev("m.npz"), "--num-experts", "4")
        p2 = pos.copy()
        p2[2] = p2[1]
        fails(r"p\.npz: token_position\[2\] = 11 does not increase within its request "
              r"\(row 1 of the same request has 11\)", "from-routing", dev("p.npz",
                                                                          token_position=p2))
        fails(r"x\.npz: generation has shape \(3,\), expected \(\d+,\) \[tokens\]",
              "from-routing", dev("x.npz", generation=req[:3]))
        fails(r"k\.npz: missing key 'topk_ids' \(a per-token routing log.*keys present: foo",
              "from-routing", dev("k.npz", expert_ids=None, generation=None,
                                  token_position=None, foo=np.zeros(3)))
        fails(r"k3\.npz: --top-k 3, but expert_ids has 2 slots", "from-routing",
              dev("k3.npz"), "--top-k", "3")
        # Sidecar problems.
        with open(self.path("s.json"), "w") as f:
            json.dump([{"generation": r, "dataset": ds, "tokens": n + (r == 2)}
                       for r, (ds, n) in self.REQS.items()], f)
        fails(r"s\.json: \[2\]: 'tokens' = 8, but .*ok\.npz has 7 rows of request 2",
              "from-routing", dev("ok.npz"), "--requests", self.path("s.json"))
        with open(self.path("s.json"), "w") as f:
            json.dump([{"generation": 0, "dataset": "alpha_dev"}], f)
        fails(r"s\.json: request 1 of .*ok\.npz is not listed", "from-routing",
              self.path("ok.npz"), "--requests", self.path("s.json"))
        with open(self.path("s.json"), "w") as f:
            json.dump([{"generation": 0}], f)
        fails(r"s\.json: \[0\]: missing key 'dataset'", "from-routing", self.path("ok.npz"),
              "--requests", self.path("s.json"))
        fails(r"nope\.json: no such file", "from-routing", self.path("ok.npz"), "--requests",
              self.path("nope.json"))
        # Phases.
        fails(r"--phase-prefixes: 'delta' matches no request's dataset \(datasets: alpha_dev",
              "from-routing", self.path("ok.npz"), "--requests", side, "--phase-prefixes",
              "alpha,beta,gamma,delta", "--phases", self.path("o.json"))
        fails(r"matches no prefix for the datasets gamma \(1\) \(--drop-unmatched",
              "from-routing", self.path("ok.npz"), "--requests", side, "--phase-prefixes",
              "alpha,beta", "--phases", self.path("o.json"))
        fails(r"ok\.npz: --phase-prefixes needs dataset names, and request 0 has none",
              "from-routing", self.path("ok.npz"), "--phase-prefixes", "alpha")
        fails(r"--layer-ids '0\.\.1' names 2 layers; .*ok\.npz has 3", "from-routing",
              self.path("ok.npz"), "--layer-ids", "0..1")
        # jsonl.
        good = {"request": 1, "layer_topk": [[0, 1], [2, 3]], "dataset": "a"}
        for pattern, lines in (
                (r"j\.jsonl:2: missing key 'layer_topk'", [good, {"request": 1}]),
                (r"j\.jsonl:1: 'layer_topk'\[1\] has 1 ids, 'layer_topk'\[0\] has 2",
                 [dict(good, layer_topk=[[0, 1], [2]])]),
                (r"j\.jsonl:2: 'layer_topk' is 1 layers x 2 ids; line 1 has 2 x 2",
                 [good, dict(good, layer_topk=[[0, 1]])]),
                (r"j\.jsonl:2: 'layer_topk'\[0\] = \[1, 1\] lists expert 1 twice",
                 [good, dict(good, layer_topk=[[1, 1], [2, 3]])]),
                (r"j\.jsonl:2: 'layer_topk'\[1\]\[0\] = -2 is not an expert id",
                 [good, dict(good, layer_topk=[[0, 1], [-2, 3]])]),
                (r"j\.jsonl:2: 'layer_topk' must be a non-empty list",
                 [good, dict(good, layer_topk=[[0, 1.5], [2, 3]])]),
                (r"j\.jsonl:2: request 1 has dataset 'b', but 'a' at .*j\.jsonl:1",
                 [good, dict(good, dataset="b")]),
                (r"j\.jsonl:2: request 1 has position 4 after 5", [dict(good, position=5),
                                                                 dict(good, position=4)]),
                (r"j\.jsonl:1: 'request' = \[1\] is not an integer or string",
                 [dict(good, request=[1])]),
                (r"j\.jsonl:2: not valid JSON", [good, "{oops"]),
                (r"j\.jsonl: no records", [""])):
            fails(pattern, "from-routing", self.write_jsonl("j.jsonl", lines))
        # splice-routing.
        self.splice_input()
        sp = ["splice-routing", self.path("sp.npz"), "--requests", self.path("sp.json"),
              "--changes", self.path("o.json")]
        fails(r"--segments: pool 'mid' matches no request's dataset", *sp, "--segments",
              "lo:3,mid:3")
        fails(r"--segments: 'lo' is not POOL:STEPS", *sp, "--segments", "lo")
        fails(r"--segments: 'lo:0': STEPS must be >= 1", *sp, "--segments", "lo:0")
        fails(r"sp\.npz: splice-routing needs dataset names", "splice-routing",
              self.path("sp.npz"), "--segments", "lo:3")

    def test_usage_errors_exit_2(self):
        for args in (["from-routing", "x.npz", "--counts", "o.csv", "--phases", "p.json"],
                     ["from-routing", "x.npz", "--counts", "o.csv", "--batch", "0"],
                     ["from-routing", "x.npz", "--counts", "o.csv", "--no-shuffle"],
                     ["splice-routing", "x.npz", "--counts", "o.csv"],
                     ["splice-routing", "x.npz", "--counts", "o.csv", "--segments", "a:1",
                      "--tokens-per-step", "0"]):
            rc, _, err = self.convert(*args)
            self.assertEqual(rc, 2, (args, err))
        rc, out, _ = self.convert("from-routing", "--help")
        self.assertEqual(rc, 0)
        self.assertIn("--phase-prefixes", out)


# The real serving routing data (shared/data/serving, beside the repository):
# the README's settings must reproduce its trace. Runs only where the folder is.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
SERVING = os.environ.get("MOECAST_SERVING_DATA",
                         os.path.join(os.path.dirname(REPO), "shared", "data", "serving"))
SERVING_FILES = ("gptoss20b_dev.tokens.npz", "gptoss20b_dev.generations.json",
                 "gptoss20b_dev_b32.counts.csv.gz", "gptoss20b_dev_b32.phases.json")
HAVE_SERVING = all(os.path.exists(os.path.join(SERVING, f)) for f in SERVING_FILES)
NO_SERVING = ("the serving routing data is not at %s (../shared/data/serving from the "
              "repository root, or MOECAST_SERVING_DATA): acceptance test skipped" % SERVING)
README_PHASES = "mmlu_dev,mmlu_val,sorry,gpqa,mmlu_test,mmlu_pro,Poly,tulu"


def load_counts(path):
    """counts [S, L, M] and tokens [S] of a counts trace with a tokens column."""
    with gzip.open(path, "rt") as f:
        a = np.loadtxt(f, delimiter=",", skiprows=1, dtype=np.int64)
    L = int(a[:, 1].max()) + 1
    return a[:, 3:].reshape(-1, L, a.shape[1] - 3), a[::L, 2]


def phase_means(counts, starts):
    """Per phase (steps from its start to the next phase's), the mean expert
    distribution per layer [L, M]."""
    out = []
    for i, s in enumerate(starts):
        seg = counts[s:starts[i + 1] if i + 1 < len(starts) else len(counts)].sum(0)
        out.append(seg / np.maximum(seg.sum(1, keepdims=True), 1))
    return out


@unittest.skipUnless(HAVE_SERVING, NO_SERVING)
class ServingAcceptanceTest(ConverterTestBase):
    def convert_serving(self, seed):
        self.convert_ok("from-routing", os.path.join(SERVING, "gptoss20b_dev.tokens.npz"),
                        "--phase-prefixes", README_PHASES, "--batch", "32", "--admit", "2",
                        "--seed", str(seed), "--counts", self.path("s.counts.csv.gz"),
                        "--phases", self.path("s.phases.json"))
        with open(self.path("s.phases.json")) as f:
            return json.load(f)

    def compare(self, seed):
        mine = self.convert_serving(seed)
        with open(os.path.join(SERVING, "gptoss20b_dev_b32.phases.json")) as f:
            ref = json.load(f)
        c, t = load_counts(self.path("s.counts.csv.gz"))
        rc, rt = load_counts(os.path.join(SERVING, "gptoss20b_dev_b32.counts.csv.gz"))
        a = phase_means(c, [p["step"] for p in mine["phases"]])
        b = phase_means(rc, [p["step"] for p in ref["phases"]])
        l1 = [float(np.abs(x - y).sum(1).max()) for x, y in zip(a, b)]
        print("\n  seed %d: requests %d (shared %d), tokens %d (%d), steps %d (%d), phase starts "
              "%s (%s), halfway %s (%s), max per-layer L1 of phase means %s" % (
                  seed, sum(p["requests"] for p in mine["phases"]),
                  sum(p["requests"] for p in ref["phases"]), t.sum(), rt.sum(), len(t), len(rt),
                  [p["step"] for p in mine["phases"]], [p["step"] for p in ref["phases"]],
                  [p["step"] for p in mine["halfway"]], [p["step"] for p in ref["halfway"]],
                  np.round(l1, 3).tolist()), file=sys.stderr)
        self.assertEqual([(p["dataset_prefix"], p["requests"]) for p in mine["phases"]],
                         [(p["dataset_prefix"], p["requests"]) for p in ref["phases"]])
        self.assertEqual(int(t.sum()), int(rt.sum()))
        self.assertEqual(int(c.sum()), int(rc.sum()))
        return mine, ref, c, t, rc, rt, l1

    def test_readme_settings_reproduce_the_trace(self):
        # numpy.random.default_rng(11), phase by phase, is the shared trace's shuffle.
        mine, ref, c, t, rc, rt, l1 = self.compare(11)
        np.testing.assert_array_equal(t, rt)
        np.testing.assert_array_equal(c, rc)
        self.assertEqual(mine["phases"], ref["phases"])
        self.assertEqual(mine["halfway"], ref["halfway"])
        self.assertEqual(max(l1), 0.0)
        r = self.replay(self.path("s.counts.csv.gz"), 4)
        self.assertEqual((r["steps"], r["layers"], r["experts"], r["tokens"]),
                         (3625, 24, 32, 106359))

    def test_another_shuffle_is_close(self):
        mine, ref, c, t, rc, rt, l1 = self.compare(0)
        self.assertLess(abs(len(t) - len(rt)), 0.05 * len(rt))
        for p, q, d in zip(mine["phases"], ref["phases"], l1):
            self.assertLess(abs(p["step"] - q["step"]), 100, p)
            if p["requests"] >= 10:  # phases of a few requests are mostly other phases' tokens
                self.assertLess(d, 0.2, p)


# ---------------------------------------------------------------------------
# Placements


class PlacementTest(ConverterTestBase):
    def make_plan(self):
        """A real `moecast plan` JSON: 3 layers, 8 experts, 12 slots on 4 GPUs."""
        if not MOECAST:
            self.skipTest("MOECAST (the moecast binary) is not set")
        loads = self.rng.gamma(2.0, 10.0, size=(3, 8)).round(2)
        with open(self.path("loads.json"), "w") as f:
            json.dump({"loads": loads.tolist()}, f)
        p = subprocess.run([MOECAST, "plan", "--loads", self.path("loads.json"), "--slots", "12",
                            "--gpus", "4", "--json", self.path("plan.json")],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        with open(self.path("plan.json")) as f:
            plan = json.load(f)
        return loads, plan

    def response(self, plan, loads, camel=False):
        """The plan as a RecommendPlacement response (flat repeated fields)."""
        L, S = len(plan["phy2log"]), len(plan["phy2log"][0])
        M = len(plan["logcnt"][0])
        body = {"mode": plan["mode"], "num_layers": L, "num_experts": M, "num_slots": S,
                "num_gpus": 4, "phy2log": sum(plan["phy2log"], []),
                "logcnt": sum(plan["logcnt"], []), "moved_experts": 0}
        doc = {"as_of_step": 99, "job_state": "LOAD_STATE_STABLE", "horizon": 100,
               "loads": loads.ravel().tolist(), "plan": body}
        if camel:  # protobuf json_format: lowerCamelCase, int64 as strings
            body = {"mode": body["mode"], "numLayers": L, "numExperts": M, "numSlots": S,
                    "numGpus": 4, "phy2log": body["phy2log"], "movedExperts": "0"}
            doc = {"asOfStep": "99", "loads": doc["loads"], "plan": body}
        with open(self.path("resp.json"), "w") as f:
            json.dump(doc, f)
        return self.path("resp.json")

    def check_full_map(self, path, plan, ids, num_layers, M=8, S=12):
        with open(path) as f:
            doc = json.load(f)
        self.assertEqual(list(doc), ["physical_to_logical_map"])  # init_by_mapping(**doc)
        full = np.array(doc["physical_to_logical_map"])
        self.assertEqual(full.shape, (num_layers, S))
        for row, lid in enumerate(ids):
            np.testing.assert_array_equal(full[lid], plan["phy2log"][row])
        for lid in set(range(num_layers)) - set(ids):
            np.testing.assert_array_equal(full[lid], np.arange(S) % M)
        for l in range(num_layers):
            self.assertEqual(set(full[l]), set(range(M)))

    def test_to_sglang_from_plan(self):
        loads, plan = self.make_plan()
        out, _ = self.convert_ok("to-sglang", self.path("plan.json"), "--out",
                                 self.path("loc.json"), "--layer-ids", "3..5",
                                 "--num-layers", "7", "--ep-size", "4")
        self.assertIn("--ep-num-redundant-experts 4", out)
        self.check_full_map(self.path("loc.json"), plan, [3, 4, 5], 7)
        self.convert_ok("to-sglang", self.path("plan.json"), "--out", self.path("loc2.json"))
        self.check_full_map(self.path("loc2.json"), plan, [0, 1, 2], 3)

    def test_to_sglang_from_response(self):
        loads, plan = self.make_plan()
        for camel in (False, True):
            resp = self.response(plan, loads, camel=camel)
            self.convert_ok("to-sglang", resp, "--out", self.path("loc.json"))
            self.check_full_map(self.path("loc.json"), plan, [0, 1, 2], 3)
        self.convert_ok("to-sglang", resp, "--out", self.path("lc.json"), "--emit",
                        "logical_count", "--layer-ids", "1,2,3")
        with open(self.path("lc.json")) as f:
            doc = json.load(f)
        self.assertEqual(list(doc), ["logical_count"])
        lc = np.array(doc["logical_count"])
        self.assertEqual(lc.shape, (4, 8))
        np.testing.assert_allclose(lc[1:], loads)
        np.testing.assert_array_equal(lc[0], 0)
        self.convert_ok("to-sglang", self.path("loads.json"), "--out", self.path("lc2.json"),
                        "--emit", "logical_count")
        with open(self.path("lc2.json")) as f:
            np.testing.assert_allclose(json.load(f)["logical_count"], loads)
        self.convert_fails(r"loads\.json: has loads but no placement", "to-sglang",
                           self.path("loads.json"), "--out", self.path("x.json"))
        self.convert_fails(r"plan\.json: has no loads", "to-sglang", self.path("plan.json"),
                           "--out", self.path("x.json"), "--emit", "logical_count")

    def check_vllm(self, data, plan, R):
        p2l = np.asarray(data["physical_to_logical_map"])
        l2p = np.asarray(data["logical_to_physical_map"])
        cnt = np.asarray(data["logical_replica_count"])
        np.testing.assert_array_equal(p2l, plan["phy2log"])
        np.testing.assert_array_equal(cnt, plan["logcnt"])
        self.assertEqual(l2p.shape, (3, 8, R))
        for l in range(3):
            for e in range(8):
                slots = [s for s in l2p[l, e] if s >= 0]
                self.assertEqual(slots, sorted(np.nonzero(p2l[l] == e)[0].tolist()))
                self.assertTrue((l2p[l, e, len(slots):] == -1).all())

    def test_to_vllm_npz(self):
        loads, plan = self.make_plan()
        out, _ = self.convert_ok("to-vllm", self.path("plan.json"), "--out", self.path("m.npz"))
        self.assertIn("logical_to_physical_map [3, 8, 5]", out)
        with np.load(self.path("m.npz")) as z:
            self.assertEqual(sorted(z.files), ["logical_replica_count", "logical_to_physical_map",
                                               "physical_to_logical_map"])
            self.assertEqual(z["physical_to_logical_map"].dtype, np.int64)
            self.check_vllm(z, plan, 5)
        resp = self.response(plan, loads)
        self.convert_ok("to-vllm", resp, "--out", self.path("r.npz"), "--max-replicas", "16")
        with np.load(self.path("r.npz")) as z:
            self.check_vllm(z, plan, 16)

    @unittest.skipUnless(HAVE_TORCH, NO_TORCH)
    def test_to_vllm_torch(self):
        _, plan = self.make_plan()
        self.convert_ok("to-vllm", self.path("plan.json"), "--out", self.path("m.pt"))
        data = torch.load(self.path("m.pt"))
        self.assertEqual(data["physical_to_logical_map"].dtype, torch.int64)
        self.check_vllm({k: v.numpy() for k, v in data.items()}, plan, 5)

    def test_bad_plans(self):
        def plan_file(doc, name="p.json"):
            with open(self.path(name), "w") as f:
                f.write(doc if isinstance(doc, str) else json.dumps(doc))
            return self.path(name)

        base = [[0, 1, 2, 3, 0, 1], [3, 2, 1, 0, 3, 2]]
        p = plan_file({"phy2log": [base[0], [3, 2, 1, -1, 3, 2]]})
        self.convert_fails(r"p\.json: phy2log\[1\]\[3\] = -1: slot 3 of layer 1 is empty",
                           "to-sglang", p, "--out", self.path("o.json"))
        p = plan_file({"phy2log": [base[0], [3, 2, 1, 1, 3, 2]]})
        self.convert_fails(r"p\.json: layer 1: logical expert 0 has no physical slot",
                           "to-vllm", p, "--out", self.path("o.npz"))
        p = plan_file({"phy2log": [base[0], [3, 2, 1, 0, 3]]})
        self.convert_fails(r"p\.json: phy2log\[1\] has 5 values, phy2log\[0\] has 6",
                           "to-sglang", p, "--out", self.path("o.json"))
        p = plan_file({"phy2log": base, "logcnt": [[2, 2, 1, 1, 0], [1, 1, 2, 2, 0]]})
        self.convert_fails(r"layer 0: logical expert 4 has no physical slot",
                           "to-sglang", p, "--out", self.path("o.json"))
        p = plan_file({"phy2log": base})
        self.convert_fails(r"--layer-ids '3\.\.5' names 3 layers; .*p\.json has 2",
                           "to-sglang", p, "--out", self.path("o.json"), "--layer-ids", "3..5")
        self.convert_fails(r"--layer-ids: layer 4 is outside the model's 4 layers",
                           "to-sglang", p, "--out", self.path("o.json"), "--layer-ids", "3,4",
                           "--num-layers", "4")
        self.convert_fails(r"6 physical slots do not split over --ep-size 4 GPUs",
                           "to-sglang", p, "--out", self.path("o.json"), "--ep-size", "4")
        self.convert_fails(r"layer 0 expert 0 has 2 replicas, more than --max-replicas 1",
                           "to-vllm", p, "--out", self.path("o.npz"), "--max-replicas", "1")
        self.convert_fails(r"--out .*o\.bin: name the file \.npz \(numpy\) or \.pt",
                           "to-vllm", p, "--out", self.path("o.bin"))
        p = plan_file({"plan": {"num_layers": 2, "num_slots": 6, "phy2log": [0, 1, 2]}})
        self.convert_fails(r"p\.json: plan: phy2log has 3 values, expected 2 x 6 = 12",
                           "to-vllm", p, "--out", self.path("o.npz"))
        p = plan_file({"plan": {"num_layers": 2}})
        self.convert_fails(r"p\.json: plan: no phy2log", "to-vllm", p, "--out",
                           self.path("o.npz"))
        p = plan_file("{oops")
        self.convert_fails(r"p\.json: not valid JSON", "to-vllm", p, "--out", self.path("o.npz"))
        p = plan_file({"something": 1})
        self.convert_fails(r"p\.json: expected a moecast plan \('phy2log'\), a "
                           r"RecommendPlacement response \('plan'\) or loads", "to-vllm", p,
                           "--out", self.path("o.npz"))

    def test_usage_errors_exit_2(self):
        rc, _, err = self.convert("to-vllm", "x.json")
        self.assertEqual(rc, 2)
        self.assertIn("--out", err)
        rc, _, err = self.convert("from-sglang", "x.pt", "--counts", "o.csv",
                                  "--num-experts", "0")
        self.assertEqual(rc, 2)


if __name__ == "__main__":
    if not HAVE_TORCH:
        print("NOTE: " + NO_TORCH, file=sys.stderr)
    if not HAVE_SERVING:
        print("NOTE: " + NO_SERVING, file=sys.stderr)
    unittest.main(verbosity=2)
