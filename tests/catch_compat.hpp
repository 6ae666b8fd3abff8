// One test tree for Catch2 v2 (Debian 12's 2.13) and v3. The build system
// defines TOLLGATE_CATCH2_MAJOR; tests use only the common subset.
#ifndef TOLLGATE_TESTS_CATCH_COMPAT_HPP
#define TOLLGATE_TESTS_CATCH_COMPAT_HPP

#if TOLLGATE_CATCH2_MAJOR == 3
#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
using Catch::Approx;
#else
#include <catch2/catch.hpp>
#endif

#endif
