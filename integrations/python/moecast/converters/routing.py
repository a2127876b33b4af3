"""Per-token routing logs -> moecast traces (design section 7), through a
continuous-batching simulation (from-routing) or i.i.d. draws from token
pools in segments (splice-routing).

Inputs (layouts: ../README.md, "from-routing"):
- the development npz of the serving data (shared/data/serving/README.md):
  `expert_ids` [T, L, K], `generation` [T], `token_position` [T], with the
  sidecar `NAME.generations.json` (per generation: dataset, category, tokens);
- an HF `output_router_logits`-style npz / torch file: `topk_ids` [T, L, K]
  (or `router_logits` [T, L, M], top-K taken here) and `request` [T];
- a vLLM-style jsonl, one line per decoded token:
  {"request": id, "layer_topk": [[K ids] per layer], "dataset": ...}.
Rows of one request are in decode order; requests may interleave.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .common import (ConvertError, as_array, check_int_array, check_shape, jsonl_objects,
                     layer_id_array, load_tensor_file, parse_id_list, require_key)

HALFWAY_NOTE = ("phases: step at which the first request of each phase was admitted; halfway: "
                "first step at which at least half of the active requests belong to that phase")


class RoutingLog:
    """Per-token routing: ids int [T, L, K] (expert of each top-k slot per
    layer), req int [T] (request index 0..R-1, in order of first appearance),
    names [R] (the request ids as the input spells them), datasets [R] (str or
    None), layer_ids [L], num_experts M."""

    def __init__(self, path: str, ids: np.ndarray, req: np.ndarray, names: list[Any],
                 datasets: list[str | None], layer_ids: Sequence[int], num_experts: int,
                 notes: Sequence[str] = ()) -> None:
        self.path = path
        self.ids = ids
        self.req = req
        self.names = list(names)
        self.datasets = list(datasets)
        self.layer_ids = list(layer_ids)
        self.num_experts = num_experts
        self.notes = list(notes)
        self.lengths = np.bincount(req, minlength=len(self.names))
        self.m_inferred = False  # M = largest expert id + 1 (no --num-experts)

    @property
    def top_k(self) -> int:
        return self.ids.shape[2]


def _codes(values: Any) -> tuple[np.ndarray, list[Any]]:
    """Request index of each row, in order of first appearance; and the ids."""
    uniq, first, inv = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # unique ids by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inv].astype(np.int64), [v.item() if hasattr(v, "item") else v
                                        for v in uniq[order]]


def _check_positions(pos: np.ndarray, req: np.ndarray, where: str, name: str) -> None:
    """Token positions must increase within a request (rows in decode order)."""
    order = np.argsort(req, kind="stable")
    r, p = req[order], pos[order]
    bad = np.nonzero((r[1:] == r[:-1]) & (p[1:] <= p[:-1]))[0]
    if bad.size:
        i, j = int(order[bad[0]]), int(order[bad[0] + 1])
        raise ConvertError("%s: %s[%d] = %d does not increase within its request (row %d of the "
                           "same request has %d): rows must be in decode order" %
                           (where, name, j, pos[j], i, pos[i]))


def _array_loc(where: str, name: str) -> Callable[..., str]:
    return lambda t, l, k=None: "%s: %s[%d, %d%s]" % (where, name, t, l,
                                                     "" if k is None else ", %d" % k)


def _check_ids(ids: np.ndarray, num_experts: int | None,
               loc: Callable[..., str]) -> tuple[np.ndarray, int]:
    """Expert ids: integers in [0, M) (M inferred as max + 1 when not given),
    K distinct experts per token and layer. loc(t, l[, k]) names a place."""
    if ids.dtype.kind == "f":
        bad = np.argwhere(~np.isfinite(ids) | (ids != np.floor(np.where(np.isfinite(ids), ids, 0))))
        if bad.size:
            t, l, k = bad[0]
            raise ConvertError("%s = %r is not an integer expert id" %
                               (loc(t, l, k), float(ids[t, l, k])))
    ids = ids.astype(np.int64)
    hi = num_experts - 1 if num_experts is not None else None
    bad = np.argwhere((ids < 0) | (ids > hi if hi is not None else False))
    if bad.size:
        t, l, k = bad[0]
        raise ConvertError("%s = %d is not an expert id in [0, %s]" %
                           (loc(t, l, k), ids[t, l, k], "inf" if hi is None else hi))
    M = num_experts if num_experts is not None else int(ids.max()) + 1
    s = np.sort(ids, axis=2)
    dup = np.argwhere(s[:, :, 1:] == s[:, :, :-1])
    if dup.size:
        t, l, k = dup[0]
        raise ConvertError("%s = %s lists expert %d twice (the top-k experts of a token are "
                           "distinct)" % (loc(t, l), ids[t, l].tolist(), s[t, l, k]))
    return ids.astype(np.int32), M


def _apply_top_k(ids: np.ndarray, top_k: int | None, where: str,
                 name: str) -> tuple[np.ndarray, list[str]]:
    K = ids.shape[2]
    if top_k is None or top_k == K:
        return ids, []
    if top_k > K:
        raise ConvertError("%s: --top-k %d, but %s has %d slots per token and layer" %
                           (where, top_k, name, K))
    return ids[:, :, :top_k], ["kept the first %d of %d slots of %s (slots in descending router "
                               "score order)" % (top_k, K, name)]


# ---------------------------------------------------------------------------
# Request metadata (dataset names)


def _load_json(path: str, what: str) -> Any:
    if not os.path.exists(path):
        raise ConvertError("%s: no such file (%s)" % (path, what))
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:
        raise ConvertError("%s: not valid JSON (%s)" % (path, e))
    except OSError as e:
        raise ConvertError("%s: cannot read (%s)" % (path, e.strerror))


def read_requests_json(path: str) -> dict[Any, tuple[str, int | None, str]]:
    """A JSON list of {"request" or "generation": id, "dataset": str,
    ["category": str], ["tokens": int]} -> {id: (dataset, tokens or None, where)}.
    Raises ConvertError when the file is missing or not JSON, is not a list
    of objects, or an entry lacks its id / dataset, has a bad token count or
    repeats an id."""
    doc = _load_json(path, "request metadata")
    if not isinstance(doc, list):
        raise ConvertError("%s: expected a JSON list of request objects, found %s" %
                           (path, type(doc).__name__))
    out = {}  # type: ignore[var-annotated]
    for i, obj in enumerate(doc):
        where = "%s: [%d]" % (path, i)
        if not isinstance(obj, dict):
            raise ConvertError("%s: expected an object, found %s" % (where, type(obj).__name__))
        keys = [k for k in ("request", "generation") if k in obj]
        if len(keys) != 1:
            raise ConvertError("%s: needs one of 'request' or 'generation' (the request id)" %
                               where)
        rid = obj[keys[0]]
        if isinstance(rid, bool) or not isinstance(rid, (int, str)):
            raise ConvertError("%s: '%s' = %s is not an integer or string" %
                               (where, keys[0], json.dumps(rid)))
        ds = require_key(obj, "dataset", where, "the request's dataset name")
        if not isinstance(ds, str) or not ds:
            raise ConvertError("%s: 'dataset' = %s is not a non-empty string" %
                               (where, json.dumps(ds)))
        tok = obj.get("tokens")
        if tok is not None and (isinstance(tok, bool) or not isinstance(tok, int) or tok < 0):
            raise ConvertError("%s: 'tokens' = %s is not a count" % (where, json.dumps(tok)))
        if rid in out:
            raise ConvertError("%s: request %s is listed again (first at %s)" %
                               (where, json.dumps(rid), out[rid][2]))
        out[rid] = (ds, tok, where)
    return out


def _attach_requests(log: RoutingLog, meta: Mapping[Any, tuple[str, int | None, str]],
                     meta_path: str, all_listed: bool) -> None:
    """Sets log.datasets from metadata; checks token counts. all_listed: every
    request of the log must be in the metadata."""
    datasets = []
    for r, name in enumerate(log.names):
        if name not in meta:
            if isinstance(name, int) and str(name) in meta:
                name = str(name)
            elif all_listed:
                raise ConvertError("%s: request %s of %s is not listed" %
                                   (meta_path, json.dumps(name), log.path))
            else:
                datasets.append(log.datasets[r])
                continue
        ds, tok, where = meta[name]
        if tok is not None and tok != int(log.lengths[r]):
            raise ConvertError("%s: 'tokens' = %d, but %s has %d rows of request %s" %
                               (where, tok, log.path, log.lengths[r], json.dumps(log.names[r])))
        if log.datasets[r] is not None and log.datasets[r] != ds:
            raise ConvertError("%s: dataset '%s' differs from '%s' in %s" %
                               (where, ds, log.datasets[r], log.path))
        datasets.append(ds)
    have = set(log.names)
    missing = [m for m in meta if m not in have and
               not (isinstance(m, str) and m.isdigit() and int(m) in have)]
    for m in missing:
        ds, tok, where = meta[m]
        if tok:
            raise ConvertError("%s: request %s has 'tokens' = %d but no rows in %s" %
                               (where, json.dumps(m), tok, log.path))
    log.datasets = datasets


# ---------------------------------------------------------------------------
# Readers


def _read_dev_npz(path: str, d: dict[str, Any], num_experts: int | None, top_k: int | None,
                  requests_path: str | None) -> RoutingLog:
    where = path
    e = as_array(d["expert_ids"], where, "expert_ids")
    check_shape(e, where, "expert_ids", "[tokens, layers, top-k slots]", ndim=3)
    T = e.shape[0]
    if T == 0:
        raise ConvertError("%s: expert_ids has no tokens" % where)
    g = as_array(require_key(d, "generation", where, "generation of each token"), where,
                 "generation")
    check_shape(g, where, "generation", "[tokens]", shape=(T,))
    g = check_int_array(g, where, "generation", lo=0)
    if "token_position" in d:
        tp = as_array(d["token_position"], where, "token_position")
        check_shape(tp, where, "token_position", "[tokens]", shape=(T,))
        _check_positions(check_int_array(tp, where, "token_position", lo=0), g, where,
                         "token_position")
    e, notes = _apply_top_k(e, top_k, where, "expert_ids")
    ids, M = _check_ids(e, num_experts, _array_loc(where, "expert_ids"))
    req, names = _codes(g)
    log = RoutingLog(path, ids, req, names, [None] * len(names), range(ids.shape[1]), M,
                     notes)
    if requests_path is None:
        base = path[:-len(".npz")] if path.endswith(".npz") else path
        if base.endswith(".tokens"):
            base = base[:-len(".tokens")]
        cand = base + ".generations.json"
        if os.path.exists(cand):
            requests_path = cand
            log.notes.append("dataset names from %s" % cand)
    if requests_path is not None:
        _attach_requests(log, read_requests_json(requests_path), requests_path, True)
    log.m_inferred = num_experts is None
    return log


def _read_hf(path: str, d: dict[str, Any], num_experts: int | None, top_k: int | None,
             requests_path: str | None) -> RoutingLog:
    where = path
    has = [k for k in ("topk_ids", "router_logits") if k in d]
    if len(has) == 2:
        raise ConvertError("%s: has both 'topk_ids' and 'router_logits'; give one" % where)
    notes = []  # type: ignore[var-annotated]
    if has == ["topk_ids"]:
        e = as_array(d["topk_ids"], where, "topk_ids")
        check_shape(e, where, "topk_ids", "[tokens, layers, top-k slots]", ndim=3)
        e, notes = _apply_top_k(e, top_k, where, "topk_ids")
        name = "topk_ids"
    else:
        lg = as_array(d["router_logits"], where, "router_logits")
        check_shape(lg, where, "router_logits", "[tokens, layers, experts]", ndim=3)
        if top_k is None:
            raise ConvertError("%s: router_logits needs --top-k K (the model's experts per "
                               "token)" % where)
        if top_k > lg.shape[2]:
            raise ConvertError("%s: --top-k %d exceeds the %d experts of router_logits" %
                               (where, top_k, lg.shape[2]))
        lg = lg.astype(np.float64)
        bad = np.argwhere(~np.isfinite(lg))
        if bad.size:
            raise ConvertError("%s: router_logits[%s] = %r is not finite" %
                               (where, ", ".join(map(str, bad[0])), lg[tuple(bad[0])]))
        if num_experts is not None and num_experts != lg.shape[2]:
            raise ConvertError("%s: router_logits has %d experts but --num-experts is %d" %
                               (where, lg.shape[2], num_experts))
        num_experts = lg.shape[2]
        e = np.argsort(-lg, axis=2, kind="stable")[:, :, :top_k]
        notes = ["top-%d experts of router_logits (ties to the lower id)" % top_k]
        name = "router_logits top-k"
    T = e.shape[0]
    if T == 0:
        raise ConvertError("%s: %s has no tokens" % (where, name))
    r = as_array(require_key(d, "request", where, "request id of each token"), where, "request")
    check_shape(r, where, "request", "[tokens]", shape=(T,))
    r = check_int_array(r, where, "request", lo=0)
    if "position" in d:
        p = as_array(d["position"], where, "position")
        check_shape(p, where, "position", "[tokens]", shape=(T,))
        _check_positions(check_int_array(p, where, "position"), r, where, "position")
    ids, M = _check_ids(e, num_experts, _array_loc(where, name))
    layer_ids = range(ids.shape[1])
    if "layers" in d:
        layer_ids = layer_id_array(d["layers"], where, "layers", ids.shape[1])  # type: ignore[assignment]
    req, names = _codes(r)
    log = RoutingLog(path, ids, req, names, [None] * len(names), layer_ids, M, notes)
    log.m_inferred = num_experts is None
    if requests_path is not None:
        _attach_requests(log, read_requests_json(requests_path), requests_path, True)
    return log


def _read_jsonl(path: str, num_experts: int | None, top_k: int | None,
                requests_path: str | None) -> RoutingLog:
    rows, reqs, lines = [], [], []
    index, datasets, ds_where, positions = {}, [], [], {}  # type: ignore[var-annotated]
    shape = None
    for lineno, where, obj in jsonl_objects(path):
        rid = require_key(obj, "request", where, "the request id")
        if isinstance(rid, bool) or not isinstance(rid, (int, str)):
            raise ConvertError("%s: 'request' = %s is not an integer or string" %
                               (where, json.dumps(rid)))
        lt = require_key(obj, "layer_topk", where, "top-k expert ids per layer")
        ok = isinstance(lt, list) and lt and all(
            isinstance(row, list) and row and all(
                isinstance(x, int) and not isinstance(x, bool) for x in row) for row in lt)
        if not ok:
            raise ConvertError("%s: 'layer_topk' must be a non-empty list (one per layer) of "
                               "non-empty lists of integer expert ids" % where)
        s = (len(lt), len(lt[0]))
        if any(len(row) != s[1] for row in lt):
            i = next(i for i, row in enumerate(lt) if len(row) != s[1])
            raise ConvertError("%s: 'layer_topk'[%d] has %d ids, 'layer_topk'[0] has %d" %
                               (where, i, len(lt[i]), s[1]))
        if shape is None:
            shape = s
        elif s != shape:
            raise ConvertError("%s: 'layer_topk' is %d layers x %d ids; line %d has %d x %d" %
                               (where, s[0], s[1], lines[0], shape[0], shape[1]))
        if rid not in index:
            index[rid] = len(index)
            datasets.append(None)
            ds_where.append(None)
        r = index[rid]
        if "dataset" in obj:
            ds = obj["dataset"]
            if not isinstance(ds, str) or not ds:
                raise ConvertError("%s: 'dataset' = %s is not a non-empty string" %
                                   (where, json.dumps(ds)))
            if datasets[r] is None:
                datasets[r], ds_where[r] = ds, where
            elif datasets[r] != ds:
                raise ConvertError("%s: request %s has dataset '%s', but '%s' at %s" %
                                   (where, json.dumps(rid), ds, datasets[r], ds_where[r]))
        if "position" in obj:
            pos = obj["position"]
            if isinstance(pos, bool) or not isinstance(pos, int):
                raise ConvertError("%s: 'position' = %s is not an integer" %
                                   (where, json.dumps(pos)))
            prev = positions.get(rid)
            if prev is not None and pos <= prev[0]:
                raise ConvertError("%s: request %s has position %d after %d at %s: lines "
                                   "must be in decode order" %
                                   (where, json.dumps(rid), pos, prev[0], prev[1]))
            positions[rid] = (pos, where)
        rows.append(lt)
        reqs.append(r)
        lines.append(lineno)
    if not rows:
        raise ConvertError("%s: no records" % path)
    ids = np.asarray(rows, dtype=np.int64)
    e, notes = _apply_top_k(ids, top_k, path, "layer_topk")
    ids, M = _check_ids(e, num_experts, lambda t, l, k=None: "%s:%d: 'layer_topk'[%d]%s" % (
        path, lines[t], l, "" if k is None else "[%d]" % k))
    names = [None] * len(index)
    for rid, r in index.items():
        names[r] = rid
    log = RoutingLog(path, ids, np.asarray(reqs, dtype=np.int64), names, datasets,
                     range(ids.shape[1]), M, notes)
    log.m_inferred = num_experts is None
    if requests_path is not None:
        _attach_requests(log, read_requests_json(requests_path), requests_path, False)
    return log


def read_routing(path: str, num_experts: int | None = None, top_k: int | None = None,
                 requests_path: str | None = None, layer_ids: str | None = None) -> RoutingLog:
    """Reads any of the three formats (by suffix and keys).
    Raises ConvertError when the file is missing or unreadable (a torch file
    without PyTorch), has none of the formats' keys, or holds bad values
    (expert ids out of range or repeated within a token, positions not in
    decode order, shapes that disagree, top_k above the slots given, request
    metadata that does not match, a --layer-ids list that does not fit)."""
    if path.endswith((".jsonl", ".json")):
        if not os.path.exists(path):
            raise ConvertError("%s: no such file" % path)
        log = _read_jsonl(path, num_experts, top_k, requests_path)
    else:
        d = load_tensor_file(path)
        if "expert_ids" in d:
            log = _read_dev_npz(path, d, num_experts, top_k, requests_path)
        elif "topk_ids" in d or "router_logits" in d:
            log = _read_hf(path, d, num_experts, top_k, requests_path)
        else:
            raise ConvertError("%s: missing key 'topk_ids' (a per-token routing log: "
                               "'expert_ids' with 'generation' (serving development npz), or "
                               "'topk_ids' / 'router_logits' with 'request'); keys present: %s" %
                               (path, ", ".join(sorted(map(str, d))) or "none"))
    if layer_ids:
        ids = parse_id_list(layer_ids, "--layer-ids")
        if len(ids) != len(log.layer_ids):
            raise ConvertError("--layer-ids '%s' names %d layers; %s has %d" %
                               (layer_ids, len(ids), path, len(log.layer_ids)))
        log.layer_ids = ids
    return log


# ---------------------------------------------------------------------------
# Request order: phases by dataset prefix


def parse_prefixes(text: str) -> list[str]:
    """--phase-prefixes "a,b" -> ["a", "b"]. Raises ConvertError for an empty
    element or a prefix given twice."""
    out = [p.strip() for p in text.split(",")]
    if any(not p for p in out):
        raise ConvertError("--phase-prefixes: empty element in '%s'" % text)
    if len(set(out)) != len(out):
        raise ConvertError("--phase-prefixes: '%s' lists a prefix twice" % text)
    return out


def _need_datasets(log: RoutingLog, flag: str) -> None:
    missing = [r for r, d in enumerate(log.datasets) if d is None]
    if missing:
        raise ConvertError("%s: %s needs dataset names, and request %s has none (give "
                           "--requests FILE, or 'dataset' in the jsonl lines)" %
                           (log.path, flag, json.dumps(log.names[missing[0]])))


def phase_of(dataset: str, prefixes: Sequence[str]) -> int | None:
    """Index of the longest prefix the dataset name starts with, or None."""
    best = None
    for i, p in enumerate(prefixes):
        if dataset.startswith(p) and (best is None or len(p) > len(prefixes[best])):
            best = i
    return best


def request_order(log: RoutingLog, prefixes: Sequence[str] | None, shuffle: bool,
                  seed: int | None,
                  drop_unmatched: bool) -> tuple[Any, np.ndarray | None, list[str]]:
    """Queue order (request indices) and the phase of each queued request.
    Phases in the order of `prefixes`, each in file order, shuffled with
    numpy.random.default_rng(seed).shuffle (one generator, phase by phase).
    Raises ConvertError when a request has no dataset name, or (without
    drop_unmatched) its dataset matches no prefix."""
    if prefixes is None:
        order = np.arange(len(log.names))
        if shuffle:
            np.random.default_rng(seed).shuffle(order)
        return order, None, []
    _need_datasets(log, "--phase-prefixes")
    groups = [[] for _ in prefixes]  # type: ignore[var-annotated]
    unmatched = {}  # type: ignore[var-annotated]
    for r, ds in enumerate(log.datasets):
        i = phase_of(ds, prefixes)  # type: ignore[arg-type]
        if i is None:
            unmatched.setdefault(ds, []).append(r)
        else:
            groups[i].append(r)
    notes = []
    if unmatched:
        text = ", ".join("%s (%d)" % (k, len(v)) for k, v in sorted(unmatched.items()))
        if not drop_unmatched:
            raise ConvertError("%s: --phase-prefixes matches no prefix for the datasets %s "
                               "(--drop-unmatched leaves their requests out)" % (log.path, text))
        notes.append("left out %d request(s) matching no phase prefix: %s" %
                     (sum(len(v) for v in unmatched.values()), text))  # type: ignore[misc]
    for p, g in zip(prefixes, groups):
        if not g:
            raise ConvertError("%s: --phase-prefixes: '%s' matches no request's dataset "
                               "(datasets: %s)" % (log.path, p,
                                                   ", ".join(sorted(set(log.datasets)))))  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    order, phase = [], []  # type: ignore[assignment]
    for i, g in enumerate(groups):
        g = np.asarray(g, dtype=np.int64)  # type: ignore[assignment]
        if shuffle:
            rng.shuffle(g)
        order.extend(g.tolist())  # type: ignore[attr-defined]
        phase.extend([i] * len(g))
    return np.asarray(order, dtype=np.int64), np.asarray(phase, dtype=np.int64), notes


# ---------------------------------------------------------------------------
# Continuous batching


def simulate(lengths: np.ndarray, order: np.ndarray, batch: int,
             admit: int) -> tuple[np.ndarray, np.ndarray]:
    """Admission step of each queued request. Each step: first admit from the
    queue front while fewer than `batch` requests are active and fewer than
    `admit` were admitted this step; then every active request decodes one
    token; a request leaves after the step of its last token (its slot is free
    at the next step). Returns admit_step [len(order)], end_step (exclusive)."""
    n = len(order)
    start = np.zeros(n, dtype=np.int64)
    end = np.zeros(n, dtype=np.int64)
    heap = []  # type: ignore[var-annotated]  # end steps of active requests
    step, qi = 0, 0
    while qi < n:
        while heap and heap[0] <= step:
            heapq.heappop(heap)
        if len(heap) >= batch:
            step = heap[0]  # nothing changes until the next request finishes
            continue
        for _ in range(min(admit, batch - len(heap), n - qi)):
            ln = int(lengths[order[qi]])
            start[qi], end[qi] = step, step + ln
            heapq.heappush(heap, step + ln)
            qi += 1
        step += 1
    return start, end


def _active_per_step(start: np.ndarray, end: np.ndarray, num_steps: int,
                     groups: np.ndarray | None = None, num_groups: int = 1) -> np.ndarray:
    """Active requests per step (per group when groups is given): [G, S]."""
    g = np.zeros(len(start), dtype=np.int64) if groups is None else groups
    diff = np.zeros((num_groups, num_steps + 1), dtype=np.int64)
    np.add.at(diff, (g, start), 1)
    np.add.at(diff, (g, end), -1)
    return np.cumsum(diff, axis=1)[:, :num_steps]


def token_steps(log: RoutingLog, order: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Step at which each token (row) of the log is decoded; -1 for requests
    not queued. Rows of a request are its tokens in decode order."""
    admit_of_req = np.full(len(log.names), -1, dtype=np.int64)
    admit_of_req[order] = start
    rows = np.argsort(log.req, kind="stable")
    r = log.req[rows]
    first = np.zeros(len(r), dtype=bool)
    first[0] = True
    first[1:] = r[1:] != r[:-1]
    grp_start = np.maximum.accumulate(np.where(first, np.arange(len(r)), 0))
    idx = np.empty(len(r), dtype=np.int64)
    idx[rows] = np.arange(len(r)) - grp_start
    a = admit_of_req[log.req]
    return np.where(a >= 0, a + idx, -1)


