#include "catch_compat.hpp"
#include "forge_ticket.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <algorithm>
#include <limits>
#include <new>
#include <sstream>
#include <thread>
#include <vector>

using namespace tollgate;
using namespace std::chrono;
using tgtest::ns;

namespace {
using bucket = token_bucket<manual_clock>;
constexpr ns t0{0};
// A time k * h, kept 2^50 ns (13 days) short of INT64_MAX.
std::int64_t times(std::int64_t k, std::int64_t h) {
  const tgtest::i128 top = std::numeric_limits<std::int64_t>::max() - (std::int64_t{1} << 50);
  const tgtest::i128 v = static_cast<tgtest::i128>(k) * h;
  return static_cast<std::int64_t>(v > top ? top : v);
}
}  // namespace

TEST_CASE("Kimi limits have whole-nanosecond intervals and are exact", "[token_bucket]") {
  bucket rpm(per_minute(3), 3, t0);
  CHECK(rpm.exact());
  CHECK(rpm.interval() == seconds(20));
  bucket tpm(per_minute(5000000), 5000000, t0);
  CHECK(tpm.exact());
  CHECK(tpm.interval() == microseconds(12));
  bucket tpd(per_day(1500000), 1500000, t0);
  CHECK(tpd.exact());
  CHECK(tpd.interval() == microseconds(57600));
  for (auto* b : {&rpm, &tpm, &tpd}) CHECK(b->horizon() >= hours(24 * 3653));
}

TEST_CASE("other rates: exact through a scaled tick, else rounded toward refusal", "[token_bucket]") {
  bucket seven(per_second(7), 1, t0);
  CHECK(seven.exact());
  CHECK(seven.effective_rate().count == 7);
  CHECK(seven.effective_rate().period == seconds(1));
  bucket giga(per_second(1000000000), 1000, t0);
  CHECK(giga.exact());
  CHECK(giga.interval() == ns(1));
  bucket daily(per_day(1), 1, t0);
  CHECK(daily.exact());
  CHECK(daily.interval() == hours(24));
  bucket prime(per_second(999983), 1000, t0);
  CHECK_FALSE(prime.exact());
  // Effective interval >= the asked one and within 0.1 %.
  const rate e = prime.effective_rate();
  const tgtest::u128 lhs = static_cast<tgtest::u128>(e.period.count()) * 999983;
  const tgtest::u128 rhs = static_cast<tgtest::u128>(e.count) * 1000000000;
  CHECK(lhs >= rhs);
  CHECK(lhs * 1000 <= rhs * 1001);
  CHECK(prime.horizon() >= hours(24 * 3653));
}

TEST_CASE("bad configurations are refused with a clear error", "[token_bucket][errors]") {
  CHECK(bucket::validate(per_second(0), 1) == errc::zero_count);
  CHECK(bucket::validate(rate(1, seconds(0)), 1) == errc::zero_period);
  CHECK(bucket::validate(rate(1, seconds(-5)), 1) == errc::zero_period);
  CHECK(bucket::validate(per_second(1), 0) == errc::zero_burst);
  CHECK(bucket::validate(per_second(100000000000ULL), 1) == errc::rate_too_fine);
  CHECK(bucket::validate(per_day(1), std::numeric_limits<std::uint64_t>::max()) == errc::horizon_too_short);
  CHECK(bucket::validate(per_second(1), 1) == errc::ok);
  CHECK_THROWS_AS(bucket(per_second(0), 1, t0), config_error);
  try {
    bucket b(per_second(1), 0, t0);
    FAIL("no exception");
  } catch (const config_error& e) {
    CHECK(e.code() == errc::zero_burst);
    CHECK(std::string(e.what()) == "burst must be at least 1");
  }
  errc ec = errc::ok;
  bucket bad(per_second(5), 0, t0, bucket::start::full, ec);
  CHECK(ec == errc::zero_burst);
  CHECK(bad.try_acquire(1, t0).never());
  CHECK(bad.try_acquire(1, t0).why() == reason::misconfigured);
  CHECK(bad.available(t0) == 0);
  CHECK(bad.set_rate(per_second(1), t0) == errc::ok);
  CHECK(bad.try_acquire(1, t0).never());
}

TEST_CASE("decisions: admit, exact wait, never; refusals write nothing", "[token_bucket]") {
  bucket b(per_minute(3), 3, t0);
  CHECK(b.try_acquire(0, t0).admitted());
  CHECK(b.available(t0) == 3);
  const decision d4 = b.try_acquire(4, t0);
  CHECK(d4.never());
  CHECK(d4.why() == reason::exceeds_capacity);
  CHECK(b.try_acquire(3, t0).admitted());
  const decision w = b.try_acquire(1, t0);
  REQUIRE(w.later());
  CHECK(w.why() == reason::exhausted);
  CHECK(w.retry_after() == seconds(20));
  CHECK(b.try_acquire(1, seconds(20) - ns(1)).later());
  CHECK(b.try_acquire(1, seconds(20) - ns(1)).retry_after() == ns(1));
  CHECK(b.try_acquire(1, seconds(20)).admitted());
  CHECK(b.full_in(seconds(20)) == seconds(60));
  CHECK(b.try_acquire(3, seconds(20)).retry_after() == seconds(60));
}

TEST_CASE("start empty means the first unit waits one interval per unit", "[token_bucket]") {
  bucket b(per_second(10), 5, t0, bucket::start::empty);
  CHECK(b.available(t0) == 0);
  CHECK(b.time_until(1, t0).retry_after() == milliseconds(100));
  CHECK(b.available(milliseconds(500)) == 5);
}

TEST_CASE("refund and charge", "[token_bucket]") {
  bucket b(per_minute(60), 10, t0);
  REQUIRE(b.try_acquire(10, t0).admitted());
  CHECK(b.refund(4, t0) == 4);
  CHECK(b.available(t0) == 4);
  // Returning more than was taken never overfills the bucket.
  CHECK(b.refund(100, t0) == 6);
  CHECK(b.available(t0) == 10);
  CHECK(b.refund(5, t0) == 0);
  // Debt: charge beyond the balance, then wait it out.
  b.charge(25, t0);
  CHECK(b.available(t0) == 0);
  CHECK(b.time_until(1, t0).retry_after() == seconds(16));
  CHECK(b.available(seconds(25)) == 10);
}

TEST_CASE("clock going backwards never adds capacity", "[token_bucket][time]") {
  bucket b(per_second(1), 2, t0);
  REQUIRE(b.try_acquire(2, seconds(100)).admitted());
  // At 100 s the bucket is empty; at a stale 50 s it is no fuller.
  CHECK(b.try_acquire(1, seconds(50)).later());
  CHECK(b.available(seconds(50)) == 0);
  CHECK(b.time_until(1, seconds(50)).retry_after() == seconds(51));
  CHECK(b.try_acquire(1, seconds(101)).admitted());
  // Times before the origin count as the origin.
  bucket c(per_second(1), 1, seconds(10));
  CHECK(c.try_acquire(1, seconds(-1000)).admitted());
  CHECK(c.try_acquire(1, seconds(-1000)).retry_after() == seconds(1011));
}

