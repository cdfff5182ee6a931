#!/usr/bin/env python3
"""drive.py -- the load side of bench/audiences.sh (standard library only).

Subcommands (URL is http://127.0.0.1:PORT; keys are the write and admin keys):

  events OUT COUNT USERS SEED
      Writes COUNT events over USERS users as /v1/batch bodies of 100 events, one
      body per line: about 10 % identify (plan, country, age, name, newsletter,
      email, wishlist), the rest track events (Page Viewed, Product Viewed,
      Added to Cart, Order Completed, Products Searched) with properties the
      audiences and computed attributes below read. The same SEED gives the
      same stream, so both configurations see identical events.
  profiles OUT COUNT FANS SKU
      Writes COUNT identify events (one new profile each; every 10th has plan
      "gold") as /v1/batch bodies of 500. Every (COUNT / FANS)-th profile
      wish-lists SKU among two other SKUs; the others wish-list one to three
      SKUs that are never SKU.
  send URL WKEY FILE CONNS
      Posts every line of FILE to /v1/batch over CONNS keep-alive connections;
      prints {"sent": events acknowledged, "seconds": until the last answer}.
  define URL ADMIN
      Defines the 20 audiences and 5 computed attributes and waits until their
      back-fills are done (on an empty store: at once).
  sizes URL ADMIN
      Prints "members: N in M of 20 audiences" (a check that the predicates
      evaluate to something, not all errors).
  wait URL ADMIN PATH KEY... = VALUE
      Polls GET PATH until the value at KEY... (a path into the JSON answer) is
      VALUE (a string, or JSON text: true; a 404 counts as not yet, and it
      gives up after 15 minutes); prints the wall-clock time it was seen and the answer, as JSON.
"""
import base64
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse

COMPUTED = {
    "ltv": {"event": "Order Completed", "aggregate": "sum",
            "value": "event.properties.revenue"},
    "orders_30d": {"event": "Order Completed", "aggregate": "count", "window": "30d"},
    "max_order": {"event": "Order Completed", "aggregate": "max",
                  "value": "event.properties.revenue"},
    "last_category": {"event": "Product Viewed", "aggregate": "last",
                      "value": "event.properties.category"},
    "skus_viewed": {"event": "Product Viewed", "aggregate": "distinct_count",
                    "value": "event.properties.sku"},
}

AUDIENCES = {
    "cart_abandoners": 'event_count("Added to Cart", "24h") > 0 && '
                       'event_count("Order Completed", "24h") == 0',
    "browsers": 'event_count("Product Viewed", "7d") >= 3',
    "gold": 'profile.traits.plan == "gold"',
    "pro_fr": 'profile.traits.plan == "pro" && profile.traits.country == "FR"',
    "thirties": 'has(profile.traits.age) && profile.traits.age >= 30 && '
                'profile.traits.age < 40',
    "big_spenders": 'profile.computed.ltv > 200.0',
    "repeat_buyers": 'profile.computed.orders_30d >= 2',
    "big_order_30d": 'event_count("Order Completed", "30d", '
                     '"event.properties.revenue > 100.0") >= 1',
    "wishlisters": 'has(profile.traits.wishlist) && size(profile.traits.wishlist) >= 2',
    "shoe_browsers": 'profile.computed.last_category == "shoes"',
    "explorers": 'profile.computed.skus_viewed >= 5',
    "reachable": 'consent("email") && has(profile.traits.email)',
    "no_pages_7d": 'event_count("Page Viewed", "7d") == 0 && '
                   'profile.computed.orders_30d == 0',
    "de_paid": 'profile.traits.country == "DE" && profile.traits.plan in ["gold", "pro"]',
    "heavy_readers": 'event_count("Page Viewed", "24h") >= 5',
    "newsletter": 'has(profile.traits.newsletter) && profile.traits.newsletter == true',
    "max_order_150": 'profile.computed.max_order >= 150.0',
    "reachable_buyers": 'event_count("Order Completed", "7d") >= 1 && '
                        'in_audience("reachable")',
    "names_a": 'has(profile.traits.name) && profile.traits.name.startsWith("A")',
    "searchers": 'event_count("Products Searched", "24h", '
                 '"event.properties.query.startsWith(\\"s\\")") >= 2',
}

PLANS = ["basic", "basic", "basic", "pro", "pro", "gold"]
COUNTRIES = ["FR", "DE", "US", "GB", "ES", "IT"]
CATEGORIES = ["shoes", "shirts", "books", "games", "garden"]
NAMES = ["Ada", "Bob", "Alan", "Cleo", "Dora", "Abe", "Eve", "Finn"]
QUERIES = ["socks", "shirt", "boots", "sale", "hat", "scarf"]


def dumps(o):
    return json.dumps(o, separators=(",", ":"))


