"""Email end to end: journey -> rendered envelope -> SMTP relay (a real aiosmtpd).

Checks what the relay received, parsed by Python's email parser: MIME
structure, UTF-8 subject and body, Message-ID from the envelope id and stable
across a retry, List-Unsubscribe headers, rewritten links; a 4xx then 2xx gives
one delivery; a 5xx is a hard bounce that suppresses the address.
"""
import os
import re
import time
import unittest
import uuid

from nudgetest import NudgeServer
from smtpsink import SmtpSink

JOURNEY = {
    "id": "mailer",
    "entry": {"event": "Mail Me"},
    "start": "mail",
    "steps": {
        "mail": {"message": {"channel": "email", "template": "hello-mail", "category": "marketing"},
                 "next": "done"},
        "done": {"end": {}},
    },
}
TEMPLATE = {
    "channel": "email",
    "from": "Shöp <shop@example.com>",
    "subject": "Grüße, {{ profile.traits.first_name }} — 20 % off",
    "html": "<html><body><h1>Grüße {{ profile.traits.first_name }}</h1>"
            "<a href=\"https://shop.example/deal\">Deal</a></body></html>",
}


class EmailTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.smtp = SmtpSink()
        cfg = "[smtp]\nhost = 127.0.0.1\nport = %d\ntls = none\nhelo = mail.nudge.test\n" % cls.smtp.port
        cls.srv = NudgeServer(config_text=cfg).start()
        s = cls.srv
        assert s.request("PUT", "/v1/templates/hello-mail", TEMPLATE, auth="admin").status == 200
        assert s.request("PUT", "/v1/journeys/mailer", JOURNEY, auth="admin").status == 200
        assert s.request("POST", "/v1/journeys/mailer/publish", auth="admin").status == 200

    @classmethod
    def tearDownClass(cls):
        cls.srv.__exit__(None, None, None)
        cls.smtp.close()

    def user(self):
        u = "e-" + uuid.uuid4().hex[:10]
        addr = u + "@example.org"
        self.assertEqual(self.srv.post("/v1/identify", {"userId": u, "traits": {"first_name": "Jürgen", "email": addr}}).status, 200)
        return u, addr

    def mail(self, u):
        self.assertEqual(self.srv.post("/v1/track", {"userId": u, "event": "Mail Me"}).status, 200)

    def envelopes(self, u):
        r = self.srv.request("GET", "/v1/profiles/user_id/%s/messages" % u, auth="admin")
        return r.json()["messages"] if r.status == 200 else []

    def test_mime_headers_and_links(self):
        u, addr = self.user()
        self.mail(u)
        got = self.smtp.wait(lambda s: s.to(addr))
        msg = got[0]["msg"]
        self.assertEqual(msg.get_content_type(), "multipart/alternative")
        parts = {p.get_content_type(): p for p in msg.iter_parts()}
        self.assertEqual(set(parts), {"text/plain", "text/html"})
        self.assertEqual(str(msg["Subject"]), "Grüße, Jürgen — 20 % off")
        self.assertIn("Shöp", str(msg["From"]))
        self.assertIn("Grüße Jürgen", parts["text/html"].get_content())
        self.assertIn("Jürgen", parts["text/plain"].get_content())
        env = self.envelopes(u)[0]
        self.assertEqual(msg["Message-ID"], "<%s@mail.nudge.test>" % env["id"])
        lu = msg["List-Unsubscribe"]
        self.assertRegex(lu, r"<http://127\.0\.0\.1:\d+/t/u/[^>]+>")
        self.assertEqual(msg["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click")
        html = parts["text/html"].get_content()
        self.assertNotIn("https://shop.example/deal", html)
        self.assertRegex(html, r'href="http://127\.0\.0\.1:\d+/t/c/')
        self.assertIsNotNone(msg["Date"])

    def test_tempfail_then_success_delivers_once_with_the_same_message_id(self):
        u, addr = self.user()
        self.smtp.rec.rcpt_script[addr] = ["451 4.3.0 try again later"]
        self.mail(u)
        got = self.smtp.wait(lambda s: s.to(addr), timeout=20)
        time.sleep(1.0)
        self.assertEqual(len(self.smtp.to(addr)), 1)
        self.assertEqual(self.smtp.rec.attempts[addr], 2)
        env = self.smtp.wait(lambda s: [e for e in self.envelopes(u) if e.get("state") == "delivered"])
        self.assertEqual(got[0]["msg"]["Message-ID"], "<%s@mail.nudge.test>" % env[0]["id"])

    def test_hard_bounce_suppresses_the_address(self):
        u, addr = self.user()
        self.smtp.rec.rcpt_script[addr] = ["550 5.1.1 no such user"]
        self.mail(u)
        self.smtp.wait(lambda s: [e for e in self.envelopes(u) if e.get("state") == "failed"])
        r = self.srv.request("GET", "/v1/suppression?channel=email", auth="admin")
        items = {i["address"]: i for i in r.json()["items"]}
        self.assertIn(addr, items)
        self.assertEqual(items[addr]["reason"], "hard_bounce")
        # The next journey skips the address.
        self.mail(u)
        time.sleep(1.0)
        self.assertEqual(len(self.envelopes(u)), 1)
        self.assertEqual(self.smtp.rec.attempts[addr], 1)


if __name__ == "__main__":
    unittest.main()


class TrackingConfigTest(unittest.TestCase):
    def test_a_base_url_links_cannot_use_is_refused_at_start(self):
        import subprocess
        from nudgetest import BIN
        import tempfile
        d = tempfile.mkdtemp(prefix="nudge-test-")
        for bad in ("ftp://t.example.com", "https://t.example.com/?x=1", "https://t example.com",
                    "t.example.com"):
            conf = os.path.join(d, "n.conf")
            with open(conf, "w") as f:
                f.write("[tracking]\nbase_url = %s\n" % bad)
            p = subprocess.run([BIN, "serve", "--config", conf, "--listen", "127.0.0.1:0",
                                "--data-dir", os.path.join(d, "data"), "--write-key", "w",
                                "--admin-key", "a"], capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 2, (bad, p.stderr))
            self.assertIn("tracking.base_url", p.stderr)