def step_counts(ids: np.ndarray, steps: np.ndarray, num_steps: int, num_experts: int,
                chunk: int = 2048) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (step0, counts [s, L, M]) in chunks: the top-k assignments of the
    tokens decoded in each step, summed."""
    keep = np.nonzero(steps >= 0)[0]
    order = keep[np.argsort(steps[keep], kind="stable")]
    st = steps[order]
    L, M = ids.shape[1], num_experts
    lo = 0
    for s0 in range(0, num_steps, chunk):
        s1 = min(num_steps, s0 + chunk)
        hi = int(np.searchsorted(st, s1, side="left"))
        rows = order[lo:hi]
        e = ids[rows].astype(np.int64)  # [n, L, K]
        flat = ((st[lo:hi, None, None] - s0) * (L * M) + np.arange(L)[None, :, None] * M + e)
        c = np.bincount(flat.ravel(), minlength=(s1 - s0) * L * M)
        yield s0, c.reshape(s1 - s0, L, M)
        lo = hi


def phases_doc(prefixes: Sequence[str], phase: np.ndarray, start: np.ndarray, end: np.ndarray,
               num_steps: int, offset: int, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The --phases sidecar document (phase starts and halfway steps).
    Raises nothing of its own."""
    P = len(prefixes)
    active = _active_per_step(start, end, num_steps, phase, P)
    total = active.sum(0)
    doc = {"phases": [], "halfway": []}  # type: ignore[var-annotated]
    for i, p in enumerate(prefixes):
        sel = phase == i
        doc["phases"].append({"step": int(start[sel].min()) + offset, "dataset_prefix": p,
                              "requests": int(sel.sum())})
    # The phase holding each step: the latest phase (in queue order) with at
    # least half of the active requests (a 1:1 tie goes to the later phase).
    half = (total > 0)[None, :] & (2 * active >= total[None, :])
    holder = np.where(half.any(0), P - 1 - np.argmax(half[::-1], axis=0), -1)
    for i, p in enumerate(prefixes):
        hit = np.nonzero(holder == i)[0]
        if hit.size:
            doc["halfway"].append({"step": int(hit[0]) + offset, "dataset_prefix": p})
    doc["note"] = HALFWAY_NOTE  # type: ignore[assignment]
    doc["settings"] = settings  # type: ignore[assignment]
    return doc


