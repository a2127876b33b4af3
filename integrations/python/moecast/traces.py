"""Reads traces in the moecast trace format (bench/traces/README.md).

    NAME.counts.csv[.gz]: header step,layer[,tokens],c0,...,c{M-1}; one row
        per (step, layer), every step listing layers 0..L-1 in order.
    NAME.router.csv[.gz] (optional): header step,layer,z0..z{M-1}[,p...][,s...];
        the same rows; z = mean pre-softmax router logit per expert.

read_trace() streams Steps (counts [L, M], router_logits [L, M] or None,
tokens) without loading the file, so it can feed Client.ingest_stream.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Iterable, Iterator
from typing import IO, Any

import numpy as np

from .types import Step


class TraceFormatError(ValueError):
    """The trace file breaks the format; the message names file and line."""


def _open_text(path: str | os.PathLike[str]) -> IO[str]:
    if str(path).endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="ascii", newline="")  # type: ignore[arg-type]
    return open(path, "r", encoding="ascii", newline="")


def _columns(header: list[str], prefix: str, path: str | os.PathLike[str]) -> list[int]:
    cols = [i for i, name in enumerate(header) if name.startswith(prefix) and name[len(prefix):].isdigit()]
    names = [header[i] for i in cols]
    if names != ["%s%d" % (prefix, e) for e in range(len(names))]:
        raise TraceFormatError("%s: columns %s0..%s{M-1} must be contiguous and in order, got %s"
                               % (path, prefix, prefix, names))
    return cols


def _rows(path: str | os.PathLike[str],
          prefix: str) -> Iterator[tuple[int, int, int, float | None, np.ndarray]]:
    """Yields (line number, step, layer, tokens or None, values) per row."""
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise TraceFormatError("%s: empty file (no header)" % path)
        if header[:2] != ["step", "layer"]:
            raise TraceFormatError("%s: header must start with step,layer, got %s" % (path, header[:2]))
        cols = _columns(header, prefix, path)
        if not cols:
            raise TraceFormatError("%s: no %s0.. columns in the header" % (path, prefix))
        tok = header.index("tokens") if "tokens" in header else None
        for line, row in enumerate(reader, start=2):
            try:
                step, layer = int(row[0]), int(row[1])
                values = np.array([float(row[i]) for i in cols])
                tokens = float(row[tok]) if tok is not None else None
            except (ValueError, IndexError) as error:
                raise TraceFormatError("%s:%d: bad row (%s)" % (path, line, error))
            yield line, step, layer, tokens, values


def _group(path: str | os.PathLike[str],
           rows: Iterable[tuple[int, int, int, float | None, np.ndarray]],
           ) -> Iterator[tuple[int, np.ndarray, float | None]]:
    """Groups rows into steps: yields (step, [L, M] array, tokens or None)."""
    current: int | None = None
    layers: list[np.ndarray] = []
    tokens: float | None = None
    for line, step, layer, tok, values in rows:
        if current is not None and step != current:
            yield current, np.stack(layers), tokens
            layers, tokens = [], None
            if step < current:
                raise TraceFormatError("%s:%d: step %d after step %d; steps must increase"
                                       % (path, line, step, current))
        current = step
        if layer != len(layers):
            raise TraceFormatError("%s:%d: step %d lists layer %d where layer %d was expected"
                                   % (path, line, step, layer, len(layers)))
        if layers and values.shape != layers[0].shape:
            raise TraceFormatError("%s:%d: %d values, the step's layer 0 has %d"
                                   % (path, line, values.size, layers[0].size))
        layers.append(values)
        if tok is not None:
            tokens = tok
    if current is not None:
        yield current, np.stack(layers), tokens


def read_trace(counts_path: str | os.PathLike[str],
               router_path: str | os.PathLike[str] | None = None, max_steps: int | None = None,
               first_step: int = 0) -> Iterator[Step]:
    """Yields Steps from a counts file (and its router file) of the trace format.

    max_steps: stop after this many steps; first_step: skip steps before it.

    Raises (while iterating, as the files are read):
      OSError (FileNotFoundError, gzip.BadGzipFile, ...): a file cannot be
        opened or decompressed.
      TraceFormatError (a ValueError): a header or row breaks the format,
        steps do not increase, layers are not 0..L-1 in order, a row has
        another number of values, or the router file ends early or does not
        match the counts file step for step.
      UnicodeDecodeError: a file is not ASCII text.
    """
    counts = _group(counts_path, _rows(counts_path, "c"))
    router = _group(router_path, _rows(router_path, "z")) if router_path else None
    n = 0
    for step, c, tokens in counts:
        z = None
        if router is not None:
            try:
                rstep, z, _ = next(router)
            except StopIteration:
                raise TraceFormatError("%s ends before step %d of %s" % (router_path, step, counts_path))
            if rstep != step or z.shape != c.shape:
                raise TraceFormatError("%s: step %d shape %s does not match %s step %d shape %s"
                                       % (router_path, rstep, z.shape, counts_path, step, c.shape))
        if step < first_step:
            continue
        if max_steps is not None and n >= max_steps:
            return
        n += 1
        yield Step(step=step, counts=c, router_logits=z, tokens=tokens)


def trace_files(name_or_path: str | os.PathLike[str]) -> tuple[str, str | None, dict[str, Any]]:
    """(counts path, router path or None, meta dict or {}) for a trace NAME
    path prefix (e.g. bench/traces/data/tiny_moe_aux) or a counts file.

    Raises:
      FileNotFoundError: neither NAME.counts.csv.gz nor NAME.counts.csv exists.
      OSError / json.JSONDecodeError (a ValueError): NAME.meta.json exists
        but cannot be read or is not JSON.
    """
    p = os.fspath(name_or_path)
    for suffix in (".counts.csv.gz", ".counts.csv"):
        if p.endswith(suffix):
            p = p[: -len(suffix)]
            break
    counts = next((p + s for s in (".counts.csv.gz", ".counts.csv") if os.path.exists(p + s)), None)
    if counts is None:
        raise FileNotFoundError("no %s.counts.csv.gz or %s.counts.csv" % (p, p))
    router = next((p + s for s in (".router.csv.gz", ".router.csv") if os.path.exists(p + s)), None)
    meta: dict[str, Any] = {}
    if os.path.exists(p + ".meta.json"):
        with open(p + ".meta.json") as f:
            meta = json.load(f)
    return counts, router, meta
