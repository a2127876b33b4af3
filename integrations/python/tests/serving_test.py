"""moecast.serving: the vLLM EPLB policy and the SGLang EPLB algorithm
hook against their documented interfaces (stub modules in sys.modules stand
in for vllm and sglang, which are not installed), with a real moecastd
answering. Needs torch for the tensor interfaces (skipped without it, with
the reason); the planner core is tested with numpy either way.
"""

import abc
import dataclasses
import enum
import os
import sys
import types
import unittest

import numpy as np

try:
    import torch
    TORCH_ERROR = None
except ImportError as error:
    torch = None
    TORCH_ERROR = str(error)

from moecast.serving import MoecastPlanner, check_maps, logical_loads_from_physical
from moecastd_fixture import Moecastd

L, M = 3, 16


def skewed_loads(rng, samples=None, scale=1000):
    base = np.linspace(4.0, 0.5, M) ** 2
    shape = (L, M) if samples is None else (samples, L, M)
    return rng.poisson(scale * base / base.sum(), size=shape).astype(np.float64) + 1


def needs_torch(cls):
    if torch is None:
        return unittest.skip("torch is not importable (%s): the vLLM/SGLang interfaces take "
                             "torch tensors" % TORCH_ERROR)(cls)
    return cls


def install_modules(mods):
    """Inserts stub modules (name -> dict of attributes); returns the names."""
    for name, attrs in mods.items():
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        parent, _, child = name.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, m)
    return list(mods)


def remove_stubs():
    for name in list(sys.modules):
        if name.split(".")[0] in ("vllm", "sglang"):
            del sys.modules[name]


def vllm_gen1():
    """vllm/distributed/eplb/policy/{abstract,__init__}.py, first generation."""

    class AbstractEplbPolicy(abc.ABC):
        @classmethod
        @abc.abstractmethod
        def rebalance_experts(cls, weight, num_replicas, num_groups, num_nodes, num_ranks):
            raise NotImplementedError

    class DefaultEplbPolicy(AbstractEplbPolicy):
        @classmethod
        def rebalance_experts(cls, weight, num_replicas, num_groups, num_nodes, num_ranks):
            raise AssertionError("the built-in policy must not be called")

    pkg = "vllm.distributed.eplb.policy"
    install_modules({"vllm": {}, "vllm.distributed": {}, "vllm.distributed.eplb": {},
                     pkg: {"EPLB_POLICIES": {"default": DefaultEplbPolicy}},
                     pkg + ".abstract": {"AbstractEplbPolicy": AbstractEplbPolicy}})
    sys.modules[pkg].AbstractEplbPolicy = AbstractEplbPolicy
    return sys.modules[pkg]


def vllm_gen3():
    """The newest generation: plan_rebalance(context, state) -> EplbPlan."""

    @dataclasses.dataclass(frozen=True)
    class EplbTopology:
        num_groups: int
        num_nodes: int
        num_ranks: int

    @dataclasses.dataclass(frozen=True)
    class EplbRebalanceContext:
        load_window_cpu: object
        physical_to_logical_map_cpu: object
        topology: EplbTopology
        num_replicas: int
        cpu_group: object

    @dataclasses.dataclass(frozen=True)
    class EplbPlan:
        physical_to_logical_map: object

    class EplbPolicyState:
        pass

    class AbstractEplbPolicy(abc.ABC):
        def create_state(self, num_moe_layers):
            return EplbPolicyState()

        @abc.abstractmethod
        def plan_rebalance(self, context, policy_state):
            raise NotImplementedError

        def on_layer_committed(self, policy_state, plan, layer_idx):
            return None

        @classmethod
        def rebalance_experts(cls, weight, num_replicas, num_groups, num_nodes, num_ranks,
                              old_global_expert_indices=None):
            raise NotImplementedError

    pkg = "vllm.distributed.eplb.policy"
    install_modules({"vllm": {}, "vllm.distributed": {}, "vllm.distributed.eplb": {},
                     pkg: {"EPLB_POLICIES": {}},
                     pkg + ".abstract": dict(AbstractEplbPolicy=AbstractEplbPolicy, EplbPlan=EplbPlan,
                                             EplbTopology=EplbTopology,
                                             EplbRebalanceContext=EplbRebalanceContext,
                                             EplbPolicyState=EplbPolicyState)})
    return sys.modules[pkg + ".abstract"]


