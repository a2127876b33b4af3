"""moecast's engine in-process: no server, the same answers as moecastd.

    import numpy as np
    from moecast.engine import Engine

    with Engine() as eng:
        eng.register_job("pretrain-a", num_layers=58, num_experts=256, top_k=8)
        for step, counts in enumerate(steps):           # counts: [L, M] float64
            eng.ingest("pretrain-a", step, counts)
        f = eng.forecast("pretrain-a", horizon=100)
        f.mean                                          # [L, M] shares
        eng.recommend_placement("pretrain-a", num_slots=288, num_gpus=32).phy2log

The engine is the C++ one, linked into the extension module
moecast._moecast_ext (pybind11 over the C API, integrations/c_api/moecast_c.h).

- Arrays in: numpy arrays of the job's shape. float64 C-contiguous arrays are
  read in place (no copy); other integer or floating dtypes are converted
  once; anything else is rejected.
- Arrays out: new numpy arrays the engine writes into directly.
- Errors: every method raises moecast.errors.EngineError (a MoecastError)
  with `.code` (the absl::StatusCode name), `.code_value` (its number),
  `.message` (the engine's, naming what is wrong) and `.method`;
  INVALID_ARGUMENT raises EngineInvalidArgument, also a ValueError.
  The codes each method can raise are listed in its docstring.
- Threads: the GIL is released while the engine works, so several Python
  threads can ingest and query one Engine in parallel. close() waits for
  calls in flight; any call after it raises FAILED_PRECONDITION.
"""

from dataclasses import dataclass, field
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import _moecast_ext as _ext
from .errors import EngineError, EngineInvalidArgument

__all__ = [
    "Engine", "EngineError", "EngineInvalidArgument", "IngestOutcome", "AnalysisProgress",
    "EngineJobInfo", "EngineForecast", "EngineState", "EnginePlacement", "EngineTransfer",
    "EngineHealth", "EngineLayerHealth", "version",
]

_STEP_UNITS = {"optimizer_step": 0, "forward_pass": 1, "interval": 2}
_ROUTERS = {"softmax": 0, "sigmoid_with_bias": 1}
_MODES = {"default": 0, "eplb": 1}
_OUTCOMES = {0: "committed", 1: "pending", 2: "duplicate"}
_STATES = {0: "transient", 1: "stable"}
_PHASES = {0: "unknown", 1: "surge", 2: "stabilization", 3: "relaxation"}
_E_KINDS = {0: "finite", 1: "unbounded", 2: "indeterminate", 3: "missing"}
_ENGINE_OPTIONS = (
    "max_jobs", "history_capacity_steps", "max_pending_steps", "health_window_steps",
    "health_bootstrap_replicates", "dead_window_steps", "max_job_history_bytes",
    "max_total_history_bytes", "source_timeout_s", "idle_job_expiry_s",
)
_MIGRATION_FIELDS = (
    "bytes_per_expert", "intra_node_bandwidth", "inter_node_bandwidth", "tokens_per_step",
    "time_per_token_s", "horizon_steps", "overlap", "overlap_cost_fraction",
    "transient_margin",
)


def version() -> str:
    """The engine library's release, e.g. "0.1.0"."""
    return _ext.version()


def _invalid(method: str, message: str) -> EngineInvalidArgument:
    return EngineInvalidArgument("INVALID_ARGUMENT", message, method, code_value=3)


def _enum(method: str, what: str, value: str, table: Mapping[str, int]) -> int:
    if value not in table:
        raise _invalid(method, "%s must be one of %s, got %r" % (what, ", ".join(table), value))
    return table[value]


def _nan_if_none(x: Optional[float]) -> float:
    return math.nan if x is None else float(x)


@dataclass
class IngestOutcome:
    """What one ingest call did.

    outcome: "committed", "pending" (a multi-source step waiting for sources)
    or "duplicate" (the step was already ingested; nothing changed).
    """
    outcome: str
    num_committed: int
    first_committed_step: int
    last_committed_step: int
    num_incomplete: int
    gap_steps: int
    note: str


@dataclass
class AnalysisProgress:
    """How far a job's analysis has got (steps analysed behind ingestion)."""
    as_of_step: int
    committed_step: int
    lag_steps: int
    scoring_shed_steps: int
    coalesced_steps: int


