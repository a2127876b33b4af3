"""Shared pieces of the converters: errors, array checks, file loading, the
moecast trace writer (design section 7) and layer-id lists.

Everything here needs numpy; torch is imported only when a torch file is read
or written (load_tensor_file / save_torch), so the converters work without it
for every .npz / .jsonl / .json input.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np


class ConvertError(Exception):
    """A problem with an input or an option, with a message that names the
    file and the place (record, line, field, index) that is wrong."""


# ---------------------------------------------------------------------------
# Layer-id and integer lists: "3..60", "0,2,4", "7"


def parse_id_list(text: str, what: str) -> list[int]:
    """Parses "3..60" (inclusive), "1,3,5" or a mix ("0..2,7") into a list of
    distinct non-negative ints in the given order.

    Raises ConvertError (message starting with `what`) for an empty element,
    a non-integer, an empty range (B < A), a negative id or an id listed
    twice."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ConvertError("%s: empty element in '%s'" % (what, text))
        if ".." in part:
            lo, _, hi = part.partition("..")
            try:
                lo, hi = int(lo), int(hi)  # type: ignore[assignment]
            except ValueError:
                raise ConvertError("%s: '%s' is not a range A..B of integers" % (what, part))
            if hi < lo:
                raise ConvertError("%s: range '%s' is empty (B < A)" % (what, part))
            out.extend(range(lo, hi + 1))  # type: ignore[call-overload, operator]
        else:
            try:
                out.append(int(part))
            except ValueError:
                raise ConvertError("%s: '%s' is not an integer" % (what, part))
    if any(v < 0 for v in out):
        raise ConvertError("%s: ids must be >= 0 (got '%s')" % (what, text))
    if len(set(out)) != len(out):
        raise ConvertError("%s: '%s' lists an id twice" % (what, text))
    return out


# ---------------------------------------------------------------------------
# Arrays


