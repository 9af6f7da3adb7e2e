#!/usr/bin/env bash
# Does a restart need more memory than running? For each signpost binary: a server on a fresh
# SQLite store gets N instances through the admin API (bench/bulk_load.py), its peak RSS is
# read and it is stopped (SIGTERM); then it is started again on that file, once without a cap
# and once under a memory cap (prlimit --data, which on Linux >= 4.7 counts the heap and every
# private writable mapping), and the restored server's peak RSS is read once /v1/health
# answers. The cap is what every binary needed to run: a server that ran with N instances
# within the cap must also restart under it.
#
#   bench/restore_memory.sh                          # the release build, N = 300 000
#   N=100000 bench/restore_memory.sh
#   bench/restore_memory.sh /tmp/before target/release/signpost   # two builds, A then B
#   CAP_MIB=200 bench/restore_memory.sh                # a cap of your choice
#   CAPPED_RUN=1 bench/restore_memory.sh               # also load a server under the cap
#   SHARED=1 bench/restore_memory.sh NEW OLD         # OLD restores the file NEW filled
#
# Peak RSS is VmHWM from /proc/PID/status (the kernel's high-water mark, so nothing between
# samples is missed); VmData (what the cap counts) is sampled every 0.2 s for its peak. The
# cap, unless CAP_MIB is set, is the largest peak VmData of the binaries while running (loading
# N instances, uncapped), plus CAP_MARGIN % (default 10): enough to have run, not enough to
# hold the store's rows all at once besides. With CAPPED_RUN=1 each binary is also loaded
# again from empty under the cap (N more registrations each, slow on a busy disk) and then
# restarted under it. A server that dies under the cap is reported with its log's end, not
# retried. Registry caps are raised for the run (max_types, as bulk_load.py makes 10
# instances per type); bulk_load.py runs with --procs $PROCS (32: more writes share each
# commit). Servers answer DNS on 127.0.0.1:$DNS_PORT (+i) and the API on $ADMIN_PORT (+i);
# start-up may take up to $START_TIMEOUT (300) s. With SHARED=1 only the first binary is
# loaded; the others restore a copy of its file (and the cap comes from the first alone): half
# the registrations when the disk is slow. Scratch files (the databases) go to $WORK.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
N=${N:-300000}
CAP_MIB=${CAP_MIB:-}
CAP_MARGIN=${CAP_MARGIN:-10}
CAPPED_RUN=${CAPPED_RUN:-0}
SHARED=${SHARED:-0}
PROCS=${PROCS:-32}
DNS_PORT=${DNS_PORT:-18673}
ADMIN_PORT=${ADMIN_PORT:-18773}
START_TIMEOUT=${START_TIMEOUT:-300}
WORK=${WORK:-/tmp/signpost-bench/restore-memory}
need curl prlimit
signpost_binaries "$@"
labels=(signpost)
[ ${#bins[@]} -eq 1 ] || labels=(A B C D E F G H I J K L M N O P Q R S T U V W X Y Z)
for i in "${!bins[@]}"; do
  [ "${labels[0]}" = signpost ] || echo "${labels[$i]}: ${bins[$i]}"
done
rm -rf "$WORK"; mkdir -p "$WORK"
cat >"$WORK/config.toml" <<EOF
[registry]
max_instances = $((N + 1000000))
max_types = $((N / 10 + 100000))
EOF

status_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
# sample_vmdata PID OUT: writes the peak VmData of PID (KiB) to OUT every 0.2 s while it lives.
sample_vmdata() {
  local peak=0 v
  while v=$(status_kb "$1" VmData 2>/dev/null) && [ -n "$v" ]; do
    [ "$v" -gt "$peak" ] && { peak=$v; echo "$peak" >"$2"; }
    sleep 0.2
  done
}
# launch LOG I [PREFIX...]: starts binary I on its store with PREFIX (e.g. prlimit) before it,
# sets $server_pid and $sampler, and waits until /v1/health answers: sets $up to 1 and
# $startup to the seconds taken, or $up to 0 when the server exited first.
launch() {
  local log=$1 i=$2 port=$((ADMIN_PORT + $2)) t0
  shift 2
  port_free "$port"; port_free $((DNS_PORT + i))
  t0=$(date +%s.%N)
  RUST_LOG=${RUST_LOG:-warn} "$@" "${bins[$i]}" --config "$WORK/config.toml" \
    --store "sqlite:$WORK/store.$i.db" --dns-listen "127.0.0.1:$((DNS_PORT + i))" \
    --admin-listen "127.0.0.1:$port" >"$log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  rm -f "$log.vmdata"
  sample_vmdata "$server_pid" "$log.vmdata" &
  sampler=$!
  up=0
  local deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if curl -sf "http://127.0.0.1:$port/v1/health" >/dev/null 2>&1; then up=1; break; fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  startup=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  [ $up = 1 ] || kill -0 "$server_pid" 2>/dev/null || wait "$server_pid" 2>/dev/null || true
}
# report LABEL PHASE: one line on the running server $server_pid.
report() {
  local hwm rss vmdata instances
  hwm=$(status_kb "$server_pid" VmHWM) rss=$(status_kb "$server_pid" VmRSS)
  vmdata=$(cat "$log.vmdata" 2>/dev/null || echo 0)
  instances=$(curl -s "http://127.0.0.1:$((ADMIN_PORT + i))/v1/health" | python3 -c \
    'import json, sys; print(json.load(sys.stdin).get("instances", "?"))' 2>/dev/null || echo "?")
  printf "%-8s %-18s instances=%s peak_rss_mib=%.1f rss_mib=%.1f peak_vmdata_mib=%.1f start_s=%s\n" \
    "$1" "$2" "$instances" "$(bc -l <<<"$hwm/1024")" "$(bc -l <<<"$rss/1024")" \
    "$(bc -l <<<"$vmdata/1024")" "$startup" | tee -a "$WORK/results"
}
# halt: stops the server and its sampler.
halt() { stop "$server_pid"; kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; }
# died LABEL PHASE: reports a server that exited before answering.
died() {
  local code=0
  echo "$1 $2: exited before answering (after ${startup} s); the end of its log:" | tee -a "$WORK/results"
  tail -n 3 "$log" | sed 's/^/    /' | tee -a "$WORK/results"
  pids=("${pids[@]/$server_pid}")
  kill "$sampler" 2>/dev/null || true
  return $code
}

echo "load before: $(uptime)"
: >"$WORK/results"
# load I PHASE [PREFIX...]: binary I on a fresh store, N registrations, reported, stopped.
# Fails when the server died.
load() {
  local i=$1 phase=$2
  shift 2
  rm -f "$WORK/store.$i.db"*
  log=$WORK/${labels[$i]}.$phase.log
  launch "$log" "$i" "$@"
  if [ $up = 0 ]; then died "${labels[$i]}" "$phase"; return 1; fi
  if ! python3 "$here/bulk_load.py" "127.0.0.1:$((ADMIN_PORT + i))" "$N" --procs "$PROCS" >&2; then
    echo "${labels[$i]} $phase: bulk_load failed" | tee -a "$WORK/results"
  fi
  if ! kill -0 "$server_pid" 2>/dev/null; then died "${labels[$i]}" "$phase"; return 1; fi
  sleep 0.5  # a last VmData sample
  report "${labels[$i]}" "$phase"
  halt
}
# restore I PHASE [PREFIX...]: binary I restarted on its store, reported, stopped.
restore() {
  local i=$1 phase=$2
  shift 2
  log=$WORK/${labels[$i]}.$phase.log
  launch "$log" "$i" "$@"
  if [ $up = 0 ]; then died "${labels[$i]}" "$phase"; return 0; fi
  sleep 0.5
  report "${labels[$i]}" "$phase"
  halt
}
peak_vmdata=0
for i in "${!bins[@]}"; do
  if [ "$SHARED" = 1 ] && [ "$i" -gt 0 ]; then
    for f in "$WORK"/store.0.db*; do cp "$f" "$WORK/store.$i.db${f#"$WORK"/store.0.db}"; done
    continue
  fi
  load "$i" run || die "${labels[$i]} died loading $N instances without a cap"
  v=$(cat "$WORK/${labels[$i]}.run.log.vmdata")
  [ "$v" -gt "$peak_vmdata" ] && peak_vmdata=$v
done
cap_kb=${CAP_MIB:+$((CAP_MIB * 1024))}
cap_kb=${cap_kb:-$((peak_vmdata * (100 + CAP_MARGIN) / 100))}
cap=(prlimit "--data=$((cap_kb * 1024))")
echo "cap: ${cap[*]} ($((cap_kb / 1024)) MiB; the largest peak VmData while running: $((peak_vmdata / 1024)) MiB)" \
  | tee -a "$WORK/results"
for i in "${!bins[@]}"; do
  restore "$i" restore
  restore "$i" capped-restore "${cap[@]}"
done
if [ "$CAPPED_RUN" = 1 ]; then
  for i in "${!bins[@]}"; do
    load "$i" capped-run "${cap[@]}" && restore "$i" capped-run-restore "${cap[@]}"
  done
fi
echo "load after: $(uptime)"
echo "restore/running peak RSS (both uncapped):"
for label in "${labels[@]:0:${#bins[@]}}"; do
  awk -v l="$label" '$1 == l && ($2 == "run" || $2 == "restore") {
      for (f = 3; f <= NF; f++) if ($f ~ /^peak_rss_mib=/) {split($f, kv, "="); v[$2] = kv[2]}
    }
    END {if (v["run"] && v["restore"])
      printf "  %s: %.0f / %.0f MiB = %.2f\n", l, v["restore"], v["run"], v["restore"] / v["run"]}' \
    "$WORK/results"
done
