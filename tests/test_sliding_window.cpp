#include "catch_compat.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <limits>
#include <map>

using namespace tollgate;
using namespace std::chrono;
using tgtest::ns;

namespace {
using window = sliding_window<manual_clock>;
constexpr ns t0{0};

// The slot model written the slow way: every admission kept with its slot.
struct slot_oracle {
  std::uint64_t limit, k, width;
  std::map<std::uint64_t, std::uint64_t> slots;  // slot -> units
  std::uint64_t head = 0;
  std::uint64_t sum_from(std::uint64_t lo) const {
    std::uint64_t s = 0;
    for (auto it = slots.lower_bound(lo); it != slots.end(); ++it) s += it->second;
    return s;
  }
  std::uint64_t lo_of(std::uint64_t s) const { return s >= k ? s - k : 0; }
  // Returns: 0 admitted, 1 later (wait set), 2 stale (wait set).
  int decide(std::uint64_t nu, std::int64_t now, std::int64_t& wait, bool commit) {
    const std::uint64_t s = static_cast<std::uint64_t>(now) / width;
    if (s < head) {
      wait = static_cast<std::int64_t>(head * width) - now;
      return 2;
    }
    if (sum_from(lo_of(s)) + nu <= limit) {
      if (commit) {
        slots[s] += nu;
        head = s;
      }
      return 0;
    }
    std::uint64_t t = s + 1;
    while (sum_from(lo_of(t)) + nu > limit) ++t;
    wait = static_cast<std::int64_t>(t * width) - now;
    return 1;
  }
};
}  // namespace

TEST_CASE("window: limits, never, exact waits", "[sliding_window]") {
  window w(rate(10, seconds(15)), t0);  // 15 sub-windows of 1 s
  CHECK(w.slot_width() == seconds(1));
  CHECK(w.limit() == 10);
  CHECK(w.unit() == 1);
  CHECK(w.try_acquire(0, t0).admitted());
  CHECK(w.try_acquire(11, t0).never());
  CHECK(w.try_acquire(11, t0).why() == reason::exceeds_capacity);
  CHECK(w.try_acquire(7, milliseconds(500)).admitted());
  CHECK(w.try_acquire(3, seconds(3)).admitted());
  CHECK(w.available(seconds(3)) == 0);
  // Slot 0 (7 units) leaves the K+1-slot window when slot 16 begins.
  const decision d = w.try_acquire(1, seconds(5));
  REQUIRE(d.later());
  CHECK(d.retry_after() == seconds(11));
  CHECK(w.time_until(1, seconds(16) - ns(1)).later());
  CHECK(w.time_until(8, seconds(16)).later());  // slot 3's 3 units are still in
  CHECK(w.try_acquire(7, seconds(16)).admitted());
  CHECK(w.empty_in(seconds(16)) == seconds(16));
}

TEST_CASE("window: empty_in is zero for a window that counts nothing", "[sliding_window]") {
  window w(rate(10, seconds(15)), t0);  // slots of 1 s, 16 in the ring
  CHECK(w.empty_in(t0) == ns(0));
  window_ticket t;
  REQUIRE(w.try_acquire(4, seconds(2), t).admitted());
  CHECK(w.empty_in(seconds(2)) == seconds(16));  // slot 2 leaves when slot 18 begins
  // The head moves on with nothing counted in the new slot: slot 2 still sets it.
  CHECK(w.try_acquire(0, seconds(5)).admitted());
  REQUIRE(w.try_acquire(1, seconds(5), t).admitted());
  CHECK(w.refund(t, 1) == 1);
  CHECK(w.empty_in(seconds(5)) == seconds(13));
  // Everything given back: nothing counted, nothing to wait for.
  window v(rate(10, seconds(15)), t0);
  window_ticket u;
  REQUIRE(v.try_acquire(3, seconds(1), u).admitted());
  CHECK(v.refund(u, 3) == 3);
  CHECK(v.empty_in(seconds(1)) == ns(0));
  // Counts that left the window long ago do not count either.
  REQUIRE(v.try_acquire(2, seconds(3)).admitted());
  CHECK(v.empty_in(seconds(40)) == ns(0));
}

