"""PEP 517 build backend of the moecast Python package (in-tree, no downloads).

`pip install integrations/python` (or `pip wheel`) calls build_wheel here. It
builds the native parts with the project's own Bazel build,

    bazel build //integrations/python:native

(the extension module `_moecast_ext.so`, pybind11 over the C API with the
engine linked in statically, and the protobuf/gRPC stubs generated from
proto/ by the protoc the C++ build uses), then writes the wheel itself with
zipfile: the sources under moecast/, the extension, the stubs, and the
.dist-info (METADATA, WHEEL, entry_points.txt, RECORD). Nothing is fetched,
so pip's build isolation needs nothing (`[build-system] requires = []`).

MOECAST_PREBUILT=DIR skips Bazel and takes the native parts from DIR, laid
out as Bazel writes them (DIR/_moecast_ext.so, DIR/moecast/_proto/*.py: the
bazel-bin/integrations/python folder, or the same folder in a test's
runfiles). MOECAST_BAZEL=PATH names the bazel binary (default: `bazel` on
PATH).

Errors raise BackendError (a RuntimeError) saying what is missing or wrong:
not a moecast checkout, the Bazel build failing (its output is shown), an
interpreter other than the Python 3.11 the extension is compiled for.
"""

import base64
import hashlib
import io
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(HERE)            # integrations/python
REPO_ROOT = os.path.dirname(os.path.dirname(PACKAGE_ROOT))
BAZEL_TARGET = "//integrations/python:native"
BAZEL_PACKAGE = "integrations/python"
# The extension is compiled against these headers (WORKSPACE: system_python).
EXT_PYTHON = (3, 11)
EXT_NAME = "_moecast_ext"
STUB_FILES = ("__init__.py", "moecast_pb2.py", "moecast_pb2_grpc.py")


class BackendError(RuntimeError):
    """The wheel cannot be built; the message says why."""


def _project():
    path = os.path.join(PACKAGE_ROOT, "pyproject.toml")
    with open(path, "rb") as f:
        data = tomllib.load(f)
    project = data.get("project")
    if not isinstance(project, dict) or "name" not in project or "version" not in project:
        raise BackendError("%s: [project] needs name and version" % path)
    return project


def _check_interpreter():
    if sys.implementation.name != "cpython" or sys.version_info[:2] != EXT_PYTHON:
        raise BackendError(
            "the moecast extension is built against CPython %d.%d's headers (Debian 12's "
            "python3-dev); this is %s %d.%d: install with /usr/bin/python3 or a venv made "
            "from it" % (EXT_PYTHON + (sys.implementation.name,) + sys.version_info[:2]))


def _bazel_build():
    """Runs the Bazel build; returns the folder holding its outputs."""
    if not os.path.isfile(os.path.join(REPO_ROOT, "WORKSPACE")):
        raise BackendError(
            "%s is not inside a moecast checkout (no WORKSPACE at %s): the native parts are "
            "built by the project's Bazel build; build from the checkout, or set "
            "MOECAST_PREBUILT to a folder with _moecast_ext.so and moecast/_proto/"
            % (PACKAGE_ROOT, REPO_ROOT))
    bazel = os.environ.get("MOECAST_BAZEL", "bazel")
    cmd = [bazel, "build", BAZEL_TARGET]
    print("moecast build: %s (in %s)" % (" ".join(cmd), REPO_ROOT), file=sys.stderr)
    try:
        build = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError:
        raise BackendError("bazel not found (%s); run third_party/install_deps.sh" % bazel)
    if build.returncode != 0:
        raise BackendError("`%s` failed (exit %d):\n%s"
                           % (" ".join(cmd), build.returncode, build.stdout[-20000:]))
    info = subprocess.run([bazel, "info", "bazel-bin"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    if info.returncode != 0:
        raise BackendError("`bazel info bazel-bin` failed:\n%s" % info.stderr[-5000:])
    return os.path.join(info.stdout.strip(), BAZEL_PACKAGE)


def _native_dir():
    prebuilt = os.environ.get("MOECAST_PREBUILT")
    native = prebuilt if prebuilt else _bazel_build()
    ext = os.path.join(native, EXT_NAME + ".so")
    if not os.path.isfile(ext):
        raise BackendError("the extension module %s is missing%s"
                           % (ext, " (MOECAST_PREBUILT)" if prebuilt else ""))
    for name in STUB_FILES:
        path = os.path.join(native, "moecast", "_proto", name)
        if not os.path.isfile(path):
            raise BackendError("the generated stub %s is missing%s"
                               % (path, " (MOECAST_PREBUILT)" if prebuilt else ""))
    return native


def _sources():
    """(archive name, path) of every source file of the package."""
    out = []
    root = os.path.join(PACKAGE_ROOT, "moecast")
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, PACKAGE_ROOT)
        # Generated stubs come from the Bazel build, never from the folder.
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and
                             not (d == "_proto" and rel_dir == "moecast"))
        for name in sorted(filenames):
            if name.endswith(".py") or name == "py.typed" or name.endswith(".pyi"):
                out.append((os.path.join(rel_dir, name).replace(os.sep, "/"),
                            os.path.join(dirpath, name)))
    return out


