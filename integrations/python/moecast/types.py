"""Plain Python values for moecast.v1 requests and answers.

Answers keep the proto message they came from in `raw` (not shown in repr)
for fields this module does not lift. Enums become lower-case strings:
load states "transient" / "stable", step outcomes "committed" / "duplicate" /
"pending" / "rejected", event kinds "state_change" / "phase_change" /
"expert_dead" / "expert_revived" / "rebalance_recommended". Per-expert series
become numpy float64 arrays (int64 for placements), shaped [L, M] etc.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from ._stubs import pb
from .errors import MoecastError, code_name

# --- enums -----------------------------------------------------------------

STEP_UNITS = {
    "optimizer_step": pb.STEP_UNIT_OPTIMIZER_STEP,
    "forward_pass": pb.STEP_UNIT_FORWARD_PASS,
    "interval": pb.STEP_UNIT_INTERVAL,
}
ROUTERS = {
    "softmax": pb.ROUTER_KIND_SOFTMAX,
    "sigmoid_with_bias": pb.ROUTER_KIND_SIGMOID_WITH_BIAS,
}
_STEP_UNIT_NAMES = {v: k for k, v in STEP_UNITS.items()}
_STEP_UNIT_NAMES[pb.STEP_UNIT_UNSPECIFIED] = "optimizer_step"
_ROUTER_NAMES = {v: k for k, v in ROUTERS.items()}
_ROUTER_NAMES[pb.ROUTER_KIND_UNSPECIFIED] = "softmax"
_LOAD_STATES = {
    pb.LOAD_STATE_UNSPECIFIED: "unspecified",
    pb.LOAD_STATE_TRANSIENT: "transient",
    pb.LOAD_STATE_STABLE: "stable",
}
_OUTCOMES = {
    pb.STEP_OUTCOME_UNSPECIFIED: "unspecified",
    pb.STEP_OUTCOME_COMMITTED: "committed",
    pb.STEP_OUTCOME_DUPLICATE: "duplicate",
    pb.STEP_OUTCOME_PENDING: "pending",
    pb.STEP_OUTCOME_REJECTED: "rejected",
}
_EVENT_KINDS = {
    pb.Event.KIND_UNSPECIFIED: "unspecified",
    pb.Event.KIND_STATE_CHANGE: "state_change",
    pb.Event.KIND_PHASE_CHANGE: "phase_change",
    pb.Event.KIND_EXPERT_DEAD: "expert_dead",
    pb.Event.KIND_EXPERT_REVIVED: "expert_revived",
    pb.Event.KIND_SHIFT: "shift",
    pb.Event.KIND_REBALANCE_RECOMMENDED: "rebalance_recommended",
}
_E_KINDS = {
    pb.EParameter.KIND_UNSPECIFIED: "unspecified",
    pb.EParameter.KIND_FINITE: "finite",
    pb.EParameter.KIND_UNBOUNDED: "unbounded",
    pb.EParameter.KIND_INDETERMINATE: "indeterminate",
    pb.EParameter.KIND_MISSING: "missing",
}
HYPERPARAMETERS = ("aux_loss_coef", "router_temperature", "entropy_weight",
                   "oracle_weight", "balance_weight")


def load_state_name(value: int) -> str:
    """The name of a LoadState enum value ("unknown(N)" if unknown); raises
    TypeError only for a value that is not an integer."""
    return _LOAD_STATES.get(value, "unknown(%d)" % value)


def _opt(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def _array(values: Any, shape: Any = None, dtype: Any = np.float64) -> np.ndarray:
    a = np.asarray(list(values), dtype=dtype)
    if shape is not None and a.size:
        a = a.reshape(shape)
    return a


def _array_or_none(values: Any, shape: Any = None,
                   dtype: Any = np.float64) -> Optional[np.ndarray]:
    return _array(values, shape, dtype) if len(values) else None


# --- input -----------------------------------------------------------------


@dataclass
class Step:
    """One step (or one source's part of it) to ingest.

    counts: array-like [L, M] of per-expert assignment counts (finite, >= 0).
    router_logits: optional array-like [L, M] of mean pre-softmax logits.
    tokens: optional number of tokens in the step.
    source: producer index for multi-source jobs.
    """

    step: int
    counts: Any
    router_logits: Any = None
    tokens: Optional[float] = None
    source: int = 0


@dataclass
class MigrationModel:
    """Costs and benefits of migrating experts (RecommendPlacement, Watch)."""

    intra_node_bandwidth: float
    inter_node_bandwidth: float
    tokens_per_step: float
    time_per_token_s: float
    horizon_steps: float
    bytes_per_expert: float = 0.0
    overlap: bool = False
    overlap_cost_fraction: Optional[float] = None
    transient_margin: Optional[float] = None


# --- jobs ------------------------------------------------------------------


@dataclass
class JobSpec:
    job_id: str
    num_layers: int
    num_experts: int
    top_k: int
    num_sources: int = 1
    step_unit: str = "optimizer_step"
    router: str = "softmax"
    hyperparameters: Dict[str, float] = field(default_factory=dict)
    predictors: List[str] = field(default_factory=list)
    horizons: List[int] = field(default_factory=list)
    forecasting: bool = True
    health: bool = True

    @classmethod
    def from_proto(cls, m: Any) -> "JobSpec":
        h = m.hyperparameters
        return cls(
            job_id=m.job_id, num_layers=m.num_layers, num_experts=m.num_experts,
            top_k=m.top_k, num_sources=m.num_sources or 1,
            step_unit=_STEP_UNIT_NAMES.get(m.step_unit, "unknown"),
            router=_ROUTER_NAMES.get(m.router, "unknown"),
            hyperparameters={n: getattr(h, n) for n in HYPERPARAMETERS if h.HasField(n)},
            predictors=list(m.predictors), horizons=list(m.horizons),
            forecasting=not m.disable_forecasting, health=not m.disable_health)


@dataclass
class JobInfo:
    spec: JobSpec
    committed_steps: int
    first_step: Optional[int]
    last_step: Optional[int]
    gaps: int
    missing_steps: int
    incomplete_steps: int
    duplicate_calls: int
    rejected_calls: int
    pending_steps: int
    tokens: float
    history_bytes: int
    forecast_bytes: int
    idle_seconds: float
    expires_after_idle_seconds: Optional[float]
    raw: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: Any) -> "JobInfo":
        return cls(
            spec=JobSpec.from_proto(m.spec), committed_steps=m.committed_steps,
            first_step=_opt(m, "first_step"), last_step=_opt(m, "last_step"),
            gaps=m.gaps, missing_steps=m.missing_steps, incomplete_steps=m.incomplete_steps,
            duplicate_calls=m.duplicate_calls, rejected_calls=m.rejected_calls,
            pending_steps=m.pending_steps, tokens=m.tokens, history_bytes=m.history_bytes,
            forecast_bytes=m.forecast_bytes, idle_seconds=m.idle_seconds,
            expires_after_idle_seconds=_opt(m, "expires_after_idle_seconds"), raw=m)


# --- ingestion -------------------------------------------------------------


@dataclass
class CommittedStep:
    step: int
    incomplete: bool
    gap_before: int

    @classmethod
    def from_proto(cls, m: Any) -> "CommittedStep":
        return cls(step=m.step, incomplete=m.incomplete, gap_before=m.gap_before)


@dataclass
class StepResult:
    step: int
    source: int
    outcome: str
    error_code: Optional[str]  # gRPC code name for rejected steps
    error_message: str
    note: str
    committed: List[CommittedStep]

    @classmethod
    def from_proto(cls, m: Any) -> "StepResult":
        return cls(step=m.step, source=m.source, outcome=_OUTCOMES.get(m.outcome, "unknown"),
                   error_code=code_name(m.error_code) if m.error_code else None,
                   error_message=m.error_message, note=m.note,
                   committed=[CommittedStep.from_proto(c) for c in m.committed])


@dataclass
class IngestResult:
    """IngestBatch's answer: one result per step sent, in order."""

    results: List[StepResult]
    committed: List[CommittedStep]
    rejected: int
    raw: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: Any) -> "IngestResult":
        return cls(results=[StepResult.from_proto(r) for r in m.results],
                   committed=[CommittedStep.from_proto(c) for c in m.committed],
                   rejected=m.rejected, raw=m)

    @property
    def rejections(self) -> List["StepResult"]:
        """The results of the rejected steps."""
        return [r for r in self.results if r.outcome == "rejected"]

    def raise_for_rejections(self) -> "IngestResult":
        """Raises MoecastError (code: the step's error code, method
        "IngestBatch") for the first rejected step, if any; else returns self."""
        for r in self.results:
            if r.outcome == "rejected":
                raise MoecastError(
                    r.error_code or "UNKNOWN",
                    "step %d (source %d) rejected: %s (%d of %d steps rejected)" % (
                        r.step, r.source, r.error_message, self.rejected, len(self.results)),
                    "IngestBatch")
        return self


