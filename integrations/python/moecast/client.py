"""Client: a friendly wrapper around the moecast.v1.Moecast gRPC stub.

    from moecast import Client
    with Client("127.0.0.1:50051", token="s3cret") as c:
        c.register_job("pretrain-a", num_layers=4, num_experts=16, top_k=2)
        c.ingest_batch("pretrain-a", [(0, counts0), (1, counts1)])   # counts: [L, M]
        f = c.forecast("pretrain-a", horizons=[10])
        f.means(10)                                                  # [L, M] numpy

Thread-safety: a Client (and its channel) may be shared by threads; each call
is independent.

Errors: every call raises MoecastError with the gRPC status code name
(`.code`: NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT, FAILED_PRECONDITION,
RESOURCE_EXHAUSTED, UNAUTHENTICATED, UNAVAILABLE, DEADLINE_EXCEEDED, ...) and
the server's message; input the client rejects before sending raises
ValidationError (a MoecastError and ValueError, code INVALID_ARGUMENT). Each
method's docstring names the codes it can raise besides UNAVAILABLE,
DEADLINE_EXCEEDED and UNAUTHENTICATED, which any call can.
"""

import itertools
import os
import threading
from typing import Any, Dict, Iterable, List, Optional, Sequence

import grpc
import numpy as np

from . import _convert as cv
from ._stubs import pb, pb_grpc
from .errors import MoecastError, ValidationError
from .types import (HYPERPARAMETERS, ROUTERS, STEP_UNITS, CommittedStep, Event, Forecast,
                    Health, IngestResult, IngestSummary, JobInfo, JobSpec, MigrationModel,
                    Placement, State)

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20


def _read_pem(name, value):
    """PEM bytes from bytes, a PEM string, or a file path."""
    if value is None:
        return None
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        data = value.encode()
    elif isinstance(value, (str, os.PathLike)):
        try:
            with open(value, "rb") as f:
                data = f.read()
        except OSError as error:
            raise ValidationError("%s: cannot read '%s': %s" % (name, os.fspath(value), error.strerror))
    else:
        raise ValidationError("%s must be PEM bytes, a PEM string or a file path, got %s"
                              % (name, type(value).__name__))
    if b"-----BEGIN" not in data:
        raise ValidationError("%s does not look like PEM (no '-----BEGIN' line)" % name)
    return data


class EventStream:
    """An open Watch call: iterate for Events; cancel() (or close(), or leaving
    a `with` block) ends it. `last_seq` is the last stored event's number
    seen, for resuming with Client.watch(job_id, after_seq=stream.last_seq)
    or stream.resume()."""

    def __init__(self, client, request, timeout):
        self._client = client
        self._request = request
        self._timeout = timeout
        self._cancelled = False
        self.last_seq = request.after_seq
        self.job_id = request.job_id
        self._call = client._stub.Watch(request, metadata=client._metadata, timeout=timeout)

    def __iter__(self):
        return self

    def __next__(self):
        if self._cancelled:
            raise StopIteration
        try:
            msg = next(self._call)
        except StopIteration:
            raise
        except grpc.RpcError as error:
            if self._cancelled and error.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration
            raise MoecastError.from_rpc_error(error, "Watch") from None
        event = Event.from_proto(msg)
        if event.kind != "rebalance_recommended":
            self.last_seq = max(self.last_seq, event.seq)
        return event

    def cancel(self):
        self._cancelled = True
        self._call.cancel()

    close = cancel

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cancel()
        return False

    def resume(self, timeout=None):
        """A new stream from after last_seq, with the same request otherwise."""
        request = pb.WatchRequest()
        request.CopyFrom(self._request)
        request.after_seq = self.last_seq
        return EventStream(self._client, request, timeout)


