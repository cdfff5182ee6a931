#!/usr/bin/env python3
"""load.py -- puts journey instances in a wait through /v1/batch (bench/journeys.sh).

Sends COUNT "Reminder Scheduled" track events, BATCH per /v1/batch call, over
CONNS keep-alive connections, each with a new userId, messageId and
context.traits.email (the message step needs an address) and a
properties.delay_ms drawn uniformly from [MIN_MS, MAX_MS] (the bench-timers
journey waits until entry time + delay_ms). The inbox lag is kept under
MAX_LAG records (the engine, not the HTTP side, is what is measured), and
sending stops at the deadline even if COUNT was not reached. Waits until the
engine has applied everything, then prints one line of JSON:
{"sent": events acknowledged, "seconds": elapsed until applied, "per_s": rate}.

usage: load.py URL WRITE_KEY ADMIN_KEY COUNT MIN_MS MAX_MS DEADLINE_S [TAG]
"""
import base64
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse

BATCH = 1000
CONNS = 3
MAX_LAG = 30000


def metric(conn, admin, name):
    conn.request("GET", "/metrics", headers={"Authorization": "Bearer " + admin})
    body = conn.getresponse().read().decode()
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main():
    url, wkey, admin = sys.argv[1:4]
    count, lo, hi, deadline_s = (int(x) for x in sys.argv[4:8])
    tag = sys.argv[8] if len(sys.argv) > 8 else "t"
    u = urllib.parse.urlsplit(url)
    run = "%s-%d" % (tag, random.randrange(10**9))
    auth = "Basic " + base64.b64encode((wkey + ":").encode()).decode()
    start = time.monotonic()
    deadline = start + deadline_s
    lock = threading.Lock()
    state = {"next": 0, "sent": 0, "lag": 0.0, "error": None}

    def worker():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        rnd = random.Random()
        while True:
            while state["lag"] > MAX_LAG and time.monotonic() < deadline:
                time.sleep(0.05)
            with lock:
                if state["error"] or time.monotonic() >= deadline:
                    return
                first = state["next"]
                if first >= count:
                    return
                n = min(BATCH, count - first)
                state["next"] += n
                state["lag"] += n  # until the watcher's next reading
            items = ",".join(
                '{"type":"track","userId":"%s-%d","event":"Reminder Scheduled",'
                '"messageId":"%s-%d","properties":{"delay_ms":%d},'
                '"context":{"traits":{"email":"%s-%d@example.com"}}}'
                % (run, i, run, i, rnd.randint(lo, hi), run, i)
                for i in range(first, first + n))
            body = '{"batch":[%s]}' % items
            conn.request("POST", "/v1/batch", body=body,
                         headers={"Authorization": auth,
                                  "Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                with lock:
                    state["error"] = "batch answered %d" % r.status
                return
            with lock:
                state["sent"] += n

    def watcher():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        while any(t.is_alive() for t in threads):
            state["lag"] = metric(conn, admin, "nudge_inbox_lag_records")
            time.sleep(0.2)

    threads = [threading.Thread(target=worker) for _ in range(CONNS)]
    for t in threads:
        t.start()
    w = threading.Thread(target=watcher)
    w.start()
    for t in threads:
        t.join()
    w.join()
    if state["error"]:
        sys.exit("load.py: " + state["error"])
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    time.sleep(0.2)
    while metric(conn, admin, "nudge_inbox_lag_records") > 0:
        time.sleep(0.1)
    secs = time.monotonic() - start
    print(json.dumps({"sent": state["sent"], "seconds": round(secs, 2),
                      "per_s": round(state["sent"] / secs)}))


if __name__ == "__main__":
    main()
