#!/usr/bin/env python3
"""Fails when a header under include/tollgate/ is longer than --max lines
(500: one concept per header, readable whole)."""
import argparse
import pathlib
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--root", default=pathlib.Path(__file__).resolve().parent.parent)
ap.add_argument("--max", type=int, default=500)
args = ap.parse_args()
inc = pathlib.Path(args.root) / "include" / "tollgate"
over = []
count = 0
for h in sorted(inc.rglob("*.hpp")):
    count += 1
    n = len(h.read_text(encoding="utf-8").splitlines())
    if n > args.max:
        over.append((h.relative_to(args.root), n))
for path, n in over:
    print(f"{path}: {n} lines, more than {args.max}")
if count == 0:
    print(f"no headers under {inc}")
    sys.exit(1)
print(f"{count} headers, {len(over)} over {args.max} lines")
sys.exit(1 if over else 0)
