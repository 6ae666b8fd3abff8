# The other build variants of the default suite, registered as tests of this
# build so one ctest run covers them all and ends with one summary. Each is a
# complete configure + build + ctest of the project (ctest --build-and-test).
set(TOLLGATE_CATCH2_V3_PREFIX "" CACHE PATH "Prefix holding Catch2 v3 (lib/cmake/Catch2), for the v3 variant")

find_program(TOLLGATE_CLANGXX clang++)
find_program(TOLLGATE_GXX g++)
find_program(TOLLGATE_MESON meson)
find_package(Python3 COMPONENTS Interpreter)

function(tollgate_variant name)
  cmake_parse_arguments(V "" "" "OPTIONS" ${ARGN})
  add_test(NAME variant.${name}
           COMMAND ${CMAKE_CTEST_COMMAND}
                   --build-and-test "${PROJECT_SOURCE_DIR}" "${CMAKE_BINARY_DIR}/variants/${name}"
                   --build-generator "${CMAKE_GENERATOR}"
                   --build-makeprogram "${CMAKE_MAKE_PROGRAM}"
                   --build-noclean
                   --build-options -DTOLLGATE_BUILD_EXAMPLES=OFF -DTOLLGATE_CI=OFF -DTOLLGATE_BUILD_CHECKER=OFF
                                   -DTOLLGATE_BUILD_REDIS_TESTS=OFF
                                   -DTOLLGATE_BUILD_MULTIPROCESS=OFF -DTOLLGATE_TEST_DOCS=OFF ${V_OPTIONS}
                   --test-command ${CMAKE_CTEST_COMMAND} --output-on-failure --no-tests=error -j 2)
  # Its tag groups run two at once: the last variant to finish is the run's tail.
  set_tests_properties(variant.${name} PROPERTIES TIMEOUT 1500)
endfunction()

if(TOLLGATE_CLANGXX)
  # TSan at -O1 (line tables come with the sanitizer flags): it finds the same
  # races as at -O2, and the build is the variant's cost.
  tollgate_variant(clang_tsan OPTIONS -DCMAKE_CXX_COMPILER=${TOLLGATE_CLANGXX} -DCMAKE_BUILD_TYPE=RelWithDebInfo
                   "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -DNDEBUG" -DTOLLGATE_SANITIZE=thread)
  # ASan + UBSan also carries the axes the main build does not: clang, C++20,
  # Catch2 v3 (Catch2 v2 where v3 is not given) and the generated single
  # header. A separate clang Release build of the same suite cost a fifth of
  # the default run and compiled nothing this one does not.
  set(_tg_v3)
  if(TOLLGATE_CATCH2_V3_PREFIX)
    set(_tg_v3 -DTOLLGATE_CATCH2_MAJOR=3 -DCMAKE_PREFIX_PATH=${TOLLGATE_CATCH2_V3_PREFIX})
  else()
    message(STATUS "TOLLGATE_CATCH2_V3_PREFIX not set: the ASan variant tests with Catch2 v2")
  endif()
  tollgate_variant(clang_asan_ubsan_cxx20_single_header OPTIONS -DCMAKE_CXX_COMPILER=${TOLLGATE_CLANGXX}
                   -DCMAKE_BUILD_TYPE=Debug -DTOLLGATE_SANITIZE=address,undefined
                   -DCMAKE_CXX_STANDARD=20 -DTOLLGATE_TEST_SINGLE_HEADER=ON ${_tg_v3})
else()
  message(WARNING "clang++ not found: the clang, TSan and ASan variants are not registered")
endif()

if(Python3_Interpreter_FOUND)
  add_test(NAME single_header_in_sync COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tools/amalgamate.py --check)
endif()

if(TOLLGATE_MESON)
  # Meson's own build and test run of the same suite, driven from here: g++,
  # C++20, -O1 (the g++ C++20 build of the suite, with the warnings that need
  # the optimiser's flow analysis; -O2 cost half as much again to compile, and
  # the checker, Redis and multi-process binaries already build the headers
  # with g++ at -O2).
  add_test(NAME meson.suite
           COMMAND sh -c "rm -rf '${CMAKE_BINARY_DIR}/variants/meson' && CXX='${TOLLGATE_GXX}' '${TOLLGATE_MESON}' setup --buildtype=release -Doptimization=1 -Dcpp_std=c++20 '${CMAKE_BINARY_DIR}/variants/meson' '${PROJECT_SOURCE_DIR}' >/dev/null && '${TOLLGATE_MESON}' test -C '${CMAKE_BINARY_DIR}/variants/meson' --print-errorlogs")
  set_tests_properties(meson.suite PROPERTIES TIMEOUT 1500)