TEST_CASE("window: a stale time is refused, not charged to the wrong slot", "[sliding_window][time]") {
  window w(rate(5, seconds(15)), t0);
  REQUIRE(w.try_acquire(1, seconds(10)).admitted());
  const decision d = w.try_acquire(1, seconds(8) + milliseconds(250));
  CHECK(d.later());
  CHECK(d.why() == reason::stale_time);
  CHECK(d.retry_after() == milliseconds(1750));
  // Within the head slot, earlier readings are fine.
  CHECK(w.try_acquire(1, seconds(10)).admitted());
  CHECK(w.try_acquire(1, seconds(10) + milliseconds(1)).admitted());
  CHECK(w.available(seconds(1)) == 2);  // a stale peek reads the head slot
}

TEST_CASE("window: bad configurations", "[sliding_window][errors]") {
  CHECK(window::validate(rate(0, seconds(1))) == errc::zero_count);
  CHECK(window::validate(rate(1, seconds(0))) == errc::zero_period);
  CHECK(window::validate(rate(1, milliseconds(1))) == errc::window_too_short);
  CHECK(window::validate(rate(1, milliseconds(5))) == errc::ok);
  // The shortest window is exact, and depends on the sub-window count.
  CHECK(window::min_window == nanoseconds(4305211));
  CHECK(window::validate(rate(1, window::min_window)) == errc::ok);
  CHECK(window::validate(rate(1, window::min_window - nanoseconds(1))) == errc::window_too_short);
  using one_slot = sliding_window<manual_clock, 1>;
  CHECK(one_slot::min_window == nanoseconds(287015));
  CHECK(one_slot::validate(rate(1, milliseconds(1))) == errc::ok);
  CHECK(one_slot::validate(rate(1, one_slot::min_window - nanoseconds(1))) == errc::window_too_short);
  // The message says what is wrong and what is allowed, not only "overflow".
  const std::string why = message(errc::window_too_short);
  CHECK(why.find("window too short") != std::string::npos);
  CHECK(why.find("4305211 ns") != std::string::npos);
  CHECK_THROWS_AS(window(rate(0, seconds(1)), t0), config_error);
  errc ec = errc::ok;
  window bad(rate(1, seconds(0)), t0, ec);
  CHECK(ec == errc::zero_period);
  CHECK(bad.try_acquire(1, t0).why() == reason::misconfigured);
  CHECK(bad.time_until(1, t0).never());
  window ok(rate(5, seconds(15)), t0);
  CHECK(ok.set_limit(0) == errc::zero_count);
  CHECK(ok.set_limit(std::uint64_t{1} << 30) == errc::too_large);
}

TEST_CASE("window: limits above 2^24 - 1 count in coarser units, rounded safe", "[sliding_window]") {
  window w(rate(50000000, minutes(1)), t0);
  CHECK(w.unit() == 3);
  CHECK(w.limit() == 49999998);
  CHECK(w.try_acquire(1, t0).admitted());  // charged as 3
  CHECK(w.available(t0) == 49999995);
  CHECK(w.try_acquire(49999996, t0).later());
  CHECK(w.try_acquire(49999995, t0).admitted());
}

TEST_CASE("window: refunds", "[sliding_window]") {
  window w(rate(10, seconds(15)), t0);
  window_ticket a, b;
  REQUIRE(w.try_acquire(6, t0, a).admitted());
  CHECK(w.refund(a, 2) == 2);  // head slot: exact
  CHECK(w.available(t0) == 6);
  REQUIRE(w.try_acquire(4, seconds(2), b).admitted());
  CHECK(w.refund(a, 100) == 4);  // older slot in the window, clamped to the ticket
  CHECK(w.available(seconds(2)) == 6);
  CHECK(w.refund(a, 1) == 0);  // ticket spent
  window_ticket c;
  REQUIRE(w.try_acquire(5, seconds(3), c).admitted());
  // Once the slot has left the window a refund gives nothing back.
  CHECK(w.try_acquire(1, seconds(20)).admitted());
  CHECK(w.refund(c, 5) == 0);
}