@dataclass
class EngineJobInfo:
    """A job's shape and ingestion counters."""
    num_layers: int
    num_experts: int
    top_k: int
    num_sources: int
    committed_steps: int
    first_step: int
    last_step: int
    gaps: int
    missing_steps: int
    incomplete_steps: int
    duplicate_calls: int
    rejected_calls: int
    pending_steps: int
    tokens: float
    history_bytes: int
    forecast_bytes: int


@dataclass
class EngineForecast:
    """Every layer's forecast at one horizon: mean load shares and the
    interval bounds ([L, M] float64; bounds NaN while a layer's predictor
    errors are not known yet)."""
    horizon: int
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


@dataclass
class EngineState:
    """The job's load state: "transient" or "stable", per layer too."""
    as_of_step: int
    job_state: str
    layer_states: List[str]
    drift_ratios: np.ndarray


@dataclass
class EngineTransfer:
    """One expert copied to a GPU that did not hold it (from_gpu -1: none did)."""
    layer: int
    expert: int
    from_gpu: int
    to_gpu: int
    bytes: int
    stage: int


@dataclass
class EnginePlacement:
    """A recommended placement: phy2log [L, S] (-1 empty slot), logcnt [L, M],
    gpu_loads [L, P], the loads planned on [L, M], the migration and, given a
    current placement and a migration model, the rebalance decision."""
    as_of_step: int
    job_state: str
    horizon: int
    phy2log: np.ndarray
    logcnt: np.ndarray
    gpu_loads: np.ndarray
    loads: np.ndarray
    transfers: List[EngineTransfer]
    balancedness: float
    max_over_mean: float
    moved_experts: int
    rebalance: Optional[bool]
    decision_reason: str
    summary: Dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class EngineLayerHealth:
    """One layer's last completed health window."""
    layer: int
    window_step: int
    window_steps: int
    phase: str
    gamma: Optional[float]
    gamma_ci: Optional[Tuple[float, float]]
    gamma_status: str
    max_over_mean: float
    max_vio: float
    coefficient_of_variation: float
    normalized_entropy: float
    num_dead_experts: int


@dataclass
class EngineHealth:
    """The router's health: per layer, and E (kind "finite" with a value, or
    "unbounded", "indeterminate", "missing")."""
    as_of_step: int
    total_dead_experts: int
    e_kind: str
    e_value: float
    e_below_threshold: bool
    layers: List[EngineLayerHealth]


