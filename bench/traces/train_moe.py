#!/usr/bin/python3
"""Train a tiny byte-level Mixture-of-Experts language model on the CPU and record
per-step expert-load traces in the moecast trace format (docs/design.md, section 7).

Outputs (under --out-dir, file names start with --name):
  NAME.counts.csv.gz  header: step,layer,tokens,c0,...,c{M-1}
                      c[e] = number of (token, slot) top-K assignments to expert e,
                      so sum(c) = tokens * K (no token is ever dropped).
  NAME.router.csv.gz  header: step,layer,z0..z{M-1},p0..p{M-1},s0..s{M-1}
                      over ALL tokens of the step (before top-K):
                      z_e = mean pre-softmax router logit,
                      p_e = mean router probability (softmax over the M logits),
                      s_e = mean per-token standardised logit
                            ((logit - mean over experts) / std over experts,
                             population std, + 1e-6).
  NAME.meta.json      configuration, text source, timings (documentation only).

Steps start at 0 and every step lists every MoE layer (layer = 0..L-1, in model order).
The counts and router statistics of step t are those of the forward pass whose loss
produced optimizer update t (i.e. recorded before the update is applied).

Model: token (byte) embedding + learned positions, L pre-LayerNorm transformer blocks
(causal multi-head attention + MoE MLP), final LayerNorm, head tied to the embedding.
MoE MLP: linear softmax router (no bias) -> top-K experts per token (distinct),
gate = the K softmax probabilities renormalised to sum 1 (Mixtral style; --no-norm-topk
keeps the raw probabilities, OLMoE style); each expert is a GELU MLP d -> d_ff -> d.

Load-balancing loss (Switch / HF style), per MoE layer, summed over layers:
    aux = alpha * M * sum_e f_e * P_e,  f_e = c_e / N (sums to K), P_e = mean router prob.
alpha = 0 disables it (then no balance pressure at all). Optional router z-loss:
    zloss_coef * mean_tokens(logsumexp(logits)^2), summed over layers.

Text: the concatenation (in sorted file-name order) of the top-level Python standard
library sources /usr/lib/python3.11/*.py, except the platform-specific
_sysconfigdata*.py files. The sha256 of the corpus is written to the meta file.

Run with Debian's Python (the one that has python3-torch): /usr/bin/python3.
"""

import argparse
import glob
import gzip
import io
import hashlib
import json
import math
import os
import platform
import sys
import time


def _early_threads(argv):
    # OpenBLAS / OpenMP size their thread pools when torch is imported, and
    # torch.set_num_threads does not reach OpenBLAS's own pool: set them first.
    n = "1"
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = n


_early_threads(sys.argv[1:])

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


# ----------------------------------------------------------------------------- data
def gz_text_writer(path, level):
    """Text writer to PATH.part, gzip with a fixed header (no mtime, clean file name) so that
    regenerating a trace gives byte-identical files; os.replace() it to PATH when done."""
    raw = open(path + ".part", "wb")
    gz = gzip.GzipFile(filename=os.path.basename(path)[:-3] if path.endswith(".gz") else "",
                       mode="wb", compresslevel=level, fileobj=raw, mtime=0)
    w = io.TextIOWrapper(gz, encoding="ascii", newline="\n")
    w._raw_file = raw  # closed by gz_close
    return w


def gz_close(w):
    w.close()          # flushes and closes the GzipFile (not the raw file it wraps)
    w._raw_file.close()



DEFAULT_TEXT_GLOB = "/usr/lib/python3.11/*.py"
TEXT_EXCLUDE_PREFIX = "_sysconfigdata"


def load_corpus(pattern):
    files = sorted(f for f in glob.glob(pattern)
                   if not os.path.basename(f).startswith(TEXT_EXCLUDE_PREFIX))
    if not files:
        sys.exit("no text files match %r" % pattern)
    blobs = []
    for f in files:
        with open(f, "rb") as fh:
            blobs.append(fh.read())
    data = b"".join(blobs)
    sha = hashlib.sha256(data).hexdigest()
    return data, files, sha


# ----------------------------------------------------------------------------- model

