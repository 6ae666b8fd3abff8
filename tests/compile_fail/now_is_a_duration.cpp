// `now` is std::chrono::nanoseconds, never a bare integer.
// expect: (no matching|cannot convert|could not convert)
#include <tollgate/token_bucket.hpp>
int main() {
  tollgate::token_bucket<tollgate::manual_clock> b(tollgate::per_second(1), 1, std::chrono::nanoseconds(0));
#ifdef TOLLGATE_MISUSE
  return b.try_acquire(1, 1000).admitted() ? 0 : 1;
#else
  return b.try_acquire(1, std::chrono::nanoseconds(1000)).admitted() ? 0 : 1;
#endif
}