else()
  message(WARNING "meson not found: the Meson suite is not registered")
endif()

# Packaging: every route a consumer can take, each built and run as a small
# consumer project (tests/consumers/check.sh), plus the packaging files' check.
find_program(TOLLGATE_BASH bash)
find_program(TOLLGATE_PKG_CONFIG pkg-config)
function(tollgate_consumer route cxx std)
  get_filename_component(_cxx_name "${cxx}" NAME)
  set(_name consumer.${route}.${_cxx_name}.cxx${std})
  add_test(NAME ${_name}
           COMMAND ${TOLLGATE_BASH} ${PROJECT_SOURCE_DIR}/tests/consumers/check.sh ${route} ${PROJECT_SOURCE_DIR}
                   ${CMAKE_BINARY_DIR}/consumers/${_name} ${cxx} ${std})
  set_tests_properties(${_name} PROPERTIES TIMEOUT 600)
endfunction()
if(TOLLGATE_BASH AND TOLLGATE_GXX)
  foreach(_route find_package too_new subdirectory fetchcontent single_header no_exceptions)
    tollgate_consumer(${_route} ${TOLLGATE_GXX} 17)
  endforeach()
  tollgate_consumer(find_package ${TOLLGATE_GXX} 20)
  if(TOLLGATE_PKG_CONFIG)
    tollgate_consumer(pkgconfig ${TOLLGATE_GXX} 17)
  endif()
  if(TOLLGATE_MESON)
    tollgate_consumer(meson_subproject ${TOLLGATE_GXX} 17)
    tollgate_consumer(meson_pkgconfig ${TOLLGATE_GXX} 17)
  endif()
endif()
if(TOLLGATE_BASH AND TOLLGATE_CLANGXX)
  foreach(_route find_package subdirectory fetchcontent single_header)
    tollgate_consumer(${_route} ${TOLLGATE_CLANGXX} 20)
  endforeach()
  tollgate_consumer(find_package ${TOLLGATE_CLANGXX} 17)
  if(TOLLGATE_PKG_CONFIG)
    tollgate_consumer(pkgconfig ${TOLLGATE_CLANGXX} 20)
  endif()
endif()
if(Python3_Interpreter_FOUND)
  add_test(NAME packaging_files COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tools/check_packaging.py)
endif()

# Bounded fuzzing of the parsers and of restore() (libFuzzer with ASan+UBSan,
# clang): a crash or a sanitizer report fails the test. TOLLGATE_FUZZ_SECONDS
# sets the time each.
set(TOLLGATE_FUZZ_SECONDS 10 CACHE STRING "Seconds of fuzzing per target in the default suite")
if(TOLLGATE_CLANGXX AND TOLLGATE_BASH)
  foreach(_target classify headers retry_after go_duration money estimate restore keyed_restore keyed_tables_restore
                  redis_reply)
    set(_bin "${CMAKE_BINARY_DIR}/fuzz/fuzz_${_target}")
    add_test(NAME fuzz.${_target}
             COMMAND ${TOLLGATE_BASH} -c "mkdir -p '${CMAKE_BINARY_DIR}/fuzz/corpus_${_target}' && '${TOLLGATE_CLANGXX}' -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I'${PROJECT_SOURCE_DIR}/include' '${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_${_target}.cpp' -o '${_bin}' && '${_bin}' -max_total_time=${TOLLGATE_FUZZ_SECONDS} -print_final_stats=1 '${CMAKE_BINARY_DIR}/fuzz/corpus_${_target}' 2>&1 | grep -E 'Done|number_of_executed_units|ERROR|SUMMARY'; exit \${PIPESTATUS[0]}")
    set_tests_properties(fuzz.${_target} PROPERTIES TIMEOUT 600 FAIL_REGULAR_EXPRESSION "ERROR|SUMMARY")
  endforeach()
endif()
