#!/usr/bin/env bash
# Registrations/s of one or more signpost binaries, measured alternately with wrk: the quick
# A/B for a change on the admin path (benches/registrations.rs is the full benchmark).
#
#   bench/admin_wrk.sh                                  # the release build, 3 rounds
#   bench/admin_wrk.sh /tmp/before target/release/signpost
#   ROUNDS=5 SERVER_CPU=0,1 WORKERS=2 bench/admin_wrk.sh A B
#
# Each round starts every binary in turn on a fresh memory store (127.0.0.1:$PORT), pinned to
# CPU $SERVER_CPU (default 1) with $WORKERS tokio workers (default 1), and runs wrk -t1
# -c$CONNECTIONS (64) for $DURATION (4) s pinned to CPU $CLIENT_CPU (default 0), every request
# a registration of a new name (bench/register.lua). Prints requests/s and the server's CPU
# (cores) per run, then the median per binary. Installs wrk and curl with apt-get when missing.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-4} CONNECTIONS=${CONNECTIONS:-64}
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0} WORKERS=${WORKERS:-1} PORT=${PORT:-18700}
WORK=${WORK:-/tmp/signpost-bench/admin-wrk}
need wrk curl
signpost_binaries "$@"
port_free "$PORT" PORT
mkdir -p "$WORK"
declare -A rates
for round in $(seq "$ROUNDS"); do
  for bin in "${bins[@]}"; do
    TOKIO_WORKER_THREADS=$WORKERS start_signpost "$WORK/signpost.log" "$PORT" \
      taskset -c "$SERVER_CPU" "$bin" --store memory --dns-listen 127.0.0.1:0 --dns-threads 1
    pid=$server_pid
    before=$(cpu_ticks "$pid")
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" \
      -s bench/register.lua "http://127.0.0.1:$PORT/")
    after=$(cpu_ticks "$pid")
    stop "$pid"
    rate=$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")
    errors=$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)
    cores=$(awk -v t=$((after - before)) -v d="$DURATION" -v hz="$CLK_TCK" \
      'BEGIN {printf "%.2f", t / hz / d}')
    echo "round $round  $bin: $rate registrations/s, server $cores cores ${errors}"
    rates[$bin]="${rates[$bin]:-} $rate"
  done
done
for bin in "${bins[@]}"; do
  echo "median  $bin: $(median <<<"${rates[$bin]}" | xargs printf '%.0f') registrations/s  (runs:${rates[$bin]})"
done
