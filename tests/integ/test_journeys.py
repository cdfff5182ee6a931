"""Journeys end to end: the real server, real peers, the test clock.

Every example of examples/ is applied through the admin API and driven with
Segment events while POST /v1/debug/clock moves time. Messages go out on their
natural channels to real peers started by the test: email to an SMTP server
(aiosmtpd), SMS to a Twilio-shaped and push to an FCM-shaped HTTP endpoint, and
webhooks to an HTTP sink. The tests check who got what, exactly once, with the
right content.
"""
import json
import os
import time
import unittest
import uuid
from datetime import datetime, timedelta

from nudgetest import NudgeServer
from sink import Sink
from smtpsink import SmtpSink

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def load_example(name, sink):
    with open(os.path.join(EXAMPLES, name + ".json")) as f:
        text = f.read()
    return json.loads(text.replace("http://127.0.0.1:9999", sink.url()))


class JourneyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = Sink()
        cls.smtp = SmtpSink()
        cfg = ("[webhook]\nallow = 127.0.0.1/32\nsecret = test-secret\n"
               "[smtp]\nhost = 127.0.0.1\nport = %d\ntls = none\nhelo = nudge.test\n"
               "[sms]\nbase_url = %s\naccount_sid = AC123\nauth_token = tok\nfrom = +15550001111\n"
               "[push]\nbase_url = %s\nproject_id = proj\ntoken = push-token\n"
               % (cls.smtp.port, cls.sink.url(), cls.sink.url()))
        cls.srv = NudgeServer(extra_args=["--test-clock"], config_text=cfg).start()
        tdir = os.path.join(EXAMPLES, "templates")
        for f in sorted(os.listdir(tdir)):
            with open(os.path.join(tdir, f)) as fh:
                r = cls.srv.request("PUT", "/v1/templates/" + f[:-5], json.load(fh), auth="admin")
                assert r.status == 200, r
        for name in sorted(os.listdir(EXAMPLES)):
            if not name.endswith(".json"):
                continue
            doc = load_example(name[:-5], cls.sink)
            r = cls.srv.request("PUT", "/v1/journeys/" + doc["id"], doc, auth="admin")
            assert r.status == 200, r
            r = cls.srv.request("POST", "/v1/journeys/%s/publish" % doc["id"], auth="admin")
            assert r.status == 200, r

    @classmethod
    def tearDownClass(cls):
        cls.srv.__exit__(None, None, None)
        cls.sink.close()
        cls.smtp.close()

    # -- helpers ---------------------------------------------------------
    def person(self, phone=False, token=None, tz=None):
        u = "j-" + uuid.uuid4().hex[:10]
        traits = {"email": u + "@example.org", "first_name": "Ana"}
        if phone:
            traits["phone"] = "+3361%07d" % (uuid.uuid4().int % 10000000)
        body = {"userId": u, "traits": traits}
        ctx = {}
        if token:
            ctx["device"] = {"token": token, "type": "ios"}
            traits["consent"] = {"push": "granted"}   # the app asked; marketing push needs it
        if tz:
            ctx["timezone"] = tz
        if ctx:
            body["context"] = ctx
        self.assertEqual(self.srv.post("/v1/identify", body).status, 200)
        return u, traits

    def track(self, user, event, props=None, **extra):
        body = {"userId": user, "event": event, "properties": props or {}}
        body.update(extra)
        r = self.srv.post("/v1/track", body)
        self.assertEqual(r.status, 200, r)

    def advance(self, duration):
        r = self.srv.request("POST", "/v1/debug/clock", {"advance": duration}, auth="admin")
        self.assertEqual(r.status, 200, r)
        return r.json()["now"]

    def now(self):
        return datetime.fromisoformat(self.advance("1s").replace("Z", "+00:00"))

    def iso(self, dt):
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")

    def settle(self):
        """Waits until the engine has applied everything sent so far."""
        marker = "settle-" + uuid.uuid4().hex[:8]
        self.track(marker, "Settle Marker")
        self.srv.wait_profile("user_id", marker)

    def quiet(self):
        self.settle()
        time.sleep(0.4)

    def mails(self, traits):
        return self.smtp.to(traits["email"])

    def wait_mail(self, traits, n=1):
        return self.smtp.wait(lambda s: len(s.to(traits["email"])) >= n and s.to(traits["email"]))

    def hooks(self, path, user):
        return [r for r in self.sink.received(path) if isinstance(r["body"], dict) and r["body"].get("user_id") == user]

    def sms(self, traits):
        return [r for r in self.sink.received("/2010-04-01/Accounts/AC123/Messages.json")
                if r["body"].get("To") == traits["phone"]]

    def pushes(self, token):
        return [r for r in self.sink.received("/v1/projects/proj/messages:send")
                if r["body"]["message"]["token"] == token]

    def report(self, jid):
        r = self.srv.request("GET", "/v1/reports/journeys/" + jid, auth="admin")
        if r.status == 404:
            return {}
        self.assertEqual(r.status, 200, r)
        return r.json()["totals"]

    def delta(self, before, after, key):
        return after.get(key, 0) - before.get(key, 0)

    def assert_report(self, jid, before, **want):
        """The journey report moved by exactly `want` since `before`."""
        after = self.report(jid)
        got = {}
        for k in want:
            if k.startswith("exit_"):
                got[k] = after.get("exited", {}).get(k[5:], 0) - before.get("exited", {}).get(k[5:], 0)
            elif k.startswith("excl_"):
                got[k] = after.get("excluded", {}).get(k[5:], 0) - before.get("excluded", {}).get(k[5:], 0)
            else:
                got[k] = self.delta(before, after, k)
        self.assertEqual(got, want, "report of %s: %s" % (jid, json.dumps(after)[:1500]))

    def html(self, mail):
        m = mail["msg"]
        return [p for p in m.iter_parts() if p.get_content_type() == "text/html"][0].get_content()

    # -- the examples ------------------------------------------------------
    def test_cart_abandonment_emails_only_unconverted_carts(self):
        (u1, t1), (u2, t2) = self.person(), self.person()
        r0 = self.report("cart-abandonment")
        self.track(u1, "Product Added", {"cart_id": "c-" + u1, "name": "Red Shoes", "price": 49.5})
        self.track(u2, "Product Added", {"cart_id": "c-" + u2, "name": "Blue Hat", "price": 12})
        self.track(u2, "Order Completed", {"cart_id": "other", "revenue": 5})   # another cart
        self.track(u2, "Order Completed", {"cart_id": "c-" + u2, "revenue": 12})
        self.settle()
        self.advance("30m")
        self.quiet()
        self.assertEqual(self.mails(t1), [])
        self.advance("31m")
        got = self.wait_mail(t1)
        self.assertEqual(str(got[0]["msg"]["Subject"]), "Ana, you left Red Shoes in your cart")
        self.assertIn("Red Shoes", self.html(got[0]))
        self.assertIn("/t/c/", self.html(got[0]))           # tracked link
        self.advance("2h")
        self.quiet()
        self.assertEqual(len(self.mails(t1)), 1, "sent twice")
        self.assertEqual(self.mails(t2), [])
        # The reader clicks the link twice and loads the pixel once.
        import re as _re
        from urllib.request import urlopen, Request
        html = self.html(self.mails(t1)[0])
        click = _re.search(r'href="(http://[^"]+/t/c/[^"]+)"', html).group(1)
        pixel = _re.search(r'src="(http://[^"]+/t/o/[^"]+)"', html).group(1)

        class NoRedirect(__import__("urllib.request").request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None
        opener = __import__("urllib.request").request.build_opener(NoRedirect)
        for url in (click, click, pixel):
            try:
                opener.open(url, timeout=5).read()
            except __import__("urllib.error").error.HTTPError as e:
                self.assertEqual(e.code, 302)
        self.quiet()
        # The report says exactly what happened: two entries, one reminder sent
        # and delivered, one conversion worth 12 (u2), two clicks by one reader.
        r1 = self.report("cart-abandonment")
        d = lambda k: self.delta(r0, r1, k)
        self.assertEqual(d("entered"), 2)
        self.assertEqual(d("completed"), 2)
        self.assertEqual(d("targeted"), 1)
        self.assertEqual(d("excluded_total"), 0)
        self.assertEqual(d("sent"), 1)
        self.assertEqual(d("delivered"), 1)
        self.assertEqual(d("conversions"), 1)
        self.assertAlmostEqual(d("conversion_value"), 12)
        self.assertEqual(d("clicked"), 2)
        self.assertEqual(d("clicked_unique"), 1)
        self.assertEqual(d("opened_unique"), 1)
        self.assertEqual(d("opened"), 1)                 # one pixel load

    def test_browse_abandonment(self):
        (u1, t1), (u2, t2), (u3, t3) = self.person(), self.person(), self.person()
        r0 = self.report("browse-abandonment")
        for u in (u1, u2, u3):
            self.track(u, "Product Viewed", {"product_id": "p-" + u, "name": "Kettle"})
        self.track(u2, "Product Added", {"product_id": "p-" + u2})    # added: no reminder
        self.track(u3, "Order Completed", {"order_id": "o-" + u3})    # exit criterion
        self.settle()
        self.advance("2h1m")
        got = self.wait_mail(t1)
        self.assertEqual(str(got[0]["msg"]["Subject"]), "Still thinking about Kettle?")
        self.quiet()
        self.assertEqual(self.mails(t2), [])
        self.assertEqual(self.mails(t3), [])
        # Re-entry only after 24 h: viewing again at once starts nothing.
        self.track(u1, "Product Viewed", {"product_id": "p-" + u1, "name": "Kettle"})
        self.settle()
        self.advance("2h1m")
        self.quiet()
        self.assertEqual(len(self.mails(t1)), 1)
        self.assert_report("browse-abandonment", r0, entered=3, targeted=1, sent=1, delivered=1,
                           exit_exit=1, completed=2)

    def test_post_purchase_cross_sell(self):
        (u1, t1), (u2, t2) = self.person(), self.person()
        products = [{"sku": "A1", "name": "Tent"}]
        r0 = self.report("post-purchase-cross-sell")
        self.track(u1, "Order Completed", {"order_id": "o-" + u1, "products": products, "revenue": 120})
        self.track(u2, "Order Completed", {"order_id": "o-" + u2, "products": products, "revenue": 80})
        self.track(u2, "Order Refunded", {"order_id": "o-" + u2})
        self.settle()
        self.advance("2d")
        self.quiet()
        self.assertEqual(self.mails(t1), [])
        self.advance("1d1m")
        got = self.wait_mail(t1)
        self.assertIn("Tent", self.html(got[0]))
        self.quiet()
        self.assertEqual(self.mails(t2), [])
        self.assert_report("post-purchase-cross-sell", r0, entered=2, sent=1, delivered=1,
                           exit_exit=1, completed=1)

    def test_trial_expiry_reminder_three_days_before(self):
        u, t = self.person()
        r0 = self.report("trial-expiry-reminder")
        ends = self.now() + timedelta(days=10)
        self.track(u, "Trial Started", {"trial_ends_at": self.iso(ends), "plan": "pro"})
        self.settle()
        self.advance("6d23h")
        self.quiet()
        self.assertEqual(self.mails(t), [])
        self.advance("2h")
        got = self.wait_mail(t)
        self.assertEqual(str(got[0]["msg"]["Subject"]), "Your pro trial ends in 3 days")
        self.assertIn(ends.strftime("%B ") + str(ends.day), self.html(got[0]))
        # A subscriber gets nothing.
        u2, t2 = self.person()
        self.track(u2, "Trial Started", {"trial_ends_at": self.iso(self.now() + timedelta(days=10))})
        self.track(u2, "Subscription Started", {"revenue": 30})
        self.settle()
        self.advance("8d")
        self.quiet()
        self.assertEqual(self.mails(t2), [])
        # u2 subscribed: an exit and the goal, worth 30.
        self.assert_report("trial-expiry-reminder", r0, entered=2, sent=1, delivered=1,
                           exit_exit=1, conversions=1, conversion_value=30)

    def test_form_confirmation_email(self):
        u, t = self.person()
        r0 = self.report("form-submission-confirmation")
        self.track(u, "Form Submitted", {"form_id": "contact", "fields": {"topic": "billing"}})
        got = self.wait_mail(t)
        self.assertEqual(str(got[0]["msg"]["Subject"]), "We received your contact request")
        self.assertIn("about billing", self.html(got[0]))
        # Transactional: no one-click unsubscribe header.
        self.assertIsNone(got[0]["msg"]["List-Unsubscribe-Post"])
        self.smtp.wait(lambda s: self.delta(r0, self.report("form-submission-confirmation"), "delivered") == 1)
        self.assert_report("form-submission-confirmation", r0, entered=1, targeted=1, sent=1,
                           delivered=1, completed=1)

    def test_payment_failure_sms(self):
        (u1, t1), (u2, t2) = self.person(phone=True), self.person(phone=True)
        r0 = self.report("payment-failure")
        self.track(u1, "Payment Failed", {"invoice_id": "i-" + u1, "amount": 19.9, "reason": "card_declined"})
        self.track(u2, "Payment Failed", {"invoice_id": "i-" + u2, "amount": 5, "reason": "expired"})
        self.sink.wait(lambda s: self.sms(t1) and self.sms(t2))
        first = self.sms(t1)[0]
        self.assertEqual(first["body"]["From"], "+15550001111")
        self.assertEqual(first["body"]["Body"],
                         "Your payment of 19.9 € failed (card declined). Update your card: https://app.example/billing")
        self.assertTrue(first["headers"]["Authorization"].startswith("Basic "))
        self.track(u2, "Payment Succeeded", {"invoice_id": "i-" + u2})
        self.settle()
        self.advance("3d1m")
        self.sink.wait(lambda s: len(self.sms(t1)) == 2)
        self.assertIn("i-" + u1, self.sms(t1)[1]["body"]["Body"])
        self.quiet()
        self.assertEqual(len(self.sms(t2)), 1)
        r1 = self.report("payment-failure")
        self.assertEqual(self.delta(r0, r1, "entered"), 2)
        self.assertEqual(self.delta(r0, r1, "sent"), 3)          # what the SMS endpoint received
        self.assertEqual(self.delta(r0, r1, "exited").get if False else
                         r1["exited"]["exit"] - r0.get("exited", {}).get("exit", 0), 1)

    def test_app_uninstall_winback_push_on_a_weekday_morning(self):
        from zoneinfo import ZoneInfo
        tok1, tok2 = "tok-" + uuid.uuid4().hex, "tok-" + uuid.uuid4().hex
        u1, _ = self.person(token=tok1, tz="Europe/Paris")
        u2, _ = self.person(token=tok2)
        self.settle()
        r0 = self.report("app-uninstall-winback")
        t0 = self.now()
        self.track(u1, "Application Uninstalled", context={"device": {"type": "ios"}})
        self.track(u2, "Application Uninstalled")
        self.track(u2, "Application Opened")          # exit criterion
        self.settle()
        local = (t0 + timedelta(days=7)).astimezone(ZoneInfo("Europe/Paris"))
        due = local.replace(hour=10, minute=0, second=0, microsecond=0)
        if due <= local:
            due += timedelta(days=1)
        while due.weekday() >= 5:
            due += timedelta(days=1)
        self.advance("%ds" % (int((due - t0).total_seconds()) - 120))
        self.quiet()
        self.assertEqual(self.pushes(tok1), [], "sent before %s" % due)
        self.advance("3m")
        got = self.sink.wait(lambda s: self.pushes(tok1))
        m = got[0]["body"]["message"]
        self.assertEqual(m["notification"]["title"], "We miss you")
        self.assertEqual(m["data"], {"offer": "COMEBACK20", "device": "ios"})
        self.assertEqual(got[0]["headers"]["Authorization"], "Bearer push-token")
        self.assertEqual(self.pushes(tok2), [])
        # Without push consent, the same journey sends nothing (default: denied).
        tok3 = "tok-" + uuid.uuid4().hex
        u3 = "j-" + uuid.uuid4().hex[:10]
        self.srv.post("/v1/identify", {"userId": u3, "context": {"device": {"token": tok3}}})
        self.track(u3, "Application Uninstalled")
        self.settle()
        self.advance("7d1m")     # the week's wait ends ...
        self.settle()
        self.advance("4d")       # ... and the next weekday morning comes
        self.quiet()
        self.assertEqual(self.pushes(tok3), [])
        # Three entered: one push went out, one exit (the app came back), one
        # excluded for want of push consent.
        self.assert_report("app-uninstall-winback", r0, entered=3, sent=1, delivered=1,
                           exit_exit=1, excl_no_consent=1)

    def test_booking_confirmation_and_reminder(self):
        (u1, t1), (u2, t2) = self.person(), self.person()
        self.sink.response = {"ok": True, "ticket": "T-42"}
        r0 = self.report("booking-confirmation")
        starts = self.now() + timedelta(days=3)
        for u in (u1, u2):
            self.track(u, "Booking Created", {"booking_id": "b-" + u, "starts_at": self.iso(starts), "venue": "Hall"})
        got = self.wait_mail(t1)
        self.wait_mail(t2)
        # The booking system's captured answer appears in the confirmation.
        self.assertIn("Ticket: T-42", self.html(got[0]))
        self.assertTrue(self.hooks("/hook/booking-confirmed", u1))
        self.track(u2, "Booking Cancelled", {"booking_id": "b-" + u2})
        self.settle()
        self.advance("2d1m")
        got = self.wait_mail(t1, 2)
        self.assertEqual(str(got[1]["msg"]["Subject"]), "Tomorrow: your booking at Hall")
        self.assertIn("ticket T-42", self.html(got[1]))
        self.quiet()
        self.assertEqual(len(self.mails(t2)), 1)
        self.sink.response = {"ok": True}
        # Emails: two confirmations and one reminder; u2 cancelled (an exit).
        self.assert_report("booking-confirmation", r0, entered=2, targeted=3, sent=3, delivered=3,
                           exit_exit=1, completed=1)

    def test_welcome_notifies_emails_once_and_updates_the_profile(self):
        u, t = self.person()
        r0 = self.report("welcome")
        self.track(u, "Signed Up", context={"library": {"name": "analytics-node"}})
        got = self.sink.wait(lambda s: self.hooks("/hook/welcome", u))
        self.assertEqual(got[0]["headers"].get("X-Source"), "nudge-analytics-node")
        mail = self.wait_mail(t)
        self.assertEqual(str(mail[0]["msg"]["Subject"]), "Welcome, Ana!")
        p = self.srv.wait_profile("user_id", u, lambda p: "welcomed_at" in p["traits"])
        self.assertTrue(p["traits"]["welcomed_at"])
        self.track(u, "Signed Up")
        self.quiet()
        self.assertEqual(len(self.hooks("/hook/welcome", u)), 1)
        self.assertEqual(len(self.mails(t)), 1)
        self.assert_report("welcome", r0, entered=1, targeted=1, sent=1, delivered=1, completed=1)

    def test_split_test_is_deterministic_and_covers_both_arms(self):
        users = ["s-" + uuid.uuid4().hex[:10] for _ in range(24)]
        r = self.srv.request("GET", "/v1/reports/journeys/split-test", auth="admin")
        arms0 = {a["arm"]: a for a in (r.json().get("arms", []) if r.status == 200 else [])}
        for u in users:
            self.track(u, "Checkout Started", {"checkout_id": "k-" + u})
        self.sink.wait(lambda s: len([r for r in s.received("/hook/split-test")
                                      if r["body"]["user_id"] in users]) == len(users))
        got = self.sink.received("/hook/split-test")
        variants = {r["body"]["user_id"]: r["body"]["variant"] for r in got if r["body"]["user_id"] in users}
        self.assertEqual(set(variants.values()), {"A", "B"})
        # Conversions per arm: every B user orders, no A user does.
        for u, v in variants.items():
            if v == "B":
                self.track(u, "Order Completed", {"revenue": 10})
        self.quiet()
        rep = self.srv.request("GET", "/v1/reports/journeys/split-test", auth="admin").json()
        arms = {a["arm"]: a for a in rep["arms"]}
        nb = sum(1 for v in variants.values() if v == "B")
        na = len(variants) - nb
        self.assertEqual(arms["B"]["conversions"] - arms0.get("B", {}).get("conversions", 0), nb)
        self.assertEqual(arms["A"]["conversions"] - arms0.get("A", {}).get("conversions", 0), 0)
        self.assertEqual(arms["A"]["entered"] - arms0.get("A", {}).get("entered", 0), na)
        self.assertEqual(arms["B"]["entered"] - arms0.get("B", {}).get("entered", 0), nb)
        # allow: false -> a second checkout enters nobody again.
        for u in users[:4]:
            self.track(u, "Checkout Started", {"checkout_id": "again"})
        self.quiet()
        again = [r for r in self.sink.received("/hook/split-test") if r["body"]["user_id"] in users]
        self.assertEqual(len(again), len(users))

    def test_publishing_a_new_version_keeps_running_instances(self):
        (u, t), (u2, t2) = self.person(), self.person()
        self.track(u, "Product Added", {"cart_id": "v-" + u, "name": "Lamp", "price": 30})
        self.settle()
        v2 = {"channel": "email", "subject": "V2: {{ journey.entry.properties.name }} is waiting", "text": "v2"}
        self.assertEqual(self.srv.request("PUT", "/v1/templates/cart-reminder-v2", v2, auth="admin").status, 200)
        doc = load_example("cart-abandonment", self.sink)
        doc["steps"]["remind"]["message"]["template"] = "cart-reminder-v2"
        self.assertEqual(self.srv.request("PUT", "/v1/journeys/cart-abandonment", doc, auth="admin").status, 200)
        r = self.srv.request("POST", "/v1/journeys/cart-abandonment/publish", auth="admin")
        self.assertEqual(r.status, 200, r)
        self.assertGreaterEqual(r.json()["version"], 2)
        self.track(u2, "Product Added", {"cart_id": "v-" + u2, "name": "Desk", "price": 90})
        self.settle()
        self.advance("61m")
        old = self.wait_mail(t)
        new = self.wait_mail(t2)
        self.assertEqual(str(old[0]["msg"]["Subject"]), "Ana, you left Lamp in your cart")
        self.assertEqual(str(new[0]["msg"]["Subject"]), "V2: Desk is waiting")
        doc = load_example("cart-abandonment", self.sink)
        self.srv.request("PUT", "/v1/journeys/cart-abandonment", doc, auth="admin")
        self.srv.request("POST", "/v1/journeys/cart-abandonment/publish", auth="admin")


if __name__ == "__main__":
    unittest.main()
