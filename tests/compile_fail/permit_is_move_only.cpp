// A permit cannot be copied: that would release its units twice.
// expect: (deleted|use of deleted)
#include <tollgate/concurrency.hpp>
int main() {
  tollgate::concurrency_limiter c(2);
  tollgate::permit p = c.try_acquire();
#ifdef TOLLGATE_MISUSE
  tollgate::permit q = p;
#else
  tollgate::permit q = std::move(p);
#endif
  return q ? 0 : 1;
}
