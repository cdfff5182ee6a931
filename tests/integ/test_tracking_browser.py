"""Tracking in a real browser: Debian's headless Chromium opens the email nudge sent.

A journey sends an email through a real SMTP server (aiosmtpd); the test takes
the HTML part exactly as the relay received it and serves it from a local HTTP
server that also plays the destination site. Chromium loads the email (which
fetches the open pixel) and, in a second run, clicks its tracked link and
follows nudge's redirect. The test checks nudge's own records (the
nudge_tracking_total counters in /metrics and the envelope's counters), that
the destination received exactly the URL the template linked to, and that
forged, altered and wrong-kind tokens get 404 and never a redirect -- in the
browser and over plain HTTP. The unsubscribe page (GET changes nothing), a
reader pressing its button (marketing consent for email becomes "denied"),
and the RFC 8058 one-click POST are checked too.

Chromium runs as `chromium --headless --dump-dom` with a virtual time budget,
so it waits for images and for the navigation a click starts; pressing the
unsubscribe button goes through the DevTools protocol (class CDP).
"""
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

from nudgetest import NudgeServer
from smtpsink import SmtpSink

CHROMIUM = shutil.which("chromium")
SECRET = "browser-test-secret-0123456789"

JOURNEY = {
    "id": "tracked",
    "entry": {"event": "Deal Viewed"},
    "start": "mail",
    "steps": {
        "mail": {"message": {"channel": "email", "template": "tracked-mail", "category": "marketing"},
                 "next": "done"},
        "done": {"end": {}},
    },
}

CLICKER = ('<script>window.addEventListener("load", function () {'
           ' document.querySelector(\'a[href*="/t/c/"]\').click(); });</script>')


