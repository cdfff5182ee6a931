"""Crash test (invariants 1 and 2): SIGKILL under load loses nothing acknowledged.

Many connections send single events and batches, each with a unique messageId,
each connection for its own users. At a random moment the server is killed with
SIGKILL. Then `nudge check` must find the data directory clean, the server is
restarted, the clients resend everything that was not acknowledged (as SDKs
retry, with the same messageId), and every event must be present exactly once
in its profile's history. Repeated with different kill points.
"""
import base64
import http.client
import json
import random
import threading
import time
import unittest
import uuid

from nudgetest import NudgeServer, run_nudge

CONFIG = "[profiles]\nhistory_max_events = 100000\n[engine]\nbatch_max = 500\n"
CONNECTIONS = 24
USERS_PER_CONN = 3


class Client(threading.Thread):
    def __init__(self, srv, idx, stop):
        super().__init__(daemon=True)
        self.srv, self.idx, self.stop = srv, idx, stop
        self.users = ["crash-%d-%d-%s" % (idx, i, uuid.uuid4().hex[:6]) for i in range(USERS_PER_CONN)]
        self.acked = {}     # messageId -> (user, body)
        self.unacked = {}   # sent, answer not seen
        self.auth = "Basic " + base64.b64encode((srv.write_key + ":").encode()).decode()

    def make_event(self, n):
        u = self.users[n % len(self.users)]
        return u, {"userId": u, "event": "Crash Test", "messageId": str(uuid.uuid4()),
                   "properties": {"n": n, "conn": self.idx}}

    def send(self, conn, path, events):
        body = json.dumps({"batch": [dict(e, type="track") for _, e in events]} if path == "/v1/batch" else events[0][1])
        for u, e in events:
            self.unacked[e["messageId"]] = (u, e)
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", "Authorization": self.auth})
        r = conn.getresponse()
        r.read()
        if r.status == 200:
            for u, e in events:
                self.acked[e["messageId"]] = self.unacked.pop(e["messageId"])

    def run(self):
        n = 0
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=5)
                if n % 10 == 9:
                    evs = [self.make_event(n + k) for k in range(20)]
                    n += 20
                    self.send(conn, "/v1/batch", evs)
                else:
                    self.send(conn, "/v1/track", [self.make_event(n)])
                    n += 1
            except (OSError, http.client.HTTPException):
                conn = None
                if self.stop.is_set():
                    break
                time.sleep(0.01)


class CrashTest(unittest.TestCase):
    def run_once(self, kill_after):
        srv = NudgeServer(config_text=CONFIG)
        with srv:
            stop = threading.Event()
            clients = [Client(srv, i, stop) for i in range(CONNECTIONS)]
            for c in clients:
                c.start()
            time.sleep(kill_after)
            srv.kill()
            stop.set()
            for c in clients:
                c.join(10)
            acked = sum(len(c.acked) for c in clients)
            self.assertGreater(acked, 0, "nothing was acknowledged before the kill")

            r = run_nudge("check", "--data-dir", srv.data_dir, timeout=120)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

            srv.start()
            # Clients retry what they never saw acknowledged, with the same messageId.
            for c in clients:
                for mid, (u, e) in list(c.unacked.items()):
                    resp = srv.post("/v1/track", e)
                    self.assertEqual(resp.status, 200, resp)
                    c.acked[mid] = c.unacked.pop(mid)

            # Wait until the engine has applied everything the inbox holds.
            import re as _re
            deadline = time.time() + 600
            while time.time() < deadline:
                m = _re.search(r"^nudge_inbox_lag_records (\d+)$", srv.metrics(), _re.M)
                applied = srv.metrics()
                if m and int(m.group(1)) == 0:
                    marker = "crash-marker-" + uuid.uuid4().hex[:6]
                    srv.post("/v1/track", {"userId": marker, "event": "Marker"})
                    srv.wait_profile("user_id", marker, timeout=600)
                    break
                time.sleep(0.5)
            for c in clients:
                for u in c.users:
                    want = {m for m, (uu, _) in c.acked.items() if uu == u}
                    deadline = time.time() + 10
                    while True:
                        resp = srv.profile("user_id", u)
                        got = [e["messageId"] for e in resp.json()["events"]] if resp.status == 200 else []
                        if set(got) >= want or time.time() > deadline:
                            break
                        time.sleep(0.1)
                    self.assertEqual(len(got), len(set(got)), "an event was applied twice for %s" % u)
                    self.assertEqual(set(got), want, "events lost or invented for %s" % u)
            srv.stop()
            r = run_nudge("check", "--data-dir", srv.data_dir, timeout=120)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            return acked

    def test_kill9_under_load(self):
        rnd = random.Random()
        for kill_after in (0.2 + rnd.random() * 0.4, 0.7 + rnd.random() * 0.5, 1.3 + rnd.random() * 0.7):
            with self.subTest(kill_after=round(kill_after, 2)):
                acked = self.run_once(kill_after)
                print("crash: killed after %.2fs with %d acknowledged events" % (kill_after, acked))


if __name__ == "__main__":
    unittest.main()
