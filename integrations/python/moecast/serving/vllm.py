"""A vLLM EPLB policy that asks moecast (moecastd) for the plan.

    from moecast.serving.vllm import install_vllm
    install_vllm(target="127.0.0.1:50051", job_id="dsv3-serving", top_k=8)
    # before vLLM builds its EplbState: EPLB_POLICIES["default"] is now moecast's

The interface, as found in vLLM's public source (vllm-project/vllm):

  vllm/distributed/eplb/policy/abstract.py -- three generations:
   (1) class AbstractEplbPolicy(ABC) with
         @classmethod @abstractmethod
         rebalance_experts(cls, weight, num_replicas, num_groups, num_nodes, num_ranks)
           -> (physical_to_logical_map [layers, num_replicas],
               logical_to_physical_map [layers, num_logical_experts, X] (-1 padded),
               expert_count / logical_replica_count [layers, num_logical_experts])
       weight: [layers, num_logical_experts] load statistics (vLLM sums its
       per-physical-expert load window over the window and folds it to
       logical experts before calling); num_replicas a multiple of num_ranks;
       num_ranks a multiple of num_nodes; num_groups 0/1 without grouping.
   (2) the same plus old_global_expert_indices: Tensor | None = None (the
       current physical_to_logical_map [layers, num_replicas]), still
       returning the triple (policy/default.py, policy/flashlb.py,
       policy/swift_balancer.py).
   (3) newest: instances with plan_rebalance(self, context: EplbRebalanceContext,
       policy_state) -> EplbPlan(physical_to_logical_map), create_state(num_moe_layers),
       on_layer_committed(policy_state, plan, layer_idx); context has
       load_window_cpu [samples, layers, experts] (oldest first),
       physical_to_logical_map_cpu [layers, physical_experts], topology
       (num_groups, num_nodes, num_ranks), num_replicas, cpu_group; and the
       legacy classmethod rebalance_experts(..., old_global_expert_indices)
       -> physical_to_logical_map only (_plan_from_legacy wraps it).
  vllm/distributed/eplb/policy/__init__.py: EPLB_POLICIES = {"default":
       DefaultEplbPolicy, ...}, keys asserted equal to the EPLBPolicyOption
       Literal of vllm/config/parallel.py (so a new name is not selectable
       through the config: install_vllm replaces "default" unless told
       otherwise).
  Older releases: vllm/distributed/eplb/rebalance_algo.py, a module-level
       rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus)
       returning the triple (install_vllm patches it when there is no policy
       package).

MoecastEplbPolicy answers all three: rebalance_experts returns the triple
unless the base class has plan_rebalance (generation 3), where it returns the
phy2log tensor; plan_rebalance ingests the window's new samples one step each.
All tensors come back as int64 CPU tensors (phy2log [L, S], log2phy
[L, M, S - M + 1], logcnt [L, M]).

Caveat: vLLM runs the policy on every rank; every rank ingests the same
step numbers, so the ranks after the first send duplicates (ignored by
moecastd) and get the same plan.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from .planner import MoecastPlanner

if TYPE_CHECKING:
    import numpy as np
    import torch

_POLICY_MODULE = "vllm.distributed.eplb.policy"
_ABSTRACT_MODULE = "vllm.distributed.eplb.policy.abstract"
_LEGACY_MODULE = "vllm.distributed.eplb.rebalance_algo"


def _torch_out(arrays: Iterable[np.ndarray]) -> tuple[torch.Tensor, ...]:
    """int64 CPU tensors (vLLM moves the maps to its devices itself)."""
    import torch
    return tuple(torch.from_numpy(a.astype("int64", copy=True)) for a in arrays)


def _abstract_base() -> type:
    try:
        mod = importlib.import_module(_ABSTRACT_MODULE)
        return mod.AbstractEplbPolicy
    except ImportError:
        return object


def make_vllm_policy(planner: MoecastPlanner | None = None, base: type | None = None,
                     returns: Literal["auto", "triple", "phy2log"] = "auto",
                     name: str = "MoecastEplbPolicy", **planner_kwargs: Any) -> type:
    """A subclass of vLLM's AbstractEplbPolicy (or `base`) that plans with
    moecast. planner: a MoecastPlanner (else one is made from planner_kwargs:
    target=, job_id=, top_k=, mode=, ...). returns: "auto" (by the base's
    generation), "triple" or "phy2log".

    Raises:
      ValueError: returns is not one of its values; from
        MoecastPlanner(**planner_kwargs) (no target/client).
      TypeError: `base` cannot be subclassed this way.
    The class's rebalance_experts / plan_rebalance raise what
    MoecastPlanner.plan raises (MoecastError when moecastd fails and the
    planner has no fallback; ValueError for loads that do not fit) and
    ImportError when torch is missing.
    """
    if base is None:
        base = _abstract_base()
    if planner is None:
        planner = MoecastPlanner(**planner_kwargs)
    if returns == "auto":
        returns = "phy2log" if hasattr(base, "plan_rebalance") else "triple"
    if returns not in ("triple", "phy2log"):
        raise ValueError("returns must be 'auto', 'triple' or 'phy2log'")

    def rebalance_experts(cls: Any, weight: Any, num_replicas: int, num_groups: int,
                          num_nodes: int, num_ranks: int,
                          old_global_expert_indices: Any = None) -> Any:
        maps = cls.planner.plan(weight, num_replicas, num_groups, num_nodes, num_ranks,
                                current_phy2log=old_global_expert_indices)
        cls.last_maps = maps
        out = _torch_out((maps.phy2log, maps.log2phy, maps.logcnt))
        return out[0] if cls.returns == "phy2log" else out

    def plan_rebalance(self: Any, context: Any, policy_state: Any) -> Any:
        topo = context.topology
        maps = type(self).planner.plan(context.load_window_cpu, context.num_replicas,
                                       topo.num_groups, topo.num_nodes, topo.num_ranks,
                                       current_phy2log=context.physical_to_logical_map_cpu)
        type(self).last_maps = maps
        phy2log = _torch_out((maps.phy2log,))[0]
        plan_cls = getattr(sys.modules.get(base.__module__), "EplbPlan", None)
        if plan_cls is None:
            plan_cls = getattr(importlib.import_module(_ABSTRACT_MODULE), "EplbPlan")
        return plan_cls(phy2log)

    ns: dict[str, Any] = {"planner": planner, "returns": returns, "last_maps": None,
          "rebalance_experts": classmethod(rebalance_experts),
          "__doc__": "EPLB policy that asks moecast (moecastd) for the placement."}
    if hasattr(base, "plan_rebalance"):
        ns["plan_rebalance"] = plan_rebalance
    return type(name, (base,), ns)


def install_vllm(name: str = "default", planner: MoecastPlanner | None = None,
                 **planner_kwargs: Any) -> type | Callable[..., Any]:
    """Makes vLLM use moecast for EPLB: EPLB_POLICIES[name] = the policy (by
    default replacing "default", since the config only accepts names in its
    Literal); without the policy package (older vLLM), replaces
    rebalance_algo.rebalance_experts. Returns the policy class (or the
    replacement function).

    Raises:
      ImportError: neither vLLM's EPLB policy package nor its older
        rebalance_algo module is importable (vLLM not installed).
      ValueError: from make_vllm_policy / MoecastPlanner (bad returns, no
        target/client).
    """
    try:
        pkg = importlib.import_module(_POLICY_MODULE)
    except ImportError:
        pkg = None
    if pkg is not None and hasattr(pkg, "EPLB_POLICIES"):
        policy = make_vllm_policy(planner=planner, **planner_kwargs)
        pkg.EPLB_POLICIES[name] = policy
        return policy
    legacy = importlib.import_module(_LEGACY_MODULE)
    policy = make_vllm_policy(planner=planner, base=object, returns="triple", **planner_kwargs)

    def rebalance_experts(weight: Any, num_replicas: int, num_groups: int, num_nodes: int,
                          num_gpus: int) -> Any:
        return policy.rebalance_experts(  # type: ignore[attr-defined]
            weight, num_replicas, num_groups, num_nodes, num_gpus)

    rebalance_experts.policy = policy  # type: ignore[attr-defined]
    legacy.rebalance_experts = rebalance_experts  # type: ignore[attr-defined]
    return rebalance_experts
