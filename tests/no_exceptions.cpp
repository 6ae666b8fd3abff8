// Built with -fno-exceptions: every limiter can be built through its
// error-code constructor, and a bad configuration is reported, not thrown.
#include <tollgate/tollgate.hpp>

#include <cstdio>

using namespace tollgate;
using namespace std::chrono;

int main() {
  static_assert(TOLLGATE_NO_EXCEPTIONS == 1, "this translation unit must be built without exceptions");
  int failures = 0;
  auto check = [&](bool ok, const char* what) {
    if (!ok) {
      std::printf("FAILED: %s\n", what);
      ++failures;
    }
  };
  errc ec = errc::ok;
  token_bucket<manual_clock> bad(per_second(0), 1, nanoseconds(0), token_bucket<manual_clock>::start::full, ec);
  check(ec == errc::zero_count, "bucket error code");
  check(bad.try_acquire(1, nanoseconds(0)).why() == reason::misconfigured, "bad bucket refuses");
  token_bucket<manual_clock> good(per_minute(3), 3, nanoseconds(0), token_bucket<manual_clock>::start::full, ec);
  check(ec == errc::ok && good.try_acquire(3, nanoseconds(0)).admitted(), "good bucket");
  sliding_window<manual_clock> w(rate(0, seconds(1)), nanoseconds(0), ec);
  check(ec == errc::zero_count, "window error code");
  calendar_quota<manual_clock> q(0, minutes(0), ec);
  check(ec == errc::zero_count, "quota error code");
  concurrency_limiter c(0, ec);
  check(ec == errc::zero_count, "concurrency error code");
  check(!c.try_acquire(), "bad concurrency limiter refuses");
  std::printf("%d passed, %d failed\n", 6 - failures, failures);
  return failures == 0 ? 0 : 1;
}
