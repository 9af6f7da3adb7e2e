#!/usr/bin/env bash
# DNS answer throughput and memory with a large registry: two signpost servers, one holding
# the benchmark data set alone (100 types x 10 = 1 000 instances), the other the same data
# plus BULK more instances (default 999 000, as 10 per type `bulkNNNNNN`), measured alternately
# with the same dnsperf query mix as bench/dns_vs_knot.sh (which asks only for the 1 000).
#
#   bench/scale.sh                       # 1 000 000 instances, 3 rounds x 10 s, UDP
#   BULK=99000 ROUNDS=5 bench/scale.sh
#
# Prints each server's median QPS and server CPU us/query, the large/small ratio, and RSS
# (VmRSS) of each server once loaded. Servers run with --store memory --dns-threads 1, pinned
# to CPU $SERVER_CPU while measured; dnsperf to $CLIENT_CPU. Needs dnsperf and curl (apt-get).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
BULK=${BULK:-999000}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
WORK=${WORK:-/tmp/signpost-bench/scale}
mkdir -p "$WORK"
command -v dnsperf >/dev/null || { echo "dnsperf missing: apt-get install -y dnsperf" >&2; exit 1; }
(cd "$repo" && cargo build --release --quiet)
python3 "$here/queries.py" "$WORK/queries.txt"

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
start() { # NAME DNS_PORT ADMIN_PORT
  RUST_LOG=warn "$repo/target/release/signpost" --store memory --dns-threads 1 \
    --dns-listen "127.0.0.1:$2" --admin-listen "127.0.0.1:$3" >"$WORK/$1.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$3/v1/health" >/dev/null && break; sleep 0.1; done
  python3 "$here/load.py" "http://127.0.0.1:$3" >&2
}
start small 18654 18754; small=${pids[-1]}
start large 18655 18755; large=${pids[-1]}
echo "loading $BULK more instances into the large server" >&2
python3 "$here/bulk_load.py" "127.0.0.1:18755" "$BULK" >&2
sleep 2
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
echo "instances: small $(curl -s http://127.0.0.1:18754/v1/health) large $(curl -s http://127.0.0.1:18755/v1/health)"
taskset -a -p -c "$SERVER_CPU" "$small" >/dev/null
taskset -a -p -c "$SERVER_CPU" "$large" >/dev/null

# shellcheck source=dnsperf.sh
. "$here/dnsperf.sh"
: >"$WORK/results"
for round in $(seq 1 "$ROUNDS"); do
  for server in small large; do
    if [ $server = small ]; then pid=$small port=18654; else pid=$large port=18655; fi
    [ "$round" = 1 ] && measure "$pid" "$port" udp "$WORK/queries.txt" 1 >/dev/null  # warm-up
    read -r qps us < <(measure "$pid" "$port" udp "$WORK/queries.txt" "$DURATION")
    echo "round $round $server: qps=$qps server_us_per_query=$us" >&2
    echo "$server $qps $us" >>"$WORK/results"
  done
done
echo "rss_kb small=$(rss "$small") large=$(rss "$large")"
python3 - "$WORK/results" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
med = {s: (statistics.median(float(q) for n, q, _ in rows if n == s),
           statistics.median(float(u) for n, _, u in rows if n == s)) for s in ("small", "large")}
for s, (q, u) in med.items():
    print("%-6s median QPS %8.0f  CPU us/query %.2f" % (s, q, u))
print("small/large QPS ratio %.2f, large/small CPU per query %.2f" % (
    med["small"][0] / med["large"][0], med["large"][1] / med["small"][1]))
EOF
