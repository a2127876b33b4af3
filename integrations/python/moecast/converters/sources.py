"""Readers of the serving/training stacks' expert-load records, producing the
steps of a moecast trace (design section 7).

Formats (details and the public code they follow: ../README.md):

SGLang, ExpertDistributionRecorder (python/sglang/srt/eplb/expert_distribution.py,
  formerly python/sglang/srt/managers/expert_distribution.py):
  - "stat" / "stat_approx" mode, dump_record() -> torch.save of
      {"rank": int, "logical_count": int32 [steps, num_layers, num_logical_experts],
       "average_utilization_rate_over_window": float or None}
    (_StatAccumulator.dump; the counts are all-reduced over ranks and only
    rank 0 writes `expert_distribution_recorder_{time}.pt`). Rows come from
    a buffer of --expert-distribution-recorder-buffer-size forward passes
    (default 1000, a ring: unfilled rows are zero, and once it wraps the rows
    are rotated by an amount the dump does not record; -1 = unbounded,
    chronological). num_layers counts every layer of the model, so dense
    layers are all-zero rows.
  - "per_pass" mode -> torch.save of {"records": [{"forward_pass_id": int,
      "rank": int, "gatherer_key": str, "global_physical_count": [num_layers,
      num_physical_experts]}, ...], "last_physical_to_logical_map":
      [num_layers, num_physical_experts]} (_DetailAccumulator.dump), one file
    per rank (`expert_distribution_recorder_{time}_{rank}.pt`).
vLLM, EplbState (vllm/distributed/eplb/eplb_state.py): expert_load_window
  int32 [window_size, num_moe_layers, num_physical_experts], a ring whose next
  write position is expert_load_window_step, and physical_to_logical_map
  [num_moe_layers, num_physical_experts]. vLLM writes no file; the dump
  format is ours (README).
Megatron-LM (megatron/core/transformer/moe/router.py TopKRouter:
  tokens per expert = routing_map.sum(dim=0), accumulated over a global
  batch in the buffer local_tokens_per_expert [num_moe_experts] and
  all-reduced in _update_router_expert_bias, megatron/core/distributed/
  finalize_model_grads.py). Megatron writes no file either; the jsonl / npz
  layouts are ours (README).
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .common import (ROUTER_BLOCKS, ConvertError, as_array, check_counts, check_finite,
                     check_int_array, check_shape, jsonl_objects, layer_id_array,
                     load_tensor_file, parse_id_list, require_key, scalar_int)


class ArrayTrace:
    """A whole trace in memory: counts int64 [T, L, M], steps [T] strictly
    increasing, layer_ids [L], tokens [T] or None, router {block: [T, L, M]}."""

    def __init__(self, counts: np.ndarray, steps: Any, layer_ids: Iterable[int],
                 tokens: np.ndarray | None = None, router: dict[str, np.ndarray] | None = None,
                 notes: Iterable[str] = ()) -> None:
        self.counts = counts
        self.steps = np.asarray(steps, dtype=np.int64)
        self.layer_ids = list(layer_ids)
        self.tokens = tokens
        self.router = router or {}
        self.notes = list(notes)


def fold_physical(phys: np.ndarray, p2l: np.ndarray, num_logical: int, where: str,
                  phys_name: str, map_name: str) -> np.ndarray:
    """Sums physical-slot counts [..., L, S] into logical experts [..., L, M]
    through p2l [L, S] (entries -1 = empty slot, allowed only with 0 counts).
    Raises ConvertError when the shapes disagree, p2l is out of range, or an
    empty slot has counts."""
    L, S = p2l.shape
    flat = phys.reshape(-1, L, S)
    out = np.zeros((flat.shape[0], L, num_logical), dtype=np.int64)
    for l in range(L):
        empty = p2l[l] < 0
        if empty.any():
            bad = flat[:, l, empty] != 0
            if bad.any():
                s = int(np.nonzero(empty)[0][np.argwhere(bad)[0][1]])
                raise ConvertError("%s: %s has counts in layer %d slot %d, which %s[%d, %d] = -1 "
                                   "marks as empty" % (where, phys_name, l, s, map_name, l, s))
        onehot = np.zeros((S, num_logical), dtype=np.int64)
        onehot[np.nonzero(~empty)[0], p2l[l][~empty]] = 1
        out[:, l, :] = flat[:, l, :] @ onehot
    return out.reshape(phys.shape[:-2] + (L, num_logical))


def _num_logical(p2l: np.ndarray, override: int | None, where: str, map_name: str) -> int:
    top = int(p2l.max()) + 1 if p2l.size else 0
    if override is None:
        return top
    if override < top:
        raise ConvertError("%s: %s names logical expert %d but --num-experts is %d" %
                           (where, map_name, top - 1, override))
    return override


# ---------------------------------------------------------------------------
# SGLang


def read_sglang(paths: Sequence[str], num_experts: int | None = None) -> ArrayTrace:
    """Reads SGLang ExpertDistributionRecorder dumps: one "stat" dump, or the
    "per_pass" dumps of every rank. Raises ConvertError for a file that cannot
    be read (or a torch file without PyTorch), missing keys, shapes or values
    that do not fit, ranks that disagree, or num_experts below an id in the
    mapping."""
    if len(paths) == 1:
        data = load_tensor_file(paths[0])
        if "logical_count" in data:
            return _sglang_stat(paths[0], data)
    datas = []
    for p in paths:
        d = load_tensor_file(p)
        if "logical_count" in d:
            raise ConvertError("%s: a 'stat' dump (logical_count) is converted on its own; "
                               "rank 0 writes it already summed over ranks" % p)
        datas.append((p, d))
    return _sglang_per_pass(datas, num_experts)


def _sglang_stat(path: str, data: dict[str, Any]) -> ArrayTrace:
    lc = as_array(data["logical_count"], path, "logical_count")
    if lc.ndim == 2:  # a single [layers, experts] table (init_by_eplb accepts it)
        lc = lc[None]
    check_shape(lc, path, "logical_count", "[steps, layers, logical experts]", ndim=3)
    counts = check_counts(lc, path, "logical_count")
    T, L, M = counts.shape
    notes = []
    if T > 1 and (counts.reshape(T, -1).sum(1) > 0).all():
        notes.append("warning: %s: all %d rows of logical_count are filled; if SGLang's "
                     "recorder ring buffer (--expert-distribution-recorder-buffer-size, "
                     "default 1000) wrapped, the rows are rotated by an unknown amount "
                     "(record with buffer size -1 for chronological rows)" % (path, T))
    return ArrayTrace(counts, np.arange(T), range(L), notes=notes)


def _sglang_per_pass(datas: list[tuple[str, dict[str, Any]]],
                     num_experts: int | None) -> ArrayTrace:
    p2l = None
    by_pass: dict[Any, Any] = {}
    for path, d in datas:
        records = require_key(d, "records", path,
                              "an SGLang expert distribution dump: 'logical_count' (stat mode) "
                              "or 'records' (per_pass mode)")
        if not isinstance(records, (list, tuple)):
            raise ConvertError("%s: records is a %s, not a list" % (path, type(records).__name__))
        m = as_array(require_key(d, "last_physical_to_logical_map", path,
                                 "per_pass dumps carry the placement to fold physical slots"),
                     path, "last_physical_to_logical_map")
        check_shape(m, path, "last_physical_to_logical_map", "[layers, physical experts]", ndim=2)
        m = check_int_array(m, path, "last_physical_to_logical_map", lo=0)
        if p2l is None:
            p2l, first = m, path
        elif m.shape != p2l.shape or (m != p2l).any():
            raise ConvertError("%s: last_physical_to_logical_map differs from the one in %s" %
                               (path, first))
        for i, r in enumerate(records):
            where = "%s: records[%d]" % (path, i)
            if not isinstance(r, dict):
                raise ConvertError("%s is a %s, not a dict" % (where, type(r).__name__))
            if "topk_ids_of_layer" in r:
                raise ConvertError("%s: a per_token record (topk_ids_of_layer); convert dumps "
                                   "made in 'stat' or 'per_pass' mode" % where)
            fp = scalar_int(require_key(r, "forward_pass_id", where, "the step"),
                            where, "forward_pass_id")
            c = as_array(require_key(r, "global_physical_count", where,
                                     "counts per layer and physical slot"),
                         where, "global_physical_count")
            check_shape(c, where, "global_physical_count", "[layers, physical experts]",
                        shape=p2l.shape)
            c = check_counts(c, where, "global_physical_count")
            if fp in by_pass:
                by_pass[fp] += c  # the ranks' passes add up, as SGLang's all-reduce does
            else:
                by_pass[fp] = c
    if not by_pass:
        raise ConvertError("%s: no records" % ", ".join(p for p, _ in datas))
    M = _num_logical(p2l, num_experts, first, "last_physical_to_logical_map")  # type: ignore[arg-type]
    steps = sorted(by_pass)
    phys = np.stack([by_pass[s] for s in steps])
    counts = fold_physical(phys, p2l, M, first, "global_physical_count",  # type: ignore[arg-type]
                           "last_physical_to_logical_map")
    return ArrayTrace(counts, steps, range(p2l.shape[0]),  # type: ignore[union-attr]
                      notes=["folded %d physical slots to %d logical experts with "
                             "last_physical_to_logical_map" % (p2l.shape[1], M)])  # type: ignore[union-attr]


# ---------------------------------------------------------------------------
# vLLM


def read_vllm(paths: Sequence[str], num_experts: int | None = None) -> ArrayTrace:
    """Reads dumps of vLLM's EplbState load window (.npz or torch files),
    unrolling the ring. Raises ConvertError for a file that cannot be read,
    missing keys, shapes or values that do not fit, or dumps that disagree."""
    total = None
    for path in paths:
        d = load_tensor_file(path)
        w = as_array(require_key(d, "expert_load_window", path,
                                 "EplbState.expert_load_window [window, moe layers, physical "
                                 "experts]"), path, "expert_load_window")
        check_shape(w, path, "expert_load_window", "[window, moe layers, physical experts]",
                    ndim=3)
        w = check_counts(w, path, "expert_load_window")
        m = as_array(require_key(d, "physical_to_logical_map", path,
                                 "EplbState.physical_to_logical_map [moe layers, physical "
                                 "experts]"), path, "physical_to_logical_map")
        check_shape(m, path, "physical_to_logical_map", "[moe layers, physical experts]",
                    shape=(w.shape[1], w.shape[2]))
        m = check_int_array(m, path, "physical_to_logical_map", lo=0, allow=(-1,))
        step = None
        if "expert_load_window_step" in d:
            step = scalar_int(d["expert_load_window_step"], path, "expert_load_window_step")
            if not 0 <= step < w.shape[0]:
                raise ConvertError("%s: expert_load_window_step = %d is outside [0, %d)" %
                                   (path, step, w.shape[0]))
        layer_ids = None
        if "layer_ids" in d:
            layer_ids = layer_id_array(d["layer_ids"], path, "layer_ids", w.shape[1])
        n = num_experts
        if "num_logical_experts" in d:
            n2 = scalar_int(d["num_logical_experts"], path, "num_logical_experts")
            if n is not None and n != n2:
                raise ConvertError("%s: num_logical_experts = %d but --num-experts is %d" %
                                   (path, n2, n))
            n = n2
        cur = (path, w, m, step, layer_ids, n)
        if total is None:
            total = cur
            continue
        p0, w0, m0, s0, l0, n0 = total
        for name, a, b in (("expert_load_window shape", w.shape, w0.shape),
                           ("expert_load_window_step", step, s0), ("layer_ids", layer_ids, l0),
                           ("num_logical_experts", n, n0)):
            if a != b:
                raise ConvertError("%s: %s %s differs from %s in %s" % (path, name, a, b, p0))
        if (m != m0).any():
            raise ConvertError("%s: physical_to_logical_map differs from the one in %s" %
                               (path, p0))
        total = (p0, w0 + w, m0, s0, l0, n0)  # ranks add up, as vLLM's all-reduce does
    path, w, m, step, layer_ids, n = total  # type: ignore[misc]
    if step is not None:
        w = np.roll(w, -step, axis=0)  # oldest row first
    M = _num_logical(m, n, path, "physical_to_logical_map")
    counts = fold_physical(w, m, M, path, "expert_load_window", "physical_to_logical_map")
    notes = ["folded %d physical slots to %d logical experts with physical_to_logical_map%s" %
             (m.shape[1], M, "; rows rotated so that the oldest comes first "
              "(expert_load_window_step = %d)" % step if step is not None else "")]
    return ArrayTrace(counts, np.arange(w.shape[0]),
                      layer_ids if layer_ids is not None else range(w.shape[1]), notes=notes)


# ---------------------------------------------------------------------------
# Megatron-LM

_STEP_KEYS: tuple[str, ...] = ("step", "iteration")
_LAYER_KEYS: tuple[str, ...] = ("layer", "layer_number")


def _one_of(obj: dict[str, Any], keys: Sequence[str], where: str,
            required: bool = True) -> tuple[str | None, Any]:
    found = [k for k in keys if k in obj]
    if len(found) > 1:
        raise ConvertError("%s: has both '%s' and '%s'; give one" % (where, found[0], found[1]))
    if not found:
        if required:
            raise ConvertError("%s: missing key '%s'" % (where, "' or '".join(keys)))
        return None, None
    return found[0], obj[found[0]]


def _json_int(v: Any, where: str, name: str, lo: int | None = None) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or \
            (isinstance(v, float) and (v != v or v in (float("inf"), float("-inf")) or v != int(v))):
        raise ConvertError("%s: '%s' = %s is not an integer" % (where, name, json.dumps(v)))
    v = int(v)
    if lo is not None and v < lo:
        raise ConvertError("%s: '%s' = %d must be >= %d" % (where, name, v, lo))
    return v


def _json_matrix(v: Any, where: str, name: str, ndim: int) -> np.ndarray:
    """A list (ndim 1) or list of lists (ndim 2) of numbers."""
    if not isinstance(v, list) or not v:
        raise ConvertError("%s: '%s' must be a non-empty list" % (where, name))
    rows = v if ndim == 2 else [v]
    width = None
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not row:
            raise ConvertError("%s: '%s'[%d] must be a non-empty list of numbers" %
                               (where, name, i))
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise ConvertError("%s: '%s'[%d] has %d values, '%s'[0] has %d" %
                               (where, name, i, len(row), name, width))
        for j, x in enumerate(row):
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise ConvertError("%s: '%s'%s = %s is not a number" %
                                   (where, name, "[%d][%d]" % (i, j) if ndim == 2 else "[%d]" % j,
                                    json.dumps(x)))
    return np.asarray(rows, dtype=np.float64 if any(
        isinstance(x, float) for row in rows for x in row) else np.int64)


def _megatron_jsonl_records(path: str) -> Iterator[tuple[Any, ...]]:
    """Yields (step, layer, counts [M], tokens, router {b: [M]}, where) from one
    jsonl file, in file order; steps must not decrease."""
    last = None
    for _, where, obj in jsonl_objects(path):
        skey, step = _one_of(obj, _STEP_KEYS, where)
        step = _json_int(step, where, skey)  # type: ignore[arg-type]
        if last is not None and step < last:
            raise ConvertError("%s: %s %d comes after %s %d: records must be in "
                               "non-decreasing step order" % (where, skey, step, skey, last))
        last = step
        tpe = require_key(obj, "tokens_per_expert", where, "counts per expert")
        two_d = isinstance(tpe, list) and tpe and isinstance(tpe[0], list)
        counts = _json_matrix(tpe, where, "tokens_per_expert", 2 if two_d else 1)
        if two_d:
            counts = check_counts(counts, where, "tokens_per_expert")
        else:
            counts = check_counts(counts[0], where, "tokens_per_expert")[None]
        lkey, layer = _one_of(obj, _LAYER_KEYS, where, required=not two_d)
        if two_d:
            if lkey is not None:
                raise ConvertError("%s: a per-step record (2-D tokens_per_expert) names its "
                                   "layers with 'layers', not '%s'" % (where, lkey))
            if "layers" in obj:
                lv = obj["layers"]
                if not isinstance(lv, list) or len(lv) != counts.shape[0]:
                    raise ConvertError("%s: 'layers' must be a list of %d layer ids (one per "
                                       "row of tokens_per_expert)" % (where, counts.shape[0]))
                layers = [_json_int(x, where, "layers[%d]" % i, lo=0)
                          for i, x in enumerate(lv)]
                if len(set(layers)) != len(layers):
                    raise ConvertError("%s: 'layers' lists a layer twice" % where)
            else:
                layers = list(range(counts.shape[0]))
        else:
            layers = [_json_int(layer, where, lkey, lo=0)]  # type: ignore[arg-type]
        tokens = None
        if "tokens" in obj:
            tokens = _json_int(obj["tokens"], where, "tokens", lo=0)
        router = {}
        for b in ROUTER_BLOCKS:
            key = "router_" + b
            if key in obj:
                r = _json_matrix(obj[key], where, key, 2 if two_d else 1)
                if r.shape != counts.shape:
                    raise ConvertError("%s: '%s' has shape %s, tokens_per_expert %s" %
                                       (where, key, r.shape, counts.shape))
                router[b] = check_finite(r, where, key)
        for i, lid in enumerate(layers):
            yield (step, lid, counts[i], tokens, {b: v[i] for b, v in router.items()}, where)


def read_megatron_jsonl(paths: Sequence[str]) -> Iterator[tuple[int, dict[int, tuple[Any, ...]]]]:
    """Merges one or more jsonl files (e.g. one per pipeline stage) by step and
    yields, per step: (step, {layer: (counts, tokens, router, where)}).
    Raises ConvertError (while iterating) for a file that cannot be opened, a
    line that is not a JSON object, a bad record, decreasing steps, or a
    layer given twice in one step."""
    merged = heapq.merge(*[_megatron_jsonl_records(p) for p in paths], key=lambda r: r[0])
    for step, group in itertools.groupby(merged, key=lambda r: r[0]):
        layers = {}  # type: ignore[var-annotated]
        for _, lid, counts, tokens, router, where in group:
            if lid in layers:
                raise ConvertError("%s: step %d lists layer %d again (first at %s)" %
                                   (where, step, lid, layers[lid][3]))
            layers[lid] = (counts, tokens, router, where)
        yield step, layers  # type: ignore[misc]


def megatron_jsonl_steps(paths: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    """Validated steps of jsonl input: yields (layer_ids, M, blocks, has_tokens)
    first, then (step, counts [L, M], tokens, router {b: [L, M]}).
    Raises ConvertError (while iterating) for what read_megatron_jsonl
    rejects, no records at all, and steps whose layers, expert count, router
    blocks or tokens differ from the first step's."""
    gen = read_megatron_jsonl(paths)
    first = next(gen, None)
    if first is None:
        raise ConvertError("%s: no records" % ", ".join(paths))
    step0, layers0 = first
    layer_ids = sorted(layers0)
    any_rec = layers0[layer_ids[0]]
    M = any_rec[0].shape[0]
    blocks = tuple(b for b in ROUTER_BLOCKS if b in any_rec[2])
    has_tokens = any_rec[1] is not None
    yield layer_ids, M, blocks, has_tokens

    def rows(step: int, layers: dict[int, tuple[Any, ...]]) -> tuple[Any, ...]:
        if sorted(layers) != layer_ids:
            where = min(v[3] for v in layers.values())
            missing = sorted(set(layer_ids) - set(layers))
            extra = sorted(set(layers) - set(layer_ids))
            raise ConvertError("%s: step %d has layers %s; the first step (%d) has %s%s%s" % (
                where, step, _short(sorted(layers)), step0, _short(layer_ids),
                "; missing %s" % _short(missing) if missing else "",
                "; not in the first step: %s" % _short(extra) if extra else ""))
        counts = np.zeros((len(layer_ids), M), dtype=np.int64)
        router = {b: np.zeros((len(layer_ids), M)) for b in blocks}
        tokens = None
        for i, lid in enumerate(layer_ids):
            c, t, r, where = layers[lid]
            if c.shape[0] != M:
                raise ConvertError("%s: layer %d has %d experts in tokens_per_expert, the first "
                                   "step has %d" % (where, lid, c.shape[0], M))
            if (t is not None) != has_tokens:
                raise ConvertError("%s: 'tokens' is %s here but %s in the first record" %
                                   (where, "given" if t is not None else "missing",
                                    "given" if has_tokens else "missing"))
            if i == 0:
                tokens = t
            elif t != tokens:
                raise ConvertError("%s: step %d layer %d has tokens %d, layer %d has %d: "
                                   "tokens is per step" % (where, step, lid, t, layer_ids[0],  # type: ignore[str-format]
                                                           tokens))
            if tuple(b for b in ROUTER_BLOCKS if b in r) != blocks:
                raise ConvertError("%s: router fields %s differ from the first record's %s" % (
                    where, ",".join("router_" + b for b in r) or "none",
                    ",".join("router_" + b for b in blocks) or "none"))
            counts[i] = c
            for b in blocks:
                router[b][i] = r[b]
        return step, counts, tokens, router

    yield rows(step0, layers0)
    for step, layers in gen:
        yield rows(step, layers)