TEST_CASE("huge forward jumps and extreme times do not overflow", "[token_bucket][time]") {
  bucket b(per_second(1000000000), 1000000, t0);
  CHECK(b.try_acquire(1000000, hours(24 * 365 * 10)).admitted());
  CHECK(b.try_acquire(1, ns(std::numeric_limits<std::int64_t>::max())).admitted());
  CHECK(b.try_acquire(1, ns(std::numeric_limits<std::int64_t>::min())).later());
  bucket slow(per_day(1), 1, t0);
  slow.charge(std::numeric_limits<std::uint64_t>::max(), t0);  // saturates
  CHECK(slow.available(hours(24 * 365 * 100)) == 0);
  CHECK(slow.time_until(1, t0).later());
}

TEST_CASE("live rate and burst changes keep the units owed", "[token_bucket][live]") {
  bucket b(per_minute(3), 3, t0);
  REQUIRE(b.try_acquire(3, t0).admitted());  // owes 3 units = 60 s
  CHECK(b.set_rate(per_minute(1), t0) == errc::ok);  // slower: 3 units = 180 s
  CHECK(b.full_in(t0) == seconds(180));
  CHECK(b.set_rate(per_minute(6), t0) == errc::ok);  // faster: 3 units = 30 s
  CHECK(b.full_in(t0) == seconds(30));
  CHECK(b.time_until(1, t0).retry_after() == seconds(10));
  CHECK(b.current_rate().count == 6);
  CHECK(b.set_burst(1, t0) == errc::ok);  // tolerance 10 s, owed 30 s
  CHECK(b.burst() == 1);
  CHECK(b.time_until(1, t0).retry_after() == seconds(30));
  CHECK(b.set_rate(per_minute(0), t0) == errc::zero_count);  // refused, nothing changes
  CHECK(b.current_rate().count == 6);
  CHECK(b.time_until(1, t0).retry_after() == seconds(30));
  // Flapping between two rates does not compound what is owed.
  for (int i = 0; i < 100; ++i) {
    CHECK(b.set_rate(per_minute(1), t0) == errc::ok);
    CHECK(b.set_rate(per_minute(6), t0) == errc::ok);
  }
  CHECK(b.full_in(t0) <= seconds(31));
  // Many reconfigurations cycle the configuration slots.
  for (int i = 0; i < 10; ++i) CHECK(b.set_rate(per_minute(6 + static_cast<std::uint64_t>(i % 2)), t0) == errc::ok);
  CHECK(b.current_rate().count == 7);
}

namespace {
struct bucket_case {
  rate r;
  std::uint64_t burst;
  std::uint64_t ops;
};

// Drives the bucket and the rational oracle (at the bucket's effective rate)
// through one random schedule and compares every answer.
// `start` > 0 begins the schedule there (the bucket, idle since its origin
// at 0, is full); `big_jump` > 0 adds rare jumps of up to that many ns (to
// cross the points where the epoch moves, see token_bucket.hpp).
void run_bucket_oracle(const bucket_case& c, std::uint64_t seed, std::int64_t start = 0, std::uint64_t big_jump = 0) {
  std::ostringstream label;
  label << "rate " << c.r.count << "/" << c.r.period.count() << "ns burst " << c.burst << " seed " << seed
        << " start " << start << " jump " << big_jump;
  INFO(label.str());
  tgtest::rng g(seed);
  const bool full = g.chance(80);
  bucket b(c.r, c.burst, t0, full ? bucket::start::full : bucket::start::empty);
  const rate eff = b.effective_rate();
  tgtest::rational_bucket o(eff.count, static_cast<std::uint64_t>(eff.period.count()), c.burst, start, full || start > 0);
  const std::uint64_t interval = static_cast<std::uint64_t>(b.interval().count());
  std::int64_t now = start;
  const std::int64_t last_time = std::numeric_limits<std::int64_t>::max() - static_cast<std::int64_t>(interval * c.burst * 8);
  std::vector<std::pair<std::int64_t, std::uint64_t>> admitted;
  std::uint64_t mismatches = 0, charged = 0;
  for (std::uint64_t i = 0; i < c.ops; ++i) {
    switch (g.between(0, 9)) {
      case 0: break;
      case 1: now += static_cast<std::int64_t>(g.between(0, interval / 4 + 1)); break;
      case 2: now += static_cast<std::int64_t>(g.between(interval / 2, interval * 2)); break;
      case 3: now += static_cast<std::int64_t>(g.between(0, interval * c.burst)); break;
      default: now += static_cast<std::int64_t>(g.between(0, 3)); break;
    }
    if (g.chance(1)) now += static_cast<std::int64_t>(interval * c.burst * 5);
    if (big_jump > 0 && g.chance(1)) {
      const std::int64_t j = static_cast<std::int64_t>(g.between(big_jump / 2, big_jump));
      if (now > last_time - j) break;  // the schedule has reached the end of time
      now += j;
    }
    if (now > last_time) break;
    const std::uint64_t op = g.between(0, 99);
    std::uint64_t n = g.chance(90) ? g.between(1, c.burst) : (g.chance(50) ? 0 : c.burst + g.between(1, 3));
    if (op < 80) {
      const decision peek = b.time_until(n, ns(now));
      const decision d = b.try_acquire(n, ns(now));
      if (!(peek == d)) ++mismatches;
      if (n > c.burst) {
        if (!d.never()) ++mismatches;
        continue;
      }
      const std::uint64_t expect_wait = o.wait_for(n, now);
      const bool ok = o.try_take(n, now);
      if (ok != d.admitted()) ++mismatches;
      if (ok && n > 0) admitted.emplace_back(now, n);
      if (!ok) {
        if (static_cast<std::uint64_t>(d.retry_after().count()) != expect_wait) ++mismatches;
        // Exact wait: not admissible a nanosecond earlier, admissible at it.
        const ns at = ns(now) + d.retry_after();
        if (!b.time_until(n, at - ns(1)).later()) ++mismatches;
        if (!b.time_until(n, at).admitted()) ++mismatches;
      }
    } else if (op < 88) {
      if (b.available(ns(now)) != o.available(now)) ++mismatches;
    } else if (op < 95) {
      n = g.between(1, c.burst);
      if (b.refund(n, ns(now)) != o.refund(n, now)) ++mismatches;
    } else {
      n = g.between(1, c.burst);
      b.charge(n, ns(now));
      o.charge(n, now);
      charged += n;
    }
  }
  CHECK(mismatches == 0);
  // The stated bound, checked against the configured (not effective) rate.
  // Refunds and charges change what was "admitted", so only schedules
  // without them are checked here; see the next test case.
  (void)charged;
}
}  // namespace

TEST_CASE("property: the bucket matches an exact rational token bucket", "[token_bucket][oracle]") {
  const bucket_case cases[] = {
      {per_minute(3), 3, 12000},          {per_second(7), 5, 12000},         {per_day(1), 1, 6000},
      {per_second(999983), 1000, 12000},  {per_second(1000000000), 1000000, 12000},
      {per_minute(5000000), 5000000, 12000}, {per_minute(500000), 200000, 12000}, {per_day(1500000), 1500000, 12000},
      {rate(10, seconds(5)), 10, 12000},  {per_hour(1), 3, 6000},
  };
  for (const auto& c : cases)
    for (std::uint64_t s : tgtest::seeds(2)) run_bucket_oracle(c, s);
}

