"""The moecast wheel as installed into a fresh venv (run_test.sh built it
with pip through the package's own backend and installed it offline):

- the installed files: the sources, py.typed, the generated stubs, the
  extension module named for this interpreter, metadata with the
  dependencies, RECORD hashes, the console scripts;
- `import moecast` (and every public module) from an unrelated directory,
  resolving to site-packages;
- the console scripts run (`--help`, and a bad flag exits 2);
- the backend's own errors: no sdist, a MOECAST_PREBUILT folder without the
  native parts, an interpreter it does not build for.
"""

import base64
import csv
import hashlib
import importlib
import importlib.metadata as md
import os
import subprocess
import sys
import sysconfig
import tempfile
import unittest
import zipfile

import moecast

WHEEL = os.environ["MOECAST_WHEEL"]
VENV = os.environ["MOECAST_VENV"]


class InstalledLayoutTest(unittest.TestCase):
    def test_package_resolves_to_site_packages(self):
        site = os.path.realpath(sysconfig.get_paths()["purelib"])
        self.assertTrue(os.path.realpath(moecast.__file__).startswith(site + os.sep),
                        moecast.__file__)
        self.assertTrue(os.path.realpath(sys.prefix).startswith(os.path.realpath(VENV)))

    def test_every_module_imports(self):
        for name in ("moecast.client", "moecast.engine", "moecast.errors", "moecast.types",
                     "moecast.traces", "moecast.trace_writer", "moecast.torch_recorder",
                     "moecast.serving", "moecast.serving.planner", "moecast.serving.vllm",
                     "moecast.serving.sglang", "moecast.converters", "moecast.converters.cli",
                     "moecast.converters.sources", "moecast.converters.routing",
                     "moecast.converters.placement", "moecast.stream_trace",
                     "moecast.bench_ingest", "moecast._proto.moecast_pb2",
                     "moecast._proto.moecast_pb2_grpc"):
            importlib.import_module(name)
        self.assertIs(moecast.Engine, importlib.import_module("moecast.engine").Engine)

    def test_typed_stubs_and_extension_are_installed(self):
        root = os.path.dirname(moecast.__file__)
        self.assertTrue(os.path.isfile(os.path.join(root, "py.typed")))
        ext = os.path.join(root, "_moecast_ext" + sysconfig.get_config_var("EXT_SUFFIX"))
        self.assertTrue(os.path.isfile(ext), ext)
        from moecast import _moecast_ext
        self.assertEqual(os.path.realpath(_moecast_ext.__file__), os.path.realpath(ext))
        self.assertEqual(_moecast_ext.abi_version(), _moecast_ext.HEADER_ABI_VERSION)
        from moecast._proto import moecast_pb2
        self.assertEqual(moecast_pb2.Step.__module__, "moecast._proto.moecast_pb2")

    def test_extension_exports_only_its_init(self):
        from moecast import _moecast_ext
        out = subprocess.run(["nm", "-D", "--defined-only", _moecast_ext.__file__],
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        names = sorted(line.split()[-1] for line in out.splitlines() if line.strip())
        self.assertEqual(names, ["PyInit__moecast_ext"])

    def test_metadata_and_entry_points(self):
        dist = md.distribution("moecast")
        self.assertEqual(dist.version, moecast.__version__)
        requires = dist.requires or []
        for dep in ("numpy", "grpcio", "protobuf"):
            self.assertTrue(any(r.startswith(dep) for r in requires), requires)
        scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
        self.assertEqual(scripts, {
            "moecast-convert": "moecast.converters.cli:main",
            "moecast-stream-trace": "moecast.stream_trace:console_main",
            "moecast-bench-ingest": "moecast.bench_ingest:main",
        })

    def test_wheel_record_matches_its_files(self):
        with zipfile.ZipFile(WHEEL) as z:
            names = set(z.namelist())
            record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
            rows = list(csv.reader(z.read(record_name).decode().splitlines()))
            self.assertEqual({r[0] for r in rows}, names)
            for path, digest, size in rows:
                if path == record_name:
                    continue
                data = z.read(path)
                want = "sha256=" + base64.urlsafe_b64encode(
                    hashlib.sha256(data).digest()).rstrip(b"=").decode()
                self.assertEqual((digest, int(size)), (want, len(data)), path)
            self.assertFalse(any("__pycache__" in n or n.startswith("tests/") for n in names))
            self.assertIn("moecast/py.typed", names)

    def test_console_scripts_run(self):
        for script in ("moecast-convert", "moecast-stream-trace", "moecast-bench-ingest"):
            exe = os.path.join(VENV, "bin", script)
            p = subprocess.run([exe, "--help"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stdout)
            self.assertIn("usage: %s" % script, p.stdout)
            bad = subprocess.run([exe, "--no-such-flag"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, timeout=120)
            self.assertEqual(bad.returncode, 2, bad.stdout)
            self.assertIn("%s: error:" % script, bad.stdout)

    def test_import_from_another_directory_with_plain_python(self):
        with tempfile.TemporaryDirectory() as d:
            p = subprocess.run([os.path.join(VENV, "bin", "python"), "-c",
                                "import moecast, moecast.engine; print(moecast.__file__)"],
                               cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
            self.assertEqual(p.returncode, 0, p.stdout)
            self.assertIn(os.path.realpath(VENV), os.path.realpath(p.stdout.strip()))


class BackendErrorTest(unittest.TestCase):
    """The PEP 517 backend's errors (the module is in the test's runfiles)."""

    @classmethod
    def setUpClass(cls):
        backend_dir = os.path.join(os.environ["MOECAST_SOURCE_ROOT"], "build_backend")
        sys.path.insert(0, backend_dir)
        try:
            cls.backend = importlib.import_module("moecast_backend")
        finally:
            sys.path.remove(backend_dir)

    def test_no_sdist(self):
        with self.assertRaisesRegex(self.backend.BackendError, "moecast has no sdist"):
            self.backend.build_sdist(tempfile.gettempdir())
        self.assertEqual(self.backend.get_requires_for_build_wheel(), [])

    def test_prebuilt_folder_without_native_parts(self):
        with tempfile.TemporaryDirectory() as d:
            old = os.environ.get("MOECAST_PREBUILT")
            os.environ["MOECAST_PREBUILT"] = d
            try:
                with self.assertRaisesRegex(self.backend.BackendError,
                                            r"extension module .*_moecast_ext\.so is missing"):
                    self.backend.build_wheel(d)
                open(os.path.join(d, "_moecast_ext.so"), "wb").close()
                with self.assertRaisesRegex(self.backend.BackendError,
                                            r"generated stub .*moecast/_proto/__init__\.py is missing"):
                    self.backend.build_wheel(d)
            finally:
                if old is None:
                    del os.environ["MOECAST_PREBUILT"]
                else:
                    os.environ["MOECAST_PREBUILT"] = old
            self.assertEqual([n for n in os.listdir(d) if n.endswith(".whl")], [])

    def test_other_interpreter_is_refused(self):
        saved = self.backend.EXT_PYTHON
        self.backend.EXT_PYTHON = (3, 99)
        try:
            with self.assertRaisesRegex(self.backend.BackendError,
                                        r"built against CPython 3\.99's headers"):
                self.backend.build_wheel(tempfile.gettempdir())
        finally:
            self.backend.EXT_PYTHON = saved


if __name__ == "__main__":
    unittest.main(verbosity=2)
