#!/usr/bin/env bash
# Builds and runs one consumer of tollgate. Usage:
#   check.sh ROUTE SOURCE_DIR WORK_DIR CXX STD
# ROUTE: find_package | too_new | subdirectory | fetchcontent | pkgconfig |
#        single_header | meson_subproject | meson_pkgconfig | no_exceptions
set -euo pipefail
route=$1 src=$2 work=$3 cxx=$4 std=$5
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work"
mkdir -p "$work"
expect='tollgate [0-9]+\.[0-9]+\.[0-9]+: admitted 3 of 5, cost \$3\.90'

install_prefix() {
  # Install tollgate (no tests) into $work/prefix.
  cmake -S "$src" -B "$work/lib" -DCMAKE_INSTALL_PREFIX="$work/prefix" -DTOLLGATE_BUILD_TESTS=OFF \
    -DTOLLGATE_BUILD_EXAMPLES=OFF >/dev/null
  cmake --install "$work/lib" >/dev/null
}

run_app() {
  local out
  out=$("$1")
  echo "$out"
  [[ $out =~ $expect ]] || { echo "unexpected output from $1" >&2; exit 1; }
}

cmake_consumer() {
  local dir=$1; shift
  # Consumers live next to app/; copy both so relative paths hold.
  cp -r "$here/app" "$work/app"
  cp -r "$here/$dir" "$work/$dir"
  cmake -S "$work/$dir" -B "$work/build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_STANDARD="$std" \
    -DCMAKE_CXX_FLAGS="-Wall -Wextra -Werror" "$@" >/dev/null
  cmake --build "$work/build" >/dev/null
  run_app "$work/build/app"
}

case $route in
  find_package)
    install_prefix
    # The installed layout vcpkg's fixup and other tools rely on.
    test -f "$work/prefix/share/cmake/tollgate/tollgateConfig.cmake"
    test -f "$work/prefix/share/cmake/tollgate/tollgateConfigVersion.cmake"
    test -f "$work/prefix/share/pkgconfig/tollgate.pc"
    test -f "$work/prefix/include/tollgate/tollgate.hpp"
    cmake_consumer cmake_find_package -DCMAKE_PREFIX_PATH="$work/prefix"
    ;;
  too_new)
    install_prefix
    cp -r "$here/cmake_find_package_too_new" "$work/c"
    if cmake -S "$work/c" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" >"$work/log" 2>&1; then
      echo "find_package(tollgate 99) was accepted" >&2; exit 1
    fi
    grep -q "tollgate" "$work/log"
    echo "refused as expected: $(grep -m1 -i 'version' "$work/log" | sed 's/^ *//')"
    ;;
  subdirectory)
    cmake_consumer cmake_subdirectory -DTOLLGATE_SOURCE="$src"
    ;;
  fetchcontent)
    cmake_consumer cmake_fetchcontent -DTOLLGATE_SOURCE="$src"
    ;;
  pkgconfig)
    install_prefix
    flags=$(PKG_CONFIG_PATH="$work/prefix/share/pkgconfig" pkg-config --cflags tollgate)
    # shellcheck disable=SC2086
    "$cxx" -std=c++"$std" -Wall -Wextra -Werror $flags "$here/app/main.cpp" "$here/app/odr_other.cpp" -o "$work/app"
    run_app "$work/app"
    ;;
  single_header)
    "$cxx" -std=c++"$std" -Wall -Wextra -Werror -DTOLLGATE_CONSUMER_SINGLE_HEADER -I "$src/single_include" \
      "$here/app/main.cpp" "$here/app/odr_other.cpp" -o "$work/app"
    run_app "$work/app"
    ;;
  no_exceptions)
    "$cxx" -std=c++"$std" -fno-exceptions -Wall -Wextra -Werror -I "$src/include" "$here/app/main.cpp" -o "$work/app"
    run_app "$work/app"
    ;;
  meson_subproject)
    cp -r "$here/app" "$work/app"
    cp -r "$here/meson_subproject" "$work/c"
    mkdir -p "$work/c/subprojects/tollgate"
    cp -r "$src/include" "$src/meson.build" "$src/meson_options.txt" "$work/c/subprojects/tollgate/"
    cat > "$work/c/subprojects/tollgate.wrap" <<'WRAP'
[wrap-file]
directory = tollgate

[provide]
dependency_names = tollgate
WRAP
    CXX="$cxx" meson setup "$work/build" "$work/c" >/dev/null
    meson compile -C "$work/build" >/dev/null
    run_app "$work/build/app"
    ;;
  meson_pkgconfig)
    install_prefix
    cp -r "$here/app" "$work/app"
    cp -r "$here/meson_pkgconfig" "$work/c"
    CXX="$cxx" PKG_CONFIG_PATH="$work/prefix/share/pkgconfig" meson setup "$work/build" "$work/c" >/dev/null
    meson compile -C "$work/build" >/dev/null
    run_app "$work/build/app"
    ;;
  *)
    echo "unknown route $route" >&2; exit 2 ;;
esac
