"""Test helpers: a real moecastd on 127.0.0.1 with an ephemeral port, TLS
certificates made with /usr/bin/openssl, and synthetic expert loads.

The moecastd binary comes from $MOECASTD (set by run_test.sh from the Bazel
runfiles) or the first command line argument.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

_LISTENING = re.compile(r"listening on (\S+) \(port (\d+)\)")


def moecastd_binary():
    path = os.environ.get("MOECASTD")
    if not path:
        raise RuntimeError("MOECASTD is not set: run the test through run_test.sh (bazel test "
                           "//integrations/python:...) or set MOECASTD to a moecastd binary")
    if not os.access(path, os.X_OK):
        raise RuntimeError("MOECASTD=%s is not an executable file" % path)
    return path


def scratch_dir():
    """A fresh directory under $TEST_TMPDIR (Bazel) or the system temp dir."""
    return tempfile.mkdtemp(prefix="moecast_py_", dir=os.environ.get("TEST_TMPDIR"))


class MoecastdError(RuntimeError):
    pass


class Moecastd:
    """moecastd --listen 127.0.0.1:0 [args], started and stopped by a test.

        with Moecastd(["--max_jobs", "2"]) as server:
            Client(server.target)
    """

    def __init__(self, args=(), start_timeout=30.0):
        self.args = [str(a) for a in args]
        self.start_timeout = start_timeout
        self.port = None
        self.proc = None
        self._lines = []
        self._lock = threading.Lock()
        self._reader = None

    @property
    def target(self):
        return "127.0.0.1:%d" % self.port

    def output(self):
        with self._lock:
            return "".join(self._lines)

    def _read(self):
        for line in self.proc.stdout:
            with self._lock:
                self._lines.append(line)

    def start(self):
        cmd = [moecastd_binary(), "--listen", "127.0.0.1:0"] + self.args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            m = _LISTENING.search(self.output())
            if m:
                self.port = int(m.group(2))
                if self.port <= 0:
                    raise MoecastdError("moecastd printed port %d: %s" % (self.port, self.output()))
                return self
            if self.proc.poll() is not None:
                self._reader.join(5)
                self.proc.stdout.close()
                raise MoecastdError(
                    "moecastd %s exited with status %d before listening; output:\n%s"
                    % (" ".join(self.args), self.proc.returncode, self.output()))
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        self._reader.join(5)
        self.proc.stdout.close()
        raise MoecastdError("moecastd %s printed no 'listening on' line within %g s; output:\n%s"
                            % (" ".join(self.args), self.start_timeout, self.output()))

    def stop(self, timeout=20.0):
        """SIGTERM; returns the exit status (killing it after `timeout` s)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._reader.join(5)
            self.proc.stdout.close()
            raise MoecastdError("moecastd did not exit within %g s of SIGTERM; output:\n%s"
                                % (timeout, self.output()))
        self._reader.join(5)
        self.proc.stdout.close()
        return rc

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def run_moecastd(args, timeout=20.0):
    """Runs moecastd with `args` expecting it to exit (bad flags); returns (status, output)."""
    p = subprocess.run([moecastd_binary()] + [str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return p.returncode, p.stdout


# --- TLS ---------------------------------------------------------------------

OPENSSL = "/usr/bin/openssl"


def _openssl(args, cwd):
    p = subprocess.run([OPENSSL] + args, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed (%d):\n%s" % (" ".join(args), p.returncode, p.stdout))


def make_ca(directory, name):
    """A self-signed CA: returns (cert path, key path)."""
    cert, key = os.path.join(directory, name + ".pem"), os.path.join(directory, name + ".key")
    _openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
              "-keyout", key, "-out", cert, "-subj", "/CN=%s" % name,
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], directory)
    return cert, key


def make_leaf(directory, name, ca, server):
    """A certificate signed by `ca` (cert, key): for 127.0.0.1/localhost when
    server, else a client certificate. Returns (cert path, key path)."""
    cert, key = os.path.join(directory, name + ".pem"), os.path.join(directory, name + ".key")
    csr, ext = os.path.join(directory, name + ".csr"), os.path.join(directory, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\n")
        f.write("keyUsage=critical,digitalSignature,keyEncipherment\n")
        if server:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
            f.write("extendedKeyUsage=serverAuth\n")
        else:
            f.write("extendedKeyUsage=clientAuth\n")
    _openssl(["req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout", key, "-out", csr,
              "-subj", "/CN=%s" % ("localhost" if server else name)], directory)
    _openssl(["x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
              "-days", "2", "-sha256", "-out", cert, "-extfile", ext], directory)
    return cert, key


class Certificates:
    """ca, server (signed by ca), client (signed by ca), other_ca and
    other_client (signed by other_ca): each a (cert path, key path)."""

    def __init__(self, directory=None):
        if not os.access(OPENSSL, os.X_OK):
            raise RuntimeError("%s is missing (apt-get install openssl)" % OPENSSL)
        self.dir = directory or scratch_dir()
        self.ca = make_ca(self.dir, "test-ca")
        self.server = make_leaf(self.dir, "server", self.ca, server=True)
        self.client = make_leaf(self.dir, "client", self.ca, server=False)
        self.other_ca = make_ca(self.dir, "other-ca")
        self.other_client = make_leaf(self.dir, "other-client", self.other_ca, server=False)


# --- synthetic loads -----------------------------------------------------------


def sample_counts(rng, probs, assignments):
    """[L, M] multinomial counts with `assignments` per layer from [L, M] probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    return np.stack([rng.multinomial(assignments, p / p.sum()) for p in probs]).astype(np.float64)


def stationary_steps(rng, probs, first, n, assignments=2048):
    """(step, counts) for steps first..first+n-1 drawn from fixed probabilities."""
    return [(first + t, sample_counts(rng, probs, assignments)) for t in range(n)]


def drifting_steps(rng, start_probs, end_probs, first, n, period=200, assignments=2048):
    """Steps whose probabilities move linearly start -> end -> start ... (triangle
    wave with the given half-period): a drift the state classifier calls
    transient."""
    a, b = np.asarray(start_probs, float), np.asarray(end_probs, float)
    out = []
    for t in range(n):
        phase = (t % (2 * period)) / period
        w = phase if phase <= 1 else 2 - phase
        out.append((first + t, sample_counts(rng, (1 - w) * a + w * b, assignments)))
    return out


def log(*args):
    print(*args, file=sys.stderr, flush=True)
