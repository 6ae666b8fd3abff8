// keyed_budgets with a calendar period: the period arithmetic against a
// calendar walked one day at a time; reservations straddling boundaries;
// time going backwards; a per-key oracle over random schedules crossing
// many day and month boundaries; threads racing rollovers on a shared clock.
#include "catch_compat.hpp"
#include "keyed_support.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace tollgate;
using tgtest::ns;

namespace {

using namespace tgkeyed;

using tgtest::day_ns;
constexpr std::int64_t minute_ns = 60LL * 1000000000LL;

// Months since 1970-01 of every day since 1970-01-01 up to past the year
// 2262, walking the calendar one day at a time (the oracle: no formula).
const std::vector<std::uint32_t>& walked_months() {
  static const std::vector<std::uint32_t> months = [] {
    std::vector<std::uint32_t> out;
    int y = 1970, m = 1, d = 1;
    std::uint32_t index = 0;
    while (out.size() < 106800) {
      out.push_back(index);
      static const int length[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
      const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
      const int len = m == 2 && leap ? 29 : length[m - 1];
      if (++d > len) {
        d = 1;
        ++index;
        if (++m > 12) m = 1, ++y;
      }
    }
    return out;
  }();
  return months;
}

// The oracle's period of `now` at an offset (minutes).
std::uint64_t oracle_period(budget_period kind, std::int64_t offset_min, std::int64_t now) {
  const tgtest::i128 local = static_cast<tgtest::i128>(now) + offset_min * minute_ns;
  if (local < 0) return 0;
  const std::int64_t day = static_cast<std::int64_t>(local / day_ns);
  return kind == budget_period::day ? static_cast<std::uint64_t>(day)
                                    : walked_months().at(static_cast<std::size_t>(day));
}

// The first instant (UTC ns) of the day `day` (since 1970-01-01) at the
// offset, in 128 bits (the last days start past INT64_MAX).
tgtest::i128 day_start128(std::int64_t day, std::int64_t offset_min) {
  return static_cast<tgtest::i128>(day) * day_ns - offset_min * minute_ns;
}
// The same for days well inside the range.
std::int64_t day_start(std::int64_t day, std::int64_t offset_min) {
  return static_cast<std::int64_t>(day_start128(day, offset_min));
}

using budgets = keyed_budgets<usd_tag>;

budget_calendar cal(budget_period p, std::int64_t offset_min) {
  budget_calendar c;
  c.period = p;
  c.utc_offset = std::chrono::minutes(offset_min);
  return c;
}

const std::int64_t offsets[] = {0, 345, -720, 840, 330, -570, 1440, -1440, 1};

}  // namespace

TEST_CASE("keyed periods: the period of a time matches a walked calendar", "[keyed]") {
  INFO(tgtest::seed_note());
  // Known days: 2024-02-29 is day 19782, 2000-03-01 day 11017, 2100-01-01
  // day 47482 (2100 is not a leap year).
  const budgets month(4, {usd::from_units(1)}, hash_seed{}, cal(budget_period::month, 0));
  CHECK(month.period_at(ns(19782 * day_ns)) == (2024 - 1970) * 12 + 1);
  CHECK(month.period_at(ns(19783 * day_ns)) == (2024 - 1970) * 12 + 2);
  CHECK(month.period_at(ns(19783 * day_ns - 1)) == (2024 - 1970) * 12 + 1);
  CHECK(month.period_at(ns(11017 * day_ns)) == (2000 - 1970) * 12 + 2);
  CHECK(month.period_at(ns(47482 * day_ns)) == (2100 - 1970) * 12);
  CHECK(month.period_at(ns(47482 * day_ns - 1)) == (2100 - 1970) * 12 - 1);
  CHECK(month.period_at(ns(std::numeric_limits<std::int64_t>::max())) == 3507);  // 2262-04
  CHECK(month.period_at(ns(std::numeric_limits<std::int64_t>::min())) == 0);
  CHECK(month.period_at(ns(-1)) == 0);
  // +05:45: March 2024 starts at 2024-02-29 18:15 UTC.
  const budgets nepal(4, {usd::from_units(1)}, hash_seed{}, cal(budget_period::month, 345));
  const std::int64_t march = 19783 * day_ns - 345 * minute_ns;
  CHECK(nepal.period_at(ns(march)) == (2024 - 1970) * 12 + 2);
  CHECK(nepal.period_at(ns(march - 1)) == (2024 - 1970) * 12 + 1);
  CHECK(nepal.reset_in(ns(march - 1)) == ns(1));
  // -12:00: 2025 starts at 2025-01-01 12:00 UTC.
  const budgets baker(4, {usd::from_units(1)}, hash_seed{}, cal(budget_period::month, -720));
  const std::int64_t y2025 = 20089 * day_ns + 720 * minute_ns;
  CHECK(baker.period_at(ns(y2025)) == (2025 - 1970) * 12);
  CHECK(baker.period_at(ns(y2025 - 1)) == (2025 - 1970) * 12 - 1);
  const budgets none(4, {usd::from_units(1)}, hash_seed{});
  CHECK(none.period_at(ns(y2025)) == 0);
  CHECK(none.reset_in(ns(y2025)) == ns::max());

  for (const budget_period kind : {budget_period::day, budget_period::month}) {
    for (const std::int64_t off : offsets) {
      INFO("kind " << static_cast<int>(kind) << " offset " << off);
      const budgets t(4, {usd::from_units(1)}, hash_seed{}, cal(kind, off));
      // Every boundary near the ends of the range, and a sample of the rest.
      tgtest::rng g(tgtest::seed_for(0xca1e + static_cast<std::uint64_t>(off + 2000)));
      for (int i = 0; i < 4000; ++i) {
        std::int64_t day = 0;
        const std::uint64_t pick = g.between(0, 3);
        if (pick == 0) day = static_cast<std::int64_t>(g.between(0, 800));
        else if (pick == 1) day = static_cast<std::int64_t>(g.between(106000, 106752));
        else day = static_cast<std::int64_t>(g.between(0, 106752));
        const tgtest::i128 start = day_start128(day, off);
        for (const std::int64_t d : {std::int64_t{-1}, std::int64_t{0}, std::int64_t{1}, day_ns / 2}) {
          const tgtest::i128 now128 = start + d;
          if (now128 > std::numeric_limits<std::int64_t>::max()) continue;
          const std::int64_t now = static_cast<std::int64_t>(now128);
          const std::uint64_t p = oracle_period(kind, off, now);
          REQUIRE(t.period_at(ns(now)) == p);
          // The next reset is the first instant of the next period.
          const std::int64_t wait = t.reset_in(ns(now)).count();
          REQUIRE(wait >= 1);
          if (wait == std::numeric_limits<std::int64_t>::max() || now > std::numeric_limits<std::int64_t>::max() - wait)
            continue;
          REQUIRE(t.period_at(ns(now + wait)) == p + 1);
          REQUIRE(t.period_at(ns(now + wait - 1)) == p);
        }
      }
      for (int i = 0; i < 2000; ++i) {  // arbitrary times, the extremes included
        const std::int64_t now = tgtest::extreme_time(g, 19782 * day_ns);
        REQUIRE(t.period_at(ns(now)) == oracle_period(kind, off, now));
        REQUIRE(t.reset_in(ns(now)).count() >= 1);
      }
    }
  }
}

TEST_CASE("keyed periods: configurations", "[keyed]") {
  errc ec = errc::ok;
  budgets far(4, {usd::from_units(1)}, hash_seed{}, cal(budget_period::day, 24 * 60 + 1), keyed_budget_reuse::never,
              16, ec);
  CHECK(ec == errc::too_large);
  budgets far2(4, {usd::from_units(1)}, hash_seed{}, cal(budget_period::day, -24 * 60 - 1),
               keyed_budget_reuse::never, 16, ec);
  CHECK(ec == errc::too_large);
  budgets edge(4, {usd::from_units(1)}, hash_seed{}, cal(budget_period::day, -24 * 60), keyed_budget_reuse::never, 16,
               ec);
  CHECK(ec == errc::ok);
  budgets big_day(4, {usd::from_nanos(budgets::max_day_limit + 1)}, hash_seed{}, cal(budget_period::day, 0),
                  keyed_budget_reuse::never, 16, ec);
  CHECK(ec == errc::too_large);
  CHECK(big_day.reserve(std::uint64_t{1}, 0, usd::from_nanos(1), ns(0)).status == keyed_status::bad_class);
  budgets top_day(4, {usd::from_nanos(budgets::max_day_limit)}, hash_seed{}, cal(budget_period::day, 0),
                  keyed_budget_reuse::never, 16, ec);
  CHECK(ec == errc::ok);
  budgets big_month(4, {usd::from_nanos(budgets::max_day_limit + 1)}, hash_seed{}, cal(budget_period::month, 0),
                    keyed_budget_reuse::never, 16, ec);
  CHECK(ec == errc::ok);
  budgets bigger(4, {usd::from_nanos(budgets::max_month_limit + 1)}, hash_seed{}, cal(budget_period::month, 0),
                 keyed_budget_reuse::never, 16, ec);
  CHECK(ec == errc::too_large);
  budget_calendar odd;
  odd.period = static_cast<budget_period>(7);
  budgets bad_kind(4, {usd::from_units(1)}, hash_seed{}, odd, keyed_budget_reuse::never, 16, ec);
  CHECK(ec == errc::too_large);
  // No period: limits up to the maximum, and time does not matter.
  budgets plain(4, {usd::from_nanos(std::numeric_limits<std::int64_t>::max())}, hash_seed{},
                budget_calendar{}, keyed_budget_reuse::never, 16, ec);
  CHECK(ec == errc::ok);
  CHECK(budgets::bytes_per_entry() == 72);

  // A full-size day limit: the word's largest ordinary total, then the
  // saturation mark for the rest of the day, and a new day starts over.
  keyed_reservation<usd_tag> r = top_day.reserve(std::uint64_t{9}, 0, usd::from_nanos(budgets::max_day_limit), ns(0));
  REQUIRE(r);
  CHECK(top_day.remaining(std::uint64_t{9}, 0, ns(0)) == usd());
  CHECK(top_day.settle(r, usd::from_nanos(std::numeric_limits<std::int64_t>::max()), ns(0)).nanos() < 0);
  keyed_reservation<usd_tag> s = top_day.reserve(std::uint64_t{9}, 0, usd::from_nanos(1), ns(1));
  CHECK(s.status == keyed_status::limited);
  CHECK(s.saturated);
  CHECK(top_day.remaining(std::uint64_t{9}, 0, ns(day_ns)) == usd::from_nanos(budgets::max_day_limit));
  keyed_reservation<usd_tag> n = top_day.reserve(std::uint64_t{9}, 0, usd::from_nanos(5), ns(day_ns));
  CHECK(n);
  CHECK(n.period() == 1);
  CHECK(top_day.remaining(std::uint64_t{9}, 0, ns(day_ns)) == usd::from_nanos(budgets::max_day_limit - 5));
}

// Monthly budget of 10 at +05:45: a reservation made in January and
// settled in February is carried into February as committed and charged
// there; a dropped one stays in the period of the drop.
TEST_CASE("keyed periods: reservations straddling a boundary", "[keyed]") {
  const std::int64_t off = 345;
  budgets t(16, {usd::from_units(10)}, seed_from(0x57a0), cal(budget_period::month, off));
  const std::int64_t feb = day_start(19754, off);  // 2024-02-01 00:00 at +05:45
  const std::int64_t jan = feb - 3600LL * 1000000000LL;
  const std::uint64_t p_jan = (2024 - 1970) * 12, p_feb = p_jan + 1;
  REQUIRE(t.period_at(ns(feb)) == p_feb);
  REQUIRE(t.period_at(ns(jan)) == p_jan);
  keyed_reservation<usd_tag> a = t.reserve("t", 0, usd::from_units(6), ns(jan));
  REQUIRE(a);
  CHECK(a.period() == p_jan);
  CHECK(t.remaining("t", 0, ns(jan)) == usd::from_units(4));
  // Before any call in February, a peek already shows the rollover.
  CHECK(t.remaining("t", 0, ns(feb)) == usd::from_units(4));
  CHECK(t.spent("t", ns(feb)) == usd());
  keyed_reservation<usd_tag> b = t.reserve("t", 0, usd::from_units(3), ns(feb));
  REQUIRE(b);
  CHECK(b.period() == p_feb);
  CHECK(t.remaining("t", 0, ns(feb)) == usd::from_units(1));
  // January's reservation settles in February: charged there.
  CHECK(t.settle(a, usd::from_units(2), ns(feb)) == usd::from_units(4));
  CHECK(a.period() == p_feb);
  CHECK(t.remaining("t", 0, ns(feb)) == usd::from_units(5));
  CHECK(t.spent("t", ns(feb)) == usd::from_units(2));
  // A settle whose `now` is back in January counts in February too.
  CHECK(t.settle(b, usd::from_units(3), ns(jan)) == usd());
  CHECK(b.period() == p_feb);
  CHECK(t.spent("t", ns(jan)) == usd::from_units(5));
  CHECK(t.remaining("t", 0, ns(feb)) == usd::from_units(5));
  // Dropped in February: committed in February, not carried into March.
  keyed_reservation<usd_tag> c = t.reserve("t", 0, usd::from_units(4), ns(feb));
  REQUIRE(c);
  c.drop();
  CHECK(t.remaining("t", 0, ns(feb)) == usd::from_units(1));
  const std::int64_t mar = day_start(19783, off);
  CHECK(t.remaining("t", 0, ns(mar)) == usd::from_units(10));
  // Held across several periods with no call between: carried straight
  // from February into May, charged in May.
  keyed_reservation<usd_tag> d = t.reserve("t", 0, usd::from_units(1), ns(feb));
  REQUIRE(d);
  const std::int64_t may = day_start(19844, off);  // 2024-05-01
  REQUIRE(t.period_at(ns(may)) == p_feb + 3);
  CHECK(t.remaining("t", 0, ns(may)) == usd::from_units(9));
  CHECK(t.settle(d, usd::from_nanos(250), ns(may)) == usd::from_nanos(1000000000 - 250));
  CHECK(d.period() == p_feb + 3);
  CHECK(t.spent("t", ns(may)) == usd::from_nanos(250));
  CHECK(t.remaining("t", 0, ns(may)) == usd::from_nanos(10000000000 - 250));
  // A refusal in a new period does not roll the entry over.
  budgets u(4, {usd::from_units(10)}, seed_from(0x57a1), cal(budget_period::day, 0));
  keyed_reservation<usd_tag> e = u.reserve("u", 0, usd::from_units(8), ns(0));
  REQUIRE(e);
  CHECK(u.reserve("u", 0, usd::from_units(3), ns(day_ns)).missing == usd::from_units(1));
  CHECK(u.settle(e, usd::from_units(1), ns(0)) == usd::from_units(7));
  CHECK(u.spent("u", ns(0)) == usd::from_units(1));  // still day 0: the refusal changed nothing
  CHECK(u.remaining("u", 0, ns(day_ns)) == usd::from_units(10));
}

TEST_CASE("keyed periods: time going backwards never reopens an old period", "[keyed]") {
  budgets t(16, {usd::from_units(10)}, seed_from(0xbac0), cal(budget_period::day, -720));
  const std::int64_t d1 = day_start(19782, -720), d0 = d1 - 1;  // Feb 29 2024 at -12:00, and the instant before
  keyed_reservation<usd_tag> a = t.reserve(std::uint64_t{5}, 0, usd::from_units(1), ns(d0));
  REQUIRE(a);
  CHECK(t.settle(a, usd::from_units(1), ns(d0)) == usd());
  // Day 0 has 9 left; day 1 takes 9 of its 10.
  keyed_reservation<usd_tag> b = t.reserve(std::uint64_t{5}, 0, usd::from_units(9), ns(d1));
  REQUIRE(b);
  CHECK(b.period() == 19782);
  // Back in the earlier day: decided in day 1, not against day 0's 9.
  keyed_reservation<usd_tag> c = t.reserve(std::uint64_t{5}, 0, usd::from_units(5), ns(d0));
  CHECK(c.status == keyed_status::limited);
  CHECK(c.missing == usd::from_units(4));
  keyed_reservation<usd_tag> d = t.reserve(std::uint64_t{5}, 0, usd::from_units(1), ns(d0 - 40 * day_ns));
  REQUIRE(d);
  CHECK(d.period() == 19782);
  CHECK(t.remaining(std::uint64_t{5}, 0, ns(d0)) == usd());
  CHECK(t.remaining(std::uint64_t{5}, 0, ns(std::numeric_limits<std::int64_t>::min())) == usd());
  t.release(d, ns(d0));
  CHECK(d.period() == 19782);
  CHECK(t.remaining(std::uint64_t{5}, 0, ns(d1)) == usd::from_units(1));
  // A bogus far-future `now` moves the key there for good; erase resets it.
  keyed_reservation<usd_tag> f = t.reserve(std::uint64_t{5}, 0, usd::from_units(1),
                                           ns(std::numeric_limits<std::int64_t>::max()));
  REQUIRE(f);
  CHECK(f.period() == t.period_at(ns(std::numeric_limits<std::int64_t>::max())));
  CHECK(t.settle(f, usd::from_units(1), ns(d1)) == usd());
  // That day holds b's 9 (carried) and f's 1, at every ordinary `now`.
  CHECK(t.remaining(std::uint64_t{5}, 0, ns(d1 + 10 * day_ns)) == usd());
  CHECK(t.spent(std::uint64_t{5}, ns(d1)) == usd::from_units(1));
  CHECK(t.erase(std::uint64_t{5}));
  CHECK(t.remaining(std::uint64_t{5}, 0, ns(d1)) == usd::from_units(10));
  keyed_reservation<usd_tag> g = t.reserve(std::uint64_t{5}, 0, usd::from_units(2), ns(d0));
  REQUIRE(g);
  CHECK(g.period() == 19781);  // a new entry starts in the period of its `now`
  // b still pins its erased entry; it settles there and touches nothing live.
  CHECK(t.settle(b, usd::from_units(9), ns(d1)) == usd());
  CHECK(t.remaining(std::uint64_t{5}, 0, ns(d0)) == usd::from_units(8));
  CHECK(t.spent(std::uint64_t{5}, ns(d0)) == usd());
}

// Random schedules on a few keys against an exact per-key oracle: every
// decision, `missing`, the period of every reservation, remaining and
// spent; and, where no call overspends, every period's settled total
// within the limit.
TEST_CASE("keyed periods: per-key oracle over random schedules", "[keyed]") {
  INFO(tgtest::seed_note());
  const std::int64_t lim[2] = {7, 12};
  const std::uint64_t trials = tgtest::sized(60);
  // Eras: 1970 (and before), leap February 2024, the turn of 2100, the end of
  // the range.
  const std::int64_t eras[] = {-3 * day_ns, 19750 * day_ns, 47470 * day_ns, 106700 * day_ns};
  for (std::uint64_t trial = 0; trial < trials; ++trial) {
    tgtest::rng g(tgtest::seed_for(0x0e1c + trial));
    const budget_period kind = trial % 2 == 0 ? budget_period::day : budget_period::month;
    const std::int64_t off = offsets[trial % (sizeof(offsets) / sizeof(offsets[0]))];
    const bool overspend = trial % 3 == 0;
    budgets t(64, {usd::from_nanos(lim[0]), usd::from_nanos(lim[1])}, seed_from(0x0e1c0 + trial), cal(kind, off));
    struct key_state {
      std::size_t cls = 0;
      std::uint64_t q = 0;    // the entry's period
      std::int64_t c = 0;     // committed in q
      std::uint64_t sq = 0;   // the spent statistic's period
      std::int64_t s = 0;
      std::map<std::uint64_t, std::int64_t> held;  // reservation id -> amount
      std::int64_t held_sum() const {
        std::int64_t n = 0;
        for (const auto& kv : held) n += kv.second;
        return n;
      }
    };
    std::map<std::uint64_t, key_state> keys;  // live keys
    struct out_res {
      keyed_reservation<usd_tag> r;
      std::uint64_t key;
      std::uint64_t id;
      bool orphan;  // its key was erased: it settles into the erased entry
    };
    std::vector<out_res> out;
    std::map<std::pair<std::uint64_t, std::uint64_t>, std::int64_t> settled;  // (incarnation, period) -> sum
    std::map<std::uint64_t, std::uint64_t> incarnation;
    std::map<std::uint64_t, std::int64_t> limit_of;  // incarnation -> its class's limit
    std::uint64_t next_id = 1, next_inc = 1;
    std::int64_t now = eras[g.between(0, 3)] + static_cast<std::int64_t>(g.between(0, 40 * day_ns));
    for (int step = 0; step < 800; ++step) {
      INFO("trial " << trial << " step " << step << " kind " << static_cast<int>(kind) << " offset " << off
                    << " now " << now);
      // Time: mostly forward (within the day, to the next boundary, or days
      // on), sometimes back across a boundary.
      const std::uint64_t move = g.between(0, 19);
      tgtest::i128 next = now;  // 128 bits: the last era runs into the end of the range
      if (move < 8) next += static_cast<std::int64_t>(g.between(0, day_ns / 4));
      else if (move < 11) next += t.reset_in(ns(now)).count();
      else if (move < 13) next += static_cast<std::int64_t>(g.between(1, 70)) * day_ns;
      else if (move < 15) next -= static_cast<std::int64_t>(g.between(1, 2 * day_ns));
      else if (move == 15) next -= static_cast<std::int64_t>(g.between(1, 40)) * day_ns;
      if (next <= std::numeric_limits<std::int64_t>::max()) now = static_cast<std::int64_t>(next);
      const std::uint64_t p = oracle_period(kind, off, now);
      REQUIRE(t.period_at(ns(now)) == p);
      const std::uint64_t key = g.between(0, 5);
      const std::uint64_t op = g.between(0, 19);
      auto it = keys.find(key);
      REQUIRE(t.contains(key) == (it != keys.end()));
      if (op < 9) {
        const std::size_t cls = static_cast<std::size_t>(g.between(0, 1));
        const std::int64_t amt = static_cast<std::int64_t>(g.between(0, 9));
        keyed_reservation<usd_tag> r = t.reserve(key, cls, usd::from_nanos(amt), ns(now));
        if (amt == 0) {
          CHECK(r.admitted());
          CHECK_FALSE(r.held());
          continue;
        }
        if (it == keys.end()) {
          if (amt > lim[cls]) {
            REQUIRE(r.status == keyed_status::limited);
            CHECK(r.missing.nanos() == amt - lim[cls]);
            continue;
          }
          REQUIRE(r.status == keyed_status::admitted);
          key_state k;
          k.cls = cls;
          k.q = p;
          k.sq = p;
          it = keys.emplace(key, k).first;
          incarnation[key] = next_inc;
          limit_of[next_inc++] = lim[cls];
          it->second.c = amt;
        } else {
          key_state& k = it->second;
          const std::int64_t l = lim[k.cls];
          const bool roll = p > k.q;
          const std::int64_t base = roll ? k.held_sum() : k.c;
          if (base + amt > l) {
            REQUIRE(r.status == keyed_status::limited);
            CHECK(r.missing.nanos() == base + amt - l);
            CHECK_FALSE(r.saturated);
            continue;
          }
          REQUIRE(r.status == keyed_status::admitted);
          if (roll) k.q = p;
          k.c = base + amt;
        }
        CHECK(r.period() == it->second.q);
        const std::uint64_t id = next_id++;
        it->second.held[id] = amt;
        out.push_back({std::move(r), key, id, false});
      } else if (op < 17) {
        if (out.empty()) continue;
        const std::size_t i = static_cast<std::size_t>(g.between(0, out.size() - 1));
        out_res& o = out[i];
        const std::int64_t amt = o.r.amount.nanos();
        const std::uint64_t inc = o.orphan ? 0 : incarnation[o.key];
        if (op == 16) {
          o.r.drop();
          if (!o.orphan) keys[o.key].held.erase(o.id);
        } else {
          const std::int64_t actual =
              static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(amt) + (overspend ? 3 : 0)));
          CHECK(t.settle(o.r, usd::from_nanos(actual), ns(now)).nanos() == amt - actual);
          CHECK_FALSE(o.r.held());
          if (!o.orphan) {
            key_state& k = keys[o.key];
            if (p > k.q) {
              k.c = k.held_sum() - amt + actual;
              k.q = p;
            } else {
              k.c = std::max<std::int64_t>(0, k.c + actual - amt);
            }
            k.held.erase(o.id);
            if (k.sq < k.q) k.s = 0, k.sq = k.q;
            k.s += actual;
            CHECK(o.r.period() == k.q);
            settled[{inc, k.q}] += actual;
          }
        }
        out.erase(out.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        REQUIRE(t.erase(key) == (it != keys.end()));
        if (it != keys.end()) {
          for (out_res& o : out) o.orphan = o.orphan || o.key == key;
          keys.erase(it);
        }
      }
      for (const auto& kv : keys) {
        const key_state& k = kv.second;
        const std::int64_t l = lim[k.cls];
        const std::int64_t base = p > k.q ? k.held_sum() : k.c;
        CHECK(t.remaining(kv.first, 0, ns(now)).nanos() == (base >= l ? 0 : l - base));
        const std::uint64_t cur = p > k.q ? p : k.q;
        CHECK(t.spent(kv.first, ns(now)).nanos() == (k.sq == cur ? k.s : 0));
      }
    }
    if (!overspend) {
      for (const auto& kv : settled) CHECK(kv.second <= limit_of[kv.first.first]);
    }
  }
}

