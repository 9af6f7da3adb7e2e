#!/usr/bin/env bash
# A signpost cluster on one machine: a 3-member etcd and 3 signpost nodes on loopback, a
# registration through one node resolving on the others, a heartbeat through another, and what
# happens when etcd goes away (fail static) and comes back.
#
#   cargo build --release && bash examples/cluster.sh
#
# Needs etcd 3.4+ on PATH (Debian: apt-get install etcd-server), curl, dig and python3.
# Everything runs under a temp dir and is stopped at the end. SIGNPOST=path/to/signpost to
# use another binary.
set -euo pipefail
SIGNPOST=${SIGNPOST:-target/release/signpost}
DIR=$(mktemp -d /tmp/signpost-cluster.XXXXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
step() { printf '\n== %s\n' "$*"; }
command -v etcd >/dev/null || { echo "etcd is not installed (apt-get install etcd-server)"; exit 1; }
[ -x "$SIGNPOST" ] || { echo "$SIGNPOST: build it first (cargo build --release)"; exit 1; }

# etcd members m0..m2: clients on 42379/42381/42383, peers on 42380/42382/42384.
CLUSTER=m0=http://127.0.0.1:42380,m1=http://127.0.0.1:42382,m2=http://127.0.0.1:42384
URLS=http://127.0.0.1:42379,http://127.0.0.1:42381,http://127.0.0.1:42383
ETCD_PIDS=()
start_etcd() {
  local i
  for i in 0 1 2; do
    etcd --name "m$i" --data-dir "$DIR/m$i" \
      --listen-client-urls "http://127.0.0.1:$((42379 + 2 * i))" \
      --advertise-client-urls "http://127.0.0.1:$((42379 + 2 * i))" \
      --listen-peer-urls "http://127.0.0.1:$((42380 + 2 * i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((42380 + 2 * i))" \
      --initial-cluster "$CLUSTER" --initial-cluster-state new \
      --heartbeat-interval 50 --election-timeout 500 >>"$DIR/etcd-m$i.log" 2>&1 &
    ETCD_PIDS+=($!) PIDS+=($!)
  done
  until curl -sf -X POST http://127.0.0.1:42379/v3/kv/put -d '{"key":"eA==","value":"eA=="}' >/dev/null; do
    sleep 0.2
  done
}

step "a 3-member etcd on 127.0.0.1:42379,42381,42383"
start_etcd

step "three signpost nodes on it: admin 127.0.0.1:18801-18803, DNS 127.0.0.1:18811-18813"
for i in 1 2 3; do
  printf '[store]\nurl = "etcd:%s"\n[store.etcd]\nnode = "node-%s"\n' "$URLS" "$i" >"$DIR/node-$i.toml"
  RUST_LOG=warn "$SIGNPOST" --config "$DIR/node-$i.toml" \
    --admin-listen "127.0.0.1:$((18800 + i))" --dns-listen "127.0.0.1:$((18810 + i))" \
    >"$DIR/node-$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 1 2 3; do
  until curl -sf "http://127.0.0.1:$((18800 + i))/v1/health" >/dev/null; do sleep 0.1; done
done
curl -s http://127.0.0.1:18801/v1/health; echo

step "register web-1 through node 1"
ID=$(curl -sf -X POST http://127.0.0.1:18801/v1/services -H 'content-type: application/json' \
  -d '{"name":"web-1","type":"web","host":"10.0.0.5","port":8080,"ttl":10}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "id $ID"
sleep 0.1

step "resolve it on node 2 and node 3"
dig @127.0.0.1 -p 18812 +short web.svc.local A
dig @127.0.0.1 -p 18813 +short web.svc.local SRV

step "a heartbeat through node 3 renews it on every node; node 1 lists it"
curl -sf -X PUT "http://127.0.0.1:18803/v1/services/$ID/heartbeat" | python3 -m json.tool | grep -E '"(name|last_heartbeat)"'
curl -sf http://127.0.0.1:18801/v1/services | python3 -m json.tool | grep -E '"(name|last_heartbeat)"'

step "stop every etcd member: DNS keeps answering, writes answer 503, health says degraded"
kill -9 "${ETCD_PIDS[@]}"
ETCD_PIDS=()
sleep 2
dig @127.0.0.1 -p 18812 +short web.svc.local A
curl -s -X POST http://127.0.0.1:18802/v1/services -H 'content-type: application/json' \
  -d '{"name":"web-2","type":"web","host":"10.0.0.6","port":8080}' -w ' (HTTP %{http_code})\n'
curl -s http://127.0.0.1:18802/v1/health -w ' (HTTP %{http_code})\n'

step "etcd back: writes work again, and every node lists the same set"
start_etcd
until curl -sf http://127.0.0.1:18802/v1/health >/dev/null; do sleep 0.2; done
curl -sf -X POST http://127.0.0.1:18802/v1/services -H 'content-type: application/json' \
  -d '{"name":"web-2","type":"web","host":"10.0.0.6","port":8080,"ttl":10}' -o /dev/null -w 'registered web-2 (HTTP %{http_code})\n'
sleep 0.1
for i in 1 2 3; do
  echo "node $i: $(curl -sf "http://127.0.0.1:$((18800 + i))/v1/services" |
    python3 -c 'import json,sys; print(sorted(s["name"] for s in json.load(sys.stdin)["services"]))')"
done