TEST_CASE("property: the oracle agrees across the horizon and every epoch move", "[token_bucket][oracle][edge]") {
  // Inexact rates (scale 14: a horizon of 10.44 years, the account's spaced
  // buckets), scaled exact ones (scale 7: 20.9 years) and scale 1.
  const bucket_case cases[] = {{rate(199, minutes(1)), 1, 6000}, {per_second(999983), 1000, 6000},
                               {rate(4999, minutes(1)), 3, 6000}, {per_second(7), 5, 6000},
                               {per_minute(5000000), 5000000, 6000}, {per_day(1500000), 1500000, 6000}};
  for (const auto& c : cases) {
    const bucket probe(c.r, c.burst, t0);
    const std::int64_t h = probe.horizon().count();
    for (std::uint64_t s : tgtest::seeds(2)) {
      // Just before the first move (half the horizon), just before the old
      // horizon, and far out, with jumps that cross several moves.
      for (const std::int64_t start : {h / 2 - 5 * probe.interval().count() * static_cast<std::int64_t>(c.burst),
                                       h - 5 * probe.interval().count(), times(7, h)})
        run_bucket_oracle(c, s, start, static_cast<std::uint64_t>(h / 3));
      run_bucket_oracle(c, s, std::numeric_limits<std::int64_t>::max() / 2, static_cast<std::uint64_t>(h));
    }
  }
}

TEST_CASE("the epoch moves where the header says, and only there", "[token_bucket][edge]") {
  // s = 14: the move is due 2^57 ticks = 2^57 / 14 ns after the epoch, and
  // puts the epoch 2^56 / 14 ns (whole, rounded down) before that `now`.
  bucket b(rate(199, minutes(1)), 1, seconds(5));
  REQUIRE(b.effective_rate().count == 14);
  const std::int64_t due = static_cast<std::int64_t>(((std::uint64_t{1} << 57) + 13) / 14);
  const std::int64_t keep = static_cast<std::int64_t>((std::uint64_t{1} << 56) / 14);
  const ns before = seconds(5) + ns(due - 1);
  REQUIRE(b.try_acquire(1, before).admitted());
  CHECK(b.epoch() == seconds(5));
  const decision wait = b.try_acquire(1, before);
  REQUIRE(wait.later());
  const ns at = before + wait.retry_after();  // past the point: this call moves the epoch
  CHECK(b.time_until(1, at - ns(1)).later());
  REQUIRE(b.try_acquire(1, at).admitted());
  CHECK(b.epoch() == at - ns(keep));
  // Nothing was lost or gained in the move: the next unit is one interval on.
  const decision next = b.time_until(1, at);
  REQUIRE(next.later());
  CHECK(b.time_until(1, at + next.retry_after() - ns(1)).later());
  CHECK(b.time_until(1, at + next.retry_after()).admitted());
  CHECK(next.retry_after() >= b.interval() - ns(1));
  CHECK(next.retry_after() <= b.interval());
}

TEST_CASE("a bucket driven across its horizon admits at exactly the waits it gives", "[token_bucket][edge]") {
  // Before the epoch could move, a bucket past 10.44 years answered `later`
  // with a finite wait for ever: 1 admission in 1,000 asks.
  for (const rate r : {rate(199, minutes(1)), per_second(999983), per_second(7), per_minute(5000000)}) {
    INFO("rate " << r.count << "/" << r.period.count());
    bucket b(r, 2, t0);
    const std::int64_t h = b.horizon().count();
    const rate eff = b.effective_rate();
    for (const std::int64_t start : {h / 2 - 100 * b.interval().count(), h - 100 * b.interval().count(), times(3, h),
                                     std::numeric_limits<std::int64_t>::max() - 3000 * b.interval().count()}) {
      INFO("start " << start);
      REQUIRE(b.try_acquire(2, ns(start)).admitted());  // idle since the last run: full
      ns now{start};
      std::uint64_t got = 2, asks = 0, early = 0, late = 0;
      while (asks < 2000) {
        ++asks;
        const decision d = b.try_acquire(1, now);
        if (d.admitted()) {
          ++got;
          continue;
        }
        REQUIRE(d.later());
        REQUIRE(d.retry_after() > ns(0));
        const ns at = now + d.retry_after();
        if (!b.time_until(1, at - ns(1)).later()) ++early;
        if (!b.time_until(1, at).admitted()) ++late;
        now = at;
      }
      CHECK(early == 0);
      CHECK(late == 0);
      // Exactly burst + floor(t / T) over [start, now] at the effective rate.
      const std::uint64_t t = static_cast<std::uint64_t>(now.count() - start);
      CHECK(got == 2 + static_cast<std::uint64_t>(static_cast<tgtest::u128>(t) * eff.count /
                                                  static_cast<std::uint64_t>(eff.period.count())));
      CHECK(got >= asks / 2);
      CHECK(b.epoch() <= ns(start));
    }
  }
}

TEST_CASE("property: no interval ever exceeds burst + floor(t / T)", "[token_bucket][oracle]") {
  // Pure acquire schedules, including out-of-order (stale) timestamps.
  const bucket_case cases[] = {{per_minute(3), 3, 20000},        {per_second(7), 4, 20000},
                               {per_second(999983), 50, 20000},   {per_minute(5000000), 100000, 20000},
                               {rate(10, seconds(5)), 1, 20000}};
  for (const auto& c : cases) {
    for (std::uint64_t seed : tgtest::seeds(2)) {
      INFO("rate " << c.r.count << "/" << c.r.period.count() << " burst " << c.burst << " seed " << seed);
      tgtest::rng g(seed);
      bucket b(c.r, c.burst, t0);
      const std::uint64_t interval = static_cast<std::uint64_t>(b.interval().count());
      std::int64_t latest = 0;
      std::vector<std::pair<std::int64_t, std::uint64_t>> admitted;
      for (std::uint64_t i = 0; i < c.ops; ++i) {
        latest += static_cast<std::int64_t>(g.between(0, interval * ((c.burst + 1) / 2)));
        // A third of the calls carry a stale reading up to 3 intervals old.
        std::int64_t now = latest;
        if (g.chance(33)) now -= static_cast<std::int64_t>(g.between(0, 3 * interval));
        const std::uint64_t n = g.between(1, c.burst);
        if (b.try_acquire(n, ns(now)).admitted()) admitted.emplace_back(now, n);
      }
      CHECK(admitted.size() > c.ops / 20);
      CHECK(tgtest::bucket_bound_excess(admitted, c.r.count, static_cast<std::uint64_t>(c.r.period.count()),
                                        c.burst) == 0);
    }
  }
}

