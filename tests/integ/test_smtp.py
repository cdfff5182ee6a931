"""test_smtp -- `nudge sink --smtp`, the development email catcher.

Starts the real binary on free loopback ports; first the README's quick start
(a journey's email step through `nudge serve`'s delivery thread to the sink),
then real emails sent with Python's smtplib (multipart with UTF-8 headers, base64 parts, dot-stuffed
lines, several recipients) and reads what it prints: the envelope, the decoded
headers, the text part and the links of the HTML part. Also checks the
protocol edges: command order, RSET, NOOP, over-long lines, and --http with
--smtp together.
"""
import http.client
import os
import queue
import signal
import smtplib
import socket
import subprocess
import threading
import unittest
import uuid
from email.message import EmailMessage
from email.headerregistry import Address

from nudgetest import NudgeServer

BIN = os.environ.get("NUDGE_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "nudge"))


class Sink:
    def __init__(self, *args):
        self.proc = subprocess.Popen([BIN, "sink"] + list(args),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.ports = {}
        for _ in range(("--http" in args) + ("--smtp" in args)):
            first = self.line()
            assert first.startswith("listening on "), first
            scheme = first.split("://")[0].rsplit(" ", 1)[1]
            self.ports[scheme] = int(first.rsplit(":", 1)[1])

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout=10):
        line = self.lines.get(timeout=timeout)
        if line is None:
            raise AssertionError("sink exited: %s" % self.proc.stderr.read().decode())
        return line

    def until(self, last):
        """Lines up to and including the one that starts with last."""
        out = []
        while True:
            l = self.line()
            out.append(l)
            if l.startswith(last):
                return out

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc


class SmtpSinkTest(unittest.TestCase):
    def setUp(self):
        self.sink = Sink("--smtp", "0")
        self.port = self.sink.ports["smtp"]

    def tearDown(self):
        self.assertEqual(self.sink.stop(), 0)

    def test_multipart_email_is_printed_decoded(self):
        msg = EmailMessage()
        msg["From"] = Address("Zoë Shop", "shop", "example.com")
        msg["To"] = Address("Ann Ô", "ann", "example.org")
        msg["Subject"] = "Grüße — your cart 🛒"
        msg["Message-ID"] = "<env-42@nudge.test>"
        msg["List-Unsubscribe"] = "<https://t.example/t/u/abc>, <mailto:u@example.com>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg.set_content("Hallo Ann,\n.your cart waits = yes\nä ö ü\n", cte="quoted-printable")
        msg.add_alternative('<p>Hallo <a href="https://shop.example/cart?a=1&amp;b=2">cart</a>'
                            " <a href='https://t.example/t/c/xyz'>more</a></p>", subtype="html")
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as c:
            refused = c.send_message(msg, to_addrs=["ann@example.org", "bob@example.org"])
            self.assertEqual(refused, {})
            code, text = c.noop()
            self.assertEqual(code, 250)
        out = self.sink.until("=> 250")
        self.assertTrue(out[0].startswith("--- email #1 "), out)
        self.assertIn("Envelope-From: shop@example.com", out)
        self.assertIn("Envelope-To: ann@example.org, bob@example.org", out)
        self.assertIn("From: Zoë Shop <shop@example.com>", out)
        self.assertIn("To: Ann Ô <ann@example.org>", out)
        self.assertIn("Subject: Grüße — your cart 🛒", out)
        self.assertIn("Message-ID: <env-42@nudge.test>", out)
        self.assertIn("List-Unsubscribe: <https://t.example/t/u/abc>, <mailto:u@example.com>", out)
        self.assertIn("List-Unsubscribe-Post: List-Unsubscribe=One-Click", out)
        i = out.index("Hallo Ann,")
        self.assertEqual(out[i:i + 3], ["Hallo Ann,", ".your cart waits = yes", "ä ö ü"])
        j = out.index("Links:")
        self.assertEqual(out[j + 1:j + 3], ["  https://shop.example/cart?a=1&b=2",
                                            "  https://t.example/t/c/xyz"])

    def test_base64_text_and_a_second_message_on_one_connection(self):
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as c:
            for n in (1, 2):
                msg = EmailMessage()
                msg["From"] = "a@example.com"
                msg["To"] = "b@example.org"
                msg["Subject"] = "number %d" % n
                msg.set_content("body %d 日本語\n" % n, cte="base64")
                c.send_message(msg)
        for n in (1, 2):
            out = self.sink.until("=> 250")
            self.assertTrue(out[0].startswith("--- email #%d " % n), out)
            self.assertIn("Subject: number %d" % n, out)
            self.assertIn("body %d 日本語" % n, out)
            self.assertNotIn("Links:", out)

    def test_protocol_order_and_bounds(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        f = s.makefile("rb")

        def cmd(line):
            s.sendall(line + b"\r\n")
            return f.readline()

        self.assertTrue(f.readline().startswith(b"220 "))
        self.assertTrue(cmd(b"HELO me").startswith(b"250 "))
        self.assertTrue(cmd(b"RCPT TO:<x@y.z>").startswith(b"503 "))
        self.assertTrue(cmd(b"DATA").startswith(b"503 "))
        self.assertTrue(cmd(b"MAIL FROM:bad").startswith(b"501 "))
        self.assertTrue(cmd(b"MAIL FROM:<a@b.c>").startswith(b"250 "))
        self.assertTrue(cmd(b"RSET").startswith(b"250 "))
        self.assertTrue(cmd(b"RCPT TO:<x@y.z>").startswith(b"503 "))  # RSET forgot MAIL
        self.assertTrue(cmd(b"X" * 5000).startswith(b"500 "))  # line too long
        self.assertTrue(cmd(b"NOOP").startswith(b"250 "))  # and the session goes on
        self.assertTrue(cmd(b"VRFY x").startswith(b"502 "))
        self.assertTrue(cmd(b"QUIT").startswith(b"221 "))
        self.assertEqual(f.readline(), b"")  # closed
        s.close()

    def test_message_over_the_cap_is_refused(self):
        with smtplib.SMTP("127.0.0.1", self.port, timeout=20) as c:
            big = ("x" * 998 + "\r\n").encode() * (11 * 1024)  # 11 MiB
            with self.assertRaises(smtplib.SMTPDataError) as e:
                c.sendmail("a@example.com", ["b@example.org"], b"Subject: big\r\n\r\n" + big)
            self.assertEqual(e.exception.smtp_code, 552)
            # the connection still takes a normal message afterwards
            c.sendmail("a@example.com", ["b@example.org"], b"Subject: small\r\n\r\nok\r\n")
        out = self.sink.until("=> 250")
        self.assertIn("Subject: small", out)


class BothTest(unittest.TestCase):
    def test_http_and_smtp_together(self):
        s = Sink("--http", "0", "--smtp", "0")
        try:
            self.assertEqual(set(s.ports), {"http", "smtp"})
            c = http.client.HTTPConnection("127.0.0.1", s.ports["http"], timeout=10)
            c.request("POST", "/hook", body=b'{"a":1}', headers={"Content-Type": "application/json"})
            self.assertEqual(c.getresponse().status, 200)
            c.close()
            s.until("=> 200")
            with smtplib.SMTP("127.0.0.1", s.ports["smtp"], timeout=10) as m:
                m.sendmail("a@example.com", ["b@example.org"], b"Subject: hi\r\n\r\nthere\r\n")
            out = s.until("=> 250")
            self.assertIn("Subject: hi", out)
            self.assertIn("there", out)
        finally:
            self.assertEqual(s.stop(), 0)

    def test_smtp_port_in_use_fails(self):
        s = Sink("--smtp", "0")
        try:
            p = subprocess.run([BIN, "sink", "--smtp", str(s.ports["smtp"])],
                               capture_output=True, timeout=10)
            self.assertEqual(p.returncode, 2)
            self.assertIn(b"cannot listen", p.stderr)
        finally:
            self.assertEqual(s.stop(), 0)


class QuickStartTest(unittest.TestCase):
    """nudge serve -> [smtp] -> nudge sink --smtp: what the quick start shows."""

    def test_journey_email_reaches_the_sink(self):
        sink = Sink("--smtp", "0")
        cfg = ("[smtp]\nhost = 127.0.0.1\nport = %d\ntls = none\nhelo = mail.quick.test\n"
               % sink.ports["smtp"])
        srv = NudgeServer(config_text=cfg).start()
        try:
            tmpl = {"channel": "email", "from": "Shöp <shop@example.com>",
                    "subject": "Grüße, {{ profile.traits.first_name }}",
                    "html": "<p>Hallo {{ profile.traits.first_name }},</p>"
                            "<p><a href=\"https://shop.example/cart\">your cart</a></p>"}
            journey = {"id": "quick", "entry": {"event": "Cart Abandoned"}, "start": "mail",
                       "steps": {"mail": {"message": {"channel": "email", "template": "quick-mail",
                                                      "category": "marketing"}, "next": "done"},
                                 "done": {"end": {}}}}
            self.assertEqual(srv.request("PUT", "/v1/templates/quick-mail", tmpl, auth="admin").status, 200)
            self.assertEqual(srv.request("PUT", "/v1/journeys/quick", journey, auth="admin").status, 200)
            self.assertEqual(srv.request("POST", "/v1/journeys/quick/publish", auth="admin").status, 200)
            u = "q-" + uuid.uuid4().hex[:8]
            addr = u + "@example.org"
            self.assertEqual(srv.post("/v1/identify", {"userId": u, "traits": {
                "first_name": "Jürgen", "email": addr}}).status, 200)
            self.assertEqual(srv.post("/v1/track", {"userId": u, "event": "Cart Abandoned"}).status, 200)
            out = sink.until("=> 250")
            self.assertIn("Envelope-From: shop@example.com", out)
            self.assertIn("Envelope-To: %s" % addr, out)
            self.assertIn("From: Shöp <shop@example.com>", out)
            self.assertIn("Subject: Grüße, Jürgen", out)
            self.assertTrue(any(l.startswith("Message-ID: <") and l.endswith("@mail.quick.test>")
                                for l in out), out)
            self.assertIn("Hallo Jürgen,", out)
            # the text part is derived from the HTML; the link is the tracked one
            self.assertTrue(any(l.startswith("your cart (http") and "/t/c/" in l for l in out), out)
            links = out[out.index("Links:") + 1:-1]
            self.assertTrue(any("/t/c/" in l for l in links), out)
        finally:
            srv.__exit__(None, None, None)
            self.assertEqual(sink.stop(), 0)


if __name__ == "__main__":
    unittest.main()
