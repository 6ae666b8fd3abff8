// A limiter cannot be copied: two copies would each admit the full limit.
// expect: (deleted|use of deleted)
#include <tollgate/sliding_window.hpp>
int main() {
  tollgate::sliding_window<tollgate::manual_clock> w(tollgate::per_minute(10), std::chrono::nanoseconds(0));
#ifdef TOLLGATE_MISUSE
  auto copy = w;
  return copy.limit() == 10 ? 0 : 1;
#else
  return w.limit() == 10 ? 0 : 1;
#endif
}