TEST_CASE("a caller that keeps the bucket from sitting full gets exactly the rate", "[token_bucket][oracle]") {
  // Asking at every retry_after: over 1,000 intervals exactly burst + 1,000 units.
  for (const rate r : {per_minute(3), per_second(7), per_minute(5000000), per_day(1500000)}) {
    bucket b(r, 2, t0);
    const ns interval = b.interval();
    ns now = t0;
    std::uint64_t got = 0;
    while (now <= interval * 1000) {
      const decision d = b.try_acquire(1, now);
      if (d.admitted()) {
        ++got;
      } else {
        now += d.retry_after();
      }
    }
    CHECK(got == 2 + 1000);  // burst + floor(t / T) over the closed interval [0, 1000 T]
  }
}

TEST_CASE("bucket: every public function is defined for every now", "[token_bucket][edge]") {
  constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min(), hi = std::numeric_limits<std::int64_t>::max();
  const bucket_case cases[] = {{rate(199, minutes(1)), 1, 0}, {per_second(7), 5, 0}, {per_minute(5000000), 5000000, 0}};
  for (const auto& c : cases) {
    for (const std::int64_t origin : {lo, std::int64_t{0}, hi / 2, hi}) {
      for (std::uint64_t seed : tgtest::seeds(2)) {
        INFO("rate " << c.r.count << "/" << c.r.period.count() << " origin " << origin << " seed " << seed);
        tgtest::rng g(seed);
        bucket b(c.r, c.burst, ns(origin));
        std::uint64_t bad = 0;
        for (int i = 0; i < 3000; ++i) {
          const ns now{tgtest::extreme_time(g, origin)};
          const std::uint64_t n = g.chance(80) ? g.between(0, c.burst + 1) : g.next();
          switch (g.between(0, 9)) {
            case 0: {
              const decision peek = b.time_until(n, now);
              const decision d = b.try_acquire(n, now);
              if (peek.what() != d.what() && !(peek.later() && d.admitted())) ++bad;  // (an epoch move may only help)
              if (d.later() && d.retry_after() <= ns(0)) ++bad;
              if (!d.later() && d.retry_after() != ns(0)) ++bad;
              break;
            }
            case 1: b.charge(g.chance(50) ? n : g.between(0, 3), now); break;
            case 2: (void)b.refund(n, now); break;
            case 3:
              if (b.available(now) > b.burst()) ++bad;
              break;
            case 4:
              if (b.full_in(now) < ns(0) || b.owed(now) != b.full_in(now)) ++bad;
              break;
            case 5: b.restore_owed(ns(tgtest::extreme_time(g, 0)), now); break;
            case 6: (void)b.set_rate(g.chance(50) ? c.r : rate(c.r.count + 1, c.r.period), now); break;
            case 7: (void)b.set_burst(g.chance(50) ? c.burst : c.burst + 1, now); break;
            case 8:
              if (b.epoch() < b.origin() || b.horizon() < hours(24 * 3652)) ++bad;
              break;
            default: {
              const decision d = b.time_until(n, now);
              if (d.later() && d.retry_after() <= ns(0)) ++bad;
              break;
            }
          }
        }
        CHECK(bad == 0);
        // reset(now) forgets what is owed: full at `now`, whatever came before.
        const ns at{origin > hi - 1000000 ? origin : origin + 1000000};
        b.reset(at);
        CHECK(b.available(at) == b.burst());
        CHECK(b.try_acquire(b.burst(), at).admitted());
        CHECK(b.try_acquire(1, at).later());
      }
    }
  }
}

TEST_CASE("bucket: a bogus far-future now owes for centuries until reset(now)", "[token_bucket][edge]") {
  constexpr std::int64_t hi = std::numeric_limits<std::int64_t>::max();
  bucket b(per_minute(3), 3, t0);
  REQUIRE(b.try_acquire(3, ns(hi)).admitted());
  const decision d = b.try_acquire(1, seconds(30));
  REQUIRE(d.later());
  CHECK(d.retry_after() > hours(24 * 365 * 200));  // "never more permissive"
  b.reset(seconds(30));
  CHECK(b.epoch() == seconds(30));
  CHECK(b.try_acquire(3, seconds(30)).admitted());
  CHECK(b.time_until(1, seconds(30)).retry_after() == seconds(20));
  b.reset(seconds(40), bucket::start::empty);
  CHECK(b.available(seconds(40)) == 0);
  CHECK(b.time_until(1, seconds(40)).retry_after() == seconds(20));
}

// --- A stalled operation across reconfigurations (the tag ABA) ---
// The bucket calls detail::token_bucket_stall<Clock>::before_cas() between
// its read of the state and its CAS; for this clock it runs set_rate calls
// there once, as another thread would while this one is preempted.
namespace {
struct stall_clock {
  static ns now() noexcept { return ns(0); }
};
token_bucket<stall_clock>* stall_target = nullptr;
int stall_reconfigs = 0;
const rate stall_rates[3] = {per_second(10), per_second(1), per_second(5)};
}  // namespace

TOLLGATE_BEGIN_NAMESPACE
namespace detail {
template <>
struct token_bucket_stall<stall_clock> {
  static void before_load() noexcept {}
  static void before_cas() noexcept {
    token_bucket<stall_clock>* b = stall_target;
    if (!b) return;
    stall_target = nullptr;  // once
    for (int k = 1; k <= stall_reconfigs; ++k) (void)b->set_rate(stall_rates[k % 3], ns(0));
  }
};
}  // namespace detail
TOLLGATE_END_NAMESPACE

TEST_CASE("a try_acquire stalled across reconfigurations decides under the configuration in force", "[token_bucket][aba]") {
  // Full at 0 with burst 100 under every rate: a reconfiguration at 0 leaves
  // the TAT at 0, so after a multiple of four the word is the one read.
  for (int k : {1, 3, 4, 8, 12, 64}) {
    INFO("reconfigurations during the stall: " << k);
    token_bucket<stall_clock> b(stall_rates[0], 100, t0);
    stall_target = &b;
    stall_reconfigs = k;
    REQUIRE(b.try_acquire(100, t0).admitted());
    CHECK(stall_target == nullptr);  // the stall happened
    CHECK(b.current_rate().count == stall_rates[k % 3].count);
    // All 100 units of the burst are taken at 0 under whatever rate is in force.
    std::uint64_t extra = 0;
    while (extra < 200 && b.try_acquire(1, t0).admitted()) ++extra;
    CHECK(extra == 0);
    CHECK(b.full_in(t0) == b.interval() * 100);
  }
}

TEST_CASE("a charge stalled across reconfigurations charges under the configuration in force", "[token_bucket][aba]") {
  for (int k : {4, 8}) {
    INFO("reconfigurations during the stall: " << k);
    token_bucket<stall_clock> b(stall_rates[0], 100, t0);
    stall_target = &b;
    stall_reconfigs = k;
    b.charge(100, t0);
    CHECK(stall_target == nullptr);
    CHECK(b.available(t0) == 0);
    CHECK(b.full_in(t0) == b.interval() * 100);  // 100 units at the rate in force, not the one read
  }
}

// The same between an acquirer's read of the parameters (which it makes
// before the state, from the slot last installed) and its read of the state.
namespace {
struct early_clock {
  static ns now() noexcept { return ns(0); }
};
token_bucket<early_clock>* early_target = nullptr;
int early_reconfigs = 0;
}  // namespace

