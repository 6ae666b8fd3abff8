// A bucket ticket cannot be copied: each copy could refund the same units.
// expect: (deleted|use of deleted)
#include <tollgate/token_bucket.hpp>
#include <utility>
int main() {
  tollgate::token_bucket<tollgate::manual_clock> b(tollgate::per_minute(10), 10, std::chrono::nanoseconds(0));
  tollgate::bucket_ticket t;
  (void)b.try_acquire(3, std::chrono::nanoseconds(0), t);
#ifdef TOLLGATE_MISUSE
  tollgate::bucket_ticket copy = t;
#else
  tollgate::bucket_ticket copy = std::move(t);
#endif
  return b.refund(copy, 3, std::chrono::nanoseconds(0)) == 3 ? 0 : 1;
}
