#!/usr/bin/env python3
"""Propagation latency between two nodes of a cluster: COUNT changes through node A (each a
registration of a new name, then its deregistration), one at a time, while node B's /v1/events
is read; for each, the time from sending the request to A until B's event for it arrived, and
from A's answer until then. Prints p50/p99/max of both, in ms.
Usage: propagation.py A_HOST:PORT B_HOST:PORT [--count 500]"""
import argparse
import http.client
import json
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("a")
ap.add_argument("b")
ap.add_argument("--count", type=int, default=500)
args = ap.parse_args()

seen = {}
lock = threading.Condition()


def follow():
    host, port = args.b.split(":")
    conn = http.client.HTTPConnection(host, int(port))
    conn.request("GET", "/v1/events")
    response = conn.getresponse()
    while True:
        line = response.readline()
        if not line:
            return
        if line.startswith(b"data:"):
            event = json.loads(line[5:])
            info = event.get("data", {}).get("service_info", {})
            key = (event.get("type"), info.get("name"))
            with lock:
                seen[key] = time.perf_counter()
                lock.notify_all()


threading.Thread(target=follow, daemon=True).start()
time.sleep(0.5)
host, port = args.a.split(":")
conn = http.client.HTTPConnection(host, int(port))
from_send, from_ack = [], []
run = "%x" % int(time.time())


def change(method, path, body, key):
    sent = time.perf_counter()
    conn.request(method, path, body, {"content-type": "application/json"})
    response = conn.getresponse()
    reply = response.read()
    acked = time.perf_counter()
    with lock:
        if not lock.wait_for(lambda: key in seen, timeout=5):
            raise SystemExit("no event on B for %s within 5 s" % (key,))
        arrived = seen[key]
    from_send.append(arrived - sent)
    from_ack.append(max(0.0, arrived - acked))
    return reply


for i in range(args.count):
    name = "p%s-%d" % (run, i)
    body = json.dumps({"name": name, "type": "propagation", "host": "10.9.0.1", "port": 80, "ttl": 60})
    reply = json.loads(change("POST", "/v1/services", body, ("register", name)))
    change("DELETE", "/v1/services/" + reply["id"], None, ("deregister", name))


def pct(values, p):
    values = sorted(values)
    return 1000 * values[min(len(values) - 1, int(len(values) * p / 100))]


for label, values in (("request sent to A -> event on B", from_send), ("A answered -> event on B", from_ack)):
    print("%s: p50 %.2f ms  p99 %.2f ms  max %.2f ms  (%d changes)"
          % (label, pct(values, 50), pct(values, 99), 1000 * max(values), len(values)))