class Engine:
    """An in-process moecast engine (moecast::Engine behind the C API).

    Options (each optional; engine/options.h documents them): max_jobs,
    history_capacity_steps, max_pending_steps, health_window_steps,
    health_bootstrap_replicates, dead_window_steps, max_job_history_bytes,
    max_total_history_bytes, source_timeout_s, idle_job_expiry_s.
    analysis="threads" (default) analyses committed steps on
    `analysis_threads` engine threads (0: one fewer than the cores) behind
    ingestion; analysis="inline" analyses inside each ingest call.

    Raises EngineInvalidArgument for an unknown option, a value out of range
    (named) or a bad `analysis`.
    """

    def __init__(self, *, analysis: str = "threads", analysis_threads: int = 0,
                 **options: Any) -> None:
        for key in options:
            if key not in _ENGINE_OPTIONS:
                raise _invalid("Engine", "unknown engine option %r (known: %s)"
                               % (key, ", ".join(_ENGINE_OPTIONS)))
        if analysis not in ("threads", "inline"):
            raise _invalid("Engine", "analysis must be 'threads' or 'inline', got %r"
                           % (analysis,))
        self._e = _ext.Engine(dict(options), analysis == "inline", int(analysis_threads))

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Destroys the engine and its jobs (waits for calls in flight). Idempotent."""
        self._e.close()

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._e.closed

    # --- jobs ------------------------------------------------------------------

    def register_job(self, job_id: str, num_layers: int, num_experts: int, top_k: int, *,
                     num_sources: int = 1, step_unit: str = "optimizer_step",
                     router: str = "softmax", forecasting: bool = True, health: bool = True,
                     predictors: Optional[Sequence[str]] = None,
                     horizons: Optional[Sequence[int]] = None,
                     aux_loss_coef: Optional[float] = None,
                     router_temperature: Optional[float] = None,
                     entropy_weight: Optional[float] = None,
                     oracle_weight: Optional[float] = None,
                     balance_weight: Optional[float] = None) -> None:
        """Registers a job of L layers of M experts with top-k routing.

        predictors: the bank (e.g. ["last_value", "ema(0.9)"]; None: the
        default bank). horizons: scored horizons in steps (None: 1, 10, 100,
        1000). step_unit: "optimizer_step", "forward_pass" or "interval";
        router: "softmax" or "sigmoid_with_bias"; the training
        hyperparameters (None: undeclared) feed the health monitor.

        Raises EngineInvalidArgument (a bad id, size, enum, predictor or
        horizon, named), EngineError ALREADY_EXISTS (the id is taken) or
        RESOURCE_EXHAUSTED (max_jobs or a memory limit).
        """
        method = "register_job"
        if not isinstance(job_id, str):
            raise _invalid(method, "job_id must be a str, got %s" % type(job_id).__name__)
        if predictors is not None and (isinstance(predictors, str) or
                                       not all(isinstance(p, str) for p in predictors)):
            raise _invalid(method, "predictors must be a sequence of str, got %r" % (predictors,))
        self._e.register_job(
            job_id, int(num_layers), int(num_experts), int(top_k), int(num_sources),
            _enum(method, "step_unit", step_unit, _STEP_UNITS),
            _enum(method, "router", router, _ROUTERS), bool(forecasting), bool(health),
            list(predictors) if predictors is not None else None,
            None if horizons is None else np.asarray(horizons),
            _nan_if_none(aux_loss_coef), _nan_if_none(router_temperature),
            _nan_if_none(entropy_weight), _nan_if_none(oracle_weight),
            _nan_if_none(balance_weight))

    def delete_job(self, job_id: str) -> None:
        """Deletes a job. Raises EngineError NOT_FOUND for an unknown job."""
        self._e.delete_job(job_id)

    def num_jobs(self) -> int:
        """Number of registered jobs."""
        return self._e.num_jobs()

    def job_info(self, job_id: str) -> EngineJobInfo:
        """The job's shape and counters. Raises EngineError NOT_FOUND."""
        return EngineJobInfo(**self._e.job_info(job_id))

    # --- ingestion -------------------------------------------------------------

    def ingest(self, job_id: str, step: int, counts: np.ndarray,
               router_logits: Optional[np.ndarray] = None, tokens: Optional[float] = None,
               source: int = 0) -> IngestOutcome:
        """Ingests one step (or one source's part of it).

        counts: [L, M] (token, slot) assignments per expert, finite, >= 0;
        router_logits: None or [L, M] mean pre-softmax logits; tokens: None
        (N = sum(counts)/K) or the step's token count. float64 C-contiguous
        arrays are read without a copy.

        Raises EngineInvalidArgument (not a numpy array, a shape other than
        the job's [L, M], a dtype that is not integer or floating, a negative
        or non-finite value, an old step, a bad source: the message names
        it), EngineError NOT_FOUND (unknown job), FAILED_PRECONDITION (a late
        multi-source part), RESOURCE_EXHAUSTED (past max_pending_steps). A
        duplicate step is not an error: outcome "duplicate".
        """
        r = self._e.ingest(job_id, int(step), int(source), counts, router_logits, tokens)
        return IngestOutcome(_OUTCOMES.get(r[0], str(r[0])), *r[1:])

    def flush_pending(self, job_id: str) -> int:
        """Commits a multi-source job's pending steps now; returns how many.
        Raises EngineError NOT_FOUND."""
        return self._e.flush_pending(job_id)

    def await_analysis(self, job_id: str, timeout_s: float = -1.0) -> AnalysisProgress:
        """Waits until every step committed before the call is analysed
        (timeout_s < 0: no limit). Raises EngineError NOT_FOUND or
        DEADLINE_EXCEEDED (naming the step reached)."""
        return AnalysisProgress(**self._e.await_analysis(job_id, float(timeout_s)))

    # --- answers ---------------------------------------------------------------

    def forecast(self, job_id: str, horizon: int, predictor: Optional[str] = None,
                 interval_level: float = 0.9) -> EngineForecast:
        """Every layer's forecast of the mean load shares over the next
        `horizon` steps, with a central interval at `interval_level`.
        predictor: None/"auto" (the best recent one per layer) or a name from
        the job's bank.

        Raises EngineInvalidArgument (horizon < 1, level outside (0, 1)),
        EngineError NOT_FOUND (unknown job or predictor) or
        FAILED_PRECONDITION (no step committed yet, forecasting off).
        """
        mean, lower, upper = self._e.forecast(job_id, int(horizon), predictor,
                                              float(interval_level))
        return EngineForecast(int(horizon), mean, lower, upper)

    def state(self, job_id: str) -> EngineState:
        """The job's and each layer's load state. Raises EngineError NOT_FOUND
        or FAILED_PRECONDITION (no step yet, forecasting off)."""
        as_of, job_state, layer_states, drift = self._e.state(job_id)
        return EngineState(as_of, _STATES.get(job_state, str(job_state)),
                           [_STATES.get(int(s), str(s)) for s in layer_states], drift)

    def recommend_placement(self, job_id: str, num_slots: int, num_gpus: int, *,
                            num_nodes: int = 1, num_groups: int = 1,
                            excluded_gpus: Sequence[int] = (),
                            current_phy2log: Optional[np.ndarray] = None,
                            mode: str = "default", move_budget: int = -1,
                            bytes_per_expert: int = 0, max_extra_experts_per_gpu: int = 1,
                            horizon: int = 100, predictor: Optional[str] = None,
                            upper_bounds_when_transient: bool = True,
                            interval_level: float = 0.9,
                            migration: Optional[Mapping[str, float]] = None) -> EnginePlacement:
        """Plans an expert placement from the job's forecasts.

        num_slots S (a multiple of num_gpus, >= M), num_gpus P (a multiple of
        num_nodes), num_groups (dividing M); current_phy2log [L, S] integers
        (-1: empty) enables the moved-experts budget and, with `migration`
        (keys: bytes_per_expert, intra_node_bandwidth, inter_node_bandwidth,
        tokens_per_step, time_per_token_s, horizon_steps, overlap,
        overlap_cost_fraction, transient_margin), the rebalance decision.
        mode: "default" (moecast's planner) or "eplb". horizon: plan on the
        forecast mean over this many steps (default 100).

        Raises EngineInvalidArgument (an inconsistent cluster, a wrong
        current_phy2log shape or dtype, an unknown mode or migration key),
        EngineError NOT_FOUND or FAILED_PRECONDITION as forecast().
        """
        method = "recommend_placement"
        if migration is not None:
            for key in migration:
                if key not in _MIGRATION_FIELDS:
                    raise _invalid(method, "unknown migration field %r (known: %s)"
                                   % (key, ", ".join(_MIGRATION_FIELDS)))
        d = self._e.recommend_placement(
            job_id, int(num_slots), int(num_gpus), int(num_nodes), int(num_groups),
            np.asarray(list(excluded_gpus), dtype=np.int64), current_phy2log,
            _enum(method, "mode", mode, _MODES), int(move_budget), int(bytes_per_expert),
            int(max_extra_experts_per_gpu), int(horizon), predictor,
            bool(upper_bounds_when_transient), float(interval_level),
            None if migration is None else dict(migration))
        transfers = [EngineTransfer(*t) for t in d.pop("transfers")]
        return EnginePlacement(
            as_of_step=d["as_of_step"], job_state=_STATES.get(d["job_state"], "?"),
            horizon=d["horizon"], phy2log=d.pop("phy2log"), logcnt=d.pop("logcnt"),
            gpu_loads=d.pop("gpu_loads"), loads=d.pop("loads"), transfers=transfers,
            balancedness=d["balancedness"], max_over_mean=d["max_over_mean"],
            moved_experts=d["moved_experts"],
            rebalance=d["rebalance"] if d["has_decision"] else None,
            decision_reason=d["decision_reason"], summary=d)

    def health(self, job_id: str) -> EngineHealth:
        """The router's health (last completed window per layer, E).

        Raises EngineError NOT_FOUND, or FAILED_PRECONDITION when the job has
        health off or no window has completed yet.
        """
        s, layers = self._e.health(job_id)
        out = []
        for i, h in enumerate(layers):
            fitted = h["has_gamma"]
            out.append(EngineLayerHealth(
                layer=i, window_step=h["window_step"], window_steps=h["window_steps"],
                phase=_PHASES.get(h["phase"], str(h["phase"])),
                gamma=h["gamma_f"] if fitted else None,
                gamma_ci=(h["gamma_ci_low_f"], h["gamma_ci_high_f"]) if fitted else None,
                gamma_status=h["gamma_status"], max_over_mean=h["max_over_mean"],
                max_vio=h["max_vio"], coefficient_of_variation=h["coefficient_of_variation"],
                normalized_entropy=h["normalized_entropy"],
                num_dead_experts=h["num_dead_experts"]))
        return EngineHealth(s["as_of_step"], s["total_dead_experts"],
                            _E_KINDS.get(s["e_kind"], str(s["e_kind"])), s["e_value"],
                            s["e_below_threshold"], out)
