#include "catch_compat.hpp"
#include "forge_ticket.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <limits>
#include <map>
#include <vector>

using namespace tollgate;
using namespace std::chrono;
using tgtest::ns;

namespace {
using quota = calendar_quota<manual_clock>;
using tgtest::day_ns;
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
  quota_ticket old = tgtest::forge(t);
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

TEST_CASE("quota: every public function is defined for every now", "[calendar_quota][edge]") {
  for (const minutes off : {minutes(-24 * 60), minutes(0), minutes(8 * 60), minutes(24 * 60)}) {
    for (std::uint64_t seed : tgtest::seeds(2)) {
      INFO("offset " << off.count() << " min, seed " << seed);
      tgtest::rng g(seed);
      quota q(1000, off);
      std::vector<quota_ticket> tickets;
      std::uint64_t bad = 0;
      for (int i = 0; i < 4000; ++i) {
        const ns now{tgtest::extreme_time(g, monday.count())};
        const std::uint64_t n = g.chance(80) ? g.between(0, 400) : g.next();
        switch (g.between(0, 7)) {
          case 0: {
            const decision peek = q.time_until(n, now);
            quota_ticket t;
            const decision d = q.try_acquire(n, now, t);
            if (!(peek == d)) ++bad;
            if (d.later() && d.retry_after() <= ns(0)) ++bad;
            if (!d.later() && d.retry_after() != ns(0)) ++bad;
            if (d.admitted() && t.units > 0) tickets.push_back(std::move(t));
            break;
          }
          case 1: q.charge(n, now); break;
          case 2:
            if (!tickets.empty()) (void)q.refund(tickets[g.between(0, tickets.size() - 1)], g.next());
            break;
          case 3:
            if (q.reset_in(now) < ns(0)) ++bad;
            break;
          case 4:
            if (q.available(now) > q.limit() || q.used(now) > quota::max_limit) ++bad;
            break;
          case 5: q.import_word(q.export_word()); break;
          case 6: (void)q.set_limit(g.chance(10) ? 0 : g.between(1, 2000)); break;
          default: {
            const decision d = q.time_until(n, now);
            if (d.later() && d.retry_after() <= ns(0)) ++bad;
            break;
          }
        }
      }
      CHECK(bad == 0);
      // An ordinary reset time is within a day, from any `now` since 1970.
      CHECK(q.reset_in(monday) <= hours(24));
      q.reset();
      CHECK(q.set_limit(1000) == errc::ok);
      CHECK(q.try_acquire(1000, monday).admitted());
      CHECK(q.try_acquire(1, monday).later());
    }
  }
}

TEST_CASE("quota: extreme times saturate; a bogus far-future now is undone by reset()", "[calendar_quota][edge]") {
  constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min(), hi = std::numeric_limits<std::int64_t>::max();
  quota q(100, hours(-8));
  CHECK(q.reset_in(ns(lo)) == ns(hi));  // long before 1970: the first reset is out of reach
  CHECK(q.reset_in(ns(hi)) == ns(0));   // the next midnight is past the end of time
  REQUIRE(q.try_acquire(100, ns(lo)).admitted());
  const decision full = q.try_acquire(1, ns(lo));
  CHECK(full.later());
  CHECK(full.retry_after() == ns(hi));
  REQUIRE(q.try_acquire(1, ns(hi)).admitted());  // day 106,751
  const decision d = q.try_acquire(1, monday);
  CHECK(d.why() == reason::stale_time);
  CHECK(d.retry_after() > hours(24 * 365 * 200));
  const decision e = q.time_until(1, ns(lo));
  CHECK(e.why() == reason::stale_time);
  CHECK(e.retry_after() == ns(hi));
  q.reset();
  CHECK(q.try_acquire(100, monday).admitted());
  CHECK(q.time_until(1, monday).retry_after() == hours(8));  // midnight at UTC-8 is 08:00Z
}

TEST_CASE("quota: the wait for the next day is exact up to INT64_MAX, with any offset (a05)", "[calendar_quota][edge]") {
  const std::int64_t top = std::numeric_limits<std::int64_t>::max();
  for (int off_h : {8, 24, 0, -8, -24}) {
    INFO("offset " << off_h << " h");
    quota q(10, hours(off_h));
    ns now(top - ns(hours(30)).count());
    REQUIRE(q.try_acquire(10, now).admitted());
    // Follow the stated waits: each must end in a new day, which admits,
    // until the day that starts past INT64_MAX, which never comes.
    int days = 0;
    for (int i = 0; i < 4; ++i) {
      const decision d = q.try_acquire(10, now);
      REQUIRE(d.later());
      CHECK(d.why() == reason::exhausted);
      if (d.retry_after() == ns::max()) break;  // the next day starts after INT64_MAX
      CHECK(d.retry_after() > ns(1));
      CHECK(q.try_acquire(10, now + d.retry_after() - ns(1)).later());
      now += d.retry_after();
      REQUIRE(q.try_acquire(10, now).admitted());
      ++days;
    }
    CHECK(days >= 1);
    CHECK(days <= 3);
    CHECK(q.try_acquire(1, ns(top)).retry_after() == ns::max());
  }
}

TEST_CASE("quota: a clock whose zero is not 1970 counts UTC days through clock_origin", "[calendar_quota]") {
  // The clock's zero is Monday 12:00 UTC.
  quota q(100, hours(0), monday + hours(12));
  CHECK(q.clock_origin() == monday + hours(12));
  REQUIRE(q.try_acquire(100, hours(11)).admitted());  // Monday 23:00
  const decision d = q.try_acquire(1, hours(11));
  REQUIRE(d.later());
  CHECK(d.retry_after() == hours(1));
  CHECK(q.try_acquire(1, hours(12)).admitted());  // Tuesday
  CHECK(q.day_at(hours(12)) == 20781);
  errc e = errc::zero_count;
  quota p(100, hours(8), ns(std::numeric_limits<std::int64_t>::max()), e);
  CHECK(e == errc::ok);
  CHECK(p.try_acquire(100, ns(std::numeric_limits<std::int64_t>::max())).admitted());
  CHECK(p.try_acquire(1, ns(std::numeric_limits<std::int64_t>::min())).why() == reason::stale_time);
}

// The schedule that found it: a quota restored from another's word (a
// restart in one process) took a ticket of the old quota, for an admission
// made after the export, and gave its units back: 40 + 60 used, then 60
// more the same day (limit 100). A ticket names its quota object.
TEST_CASE("quota: tickets of another quota refund nothing: not into a restored one either", "[calendar_quota][snapshot]") {
  tgtest::rng g(tgtest::seed_for(0xca1e));
  INFO(tgtest::seed_note());
  for (int round = 0; round < 50; ++round) {
    const std::uint64_t before = g.between(1, 99);
    const ns now = monday + ns(static_cast<std::int64_t>(g.between(0, 86399)) * 1000000000LL);
    INFO("round " << round << " before " << before << " now " << now.count());
    quota x(100);
    quota_ticket ta, tb;
    REQUIRE(x.try_acquire(before, now, ta).admitted());
    const std::uint64_t word = x.export_word();
    REQUIRE(x.try_acquire(100 - before, now, tb).admitted());  // after the export: not in the restored word
    quota y(100);
    y.import_word(word);
    CHECK(y.refund(tb, 100 - before) == 0);
    CHECK(y.refund(ta, before) == 0);
    CHECK(y.available(now) == 100 - before);
    // Two quotas, neither restored.
    quota a(100), b(100);
    quota_ticket tk;
    REQUIRE(a.try_acquire(100, now, tk).admitted());
    REQUIRE(b.try_acquire(100, now).admitted());
    quota_ticket copy = tgtest::forge(tk);
    CHECK(b.refund(copy, 100) == 0);
    CHECK(b.available(now) == 0);
    CHECK(a.refund(tk, 100) == 100);  // its own quota's still gives back
  }
}