TOLLGATE_BEGIN_NAMESPACE
namespace detail {
template <>
struct token_bucket_stall<early_clock> {
  static void before_load() noexcept {
    token_bucket<early_clock>* b = early_target;
    if (!b) return;
    early_target = nullptr;  // once
    for (int k = 1; k <= early_reconfigs; ++k) (void)b->set_rate(stall_rates[k % 3], ns(0));
  }
  static void before_cas() noexcept {}
};
}  // namespace detail
TOLLGATE_END_NAMESPACE

TEST_CASE("parameters read before reconfigurations are not used for the decision", "[token_bucket][aba]") {
  // Four reconfigurations bring the same slot back (and the hint to it) under
  // another rate: only its generation, read again after the state, tells.
  for (int k : {1, 3, 4, 8}) {
    INFO("reconfigurations between the parameters and the state: " << k);
    token_bucket<early_clock> b(stall_rates[0], 100, t0);
    early_target = &b;
    early_reconfigs = k;
    REQUIRE(b.try_acquire(100, t0).admitted());
    CHECK(early_target == nullptr);  // the stall happened
    CHECK(b.current_rate().count == stall_rates[k % 3].count);
    CHECK(b.full_in(t0) == b.interval() * 100);
    // A refusal writes nothing and has no CAS to check after: its wait must
    // come from the configuration in force all the same (not 2/s, read first).
    REQUIRE(b.set_rate(per_second(2), t0) == errc::ok);
    early_target = &b;
    early_reconfigs = k;
    const decision d = b.try_acquire(1, t0);
    CHECK(early_target == nullptr);
    REQUIRE(d.later());
    CHECK(d.retry_after() == b.time_until(1, t0).retry_after());
    CHECK(d.retry_after() == b.interval());
    CHECK(b.interval() != milliseconds(500));
  }
}

// --- Refunds with a ticket ---

TEST_CASE("a ticket refunds at once what its admission took", "[token_bucket][refund]") {
  bucket b(per_minute(60), 10, t0);
  bucket_ticket t;
  REQUIRE(b.try_acquire(10, t0, t).admitted());
  CHECK(t.units == 10);
  CHECK(b.refund(t, 4, t0) == 4);
  CHECK(b.available(t0) == 4);
  CHECK(b.refund(t, 100, t0) == 6);  // no more than the ticket holds
  CHECK(b.available(t0) == 10);
  CHECK(b.refund(t, 1, t0) == 0);  // spent
  bucket_ticket none;
  CHECK(b.try_acquire(11, t0, none).never());
  CHECK(none.units == 0);
  CHECK(b.refund(none, 5, t0) == 0);
  // Part of its own intervals has passed: only the rest comes back.
  bucket_ticket u;
  REQUIRE(b.try_acquire(10, seconds(100), u).admitted());
  CHECK(b.refund(u, 10, seconds(103)) == 7);
  CHECK(b.available(seconds(103)) == 10);
}

TEST_CASE("a late refund cannot cancel a later caller's units", "[token_bucket][refund]") {
  // 1 per second, burst 1: A at 0, C at 1 s (the bucket had refilled); A's
  // refund at 1 s must not let D in at 1 s.
  bucket b(per_second(1), 1, t0);
  bucket_ticket a;
  REQUIRE(b.try_acquire(1, t0, a).admitted());
  REQUIRE(b.try_acquire(1, seconds(1)).admitted());
  CHECK(b.refund(a, 1, seconds(1)) == 0);
  CHECK(b.try_acquire(1, seconds(1)).later());
  // Burst 10 at 10/s: ten at 0, ten at 1 s, then the first ten come back.
  bucket c(per_second(10), 10, t0);
  bucket_ticket first;
  REQUIRE(c.try_acquire(10, t0, first).admitted());
  REQUIRE(c.try_acquire(10, seconds(1)).admitted());
  CHECK(c.refund(first, 10, seconds(1)) == 0);
  CHECK(c.available(seconds(1)) == 0);
}

TEST_CASE("a refund of an earlier admission does not let a later ticket overstate", "[token_bucket][refund]") {
  // T = 1 s, B = 10. Z and A take 5 each at 0 (A's TAT is 10 s); Z comes
  // back at 0; E takes 5 at 4 s (TAT 10 s). A's TAT minus `now` is 6 s, but
  // only 1 s of A's own intervals is still ahead: more would let 14 units
  // in at 4 s.
  bucket b(per_second(1), 10, t0);
  bucket_ticket z, a;
  REQUIRE(b.try_acquire(5, t0, z).admitted());
  REQUIRE(b.try_acquire(5, t0, a).admitted());
  CHECK(b.refund(z, 5, t0) == 5);
  REQUIRE(b.try_acquire(5, seconds(4)).admitted());
  CHECK(b.refund(a, 5, seconds(4)) == 1);
  // Net log: A 4 units at 0, E 5 at 4 s: at most 10 - 5 more at 4 s.
  CHECK(b.available(seconds(4)) == 5);
}

TEST_CASE("tickets from before a rate change refund nothing; epoch moves keep them", "[token_bucket][refund]") {
  bucket b(per_second(1), 10, t0);
  bucket_ticket t;
  REQUIRE(b.try_acquire(5, t0, t).admitted());
  REQUIRE(b.set_rate(per_second(2), t0) == errc::ok);
  CHECK(b.refund(t, 5, t0) == 0);
  bucket_ticket u;
  REQUIRE(b.try_acquire(2, t0, u).admitted());
  REQUIRE(b.set_burst(20, t0) == errc::ok);
  CHECK(b.refund(u, 2, t0) == 0);
  // Across an epoch move (due at 2^57 ticks past the epoch: ns at scale 1)
  // a ticket still refunds exactly.
  bucket c(per_second(1), 10, t0);
  const std::int64_t move = std::int64_t{1} << 57;
  bucket_ticket v;
  REQUIRE(c.try_acquire(4, ns(move - 1), v).admitted());
  CHECK(c.epoch() == t0);
  REQUIRE(c.try_acquire(1, ns(move + 1)).admitted());  // moves the epoch
  CHECK(c.epoch() == ns(move + 1 - (std::int64_t{1} << 56)));
  CHECK(c.refund(v, 4, ns(move + 1)) == 3);  // 4 s of its intervals, 2 ns gone: 3 whole units
  // A reset forgets what was owed, and with it what a ticket could give back.
  bucket d(per_second(1), 10, t0, bucket::start::empty);
  bucket_ticket w;
  REQUIRE(d.try_acquire(5, seconds(10), w).admitted());
  d.reset(seconds(10), bucket::start::empty);
  CHECK(d.refund(w, 5, seconds(10)) == 0);
  CHECK(d.available(seconds(10)) == 0);
}

