#!/usr/bin/env bash
# signpost against Knot DNS on the same discovery data set, measured alternately; given several
# signpost binaries, each of them too, so two builds compare with each other and with Knot; with
# $HICKORY set, hickory-dns (hickory's own server) too.
#
#   bench/dns_vs_knot.sh                        # the release build, 3 rounds x 10 s, UDP and TCP
#   ROUNDS=5 MODES=udp bench/dns_vs_knot.sh
#   bench/dns_vs_knot.sh /tmp/before target/release/signpost    # builds A and B, and Knot
#   HICKORY=/opt/hickory/bin/hickory-dns bench/dns_vs_knot.sh   # and hickory-dns
#
# Data: zone svc.local, TYPES (100) types typeNNN x INSTANCES (10) instances instMM, each an
# A 10.X.Y.M and an SRV to port 8000+M; Knot and hickory-dns load it from a zone file, signpost
# through its admin API. Query mix (bench/queries.py): 45 % typeNNN A, 45 % typeNNN SRV, 5 %
# instMM.typeNNN A, 5 % names that don't exist.
#
# All servers run pinned to CPU $SERVER_CPU (default 1) with one worker (Knot: udp-workers 1,
# tcp-workers 1; hickory-dns: --workers 1; signpost: --dns-threads 1), dnsperf (-c 4 -q 100,
# EDNS) pinned to CPU $CLIENT_CPU (default 0). Each round measures every mode on Knot, then on
# hickory-dns if given, then on each signpost binary in turn (Knot, hickory, A, B, Knot,
# hickory, A, B, ...), so all see the same machine weather. Binary number i (from 0) answers DNS
# on $SIGNPOST_PORT+i and its admin API on $ADMIN_PORT+i. Prints per server and mode the median
# QPS and the median server CPU time per answered query (user+sys of the server process over
# the run, from /proc), then each binary's ratios to Knot (and, given several, of each to the
# first), and with hickory-dns, hickory's ratios to Knot and each binary's to hickory. One
# binary is labelled signpost; several, A, B, C, ...
# Above ~110-140 k QPS dnsperf's own core is the limit, so for fast servers the CPU time per
# query is the fairer figure.
#
# hickory-dns is the hickory-dns crate's binary (e.g. `cargo install --locked --root DIR
# hickory-dns@0.26.3`, the hickory version signpost uses). It serves the zone file from its
# in-memory file store, configured in $WORK/hickory/named.toml: one primary zone, UDP and TCP on
# 127.0.0.1:$HICKORY_PORT, privileges kept, RUST_LOG=warn unless set.
#
# STEER, a list of 0 or 1 per binary (e.g. STEER="0 1"), loads that binary's data with weights
# and backups (bench/load.py --steer): the same binary given twice shows what steering costs.
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
HICKORY=${HICKORY:-}
HICKORY_PORT=${HICKORY_PORT:-18853}
WORK=${WORK:-/tmp/signpost-bench/vs-knot}

need dnsperf knotd curl dig
if [ -n "$HICKORY" ]; then
  executables "$HICKORY"
  hickory=${bins[0]}