TEST_CASE("window: charge records usage beyond the limit as debt", "[sliding_window]") {
  window w(rate(10, seconds(15)), t0);
  REQUIRE(w.try_acquire(8, t0).admitted());
  w.charge(7, seconds(1));  // 15 in the window, over the limit of 10
  CHECK(w.available(seconds(2)) == 0);
  // The 8 in slot 0 leave at slot 16; 7 remain: 3 may be admitted.
  CHECK(w.time_until(3, seconds(2)).retry_after() == seconds(14));
  CHECK(w.time_until(4, seconds(16)).retry_after() == seconds(1));
  w.charge(100000000, seconds(16));  // saturates, never wraps
  CHECK(w.available(seconds(16)) == 0);
  CHECK(w.try_acquire(1, seconds(33)).admitted());
}

TEST_CASE("window: under saturation it admits L per (K+1) slots", "[sliding_window]") {
  // A greedy caller over 64 windows, asking again at every retry_after.
  auto greedy = [](auto& w) {
    ns now = t0;
    std::uint64_t got = 0;
    while (now < seconds(15 * 64)) {
      const decision d = w.try_acquire(1, now);
      if (d.admitted())
        ++got;
      else
        now += d.retry_after();
    }
    return got;
  };
  window w(rate(160, seconds(15)), t0);
  CHECK(greedy(w) == 160 * 60);  // K = 15: every 16 s another 160, 60 full periods in 960 s
  sliding_window<manual_clock, 3> coarse(rate(160, seconds(15)), t0);
  CHECK(greedy(coarse) == 160 * 48);  // K = 3: 3/4 of L per W
}

namespace {
TEST_CASE("window: a ticket refunds once; a moved-from ticket gives nothing back", "[sliding_window][edge]") {
  window w(rate(10, seconds(15)), t0);
  window_ticket a;
  REQUIRE(w.try_acquire(6, t0, a).admitted());
  window_ticket b = std::move(a);  // copying does not compile (tests/compile_fail)
  CHECK(a.tokens == 0);
  CHECK(w.refund(a, 6) == 0);
  CHECK(w.available(t0) == 4);
  CHECK(w.refund(b, 6) == 6);
  CHECK(w.available(t0) == 10);
  CHECK(w.refund(b, 6) == 0);
  // Another admission's units are not given back by a spent ticket.
  REQUIRE(w.try_acquire(10, t0).admitted());
  CHECK(w.refund(b, 6) == 0);
  CHECK(w.available(t0) == 0);
  window_ticket c;
  c = std::move(b);
  CHECK(w.refund(c, 1) == 0);
}

template <std::size_t K>
void run_window_oracle(std::uint64_t limit, ns period, std::uint64_t ops, std::uint64_t seed) {
  INFO("limit " << limit << " window " << period.count() << " K " << K << " seed " << seed);
  tgtest::rng g(seed);
  sliding_window<manual_clock, K> w(rate(limit, period), t0);
  slot_oracle o{limit, K, static_cast<std::uint64_t>(w.slot_width().count()), {}, 0};
  std::vector<std::pair<std::int64_t, std::uint64_t>> admitted;
  std::vector<std::pair<window_ticket, std::size_t>> tickets;  // ticket, index in `admitted`
  const std::uint64_t width = static_cast<std::uint64_t>(w.slot_width().count());
  std::int64_t now = 0;
  std::uint64_t mismatches = 0;
  for (std::uint64_t i = 0; i < ops; ++i) {
    switch (g.between(0, 6)) {
      case 0: break;
      case 1: now += static_cast<std::int64_t>(g.between(0, width)); break;
      case 2: now += static_cast<std::int64_t>(g.between(0, width * 4)); break;
      default: now += static_cast<std::int64_t>(g.between(0, width / 8 + 1)); break;
    }
    if (g.chance(1)) now += static_cast<std::int64_t>(width * (K + 2));
    std::int64_t at = now;
    if (g.chance(5)) at -= static_cast<std::int64_t>(g.between(0, width * 2));  // stale reading
    if (at < 0) at = 0;
    const std::uint64_t n = g.chance(95) ? g.between(1, limit / 3 + 1) : limit + 1;
    if (g.chance(10) && !tickets.empty()) {
      // Refund part of an earlier admission; mirror it in the oracle.
      const std::size_t idx = static_cast<std::size_t>(g.between(0, tickets.size() - 1));
      window_ticket& t = tickets[idx].first;
      const std::uint64_t back = g.between(0, t.tokens);
      const std::uint64_t slot = t.slot;
      const bool in_window = slot + K >= o.head;
      const std::uint64_t got = w.refund(t, back);
      if (in_window) {
        if (got != back) ++mismatches;
        auto it = o.slots.find(slot);
        if (it != o.slots.end()) it->second -= std::min(it->second, back);
        admitted[tickets[idx].second].second -= back;  // the bound is checked on what stays charged
      } else if (got != 0) {
        ++mismatches;
      }
      continue;
    }
    std::int64_t owait = 0;
    const decision peek = w.time_until(n, ns(at));
    window_ticket t;
    const decision d = w.try_acquire(n, ns(at), t);
    if (!(peek == d)) ++mismatches;
    if (n > limit) {
      if (!d.never()) ++mismatches;
      continue;
    }
    const int r = o.decide(n, at, owait, true);
    if (r == 0) {
      if (!d.admitted()) ++mismatches;
      admitted.emplace_back(at, n);
      tickets.emplace_back(std::move(t), admitted.size() - 1);
      if (tickets.size() > 64) tickets.erase(tickets.begin());
    } else {
      if (!d.later() || d.retry_after() != ns(owait)) ++mismatches;
      if ((r == 2) != (d.why() == reason::stale_time)) ++mismatches;
      if (r == 1) {
        // Exact wait.
        if (!w.time_until(n, ns(at) + d.retry_after() - ns(1)).later()) ++mismatches;
        if (!w.time_until(n, ns(at) + d.retry_after()).admitted()) ++mismatches;
      }
    }
  }
  CHECK(mismatches == 0);
  CHECK(admitted.size() > ops / 10);
  // The promise itself: never more than L in any window (t - W, t].
  CHECK(tgtest::max_window_sum(admitted, period.count()) <= limit);
}
}  // namespace

