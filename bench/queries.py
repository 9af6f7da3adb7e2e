#!/usr/bin/env python3
"""Write a dnsperf query file for the benchmark data set: 45 % `typeNNN A`, 45 % `typeNNN SRV`,
5 % `instMM.typeNNN A`, 5 % names that don't exist. Deterministic (seeded).
With --zonefile PATH, also writes the same data set as an RFC 1035 master file (for Knot):
per type, an A and an SRV (with in-zone target) per instance at `typeNNN`, the SRVs again at
`_typeNNN._tcp`, and an A per instance at `instMM.typeNNN`.
Usage: queries.py OUT [--types 100] [--instances 10] [--count 100000] [--zone svc.local]
                      [--zonefile PATH]"""
import argparse
import random

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--types", type=int, default=100)
ap.add_argument("--instances", type=int, default=10)
ap.add_argument("--count", type=int, default=100000)
ap.add_argument("--zone", default="svc.local")
ap.add_argument("--zonefile")
a = ap.parse_args()
if a.zonefile:
    with open(a.zonefile, "w") as z:
        z.write("$ORIGIN %s.\n$TTL 60\n" % a.zone)
        z.write("@ 3600 IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ 3600 IN NS ns1\n")
        z.write("ns1 3600 IN A 127.0.0.1\n")
        for n in range(a.types):
            t = "type%03d" % n
            for m in range(a.instances):
                ip = "10.%d.%d.%d" % (n // 256, n % 256, m)
                z.write("%s IN A %s\n" % (t, ip))
                z.write("%s IN SRV 1 1 %d inst%02d.%s\n" % (t, 8000 + m, m, t))
                z.write("_%s._tcp IN SRV 1 1 %d inst%02d.%s\n" % (t, 8000 + m, m, t))
                z.write("inst%02d.%s IN A %s\n" % (m, t, ip))
rng = random.Random(20261123)
with open(a.out, "w") as out:
    for _ in range(a.count):
        t = "type%03d" % rng.randrange(a.types)
        roll = rng.randrange(100)
        if roll < 45:
            out.write("%s.%s A\n" % (t, a.zone))
        elif roll < 90:
            out.write("%s.%s SRV\n" % (t, a.zone))
        elif roll < 95:
            out.write("inst%02d.%s.%s A\n" % (rng.randrange(a.instances), t, a.zone))
        else:
            out.write("nosuch%05d.%s A\n" % (rng.randrange(100000), a.zone))
