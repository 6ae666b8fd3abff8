#!/usr/bin/env python3
"""Builds single_include/tollgate.hpp from include/tollgate/.

Every `#include <tollgate/...>` is replaced by the header's text, once; the
include guards stay, so the result behaves like the modular headers. With
--check, regenerates in memory and fails if the checked-in file differs;
with --out PATH, writes PATH instead (a trial build, leaving the checked-in
file alone).
"""
import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
INCLUDE = ROOT / "include"
OUT = ROOT / "single_include" / "tollgate.hpp"
INC_RE = re.compile(r'^\s*#\s*include\s*<(tollgate/[^>]+)>\s*$')
# Optional modules: included by name, never by the umbrella header, so they
# are not in the single header either (a user of the single header who wants
# one adds include/ to the path for it).
OPTIONAL = ("tollgate/redis/",)

BANNER = """\
// tollgate — rate limits and budgets for LLM APIs. MIT licence.
//
// GENERATED FILE: do not edit. Built by tools/amalgamate.py from include/;
// edit the headers there and regenerate.
"""


def expand(rel, seen, out):
    if rel in seen:
        return
    seen.add(rel)
    path = INCLUDE / rel
    if not path.is_file():
        sys.exit(f"amalgamate: {rel} not found under include/")
    for line in path.read_text(encoding="utf-8").splitlines():
        m = INC_RE.match(line)
        if m and not (INCLUDE / m.group(1)).is_file():
            out.append(line)  # a user-provided header (the tweak header): stays an include
        elif m:
            target = m.group(1)
            if target in seen:
                out.append(f"// #include <{target}>  (already above)")
            else:
                out.append(f"// #include <{target}>  (inlined below)")
                expand(target, seen, out)
        else:
            out.append(line)


def build():
    out = [BANNER.rstrip("\n")]
    expand("tollgate/tollgate.hpp", set(), out)
    # Headers that the umbrella does not reach are an error: the single header must be whole.
    seen = set()
    expand("tollgate/tollgate.hpp", seen, [])
    every = {p.relative_to(INCLUDE).as_posix() for p in (INCLUDE / "tollgate").rglob("*.hpp")}
    missing = sorted(p for p in every - seen if not p.startswith(OPTIONAL))
    if missing:
        sys.exit("amalgamate: not reachable from tollgate.hpp: " + ", ".join(missing))
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="fail if the checked-in file is stale")
    ap.add_argument("--out", type=pathlib.Path, help="write here instead of single_include/tollgate.hpp")
    args = ap.parse_args()
    text = build()
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.is_file() else ""
        if current != text:
            print("single_include/tollgate.hpp is stale: run python3 tools/amalgamate.py", file=sys.stderr)
            return 1
        print("single_include/tollgate.hpp is up to date")
        return 0
    out = args.out.resolve() if args.out else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
