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
# (cores) per run, then the median per binary. Installs wrk with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-4} CONNECTIONS=${CONNECTIONS:-64}
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0} WORKERS=${WORKERS:-1} PORT=${PORT:-18700}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
if [ $# -eq 0 ]; then
  cargo build --release --quiet
  set -- target/release/signpost
fi
if ss -ltn | grep -q "127.0.0.1:$PORT "; then
  echo "port $PORT is in use: stop what holds it, or set PORT" >&2
  exit 1
fi
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A rates
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    TOKIO_WORKER_THREADS=$WORKERS RUST_LOG=warn taskset -c "$SERVER_CPU" "$bin" --store memory \
      --admin-listen "127.0.0.1:$PORT" --dns-listen 127.0.0.1:0 --dns-threads 1 &
    pid=$!
    for _ in $(seq 50); do
      ss -ltnp | grep "127.0.0.1:$PORT " | grep -q "pid=$pid," && break
      sleep 0.1
    done
    ss -ltnp | grep "127.0.0.1:$PORT " | grep -q "pid=$pid," \
      || { echo "$bin did not start on port $PORT" >&2; kill "$pid" 2>/dev/null; exit 1; }
    before=$(ticks "$pid")
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" \
      -s bench/register.lua "http://127.0.0.1:$PORT/")
    after=$(ticks "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rate=$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")
    errors=$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)
    cores=$(awk -v t=$((after - before)) -v d="$DURATION" -v hz="$(getconf CLK_TCK)" \
      'BEGIN {printf "%.2f", t / hz / d}')
    echo "round $round  $bin: $rate registrations/s, server $cores cores ${errors}"
    rates[$bin]="${rates[$bin]:-} $rate"
  done
done
for bin in "$@"; do
  median=$(tr ' ' '\n' <<<"${rates[$bin]}" | grep . | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
  echo "median  $bin: $median registrations/s  (runs:${rates[$bin]})"
done
