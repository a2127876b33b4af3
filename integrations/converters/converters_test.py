"""Tests of moecast_convert.py: every input format is generated here, converted,
and read back both as CSV and with moecast's own trace reader (`moecast
replay`); placements go through a real `moecast plan`. Bad inputs are checked
for the file / record / field their message names.

  MOECAST=bazel-bin/moecast /usr/bin/python3 integrations/converters/converters_test.py

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
CONVERT = os.path.join(HERE, "moecast_convert.py")
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
        p = subprocess.run([sys.executable, CONVERT] + [str(a) for a in args],
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
    unittest.main(verbosity=2)
