"""An SGLang EPLB algorithm hook that asks moecast (moecastd) for the plan.

    from moecast.serving.sglang import install_sglang
    install_sglang(target="127.0.0.1:50051", job_id="dsv3-serving", top_k=8)
    # before SGLang's EPLBManager rebalances (e.g. at the top of the launch script)

The interface, as found in SGLang's public source (sgl-project/sglang):

  python/sglang/srt/eplb/eplb_algorithms/__init__.py (older releases:
  python/sglang/srt/managers/eplb_algorithms/__init__.py):
    class EplbAlgorithm(Enum): deepseek, deepseek_hierarchical, deepseek_vec,
        deepseek_vec_hierarchical, elasticity_aware (later also flash_lb,
        compute_aware, ...; "TODO may have more algorithm later")
    def rebalance_experts(tokens_per_expert: torch.Tensor,
                          num_physical_experts: int,
                          num_local_physical_experts: int,
                          num_groups: Optional[int], num_nodes: int,
                          algorithm: EplbAlgorithm)
        -> (physical_to_logical_map [layers, num_physical_experts],
            logical_to_all_physical_map [layers, num_logical_experts, X] (-1 padded),
            expert_count [layers, num_logical_experts])
    tokens_per_expert is the recorder's logical count [samples, layers,
    num_logical_experts] (the deepseek algorithms sum it over dim 0);
    num_gpus = num_physical_experts // num_local_physical_experts.
    def compute_algorithm(raw_algorithm, num_groups, num_nodes) -> EplbAlgorithm
        (--eplb-algorithm: a member name or "auto").
  Callers (python/sglang/srt/eplb/expert_location.py, eplb_manager.py) call
  it as eplb_algorithms.rebalance_experts(...) through the module, so
  replacing the module attribute reaches them. The current mapping is not an
  argument: it is read from
  sglang.srt.eplb.expert_location.get_global_expert_location_metadata()
  .physical_to_logical_map when that exists (or current_mapping_fn).

The Enum cannot be extended, so install_sglang wraps the module's
rebalance_experts: calls whose algorithm is in `algorithms` (default: all)
go to moecast, the others (and moecastd failures, when fallback=True) to the
original function.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from .planner import MoecastPlanner

MODULES: tuple[str, ...] = ("sglang.srt.eplb.eplb_algorithms", "sglang.srt.managers.eplb_algorithms")


def _current_mapping_from_sglang() -> Any:
    for name in ("sglang.srt.eplb.expert_location", "sglang.srt.managers.expert_location"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        get = getattr(mod, "get_global_expert_location_metadata", None)
        meta = get() if get is not None else None
        if meta is not None:
            return getattr(meta, "physical_to_logical_map", None)
    return None


def make_sglang_rebalance(planner: MoecastPlanner | None = None,
                          current_mapping_fn: Callable[[], Any] | None = _current_mapping_from_sglang,
                          **planner_kwargs: Any) -> Callable[..., tuple[Any, ...]]:
    """A function with SGLang's rebalance_experts signature that plans with
    moecast; returns int64 CPU torch tensors (numpy arrays if torch is not
    importable). The function carries .planner and .last_maps (the last
    PlanMaps).

    Raises (here): what MoecastPlanner(**planner_kwargs) raises (ValueError
    without target/client). The returned function raises what
    MoecastPlanner.plan raises (MoecastError when moecastd fails and the
    planner has no fallback; ValueError for loads that do not fit) and
    ZeroDivisionError when num_local_physical_experts is 0.
    """
    if planner is None:
        planner = MoecastPlanner(**planner_kwargs)

    def rebalance_experts(tokens_per_expert: Any, num_physical_experts: int,
                          num_local_physical_experts: int, num_groups: int | None,
                          num_nodes: int, algorithm: Any = None) -> tuple[Any, ...]:
        num_gpus = int(num_physical_experts) // int(num_local_physical_experts)
        current = current_mapping_fn() if current_mapping_fn is not None else None
        maps = planner.plan(tokens_per_expert, num_physical_experts, num_groups or 1, num_nodes,  # type: ignore[union-attr]
                            num_gpus, current_phy2log=current)
        rebalance_experts.last_maps = maps  # type: ignore[attr-defined]
        arrays = (maps.phy2log, maps.log2phy, maps.logcnt)
        try:
            import torch
        except ImportError:
            return arrays
        return tuple(torch.from_numpy(a.astype("int64", copy=True)) for a in arrays)

    rebalance_experts.planner = planner  # type: ignore[attr-defined]
    rebalance_experts.last_maps = None  # type: ignore[attr-defined]
    return rebalance_experts


def install_sglang(algorithms: Iterable[Any] | None = None, fallback: bool = True,
                   module: ModuleType | None = None, planner: MoecastPlanner | None = None,
                   **planner_kwargs: Any) -> Callable[..., Any]:
    """Wraps SGLang's eplb_algorithms.rebalance_experts: calls with an
    algorithm in `algorithms` (EplbAlgorithm members or names; None: all) are
    planned by moecast; fallback=True sends the others and moecastd failures
    to the original. Returns the wrapper (its .moecast is the moecast
    function, .original the replaced one).

    Raises:
      ImportError: no `module` given and none of MODULES is importable
        (SGLang not installed).
      AttributeError: the module has no rebalance_experts.
      ValueError: from MoecastPlanner(**planner_kwargs) (no target/client).
    The wrapper raises what the moecast function or the original raises
    (MoecastError from moecastd only when the planner has no fallback).
    """
    if module is None:
        for name in MODULES:
            try:
                module = importlib.import_module(name)
                break
            except ImportError:
                continue
        else:
            raise ImportError("SGLang's eplb_algorithms module is not importable (%s)"
                              % ", ".join(MODULES))
    original = module.rebalance_experts
    if fallback and planner is None:
        def fb(total, num_replicas, num_groups, num_nodes, num_ranks):
            return original(total[None] if total.ndim == 2 else total, num_replicas,
                            num_replicas // num_ranks, num_groups, num_nodes,
                            _default_algorithm(module))
        planner_kwargs.setdefault("fallback", _as_torch_input(fb))
    ours = make_sglang_rebalance(planner=planner, **planner_kwargs)
    names = None if algorithms is None else {getattr(a, "name", a) for a in algorithms}

    def rebalance_experts(tokens_per_expert: Any, num_physical_experts: int,
                          num_local_physical_experts: int, num_groups: int | None,
                          num_nodes: int, algorithm: Any) -> Any:
        if names is None or getattr(algorithm, "name", algorithm) in names:
            return ours(tokens_per_expert, num_physical_experts, num_local_physical_experts,
                        num_groups, num_nodes, algorithm)
        return original(tokens_per_expert, num_physical_experts, num_local_physical_experts,
                        num_groups, num_nodes, algorithm)

    rebalance_experts.moecast = ours  # type: ignore[attr-defined]
    rebalance_experts.original = original  # type: ignore[attr-defined]
    module.rebalance_experts = rebalance_experts  # type: ignore[attr-defined]
    return rebalance_experts


def _default_algorithm(module: ModuleType) -> Any:
    enum = getattr(module, "EplbAlgorithm", None)
    return getattr(enum, "deepseek", None) if enum is not None else None


def _as_torch_input(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(total: Any, *args: Any) -> Any:
        try:
            import torch
            total = torch.from_numpy(total)
        except ImportError:
            pass
        return fn(total, *args)
    return call
