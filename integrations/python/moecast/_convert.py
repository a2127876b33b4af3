"""Checks user input and turns it into moecast.v1 messages.

Every check raises ValidationError with a message that names the step (by
position in the call and step number), the field and the offending value.
"""

import math
import numbers

import numpy as np

from ._stubs import pb
from .errors import ValidationError
from .types import Step

_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1


def check_int(name, value, minimum=None, maximum=_INT32_MAX):
    """An integral value (int or numpy integer, not bool) within [minimum, maximum]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValidationError("%s must be an integer, got %r (%s)" % (name, value, type(value).__name__))
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValidationError("%s must be >= %d, got %d" % (name, minimum, value))
    if maximum is not None and value > maximum:
        raise ValidationError("%s must be <= %d, got %d" % (name, maximum, value))
    return value


def check_float(name, value, minimum=None, maximum=None, open_min=False, open_max=False):
    """A finite real number within the given (open or closed) bounds."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValidationError("%s must be a number, got %r (%s)" % (name, value, type(value).__name__))
    value = float(value)
    if not math.isfinite(value):
        raise ValidationError("%s must be finite, got %r" % (name, value))
    if minimum is not None and (value < minimum or (open_min and value == minimum)):
        raise ValidationError("%s must be %s %g, got %g" % (name, ">" if open_min else ">=", minimum, value))
    if maximum is not None and (value > maximum or (open_max and value == maximum)):
        raise ValidationError("%s must be %s %g, got %g" % (name, "<" if open_max else "<=", maximum, value))
    return value


def check_int_list(name, values, minimum=None, maximum=_INT32_MAX):
    if values is None:
        return []
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValidationError("%s must be a list of integers, got %r" % (name, values))
    return [check_int("%s[%d]" % (name, i), v, minimum, maximum) for i, v in enumerate(values)]


def check_job_id(job_id, name="job_id"):
    """A non-empty string (the server checks the characters and length)."""
    if not isinstance(job_id, str):
        raise ValidationError("%s must be a str, got %r (%s)" % (name, job_id, type(job_id).__name__))
    if not job_id:
        raise ValidationError("%s must not be empty" % name)
    return job_id


def _spec_mismatch(message):
    """A ValidationError against the job's spec (the client may re-check a stale spec)."""
    error = ValidationError(message)
    error.spec_mismatch = True
    return error