class MoE(nn.Module):
    def __init__(self, d, d_ff, m, k, norm_topk, router_init_std, impl, init_std, resid_std):
        super().__init__()
        self.impl = impl
        self.m, self.k, self.norm_topk = m, k, norm_topk
        self.router = nn.Linear(d, m, bias=False)
        nn.init.normal_(self.router.weight, std=router_init_std)
        self.w1 = nn.Parameter(torch.randn(m, d, d_ff) * init_std)
        self.b1 = nn.Parameter(torch.zeros(m, d_ff))
        self.w2 = nn.Parameter(torch.randn(m, d_ff, d) * resid_std)
        self.b2 = nn.Parameter(torch.zeros(m, d))

    def forward(self, x):
        # x: [N, d] (tokens flattened). Returns y, and per-layer stats tensors.
        n = x.shape[0]
        m, k = self.m, self.k
        logits = self.router(x)                       # [N, M]
        probs = logits.softmax(dim=-1)                # [N, M]
        topw, topi = probs.topk(k, dim=-1)            # [N, K] distinct experts
        if self.norm_topk:
            topw = topw / topw.sum(dim=-1, keepdim=True)
        flat_e = topi.reshape(-1)                     # [N*K]
        counts = torch.bincount(flat_e, minlength=m)  # [M], sum = N*K
        order = torch.argsort(flat_e, stable=True)
        tok = torch.div(order, k, rounding_mode="floor")
        xs = x.index_select(0, tok)                   # [N*K, d], grouped by expert
        gs = topw.reshape(-1).index_select(0, order)  # [N*K]
        if self.impl == "padded":
            # One bmm per projection over [M, C, d] with C = the largest count of the
            # step (no token is dropped; padding rows are zeros and are discarded).
            cap = int(counts.max())
            offsets = torch.cumsum(counts, 0) - counts
            es = flat_e.index_select(0, order)
            pos = torch.arange(n * k) - offsets.index_select(0, es)
            xp = x.new_zeros(m, cap, x.shape[1]).index_put((es, pos), xs)
            h = F.gelu(torch.baddbmm(self.b1.unsqueeze(1), xp, self.w1))
            yp = torch.baddbmm(self.b2.unsqueeze(1), h, self.w2)
            ys = yp[es, pos]
        else:
            sizes = counts.tolist()
            w1s, b1s = self.w1.unbind(0), self.b1.unbind(0)
            w2s, b2s = self.w2.unbind(0), self.b2.unbind(0)
            outs = []
            start = 0
            for e, c in enumerate(sizes):
                if c == 0:
                    continue
                h = F.gelu(torch.addmm(b1s[e], xs[start:start + c], w1s[e]))
                outs.append(torch.addmm(b2s[e], h, w2s[e]))
                start += c
            ys = torch.cat(outs, dim=0)
        ys = ys * gs.unsqueeze(1)
        y = torch.zeros_like(x).index_add_(0, tok, ys)

        # Statistics (no grad needed for recording).
        with torch.no_grad():
            ld = logits.detach()
            z = ld.mean(dim=0)
            p = probs.detach().mean(dim=0)
            mu = ld.mean(dim=-1, keepdim=True)
            sd = ld.std(dim=-1, unbiased=False, keepdim=True)
            s = ((ld - mu) / (sd + 1e-6)).mean(dim=0)
            rec = torch.cat([counts.to(torch.float64), z.double(), p.double(), s.double()])
        # Aux loss terms (with grad through probs only, as in Switch/HF).
        f = counts.to(probs.dtype) / n                # sums to K
        P = probs.mean(dim=0)
        aux = m * torch.sum(f * P)
        zl = torch.logsumexp(logits, dim=-1).pow(2).mean()
        return y, rec, aux, zl