class Client:
    """A connection to moecastd.

    Args:
      target: "host:port".
      token: bearer token; sent as "authorization: Bearer <token>" metadata
        on every call (also over plaintext: use TLS off localhost).
      root_ca: PEM (bytes, string or file path) of the CA that signed the
        server's certificate; turns TLS on. tls=True without root_ca uses the
        system roots.
      client_cert, client_key: PEM of the client's certificate and key, for
        servers that require mutual TLS (both or neither; implies TLS).
      timeout: deadline of unary calls in seconds (None: no deadline).
        Streaming calls (ingest_stream, watch) take their own timeout.
      server_name: the name to check the server's certificate against, when
        it differs from target's host.
      max_message_bytes: largest message sent or received.
      options: extra grpc channel options [(key, value), ...].
    """

    def __init__(self, target: str, token: Optional[str] = None, root_ca: Any = None,
                 client_cert: Any = None, client_key: Any = None,
                 timeout: Optional[float] = DEFAULT_TIMEOUT_S, tls: Optional[bool] = None,
                 server_name: Optional[str] = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 options: Optional[List[Any]] = None) -> None:
        if not isinstance(target, str) or not target:
            raise ValidationError("target must be a non-empty 'host:port' string, got %r" % (target,))
        if token is not None:
            if not isinstance(token, str) or not token:
                raise ValidationError("token must be a non-empty str or None")
            if any(ch in token for ch in "\r\n\0") or token != token.strip():
                raise ValidationError("token must not contain line breaks, NULs or surrounding "
                                      "whitespace")
        if timeout is not None:
            timeout = cv.check_float("timeout", timeout, 0, open_min=True)
        max_message_bytes = cv.check_int("max_message_bytes", max_message_bytes, 1)
        if (client_cert is None) != (client_key is None):
            raise ValidationError("client_cert and client_key go together: got only %s"
                                  % ("client_cert" if client_key is None else "client_key"))
        root = _read_pem("root_ca", root_ca)
        cert = _read_pem("client_cert", client_cert)
        key = _read_pem("client_key", client_key)
        if tls is False and (root or cert):
            raise ValidationError("tls=False contradicts root_ca/client_cert being given")
        use_tls = bool(tls) or root is not None or cert is not None

        channel_options = [("grpc.max_send_message_length", max_message_bytes),
                           ("grpc.max_receive_message_length", max_message_bytes)]
        if server_name:
            channel_options.append(("grpc.ssl_target_name_override", server_name))
        channel_options.extend(options or [])
        if use_tls:
            creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key,
                                                 certificate_chain=cert)
            self._channel = grpc.secure_channel(target, creds, options=channel_options)
        else:
            self._channel = grpc.insecure_channel(target, options=channel_options)
        self._stub = pb_grpc.MoecastStub(self._channel)
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", "Bearer " + token),) if token else ()
        self._specs = {}
        self._specs_lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def wait_for_ready(self, timeout: float = 10.0) -> None:
        """Blocks until the channel is connected; MoecastError UNAVAILABLE after `timeout` s."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise MoecastError("UNAVAILABLE", "could not connect to %s within %g s"
                               % (self.target, timeout)) from None

    # --- plumbing ----------------------------------------------------------

    def _call(self, method, request, timeout=None):
        rpc = getattr(self._stub, method)
        try:
            return rpc(request, metadata=self._metadata,
                       timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as error:
            raise MoecastError.from_rpc_error(error, method) from None

    def _remember(self, spec):
        with self._specs_lock:
            self._specs[spec.job_id] = spec

    def _forget(self, job_id):
        with self._specs_lock:
            self._specs.pop(job_id, None)

    def _spec(self, job_id, refresh=False):
        """The job's spec (cached), or None if the server cannot say (older server)."""
        with self._specs_lock:
            spec = None if refresh else self._specs.get(job_id)
        if spec is not None:
            return spec
        try:
            return self.job_info(job_id).spec
        except MoecastError as error:
            if error.code == "UNIMPLEMENTED":
                return None
            raise

    def _steps_to_protos(self, job_id, steps, first_step=None, router_logits=None, tokens=None,
                         validate_job=True):
        if isinstance(steps, np.ndarray) or first_step is not None:
            steps = cv.steps_from_arrays(steps, first_step, router_logits, tokens)
        elif router_logits is not None or tokens is not None:
            raise ValidationError("router_logits= and tokens= go with a 3-D counts array and "
                                  "first_step=; put them in each Step otherwise")
        if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
            raise ValidationError("steps must be a list of steps or a 3-D array, got %s"
                                  % type(steps).__name__)
        steps = list(steps)
        spec = self._spec(job_id) if validate_job and steps else None
        try:
            protos = self._convert_all(steps, spec)
        except ValidationError as error:
            if spec is None or not getattr(error, "spec_mismatch", False):
                raise
            # The cached spec may be stale (job re-registered elsewhere): ask again.
            fresh = self._spec(job_id, refresh=True)
            if fresh == spec:
                raise
            protos = self._convert_all(steps, fresh)
        cv.check_order(protos)
        return protos

    @staticmethod
    def _convert_all(steps, spec):
        protos, shape = [], None
        for i, item in enumerate(steps):
            p, shape = cv.step_to_proto(item, i, spec, shape)
            protos.append(p)
        return protos

    # --- jobs --------------------------------------------------------------

    def register_job(self, job_id: str, num_layers: int, num_experts: int, top_k: int, *,
                     num_sources: int = 1, step_unit: str = "optimizer_step",
                     router: str = "softmax", predictors: Optional[Sequence[str]] = None,
                     horizons: Optional[Sequence[int]] = None, forecasting: bool = True,
                     health: bool = True, timeout: Optional[float] = None,
                     **hyperparameters: float) -> JobSpec:
        """Registers a job. Hyperparameters (aux_loss_coef, router_temperature,
        entropy_weight, oracle_weight, balance_weight) are keyword arguments.
        Returns the JobSpec sent. ALREADY_EXISTS if the id is taken,
        RESOURCE_EXHAUSTED past a server limit."""
        cv.check_job_id(job_id)
        num_layers = cv.check_int("num_layers", num_layers, 1)
        num_experts = cv.check_int("num_experts", num_experts, 2)
        top_k = cv.check_int("top_k", top_k, 1)
        if top_k > num_experts:
            raise ValidationError("top_k (%d) must be <= num_experts (%d)" % (top_k, num_experts))
        num_sources = cv.check_int("num_sources", num_sources, 1)
        if step_unit not in STEP_UNITS:
            raise ValidationError("step_unit must be one of %s, got %r" % (sorted(STEP_UNITS), step_unit))
        if router not in ROUTERS:
            raise ValidationError("router must be one of %s, got %r" % (sorted(ROUTERS), router))
        unknown = set(hyperparameters) - set(HYPERPARAMETERS)
        if unknown:
            raise ValidationError("unknown keyword argument(s) %s; hyperparameters are %s"
                                  % (sorted(unknown), list(HYPERPARAMETERS)))
        hyper = {}
        for name, value in hyperparameters.items():
            if value is None:
                continue
            if name == "router_temperature":
                hyper[name] = cv.check_float(name, value, 0, open_min=True)
            elif name == "aux_loss_coef":
                hyper[name] = cv.check_float(name, value)
            else:
                hyper[name] = cv.check_float(name, value, 0)
        if predictors is None:
            predictors = []
        if isinstance(predictors, str) or not all(isinstance(p, str) and p for p in predictors):
            raise ValidationError("predictors must be a list of non-empty names, got %r" % (predictors,))
        horizons = cv.check_int_list("horizons", horizons, 1)
        spec = JobSpec(job_id=job_id, num_layers=num_layers, num_experts=num_experts, top_k=top_k,
                       num_sources=num_sources, step_unit=step_unit, router=router,
                       hyperparameters=hyper, predictors=list(predictors), horizons=horizons,
                       forecasting=bool(forecasting), health=bool(health))
        msg = pb.JobSpec(job_id=job_id, num_layers=num_layers, num_experts=num_experts,
                         top_k=top_k, num_sources=num_sources, step_unit=STEP_UNITS[step_unit],
                         router=ROUTERS[router], predictors=spec.predictors, horizons=horizons,
                         disable_forecasting=not forecasting, disable_health=not health)
        for name, value in hyper.items():
            setattr(msg.hyperparameters, name, value)
        self._call("RegisterJob", pb.RegisterJobRequest(spec=msg), timeout)
        self._remember(spec)
        return spec

    def list_jobs(self, timeout: Optional[float] = None) -> List[str]:
        """Ids of the registered jobs, sorted. Raises MoecastError (UNAVAILABLE, ...)."""
        return list(self._call("ListJobs", pb.ListJobsRequest(), timeout).job_ids)

    def delete_job(self, job_id: str, timeout: Optional[float] = None) -> None:
        """Removes a job and its history. Raises ValidationError (bad id),
        MoecastError NOT_FOUND if unknown."""
        cv.check_job_id(job_id)
        self._forget(job_id)
        self._call("DeleteJob", pb.DeleteJobRequest(job_id=job_id), timeout)

    def job_info(self, job_id: str, timeout: Optional[float] = None) -> JobInfo:
        """The job's spec and ingestion counters (JobInfo). Raises ValidationError
        (bad id), MoecastError NOT_FOUND if unknown."""
        cv.check_job_id(job_id)
        try:
            info = JobInfo.from_proto(self._call("GetJobInfo", pb.GetJobInfoRequest(job_id=job_id),
                                                 timeout))
        except MoecastError as error:
            if error.code == "NOT_FOUND":
                self._forget(job_id)
            raise
        self._remember(info.spec)
        return info

    def flush_pending(self, job_id: str, timeout: Optional[float] = None) -> List[CommittedStep]:
        """Commits every pending step of a multi-source job now; returns them
        (CommittedStep). Raises ValidationError, MoecastError NOT_FOUND."""
        cv.check_job_id(job_id)
        r = self._call("FlushPending", pb.FlushPendingRequest(job_id=job_id), timeout)
        return [CommittedStep.from_proto(c) for c in r.committed]

    # --- ingestion ---------------------------------------------------------

    def ingest_batch(self, job_id: str, steps: Any, *, first_step: Optional[int] = None,
                     router_logits: Any = None, tokens: Any = None,
                     validate_job: bool = True, timeout: Optional[float] = None) -> IngestResult:
        """Ingests steps of one job in one call; returns an IngestResult with one
        StepResult per step (a step the server refuses is "rejected" there, the
        others still count; result.raise_for_rejections() turns that into an
        exception).

        steps: a list of Step, dicts {step, counts, router_logits?, tokens?,
        source?} or tuples (step, counts[, router_logits[, tokens]]), where
        counts (and router_logits) are array-like [L, M]; or a 3-D array
        [T, L, M] of counts with first_step= (and router_logits= [T, L, M],
        tokens= [T]). Shapes, values and step order are checked here first
        (against the job's spec, fetched once with GetJobInfo, unless
        validate_job=False).

        Raises ValidationError (a shape, value or step order the check
        rejects, naming the step and field), MoecastError NOT_FOUND (unknown
        job), RESOURCE_EXHAUSTED (message too large, server limits)."""
        cv.check_job_id(job_id)
        try:
            protos = self._steps_to_protos(job_id, steps, first_step, router_logits, tokens,
                                           validate_job)
        except MoecastError as error:
            if error.local:
                raise
            # The spec lookup (GetJobInfo) failed, e.g. NOT_FOUND: report it as this call's.
            raise MoecastError(error.code, error.message, "IngestBatch") from None
        try:
            r = self._call("IngestBatch", pb.IngestBatchRequest(job_id=job_id, steps=protos), timeout)
        except MoecastError as error:
            if error.code == "NOT_FOUND":
                self._forget(job_id)
            raise
        return IngestResult.from_proto(r)

    def ingest_stream(self, job_id: Optional[str], steps: Iterable[Any], *, batch_size: int = 256,
                      validate_job: bool = True,
                      timeout: Optional[float] = None) -> IngestSummary:
        """Streams steps with the client-streaming Ingest call, batch_size steps
        per message; returns the server's IngestSummary when the iterator is
        exhausted.

        steps: an iterable (e.g. a generator reading a trace) of the step forms
        ingest_batch takes. With job_id=None each item is (job_id, step) and a
        batch is cut whenever the job changes. Each step is checked before it
        is sent; a ValidationError ends the call (the batches already sent
        stay ingested) and is raised here. Also raises MoecastError NOT_FOUND
        (unknown job), RESOURCE_EXHAUSTED (max_concurrent_streams, limits)."""
        if job_id is not None:
            cv.check_job_id(job_id)
        batch_size = cv.check_int("batch_size", batch_size, 1)
        failure = []
        counter = {"sent": 0}

        def requests():
            current, batch, shapes, last = None, [], {}, {}
            try:
                for index, item in enumerate(steps):
                    if job_id is None:
                        if not (isinstance(item, tuple) and len(item) == 2):
                            raise ValidationError("item %d: with job_id=None each item must be "
                                                  "(job_id, step), got %s" % (index, type(item).__name__))
                        jid, step = item
                        cv.check_job_id(jid, "item %d: job_id" % index)
                    else:
                        jid, step = job_id, item
                    if jid != current and batch:
                        yield pb.IngestBatchRequest(job_id=current, steps=batch)
                        batch = []
                    current = jid
                    spec = self._spec(jid) if validate_job else None
                    p, shapes[jid] = cv.step_to_proto(step, index, spec, shapes.get(jid))
                    prev = last.get((jid, p.source))
                    if prev is not None and p.step < prev:
                        raise ValidationError(
                            "item %d: step %d of job '%s' source %d comes after step %d; steps of "
                            "a source must increase" % (index, p.step, jid, p.source, prev))
                    last[(jid, p.source)] = p.step
                    batch.append(p)
                    counter["sent"] += 1
                    if len(batch) >= batch_size:
                        yield pb.IngestBatchRequest(job_id=jid, steps=batch)
                        batch = []
                if batch:
                    yield pb.IngestBatchRequest(job_id=current, steps=batch)
            except Exception as error:  # surfaced after the call ends
                failure.append(error)
                raise

        def reported(f):
            if isinstance(f, MoecastError) and not f.local:
                # The spec lookup (GetJobInfo) failed, e.g. NOT_FOUND: report it as this call's.
                return MoecastError(f.code, f.message, "Ingest")
            return f

        # The first message is built here, before the call starts, so that a
        # bad first step is reported as such even when the server cannot be
        # reached (gRPC may fail the call before it reads the iterator).
        pending = requests()
        try:
            head = [next(pending)]
        except StopIteration:
            head = []
        except Exception:
            raise reported(failure[0]) from None
        try:
            summary = self._stub.Ingest(itertools.chain(head, pending),
                                        metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as error:
            if failure:
                raise reported(failure[0]) from None
            raise MoecastError.from_rpc_error(error, "Ingest") from None
        if failure:  # pragma: no cover - grpc cancels the call on iterator errors
            raise failure[0]
        return IngestSummary.from_proto(summary)

    # --- forecasts, state, health ------------------------------------------

    def forecast(self, job_id: str, horizons: Optional[Sequence[int]] = None, *,
                 predictor: Optional[str] = None, interval_level: Optional[float] = None,
                 path_steps: int = 0, layers: Optional[Sequence[int]] = None,
                 timeout: Optional[float] = None) -> Forecast:
        """Forecasts of the job's expert loads: a Forecast whose layers map
        layer -> LayerForecast (horizons: horizon -> means/lower/upper numpy
        arrays [M]); forecast.means(h) stacks them to [layers, M].
        horizons: each >= 1 (None: the job's scored horizons); predictor:
        "auto" (None) or a name from the job's bank; interval_level in (0, 1);
        path_steps: per-step path length (0: none).

        Raises ValidationError (a bad horizon, level or layer), MoecastError
        NOT_FOUND (unknown job or predictor), FAILED_PRECONDITION (no step
        committed yet, forecasting off)."""
        cv.check_job_id(job_id)
        req = pb.ForecastRequest(job_id=job_id, horizons=cv.check_int_list("horizons", horizons, 1),
                                 path_steps=cv.check_int("path_steps", path_steps, 0),
                                 layers=cv.check_int_list("layers", layers, 0))
        if predictor is not None:
            if not isinstance(predictor, str) or not predictor:
                raise ValidationError("predictor must be a non-empty str, got %r" % (predictor,))
            req.predictor = predictor
        if interval_level is not None:
            req.interval_level = cv.check_float("interval_level", interval_level, 0, 1,
                                                open_min=True, open_max=True)
        return Forecast.from_proto(self._call("Forecast", req, timeout))

    def get_state(self, job_id: str, per_expert: bool = False,
                  timeout: Optional[float] = None) -> State:
        """The transient/stable state of the job and each layer (State). Raises
        ValidationError, MoecastError NOT_FOUND, FAILED_PRECONDITION (no step yet,
        forecasting off)."""
        cv.check_job_id(job_id)
        return State.from_proto(self._call(
            "GetState", pb.GetStateRequest(job_id=job_id, per_expert=bool(per_expert)), timeout))

    def get_health(self, job_id: str, timeout: Optional[float] = None) -> Health:
        """The router's health as of each layer's last completed window (Health).
        Raises ValidationError, MoecastError NOT_FOUND, FAILED_PRECONDITION (health
        off, no window yet)."""
        cv.check_job_id(job_id)
        return Health.from_proto(self._call("GetHealth", pb.GetHealthRequest(job_id=job_id), timeout))

    # --- placement ---------------------------------------------------------

    def _placement_request(self, job_id, num_slots, num_gpus, num_groups=1, num_nodes=1,
                           excluded_gpus=None, current_phy2log=None, mode=None, move_budget=None,
                           max_extra_experts_per_gpu=0, bytes_per_expert=0, horizon=0,
                           predictor=None, means_only=False, interval_level=None,
                           migration=None):
        cv.check_job_id(job_id)
        req = pb.RecommendPlacementRequest(
            job_id=job_id, num_slots=cv.check_int("num_slots", num_slots, 1),
            num_groups=cv.check_int("num_groups", num_groups, 1),
            num_nodes=cv.check_int("num_nodes", num_nodes, 1),
            num_gpus=cv.check_int("num_gpus", num_gpus, 1),
            excluded_gpus=cv.check_int_list("excluded_gpus", excluded_gpus, 0),
            max_extra_experts_per_gpu=cv.check_int("max_extra_experts_per_gpu",
                                                   max_extra_experts_per_gpu, 0),
            bytes_per_expert=cv.check_int("bytes_per_expert", bytes_per_expert, 0, 2**63 - 1),
            horizon=cv.check_int("horizon", horizon, 0), means_only=bool(means_only))
        if current_phy2log is not None:
            array, flat = cv.matrix_of_ints("current_phy2log", current_phy2log, -1)
            if array.ndim == 2 and array.shape[1] != req.num_slots:
                raise ValidationError("current_phy2log has %d columns but num_slots is %d; it is "
                                      "[layers, slots]" % (array.shape[1], req.num_slots))
            if len(flat) % req.num_slots:
                raise ValidationError("current_phy2log has %d values, not a multiple of num_slots "
                                      "(%d)" % (len(flat), req.num_slots))
            req.current_phy2log.extend(flat)
        if mode is not None:
            if not isinstance(mode, str):
                raise ValidationError("mode must be a str ('default' or 'eplb'), got %r" % (mode,))
            req.mode = mode
        if move_budget is not None:
            req.move_budget = cv.check_int("move_budget", move_budget, 0, 2**63 - 1)
        if predictor is not None:
            if not isinstance(predictor, str) or not predictor:
                raise ValidationError("predictor must be a non-empty str, got %r" % (predictor,))
            req.predictor = predictor
        if interval_level is not None:
            req.interval_level = cv.check_float("interval_level", interval_level, 0, 1,
                                                open_min=True, open_max=True)
        if migration is not None:
            req.migration.CopyFrom(_migration_proto(migration))
        return req

    def recommend_placement(self, job_id: str, num_slots: int, num_gpus: int, *,
                            timeout: Optional[float] = None, **kwargs: Any) -> Placement:
        """Recommends an expert placement from the job's forecasts (Placement:
        plan.phy2log [L, S], plan.gpu_loads [L, P], loads [L, M], ...).
        Keyword arguments: num_groups, num_nodes, excluded_gpus,
        current_phy2log ([L, S] or flat), mode ("default" / "eplb"),
        move_budget, max_extra_experts_per_gpu, bytes_per_expert, horizon,
        predictor, means_only, interval_level, migration (MigrationModel or
        dict; with current_phy2log the answer has a rebalance decision).
        The server checks the cluster's consistency (INVALID_ARGUMENT)."""
        req = self._placement_request(job_id, num_slots, num_gpus, **kwargs)
        return Placement.from_proto(self._call("RecommendPlacement", req, timeout))

    # --- events ------------------------------------------------------------

    def watch(self, job_id: str, after_seq: int = 0, *, rebalance: Optional[Dict[str, Any]] = None,
              rebalance_every_steps: int = 0, timeout: Optional[float] = None) -> "EventStream":
        """Streams the job's events with seq > after_seq as they happen: returns
        an EventStream (iterate it; cancel() or a `with` block ends it; its
        last_seq resumes). rebalance: a dict of recommend_placement arguments
        (num_slots, num_gpus, current_phy2log and migration are required by
        the server) to also get "rebalance_recommended" events, checked every
        rebalance_every_steps steps (0: 100). Errors (NOT_FOUND when the job
        is deleted or expires) are raised while iterating."""
        cv.check_job_id(job_id)
        req = pb.WatchRequest(job_id=job_id, after_seq=cv.check_int("after_seq", after_seq, 0, 2**63 - 1),
                              rebalance_every_steps=cv.check_int("rebalance_every_steps",
                                                                 rebalance_every_steps, 0))
        if rebalance is not None:
            if not isinstance(rebalance, dict):
                raise ValidationError("rebalance must be a dict of recommend_placement arguments, "
                                      "got %s" % type(rebalance).__name__)
            args = dict(rebalance)
            missing = [k for k in ("num_slots", "num_gpus") if k not in args]
            if missing:
                raise ValidationError("rebalance needs %s" % ", ".join(missing))
            req.rebalance.CopyFrom(self._placement_request(job_id, **args))
        if timeout is not None:
            timeout = cv.check_float("timeout", timeout, 0, open_min=True)
        return EventStream(self, req, timeout)


def _migration_proto(migration):
    if isinstance(migration, dict):
        try:
            migration = MigrationModel(**migration)
        except TypeError as error:
            raise ValidationError("migration: %s (fields: intra_node_bandwidth, "
                                  "inter_node_bandwidth, tokens_per_step, time_per_token_s, "
                                  "horizon_steps, bytes_per_expert, overlap, "
                                  "overlap_cost_fraction, transient_margin)" % error)
    if not isinstance(migration, MigrationModel):
        raise ValidationError("migration must be a MigrationModel or a dict, got %s"
                              % type(migration).__name__)
    m = pb.MigrationModel(
        bytes_per_expert=cv.check_float("migration.bytes_per_expert", migration.bytes_per_expert, 0),
        intra_node_bandwidth=cv.check_float("migration.intra_node_bandwidth",
                                            migration.intra_node_bandwidth, 0, open_min=True),
        inter_node_bandwidth=cv.check_float("migration.inter_node_bandwidth",
                                            migration.inter_node_bandwidth, 0, open_min=True),
        tokens_per_step=cv.check_float("migration.tokens_per_step", migration.tokens_per_step, 0),
        time_per_token_s=cv.check_float("migration.time_per_token_s", migration.time_per_token_s, 0),
        horizon_steps=cv.check_float("migration.horizon_steps", migration.horizon_steps, 0),
        overlap=bool(migration.overlap))
    if migration.overlap_cost_fraction is not None:
        m.overlap_cost_fraction = cv.check_float("migration.overlap_cost_fraction",
                                                 migration.overlap_cost_fraction, 0, 1)
    if migration.transient_margin is not None:
        m.transient_margin = cv.check_float("migration.transient_margin",
                                            migration.transient_margin, 0)
    return m
