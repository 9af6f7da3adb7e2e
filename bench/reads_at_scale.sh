#!/usr/bin/env bash
# Reads that must not grow with the registry, and memory per instance: one signpost server
# (--store memory) filled with N instances (default 999 000, 10 per type, bench/bulk_load.py);
# then
#   - the latency of GET /v1/health and GET /metrics (curl's time_total), $REQUESTS (9) times
#     each, median, empty and at N;
#   - registrations/s (bulk_load.py: $M = 20 000 new instances a run with no other client,
#     $M_BUSY = 1 000 with $LOOPERS (8) clients looping on GET /v1/health, keep-alive),
#     alternately, $ROUNDS (3) rounds; a busy run is short because at 1 M instances in 100 000
#     types registrations crawl while the loopers run (16-27/s on cc8f999);
#   - RSS (VmRSS) empty and at N, and (RSS at N - RSS empty) / N: memory per instance.
#
#   bench/reads_at_scale.sh                     # the release build, N = 999 000
#   N=300000 ROUNDS=5 bench/reads_at_scale.sh
#   bench/reads_at_scale.sh /tmp/before         # that binary instead of the release build
#
# The server is loaded unpinned (bulk_load.py --procs $PROCS, default 16), then pinned to CPU
# $SERVER_CPU (default 1) for the measurements, with every client (curl, bulk_load.py, the
# loopers) on CPU $CLIENT_CPU (default 0).
# Registry caps are raised for the run (bulk_load.py makes 10 instances per type). Prints every
# measurement, then the medians and the busy/quiet ratio of registrations/s. Scratch files go
# to $WORK.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
N=${N:-999000}
M=${M:-20000}
M_BUSY=${M_BUSY:-1000}
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-9}
LOOPERS=${LOOPERS:-8}
PROCS=${PROCS:-16}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
DNS_PORT=${DNS_PORT:-18683}
ADMIN_PORT=${ADMIN_PORT:-18783}
WORK=${WORK:-/tmp/signpost-bench/reads-at-scale}
need curl
[ $# -le 1 ] || die "one signpost binary at most"
signpost_binaries "$@"
rm -rf "$WORK"; mkdir -p "$WORK"
cat >"$WORK/config.toml" <<EOF
[registry]
max_instances = $((N + ROUNDS * (M + M_BUSY) + 1000000))
max_types = $(((N + ROUNDS * (M + M_BUSY)) / 10 + 100000))
EOF
cat >"$WORK/loop.py" <<'EOF'
# Loops GET PATH on one keep-alive connection until the file STOP exists (or a request takes
# over 10 s), then prints the requests made. No signal: a SIGTERM handler once left a looper
# running and hung the script.
import http.client, os, sys
host, port, path, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
done = 0
conn = http.client.HTTPConnection(host, port, timeout=10)
try:
    while not os.path.exists(stop):
        conn.request("GET", path)
        conn.getresponse().read()
        done += 1
except Exception as error:
    print(f"looper stopped: {error}", file=sys.stderr)
print(done)
EOF
admin=http://127.0.0.1:$ADMIN_PORT

# latency NAME PATH: REQUESTS requests, one line of their times (s) and their median.
latency() {
  local times=() _
  for _ in $(seq 1 "$REQUESTS"); do
    times+=("$(taskset -c "$CLIENT_CPU" curl -s -o /dev/null -w '%{time_total}' "$admin$2")")
  done
  printf "%-16s %-10s median %.4f s  (%s)\n" "$1" "$2" "$(echo "${times[@]}" | median)" "${times[*]}"
}
# register COUNT TAG: COUNT registrations of new names; prints their rate (/s).
register() {
  taskset -c "$CLIENT_CPU" python3 "$here/bulk_load.py" "127.0.0.1:$ADMIN_PORT" "$1" \
    --prefix "$2" 2>&1 | tee -a "$WORK/bulk.log" | sed -n 's/.*(\([0-9.]*\)\/s).*/\1/p'
}

echo "load before: $(uptime)"
start_signpost "$WORK/signpost.log" "$ADMIN_PORT" "${bins[0]}" \
  --config "$WORK/config.toml" --store memory --dns-threads 1 --dns-listen "127.0.0.1:$DNS_PORT"
server=$server_pid
sleep 1
rss_empty=$(rss_kb "$server")
echo "rss empty: $rss_empty KiB"
taskset -a -p -c "$SERVER_CPU" "$server" >/dev/null
latency empty /v1/health
latency empty /metrics
taskset -a -p -c 0-$(($(nproc) - 1)) "$server" >/dev/null
echo "loading $N instances"
t0=$SECONDS
python3 "$here/bulk_load.py" "127.0.0.1:$ADMIN_PORT" "$N" --procs "$PROCS" 2>&1 | tee -a "$WORK/bulk.log"
echo "loaded in $((SECONDS - t0)) s"
taskset -a -p -c "$SERVER_CPU" "$server" >/dev/null
sleep 2
rss_full=$(rss_kb "$server")
echo "instances: $(curl -s "$admin/v1/health")"
echo "rss at $N: $rss_full KiB (peak $(awk '/^VmHWM:/ {print $2}' "/proc/$server/status") KiB)"
awk -v e="$rss_empty" -v f="$rss_full" -v n="$N" \
  'BEGIN {printf "memory per instance: (%d - %d) KiB / %d = %.0f bytes\n", f, e, n, (f - e) * 1024 / n}'
latency "at $N" /v1/health
latency "at $N" /metrics

: >"$WORK/results"
for round in $(seq 1 "$ROUNDS"); do
  order="quiet busy"
  [ $((round % 2)) = 0 ] && order="busy quiet"
  for mode in $order; do
    loopers=()
    rm -f "$WORK/stop"
    if [ "$mode" = busy ]; then
      for l in $(seq 1 "$LOOPERS"); do
        taskset -c "$CLIENT_CPU" python3 "$WORK/loop.py" 127.0.0.1 "$ADMIN_PORT" /v1/health \
          "$WORK/stop" >"$WORK/looper.$l" 2>"$WORK/looper-errors.$l" &
        loopers+=($!); pids+=($!)
      done
      sleep 0.5
    fi
    t0=$(cpu_ticks "$server")
    count=$M
    [ "$mode" = busy ] && count=$M_BUSY
    rate=$(register "$count" "r$round$mode")
    t1=$(cpu_ticks "$server")
    health=0
    if [ "$mode" = busy ]; then
      touch "$WORK/stop"
      for p in "${loopers[@]}"; do
        # Each looper ends within one request (10 s at most); one that does not is killed.
        timeout 15 tail --pid="$p" -f /dev/null || kill -9 "$p" 2>/dev/null || true
        stop "$p"
      done
      health=$(cat "$WORK"/looper.* | awk '{s += $1} END {print s + 0}')
    fi
    echo "round $round $mode: registrations/s=$rate health_requests=$health server_cpu_s=$(awk -v t=$((t1 - t0)) -v c="$CLK_TCK" 'BEGIN {printf "%.2f", t / c}')"
    echo "$mode $rate" >>"$WORK/results"
  done
done
stop "$server"
echo "load after: $(uptime)"
quiet=$(awk '$1 == "quiet" {print $2}' "$WORK/results" | median)
busy=$(awk '$1 == "busy" {print $2}' "$WORK/results" | median)
awk -v q="$quiet" -v b="$busy" -v l="$LOOPERS" \
  'BEGIN {printf "registrations/s median: none looping %.0f, %d looping on /v1/health %.0f: ratio %.2f\n", q, l, b, b / q}'