// Threads on a shared clock that they push across day boundaries while
// they reserve and settle, some with a `now` read before a rollover and
// used after it (stale, as a stalled thread's), some going back a day:
// every day's settled total stays within the limit on every key, and once
// quiet each key's spent() is exactly what was charged to its day.
TEST_CASE("keyed periods: threads racing rollovers on a shared clock", "[keyed]") {
  INFO(tgtest::seed_note());
  const std::int64_t limit = 40;
  const std::size_t nkeys = 4;
  budgets t(16, {usd::from_nanos(limit)}, seed_from(0x7ace), cal(budget_period::day, 345),
            keyed_budget_reuse::never, 16);
  std::atomic<std::int64_t> clock{19780 * day_ns};
  const std::uint64_t rounds = tgtest::sized(20000) * tgtest::stress_factor();
  const unsigned threads = 3;
  std::vector<std::map<std::pair<std::uint64_t, std::uint64_t>, std::int64_t>> charged(threads);
  std::vector<std::thread> ts;
  for (unsigned th = 0; th < threads; ++th) {
    ts.emplace_back([&, th] {
      tgtest::rng g(tgtest::seed_for(0x7ace0 + th));
      for (std::uint64_t i = 0; i < rounds; ++i) {
        // About 30 calls per day per thread: many rollovers.
        if (g.chance(3)) clock.fetch_add(static_cast<std::int64_t>(g.between(day_ns / 4, day_ns)));
        std::int64_t now = clock.load();
        if (g.chance(10)) now -= static_cast<std::int64_t>(g.between(0, day_ns));
        const std::uint64_t k = g.between(0, nkeys - 1);
        keyed_reservation<usd_tag> r = t.reserve(k, 0, usd::from_nanos(static_cast<std::int64_t>(g.between(1, 9))), ns(now));
        if (!r) continue;
        if (g.chance(50)) std::this_thread::yield();
        std::int64_t later = clock.load();
        if (g.chance(10)) later = now;  // a settle with the stale reading
        const std::int64_t actual = static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(r.amount.nanos())));
        (void)t.settle(r, usd::from_nanos(actual), ns(later));
        charged[th][{k, r.period()}] += actual;
      }
    });
  }
  for (auto& x : ts) x.join();
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::int64_t> all;
  for (const auto& m : charged)
    for (const auto& kv : m) all[kv.first] += kv.second;
  std::size_t periods = 0;
  for (const auto& kv : all) {
    INFO("key " << kv.first.first << " day " << kv.first.second);
    CHECK(kv.second <= limit);
    ++periods;
  }
  CHECK(periods > nkeys * 10);  // the schedule crossed many boundaries
  const std::int64_t end = clock.load();
  for (std::uint64_t k = 0; k < nkeys; ++k) {
    // The key's entry is in the latest day any of its calls reached.
    std::uint64_t latest = 0;
    for (const auto& kv : all)
      if (kv.first.first == k && kv.first.second > latest) latest = kv.first.second;
    // A settle reaches every day its key's entry moves to, so the entry is
    // in `latest`; spent() is that day's total, zero once `end` is later.
    const auto found = all.find({k, latest});
    const std::int64_t expect = latest < t.period_at(ns(end)) || found == all.end() ? 0 : found->second;
    CHECK(t.spent(k, ns(end)).nanos() == expect);
    // Nothing is held any more: the next day has the whole limit.
    CHECK(t.remaining(k, 0, ns(end + day_ns)).nanos() == limit);
  }
}

