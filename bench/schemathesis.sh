#!/usr/bin/env bash
# schemathesis (PyPI) against a live signpost: every operation of GET /v1/openapi.json, every
# check (`--checks all`), examples, coverage, fuzzing and stateful phases; exits non-zero on any
# failure. docs/API.md records the last result.
#
#   bench/schemathesis.sh [BINARY]
#
# BINARY defaults to the debug build (built first): the run is about what the API answers, not
# how fast. Env: ADMIN_PORT=18790 DNS_PORT=18690 MAX_EXAMPLES=100 WORKERS=2 SEED (for a rerun of
# the same cases). The server runs with a random admin token. Installs schemathesis with pip when it is missing.
#
# Left out: GET /v1/events, a stream that never ends while the server runs (schemathesis reads
# a response to its end); the integration tests check every event against the document
# (tests/it/schema.rs).
#
# A registration's `check` is fuzzed too, and signpost then probes whatever URL or host:port
# schemathesis made up. So signpost and schemathesis run in a network namespace of their own
# (unshare --net, as root) that has nothing but loopback: no probe can leave the machine.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

if [ -z "${SIGNPOST_SCHEMATHESIS_NETNS:-}" ]; then
  # Outside the namespace: what needs the network or a build, then the run inside it.
  if ! command -v schemathesis >/dev/null; then
    echo "installing schemathesis with pip" >&2
    python3 -m pip install --quiet schemathesis || die "pip install schemathesis failed"
  fi
  if [ $# -eq 0 ]; then
    cargo build --quiet --bin signpost
    target=$(cargo metadata --format-version 1 --no-deps \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    set -- "$target/debug/signpost"
  fi
  executables "$1"
  [ "$(id -u)" = 0 ] || die "needs root, for a network namespace of its own (unshare --net)"
  command -v unshare >/dev/null || die "needs unshare (util-linux)"
  exec unshare --net -- env SIGNPOST_SCHEMATHESIS_NETNS=1 bash "$here/schemathesis.sh" "${bins[0]}"
fi
ip link set lo up
[ "$(ip -o link show | grep -vc ': lo:')" = 0 ] || die "the namespace has a link other than loopback"

admin_port=${ADMIN_PORT:-18790}
dns_port=${DNS_PORT:-18690}
max_examples=${MAX_EXAMPLES:-100}
workers=${WORKERS:-2}

bin=$1

work=$(mktemp -d)
pids_cleanup() { rm -rf "$work"; }
trap 'cleanup; pids_cleanup' EXIT

# With an admin token, as the document describes a guarded server: schemathesis sends it on
# every request and also checks that a request without it, or with a wrong one, is refused.
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
port_free "$dns_port" DNS_PORT
SIGNPOST_ADMIN_TOKEN=$token start_signpost "$work/signpost.log" "$admin_port" \
  "$bin" serve --store memory --dns-listen "127.0.0.1:$dns_port"

url=http://127.0.0.1:$admin_port
echo "schemathesis $(schemathesis --version | awk '{print $NF}') against $bin ($url)" >&2
status=0
schemathesis run "$url/v1/openapi.json" \
  --url "$url" \
  --checks all \
  --header "Authorization: Bearer $token" \
  --phases examples,coverage,fuzzing,stateful \
  --exclude-path /v1/events \
  --max-examples "$max_examples" \
  --workers "$workers" \
  --request-timeout 10 \
  ${SEED:+--seed "$SEED"} \
  --report junit --report-dir "$work/report" \
  || status=$?

if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "signpost exited during the run; the end of its log:" >&2
  tail -n 40 "$work/signpost.log" >&2
  exit 1
fi
if grep -q 'panicked' "$work/signpost.log"; then
  echo "signpost logged a panic:" >&2
  grep -A5 'panicked' "$work/signpost.log" >&2
  exit 1
fi
exit "$status"