def _short(ids: Sequence[int]) -> str:
    return "[" + ",".join(map(str, ids[:10])) + (",...]" if len(ids) > 10 else "]")


def read_megatron_arrays(path: str) -> ArrayTrace:
    """npz (or torch file) with tokens_per_expert [steps, layers, experts].
    Raises ConvertError for a file that cannot be read, a missing
    tokens_per_expert, or optional arrays (steps, layer ids, tokens, router
    statistics) of the wrong shape or with bad values."""
    d = load_tensor_file(path)
    tpe = as_array(require_key(d, "tokens_per_expert", path,
                               "counts [steps, layers, experts]"), path, "tokens_per_expert")
    check_shape(tpe, path, "tokens_per_expert", "[steps, layers, experts]", ndim=3)
    counts = check_counts(tpe, path, "tokens_per_expert")
    T, L, M = counts.shape
    skey = [k for k in _STEP_KEYS + ("steps", "iterations") if k in d]
    if len(skey) > 1:
        raise ConvertError("%s: has both '%s' and '%s'; give one" % (path, skey[0], skey[1]))
    if skey:
        s = as_array(d[skey[0]], path, skey[0])
        check_shape(s, path, skey[0], "[steps]", shape=(T,))
        steps = check_int_array(s, path, skey[0], lo=0)
        dec = np.nonzero(np.diff(steps) <= 0)[0]
        if dec.size:
            i = int(dec[0]) + 1
            raise ConvertError("%s: %s[%d] = %d does not increase (%s[%d] = %d)" %
                               (path, skey[0], i, steps[i], skey[0], i - 1, steps[i - 1]))
    else:
        steps = np.arange(T)
    lkey = [k for k in ("layers", "layer_numbers") if k in d]
    if len(lkey) > 1:
        raise ConvertError("%s: has both 'layers' and 'layer_numbers'; give one" % path)
    if lkey:
        layer_ids = layer_id_array(d[lkey[0]], path, lkey[0], L)
    else:
        layer_ids = list(range(L))
    tokens = None
    if "tokens" in d:
        t = as_array(d["tokens"], path, "tokens")
        if t.ndim == 2:
            check_shape(t, path, "tokens", "[steps] or [steps, layers]", shape=(T, L))
            t = check_counts(t, path, "tokens")
            diff = np.nonzero((t != t[:, :1]).any(1))[0]
            if diff.size:
                i = int(diff[0])
                j = int(np.nonzero(t[i] != t[i, 0])[0][0])
                raise ConvertError("%s: tokens[%d, %d] = %d differs from tokens[%d, 0] = %d: "
                                   "tokens is per step" % (path, i, j, t[i, j], i, t[i, 0]))
            t = t[:, 0]
        else:
            check_shape(t, path, "tokens", "[steps] or [steps, layers]", shape=(T,))
            t = check_counts(t, path, "tokens")
        tokens = t
    router = {}
    for b in ROUTER_BLOCKS:
        key = "router_" + b
        if key in d:
            r = as_array(d[key], path, key)
            check_shape(r, path, key, "[steps, layers, experts]", shape=(T, L, M))
            router[b] = check_finite(r, path, key)
    if router and "z" not in router:
        raise ConvertError("%s: router_p / router_s need router_z (design section 7)" % path)
    return ArrayTrace(counts, steps, layer_ids, tokens=tokens, router=router)


def relabel_layers(trace: ArrayTrace, text: str) -> None:
    """Sets trace.layer_ids from a --layer-ids list. Raises ConvertError when
    the list is malformed or names another number of layers."""
    ids = parse_id_list(text, "--layer-ids")
    if len(ids) != len(trace.layer_ids):
        raise ConvertError("--layer-ids '%s' names %d layers; the input has %d" %
                           (text, len(ids), len(trace.layer_ids)))
    trace.layer_ids = ids
