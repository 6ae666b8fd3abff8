#!/usr/bin/env bash
# Runs tollgate's default test suite on a Debian 12 machine: installs what is
# missing, fetches Catch2 v3 into a private prefix, then builds and runs every
# default variant (g++ C++17, clang C++20 with Catch2 v3, TSan, ASan+UBSan,
# single header, Meson, consumers) through one ctest run, ending with its summary.
#
#   bash tools/run-tests.sh            # build dir: build/ci
#   BUILD_DIR=/tmp/tg bash tools/run-tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-$ROOT/build/ci}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

need_pkgs=()
for p in g++ cmake ninja-build pkg-config python3 catch2 meson clang libclang-rt-14-dev nginx-light libcurl4-openssl-dev redis-server libhiredis-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "== installing: ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # The Redis tests start their own server on a free loopback port; the
  # packaged service is not needed (and would hold port 6379).
  if [[ " ${need_pkgs[*]} " == *" redis-server "* ]]; then
    $SUDO systemctl stop redis-server >/dev/null 2>&1 || $SUDO service redis-server stop >/dev/null 2>&1 || true
  fi
fi
# With CI=true a missing redis-server fails the Redis tests instead of skipping them.
if [ "${CI:-}" = "true" ] && ! command -v redis-server >/dev/null 2>&1; then
  echo "run-tests.sh: CI=true and redis-server is missing" >&2
  exit 1
fi
# The same for hiredis, which the hiredis adapter's tests link (tests/CMakeLists.txt
# also refuses to configure without it when CI=true).
if [ "${CI:-}" = "true" ] && ! dpkg -s libhiredis-dev >/dev/null 2>&1; then
  echo "run-tests.sh: CI=true and libhiredis-dev is missing" >&2
  exit 1
fi

# Catch2 v3 from the backports suite of Debian's archive, unpacked into a private prefix so
# the system's 2.13 stays as it is.
V3_DIR="$BUILD_DIR/deps/catch2-v3"
if [ ! -f "$V3_DIR/usr/lib/cmake/Catch2/Catch2Config.cmake" ]; then
  echo "== fetching Catch2 v3 (backports) into $V3_DIR"
  APT_DIR="$BUILD_DIR/deps/apt"
  mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/parts" "$V3_DIR"
  # The archive is the one this machine already uses for its main suite
  # (tools/apt_main_source.py reads the apt configuration), so the script
  # follows whatever mirror the machine is set up with.
  if ! src=$(python3 "$ROOT/tools/apt_main_source.py"); then
    echo "run-tests.sh: cannot find this machine's apt source for its main suite" >&2
    exit 1
  fi
  APT_URI=${src%%$'\t'*}
  APT_KEY=${src#*$'\t'}
  CODENAME=$(. /etc/os-release && echo "$VERSION_CODENAME")
  {
    echo "Types: deb"
    echo "URIs: $APT_URI"
    echo "Suites: $CODENAME-backports"
    echo "Components: main"
    [ -z "$APT_KEY" ] || echo "Signed-By: $APT_KEY"
  } > "$APT_DIR/parts/backports.sources"
  APT_OPTS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APT_DIR/parts"
            -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache"
            -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
  apt-get "${APT_OPTS[@]}" update -qq
  (cd "$APT_DIR" && apt-get "${APT_OPTS[@]}" download "libcatch2-dev/$CODENAME-backports" >/dev/null)
  dpkg -x "$APT_DIR"/libcatch2-dev_*.deb "$V3_DIR"
fi

echo "== configuring ($BUILD_DIR)"
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER=g++ \
  -DCMAKE_CXX_STANDARD=17 -DTOLLGATE_CATCH2_MAJOR=2 -DTOLLGATE_CI=ON \
  -DTOLLGATE_CATCH2_V3_PREFIX="$V3_DIR/usr" >/dev/null
echo "== building"
cmake --build "$BUILD_DIR" -j "$JOBS"
echo "== testing"
cd "$BUILD_DIR"
# The variants build in parallel with each other; keep the two cores busy.
ctest --output-on-failure --no-tests=error -j 2 --timeout 1800
