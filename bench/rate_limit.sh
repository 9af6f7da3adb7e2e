#!/usr/bin/env bash
# What UDP response rate limiting costs: the same signpost binary twice, one server with
# `[dns.rate_limit] responses_per_second = $RPS` (default 1 000 000, far above what dnsperf
# sends, so nothing is limited and only the bookkeeping is measured), one without (0, the
# default), measured alternately with the query mix of bench/dns_vs_knot.sh over UDP.
#
#   bench/rate_limit.sh                          # the release build, 5 rounds x 10 s
#   ROUNDS=7 DURATION=8 bench/rate_limit.sh
#   bench/rate_limit.sh /tmp/signpost            # that binary instead of the release build
#   CALLGRIND=0 bench/rate_limit.sh              # skip the instruction counts
#   ROUNDS=0 bench/rate_limit.sh                 # only the instruction counts
#
# Both servers hold the benchmark data set (bench/load.py: 100 types x 10 instances), run with
# --store memory --dns-threads 1 pinned to CPU $SERVER_CPU (default 1); dnsperf (-c 4 -q 100,
# EDNS) on CPU $CLIENT_CPU (default 0). Each round measures off, then on (the order swapped
# every other round). Prints per round QPS and server CPU us/query, the medians, the on/off
# ratios, and the limiter's counters from /metrics (which must show nothing limited).
#
# With CALLGRIND=1 (the default) it then runs each server once more under valgrind
# --tool=callgrind, sends the $CG_QUERIES (20 000) queries of a query file once (dnsperf -n 1,
# one query at a time, so every socket batch holds one query in both runs), and prints the instructions per answered query of
# the UDP thread (--separate-threads: everything the thread running signpost::dns::udp::serve
# executed: receive, limit, answer, send), of Responder::respond_into in it (the answer
# itself), and the rest (socket batches and the limiter), off and on, and on/off.
# Instructions are repeatable where time on a shared machine is not. Installs dnsperf, curl and valgrind with apt-get when missing. Scratch files go to $WORK.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
RPS=${RPS:-1000000}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
CALLGRIND=${CALLGRIND:-1}
CG_QUERIES=${CG_QUERIES:-20000}
DNS_PORT=${DNS_PORT:-18663}
ADMIN_PORT=${ADMIN_PORT:-18763}
WORK=${WORK:-/tmp/signpost-bench/rate-limit}
need dnsperf curl
[ "$CALLGRIND" = 0 ] || need valgrind
[ $# -le 1 ] || die "one signpost binary at most"
signpost_binaries "$@"
rm -rf "$WORK"; mkdir -p "$WORK"
python3 "$here/queries.py" "$WORK/queries.txt"
python3 "$here/queries.py" "$WORK/queries-cg.txt" --count "$CG_QUERIES"
printf '[dns.rate_limit]\nresponses_per_second = 0\n' >"$WORK/off.toml"
printf '[dns.rate_limit]\nresponses_per_second = %s\nslip = 2\n' "$RPS" >"$WORK/on.toml"
for i in 0 1; do port_free $((DNS_PORT + i)) DNS_PORT; port_free $((ADMIN_PORT + i)) ADMIN_PORT; done

# start NAME I [WRAPPER...]: starts the binary with $WORK/NAME.toml on ports +I, loads the data.
start() {
  local name=$1 i=$2
  shift 2
  start_signpost "$WORK/$name.log" $((ADMIN_PORT + i)) "$@" "${bins[0]}" --config "$WORK/$name.toml" \
    --store memory --dns-threads 1 --dns-listen "127.0.0.1:$((DNS_PORT + i))"
  python3 "$here/load.py" "http://127.0.0.1:$((ADMIN_PORT + i))" >&2
}
# limited NAME I: the limiter's counters in the server's /metrics, one line.
limited() {
  curl -s "http://127.0.0.1:$((ADMIN_PORT + $2))/metrics" \
    | awk -v n="$1" '/^signpost_dns_rate_limited_total/ {s = s " " $0} END {print n ":" (s ? s : " (no counter)")}'
}

echo "load before: $(uptime)"
if [ "$ROUNDS" -gt 0 ]; then
  start off 0 taskset -c "$SERVER_CPU"; off=$server_pid
  start on 1 taskset -c "$SERVER_CPU"; on=$server_pid
  declare -A pid_of=([off]=$off [on]=$on) port_of=([off]=$DNS_PORT [on]=$((DNS_PORT + 1)))
  : >"$WORK/results"
  for round in $(seq 1 "$ROUNDS"); do
    order="off on"
    [ $((round % 2)) = 0 ] && order="on off"
    for server in $order; do
      pid=${pid_of[$server]} port=${port_of[$server]}
      [ "$round" = 1 ] && measure "$pid" "$port" udp "$WORK/queries.txt" 1 >/dev/null  # warm-up
      read -r qps us < <(measure "$pid" "$port" udp "$WORK/queries.txt" "$DURATION")
      echo "round $round $server: qps=$qps server_us_per_query=$us" >&2
      echo "$server $qps $us" >>"$WORK/results"
    done
  done
  limited off 0; limited on 1
  stop "$off"; stop "$on"
  echo "load after: $(uptime)"
  declare -A qps_of us_of
  for server in off on; do
    qps_of[$server]=$(awk -v s=$server '$1 == s {print $2}' "$WORK/results" | median)
    us_of[$server]=$(awk -v s=$server '$1 == s {print $3}' "$WORK/results" | median)
    printf "%-4s median QPS %8.0f  CPU us/query %.3f  answers per CPU-second %8.0f\n" "$server" \
      "${qps_of[$server]}" "${us_of[$server]}" "$(awk -v u="${us_of[$server]}" 'BEGIN {print 1e6 / u}')"
  done
  awk -v qf="${qps_of[off]}" -v qn="${qps_of[on]}" -v uf="${us_of[off]}" -v un="${us_of[on]}" \
    'BEGIN {printf "on/off: QPS %.3f, CPU per query %.3f, answers per CPU-second %.3f\n",
      qn / qf, un / uf, uf / un}'
  # Per round, on over off of the same round: the pairing cancels the machine's drift.
  awk '$1 == "off" {u = $3} $1 == "on" {v = $3} NR % 2 == 0 {print v / u}' "$WORK/results" \
    | tee "$WORK/ratios" | tr '\n' ' ' | sed 's/^/per-round on\/off CPU per query: /; s/$/\n/'
  echo "median of per-round ratios: $(median <"$WORK/ratios")"
