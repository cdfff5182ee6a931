"""Black-box tests of ingestion, profiles and identity against the real binary.

Covers the foundation issue's integration list: every ingest type, a profile
built from track + identify, merges by alias and identify, messageId dedup,
per-item batch errors, 401/400/413/404/405/415/411, erase by DELETE, key
generation, /healthz and /metrics.
"""
import json
import os
import re
import unittest
import uuid

from nudgetest import NudgeServer, run_nudge


def mid():
    return str(uuid.uuid4())


class IngestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = NudgeServer().start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.__exit__(None, None, None)

    def uid(self):
        return "u-" + uuid.uuid4().hex[:12]

    def test_every_type_is_accepted(self):
        s, u = self.srv, self.uid()
        calls = [
            ("/v1/identify", {"userId": u, "traits": {"email": u + "@example.com", "plan": "pro"}}),
            ("/v1/track", {"userId": u, "event": "Product Added", "properties": {"price": 12.5}}),
            ("/v1/page", {"userId": u, "name": "Home", "properties": {"path": "/"}}),
            ("/v1/screen", {"userId": u, "name": "Cart"}),
            ("/v1/group", {"userId": u, "groupId": "g1", "traits": {"name": "Acme"}}),
            ("/v1/alias", {"userId": u, "previousId": "anon-" + u}),
        ]
        for path, body in calls:
            r = s.post(path, body)
            self.assertEqual(r.status, 200, (path, r))
            self.assertEqual(r.json().get("success"), True)
        p = s.wait_profile("user_id", u, lambda p: len(p["events"]) >= 4)
        kinds = sorted(e.get("type") for e in p["events"])
        self.assertIn("track", kinds)
        self.assertIn("page", kinds)
        self.assertIn("screen", kinds)
        self.assertEqual(p["traits"]["plan"], "pro")
        self.assertIn(u + "@example.com", p["identities"]["email"])

    def test_profile_from_track_and_identify(self):
        s, u = self.srv, self.uid()
        anon = "anon-" + uuid.uuid4().hex
        self.assertEqual(s.post("/v1/track", {"anonymousId": anon, "event": "Viewed", "messageId": mid()}).status, 200)
        self.assertEqual(s.post("/v1/identify", {"anonymousId": anon, "userId": u,
                                                 "traits": {"first_name": "Ada", "email": "Ada@Example.COM"}}).status, 200)
        p = s.wait_profile("user_id", u, lambda p: p["traits"].get("first_name") == "Ada" and p["events"])
        self.assertEqual([e["event"] for e in p["events"] if e.get("type") == "track"], ["Viewed"])
        self.assertIn(anon, p["identities"]["anonymous_id"])
        self.assertIn("ada@example.com", p["identities"]["email"])
        # The same person is found by every identity.
        for ns, v in (("anonymous_id", anon), ("email", "ada@example.com"), ("email", "ADA@example.com")):
            r = s.profile(ns, v)
            self.assertEqual(r.status, 200, (ns, v, r))
            self.assertEqual(r.json()["id"], p["id"])

    def test_event_at_the_depth_limit_is_applied(self):
        # 32 levels (the default max_depth) with the body as level 1: the
        # engine must parse what ingest acknowledged.
        s, u = self.srv, self.uid()
        v = 1
        for _ in range(31):
            v = {"a": v}
        self.assertEqual(s.post("/v1/track", {"userId": u, "event": "Deep", "properties": v}).status, 200)
        p = s.wait_profile("user_id", u, lambda p: p["events"])
        self.assertEqual(p["events"][0]["event"], "Deep")
        v = {"a": v}
        self.assertEqual(s.post("/v1/track", {"userId": u, "event": "Deeper", "properties": v}).status, 400)

    def test_alias_merges_two_profiles(self):
        s, u = self.srv, self.uid()
        anon = "anon-" + uuid.uuid4().hex
        s.post("/v1/track", {"anonymousId": anon, "event": "Cart Viewed", "properties": {"n": 1}})
        s.post("/v1/identify", {"userId": u, "traits": {"country": "FR"}})
        s.post("/v1/track", {"userId": u, "event": "Signed In"})
        pa = s.wait_profile("anonymous_id", anon)
        pu = s.wait_profile("user_id", u, lambda p: len(p["events"]) == 1)
        self.assertNotEqual(pa["id"], pu["id"])
        self.assertEqual(s.post("/v1/alias", {"previousId": anon, "userId": u}).status, 200)
        p = s.wait_profile("user_id", u, lambda p: len(p["events"]) == 2)
        self.assertEqual(sorted(e["event"] for e in p["events"]), ["Cart Viewed", "Signed In"])
        self.assertIn(anon, p["identities"]["anonymous_id"])
        self.assertEqual(p["traits"]["country"], "FR")
        pa2 = s.profile("anonymous_id", anon).json()
        self.assertEqual(pa2["id"], p["id"])
        self.assertIn(min(pa["id"], pu["id"], key=int), [p["id"]])

    def test_identify_merges_by_email(self):
        s, u = self.srv, self.uid()
        anon = "anon-" + uuid.uuid4().hex
        email = u + "@shop.test"
        s.post("/v1/identify", {"anonymousId": anon, "traits": {"email": email, "newsletter": True}})
        s.post("/v1/track", {"anonymousId": anon, "event": "Wishlisted"})
        s.wait_profile("anonymous_id", anon, lambda p: p["events"])
        s.post("/v1/identify", {"userId": u, "traits": {"email": email, "plan": "free"}})
        p = s.wait_profile("user_id", u, lambda p: anon in p["identities"].get("anonymous_id", []))
        self.assertEqual(p["traits"]["newsletter"], True)
        self.assertEqual(p["traits"]["plan"], "free")
        self.assertEqual([e["event"] for e in p["events"] if e.get("type") == "track"], ["Wishlisted"])

    def test_two_user_ids_never_merge(self):
        s, u1, u2 = self.srv, self.uid(), self.uid()
        anon = "anon-" + uuid.uuid4().hex
        s.post("/v1/identify", {"userId": u1, "anonymousId": anon})
        s.post("/v1/identify", {"userId": u2, "anonymousId": anon})
        p1 = s.wait_profile("user_id", u1)
        p2 = s.wait_profile("user_id", u2)
        self.assertNotEqual(p1["id"], p2["id"])
        self.assertEqual(p1["identities"]["user_id"], [u1])
        self.assertEqual(p2["identities"]["user_id"], [u2])

    def test_repeated_message_id_applied_once(self):
        s, u = self.srv, self.uid()
        m = mid()
        body = {"userId": u, "event": "Order Completed", "messageId": m, "properties": {"revenue": 10}}
        for _ in range(3):
            self.assertEqual(s.post("/v1/track", body).status, 200)
        # Also inside a batch.
        r = s.post("/v1/batch", {"batch": [dict(body, type="track"), dict(body, type="track")]})
        self.assertEqual(r.status, 200, r)
        s.post("/v1/track", {"userId": u, "event": "Marker", "messageId": mid()})
        p = s.wait_profile("user_id", u, lambda p: any(e["event"] == "Marker" for e in p["events"]))
        self.assertEqual(sum(1 for e in p["events"] if e.get("messageId") == m), 1)

    def test_batch_reports_per_item_errors(self):
        s, u = self.srv, self.uid()
        r = s.post("/v1/batch", {"batch": [
            {"type": "track", "userId": u, "event": "A"},
            {"type": "track", "userId": u},
            {"type": "identify", "traits": {"x": 1}},
            {"type": "nope", "userId": u},
            {"type": "page", "userId": u, "name": "P"},
            {"type": "track", "userId": u, "event": "B", "properties": "not an object"},
        ]})
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertEqual(body["accepted"], 2)
        fields = {e["index"]: e["field"] for e in body["errors"]}
        self.assertEqual(fields[1], "batch[1].event")
        self.assertIn(fields[2], ("batch[2].userId", "batch[2].anonymousId", "batch[2]"))
        self.assertEqual(fields[3], "batch[3].type")
        self.assertEqual(fields[5], "batch[5].properties")
        p = s.wait_profile("user_id", u, lambda p: len(p["events"]) == 2)
        self.assertEqual(sorted(e.get("event") or e.get("name") for e in p["events"]), ["A", "P"])

    def test_batch_with_no_valid_item_is_400(self):
        r = self.srv.post("/v1/batch", {"batch": [{"type": "track"}]})
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json()["errors"][0]["field"], "batch[0].userId" if "userId" in r.body else r.json()["errors"][0]["field"])

    def test_write_key_in_body_and_basic(self):
        s, u = self.srv, self.uid()
        r = s.post("/v1/track", {"userId": u, "event": "E", "writeKey": s.write_key}, auth=None)
        self.assertEqual(r.status, 200, r)
        p = s.wait_profile("user_id", u, lambda p: p["events"])
        self.assertNotIn("writeKey", p["events"][0])

    def test_401_without_or_with_wrong_key(self):
        s = self.srv
        body = {"userId": "x", "event": "E"}
        self.assertEqual(s.post("/v1/track", body, auth=None).status, 401)
        r = s.post("/v1/track", body, auth=None, headers={"Authorization": "Basic d3Jvbmc6"})
        self.assertEqual(r.status, 401)
        self.assertEqual(r.json()["error"]["code"], "unauthorized")
        self.assertEqual(s.post("/v1/track", dict(body, writeKey="wrong"), auth=None).status, 401)
        # The admin API wants the admin key, not the write key.
        self.assertEqual(s.request("GET", "/v1/profiles/user_id/x", auth="write").status, 401)
        self.assertEqual(s.request("GET", "/v1/profiles/user_id/x", auth=None).status, 401)
        self.assertEqual(s.request("GET", "/metrics", auth=None).status, 401)
        # healthz is public.
        self.assertEqual(s.request("GET", "/healthz", auth=None).status, 200)

    def test_400_names_the_field(self):
        s = self.srv
        r = s.post("/v1/track", '{"userId": "a", "event": ')
        self.assertEqual(r.status, 400)
        self.assertIn("error", r.json())
        for body, field in [
            ({"userId": "a"}, "event"),
            ({"event": "E"}, "userId"),
            ({"userId": "a", "event": "E", "properties": [1]}, "properties"),
            ({"userId": "a", "event": "E", "context": "x"}, "context"),
            ({"userId": "a", "event": "E", "timestamp": "yesterday"}, "timestamp"),
            ({"userId": "a", "event": 5}, "event"),
        ]:
            r = s.post("/v1/track", body)
            self.assertEqual(r.status, 400, (body, r))
            err = r.json()["error"]
            self.assertEqual(err["field"], field, (body, r))
            self.assertTrue(err["message"])
        r = s.post("/v1/identify", {"userId": "a", "traits": "nope"})
        self.assertEqual((r.status, r.json()["error"]["field"]), (400, "traits"))
        r = s.post("/v1/alias", {"userId": "a"})
        self.assertEqual((r.status, r.json()["error"]["field"]), (400, "previousId"))

    def test_413_body_too_large(self):
        big = json.dumps({"userId": "a", "event": "E", "properties": {"x": "y" * (5 << 20)}})
        r = self.srv.post("/v1/track", big, headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 413)
        # An event above 32 KiB inside a small-enough body is refused too.
        r = self.srv.post("/v1/track", {"userId": "a", "event": "E", "properties": {"x": "y" * 40000}})
        self.assertIn(r.status, (400, 413))
        self.assertTrue(r.json()["error"]["message"])

    def test_404_405_415(self):
        s = self.srv
        r = s.request("GET", "/v1/nothing-here")
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json()["error"]["code"], "not_found")
        r = s.request("GET", "/v1/track")
        self.assertEqual(r.status, 405)
        self.assertIn("POST", r.headers.get("Allow", ""))
        r = s.request("PUT", "/v1/profiles/user_id/x", auth="admin")
        self.assertEqual(r.status, 405)
        r = s.post("/v1/track", "userId=a&event=E", headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 415)

    def test_411_without_length(self):
        raw = (b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Connection: close\r\n\r\n")
        out = self.srv.raw(raw)
        self.assertTrue(out.startswith(b"HTTP/1.1 411"), out[:100])

    def test_erase_by_delete(self):
        s, u = self.srv, self.uid()
        anon = "anon-" + uuid.uuid4().hex
        s.post("/v1/identify", {"userId": u, "anonymousId": anon, "traits": {"email": u + "@erase.test"}})
        s.post("/v1/track", {"userId": u, "event": "Something"})
        s.wait_profile("user_id", u, lambda p: p["events"])
        r = s.request("DELETE", "/v1/profiles/email/" + u + "@erase.test", auth="admin")
        self.assertEqual(r.status, 200, r)
        for ns, v in (("user_id", u), ("anonymous_id", anon), ("email", u + "@erase.test")):
            self.assertEqual(s.profile(ns, v).status, 404, (ns, v))
        self.assertEqual(s.request("DELETE", "/v1/profiles/user_id/" + u, auth="admin").status, 404)
        # A new event for the same person starts a fresh profile.
        s.post("/v1/track", {"userId": u, "event": "Again"})
        p = s.wait_profile("user_id", u, lambda p: p["events"])
        self.assertEqual([e["event"] for e in p["events"]], ["Again"])

    def test_metrics(self):
        s = self.srv
        s.post("/v1/track", {"userId": self.uid(), "event": "M"})
        m = s.metrics()
        self.assertRegex(m, r'nudge_http_requests_total\{route="track",status="200"\} [1-9]')
        for name in ("nudge_events_accepted_total", "nudge_commit_batch_records_bucket",
                     "nudge_commit_sync_seconds_bucket", "nudge_inbox_lag_records",
                     "nudge_engine_batch_seconds_bucket", "nudge_profiles_created_total",
                     "nudge_profile_merges_total"):
            self.assertIn(name, m)
        live = int(re.search(r"^nudge_profiles (\d+)$", m, re.M).group(1))
        self.assertGreater(live, 0)


class KeysTest(unittest.TestCase):
    def test_keys_generated_once_and_required(self):
        srv = NudgeServer(keys=False)
        with srv:
            out = srv.read_stdout()
            wk = re.search(r"write key: (\S+)", out).group(1)
            ak = re.search(r"admin key: (\S+)", out).group(1)
            srv.write_key, srv.admin_key = wk, ak
            self.assertEqual(srv.post("/v1/track", {"userId": "k", "event": "E"}).status, 200)
            self.assertEqual(srv.post("/v1/track", {"userId": "k", "event": "E"}, auth=None).status, 401)
            self.assertEqual(srv.profile("user_id", "k").status in (200, 404), True)
            srv.restart()
            # Not printed again, still valid.
            self.assertEqual(srv.read_stdout().count("write key:"), 1)
            self.assertEqual(srv.post("/v1/track", {"userId": "k", "event": "E2"}).status, 200)
            with open(os.path.join(srv.data_dir, "keys")) as f:
                self.assertIn(wk, f.read())


class LifecycleTest(unittest.TestCase):
    def test_profile_gauge_counts_merges_and_erasure_across_restart(self):
        srv = NudgeServer()
        with srv:
            def live():
                return int(re.search(r"^nudge_profiles (\d+)$", srv.metrics(), re.M).group(1))
            srv.post("/v1/track", {"anonymousId": "g-a", "event": "E"})
            srv.post("/v1/track", {"userId": "g-u", "event": "E"})
            srv.post("/v1/track", {"userId": "g-v", "event": "E"})
            srv.wait_profile("user_id", "g-v")
            self.assertEqual(live(), 3)
            srv.post("/v1/alias", {"previousId": "g-a", "userId": "g-u"})
            srv.wait_profile("anonymous_id", "g-a", lambda p: "g-u" in p["identities"].get("user_id", []))
            self.assertEqual(live(), 2)
            self.assertEqual(srv.request("DELETE", "/v1/profiles/user_id/g-v", auth="admin").status, 200)
            self.assertEqual(live(), 1)
            srv.restart()
            self.assertEqual(live(), 1)

    def test_sigterm_exits_zero_and_data_survives(self):
        srv = NudgeServer()
        with srv:
            self.assertEqual(srv.post("/v1/identify", {"userId": "s1", "traits": {"a": 1}}).status, 200)
            self.assertEqual(srv.stop(), 0)
            r = run_nudge("check", "--data-dir", srv.data_dir)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("clean", r.stdout)
            srv.start()
            p = srv.wait_profile("user_id", "s1")
            self.assertEqual(p["traits"]["a"], 1)

    def test_bad_config_names_the_line(self):
        srv = NudgeServer(config_text="[server]\nlisten = 127.0.0.1:1\n[ingest]\nmax_batch_items = lots\n")
        with self.assertRaises(RuntimeError) as cm:
            srv.start(timeout=5)
        self.assertIn(":4:", str(cm.exception))
        self.assertIn("max_batch_items", str(cm.exception))
        srv.owns_dir and __import__("shutil").rmtree(srv.data_dir, ignore_errors=True)

    def test_version_and_help(self):
        r = run_nudge("version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^nudge \d+\.\d+")
        r = run_nudge("help")
        for c in ("serve", "check", "version"):
            self.assertIn(c, r.stdout)
        self.assertNotEqual(run_nudge("bogus").returncode, 0)


if __name__ == "__main__":
    unittest.main()


class DedupWindowTest(unittest.TestCase):
    """The dedup window ends: an id seen again after it is applied again, once,
    even when it comes twice in one engine batch that also prunes its old entry
    (the engine writes dedup entries blind and tracks the batch's ids itself)."""

    def test_id_after_window_applied_once_and_remembered_again(self):
        with NudgeServer(extra_args=["--test-clock"],
                         config_text="[ingest]\ndedup_window = 1h\n") as s:
            u, m = "u-" + uuid.uuid4().hex[:12], mid()
            body = {"userId": u, "event": "Paid", "messageId": m}

            def count(marker):
                s.post("/v1/track", {"userId": u, "event": marker, "messageId": mid()})
                p = s.wait_profile("user_id", u, lambda p: any(e["event"] == marker for e in p["events"]))
                return sum(1 for e in p["events"] if e.get("messageId") == m)

            self.assertEqual(s.post("/v1/track", body).status, 200)
            self.assertEqual(s.post("/v1/track", body).status, 200)
            self.assertEqual(count("M1"), 1)
            r = s.request("POST", "/v1/debug/clock", {"advance": "2h"}, auth="admin")
            self.assertEqual(r.status, 200, r)
            r = s.post("/v1/batch", {"batch": [dict(body, type="track"), dict(body, type="track")]})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(count("M2"), 2)
            self.assertEqual(s.post("/v1/track", body).status, 200)
            self.assertEqual(count("M3"), 2)
            s.stop()
            s.start()
            self.assertEqual(s.post("/v1/track", body).status, 200)
            self.assertEqual(count("M4"), 2)
