# shellcheck shell=bash
# What the bench/*.sh scripts share. Source it first:
#
#   # shellcheck source=common.sh
#   . "$(dirname "$0")/common.sh"
#
# It sets -euo pipefail, $here (this directory) and $repo (the repository root), changes to
# $repo (remembering the caller's directory, against which relative binary paths given on the
# command line are resolved), and on exit stops every process whose pid is in the array $pids.
set -euo pipefail
caller_dir=$PWD
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
CLK_TCK=$(getconf CLK_TCK)

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# die MESSAGE...: prints the message on stderr and exits with status 1.
die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# need COMMAND...: installs with apt-get (as root) the Debian packages of the commands that are
# missing (knotd from knot, dig from bind9-dnsutils, any other from the package of its name).
need() {
  local cmd missing=()
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null && continue
    case $cmd in
      knotd) missing+=(knot) ;;
      dig) missing+=(bind9-dnsutils) ;;
      *) missing+=("$cmd") ;;
    esac
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "installing ${missing[*]}" >&2
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    die "could not install ${missing[*]} with apt-get (needs root)"
  fi
}

# build_release: builds the release binary (quietly) and prints its path, in cargo's target
# directory (CARGO_TARGET_DIR is honoured).
build_release() {
  cargo build --release --quiet
  local target
  target=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  echo "$target/release/signpost"
}

# executables PATH...: sets the array $bins to the PATHs, absolute (relative ones are taken from
# the directory the script was started in), each checked to be an executable file.
executables() {
  local path
  bins=()
  for path in "$@"; do
    case $path in /*) ;; *) path=$caller_dir/$path ;; esac
    [[ -f $path && -x $path ]] || die "$path is not an executable file"
    bins+=("$path")
  done
}

# signpost_binaries [BINARY...]: sets $bins to the BINARYs (see executables), or, with none, to
# the release binary, built first.
signpost_binaries() {
  if [ $# -eq 0 ]; then
    bins=("$(build_release)")
  else
    executables "$@"
  fi
}

# port_free PORT [VARIABLE]: fails unless no TCP or UDP socket is bound to PORT.
port_free() {
  [ -z "$(ss -Hltun "sport = :$1")" ] \
    || die "port $1 is in use: stop what holds it${2:+, or set $2}"
}

# start_signpost LOG ADMIN_PORT COMMAND...: starts COMMAND (a signpost binary with its options,
# perhaps behind taskset) with --admin-listen 127.0.0.1:ADMIN_PORT, RUST_LOG=warn unless set,
# output to LOG; adds it to $pids, sets $server_pid, and waits until /v1/health answers. Fails
# with the end of LOG when the server exits or doesn't answer within $START_TIMEOUT (10) s.
start_signpost() {
  local log=$1 port=$2
  shift 2
  port_free "$port"
  RUST_LOG=${RUST_LOG:-warn} "$@" --admin-listen "127.0.0.1:$port" >"$log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  local _
  for _ in $(seq 1 $((${START_TIMEOUT:-10} * 10))); do
    curl -sf "http://127.0.0.1:$port/v1/health" >/dev/null 2>&1 && return
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$server_pid" 2>/dev/null; then
    echo "$(basename "$0"): $* did not answer on 127.0.0.1:$port within ${START_TIMEOUT:-10} s; the end of $log:" >&2
  else
    echo "$(basename "$0"): $* exited before answering on 127.0.0.1:$port; the end of $log:" >&2
  fi
  tail -n 20 "$log" >&2
  exit 1
}

# stop PID: stops a process started by this script and takes it off $pids.
stop() {
  local p rest=()
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || rest+=("$p"); done
  pids=("${rest[@]}")
}

# cpu_ticks PID: utime + stime of a process, in clock ticks ($CLK_TCK a second).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# rss_kb PID: the resident set size (VmRSS) of a process, in KiB.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# median: the median of the numbers on stdin (separated by spaces or lines): the middle one, or
# the mean of the middle two when their count is even. Fails when there is none.
median() {
  awk '{for (i = 1; i <= NF; i++) print $i}' | sort -g | awk '{a[NR] = $1}
    END {
      if (NR == 0) { print "median: no numbers" > "/dev/stderr"; exit 1 }
      printf "%.12g\n", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
    }'
}

# measure PID PORT MODE QUERY_FILE DURATION: runs dnsperf (-c 4 -q 100, EDNS) pinned to CPU
# $CLIENT_CPU for DURATION seconds against 127.0.0.1:PORT over MODE (udp or tcp), and prints
# "QPS SERVER_CPU_US_PER_QUERY", the CPU time of process PID over the run per query completed.
measure() {
  local pid=$1 port=$2 mode=$3 queries=$4 duration=$5 t0 t1 out
  out=$(mktemp)
  t0=$(cpu_ticks "$pid")
  if ! taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -m "$mode" -d "$queries" \
    -c 4 -q 100 -e -t 2 -l "$duration" >"$out" 2>&1; then
    echo "dnsperf failed against port $port ($mode):" >&2
    cat "$out" >&2
    rm -f "$out"
    return 1
  fi
  t1=$(cpu_ticks "$pid")
  awk -v ticks=$((t1 - t0)) -v clk="$CLK_TCK" '
    /Queries per second:/ {qps = $4}
    /Queries completed:/ {done = $3}
    END {printf "%s %.2f\n", qps, 1e6 * ticks / clk / (done > 0 ? done : 1)}' "$out"
  rm -f "$out"
}
