#!/usr/bin/env bash
# The etcd store (--store etcd:...) under load, on a real 3-member etcd on this machine:
#
#   bench/cluster.sh                      # the release build, 3 rounds
#   ROUNDS=5 LOAD=100000 bench/cluster.sh target/release/signpost
#
# Starts a 3-member etcd (etcd 3.4+ on PATH; Debian etcd-server, installed with apt-get when
# missing) with its data in $ETCD_DIR (default on disk, /tmp/signpost-bench/cluster/etcd; set it
# under /dev/shm to take fsync out), three signpost nodes on it (n1, n2, n3: admin ports
# $PORT..$PORT+2, DNS $DNS_PORT..+2, one DNS thread each) and one single node on a memory store,
# then per round (ROUNDS, default 3; the medians are printed at the end):
#   - registrations/s through 1 node (wrk -c64 on n1) and through 3 nodes (wrk -c64 on each at
#     once), $DURATION (5) s each, every request a new name (bench/register.lua);
#   - heartbeats/s through the 3 nodes at once (wrk -c64 on each, bench/heartbeat.lua) over
#     $BEATS (3000) instances;
#   - propagation: 300 registrations and 300 deregistrations through n1, one at a time, each
#     timed until n2's /v1/events shows it (bench/propagation.py), p50 and p99;
#   - DNS: dnsperf (bench/queries.py's mix, 100 types x 10 instances) for $DURATION s against n1
#     and against the single node, alternately;
# and once $LOAD (default 100 000) instances are in etcd, start-up: a fresh node started
# ROUNDS times, the time it logs for reading the whole registry from etcd ("restored N
# registrations in T") before it binds its sockets. STARTUP_ONLY=1 skips the rounds and the
# loading and measures start-up on what $ETCD_DIR holds already (a previous run's data).
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-5} BEATS=${BEATS:-3000} LOAD=${LOAD:-100000}
PORT=${PORT:-18731} DNS_PORT=${DNS_PORT:-18741} ETCD_PORT=${ETCD_PORT:-32379}
CLIENT_CPU=${CLIENT_CPU:-0}
WORK=${WORK:-/tmp/signpost-bench/cluster}
ETCD_DIR=${ETCD_DIR:-$WORK/etcd}
need wrk curl dnsperf python3 etcd
signpost_binaries "$@"
bin=${bins[0]}
STARTUP_ONLY=${STARTUP_ONLY:-}
[ -n "$STARTUP_ONLY" ] || rm -rf "$WORK" "$ETCD_DIR"
mkdir -p "$WORK" "$ETCD_DIR"

# The etcd cluster: client ports ETCD_PORT+2i, peer ports ETCD_PORT+2i+1.
cluster="" urls=""
for i in 0 1 2; do
  cluster+="${cluster:+,}m$i=http://127.0.0.1:$((ETCD_PORT + 2 * i + 1))"
  urls+="${urls:+,}http://127.0.0.1:$((ETCD_PORT + 2 * i))"
done
for i in 0 1 2; do
  port_free $((ETCD_PORT + 2 * i)) ETCD_PORT
  etcd --name "m$i" --data-dir "$ETCD_DIR/m$i" \
    --listen-client-urls "http://127.0.0.1:$((ETCD_PORT + 2 * i))" \
    --advertise-client-urls "http://127.0.0.1:$((ETCD_PORT + 2 * i))" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 2 * i + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 2 * i + 1))" \
    --initial-cluster "$cluster" --initial-cluster-state new \
    --quota-backend-bytes $((4 << 30)) >"$WORK/etcd-m$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 100); do
  curl -sf -X POST "http://127.0.0.1:$ETCD_PORT/v3/kv/put" -d '{"key":"YmVuY2g=","value":"MQ=="}' \
    >/dev/null && break
  sleep 0.1
done

# node NAME ADMIN_PORT DNS_PORT [STORE]: starts a signpost node; $server_pid.
node() {
  local name=$1 admin=$2 dns=$3 store=${4:-etcd:$urls}
  printf '[store]\nurl = "%s"\n[store.etcd]\nnode = "%s"\nprefix = "/bench/"\n' "$store" "$name" \
    >"$WORK/$name.toml"
  RUST_LOG=${RUST_LOG:-info} start_signpost "$WORK/$name.log" "$admin" \
    "$bin" --config "$WORK/$name.toml" --dns-listen "127.0.0.1:$dns" --dns-threads 1
}
declare -a node_pids
for i in 0 1 2; do
  node "n$((i + 1))" $((PORT + i)) $((DNS_PORT + i))
  node_pids+=("$server_pid")
done
node single $((PORT + 3)) $((DNS_PORT + 3)) memory
single_pid=$server_pid

# wrk_rate OUT: requests/s from wrk's output.
wrk_rate() { awk '/Requests\/sec/ {printf "%d", $2}' "$1"; }
# wrk_all SCRIPT CONNECTIONS PORT...: wrk on each admin PORT at once; prints the summed rate.
wrk_all() {
  local script=$1 connections=$2 p sum=0 outs=() clients=()
  shift 2
  for p in "$@"; do
    wrk -t1 -c"$connections" -d"${DURATION}s" -s "$script" "http://127.0.0.1:$p/" \
      >"$WORK/wrk-$p.txt" 2>&1 &
    clients+=($!)
    outs+=("$WORK/wrk-$p.txt")
  done
  wait "${clients[@]}"
  for out in "${outs[@]}"; do
    grep -q "Non-2xx" "$out" && echo "  $(grep Non-2xx "$out") in $out" >&2
    sum=$((sum + $(wrk_rate "$out")))
  done
  echo "$sum"
}