TEST_CASE("a ticket rolls back exactly at rates whose tick is finer than a nanosecond", "[token_bucket][refund]") {
  // Scale s > 1: an admission's intervals end between two nanoseconds. The
  // account rolls an admission back at once when a later dimension refuses
  // it; that must leave the bucket as it was (a ticket end rounded to the
  // nanosecond kept one unit).
  const bucket_case cases[] = {{rate(1842, seconds(56)), 100, 0}, {per_second(7), 5, 0}, {rate(2991271, seconds(56)), 1000, 0}};
  for (const auto& c : cases) {
    INFO("rate " << c.r.count << "/" << c.r.period.count());
    for (std::int64_t at = 0; at < 40; ++at) {
      for (const std::uint64_t extra : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{16999}}) {
        INFO("at " << at << " ns, extra " << extra);
        bucket b(c.r, c.burst, t0);
        if (c.r.count == 1842) REQUIRE_FALSE(b.exact());  // 1842 / 56 s needs s = 921: rounded to s = 14
        const ns now(at * 1000003);
        // Something owed first, taken at another time, so the TAT the
        // admission starts from is not `now` itself.
        REQUIRE(b.try_acquire(1, ns(at)).admitted());
        const std::uint64_t before = b.available(now);
        const ns full_before = b.full_in(now);
        bucket_ticket t;
        REQUIRE(b.try_acquire_and_charge(1, extra, now, t).admitted());
        CHECK(b.refund(t, 1 + extra, now) == 1 + extra);
        CHECK(t.units == 0);
        CHECK(b.available(now) == before);
        CHECK(b.full_in(now) == full_before);
      }
    }
  }
}

TEST_CASE("try_acquire_and_charge checks n and charges the rest in one step", "[token_bucket][refund]") {
  bucket b(per_second(1), 1, t0);
  bucket_ticket t;
  REQUIRE(b.try_acquire_and_charge(1, 9, t0, t).admitted());
  CHECK(t.units == 10);
  CHECK(b.full_in(t0) == seconds(10));
  CHECK(b.try_acquire_and_charge(1, 0, seconds(5), t).later());
  CHECK(t.units == 0);  // a refusal leaves an empty ticket
  bucket_ticket u;
  REQUIRE(b.try_acquire_and_charge(1, 9, seconds(10), u).admitted());
  CHECK(b.refund(u, 10, seconds(12)) == 8);  // 2 s of its 10 have passed
  CHECK(b.full_in(seconds(12)) == seconds(0));
  bucket_ticket z;
  CHECK(b.try_acquire_and_charge(0, 3, seconds(12), z).admitted());  // n == 0: only the charge
  CHECK(b.full_in(seconds(12)) == seconds(3));
}

namespace {
// Largest excess over B + floor(t / T) of any run of entries (in the order
// they were made, times non-decreasing) that ends with an admission: that is
// what the bucket's state promises, with charges and try_acquire_and_charge
// counted as usage. T = interval / scale ns.
std::uint64_t ending_at_admissions_excess(const std::vector<std::pair<std::int64_t, std::int64_t>>& e,
                                          const std::vector<bool>& admission, std::uint64_t scale,
                                          std::uint64_t interval, std::uint64_t burst) {
  std::int64_t worst = 0;
  for (std::size_t j = 0; j < e.size(); ++j) {
    if (!admission[j]) continue;
    std::int64_t sum = 0;
    for (std::size_t i = j + 1; i-- > 0;) {
      sum += e[i].second;
      const tgtest::u128 span = static_cast<tgtest::u128>(e[j].first - e[i].first) * scale / interval;
      const std::int64_t over = sum - static_cast<std::int64_t>(burst) - static_cast<std::int64_t>(span);
      if (over > worst) worst = over;
    }
  }
  return static_cast<std::uint64_t>(worst);
}
}  // namespace

TEST_CASE("property: ticketed refunds keep the bound against an exact log", "[token_bucket][oracle][refund]") {
  const bucket_case cases[] = {{per_second(10), 10, 0}, {per_minute(3), 3, 0}, {per_second(7), 5, 0},
                               {per_second(999983), 40, 0}, {per_second(1), 1, 0}};
  // 40 seeds: a refund rule that trusts the TAT a ticket saw (instead of the
  // admission's own intervals) fails about one seed in eight.
  for (const std::uint64_t seed : tgtest::seeds(40)) {
    for (const bucket_case& c : cases) {
      std::ostringstream label;
      label << "seed " << seed << " (TOLLGATE_SEED=" << seed << ") rate " << c.r.count << "/" << c.r.period.count()
            << "ns burst " << c.burst;
      INFO(label.str());
      tgtest::rng g(seed ^ c.r.count);
      bucket b(c.r, c.burst, t0);
      struct held {
        bucket_ticket t;
        std::size_t entry;   // its index in the current segment's log, or npos
        std::uint64_t segment;
        std::size_t extra;   // the entry of its charged part, refunded first, or npos
      };
      std::vector<held> tickets;
      std::vector<std::pair<std::int64_t, std::int64_t>> log;  // (time, net units), this configuration only
      std::vector<bool> admission;
      std::vector<std::pair<std::int64_t, std::uint64_t>> plain;  // plain admissions only, net, for bucket_bound_excess
      std::vector<std::size_t> plain_of;  // log index -> plain index (or npos)
      const std::size_t npos = static_cast<std::size_t>(-1);
      std::uint64_t segment = 0, burst = c.burst;
      std::uint64_t count = c.r.count, period = static_cast<std::uint64_t>(c.r.period.count());
      auto check_segment = [&] {
        const rate eff = b.effective_rate();
        CHECK(ending_at_admissions_excess(log, admission, eff.count, static_cast<std::uint64_t>(eff.period.count()),
                                          burst) == 0);
        CHECK(tgtest::bucket_bound_excess(plain, eff.count, static_cast<std::uint64_t>(eff.period.count()), burst) == 0);
      };
      std::int64_t now = 0;
      const std::int64_t step = b.interval().count();
      for (int op = 0; op < 400; ++op) {
        // Mostly less than an interval apart, so admissions stack and
        // refunds of older tickets come after newer ones.
        if (!g.chance(30)) now += static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(step) * (g.chance(10) ? 5 : 1)));
        const std::uint64_t kind = g.between(0, 99);
        if (kind < 40) {  // acquire with a ticket
          held h{{}, npos, segment, npos};
          const std::uint64_t n = g.between(1, burst);
          if (b.try_acquire(n, ns(now), h.t).admitted()) {
            h.entry = log.size();
            log.emplace_back(now, static_cast<std::int64_t>(n));
            admission.push_back(true);
            plain_of.push_back(plain.size());
            plain.emplace_back(now, n);
            tickets.push_back(std::move(h));
          }
        } else if (kind < 50) {  // acquire and charge
          // Logged as its two parts: the admission checks only n.
          held h{{}, npos, segment, npos};
          const std::uint64_t n = g.between(0, 2), extra = g.between(0, burst * 2);
          if (b.try_acquire_and_charge(n, extra, ns(now), h.t).admitted() && n + extra > 0) {
            h.entry = log.size();
            log.emplace_back(now, static_cast<std::int64_t>(n));
            admission.push_back(n > 0);
            plain_of.push_back(npos);
            h.extra = log.size();
            log.emplace_back(now, static_cast<std::int64_t>(extra));
            admission.push_back(false);
            plain_of.push_back(npos);
            tickets.push_back(std::move(h));
          }
        } else if (kind < 58) {  // charge
          const std::uint64_t n = g.between(1, burst);
          b.charge(n, ns(now));
          log.emplace_back(now, static_cast<std::int64_t>(n));
          admission.push_back(false);
          plain_of.push_back(npos);
        } else if (kind < 90) {  // refund some ticket, early or late
          if (tickets.empty()) continue;
          const std::size_t recent = tickets.size() > 6 ? tickets.size() - 6 : 0;
          held& h = tickets[g.chance(80) ? g.between(recent, tickets.size() - 1) : g.between(0, tickets.size() - 1)];
          const std::uint64_t before = h.t.units;
          const std::uint64_t got = b.refund(h.t, g.between(1, before + 2), ns(now));
          CHECK(got <= before);
          CHECK(h.t.units == before - got);
          if (h.segment != segment) {
            CHECK(got == 0);  // from before a reconfiguration
          } else if (got > 0) {
            std::int64_t left = static_cast<std::int64_t>(got);
            if (h.extra != npos) {
              const std::int64_t x = std::min(left, log[h.extra].second);
              log[h.extra].second -= x;
              left -= x;
            }
            log[h.entry].second -= left;
            if (plain_of[h.entry] != npos) plain[plain_of[h.entry]].second -= static_cast<std::uint64_t>(left);
          }
        } else if (kind < 99) {  // a plain acquire: usage nobody refunds
          const std::uint64_t n = g.between(1, burst);
          if (b.try_acquire(n, ns(now)).admitted()) {
            log.emplace_back(now, static_cast<std::int64_t>(n));
            admission.push_back(true);
            plain_of.push_back(plain.size());
            plain.emplace_back(now, n);
          }
        } else {  // reconfigure: a new segment, checked on its own
          check_segment();
          log.clear();
          admission.clear();
          plain.clear();
          plain_of.clear();
          ++segment;
          if (g.chance(50)) {
            count = c.r.count * g.between(1, 3);
            REQUIRE(b.set_rate(rate(count, ns(static_cast<std::int64_t>(period))), ns(now)) == errc::ok);
          } else {
            burst = g.between(1, c.burst * 2);
            REQUIRE(b.set_burst(burst, ns(now)) == errc::ok);
          }
        }
      }
      check_segment();
    }
  }
}