// keyed_budget_reuse::idle with a period: an entry holding nothing may go
// to another key (the user said budgets reset), and the key that comes back
// starts over in the period of its `now`; one holding a reservation, even
// across a boundary, stays the key's.
TEST_CASE("keyed periods: idle reuse reclaims only entries that hold nothing", "[keyed]") {
  budgets t(1, {usd::from_units(10)}, seed_from(0x1d1e), cal(budget_period::month, 0), keyed_budget_reuse::idle, 1);
  const std::int64_t jan = 19723 * day_ns, feb = 19754 * day_ns;  // 2024-01-01, 2024-02-01
  keyed_reservation<usd_tag> a = t.reserve(std::uint64_t{1}, 0, usd::from_units(8), ns(jan));
  REQUIRE(a);
  // Held across the boundary: the one entry stays key 1's.
  CHECK(t.reserve(std::uint64_t{2}, 0, usd::from_units(1), ns(feb)).status == keyed_status::table_full);
  CHECK(t.remaining(std::uint64_t{1}, 0, ns(feb)) == usd::from_units(2));
  CHECK(t.settle(a, usd::from_units(8), ns(feb)) == usd());
  CHECK(a.period() == t.period_at(ns(feb)));
  CHECK(t.spent(std::uint64_t{1}, ns(feb)) == usd::from_units(8));
  // Holding nothing: key 2 takes the entry, in its own period.
  keyed_reservation<usd_tag> b = t.reserve(std::uint64_t{2}, 0, usd::from_units(3), ns(jan));
  REQUIRE(b);
  CHECK(b.period() == t.period_at(ns(jan)));
  CHECK_FALSE(t.contains(std::uint64_t{1}));
  t.release(b, ns(jan));
  // Key 1 comes back with a whole budget (the reset idle reuse means).
  keyed_reservation<usd_tag> c = t.reserve(std::uint64_t{1}, 0, usd::from_units(10), ns(feb));
  CHECK(c);
  CHECK(c.period() == t.period_at(ns(feb)));
}

