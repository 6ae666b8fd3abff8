// A rate's period is a chrono duration: a bare number of "something" is refused.
// expect: (no matching|cannot convert|could not convert)
#include <tollgate/token_bucket.hpp>
int main() {
#ifdef TOLLGATE_MISUSE
  tollgate::rate r(3, 60);
#else
  tollgate::rate r(3, std::chrono::seconds(60));
#endif
  return r.count == 3 ? 0 : 1;
}
