#!/usr/bin/env bash
# DNS answer throughput and memory with a large registry: two signpost servers, one holding
# the benchmark data set alone (100 types x 10 = 1 000 instances), the other the same data
# plus BULK more instances (default 999 000, as 10 per type `bulkNNNNNN`), measured alternately
# with the same dnsperf query mix as bench/dns_vs_knot.sh (which asks only for the 1 000).
#
#   bench/scale.sh                       # 1 000 000 instances, 3 rounds x 10 s, UDP
#   BULK=99000 ROUNDS=5 bench/scale.sh
#   bench/scale.sh /tmp/before           # that binary instead of the release build
#
# Prints each server's median QPS and server CPU us/query, the large/small ratio, and RSS
# (VmRSS) of each server once loaded. Servers run with --store memory --dns-threads 1, pinned
# to CPU $SERVER_CPU while measured; dnsperf to $CLIENT_CPU. Installs dnsperf and curl with
# apt-get when missing.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
BULK=${BULK:-999000}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
WORK=${WORK:-/tmp/signpost-bench/scale}
mkdir -p "$WORK"
need dnsperf curl
[ $# -le 1 ] || die "one signpost binary at most"
signpost_binaries "$@"
python3 "$here/queries.py" "$WORK/queries.txt"

port_free 18654; port_free 18655
start() { # NAME DNS_PORT ADMIN_PORT
  start_signpost "$WORK/$1.log" "$3" "${bins[0]}" --store memory --dns-threads 1 \
    --dns-listen "127.0.0.1:$2"
  python3 "$here/load.py" "http://127.0.0.1:$3" >&2
}
start small 18654 18754; small=$server_pid
start large 18655 18755; large=$server_pid
echo "loading $BULK more instances into the large server" >&2
python3 "$here/bulk_load.py" "127.0.0.1:18755" "$BULK" >&2
sleep 2
echo "instances: small $(curl -s http://127.0.0.1:18754/v1/health) large $(curl -s http://127.0.0.1:18755/v1/health)"
taskset -a -p -c "$SERVER_CPU" "$small" >/dev/null
taskset -a -p -c "$SERVER_CPU" "$large" >/dev/null

declare -A qps us
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
echo "rss_kb small=$(rss_kb "$small") large=$(rss_kb "$large")"
for server in small large; do
  qps[$server]=$(awk -v s=$server '$1 == s {print $2}' "$WORK/results" | median)
  us[$server]=$(awk -v s=$server '$1 == s {print $3}' "$WORK/results" | median)
  printf "%-6s median QPS %8.0f  CPU us/query %.2f\n" "$server" "${qps[$server]}" "${us[$server]}"
done
awk -v qs="${qps[small]}" -v ql="${qps[large]}" -v us="${us[small]}" -v ul="${us[large]}" \
  'BEGIN {printf "small/large QPS ratio %.2f, large/small CPU per query %.2f\n", qs / ql, ul / us}'
