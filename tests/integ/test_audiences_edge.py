"""Audiences, computed attributes and the trait index at their edges.

Each case starts its own server (some need a small [audiences] job_batch so a
background job is still running when the next request arrives): a null
definition, a trait indexed again after a purge, definitions deleted and
re-created (versions never repeat; re-creating an audience waits for its purge
and starts no exit journeys), windowed values after a merge, future-dated
events, audiences that read other audiences, and long definition lists.
"""
import json, time, unittest, uuid
from audtest import AudienceHelpers
from nudgetest import NudgeServer, run_nudge
from sink import Sink


class Base(AudienceHelpers, unittest.TestCase):
    cfg = ""
    def setUp(self):
        self.sink = Sink()
        self.srv = NudgeServer(extra_args=["--test-clock"],
                               config_text="[webhook]\nallow = 127.0.0.1/32\n" + self.cfg).start()
    def tearDown(self):
        # Whatever the case did, the data directory is consistent afterwards.
        self.srv.stop()
        r = run_nudge("check", "--data-dir", self.srv.data_dir, timeout=120)
        self.srv.__exit__(None, None, None)
        self.sink.close()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
    def recreate(self, path, doc):
        """PUT after a DELETE: 409 while the purge runs, then 201."""
        end = time.time() + 20
        while time.time() < end:
            r = self.admin("PUT", path, doc, want=None)
            if r.status != 409:
                self.assertEqual(r.status, 201, r)
                return r
            self.assertEqual(r.json()["error"]["field"], "id")
            time.sleep(0.02)
        self.fail("the purge never finished")


class NullWhen(Base):
    def test_when_null_is_a_400_not_a_crash(self):
        for bad in (None, 3, ["x"], {"a": 1}):
            r = self.srv.request("PUT", "/v1/audiences/x", {"when": bad}, auth="admin")
            self.assertEqual(r.status, 400, r)
            self.assertEqual(r.json()["error"]["field"], "when")
        r = self.srv.request("PUT", "/v1/audiences/x", {"when": "true", "name": None}, auth="admin")
        self.assertEqual(r.json()["error"]["field"], "name")
        self.assertIsNone(self.srv.proc.poll(), "the server died")


class IndexReAdd(Base):
    def test_removed_then_readded_trait_is_indexed_again(self):
        self.admin("PUT", "/v1/settings/indexed-traits", {"traits": ["wishlist"]})
        self.wait_for(lambda: self.admin("GET", "/v1/settings/indexed-traits").json()["ready"].get("wishlist"))
        fans = [self.person(wishlist=["S1"]) for _ in range(3)]
        self.settle()
        self.admin("PUT", "/v1/settings/indexed-traits", {"traits": []})
        self.settle(); time.sleep(0.5)          # the purge job runs
        self.admin("PUT", "/v1/settings/indexed-traits", {"traits": ["wishlist"]})
        self.wait_for(lambda: self.admin("GET", "/v1/settings/indexed-traits").json()["ready"].get("wishlist"))
        self.admin("PUT", "/v1/journeys/pd", {"id": "pd", "entry": {
            "business_event": "Drop", "who": "profile.traits.wishlist.exists(s, s == event.properties.sku)"},
            "start": "done", "steps": {"done": {"end": {}}}})
        self.admin("POST", "/v1/journeys/pd/publish")
        self.srv.post("/v1/business-events", {"event": "Drop", "messageId": "d1", "properties": {"sku": "S1"}})
        st = self.wait_for(lambda: (lambda b: b if b["journeys"]["pd"]["state"] == "done" else None)(
            self.admin("GET", "/v1/business-events/d1").json()))
        self.assertEqual(st["journeys"]["pd"]["mode"], "index")
        self.assertEqual(st["journeys"]["pd"]["entered"], 3, st)


class ComputedRecreate(Base):
    def test_recreated_attribute_does_not_read_old_states(self):
        u = self.person()
        self.srv.post("/v1/track", {"userId": u, "event": "E", "properties": {"a": 5}})
        self.settle()
        self.admin("PUT", "/v1/computed/c1", {"event": "E", "aggregate": "sum", "value": "event.properties.a"}, want=201)
        self.wait_backfill("computed", "c1")
        self.assertEqual(self.profile(u)["computed"]["c1"], 5)
        self.admin("DELETE", "/v1/computed/c1")
        self.admin("PUT", "/v1/computed/c1", {"event": "F", "aggregate": "sum", "value": "event.properties.a"}, want=201)
        self.wait_backfill("computed", "c1")
        # u never sent F: the new attribute must read 0.
        self.assertEqual(self.profile(u)["computed"].get("c1", 0), 0)