fi

[ "$CALLGRIND" = 0 ] && exit 0
# Callgrind: the UDP work per answered query, off and on.
for name in off on; do
  i=0; [ $name = on ] && i=1
  START_TIMEOUT=120 start "$name" "$i" valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.$name" \
    --separate-threads=yes
  # valgrind is slow to start: start_signpost waited for /v1/health already.
  dnsperf -s 127.0.0.1 -p $((DNS_PORT + i)) -m udp -d "$WORK/queries-cg.txt" -n 1 -c 1 -q 1 \
    -e -t 5 >"$WORK/dnsperf-cg.$name" 2>&1 || { cat "$WORK/dnsperf-cg.$name" >&2; die "dnsperf failed"; }
  completed=$(awk '/Queries completed:/ {print $3}' "$WORK/dnsperf-cg.$name")
  echo "$name: $completed of $CG_QUERIES queries answered under callgrind"
  echo "$name $completed" >>"$WORK/cg-completed"
  stop "$server_pid"
  for part in "$WORK/callgrind.$name"-*; do  # one file per thread: keep the UDP thread's
    callgrind_annotate --inclusive=yes --threshold=100 "$part" >"$WORK/annotate.$name" 2>/dev/null
    grep -q 'signpost::dns::udp::serve \[' "$WORK/annotate.$name" && break
  done
done
# ir NAME FUNCTION: inclusive instructions of FUNCTION as a whole (the line naming the binary,
# not the lines of code inlined from other files); FUNCTION "PROGRAM TOTALS": the thread's.
ir() {
  awk -v f="$2" 'index($0, f) && (f == "PROGRAM TOTALS" || index($0, f " [")) {
    gsub(",", "", $1); print $1; exit}' "$WORK/annotate.$1"
}
printf "%-6s %16s %14s %12s %9s\n" "" "UDP thread Ir/q" "respond Ir/q" "rest Ir/q" "queries"
declare -A per_query
for name in off on; do
  n=$(awk -v s=$name '$1 == s {print $2}' "$WORK/cg-completed")
  a=$(ir "$name" 'PROGRAM TOTALS')
  r=$(ir "$name" 'signpost::dns::Responder::respond_into')
  if [ -z "$a" ] || [ -z "$r" ]; then die "no UDP thread or respond_into in $WORK/annotate.$name"; fi
  per_query[$name]=$(awk -v a="$a" -v q="$n" 'BEGIN {print a / q}')
  awk -v n="$name" -v q="$n" -v a="$a" -v r="$r" \
    'BEGIN {printf "%-6s %16.1f %14.1f %12.1f %9d\n", n, a / q, r / q, (a - r) / q, q}'
done
awk -v f="${per_query[off]}" -v o="${per_query[on]}" \
  'BEGIN {printf "on/off UDP instructions per query %.4f (%+.1f per query)\n", o / f, o - f}'