@dataclass
class IngestSummary:
    """Ingest's (client streaming) summary."""

    batches: int
    steps: int
    committed: int
    duplicates: int
    pending: int
    rejected: int
    first_rejections: List[StepResult]
    raw: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: Any) -> "IngestSummary":
        return cls(batches=m.batches, steps=m.steps, committed=m.committed,
                   duplicates=m.duplicates, pending=m.pending, rejected=m.rejected,
                   first_rejections=[StepResult.from_proto(r) for r in m.first_rejections],
                   raw=m)


# --- forecasts and state ---------------------------------------------------


@dataclass
class HorizonForecast:
    horizon: int
    predictor: str
    means: np.ndarray               # [M], sums to 1
    lower: Optional[np.ndarray]     # [M], None until errors are known
    upper: Optional[np.ndarray]

    @classmethod
    def from_proto(cls, m: Any) -> "HorizonForecast":
        return cls(horizon=m.horizon, predictor=m.predictor, means=_array(m.means),
                   lower=_array_or_none(m.lower), upper=_array_or_none(m.upper))


@dataclass
class LayerForecast:
    layer: int
    state: str
    drift_ratio: Optional[float]
    horizons: Dict[int, HorizonForecast]   # by horizon, in the order asked
    path_predictor: str
    path: Optional[np.ndarray]             # [path_steps, M] or None

    @classmethod
    def from_proto(cls, m: Any, num_experts: int) -> "LayerForecast":
        horizons = {h.horizon: HorizonForecast.from_proto(h) for h in m.horizons}
        if not num_experts and horizons:
            num_experts = len(next(iter(horizons.values())).means)
        path = None
        if len(m.path):
            path = _array(m.path, (-1, num_experts) if num_experts else None)
        return cls(layer=m.layer, state=load_state_name(m.state),
                   drift_ratio=_opt(m, "drift_ratio"), horizons=horizons,
                   path_predictor=m.path_predictor, path=path)


