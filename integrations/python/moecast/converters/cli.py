"""moecast-convert: converts expert-load records of SGLang, vLLM and Megatron-LM
to moecast traces (design section 7), per-token routing logs to traces (through
a continuous-batching simulation, or spliced segments of i.i.d. draws), and
moecast placements to the placement files of SGLang and vLLM.

  moecast-convert from-sglang   DUMP.pt [DUMP_RANK1.pt ...] --counts OUT.counts.csv.gz
  moecast-convert from-vllm     WINDOW.npz|.pt [...]        --counts OUT.counts.csv.gz
  moecast-convert from-megatron TPE.jsonl [...] | TPE.npz   --counts OUT.counts.csv.gz [--router OUT.router.csv.gz]
  moecast-convert from-routing  TOKENS.npz|.pt|.jsonl --counts OUT.counts.csv.gz [--phases OUT.json]
  moecast-convert splice-routing TOKENS.npz|.pt|.jsonl --segments sorry:400,gpqa:400 --counts OUT --changes OUT.json
  moecast-convert to-sglang     PLAN.json --out expert_location.json [--layer-ids 3..60 --num-layers 61]
  moecast-convert to-vllm       PLAN.json --out eplb_maps.npz|.pt

Exit status: 0 done, 1 a bad input (the message names the file and the
record/line/field), 2 bad flags. Formats: integrations/python/CONVERTERS.md.
Needs numpy; torch only for torch (.pt) files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from . import placement, routing, sources
from .common import ConvertError, TraceWriter


def _note(text: str) -> None:
    print("moecast-convert: " + text, file=sys.stderr)


def _write_array_trace(tr: sources.ArrayTrace, args: argparse.Namespace, drop_empty_steps: bool,
                       drop_zero_layers: bool) -> TraceWriter:
    if getattr(args, "layer_ids", None):
        sources.relabel_layers(tr, args.layer_ids)
    counts, steps, ids = tr.counts, tr.steps, list(tr.layer_ids)
    tokens, router = tr.tokens, dict(tr.router)
    keep_l = np.ones(len(ids), dtype=bool)
    if drop_zero_layers:
        keep_l = counts.sum(axis=(0, 2)) > 0
        if not keep_l.any():
            raise ConvertError("%s: every count is zero" % ", ".join(args.inputs))
        dropped = [i for i, k in zip(ids, keep_l) if not k]
        if dropped:
            _note("dropped %d layer(s) whose counts are zero throughout (dense layers?): %s "
                  "(--keep-zero-layers keeps them)" % (len(dropped), sources._short(dropped)))
    order = sorted(np.nonzero(keep_l)[0], key=lambda i: ids[i])
    counts = counts[:, order, :]
    ids = [ids[i] for i in order]
    router = {b: v[:, order, :] for b, v in router.items()}
    keep_t = np.ones(len(steps), dtype=bool)
    if drop_empty_steps:
        keep_t = counts.reshape(len(steps), -1).sum(1) > 0
        if (~keep_t).any():
            _note("dropped %d all-zero step(s) of %d (unfilled ring-buffer rows or idle "
                  "passes; --keep-empty-steps keeps them)" % ((~keep_t).sum(), len(steps)))
    steps = steps + args.step_offset
    if steps.size and steps[0] < 0:
        raise ConvertError("--step-offset %d makes step %d negative" % (args.step_offset, steps[0]))
    for n in tr.notes:
        _note(n)
    blocks = tuple(b for b in ("z", "p", "s") if b in router)
    w = TraceWriter(args.counts, args.router, ids, counts.shape[2],
                    has_tokens=tokens is not None, router_blocks=blocks)
    try:
        for t in np.nonzero(keep_t)[0]:
            w.write(steps[t], counts[t], None if tokens is None else tokens[t],
                    {b: router[b][t] for b in blocks} if blocks else None)
        w.close()
    except BaseException:
        w.abort()
        raise
    if blocks and not args.router:
        _note("the input has router statistics (%s); --router FILE writes them" % ",".join(blocks))
    return w


def cmd_from_sglang(args: argparse.Namespace) -> TraceWriter:
    """`from-sglang`; raises ConvertError for a bad input, OSError when a
    file cannot be written (as every cmd_* function)."""
    tr = sources.read_sglang(args.inputs, args.num_experts)
    return _write_array_trace(tr, args, not args.keep_empty_steps, not args.keep_zero_layers)


def cmd_from_vllm(args: argparse.Namespace) -> TraceWriter:
    tr = sources.read_vllm(args.inputs, args.num_experts)
    return _write_array_trace(tr, args, not args.keep_empty_steps, False)


def cmd_from_megatron(args: argparse.Namespace) -> TraceWriter:
    jsonl = [p for p in args.inputs if p.endswith((".jsonl", ".json"))]
    if jsonl and len(jsonl) != len(args.inputs):
        raise ConvertError("give either .jsonl files or one .npz/.pt file, not both")
    if not jsonl:
        if len(args.inputs) != 1:
            raise ConvertError("give one .npz/.pt file (it holds every step and layer)")
        tr = sources.read_megatron_arrays(args.inputs[0])
        return _write_array_trace(tr, args, False, False)
    if args.layer_ids:
        raise ConvertError("--layer-ids: jsonl records name their layers themselves")
    gen = sources.megatron_jsonl_steps(args.inputs)
    layer_ids, M, blocks, has_tokens = next(gen)
    w = TraceWriter(args.counts, args.router, layer_ids, M, has_tokens=has_tokens,
                    router_blocks=blocks)
    try:
        for step, counts, tokens, router in gen:
            if step + args.step_offset < 0:
                raise ConvertError("--step-offset %d makes step %d negative" %
                                   (args.step_offset, step))
            w.write(step + args.step_offset, counts, tokens, router)
        w.close()
    except BaseException:
        w.abort()
        raise
    if blocks and not args.router:
        _note("the input has router statistics (%s); --router FILE writes them" % ",".join(blocks))
    return w


def _write_json(path: str, doc: Any, also_remove: str | None) -> None:
    """Writes a sidecar JSON (via a temporary file); on failure removes it and
    `also_remove` (the trace written just before), so nothing is left."""
    tmp = path + ".tmp%d" % os.getpid()
    try:
        d = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(d):
            raise ConvertError("%s: directory %s does not exist" % (path, d))
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
            os.replace(tmp, path)
        except OSError as e:
            raise ConvertError("%s: cannot write (%s)" % (path, e.strerror))
    except BaseException:
        for p in (tmp, also_remove):
            if p and os.path.exists(p):
                os.remove(p)
        raise


def _read_routing(args: argparse.Namespace) -> routing.RoutingLog:
    log = routing.read_routing(args.input, num_experts=args.num_experts, top_k=args.top_k,
                               requests_path=args.requests, layer_ids=args.layer_ids)
    if log.m_inferred:
        log.notes.append("%d experts (largest expert id + 1; --num-experts sets M)" %
                         log.num_experts)
    return log


def _write_steps(args: argparse.Namespace, log: routing.RoutingLog,
                 chunks: Iterable[tuple[int, np.ndarray]], tokens_of_step: Any) -> TraceWriter:
    w = TraceWriter(args.counts, None, log.layer_ids, log.num_experts, has_tokens=True)
    try:
        for s0, counts in chunks:
            for i in range(counts.shape[0]):
                w.write(s0 + i + args.step_offset, counts[i], tokens_of_step(s0 + i))
        w.close()
    except BaseException:
        w.abort()
        raise
    return w


def cmd_from_routing(args: argparse.Namespace) -> TraceWriter:
    if args.step_offset < 0:
        raise ConvertError("--step-offset %d: steps start at 0" % args.step_offset)
    log = _read_routing(args)
    prefixes = routing.parse_prefixes(args.phase_prefixes) if args.phase_prefixes else None
    shuffle = prefixes is not None and not args.no_shuffle
    order, phase, notes = routing.request_order(log, prefixes, shuffle, args.seed,
                                                args.drop_unmatched)
    start, end = routing.simulate(log.lengths, order, args.batch, args.admit)
    S = int(end.max())
    active = routing._active_per_step(start, end, S)[0]
    steps = routing.token_steps(log, order, start)
    for n in log.notes + notes:
        _note(n)
    w = _write_steps(args, log, routing.step_counts(log.ids, steps, S, log.num_experts),
                     lambda s: active[s])
    done = "%d requests, %d tokens, batch %d, %d admissions per step, %s" % (
        len(order), int(log.lengths[order].sum()), args.batch, args.admit,
        "file order" if prefixes is None else "phases %s%s" % (
            ",".join(prefixes), "" if args.no_shuffle else " (shuffled, seed %d)" % args.seed))
    if args.phases:
        settings = {"source": os.path.basename(args.input), "batch": args.batch,
                    "admissions_per_step": args.admit, "phase_prefixes": prefixes,
                    "shuffle": not args.no_shuffle, "seed": args.seed, "top_k": log.top_k,
                    "num_experts": log.num_experts, "requests": len(order),
                    "tokens": int(log.lengths[order].sum()), "steps": S,
                    "step_offset": args.step_offset}
        doc = routing.phases_doc(prefixes, phase, start, end, S, args.step_offset, settings)  # type: ignore[arg-type]
        _write_json(args.phases, doc, args.counts)
        done += "; phases %s: %s" % (args.phases, ", ".join(
            "%s@%d" % (p["dataset_prefix"], p["step"]) for p in doc["phases"]))
    print(done)
    return w


def cmd_splice_routing(args: argparse.Namespace) -> TraceWriter:
    if args.step_offset < 0:
        raise ConvertError("--step-offset %d: steps start at 0" % args.step_offset)
    segments = routing.parse_segments(args.segments)
    log = _read_routing(args)
    pools = routing.splice_pools(log, segments)
    for n in log.notes:
        _note(n)
    w = _write_steps(args, log, routing.splice_counts(log, segments, pools, args.tokens_per_step,
                                                      args.seed),
                     lambda s: args.tokens_per_step)
    segs, step = [], args.step_offset
    for name, n in segments:  # type: ignore[assignment]
        segs.append({"pool": name, "start": step, "end": step + n, "steps": n,
                     "pool_tokens": int(len(pools[name][0])),
                     "pool_requests": int(pools[name][1])})
        step += n
    changes = [s["start"] for s in segs[1:]]
    doc = {"change_steps": changes, "segments": segs,
           "settings": {"source": os.path.basename(args.input),
                        "tokens_per_step": args.tokens_per_step, "seed": args.seed,
                        "top_k": log.top_k, "num_experts": log.num_experts,
                        "step_offset": args.step_offset},
           "note": "each step sums the top-k assignments of tokens_per_step tokens drawn "
                   "i.i.d. (uniformly, with replacement) from its segment's pool (the tokens of "
                   "the requests whose dataset name starts with the pool name); the load is "
                   "stationary within a segment and changes at change_steps (the first step of "
                   "each later segment)"}
    if args.changes:
        _write_json(args.changes, doc, args.counts)
    print("%d segments (%s), %d tokens per step, seed %d; change steps %s%s" % (
        len(segs), ", ".join("%s:%d" % (s["pool"], s["steps"]) for s in segs),
        args.tokens_per_step, args.seed, changes or "none",
        "; %s" % args.changes if args.changes else ""))
    return w


def cmd_to_sglang(args: argparse.Namespace) -> None:
    pl, info = placement.to_sglang(args.plan, args.out, emit=args.emit,
                                   num_layers=args.num_layers, layer_ids=args.layer_ids,
                                   num_experts=args.num_experts, ep_size=args.ep_size)
    if args.emit == "physical_to_logical_map":
        print("%s: physical_to_logical_map %d layers x %d physical experts (%d planned, the "
              "others trivial), %d logical experts; SGLang: --init-expert-location %s "
              "--ep-num-redundant-experts %d" % (args.out, info["layers"], info["slots"],
                                                 info["planned"], info["experts"], args.out,
                                                 info["redundant"]))
    else:
        print("%s: logical_count %d layers x %d experts (%d from %s); SGLang: "
              "--init-expert-location %s" % (args.out, info["layers"], info["experts"],
                                             info["planned"], pl.kind, args.out))


def cmd_to_vllm(args: argparse.Namespace) -> None:
    pl, info = placement.to_vllm(args.plan, args.out, num_experts=args.num_experts,
                                 max_replicas=args.max_replicas)
    print("%s: physical_to_logical_map [%d, %d], logical_to_physical_map [%d, %d, %d], "
          "logical_replica_count [%d, %d] from %s" % (
              args.out, info["layers"], info["slots"], info["layers"], info["experts"],
              info["max_replicas"], info["layers"], info["experts"], pl.kind))


def _pos(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return v


def build_parser() -> argparse.ArgumentParser:
    """The moecast-convert argument parser (one subcommand each). Raises
    nothing."""
    p = argparse.ArgumentParser(
        prog="moecast-convert",
        description="Convert SGLang / vLLM / Megatron-LM expert-load records to moecast traces, "
                    "and moecast placements to SGLang / vLLM placement files. Formats: "
                    "integrations/python/CONVERTERS.md.")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    def trace_out(sp: argparse.ArgumentParser, router: bool = False) -> None:
        sp.add_argument("--counts", required=True, metavar="OUT.counts.csv[.gz]",
                        help="counts trace to write (gzip when it ends in .gz)")
        if router:
            sp.add_argument("--router", metavar="OUT.router.csv[.gz]",
                            help="router trace to write (inputs with router_z[/p/s] only)")
        else:
            sp.set_defaults(router=None)
        sp.add_argument("--step-offset", type=int, default=0, metavar="N",
                        help="add N to every step number (default 0)")

    s = sub.add_parser("from-sglang", help="SGLang expert distribution recorder dump -> trace",
                       description="SGLang ExpertDistributionRecorder dump (torch.save) -> "
                       "moecast trace. 'stat' mode: one file with logical_count [steps, layers, "
                       "experts]; 'per_pass' mode: one file per rank with records and "
                       "last_physical_to_logical_map (summed over the files).")
    s.add_argument("inputs", nargs="+", metavar="DUMP")
    trace_out(s)
    s.add_argument("--layer-ids", metavar="IDS",
                   help="layer id of each layer row, e.g. 0..60 (default: the row index, "
                        "which is SGLang's layer index)")
    s.add_argument("--num-experts", type=_pos, metavar="M",
                   help="logical experts (per_pass; default: largest in the map + 1)")
    s.add_argument("--keep-zero-layers", action="store_true",
                   help="keep layers whose counts are zero throughout (dense layers)")
    s.add_argument("--keep-empty-steps", action="store_true",
                   help="keep all-zero rows (unfilled ring-buffer rows)")
    s.set_defaults(func=cmd_from_sglang)

    s = sub.add_parser("from-vllm", help="vLLM EPLB expert_load_window dump -> trace",
                       description="vLLM EplbState dump (.npz or torch .pt with "
                       "expert_load_window [window, moe layers, physical experts] and "
                       "physical_to_logical_map [moe layers, physical experts]; optional "
                       "expert_load_window_step, layer_ids, num_logical_experts) -> moecast "
                       "trace. Several files (one per rank) are summed.")
    s.add_argument("inputs", nargs="+", metavar="DUMP")
    trace_out(s)
    s.add_argument("--layer-ids", metavar="IDS",
                   help="layer id of each MoE layer, e.g. 3..60 (default: layer_ids in the "
                        "dump, else 0..L-1)")
    s.add_argument("--num-experts", type=_pos, metavar="M",
                   help="logical experts (default: num_logical_experts, else largest in the "
                        "map + 1)")
    s.add_argument("--keep-empty-steps", action="store_true",
                   help="keep all-zero window rows (not yet filled)")
    s.set_defaults(func=cmd_from_vllm)

    s = sub.add_parser("from-megatron", help="Megatron-LM tokens-per-expert jsonl / npz -> trace",
                       description="Megatron-LM tokens per expert -> moecast trace. jsonl: one "
                       "object per (step, layer) or per step; several files (e.g. one per "
                       "pipeline stage) are merged by step. npz/.pt: tokens_per_expert "
                       "[steps, layers, experts] with optional steps, layers, tokens, "
                       "router_z/p/s.")
    s.add_argument("inputs", nargs="+", metavar="INPUT")
    trace_out(s, router=True)
    s.add_argument("--layer-ids", metavar="IDS",
                   help="npz only: layer id of each layer row (default: layers in the file, "
                        "else 0..L-1)")
    s.set_defaults(func=cmd_from_megatron)

    def routing_in(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("input", metavar="TOKENS.npz|.pt|.jsonl",
                        help="per-token routing log: the serving development npz (expert_ids, "
                             "generation, token_position), an HF-style npz/.pt (topk_ids or "
                             "router_logits, request) or a vLLM-style jsonl (one line per token: "
                             "request, layer_topk)")
        sp.add_argument("--requests", metavar="REQUESTS.json",
                        help="dataset name of each request: a JSON list of {\"request\" or "
                             "\"generation\": id, \"dataset\": name[, \"tokens\": n]} "
                             "(default for the development npz: NAME.generations.json beside "
                             "NAME.tokens.npz)")
        sp.add_argument("--num-experts", type=_pos, metavar="M",
                        help="experts per layer (default: largest expert id + 1; router_logits: "
                             "their width)")
        sp.add_argument("--top-k", type=_pos, metavar="K",
                        help="experts per token: the first K slots of each token (default: all "
                             "slots of the input; required with router_logits)")
        sp.add_argument("--layer-ids", metavar="IDS",
                        help="layer id of each layer, e.g. 3..60 (default: 'layers' in the "
                             "input, else 0..L-1)")
        sp.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of numpy.random.default_rng (default 0)")

    s = sub.add_parser("from-routing", help="per-token routing log -> trace of a simulated "
                       "continuous-batching server",
                       description="Per-token routing log -> moecast counts trace of a simulated "
                       "continuous-batching server: requests queued (in file order, or in phases "
                       "by dataset-name prefix, shuffled within a phase), at most --batch "
                       "decoding at once, at most --admit admitted per step, a finished request "
                       "replaced from the queue; each step sums the top-K assignments of the "
                       "tokens decoded in it, and its tokens column is the number of active "
                       "requests. With --phase-prefixes mmlu_dev,mmlu_val,sorry,gpqa,mmlu_test,"
                       "mmlu_pro,Poly,tulu --seed 11 (batch 32, 2 admissions) the serving "
                       "development npz gives exactly shared/data/serving/"
                       "gptoss20b_dev_b32.counts.csv.gz.")
    routing_in(s)
    trace_out(s)
    s.add_argument("--batch", type=_pos, default=32, metavar="B",
                   help="most requests decoding at once (default 32)")
    s.add_argument("--admit", type=_pos, default=2, metavar="A",
                   help="most requests admitted per step (default 2)")
    s.add_argument("--phase-prefixes", metavar="P1,P2,...",
                   help="queue the requests in phases: phase i holds the requests whose dataset "
                        "name starts with Pi (the longest matching prefix wins), phases in this "
                        "order, each shuffled with --seed (default: file order, no phases)")
    s.add_argument("--no-shuffle", action="store_true",
                   help="keep file order within each phase")
    s.add_argument("--drop-unmatched", action="store_true",
                   help="leave out requests whose dataset matches no phase prefix (default: "
                        "an error)")
    s.add_argument("--phases", metavar="OUT.json",
                   help="write per phase its first admission step, requests and halfway step "
                        "(needs --phase-prefixes)")
    s.set_defaults(func=cmd_from_routing)

    s = sub.add_parser("splice-routing", help="per-token routing log -> trace of spliced "
                       "stationary segments (ground truth for shift detection)",
                       description="Per-token routing log -> moecast counts trace in segments: "
                       "each step sums the top-K assignments of --tokens-per-step tokens drawn "
                       "i.i.d. (with replacement) from the segment's pool (the tokens of the "
                       "requests whose dataset name starts with the pool name); the load is "
                       "stationary within a segment and changes at the known steps written to "
                       "--changes.")
    routing_in(s)
    trace_out(s)
    s.add_argument("--segments", required=True, metavar="POOL:STEPS,...",
                   help="segments in order, e.g. sorry:400,gpqa:400,mmlu:400")
    s.add_argument("--tokens-per-step", type=_pos, default=32, metavar="T",
                   help="tokens drawn per step (default 32)")
    s.add_argument("--changes", metavar="OUT.json",
                   help="write the change steps and segments (ground truth)")
    s.set_defaults(func=cmd_splice_routing)

    s = sub.add_parser("to-sglang", help="moecast plan -> SGLang --init-expert-location JSON",
                       description="moecast plan JSON (moecast plan --json) or RecommendPlacement "
                       "response JSON -> SGLang expert location JSON.")
    s.add_argument("plan", metavar="PLAN.json")
    s.add_argument("--out", required=True, metavar="OUT.json")
    s.add_argument("--emit", default="physical_to_logical_map",
                   choices=("physical_to_logical_map", "logical_count"),
                   help="the placement (default), or the planned loads for SGLang's own EPLB")
    s.add_argument("--layer-ids", metavar="IDS",
                   help="model layer index of each plan row, e.g. 3..60 (default 0..L-1)")
    s.add_argument("--num-layers", type=_pos, metavar="N",
                   help="the model's layer count, dense layers included (default: largest "
                        "layer id + 1); rows not planned get SGLang's trivial map")
    s.add_argument("--num-experts", type=_pos, metavar="M",
                   help="logical experts (default: from the plan)")
    s.add_argument("--ep-size", type=_pos, metavar="P",
                   help="check that the physical experts split evenly over P GPUs")
    s.set_defaults(func=cmd_to_sglang)

    s = sub.add_parser("to-vllm", help="moecast plan -> vLLM EplbState maps (.npz / .pt)",
                       description="moecast plan JSON or RecommendPlacement response JSON -> "
                       "vLLM physical_to_logical_map, logical_to_physical_map and "
                       "logical_replica_count.")
    s.add_argument("plan", metavar="PLAN.json")
    s.add_argument("--out", required=True, metavar="OUT.npz|OUT.pt")
    s.add_argument("--num-experts", type=_pos, metavar="M",
                   help="logical experts (default: from the plan)")
    s.add_argument("--max-replicas", type=_pos, metavar="R",
                   help="last dimension of logical_to_physical_map (default: physical - "
                        "logical + 1, i.e. num_redundant_experts + 1)")
    s.set_defaults(func=cmd_to_vllm)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs moecast-convert; returns 0, or 1 after printing a ConvertError or
    OSError (a bad input or an unwritable output). Raises SystemExit(2) for
    bad flags (argparse) and SystemExit(0) for --help."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd == "from-routing" and args.phases and not args.phase_prefixes:
        parser.error("from-routing: --phases needs --phase-prefixes")
    if args.cmd == "from-routing" and not args.phase_prefixes and (args.no_shuffle or
                                                                  args.drop_unmatched):
        parser.error("from-routing: --no-shuffle and --drop-unmatched need --phase-prefixes")
    try:
        w = args.func(args)
    except ConvertError as e:
        print("moecast-convert %s: %s" % (args.cmd, e), file=sys.stderr)
        return 1
    except OSError as e:
        print("moecast-convert %s: %s" % (args.cmd, e), file=sys.stderr)
        return 1
    if isinstance(w, TraceWriter):
        print(w.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
