#include "catch_compat.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <map>

using namespace tollgate;
using namespace std::chrono;
using tgtest::ns;

namespace {
using quota = calendar_quota<manual_clock>;
constexpr std::int64_t day_ns = 86400LL * 1000000000LL;
// 2026-11-23T00:00:00Z
constexpr ns monday = hours(24) * 20780;
}  // namespace

TEST_CASE("quota: resets at midnight of the chosen offset", "[calendar_quota]") {
  quota utc(1500000);
  quota cst(1500000, hours(8));  // China Standard Time: midnight is 16:00 UTC
  CHECK(utc.try_acquire(1500000, monday + hours(15)).admitted());
  CHECK(cst.try_acquire(1500000, monday + hours(15)).admitted());
  const decision u = utc.try_acquire(1, monday + hours(15));
  const decision c = cst.try_acquire(1, monday + hours(15));
  REQUIRE(u.later());
  REQUIRE(c.later());
  CHECK(u.retry_after() == hours(9));
  CHECK(c.retry_after() == hours(1));
  CHECK(cst.try_acquire(1, monday + hours(16)).admitted());
  CHECK(utc.try_acquire(1, monday + hours(16)).later());
  CHECK(utc.reset_in(monday + hours(16)) == hours(8));
  CHECK(utc.try_acquire(1500001, monday).never());
  CHECK(utc.try_acquire(0, monday).admitted());
}

TEST_CASE("quota: stale times, refunds, debt, live limit", "[calendar_quota][time]") {
  quota q(100);
  quota_ticket t;
  REQUIRE(q.try_acquire(60, monday + hours(1), t).admitted());
  // A reading from the previous day is refused, not charged to it.
  const decision d = q.try_acquire(1, monday - minutes(1));
  CHECK(d.why() == reason::stale_time);
  CHECK(d.retry_after() == minutes(1));
  CHECK(q.refund(t, 100) == 60);
  CHECK(q.used(monday + hours(2)) == 0);
  REQUIRE(q.try_acquire(50, monday + hours(2), t).admitted());
  q.charge(80, monday + hours(3));  // actual usage learnt later: debt
  CHECK(q.available(monday + hours(3)) == 0);
  CHECK(q.time_until(1, monday + hours(3)).retry_after() == hours(21));
  CHECK(q.available(monday + hours(24)) == 100);
  CHECK(q.refund(t, 50) == 50);  // same day still
  REQUIRE(q.try_acquire(1, monday + hours(25), t).admitted());
  quota_ticket old = t;
  old.day -= 1;
  CHECK(q.refund(old, 1) == 0);  // that day is over
  CHECK(q.set_limit(0) == errc::zero_count);
  CHECK(q.set_limit(200) == errc::ok);
  CHECK(q.available(monday + hours(25)) == 199);
  CHECK(quota::validate(0, minutes(0)) == errc::zero_count);
  CHECK(quota::validate(1, hours(25)) == errc::too_large);
  CHECK(quota::validate(quota::max_limit + 1, minutes(0)) == errc::too_large);
  CHECK_THROWS_AS(quota(0), config_error);
  // Far past and far future do not overflow.
  CHECK(q.try_acquire(1, ns(std::numeric_limits<std::int64_t>::max())).admitted());
  CHECK(q.reset_in(ns(std::numeric_limits<std::int64_t>::max())) >= ns(0));
}

TEST_CASE("property: the quota matches a per-day map and never exceeds its limit", "[calendar_quota][oracle]") {
  for (std::uint64_t seed : tgtest::seeds(3)) {
    INFO("seed " << seed);
    tgtest::rng g(seed);
    const std::int64_t offset_min = static_cast<std::int64_t>(g.between(0, 24 * 60 * 2)) - 24 * 60;
    const std::uint64_t limit = g.between(1, 1000);
    quota q(limit, minutes(offset_min));
    const std::int64_t off = offset_min * 60LL * 1000000000LL;
    std::map<std::int64_t, std::uint64_t> used;
    std::int64_t now = monday.count(), max_day = 0;
    std::uint64_t mismatches = 0;
    for (int i = 0; i < 40000; ++i) {
      now += static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(day_ns / 200)));
      std::int64_t at = now;
      if (g.chance(5)) at -= static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(day_ns / 20)));
      const std::int64_t d = (at + off) / day_ns;
      const std::uint64_t n = g.between(0, limit / 4 + 1);
      const decision r = q.try_acquire(n, ns(at));
      bool expect;
      if (n == 0) {
        expect = true;
      } else if (d < max_day) {
        expect = false;
        if (r.why() != reason::stale_time) ++mismatches;
      } else {
        expect = used[d] + n <= limit;
        if (!expect && r.retry_after() != ns((d + 1) * day_ns - off - at)) ++mismatches;
      }
      if (expect != r.admitted()) ++mismatches;
      if (r.admitted() && n > 0) {
        used[d] += n;
        max_day = d;
      }
    }
    CHECK(mismatches == 0);
    for (const auto& kv : used) CHECK(kv.second <= limit);
  }
}