def _wheel_tag():
    impl = "cp%d%d" % sys.version_info[:2]
    platform = re.sub(r"[^A-Za-z0-9]", "_", sysconfig.get_platform())
    return "%s-%s-%s" % (impl, impl, platform)


def _metadata(project):
    lines = [
        "Metadata-Version: 2.1",
        "Name: %s" % project["name"],
        "Version: %s" % project["version"],
    ]
    if project.get("description"):
        lines.append("Summary: %s" % project["description"])
    if project.get("requires-python"):
        lines.append("Requires-Python: %s" % project["requires-python"])
    lic = project.get("license")
    if isinstance(lic, dict) and lic.get("text"):
        lines.append("License: %s" % lic["text"])
    for dep in project.get("dependencies", []):
        lines.append("Requires-Dist: %s" % dep)
    for extra, deps in sorted(project.get("optional-dependencies", {}).items()):
        lines.append("Provides-Extra: %s" % extra)
        for dep in deps:
            lines.append('Requires-Dist: %s; extra == "%s"' % (dep, extra))
    readme = os.path.join(PACKAGE_ROOT, "README.md")
    body = ""
    if os.path.isfile(readme):
        lines.append("Description-Content-Type: text/markdown")
        with open(readme, encoding="utf-8") as f:
            body = f.read()
    return "\n".join(lines) + "\n\n" + body


def _entry_points(project):
    scripts = project.get("scripts", {})
    if not scripts:
        return None
    return "[console_scripts]\n" + "".join(
        "%s = %s\n" % (name, target) for name, target in sorted(scripts.items()))


class _WheelWriter:
    """A wheel's zip with its RECORD (sha256 of every file)."""

    def __init__(self, path):
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        self.records = []

    def add_bytes(self, arcname, data, executable=False):
        info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = ((0o755 if executable else 0o644) | 0o100000) << 16
        self.zip.writestr(info, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        self.records.append("%s,sha256=%s,%d" % (arcname, digest.decode(), len(data)))

    def add_file(self, arcname, path, executable=False):
        with open(path, "rb") as f:
            self.add_bytes(arcname, f.read(), executable)

    def close(self, record_name):
        self.records.append("%s,," % record_name)
        self.zip.writestr(zipfile.ZipInfo(record_name, date_time=(1980, 1, 1, 0, 0, 0)),
                          "\n".join(self.records) + "\n")
        self.zip.close()


def _write_wheel(wheel_directory):
    _check_interpreter()
    project = _project()
    name = re.sub(r"[-_.]+", "_", project["name"]).lower()
    version = project["version"]
    native = _native_dir()
    tag = _wheel_tag()
    wheel_name = "%s-%s-%s.whl" % (name, version, tag)
    dist_info = "%s-%s.dist-info" % (name, version)
    os.makedirs(wheel_directory, exist_ok=True)
    path = os.path.join(wheel_directory, wheel_name)
    tmp = path + ".part"
    writer = _WheelWriter(tmp)
    try:
        for arcname, src in _sources():
            writer.add_file(arcname, src)
        for stub in STUB_FILES:
            writer.add_file("moecast/_proto/" + stub, os.path.join(native, "moecast", "_proto", stub))
        writer.add_file("moecast/%s%s" % (EXT_NAME, sysconfig.get_config_var("EXT_SUFFIX")),
                        os.path.join(native, EXT_NAME + ".so"), executable=True)
        writer.add_bytes(dist_info + "/METADATA", _metadata(project).encode("utf-8"))
        writer.add_bytes(dist_info + "/WHEEL", (
            "Wheel-Version: 1.0\nGenerator: moecast_backend\nRoot-Is-Purelib: false\n"
            "Tag: %s\n" % tag).encode())
        entry_points = _entry_points(project)
        if entry_points:
            writer.add_bytes(dist_info + "/entry_points.txt", entry_points.encode())
        writer.add_bytes(dist_info + "/top_level.txt", b"moecast\n")
        writer.close(dist_info + "/RECORD")
    except BaseException:
        writer.zip.close()
        os.unlink(tmp)
        raise
    os.replace(tmp, path)
    return wheel_name


# --- PEP 517 hooks ----------------------------------------------------------

def get_requires_for_build_wheel(config_settings=None):
    """Nothing: the backend uses only the standard library (and Bazel)."""
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    """Builds the native parts with Bazel and writes the wheel; returns its file name.

    Raises BackendError (not a checkout, Bazel failed, wrong interpreter,
    a native output missing).
    """
    return _write_wheel(wheel_directory)


def get_requires_for_build_sdist(config_settings=None):
    return []


def build_sdist(sdist_directory, config_settings=None):
    """Not provided: the engine is built by the moecast checkout's Bazel build, so an
    sdist of this folder alone could not build. Raises BackendError."""
    raise BackendError("moecast has no sdist: build the wheel from a moecast checkout "
                       "(pip install integrations/python, or pip wheel integrations/python)")


if __name__ == "__main__":  # python3 moecast_backend.py OUT_DIR: write a wheel
    if len(sys.argv) != 2:
        sys.exit("usage: moecast_backend.py WHEEL_DIRECTORY")
    try:
        print(os.path.join(sys.argv[1], build_wheel(sys.argv[1])))
    except BackendError as e:
        sys.exit("moecast build: %s" % e)
