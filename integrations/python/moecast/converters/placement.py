"""moecast placements -> the placement files serving stacks read.

Inputs (any of):
  - the JSON `moecast plan --json FILE` writes: {"phy2log": [[...S...], ...L rows],
    "log2phy": ..., "logcnt": [[...M...], ...], "gpu_loads": ..., ...}
    (integrations/cli/json_io.cc PlanToJson);
  - a RecommendPlacement response as JSON: {"as_of_step": ..., "loads": [L*M],
    "plan": {"num_layers": L, "num_experts": M, "num_slots": S, "phy2log": [L*S],
    ...}, ...} as `moecast client placement` prints it (proto field names,
    flat repeated fields), or protobuf's json_format (lowerCamelCase names,
    64-bit integers as strings, default values omitted); phy2log may also be
    nested rows;
  - for --emit logical_count only, also a `moecast plan --loads` file
    {"loads": [[...M...], ...L rows]}.

Outputs:
  - SGLang --init-expert-location JSON (python/sglang/srt/eplb/expert_location.py,
    compute_initial_expert_location_metadata): an object with exactly one key,
    "physical_to_logical_map" [num_layers][num_physical_experts] (passed as
    keyword arguments to ExpertLocationMetadata.init_by_mapping, so any other
    key is an error there) or "logical_count" [num_layers][num_logical_experts]
    (SGLang then plans itself, init_by_eplb). num_layers is the model's layer
    count (ModelConfigForExpertLocation.num_layers), dense layers included;
    num_physical_experts = num_logical_experts + --ep-num-redundant-experts.
  - vLLM EplbState tensors (vllm/distributed/eplb/eplb_state.py): .npz or .pt
    with physical_to_logical_map int64 [num_moe_layers, num_physical_experts],
    logical_to_physical_map int64 [num_moe_layers, num_logical_experts,
    max_replicas] (-1 padded, replicas in ascending slot order) and
    logical_replica_count int64 [num_moe_layers, num_logical_experts].
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from .common import ConvertError, parse_id_list, save_torch


def _load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConvertError("%s: cannot open (%s)" % (path, e.strerror))
    try:
        return json.loads(text)
    except ValueError as e:
        raise ConvertError("%s: not valid JSON (%s)" % (path, e))


def _get(obj: dict[str, Any], snake: str, where: str, required: bool = False) -> Any:
    """obj[snake] or obj[lowerCamel(snake)]."""
    parts = snake.split("_")
    camel = parts[0] + "".join(p.title() for p in parts[1:])
    keys = [k for k in dict.fromkeys((snake, camel)) if k in obj]
    if len(keys) > 1:
        raise ConvertError("%s: has both '%s' and '%s'" % (where, keys[0], keys[1]))
    if not keys:
        if required:
            raise ConvertError("%s: missing key '%s'" % (where, snake))
        return None
    return obj[keys[0]]


def _int(v: Any, where: str, name: str) -> int:
    if isinstance(v, str):  # json_format writes 64-bit integers as strings
        try:
            return int(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
        raise ConvertError("%s: %s = %s is not an integer" % (where, name, json.dumps(v)))
    return int(v)


def _matrix(v: Any, where: str, name: str, rows: int | None = None, cols: int | None = None,
            integers: bool = True) -> np.ndarray:
    """Nested rows, or a flat list reshaped to rows x cols."""
    if not isinstance(v, list) or not v:
        raise ConvertError("%s: %s must be a non-empty list" % (where, name))
    nested = isinstance(v[0], list)
    if not nested:
        if rows is None or cols is None:
            raise ConvertError("%s: %s is flat; its shape needs num_layers and the row length"
                               % (where, name))
        if len(v) != rows * cols:
            raise ConvertError("%s: %s has %d values, expected %d x %d = %d" %
                               (where, name, len(v), rows, cols, rows * cols))
        v = [v[r * cols:(r + 1) * cols] for r in range(rows)]
    width: int | None = None
    out: list[list[Any]] = []
    for r, row in enumerate(v):
        if not isinstance(row, list) or not row:
            raise ConvertError("%s: %s[%d] must be a non-empty list" % (where, name, r))
        width = len(row) if width is None else width
        if len(row) != width:
            raise ConvertError("%s: %s[%d] has %d values, %s[0] has %d" %
                               (where, name, r, len(row), name, width))
        vals = []
        for c, x in enumerate(row):
            if isinstance(x, str) and integers:
                x = _int(x, where, "%s[%d][%d]" % (name, r, c))
            if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x or \
                    x in (float("inf"), float("-inf")):
                raise ConvertError("%s: %s[%d][%d] = %s is not a finite number" %
                                   (where, name, r, c, json.dumps(x)))
            if integers and x != int(x):
                raise ConvertError("%s: %s[%d][%d] = %s is not an integer" %
                                   (where, name, r, c, json.dumps(x)))
            vals.append(x)
        out.append(vals)
    if nested and rows is not None and len(out) != rows:
        raise ConvertError("%s: %s has %d rows, num_layers is %d" % (where, name, len(out), rows))
    if nested and cols is not None and width != cols:
        raise ConvertError("%s: %s rows have %d values, expected %d" % (where, name, width, cols))  # type: ignore[str-format]
    return np.asarray(out, dtype=np.int64 if integers else np.float64)


class Placement:
    """What read_placement found: phy2log [L, S] and/or loads [L, M]."""

    def __init__(self, phy2log: np.ndarray | None, num_experts: int | None,
                 loads: np.ndarray | None, kind: str) -> None:
        self.phy2log = phy2log  # int64 [L, S] or None
        self.num_experts = num_experts  # int or None
        self.loads = loads  # float64 [L, M] or None
        self.kind = kind


def read_placement(path: str) -> Placement:
    """Reads a `moecast plan --json` plan, a RecommendPlacement response
    (JSON) or a `--loads` file. Raises ConvertError when the file cannot be
    opened, is not JSON / not an object of one of those kinds, or a field
    has the wrong shape or non-integer / non-finite values."""
    doc = _load_json(path)
    if not isinstance(doc, dict):
        raise ConvertError("%s: expected a JSON object" % path)
    if "phy2log" in doc:
        where = path
        p2l = _matrix(doc["phy2log"], where, "phy2log")
        m = None
        if "logcnt" in doc:
            m = _matrix(doc["logcnt"], where, "logcnt").shape[1]
        return Placement(p2l, m, None, "moecast plan JSON")
    if "plan" in doc:
        plan = doc["plan"]
        where = path + ": plan"
        if not isinstance(plan, dict):
            raise ConvertError("%s is not an object" % where)
        L = _get(plan, "num_layers", where)
        L = None if L is None else _int(L, where, "num_layers")
        M = _get(plan, "num_experts", where)
        M = None if M is None else _int(M, where, "num_experts")
        S = _get(plan, "num_slots", where)
        S = None if S is None else _int(S, where, "num_slots")
        v = plan.get("phy2log")
        if v is None or v == []:
            raise ConvertError("%s: no phy2log (the response carries no plan)" % where)
        p2l = _matrix(v, where, "phy2log", L, S)
        loads = None
        lv = _get(doc, "loads", path)
        if lv:
            loads = _matrix(lv, path, "loads", p2l.shape[0], M, integers=False)
        return Placement(p2l, M, loads, "RecommendPlacement response")
    if "loads" in doc:
        return Placement(None, None, _matrix(doc["loads"], path, "loads", integers=False),
                         "loads")
    raise ConvertError("%s: expected a moecast plan ('phy2log'), a RecommendPlacement response "
                       "('plan') or loads ('loads'); keys present: %s" %
                       (path, ", ".join(sorted(doc)) or "none"))


def validate_map(p2l: np.ndarray, num_experts: int | None, where: str) -> int:
    """Every slot holds a logical expert in [0, M) and every expert has a slot;
    returns M (num_experts, or the largest id + 1 when None). Raises
    ConvertError when a slot is out of range or empty, there are fewer slots
    than experts, or an expert has no slot."""
    L, S = p2l.shape
    top = int(p2l.max()) + 1
    M = num_experts if num_experts is not None else top
    if top > M:
        l, s = np.argwhere(p2l >= M)[0]
        raise ConvertError("%s: phy2log[%d][%d] = %d but there are %d logical experts" %
                           (where, l, s, p2l[l, s], M))
    if (p2l < 0).any():
        l, s = np.argwhere(p2l < 0)[0]
        raise ConvertError(
            "%s: phy2log[%d][%d] = %d: slot %d of layer %d is empty; SGLang and vLLM give "
            "every physical slot an expert (plan with --slots equal to the server's physical "
            "experts and no excluded GPUs)" % (where, l, s, p2l[l, s], s, l))
    if S < M:
        raise ConvertError("%s: %d slots per layer for %d logical experts" % (where, S, M))
    for l in range(L):
        present = np.bincount(p2l[l], minlength=M)
        if (present == 0).any():
            e = int(np.nonzero(present == 0)[0][0])
            raise ConvertError("%s: layer %d: logical expert %d has no physical slot" %
                               (where, l, e))
    return M


def to_sglang(path: str, out_path: str, emit: str = "physical_to_logical_map",
              num_layers: int | None = None, layer_ids: str | None = None,
              num_experts: int | None = None,
              ep_size: int | None = None) -> tuple[Placement, dict[str, int]]:
    """Writes SGLang's --init-expert-location JSON (`emit`:
    physical_to_logical_map or logical_count) from the placement at `path`;
    returns (the placement read, a summary dict).

    Raises ConvertError for what read_placement / validate_map reject, a
    bad --layer-ids (or one that does not match the plan's layers or the
    model's --num-layers), an unknown `emit`, a placement without the part
    `emit` needs, slots that do not split over ep_size; OSError when the
    output cannot be written."""
    pl = read_placement(path)
    rows = pl.phy2log.shape[0] if pl.phy2log is not None else (
        pl.loads.shape[0] if pl.loads is not None else 0)
    ids = parse_id_list(layer_ids, "--layer-ids") if layer_ids else list(range(rows))
    if len(ids) != rows:
        raise ConvertError("--layer-ids '%s' names %d layers; %s has %d" %
                           (layer_ids, len(ids), path, rows))
    n = max(ids) + 1 if num_layers is None else num_layers
    if max(ids) >= n:
        raise ConvertError("--layer-ids: layer %d is outside the model's %d layers (--num-layers)"
                           % (max(ids), n))
    info: dict[str, int] = {}
    if emit == "physical_to_logical_map":
        if pl.phy2log is None:
            raise ConvertError("%s: has loads but no placement; use --emit logical_count" % path)
        M = validate_map(pl.phy2log, num_experts if num_experts is not None else pl.num_experts,
                         path)
        S = pl.phy2log.shape[1]
        if ep_size is not None and S % ep_size:
            raise ConvertError("%s: %d physical slots do not split over --ep-size %d GPUs" %
                               (path, S, ep_size))
        # Layers the plan does not cover (dense layers) get SGLang's trivial map.
        full = np.tile(np.arange(S) % M, (n, 1))
        full[ids] = pl.phy2log
        doc = {"physical_to_logical_map": full.tolist()}
        info = dict(layers=n, planned=len(ids), slots=S, experts=M, redundant=S - M)
    elif emit == "logical_count":
        if pl.loads is None:
            raise ConvertError("%s: has no loads (a RecommendPlacement response or a --loads "
                               "file has them; a `moecast plan --json` plan does not)" % path)
        M = pl.loads.shape[1]
        full = np.zeros((n, M))
        full[ids] = pl.loads
        vals = full.tolist()
        if (full == np.round(full)).all():
            vals = full.astype(np.int64).tolist()
        doc = {"logical_count": vals}
        info = dict(layers=n, planned=len(ids), experts=M)
    else:
        raise ConvertError("--emit %s: use physical_to_logical_map or logical_count" % emit)
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, out_path)
    return pl, info


def to_vllm(path: str, out_path: str, num_experts: int | None = None,
            max_replicas: int | None = None) -> tuple[Placement, dict[str, int]]:
    """Writes vLLM's EplbState tensors (.npz or .pt/.pth) from the placement
    at `path`; returns (the placement read, a summary dict).

    Raises ConvertError for what read_placement / validate_map reject, a
    file with loads but no placement, an expert with more replicas than
    max_replicas, an output name that is not .npz/.pt/.pth, or .pt output
    without PyTorch; OSError when the output cannot be written."""
    pl = read_placement(path)
    if pl.phy2log is None:
        raise ConvertError("%s: has loads but no placement (phy2log)" % path)
    p2l = pl.phy2log
    M = validate_map(p2l, num_experts if num_experts is not None else pl.num_experts, path)
    L, S = p2l.shape
    count = np.stack([np.bincount(p2l[l], minlength=M) for l in range(L)]).astype(np.int64)
    R = S - M + 1 if max_replicas is None else max_replicas
    if count.max() > R:
        l, e = np.argwhere(count == count.max())[0]
        raise ConvertError("%s: layer %d expert %d has %d replicas, more than --max-replicas %d" %
                           (path, l, e, count[l, e], R))
    l2p = np.full((L, M, R), -1, dtype=np.int64)
    for l in range(L):
        filled = np.zeros(M, dtype=np.int64)
        for s in range(S):
            e = p2l[l, s]
            l2p[l, e, filled[e]] = s
            filled[e] += 1
    data = {"physical_to_logical_map": p2l.astype(np.int64),
            "logical_to_physical_map": l2p, "logical_replica_count": count}
    if out_path.endswith(".npz"):
        tmp = out_path + ".tmp.npz"
        np.savez(tmp, **data)
        os.replace(tmp, out_path)
    elif out_path.endswith((".pt", ".pth")):
        save_torch(out_path, data)
    else:
        raise ConvertError("--out %s: name the file .npz (numpy) or .pt (torch)" % out_path)
    return pl, dict(layers=L, slots=S, experts=M, max_replicas=R)
