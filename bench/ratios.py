#!/usr/bin/env python3
"""Reads Google Benchmark JSON (with repetitions) and prints ratios of each
case to its same-run baseline, using the median of the repetitions."""
import json
import sys

data = json.load(open(sys.argv[1]))
med = {}
for b in data["benchmarks"]:
    if b.get("aggregate_name") != "median":
        continue
    name = b["run_name"]  # e.g. BM_x/real_time/threads:2
    threads = int(name.split("threads:")[1]) if "threads:" in name else 1
    name = name.split("/")[0]
    med[(name, threads)] = (b["real_time"], b["cpu_time"])

ctx = data["context"]
m = ctx.get("machine", {})  # written by bench/keep_run.py
print(f"machine: {m.get('cpu', 'unknown CPU')}, {m.get('cores', ctx.get('num_cpus', '?'))} cores "
      f"({m.get('cores_usable', '?')} usable) @ {ctx.get('mhz_per_cpu', '?')} MHz, "
      f"clock source {m.get('clocksource', 'unknown')}")
load = ", ".join(f"{x:.2f}" for x in ctx.get("load_avg", [])) or "?"
print(f"run: {ctx.get('date', '?')}, benchmark library built {ctx.get('library_build_type', '?')}, "
      f"load average {load} (a busy machine makes the 2-thread figures unreliable)")
print()
print("| case | threads | real ns/op | cpu ns/op |")
print("|---|---|---|---|")
for (name, t), (r, c) in sorted(med.items()):
    print(f"| {name} | {t} | {r:.2f} | {c:.2f} |")

def ratio(num, den, t, add=None, col=0):
    if (num, t) not in med or (den, t) not in med:
        return None
    d = med[(den, t)][col] + (med[(add, t)][col] if add else 0.0)
    return med[(num, t)][col] / d

rows = [
    ("bucket allow (supplied) / one-word CAS", "BM_token_bucket_allow_supplied", "BM_baseline_cas_one_word", None,
     "<= 1.1 at 1 thread, <= 1.3 at 2"),
    ("bucket allow (steady) / (CAS + steady clock)", "BM_token_bucket_allow_steady", "BM_baseline_cas_one_word",
     "BM_baseline_steady_clock_now", "<= 1.2"),
    ("bucket allow (coarse) / (CAS + coarse clock)", "BM_token_bucket_allow_coarse", "BM_baseline_cas_one_word",
     "BM_baseline_coarse_clock_now", "(for information)"),
    ("bucket allow (supplied) / bare GCRA allow (supplied)", "BM_token_bucket_allow_supplied",
     "BM_baseline_gcra_allow_supplied", None, "(for information)"),
    ("bucket allow (steady) / bare GCRA allow (steady)", "BM_token_bucket_allow_steady",
     "BM_baseline_gcra_allow_steady", None, "<= 1.15 at 2 threads"),
    ("bucket allow (coarse) / bare GCRA allow (coarse)", "BM_token_bucket_allow_coarse",
     "BM_baseline_gcra_allow_coarse", None, "<= 1.15 at 2 threads"),
    ("mutex allow / bucket allow (throughput gain)", "BM_baseline_mutex_bucket_allow",
     "BM_token_bucket_allow_supplied", None, ">= 1.5 at 2 threads"),
    ("mutex deny / bucket deny (throughput gain)", "BM_baseline_mutex_bucket_deny", "BM_token_bucket_deny_supplied",
     None, ">= 3 at 2 threads"),
    ("window allow / bucket allow", "BM_sliding_window_allow_supplied", "BM_token_bucket_allow_supplied", None,
     "<= 1.5"),
    ("window deny / bucket deny", "BM_sliding_window_deny_supplied", "BM_token_bucket_deny_supplied", None,
     "(for information)"),
    ("cost of a call / three integer multiply-adds", "BM_cost_compute", "BM_baseline_int_muladd", None,
     "a few integer operations"),
    ("account admit+settle / sum of its parts", "BM_account_admit_release_supplied", "BM_account_parts", None,
     "<= 1.5 at 1 thread"),
    ("account admit+settle / one-word CAS", "BM_account_admit_release_supplied", "BM_baseline_cas_one_word", None,
     "<= 12 at 1 thread"),
    ("account without slot table / sum of its parts", "BM_account_admit_release_no_reclaim", "BM_account_parts",
     None, "(what reclaiming costs)"),
    ("mutex account / account (throughput gain)", "BM_baseline_mutex_account", "BM_account_admit_release_supplied",
     None, ">= 1.2 at 2 threads"),
    ("mutex account / 4 RMWs on three lines (throughput gain)", "BM_baseline_mutex_account",
     "BM_account_floor_three_lines", None, "(the layout's floor)"),
    ("mutex account / 4 RMWs on one line (throughput gain)", "BM_baseline_mutex_account",
     "BM_account_floor_one_line", None, "(the best layout's floor)"),
    ("window allow / packed one-word window allow", "BM_sliding_window_allow_supplied",
     "BM_window_alt_packed_word_allow", None, "(the window's trade-off)"),
    ("16-byte CAS / one-word CAS", "BM_window_alt_cas16_increment", "BM_baseline_cas_one_word", None,
     "(the window's trade-off)"),
    ("concurrency acquire+release / one-word CAS", "BM_concurrency_acquire_release", "BM_baseline_cas_one_word",
     None, "(for information)"),
    ("keyed allow / bucket allow", "BM_keyed_allow_supplied", "BM_token_bucket_allow_supplied", None,
     "<= 3 at 1 thread"),
    ("mutex map / keyed allow (throughput gain)", "BM_baseline_mutex_map_allow", "BM_keyed_allow_supplied", None,
     ">= 2 at 2 threads"),
]
print()
print("| ratio of medians | 1 thread, real | 1 thread, cpu | 2 threads, real | 2 threads, cpu | target |")
print("|---|---|---|---|---|---|")
for label, num, den, add, target in rows:
    vals = []
    for t in (1, 2):
        for col in (0, 1):
            r = ratio(num, den, t, add, col)
            vals.append("-" if r is None else f"{r:.2f}")
    print(f"| {label} | {' | '.join(vals)} | {target} |")
