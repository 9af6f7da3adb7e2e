#!/usr/bin/env bash
# A five-minute tour of signpost with curl and dig.
# Start the server first in another terminal:  cargo run --release
# Then:  bash examples/walkthrough.sh
set -euo pipefail
ADMIN=${ADMIN:-http://127.0.0.1:8700}
DNS_HOST=${DNS_HOST:-127.0.0.1}
DNS_PORT=${DNS_PORT:-8600}
dig_() { dig @"$DNS_HOST" -p "$DNS_PORT" +norec "$@"; }
step() { printf '\n== %s\n' "$*"; }

EVENTS=$(mktemp)
curl -sN "$ADMIN/v1/events?type=web" >"$EVENTS" &
EVENTS_PID=$!
trap 'kill $EVENTS_PID 2>/dev/null; rm -f "$EVENTS"' EXIT

step "register two instances of type web (ttl 10 s)"
ID1=$(curl -sf -X POST "$ADMIN/v1/services" -H 'content-type: application/json' \
  -d '{"name":"web-1","type":"web","host":"10.0.0.5","port":8080,"tags":["api"],"metadata":{"version":"1.0.0"},"ttl":10}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -sf -X POST "$ADMIN/v1/services" -H 'content-type: application/json' \
  -d '{"name":"web-2","type":"web","host":"10.0.0.6","port":8080,"ttl":10}' >/dev/null
echo "web-1 has id $ID1"

step "resolve: SRV with glue, A (shuffled on every answer), TXT from metadata"
dig_ web.svc.local SRV | sed -n '/ANSWER SECTION/,/^$/p;/ADDITIONAL SECTION/,/^$/p'
dig_ +short web.svc.local A
dig_ +short web-1.web.svc.local TXT

step "DNS-SD browsing"
dig_ +short _services._dns-sd._udp.svc.local PTR
dig_ +short _web._tcp.svc.local PTR

step "only instances tagged api"
dig_ +short _api._sub.web.svc.local A

step "mark web-1 critical: it leaves DNS at once, but stays registered"
curl -sf -X PUT "$ADMIN/v1/services/$ID1/heartbeat" -H 'content-type: application/json' -d '{"status":"critical"}' >/dev/null
dig_ +short web.svc.local A
curl -sf "$ADMIN/v1/services?type=web" | python3 -m json.tool | grep -E '"(name|health)"'

step "a passing heartbeat brings it back"
curl -sf -X PUT "$ADMIN/v1/services/$ID1/heartbeat" >/dev/null
dig_ +short web.svc.local A

step "active checks instead of heartbeats (1 s interval): a tcp check on signpost's own admin port passes, one on a closed port fails"
ADMIN_HOSTPORT=${ADMIN#http://}
curl -sf -X POST "$ADMIN/v1/services" -H 'content-type: application/json' \
  -d '{"name":"api-1","type":"api","host":"10.0.0.7","port":80,"ttl":5,"check":{"tcp":"'"$ADMIN_HOSTPORT"'","interval":1,"timeout":0.5}}' >/dev/null
curl -sf -X POST "$ADMIN/v1/services" -H 'content-type: application/json' \
  -d '{"name":"api-2","type":"api","host":"10.0.0.8","port":80,"ttl":5,"check":{"tcp":"127.0.0.1:9","interval":1,"timeout":0.5}}' >/dev/null
sleep 2.5
dig_ +short api.svc.local A
curl -sf "$ADMIN/v1/services?type=api" | python3 -c 'import json,sys
for s in json.load(sys.stdin)["services"]: print(s["name"], s["health"], "-", s.get("check_output"))'

step "stop heartbeating and watch both expire (ttl 10 s)"
for _ in $(seq 1 12); do
  printf '%s  ' "$(date +%T)"; dig_ +short web.svc.local A | tr '\n' ' '; echo
  sleep 1
done
dig_ web.svc.local A | grep -E 'status|SOA'
echo "heartbeat after expiry: HTTP $(curl -s -o /dev/null -w '%{http_code}' -X PUT "$ADMIN/v1/services/$ID1/heartbeat")"

step "what GET /v1/events?type=web streamed meanwhile"
kill $EVENTS_PID 2>/dev/null || true
python3 -c 'import json,sys
for line in open(sys.argv[1]):
    if line.startswith("data:"):
        e = json.loads(line[5:]); print(e["type"], e["data"].get("service_info", {}).get("name", ""), e["data"].get("service_info", {}).get("health", ""))' "$EVENTS"
