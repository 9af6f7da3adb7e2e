#!/usr/bin/env bash
# DNS answer-path throughput of signpost, measured with dnsperf.
#
#   bench/dns_throughput.sh            # UDP, 3 runs of 10 s
#   MODES="udp tcp" RUNS=5 bench/dns_throughput.sh
#
# Builds the release binary, starts signpost pinned to CPU $SERVER_CPU (default 1), registers
# TYPES x INSTANCES instances through the admin API (default 100 x 10), and runs dnsperf
# (-c 4 -q 100, EDNS) pinned to CPU $CLIENT_CPU (default 0) with a 45/45/5/5 query mix
# (type A / type SRV / instance A / nonexistent). Prints, per mode, the median QPS over RUNS runs
# and the server's CPU time per answered query (user+sys from /proc, over dnsperf's run time).
# Needs: dnsperf (apt-get install -y dnsperf), python3. Scratch files go to $WORK.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
MODES=${MODES:-udp}
TYPES=${TYPES:-100}
INSTANCES=${INSTANCES:-10}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
DNS_PORT=${DNS_PORT:-18653}
ADMIN_PORT=${ADMIN_PORT:-18753}
WORK=${WORK:-/tmp/signpost-bench}
mkdir -p "$WORK"
command -v dnsperf >/dev/null || { echo "dnsperf missing: apt-get install -y dnsperf" >&2; exit 1; }

(cd "$repo" && cargo build --release --quiet)
python3 "$here/queries.py" "$WORK/queries.txt" --types "$TYPES" --instances "$INSTANCES"

RUST_LOG=warn taskset -c "$SERVER_CPU" "$repo/target/release/signpost" \
  --dns-listen "127.0.0.1:$DNS_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" >"$WORK/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$ADMIN_PORT/v1/health" >/dev/null 2>&1 && break
  sleep 0.1
done
python3 "$here/load.py" "http://127.0.0.1:$ADMIN_PORT" --types "$TYPES" --instances "$INSTANCES"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
clk=$(getconf CLK_TCK)
rss_kb=$(awk '/VmRSS/{print $2}' "/proc/$server/status")
for mode in $MODES; do
  args=(-s 127.0.0.1 -p "$DNS_PORT" -m "$mode" -d "$WORK/queries.txt" -c 4 -q 100 -e -t 2)
  taskset -c "$CLIENT_CPU" dnsperf "${args[@]}" -l 2 >/dev/null 2>&1 || true   # warm-up
  : >"$WORK/runs.$mode"
  for run in $(seq 1 "$RUNS"); do
    t0=$(cpu_ticks)
    taskset -c "$CLIENT_CPU" dnsperf "${args[@]}" -l "$DURATION" >"$WORK/dnsperf.out" 2>&1
    t1=$(cpu_ticks)
    qps=$(awk '/Queries per second:/{print $4}' "$WORK/dnsperf.out")
    done_q=$(awk '/Queries completed:/{print $3}' "$WORK/dnsperf.out")
    lost=$(awk '/Queries lost:/{print $3}' "$WORK/dnsperf.out")
    us=$(python3 -c "print('%.2f' % (1e6 * ($t1 - $t0) / $clk / max(1, $done_q)))")
    echo "$mode run $run: qps=$qps server_us_per_query=$us lost=$lost" >&2
    echo "$qps $us" >>"$WORK/runs.$mode"
  done
  sort -g "$WORK/runs.$mode" | awk -v m="$mode" -v n="$RUNS" -v rss="$rss_kb" \
    '{q[NR]=$1; u[NR]=$2} END {i=int((n+1)/2); printf "%s: median qps=%.0f (min %.0f, max %.0f) server_us_per_query=%s rss_kb=%s\n", m, q[i], q[1], q[n], u[i], rss}'
done