// admit_keyed's `wall` is the budget table's time: a rollover seen only
// through it (the wall clock is far from both days), and the release after
// an account refusal lands in that period too. The account runs on its own
// manual clock, at 0 throughout.
TEST_CASE("keyed periods: admit_keyed decides the budget at the supplied wall time", "[keyed]") {
  account_config c;
  c.concurrency = limit(8);
  c.rpm = limit(3);
  c.tpm = limit(100000);
  c.model = server_model::sliding_log;
  account<manual_clock> acc(c, ns(0));
  request r;
  r.model = model_by_id("kimi-k2.6");
  r.prompt_tokens = 10;
  r.max_tokens = 10;
  budgets keys(8, {usd::from_units(1)}, seed_from(0xad31), cal(budget_period::day, 0));
  const std::int64_t day3 = day_start(3, 0), day4 = day_start(4, 0);
  auto a = admit_keyed(keys, acc, std::string_view("t1"), 0, usd::from_units(1), r, ns(0), ns(day3 + 5));
  REQUIRE(a.admitted());
  CHECK(a.reservation.period() == 3);
  CHECK(keys.settle(a.reservation, usd::from_units(1), ns(day3 + 6)) == usd());
  // Day 3 is spent: refused at a later time of day 3, the account not asked.
  auto b = admit_keyed(keys, acc, std::string_view("t1"), 0, usd::from_nanos(1), r, ns(0), ns(day4 - 1));
  CHECK_FALSE(b.admitted());
  CHECK_FALSE(b.account_asked);
  // Day 4: a whole budget again, in period 4.
  auto d = admit_keyed(keys, acc, std::string_view("t1"), 0, usd::from_units(1), r, ns(0), ns(day4));
  REQUIRE(d.admitted());
  CHECK(d.reservation.period() == 4);
  CHECK(keys.spent("t1", ns(day4)) == usd());
  keys.release(d.reservation, ns(day4));
  // The account's third and last request of the minute goes to t2; then the
  // account refuses t3, whose reservation is released in day 4 (whole).
  auto e = admit_keyed(keys, acc, std::string_view("t2"), 0, usd::from_units(1), r, ns(0), ns(day4));
  REQUIRE(e.admitted());
  auto f = admit_keyed(keys, acc, std::string_view("t3"), 0, usd::from_units(1), r, ns(0), ns(day4 + 1));
  CHECK_FALSE(f.admitted());
  CHECK(f.account_asked);
  CHECK(keys.remaining("t3", 0, ns(day4 + 1)) == usd::from_units(1));
  CHECK(keys.spent("t3", ns(day4 + 1)) == usd());
  CHECK(keys.period_at(ns(day4 + 1)) == 4);
}
