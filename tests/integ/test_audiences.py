"""Audiences, computed attributes and business events against the real server.

The test clock (POST /v1/debug/clock) moves time so windows pass; journeys send
webhooks to a real HTTP sink started by the test, so "a journey fired" means a
request arrived there.
"""
import json
import time
import unittest
import uuid

from audtest import AudienceHelpers
from nudgetest import NudgeServer, run_nudge
from sink import Sink


def hook_journey(jid, entry, path, sink, extra_steps=None, start="hook", body=None):
    steps = {
        "hook": {"webhook": {"url": sink.url(path),
                             "body": body or '{"user": {{ profile.identities.user_id.first | json }}, '
                                             '"event": {{ journey.entry.event | json }}}'},
                 "next": "done"},
        "done": {"end": {}},
    }
    steps.update(extra_steps or {})
    return {"id": jid, "entry": entry, "start": start, "steps": steps}


class AudienceTest(AudienceHelpers, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = Sink()
        cfg = "[webhook]\nallow = 127.0.0.1/32\n"
        cls.srv = NudgeServer(extra_args=["--test-clock"], config_text=cfg).start()

    @classmethod
    def tearDownClass(cls):
        # After everything above, the data directory is consistent.
        cls.srv.stop()
        r = run_nudge("check", "--data-dir", cls.srv.data_dir, timeout=120)
        cls.srv.__exit__(None, None, None)
        cls.sink.close()
        assert r.returncode == 0, r.stdout + r.stderr

    # -- helpers -----------------------------------------------------------
    def publish(self, doc):
        self.admin("PUT", "/v1/journeys/" + doc["id"], doc)
        self.admin("POST", "/v1/journeys/%s/publish" % doc["id"])

    def track(self, user, event, props=None):
        r = self.srv.post("/v1/track", {"userId": user, "event": event, "properties": props or {}})
        self.assertEqual(r.status, 200, r)

    def advance(self, duration):
        self.admin("POST", "/v1/debug/clock", {"advance": duration})

    def audiences_of(self, user):
        return sorted(a["id"] for a in self.profile(user)["audiences"])

    def hooks(self, path, user=None):
        return [r for r in self.sink.received(path)
                if user is None or (isinstance(r["body"], dict) and r["body"].get("user") == user)]

    # -- audiences ---------------------------------------------------------
    def test_enter_on_event_leave_when_window_passes(self):
        self.admin("PUT", "/v1/audiences/cart24", {
            "name": "Carts in the last 24 h without an order",
            "when": 'event_count("Added to Cart", "24h") > 0 && event_count("Order Completed", "24h") == 0',
        }, want=201)
        self.wait_backfill("audiences", "cart24")
        u, v = self.person(), self.person()
        self.track(u, "Added to Cart", {"sku": "A"})
        self.track(v, "Added to Cart", {"sku": "B"})
        self.track(v, "Order Completed", {"total": 5})
        self.settle()
        self.assertEqual(self.audiences_of(u), ["cart24"])
        self.assertEqual(self.audiences_of(v), [])
        members = self.admin("GET", "/v1/audiences/cart24/members").json()["members"]
        self.assertIn(u, [m["identities"]["user_id"][0] for m in members])
        self.assertEqual(self.admin("GET", "/v1/audiences/cart24").json()["size"], len(members))
        # 23 h later still in; past 24 h out with no new event (a timer).
        self.advance("23h")
        self.settle()
        self.assertEqual(self.audiences_of(u), ["cart24"])
        self.advance("1h1s")
        self.wait_for(lambda: self.audiences_of(u) == [], what="window expiry")
        self.assertEqual(self.admin("GET", "/v1/audiences/cart24").json()["size"], 0)
        # A new cart brings u back; an order takes u out at once.
        self.track(u, "Added to Cart", {"sku": "C"})
        self.settle()
        self.assertEqual(self.audiences_of(u), ["cart24"])
        self.track(u, "Order Completed", {"total": 9})
        self.settle()
        self.assertEqual(self.audiences_of(u), [])
        self.admin("DELETE", "/v1/audiences/cart24")
        self.admin("GET", "/v1/audiences/cart24", want=404)

    def test_event_count_with_a_predicate(self):
        tag = uuid.uuid4().hex[:6]
        self.admin("PUT", "/v1/audiences/big" + tag, {
            "when": 'event_count("Cart %s", "2h", "event.properties.price > 100.0") >= 2' % tag}, want=201)
        self.wait_backfill("audiences", "big" + tag)
        u = self.person()
        for price in (50.0, 150.0, 99.0):
            self.track(u, "Cart " + tag, {"price": price})
        self.track(u, "Other " + tag, {"price": 500.0})
        self.settle()
        self.assertEqual(self.audiences_of(u), [])
        self.advance("1h")
        self.track(u, "Cart " + tag, {"price": 120.0})
        self.settle()
        self.assertEqual(self.audiences_of(u), ["big" + tag])
        # The 150 leaves the 2 h window an hour later: out again, by the timer.
        self.advance("1h1s")
        self.wait_for(lambda: self.audiences_of(u) == [], what="window expiry")

    def test_audience_entry_journey_fires_on_enter_not_on_exit(self):
        self.admin("PUT", "/v1/audiences/browsers", {
            "when": 'event_count("Product Viewed", "2h") >= 2'}, want=201)
        self.publish(hook_journey("aud-enter", {"audience": "browsers"}, "/aud/enter", self.sink))
        self.publish(hook_journey("aud-exit", {"audience": "browsers", "on": "exit"},
                                  "/aud/exit", self.sink))
        u = self.person()
        self.track(u, "Product Viewed")
        self.settle()
        self.assertEqual(self.hooks("/aud/enter", u), [])
        self.track(u, "Product Viewed")
        got = self.sink.wait(lambda s: self.hooks("/aud/enter", u))
        self.assertEqual(got[0]["body"]["event"], "Audience Entered")
        self.track(u, "Product Viewed")    # still a member: no second entry
        self.advance("3h")
        self.wait_for(lambda: self.hooks("/aud/exit", u), what="exit journey")
        self.assertEqual(self.hooks("/aud/exit", u)[0]["body"]["event"], "Audience Exited")
        time.sleep(0.3)
        self.assertEqual(len(self.hooks("/aud/enter", u)), 1)
        self.assertEqual(len(self.hooks("/aud/exit", u)), 1)

    def test_in_audience_gates_a_branch(self):
        self.admin("PUT", "/v1/audiences/vip", {"when": 'profile.traits.tier == "vip"'}, want=201)
        self.wait_backfill("audiences", "vip")
        doc = hook_journey("vip-branch", {"event": "Checkout Started"}, "/branch/vip", self.sink,
                           start="gate", extra_steps={
                               "gate": {"branch": [{"when": 'in_audience("vip")', "next": "hook"}],
                                        "else": "regular"},
                               "regular": {"webhook": {"url": self.sink.url("/branch/regular"),
                                                       "body": '{"user": {{ profile.identities.user_id.first | json }}}'},
                                           "next": "done"}})
        self.publish(doc)
        a, b = self.person(tier="vip"), self.person(tier="basic")
        self.track(a, "Checkout Started")
        self.track(b, "Checkout Started")
        self.sink.wait(lambda s: self.hooks("/branch/vip", a) and self.hooks("/branch/regular", b))
        self.assertEqual(self.hooks("/branch/regular", a), [])
        self.assertEqual(self.hooks("/branch/vip", b), [])

    def test_trait_set_by_a_journey_updates_audiences_at_once(self):
        tag = uuid.uuid4().hex[:6]
        self.admin("PUT", "/v1/audiences/up" + tag,
                   {"when": 'profile.traits.tier == "gold-%s"' % tag}, want=201)
        self.wait_backfill("audiences", "up" + tag)
        self.publish(hook_journey("welcome-gold-" + tag, {"audience": "up" + tag}, "/gold/" + tag, self.sink))
        self.publish({"id": "upgrade-" + tag, "entry": {"event": "Upgraded " + tag}, "start": "mark",
                      "steps": {"mark": {"update_profile": {"set": {"tier": '"gold-%s"' % tag}},
                                         "next": "done"},
                                "done": {"end": {}}}})
        u = self.person(tier="basic")
        self.track(u, "Upgraded " + tag)
        self.settle()
        self.assertEqual(self.audiences_of(u), ["up" + tag])
        self.sink.wait(lambda s: self.hooks("/gold/" + tag, u))

    def test_backfill_over_existing_profiles(self):
        tag = uuid.uuid4().hex[:6]
        gold = [self.person(plan="gold-" + tag) for _ in range(7)]
        others = [self.person(plan="silver-" + tag) for _ in range(5)]
        self.settle()
        aid = "gold" + tag
        r = self.admin("PUT", "/v1/audiences/" + aid,
                       {"when": 'profile.traits.plan == "gold-%s"' % tag}, want=201)
        self.assertEqual(r.json()["backfill"]["state"], "running")
        d = self.wait_backfill("audiences", aid)
        self.assertEqual(d["size"], 7)
        self.assertGreaterEqual(d["backfill"]["evaluated"], 12)
        # Members page through, 3 at a time.
        seen, after = [], None
        while True:
            q = "?limit=3" + ("&after=" + after if after else "")
            page = self.admin("GET", "/v1/audiences/%s/members%s" % (aid, q)).json()
            self.assertLessEqual(len(page["members"]), 3)
            seen += [m["identities"]["user_id"][0] for m in page["members"]]
            after = page["next"]
            if not after:
                break
        self.assertEqual(sorted(seen), sorted(gold))
        for u in others:
            self.assertNotIn(aid, self.audiences_of(u))
        # A changed definition is back-filled again: now silver.
        self.admin("PUT", "/v1/audiences/" + aid,
                   {"when": 'profile.traits.plan == "silver-%s"' % tag})
        d = self.wait_backfill("audiences", aid)
        self.assertEqual(d["size"], 5)
        self.assertEqual(d["version"], 2)

    def test_bad_definitions_name_the_field(self):
        r = self.admin("PUT", "/v1/audiences/bad", {"when": "profile.traits.x =="}, want=400)
        self.assertEqual(r.json()["error"]["field"], "when")
        r = self.admin("PUT", "/v1/audiences/bad", {"name": "x"}, want=400)
        self.assertEqual(r.json()["error"]["field"], "when")
        r = self.admin("PUT", "/v1/audiences/bad", {"when": "true", "color": 1}, want=400)
        self.assertEqual(r.json()["error"]["field"], "color")
        self.admin("PUT", "/v1/audiences/bad%20id", {"when": "true"}, want=400)
        r = self.admin("PUT", "/v1/computed/bad", {"event": "X", "aggregate": "median"}, want=400)
        self.assertEqual(r.json()["error"]["field"], "aggregate")
        r = self.admin("PUT", "/v1/settings/indexed-traits", {"traits": "wishlist"}, want=400)
        self.assertEqual(r.json()["error"]["field"], "traits")
        r = self.srv.post("/v1/business-events", {"properties": {}})
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json()["error"]["field"], "event")
        self.assertEqual(self.srv.request("POST", "/v1/business-events", {"event": "X"},
                                          auth=None).status, 401)
        self.admin("GET", "/v1/audiences/nope", want=404)
        self.admin("DELETE", "/v1/audiences/nope", want=404)

    # -- computed attributes ----------------------------------------------
    def test_computed_attributes_exact_values_and_window(self):
        tag = uuid.uuid4().hex[:6]
        ev = "Order Completed " + tag
        defs = {
            "ltv": {"event": ev, "aggregate": "sum", "value": "event.properties.total"},
            "orders7d": {"event": ev, "aggregate": "count", "window": "7d"},
            "biggest": {"event": ev, "aggregate": "max", "value": "event.properties.total"},
            "last_sku": {"event": ev, "aggregate": "last", "value": "event.properties.sku"},
            "skus": {"event": ev, "aggregate": "distinct_count", "value": "event.properties.sku"},
        }
        for cid, d in defs.items():
            self.admin("PUT", "/v1/computed/%s_%s" % (cid, tag), d, want=201)
        for cid in defs:
            self.wait_backfill("computed", "%s_%s" % (cid, tag))
        u = self.person()
        self.track(u, ev, {"total": 30, "sku": "A"})
        self.track(u, ev, {"total": 12.5, "sku": "B"})
        self.track(u, ev, {"total": 7, "sku": "A"})
        self.settle()
        c = {k[:-len(tag) - 1]: v for k, v in self.profile(u)["computed"].items() if k.endswith(tag)}
        self.assertEqual(c, {"ltv": 49.5, "orders7d": 3, "biggest": 30, "last_sku": "A", "skus": 2})
        self.advance("4d")
        self.track(u, ev, {"total": 1, "sku": "C"})
        self.settle()
        c = self.profile(u)["computed"]
        self.assertEqual(c["orders7d_" + tag], 4)
        # 3 days and a bit later the first three leave the 7-day window (a timer).
        self.advance("3d1m")
        self.wait_for(lambda: self.profile(u)["computed"]["orders7d_" + tag] == 1,
                      what="window expiry of orders7d")
        c = self.profile(u)["computed"]
        self.assertEqual(c["ltv_" + tag], 50.5)       # all time
        self.assertEqual(c["skus_" + tag], 3)
        # Usable in CEL (an audience) and in Liquid (a webhook body).
        self.admin("PUT", "/v1/audiences/big" + tag,
                   {"when": "profile.computed.ltv_%s > 50.0" % tag}, want=201)
        self.wait_backfill("audiences", "big" + tag)
        self.assertIn("big" + tag, self.audiences_of(u))
        self.publish(hook_journey("ltv-" + tag, {"event": "Ping " + tag}, "/ltv/" + tag, self.sink,
                                  body='{"user": {{ profile.identities.user_id.first | json }}, '
                                       '"ltv": {{ profile.computed.ltv_%s }}, '
                                       '"last": "{{ profile.computed.last_sku_%s }}"}' % (tag, tag)))
        self.track(u, "Ping " + tag)
        got = self.sink.wait(lambda s: self.hooks("/ltv/" + tag, u))
        self.assertEqual(got[0]["body"]["ltv"], 50.5)
        self.assertEqual(got[0]["body"]["last"], "C")

    def test_computed_backfill_reads_history(self):
        tag = uuid.uuid4().hex[:6]
        ev = "Purchase " + tag
        u = self.person()
        for t in (5, 10, 20):
            self.track(u, ev, {"amount": t})
        self.settle()
        self.admin("PUT", "/v1/computed/spent" + tag,
                   {"event": ev, "aggregate": "sum", "value": "event.properties.amount"}, want=201)
        self.wait_backfill("computed", "spent" + tag)
        self.assertEqual(self.profile(u)["computed"]["spent" + tag], 35)
        self.track(u, ev, {"amount": 1})
        self.settle()
        self.assertEqual(self.profile(u)["computed"]["spent" + tag], 36)

    # -- business events ---------------------------------------------------
    def test_business_event_reaches_wishlisters_through_the_index(self):
        tag = uuid.uuid4().hex[:6]
        sku = "SKU-" + tag
        self.admin("PUT", "/v1/settings/indexed-traits", {"traits": ["wishlist"]})
        self.wait_for(lambda: self.admin("GET", "/v1/settings/indexed-traits").json()
                      ["ready"].get("wishlist"), what="index ready")
        fans = [self.person(wishlist=[sku, "other"]) for _ in range(6)]
        single = self.person(wishlist=sku)          # a scalar trait is indexed too
        fans.append(self.person(wishlist={sku: True, "z": 1}))   # a map: its keys
        self.person(wishlist=["other"])
        self.person(plan="none")
        changed = self.person(wishlist=[sku])
        self.srv.post("/v1/identify", {"userId": changed, "traits": {"wishlist": ["x"]}})
        self.publish(hook_journey("price-" + tag, {
            "business_event": "Price Dropped " + tag,
            "who": "profile.traits.wishlist.exists(s, s == event.properties.sku)"},
            "/price/" + tag, self.sink,
            body='{"user": {{ profile.identities.user_id.first | json }}, "sku": {{ event.properties.sku | json }}, '
                 '"price": {{ journey.entry.properties.new_price }}}'))
        self.settle()
        r = self.srv.post("/v1/business-events", {"event": "Price Dropped " + tag, "messageId": "pd-" + tag,
                                                  "properties": {"sku": sku, "old_price": 30, "new_price": 24}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["id"], "pd-" + tag)
        st = self.wait_for(lambda: (lambda b: b if b["journeys"]["price-" + tag]["state"] == "done" else None)(
            self.admin("GET", "/v1/business-events/pd-" + tag).json()), what="fan-out")
        j = st["journeys"]["price-" + tag]
        self.assertEqual(j["mode"], "index")
        self.assertEqual(j["entered"], 7)
        # wishlist as a scalar is not a list: exists() errors -> not entered.
        self.assertEqual(j["evaluated"], 8)         # the index's candidates only
        got = self.sink.wait(lambda s: len(self.hooks("/price/" + tag)) >= 7 and self.hooks("/price/" + tag))
        self.assertEqual(sorted(h["body"]["user"] for h in got), sorted(fans))
        self.assertEqual({h["body"]["price"] for h in got}, {24})
        # The same business event again (same messageId) is applied once.
        self.srv.post("/v1/business-events", {"event": "Price Dropped " + tag, "messageId": "pd-" + tag,
                                              "properties": {"sku": sku}})
        self.settle()
        time.sleep(0.3)
        self.assertEqual(len(self.hooks("/price/" + tag)), 7)
        self.assertNotIn(single, [h["body"]["user"] for h in got])

    def test_business_event_without_index_scans(self):
        tag = uuid.uuid4().hex[:6]
        a, b = self.person(city="Lyon-" + tag), self.person(city="Nice-" + tag)
        self.publish(hook_journey("storm-" + tag, {
            "business_event": "Storm " + tag,
            "who": "profile.traits.city == event.properties.city || profile.traits.city == 'x'"},
            "/storm/" + tag, self.sink))
        self.settle()
        self.srv.post("/v1/business-events", {"event": "Storm " + tag, "messageId": "st-" + tag,
                                              "properties": {"city": "Lyon-" + tag}})
        st = self.wait_for(lambda: (lambda b_: b_ if b_["journeys"]["storm-" + tag]["state"] == "done" else None)(
            self.admin("GET", "/v1/business-events/st-" + tag).json()), what="fan-out")
        self.assertEqual(st["journeys"]["storm-" + tag]["mode"], "scan")
        self.assertEqual(st["journeys"]["storm-" + tag]["entered"], 1)
        got = self.sink.wait(lambda s: self.hooks("/storm/" + tag))
        self.assertEqual([h["body"]["user"] for h in got], [a])
        self.assertEqual(self.hooks("/storm/" + tag, b), [])


if __name__ == "__main__":
    unittest.main()
