// The suite runs against the modular headers or, with
// TOLLGATE_TEST_SINGLE_HEADER, against the generated single header.
#ifndef TOLLGATE_TESTS_UNDER_TEST_HPP
#define TOLLGATE_TESTS_UNDER_TEST_HPP
#ifdef TOLLGATE_TEST_SINGLE_HEADER
#include <tollgate.hpp>
#else
#include <tollgate/tollgate.hpp>
#endif
#endif