def sglang_stub(calls):
    class EplbAlgorithm(enum.Enum):
        deepseek = enum.auto()
        deepseek_hierarchical = enum.auto()
        deepseek_vec = enum.auto()
        deepseek_vec_hierarchical = enum.auto()

    def rebalance_experts(tokens_per_expert, num_physical_experts, num_local_physical_experts,
                          num_groups, num_nodes, algorithm):
        # A stand-in for the built-in: round robin, one replica each first.
        calls.append((tuple(tokens_per_expert.shape), algorithm))
        layers, m = tokens_per_expert.shape[-2:]
        p2l = torch.arange(num_physical_experts).remainder(m).repeat(layers, 1)
        cnt = torch.stack([torch.bincount(r, minlength=m) for r in p2l])
        l2p = torch.full((layers, m, num_physical_experts - m + 1), -1, dtype=torch.int64)
        for layer in range(layers):
            for e in range(m):
                slots = (p2l[layer] == e).nonzero().flatten()
                l2p[layer, e, :len(slots)] = slots
        return p2l, l2p, cnt

    name = "sglang.srt.eplb.eplb_algorithms"
    install_modules({"sglang": {}, "sglang.srt": {}, "sglang.srt.eplb": {},
                     name: {"EplbAlgorithm": EplbAlgorithm, "rebalance_experts": rebalance_experts}})
    return sys.modules[name]


class ServerCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.environ.get("MOECASTD"):
            raise unittest.SkipTest("MOECASTD is not set")
        cls.server = Moecastd().start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def setUp(self):
        remove_stubs()
        self.rng = np.random.default_rng(7)

    def tearDown(self):
        remove_stubs()

    def assertPlan(self, p2l, l2p, cnt, num_replicas, num_ranks, distinct_per_gpu=True):
        p2l, l2p, cnt = (np.asarray(x) for x in (p2l, l2p, cnt))
        self.assertEqual(p2l.shape, (L, num_replicas))
        self.assertEqual(l2p.shape, (L, M, num_replicas - M + 1))
        self.assertEqual(cnt.shape, (L, M))
        check_maps(p2l, l2p, cnt, M, num_ranks)
        per_rank = num_replicas // num_ranks
        for layer in range(L):
            gpus = p2l[layer].reshape(num_ranks, per_rank)
            self.assertEqual(gpus.shape[1], per_rank)
            if distinct_per_gpu:   # moecast's default mode: no expert twice on one GPU
                for g in gpus:
                    self.assertEqual(len(set(g.tolist())), per_rank, g)