@dataclass
class Forecast:
    """Forecast's answer; layers by layer index, in the order answered."""

    as_of_step: int
    job_state: str
    layers: Dict[int, LayerForecast]
    raw: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: Any) -> "Forecast":
        num_experts = 0
        for lf in m.layers:
            if lf.horizons:
                num_experts = len(lf.horizons[0].means)
                break
        return cls(as_of_step=m.as_of_step, job_state=load_state_name(m.job_state),
                   layers={lf.layer: LayerForecast.from_proto(lf, num_experts)
                           for lf in m.layers}, raw=m)

    @property
    def horizons(self) -> List[int]:
        """The horizons answered (those of the first layer)."""
        for lf in self.layers.values():
            return list(lf.horizons)
        return []

    def _stack(self, horizon: int, what: str) -> Optional[np.ndarray]:
        rows = []
        for lf in self.layers.values():
            if horizon not in lf.horizons:
                raise KeyError("layer %d has no forecast at horizon %d (have %s)"
                               % (lf.layer, horizon, sorted(lf.horizons)))
            v = getattr(lf.horizons[horizon], what)
            if v is None:
                return None
            rows.append(v)
        return np.stack(rows) if rows else np.zeros((0, 0))

    def means(self, horizon: int) -> Optional[np.ndarray]:
        """[layers, M] mean shares at `horizon` (rows in self.layers' order).
        Raises KeyError when a layer has no forecast at `horizon`."""
        return self._stack(horizon, "means")

    def lower(self, horizon: int) -> Optional[np.ndarray]:
        """[layers, M] lower bounds at `horizon`, or None while any layer has none.
        Raises KeyError when a layer has no forecast at `horizon`."""
        return self._stack(horizon, "lower")

    def upper(self, horizon: int) -> Optional[np.ndarray]:
        """[layers, M] upper bounds at `horizon`, or None while any layer has none.
        Raises KeyError when a layer has no forecast at `horizon`."""
        return self._stack(horizon, "upper")


