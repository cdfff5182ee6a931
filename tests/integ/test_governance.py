"""Governance end to end: every send decision rule against the real server, an
SMTP server and the test clock. Exclusion counters must match exactly.

Each scenario uses its own message category, so the rules of one scenario do
not touch the others while they share one server.
"""
import json
import re
import time
import unittest
import uuid
from datetime import datetime, timedelta, timezone

from nudgetest import NudgeServer
from sink import Sink
from smtpsink import SmtpSink


def journey(jid, event, category, channel="email", template="gov-mail"):
    return {"id": jid, "entry": {"event": event}, "start": "send",
            "steps": {"send": {"message": {"channel": channel, "template": template, "category": category},
                               "next": "done"},
                      "done": {"end": {}}}}


class GovernanceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.smtp = SmtpSink()
        cls.sink = Sink()
        cfg = ("[webhook]\nallow = 127.0.0.1/32\n"
               "[smtp]\nhost = 127.0.0.1\nport = %d\ntls = none\n"
               "[sms]\nbase_url = %s\naccount_sid = AC1\nauth_token = t\nfrom = +15550001111\n"
               "[push]\nbase_url = %s\nproject_id = p1\ntoken = pt\n"
               % (cls.smtp.port, cls.sink.url(), cls.sink.url()))
        cls.srv = NudgeServer(extra_args=["--test-clock"], config_text=cfg).start()
        s = cls.srv
        put = lambda path, body: s.request("PUT", path, body, auth="admin")
        assert put("/v1/templates/gov-mail", {"channel": "email", "subject": "{{ journey.id }}", "text": "hi"}).status == 200
        assert put("/v1/templates/gov-sms", {"channel": "sms", "body": "hi {{ journey.id }}"}).status == 200
        assert put("/v1/templates/gov-push", {"channel": "push", "title": "t", "body": "b"}).status == 200
        journeys = [
            journey("promo-a", "Promo", "promo"), journey("promo-b", "Promo", "promo"),
            journey("receipt", "Promo", "transactional"),
            journey("news", "News", "news"), journey("news-strict", "Strict News", "strictnews"),
            journey("sms-offer", "Sms Offer", "marketing", "sms", "gov-sms"),
            journey("group-a", "Group A", "grp"), journey("group-b", "Group B", "grp"),
            journey("flash", "Flash", "flash"),
            journey("push-note", "Push Note", "transactional", "push", "gov-push"),
        ]
        for j in journeys:
            assert put("/v1/journeys/" + j["id"], j).status == 200
            r = s.request("POST", "/v1/journeys/%s/publish" % j["id"], auth="admin")
            assert r.status == 200, r
        rules = [
            ("caps", "promo-3-per-week", {"channels": ["email"], "category": "promo", "max": 3, "window": "7d"}),
            ("quiet-hours", "news-nights", {"channels": ["email"], "category": "news",
                                            "windows": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                                         "from": "21:00", "to": "08:00"}],
                                            "fallback_zone": "Europe/Paris", "action": "queue", "max_delay": "24h"}),
            ("quiet-hours", "strict-nights", {"channels": ["email"], "category": "strictnews",
                                              "windows": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                                           "from": "21:00", "to": "08:00"}],
                                              "fallback_zone": "Europe/Paris", "action": "queue", "max_delay": "1h"}),
            ("entry-caps", "one-of-group", {"journeys": ["group-a", "group-b"], "max": 1, "window": "30d"}),
            ("throttles", "flash-rate", {"journey": "flash", "step": "send", "rate": 2}),
        ]
        for kind, rid, doc in rules:
            r = put("/v1/rules/%s/%s" % (kind, rid), doc)
            assert r.status == 200, (kind, rid, r)

    @classmethod
    def tearDownClass(cls):
        cls.srv.__exit__(None, None, None)
        cls.smtp.close()
        cls.sink.close()

    # -- helpers -----------------------------------------------------------
    def person(self, tz=None, phone=False, consent=None):
        u = "g-" + uuid.uuid4().hex[:10]
        traits = {"email": u + "@example.org"}
        if phone:
            traits["phone"] = "+3361%07d" % (uuid.uuid4().int % 10000000)
        if consent:
            traits["consent"] = consent
        body = {"userId": u, "traits": traits}
        if tz:
            body["context"] = {"timezone": tz}
        self.assertEqual(self.srv.post("/v1/identify", body).status, 200)
        return u, traits

    def messages(self, u):
        # Polled right after the ingest answers: until the engine has applied
        # the person's identify, the profile is not there yet (404).
        r = self.srv.request("GET", "/v1/profiles/user_id/%s/messages" % u, auth="admin")
        if r.status == 404:
            return []
        self.assertEqual(r.status, 200, r)
        return r.json()["messages"]

    def track(self, u, event):
        self.assertEqual(self.srv.post("/v1/track", {"userId": u, "event": event}).status, 200)

    def settle(self):
        m = "settle-" + uuid.uuid4().hex[:8]
        self.track(m, "Settle")
        self.srv.wait_profile("user_id", m)
        time.sleep(0.3)

    def clock(self, **body):
        r = self.srv.request("POST", "/v1/debug/clock", body, auth="admin")
        self.assertEqual(r.status, 200, r)
        return datetime.fromisoformat(r.json()["now"].replace("Z", "+00:00"))

    def excluded(self, reason):
        m = re.search(r'^nudge_messages_excluded_total\{reason="%s"\} (\d+)$' % reason, self.srv.metrics(), re.M)
        return int(m.group(1)) if m else 0

    def mails(self, t, subject=None):
        return [m for m in self.smtp.to(t["email"]) if subject is None or str(m["msg"]["Subject"]) == subject]

    def at_utc_hour(self, hour):
        """Moves the engine clock forward to the next hh:00 UTC."""
        now = self.clock(advance="1s")
        target = now.replace(hour=hour, minute=0, second=0, microsecond=0)
        if target <= now:
            target += timedelta(days=1)
        return self.clock(now=target.strftime("%Y-%m-%dT%H:%M:%SZ"))

    # -- rules -------------------------------------------------------------
    def test_rules_api_validates_and_round_trips(self):
        r = self.srv.request("GET", "/v1/rules/caps/promo-3-per-week", auth="admin")
        self.assertEqual((r.status, r.json()["max"]), (200, 3))
        r = self.srv.request("PUT", "/v1/rules/caps/bad", {"max": 0, "window": "7d"}, auth="admin")
        self.assertEqual((r.status, r.json()["error"]["field"]), (400, "max"))
        r = self.srv.request("PUT", "/v1/rules/quiet-hours/bad", {"windows": [{"days": ["mon"], "from": "25:00", "to": "08:00"}],
                                                                   "action": "queue"}, auth="admin")
        self.assertEqual(r.status, 400)
        self.assertIn("windows[0]", r.json()["error"]["field"])
        self.assertEqual(self.srv.request("PUT", "/v1/rules/nope/x", {}, auth="admin").status, 404)
        self.assertEqual(self.srv.request("PUT", "/v1/rules/caps/tmp", {"max": 1, "window": "1d", "category": "zzz"}, auth="admin").status, 200)
        self.assertEqual(self.srv.request("DELETE", "/v1/rules/caps/tmp", auth="admin").status, 200)
        self.assertEqual(self.srv.request("GET", "/v1/rules/caps/tmp", auth="admin").status, 404)
        ids = [x.get("id") for x in self.srv.request("GET", "/v1/rules/caps", auth="admin").json()["rules"]]
        self.assertIn("promo-3-per-week", ids)

    def test_consent_denied_then_granted(self):
        u, t = self.person(phone=True)
        before = self.excluded("no_consent")
        self.track(u, "Sms Offer")              # marketing SMS: denied by default
        self.settle()
        self.assertEqual(self.excluded("no_consent"), before + 1)
        r = self.srv.request("PUT", "/v1/profiles/user_id/%s/consent" % u, {"sms": {"marketing": "granted"}}, auth="admin")
        self.assertEqual(r.status, 200)
        self.track(u, "Sms Offer")
        self.sink.wait(lambda s: [x for x in s.received() if isinstance(x["body"], dict) and x["body"].get("To") == t["phone"]])
        self.assertEqual(self.excluded("no_consent"), before + 1)

    def test_cap_of_three_across_two_journeys_rolls_after_a_week(self):
        u, t = self.person()
        before = self.excluded("capped")
        for _ in range(5):                       # two promo journeys each time: 10 candidates
            self.track(u, "Promo")
        self.settle()
        self.assertEqual(len(self.mails(t, "promo-a")) + len(self.mails(t, "promo-b")), 3)
        self.assertEqual(self.excluded("capped"), before + 7)
        # Transactional passes the cap (one receipt per event).
        self.smtp.wait(lambda s: len(self.mails(t, "receipt")) == 5)
        self.clock(advance="7d1m")
        self.track(u, "Promo")
        self.settle()
        self.smtp.wait(lambda s: len(self.mails(t, "promo-a")) + len(self.mails(t, "promo-b")) == 5)
        self.assertEqual(self.excluded("capped"), before + 7)

    def test_quiet_hours_queue_per_zone_and_fallback(self):
        paris, tp = self.person(tz="Europe/Paris")
        ny, tn = self.person(tz="America/New_York")
        nozone, tz0 = self.person()
        self.settle()
        self.at_utc_hour(22)                     # 23:00 Paris, 17:00 New York
        for u in (paris, ny, nozone):
            self.track(u, "News")
        self.settle()
        self.smtp.wait(lambda s: self.mails(tn, "news"))
        self.assertEqual(self.mails(tp, "news"), [])
        self.assertEqual(self.mails(tz0, "news"), [])   # fallback zone Europe/Paris
        self.at_utc_hour(7)                      # 08:00 Paris: the window ends
        self.settle()
        self.smtp.wait(lambda s: self.mails(tp, "news") and self.mails(tz0, "news"))
        self.assertEqual(len(self.mails(tn, "news")), 1)

    def test_queued_past_max_delay_is_dropped_and_counted(self):
        u, t = self.person(tz="Europe/Paris")
        self.settle()
        before = self.excluded("quiet_hours_dropped")
        self.at_utc_hour(22)
        self.track(u, "Strict News")             # window ends 10 h later, max_delay 1 h
        self.settle()
        self.assertEqual(self.excluded("quiet_hours_dropped"), before + 1)
        self.at_utc_hour(8)
        self.settle()
        self.assertEqual(self.mails(t, "news-strict"), [])

    def test_entry_cap_across_a_journey_group(self):
        u, t = self.person()
        before = self.excluded("entry_capped")
        self.track(u, "Group A")
        self.track(u, "Group B")
        self.settle()
        self.smtp.wait(lambda s: self.mails(t, "group-a"))
        self.assertEqual(self.mails(t, "group-b"), [])
        self.assertEqual(self.excluded("entry_capped"), before + 1)
        self.clock(advance="30d1m")
        self.track(u, "Group B")
        self.smtp.wait(lambda s: self.mails(t, "group-b"))

    def test_throttled_step_sends_at_the_configured_rate(self):
        people = [self.person() for _ in range(8)]
        for u, _ in people:
            self.track(u, "Flash")
        self.smtp.wait(lambda s: all(self.mails(t, "flash") for _, t in people), timeout=30)
        created = []
        for u, _ in people:
            env = self.srv.request("GET", "/v1/profiles/user_id/%s/messages" % u, auth="admin").json()["messages"]
            created.append(env[0]["created_ms"])
        created.sort()
        gaps = [b - a for a, b in zip(created, created[1:])]
        self.assertTrue(all(g >= 490 for g in gaps), gaps)        # 2 per second

    def test_transactional_skips_quiet_hours_but_not_suppression(self):
        u, t = self.person(tz="Europe/Paris")
        self.settle()
        self.at_utc_hour(23)
        self.track(u, "Promo")                   # the receipt journey is transactional
        self.smtp.wait(lambda s: self.mails(t, "receipt"))
        r = self.srv.request("PUT", "/v1/suppression/email/" + t["email"], auth="admin")
        self.assertEqual(r.status, 200)
        before = self.excluded("suppressed")
        self.track(u, "Promo")
        self.settle()
        self.assertEqual(len(self.mails(t, "receipt")), 1)
        self.assertGreaterEqual(self.excluded("suppressed"), before + 1)

    def test_soft_bounces_suppress_after_three_and_delivery_resets(self):
        def soft(addr, n):
            for _ in range(n):
                r = self.srv.request("POST", "/v1/feedback/email",
                                     {"type": "bounce", "email": addr, "permanent": False}, auth="admin")
                self.assertEqual(r.status, 200, r)

        def listed(addr):
            time.sleep(0.3)
            r = self.srv.request("GET", "/v1/suppression/email/" + addr, auth="admin")
            return r.json() if r.status == 200 else None

        a = "soft-%s@example.org" % uuid.uuid4().hex[:6]
        soft(a, 3)
        self.settle()
        self.assertEqual(listed(a)["reason"], "soft_bounce")
        # Two soft bounces, a delivery, two more: not suppressed.
        u, t = self.person()
        soft(t["email"], 2)
        self.track(u, "Promo")                   # a delivered receipt resets the count
        self.smtp.wait(lambda s: self.mails(t, "receipt"))
        time.sleep(0.5)
        soft(t["email"], 2)
        self.settle()
        self.assertIsNone(listed(t["email"]))

    def test_sms_receipts_and_invalid_push_tokens_are_applied(self):
        u, t = self.person(phone=True, consent={"sms": "granted"})
        self.track(u, "Sms Offer")
        env = self.sink.wait(lambda s: [e for e in self.messages(u) if e.get("provider_id")])[0]
        form = "MessageSid=%s&MessageStatus=delivered&To=%s" % (env["provider_id"], t["phone"].replace("+", "%2B"))
        r = self.srv.request("POST", "/v1/feedback/sms", form,
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, auth="admin")
        self.assertEqual(r.status, 200, r)
        self.settle()
        env = self.srv.request("GET", "/v1/profiles/user_id/%s/messages" % u, auth="admin").json()["messages"][0]
        self.assertEqual((env["receipt"], env["state"]), ("delivered", "delivered"))
        # An undelivered receipt for an invalid number suppresses the number.
        form = "MessageSid=%s&MessageStatus=undelivered&ErrorCode=21211" % env["provider_id"]
        self.srv.request("POST", "/v1/feedback/sms", form,
                         headers={"Content-Type": "application/x-www-form-urlencoded"}, auth="admin")
        self.settle()
        r = self.srv.request("GET", "/v1/suppression/sms/" + t["phone"].replace("+", "%2B"), auth="admin")
        self.assertEqual((r.status, r.json().get("reason")), (200, "invalid_recipient"))
        # A push token the provider calls UNREGISTERED is not used again.
        tok = "dead-" + uuid.uuid4().hex
        self.sink.unregistered.add(tok)
        pu = "g-" + uuid.uuid4().hex[:10]
        self.srv.post("/v1/identify", {"userId": pu, "context": {"device": {"token": tok}}})
        self.track(pu, "Push Note")
        self.sink.wait(lambda s: [x for x in s.received("/v1/projects/p1/messages:send")
                                  if x["body"]["message"]["token"] == tok])
        deadline = time.time() + 10
        while time.time() < deadline:
            r = self.srv.request("GET", "/v1/suppression/push/" + tok, auth="admin")
            if r.status == 200:
                break
            time.sleep(0.1)
        self.assertEqual((r.status, r.json().get("reason")), (200, "invalid_recipient"))
        before = self.excluded("suppressed")
        self.track(pu, "Push Note")
        self.settle()
        self.assertEqual(self.excluded("suppressed"), before + 1)
        self.assertEqual(len([x for x in self.sink.received("/v1/projects/p1/messages:send")
                              if x["body"]["message"]["token"] == tok]), 1)

    def test_suppression_import_reports_bad_lines(self):
        a, b = ("imp-%s@example.org" % uuid.uuid4().hex[:6] for _ in range(2))
        csv = "address,reason\n%s,manual\nnot-an-address,manual\n%s,complaint\n" % (a, b.upper())
        r = self.srv.request("POST", "/v1/suppression/import?channel=email", csv,
                             headers={"Content-Type": "text/csv"}, auth="admin")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["accepted"], 2)
        self.assertEqual([e["line"] for e in r.json()["errors"]], [3])
        got = lambda addr: self.srv.request("GET", "/v1/suppression/email/" + addr, auth="admin")
        self.assertEqual(got(a).json()["reason"], "manual")
        self.assertEqual(got(b.lower()).json()["reason"], "complaint")
        self.assertEqual(got("never-" + a).status, 404)


if __name__ == "__main__":
    unittest.main()