class PlannerTest(ServerCase):
    def test_plan_numpy_and_window_dedup(self):
        planner = MoecastPlanner(self.server.target, job_id="planner-np")
        window = skewed_loads(self.rng, samples=5)
        maps = planner.plan(window, 24, 1, 1, 4)
        self.assertEqual(planner.ingested_steps, 5)
        self.assertPlan(maps.phy2log, maps.log2phy, maps.logcnt, 24, 4)
        self.assertEqual(maps.phy2log.dtype, np.int64)
        # Sliding window: 3 old samples + 2 new ones -> only 2 ingested.
        window2 = np.concatenate([window[2:], skewed_loads(self.rng, samples=2)])
        planner.plan(window2, 24, 1, 1, 4, current_phy2log=maps.phy2log)
        self.assertEqual(planner.ingested_steps, 7)
        self.assertEqual(planner.client.job_info("planner-np").committed_steps, 7)
        # Hot experts (low index) get the replicas.
        self.assertTrue((maps.logcnt[:, 0] >= maps.logcnt[:, -1]).all())
        self.assertGreater(maps.logcnt[:, 0].min(), 1)
        planner.close()

    def test_physical_loads_fold_with_mapping(self):
        p2l = np.tile(np.concatenate([np.arange(M), np.arange(8)]), (L, 1))   # experts 0-7 twice
        phys = self.rng.integers(1, 50, size=(L, 24)).astype(float)
        logical = logical_loads_from_physical(phys, p2l, M)
        for layer in range(L):
            for e in range(M):
                self.assertEqual(logical[layer, e], phys[layer][p2l[layer] == e].sum())
        planner = MoecastPlanner(self.server.target, job_id="planner-phys")
        maps = planner.plan(phys, 24, 1, 1, 4, current_phy2log=p2l, physical=True)
        self.assertPlan(maps.phy2log, maps.log2phy, maps.logcnt, 24, 4)
        self.assertIsNotNone(maps.placement.current)       # the current mapping was sent
        planner.close()

    def test_fallback_on_server_error(self):
        used = []

        def fallback(total, num_replicas, num_groups, num_nodes, num_ranks):
            used.append(total.shape)
            p2l = np.tile(np.arange(num_replicas) % M, (L, 1))
            cnt = np.stack([np.bincount(r, minlength=M) for r in p2l])
            l2p = np.full((L, M, 2), -1)
            for e in range(M):
                l2p[:, e, :cnt[0, e]] = np.nonzero(p2l[0] == e)[0]
            return p2l, l2p, cnt

        planner = MoecastPlanner(self.server.target, job_id="planner-fb", fallback=fallback)
        maps = planner.plan(skewed_loads(self.rng, samples=2), 18, 1, 1, 4)  # 18 % 4 != 0
        self.assertEqual(used, [(L, M)])
        self.assertEqual(planner.last_error.code, "INVALID_ARGUMENT")
        self.assertEqual(maps.log2phy.shape, (L, M, 18 - M + 1))
        self.assertIsNone(maps.placement)
        planner.close()


@needs_torch
class VllmPolicyTest(ServerCase):
    def test_generation1_registry_and_triple(self):
        from moecast.serving.vllm import install_vllm
        pkg = vllm_gen1()
        policy = install_vllm(target=self.server.target, job_id="vllm-g1", top_k=2)
        self.assertIs(pkg.EPLB_POLICIES["default"], policy)
        self.assertTrue(issubclass(policy, pkg.AbstractEplbPolicy))
        policy()                                           # no abstract method left
        weight = torch.tensor(skewed_loads(self.rng))      # [L, M] window sum
        p2l, l2p, cnt = policy.rebalance_experts(weight, 32, 4, 2, 8)
        for t in (p2l, l2p, cnt):
            self.assertIsInstance(t, torch.Tensor)
            self.assertEqual(t.dtype, torch.int64)
            self.assertEqual(t.device.type, "cpu")
        self.assertPlan(p2l, l2p, cnt, 32, 8)
        # Second call with the current mapping (generation 2 passes it).
        p2l2, l2p2, cnt2 = policy.rebalance_experts(torch.tensor(skewed_loads(self.rng)), 32, 4, 2, 8,
                                                    p2l)
        self.assertPlan(p2l2, l2p2, cnt2, 32, 8)
        self.assertIsNotNone(policy.last_maps.placement.current)
        self.assertEqual(policy.planner.client.job_info("vllm-g1").committed_steps, 2)
        # Group-limited routing: 4 groups over 2 nodes -> a group's replicas stay on one node.
        per_node = 32 // 2
        for layer in range(L):
            for g in range(4):
                nodes = {int(s) // per_node for e in range(g * 4, g * 4 + 4)
                         for s in l2p[layer, e].tolist() if s >= 0}
                self.assertEqual(len(nodes), 1, (layer, g, nodes))

    def test_generation3_plan_rebalance(self):
        from moecast.serving.vllm import make_vllm_policy
        ab = vllm_gen3()
        policy = make_vllm_policy(target=self.server.target, job_id="vllm-g3")
        self.assertEqual(policy.returns, "phy2log")
        inst = policy()
        state = inst.create_state(L)
        window = torch.tensor(skewed_loads(self.rng, samples=6))
        current = torch.arange(24).remainder(M).repeat(L, 1)
        ctx = ab.EplbRebalanceContext(window, current, ab.EplbTopology(1, 1, 4), 24, None)
        plan = inst.plan_rebalance(ctx, state)
        self.assertIsInstance(plan, ab.EplbPlan)
        p2l = plan.physical_to_logical_map
        self.assertEqual((tuple(p2l.shape), p2l.dtype), ((L, 24), torch.int64))
        m = policy.last_maps
        self.assertPlan(m.phy2log, m.log2phy, m.logcnt, 24, 4)
        np.testing.assert_array_equal(p2l.numpy(), m.phy2log)
        # Legacy entry returns phy2log only in this generation.
        out = policy.rebalance_experts(window.sum(0), 24, 1, 1, 4, p2l)
        self.assertEqual(tuple(out.shape), (L, 24))
        # The next window overlaps by 4 samples: 2 new steps.
        window2 = torch.cat([window[2:], torch.tensor(skewed_loads(self.rng, samples=2))])
        inst.plan_rebalance(ab.EplbRebalanceContext(window2, p2l, ab.EplbTopology(1, 1, 4), 24,
                                                    None), state)
        self.assertEqual(policy.planner.client.job_info("vllm-g3").committed_steps, 6 + 1 + 2)