@dataclass
class LayerState:
    layer: int
    state: str
    state_since_step: int
    window_steps: int
    drift_ratio: Optional[float]
    dispersion: Optional[float]
    half_drift: Optional[float]
    variance_10: Optional[np.ndarray] = None   # per_expert only
    range_10: Optional[np.ndarray] = None
    variance_w: Optional[np.ndarray] = None
    range_w: Optional[np.ndarray] = None

    @classmethod
    def from_proto(cls, m: Any) -> "LayerState":
        return cls(layer=m.layer, state=load_state_name(m.state),
                   state_since_step=m.state_since_step, window_steps=m.window_steps,
                   drift_ratio=_opt(m, "drift_ratio"), dispersion=_opt(m, "dispersion"),
                   half_drift=_opt(m, "half_drift"),
                   variance_10=_array_or_none(m.variance_10), range_10=_array_or_none(m.range_10),
                   variance_w=_array_or_none(m.variance_w), range_w=_array_or_none(m.range_w))


@dataclass
class State:
    as_of_step: int
    job_state: str
    layers: List[LayerState]
    raw: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: Any) -> "State":
        return cls(as_of_step=m.as_of_step, job_state=load_state_name(m.job_state),
                   layers=[LayerState.from_proto(l) for l in m.layers], raw=m)


# --- health ----------------------------------------------------------------


@dataclass
class EParameter:
    kind: str
    value: Optional[float]
    missing: List[str]
    warn_below: float
    below_threshold: bool
    message: str

    @classmethod
    def from_proto(cls, m: Any) -> "EParameter":
        return cls(kind=_E_KINDS.get(m.kind, "unknown"), value=_opt(m, "value"),
                   missing=list(m.missing), warn_below=m.warn_below,
                   below_threshold=m.below_threshold, message=m.message)


@dataclass
class GammaFit:
    gamma_f: float
    ci_low_f: float
    ci_high_f: float
    ci_level: float
    r2: float
    temperature: float


@dataclass
class LayerHealth:
    layer: int
    window_end_step: int
    window_steps: int
    gamma: Optional[GammaFit]
    gamma_status: str
    phase: str
    max_over_mean: float
    coefficient_of_variation: float
    normalized_entropy: float
    dead_experts: List[int]

    @classmethod
    def from_proto(cls, m: Any) -> "LayerHealth":
        gamma = None
        if m.has_gamma:
            gamma = GammaFit(m.gamma_f, m.ci_low_f, m.ci_high_f, m.ci_level, m.r2, m.temperature)
        return cls(layer=m.layer, window_end_step=m.window_end_step,
                   window_steps=m.window_steps, gamma=gamma, gamma_status=m.gamma_status,
                   phase=m.phase, max_over_mean=m.max_over_mean,
                   coefficient_of_variation=m.coefficient_of_variation,
                   normalized_entropy=m.normalized_entropy, dead_experts=list(m.dead_experts))


@dataclass
class Health:
    as_of_step: int
    e: EParameter
    layers: List[LayerHealth]
    raw: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: Any) -> "Health":
        return cls(as_of_step=m.as_of_step, e=EParameter.from_proto(m.e),
                   layers=[LayerHealth.from_proto(l) for l in m.layers], raw=m)


# --- placement -------------------------------------------------------------


