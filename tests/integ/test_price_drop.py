"""The price-drop use case at scale, with a crash in the middle of the fan-out.

100,000 profiles are loaded (every 50th wish-lists the SKU, the others other
SKUs); examples/price-drop.json is published; one business event "Price
Dropped" goes in. The server is SIGKILLed while the fan-out is part-way,
restarted, and the test checks that exactly the wish-listers got the email,
one envelope (Message-ID) each, and that the journey report and the business
event's progress agree.
"""
import json
import os
import signal
import time
import unittest

from nudgetest import NudgeServer, run_nudge
from smtpsink import SmtpSink

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
PROFILES = int(os.environ.get("PRICE_DROP_PROFILES", "100000"))
EVERY = 50


class PriceDropTest(unittest.TestCase):
    def test_fan_out_reaches_each_wishlister_once_across_a_crash(self):
        smtp = SmtpSink()
        cfg = ("[smtp]\nhost = 127.0.0.1\nport = %d\ntls = none\nhelo = nudge.test\n"
               "[audiences]\njob_batch = 25\n" % smtp.port)
        srv = NudgeServer(config_text=cfg).start()
        try:
            self.run_case(srv, smtp)
        finally:
            srv.__exit__(None, None, None)
            smtp.close()

    def run_case(self, srv, smtp):
        adm = lambda m, p, b=None: srv.request(m, p, b, auth="admin")
        self.assertEqual(adm("PUT", "/v1/settings/indexed-traits", {"traits": ["wishlist"]}).status, 200)
        with open(os.path.join(EXAMPLES, "templates", "price-drop.json")) as f:
            self.assertEqual(adm("PUT", "/v1/templates/price-drop", json.load(f)).status, 200)
        with open(os.path.join(EXAMPLES, "price-drop.json")) as f:
            doc = json.load(f)
        self.assertEqual(adm("PUT", "/v1/journeys/price-drop", doc).status, 200)
        self.assertEqual(adm("POST", "/v1/journeys/price-drop/publish").status, 200)
        fans = set()
        batch = []
        for i in range(PROFILES):
            if i % EVERY == 0:
                wl = ["X1", "B%d" % (i % 7)]
                fans.add("pd%d@example.org" % i)
            else:
                wl = ["B%d" % (i % 7), "C%d" % (i % 13)]
            batch.append({"type": "identify", "userId": "pd%d" % i,
                          "traits": {"email": "pd%d@example.org" % i, "wishlist": wl}})
            if len(batch) == 1000 or i == PROFILES - 1:
                r = srv.post("/v1/batch", {"batch": batch})
                self.assertEqual(r.status, 200, r)
                batch = []
        srv.wait_profile("user_id", "pd%d" % (PROFILES - 1), timeout=300)
        r = srv.post("/v1/business-events", {"event": "Price Dropped", "messageId": "drop-x1",
                                             "properties": {"sku": "X1", "name": "Red Shoes",
                                                            "old_price": 30, "new_price": 24}})
        self.assertEqual(r.status, 200, r)
        # Kill while the fan-out is part-way.
        seen = None
        end = time.time() + 60
        while time.time() < end:
            r = adm("GET", "/v1/business-events/drop-x1")
            if r.status == 200:
                j = r.json()["journeys"]["price-drop"]
                if j["entered"] > 0:
                    seen = j
                    break
            time.sleep(0.002)
        self.assertIsNotNone(seen, "the fan-out never started")
        self.assertEqual(seen["mode"], "index")
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        self.assertLess(seen["entered"], len(fans), "the fan-out finished before the kill")
        srv.start()
        end = time.time() + 120
        while time.time() < end:
            j = adm("GET", "/v1/business-events/drop-x1").json()["journeys"]["price-drop"]
            if j["state"] == "done":
                break
            time.sleep(0.05)
        self.assertEqual(j["state"], "done")
        self.assertEqual(j["entered"], len(fans))
        self.assertEqual(j["evaluated"], len(fans))   # the index held only them
        def messages():
            with smtp.rec.lock:
                return list(smtp.rec.messages)
        smtp.wait(lambda s: len({m["to"][0] for m in messages()}) >= len(fans) or None, timeout=120)
        time.sleep(0.5)
        by_rcpt = {}
        for m in messages():
            by_rcpt.setdefault(m["to"][0], set()).add(str(m["msg"]["Message-ID"]))
        self.assertEqual(set(by_rcpt), fans)
        self.assertEqual({len(v) for v in by_rcpt.values()}, {1}, "a second envelope for someone")
        rep = adm("GET", "/v1/reports/journeys/price-drop").json()["totals"]
        self.assertEqual(rep["entered"], len(fans))
        m = messages()[0]["msg"]
        self.assertEqual(str(m["Subject"]), "Red Shoes is now 24 (was 30)")
        # The data directory is consistent (profiles, index, memberships).
        srv.stop()
        r = run_nudge("check", "--data-dir", srv.data_dir, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("clean", r.stdout)


if __name__ == "__main__":
    unittest.main()
