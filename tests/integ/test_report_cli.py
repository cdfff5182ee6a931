"""test_report_cli -- `nudge report journey ID` and `nudge report overview`.

The table rendering is checked against a small local HTTP server that serves
answers in the documented format (docs/reporting.md) and records what the CLI
asked for (path, query, Accept, Authorization). The end-to-end test runs the
real server, sends events through a journey and reads the report back through
the CLI.
"""
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
import urllib.request
import uuid

import nudgetest
from smtpsink import SmtpSink

JOURNEY = {
    "journey": "cart", "version": 0, "versions": [1, 2],
    "totals": {
        "entered": 120, "in_progress": 10, "completed": 95,
        "exited": {"completed": 95, "exit": 3, "goal": 0, "stopped": 0, "error": 1,
                   "timeout": 2, "erased": 0, "merged": 0},
        "errors": 1, "conversions": 12, "conversion_value": 1234.5, "conversion_rate": 0.1,
        "targeted": 100, "excluded_total": 5,
        "excluded": {"suppressed": 3, "no_consent": 2},
        "sent": 95, "delivered": 90, "bounced_hard": 3, "bounced_soft": 2, "failed": 0,
        "opened": 70, "opened_unique": 45, "clicked": 30, "clicked_unique": 18,
        "unsubscribed": 1, "complaints": 0,
        "delivery_rate": 90 / 95, "open_rate": 0.5, "click_rate": 0.2, "click_to_open_rate": 0.4,
    },
    "steps": [
        {"step": "wait_order", "entered": 120, "in_step": 10, "completed": 105,
         "exited": {"completed": 0, "exit": 3, "goal": 0, "stopped": 0, "error": 0,
                    "timeout": 2, "erased": 0, "merged": 0},
         "errors": 0, "conversions": 0, "conversion_value": 0, "message": False},
        {"step": "remind", "entered": 100, "in_step": 0, "completed": 99,
         "exited": {"completed": 0, "exit": 0, "goal": 0, "stopped": 0, "error": 1,
                    "timeout": 0, "erased": 0, "merged": 0},
         "errors": 1, "conversions": 12, "conversion_value": 1234.5, "message": True},
        {"step": "done", "entered": 95, "in_step": 0, "completed": 0,
         "exited": {"completed": 95, "exit": 0, "goal": 0, "stopped": 0, "error": 0,
                    "timeout": 0, "erased": 0, "merged": 0},
         "errors": 0, "conversions": 0, "conversion_value": 0, "message": False},
    ],
    "messages": [
        {"step": "remind", "template": "cart-reminder", "channel": "email",
         "targeted": 100, "excluded_total": 5,
         "excluded": {"suppressed": 3, "no_consent": 2, "capped": 0},
         "sent": 95, "delivered": 90, "bounced_hard": 3, "bounced_soft": 2, "failed": 0,
         "opened": 70, "opened_unique": 45, "clicked": 30, "clicked_unique": 18,
         "unsubscribed": 1, "complaints": 0,
         "delivery_rate": 90 / 95, "open_rate": 0.5, "click_rate": 0.2,
         "click_to_open_rate": 0.4, "conversions": 12, "conversion_value": 1234.5},
    ],
    "arms": [
        {"arm": "A", "step": "split", "entered": 60, "conversions": 8,
         "conversion_value": 800, "conversion_rate": 8 / 60},
        {"arm": "B", "step": "split", "entered": 60, "conversions": 4,
         "conversion_value": 434.5, "conversion_rate": 4 / 60},
    ],
    "latency": {},
}

OVERVIEW = {
    "totals": {},
    "journeys": [
        {"journey": "cart", "entered": 120, "in_progress": 10, "completed": 95,
         "errors": 1, "conversions": 12, "conversion_rate": 0.1, "sent": 95,
         "delivered": 90, "open_rate": 0.5, "click_rate": 0.2},
        {"journey": "welcome-series", "entered": 7, "in_progress": 7, "completed": 0,
         "errors": 0, "conversions": 0, "conversion_rate": 0, "sent": 0,
         "delivered": 0, "open_rate": None, "click_rate": None},
    ],
    "channels": [
        {"channel": "email", "sent": 95, "delivered": 90, "bounced_hard": 3,
         "bounced_soft": 2, "failed": 0, "excluded_total": 5, "opened": 70,
         "opened_unique": 45, "clicked": 30, "clicked_unique": 18,
         "delivery_rate": 90 / 95, "open_rate": 0.5, "click_rate": 0.2},
    ],
}