# ---------------------------------------------------------------------------
# Splice: segments of i.i.d. draws from token pools


def parse_segments(text: str) -> list[tuple[str, int]]:
    """"sorry:400,gpqa:400" -> [("sorry", 400), ("gpqa", 400)].
    Raises ConvertError for an element that is not NAME:STEPS with STEPS a
    positive integer."""
    out = []
    for part in text.split(","):
        part = part.strip()
        name, sep, n = part.rpartition(":")
        if not sep or not name:
            raise ConvertError("--segments: '%s' is not POOL:STEPS" % part)
        try:
            n = int(n)  # type: ignore[assignment]
        except ValueError:
            raise ConvertError("--segments: '%s': STEPS '%s' is not an integer" % (part, n))
        if n < 1:  # type: ignore[operator]
            raise ConvertError("--segments: '%s': STEPS must be >= 1" % part)
        out.append((name, n))
    return out  # type: ignore[return-value]


def splice_pools(log: RoutingLog,
                 segments: Sequence[tuple[str, int]]) -> dict[str, tuple[np.ndarray, int]]:
    """Token rows of each pool named in segments (requests whose dataset name
    starts with the pool name). Raises ConvertError when a request has no
    dataset name or a pool has no tokens."""
    _need_datasets(log, "splice-routing")
    pools = {}
    for name, _ in segments:
        if name in pools:
            continue
        reqs = np.array([r for r, d in enumerate(log.datasets) if d.startswith(name)],  # type: ignore[union-attr]
                        dtype=np.int64)
        if reqs.size == 0:
            raise ConvertError("%s: --segments: pool '%s' matches no request's dataset "
                               "(datasets: %s)" % (log.path, name,
                                                   ", ".join(sorted(set(log.datasets)))))  # type: ignore[arg-type]
        rows = np.nonzero(np.isin(log.req, reqs))[0]
        pools[name] = (rows, len(reqs))
    return pools


def splice_counts(log: RoutingLog, segments: Sequence[tuple[str, int]],
                  pools: Mapping[str, tuple[np.ndarray, int]], per_step: int, seed: int | None,
                  chunk: int = 2048) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (step0, counts [s, L, M]): each step sums the top-k assignments of
    `per_step` tokens drawn i.i.d. (with replacement, uniformly) from the
    segment's pool, with numpy.random.default_rng(seed), segment by segment."""
    rng = np.random.default_rng(seed)
    L, M = log.ids.shape[1], log.num_experts
    step = 0
    for name, n in segments:
        rows = pools[name][0]
        for c0 in range(0, n, chunk):
            c1 = min(n, c0 + chunk)
            pick = rows[rng.integers(0, len(rows), size=(c1 - c0) * per_step)]
            e = log.ids[pick].astype(np.int64)
            s = np.repeat(np.arange(c1 - c0), per_step)
            flat = s[:, None, None] * (L * M) + np.arange(L)[None, :, None] * M + e
            c = np.bincount(flat.ravel(), minlength=(c1 - c0) * L * M)
            yield step + c0, c.reshape(c1 - c0, L, M)
        step += n
