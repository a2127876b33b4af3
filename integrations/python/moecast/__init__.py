"""moecast: real-time expert-load forecasting for Mixture-of-Experts schedulers.

    from moecast import Client, Step                 # the moecastd gRPC client
    with Client("127.0.0.1:50051") as c:
        c.register_job("job", num_layers=2, num_experts=8, top_k=2)
        c.ingest_batch("job", [Step(0, counts0), Step(1, counts1)])  # counts: [L, M]
        print(c.forecast("job", horizons=[10]).means(10))

    from moecast import Engine                       # the engine in-process
    with Engine() as eng:
        eng.register_job("job", num_layers=2, num_experts=8, top_k=2)
        eng.ingest("job", 0, counts0)
        eng.forecast("job", horizon=10).mean

Modules: moecast.client (Client), moecast.engine (Engine, the C++ engine
through the extension module moecast._moecast_ext), moecast.torch_recorder
(needs PyTorch, imported lazily), moecast.serving (EPLB drop-ins for vLLM and
SGLang), moecast.converters (SGLang/vLLM/Megatron dumps to traces; the
`moecast-convert` command), moecast.traces / moecast.trace_writer (trace
files). The protobuf/gRPC stubs (moecast._proto) are generated when the
wheel is built.
"""

from .client import Client, EventStream
from .errors import (EngineError, EngineInvalidArgument, MoecastError, ValidationError,
                     code_name)
from .trace_writer import TraceWriter
from .traces import TraceFormatError, read_trace, trace_files
from .types import (CommittedStep, EParameter, Event, Forecast, GammaFit, Health,
                    HorizonForecast, IngestResult, IngestSummary, JobInfo, JobSpec,
                    LayerForecast, LayerHealth, LayerState, MigrationModel, Placement, Plan,
                    RebalanceDecision, State, Step, StepResult, Transfer)

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the real import is lazy (__getattr__ below)
    from .engine import Engine

__version__ = "0.1.0"

__all__ = [
    "Client", "Engine", "EngineError", "EngineInvalidArgument", "EventStream", "MoecastError",
    "ValidationError", "code_name",
    "TraceFormatError", "TraceWriter", "read_trace", "trace_files",
    "CommittedStep", "EParameter", "Event", "Forecast", "GammaFit", "Health",
    "HorizonForecast", "IngestResult", "IngestSummary", "JobInfo", "JobSpec", "LayerForecast",
    "LayerHealth", "LayerState", "MigrationModel", "Placement", "Plan", "RebalanceDecision",
    "State", "Step", "StepResult", "Transfer",
]


def __getattr__(name):
    # moecast.Engine loads the extension module on first use, so that the
    # client works even where the extension cannot load.
    if name == "Engine":
        from .engine import Engine
        return Engine
    raise AttributeError("module 'moecast' has no attribute %r" % name)
