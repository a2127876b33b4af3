#!/usr/bin/python3
"""Step time of bench/traces/train_moe.py's training step with and without the
moecast TorchRecorder attached (forward hooks on the 4 routers + step()).

    /usr/bin/python3 integrations/python/bench/recorder_overhead.py --steps 400 --block 20
    /usr/bin/python3 integrations/python/bench/recorder_overhead.py --target 127.0.0.1:50051

Two identical trainers (train_moe.py's model, optimizer, schedule and data,
same seed) run in interleaved blocks of --block steps: one bare, one with the
recorder (writing a trace to a temporary directory; with --target also
streaming to that moecastd). Reports the median and mean step time of each
and the difference. The first --warmup steps of each are not timed.

The Trainer class here reproduces train_moe.py's training step exactly (the
model class and parse_args are imported from it); the recorder's tests use it
to check that a recorded trace is byte-identical to train_moe.py's own.
"""

import argparse
import importlib.util
import math
import os
import platform
import statistics
import sys
import tempfile
import time


def _early_threads(n="1"):
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, n)


def find_train_moe():
    """Path of bench/traces/train_moe.py: $MOECAST_TRAIN_MOE, the Bazel
    runfiles, or the source tree above this file."""
    env = os.environ.get("MOECAST_TRAIN_MOE")
    if env:
        return env
    cands = []
    if os.environ.get("TEST_SRCDIR"):
        cands.append(os.path.join(os.environ["TEST_SRCDIR"], os.environ.get("TEST_WORKSPACE", ""),
                                  "bench", "traces", "train_moe.py"))
    # The source tree above this file (through symlinks: Bazel runfiles point there).
    for start in (os.path.abspath(__file__), os.path.realpath(__file__)):
        d = os.path.dirname(start)
        for _ in range(6):
            cands.append(os.path.join(d, "bench", "traces", "train_moe.py"))
            d = os.path.dirname(d)
    for c in cands:
        if os.path.exists(c):
            return c
    raise FileNotFoundError("bench/traces/train_moe.py not found (set MOECAST_TRAIN_MOE)")


def load_train_moe(path=None):
    path = path or find_train_moe()
    spec = importlib.util.spec_from_file_location("train_moe", path)
    mod = importlib.util.module_from_spec(spec)
    saved = sys.argv
    sys.argv = [path]        # its import-time thread setup reads argv
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.argv = saved
    return mod