STEP = {
    "journey": "cart", "step": "remind", "version": 2, "versions": [2],
    "entered": 100, "in_step": 0, "completed": 99,
    "exited": {"completed": 0, "exit": 0, "goal": 0, "stopped": 0, "error": 1,
               "timeout": 0, "erased": 0, "merged": 0},
    "errors": 1, "conversions": 12, "conversion_value": 1234.5,
    "messages": JOURNEY["messages"], "arms": [], "latency": {},
}

TEMPLATE = {
    "template": "cart-reminder",
    "totals": dict(JOURNEY["messages"][0]),
    "messages": [dict(JOURNEY["messages"][0], journey="cart"),
                 dict(JOURNEY["messages"][0], journey="winback", step="nudge", sent=3)],
    "latency": {},
}

CSV = "journey,version,step,template,channel,arm,counter,value\r\ncart,1,,,,,entered,120\r\n"


class CannedAPI:
    """A loopback HTTP server answering the report routes with canned bodies."""

    def __init__(self):
        self.requests = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                api.requests.append({"path": u.path, "query": urllib.parse.parse_qs(u.query),
                                     "accept": self.headers.get("Accept"),
                                     "auth": self.headers.get("Authorization")})
                if self.headers.get("Authorization") != "Bearer k1":
                    return self.answer(401, {"error": {"code": "unauthorized", "field": "Authorization",
                                                       "message": "the admin key is required (Bearer)"}})
                if u.path == "/v1/reports/journeys/cart":
                    if self.headers.get("Accept") == "text/csv":
                        return self.answer(200, CSV, "text/csv")
                    return self.answer(200, JOURNEY)
                if u.path == "/v1/reports/overview":
                    return self.answer(200, OVERVIEW)
                if u.path == "/v1/reports/journeys/cart/steps/remind":
                    return self.answer(200, STEP)
                if u.path == "/v1/reports/templates/cart-reminder":
                    return self.answer(200, TEMPLATE)
                return self.answer(404, {"error": {"code": "not_found", "field": "journey",
                                                   "message": "nothing was counted for journey 'nope'"}})

            def answer(self, status, body, ctype="application/json"):
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def cells(line):
    return re.split(r"\s{2,}", line.strip())