TEST_CASE("property: the window matches the slot model and never exceeds L in any W", "[sliding_window][oracle]") {
  for (std::uint64_t s : tgtest::seeds(2)) {
    run_window_oracle<15>(200, minutes(1), 15000, s);
    run_window_oracle<15>(5000000, minutes(1), 15000, s);
    run_window_oracle<4>(10, seconds(5), 15000, s);
    run_window_oracle<1>(3, minutes(1), 10000, s);
    run_window_oracle<15>(1500000, hours(24), 10000, s);
    run_window_oracle<60>(100, seconds(60), 8000, s);
  }
}

namespace {
// Checks the shape every decision promises: admitted and never carry no wait,
// later carries a positive one.
bool well_formed(const decision& d) {
  if (d.later()) return d.retry_after() > ns(0) || d.why() == reason::busy;
  return d.retry_after() == ns(0);
}
}  // namespace

TEST_CASE("window: every public function is defined for every now", "[sliding_window][edge]") {
  constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min(), hi = std::numeric_limits<std::int64_t>::max();
  for (const std::int64_t origin : {lo, std::int64_t{-1}, std::int64_t{0}, hi / 2, hi}) {
    for (std::uint64_t seed : tgtest::seeds(2)) {
      INFO("origin " << origin << " seed " << seed);
      tgtest::rng g(seed);
      window w(rate(10, seconds(15)), ns(origin));
      sliding_window<manual_clock, 1> coarse(rate(20000000, minutes(1)), ns(origin));  // unit 2, one sub-window
      std::vector<window_ticket> tickets;
      std::uint64_t bad = 0;
      for (int i = 0; i < 3000; ++i) {
        const ns now{tgtest::extreme_time(g, origin)};
        const std::uint64_t n = g.chance(80) ? g.between(0, 11) : g.next();
        switch (g.between(0, 8)) {
          case 0: {
            const decision peek = w.time_until(n, now);
            window_ticket t;
            const decision d = w.try_acquire(n, now, t);
            if (!(peek == d) || !well_formed(d)) ++bad;
            if (d.admitted() && t.tokens > 0) tickets.push_back(std::move(t));
            const decision c = coarse.try_acquire(n, now);
            if (!well_formed(c)) ++bad;
            break;
          }
          case 1: w.charge(n % 40, now); coarse.charge(n, now); break;
          case 2:
            if (!tickets.empty()) (void)w.refund(tickets[g.between(0, tickets.size() - 1)], g.between(0, 12));
            break;
          case 3:
            if (!tickets.empty()) (void)w.refund_to_head(tickets[g.between(0, tickets.size() - 1)], g.next());
            break;
          case 4:
            if (w.available(now) > w.limit() || coarse.available(now) > coarse.limit()) ++bad;
            break;
          case 5:
            if (w.empty_in(now) < ns(0) || coarse.empty_in(now) < ns(0)) ++bad;
            break;
          case 6:
            for (const auto& e : w.export_slots(now))
              if (e.first > window::subwindows) ++bad;
            break;
          case 7: (void)w.set_limit(g.chance(10) ? 0 : g.between(1, 20)); break;
          default: {
            const decision d = coarse.time_until(n, now);
            if (!well_formed(d)) ++bad;
            break;
          }
        }
      }
      CHECK(bad == 0);
      // After reset() the window works from its origin again.
      w.reset();
      coarse.reset();
      CHECK(w.set_limit(10) == errc::ok);
      CHECK(w.try_acquire(10, ns(origin)).admitted());
      CHECK(w.try_acquire(1, ns(origin)).later());
      CHECK(coarse.try_acquire(2, ns(origin)).admitted());
    }
  }
}

