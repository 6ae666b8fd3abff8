// Overflow limiters of keyed_windows, keyed_permits and keyed_budgets: a
// flood of new keys against a table full of live entries goes to the
// limiter named, every one of them shares its bound, and the table's live
// entries do not change (its snapshot bytes stay the same); keys with an
// entry are still decided by it.
#include "catch_compat.hpp"
#include "keyed_support.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

using namespace tollgate;
using tgtest::ns;

namespace {

using namespace tgkeyed;

using tgtest::sec;

}  // namespace

TEST_CASE("keyed overflow: windows send table_full keys to the named limiter, the table untouched", "[keyed]") {
  // Four entries, one window: four live keys fill it.
  keyed_windows<manual_clock> t(4, {{2, ns(60 * sec)}}, seed_from(0x0F01), ns(0), 4);
  for (std::uint64_t k = 0; k < 4; ++k) REQUIRE(t.try_acquire(k, 0, 1, ns(sec)).admitted());
  sliding_window overflow(per_minute(5), ns(0));
  const std::string before = t.snapshot(ns(2 * sec), ns(0));
  std::uint64_t admitted = 0, sent = 0;
  for (std::uint64_t k = 100; k < 1100; ++k) {
    const std::int64_t now = 2 * sec + static_cast<std::int64_t>(k % 7) * sec;  // within one minute
    const keyed_result r = try_acquire_or_overflow(t, overflow, k, 0, 1, ns(now));
    REQUIRE(r.status() == keyed_status::overflow);
    ++sent;
    admitted += r.admitted();
  }
  CHECK(sent == 1000);
  CHECK(admitted == 5);  // the overflow's L in its window, shared by all of them
  CHECK(t.snapshot(ns(2 * sec), ns(0)) == before);
  for (std::uint64_t k = 100; k < 1100; ++k) CHECK_FALSE(t.contains(k));
  // A key with an entry is decided by its entry: one more, then limited.
  const keyed_result own = try_acquire_or_overflow(t, overflow, std::uint64_t{0}, 0, 1, ns(10 * sec));
  CHECK(own.status() == keyed_status::admitted);
  const keyed_result again = try_acquire_or_overflow(t, overflow, std::uint64_t{0}, 0, 1, ns(10 * sec));
  CHECK(again.status() == keyed_status::limited);
  // Long after, every entry is fresh again: a new key gets one.
  CHECK(try_acquire_or_overflow(t, overflow, std::uint64_t{5000}, 0, 1, ns(600 * sec)).status() ==
        keyed_status::admitted);
}

TEST_CASE("keyed overflow: permits of overflowed keys are the concurrency limiter's, the table untouched", "[keyed]") {
  keyed_permits<> t(4, {2}, seed_from(0x0F02), 4);
  std::vector<keyed_permit> own;
  for (std::uint64_t k = 0; k < 4; ++k) {
    own.push_back(t.try_acquire(k, 0, 1));
    REQUIRE(own.back());
  }
  concurrency_limiter overflow(3);
  const std::string before = t.snapshot(ns(0));
  std::vector<keyed_overflow_permit> held;
  std::uint64_t admitted = 0;
  for (std::uint64_t k = 100; k < 600; ++k) {
    keyed_overflow_permit h = try_acquire_or_overflow(t, overflow, k, 0, 1);
    REQUIRE(h.sent);
    REQUIRE(h.status() == keyed_status::overflow);
    CHECK(h.key.status() == keyed_status::table_full);
    CHECK(h.key.count() == 0);
    CHECK(h.admitted() == (held.size() < 3));
    if (h) {
      ++admitted;
      held.push_back(std::move(h));
    }
    // Now and then one gives its permit back to the overflow limiter.
    if (k % 50 == 0 && !held.empty()) held.erase(held.begin());
    CHECK(overflow.in_use() <= 3);
    CHECK(overflow.in_use() == held.size());
  }
  CHECK(admitted >= 3 + 9);  // 3 at once, and one after each give-back but the first
  CHECK(t.snapshot(ns(0)) == before);
  for (std::uint64_t k = 0; k < 4; ++k) CHECK(t.in_use(k) == 1);
  held.clear();
  CHECK(overflow.in_use() == 0);
  // A key with an entry: its own permit, the overflow not asked.
  keyed_overflow_permit mine = try_acquire_or_overflow(t, overflow, std::uint64_t{1}, 0, 1);
  CHECK_FALSE(mine.sent);
  CHECK(mine.status() == keyed_status::admitted);
  CHECK(t.in_use(std::uint64_t{1}) == 2);
  CHECK(try_acquire_or_overflow(t, overflow, std::uint64_t{1}, 0, 1).status() == keyed_status::limited);
  CHECK(overflow.in_use() == 0);
  mine.key.release();
  CHECK(t.in_use(std::uint64_t{1}) == 1);
}