def gen_events(out, count, users, seed):
    rnd = random.Random(seed)
    with open(out, "w") as f:
        for first in range(0, count, 100):
            items = []
            for i in range(first, min(first + 100, count)):
                u = "u%d" % rnd.randrange(users)
                mid = "e%d-%d" % (seed, i)
                r = rnd.random()
                if r < 0.10:
                    items.append({"type": "identify", "userId": u, "messageId": mid,
                                  "traits": {"plan": rnd.choice(PLANS),
                                             "country": rnd.choice(COUNTRIES),
                                             "age": rnd.randint(18, 70),
                                             "name": rnd.choice(NAMES),
                                             "newsletter": rnd.random() < 0.4,
                                             "email": u + "@example.com",
                                             "wishlist": ["SKU-%d" % rnd.randrange(500)
                                                          for _ in range(rnd.randint(0, 3))]}})
                    continue
                if r < 0.45:
                    ev, props = "Page Viewed", {"path": "/p/%d" % rnd.randrange(300)}
                elif r < 0.70:
                    ev, props = "Product Viewed", {"sku": "SKU-%d" % rnd.randrange(500),
                                                   "category": rnd.choice(CATEGORIES),
                                                   "price": rnd.randrange(5, 200) + 0.5}
                elif r < 0.82:
                    ev, props = "Added to Cart", {"sku": "SKU-%d" % rnd.randrange(500),
                                                  "qty": rnd.randint(1, 3)}
                elif r < 0.90:
                    ev, props = "Order Completed", {"order": "O-%d" % i,
                                                    "revenue": rnd.randrange(5, 250) + 0.5,
                                                    "items": rnd.randint(1, 5)}
                else:
                    ev, props = "Products Searched", {"query": rnd.choice(QUERIES)}
                items.append({"type": "track", "userId": u, "event": ev,
                              "messageId": mid, "properties": props})
            f.write(dumps({"batch": items}) + "\n")


def gen_profiles(out, count, fans, sku):
    rnd = random.Random(7)
    every = max(1, count // fans)
    with open(out, "w") as f:
        for first in range(0, count, 500):
            items = []
            for i in range(first, min(first + 500, count)):
                if i % every == 0:
                    wl = ["OTHER-%d" % rnd.randrange(1000), sku,
                          "OTHER-%d" % rnd.randrange(1000)]
                else:
                    wl = ["OTHER-%d" % rnd.randrange(1000) for _ in range(rnd.randint(1, 3))]
                items.append({"type": "identify", "userId": "p%d" % i,
                              "messageId": "p%d" % i,
                              "traits": {"plan": "gold" if i % 10 == 3 else "basic",
                                         "wishlist": wl}})
            f.write(dumps({"batch": items}) + "\n")


def conn_for(url):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=120)


def send(url, wkey, path, conns):
    with open(path) as f:
        bodies = [line.rstrip("\n").encode() for line in f if line.strip()]
    auth = "Basic " + base64.b64encode((wkey + ":").encode()).decode()
    lock = threading.Lock()
    state = {"next": 0, "sent": 0, "error": None}

    def worker():
        c = conn_for(url)
        while True:
            with lock:
                if state["error"] or state["next"] >= len(bodies):
                    return
                body = bodies[state["next"]]
                state["next"] += 1
            c.request("POST", "/v1/batch", body=body,
                      headers={"Authorization": auth, "Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            with lock:
                if r.status != 200:
                    state["error"] = "batch answered %d" % r.status
                    return
                state["sent"] += body.count(b'"messageId"')

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if state["error"]:
        sys.exit("drive.py send: " + state["error"])
    print(dumps({"sent": state["sent"], "seconds": round(time.monotonic() - start, 3)}))


def admin_req(c, admin, method, path, body=None, missing_ok=False):
    c.request(method, path, body=None if body is None else dumps(body),
              headers={"Authorization": "Bearer " + admin,
                       "Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status == 404 and missing_ok:
        return {}
    if r.status not in (200, 201):
        sys.exit("drive.py: %s %s answered %d: %s" % (method, path, r.status, data[:300]))
    return json.loads(data)


def define(url, admin):
    c = conn_for(url)
    for cid, d in COMPUTED.items():
        admin_req(c, admin, "PUT", "/v1/computed/" + cid, d)
    for aid, when in AUDIENCES.items():
        admin_req(c, admin, "PUT", "/v1/audiences/" + aid, {"name": aid, "when": when})
    for kind, ids in (("computed", COMPUTED), ("audiences", AUDIENCES)):
        for i in ids:
            while admin_req(c, admin, "GET", "/v1/%s/%s" % (kind, i))["backfill"]["state"] != "done":
                time.sleep(0.05)


def sizes(url, admin):
    c = conn_for(url)
    s = [admin_req(c, admin, "GET", "/v1/audiences/" + a)["size"] for a in AUDIENCES]
    print("members: %d in %d of %d audiences" % (sum(s), sum(1 for n in s if n), len(s)))


def wait(url, admin, path, keys, want):
    c = conn_for(url)
    end = time.monotonic() + 900
    while time.monotonic() < end:
        o = admin_req(c, admin, "GET", path, missing_ok=True)
        v = o
        for k in keys:
            v = v.get(k, {}) if isinstance(v, dict) else {}
        if v == want or dumps(v) == want:
            print(dumps({"t": time.time(), "answer": o}))
            return
        time.sleep(0.02)
    sys.exit("drive.py wait: %s %s never became %s" % (path, "/".join(keys), want))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "events":
        gen_events(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif cmd == "profiles":
        gen_profiles(args[0], int(args[1]), int(args[2]), args[3])
    elif cmd == "send":
        send(args[0], args[1], args[2], int(args[3]))
    elif cmd == "define":
        define(args[0], args[1])
    elif cmd == "sizes":
        sizes(args[0], args[1])
    elif cmd == "wait":
        eq = args.index("=")
        wait(args[0], args[1], args[2], args[3:eq], args[eq + 1])
    else:
        sys.exit("drive.py: unknown command " + cmd)


if __name__ == "__main__":
    main()