class AudienceRecreateDuringPurge(Base):
    cfg = "[audiences]\njob_batch = 2\n"
    def sixty_members_then_delete(self, aid):
        """60 members of aid, an `on: exit` journey on it, then DELETE."""
        self.admin("PUT", "/v1/journeys/ex", {"id": "ex", "entry": {"audience": aid, "on": "exit"},
            "start": "hook", "steps": {"hook": {"webhook": {"url": self.sink.url("/exit"), "body": "{}"}, "next": "done"},
                                       "done": {"end": {}}}})
        self.admin("POST", "/v1/journeys/ex/publish")
        for i in range(60):
            self.person(plan="a")
        self.settle()
        self.admin("PUT", "/v1/audiences/" + aid, {"when": 'profile.traits.plan == "a"'}, want=201)
        d = self.wait_backfill("audiences", aid)
        self.assertEqual(d["size"], 60)
        self.admin("DELETE", "/v1/audiences/" + aid)

    def test_size_matches_members_after_recreate(self):
        self.sixty_members_then_delete("x")
        r = self.recreate("/v1/audiences/x", {"when": 'profile.traits.plan == "a"'})
        self.assertEqual(r.json()["version"], 2)
        d = self.wait_backfill("audiences", "x")
        n = 0; after = None
        while True:
            page = self.admin("GET", "/v1/audiences/x/members?limit=1000" + ("&after=" + after if after else "")).json()
            n += len(page["members"]); after = page["next"]
            if not after:
                break
        self.assertEqual(n, 60)
        self.assertEqual(d["size"], n, d)

    def test_recreate_with_other_predicate_does_not_start_exit_journeys(self):
        self.sixty_members_then_delete("y")
        self.recreate("/v1/audiences/y", {"when": 'profile.traits.plan == "b"'})
        self.wait_backfill("audiences", "y")
        time.sleep(1)
        self.assertEqual(self.admin("GET", "/v1/audiences/y").json()["size"], 0)
        self.assertEqual(self.admin("GET", "/v1/audiences/y/members").json()["members"], [])
        self.assertEqual(len(self.sink.received("/exit")), 0, "deletion-leaving started exit journeys")


class MergeWindowTimer(Base):
    def test_merged_window_attribute_decays(self):
        self.admin("PUT", "/v1/computed/o7", {"event": "O", "aggregate": "count", "window": "7d"}, want=201)
        self.wait_backfill("computed", "o7")
        u = self.person()                      # the older profile: survives
        anon = "anon-" + uuid.uuid4().hex[:8]
        self.srv.post("/v1/track", {"anonymousId": anon, "event": "O"})
        self.settle()
        self.srv.post("/v1/identify", {"userId": u, "anonymousId": anon})
        self.settle()
        p = self.profile(u)
        self.assertEqual(p["computed"]["o7"], 1)
        self.admin("POST", "/v1/debug/clock", {"advance": "8d"})
        self.settle()
        self.wait_for(lambda: self.profile(u)["computed"]["o7"] == 0, timeout=5, what="o7 decays after merge")


class MergeKeepsMembership(Base):
    def test_merge_moves_membership_without_a_second_entry(self):
        self.admin("PUT", "/v1/audiences/viewers",
                   {"when": 'event_count("Viewed", "1d") >= 1'}, want=201)
        self.wait_backfill("audiences", "viewers")
        self.admin("PUT", "/v1/journeys/hello", {"id": "hello", "entry": {"audience": "viewers"},
            "start": "hook", "steps": {"hook": {"webhook": {"url": self.sink.url("/hello"), "body": "{}"},
                                                "next": "done"}, "done": {"end": {}}}})
        self.admin("POST", "/v1/journeys/hello/publish")
        u = self.person()                      # the older profile: survives the merge
        anon = "anon-" + uuid.uuid4().hex[:8]
        self.srv.post("/v1/track", {"anonymousId": anon, "event": "Viewed"})
        self.settle()
        self.sink.wait(lambda s: len(s.received("/hello")) == 1)
        self.srv.post("/v1/identify", {"userId": u, "anonymousId": anon})
        self.settle()
        p = self.profile(u)
        self.assertEqual([a["id"] for a in p["audiences"]], ["viewers"])
        self.assertEqual(self.admin("GET", "/v1/audiences/viewers").json()["size"], 1)
        time.sleep(0.3)
        self.assertEqual(len(self.sink.received("/hello")), 1, "the merge entered the journey again")
        # The membership leaves with the merged-in history's window.
        self.admin("POST", "/v1/debug/clock", {"advance": "1d1s"})
        self.settle()
        self.wait_for(lambda: self.profile(u)["audiences"] == [], timeout=5, what="exit after merge")
        self.assertEqual(self.admin("GET", "/v1/audiences/viewers").json()["size"], 0)


class ManyAudiences(Base):
    def test_list_shows_every_audience(self):
        for i in range(300):
            self.admin("PUT", "/v1/audiences/a%03d" % i, {"when": "false"}, want=201)
        self.assertEqual(len(self.admin("GET", "/v1/audiences").json()["audiences"]), 300)


if __name__ == "__main__":
    unittest.main()


class FutureEvent(Base):
    def test_future_dated_event_leaves_its_window(self):
        self.admin("POST", "/v1/debug/clock", {"now": "2030-01-01T00:00:00Z"})
        self.admin("PUT", "/v1/audiences/fut", {"when": 'event_count("Fut", "1h") > 0'}, want=201)
        self.wait_backfill("audiences", "fut")
        u = self.person()
        self.srv.post("/v1/track", {"userId": u, "event": "Fut", "timestamp": "2030-01-01T00:10:00Z"})
        self.settle()
        self.assertEqual([a["id"] for a in self.profile(u)["audiences"]], ["fut"])
        self.admin("POST", "/v1/debug/clock", {"advance": "2h"})
        self.settle()
        self.wait_for(lambda: self.profile(u)["audiences"] == [], timeout=5, what="leaves fut")


class InAudienceOrder(Base):
    def test_dependent_audience_follows_in_the_same_round(self):
        # "a" is evaluated before "b" (sorted ids) but depends on it.
        self.admin("PUT", "/v1/audiences/a_dep", {"when": 'in_audience("b_base")'}, want=201)
        self.admin("PUT", "/v1/audiences/b_base", {"when": 'profile.traits.tier == "gold"'}, want=201)
        self.wait_backfill("audiences", "a_dep"); self.wait_backfill("audiences", "b_base")
        u = self.person(tier="gold")
        self.settle()
        self.assertEqual(sorted(a["id"] for a in self.profile(u)["audiences"]), ["a_dep", "b_base"])
