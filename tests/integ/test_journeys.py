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
