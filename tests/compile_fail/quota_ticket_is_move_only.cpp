// A quota ticket cannot be copied: each copy could refund the same units.
// expect: (deleted|use of deleted)
#include <tollgate/calendar_quota.hpp>
#include <utility>
int main() {
  tollgate::calendar_quota<tollgate::manual_clock> q(100);
  tollgate::quota_ticket t;
  (void)q.try_acquire(3, std::chrono::nanoseconds(0), t);
#ifdef TOLLGATE_MISUSE
  tollgate::quota_ticket copy = t;
#else
  tollgate::quota_ticket copy = std::move(t);
#endif
  return q.refund(copy, 3) == 3 ? 0 : 1;
}
