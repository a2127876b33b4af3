"""Exceptions of the moecast client.

Every failure of a call surfaces as MoecastError, carrying the gRPC status code
name ("NOT_FOUND", "INVALID_ARGUMENT", ...) and the server's message. Input the
client rejects before sending anything raises ValidationError, a MoecastError
with code "INVALID_ARGUMENT" that is also a ValueError.
"""

import grpc

# google.rpc.Code numbers (as in StepResult.error_code) -> names.
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def code_name(number):
    """The gRPC status code name of a google.rpc.Code number ("CODE_<n>" if unknown)."""
    return _CODE_NAMES.get(int(number), "CODE_%d" % int(number))


class MoecastError(Exception):
    """A moecast call failed.

    Attributes:
      code: the gRPC status code name, e.g. "NOT_FOUND".
      message: the server's (or the client's) message.
      method: the RPC, e.g. "Forecast", or None.
      local: True when the client rejected the input before calling.
    """

    local = False

    def __init__(self, code, message, method=None):
        self.code = code
        self.message = message
        self.method = method
        prefix = "%s: " % method if method else ""
        super().__init__("%s%s: %s" % (prefix, code, message))

    @property
    def status_code(self):
        """The grpc.StatusCode, or None for a name grpc does not know."""
        return getattr(grpc.StatusCode, self.code, None)

    @classmethod
    def from_rpc_error(cls, error, method):
        """Wraps a grpc.RpcError raised by a call of `method`."""
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

    def __init__(self, message, method=None):
        super().__init__("INVALID_ARGUMENT", message, method)
