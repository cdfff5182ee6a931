"""nudgetest -- start the real `nudge` binary on loopback for black-box tests.

Every integration test talks to the real server over real sockets: a free
loopback port, a temporary data directory, known keys. NUDGE_BIN names the
binary (the Makefile sets it). Nothing here is mocked.
"""
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

BIN = os.environ.get("NUDGE_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "nudge"))
SHARED = os.environ.get("NUDGE_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:300])


class NudgeServer:
    """A running `nudge serve`. Use as a context manager.

    Attributes: port, write_key, admin_key, data_dir, proc.
    """

    def __init__(self, extra_args=None, config_text=None, data_dir=None, keys=True):
        self.port = free_port()
        self.owns_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="nudge-test-")
        self.write_key = "wk_test_" + os.urandom(6).hex() if keys else None
        self.admin_key = "ak_test_" + os.urandom(6).hex() if keys else None
        self.extra_args = list(extra_args or [])
        self.config_text = config_text
        self.proc = None
        self.log_path = os.path.join(self.data_dir, "..", os.path.basename(self.data_dir) + ".log")
        self.stdout_path = self.log_path + ".out"

    def args(self):
        a = [BIN, "serve", "--listen", "127.0.0.1:%d" % self.port, "--data-dir", self.data_dir]
        if self.write_key:
            a += ["--write-key", self.write_key, "--admin-key", self.admin_key]
        if self.config_text is not None:
            cfg = os.path.join(self.data_dir + ".conf")
            with open(cfg, "w") as f:
                f.write(self.config_text)
            a += ["--config", cfg]
        return a + self.extra_args

    def start(self, timeout=15):
        self.log = open(self.log_path, "ab")
        self.out = open(self.stdout_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=self.out, stderr=self.log)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nudge exited with %s; log:\n%s" % (self.proc.returncode, self.read_log()))
            try:
                r = self.request("GET", "/healthz", auth=None, timeout=1)
                if r.status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("nudge did not become healthy; log:\n" + self.read_log())

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-5000:]
        except OSError:
            return ""

    def read_stdout(self):
        with open(self.stdout_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        rc = self.proc.returncode if self.proc else None
        for f in ("log", "out"):
            if hasattr(self, f):
                getattr(self, f).close()
        self.check_sanitizers()
        return rc

    def check_sanitizers(self):
        """Under `make asan` a sanitizer report in the server's log fails the test."""
        log = self.read_log()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in log:
                raise AssertionError("sanitizer report in the server log:\n" + log)

    def kill(self):
        return self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            if self.owns_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                for p in (self.data_dir + ".conf", self.log_path, self.stdout_path):
                    try:
                        os.unlink(p)
                    except OSError:
                        pass

    # -- HTTP -----------------------------------------------------------
    def auth_headers(self, auth):
        if auth == "write":
            tok = base64.b64encode((self.write_key + ":").encode()).decode()
            return {"Authorization": "Basic " + tok}
        if auth == "admin":
            return {"Authorization": "Bearer " + self.admin_key}
        return {}

    def request(self, method, path, body=None, headers=None, auth="write", timeout=30):
        h = {}
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h["Content-Type"] = "application/json"
        if isinstance(body, str):
            body = body.encode()
        if body is not None and "Content-Type" not in (headers or {}):
            h["Content-Type"] = "application/json"
        h.update(self.auth_headers(auth))
        h.update(headers or {})
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return Response(r.status, dict(r.getheaders()), r.read().decode("utf-8", "replace"))
        finally:
            c.close()

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def profile(self, ns, value):
        from urllib.parse import quote
        return self.request("GET", "/v1/profiles/%s/%s" % (quote(ns, safe=""), quote(value, safe="")), auth="admin")

    def wait_profile(self, ns, value, pred=lambda p: True, timeout=10):
        """Polls until the engine has applied what the test sent."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = self.profile(ns, value)
            if last.status == 200 and pred(last.json()):
                return last.json()
            time.sleep(0.05)
        raise AssertionError("profile %s:%s not as expected: %r" % (ns, value, last))

    def metrics(self):
        return self.request("GET", "/metrics", auth="admin").body

    def raw(self, data, timeout=5, read=True):
        """Sends raw bytes on a fresh connection; returns what came back."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            s.sendall(data)
            if not read:
                return b""
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            s.close()


def run_nudge(*args, stdin=None, timeout=30):
    """Runs a nudge subcommand; returns CompletedProcess with text output."""
    return subprocess.run([BIN] + list(args), input=stdin, capture_output=True, text=True, timeout=timeout)
