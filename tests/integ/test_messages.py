"""Message steps end to end (engine side): rendering, tracking links, suppression,
consent and the public tracking endpoints, against the real server.

Envelopes are read back through GET /v1/profiles/{ns}/{value}/messages; the
tracking endpoints are called like a mail client would (pixel, link, one-click
unsubscribe) and their effects checked in /metrics and the profile.
"""
import re
import time
import unittest
import urllib.request
import uuid
from http.client import HTTPConnection
from urllib.parse import urlparse

from nudgetest import NudgeServer

JOURNEY = {
    "id": "promo",
    "entry": {"event": "Promo Requested"},
    "start": "mail",
    "steps": {
        "mail": {"message": {"channel": "email", "template": "promo-mail", "category": "marketing"},
                 "next": "done"},
        "done": {"end": {}},
    },
}
TEMPLATE = {
    "channel": "email",
    "subject": "Hello {{ profile.traits.first_name | default: 'friend' }}",
    "html": "<html><body><p>Hi {{ profile.traits.first_name }}</p>"
            "<a href=\"https://shop.example/deal?x=1&amp;y=2\">Deal</a>"
            "<a href=\"mailto:help@example.com\">Help</a>"
            "<a href=\"{{ message.unsubscribe_url }}\">Unsubscribe</a></body></html>",
    "text": "Hi {{ profile.traits.first_name }}, see https://shop.example/deal",
}


class MessageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = NudgeServer().start()
        s = cls.srv
        assert s.request("PUT", "/v1/templates/promo-mail", TEMPLATE, auth="admin").status == 200
        assert s.request("PUT", "/v1/journeys/promo", JOURNEY, auth="admin").status == 200
        r = s.request("POST", "/v1/journeys/promo/publish", auth="admin")
        assert r.status == 200, r

    @classmethod
    def tearDownClass(cls):
        cls.srv.__exit__(None, None, None)

    def user(self, first="Zoë", email=None):
        u = "m-" + uuid.uuid4().hex[:10]
        traits = {"first_name": first, "email": email or (u + "@Example.com")}
        self.assertEqual(self.srv.post("/v1/identify", {"userId": u, "traits": traits}).status, 200)
        return u

    def messages(self, u, n):
        deadline = time.time() + 10
        while time.time() < deadline:
            r = self.srv.request("GET", "/v1/profiles/user_id/%s/messages" % u, auth="admin")
            if r.status == 200 and len(r.json()["messages"]) >= n:
                return r.json()["messages"]
            time.sleep(0.05)
        self.fail("no %d messages for %s: %r" % (n, u, r))

    def request_promo(self, u):
        self.assertEqual(self.srv.post("/v1/track", {"userId": u, "event": "Promo Requested"}).status, 200)

    def get(self, url, method="GET", body=None, headers=None):
        p = urlparse(url)
        c = HTTPConnection(p.hostname, p.port, timeout=10)
        c.request(method, p.path + ("?" + p.query if p.query else ""), body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, dict(r.getheaders()), data

    def metric(self, name, labels=""):
        m = re.search(r"^%s%s (\d+)$" % (re.escape(name), re.escape(labels)), self.srv.metrics(), re.M)
        return int(m.group(1)) if m else 0

    def test_email_is_rendered_with_tracking(self):
        u = self.user()
        self.request_promo(u)
        env = self.messages(u, 1)[0]
        self.assertEqual(env["channel"], "email")
        self.assertEqual(env["to"], u.lower() + "@example.com")
        m = env["message"]
        self.assertEqual(m["subject"], "Hello Zoë")
        self.assertIn("Hi Zoë", m["text"])
        self.assertNotIn("https://shop.example/deal", m["html"])          # rewritten
        self.assertIn("mailto:help@example.com", m["html"])                # left alone
        self.assertRegex(m["html"], r'<img src="http://127\.0\.0\.1:\d+/t/o/[^"]+"')
        self.assertTrue(m["list_unsubscribe_url"].startswith("http://127.0.0.1:%d/t/u/" % self.srv.port))
        self.assertTrue(m["one_click"])

    def test_click_open_and_forged_tokens(self):
        u = self.user()
        self.request_promo(u)
        html = self.messages(u, 1)[0]["message"]["html"]
        click = re.search(r'href="(http://[^"]+/t/c/[^"]+)"', html).group(1)
        pixel = re.search(r'src="(http://[^"]+/t/o/[^"]+)"', html).group(1)
        clicks0 = self.metric("nudge_tracking_total", '{kind="click"}')
        opens0 = self.metric("nudge_tracking_total", '{kind="open"}')
        status, headers, body = self.get(click)
        self.assertEqual(status, 302)
        self.assertEqual(headers["Location"], "https://shop.example/deal?x=1&y=2")
        status, headers, body = self.get(pixel)
        self.assertEqual((status, headers["Content-Type"]), (200, "image/gif"))
        self.assertTrue(body.startswith(b"GIF8"))
        deadline = time.time() + 5
        while time.time() < deadline and (self.metric("nudge_tracking_total", '{kind="click"}') == clicks0 or
                                          self.metric("nudge_tracking_total", '{kind="open"}') == opens0):
            time.sleep(0.05)
        self.assertEqual(self.metric("nudge_tracking_total", '{kind="click"}'), clicks0 + 1)
        self.assertEqual(self.metric("nudge_tracking_total", '{kind="open"}'), opens0 + 1)
        # Altered, truncated or forged tokens never redirect.
        tok = click.rsplit("/", 1)[1]
        base = click.rsplit("/", 1)[0]
        for bad in (tok[:-1], tok[:-2] + ("A" if tok[-2] != "A" else "B") + tok[-1], "AAAA", tok + "x"):
            status, headers, _ = self.get(base + "/" + bad)
            self.assertEqual(status, 404, bad)
            self.assertNotIn("Location", headers)
        # An open token is not a click token.
        status, _, _ = self.get(base + "/" + pixel.rsplit("/", 1)[1])
        self.assertEqual(status, 404)

    def test_unsubscribe_revokes_marketing_consent(self):
        u = self.user()
        self.request_promo(u)
        env = self.messages(u, 1)[0]
        url = env["message"]["list_unsubscribe_url"]
        status, headers, page = self.get(url)
        self.assertEqual(status, 200)
        self.assertIn(b"<form", page)
        self.assertIn("default-src 'none'", headers["Content-Security-Policy"])
        # GET alone changes nothing (link scanners); the RFC 8058 POST does.
        status, _, _ = self.get(url, "POST", b"List-Unsubscribe=One-Click",
                                {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 200)
        p = self.srv.wait_profile("user_id", u, lambda p: p.get("consent", {}).get("email", {}).get("marketing") == "denied")
        self.assertEqual(p["consent"]["email"]["marketing"], "denied")
        before = self.metric("nudge_messages_excluded_total", '{reason="no_consent"}')
        self.request_promo(u)
        deadline = time.time() + 5
        while time.time() < deadline and self.metric("nudge_messages_excluded_total", '{reason="no_consent"}') == before:
            time.sleep(0.05)
        self.assertEqual(self.metric("nudge_messages_excluded_total", '{reason="no_consent"}'), before + 1)
        self.assertEqual(len(self.messages(u, 1)), 1)

    def test_consent_api_grants_and_denies(self):
        u = self.user()
        r = self.srv.request("PUT", "/v1/profiles/user_id/%s/consent" % u, {"email": {"marketing": "denied"}}, auth="admin")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["consent"]["email"]["marketing"], "denied")
        self.request_promo(u)
        deadline = time.time() + 5
        before = self.metric("nudge_messages_excluded_total", '{reason="no_consent"}')
        self.request_promo(u)
        while time.time() < deadline and self.metric("nudge_messages_excluded_total", '{reason="no_consent"}') == before:
            time.sleep(0.05)
        self.assertGreater(self.metric("nudge_messages_excluded_total", '{reason="no_consent"}'), before)
        r = self.srv.request("PUT", "/v1/profiles/user_id/%s/consent" % u, {"email": "granted"}, auth="admin")
        self.assertEqual(r.json()["consent"]["email"]["marketing"], "granted")
        self.request_promo(u)
        self.assertEqual(len(self.messages(u, 1)), 1)
        # Validation names the field.
        r = self.srv.request("PUT", "/v1/profiles/user_id/%s/consent" % u, {"fax": "granted"}, auth="admin")
        self.assertEqual((r.status, r.json()["error"]["field"]), (400, "fax"))
        r = self.srv.request("PUT", "/v1/profiles/user_id/%s/consent" % u, {"sms": "maybe"}, auth="admin")
        self.assertEqual((r.status, r.json()["error"]["field"]), (400, "sms"))
        r = self.srv.request("PUT", "/v1/profiles/user_id/nobody-%s/consent" % u, {"sms": "denied"}, auth="admin")
        self.assertEqual(r.status, 404)
        self.assertEqual(self.srv.request("PUT", "/v1/profiles/user_id/" + u, {}, auth="admin").status, 405)

    def test_suppression_list_excludes(self):
        email = "supp-%s@example.com" % uuid.uuid4().hex[:6]
        u = self.user(email=email)
        r = self.srv.request("PUT", "/v1/suppression/email/" + email.upper(), auth="admin")
        self.assertEqual(r.status, 200, r)
        r = self.srv.request("GET", "/v1/suppression?channel=email", auth="admin")
        self.assertIn(email, [i["address"] for i in r.json()["items"]])
        before = self.metric("nudge_messages_excluded_total", '{reason="suppressed"}')
        self.request_promo(u)
        deadline = time.time() + 5
        while time.time() < deadline and self.metric("nudge_messages_excluded_total", '{reason="suppressed"}') == before:
            time.sleep(0.05)
        self.assertEqual(self.metric("nudge_messages_excluded_total", '{reason="suppressed"}'), before + 1)
        self.assertEqual(self.srv.request("DELETE", "/v1/suppression/email/" + email, auth="admin").status, 200)
        self.request_promo(u)
        self.assertEqual(len(self.messages(u, 1)), 1)

    def suppressed(self, addr):
        r = self.srv.request("GET", "/v1/suppression/email/" + addr, auth="admin")
        return r.json() if r.status == 200 else None

    def test_bounce_and_complaint_feedback_suppress(self):
        import json as _json
        a1, a2, a3 = ("fb-%s@example.com" % uuid.uuid4().hex[:6] for _ in range(3))
        # nudge's own format
        r = self.srv.request("POST", "/v1/feedback/email",
                             [{"type": "bounce", "email": a1, "permanent": True, "reason": "550 5.1.1"},
                              {"type": "bounce", "email": a3, "permanent": False}], auth="admin")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"accepted": 2, "suppressing": 1})
        # SES complaint as delivered by SNS
        ses = {"notificationType": "Complaint",
               "complaint": {"complainedRecipients": [{"emailAddress": a2.upper()}],
                             "timestamp": "2026-11-27T10:00:00.000Z", "feedbackId": "x"},
               "mail": {"messageId": "m1", "destination": [a2]}}
        sns = {"Type": "Notification", "MessageId": "n1", "TopicArn": "arn:aws:sns:eu-west-1:1:ses",
               "Message": _json.dumps(ses), "Timestamp": "2026-11-27T10:00:00.000Z"}
        r = self.srv.request("POST", "/v1/feedback/email", sns, auth="admin")
        self.assertEqual(r.status, 200, r)
        deadline = time.time() + 5
        while time.time() < deadline and not (self.suppressed(a1) and self.suppressed(a2)):
            time.sleep(0.05)
        self.assertEqual(self.suppressed(a1)["reason"], "hard_bounce")
        self.assertEqual(self.suppressed(a2)["reason"], "complaint")
        self.assertIsNone(self.suppressed(a3))
        # Bad input names the field; no key, no entry.
        r = self.srv.request("POST", "/v1/feedback/email", [{"type": "bounce"}], auth="admin")
        self.assertEqual(r.status, 400)
        self.assertTrue(r.json()["error"]["field"])
        self.assertEqual(self.srv.request("POST", "/v1/feedback/email", [], auth=None).status, 401)

    def test_header_injection_is_refused(self):
        u = self.user(first="Eve\r\nBcc: victim@example.com")
        before = self.metric("nudge_messages_excluded_total", '{reason="invalid_header"}')
        self.request_promo(u)
        deadline = time.time() + 5
        while time.time() < deadline and self.metric("nudge_messages_excluded_total", '{reason="invalid_header"}') == before:
            time.sleep(0.05)
        self.assertEqual(self.metric("nudge_messages_excluded_total", '{reason="invalid_header"}'), before + 1)

    def test_journey_secret_is_not_returned(self):
        j = dict(JOURNEY, id="secret-j", webhook_secret="s3cret-value-123",
                 entry={"event": "Never Sent"})
        self.assertEqual(self.srv.request("PUT", "/v1/journeys/secret-j", j, auth="admin").status, 200)
        self.assertEqual(self.srv.request("POST", "/v1/journeys/secret-j/publish", auth="admin").status, 200)
        r = self.srv.request("GET", "/v1/journeys/secret-j", auth="admin")
        self.assertEqual(r.status, 200)
        self.assertNotIn("s3cret-value-123", r.body)
        self.assertEqual(r.json()["versions"][0]["definition"]["webhook_secret"], "(set)")

    def test_erase_removes_messages(self):
        u = self.user()
        self.request_promo(u)
        self.messages(u, 1)
        self.assertEqual(self.srv.request("DELETE", "/v1/profiles/user_id/" + u, auth="admin").status, 200)
        self.assertEqual(self.srv.request("GET", "/v1/profiles/user_id/%s/messages" % u, auth="admin").status, 404)


if __name__ == "__main__":
    unittest.main()
