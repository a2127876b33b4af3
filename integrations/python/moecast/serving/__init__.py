"""Drop-ins that let serving stacks ask moecast (through moecastd) for their
expert-parallel load-balancing (EPLB) plans instead of the built-in
window-sum DeepSeek EPLB:

  vllm.py    MoecastEplbPolicy for vLLM's vllm/distributed/eplb/policy/
             (make_vllm_policy, install_vllm)
  sglang.py  a rebalance_experts with SGLang's eplb_algorithms signature
             (make_sglang_rebalance, install_sglang)
  planner.py MoecastPlanner, the shared core (loads in, plan out), and
             logical_loads_from_physical (fold per-slot loads with the current
             mapping into per-expert loads)

Nothing here imports vllm or sglang at module import; torch only when the
inputs are torch tensors.
"""

from .planner import MoecastPlanner, PlanMaps, check_maps, logical_loads_from_physical

__all__ = ["MoecastPlanner", "PlanMaps", "check_maps", "logical_loads_from_physical"]
