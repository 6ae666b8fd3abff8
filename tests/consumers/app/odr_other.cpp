// A second translation unit including the whole library: linking it with
// main.cpp fails if any header defines a non-inline function or variable.
#ifdef TOLLGATE_CONSUMER_SINGLE_HEADER
#include <tollgate.hpp>
#else
#include <tollgate/tollgate.hpp>
#endif

int tollgate_odr_other() {
  tollgate::concurrency_limiter c(1);
  return c.try_acquire() ? 1 : 0;
}
