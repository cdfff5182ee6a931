#!/bin/sh
# bench/journeys.sh -- journey runtime figures of the real server (issue 5).
#
# Starts `nudge serve` on free loopback ports with fresh data directories,
# uploads a template and the journeys in bench/journeys/, and measures from the
# outside, as a user would (docs/benchmarks.md explains every figure):
#
#  1. events/s with ten live journeys (entry `when`, branch, wait, email
#     message) on six event names: wrk posts unique track events for
#     JB_SECONDS, then the bench waits until nudge_inbox_lag_records is 0.
#     Acknowledged requests/s (wrk) and applied events/s (engine records delta
#     over the time until caught up), plus the engine thread's CPU time per
#     event and how long it sat runnable but not running (a busy machine).
#  2. event -> envelope latency with no wait (bench-instant: entry, branch,
#     message) under paced, moderate load: p50/p99 of
#     nudge_event_to_envelope_seconds over the window.
#  3. timer lateness with many pending timers (bench-timers): JB_PENDING
#     instances wait 30 days (stopped early, and the count said, if loading
#     takes longer than JB_LOAD_SECONDS), then JB_DUE more wait 15 to 45 s
#     and come due in real time while the engine runs normally: p50/p99 of
#     nudge_timer_lateness_seconds over that window. RSS of the server and
#     size of its data directory before and after loading, per instance.
#
# Targets (issue 5): event -> envelope p99 < 5 ms, timer lateness p99 < 100 ms.
# Not part of `make test`; `make bench` runs it after bench/ingest.sh.
set -eu
BIN=${NUDGE_BIN:-build/nudge}
SECS=${JB_SECONDS:-10}
LAT_SECS=${JB_LATENCY_SECONDS:-15}
PENDING=${JB_PENDING:-1000000}
LOAD_SECS=${JB_LOAD_SECONDS:-140}
DUE=${JB_DUE:-10000}
here=$(cd "$(dirname "$0")" && pwd)
jdir=$here/journeys
tmp=$(mktemp -d /tmp/nudge-jbench.XXXXXX)
pid=
stop_server() {
	[ -z "$pid" ] || { kill "$pid" 2>/dev/null || :; wait "$pid" 2>/dev/null || :; }
	pid=
}
trap 'stop_server; rm -rf "$tmp"' EXIT INT TERM
auth=$(printf 'benchkey:' | base64)
admin='Authorization: Bearer benchadmin'

