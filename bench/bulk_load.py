#!/usr/bin/env python3
"""Register many instances fast through the admin API: PROCS processes, each with one
keep-alive HTTP/1.1 connection, instances instMM of types PREFIXNNNNNN (10 per type).
Usage: bulk_load.py ADMIN_HOST:PORT COUNT [--prefix bulk] [--procs 8]"""
import argparse
import http.client
import json
import multiprocessing as mp
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("admin")
ap.add_argument("count", type=int)
ap.add_argument("--prefix", default="bulk")
ap.add_argument("--procs", type=int, default=8)
a = ap.parse_args()
host, port = a.admin.split(":")


def work(part):
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    failed = 0
    for i in range(part, a.count, a.procs):
        n, m = divmod(i, 10)
        body = json.dumps({"name": "inst%02d" % m, "type": "%s%06d" % (a.prefix, n),
                           "host": "10.%d.%d.%d" % (n // 65536 % 256, n // 256 % 256, n % 256),
                           "port": 8000 + m, "ttl": 86400})
        conn.request("POST", "/v1/services", body, {"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status not in (200, 201):
            failed += 1
    return failed


started = time.time()
with mp.Pool(a.procs) as pool:
    failed = sum(pool.map(work, range(a.procs)))
elapsed = time.time() - started
print("registered %d in %.1f s (%.0f/s), failed %d" % (a.count, elapsed, a.count / elapsed, failed),
      file=sys.stderr)
sys.exit(1 if failed else 0)