// The schedule that found it: a bucket restored from another's owed() (a
// restart in one process) took a ticket of the old bucket, for an
// admission made after the export, and gave its units back against the
// restored debt: 5 + 5 used, then 10 more at the same instant (burst 10).
// A ticket names its bucket's configuration, and no two buckets share one.
TEST_CASE("tickets of another bucket refund nothing: not into a restored one either", "[token_bucket][refund][snapshot]") {
  const std::int64_t s = 1000000000;
  tgtest::rng g(tgtest::seed_for(0x70b5));
  INFO(tgtest::seed_note());
  for (int round = 0; round < 50; ++round) {
    const std::uint64_t burst = g.between(2, 40), before = g.between(1, burst - 1);
    const ns now(static_cast<std::int64_t>(g.between(0, 1000)) * s + static_cast<std::int64_t>(g.between(0, s)));
    INFO("round " << round << " burst " << burst << " before " << before << " now " << now.count());
    bucket x(rate(burst, ns(10 * s)), burst, ns(0));
    bucket_ticket ta, tb;
    REQUIRE(x.try_acquire(before, now, ta).admitted());
    const ns owed = x.owed(now);
    REQUIRE(x.try_acquire(burst - before, now, tb).admitted());  // after the export: not in the restored debt
    bucket y(rate(burst, ns(10 * s)), burst, ns(0));
    y.restore_owed(owed, now);
    CHECK(y.refund(tb, burst - before, now) == 0);
    CHECK(y.refund(ta, before, now) == 0);
    bucket z(rate(burst, ns(10 * s)), burst, ns(0));  // the same restore, no refunds
    z.restore_owed(owed, now);
    CHECK(y.available(now) == z.available(now));
    CHECK(y.available(now) <= burst - before);
    // Two buckets of one configuration, neither restored.
    bucket a(rate(burst, ns(10 * s)), burst, ns(0)), b(rate(burst, ns(10 * s)), burst, ns(0));
    bucket_ticket tk;
    REQUIRE(a.try_acquire(burst, now, tk).admitted());
    REQUIRE(b.try_acquire(burst, now).admitted());
    bucket_ticket copy = tgtest::forge(tk);
    CHECK(b.refund(copy, burst, now) == 0);
    CHECK(b.available(now) == 0);
    // A bucket's own tickets still give back, also after a rate change in another bucket.
    REQUIRE(b.set_rate(rate(burst, ns(20 * s)), now) == errc::ok);
    CHECK(a.refund(tk, burst, now) == burst);
  }
}

