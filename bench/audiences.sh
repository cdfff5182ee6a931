#!/bin/sh
# bench/audiences.sh -- audiences, computed attributes and business events of the
# real server (issue 9).
#
# Starts `nudge serve` on free loopback ports with fresh data directories and
# measures from the outside, as a user would (docs/benchmarks.md explains every
# figure):
#
#  1. engine events/s with no audience or computed attribute defined, then on a
#     fresh server with 20 audiences and 5 computed attributes defined
#     (bench/audiences/drive.py lists them): the same stream of AB_EVENTS
#     events over AB_USERS users (identify and five track events), posted as
#     /v1/batch bodies of 100 over 4 connections. Applied events/s from the
#     first post until the engine has gone through every event (its
#     nudge_engine_records_total), and over the drain alone
#     (from the last acknowledged batch: the sender is idle, the engine works
#     through the backlog), plus the engine thread's CPU time per event.
#  2. business-event fan-out: AB_PROFILES profiles (identify batches with a
#     traits.wishlist list; AB_FANS of them list the SKU), "wishlist" indexed
#     before they arrive, one journey entered by the business event whose
#     first step waits 30 days (nothing is sent). Profiles entered per second
#     from the POST until GET /v1/business-events/{id} says done.
#  3. back-fill: an audience PUT over those profiles (plan == "gold": every
#     tenth), profiles evaluated per second until its back-fill is done.
#
# Not part of `make test`; `make bench` runs it after bench/journeys.sh.
set -eu
BIN=${NUDGE_BIN:-build/nudge}
EVENTS=${AB_EVENTS:-200000}
USERS=${AB_USERS:-20000}
PROFILES=${AB_PROFILES:-100000}
FANS=${AB_FANS:-10000}
here=$(cd "$(dirname "$0")" && pwd)
drive=$here/audiences/drive.py
tmp=$(mktemp -d /tmp/nudge-abench.XXXXXX)
pid=
stop_server() {
	[ -z "$pid" ] || { kill "$pid" 2>/dev/null || :; wait "$pid" 2>/dev/null || :; }
	pid=
}
trap 'stop_server; rm -rf "$tmp"' EXIT INT TERM
admin='Authorization: Bearer benchadmin'

