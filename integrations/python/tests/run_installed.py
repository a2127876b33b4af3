"""Runs one unittest module against the installed moecast package.

    run_installed.py TEST_MODULE.py

Checks first that `import moecast` resolves to the venv's site-packages (not
a source tree), then runs the module's tests and, under `bazel test`, writes
each case to $XML_OUTPUT_FILE (JUnit XML) so that tests/summarize.py counts
cases. Exit status 0 only when every case passed or was skipped.
"""

import importlib.util
import os
import sys
import time
import unittest
import xml.etree.ElementTree as ET


class _Recorder(unittest.TextTestResult):
    """A TextTestResult that also keeps (name, seconds, outcome, detail) per case."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cases = []
        self._start = 0.0

    def startTest(self, test):
        self._start = time.monotonic()
        super().startTest(test)

    def _add(self, test, outcome, detail=""):
        self.cases.append((test.id(), time.monotonic() - self._start, outcome, detail))

    def addSuccess(self, test):
        super().addSuccess(test)
        self._add(test, "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._add(test, "failure", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        self._add(test, "error", self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._add(test, "skipped", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._add(test, "passed")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._add(test, "failure", "unexpected success")


def _write_xml(path, suite_name, cases):
    suite = ET.Element("testsuite", name=suite_name, tests=str(len(cases)),
                       failures=str(sum(c[2] == "failure" for c in cases)),
                       errors=str(sum(c[2] == "error" for c in cases)))
    for name, seconds, outcome, detail in cases:
        case = ET.SubElement(suite, "testcase", name=name, time="%.3f" % seconds)
        if outcome in ("failure", "error", "skipped"):
            ET.SubElement(case, outcome, message=detail.splitlines()[-1] if detail else "").text = detail
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: run_installed.py TEST_MODULE.py")
    path = os.path.abspath(sys.argv[1])
    import moecast
    where = os.path.realpath(moecast.__file__)
    venv = os.environ.get("MOECAST_VENV")
    if venv and not where.startswith(os.path.realpath(venv) + os.sep):
        sys.exit("FAILED: moecast was imported from %s, not from the venv %s" % (where, venv))
    print("moecast %s imported from %s" % (moecast.__version__, where), flush=True)

    name = os.path.splitext(os.path.basename(path))[0]
    sys.argv = [path]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    runner = unittest.TextTestRunner(verbosity=2, resultclass=_Recorder, stream=sys.stderr)
    result = runner.run(suite)
    xml_path = os.environ.get("XML_OUTPUT_FILE")
    if xml_path:
        _write_xml(xml_path, name, result.cases)
    if result.testsRun == 0:
        print("FAILED: %s has no tests" % name, file=sys.stderr)
        return 1
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
