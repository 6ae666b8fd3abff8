#!/usr/bin/env bash
# Builds the benchmarks in Release, runs them (repeated; median of each),
# keeps the run as bench/results/YYYY-MM-DDTHHMM.json (UTC; no host name or
# path in it, the machine beside the figures) and prints the machine and every
# case as a ratio to its baseline from the same run.
#   bash bench/run.sh [extra Google Benchmark flags]
# Environment: BUILD_DIR, RESULTS_DIR, REPS (5), MIN_TIME (0.2 s), PLOT.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build/bench}
RESULTS=${RESULTS_DIR:-bench/results}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTOLLGATE_BUILD_BENCHMARKS=ON \
  -DTOLLGATE_BUILD_TESTS=OFF -DTOLLGATE_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$BUILD" --target tollgate_bench >/dev/null
stamp=$(date -u +%Y-%m-%dT%H%M)
mkdir -p "$RESULTS"
kept="$RESULTS/$stamp.json"
n=2
while [ -e "$kept" ]; do  # two runs in one minute: keep both
  kept="$RESULTS/$stamp-$n.json"
  n=$((n + 1))
done
"$BUILD/bench/tollgate_bench" --benchmark_repetitions="${REPS:-5}" --benchmark_report_aggregates_only=true \
  --benchmark_min_time="${MIN_TIME:-0.2}" --benchmark_out="$BUILD/bench.json" --benchmark_out_format=json "$@" >/dev/null
python3 bench/keep_run.py "$BUILD/bench.json" "$kept"
echo "run kept as $kept"
python3 bench/ratios.py "$kept"
python3 bench/plot.py "$kept" "${PLOT:-$BUILD/contention.svg}"
