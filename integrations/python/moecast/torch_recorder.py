"""Records expert loads and router statistics from a PyTorch MoE model.

    from moecast.torch_recorder import TorchRecorder, logits_topk, weights_indices

    routers = [blk.moe.router for blk in model.blocks]          # in layer order
    rec = TorchRecorder(routers, num_experts=16, top_k=2, adapter=logits_topk(k=2),
                        target="127.0.0.1:50051", job_id="pretrain-a")   # and/or trace="out/run1"
    for batch in data:
        loss = model(batch).loss; loss.backward(); opt.step(); opt.zero_grad()
        rec.step()                      # or: with rec.recording(): ...one training step...
    rec.close()                         # flushes; raises a streaming/writing error, if any

Forward hooks on the router modules read (top-k indices, router logits or None)
through an adapter (a function (module, inputs, output) -> (indices, logits)).
Per step the recorder keeps, per layer, on the device of the router's output:
  counts[e]  = number of (token, slot) top-K assignments to expert e
               (bincount of the indices; sum = N*K),
  z[e], p[e], s[e] = means over ALL N tokens of the step, before top-K, of the
               pre-softmax logit, the softmax probability, and the per-token
               standardised logit (logit - mean_e)/(population std_e + 1e-6)
               (docs/design.md sections 6-7; exactly bench/traces/train_moe.py's
               columns and float32 arithmetic).
Several forward passes before one step() (gradient accumulation) add up:
counts are summed, the means are token-weighted.

step() stacks every layer into one [L, 1 + 4M] tensor (tokens, counts, z, p, s)
on the device and makes ONE device-to-host copy (on CUDA: into pinned memory,
non-blocking, read by the background thread after an event), then hands the
step to a background thread that streams it to moecastd (Client.ingest_batch,
batched) and/or writes a trace (TraceWriter: the same bytes as train_moe.py).
The queue is bounded (queue_size steps; when full step() waits, or drops the
step with on_full="drop"). An error in the thread (network, a rejected step,
disk) is raised by the next step() or by close().

torch is imported lazily: `import moecast` works without it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from .errors import MoecastError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import torch

    from .client import Client
    from .trace_writer import TraceWriter

    #: (module, inputs, output) -> (indices [..., K], logits [..., M] or None)
    Adapter = Callable[[torch.nn.Module, tuple[Any, ...], Any],
                       tuple[torch.Tensor, torch.Tensor | None]]


class RecorderError(RuntimeError):
    """The recorder's background thread failed (its cause is __cause__)."""


def _torch() -> ModuleType:
    try:
        import torch
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError("moecast.torch_recorder needs PyTorch (import torch failed: %s)"
                          % error) from error
    return torch


def _first_tensor(x: Any, index: int | None) -> Any:
    if index is None:
        return x
    return x[index]


# --- adapters ------------------------------------------------------------------
#
# An adapter is a callable (module, inputs, output) -> (indices, logits) where
# indices is an integer tensor [..., K] of the experts each token picked (K
# distinct per token) and logits a float tensor [..., M] of the pre-softmax
# router logits of the same tokens, or None when the router does not expose
# them (then no router statistics are recorded). `inputs` is the tuple of
# positional arguments of the module's forward.


