#!/usr/bin/env python3
"""Register the benchmark data set into a running signpost through its admin API:
TYPES types typeNNN x INSTANCES instances instMM, host 10.X.Y.M, port 8000+M.
Usage: load.py ADMIN_URL [--types 100] [--instances 10] [--ttl 86400] [--clients 16] [--steer]
--steer: weights 1..INSTANCES and the last two instances of each type at priority 10 (backups),
so answers are weighted and failover is decided (the cost of steering)."""
import argparse
import concurrent.futures as cf
import json
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("admin")
ap.add_argument("--types", type=int, default=100)
ap.add_argument("--instances", type=int, default=10)
ap.add_argument("--ttl", type=int, default=86400)
ap.add_argument("--clients", type=int, default=16)
ap.add_argument("--steer", action="store_true")
a = ap.parse_args()


def register(nm):
    n, m = nm
    body = {"name": "inst%02d" % m, "type": "type%03d" % n,
            "host": "10.%d.%d.%d" % (n // 256, n % 256, m), "port": 8000 + m,
            "ttl": a.ttl, "priority": 1, "weight": 1}
    if a.steer:
        body["weight"] = m + 1
        body["priority"] = 10 if m >= a.instances - 2 else 0
    request = urllib.request.Request(a.admin.rstrip("/") + "/v1/services", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


with cf.ThreadPoolExecutor(a.clients) as pool:
    codes = list(pool.map(register, [(n, m) for n in range(a.types) for m in range(a.instances)]))
failed = [c for c in codes if c not in (200, 201)]
print("registered %d, failed %d" % (len(codes) - len(failed), len(failed)))
raise SystemExit(1 if failed else 0)
