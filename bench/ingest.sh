#!/bin/sh
# bench/ingest.sh -- durable ingest throughput and latency of the real server.
#
# Starts `nudge serve` on a free loopback port with a fresh data directory and
# drives it with wrk (Lua scripts make every event unique): single-event
# requests over 64 and 256 connections, and batches of 100 events. Every 200
# answer means the events were synced to disk (invariant 1). Prints requests/s,
# events/s and latency percentiles. DESIGN.md §12: >= 50k requests/s single,
# >= 100k events/s batched.
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
run() { # name connections script
	echo "-- $1: $2 connections, ${DUR}s"
	NUDGE_AUTH="$auth" wrk -t2 -c"$2" -d"${DUR}s" --latency -s "$here/$3" \
		"http://127.0.0.1:$port" 2>&1 | awk '
		/Requests\/sec/ {rps=$2}
		/^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
		/Non-2xx/ {bad=$NF}
		/events\/s/ {print}
		END {printf "   requests/s %s  p50 %s  p99 %s  non-2xx %s\n", rps, p50, p99, bad ? bad : 0}'
}
run "single events" 64 wrk_track.lua
run "single events" 256 wrk_track.lua
BATCH=100 run "batches of 100" 64 wrk_batch.lua
echo "-- engine caught up: $(curl -s -H 'Authorization: Bearer benchadmin' http://127.0.0.1:$port/metrics | grep -E '^nudge_(inbox_lag_records|engine_records_total)')"