@needs_torch
class SglangHookTest(ServerCase):
    def test_install_routes_by_algorithm_and_falls_back(self):
        from moecast.serving.sglang import install_sglang
        calls = []
        mod = sglang_stub(calls)
        wrapper = install_sglang(algorithms=[mod.EplbAlgorithm.deepseek], target=self.server.target,
                                 job_id="sglang", top_k=8, current_mapping_fn=None)
        self.assertIs(mod.rebalance_experts, wrapper)
        tpe = torch.tensor(skewed_loads(self.rng, samples=4))        # [samples, L, M]
        p2l, l2p, cnt = mod.rebalance_experts(tokens_per_expert=tpe, num_physical_experts=32,
                                              num_local_physical_experts=8, num_groups=None,
                                              num_nodes=1, algorithm=mod.EplbAlgorithm.deepseek)
        self.assertEqual(calls, [])                      # moecast answered
        self.assertEqual([t.dtype for t in (p2l, l2p, cnt)], [torch.int64] * 3)
        self.assertPlan(p2l, l2p, cnt, 32, 4)
        self.assertEqual(wrapper.moecast.planner.ingested_steps, 4)
        # Another algorithm goes to the built-in.
        mod.rebalance_experts(tpe, 32, 8, None, 1, mod.EplbAlgorithm.deepseek_vec)
        self.assertEqual(calls, [((4, L, M), mod.EplbAlgorithm.deepseek_vec)])
        # A request moecast's default mode rejects (48 slots on 2 GPUs: an expert could
        # have at most 2 replicas, 32 < 48) falls back to the built-in.
        out = mod.rebalance_experts(tpe, 48, 24, None, 1, mod.EplbAlgorithm.deepseek)
        self.assertEqual(len(calls), 2)
        self.assertEqual(calls[1], ((1, L, M), mod.EplbAlgorithm.deepseek))
        self.assertEqual(tuple(out[0].shape), (L, 48))
        self.assertEqual(wrapper.moecast.planner.last_error.code, "INVALID_ARGUMENT")

    def test_current_mapping_is_read_from_sglang(self):
        from moecast.serving.sglang import install_sglang
        mod = sglang_stub([])
        current = torch.arange(32).remainder(M).repeat(L, 1)
        meta = types.SimpleNamespace(physical_to_logical_map=current)
        install_modules({"sglang.srt.eplb.expert_location":
                         {"get_global_expert_location_metadata": lambda: meta}})
        wrapper = install_sglang(target=self.server.target, job_id="sglang-cur", fallback=False)
        mod.rebalance_experts(torch.tensor(skewed_loads(self.rng, samples=2)), 32, 8, None, 1,
                              mod.EplbAlgorithm.deepseek_hierarchical)
        placement = wrapper.moecast.last_maps.placement
        self.assertIsNotNone(placement.current)
        np.testing.assert_array_equal(placement.current.phy2log, current.numpy())


if __name__ == "__main__":
    unittest.main(verbosity=2)
