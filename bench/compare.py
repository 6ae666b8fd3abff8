#!/usr/bin/env python3
"""Compares two kept runs (bench/results/*.json): the median real time of
every case in both, and the second over the first. Each run's machine is
printed first: figures from different machines or clock sources do not compare.
    compare.py OLD.json NEW.json"""
import json
import sys


def load(path):
    with open(path) as f:
        data = json.load(f)
    med = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        name = b["run_name"]
        threads = int(name.split("threads:")[1]) if "threads:" in name else 1
        med[(name.split("/")[0], threads)] = b["real_time"]
    return data.get("context", {}), med


old_ctx, old = load(sys.argv[1])
new_ctx, new = load(sys.argv[2])
for label, path, ctx in (("old", sys.argv[1], old_ctx), ("new", sys.argv[2], new_ctx)):
    m = ctx.get("machine", {})
    print(f"{label}: {path}: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, clock source {m.get('clocksource', '?')}, "
          f"{ctx.get('date', '?')}")
if old_ctx.get("machine") != new_ctx.get("machine"):
    print("note: the two runs were measured on different machines or clock sources")
print()
print("| case | threads | old ns/op | new ns/op | new / old |")
print("|---|---|---|---|---|")
for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    ratio = f"{b / a:.2f}" if a and b else "-"
    fa = f"{a:.2f}" if a is not None else "-"
    fb = f"{b:.2f}" if b is not None else "-"
    print(f"| {key[0]} | {key[1]} | {fa} | {fb} | {ratio} |")
