"""test_sink -- `nudge sink`, the webhook catcher for development and demos.

Starts the real binary on a free loopback port (--http 0: it prints the port
it got), posts to it over real sockets and reads what it prints.
"""
import hashlib
import hmac
import http.client
import json
import os
import queue
import signal
import subprocess
import threading
import time
import unittest
import uuid

from nudgetest import NudgeServer

BIN = os.environ.get("NUDGE_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "nudge"))


def sign(secret, body, t=None):
    """What nudge sends in X-Nudge-Signature (docs/webhooks.md)."""
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), b"%d." % t + body, hashlib.sha256).hexdigest()
    return "t=%d,v1=%s" % (t, mac)


def verify(secret, header, body, tolerance=300):
    """The receiver's check, as docs/webhooks.md shows it."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    t = int(parts["t"])
    if abs(time.time() - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), b"%d." % t + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


class Sink:
    def __init__(self, *args):
        self.proc = subprocess.Popen([BIN, "sink", "--http", "0"] + list(args),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.line()
        assert first.startswith("listening on http://127.0.0.1:"), first
        self.port = int(first.rsplit(":", 1)[1])

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout=10):
        line = self.lines.get(timeout=timeout)
        if line is None:
            raise AssertionError("sink exited: %s" % self.proc.stderr.read().decode())
        return line

    def until_answer(self):
        """The lines printed for one request, up to its '=> STATUS' line."""
        out = []
        while True:
            line = self.line()
            out.append(line)
            if line.startswith("=> "):
                return out

    def post(self, path, body, headers=None, method="POST"):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, dict(r.getheaders()), data

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=10)
        err = self.proc.stderr.read().decode()
        self.proc.stdout.close()
        self.proc.stderr.close()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in err:
                raise AssertionError("sanitizer report:\n" + err)
        return rc


class SinkTest(unittest.TestCase):
    def test_prints_each_request_and_answers_ok(self):
        s = Sink()
        try:
            body = json.dumps({"user": "u1", "items": [1, 2]}).encode()
            status, _, data = s.post("/hooks/cart?x=1", body, {
                "Idempotency-Key": "env-abc", "X-Nudge-Signature": "t=1,v1=00"})
            self.assertEqual(status, 200)
            self.assertEqual(json.loads(data), {"ok": True})
            out = s.until_answer()
            self.assertRegex(out[0], r"^--- #1 \d{4}-\d\d-\d\dT[0-9:.]+Z POST /hooks/cart\?x=1$")
            self.assertIn("Idempotency-Key: env-abc", out)
            self.assertIn("X-Nudge-Signature: t=1,v1=00", out)
            # pretty-printed: one key per line, and it parses back to the body
            text = "\n".join(out[3:-1])
            self.assertIn('\n  "items"', text)
            self.assertEqual(json.loads(text), {"user": "u1", "items": [1, 2]})
            self.assertEqual(out[-1], "=> 200")

            status, _, _ = s.post("/plain", b"not json", {}, method="PUT")
            self.assertEqual(status, 200)
            out = s.until_answer()
            self.assertTrue(out[0].startswith("--- #2 ") and out[0].endswith(" PUT /plain"), out[0])
            self.assertIn("Idempotency-Key: (none)", out)
            self.assertIn("not json", out)
        finally:
            self.assertEqual(s.stop(), 0)

    def test_fail_first_answers_503_then_200(self):
        s = Sink("--fail-first", "2")
        try:
            got = []
            for i in range(3):
                status, headers, _ = s.post("/", b"{}", {"Idempotency-Key": "k"})
                got.append(status)
                if status == 503:
                    self.assertEqual(headers.get("Retry-After"), "1")
                self.assertEqual(s.until_answer()[-1], "=> %d" % status)
            self.assertEqual(got, [503, 503, 200])
        finally:
            self.assertEqual(s.stop(), 0)

    def test_status_is_always_answered(self):
        s = Sink("--status", "404")
        try:
            for _ in range(2):
                status, _, data = s.post("/", b"{}")
                self.assertEqual(status, 404)
                self.assertEqual(json.loads(data), {"ok": False})
                s.until_answer()
        finally:
            self.assertEqual(s.stop(), 0)

    def test_secret_checks_signatures(self):
        s = Sink("--secret", "whsec")
        try:
            body = b'{"a":"\xc3\xa9"}'
            good = sign("whsec", body)
            self.assertTrue(verify("whsec", good, body))
            self.assertFalse(verify("whsec", good, body + b" "))
            self.assertFalse(verify("other", good, body))
            s.post("/", body, {"X-Nudge-Signature": good})
            self.assertIn("X-Nudge-Signature: %s (valid)" % good, s.until_answer())
            bad = sign("other", body)
            s.post("/", body, {"X-Nudge-Signature": bad})
            self.assertIn("X-Nudge-Signature: %s (INVALID)" % bad, s.until_answer())
        finally:
            self.assertEqual(s.stop(), 0)

    def test_listen_option_picks_the_address(self):
        p = subprocess.Popen([BIN, "sink", "--listen", "127.0.0.1:0", "--status", "202"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            first = p.stdout.readline().decode()
            self.assertTrue(first.startswith("listening on http://127.0.0.1:"), first)
            port = int(first.strip().rsplit(":", 1)[1])
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("POST", "/x", body=b"{}")
            self.assertEqual(c.getresponse().status, 202)
            c.close()
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(timeout=10), 0)
            p.stdout.close()
            p.stderr.close()

    def test_bad_usage_exits_2(self):
        for args in ([], ["--http"], ["--http", "x"], ["--http", "0", "--status", "99"],
                     ["--http", "0", "--bogus"], ["--listen", "nocolon"]):
            p = subprocess.run([BIN, "sink"] + args, capture_output=True, timeout=10)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(b"usage: nudge sink", p.stderr)

    def test_listen_on_a_port_in_use_fails(self):
        s = Sink()
        try:
            p = subprocess.run([BIN, "sink", "--http", str(s.port)], capture_output=True,
                               timeout=10)
            self.assertEqual(p.returncode, 2)
            self.assertIn(b"cannot listen", p.stderr)
        finally:
            self.assertEqual(s.stop(), 0)


class ServeToSinkTest(unittest.TestCase):
    """The quick start's path: a journey's webhook step, `nudge serve`'s delivery
    thread, and `nudge sink` checking the signature; the sink fails the first
    call so the retry (same Idempotency-Key, fresh signature) shows too."""

    def test_webhook_step_reaches_the_sink_signed_and_retried(self):
        s = Sink("--secret", "e2e-secret", "--fail-first", "1")
        config = "[webhook]\nallow = 127.0.0.1/32\nsecret = e2e-secret\n"
        try:
            with NudgeServer(config_text=config) as srv:
                doc = {
                    "id": "sink-e2e", "name": "sink end to end",
                    "entry": {"event": "Sink Ping"}, "start": "hook",
                    "steps": {
                        "hook": {"webhook": {
                            "url": "http://127.0.0.1:%d/hook/ping" % s.port,
                            "method": "POST", "retries": 2,
                            "body": "{\"user\": {{ journey.entry.userId | json }}}"},
                            "next": "done"},
                        "done": {"end": {}}}}
                r = srv.request("PUT", "/v1/journeys/sink-e2e", doc, auth="admin")
                self.assertEqual(r.status, 200, r)
                r = srv.request("POST", "/v1/journeys/sink-e2e/publish", auth="admin")
                self.assertEqual(r.status, 200, r)
                user = "u-" + uuid.uuid4().hex[:8]
                r = srv.post("/v1/track", {"userId": user, "event": "Sink Ping"})
                self.assertEqual(r.status, 200, r)

                first, second = s.until_answer(), s.until_answer()
                self.assertEqual(first[-1], "=> 503")
                self.assertEqual(second[-1], "=> 200")
                for out in (first, second):
                    self.assertTrue(out[0].endswith(" POST /hook/ping"), out[0])
                    self.assertTrue(any(l.startswith("X-Nudge-Signature: t=") and
                                        l.endswith(" (valid)") for l in out), out)
                    self.assertEqual(json.loads("\n".join(out[3:-1])), {"user": user})
                keys = [l for out in (first, second) for l in out
                        if l.startswith("Idempotency-Key: ")]
                self.assertEqual(len(keys), 2)
                self.assertEqual(keys[0], keys[1])
                self.assertNotEqual(keys[0], "Idempotency-Key: (none)")
        finally:
            self.assertEqual(s.stop(), 0)


if __name__ == "__main__":
    unittest.main()