def _index_text(idx: Iterable[Any]) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def as_array(value: Any, where: str, name: str) -> np.ndarray:
    """numpy view of a tensor / array / nested list; ConvertError otherwise
    (another type, ragged lists, non-numeric dtype)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (list, tuple, int, float)):
        try:
            arr = np.asarray(value)
        except ValueError as e:  # ragged nested lists
            raise ConvertError("%s: %s is not a rectangular array (%s)" % (where, name, e))
        if arr.dtype == object:
            raise ConvertError("%s: %s is not a rectangular array of numbers" % (where, name))
    else:
        raise ConvertError("%s: %s is a %s, not an array/tensor" %
                           (where, name, type(value).__name__))
    if arr.dtype.kind not in "biuf":
        raise ConvertError("%s: %s has dtype %s, not a number type" % (where, name, arr.dtype))
    return arr


def check_shape(arr: np.ndarray, where: str, name: str, dims_text: str,
                ndim: int | None = None, shape: Sequence[int | None] | None = None) -> None:
    """Requires `ndim` dimensions and/or an exact `shape` (None entries are
    free). `dims_text` names the dimensions, e.g. "[steps, layers, experts]".
    Raises ConvertError when the array does not fit."""
    if ndim is not None and arr.ndim != ndim:
        raise ConvertError("%s: %s has shape %s, expected %d dimensions %s" %
                           (where, name, tuple(arr.shape), ndim, dims_text))
    if shape is not None:
        ok = arr.ndim == len(shape) and all(
            want is None or want == got for want, got in zip(shape, arr.shape))
        if not ok:
            want = tuple("*" if s is None else s for s in shape)
            raise ConvertError("%s: %s has shape %s, expected %s %s" %
                               (where, name, tuple(arr.shape), want, dims_text))


def check_counts(arr: np.ndarray, where: str, name: str) -> np.ndarray:
    """Counts must be finite, non-negative and integral. Returns int64.
    Raises ConvertError (naming the first bad index) for an empty array, a
    non-finite, negative or fractional value, or one above 2^53."""
    if arr.size == 0:
        raise ConvertError("%s: %s is empty (shape %s)" % (where, name, tuple(arr.shape)))
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            idx = np.argwhere(bad)[0]
            raise ConvertError("%s: %s%s = %r is not finite" %
                               (where, name, _index_text(idx), float(arr[tuple(idx)])))
    neg = arr < 0
    if neg.any():
        idx = np.argwhere(neg)[0]
        raise ConvertError("%s: %s%s = %s is negative; counts are >= 0" %
                           (where, name, _index_text(idx), arr[tuple(idx)].item()))
    if arr.dtype.kind == "f":
        frac = arr != np.floor(arr)
        if frac.any():
            idx = np.argwhere(frac)[0]
            raise ConvertError("%s: %s%s = %r is not an integer count" %
                               (where, name, _index_text(idx), float(arr[tuple(idx)])))
        if (arr > 2.0 ** 53).any():
            idx = np.argwhere(arr > 2.0 ** 53)[0]
            raise ConvertError("%s: %s%s = %r is too large to be an exact count" %
                               (where, name, _index_text(idx), float(arr[tuple(idx)])))
    return arr.astype(np.int64)


def check_finite(arr: np.ndarray, where: str, name: str) -> np.ndarray:
    """Router statistics: finite floats. Returns float64. Raises ConvertError
    (naming the first bad index) for a NaN or infinity."""
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise ConvertError("%s: %s%s = %r is not finite" %
                           (where, name, _index_text(idx), float(arr[tuple(idx)])))
    return arr


def check_int_array(arr: np.ndarray, where: str, name: str, lo: int | None = None,
                    hi: int | None = None, allow: Iterable[int] = ()) -> np.ndarray:
    """Integer-valued array with every value in [lo, hi] (or in `allow`);
    returns int64. Raises ConvertError (naming the first bad index) for a
    non-integer or out-of-range value."""
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.floor(np.where(np.isfinite(arr), arr, 0)))
        if bad.any():
            idx = np.argwhere(bad)[0]
            raise ConvertError("%s: %s%s = %r is not an integer" %
                               (where, name, _index_text(idx), float(arr[tuple(idx)])))
    arr = arr.astype(np.int64)
    bad = np.zeros(arr.shape, dtype=bool)
    if lo is not None:
        bad |= arr < lo
    if hi is not None:
        bad |= arr > hi
    for a in allow:
        bad &= arr != a
    if bad.any():
        idx = np.argwhere(bad)[0]
        rng = "[%s, %s]" % ("-inf" if lo is None else lo, "inf" if hi is None else hi)
        raise ConvertError("%s: %s%s = %d is out of range %s" %
                           (where, name, _index_text(idx), arr[tuple(idx)], rng))
    return arr


def scalar_int(value: Any, where: str, name: str) -> int:
    """`value` (a number, 0-d or one-element array/tensor) as an int.
    Raises ConvertError when it is not a single finite integer."""
    arr = as_array(value, where, name)
    if arr.size != 1:
        raise ConvertError("%s: %s must be a single integer, has shape %s" %
                           (where, name, tuple(arr.shape)))
    v = arr.reshape(()).item()
    if isinstance(v, float) and (not math.isfinite(v) or v != int(v)):
        raise ConvertError("%s: %s = %r is not an integer" % (where, name, v))
    return int(v)


# ---------------------------------------------------------------------------
# Files


def _torch_or_error(path: str, verb: str) -> ModuleType:
    try:
        import torch
    except ImportError:
        raise ConvertError(
            "%s: %s a torch file needs PyTorch, which is not installed for %s "
            "(Debian: apt-get install python3-torch); or use the .npz form of this input" %
            (path, verb, os.path.realpath(os.sys.executable)))  # type: ignore[attr-defined]
    return torch


def load_tensor_file(path: str) -> dict[str, Any]:
    """Loads a dict of arrays from .npz (numpy) or a torch file (.pt, .pth,
    anything else: torch.save). Torch files are read with weights_only=True
    (tensors, numbers, strings, lists and dicts only; no arbitrary pickles).

    Raises ConvertError when the file does not exist, is not a readable .npz
    / torch file, holds something other than a dict, or is a torch file and
    PyTorch is not installed."""
    if not os.path.exists(path):
        raise ConvertError("%s: no such file" % path)
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ConvertError("%s: not a readable .npz file (%s)" % (path, e))
    torch = _torch_or_error(path, "reading")
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except TypeError:  # torch < 1.13 has no weights_only
            data = torch.load(path, map_location="cpu")
    except Exception as e:  # torch raises many kinds for a bad file
        raise ConvertError("%s: not a readable torch file (%s: %s)" %
                           (path, type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
    if not isinstance(data, dict):
        raise ConvertError("%s: expected torch.save of a dict, found a %s" %
                           (path, type(data).__name__))
    return data


def save_torch(path: str, data: Mapping[str, Any]) -> None:
    """torch.save of `data` (numpy arrays as tensors). Raises ConvertError
    when PyTorch is not installed; what torch.save raises (OSError, ...)
    otherwise."""
    torch = _torch_or_error(path, "writing")
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
                for k, v in data.items()}, path)


def layer_id_array(value: Any, where: str, name: str, num_layers: int) -> list[int]:
    """The layer ids in `value` (an array of num_layers distinct non-negative
    integers) as a list; ConvertError naming `name` otherwise."""
    arr = as_array(value, where, name)
    check_shape(arr, where, name, "[layers]", shape=(num_layers,))
    ids = [int(v) for v in check_int_array(arr, where, name, lo=0)]
    if len(set(ids)) != len(ids):
        raise ConvertError("%s: %s lists a layer twice" % (where, name))
    return ids


def jsonl_objects(path: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Yields (line number, where, obj) for every non-blank line of a jsonl
    file, where = "PATH:LINE"; ConvertError for a file that cannot be opened, a line that is
    not JSON, or one that is not a JSON object."""
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise ConvertError("%s: cannot open (%s)" % (path, e.strerror))
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = "%s:%d" % (path, lineno)
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise ConvertError("%s: not valid JSON (%s)" % (where, e))
            if not isinstance(obj, dict):
                raise ConvertError("%s: expected a JSON object, found %s" %
                                   (where, type(obj).__name__))
            yield lineno, where, obj