# start_server NAME: a fresh server; sets pid, url, data, etid (the engine
# thread's id).
start_server() {
	data=$tmp/$1
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	url=http://127.0.0.1:$port
	"$BIN" serve --listen "127.0.0.1:$port" --data-dir "$data" --write-key benchkey \
		--admin-key benchadmin --log-level warn 2>>"$tmp/log" &
	pid=$!
	for _ in $(seq 1 100); do
		curl -fs "$url/healthz" >/dev/null 2>&1 && break
		sleep 0.1
	done
	etid=$(grep -l '^nudge-engine$' /proc/$pid/task/*/comm | head -1 | cut -d/ -f5)
}
put() { # PATH JSON
	curl -fsS -X PUT -H "$admin" -H 'Content-Type: application/json' -d "$2" \
		"$url$1" >/dev/null
}
metrics() { curl -fsS -H "$admin" "$url/metrics"; }
# metric NAME: the value of one sample line (NAME includes any labels).
metric() { metrics | awk -v n="$1" '!f && index($0, n " ") == 1 {print $2; f = 1}'; }
# records: inbox records the engine has gone through (applied, duplicate or error).
records() { metrics | awk '/^nudge_engine_records_total[{]/ {n += $2} END {print n}'; }
# wait_records N: until the engine has gone through N records. Not
# nudge_inbox_lag_records 0: that gauge is set after each engine batch from the
# records committed when the batch began, so it reads 0 while records committed
# during the batch wait.
wait_records() {
	while [ "$(records)" -lt "$1" ]; do sleep 0.05; done
}
now() { date +%s.%N; }
# Engine thread CPU time (ns) from schedstat.
cpu_ns() { cut -d" " -f1 "/proc/$pid/task/$etid/schedstat"; }
calc() { awk "BEGIN {printf $1}"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
# json FIELD...: one value of the JSON object on stdin.
json() { python3 -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = v[k]
print(json.dumps(v) if isinstance(v, (dict, list)) else v)' "$@"; }

echo "-- machine: $(nproc) cores, load average $(load) at start"
python3 "$drive" events "$tmp/events" "$EVENTS" "$USERS" 1

# 1. Engine throughput, without and with audiences and computed attributes.
# throughput NAME LABEL: sends the stream to the running server, prints a line.
throughput() {
	a0=$(records)
	c0=$(cpu_ns)
	t0=$(now)
	sent=$(python3 "$drive" send "$url" benchkey "$tmp/events" 4)
	t1=$(now)
	a1=$(records)
	c1=$(cpu_ns)
	secs=$(echo "$sent" | json seconds)
	sent=$(echo "$sent" | json sent)
	wait_records $((a0 + sent))
	t2=$(now)
	a2=$(records)
	c2=$(cpu_ns)
	n=$((a2 - a0))
	bad=$(($(metric 'nudge_engine_records_total{outcome="duplicate"}') + $(metric 'nudge_engine_records_total{outcome="error"}')))
	[ "$bad" = 0 ] || echo "audiences.sh: $bad records not applied (duplicate or error)" >&2
	echo "-- $1"
	echo "   applied events/s $(calc "\"%.0f\", $n / ($t2 - $t0)")  ($sent events acknowledged at $(calc "\"%.0f\", $sent / $secs")/s, caught up after $(calc "\"%.1f\", $t2 - $t0")s)"
	if [ $((a2 - a1)) -gt 0 ]; then
		echo "   drain after the last batch: $(calc "\"%.0f\", ($a2 - $a1) / ($t2 - $t1)") events/s  ($((a2 - a1)) events in $(calc "\"%.1f\", $t2 - $t1")s, engine $(calc "\"%.0f\", ($c2 - $c1) / 1000 / ($a2 - $a1)") us CPU per event)"
	fi
	echo "   engine thread: $(calc "\"%.0f\", ($c2 - $c0) / 1000 / $n") us CPU per event over the run"
}
start_server plain
throughput "events/s, nothing defined: $EVENTS events over $USERS users (10% identify), batches of 100, 4 connections"
stop_server
start_server audiences
python3 "$drive" define "$url" benchadmin
throughput "events/s, 20 audiences and 5 computed attributes defined, the same events"
echo "   $(python3 "$drive" sizes "$url" benchadmin); $(metric nudge_audience_evaluations_total) predicates evaluated"
stop_server

# 2. Business-event fan-out over an indexed trait.
start_server fanout
put /v1/settings/indexed-traits '{"traits": ["wishlist"]}'
python3 "$drive" wait "$url" benchadmin /v1/settings/indexed-traits ready wishlist = true >/dev/null
put /v1/journeys/price-drop '{"id": "price-drop", "name": "Bench: price drop on a wish-listed SKU",
 "entry": {"business_event": "Price Dropped", "who": "profile.traits.wishlist.exists(s, s == event.properties.sku)"},
 "start": "wait", "steps": {"wait": {"wait": {"duration": "30d"}, "next": "done"}, "done": {"end": {}}}}'
curl -fsS -X POST -H "$admin" -H 'Content-Type: application/json' -d '{}' \
	"$url/v1/journeys/price-drop/publish" >/dev/null
python3 "$drive" profiles "$tmp/profiles" "$PROFILES" "$FANS" SKU-TARGET
a0=$(records)
t0=$(now)
python3 "$drive" send "$url" benchkey "$tmp/profiles" 4 >/dev/null
wait_records $((a0 + PROFILES))
t1=$(now)
echo "-- $PROFILES profiles loaded (identify, traits.wishlist indexed) in $(calc "\"%.1f\", $t1 - $t0")s, $(calc "\"%.0f\", $PROFILES / ($t1 - $t0)")/s"
c0=$(cpu_ns)
t0=$(now)
curl -fsS -X POST -u benchkey: -H 'Content-Type: application/json' \
	-d '{"event": "Price Dropped", "messageId": "bench-pd", "properties": {"sku": "SKU-TARGET", "new_price": 19}}' \
	"$url/v1/business-events" >/dev/null
fin=$(python3 "$drive" wait "$url" benchadmin /v1/business-events/bench-pd journeys price-drop state = "done")
c1=$(cpu_ns)
t1=$(echo "$fin" | json t)
st=$(echo "$fin" | json answer journeys price-drop)
entered=$(echo "$st" | json entered)
evaluated=$(echo "$st" | json evaluated)
mode=$(echo "$st" | json mode)
echo "-- business-event fan-out, $FANS of $PROFILES profiles wish-list the SKU, journey waits 30 days"
echo "   $(calc "\"%.0f\", $entered / ($t1 - $t0)") profiles entered/s  ($entered entered, $evaluated evaluated, mode $mode, done after $(calc "\"%.2f\", $t1 - $t0")s; engine $(calc "\"%.0f\", ($c1 - $c0) / 1000 / $entered") us CPU per entered profile)"

# 3. Back-fill of a new audience over the existing profiles.
c0=$(cpu_ns)
t0=$(now)
put /v1/audiences/gold '{"name": "Gold plan", "when": "profile.traits.plan == \"gold\""}'
fin=$(python3 "$drive" wait "$url" benchadmin /v1/audiences/gold backfill state = "done")
c1=$(cpu_ns)
t1=$(echo "$fin" | json t)
bf=$(echo "$fin" | json answer backfill evaluated)
size=$(echo "$fin" | json answer size)
echo "-- back-fill of an audience (profile.traits.plan == \"gold\") over $PROFILES profiles"
echo "   $(calc "\"%.0f\", $bf / ($t1 - $t0)") profiles evaluated/s  ($bf evaluated, $size members, done after $(calc "\"%.2f\", $t1 - $t0")s; engine $(calc "\"%.1f\", ($c1 - $c0) / 1000 / $bf") us CPU per profile)"
stop_server
echo "-- load average $(load) at end"
