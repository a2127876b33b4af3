"""moecastd's security and limit flags, seen from moecast:

  --auth_token_file F                       bearer token (UNAUTHENTICATED without it)
  --tls_cert F --tls_key F [--tls_client_ca F]   TLS, mutual TLS
  --max_jobs N, --max_layer_experts N, --max_concurrent_streams N   RESOURCE_EXHAUSTED
  --idle_job_expiry_s S                     idle jobs are deleted (NOT_FOUND)

Each test starts its own moecastd on 127.0.0.1:0. Certificates are made with
/usr/bin/openssl in the test's temporary directory.
"""

import os
import threading
import time
import unittest

import numpy as np

from moecast import Client, MoecastError

from moecastd_fixture import Certificates, Moecastd, log, run_moecastd, scratch_dir

L, M, K = 2, 8, 2
CERTS = None


def setUpModule():
    global CERTS
    CERTS = Certificates()


def write(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


class Base(unittest.TestCase):
    server = None

    def start(self, *args):
        self.server = Moecastd(args).start()
        return self.server

    def tearDown(self):
        if self.server is not None:
            rc = self.server.stop()
            self.assertEqual(rc, 0, "moecastd exit status on SIGTERM; output:\n" + self.server.output())

    def assertCode(self, code, fn, *fragments):
        with self.assertRaises(MoecastError) as ctx:
            fn()
        e = ctx.exception
        self.assertEqual(e.code, code, "expected %s, got %s" % (code, e))
        for f in fragments:
            self.assertIn(f, e.message)
        return e

    def exercise(self, client, job_id):
        """Unary, client-streaming and server-streaming calls all work."""
        client.register_job(job_id, num_layers=L, num_experts=M, top_k=K)
        self.assertIn(job_id, client.list_jobs())
        s = client.ingest_stream(job_id, ((t, np.ones((L, M))) for t in range(5)))
        self.assertEqual(s.committed, 5)
        self.assertEqual(client.job_info(job_id).committed_steps, 5)
        with client.watch(job_id, timeout=10) as stream:
            pass  # opened and cancelled without error
        self.assertEqual(list(stream), [])


class AuthTokenTest(Base):
    def test_bearer_token(self):
        token_file = write(scratch_dir(), "token", "s3cret-token\n")
        server = self.start("--auth_token_file", token_file)
        with Client(server.target, token="s3cret-token") as good:
            self.exercise(good, "auth-a")
        for token in (None, "wrong-token"):
            with Client(server.target, token=token, timeout=10) as bad:
                e = self.assertCode("UNAUTHENTICATED", bad.list_jobs)
                self.assertEqual(e.method, "ListJobs")
                self.assertCode("UNAUTHENTICATED", lambda: bad.register_job("auth-b", L, M, K))
                self.assertCode("UNAUTHENTICATED", lambda: bad.ingest_stream(
                    "auth-a", [(10, np.ones((L, M)))], validate_job=False))
                self.assertCode("UNAUTHENTICATED", lambda: next(iter(bad.watch("auth-a", timeout=10))))
        with Client(server.target, token="s3cret-token") as good:
            self.assertEqual(good.list_jobs(), ["auth-a"])  # nothing else got in
            self.assertEqual(good.job_info("auth-a").committed_steps, 5)

    def test_unreadable_or_empty_token_file_is_refused(self):
        rc, out = run_moecastd(["--listen", "127.0.0.1:0", "--auth_token_file", "/nonexistent/token"])
        self.assertNotEqual(rc, 0, out)
        self.assertIn("/nonexistent/token", out)
        empty = write(scratch_dir(), "empty", "")
        rc, out = run_moecastd(["--listen", "127.0.0.1:0", "--auth_token_file", empty])
        self.assertNotEqual(rc, 0, out)
        self.assertIn("auth_token_file", out)


class TlsTest(Base):
    def test_tls(self):
        server = self.start("--tls_cert", CERTS.server[0], "--tls_key", CERTS.server[1])
        with Client(server.target, root_ca=CERTS.ca[0]) as c:
            self.exercise(c, "tls-a")
        # Also by name (the certificate has DNS:localhost).
        with open(CERTS.ca[0], "rb") as f:
            ca_pem = f.read()
        with Client("localhost:%d" % server.port, root_ca=ca_pem) as c:
            self.assertEqual(c.list_jobs(), ["tls-a"])
        # Plaintext against TLS, or a server certificate from an unknown CA: no connection.
        with Client(server.target, timeout=5) as plain:
            self.assertCode("UNAVAILABLE", plain.list_jobs)
        with Client(server.target, root_ca=CERTS.other_ca[0], timeout=5) as wrong_ca:
            self.assertCode("UNAVAILABLE", wrong_ca.list_jobs)

    def test_mutual_tls(self):
        server = self.start("--tls_cert", CERTS.server[0], "--tls_key", CERTS.server[1],
                            "--tls_client_ca", CERTS.ca[0])
        with Client(server.target, root_ca=CERTS.ca[0], client_cert=CERTS.client[0],
                    client_key=CERTS.client[1]) as c:
            self.exercise(c, "mtls-a")
        with Client(server.target, root_ca=CERTS.ca[0], timeout=5) as no_cert:
            self.assertCode("UNAVAILABLE", no_cert.list_jobs)
        with Client(server.target, root_ca=CERTS.ca[0], client_cert=CERTS.other_client[0],
                    client_key=CERTS.other_client[1], timeout=5) as foreign:
            self.assertCode("UNAVAILABLE", foreign.list_jobs)

    def test_tls_and_token(self):
        token_file = write(scratch_dir(), "token", "tok-2")
        server = self.start("--tls_cert", CERTS.server[0], "--tls_key", CERTS.server[1],
                            "--auth_token_file", token_file)
        with Client(server.target, root_ca=CERTS.ca[0], token="tok-2") as c:
            self.exercise(c, "tlstok-a")
        with Client(server.target, root_ca=CERTS.ca[0], timeout=5) as c:
            self.assertCode("UNAUTHENTICATED", c.list_jobs)

    def test_inconsistent_tls_flags_are_refused(self):
        rc, out = run_moecastd(["--listen", "127.0.0.1:0", "--tls_key", CERTS.server[1]])
        self.assertNotEqual(rc, 0, out)
        self.assertIn("tls_cert", out)
        rc, out = run_moecastd(["--listen", "127.0.0.1:0", "--tls_cert", "/nonexistent/cert.pem",
                                "--tls_key", CERTS.server[1]])
        self.assertNotEqual(rc, 0, out)
        self.assertIn("/nonexistent/cert.pem", out)


class LimitsTest(Base):
    def test_max_jobs(self):
        server = self.start("--max_jobs", "2")
        with Client(server.target) as c:
            c.register_job("lim-1", L, M, K)
            c.register_job("lim-2", L, M, K)
            self.assertCode("RESOURCE_EXHAUSTED", lambda: c.register_job("lim-3", L, M, K), "max_jobs = 2")
            self.assertEqual(c.list_jobs(), ["lim-1", "lim-2"])
            c.delete_job("lim-1")
            c.register_job("lim-3", L, M, K)   # room again

    def test_max_layer_experts(self):
        server = self.start("--max_layer_experts", "64")
        with Client(server.target) as c:
            c.register_job("le-ok", 8, 8, 2)
            self.assertCode("RESOURCE_EXHAUSTED", lambda: c.register_job("le-big", 8, 16, 2),
                            "max_layer_experts = 64")
            self.assertEqual(c.list_jobs(), ["le-ok"])

    def test_max_concurrent_streams(self):
        server = self.start("--max_concurrent_streams", "1")
        with Client(server.target) as c:
            c.register_job("cs", L, M, K)
            first = c.watch("cs")
            # The first Watch holds the only stream slot once the server has it;
            # wait for that, then every other stream is refused.
            deadline = time.monotonic() + 60  # generous: CI machines are loaded
            while True:
                try:
                    c.ingest_stream("cs", [], validate_job=False, timeout=5)
                except MoecastError as e:
                    if e.code == "RESOURCE_EXHAUSTED":
                        break
                    raise
                if time.monotonic() > deadline:
                    self.fail("a second stream was never refused with --max_concurrent_streams 1")
                time.sleep(0.05)
            second = c.watch("cs", timeout=10)
            self.assertCode("RESOURCE_EXHAUSTED", lambda: next(second))
            # Unary calls are not streams.
            c.ingest_batch("cs", [(0, np.ones((L, M)))]).raise_for_rejections()
            first.cancel()
            deadline = time.monotonic() + 60  # generous: CI machines are loaded
            while True:   # the slot comes back once the server sees the cancel
                try:
                    s = c.ingest_stream("cs", [(1, np.ones((L, M)))], timeout=5)
                    self.assertEqual(s.committed, 1)
                    break
                except MoecastError as e:
                    if e.code != "RESOURCE_EXHAUSTED" or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def test_idle_job_expiry(self):
        server = self.start("--idle_job_expiry_s", "1")
        with Client(server.target) as c:
            c.register_job("idle", L, M, K)
            info = c.job_info("idle")
            self.assertEqual(info.expires_after_idle_seconds, 1.0)
            self.assertLess(info.idle_seconds, 1.0)
            errors = []

            def watch():
                try:
                    for _ in c.watch("idle", timeout=20):
                        pass
                except MoecastError as e:
                    errors.append(e)

            t = threading.Thread(target=watch)
            t.start()
            start = time.monotonic()
            while "idle" in c.list_jobs():     # ListJobs does not name the job
                if time.monotonic() - start > 10:
                    self.fail("job 'idle' still registered 10 s after registration "
                              "with --idle_job_expiry_s 1")
                time.sleep(0.1)
            elapsed = time.monotonic() - start
            log("job expired after %.2f s" % elapsed)
            self.assertGreaterEqual(elapsed, 0.5)
            self.assertCode("NOT_FOUND", lambda: c.job_info("idle"))
            t.join(15)
            self.assertFalse(t.is_alive(), "Watch did not end when its job expired")
            self.assertEqual([e.code for e in errors], ["NOT_FOUND"])

    def test_bad_limit_values_are_refused(self):
        for flag, value in (("--max_jobs", "0"), ("--max_jobs", "many"),
                            ("--max_concurrent_streams", "-1"), ("--idle_job_expiry_s", "-5")):
            rc, out = run_moecastd(["--listen", "127.0.0.1:0", flag, value])
            self.assertEqual(rc, 2, "%s %s: exit %d, output:\n%s" % (flag, value, rc, out))
            self.assertIn(flag.lstrip("-"), out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
