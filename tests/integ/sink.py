"""sink -- a real HTTP peer that records every webhook it receives.

Runs http.server in a thread on a free loopback port. Tests read `requests`
(method, path, headers, parsed body) and may make it fail the first N calls.
"""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Sink:
    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        self.fail_first = 0
        self.status = 200
        self.response = {"ok": True}
        self.unregistered = set()   # push tokens answered UNREGISTERED
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def handle_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                    if (self.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
                        from urllib.parse import parse_qs
                        body = {k: v[0] for k, v in parse_qs(body).items()}
                with sink.lock:
                    sink.requests.append({"method": self.command, "path": self.path,
                                          "headers": dict(self.headers), "body": body, "raw": raw})
                    fail = sink.fail_first > 0
                    if fail:
                        sink.fail_first -= 1
                status = 503 if fail else sink.status
                resp = sink.response
                if (self.path.endswith("/messages:send") and isinstance(body, dict)
                        and body.get("message", {}).get("token") in sink.unregistered):
                    status = 404
                    resp = {"error": {"code": 404, "message": "Requested entity was not found.",
                                      "status": "NOT_FOUND",
                                      "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                                   "errorCode": "UNREGISTERED"}]}}
                # Answer like the providers nudge talks to.
                if status >= 400:
                    pass
                elif self.path.endswith("/Messages.json"):
                    resp = {"sid": "SM%032x" % len(sink.requests), "status": "queued"}
                elif self.path.endswith("/messages:send"):
                    resp = {"name": "projects/p/messages/%d" % len(sink.requests)}
                out = json.dumps(resp).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_POST = do_PUT = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path=""):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def received(self, path=None):
        with self.lock:
            return [r for r in self.requests if path is None or r["path"] == path]

    def wait(self, pred, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = pred(self)
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError("sink: condition not met; got %r" % [
            (r["path"], r["body"]) for r in self.received()])

    def close(self):
        self.server.shutdown()
        self.server.server_close()