# start_server NAME [JOURNEY...]: a fresh server with the template and the
# journeys published; sets pid, url, data, etid (the engine thread's id).
start_server() {
	data=$tmp/$1
	shift
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	url=http://127.0.0.1:$port
	"$BIN" serve --listen 127.0.0.1:$port --data-dir "$data" --write-key benchkey \
		--admin-key benchadmin --log-level warn 2>>"$tmp/log" &
	pid=$!
	for i in $(seq 1 100); do
		curl -fs "$url/healthz" >/dev/null 2>&1 && break
		sleep 0.1
	done
	put /v1/templates/bench-email "$jdir/templates/bench-email.json"
	for j in "$@"; do
		put "/v1/journeys/$j" "$jdir/$j.json"
		curl -fsS -X POST -H "$admin" -H 'Content-Type: application/json' -d '{}' \
			"$url/v1/journeys/$j/publish" >/dev/null
	done
	etid=$(grep -l '^nudge-engine$' /proc/$pid/task/*/comm | head -1 | cut -d/ -f5)
}
put() {
	curl -fsS -X PUT -H "$admin" -H 'Content-Type: application/json' \
		--data-binary @"$2" "$url$1" >/dev/null
}
metrics() { curl -fsS -H "$admin" "$url/metrics"; }
# metric NAME: the value of one sample line (NAME includes any labels).
metric() { metrics | awk -v n="$1" '!f && index($0, n " ") == 1 {print $2; f = 1}'; }
applied() { metric 'nudge_engine_records_total{outcome="applied"}'; }
wait_caught_up() {
	while [ "$(metric nudge_inbox_lag_records)" != 0 ]; do sleep 0.1; done
}
now() { date +%s.%N; }
# Engine thread CPU and run-queue wait (ns) from schedstat.
sched() { cut -d' ' -f1-3 /proc/$pid/task/$etid/schedstat; }
rss_kb() { awk '/^VmRSS/ {print $2}' /proc/$pid/status; }
du_b() { du -sb "$data" | cut -f1; }
calc() { awk "BEGIN {printf $1}"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

echo "-- machine: $(nproc) cores, load average $(load) at start"

# 1. Throughput with ten journeys listening.
start_server s1 bench-01 bench-02 bench-03 bench-04 bench-05 bench-06 bench-07 \
	bench-08 bench-09 bench-10 bench-instant
a0=$(applied)
e0=$(metric nudge_journey_entries_total)
s0=$(sched)
t0=$(now)
NUDGE_AUTH=$auth wrk -t2 -c64 -d"${SECS}s" -s "$jdir/track.lua" "$url" >"$tmp/wrk" 2>&1
rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk")
bad=$(awk '/Non-2xx/ {print $NF}' "$tmp/wrk")
wait_caught_up
t1=$(now)
s1=$(sched)
a1=$(applied)
e1=$(metric nudge_journey_entries_total)
n=$((a1 - a0))
echo "-- events/s, 10 journeys listening (entry when, branch, wait, email), ${SECS}s of wrk, 64 connections"
echo "   acknowledged requests/s $rps  (non-2xx ${bad:-0})"
echo "   applied events/s $(calc "\"%.0f\", $n / ($t1 - $t0)")  ($n events, caught up after $(calc "\"%.1f\", $t1 - $t0")s, $(calc "\"%.2f\", ($e1 - $e0) / $n") entries per event)"
set -- $s0 $s1
echo "   engine thread: $(calc "\"%.0f\", ($4 - $1) / 1000 / $n") us CPU per event, runnable but waiting for a CPU $(calc "\"%.0f\", 100 * ($5 - $2) / 1e9 / ($t1 - $t0)")% of the time"

# 2. Event -> envelope latency with no wait, moderate load.
metrics >"$tmp/m0"
c0=$(metric 'nudge_envelopes_created_total{channel="message"}')
t0=$(now)
NUDGE_AUTH=$auth JB_PACE_MS=20 wrk -t1 -c8 -d"${LAT_SECS}s" -s "$jdir/ping.lua" "$url" \
	>/dev/null 2>&1
wait_caught_up
t1=$(now)
metrics >"$tmp/m1"
c1=$(metric 'nudge_envelopes_created_total{channel="message"}')
echo "-- event -> envelope created, no wait (entry, branch, message), paced load"
[ "$c1" -gt "$c0" ] || { echo "journeys.sh: bench-instant created no envelope" >&2; exit 1; }
python3 "$jdir/hist.py" "$tmp/m0" "$tmp/m1" nudge_event_to_envelope_seconds |
	awk -v rate="$(calc "\"%.0f\", ($c1 - $c0) / ($t1 - $t0)")" '
	/^count/ {n=$2} /^p50/ {p50=$2*1000} /^p99/ {p99=$2*1000}
	END {printf "   p50 %.2f ms  p99 %.2f ms  (%d envelopes at %s/s; target p99 < 5 ms)\n", p50, p99, n, rate}'
for h in nudge_commit_sync_seconds nudge_engine_batch_seconds; do
	python3 "$jdir/hist.py" "$tmp/m0" "$tmp/m1" $h |
		awk '/^p50/ {p50=$2*1000} /^p99/ {p99=$2*1000} END {printf " %.2f/%.2f", p50, p99}'
done | awk '{printf "   made of: inbox commit (fsync) p50/p99 %s ms, engine batch (apply + commit) p50/p99 %s ms\n", $1, $2}'
stop_server

# 3. Timer lateness with many pending timers; RSS and disk per instance.
start_server s2 bench-timers
sleep 1
r0=$(rss_kb)
d0=$(du_b)
out=$(python3 "$jdir/load.py" "$url" benchkey benchadmin "$PENDING" 2592000000 2592000000 \
	"$LOAD_SECS" far)
np=$(echo "$out" | sed 's/.*"sent": \([0-9]*\).*/\1/')
lsecs=$(echo "$out" | sed 's/.*"seconds": \([0-9.]*\).*/\1/')
r1=$(rss_kb)
d1=$(du_b)
metrics >"$tmp/m0"
f0=$(metric nudge_timers_fired_total)
c0=$(metric 'nudge_envelopes_created_total{channel="message"}')
python3 "$jdir/load.py" "$url" benchkey benchadmin "$DUE" 15000 45000 60 near >/dev/null
t0=$(now)
s0=$(sched)
while [ "$(metric nudge_timers_fired_total)" -lt $((f0 + DUE)) ] &&
	[ "$(calc "\"%d\", $(now) - $t0")" -lt 90 ]; do
	sleep 0.5
done
metrics >"$tmp/m1"
s1=$(sched)
f1=$(metric nudge_timers_fired_total)
c1=$(metric 'nudge_envelopes_created_total{channel="message"}')
echo "-- timer lateness, $np timers pending 30 days, $((f1 - f0)) of $DUE more fired in real time (due 15-45 s after entry, $((c1 - c0)) emails)"
if [ "$np" -ge "$PENDING" ]; then
	echo "   (loaded in ${lsecs}s, $(calc "\"%.0f\", $np / $lsecs") instances/s)"
else
	echo "   (loading stopped after ${LOAD_SECS}s at $np of $PENDING instances, $(calc "\"%.0f\", $np / $lsecs")/s)"
fi
python3 "$jdir/hist.py" "$tmp/m0" "$tmp/m1" nudge_timer_lateness_seconds | awk '
	/^p50/ {p50=$2*1000} /^p99/ {p99=$2*1000}
	END {printf "   p50 %.2f ms  p99 %.2f ms  (target p99 < 100 ms)\n", p50, p99}'
python3 "$jdir/hist.py" "$tmp/m0" "$tmp/m1" nudge_engine_batch_seconds | awk '
	/^count/ {n=$2} /^p50/ {p50=$2*1000} /^p99/ {p99=$2*1000}
	END {printf "   engine batches meanwhile: %d, p50 %.2f ms  p99 %.2f ms (apply + synced commit)\n", n, p50, p99}'
set -- $s0 $s1
echo "   engine thread meanwhile: $(($6 - $3)) times on a CPU, waited for one $(calc "\"%.2f\", ($5 - $2) / 1e6 / ($6 - $3 + 1)") ms on average each time"
echo "-- per waiting instance ($np instances)"
echo "   RSS $(calc "\"%.0f\", ($r1 - $r0) * 1024 / $np") bytes  (server RSS $((r0 / 1024)) -> $((r1 / 1024)) MiB)"
echo "   data dir $(calc "\"%.0f\", ($d1 - $d0) / $np") bytes  ($((d0 / 1048576)) -> $((d1 / 1048576)) MiB)"
echo "-- load average $(load) at end"