TEST_CASE("window: a bogus far-future now makes ordinary times stale until reset()", "[sliding_window][edge]") {
  constexpr std::int64_t hi = std::numeric_limits<std::int64_t>::max();
  window w(rate(10, seconds(15)), t0);
  REQUIRE(w.try_acquire(1, ns(hi)).admitted());
  const decision d = w.try_acquire(1, seconds(30));
  CHECK(d.why() == reason::stale_time);
  CHECK(d.retry_after() > hours(24 * 365 * 100));  // "never more permissive": for centuries
  // The stale answer from before the origin saturates instead of wrapping.
  const decision e = w.time_until(1, ns(std::numeric_limits<std::int64_t>::min()));
  CHECK(e.why() == reason::stale_time);
  CHECK(e.retry_after() == ns(hi));
  CHECK(w.empty_in(ns(std::numeric_limits<std::int64_t>::min())) == ns(hi));
  w.reset();
  CHECK(w.try_acquire(10, seconds(30)).admitted());
  CHECK(w.available(seconds(30)) == 0);
  CHECK(w.time_until(1, seconds(30)).retry_after() > ns(0));
}

TEST_CASE("window: a refund from a saturated count gives nothing back", "[sliding_window][saturation]") {
  constexpr std::uint64_t max = (std::uint64_t{1} << 24) - 1;
  {
    // The head slot: 1,000,000 admitted, then a whole limit charged on top
    // saturates the count. The window is over its limit whatever the refund.
    window w(rate(max, seconds(1)), t0);
    window_ticket t;
    REQUIRE(w.try_acquire(1000000, t0, t).admitted());
    w.charge(max, t0);
    CHECK(w.refund(t, 1000000) == 0);
    CHECK(t.tokens == 1000000);  // the ticket is left as it was
    CHECK(w.available(ns(1000)) == 0);
    CHECK(w.try_acquire(900000, ns(1000)).later());
    CHECK(w.try_acquire(1, ns(1000)).later());
  }
  {
    // The same count once the head has moved on: the ring entry saturated.
    window w(rate(max, seconds(15)), t0);
    window_ticket t;
    REQUIRE(w.try_acquire(1000000, t0, t).admitted());
    w.charge(max, t0);
    w.charge(1, seconds(1));  // moves the head to slot 1
    CHECK(w.refund(t, 1000000) == 0);
    CHECK(w.try_acquire(900000, seconds(1)).later());
    CHECK(w.available(seconds(1)) == 0);
  }
  {
    // Two older slots of 10,000,000 each: their cached sum saturates, the
    // ring holds the real counts. A refund from one of them is real (it is
    // not saturated) but the sum that stays, 19,000,001, is still over the
    // limit: the capped cache must not be taken as the sum.
    sliding_window<manual_clock, 2> w(rate(max, seconds(3)), t0);  // slots of 1.5 s
    window_ticket t;
    REQUIRE(w.try_acquire(1000000, t0, t).admitted());
    w.charge(9000000, t0);
    w.charge(10000000, milliseconds(1500));
    w.charge(1, seconds(3));  // head at slot 2
    CHECK(w.refund(t, 1000000) == 1000000);
    CHECK(w.available(seconds(3)) == 0);
    CHECK(w.try_acquire(900000, seconds(3)).later());
    // Slot 0 (now 9,000,000) leaves at slot 3; slot 1 (10,000,000) still
    // leaves room for 6,777,214 units.
    CHECK(w.time_until(900000, seconds(3)).retry_after().count() == 1500000000);
    CHECK(w.try_acquire(6777214, milliseconds(4500)).admitted());
  }
  {
    // The same with 10,000,000 and 7,000,000: after the refund the real sum
    // (16,000,001) leaves room for 777,214 units, though the cache stays at
    // its ceiling. The decision reads the ring and admits exactly that.
    sliding_window<manual_clock, 2> w(rate(max, seconds(3)), t0);
    window_ticket t;
    REQUIRE(w.try_acquire(1000000, t0, t).admitted());
    w.charge(9000000, t0);
    w.charge(7000000, milliseconds(1500));
    w.charge(1, seconds(3));
    CHECK(w.try_acquire(1, seconds(3)).later());
    CHECK(w.refund(t, 1000000) == 1000000);
    CHECK(w.available(seconds(3)) == 777214);
    CHECK(w.try_acquire(777215, seconds(3)).later());
    CHECK(w.try_acquire(777214, seconds(3)).admitted());
  }
}