@dataclass
class Transfer:
    layer: int
    expert: int
    from_gpu: int
    to_gpu: int
    bytes: int
    stage: int


@dataclass
class Plan:
    mode: str
    num_layers: int
    num_experts: int
    num_slots: int
    num_gpus: int
    phy2log: np.ndarray      # [L, S] logical expert per slot (-1: empty)
    log2phy: np.ndarray      # [L, M, max_replicas] replica slots (-1 padded)
    max_replicas: int
    logcnt: np.ndarray       # [L, M] replicas per expert
    gpu_loads: np.ndarray    # [L, P]
    balancedness: float
    max_over_mean: float
    moved_experts: int
    moved_bytes: int
    forced_moves: int
    transfers: List[Transfer]
    num_stages: int

    @classmethod
    def from_proto(cls, m: Any) -> "Plan":
        L, M, S, P, R = m.num_layers, m.num_experts, m.num_slots, m.num_gpus, m.max_replicas
        return cls(
            mode=m.mode, num_layers=L, num_experts=M, num_slots=S, num_gpus=P,
            phy2log=_array(m.phy2log, (L, S), np.int64),
            log2phy=_array(m.log2phy, (L, M, R) if R else None, np.int64),
            max_replicas=R, logcnt=_array(m.logcnt, (L, M), np.int64),
            gpu_loads=_array(m.gpu_loads, (L, P)), balancedness=m.balancedness,
            max_over_mean=m.max_over_mean, moved_experts=m.moved_experts,
            moved_bytes=m.moved_bytes, forced_moves=m.forced_moves,
            transfers=[Transfer(t.layer, t.expert, t.from_gpu, t.to_gpu, t.bytes, t.stage)
                       for t in m.transfers],
            num_stages=m.num_stages)

    def gpu_of_slot(self, slot: int) -> int:
        """The GPU a physical slot is on (slots are split evenly over GPUs).
        Raises ZeroDivisionError when the plan has more GPUs than slots (or
        none)."""
        return slot // (self.num_slots // self.num_gpus)


@dataclass
class RebalanceDecision:
    rebalance: bool
    step_time_current_s: float
    step_time_proposed_s: float
    saved_s: float
    migration_s: float
    cost_s: float
    required_s: float
    moved_experts: int
    num_stages: int
    reason: str

    @classmethod
    def from_proto(cls, m: Any) -> "RebalanceDecision":
        return cls(**{f.name: getattr(m, f.name) for f in dataclasses.fields(cls)})


@dataclass
class Placement:
    """RecommendPlacement's answer."""

    as_of_step: int
    job_state: str
    horizon: int
    upper_bound_layers: List[int]
    loads: np.ndarray                 # [L, M] shares planned on
    plan: Plan
    current: Optional[Plan]
    decision: Optional[RebalanceDecision]
    raw: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: Any) -> "Placement":
        plan = Plan.from_proto(m.plan)
        return cls(
            as_of_step=m.as_of_step, job_state=load_state_name(m.job_state), horizon=m.horizon,
            upper_bound_layers=list(m.upper_bound_layers),
            loads=_array(m.loads, (plan.num_layers, plan.num_experts)), plan=plan,
            current=Plan.from_proto(m.current) if m.HasField("current") else None,
            decision=RebalanceDecision.from_proto(m.decision) if m.HasField("decision") else None,
            raw=m)


# --- events ----------------------------------------------------------------


@dataclass
class Event:
    seq: int
    step: int
    kind: str
    layer: int           # -1: the job
    from_: str           # state / phase / liveness before
    to: str              # ... after
    value: float
    detail: str
    recommendation: Optional[Placement] = None   # kind "rebalance_recommended"
    raw: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: Any) -> "Event":
        return cls(seq=m.seq, step=m.step, kind=_EVENT_KINDS.get(m.kind, "unknown"),
                   layer=m.layer, from_=getattr(m, "from"), to=m.to, value=m.value,
                   detail=m.detail,
                   recommendation=(Placement.from_proto(m.recommendation)
                                   if m.HasField("recommendation") else None),
                   raw=m)
