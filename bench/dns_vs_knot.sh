#!/usr/bin/env bash
# signpost against Knot DNS on the same discovery data set, measured alternately.
#
#   bench/dns_vs_knot.sh                        # 3 rounds x 10 s, UDP and TCP
#   ROUNDS=5 MODES=udp bench/dns_vs_knot.sh
#
# Data: zone svc.local, TYPES (100) types typeNNN x INSTANCES (10) instances instMM, each an
# A 10.X.Y.M and an SRV to port 8000+M; Knot loads it from a zone file, signpost through its admin
# API. Query mix (bench/queries.py): 45 % typeNNN A, 45 % typeNNN SRV, 5 % instMM.typeNNN A,
# 5 % names that don't exist.
#
# Both servers run pinned to CPU $SERVER_CPU (default 1) with one worker (Knot: udp-workers 1,
# tcp-workers 1; signpost: --dns-threads 1), dnsperf (-c 4 -q 100, EDNS) pinned to CPU
# $CLIENT_CPU (default 0). Each round measures every mode on Knot, then on signpost, so both
# see the same machine weather. Prints per server and mode the median QPS and the median
# server CPU time per answered query (user+sys of the server process over the run, from
# /proc), then the signpost/Knot ratios. Above ~110-140 k QPS dnsperf's own core is the limit,
# so for fast servers the CPU time per query is the fairer figure.
#
# Installs dnsperf, knot, curl and dig with apt-get when missing (needs root). Scratch files
# go to $WORK.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
MODES=${MODES:-udp tcp}
TYPES=${TYPES:-100}
INSTANCES=${INSTANCES:-10}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
DNS_THREADS=${DNS_THREADS:-1}
KNOT_PORT=${KNOT_PORT:-18553}
SIGNPOST_PORT=${SIGNPOST_PORT:-18653}
ADMIN_PORT=${ADMIN_PORT:-18753}
WORK=${WORK:-/tmp/signpost-bench/vs-knot}

need dnsperf knotd curl dig
for port in "$KNOT_PORT:KNOT_PORT" "$SIGNPOST_PORT:SIGNPOST_PORT" "$ADMIN_PORT:ADMIN_PORT"; do
  port_free "${port%%:*}" "${port#*:}"
done
rm -rf "$WORK"; mkdir -p "$WORK/knot/run" "$WORK/knot/db" "$WORK/data"
bin=$(build_release)
python3 "$here/queries.py" "$WORK/queries.txt" --types "$TYPES" --instances "$INSTANCES" \
  --zonefile "$WORK/data/svc.local.zone"

cat >"$WORK/knot/knot.conf" <<EOF
server:
    rundir: "$WORK/knot/run"
    listen: 127.0.0.1@$KNOT_PORT
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$WORK/knot/db"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "$WORK/data"
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: svc.local
EOF

taskset -c "$SERVER_CPU" knotd -c "$WORK/knot/knot.conf" >"$WORK/knot.log" 2>&1 &
knot=$!; pids+=("$knot")
start_signpost "$WORK/signpost.log" "$ADMIN_PORT" taskset -c "$SERVER_CPU" "$bin" --store memory \
  --dns-threads "$DNS_THREADS" --dns-listen "127.0.0.1:$SIGNPOST_PORT"
signpost=$server_pid
python3 "$here/load.py" "http://127.0.0.1:$ADMIN_PORT" --types "$TYPES" --instances "$INSTANCES" >&2
for port in "$KNOT_PORT" "$SIGNPOST_PORT"; do
  answer=$(dig +short -p "$port" @127.0.0.1 inst03.type007.svc.local A 2>/dev/null || true)
  [ "$answer" = "10.0.7.3" ] || { echo "server on port $port answers '$answer'" >&2; exit 1; }
done

: >"$WORK/results"
for round in $(seq 1 "$ROUNDS"); do
  for server in knot signpost; do
    if [ "$server" = knot ]; then pid=$knot port=$KNOT_PORT; else pid=$signpost port=$SIGNPOST_PORT; fi
    for mode in $MODES; do
      [ "$round" = 1 ] && measure "$pid" "$port" "$mode" "$WORK/queries.txt" 1 >/dev/null  # warm-up
      read -r qps us < <(measure "$pid" "$port" "$mode" "$WORK/queries.txt" "$DURATION")
      echo "round $round $server $mode: qps=$qps server_us_per_query=$us" >&2
      echo "$server $mode $qps $us" >>"$WORK/results"
    done
  done
done
echo "rss_kb knot=$(rss_kb "$knot") signpost=$(rss_kb "$signpost")"
python3 - "$WORK/results" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
med = {}
for server, mode, qps, us in rows:
    med.setdefault((server, mode), ([], []))
    med[(server, mode)][0].append(float(qps))
    med[(server, mode)][1].append(float(us))
modes = sorted({m for _, m in med})
print("%-8s %-4s %10s %14s" % ("server", "mode", "median QPS", "CPU us/query"))
for (server, mode), (q, u) in sorted(med.items()):
    print("%-8s %-4s %10.0f %14.2f" % (server, mode, statistics.median(q), statistics.median(u)))
for mode in modes:
    k, s = med.get(("knot", mode)), med.get(("signpost", mode))
    if k and s:
        print("signpost/knot %s: QPS %.2f, CPU per query %.2f" % (
            mode, statistics.median(s[0]) / statistics.median(k[0]),
            statistics.median(s[1]) / statistics.median(k[1])))
EOF
