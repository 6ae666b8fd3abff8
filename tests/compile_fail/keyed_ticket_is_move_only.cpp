// A keyed ticket cannot be copied: each copy could refund the same units.
// expect: (deleted|use of deleted)
#include <tollgate/keyed_buckets.hpp>
#include <utility>
int main() {
  tollgate::keyed_buckets<tollgate::manual_clock> k(64, {{tollgate::per_minute(10), 10}}, tollgate::hash_seed{1, 2},
                                                    std::chrono::nanoseconds(0));
  tollgate::keyed_ticket t;
  (void)k.try_acquire(7, 0, 3, std::chrono::nanoseconds(0), t);
#ifdef TOLLGATE_MISUSE
  tollgate::keyed_ticket copy = t;
#else
  tollgate::keyed_ticket copy = std::move(t);
#endif
  return k.refund(7, copy, 3, std::chrono::nanoseconds(0)) == 3 ? 0 : 1;
}
