#!/usr/bin/env python3
"""Keeps one benchmark run: copies Google Benchmark JSON to OUT with the
context reduced to fields that name no host and no path, plus the machine
(CPU model, cores, clock source) the figures were measured on.
    keep_run.py RAW.json OUT.json"""
import json
import os
import sys

# Only these context fields are kept: Google Benchmark also writes the host
# name and the executable's path, and a future version may add more.
SAFE_CONTEXT = {"date", "num_cpus", "mhz_per_cpu", "cpu_scaling_enabled", "caches", "load_avg",
                "library_build_type", "library_version", "json_schema_version"}


def read(path, default="unknown"):
    try:
        with open(path) as f:
            return f.read().strip() or default
    except OSError:
        return default


def cpu_model():
    for line in read("/proc/cpuinfo", "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model", "Hardware") and value.strip():
            return value.strip()
    return "unknown"


def machine():
    online = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),  # logical CPUs of the machine
        "cores_usable": online,   # of them, the ones this run could use
        "clocksource": read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
    }


def main():
    raw, out = sys.argv[1], sys.argv[2]
    with open(raw) as f:
        data = json.load(f)
    ctx = {k: v for k, v in data.get("context", {}).items() if k in SAFE_CONTEXT}
    ctx["machine"] = machine()
    data["context"] = ctx
    with open(out, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
