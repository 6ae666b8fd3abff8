#!/usr/bin/env bash
# Instructions per operation of the hot paths, counted by callgrind (repeatable
# on a noisy machine, unlike times). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BUILD_DIR:-build/callgrind}
mkdir -p "$out"
g++ -std=c++17 -O2 -DNDEBUG -Iinclude bench/hot_paths.cpp -o "$out/hot_paths"
n=20000
count() {  # instructions executed between the marks for $1 run $2 times
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/cg.$1.$2" "$out/hot_paths" "$1" "$2" >/dev/null 2>"$out/log"
  callgrind_annotate "$out/cg.$1.$2" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,
}
echo "| operation | instructions per call |"
echo "|---|---|"
base1=$(count empty $n); base2=$(count empty $((2 * n)))
loop=$(( (base2 - base1) / n ))
for c in ${CASES:-bucket_allow bucket_deny window_allow window_deny concurrency account cost classify retry_after keyed_allow}; do
  a=$(count "$c" $n); b=$(count "$c" $((2 * n)))
  # The difference of two run lengths cancels start-up; the empty loop is subtracted.
  echo "| $c | $(( (b - a) / n - loop )) |"
done