TEST_CASE("keyed overflow: budgets of overflowed keys share the overflow budget, the table untouched", "[keyed]") {
  keyed_budgets<> t(4, {usd::from_units(10)}, seed_from(0x0F03));
  const ns now(20000LL * 86400 * sec);
  for (std::uint64_t k = 0; k < 4; ++k) {
    keyed_reservation<usd_tag> r = t.reserve(k, 0, usd::from_units(2), now);
    REQUIRE(r);
    (void)t.settle(r, usd::from_units(1), now);
  }
  budget<usd_tag> overflow(usd::from_units(5));
  const std::string before = t.snapshot(now);
  std::int64_t committed = 0, admitted = 0;  // the overflow budget's, by budget.hpp's rule
  const std::int64_t unit = usd::from_units(1).nanos(), half = unit / 2, limit = 5 * unit;
  for (std::uint64_t k = 100; k < 400; ++k) {
    auto h = reserve_or_overflow(t, overflow, k, 0, usd::from_units(1), now);
    REQUIRE(h.sent);
    REQUIRE(h.status() == keyed_status::overflow);
    CHECK(h.key.status == keyed_status::table_full);
    CHECK(h.admitted() == (committed + unit <= limit));
    if (!h) continue;
    ++admitted;
    committed += k % 2 == 0 ? 0 : half;
    // Half of them cost nothing after all (released), the rest half a unit.
    const bool free = k % 2 == 0;
    const usd back = settle_or_overflow(t, overflow, h, free ? usd() : usd::from_nanos(500000000), now);
    CHECK(back == (free ? usd::from_units(1) : usd::from_nanos(500000000)));
    CHECK(settle_or_overflow(t, overflow, h, usd::from_units(1), now) == usd());  // settled once only
  }
  CHECK(overflow.spent() <= usd::from_units(5));
  CHECK(overflow.spent().nanos() == committed);
  CHECK(admitted >= 16);  // until 4.5 units are settled, every call fits
  CHECK(overflow.remaining().nanos() == limit - committed);
  CHECK(t.snapshot(now) == before);
  for (std::uint64_t k = 100; k < 400; ++k) CHECK_FALSE(t.contains(k));
  // A key with an entry is decided by its entry (and settled there).
  auto mine = reserve_or_overflow(t, overflow, std::uint64_t{2}, 0, usd::from_units(9), now);
  CHECK_FALSE(mine.sent);
  CHECK(mine.status() == keyed_status::admitted);
  CHECK(t.remaining(std::uint64_t{2}, 0, now) == usd());
  CHECK(settle_or_overflow(t, overflow, mine, usd::from_units(9), now) == usd());
  CHECK(t.spent(std::uint64_t{2}, now) == usd::from_units(10));
  CHECK(overflow.spent().nanos() == committed);
}

// A budget reservation names no issuer: the hold remembers the overflow
// budget that decided it, and settling it into another is refused, so a
// mixed-up argument cannot free money the other budget never held.
TEST_CASE("keyed overflow: a hold settles only into the overflow budget that issued it", "[keyed]") {
  keyed_budgets<> t(1, {usd::from_units(100)}, seed_from(0x0F04));  // one entry: the second key overflows
  budget<usd_tag> ova(usd::from_units(10)), ovb(usd::from_units(10));
  const ns now(0);
  auto first = reserve_or_overflow(t, ova, std::string_view("k0"), 0, usd::from_units(1), now);
  REQUIRE(first);
  REQUIRE_FALSE(first.sent);
  auto h = reserve_or_overflow(t, ova, std::string_view("k1"), 0, usd::from_units(10), now);
  REQUIRE(h.sent);
  REQUIRE(h);
  CHECK(h.decided_by(ova));
  CHECK_FALSE(h.decided_by(ovb));
  CHECK_FALSE(first.decided_by(ova));  // decided by the table
  CHECK(ova.remaining() == usd());
  budget_reservation<usd_tag> b1 = ovb.reserve(usd::from_units(10));  // B fully held by its own user
  REQUIRE(b1);
  // The wrong overflow budget: refused, nothing changes anywhere.
  CHECK(settle_or_overflow(t, ovb, h, usd(), now) == usd());
  CHECK(h.admitted());
  CHECK(ovb.remaining() == usd());
  CHECK_FALSE(ovb.reserve(usd::from_units(10)));  // B is still within its limit
  CHECK(ova.remaining() == usd());
  // A moved hold keeps its issuer; its own budget settles it, once.
  auto moved = std::move(h);
  CHECK(moved.decided_by(ova));
  CHECK(settle_or_overflow(t, ova, moved, usd::from_units(4), now) == usd::from_units(6));
  CHECK(ova.remaining() == usd::from_units(6));
  CHECK(ova.spent() == usd::from_units(4));
  CHECK(settle_or_overflow(t, ova, moved, usd::from_units(4), now) == usd());
  CHECK(ovb.settle(b1, usd::from_units(10)) == usd());
  CHECK(ovb.spent() == usd::from_units(10));
  (void)settle_or_overflow(t, ova, first, usd::from_units(1), now);
  CHECK(t.spent(std::string_view("k0"), now) == usd::from_units(1));
}