def _as_matrix(what, value, label):
    """`value` as a float64 2-D array, or ValidationError."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValidationError("%s: %s is not a rectangular array of numbers (%s)" % (label, what, error))
    if a.ndim != 2:
        raise ValidationError("%s: %s must be 2-D [num_layers, num_experts], got shape %s"
                              % (label, what, tuple(a.shape)))
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValidationError("%s: %s is empty (shape %s)" % (label, what, tuple(a.shape)))
    bad = ~np.isfinite(a)
    if bad.any():
        l, e = np.argwhere(bad)[0]
        raise ValidationError("%s: %s[%d, %d] is %r; every value must be finite"
                              % (label, what, l, e, float(a[l, e])))
    return a


def _normalize(item, index):
    """A Step from a Step, a dict or a tuple (step, counts[, router_logits[, tokens]])."""
    if isinstance(item, Step):
        return item
    if isinstance(item, dict):
        unknown = set(item) - {"step", "counts", "router_logits", "tokens", "source"}
        if unknown:
            raise ValidationError("steps[%d]: unknown keys %s (expected step, counts, "
                                  "router_logits, tokens, source)" % (index, sorted(unknown)))
        if "step" not in item or "counts" not in item:
            raise ValidationError("steps[%d]: a step dict needs 'step' and 'counts', got keys %s"
                                  % (index, sorted(item)))
        return Step(**item)
    if isinstance(item, (tuple, list)) and 2 <= len(item) <= 4 and not isinstance(item[0], (list, tuple, np.ndarray)):
        return Step(*item)
    raise ValidationError("steps[%d]: expected a moecast.Step, a dict or a tuple "
                          "(step, counts[, router_logits[, tokens]]), got %s"
                          % (index, type(item).__name__))


def step_to_proto(item, index, spec=None, shape=None):
    """Checks one step and returns (pb.Step, its counts' shape).

    spec: the job's JobSpec when known (shape, top_k and sources are checked
    against it); shape: the shape every step of this call must have (the
    first step's), or None.
    """
    s = _normalize(item, index)
    step = check_int("steps[%d].step" % index, s.step, 0, _INT64_MAX)
    label = "step %d (steps[%d])" % (step, index)
    source = check_int("%s: source" % label, s.source, 0)
    counts = _as_matrix("counts", s.counts, label)
    if spec is not None:
        want = (spec.num_layers, spec.num_experts)
        if counts.shape != want:
            raise _spec_mismatch(
                "%s: counts has shape %s, but job '%s' has %d layers x %d experts (expected %s)"
                % (label, tuple(counts.shape), spec.job_id, want[0], want[1], want))
        if source >= spec.num_sources:
            raise _spec_mismatch("%s: source %d is out of range; job '%s' has %d source(s), "
                                  "so source must be in [0, %d)"
                                  % (label, source, spec.job_id, spec.num_sources, spec.num_sources))
    elif shape is not None and counts.shape != shape:
        raise ValidationError("%s: counts has shape %s, but the first step of this call has "
                              "shape %s; every step of a job has the same [layers, experts]"
                              % (label, tuple(counts.shape), tuple(shape)))
    if (counts < 0).any():
        l, e = np.argwhere(counts < 0)[0]
        raise ValidationError("%s: counts[%d, %d] = %g is negative; counts must be >= 0"
                              % (label, l, e, counts[l, e]))
    out = pb.Step(step=step, source=source)
    out.counts.extend(counts.ravel().tolist())
    if s.router_logits is not None:
        logits = _as_matrix("router_logits", s.router_logits, label)
        if logits.shape != counts.shape:
            raise ValidationError("%s: router_logits has shape %s but counts has shape %s; "
                                  "they must match" % (label, tuple(logits.shape), tuple(counts.shape)))
        out.router_logits.extend(logits.ravel().tolist())
    if s.tokens is not None:
        tokens = check_float("%s: tokens" % label, s.tokens, 0)
        if spec is not None:
            sums = counts.sum(axis=1)
            limit = tokens * spec.top_k
            over = np.nonzero(sums > limit * (1 + 1e-12))[0]
            if over.size:
                l = over[0]
                raise ValidationError(
                    "%s: layer %d has %g assignments, more than tokens x top_k = %g x %d = %g"
                    % (label, l, sums[l], tokens, spec.top_k, limit))
        out.tokens = tokens
    return out, counts.shape


def steps_from_arrays(counts, first_step, router_logits=None, tokens=None, source=0):
    """Steps first_step, first_step+1, ... from a [T, L, M] array (and [T, L, M] logits, [T] tokens)."""
    try:
        c = np.asarray(counts, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValidationError("counts is not a rectangular array of numbers (%s)" % error)
    if c.ndim != 3:
        raise ValidationError("counts must be a sequence of steps or a 3-D array [steps, layers, "
                              "experts]; got an array of shape %s" % (tuple(c.shape),))
    if first_step is None:
        raise ValidationError("first_step is required when steps is a 3-D array "
                              "(step numbers are first_step, first_step + 1, ...)")
    first = check_int("first_step", first_step, 0, _INT64_MAX)
    T = c.shape[0]
    logits = None
    if router_logits is not None:
        try:
            logits = np.asarray(router_logits, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValidationError("router_logits is not a rectangular array of numbers (%s)" % error)
        if logits.shape != c.shape:
            raise ValidationError("router_logits has shape %s but counts has shape %s; they must match"
                                  % (tuple(logits.shape), tuple(c.shape)))
    tok = None
    if tokens is not None:
        tok = np.asarray(tokens, dtype=np.float64).reshape(-1)
        if tok.shape != (T,):
            raise ValidationError("tokens must have one value per step (%d), got shape %s"
                                  % (T, tuple(np.shape(tokens))))
    return [Step(step=first + t, counts=c[t],
                 router_logits=None if logits is None else logits[t],
                 tokens=None if tok is None else float(tok[t]), source=source)
            for t in range(T)]


def check_order(protos, label_prefix=""):
    """Within one call, each source's step numbers must not decrease."""
    last = {}
    for i, p in enumerate(protos):
        prev = last.get(p.source)
        if prev is not None and p.step < prev[0]:
            raise ValidationError(
                "%ssteps out of order: step %d (steps[%d]) comes after step %d (steps[%d]) of "
                "source %d; steps of a source must increase" % (label_prefix, p.step, i, prev[0],
                                                                prev[1], p.source))
        last[p.source] = (p.step, i)


def matrix_of_ints(name, value, minimum):
    """A flattened list of ints (from a 1-D or 2-D array-like), each >= minimum."""
    try:
        a = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValidationError("%s is not an array of integers (%s)" % (name, error))
    if a.ndim not in (1, 2):
        raise ValidationError("%s must be 1-D or 2-D [layers, slots], got shape %s" % (name, a.shape))
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise ValidationError("%s must hold integers, got dtype %s" % (name, a.dtype))
    if a.size and a.min() < minimum:
        idx = tuple(int(i) for i in np.argwhere(a < minimum)[0])
        raise ValidationError("%s%s = %d is below %d" % (name, list(idx), int(a[idx]), minimum))
    return a, [int(v) for v in a.reshape(-1)]