TEST_CASE("window: retry_after stays exact once the cached older sum saturates", "[sliding_window][saturation]") {
  constexpr std::uint64_t max = (std::uint64_t{1} << 24) - 1;
  sliding_window<manual_clock, 2> w(rate(max, ns(3000000)), t0);  // slots of 1.5 ms
  REQUIRE(w.slot_width() == ns(1500000));
  w.charge(max, t0);                 // slot 0
  w.charge(max, ns(2250000));        // slot 1
  w.charge(1, ns(3000000));          // slot 2: the cached sum of slots 0 and 1 saturates
  const decision d = w.try_acquire(1000, ns(3000000));
  REQUIRE(d.later());
  // Slot 1's charge is in every window up to slot 3; slot 4 (6 ms) is the
  // first whose window (slots 2 .. 4) holds room for 1,000.
  CHECK(d.retry_after().count() == 3000000);
  CHECK(w.time_until(1000, ns(6000000) - ns(1)).later());
  CHECK(w.time_until(1000, ns(4500000)).later());
  CHECK(w.try_acquire(1000, ns(6000000)).admitted());
}

namespace {
// The slot model with the window's 24-bit ceiling, written the slow way: a
// slot's count saturates at 2^24 - 1 units, a refund from a saturated count
// gives nothing back, a charge at a stale time lands in the head slot.
struct capped_slot_model {
  static constexpr std::uint64_t cap = (std::uint64_t{1} << 24) - 1;
  std::uint64_t limit, k, width;  // limit in units
  std::map<std::uint64_t, std::uint64_t> slots;
  std::uint64_t head = 0;
  std::uint64_t lo_of(std::uint64_t s) const { return s >= k ? s - k : 0; }
  std::uint64_t sum_from(std::uint64_t lo) const {
    std::uint64_t s = 0;
    for (auto it = slots.lower_bound(lo); it != slots.end(); ++it) s += it->second;
    return s;
  }
  void charge(std::uint64_t nu, std::int64_t now) {
    std::uint64_t s = static_cast<std::uint64_t>(now) / width;
    if (s < head) s = head;
    head = s;
    std::uint64_t& c = slots[s];
    c = c + nu > cap ? cap : c + nu;
  }
  bool refund(std::uint64_t slot, std::uint64_t units) {
    if (slot + k < head) return false;
    std::uint64_t& c = slots[slot];
    if (c == cap) return false;
    c -= std::min(c, units);
    return true;
  }
  // 0 admitted, 1 later (wait set), 2 stale.
  int decide(std::uint64_t nu, std::int64_t now, std::int64_t& wait) {
    const std::uint64_t s = static_cast<std::uint64_t>(now) / width;
    if (s < head) return 2;
    if (sum_from(lo_of(s)) + nu <= limit) {
      slots[s] += nu;
      head = s;
      return 0;
    }
    std::uint64_t t = s + 1;
    while (sum_from(lo_of(t)) + nu > limit) ++t;
    wait = static_cast<std::int64_t>(t * width) - now;
    return 1;
  }
};

// Returns how many refunds met a saturated count (the case under test).
template <std::size_t K>
std::uint64_t run_ceiling_oracle(std::uint64_t limit, ns period, std::uint64_t ops, std::uint64_t seed) {
  INFO("limit " << limit << " window " << period.count() << " K " << K << " seed " << seed);
  tgtest::rng g(seed);
  sliding_window<manual_clock, K> w(rate(limit, period), t0);
  const std::uint64_t u = w.unit();
  const std::uint64_t width = static_cast<std::uint64_t>(w.slot_width().count());
  capped_slot_model o{w.limit() / u, K, width, {}, 0};
  // What really happened, in tokens and uncapped: admissions (less what
  // refunds gave back) and charges.
  std::vector<std::pair<std::int64_t, std::uint64_t>> log;
  std::vector<std::pair<window_ticket, std::size_t>> tickets;  // ticket, index in `log`
  auto in_window = [&](std::int64_t t) {
    std::uint64_t s = 0;
    for (const auto& e : log)
      if (e.first > t - period.count() && e.first <= t) s += e.second;
    return s;
  };
  std::int64_t now = 0;
  std::uint64_t mismatches = 0, over = 0, admitted = 0, waits = 0, saturated_refunds = 0;
  for (std::uint64_t i = 0; i < ops; ++i) {
    switch (g.between(0, 5)) {
      case 0: break;
      case 1: now += static_cast<std::int64_t>(g.between(0, width)); break;
      case 2: now += static_cast<std::int64_t>(g.between(0, width * 3)); break;
      default: now += static_cast<std::int64_t>(g.between(0, width / 4 + 1)); break;
    }
    if (g.chance(2)) now += static_cast<std::int64_t>(width * (K + 1));  // the window empties
    std::int64_t at = now;
    if (g.chance(5)) at -= static_cast<std::int64_t>(g.between(0, width * 2));  // stale reading
    if (at < 0) at = 0;
    const std::uint64_t op = g.between(0, 99);
    if (op < 15) {
      // Usage learnt after the fact, often a large part of the limit or more.
      const std::uint64_t n = g.chance(75) ? g.between(1, limit / 50 + 1) : g.between(limit / 3, limit * 2);
      w.charge(n, ns(at));
      o.charge(detail::ceil_div(n, u), at);
      log.emplace_back(at, n);
      continue;
    }
    if (op < 30 && !tickets.empty()) {
      // Often the newest: its slot is the likeliest to have been charged full.
      const std::size_t idx = g.chance(50) ? tickets.size() - 1 : static_cast<std::size_t>(g.between(0, tickets.size() - 1));
      window_ticket& t = tickets[idx].first;
      const std::uint64_t back = g.between(1, t.tokens + 1);
      const std::uint64_t n = std::min(back, t.tokens);
      const std::uint64_t back_units = t.units - detail::ceil_div(t.tokens - n, u);
      const std::uint64_t slot = t.slot;
      const bool gives = n > 0 && o.refund(slot, back_units);
      if (n > 0 && !gives && slot + K >= o.head) ++saturated_refunds;
      const std::uint64_t got = w.refund(t, back);
      if (got != (gives ? n : 0)) ++mismatches;
      log[tickets[idx].second].second -= got;
      continue;
    }
    const std::uint64_t n = g.chance(3) ? limit + g.between(1, u + 1) : g.chance(30) ? g.between(limit / 2, limit) : g.between(1, limit / 4);
    const decision peek = w.time_until(n, ns(at));
    window_ticket t;
    const decision d = w.try_acquire(n, ns(at), t);
    if (!(peek == d)) ++mismatches;
    if (detail::ceil_div(n, u) > o.limit) {
      if (!d.never()) ++mismatches;
      continue;
    }
    std::int64_t owait = 0;
    const int r = o.decide(detail::ceil_div(n, u), at, owait);
    if (r == 0) {
      if (!d.admitted()) ++mismatches;
      if (!d.admitted()) continue;
      ++admitted;
      log.emplace_back(at, n);
      tickets.emplace_back(std::move(t), log.size() - 1);
      if (tickets.size() > 32) tickets.erase(tickets.begin());
      // The promise, on what really happened: an admission leaves its window
      // (at - W, at] within L, charges and all.
      if (in_window(at) > limit) ++over;
    } else if (r == 2) {
      if (d.why() != reason::stale_time) ++mismatches;
    } else {
      ++waits;
      if (!d.later() || d.why() == reason::stale_time || d.retry_after() != ns(owait)) ++mismatches;
      // Exact both ways: refused 1 ns before, admitted at retry_after.
      if (!w.time_until(n, ns(at) + d.retry_after() - ns(1)).later()) ++mismatches;
      if (!w.time_until(n, ns(at) + d.retry_after()).admitted()) ++mismatches;
    }
  }
  INFO("admitted " << admitted << " waits " << waits << " saturated refunds " << saturated_refunds);
  CHECK(mismatches == 0);
  CHECK(over == 0);
  CHECK(admitted > ops / 20);
  CHECK(waits > ops / 20);
  return saturated_refunds;
}
}  // namespace

