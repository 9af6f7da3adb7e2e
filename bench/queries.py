#!/usr/bin/env python3
"""Write a dnsperf query file for the benchmark data set: 45 % `typeNNN A`, 45 % `typeNNN SRV`,
5 % `instMM.typeNNN A`, 5 % names that don't exist. Deterministic (seeded).
Usage: queries.py OUT [--types 100] [--instances 10] [--count 100000] [--zone svc.local]"""
import argparse
import random

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--types", type=int, default=100)
ap.add_argument("--instances", type=int, default=10)
ap.add_argument("--count", type=int, default=100000)
ap.add_argument("--zone", default="svc.local")
a = ap.parse_args()
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
