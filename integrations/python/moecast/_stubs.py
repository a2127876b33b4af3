"""Imports the generated moecast.v1 stubs (moecast/_proto/).

They are generated when the wheel is built (the Bazel genrule
//integrations/python:moecast_py_stubs), never checked in.
"""

try:
    from ._proto import moecast_pb2 as pb
    from ._proto import moecast_pb2_grpc as pb_grpc
except ImportError as error:  # pragma: no cover - depends on the install
    missing = getattr(error, "name", None) or ""
    if missing.startswith("moecast._proto") or missing == "moecast_pb2":
        raise ImportError(
            "moecast: the generated stubs moecast/_proto/moecast_pb2.py and "
            "moecast_pb2_grpc.py are missing: moecast is imported from a source tree, not "
            "from an installed wheel (pip install integrations/python)") from error
    raise ImportError(
        "moecast: importing the generated stubs failed (%s); they need python3-grpcio "
        "and python3-protobuf >= 3.20" % error) from error

__all__ = ["pb", "pb_grpc"]
