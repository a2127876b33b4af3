"""Imports the generated moecast.v1 stubs (moecast_client/_proto/).

They are generated, never checked in: by the Bazel genrule
//integrations/python:moecast_py_stubs, or outside Bazel by
integrations/python/generate_stubs.sh.
"""

try:
    from ._proto import moecast_pb2 as pb
    from ._proto import moecast_pb2_grpc as pb_grpc
except ImportError as error:  # pragma: no cover - depends on the install
    missing = getattr(error, "name", None) or ""
    if missing.startswith("moecast_client._proto") or missing == "moecast_pb2":
        raise ImportError(
            "moecast_client: the generated stubs moecast_client/_proto/moecast_pb2.py and "
            "moecast_pb2_grpc.py are missing; run integrations/python/generate_stubs.sh "
            "(needs protobuf-compiler and protobuf-compiler-grpc)") from error
    raise ImportError(
        "moecast_client: importing the generated stubs failed (%s); they need python3-grpcio "
        "and python3-protobuf >= 3.20" % error) from error

__all__ = ["pb", "pb_grpc"]
