// The consumer program every packaging route builds: it uses a limiter and the
// cost calculator, and prints the version it was built against.
#ifdef TOLLGATE_CONSUMER_SINGLE_HEADER
#include <tollgate.hpp>  // only -I single_include
#else
#include <tollgate/tollgate.hpp>
#endif

#include <cstdio>

int main() {
  using namespace tollgate;
  token_bucket<manual_clock> rpm(per_minute(3), 3, nanoseconds(0));
  int admitted = 0;
  for (int i = 0; i < 5; ++i) admitted += rpm.try_acquire(1, nanoseconds(0)).admitted() ? 1 : 0;
  const auto c = cost(*find_model("kimi-k2.6"), usage{2000000, 0, 500000, 0, 0});
  std::printf("tollgate %d.%d.%d: admitted %d of 5, cost %s\n", TOLLGATE_VERSION_MAJOR, TOLLGATE_VERSION_MINOR,
              TOLLGATE_VERSION_PATCH, admitted, format(c.total).c_str());
  return admitted == 3 && c.total == usd::from_nanos(3900000000) ? 0 : 1;
}
