"""moecast_client: a Python client for moecastd (the moecast.v1 gRPC API).

    from moecast_client import Client, Step
    with Client("127.0.0.1:50051") as c:
        c.register_job("job", num_layers=2, num_experts=8, top_k=2)
        c.ingest_batch("job", [Step(0, counts0), Step(1, counts1)])  # counts: [L, M]
        print(c.forecast("job", horizons=[10]).means(10))

The protobuf/gRPC stubs are generated (generate_stubs.sh, or the Bazel
genrule //integrations/python:moecast_py_stubs) into moecast_client/_proto.

moecast_client.torch_recorder (needs PyTorch, imported lazily) records loads
from a PyTorch MoE's routers; moecast_client.serving has EPLB drop-ins for
vLLM and SGLang.
"""

from .client import Client, EventStream
from .errors import MoecastError, ValidationError, code_name
from .trace_writer import TraceWriter
from .traces import TraceFormatError, read_trace, trace_files
from .types import (CommittedStep, EParameter, Event, Forecast, GammaFit, Health,
                    HorizonForecast, IngestResult, IngestSummary, JobInfo, JobSpec,
                    LayerForecast, LayerHealth, LayerState, MigrationModel, Placement, Plan,
                    RebalanceDecision, State, Step, StepResult, Transfer)

__all__ = [
    "Client", "EventStream", "MoecastError", "ValidationError", "code_name",
    "TraceFormatError", "TraceWriter", "read_trace", "trace_files",
    "CommittedStep", "EParameter", "Event", "Forecast", "GammaFit", "Health",
    "HorizonForecast", "IngestResult", "IngestSummary", "JobInfo", "JobSpec", "LayerForecast",
    "LayerHealth", "LayerState", "MigrationModel", "Placement", "Plan", "RebalanceDecision",
    "State", "Step", "StepResult", "Transfer",
]
