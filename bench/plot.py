#!/usr/bin/env python3
"""Turns Google Benchmark JSON (bench/run.sh) into an SVG of throughput
against threads for the bucket, the sliding window, the account and their
mutex baselines. Throughput = threads / real time per operation."""
import json
import sys

data = json.load(open(sys.argv[1]))
out = sys.argv[2]
series = [
    ("BM_token_bucket_allow_supplied", "token bucket (lock-free)", "#1f77b4"),
    ("BM_sliding_window_allow_supplied", "sliding window (lock-free)", "#2ca02c"),
    ("BM_account_admit_release_supplied", "account, admit + settle", "#9467bd"),
    ("BM_baseline_mutex_bucket_allow", "token bucket under std::mutex", "#d62728"),
    ("BM_baseline_mutex_account", "account under std::mutex", "#e377c2"),
    ("BM_baseline_cas_one_word", "one-word CAS (baseline)", "#7f7f7f"),
]
points = {}
for b in data["benchmarks"]:
    if b.get("aggregate_name") != "median":
        continue
    name = b["run_name"].split("/")[0]
    threads = int(b["run_name"].split("threads:")[1]) if "threads:" in b["run_name"] else 1
    points.setdefault(name, {})[threads] = threads / b["real_time"] * 1e3  # M ops/s
threads = sorted({t for s in points.values() for t in s})
ymax = max(v for n, _, _ in series for v in points.get(n, {}).values()) * 1.1
W, H, L, T, B = 760, 420, 70, 40, 60
pw, ph = W - L - 260, H - T - B
def x(t):
    return L + (threads.index(t) + 0.5) * pw / len(threads)
def y(v):
    return T + ph - v / ymax * ph
svg = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' font-family='sans-serif'>",
       "<rect width='100%' height='100%' fill='white'/>",
       f"<text x='{L}' y='24' font-size='14'>throughput (million operations per second) vs threads</text>",
       f"<rect x='{L}' y='{T}' width='{pw}' height='{ph}' fill='none' stroke='#999'/>"]
for k in range(5):
    v = ymax * k / 4
    svg.append(f"<text x='{L - 6}' y='{y(v) + 4:.1f}' font-size='10' text-anchor='end'>{v:.0f}</text>")
for t in threads:
    svg.append(f"<text x='{x(t):.1f}' y='{T + ph + 16}' font-size='11' text-anchor='middle'>{t} thread{'s' if t > 1 else ''}</text>")
for i, (name, label, color) in enumerate(series):
    pts = points.get(name, {})
    coords = " ".join(f"{x(t):.1f},{y(pts[t]):.1f}" for t in threads if t in pts)
    svg.append(f"<polyline fill='none' stroke='{color}' stroke-width='2' points='{coords}'/>")
    for t in threads:
        if t in pts:
            svg.append(f"<circle cx='{x(t):.1f}' cy='{y(pts[t]):.1f}' r='3' fill='{color}'/>")
    ly = T + 14 + i * 18
    svg.append(f"<line x1='{L + pw + 16}' x2='{L + pw + 36}' y1='{ly - 4}' y2='{ly - 4}' stroke='{color}' stroke-width='2'/>")
    svg.append(f"<text x='{L + pw + 42}' y='{ly}' font-size='11'>{label}</text>")
ctx = data["context"]
svg.append(f"<text x='{L}' y='{H - 16}' font-size='10' fill='#555'>{ctx['num_cpus']} CPUs @ {ctx['mhz_per_cpu']} MHz; "
           f"medians of repeated runs; supplied time</text>")
svg.append("</svg>")
open(out, "w").write("\n".join(svg) + "\n")
print(f"wrote {out}")
