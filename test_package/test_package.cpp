#include <tollgate/tollgate.hpp>

#include <cstdio>

int main() {
  tollgate::token_bucket<tollgate::manual_clock> b(tollgate::per_minute(3), 3, tollgate::nanoseconds(0));
  const bool ok = b.try_acquire(3, tollgate::nanoseconds(0)).admitted();
  std::printf("tollgate %d.%d.%d %s\n", TOLLGATE_VERSION_MAJOR, TOLLGATE_VERSION_MINOR, TOLLGATE_VERSION_PATCH,
              ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
