#include "catch_compat.hpp"
#include "tollgate_under_test.hpp"

#include <cstring>
#include <string>
#include <type_traits>

using namespace tollgate;
using namespace std::chrono;

// Compile-time checks: decisions, rates and validation are constexpr.
static_assert(decision::admit().admitted(), "");
static_assert(decision::wait(seconds(3)).retry_after() == seconds(3), "");
static_assert(decision::refuse().never(), "");
static_assert(per_minute(3).period == minutes(1), "");
static_assert(token_bucket<>::validate(per_minute(3), 3) == errc::ok, "");
static_assert(token_bucket<>::validate(per_minute(0), 3) == errc::zero_count, "");
static_assert(sliding_window<>::validate(per_minute(200)) == errc::ok, "");
static_assert(calendar_quota<>::validate(1500000, hours(8)) == errc::ok, "");
static_assert(concurrency_limiter::validate(0) == errc::zero_count, "");
// Limiter state is standard-layout and trivially small: it can live in shared memory.
static_assert(std::is_standard_layout<token_bucket<>>::value, "");
static_assert(std::is_standard_layout<sliding_window<>>::value, "");
static_assert(std::is_standard_layout<calendar_quota<>>::value, "");
static_assert(std::is_standard_layout<concurrency_limiter>::value, "");
static_assert(alignof(token_bucket<>) == TOLLGATE_CACHELINE_SIZE, "");
static_assert(std::is_trivially_copyable<decision>::value, "");
static_assert(sizeof(decision) <= 16, "");

TEST_CASE("version macros agree", "[misc]") {
  CHECK(TOLLGATE_VERSION == TOLLGATE_VERSION_MAJOR * 10000 + TOLLGATE_VERSION_MINOR * 100 + TOLLGATE_VERSION_PATCH);
}

TEST_CASE("decisions and their names", "[misc]") {
  constexpr decision a = decision::admit();
  STATIC_REQUIRE(a.why() == reason::none);
  CHECK(static_cast<bool>(a));
  const decision w = decision::wait(milliseconds(5), reason::stale_time);
  CHECK_FALSE(static_cast<bool>(w));
  CHECK(w.later());
  CHECK(std::string(to_string(w.what())) == "later");
  CHECK(std::string(to_string(w.why())) == "stale_time");
  CHECK(std::string(to_string(verdict::never)) == "never");
  CHECK(decision() == decision::refuse(reason::misconfigured));
  CHECK(decision::admit() != w);
}

TEST_CASE("every error code has a message", "[misc]") {
  for (errc e : {errc::ok, errc::zero_count, errc::zero_period, errc::zero_burst, errc::zero_slots, errc::too_large,
                 errc::horizon_too_short, errc::rate_too_fine, errc::window_too_short, errc::not_shareable}) {
    CHECK(std::strlen(message(e)) > 1);
  }
  const config_error err(errc::too_large);
  CHECK(err.code() == errc::too_large);
}

TEST_CASE("clocks", "[misc]") {
  const nanoseconds a = tollgate::steady_clock::now();
  const nanoseconds b = tollgate::steady_clock::now();
  CHECK(b >= a);
  CHECK(coarse_clock::now() > nanoseconds(0));
  CHECK(coarse_clock::resolution() > nanoseconds(0));
  CHECK(coarse_clock::resolution() <= milliseconds(100));
  CHECK(tollgate::system_clock::now() > hours(24 * 365 * 50));  // after 2020
  struct tag {};
  using mc = basic_manual_clock<tag>;
  mc::set(seconds(5));
  CHECK(mc::now() == seconds(5));
  CHECK(mc::advance(seconds(2)) == seconds(7));
  mc::set(seconds(1));  // backwards is allowed
  CHECK(mc::now() == seconds(1));
  // Limiters read their Clock in the overloads without `now`.
  mc::set(seconds(0));
  token_bucket<mc> bucket1(per_second(1), 1);
  CHECK(bucket1.try_acquire().admitted());
  CHECK(bucket1.try_acquire().retry_after() == seconds(1));
  mc::advance(seconds(1));
  CHECK(bucket1.try_acquire().admitted());
  sliding_window<mc> w(rate(2, seconds(15)));
  CHECK(w.try_acquire(2).admitted());
  CHECK(w.try_acquire().later());
  CHECK(w.available() == 0);
}
