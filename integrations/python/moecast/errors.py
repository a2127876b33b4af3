"""Exceptions of the moecast client.

Every failure of a call surfaces as MoecastError, carrying the gRPC status code
name ("NOT_FOUND", "INVALID_ARGUMENT", ...) and the server's message. Input the
client rejects before sending anything raises ValidationError, a MoecastError
with code "INVALID_ARGUMENT" that is also a ValueError.
"""

from __future__ import annotations

import grpc

# google.rpc.Code numbers (as in StepResult.error_code) -> names.
_CODE_NAMES: dict[int, str] = {code.value[0]: code.name for code in grpc.StatusCode}


def code_name(number: int) -> str:
    """The gRPC status code name of a google.rpc.Code number ("CODE_<n>" if unknown).
    Raises TypeError/ValueError (from int()) when `number` is not an integer."""
    return _CODE_NAMES.get(int(number), "CODE_%d" % int(number))


class MoecastError(Exception):
    """A moecast call failed.

    Attributes:
      code: the gRPC status code name, e.g. "NOT_FOUND".
      message: the server's (or the client's) message.
      method: the RPC, e.g. "Forecast", or None.
      local: True when the client rejected the input before calling.
    """

    local: bool = False
    code: str
    message: str
    method: str | None

    def __init__(self, code: str, message: str, method: str | None = None) -> None:
        self.code = code
        self.message = message
        self.method = method
        prefix = "%s: " % method if method else ""
        super().__init__("%s%s: %s" % (prefix, code, message))

    @property
    def status_code(self) -> grpc.StatusCode | None:
        """The grpc.StatusCode, or None for a name grpc does not know."""
        return getattr(grpc.StatusCode, self.code, None)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, method: str | None) -> MoecastError:
        """Wraps a grpc.RpcError raised by a call of `method` (returns the
        error, raises nothing; an error that is not a grpc.Call gives code
        UNKNOWN)."""
        try:
            code = error.code()
            details = error.details()
        except Exception:  # not a grpc.Call (should not happen)
            return cls("UNKNOWN", str(error), method)
        name = code.name if code is not None else "UNKNOWN"
        return cls(name, details or "", method)


class ValidationError(MoecastError, ValueError):
    """The client rejected the input before sending it (code INVALID_ARGUMENT)."""

    local = True

    def __init__(self, message: str, method: str | None = None) -> None:
        super().__init__("INVALID_ARGUMENT", message, method)


class EngineError(MoecastError):
    """A call of the in-process engine (moecast.engine.Engine) failed.

    Attributes (besides MoecastError's):
      code: the absl::StatusCode name, e.g. "NOT_FOUND" (the same names as gRPC's).
      code_value: the absl::StatusCode number, e.g. 5.
      method: the Engine method, e.g. "ingest".
    """

    code_value: int | None

    def __init__(self, code: str, message: str, method: str | None = None,
                 code_value: int | None = None) -> None:
        super().__init__(code, message, method)
        self.code_value = code_value


class EngineInvalidArgument(EngineError, ValueError):
    """The engine (or the binding, before calling it) rejected an argument
    (INVALID_ARGUMENT): a wrong shape or dtype, a value out of range, ..."""


def engine_error(code_value: int, code: str, message: str, method: str | None) -> EngineError:
    """The exception for a failed engine call (used by the extension module)."""
    cls = EngineInvalidArgument if code == "INVALID_ARGUMENT" else EngineError
    return cls(code, message, method, code_value=int(code_value))