def logits_topk(k: int, output_index: int | None = None) -> Adapter:
    """For a router whose forward returns logits [tokens, M] (e.g. an
    nn.Linear gate, or a tuple holding them at `output_index`): top-k indices
    are computed here (torch.topk of the logits: the same experts as topk of
    the softmax probabilities).

    Raises:
      ValueError: k < 1 (TypeError/ValueError from int() when k is not an
        integer). The adapter itself raises what indexing `output` or
        torch.topk raise for an output of the wrong kind or shape.
    """
    k = int(k)
    if k < 1:
        raise ValueError("k must be >= 1, got %d" % k)

    def adapter(module: torch.nn.Module, inputs: tuple[Any, ...],
                output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = _first_tensor(output, output_index)
        return logits.topk(k, dim=-1).indices, logits

    adapter.top_k = k  # type: ignore[attr-defined]
    return adapter


def weights_indices(indices_index: int = 1, logits_index: int | None = None) -> Adapter:
    """For a router whose forward returns (weights, indices) (e.g. a
    DeepSeek/Mixtral-style gate returning top-k weights and expert ids);
    logits_index: position of the logits in the same tuple, if it has them.

    Raises nothing itself; the adapter raises the IndexError/TypeError of
    indexing an output that is not such a tuple.
    """

    def adapter(module: torch.nn.Module, inputs: tuple[Any, ...],
                output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = output[logits_index] if logits_index is not None else None
        return output[indices_index], logits

    return adapter


def find_modules(model: torch.nn.Module,
                 predicate: Callable[[str, torch.nn.Module], bool] | type | str,
                 ) -> list[torch.nn.Module]:
    """The submodules of `model` (in registration order: layer order for the
    usual ModuleList of blocks) for which predicate(name, module) is true;
    predicate may also be a class (isinstance) or a name suffix string.

    Raises:
      AttributeError: `model` has no named_modules() (not a torch.nn.Module).
      Whatever the predicate raises is passed on.
    """
    if isinstance(predicate, str):
        suffix = predicate
        predicate = lambda name, m: name == suffix or name.endswith("." + suffix)  # noqa: E731
    elif isinstance(predicate, type):
        cls = predicate
        predicate = lambda name, m: isinstance(m, cls)  # noqa: E731
    return [m for name, m in model.named_modules() if predicate(name, m)]


# --- the recorder ----------------------------------------------------------------


class _Pending:
    """One step on its way to the background thread."""

    __slots__ = ("step", "host", "event", "router")

    def __init__(self, step: int, host: torch.Tensor, event: torch.cuda.Event | None,
                 router: bool) -> None:
        self.step, self.host, self.event, self.router = step, host, event, router


_STOP: object = object()


class TorchRecorder:
    """Per-step expert loads from router forward hooks, streamed to moecastd
    and/or written as a moecast trace. See the module docstring.

    Args:
      routers: the router modules, one per MoE layer, in layer order (a list,
        or a dict name -> module in layer order).
      num_experts: M (experts per layer).
      top_k: K (experts per token); checked against the indices' last dim.
      adapter: (module, inputs, output) -> (indices, logits or None); default
        logits_topk(top_k). A list gives one adapter per layer.
      hook: "forward" (output available; default) or "forward_pre" (the
        adapter gets output=None and reads the inputs).
      client / target (+ token, root_ca, ...: client_kwargs): stream to
        moecastd as job_id; register=True registers the job on the first step
        (num_layers, num_experts, top_k and register_kwargs, e.g.
        aux_loss_coef=0.01); an existing job is reused (exist_ok=True).
      trace: path prefix NAME: writes NAME.counts.csv.gz (+ NAME.router.csv.gz
        when router statistics exist) and, on close, NAME.meta.json with meta.
      router_stats: True, False or "auto" (record z/p/s when the adapters give
        logits: decided on the first step; a later step without them is an
        error).
      first_step: number of the first step; step() counts up from it.
      source: this producer's source index (multi-source jobs, e.g. one per
        data-parallel rank).
      queue_size: steps waiting for the background thread at most.
      on_full: "block" (step() waits for room) or "drop" (the step is
        dropped and counted in .dropped_steps; moecast sees a gap).
      batch_size: steps per IngestBatch call at most; the thread sends
        what is queued, waiting up to flush_interval_s for more.
      only_training: ignore forward passes of modules in eval mode.

    Raises (the constructor):
      ImportError: PyTorch is not installed.
      ValueError: routers is empty; num_experts < 2 or top_k not in
        [1, num_experts]; adapter is not a callable or a list of one callable
        per layer; hook, router_stats or on_full is not one of its values;
        streaming without job_id; neither client/target nor trace given.
      TypeError: a router is not a torch.nn.Module.
      Creating the own Client (target=) raises what Client() raises
        (ValueError for a bad target or TLS option).

    Errors of the background thread (a MoecastError from moecastd, e.g. a
    rejected step or an unreachable server; an OSError writing the trace)
    are raised as RecorderError (the cause in __cause__) by the next step(),
    flush() or close().
    """

    num_layers: int
    num_experts: int
    top_k: int
    job_id: str | None
    source: int
    next_step: int
    steps_recorded: int
    dropped_steps: int
    skipped_steps: int
    sent_steps: int
    committed_steps: int
    on_full: str
    client: Client | None
    trace_paths: Any

    def __init__(self, routers: Iterable[torch.nn.Module] | dict[str, torch.nn.Module],
                 num_experts: int, top_k: int,
                 adapter: Adapter | Sequence[Adapter] | None = None, *,
                 hook: Literal["forward", "forward_pre"] = "forward",
                 client: Client | None = None, target: str | None = None,
                 job_id: str | None = None, register: bool = True,
                 register_kwargs: Mapping[str, Any] | None = None,
                 client_kwargs: Mapping[str, Any] | None = None, trace: str | None = None,
                 trace_compress: bool = True, trace_level: int = 9, trace_fmt: str = "%.5g",
                 meta: Mapping[str, Any] | None = None,
                 router_stats: bool | Literal["auto"] = "auto", first_step: int = 0,
                 source: int = 0, queue_size: int = 64,
                 on_full: Literal["block", "drop"] = "block", batch_size: int = 32,
                 flush_interval_s: float = 0.05, only_training: bool = False) -> None:
        torch = _torch()
        if isinstance(routers, dict):
            routers = list(routers.values())
        routers = list(routers)
        if not routers:
            raise ValueError("routers is empty: pass the router module of each MoE layer")
        for i, m in enumerate(routers):
            if not isinstance(m, torch.nn.Module):
                raise TypeError("routers[%d] is a %s, not a torch.nn.Module" % (i, type(m).__name__))
        self.num_layers = len(routers)
        self.num_experts = int(num_experts)
        self.top_k = int(top_k)
        if self.num_experts < 2 or not 1 <= self.top_k <= self.num_experts:
            raise ValueError("need num_experts >= 2 and 1 <= top_k <= num_experts")
        if adapter is None:
            adapter = logits_topk(self.top_k)
        adapters = list(adapter) if isinstance(adapter, (list, tuple)) else [adapter] * self.num_layers
        if len(adapters) != self.num_layers or not all(callable(a) for a in adapters):
            raise ValueError("adapter must be a callable or a list of %d callables" % self.num_layers)
        if hook not in ("forward", "forward_pre"):
            raise ValueError("hook must be 'forward' or 'forward_pre', got %r" % (hook,))
        if router_stats not in (True, False, "auto"):
            raise ValueError("router_stats must be True, False or 'auto'")
        if on_full not in ("block", "drop"):
            raise ValueError("on_full must be 'block' or 'drop'")
        if (client is not None or target is not None) and not job_id:
            raise ValueError("streaming to moecastd needs job_id")
        if client is None and target is None and trace is None:
            raise ValueError("nothing to record to: give client/target (with job_id) and/or trace")

        self._torch = torch
        self._adapters = adapters
        self._only_training = bool(only_training)
        self._router_stats = router_stats
        self.job_id = job_id
        self.source = int(source)
        self.next_step = int(first_step)
        self.steps_recorded = 0
        self.dropped_steps = 0
        self.skipped_steps = 0
        self.sent_steps = 0             # steps moecastd accepted (background thread)
        self.committed_steps = 0        # of those, committed (all sources in)
        self.on_full = on_full

        M = self.num_experts
        self._width = 1 + 4 * M
        self._acc: list[Any] = [None] * self.num_layers   # per layer [1 + 4M] float64 on its device
        self._has_logits: list[bool | None] = [None] * self.num_layers
        self._seen = False

        # Sinks (used by the background thread only).
        self._own_client = client is None and target is not None
        if self._own_client:
            from .client import Client
            client = Client(target, **(client_kwargs or {}))  # type: ignore[arg-type]
        self.client = client
        self._register = bool(register)
        self._register_kwargs = dict(register_kwargs or {})
        self._registered = False
        self._trace_args = (trace, trace_compress, trace_level, trace_fmt) if trace else None
        self._writer: TraceWriter | None = None
        self._meta = meta
        self.trace_paths = None
        self._batch_size = max(1, int(batch_size))
        self._flush_interval = float(flush_interval_s)

        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, int(queue_size)))
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="moecast-recorder", daemon=True)
        self._thread.start()

        self._handles: list[Any] = []
        for layer, module in enumerate(routers):
            if hook == "forward":
                h = module.register_forward_hook(self._make_hook(layer))
            else:
                h = module.register_forward_pre_hook(self._make_pre_hook(layer))
            self._handles.append(h)

    # --- hooks (on the training thread) -----------------------------------

    def _make_hook(self, layer: int) -> Callable[[torch.nn.Module, tuple[Any, ...], Any], None]:
        def fn(module: torch.nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            self._record(layer, module, inputs, output)
        return fn

    def _make_pre_hook(self, layer: int) -> Callable[[torch.nn.Module, tuple[Any, ...]], None]:
        def fn(module: torch.nn.Module, inputs: tuple[Any, ...]) -> None:
            self._record(layer, module, inputs, None)
        return fn

    def _record(self, layer: int, module: torch.nn.Module, inputs: tuple[Any, ...],
                output: Any) -> None:
        """Adds one forward pass of `layer` to the step (in the hook, so on the
        model's forward). Raises ValueError when the adapter's indices or
        logits do not fit (K != top_k, an expert id >= num_experts, logit
        rows != tokens, logits in one pass and not in another)."""
        if self._only_training and not module.training:
            return
        torch = self._torch
        with torch.no_grad():
            indices, logits = self._adapters[layer](module, inputs, output)
            M = self.num_experts
            if indices.shape[-1] != self.top_k:
                raise ValueError("layer %d: the adapter gave %d experts per token, top_k is %d"
                                 % (layer, indices.shape[-1], self.top_k))
            idx = indices.detach().reshape(-1, indices.shape[-1])
            n = idx.shape[0]
            counts = torch.bincount(idx.reshape(-1).long(), minlength=M)
            if counts.numel() != M:
                raise ValueError("layer %d: expert index %d >= num_experts %d"
                                 % (layer, counts.numel() - 1, M))
            parts = [counts.new_full((1,), n), counts]
            if logits is not None:
                ld = logits.detach().reshape(-1, M).float()
                if ld.shape[0] != n:
                    raise ValueError("layer %d: %d logit rows for %d tokens" % (layer, ld.shape[0], n))
                # Per pass means in float32, as train_moe.py computes them; times
                # n back to sums in float64 (exact: a float32 times an integer < 2^29).
                z = ld.mean(dim=0)
                p = ld.softmax(dim=-1).mean(dim=0)
                mu = ld.mean(dim=-1, keepdim=True)
                sd = ld.std(dim=-1, unbiased=False, keepdim=True)
                s = ((ld - mu) / (sd + 1e-6)).mean(dim=0)
                row = torch.cat([c.double() for c in parts] + [z.double() * n, p.double() * n,
                                                               s.double() * n])
            else:
                row = torch.cat([c.double() for c in parts])
            have = logits is not None
            if self._has_logits[layer] is None:
                self._has_logits[layer] = have
            elif self._has_logits[layer] != have:
                raise ValueError("layer %d: the adapter gave logits in one pass and not in another"
                                 % layer)
            acc = self._acc[layer]
            if acc is None or acc.device != row.device:
                acc = self._acc[layer] = torch.zeros(self._width, dtype=torch.float64,
                                                     device=row.device)
            acc[: row.numel()].add_(row)
            self._seen = True

    # --- steps ------------------------------------------------------------

    def _raise_pending(self) -> None:
        with self._error_lock:
            error = self._error
        if error is not None:
            raise RecorderError("moecast recorder: %s" % error) from error

    def step(self, step: int | None = None) -> int | None:
        """Ends the current step: its loads go to the background thread.
        Returns the step number, or None when no router ran since the last
        step (nothing recorded; counted in .skipped_steps).

        Raises:
          RecorderError: the background thread failed (earlier step's send or
            write; the cause in __cause__); step() after close(); some layers
            recorded nothing while others did; router_stats=True but a layer
            gave no logits; with on_full="block", the background thread
            stopped while step() waited for room.
          ValueError: `step` is below the next step number (steps must
            increase).
        """
        self._raise_pending()
        if self._closed:
            raise RecorderError("moecast recorder: step() after close()")
        if step is None:
            step = self.next_step
        step = int(step)
        if step < self.next_step:
            raise ValueError("step %d after step %d: steps must increase" % (step, self.next_step - 1))
        if not self._seen:
            self.skipped_steps += 1
            return None
        torch = self._torch
        missing = [l for l, a in enumerate(self._acc) if a is None]
        if missing:
            raise RecorderError("moecast recorder: layers %s recorded nothing in step %d (did their "
                                "routers run?)" % (missing, step))
        with_logits = all(self._has_logits)
        if self._router_stats == "auto":
            self._router_stats = with_logits
        if self._router_stats and not with_logits:
            raise RecorderError("moecast recorder: router statistics are on but layers %s gave no "
                                "logits" % [l for l, h in enumerate(self._has_logits) if not h])
        dev = self._acc[0].device
        with torch.no_grad():
            stacked = torch.stack([a if a.device == dev else a.to(dev) for a in self._acc])
            if self._router_stats:
                tok = stacked[:, :1].clamp(min=1)
                stacked[:, 1 + self.num_experts:].div_(tok)
            if stacked.is_cuda:
                host = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
                host.copy_(stacked, non_blocking=True)      # the one device-to-host copy
                event = torch.cuda.Event()
                event.record()
            else:
                host = stacked if stacked.device.type == "cpu" else stacked.cpu()
                event = None
        for a in self._acc:
            a.zero_()
        self._seen = False
        item = _Pending(step, host, event, bool(self._router_stats))
        if self.on_full == "drop":
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.dropped_steps += 1
        else:
            while True:
                try:
                    self._queue.put(item, timeout=0.5)
                    break
                except queue.Full:
                    self._raise_pending()
                    if not self._thread.is_alive():
                        raise RecorderError("moecast recorder: the background thread stopped")
        self.next_step = step + 1
        self.steps_recorded += 1
        return step

    def recording(self, step: int | None = None) -> AbstractContextManager[TorchRecorder]:
        """Context manager: `with rec.recording(): <one training step>` calls
        step() when the block ends without an exception (and discards the
        partial step's loads when it raises). On a clean exit it raises what
        step() raises (RecorderError, ValueError); the block's own exception
        is never replaced."""
        rec = self

        class _Ctx:
            def __enter__(self_) -> TorchRecorder:
                return rec

            def __exit__(self_, exc_type: type[BaseException] | None,
                         *exc: Any) -> Literal[False]:
                if exc_type is None:
                    rec.step(step)
                else:
                    rec.discard()
                return False

        return _Ctx()

    def discard(self) -> None:
        """Drops what was recorded since the last step(). Raises nothing."""
        for a in self._acc:
            if a is not None:
                a.zero_()
        self._seen = False

    def flush(self, timeout: float | None = None) -> None:
        """Waits until every queued step is sent/written (at most `timeout`
        seconds; None: no limit).

        Raises:
          RecorderError: sending or writing a step failed (cause in
            __cause__), or the timeout passed with steps still queued.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if not self._thread.is_alive():
                break
            if deadline is not None and time.monotonic() > deadline:
                raise RecorderError("moecast recorder: flush timed out with %d steps queued"
                                    % self._queue.unfinished_tasks)
            time.sleep(0.002)
        self._raise_pending()

    def remove_hooks(self) -> None:
        """Removes the forward hooks from the routers (recording stops; queued
        steps are still sent/written). Raises nothing."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def close(self, timeout: float | None = None) -> None:
        """Removes the hooks, sends/writes what is queued, closes the trace
        (renaming its files; meta.json written) and the own client. `timeout`
        bounds the wait for the background thread (None: no limit). A second
        close() only re-raises a pending error.

        Raises:
          RecorderError: the background thread failed at any point (sending,
            registering the job, writing or closing the trace; cause in
            __cause__).
        """
        if self._closed:
            self._raise_pending()
            return
        self._closed = True
        self.remove_hooks()
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._own_client and self.client is not None:
            self.client.close()
        self._raise_pending()

    def __enter__(self) -> TorchRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> Literal[False]:
        """close(); its RecorderError is raised only when the block itself
        did not raise."""
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except RecorderError:
                pass  # the block's own exception wins
        return False

    # --- background thread --------------------------------------------------

    def _fail(self, error: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = error

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            batch: list[_Pending] = []
            if item is _STOP:
                stop = True
            else:
                batch.append(item)
                deadline = time.monotonic() + self._flush_interval
                while len(batch) < self._batch_size:
                    try:
                        nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stop = True
                        break
                    batch.append(nxt)
            try:
                if batch and self._error is None:
                    self._process(batch)
            except Exception as error:  # surfaced by step()/close()
                self._fail(error)
            finally:
                for _ in range(len(batch) + (1 if stop else 0)):
                    self._queue.task_done()
        try:
            self._finish()
        except Exception as error:
            self._fail(error)

    def _process(self, batch: list[_Pending]) -> None:
        import numpy as np
        M, L = self.num_experts, self.num_layers
        rows = []
        for it in batch:
            if it.event is not None:
                it.event.synchronize()
            a = it.host.numpy()
            tokens = float(a[:, 0].max())
            counts = a[:, 1:1 + M]
            router = a[:, 1 + M:] if it.router else None
            rows.append((it.step, counts, router, tokens))
        if self._trace_args is not None:
            if self._writer is None:
                from .trace_writer import TraceWriter
                prefix, compress, level, fmt = self._trace_args
                self._writer = TraceWriter(prefix, L, M, router=rows[0][2] is not None,
                                           compress=compress, level=level, fmt=fmt)
            for step, counts, router, tokens in rows:
                self._writer.write(step, counts.tolist(), tokens,
                                   router.tolist() if router is not None else None)
        if self.client is not None:
            from .types import Step
            if not self._registered:
                self._register_job()
            steps = [Step(step, np.ascontiguousarray(counts),
                          router_logits=np.ascontiguousarray(router[:, :M]) if router is not None
                          else None, tokens=tokens, source=self.source)
                     for step, counts, router, tokens in rows]
            result = self.client.ingest_batch(self.job_id, steps)  # type: ignore[arg-type]
            result.raise_for_rejections()
            self.sent_steps += len(steps)
            self.committed_steps += len(result.committed)

    def _register_job(self) -> None:
        if self._register:
            try:
                self.client.register_job(self.job_id, num_layers=self.num_layers,  # type: ignore[union-attr, arg-type]
                                         num_experts=self.num_experts, top_k=self.top_k,
                                         **self._register_kwargs)
            except MoecastError as error:
                if error.code != "ALREADY_EXISTS":
                    raise
        self._registered = True

    def _finish(self) -> None:
        if self._writer is not None:
            meta = dict(self._meta or {})
            meta.setdefault("generator", "moecast.torch_recorder")
            meta.setdefault("layers", self.num_layers)
            meta.setdefault("experts", self.num_experts)
            meta.setdefault("top_k", self.top_k)
            meta.setdefault("first_step", self._writer.first_step)
            meta.setdefault("steps", self._writer.steps)
            if self._error is None:
                self.trace_paths = self._writer.close(meta=meta)
            else:
                self._writer.abort()
