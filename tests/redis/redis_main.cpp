// The Redis tests' main: without a redis-server they are skipped (exit 77,
// which ctest reports as skipped), except with CI=true, where a missing
// server fails the run.
#define CATCH_CONFIG_RUNNER
#if TOLLGATE_CATCH2_MAJOR == 3
#include <catch2/catch_session.hpp>
#else
#include <catch2/catch.hpp>
#endif

#include "redis_support.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

int main(int argc, char** argv) {
  if (tgredis::server_binary().empty()) {
    const char* ci = std::getenv("CI");
    if (ci && std::strcmp(ci, "true") == 0) {
      std::fprintf(stderr, "redis-server not found and CI=true: the Redis tests cannot run\n");
      return 1;
    }
    std::fprintf(stderr, "redis-server not found: the Redis tests are skipped\n");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