def require_key(data: Mapping[str, Any], key: str, where: str, what: str) -> Any:
    """data[key]; ConvertError (listing the keys present) when it is missing."""
    if key not in data:
        raise ConvertError("%s: missing key '%s' (%s); keys present: %s" %
                           (where, key, what, ", ".join(sorted(map(str, data))) or "none"))
    return data[key]


# ---------------------------------------------------------------------------
# Trace writer (design section 7)


class TraceWriter:
    """Writes NAME.counts.csv[.gz] (and NAME.router.csv[.gz]) one step at a
    time. gzip when the path ends in .gz, with mtime 0 so that the same input
    gives the same bytes. Checks what the moecast reader checks: increasing
    steps, the same layers every step, non-negative integer counts, finite
    router values.

    The constructor raises ConvertError for no layers, no experts, a router
    path without router blocks, a missing output directory or a file that
    cannot be created."""

    first_step: int | None
    last_step: int | None

    def __init__(self, counts_path: str, router_path: str | None, layer_ids: Iterable[int],
                 num_experts: int, has_tokens: bool = False,
                 router_blocks: Iterable[str] = ()) -> None:
        if not layer_ids:
            raise ConvertError("no layers to write")
        if num_experts < 1:
            raise ConvertError("no experts to write")
        if router_path and not router_blocks:
            raise ConvertError("--router %s: the input has no router statistics" % router_path)
        self.layer_ids = list(layer_ids)
        self.num_experts = num_experts
        self.has_tokens = has_tokens
        self.router_blocks = tuple(router_blocks) if router_path else ()
        self.counts_path = counts_path
        self.router_path = router_path
        self.steps = 0
        self.assignments = 0
        self.tokens = 0
        self.first_step = None
        self.last_step = None
        self._files: list[Any] = []
        self._counts = self._open(counts_path)
        head = ["step", "layer"] + (["tokens"] if has_tokens else []) + \
               ["c%d" % e for e in range(num_experts)]
        self._counts.write(",".join(head) + "\n")
        self._router: io.TextIOWrapper | None = None
        if self.router_blocks:
            self._router = self._open(router_path)  # type: ignore[arg-type]
            head = ["step", "layer"]
            for b in self.router_blocks:
                head += ["%s%d" % (b, e) for e in range(num_experts)]
            self._router.write(",".join(head) + "\n")

    def _open(self, path: str) -> io.TextIOWrapper:
        d = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(d):
            raise ConvertError("%s: directory %s does not exist" % (path, d))
        try:
            raw = open(path, "wb")
        except OSError as e:
            raise ConvertError("%s: cannot create (%s)" % (path, e.strerror))
        self._files.append(raw)
        if path.endswith(".gz"):
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
            self._files.append(gz)
            return io.TextIOWrapper(gz, encoding="ascii", newline="\n")  # type: ignore[arg-type]
        return io.TextIOWrapper(raw, encoding="ascii", newline="\n")

    def write(self, step: int, counts: np.ndarray, tokens: int | None = None,
              router: Mapping[str, np.ndarray] | None = None) -> None:
        """counts: int array [L, M] in layer_ids order; tokens: int (per step)
        or None; router: dict block -> float array [L, M].
        Raises ConvertError when the step does not follow the last one or
        counts have the wrong shape; OSError when writing fails."""
        step = int(step)
        if self.last_step is not None and step <= self.last_step:
            raise ConvertError("step %d follows step %d: steps must increase" %
                               (step, self.last_step))
        L, M = len(self.layer_ids), self.num_experts
        if counts.shape != (L, M):
            raise ConvertError("step %d: counts have shape %s, expected %s" %
                               (step, counts.shape, (L, M)))
        lines = []
        for li, lid in enumerate(self.layer_ids):
            row = [str(step), str(lid)]
            if self.has_tokens:
                row.append(str(int(tokens)))  # type: ignore[arg-type]
            row.extend(str(int(v)) for v in counts[li])
            lines.append(",".join(row))
        self._counts.write("\n".join(lines) + "\n")
        if self._router is not None:
            lines = []
            for li, lid in enumerate(self.layer_ids):
                row = [str(step), str(lid)]
                for b in self.router_blocks:
                    row.extend("%.9g" % v for v in router[b][li])  # type: ignore[index]
                lines.append(",".join(row))
            self._router.write("\n".join(lines) + "\n")
        if self.first_step is None:
            self.first_step = step
        self.last_step = step
        self.steps += 1
        self.assignments += int(counts.sum())
        if tokens is not None:
            self.tokens += int(tokens)

    def close(self) -> None:
        """Closes the files. Raises ConvertError when no step was written
        (the files are left in place; call abort() to remove them)."""
        for f in (self._counts, self._router):
            if f is not None:
                f.close()  # flushes through the gzip layer
        for f in self._files:
            f.close()  # type: ignore[union-attr]  # a GzipFile leaves its file open
        if self.steps == 0:
            raise ConvertError("%s: no steps to write (every step was empty or dropped)" %
                               self.counts_path)

    def abort(self) -> None:
        """Closes and removes the files (after an error). Raises OSError only
        when removing a file fails."""
        for f in [self._counts, self._router] + self._files:
            try:
                if f is not None:
                    f.close()
            except Exception:  # already failing; removing is what matters
                pass
        for p in (self.counts_path, self.router_path if self._router else None):
            if p and os.path.exists(p):
                os.remove(p)

    def summary(self) -> str:
        """One line describing what was written."""
        return ("%s: %d steps (%s..%s), %d layers (ids %s), %d experts, %d assignments%s" %
                (self.counts_path, self.steps, self.first_step, self.last_step,
                 len(self.layer_ids), _ids_text(self.layer_ids), self.num_experts,
                 self.assignments,
                 (", router %s (%s)" % (self.router_path, ",".join(self.router_blocks))
                  if self.router_blocks else "")))


def _ids_text(ids: Sequence[int]) -> str:
    if len(ids) > 2 and list(ids) == list(range(ids[0], ids[0] + len(ids))):
        return "%d..%d" % (ids[0], ids[-1])
    if len(ids) > 8:
        return ",".join(map(str, ids[:4])) + ",...," + ",".join(map(str, ids[-2:]))
    return ",".join(map(str, ids))


ROUTER_BLOCKS: tuple[str, ...] = ("z", "p", "s")