class ReportCLIAgainstCannedAPI(unittest.TestCase):
    def setUp(self):
        self.api = CannedAPI()

    def tearDown(self):
        self.api.close()

    def run_report(self, *args):
        return nudgetest.run_nudge("report", *args, "--url", self.api.url, "--admin-key", "k1")

    def test_journey_prints_funnel_messages_and_arms_as_tables(self):
        r = self.run_report("journey", "cart")
        self.assertEqual(r.returncode, 0, r.stderr)
        req = self.api.requests[-1]
        self.assertEqual(req["path"], "/v1/reports/journeys/cart")
        self.assertEqual(req["auth"], "Bearer k1")
        self.assertEqual(req["accept"], "application/json")
        out = r.stdout.splitlines()
        self.assertEqual(out[0], "journey cart, all versions")
        self.assertIn("entered 120, in progress 10, completed 95, errors 1", out[1])
        self.assertIn("exited: completed 95, exit 3, error 1, timeout 2", out[1])
        self.assertIn("conversions 12 (rate 10.0%), value 1234.50", out[2])
        funnel = out.index("Funnel")
        self.assertEqual(cells(out[funnel + 1]),
                         ["step", "entered", "in step", "completed", "errors", "exited"])
        self.assertEqual(cells(out[funnel + 2]), ["wait_order", "120", "10", "105", "0", "exit 3, timeout 2"])
        self.assertEqual(cells(out[funnel + 3]), ["remind", "100", "0", "99", "1", "error 1"])
        self.assertEqual(cells(out[funnel + 4]), ["done", "95", "0", "0", "0", "completed 95"])
        # Numbers are right-aligned under their header.
        self.assertEqual(out[funnel + 1].index("entered") + len("entered"),
                         out[funnel + 2].index("120") + 3)
        msgs = [i for i, l in enumerate(out) if l.startswith("Messages")][0]
        self.assertEqual(cells(out[msgs + 2]),
                         ["remind", "cart-reminder", "email", "100", "5", "95", "90", "5", "0",
                          "45/70", "18/30", "1", "94.7%", "50.0%", "20.0%", "40.0%"])
        self.assertIn("  remind excluded: suppressed 3, no_consent 2", out)
        arms = [i for i, l in enumerate(out) if l.startswith("Split arms")][0]
        self.assertEqual(cells(out[arms + 2]), ["A", "split", "60", "8", "13.3%", "800"])
        self.assertEqual(cells(out[arms + 3]), ["B", "split", "60", "4", "6.7%", "434.50"])

    def test_journey_options_become_the_query_and_csv_is_printed_as_is(self):
        r = self.run_report("journey", "cart", "--version", "2", "--bucket", "hour",
                            "--from", "2026-01-01T00:00:00Z", "--csv")
        self.assertEqual(r.returncode, 0, r.stderr)
        req = self.api.requests[-1]
        self.assertEqual(req["accept"], "text/csv")
        self.assertEqual(req["query"], {"version": ["2"], "bucket": ["hour"],
                                        "from": ["2026-01-01T00:00:00Z"]})
        self.assertEqual(r.stdout.replace("\r\n", "\n"), CSV.replace("\r\n", "\n"))
        r = self.run_report("journey", "cart", "--json")
        self.assertEqual(json.loads(r.stdout), JOURNEY)

    def test_overview_prints_journeys_and_channels(self):
        r = self.run_report("overview")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.api.requests[-1]["path"], "/v1/reports/overview")
        out = r.stdout.splitlines()
        self.assertEqual(out[0], "Journeys")
        self.assertEqual(cells(out[2]), ["cart", "120", "10", "95", "1", "12", "10.0%", "95",
                                         "90", "50.0%", "20.0%"])
        self.assertEqual(cells(out[3]), ["welcome-series", "7", "7", "0", "0", "0", "0.0%", "0",
                                         "0", "-", "-"])
        ch = out.index("Channels (opened and clicked: unique/total)")
        self.assertEqual(cells(out[ch + 2]), ["email", "95", "90", "5", "0", "5", "45/70",
                                              "18/30", "94.7%", "50.0%", "20.0%"])

    def test_step_and_template_reports(self):
        r = self.run_report("step", "cart", "remind", "--version", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        req = self.api.requests[-1]
        self.assertEqual((req["path"], req["query"]),
                         ("/v1/reports/journeys/cart/steps/remind", {"version": ["2"]}))
        out = r.stdout.splitlines()
        self.assertEqual(out[0], "journey cart, step remind, version 2")
        self.assertEqual(out[1], "entered 100, in step 0, completed 99, errors 1; exited: error 1")
        self.assertEqual(out[2], "conversions attributed 12, value 1234.50")
        self.assertIn("remind", cells([l for l in out if l.startswith("remind")][0]))
        r = self.run_report("template", "cart-reminder")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.api.requests[-1]["path"], "/v1/reports/templates/cart-reminder")
        out = r.stdout.splitlines()
        self.assertEqual(out[0], "template cart-reminder")
        self.assertIn("sent 95, delivered 90 (94.7%), opened 45/70 (50.0%)", out[1])
        hdr = [i for i, l in enumerate(out) if l.startswith("Messages")][0]
        self.assertEqual(cells(out[hdr + 1])[:4], ["journey", "step", "channel", "targeted"])
        self.assertEqual(cells(out[hdr + 2])[:6], ["cart", "remind", "email", "100", "5", "95"])
        self.assertEqual(cells(out[hdr + 3])[:6], ["winback", "nudge", "email", "100", "5", "3"])

    def test_refusals_and_bad_usage(self):
        r = self.run_report("journey", "nope")
        self.assertEqual(r.returncode, 1)
        self.assertIn("journey nope: nothing was counted for journey 'nope' (HTTP 404)", r.stderr)
        r = nudgetest.run_nudge("report", "overview", "--url", self.api.url, "--admin-key", "bad")
        self.assertEqual(r.returncode, 1)
        self.assertIn("HTTP 401", r.stderr)
        for args in (["journey"], ["journey", "a/b"], ["bogus"], ["overview", "x"],
                     ["step", "cart"], ["template"], ["template", "a", "b"], ["journey", "a", "b"],
                     ["journey", "cart", "--version", "0"], ["journey", "cart", "--csv", "--json"]):
            r = self.run_report(*args)
            self.assertEqual(r.returncode, 2, args)
            self.assertTrue(r.stderr, args)
        n = len(self.api.requests)
        self.assertEqual(n, 2)  # bad usage never reaches the server
        r = nudgetest.run_nudge("report", "overview", "--url", "http://127.0.0.1:%d" % nudgetest.free_port(),
                                "--admin-key", "k1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("GET http://127.0.0.1:", r.stderr)


E2E_JOURNEY = {
    "id": "report-e2e",
    "entry": {"event": "Checkout Started"},
    "reentry": {"allow": False},
    "goal": {"event": "Order Completed", "within": "3d", "value": "event.properties.revenue"},
    "start": "ab",
    "steps": {
        "ab": {"split": [{"name": "A", "weight": 50, "next": "offer_a"},
                         {"name": "B", "weight": 50, "next": "offer_b"}]},
        "offer_a": {"message": {"channel": "email", "template": "offer-a", "category": "transactional"},
                    "next": "hold"},
        "offer_b": {"message": {"channel": "email", "template": "offer-b", "category": "transactional"},
                    "next": "hold"},
        "hold": {"wait": {"duration": "7d"}, "next": "done"},
        "done": {"end": {}},
    },
}


def offer_template(arm):
    return {"channel": "email", "subject": "Offer " + arm,
            "html": "<html><body><p>Offer %s</p><a href=\"https://shop.example/%s\">Shop</a></body></html>" % (arm, arm),
            "text": "Offer " + arm}


class ReportEndToEnd(unittest.TestCase):
    """The real server: what the test sends and the SMTP sink receives is what
    the report, the CLI and /metrics say, also after kill -9 and a restart."""

    def setUp(self):
        self.smtp = SmtpSink()
        cfg = "[smtp]\nhost = 127.0.0.1\nport = %d\ntls = none\n" % self.smtp.port
        self.srv = nudgetest.NudgeServer(config_text=cfg).start()
        s = self.srv
        for arm in "AB":
            r = s.request("PUT", "/v1/templates/offer-" + arm.lower(), offer_template(arm), auth="admin")
            self.assertEqual(r.status, 200, r)
        self.assertEqual(s.request("PUT", "/v1/journeys/report-e2e", E2E_JOURNEY, auth="admin").status, 200)
        r = s.request("POST", "/v1/journeys/report-e2e/publish", auth="admin")
        self.assertEqual(r.status, 200, r)
        r = s.request("GET", "/v1/reports/overview", auth="admin")
        if r.status != 200:
            self.skipTest("GET /v1/reports/overview is not wired yet (%d)" % r.status)

    def tearDown(self):
        self.srv.__exit__(None, None, None)
        self.smtp.close()

    def report(self, path="/v1/reports/journeys/report-e2e"):
        r = self.srv.request("GET", path, auth="admin")
        self.assertEqual(r.status, 200, r)
        return r.json()

    def wait_report(self, pred, timeout=15):
        deadline = time.time() + timeout
        while True:
            rep = self.report()
            if pred(rep) or time.time() > deadline:
                return rep
            time.sleep(0.1)

    def messages(self, u):
        r = self.srv.request("GET", "/v1/profiles/user_id/%s/messages" % u, auth="admin")
        return r.json()["messages"] if r.status == 200 else []

    def track(self, u, event, props=None):
        r = self.srv.post("/v1/track", {"userId": u, "event": event, "properties": props or {}})
        self.assertEqual(r.status, 200, r)

    def test_report_counts_what_happened_and_survives_kill(self):
        s = self.srv
        users = ["r-" + uuid.uuid4().hex[:8] for _ in range(10)]
        no_email = "r-" + uuid.uuid4().hex[:8]
        for u in users:
            self.assertEqual(s.post("/v1/identify", {"userId": u, "traits": {"email": u + "@example.com"}}).status, 200)
        self.assertEqual(s.post("/v1/identify", {"userId": no_email, "traits": {"name": "x"}}).status, 200)
        for u in users + [no_email]:
            self.track(u, "Checkout Started")
        self.smtp.wait(lambda m: all(m.to(u + "@example.com") for u in users))
        arm = {u: str(self.smtp.to(u + "@example.com")[0]["msg"]["Subject"])[-1] for u in users}
        # Every envelope delivered (the outcome is applied by the engine).
        deadline = time.time() + 15
        while time.time() < deadline and not all(
                any(e.get("state") == "delivered" for e in self.messages(u)) for u in users):
            time.sleep(0.1)
        # user 0 opens twice, user 1 once; users 2, 3, 4 convert.
        for u, times in ((users[0], 2), (users[1], 1)):
            html = [e for e in self.messages(u) if e.get("message")][0]["message"]["html"]
            pixel = re.search(r'src="(http://[^"]+/t/o/[^"]+)"', html).group(1)
            for _ in range(times):
                urllib.request.urlopen(pixel, timeout=10).read()
        revenue = {users[2]: 10, users[3]: 20, users[4]: 30.5}
        for u, v in revenue.items():
            self.track(u, "Order Completed", {"revenue": v})
        rep = self.wait_report(lambda r: r["totals"]["conversions"] >= 3 and r["totals"]["opened"] >= 3
                               and r["totals"]["delivered"] >= 10)
        t = rep["totals"]
        self.assertEqual(t["entered"], 11)
        self.assertEqual(t["completed"], 0)
        self.assertEqual(t["in_progress"], 11)  # all wait in "hold"
        self.assertEqual(sum(t["exited"].values()), 0)
        self.assertEqual(t["targeted"], 11)
        self.assertEqual(t["excluded"]["no_address"], 1)
        self.assertEqual((t["sent"], t["delivered"]), (10, 10))
        self.assertEqual((t["opened"], t["opened_unique"]), (3, 2))
        self.assertEqual(t["conversions"], 3)
        self.assertAlmostEqual(t["conversion_value"], 60.5)
        self.assertAlmostEqual(t["conversion_rate"], 3 / 11)
        self.assertAlmostEqual(t["open_rate"], 2 / 10)
        steps = {st["step"]: st for st in rep["steps"]}
        self.assertEqual([st["step"] for st in rep["steps"]], ["ab", "offer_a", "offer_b", "hold"])
        self.assertEqual((steps["ab"]["entered"], steps["ab"]["in_step"]), (11, 0))
        self.assertEqual((steps["hold"]["entered"], steps["hold"]["in_step"]), (11, 11))
        self.assertEqual(steps["offer_a"]["entered"] + steps["offer_b"]["entered"], 11)
        arms = {a["arm"]: a for a in rep["arms"]}
        for name in "AB":
            mine = [u for u in users if arm[u] == name]
            step = [m for m in rep["messages"] if m["step"] == "offer_" + name.lower()]
            sent = step[0]["sent"] if step else 0
            self.assertEqual(sent, len(mine), name)
            conv = [u for u in revenue if arm[u] == name]
            self.assertEqual(arms.get(name, {}).get("conversions", 0), len(conv), name)
            self.assertAlmostEqual(arms.get(name, {}).get("conversion_value", 0), sum(revenue[u] for u in conv))
        self.assertEqual(sum(a["entered"] for a in rep["arms"]), 11)

        # The CLI shows the same numbers.
        url = "http://127.0.0.1:%d" % s.port
        out = nudgetest.run_nudge("report", "journey", "report-e2e", "--url", url, "--admin-key", s.admin_key)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("entered 11, in progress 11, completed 0", out.stdout)
        self.assertRegex(out.stdout, r"(?m)^hold\s+11\s+11\s+0\s+0\s+-$")
        self.assertIn("conversions 3 (rate 27.3%), value 60.50", out.stdout)
        out = nudgetest.run_nudge("report", "overview", "--url", url, "--admin-key", s.admin_key)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"(?m)^email\s+10\s+10\s")
        out = nudgetest.run_nudge("report", "step", "report-e2e", "hold", "--url", url, "--admin-key", s.admin_key)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("entered 11, in step 11, completed 0", out.stdout)
        out = nudgetest.run_nudge("report", "template", "offer-a", "--url", url, "--admin-key", s.admin_key)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"(?m)^report-e2e\s+offer_a\s+email\s")
        r = s.request("GET", "/v1/reports/journeys/report-e2e", headers={"Accept": "text/csv"}, auth="admin")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.body.startswith("journey,version,step,template,channel,arm,counter,value\r\n"))
        self.assertIn("\r\nreport-e2e,1,,,,,entered,11\r\n", r.body)

        # /metrics carries the series and promtool accepts the whole output.
        metrics = s.metrics()
        self.assertIn('nudge_report_journey_entered_total{journey="report-e2e"} 11\n', metrics)
        self.assertIn('nudge_report_messages_delivered_total{journey="report-e2e",channel="email"} 10\n', metrics)
        if shutil.which("promtool"):
            with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
                f.write(metrics)
                f.flush()
                with open(f.name) as fin:
                    p = subprocess.run(["promtool", "check", "metrics"], stdin=fin, capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        else:
            print("promtool not installed (Debian package prometheus): skipped the promtool check")

        # kill -9 and restart: the same totals, then counting goes on.
        before = self.report()
        s.kill()
        s.start()
        after = self.report()
        for k in ("totals", "steps", "messages", "arms"):
            self.assertEqual(after[k], before[k], k)
        late = "r-" + uuid.uuid4().hex[:8]
        self.track(late, "Checkout Started")
        rep = self.wait_report(lambda r: r["totals"]["entered"] == 12)
        self.assertEqual(rep["totals"]["entered"], 12)
        self.assertEqual(rep["totals"]["excluded"]["no_address"], 2)


if __name__ == "__main__":
    unittest.main()
