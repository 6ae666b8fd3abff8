#!/usr/bin/env bash
# Builds the benchmarks in Release, runs them (repeated; median of each) and
# prints every case as a ratio to its baseline from the same run.
#   bash bench/run.sh [extra Google Benchmark flags]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build/bench}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTOLLGATE_BUILD_BENCHMARKS=ON \
  -DTOLLGATE_BUILD_TESTS=OFF -DTOLLGATE_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$BUILD" --target tollgate_bench >/dev/null
"$BUILD/bench/tollgate_bench" --benchmark_repetitions="${REPS:-5}" --benchmark_report_aggregates_only=true \
  --benchmark_min_time="${MIN_TIME:-0.2}" --benchmark_out="$BUILD/bench.json" --benchmark_out_format=json "$@" >/dev/null
python3 bench/ratios.py "$BUILD/bench.json"
python3 bench/plot.py "$BUILD/bench.json" "${PLOT:-$BUILD/contention.svg}"
