#!/usr/bin/env bash
# The command line's tour: register, list, discover, heartbeat, watch, and
# run, which keeps a program you cannot change registered while it lives.
# Only the signpost binary (and python3 as that program, curl to fetch).
#
# Start a server first in another terminal:  cargo run --release
# Then:  SIGNPOST=target/release/signpost bash examples/cli.sh
# (SIGNPOST_ADDR points at another admin API; SIGNPOST_ADMIN_TOKEN if set.)
set -euo pipefail
SIGNPOST=${SIGNPOST:-signpost}
PORT=${PORT:-8901}
sp() { "$SIGNPOST" "$@"; }
step() { printf '\n== %s\n' "$*"; }

step "register two instances of type web; register prints the id"
WEB1=$(sp register --type web --name web-1 --host 10.0.0.5 --port 8080 --tag api --meta version=1.0.0 --ttl 60)
WEB2=$(sp register --type web --name web-2 --host 10.0.0.6 --port 8080 --ttl 60)
echo "web-1 is $WEB1"
sp list --type web

step "discover: host:port of one serving instance, for scripts"
echo "curl http://$(sp discover web --tag api)/ would reach web-1"

step "report web-1 critical: still listed, but no longer discovered or in DNS"
sp heartbeat "$WEB1" --status critical --output "draining"
sp list --type web --health critical
echo "discover web now gives $(sp discover web)"

step "refusals exit 1 with the server's message; an unreachable server exits 3"
sp register --type web --name bad_name --host 10.0.0.7 --port 80 || echo "(exit $?)"
sp list --addr http://127.0.0.1:1 || echo "(exit $?)"

step "run: python3's http.server, registered for exactly as long as it lives"
EVENTS=$(mktemp)
# Background the binary itself, not the sp function (a subshell): the
# signals below must reach signpost.
"$SIGNPOST" watch --type files >"$EVENTS" &
WATCH=$!
DIR=$(mktemp -d)
echo "hello from an unmodified program" >"$DIR/index.html"
trap 'kill $WATCH 2>/dev/null; rm -rf "$DIR" "$EVENTS"' EXIT
"$SIGNPOST" run --type files --port "$PORT" --ttl 5 --wait-port --check-http / -- \
  python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$DIR" 2>/dev/null &
RUN=$!
for _ in $(seq 1 50); do sp discover files >/dev/null 2>&1 && break; sleep 0.2; done
curl -s "http://$(sp discover files)/"
sp list --type files
kill -TERM "$RUN"
wait "$RUN" || echo "run exited $? (143: http.server ended by the SIGTERM passed on to it)"
sp list --type files

step "what watch --type files printed meanwhile"
sleep 0.5
cat "$EVENTS"

step "clean up"
sp deregister "$WEB1"
sp deregister "$WEB2"
sp list
