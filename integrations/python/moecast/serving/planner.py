"""MoecastPlanner: the core shared by the vLLM and SGLang drop-ins.

Each call gets the serving stack's expert loads (per logical expert, or per
physical slot with the current mapping), ingests what is new into a moecastd
job as steps (one step per load sample), and asks RecommendPlacement for a
plan of num_replicas slots over num_ranks GPUs; the answer is the EPLB triple
(physical_to_logical_map [L, S], logical_to_physical_map [L, M, S-M+1] padded
with -1, logical_replica_count [L, M]).

moecast plans on its forecast of the next horizon's loads (docs/design.md
section 5): with mode="default" it keeps experts in place when moving does
not pay and never puts two replicas of one expert on one GPU; mode="eplb"
reproduces DeepSeek's EPLB on the forecast.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..client import Client
from ..errors import MoecastError
from ..types import Step


@dataclass
class PlanMaps:
    phy2log: np.ndarray      # [L, S] int64, logical expert of each physical slot
    log2phy: np.ndarray      # [L, M, S - M + 1] int64, slots of each expert, -1 padded
    logcnt: np.ndarray       # [L, M] int64, replicas of each expert
    placement: object = None  # the client's Placement answer (None on fallback)


#: (loads [L, M] summed, num_replicas, num_groups, num_nodes, num_ranks)
#: -> (phy2log, log2phy, logcnt), arrays or tensors
Fallback = Callable[[Any, int, int, int, int], tuple[Any, Any, Any]]


def _to_numpy(x: Any, name: str) -> np.ndarray | None:
    if x is None:
        return None
    if hasattr(x, "detach"):       # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError("%s must be numeric, got %s" % (name, a.dtype))
    return a


def logical_loads_from_physical(physical_loads: Any, phy2log: Any,
                                num_logical: int) -> np.ndarray:
    """Per-slot loads [..., L, S] folded into per-expert loads [..., L, M]
    with the mapping phy2log [L, S] (slots with -1 carry nothing).
    Arrays, nested lists and torch tensors are accepted.

    Raises:
      ValueError: an input is not numeric; physical_loads does not end with
        phy2log's shape; phy2log names an expert >= num_logical.
    """
    pl = np.asarray(_to_numpy(physical_loads, "physical_loads"), dtype=np.float64)
    p2l = np.asarray(_to_numpy(phy2log, "phy2log"), dtype=np.int64)
    if pl.shape[-2:] != p2l.shape:
        raise ValueError("physical_loads %s does not end with phy2log's shape %s"
                         % (pl.shape, p2l.shape))
    if p2l.max() >= num_logical:
        raise ValueError("phy2log names expert %d >= num_logical %d" % (p2l.max(), num_logical))
    lead = pl.shape[:-2]
    L, S = p2l.shape
    flat = pl.reshape(-1, L, S)
    out = np.zeros((flat.shape[0], L, num_logical))
    for layer in range(L):
        ok = p2l[layer] >= 0
        for t in range(flat.shape[0]):
            out[t, layer] = np.bincount(p2l[layer][ok], weights=flat[t, layer][ok],
                                        minlength=num_logical)
    return out.reshape(lead + (L, num_logical))


def check_maps(phy2log: Any, log2phy: Any, logcnt: Any, num_logical: int,
               num_ranks: int) -> None:
    """Raises AssertionError unless the triple is a consistent EPLB plan
    (ValueError when an input is not numeric). Uses assert statements, so
    `python -O` skips most checks."""
    phy2log, log2phy, logcnt = (np.asarray(_to_numpy(a, n)) for a, n in
                                ((phy2log, "phy2log"), (log2phy, "log2phy"), (logcnt, "logcnt")))
    L, S = phy2log.shape
    assert S % num_ranks == 0, "slots %d not a multiple of ranks %d" % (S, num_ranks)
    assert logcnt.shape == (L, num_logical), logcnt.shape
    assert log2phy.shape[:2] == (L, num_logical), log2phy.shape
    assert ((phy2log >= 0) & (phy2log < num_logical)).all(), "phy2log out of range"
    assert (logcnt >= 1).all(), "an expert has no replica"
    for layer in range(L):
        np.testing.assert_array_equal(np.bincount(phy2log[layer], minlength=num_logical),
                                      logcnt[layer])
        for e in range(num_logical):
            slots = log2phy[layer, e]
            used = slots[slots >= 0]
            assert len(used) == logcnt[layer, e], (layer, e, slots, logcnt[layer, e])
            assert (slots[len(used):] == -1).all(), "log2phy padding must be trailing -1"
            assert (phy2log[layer, used] == e).all(), "log2phy disagrees with phy2log"


def _row_hash(a: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(a, dtype=np.float64).tobytes(),
                           digest_size=16).digest()


class MoecastPlanner:
    """Plans EPLB placements through moecastd.

    Args:
      target / client (+ client_kwargs: token, root_ca, ...): the moecastd.
      job_id: the moecast job holding the loads (registered on the first
        call with the loads' shape; an existing job is reused).
      top_k: experts per token of the served model (job spec; it only enters
        moecast's noise model), default 1.
      mode: "default" (moecast's planner) or "eplb" (DeepSeek EPLB on the
        forecast).
      horizon: steps ahead the plan serves (0: the job's default).
      register_kwargs: more register_job arguments (e.g. horizons=[...]).
      placement_kwargs: more recommend_placement arguments (move_budget,
        migration, bytes_per_expert, interval_level, ...).
      fallback: a function (loads [L, M] summed, num_replicas, num_groups,
        num_nodes, num_ranks) -> (phy2log, log2phy, logcnt) used when
        moecastd fails (None: the error is raised).

    Loads come as [L, M] (one step) or [T, L, M] (T samples, oldest first,
    e.g. a sliding window): samples already ingested by an earlier call
    (the longest suffix of the previous window that starts the new one) are
    not ingested again; all-zero samples are skipped.

    Raises (the constructor): ValueError when neither target nor client is
    given; with target, what Client() raises for a bad target or option.
    """

    client: Client
    job_id: str
    top_k: int
    mode: str
    horizon: int
    register_kwargs: dict[str, Any]
    placement_kwargs: dict[str, Any]
    fallback: Fallback | None
    next_step: int
    shape: tuple[int, int] | None
    last_error: Exception | None
    calls: int
    ingested_steps: int

    def __init__(self, target: str | None = None, *, client: Client | None = None,
                 job_id: str = "eplb", top_k: int = 1, mode: str = "default",
                 horizon: int = 0, register_kwargs: Mapping[str, Any] | None = None,
                 placement_kwargs: Mapping[str, Any] | None = None,
                 fallback: Fallback | None = None,
                 client_kwargs: Mapping[str, Any] | None = None) -> None:
        if client is None and target is None:
            raise ValueError("MoecastPlanner needs target='host:port' or client=")
        self._own_client = client is None
        self.client = client if client is not None else Client(target, **(client_kwargs or {}))  # type: ignore[arg-type]
        self.job_id = job_id
        self.top_k = int(top_k)
        self.mode = mode
        self.horizon = int(horizon)
        self.register_kwargs = dict(register_kwargs or {})
        self.placement_kwargs = dict(placement_kwargs or {})
        self.fallback = fallback
        self.next_step = 0
        self.shape = None
        self.last_error = None
        self.calls = 0
        self.ingested_steps = 0
        self._prev_hashes: list[bytes] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        """Closes the client if this planner made it (target=); a client
        passed in stays open. Raises nothing of its own."""
        if self._own_client:
            self.client.close()

    def _ensure_job(self, L: int, M: int) -> None:
        if self.shape == (L, M):
            return
        if self.shape is not None:
            raise ValueError("loads changed shape from %s to %s" % (self.shape, (L, M)))
        try:
            self.client.register_job(self.job_id, num_layers=L, num_experts=M,
                                     top_k=min(self.top_k, M), **self.register_kwargs)
        except MoecastError as error:
            if error.code != "ALREADY_EXISTS":
                raise
            info = self.client.job_info(self.job_id)
            if (info.spec.num_layers, info.spec.num_experts) != (L, M):
                raise MoecastError("FAILED_PRECONDITION",
                                   "job '%s' exists with %d layers x %d experts, the loads are "
                                   "%d x %d" % (self.job_id, info.spec.num_layers,
                                                info.spec.num_experts, L, M), "RegisterJob")
            if info.last_step is not None:
                self.next_step = info.last_step + 1
        self.shape = (L, M)

    def ingest(self, loads: Any) -> int:
        """Ingests the new samples of loads ([L, M] or [T, L, M]); returns how many.
        The first call registers the job (or reuses an existing one of the
        same shape and continues after its last step).

        Raises:
          ValueError: loads are not numeric, not 2- or 3-dimensional, not
            finite and non-negative, or change shape from an earlier call.
          MoecastError: moecastd failed (unreachable, RegisterJob/JobInfo/
            IngestBatch errors, a rejected step), or the job exists with
            another shape (code FAILED_PRECONDITION).
        """
        a = np.asarray(_to_numpy(loads, "loads"), dtype=np.float64)
        if a.ndim == 2:
            a = a[None]
            window = False
        elif a.ndim == 3:
            window = True
        else:
            raise ValueError("loads must be [L, M] or [T, L, M], got shape %s" % (a.shape,))
        if not np.isfinite(a).all() or (a < 0).any():
            raise ValueError("loads must be finite and non-negative")
        self._ensure_job(a.shape[1], a.shape[2])
        new = a
        if window:
            hashes = [_row_hash(r) for r in a]
            prev = self._prev_hashes
            k = 0
            for n in range(min(len(prev), len(hashes)), 0, -1):
                if prev[-n:] == hashes[:n]:
                    k = n
                    break
            new = a[k:]
            self._prev_hashes = hashes
        steps = []
        for sample in new:
            if sample.sum() <= 0:
                continue
            steps.append(Step(self.next_step, sample))
            self.next_step += 1
        if steps:
            self.client.ingest_batch(self.job_id, steps).raise_for_rejections()
            self.ingested_steps += len(steps)
        return len(steps)

    def plan(self, loads: Any, num_replicas: int, num_groups: int | None, num_nodes: int,
             num_ranks: int, current_phy2log: Any = None, physical: bool = False) -> PlanMaps:
        """The EPLB triple for these loads (PlanMaps of numpy int64 arrays).

        loads: [L, M] / [T, L, M] per logical expert, or with physical=True
        [L, S] / [T, L, S] per physical slot, folded with current_phy2log.

        Raises:
          ValueError: physical=True without current_phy2log, or inputs that
            are not numeric / do not fold (raised before moecastd is asked);
            the fallback's log2phy has more replicas per expert than fit.
          MoecastError, ValueError: from ingest() or RecommendPlacement when
            there is no fallback (with a fallback they are kept in
            .last_error and the fallback's plan is returned; what the
            fallback raises is passed on).
        """
        with self._lock:
            self.calls += 1
            cur = _to_numpy(current_phy2log, "current_phy2log")
            la = _to_numpy(loads, "loads")
            if physical:
                if cur is None:
                    raise ValueError("physical loads need current_phy2log")
                M = int(cur.max()) + 1 if self.shape is None else self.shape[1]
                la = logical_loads_from_physical(la, cur, M)
            la = np.asarray(la, dtype=np.float64)
            L, M = la.shape[-2:]
            num_groups = int(num_groups) if num_groups else 1
            try:
                self.ingest(la)
                kw = dict(self.placement_kwargs)
                if cur is not None and cur.shape == (L, int(num_replicas)) and (cur >= 0).all():
                    kw.setdefault("current_phy2log", cur.astype(np.int64))
                p = self.client.recommend_placement(
                    self.job_id, num_slots=int(num_replicas), num_gpus=int(num_ranks),
                    num_groups=num_groups if M % num_groups == 0 else 1,
                    num_nodes=int(num_nodes), mode=self.mode, horizon=self.horizon, **kw)
            except (MoecastError, ValueError) as error:
                self.last_error = error
                if self.fallback is None:
                    raise
                total = la if la.ndim == 2 else la.sum(axis=0)
                p2l, l2p, cnt = (np.asarray(_to_numpy(x, "fallback")).astype(np.int64) for x in
                                 self.fallback(total, int(num_replicas), num_groups,
                                               int(num_nodes), int(num_ranks)))
                return PlanMaps(p2l, _pad(l2p, int(num_replicas) - M + 1), cnt, None)
            self.last_error = None
            plan = p.plan
            width = int(num_replicas) - M + 1
            return PlanMaps(plan.phy2log.astype(np.int64), _pad(plan.log2phy.astype(np.int64), width),
                            plan.logcnt.astype(np.int64), p)


def _pad(log2phy: np.ndarray, width: int) -> np.ndarray:
    L, M, X = log2phy.shape
    if X == width:
        return log2phy
    if X > width:
        if (log2phy[:, :, width:] != -1).any():
            raise ValueError("log2phy has more than %d replicas for an expert" % width)
        return log2phy[:, :, :width]
    out = np.full((L, M, width), -1, dtype=np.int64)
    out[:, :, :X] = log2phy
    return out
