"""Journey crash test (invariants 2-5): SIGKILL while timers fire and webhooks go out.

Thousands of instances wait on a timer; the test clock makes them all due at
once; while the engine fires them and the delivery thread sends, the server is
killed with SIGKILL. After a restart every instance must have sent its webhook:
no timer lost, no step run twice (one distinct Idempotency-Key per instance: a
resend after the crash reuses the key, at-least-once with a stable id), and
`nudge check` finds the data directory clean. Repeated with different kill points.
"""
import json
import random
import time
import unittest

from nudgetest import NudgeServer, run_nudge
from sink import Sink

CONFIG = "[webhook]\nallow = 127.0.0.1/32\n[engine]\nbatch_max = 200\n[journeys]\ntimers_per_batch = 100\n"
USERS = 2000


def journey(sink):
    return {
        "id": "crash-reminder",
        "entry": {"event": "Crash Start"},
        "start": "wait",
        "steps": {
            "wait": {"wait": {"duration": "10m"}, "next": "hook"},
            "hook": {"webhook": {"url": sink.url("/hook/crash"),
                                 "body": "{\"user_id\": {{ journey.entry.userId | json }}}",
                                 "retries": 5},
                     "next": "done"},
            "done": {"end": {}},
        },
    }


class JourneyCrashTest(unittest.TestCase):
    def run_once(self, kill_after):
        sink = Sink()
        srv = NudgeServer(extra_args=["--test-clock"], config_text=CONFIG)
        try:
            srv.start()
            self.assertEqual(srv.request("PUT", "/v1/journeys/crash-reminder", journey(sink), auth="admin").status, 200)
            self.assertEqual(srv.request("POST", "/v1/journeys/crash-reminder/publish", auth="admin").status, 200)
            users = ["jc-%d-%d" % (int(kill_after * 1000), i) for i in range(USERS)]
            for i in range(0, USERS, 500):
                batch = [{"type": "track", "userId": u, "event": "Crash Start"} for u in users[i:i + 500]]
                r = srv.post("/v1/batch", {"batch": batch})
                self.assertEqual(r.status, 200, r)
            srv.wait_profile("user_id", users[-1])
            r = srv.request("POST", "/v1/debug/clock", {"advance": "11m"}, auth="admin")
            self.assertEqual(r.status, 200, r)
            time.sleep(kill_after)
            srv.kill()
            sent_before = len(sink.received())
            r = run_nudge("check", "--data-dir", srv.data_dir, timeout=120)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            srv.start()
            deadline = time.time() + 90
            while time.time() < deadline:
                got = {r["body"]["user_id"] for r in sink.received()}
                if len(got) >= USERS:
                    break
                time.sleep(0.2)
            by_user = {}
            for r in sink.received():
                by_user.setdefault(r["body"]["user_id"], set()).add(r["headers"]["Idempotency-Key"])
            missing = [u for u in users if u not in by_user]
            self.assertEqual(missing[:5], [], "%d instances never sent" % len(missing))
            twice = {u: k for u, k in by_user.items() if len(k) != 1}
            self.assertEqual(twice, {}, "a step ran twice (two envelopes for one instance)")
            time.sleep(0.5)
            srv.stop()
            r = run_nudge("check", "--data-dir", srv.data_dir, timeout=120)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            return sent_before, len(sink.received())
        finally:
            try:
                srv.__exit__(None, None, None)
            finally:
                sink.close()

    def test_kill9_while_timers_fire(self):
        rnd = random.Random()
        for kill_after in (0.02 + rnd.random() * 0.13, 0.15 + rnd.random() * 0.25, 0.4 + rnd.random() * 0.4):
            with self.subTest(kill_after=round(kill_after, 2)):
                before, total = self.run_once(kill_after)
                print("journey crash: killed after %.2fs with %d webhooks sent; %d requests in all"
                      % (kill_after, before, total))


if __name__ == "__main__":
    unittest.main()