class Block(nn.Module):
    def __init__(self, d, heads, d_ff, m, k, norm_topk, router_init_std, seq_len, impl,
                 init_std, resid_std):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.moe = MoE(d, d_ff, m, k, norm_topk, router_init_std, impl, init_std, resid_std)
        # GPT-2 style init: N(0, init_std), residual projections N(0, init_std/sqrt(2L)).
        nn.init.normal_(self.qkv.weight, std=init_std)
        nn.init.zeros_(self.qkv.bias)
        nn.init.normal_(self.proj.weight, std=resid_std)
        nn.init.zeros_(self.proj.bias)
        self.heads = heads
        self.register_buffer("mask", torch.ones(seq_len, seq_len, dtype=torch.bool).triu(1),
                             persistent=False)

    def forward(self, x):
        b, t, d = x.shape
        q, kk, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        hd = d // self.heads
        q = q.view(b, t, self.heads, hd).transpose(1, 2)
        kk = kk.view(b, t, self.heads, hd).transpose(1, 2)
        v = v.view(b, t, self.heads, hd).transpose(1, 2)
        att = (q @ kk.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        att = att.masked_fill(self.mask[:t, :t], float("-inf")).softmax(dim=-1)
        a = att @ v
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        y, rec, aux, zl = self.moe(self.ln2(x).reshape(b * t, d))
        return x + y.view(b, t, d), rec, aux, zl


class TinyMoELM(nn.Module):
    def __init__(self, args):
        super().__init__()
        d = args.d_model
        self.emb = nn.Embedding(256, d)
        self.pos = nn.Parameter(torch.zeros(args.seq_len, d))
        nn.init.normal_(self.emb.weight, std=args.init_std)
        nn.init.normal_(self.pos, std=args.init_std)
        self.blocks = nn.ModuleList([
            Block(d, args.heads, args.d_ff, args.experts, args.top_k,
                  not args.no_norm_topk, args.router_init_std, args.seq_len, args.moe_impl,
                  args.init_std, args.init_std / math.sqrt(2 * args.layers))
            for _ in range(args.layers)])
        self.lnf = nn.LayerNorm(d)

    def forward(self, idx):
        x = self.emb(idx) + self.pos[: idx.shape[1]]
        recs, aux, zl = [], 0.0, 0.0
        for blk in self.blocks:
            x, rec, a, z = blk(x)
            recs.append(rec)
            aux = aux + a
            zl = zl + z
        logits = self.lnf(x) @ self.emb.weight.t()
        return logits, torch.stack(recs), aux, zl


# ----------------------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="trace name (file prefix)")
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    ap.add_argument("--layers", type=int, default=4, help="MoE layers (transformer blocks)")
    ap.add_argument("--experts", type=int, default=16, help="experts per MoE layer (M)")
    ap.add_argument("--top-k", type=int, default=2, help="experts per token (K)")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--d-ff", type=int, default=128, help="hidden size of each expert")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=100, help="linear LR warmup steps")
    ap.add_argument("--min-lr-frac", type=float, default=0.1,
                    help="cosine decay to this fraction of --lr at the last step")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alpha", type=float, default=0.01,
                    help="load-balancing loss coefficient (alpha*M*sum f_e P_e); 0 = none")
    ap.add_argument("--zloss", type=float, default=0.0, help="router z-loss coefficient")
    ap.add_argument("--router-init-std", type=float, default=0.02)
    ap.add_argument("--init-std", type=float, default=0.02,
                    help="GPT-2 style init std (embeddings, qkv, expert w1); residual "
                         "projections (attn proj, expert w2) use init_std/sqrt(2*layers)")
    ap.add_argument("--no-norm-topk", action="store_true",
                    help="do not renormalise the K gate probabilities")
    ap.add_argument("--moe-impl", choices=["loop", "padded"], default="loop",
                    help="expert computation: per-expert loop, or one padded bmm (same math)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--fmt", default="%.5g", help="printf format for router floats")
    ap.add_argument("--gzip-level", type=int, default=9)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--text-glob", default=DEFAULT_TEXT_GLOB)
    ap.add_argument("--no-router-file", action="store_true")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    if args.top_k > args.experts or args.top_k < 1:
        sys.exit("need 1 <= top_k <= experts")

    data, files, sha = load_corpus(args.text_glob)
    corpus = torch.tensor(list(data), dtype=torch.long)  # bytes 0..255
    n_tokens = args.batch * args.seq_len
    print("corpus: %d files, %d bytes, sha256 %s" % (len(files), len(data), sha), file=sys.stderr)

    model = TinyMoELM(args)
    n_params = sum(p.numel() for p in model.parameters())
    decay, no_decay = [], []
    for nme, p in model.named_parameters():
        (decay if p.dim() >= 2 and "pos" not in nme else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(args.seed + 1)
    offs = torch.arange(args.seq_len + 1)
    M, L = args.experts, args.layers

    os.makedirs(args.out_dir, exist_ok=True)
    base = os.path.join(args.out_dir, args.name)
    cpath = base + ".counts.csv.gz"
    rpath = base + ".router.csv.gz"
    cf = gz_text_writer(cpath, args.gzip_level)
    cf.write(",".join(["step", "layer", "tokens"] + ["c%d" % e for e in range(M)]) + "\n")
    rf = None
    if not args.no_router_file:
        rf = gz_text_writer(rpath, args.gzip_level)
        rf.write(",".join(["step", "layer"] + ["z%d" % e for e in range(M)]
                          + ["p%d" % e for e in range(M)] + ["s%d" % e for e in range(M)]) + "\n")
    fmt = args.fmt

    t0 = time.time()
    loss_acc, aux_acc, n_acc = 0.0, 0.0, 0
    first_loss = last_loss = None
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        starts = torch.randint(0, corpus.numel() - args.seq_len - 1, (args.batch,), generator=gen)
        chunk = corpus[starts.unsqueeze(1) + offs]
        x, y = chunk[:, :-1], chunk[:, 1:]
        logits, recs, aux, zl = model(x)
        ce = F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
        loss = ce
        if args.alpha > 0:
            loss = loss + args.alpha * aux
        if args.zloss > 0:
            loss = loss + args.zloss * zl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()

        rows = recs.tolist()  # one conversion per step: [L][4M]
        cl, rl = [], []
        for layer, r in enumerate(rows):
            cl.append("%d,%d,%d,%s\n" % (step, layer, n_tokens,
                                         ",".join(str(int(v)) for v in r[:M])))
            if rf is not None:
                rl.append("%d,%d,%s\n" % (step, layer, ",".join(fmt % v for v in r[M:])))
        cf.write("".join(cl))
        if rf is not None:
            rf.write("".join(rl))

        cev = ce.item()
        if first_loss is None:
            first_loss = cev
        loss_acc += cev
        aux_acc += float(aux) / L
        n_acc += 1
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            el = time.time() - t0
            last_loss = loss_acc / n_acc
            print("step %d/%d  ce %.4f  aux/layer %.4f  lr %.2e  %.1f steps/s  %.0fs"
                  % (step + 1, args.steps, last_loss, aux_acc / n_acc, lr_at(step),
                     (step + 1) / el, el), file=sys.stderr, flush=True)
            loss_acc, aux_acc, n_acc = 0.0, 0.0, 0

    wall = time.time() - t0
    gz_close(cf)
    os.replace(cpath + ".part", cpath)
    if rf is not None:
        gz_close(rf)
        os.replace(rpath + ".part", rpath)

    meta = {
        "name": args.name,
        "kind": "recorded (real training run, not synthetic)",
        "generator": "bench/traces/train_moe.py",
        "command": " ".join([sys.executable, "bench/traces/train_moe.py"]
                            + (argv if argv is not None else sys.argv[1:])),
        "model": "byte-level transformer LM, pre-LN, causal MHA + MoE MLP in every block",
        "layers": L, "experts": M, "top_k": args.top_k,
        "d_model": args.d_model, "d_ff_per_expert": args.d_ff, "heads": args.heads,
        "params": n_params,
        "router": "linear softmax (no bias), top-K distinct, gates %s" %
                  ("raw softmax probs" if args.no_norm_topk else "renormalised over the K"),
        "alpha": args.alpha,
        "aux_loss": "alpha * M * sum_e f_e * P_e per layer, summed over layers; f_e = c_e/N (sums to K)",
        "zloss": args.zloss,
        "router_init_std": args.router_init_std, "init_std": args.init_std,
        "init": "GPT-2 style: N(0, init_std); attn proj and expert w2 N(0, init_std/sqrt(2L)); biases 0",
        "steps": args.steps, "first_step": 0,
        "batch": args.batch, "seq_len": args.seq_len, "tokens_per_step": n_tokens,
        "assignments_per_step_per_layer": n_tokens * args.top_k,
        "lr": args.lr, "warmup": args.warmup, "min_lr_frac": args.min_lr_frac,
        "schedule": "linear warmup then cosine decay", "optimizer": "AdamW(0.9,0.95)",
        "weight_decay": args.weight_decay, "grad_clip": args.grad_clip,
        "seed": args.seed, "threads": args.threads,
        "router_float_format": fmt,
        "s_definition": "mean over tokens of (logit - mean_e logit)/(population std_e + 1e-6)",
        "first_ce": first_loss, "final_ce_last_log_window": last_loss,
        "wall_time_s": round(wall, 1), "steps_per_s": round(args.steps / wall, 2),
        "torch_version": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(),
        "text_source": "%s (sorted, excluding %s*), concatenated bytes" % (args.text_glob, TEXT_EXCLUDE_PREFIX),
        "text_files": len(files), "text_bytes": len(data), "text_sha256": sha,
    }
    with open(base + ".meta.json", "w") as fh:
        json.dump(meta, fh, indent=1)
        fh.write("\n")
    print("wrote %s (%.1fs)" % (base, wall), file=sys.stderr)


if __name__ == "__main__":
    main()
