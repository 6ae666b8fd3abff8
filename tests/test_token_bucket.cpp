#include "catch_compat.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <limits>
#include <sstream>

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