class Trainer:
    """train_moe.py's setup and training step (main()'s loop body), without
    its file writing. step() returns the model's per-layer records [L, 4M]
    (counts, z, p, s), as train_moe.py writes them."""

    def __init__(self, tm, argv=()):
        import torch
        self.torch = torch
        self.F = torch.nn.functional
        args = tm.parse_args(["--name", "bench"] + list(argv))
        self.args = args
        torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        torch.use_deterministic_algorithms(True)
        data, _, _ = tm.load_corpus(args.text_glob)
        self.corpus = torch.tensor(list(data), dtype=torch.long)
        self.model = tm.TinyMoELM(args)
        decay, no_decay = [], []
        for nme, p in self.model.named_parameters():
            (decay if p.dim() >= 2 and "pos" not in nme else no_decay).append(p)
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=args.lr, betas=(0.9, 0.95))
        self.gen = torch.Generator().manual_seed(args.seed + 1)
        self.offs = torch.arange(args.seq_len + 1)
        self.n_tokens = args.batch * args.seq_len

    def lr_at(self, step):
        a = self.args
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        frac = (step - a.warmup) / max(1, a.steps - a.warmup)
        return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))

    def routers(self):
        return [blk.moe.router for blk in self.model.blocks]

    def step(self, step):
        a, torch = self.args, self.torch
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(step)
        starts = torch.randint(0, self.corpus.numel() - a.seq_len - 1, (a.batch,), generator=self.gen)
        chunk = self.corpus[starts.unsqueeze(1) + self.offs]
        x, y = chunk[:, :-1], chunk[:, 1:]
        logits, recs, aux, zl = self.model(x)
        ce = self.F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
        loss = ce
        if a.alpha > 0:
            loss = loss + a.alpha * aux
        if a.zloss > 0:
            loss = loss + a.zloss * zl
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), a.grad_clip)
        self.opt.step()
        return recs


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400, help="timed steps per variant")
    ap.add_argument("--block", type=int, default=20, help="steps per interleaved block")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps per variant first")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--target", help="also stream to this moecastd (host:port)")
    ap.add_argument("--no-trace", action="store_true", help="do not write a trace")
    ap.add_argument("--train-moe", help="path of bench/traces/train_moe.py")
    args = ap.parse_args(argv)
    _early_threads(str(args.threads))
    tm = load_train_moe(args.train_moe)
    import torch
    from moecast.torch_recorder import TorchRecorder, logits_topk

    total = args.warmup + args.steps
    targv = ["--threads", str(args.threads), "--steps", str(total)]
    bare, rec_t = Trainer(tm, targv), Trainer(tm, targv)
    tmp = tempfile.mkdtemp(prefix="recorder_overhead_")
    kw = {}
    if not args.no_trace:
        kw["trace"] = os.path.join(tmp, "bench")
    if args.target:
        kw.update(target=args.target, job_id="recorder-overhead-%d" % os.getpid(),
                  register_kwargs={"aux_loss_coef": rec_t.args.alpha})
    if not kw:
        sys.exit("nothing to record to: drop --no-trace or give --target")
    rec = TorchRecorder(rec_t.routers(), num_experts=rec_t.args.experts, top_k=rec_t.args.top_k,
                        adapter=logits_topk(rec_t.args.top_k), **kw)
    times = {"bare": [], "recorder": []}
    step_b = step_r = 0
    t_rec_step = []
    while step_b < total or step_r < total:
        for _ in range(args.block):
            if step_b >= total:
                break
            t0 = time.perf_counter()
            bare.step(step_b)
            dt = time.perf_counter() - t0
            if step_b >= args.warmup:
                times["bare"].append(dt)
            step_b += 1
        for _ in range(args.block):
            if step_r >= total:
                break
            t0 = time.perf_counter()
            rec_t.step(step_r)
            t1 = time.perf_counter()
            rec.step()
            dt = time.perf_counter() - t0
            if step_r >= args.warmup:
                times["recorder"].append(dt)
                t_rec_step.append(time.perf_counter() - t1)
            step_r += 1
    t0 = time.perf_counter()
    rec.close()
    t_close = time.perf_counter() - t0
    mb, mr = statistics.median(times["bare"]), statistics.median(times["recorder"])
    print("recorder overhead: train_moe.py model (L=%d, M=%d, K=%d, %d tokens/step), %d timed "
          "steps each, blocks of %d, interleaved, torch %s, %d thread(s)"
          % (rec_t.args.layers, rec_t.args.experts, rec_t.args.top_k, rec_t.n_tokens, args.steps,
             args.block, torch.__version__, args.threads))
    print("machine: nproc %d, %s, Python %s" % (os.cpu_count(), cpu_model(), platform.python_version()))
    print("sinks: %s" % ", ".join(k for k in ("trace", "target") if k in kw))
    print("  bare      median %.3f ms  mean %.3f ms" % (mb * 1e3, statistics.mean(times["bare"]) * 1e3))
    print("  recorder  median %.3f ms  mean %.3f ms" % (mr * 1e3, statistics.mean(times["recorder"]) * 1e3))
    print("  overhead  median %+.3f ms (%+.2f%%); recorder.step() alone median %.3f ms; close() %.3f s"
          % ((mr - mb) * 1e3, 100 * (mr - mb) / mb, statistics.median(t_rec_step) * 1e3, t_close))
    print("  recorded %d steps, sent %d, dropped %d" % (rec.steps_recorded, rec.sent_steps,
                                                        rec.dropped_steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