TEST_CASE("property: at the 24-bit ceiling, with charges, the window matches the capped slot model",
          "[sliding_window][oracle][saturation]") {
  for (std::uint64_t s : tgtest::seeds(2)) {
    std::uint64_t saturated_refunds = run_ceiling_oracle<2>((std::uint64_t{1} << 24) - 1, ns(3000000), 6000, s);
    saturated_refunds += run_ceiling_oracle<15>((std::uint64_t{1} << 24) - 1, minutes(1), 6000, s);
    saturated_refunds += run_ceiling_oracle<15>(16000000, minutes(1), 6000, s);
    saturated_refunds += run_ceiling_oracle<4>(50000000, minutes(1), 6000, s);
    saturated_refunds += run_ceiling_oracle<1>(50000000, seconds(10), 6000, s);
    INFO("seed " << s);
    CHECK(saturated_refunds > 0);
  }
}

// The schedule that found it: a window restored from another's counts (a
// restart in one process) whose grid matched the old one took back the
// old window's ticket of an admission made after the export: 5 + 5 used,
// then 10 more in one window (limit 10). A ticket names its window object.
TEST_CASE("window tickets of another window refund nothing: not into a restored one either", "[sliding_window][refund][snapshot]") {
  using win = sliding_window<manual_clock>;
  const std::int64_t ms = 1000000;
  tgtest::rng g(tgtest::seed_for(0x3e11));
  INFO(tgtest::seed_note());
  for (int round = 0; round < 200; ++round) {
    const std::uint64_t before = g.between(1, 9);
    const ns first(static_cast<std::int64_t>(g.between(0, 30000)) * ms);
    const ns now = first + ns(static_cast<std::int64_t>(g.between(0, 59999)) * ms);
    INFO("round " << round << " before " << before << " first " << first.count() << " now " << now.count());
    win x(rate(10, ns(60000 * ms)), ns(0));
    window_ticket ta, tb;
    REQUIRE(x.try_acquire(before, first, ta).admitted());
    const auto counts = x.export_counts(now);
    REQUIRE(x.try_acquire(10 - before, now, tb).admitted());  // after the export: not in the restored counts
    win y(rate(10, ns(60000 * ms)), ns(0)), z(rate(10, ns(60000 * ms)), ns(0));
    y.import_counts(now, counts);
    z.import_counts(now, counts);  // the same restore, no refunds
    CHECK(y.refund(tb, 10 - before) == 0);
    CHECK(y.refund(ta, before) == 0);
    CHECK(y.available(now) == z.available(now));
    CHECK(y.available(now) <= 10 - before);
  }
  // Two windows of one configuration, neither restored.
  win a(rate(10, ns(60000 * ms)), ns(0)), b(rate(10, ns(60000 * ms)), ns(0));
  window_ticket tk;
  REQUIRE(a.try_acquire(10, ns(5000 * ms), tk).admitted());
  REQUIRE(b.try_acquire(10, ns(5000 * ms)).admitted());
  CHECK(b.refund(tk, 10) == 0);
  CHECK(b.available(ns(5000 * ms)) == 0);
  CHECK(a.refund(tk, 10) == 10);  // its own window's still gives back
}
