#!/bin/sh
# bench/ingest.sh -- durable ingest throughput and latency of the real server.
#
# Starts `nudge serve` on a free loopback port with a fresh data directory and
# drives it with wrk (Lua scripts make every event unique): single-event
# requests over 64 and 256 connections, and batches of 100 events. Every 200
# answer means the events were synced to disk (invariant 1). Prints requests/s,
# events/s and latency percentiles. DESIGN.md §12: >= 50k requests/s single,
# >= 100k events/s batched.
# Also prints, per part, the CPU each server thread used per event (from
# /proc/PID/task/*/stat: loop thread, committer, engine, and all threads with
# RocksDB's background flushes and compactions) and the inbox lag left, and at
# the end how fast the engine alone drains what is left (events/s
# and engine CPU per event): while the load runs, the engine shares the 2 cores
# with the loop thread, the committer and wrk.
set -eu
BIN=${NUDGE_BIN:-build/nudge}
DUR=${BENCH_SECONDS:-10}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/nudge-bench.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key=benchkey
"$BIN" serve --listen 127.0.0.1:$port --data-dir "$dir/data" --write-key $key \
	--admin-key benchadmin --log-level warn 2>"$dir/log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
for i in $(seq 1 100); do
	curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
	sleep 0.1
done
auth=$(printf '%s:' $key | base64)
metric() { curl -s -H 'Authorization: Bearer benchadmin' "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
applied() { curl -s -H 'Authorization: Bearer benchadmin' "http://127.0.0.1:$port/metrics" | awk '/^nudge_engine_records_total\{outcome="applied"\}/ {print $2}'; }
ticks() { # CPU ticks of the server threads named $1 (loop: the main thread)
	if [ "$1" = loop ]; then
		awk '{print $14 + $15}' /proc/$pid/task/$pid/stat
		return
	fi
	if [ "$1" = all ]; then # every thread, RocksDB's flushes and compactions too
		awk '{print $14 + $15}' /proc/$pid/stat
		return
	fi
	for t in /proc/$pid/task/*; do
		[ "$(cat $t/comm)" = "$1" ] && awk '{print $14 + $15}' $t/stat
	done | awk '{s += $1} END {print s + 0}'
}
hz=$(getconf CLK_TCK)
us_per() { echo $(( $1 * 1000000 / hz / ($2 > 0 ? $2 : 1) )); }
run() { # name connections script
	echo "-- $1: $2 connections, ${DUR}s"
	l0=$(ticks loop) c0=$(ticks nudge-commit) e0=$(ticks nudge-engine) p0=$(ticks all)
	a0=$(metric nudge_events_accepted_total)
	NUDGE_AUTH="$auth" wrk -t2 -c"$2" -d"${DUR}s" --latency -s "$here/$3" \
		"http://127.0.0.1:$port" >"$dir/wrk" 2>&1
	n=$(( $(metric nudge_events_accepted_total) - a0 ))
	echo "   server CPU per event: loop thread $(us_per $(( $(ticks loop) - l0 )) $n) us," \
		"committer $(us_per $(( $(ticks nudge-commit) - c0 )) $n) us," \
		"engine $(us_per $(( $(ticks nudge-engine) - e0 )) $n) us," \
		"all threads $(us_per $(( $(ticks all) - p0 )) $n) us;" \
		"inbox lag left $(metric nudge_inbox_lag_records)"
	awk <"$dir/wrk" '
		/Requests\/sec/ {rps=$2}
		/^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
		/Non-2xx/ {bad=$NF}
		/events\/s/ {print}
		END {printf "   requests/s %s  p50 %s  p99 %s  non-2xx %s\n", rps, p50, p99, bad ? bad : 0}'
}
run "single events" 64 wrk_track.lua
run "single events" 256 wrk_track.lua
BATCH=100 run "batches of 100" 64 wrk_batch.lua
# The engine alone on what the load left, until the lag is 0 (at most 5 min).
lag=$(metric nudge_inbox_lag_records) e0=$(ticks nudge-engine) p0=$(ticks all) r0=$(applied) t0=$(date +%s.%N)
for i in $(seq 3000); do [ "$(metric nudge_inbox_lag_records)" = 0 ] && break; sleep 0.1; done
t1=$(date +%s.%N) n=$(( $(applied) - r0 ))
echo "-- engine alone after the load: $n events (lag was $lag) in $(echo "scale=1; ($t1 - $t0) / 1" | bc) s," \
	"$(echo "$n / ($t1 - $t0)" | bc) events/s, engine CPU $(us_per $(( $(ticks nudge-engine) - e0 )) $n) us per event," \
	"all threads $(us_per $(( $(ticks all) - p0 )) $n) us"
