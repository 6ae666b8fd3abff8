// A window ticket cannot be copied: each copy could refund the same tokens.
// expect: (deleted|use of deleted)
#include <tollgate/sliding_window.hpp>
#include <utility>
int main() {
  tollgate::sliding_window<tollgate::manual_clock> w(tollgate::per_minute(10), std::chrono::nanoseconds(0));
  tollgate::window_ticket t;
  (void)w.try_acquire(3, std::chrono::nanoseconds(0), t);
#ifdef TOLLGATE_MISUSE
  tollgate::window_ticket copy = t;
#else
  tollgate::window_ticket copy = std::move(t);
#endif
  return w.refund(copy, 3) == 3 ? 0 : 1;
}