class Site(http.server.ThreadingHTTPServer):
    """The page host and the destination: records every request it gets."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), SiteHandler)
        self.port = self.server_address[1]
        self.hits = []
        self.lock = threading.Lock()
        self.email_html = b""
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def landing_hits(self):
        with self.lock:
            return [h for h in self.hits if h[0].startswith("/landing")]


class SiteHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.hits.append((self.path, self.headers.get("User-Agent", "")))
        if self.path == "/email.html":
            body = srv.email_html
        elif self.path == "/click.html":
            # The email as received, plus the "user" clicking its tracked link.
            body = srv.email_html + CLICKER.encode()
        elif self.path.startswith("/landing"):
            body = b"<html><body><p id=\"landed\">LANDED</p></body></html>"
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def chromium(url, timeout=90):
    """Loads url in headless Chromium; returns the DOM after load (and after a
    navigation the page starts)."""
    ud = tempfile.mkdtemp(prefix="nudge-chromium-")
    try:
        p = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--no-proxy-server",
             "--disable-dev-shm-usage", "--user-data-dir=" + ud,
             "--virtual-time-budget=5000", "--dump-dom", url],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=timeout)
        return p.stdout.decode("utf-8", "replace")
    finally:
        shutil.rmtree(ud, ignore_errors=True)


class CDP:
    """The smallest DevTools-protocol client (Python's standard library has no
    websocket client): one Chromium, its first page, JSON calls over a
    websocket. Used where the test must press a button on nudge's own page,
    whose Content-Security-Policy rightly forbids injected scripts."""
    def __init__(self, chromium):
        self.ud = tempfile.mkdtemp(prefix="nudge-cdp-")
        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--no-proxy-server",
             "--disable-dev-shm-usage", "--user-data-dir=" + self.ud,
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.ud, "DevToolsActivePort")
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with open(port_file) as f:
                    lines = f.read().split("\n")
                if lines[0].strip():
                    port = int(lines[0])
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("chromium did not start its DevTools endpoint")
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/json/list")
        targets = json.loads(c.getresponse().read())
        c.close()
        page = [t for t in targets if t["type"] == "page"][0]
        path = page["webSocketDebuggerUrl"].split(str(port), 1)[1]
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n" % (path, port, key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError("websocket upgrade refused: %r" % head)
        self.next_id = 0

    def _recv_exact(self, n):
        b = b""
        while len(b) < n:
            chunk = self.sock.recv(n - len(b))
            if not chunk:
                raise RuntimeError("devtools connection closed")
            b += chunk
        return b

    def _recv_msg(self):
        data = b""
        while True:
            h = self._recv_exact(2)
            fin, op, n = h[0] & 0x80, h[0] & 0x0f, h[1] & 0x7f
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            payload = self._recv_exact(n)
            if op == 8:
                raise RuntimeError("devtools closed the websocket")
            if op in (0, 1, 2):
                data += payload
                if fin:
                    return json.loads(data)

    def call(self, method, **params):
        self.next_id += 1
        msg = json.dumps({"id": self.next_id, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        n = len(msg)
        hdr = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                               bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                               bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
        while True:
            r = self._recv_msg()
            if r.get("id") == self.next_id:
                if "error" in r:
                    raise RuntimeError("%s: %s" % (method, r["error"]))
                return r["result"]

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r["result"].get("value")

    def wait(self, expr, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                v = self.eval(expr)
                if v:
                    return v
            except RuntimeError:
                pass
            time.sleep(0.1)
        raise AssertionError("page never satisfied: " + expr)

    def close(self):
        try:
            self.sock.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            shutil.rmtree(self.ud, ignore_errors=True)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def forge_click(secret, envelope_id, url):
    """A click token in nudge's documented format (docs/tracking.md) signed
    with a secret of our choosing."""
    mac_key = hmac.new(secret.encode(), b"nudge/track/v1", hashlib.sha256).digest()
    # version 1, kind 2 (click) | 0x80 (the hex envelope id is packed), id length
    payload = bytes([1, 2 | 0x80, len(envelope_id) // 2]) + bytes.fromhex(envelope_id) + url.encode()
    return b64url(payload + hmac.new(mac_key, payload, hashlib.sha256).digest()[:16])


@unittest.skipUnless(CHROMIUM, "Debian's chromium is not installed (scripts/setup installs it)")
class TrackingBrowserTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site()
        cls.smtp = SmtpSink()
        cfg = ("[smtp]\nhost = 127.0.0.1\nport = %d\ntls = none\nhelo = mail.nudge.test\n"
               "[tracking]\nsecret = %s\n" % (cls.smtp.port, SECRET))
        cls.srv = NudgeServer(config_text=cfg).start()
        cls.landing = "http://127.0.0.1:%d/landing?item=42&ref=email" % cls.site.port
        template = {
            "channel": "email",
            "from": "Shop <shop@example.com>",
            "subject": "A deal for {{ profile.traits.first_name }}",
            "html": "<!DOCTYPE html><html><head><title>Deal</title></head><body>"
                    "<h1>Hi {{ profile.traits.first_name }}</h1>"
                    "<p><a href=\"" + cls.landing.replace("&", "&amp;") + "\">See the deal</a></p>"
                    "<p><a href=\"mailto:help@shop.example\">Help</a></p>"
                    "<p><a href=\"{{ message.unsubscribe_url }}\">Unsubscribe</a></p>"
                    "</body></html>",
        }
        s = cls.srv
        assert s.request("PUT", "/v1/templates/tracked-mail", template, auth="admin").status == 200
        assert s.request("PUT", "/v1/journeys/tracked", JOURNEY, auth="admin").status == 200
        assert s.request("POST", "/v1/journeys/tracked/publish", auth="admin").status == 200

    @classmethod
    def tearDownClass(cls):
        cls.srv.__exit__(None, None, None)
        cls.smtp.close()
        cls.site.shutdown()

    # -- helpers ---------------------------------------------------------
    def send_email(self):
        """Runs the journey for a new person; returns (user id, HTML part)."""
        u = "b-" + uuid.uuid4().hex[:10]
        addr = u + "@example.org"
        self.assertEqual(self.srv.post("/v1/identify", {"userId": u, "traits": {
            "first_name": "Ada", "email": addr}}).status, 200)
        self.assertEqual(self.srv.post("/v1/track", {"userId": u, "event": "Deal Viewed"}).status, 200)
        msg = self.smtp.wait(lambda s: s.to(addr), timeout=20)[0]["msg"]
        html = msg.get_body(preferencelist=("html",)).get_content()
        return u, html

    def counter(self, kind):
        m = re.search(r'^nudge_tracking_total\{kind="%s"\} (\d+)' % kind, self.srv.metrics(), re.M)
        return int(m.group(1)) if m else 0

    def wait_counter(self, kind, at_least, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.counter(kind) >= at_least:
                return
            time.sleep(0.1)
        self.fail("nudge_tracking_total{kind=%r} stayed below %d (is %d)" % (kind, at_least, self.counter(kind)))

    def envelope(self, u):
        r = self.srv.request("GET", "/v1/profiles/user_id/%s/messages" % u, auth="admin")
        self.assertEqual(r.status, 200, r)
        return r.json()["messages"][0]

    def get(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def links(self, html):
        base = "http://127.0.0.1:%d" % self.srv.port
        click = re.findall(r'href="' + re.escape(base) + r'/t/c/([A-Za-z0-9_-]+)"', html)
        pixel = re.findall(r'<img src="' + re.escape(base) + r'/t/o/([A-Za-z0-9_-]+)"', html)
        unsub = re.findall(r'href="' + re.escape(base) + r'/t/u/([A-Za-z0-9_-]+)"', html)
        return click, pixel, unsub

    # -- tests -----------------------------------------------------------
    def test_open_and_click_are_counted_and_the_redirect_lands(self):
        u, html = self.send_email()
        click, pixel, unsub = self.links(html)
        self.assertEqual(len(click), 1, html)     # the deal; not mailto:, not unsubscribe
        self.assertEqual(len(pixel), 1, html)
        self.assertEqual(len(unsub), 1, html)
        self.assertNotIn("/landing", html)
        self.assertIn('href="mailto:help@shop.example"', html)
        opens0, clicks0 = self.counter("open"), self.counter("click")
        landed0 = len(self.site.landing_hits())

        # 1. The email is opened: Chromium fetches the pixel.
        self.site.email_html = html.encode()
        dom = chromium("http://127.0.0.1:%d/email.html" % self.site.port)
        self.assertIn("Hi Ada", dom)
        self.wait_counter("open", opens0 + 1)
        self.assertEqual(len(self.site.landing_hits()), landed0)   # no click yet
        self.assertEqual(self.counter("click"), clicks0)

        # 2. The reader clicks the link: nudge counts it and redirects.
        dom = chromium("http://127.0.0.1:%d/click.html" % self.site.port)
        self.assertIn("LANDED", dom)
        hits = self.site.landing_hits()[landed0:]
        self.assertEqual(len(hits), 1, hits)
        self.assertEqual("http://127.0.0.1:%d%s" % (self.site.port, hits[0][0]), self.landing)
        self.assertIn("HeadlessChrome", hits[0][1])
        self.wait_counter("click", clicks0 + 1)

        # nudge's own record of the envelope agrees.
        deadline = time.time() + 10
        while time.time() < deadline:
            env = self.envelope(u)
            if env.get("clicks", 0) >= 1 and env.get("opens", 0) >= 1:
                break
            time.sleep(0.1)
        self.assertGreaterEqual(env.get("opens", 0), 1, env)
        self.assertGreaterEqual(env.get("clicks", 0), 1, env)

    def test_forged_altered_and_wrong_kind_tokens_get_404(self):
        u, html = self.send_email()
        click, pixel, _ = self.links(html)
        tok, ptok = click[0], pixel[0]
        env_id = self.envelope(u)["id"]
        clicks0 = self.counter("click")

        # The genuine link redirects (over plain HTTP, no browser).
        status, headers, _ = self.get("/t/c/" + tok)
        self.assertEqual(status, 302)
        self.assertEqual(headers.get("Location"), self.landing)

        flip = lambda t, i: t[:i] + ("A" if t[i] != "A" else "B") + t[i + 1:]
        bad = [flip(tok, 0), flip(tok, len(tok) // 2), flip(tok, len(tok) - 1),
               tok[:-1], tok[:-4], tok + "A", tok + "AAAA", tok[1:],
               forge_click("not-the-real-secret-0123", env_id, "https://evil.example/"),
               forge_click("not-the-real-secret-0123", env_id, self.landing),
               ptok,                  # an open token is not a click token
               "", "x" * 5000]
        for t in bad:
            status, headers, _ = self.get("/t/c/" + t)
            self.assertEqual(status, 404, t)
            self.assertNotIn("Location", headers)
        for t in (flip(ptok, 3), ptok[:-2], tok):
            self.assertEqual(self.get("/t/o/" + t)[0], 404, t)
        # The format itself is right: the same forgery with the real secret works.
        good = forge_click(SECRET, env_id, self.landing)
        self.assertEqual(self.get("/t/c/" + good)[0], 302)

        # In the browser: an altered link shows nudge's 404, the site is not reached.
        before = len(self.site.landing_hits())
        dom = chromium("http://127.0.0.1:%d/t/c/%s" % (self.srv.port, flip(tok, len(tok) // 2)))
        self.assertNotIn("LANDED", dom)
        evil = forge_click("not-the-real-secret-0123", env_id, self.landing)
        dom = chromium("http://127.0.0.1:%d/t/c/%s" % (self.srv.port, evil))
        self.assertNotIn("LANDED", dom)
        self.assertEqual(len(self.site.landing_hits()), before)
        # Only the two genuine requests counted as clicks.
        self.wait_counter("click", clicks0 + 2)
        time.sleep(0.3)
        self.assertEqual(self.counter("click"), clicks0 + 2)

    def test_unsubscribe_page_and_one_click(self):
        u, html = self.send_email()
        _, _, unsub = self.links(html)
        unsubs0 = self.counter("unsubscribe")
        url = "http://127.0.0.1:%d/t/u/%s" % (self.srv.port, unsub[0])

        dom = chromium(url)          # what a link scanner or a reader's GET sees
        self.assertIn("<form", dom)
        self.assertIn('value="One-Click"', dom)
        time.sleep(0.3)
        self.assertEqual(self.counter("unsubscribe"), unsubs0)   # GET changes nothing

        c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=10)
        c.request("POST", "/t/u/" + unsub[0], body="List-Unsubscribe=One-Click",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        r = c.getresponse()
        body = r.read().decode()
        c.close()
        self.assertEqual(r.status, 200)
        self.assertIn("unsubscribed", body)
        self.wait_counter("unsubscribe", unsubs0 + 1)
        # A one-click POST to an altered token is refused.
        c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=10)
        c.request("POST", "/t/u/" + unsub[0][:-1], body="List-Unsubscribe=One-Click",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(c.getresponse().status, 404)
        c.close()

    def test_reader_unsubscribes_through_the_page(self):
        u, html = self.send_email()
        _, _, unsub = self.links(html)
        unsubs0 = self.counter("unsubscribe")
        d = CDP(CHROMIUM)
        try:
            d.call("Page.navigate", url="http://127.0.0.1:%d/t/u/%s" % (self.srv.port, unsub[0]))
            d.wait("document.readyState === 'complete' && !!document.querySelector('form button')")
            time.sleep(0.3)
            self.assertEqual(self.counter("unsubscribe"), unsubs0)   # showing the page changes nothing
            d.eval("document.querySelector('form button').click()")   # the reader presses it
            d.wait("document.readyState === 'complete' && "
                   "document.body.innerText.indexOf('You are unsubscribed') >= 0")
        finally:
            d.close()
        self.wait_counter("unsubscribe", unsubs0 + 1)
        prof = self.srv.wait_profile("user_id", u, lambda p: json.dumps(p).find('"denied"') >= 0)
        self.assertEqual(prof["consent"]["email"]["marketing"], "denied", prof)

if __name__ == "__main__":
    unittest.main()