fi
signpost_binaries "$@"
labels=(signpost)
[ ${#bins[@]} -eq 1 ] || labels=(A B C D E F G H I J K L M N O P Q R S T U V W X Y Z)
labels=("${labels[@]:0:${#bins[@]}}")
[ ${#labels[@]} -eq ${#bins[@]} ] || die "at most 26 binaries"
port_free "$KNOT_PORT" KNOT_PORT
servers=(knot)
if [ -n "$HICKORY" ]; then
  port_free "$HICKORY_PORT" HICKORY_PORT
  servers+=(hickory)
fi
for i in "${!bins[@]}"; do
  port_free $((SIGNPOST_PORT + i)) SIGNPOST_PORT
  port_free $((ADMIN_PORT + i)) ADMIN_PORT
done
rm -rf "$WORK"; mkdir -p "$WORK/knot/run" "$WORK/knot/db" "$WORK/data"
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
declare -A pid_of port_of log_of
pid_of[knot]=$knot port_of[knot]=$KNOT_PORT log_of[knot]=$WORK/knot.log
if [ -n "$HICKORY" ]; then
  mkdir -p "$WORK/hickory"
  cat >"$WORK/hickory/named.toml" <<EOF
listen_addrs_ipv4 = ["127.0.0.1"]
listen_port = $HICKORY_PORT
directory = "$WORK/data"
drop_privileges = false

[[zones]]
zone = "svc.local"
zone_type = "Primary"
file = "svc.local.zone"
EOF
  RUST_LOG=${RUST_LOG:-warn} taskset -c "$SERVER_CPU" "$hickory" --workers 1 \
    --config "$WORK/hickory/named.toml" >"$WORK/hickory.log" 2>&1 &
  pid_of[hickory]=$!; pids+=("${pid_of[hickory]}")
  port_of[hickory]=$HICKORY_PORT log_of[hickory]=$WORK/hickory.log
  for _ in $(seq 1 100); do  # it binds its UDP, then TCP, socket once the zone is loaded
    [ "$(ss -Hltun "sport = :$HICKORY_PORT" | wc -l)" -ge 2 ] && break
    kill -0 "${pid_of[hickory]}" 2>/dev/null || break
    sleep 0.1
  done
fi
for i in "${!bins[@]}"; do
  label=${labels[$i]}
  [ "$label" = signpost ] || echo "$label: ${bins[$i]}"
  log_of[$label]=$WORK/$label.log port_of[$label]=$((SIGNPOST_PORT + i))
  start_signpost "${log_of[$label]}" $((ADMIN_PORT + i)) taskset -c "$SERVER_CPU" "${bins[$i]}" \
    --store memory --dns-threads "$DNS_THREADS" --dns-listen "127.0.0.1:${port_of[$label]}"
  pid_of[$label]=$server_pid
  read -r -a steer <<<"${STEER:-}"
  steer_flag=()
  [ "${steer[$i]:-0}" = 1 ] && steer_flag=(--steer)
  python3 "$here/load.py" "http://127.0.0.1:$((ADMIN_PORT + i))" --types "$TYPES" \
    --instances "$INSTANCES" "${steer_flag[@]}" >&2
done
for server in "${servers[@]}" "${labels[@]}"; do
  answer=$(dig +short -p "${port_of[$server]}" @127.0.0.1 inst03.type007.svc.local A 2>/dev/null || true)
  if [ "$answer" != "10.0.7.3" ]; then
    echo "$server on port ${port_of[$server]} answers '$answer'; the end of ${log_of[$server]}:" >&2
    tail -n 20 "${log_of[$server]}" >&2
    exit 1
  fi
done

: >"$WORK/results"
for round in $(seq 1 "$ROUNDS"); do
  for server in "${servers[@]}" "${labels[@]}"; do
    pid=${pid_of[$server]} port=${port_of[$server]}
    for mode in $MODES; do
      [ "$round" = 1 ] && measure "$pid" "$port" "$mode" "$WORK/queries.txt" 1 >/dev/null  # warm-up
      read -r qps us < <(measure "$pid" "$port" "$mode" "$WORK/queries.txt" "$DURATION")
      echo "round $round $server $mode: qps=$qps server_us_per_query=$us" >&2
      echo "$server $mode $qps $us" >>"$WORK/results"
    done
  done
done
rss="rss_kb"
for server in "${servers[@]}" "${labels[@]}"; do rss+=" $server=$(rss_kb "${pid_of[$server]}")"; done
echo "$rss"
declare -A qps_of us_of
printf "%-8s %-4s %10s %14s\n" server mode "median QPS" "CPU us/query"
for server in "${servers[@]}" "${labels[@]}"; do
  for mode in $MODES; do
    qps_of[$server $mode]=$(awk -v s="$server" -v m="$mode" '$1 == s && $2 == m {print $3}' "$WORK/results" | median)
    us_of[$server $mode]=$(awk -v s="$server" -v m="$mode" '$1 == s && $2 == m {print $4}' "$WORK/results" | median)
    printf "%-8s %-4s %10.0f %14.2f\n" "$server" "$mode" "${qps_of[$server $mode]}" "${us_of[$server $mode]}"
  done
done
# ratio SERVER BASE MODE: SERVER's median QPS and CPU per query over BASE's.
ratio() {
  awk -v name="$1/$2 $3" -v q="${qps_of[$1 $3]}" -v bq="${qps_of[$2 $3]}" -v u="${us_of[$1 $3]}" \
    -v bu="${us_of[$2 $3]}" 'BEGIN {printf "%s: QPS %.2f, CPU per query %.2f\n", name, q / bq, u / bu}'
}
for mode in $MODES; do
  for label in "${labels[@]}"; do ratio "$label" knot "$mode"; done
  if [ -n "$HICKORY" ]; then
    ratio hickory knot "$mode"
    for label in "${labels[@]}"; do ratio "$label" hickory "$mode"; done
  fi
  for label in "${labels[@]:1}"; do ratio "$label" "${labels[0]}" "$mode"; done
done
