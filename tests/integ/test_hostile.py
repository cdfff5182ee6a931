"""test_hostile -- bad input against the real server: never a crash, never a hang.

Each case sends hostile bytes on a fresh connection (truncated requests, oversized
bodies and headers, header floods, bad methods, bad chunk sizes, request smuggling
shapes, slowloris trickles, deep JSON, invalid UTF-8, NUL bytes, huge numbers, wrong
content types, pipelined garbage, ...). The case passes when every answer it gets is
4xx (or the server closes the connection without answering) within a bounded time,
and afterwards the server still answers GET /healthz. Cases run as subtests of one
server so the whole sequence also checks that nothing accumulates.

The server runs with short timeouts (read 1 s, idle 2 s) so slowloris cases finish
fast, and at most 32 connections; those limits are what some cases check.
"""
import json
import socket
import time
import unittest

from nudgetest import NudgeServer

READ_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 32
CONFIG = """
[server]
read_timeout = 1s
idle_timeout = 2s
max_connections = %d
""" % MAX_CONNECTIONS


def parse_responses(data):
    """Splits raw response bytes into [(status, headers_text, body)]; a trailing
    incomplete response is left out. 1xx interim answers are included."""
    out = []
    pos = 0
    while True:
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return out, pos
        head = data[pos:end].decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise AssertionError("not an HTTP response: %r" % data[pos:pos + 200])
        status = int(parts[1])
        length = 0
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip())
        if end + 4 + length > len(data):
            return out, pos
        out.append((status, head, data[end + 4:end + 4 + length]))
        pos = end + 4 + length


class Exchange:
    """What one hostile connection saw."""

    def __init__(self):
        self.responses = []
        self.closed = False
        self.elapsed = 0.0
        self.raw = b""

    def finals(self):
        return [r for r in self.responses if r[0] >= 200]

    def __repr__(self):
        return "<Exchange statuses=%s closed=%s elapsed=%.2fs raw=%r>" % (
            [r[0] for r in self.responses], self.closed, self.elapsed, self.raw[:300])


def exchange(port, parts, gap_s=0.0, shut=False, want=1, timeout_s=8.0):
    """Sends parts (byte strings) with gap_s between them, then optionally
    half-closes; reads until `want` final answers arrived, the server closed, or
    timeout_s passed. A send failing because the server closed is not an error."""
    ex = Exchange()
    t0 = time.time()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        s.setblocking(True)
        for i, p in enumerate(parts):
            if i and gap_s:
                time.sleep(gap_s)
                # Stop trickling once the server has answered or closed.
                s.setblocking(False)
                try:
                    chunk = s.recv(65536)
                    if not chunk:
                        ex.closed = True
                        break
                    ex.raw += chunk
                    break
                except BlockingIOError:
                    pass
                except (ConnectionResetError, BrokenPipeError):
                    ex.closed = True
                    break
                finally:
                    s.setblocking(True)
                    s.settimeout(timeout_s)
            try:
                s.sendall(p)
            except (ConnectionResetError, BrokenPipeError):
                break
        if shut and not ex.closed:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        deadline = t0 + timeout_s
        while not ex.closed:
            resp, _ = parse_responses(ex.raw)
            if len([r for r in resp if r[0] >= 200]) >= want:
                break
            left = deadline - time.time()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except (ConnectionResetError, BrokenPipeError):
                ex.closed = True
                break
            if not chunk:
                ex.closed = True
                break
            ex.raw += chunk
    finally:
        s.close()
    ex.responses, _ = parse_responses(ex.raw)
    ex.elapsed = time.time() - t0
    return ex


def req(method, path, body=b"", headers=(), version="HTTP/1.1", length=True):
    h = ["Host: localhost"] + list(headers)
    if length and body is not None:
        h.append("Content-Length: %d" % len(body))
    return ("%s %s %s\r\n%s\r\n\r\n" % (method, path, version, "\r\n".join(h))).encode() + (body or b"")


class HostileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = NudgeServer(config_text=CONFIG)
        cls.srv.start()
        import base64
        cls.basic = "Authorization: Basic " + base64.b64encode((cls.srv.write_key + ":").encode()).decode()
        cls.ran = 0

    @classmethod
    def tearDownClass(cls):
        cls.srv.__exit__(None, None, None)

    def healthy(self):
        r = self.srv.request("GET", "/healthz", auth=None, timeout=5)
        self.assertEqual(r.status, 200, "server unhealthy after a hostile case")

    def refused(self, ex, allow_close=True, min_answers=1):
        """Every final answer is 4xx, or the server closed without answering."""
        finals = ex.finals()
        if not finals:
            self.assertTrue(allow_close and ex.closed, "no answer and no close (hang?): %r" % ex)
            return
        for st, head, body in finals:
            self.assertTrue(400 <= st < 500, "expected 4xx: %r" % ex)
            self.assertIn("application/json", head.lower(), ex)
            err = json.loads(body)["error"]
            self.assertIsInstance(err["code"], str)
            self.assertIsInstance(err["message"], str)
        self.assertGreaterEqual(len(finals), min_answers, ex)

    def case(self, name, parts, expect=None, **kw):
        """Runs one hostile exchange as a subtest; expect is a set of acceptable
        statuses (None: any 4xx, or a close)."""
        with self.subTest(case=name):
            type(self).ran += 1
            if isinstance(parts, bytes):
                parts = [parts]
            ex = exchange(self.srv.port, parts, **kw)
            self.assertLess(ex.elapsed, 7.5, "took too long (hang?): %r" % ex)
            self.refused(ex)
            if expect is not None and ex.finals():
                self.assertIn(ex.finals()[-1][0], expect, ex)
            self.healthy()
            return ex

    def track(self, body, ctype="application/json", extra=()):
        return req("POST", "/v1/track", body, ["Content-Type: " + ctype, self.basic] + list(extra))

    # -- the HTTP layer ----------------------------------------------------
    def test_http_layer(self):
        c = self.case
        # Truncated requests: the client gives up (EOF) mid-request.
        c("truncated request line", b"GET /healthz HTT", shut=True)
        c("truncated headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\nAcc", shut=True)
        c("truncated body", self.track(b'{"event":"x","userId":"u"}')[:-8], shut=True)
        c("truncated chunked body", b"POST /v1/track HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
          b"Content-Type: application/json\r\n" + self.basic.encode() + b"\r\n\r\n10\r\n{\"event\":", shut=True)
        # Sizes.
        c("content-length 100 MiB, no body", req("POST", "/v1/track", None, ["Content-Length: 104857600", self.basic]),
          expect={413})
        c("5 MiB body sent", self.track(b'{"p":"' + b"a" * (5 << 20) + b'"}'), expect={413})
        c("5 MiB chunked body", [b"POST /v1/track HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                                 b"Content-Type: application/json\r\n" + self.basic.encode() + b"\r\n\r\n"]
          + [b"100000\r\n" + b"a" * 0x100000 + b"\r\n"] * 5 + [b"0\r\n\r\n"], expect={413})
        c("content-length beyond 64 bits", req("POST", "/v1/track", None, ["Content-Length: 99999999999999999999999"]),
          expect={400, 413})
        c("20 KiB header value", req("GET", "/healthz", None, ["X-Big: " + "a" * 20000]), expect={413, 431})
        c("100 KiB URL", req("GET", "/healthz?" + "a" * 100000, None), expect={413, 414, 431})
        c("header flood 5000 headers", req("GET", "/healthz", None, ["X-%d: y" % i for i in range(5000)]),
          expect={413, 431})
        c("300 tiny headers", req("GET", "/healthz", None, ["A: b"] * 300), expect={413, 431})
        c("header bytes without end", [b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 200000], expect={413, 431})
        # Methods, versions, targets.
        c("unknown method", req("FROB", "/healthz", None), expect={400, 405, 501})
        c("lower-case method", req("get", "/healthz", None), expect={400, 405})
        c("binary method", b"\x00\x01\x02\x03 / HTTP/1.1\r\n\r\n", expect={400})
        c("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", expect={400, 405})
        c("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", expect={400, 404, 405})
        c("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", expect={400})
        c("garbage version", b"GET /healthz HTTP/1.x\r\n\r\n", expect={400})
        c("HTTP/0.9 request", b"GET /healthz\r\n\r\n", expect={400})
        c("relative target", b"GET healthz HTTP/1.1\r\n\r\n", expect={400})
        c("NUL in target", b"GET /heal\x00thz HTTP/1.1\r\n\r\n", expect={400})
        c("space in target", b"GET /a b/c HTTP/1.1\r\n\r\n", expect={400})
        # Header syntax.
        c("NUL in header value", b"GET /healthz HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", expect={400})
        c("control byte in header name", b"GET /healthz HTTP/1.1\r\nX\x01A: b\r\n\r\n", expect={400})
        c("space before colon", b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", expect={400})
        c("header without colon", b"GET /healthz HTTP/1.1\r\nNoColonHere\r\n\r\n", expect={400})
        c("CR without LF", b"GET /healthz HTTP/1.1\rHost: x\r\n\r\n", expect={400})
        c("unsupported expectation", req("POST", "/v1/track", b"{}", ["Expect: 200-ok", self.basic]),
          expect={417})
        # Body framing and smuggling shapes.
        c("POST without length", req("POST", "/v1/track", b'{"a":1}', [self.basic], length=False),
          expect={411})
        c("two different content-lengths", req("POST", "/v1/track", b"{}", ["Content-Length: 5", self.basic]),
          expect={400})
        c("content-length and chunked", req("POST", "/v1/track", b"0\r\n\r\n",
                                            ["Transfer-Encoding: chunked", self.basic]), expect={400})
        c("negative content-length", req("POST", "/v1/track", None, ["Content-Length: -1"]), expect={400})
        c("non-numeric content-length", req("POST", "/v1/track", None, ["Content-Length: 12abc"]),
          expect={400})
        c("transfer-encoding gzip", req("POST", "/v1/track", None, ["Transfer-Encoding: gzip"]),
          expect={400, 501})
        c("bad chunk size", b"POST /v1/track HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
          expect={400})
        c("negative chunk size", b"POST /v1/track HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n{}\r\n",
          expect={400})
        c("chunk size overflow", b"POST /v1/track HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
          b"fffffffffffffffffffff\r\n{}\r\n", expect={400, 413})
        c("chunk without CRLF", b"POST /v1/track HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
          expect={400})
        # Pipelining.
        c("garbage pipelined after garbage", [b"\x16\x03\x01\x02\x00\x01\x00" * 200], expect={400})
        with self.subTest(case="valid request then garbage"):
            type(self).ran += 1
            ex = exchange(self.srv.port, [req("GET", "/healthz", None) + b"\xff\xfe garbage\r\n\r\n"], want=2)
            self.assertEqual([r[0] for r in ex.finals()], [200, 400], ex)
            self.healthy()
        with self.subTest(case="100 pipelined bad requests"):
            type(self).ran += 1
            ex = exchange(self.srv.port, [self.track(b"{not json")] * 100, want=100)
            self.assertEqual(len(ex.finals()), 100, ex)
            self.refused(ex)
            self.healthy()
        # Slow clients: the read timeout (1 s) ends them, with 408 or a close.
        c("slowloris headers", [b"GET /healthz HTTP/1.1\r\n"] + [b"X"] * 60, gap_s=0.1, expect={408})
        c("slowloris body", [self.track(b'{"event":"x","userId":"u"}' + b" " * 100)[:-100]] + [b" "] * 60,
          gap_s=0.1, expect={408})
        c("slow leading blank lines", [b"\r\n"] * 60, gap_s=0.1)
        with self.subTest(case="silent connection closed by idle timeout"):
            type(self).ran += 1
            ex = exchange(self.srv.port, [], timeout_s=6)
            self.assertTrue(ex.closed and not ex.responses, ex)
            self.assertLess(ex.elapsed, 4.5, ex)
            self.healthy()

    def test_connection_flood(self):
        """Connections past max_connections get 503 with Retry-After, then close;
        the admitted ones are unaffected."""
        type(self).ran += 1
        socks = []
        try:
            for _ in range(MAX_CONNECTIONS + 8):
                s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=5)
                socks.append(s)
                time.sleep(0.005)  # accepted in order
            refused = 0
            for s in socks[MAX_CONNECTIONS:]:
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                resp, _ = parse_responses(data)
                self.assertEqual([r[0] for r in resp], [503], data)
                self.assertIn("\r\nRetry-After: ", resp[0][1])
                refused += 1
            self.assertEqual(refused, 8)
            s = socks[0]
            s.sendall(req("GET", "/healthz", None))
            ex = Exchange()
            while not parse_responses(ex.raw)[0]:
                ex.raw += s.recv(4096)
            self.assertEqual(parse_responses(ex.raw)[0][0][0], 200)
        finally:
            for s in socks:
                s.close()
        deadline = time.time() + 5
        while True:  # the server notices the closes asynchronously
            r = self.srv.request("GET", "/healthz", auth=None, timeout=5)
            if r.status == 200 or time.time() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(r.status, 200)

    # -- the application behind it -------------------------------------------
    def test_json_bodies(self):
        c = self.case
        t = self.track
        c("deep array nesting", t(b"[" * 100000 + b"]" * 100000), expect={400, 413})
        c("deep object nesting", t(b'{"event":"x","userId":"u","properties":' + b'{"a":' * 200 + b"1" + b"}" * 201),
          expect={400})
        c("unclosed nesting", t(b"{" * 5000), expect={400})
        c("invalid UTF-8 in string", t(b'{"event":"\xff\xfe","userId":"u"}'), expect={400})
        c("overlong UTF-8", t(b'{"event":"\xc0\xaf","userId":"u"}'), expect={400})
        c("truncated UTF-8", t(b'{"event":"\xe2\x82","userId":"u"}'), expect={400})
        c("UTF-8 surrogate bytes", t(b'{"event":"\xed\xa0\x80","userId":"u"}'), expect={400})
        c("raw NUL in body", t(b'{"event":"a\x00b","userId":"u"}'), expect={400})
        c("NUL before body end", t(b'{"event":"x","userId":"u"}\x00'), expect={400})
        c("huge exponent", t(b'{"event":"x","userId":"u","properties":{"n":1e999}}'), expect={400})
        c("huge negative exponent number", t(b'{"event":"x","userId":"u","properties":{"n":-1e999}}'),
          expect={400})
        c("NaN literal", t(b'{"event":"x","userId":"u","properties":{"n":NaN}}'), expect={400})
        c("Infinity literal", t(b'{"event":"x","userId":"u","properties":{"n":Infinity}}'), expect={400})
        c("huge timestamp", t(b'{"event":"x","userId":"u","timestamp":"99999999-01-01T00:00:00Z"}'), expect={400})
        c("number as timestamp", t(b'{"event":"x","userId":"u","timestamp":1e300}'), expect={400})
        c("trailing garbage", t(b'{"event":"x","userId":"u"} trailing'), expect={400})
        c("two documents", t(b'{"event":"x","userId":"u"}{"event":"y","userId":"u"}'), expect={400})
        c("empty body", t(b""), expect={400})
        c("JSON null body", t(b"null"), expect={400})
        c("JSON array body", t(b'[{"event":"x","userId":"u"}]'), expect={400})
        c("JSON string body", t(b'"track"'), expect={400})
        c("unterminated string", t(b'{"event":"abc'), expect={400})
        c("single quotes", t(b"{'event':'x','userId':'u'}"), expect={400})
        c("comment in JSON", t(b'{"event":"x",/* c */"userId":"u"}'), expect={400})
        c("trailing comma", t(b'{"event":"x","userId":"u",}'), expect={400})
        c("no identity", t(b'{"event":"x"}'), expect={400})
        c("event name not a string", t(b'{"event":{"a":1},"userId":"u"}'), expect={400})
        c("userId as object", t(b'{"event":"x","userId":{"$gt":""}}'), expect={400})
        c("event above 32 KiB", t(b'{"event":"x","userId":"u","properties":{"p":"' + b"a" * 40000 + b'"}}'),
          expect={400, 413})
        c("100k keys", t(b'{"event":"x","userId":"u","properties":{' +
                         b",".join(b'"k%d":1' % i for i in range(100000)) + b"}}"), expect={400, 413})
        c("batch of 1001", req("POST", "/v1/batch", json.dumps(
            {"batch": [{"type": "track", "event": "x", "userId": "u"}] * 1001}).encode(),
            ["Content-Type: application/json", self.basic]), expect={400, 413})
        c("batch not an array", req("POST", "/v1/batch", b'{"batch":{"a":1}}',
                                    ["Content-Type: application/json", self.basic]), expect={400})
        c("batch of non-objects", req("POST", "/v1/batch", b'{"batch":[1,"x",null,[]]}',
                                      ["Content-Type: application/json", self.basic]), expect={400})

    def test_requests_around_the_body(self):
        c = self.case
        good = b'{"event":"x","userId":"u"}'
        c("wrong content type", self.track(good, ctype="text/html"), expect={415})
        c("multipart content type", self.track(good, ctype="multipart/form-data; boundary=x"), expect={415})
        c("no authorization", req("POST", "/v1/track", good, ["Content-Type: application/json"]), expect={401})
        c("wrong write key", req("POST", "/v1/track", good, ["Content-Type: application/json",
                                                               "Authorization: Basic d3Jvbmc6"]), expect={401})
        c("garbage authorization", req("POST", "/v1/track", good, ["Content-Type: application/json",
                                                                     "Authorization: Basic !!!\xff"]), expect={401, 400})
        c("bearer where basic is wanted", req("POST", "/v1/track", good, ["Content-Type: application/json",
                                                                            "Authorization: Bearer x"]), expect={401})
        c("admin route without key", req("GET", "/v1/profiles/user_id/u", None), expect={401})
        c("unknown route", req("GET", "/v1/nope", None), expect={404})
        c("wrong method on track", req("GET", "/v1/track", None, [self.basic]), expect={404, 405})
        c("path traversal", req("GET", "/../../../etc/passwd", None), expect={400, 404})
        c("bad percent escape", req("GET", "/v1/profiles/user_id/%zz", None, ["Authorization: Bearer " +
                                                                               self.srv.admin_key]), expect={400, 404})
        c("percent-encoded NUL", req("GET", "/v1/profiles/user_id/a%00b", None, ["Authorization: Bearer " +
                                                                                  self.srv.admin_key]), expect={400, 404})

    def test_zz_count(self):
        """The foundation issue asks for at least 50 hostile requests."""
        self.assertGreaterEqual(type(self).ran, 50)


if __name__ == "__main__":
    unittest.main()
