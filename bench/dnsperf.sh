# shellcheck shell=bash
# Shared by the DNS benchmarks: one dnsperf run against a server, and the server's CPU time over
# it. Source this file; needs CLIENT_CPU (the core dnsperf is pinned to).

CLK_TCK=$(getconf CLK_TCK)

# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure PID PORT MODE QUERY_FILE DURATION: runs dnsperf (-c 4 -q 100, EDNS) for DURATION seconds
# and prints "QPS SERVER_CPU_US_PER_QUERY".
measure() {
  local pid=$1 port=$2 mode=$3 queries=$4 duration=$5 t0 t1 out
  out=$(mktemp)
  t0=$(cpu_ticks "$pid")
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -m "$mode" -d "$queries" \
    -c 4 -q 100 -e -t 2 -l "$duration" >"$out" 2>&1
  t1=$(cpu_ticks "$pid")
  awk -v ticks=$((t1 - t0)) -v clk="$CLK_TCK" '
    /Queries per second:/ {qps = $4}
    /Queries completed:/ {done = $3}
    END {printf "%s %.2f\n", qps, 1e6 * ticks / clk / (done > 0 ? done : 1)}' "$out"
  rm -f "$out"
}