// A ticket names its issuer twice: by the issuer's address and by a number
// (a bucket's configuration, a window's or a quota's identity). Numbers of
// one process never repeat; one drawn by another process (an object it built
// in shared memory) meets one of ours only by chance, which the forged
// tickets below make happen: the address still refuses them. An object built
// where a destroyed one was is told apart by its number.
TEST_CASE("tickets: honoured only by the object that issued them, by address and number",
          "[token_bucket][sliding_window][calendar_quota][refund]") {
  const ns now{0};
  SECTION("bucket_ticket") {
    bucket a(per_minute(10), 10, now), b(per_minute(10), 10, now);
    bucket_ticket ta, tb;
    REQUIRE(a.try_acquire(10, now, ta).admitted());
    REQUIRE(b.try_acquire(10, now, tb).admitted());
    CHECK(ta.issuer == reinterpret_cast<std::uintptr_t>(&a));
    CHECK(ta.config != tb.config);
    CHECK(ta.config != 0);
    bucket_ticket same_number = tgtest::forge(ta);
    same_number.config = tb.config;  // as if a's number had been drawn for b too
    CHECK(b.refund(same_number, 10, now) == 0);
    CHECK(b.available(now) == 0);
    // Rebuilt from its fields without the address (as the account does): the
    // number alone decides, and it is b's.
    bucket_ticket rebuilt{tb.end, 3, tb.config};
    CHECK(b.refund(rebuilt, 3, now) == 3);
    bucket_ticket rebuilt_a{ta.end, 3, ta.config};
    CHECK(b.refund(rebuilt_a, 3, now) == 0);
    CHECK(a.refund(ta, 10, now) == 10);
    // Reconfiguring draws a new number: the ticket from before gives nothing.
    bucket_ticket before;
    REQUIRE(a.try_acquire(10, now, before).admitted());
    REQUIRE(a.set_burst(10, now) == errc::ok);
    CHECK(a.refund(before, 10, now) == 0);
    // A bucket built where a destroyed one was.
    struct alignas(bucket) storage_t {
      unsigned char b[sizeof(bucket)];
    } storage;
    bucket* x = new (storage.b) bucket(per_minute(10), 10, now);
    bucket_ticket tx;
    REQUIRE(x->try_acquire(10, now, tx).admitted());
    x->~bucket();
    bucket* y = new (storage.b) bucket(per_minute(10), 10, now);
    REQUIRE(y->try_acquire(10, now).admitted());
    CHECK(tx.issuer == reinterpret_cast<std::uintptr_t>(y));
    CHECK(y->refund(tx, 10, now) == 0);
    CHECK(y->available(now) == 0);
  }
  SECTION("window_ticket") {
    using window = sliding_window<manual_clock>;
    window a(per_minute(10), now), b(per_minute(10), now);
    window_ticket ta, tb;
    REQUIRE(a.try_acquire(10, now, ta).admitted());
    REQUIRE(b.try_acquire(10, now, tb).admitted());
    CHECK(ta.issuer == reinterpret_cast<std::uintptr_t>(&a));
    CHECK(ta.window != tb.window);
    window_ticket same_number{ta.slot, ta.tokens, ta.units, tb.window, ta.issuer};
    CHECK(b.refund(same_number, 10) == 0);
    CHECK(b.available(now) == 0);
    window_ticket right{tb.slot, 4, 4, tb.window, tb.issuer};
    CHECK(b.refund(right, 4) == 4);
    CHECK(a.refund(ta, 10) == 10);
    struct alignas(window) storage_t {
      unsigned char b[sizeof(window)];
    } storage;
    window* x = new (storage.b) window(per_minute(10), now);
    window_ticket tx;
    REQUIRE(x->try_acquire(10, now, tx).admitted());
    x->~window();
    window* y = new (storage.b) window(per_minute(10), now);
    REQUIRE(y->try_acquire(10, now).admitted());
    CHECK(y->refund(tx, 10) == 0);
    CHECK(y->available(now) == 0);
  }
  SECTION("quota_ticket") {
    using quota = calendar_quota<manual_clock>;
    quota a(100), b(100);
    quota_ticket ta, tb;
    REQUIRE(a.try_acquire(100, now, ta).admitted());
    REQUIRE(b.try_acquire(100, now, tb).admitted());
    CHECK(ta.issuer == reinterpret_cast<std::uintptr_t>(&a));
    CHECK(ta.quota != tb.quota);
    quota_ticket same_number = tgtest::forge(ta);
    same_number.quota = tb.quota;
    CHECK(b.refund(same_number, 100) == 0);
    CHECK(b.available(now) == 0);
    quota_ticket rebuilt{tb.day, 5, tb.quota};
    CHECK(b.refund(rebuilt, 5) == 5);
    CHECK(a.refund(ta, 100) == 100);
    struct alignas(quota) storage_t {
      unsigned char b[sizeof(quota)];
    } storage;
    quota* x = new (storage.b) quota(100);
    quota_ticket tx;
    REQUIRE(x->try_acquire(100, now, tx).admitted());
    x->~quota();
    quota* y = new (storage.b) quota(100);
    REQUIRE(y->try_acquire(100, now).admitted());
    CHECK(y->refund(tx, 100) == 0);
    CHECK(y->available(now) == 0);
  }
}

// Identities: never 0, never repeated within a process, also drawn from many
// threads at once.
TEST_CASE("tickets: identities are distinct across threads", "[token_bucket][refund]") {
  constexpr int threads = 4, each = 2000;
  std::vector<std::vector<std::uint64_t>> got(threads);
  std::vector<std::thread> ts;
  for (int i = 0; i < threads; ++i)
    ts.emplace_back([&got, i] {
      for (int k = 0; k < each; ++k) got[static_cast<std::size_t>(i)].push_back(detail::fresh_identity());
    });
  for (auto& t : ts) t.join();
  std::vector<std::uint64_t> all;
  for (auto& g : got) all.insert(all.end(), g.begin(), g.end());
  std::sort(all.begin(), all.end());
  CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());
  CHECK(all.front() != 0);
  CHECK(all.size() == std::size_t{threads} * each);
}

// Tickets are move-only (tests/compile_fail); a moved-from one holds no units
// and refunds nothing, so moving a ticket cannot make a second refund.
TEST_CASE("tickets: a moved-from ticket refunds nothing", "[token_bucket][calendar_quota][keyed][refund]") {
  const ns now{0};
  SECTION("bucket_ticket") {
    bucket b(per_minute(10), 10, now);
    bucket_ticket t;
    REQUIRE(b.try_acquire(10, now, t).admitted());
    bucket_ticket moved = std::move(t);
    CHECK(t.units == 0);  // NOLINT(bugprone-use-after-move): what a moved-from ticket holds is the contract
    CHECK(b.refund(t, 10, now) == 0);
    CHECK(b.available(now) == 0);
    CHECK(b.refund(moved, 10, now) == 10);
    bucket_ticket assigned;
    assigned = std::move(moved);
    CHECK(b.refund(moved, 10, now) == 0);
  }
  SECTION("quota_ticket") {
    calendar_quota<manual_clock> q(100);
    quota_ticket t;
    REQUIRE(q.try_acquire(100, now, t).admitted());
    quota_ticket moved = std::move(t);
    CHECK(t.units == 0);  // NOLINT(bugprone-use-after-move)
    CHECK(q.refund(t, 100) == 0);
    CHECK(q.available(now) == 0);
    CHECK(q.refund(moved, 40) == 40);
    quota_ticket assigned;
    assigned = std::move(moved);
    CHECK(q.refund(moved, 60) == 0);
    CHECK(q.refund(assigned, 60) == 60);
  }
  SECTION("keyed_ticket") {
    keyed_buckets<manual_clock> k(64, {{per_minute(10), 10}}, hash_seed{1, 2}, now);
    keyed_ticket t;
    REQUIRE(k.try_acquire(7, 0, 10, now, t).admitted());
    keyed_ticket moved = std::move(t);
    CHECK(t.units == 0);  // NOLINT(bugprone-use-after-move)
    CHECK(k.refund(7, t, 10, now) == 0);
    CHECK(k.available(7, 0, now) == 0);
    keyed_ticket assigned;
    assigned = std::move(moved);
    CHECK(k.refund(7, moved, 10, now) == 0);
    CHECK(k.refund(7, assigned, 10, now) == 10);
  }
}

TEST_CASE("a debt saturated at the horizon is admitted at exactly the wait it gives", "[token_bucket][edge]") {
  // charge() of a garbage count saturates the TAT at the horizon; the wait
  // then reaches past it, where the epoch moves. The move measured what was
  // owed from the clamped `now`: one interval more, so the request was
  // refused again at now + wait (for one interval less 1 ns).
  for (const std::int64_t per : {std::int64_t{5456545455}, std::int64_t{1000}, std::int64_t{3000000}, std::int64_t{20000000000}}) {
    for (const std::uint64_t burst : {std::uint64_t{1}, std::uint64_t{3}}) {
      INFO("T " << per << " ns, B " << burst);
      bucket b(rate(1, ns(per)), burst, ns(0));
      const ns now = seconds(150);
      b.charge(std::numeric_limits<std::uint64_t>::max() / 2, now);
      const decision d = b.try_acquire(1, now);
      REQUIRE(d.later());
      const ns at = now + d.retry_after();
      CHECK(b.try_acquire(1, at - ns(1)).later());  // a writer there: the epoch moves
      CHECK(b.time_until(1, at - ns(1)).later());
      CHECK(b.time_until(1, at).admitted());
      CHECK(b.try_acquire(1, at).admitted());  // was later, one interval less 1 ns
    }
  }
}