declare -a reg1 reg3 beats prop50 prop99 dns_cluster dns_single
if [ -z "$STARTUP_ONLY" ]; then
# The DNS data set, through n1 (so in etcd, and on every node) and into the single node.
python3 "$here/queries.py" "$WORK/queries.txt" >/dev/null
python3 "$here/load.py" "http://127.0.0.1:$PORT" >/dev/null
python3 "$here/load.py" "http://127.0.0.1:$((PORT + 3))" >/dev/null
# The heartbeat set.
python3 "$here/bulk_load.py" "127.0.0.1:$PORT" "$BEATS" --prefix hb 2>/dev/null
curl -sf "http://127.0.0.1:$PORT/v1/services" | python3 -c '
import json, sys
for s in json.load(sys.stdin)["services"]:
    if s["type"].startswith("hb"):
        print(s["id"])' >"$WORK/ids"
export IDS=$WORK/ids

for round in $(seq "$ROUNDS"); do
  r1=$(wrk_all "$here/register.lua" 64 "$PORT")
  r3=$(wrk_all "$here/register.lua" 64 "$PORT" $((PORT + 1)) $((PORT + 2)))
  hb=$(wrk_all "$here/heartbeat.lua" 64 "$PORT" $((PORT + 1)) $((PORT + 2)))
  prop=$(python3 "$here/propagation.py" "127.0.0.1:$PORT" "127.0.0.1:$((PORT + 1))" --count 300)
  p50=$(awk '/^request sent/ {print $(NF-9)}' <<<"$prop")
  p99=$(awk '/^request sent/ {print $(NF-6)}' <<<"$prop")
  qc=$(measure "${node_pids[0]}" "$DNS_PORT" udp "$WORK/queries.txt" "$DURATION" | cut -d' ' -f1)
  qs=$(measure "$single_pid" $((DNS_PORT + 3)) udp "$WORK/queries.txt" "$DURATION" | cut -d' ' -f1)
  echo "round $round: registrations/s 1 node $r1, 3 nodes $r3; heartbeats/s $hb;" \
    "propagation p50 $p50 ms p99 $p99 ms; DNS QPS clustered $qc, single $qs"
  echo "$prop" | sed 's/^/  /'
  reg1+=("$r1") reg3+=("$r3") beats+=("$hb") prop50+=("$p50") prop99+=("$p99")
  dns_cluster+=("$qc") dns_single+=("$qs")
done

fi

# Start-up at LOAD instances: fill etcd, then start fresh nodes.
have=$(curl -sf "http://127.0.0.1:$PORT/v1/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["instances"])')
if [ -z "$STARTUP_ONLY" ] && [ "$have" -lt "$LOAD" ]; then
  loaders=()
  for i in 0 1 2; do  # a third through each node, at once
    python3 "$here/bulk_load.py" "127.0.0.1:$((PORT + i))" $(((LOAD - have + 2) / 3)) \
      --prefix "load$i-" --procs 16 &
    loaders+=($!)
  done
  wait "${loaders[@]}"
fi
declare -a loads
for round in $(seq "$ROUNDS"); do
  RUST_LOG=info node "fresh$round" $((PORT + 4)) $((DNS_PORT + 4))
  line=$(grep -a "restored" "$WORK/fresh$round.log" | head -1)
  stop "$server_pid"
  seconds=$(sed -E 's/.*restored ([0-9]+) registrations in ([0-9.]+)(ms|s|µs).*/\2 \3 \1/' <<<"$line" \
    | awk '{v = $1; if ($2 == "ms") v /= 1000; if ($2 == "µs") v /= 1e6; printf "%.3f", v}')
  count=$(sed -E 's/.*restored ([0-9]+) registrations.*/\1/' <<<"$line")
  echo "start-up $round: $count registrations read from etcd in $seconds s"
  loads+=("$seconds")
done

echo
echo "medians over $ROUNDS rounds (etcd data in $ETCD_DIR):"
if [ -z "$STARTUP_ONLY" ]; then
echo "  registrations/s through 1 node:   $(median <<<"${reg1[*]}")   (runs: ${reg1[*]})"
echo "  registrations/s through 3 nodes:  $(median <<<"${reg3[*]}")   (runs: ${reg3[*]})"
echo "  heartbeats/s through 3 nodes:     $(median <<<"${beats[*]}")   (runs: ${beats[*]})"
echo "  propagation n1 -> n2 p50 ms:      $(median <<<"${prop50[*]}")   (runs: ${prop50[*]})"
echo "  propagation n1 -> n2 p99 ms:      $(median <<<"${prop99[*]}")   (runs: ${prop99[*]})"
echo "  DNS QPS, clustered node:          $(median <<<"${dns_cluster[*]}")   (runs: ${dns_cluster[*]})"
echo "  DNS QPS, single node (memory):    $(median <<<"${dns_single[*]}")   (runs: ${dns_single[*]})"
fi
echo "  start-up, $count instances, s:    $(median <<<"${loads[*]}")   (runs: ${loads[*]})"
