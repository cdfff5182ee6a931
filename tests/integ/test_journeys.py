"""Journeys end to end: the real server, a real HTTP sink, the test clock.

Each example journey of examples/ is applied through the admin API (its webhook
URLs pointed at the sink), driven with Segment events, and time is moved with
POST /v1/debug/clock. The tests check who got what, exactly once, with the
right body.
"""
import json
import os
import time
import unittest
import uuid

from nudgetest import NudgeServer
from sink import Sink

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
CONFIG = "[webhook]\nallow = 127.0.0.1/32\nsecret = test-secret\n"


def load_example(name, sink):
    with open(os.path.join(EXAMPLES, name + ".json")) as f:
        text = f.read()
    return json.loads(text.replace("http://127.0.0.1:9999", sink.url()))


class JourneyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = Sink()
        cls.srv = NudgeServer(extra_args=["--test-clock"], config_text=CONFIG).start()
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

    def uid(self):
        return "j-" + uuid.uuid4().hex[:10]

    def track(self, user, event, props=None, **extra):
        body = {"userId": user, "event": event, "properties": props or {}}
        body.update(extra)
        r = self.srv.post("/v1/track", body)
        self.assertEqual(r.status, 200, r)

    def identify(self, user, traits):
        self.assertEqual(self.srv.post("/v1/identify", {"userId": user, "traits": traits}).status, 200)

    def advance(self, duration):
        r = self.srv.request("POST", "/v1/debug/clock", {"advance": duration}, auth="admin")
        self.assertEqual(r.status, 200, r)
        return r.json()["now"]

    def hooks(self, path, user):
        return [r for r in self.sink.received(path) if r["body"].get("user_id") == user]

    def settle(self):
        """Waits until the engine has applied everything sent so far."""
        marker = self.uid()
        self.track(marker, "Settle Marker")
        self.srv.wait_profile("user_id", marker)

    def test_cart_abandonment_reminds_only_unconverted_carts(self):
        u1, u2 = self.uid(), self.uid()
        self.track(u1, "Product Added", {"cart_id": "c-" + u1, "name": "Red Shoes", "price": 49.5})
        self.track(u2, "Product Added", {"cart_id": "c-" + u2, "name": "Blue Hat", "price": 12})
        # u2 orders a different cart first (no match), then the right one.
        self.track(u2, "Order Completed", {"cart_id": "other", "revenue": 5})
        self.track(u2, "Order Completed", {"cart_id": "c-" + u2, "revenue": 12})
        self.settle()
        self.advance("30m")
        self.settle()
        self.assertEqual(self.hooks("/hook/cart-reminder", u1), [])
        self.advance("31m")
        got = self.sink.wait(lambda s: self.hooks("/hook/cart-reminder", u1))
        self.assertEqual(got[0]["body"], {"journey": "cart-abandonment", "user_id": u1,
                                          "cart_id": "c-" + u1, "product": "Red Shoes", "price": 49.5})
        h = got[0]["headers"]
        self.assertEqual(len(h["Idempotency-Key"]), 32)
        self.assertTrue(h["X-Nudge-Signature"].startswith("t="))
        self.advance("2h")
        self.settle()
        time.sleep(0.3)
        self.assertEqual(len(self.hooks("/hook/cart-reminder", u1)), 1, "sent twice")
        self.assertEqual(self.hooks("/hook/cart-reminder", u2), [])

    def test_split_test_is_deterministic_and_covers_both_arms(self):
        users = [self.uid() for _ in range(24)]
        for u in users:
            self.track(u, "Checkout Started", {"checkout_id": "k-" + u})
        self.sink.wait(lambda s: len([r for r in s.received("/hook/split-test")
                                      if r["body"]["user_id"] in users]) == len(users))
        got = self.sink.received("/hook/split-test")
        variants = {r["body"]["user_id"]: r["body"]["variant"] for r in got if r["body"]["user_id"] in users}
        self.assertEqual(set(variants.values()), {"A", "B"})
        # allow: false -> a second checkout enters nobody again.
        for u in users[:4]:
            self.track(u, "Checkout Started", {"checkout_id": "again"})
        self.settle()
        time.sleep(0.3)
        again = [r for r in self.sink.received("/hook/split-test") if r["body"]["user_id"] in users]
        self.assertEqual(len(again), len(users))

    def test_welcome_sends_once_and_updates_the_profile(self):
        u = self.uid()
        self.identify(u, {"email": u + "@example.com"})
        self.track(u, "Signed Up", context={"library": {"name": "analytics-node"}})
        got = self.sink.wait(lambda s: self.hooks("/hook/welcome", u))
        self.assertEqual(got[0]["headers"].get("X-Source"), "nudge-analytics-node")
        p = self.srv.wait_profile("user_id", u, lambda p: "welcomed_at" in p["traits"])
        self.assertTrue(p["traits"]["welcomed_at"])
        self.track(u, "Signed Up")
        self.settle()
        time.sleep(0.3)
        self.assertEqual(len(self.hooks("/hook/welcome", u)), 1)

    def now(self):
        """The engine clock (advancing it by one second)."""
        from datetime import datetime
        return datetime.fromisoformat(self.advance("1s").replace("Z", "+00:00"))

    def iso(self, dt):
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")

    def test_browse_abandonment(self):
        u1, u2, u3 = self.uid(), self.uid(), self.uid()
        for u in (u1, u2, u3):
            self.track(u, "Product Viewed", {"product_id": "p-" + u, "name": "Kettle"})
        self.track(u2, "Product Added", {"product_id": "p-" + u2})    # added: no reminder
        self.track(u3, "Order Completed", {"order_id": "o-" + u3})    # exit criterion
        self.settle()
        self.advance("2h1m")
        got = self.sink.wait(lambda s: self.hooks("/hook/browse-reminder", u1))
        self.assertEqual(got[0]["body"], {"journey": "browse-abandonment", "user_id": u1,
                                          "product_id": "p-" + u1, "product": "Kettle"})
        self.settle()
        time.sleep(0.3)
        self.assertEqual(self.hooks("/hook/browse-reminder", u2), [])
        self.assertEqual(self.hooks("/hook/browse-reminder", u3), [])
        # Re-entry only after 24 h: viewing again at once starts nothing.
        self.track(u1, "Product Viewed", {"product_id": "p-" + u1, "name": "Kettle"})
        self.settle()
        self.advance("2h1m")
        self.settle()
        time.sleep(0.3)
        self.assertEqual(len(self.hooks("/hook/browse-reminder", u1)), 1)

    def test_post_purchase_cross_sell(self):
        u1, u2 = self.uid(), self.uid()
        products = [{"sku": "A1", "name": "Tent"}]
        self.identify(u1, {"email": u1 + "@example.com"})
        self.track(u1, "Order Completed", {"order_id": "o-" + u1, "products": products, "revenue": 120})
        self.track(u2, "Order Completed", {"order_id": "o-" + u2, "products": products, "revenue": 80})
        self.track(u2, "Order Refunded", {"order_id": "o-" + u2})
        self.settle()
        self.advance("2d")
        self.settle()
        self.assertEqual(self.hooks("/hook/cross-sell", u1), [])
        self.advance("1d1m")
        got = self.sink.wait(lambda s: self.hooks("/hook/cross-sell", u1))
        self.assertEqual(got[0]["body"]["products"], products)
        self.assertEqual(got[0]["body"]["order_id"], "o-" + u1)
        self.settle()
        time.sleep(0.3)
        self.assertEqual(self.hooks("/hook/cross-sell", u2), [])

    def test_trial_expiry_reminder_three_days_before(self):
        u = self.uid()
        ends = self.now() + __import__("datetime").timedelta(days=10)
        self.track(u, "Trial Started", {"trial_ends_at": self.iso(ends), "plan": "pro"})
        self.settle()
        self.advance("6d23h")
        self.settle()
        time.sleep(0.2)
        self.assertEqual(self.hooks("/hook/trial-expiry", u), [])
        self.advance("2h")
        got = self.sink.wait(lambda s: self.hooks("/hook/trial-expiry", u))
        self.assertEqual(got[0]["body"], {"journey": "trial-expiry-reminder", "user_id": u,
                                          "trial_ends_at": self.iso(ends), "plan": "pro"})
        # A subscriber gets nothing.
        u2 = self.uid()
        ends2 = self.now() + __import__("datetime").timedelta(days=10)
        self.track(u2, "Trial Started", {"trial_ends_at": self.iso(ends2)})
        self.track(u2, "Subscription Started", {"revenue": 30})
        self.settle()
        self.advance("8d")
        self.settle()
        time.sleep(0.3)
        self.assertEqual(self.hooks("/hook/trial-expiry", u2), [])

    def test_form_confirmation_uses_the_template_and_retries(self):
        u = self.uid()
        with self.sink.lock:
            self.sink.fail_first = 1
        self.track(u, "Form Submitted", {"form_id": "contact", "fields": {"topic": "billing"}})
        self.sink.wait(lambda s: len(self.hooks("/hook/form-confirmation", u)) >= 2, timeout=20)
        got = self.hooks("/hook/form-confirmation", u)
        self.assertEqual(got[0]["body"], {"journey": "form-submission-confirmation", "user_id": u,
                                          "form_id": "contact", "fields": {"topic": "billing"}})
        # The retry carries the same Idempotency-Key (invariant 4).
        keys = {r["headers"]["Idempotency-Key"] for r in self.hooks("/hook/form-confirmation", u)}
        self.assertEqual(len(keys), 1)

    def test_payment_failure_notices(self):
        u1, u2 = self.uid(), self.uid()
        self.track(u1, "Payment Failed", {"invoice_id": "i-" + u1, "amount": 19.9, "reason": "card_declined"})
        self.track(u2, "Payment Failed", {"invoice_id": "i-" + u2, "amount": 5, "reason": "expired"})
        first = self.sink.wait(lambda s: self.hooks("/hook/payment-failed", u1) and
                               self.hooks("/hook/payment-failed", u2))
        self.assertEqual(self.hooks("/hook/payment-failed", u1)[0]["body"]["notice"], "first")
        self.track(u2, "Payment Succeeded", {"invoice_id": "i-" + u2})
        self.settle()
        self.advance("3d1m")
        self.sink.wait(lambda s: len(self.hooks("/hook/payment-failed", u1)) == 2)
        notices = [r["body"]["notice"] for r in self.hooks("/hook/payment-failed", u1)]
        self.assertEqual(notices, ["first", "second"])
        self.settle()
        time.sleep(0.3)
        self.assertEqual(len(self.hooks("/hook/payment-failed", u2)), 1)
        self.assertTrue(first)

    def test_app_uninstall_winback_on_a_weekday_morning(self):
        from datetime import timedelta
        from zoneinfo import ZoneInfo
        u1, u2 = self.uid(), self.uid()
        self.srv.post("/v1/identify", {"userId": u1, "context": {"timezone": "Europe/Paris"}})
        self.settle()
        t0 = self.now()
        self.track(u1, "Application Uninstalled", context={"device": {"type": "ios"}})
        self.track(u2, "Application Uninstalled")
        self.track(u2, "Application Opened")          # exit criterion
        self.settle()
        # Expected: 7 days later, then the next 10:00 Paris time on a weekday.
        local = (t0 + timedelta(days=7)).astimezone(ZoneInfo("Europe/Paris"))
        due = local.replace(hour=10, minute=0, second=0, microsecond=0)
        if due <= local:
            due += timedelta(days=1)
        while due.weekday() >= 5:
            due += timedelta(days=1)
        wait_s = int((due - t0).total_seconds())
        self.advance("%ds" % (wait_s - 120))
        self.settle()
        time.sleep(0.3)
        self.assertEqual(self.hooks("/hook/winback", u1), [], "sent before %s" % due)
        self.advance("3m")
        got = self.sink.wait(lambda s: self.hooks("/hook/winback", u1))
        self.assertEqual(got[0]["body"]["device"], "ios")
        self.assertEqual(self.hooks("/hook/winback", u2), [])

    def test_booking_confirmation_and_reminder(self):
        u1, u2 = self.uid(), self.uid()
        self.sink.response = {"ok": True, "ticket": "T-42"}
        starts = self.now() + __import__("datetime").timedelta(days=3)
        self.track(u1, "Booking Created", {"booking_id": "b-" + u1, "starts_at": self.iso(starts), "venue": "Hall"})
        self.track(u2, "Booking Created", {"booking_id": "b-" + u2, "starts_at": self.iso(starts), "venue": "Hall"})
        self.sink.wait(lambda s: self.hooks("/hook/booking-confirmed", u1) and
                       self.hooks("/hook/booking-confirmed", u2))
        self.track(u2, "Booking Cancelled", {"booking_id": "b-" + u2})
        self.settle()
        self.advance("2d1m")
        got = self.sink.wait(lambda s: self.hooks("/hook/booking-reminder", u1))
        self.assertEqual(got[0]["method"], "PUT")
        # The confirmation's captured response is available to later steps.
        self.assertEqual(got[0]["body"]["confirmation"], {"ok": True, "ticket": "T-42"})
        self.settle()
        time.sleep(0.3)
        self.assertEqual(self.hooks("/hook/booking-reminder", u2), [])
        self.sink.response = {"ok": True}

    def test_publishing_a_new_version_keeps_running_instances(self):
        u = self.uid()
        self.track(u, "Product Added", {"cart_id": "v-" + u, "name": "Lamp", "price": 30})
        self.settle()
        doc = load_example("cart-abandonment", self.sink)
        doc["steps"]["remind"]["webhook"]["url"] = self.sink.url("/hook/cart-reminder-v2")
        self.assertEqual(self.srv.request("PUT", "/v1/journeys/cart-abandonment", doc, auth="admin").status, 200)
        r = self.srv.request("POST", "/v1/journeys/cart-abandonment/publish", auth="admin")
        self.assertEqual(r.status, 200, r)
        self.assertGreaterEqual(r.json()["version"], 2)
        u2 = self.uid()
        self.track(u2, "Product Added", {"cart_id": "v-" + u2, "name": "Desk", "price": 90})
        self.settle()
        self.advance("61m")
        self.sink.wait(lambda s: self.hooks("/hook/cart-reminder", u))
        self.sink.wait(lambda s: self.hooks("/hook/cart-reminder-v2", u2))
        self.assertEqual(self.hooks("/hook/cart-reminder-v2", u), [])
        # Put the original back for the other tests.
        doc = load_example("cart-abandonment", self.sink)
        self.srv.request("PUT", "/v1/journeys/cart-abandonment", doc, auth="admin")
        self.srv.request("POST", "/v1/journeys/cart-abandonment/publish", auth="admin")


if __name__ == "__main__":
    unittest.main()
