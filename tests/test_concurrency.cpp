#include "catch_compat.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <atomic>
#include <cstddef>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>

using namespace tollgate;

static_assert(!std::is_copy_constructible<permit>::value, "a permit is move-only");
static_assert(std::is_nothrow_move_constructible<permit>::value, "moving a permit cannot fail");

TEST_CASE("permits release exactly once", "[concurrency]") {
  concurrency_limiter c(3);
  {
    permit a = c.try_acquire(2);
    REQUIRE(a);
    CHECK(c.in_use() == 2);
    permit b = std::move(a);
    CHECK(c.in_use() == 2);
    CHECK(b.count() == 2);
    b.release();
    CHECK(c.in_use() == 0);
    b.release();
    CHECK(c.in_use() == 0);
  }
  CHECK(c.in_use() == 0);
  permit x = c.try_acquire(3);
  REQUIRE(x);
  const permit busy = c.try_acquire(1);
  CHECK_FALSE(busy);
  CHECK(busy.decision().later());
  CHECK(busy.decision().why() == reason::busy);
  CHECK(c.try_acquire(4).decision().never());
  CHECK(c.try_acquire(0));
  x = c.try_acquire(1);  // evaluated while x still holds 3: busy; the assignment then releases x
  CHECK_FALSE(x);
  CHECK(c.in_use() == 0);
  x = c.try_acquire(1);
  permit y = c.try_acquire(1);
  y = c.try_acquire(1);  // the new permit is taken, then the old one released
  CHECK(y);
  CHECK(c.in_use() == 2);
}

TEST_CASE("shrinking the limit keeps permits and refuses new ones", "[concurrency][live]") {
  concurrency_limiter c(4);
  std::vector<permit> held;
  for (int i = 0; i < 4; ++i) held.push_back(c.try_acquire());
  CHECK(c.set_limit(2) == errc::ok);
  CHECK(c.in_use() == 4);
  CHECK(c.available() == 0);
  held.pop_back();
  held.pop_back();
  CHECK_FALSE(c.try_acquire());  // 2 held, limit 2
  held.pop_back();
  CHECK(c.try_acquire());
  CHECK(c.set_limit(0) == errc::zero_count);
  CHECK(c.limit() == 2);
  CHECK_THROWS_AS(concurrency_limiter(0), config_error);
}

TEST_CASE("property: the count matches a plain counter", "[concurrency][oracle]") {
  for (std::uint64_t seed : tgtest::seeds(3)) {
    INFO("seed " << seed);
    tgtest::rng g(seed);
    const std::uint64_t limit = g.between(1, 20);
    concurrency_limiter c(limit);
    std::vector<permit> held;
    std::uint64_t count = 0, mismatches = 0;
    for (int i = 0; i < 30000; ++i) {
      if (g.chance(50) && !held.empty()) {
        const std::size_t k = static_cast<std::size_t>(g.between(0, held.size() - 1));
        count -= held[k].count();
        held.erase(held.begin() + static_cast<std::ptrdiff_t>(k));
      } else {
        const std::uint64_t n = g.between(1, limit + 1);
        permit p = c.try_acquire(n);
        const bool expect = n <= limit && count + n <= limit;
        if (static_cast<bool>(p) != expect) ++mismatches;
        if (n > limit && !p.decision().never()) ++mismatches;
        if (p) {
          count += n;
          held.push_back(std::move(p));
        }
      }
      if (c.in_use() != count || count > limit) ++mismatches;
    }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("permits: extreme counts and limits never wrap the count held", "[concurrency][edge]") {
  // The largest limit (2^32 - 1): counts near it must not carry into the
  // limit's half of the state word, and n beyond any limit is `never`.
  constexpr std::uint64_t top = concurrency_limiter::max_limit;
  concurrency_limiter c(top);
  CHECK(c.try_acquire(std::numeric_limits<std::uint64_t>::max()).decision().why() == reason::exceeds_capacity);
  permit a = c.try_acquire(top - 1);
  REQUIRE(a);
  // c + n would wrap to 0 and admit: it is busy instead.
  const permit b = c.try_acquire(2);
  CHECK_FALSE(b);
  CHECK(b.decision().why() == reason::busy);
  CHECK(c.in_use() == top - 1);
  permit one = c.try_acquire(1);
  CHECK(one);
  CHECK(c.in_use() == top);
  CHECK_FALSE(c.try_acquire(top));
  one.release();
  a.release();
  CHECK(c.in_use() == 0);
  // Giving back more than is held (a misuse of release_detached) stops at 0.
  permit d = c.try_acquire(3);
  const std::uint64_t held = d.detach();
  c.release_detached(held + 100);
  CHECK(c.in_use() == 0);
  CHECK(c.try_acquire(top));
  for (std::uint64_t seed : tgtest::seeds(2)) {
    INFO("seed " << seed);
    tgtest::rng g(seed);
    concurrency_limiter r(g.chance(50) ? top : g.between(1, 8));
    std::vector<permit> held_permits;
    std::uint64_t bad = 0;
    for (int i = 0; i < 2000; ++i) {
      const std::uint64_t n = g.chance(50) ? g.between(0, 4) : top - g.between(0, 4);
      switch (g.between(0, 3)) {
        case 0: {
          permit p = r.try_acquire(n);
          if (p && r.in_use() > r.limit() && n > 0) ++bad;  // never past the limit it was taken under
          if (p) held_permits.push_back(std::move(p));
          break;
        }
        case 1:
          if (!held_permits.empty()) held_permits.erase(held_permits.begin() + static_cast<std::ptrdiff_t>(g.between(0, held_permits.size() - 1)));
          break;
        case 2: (void)r.set_limit(g.chance(20) ? 0 : (g.chance(50) ? top - g.between(0, 2) : g.between(1, 8))); break;
        default:
          if (r.available() > r.limit()) ++bad;
          break;
      }
    }
    held_permits.clear();
    CHECK(bad == 0);
    CHECK(r.in_use() == 0);
  }
}

// Reaches the acquisition with a hook that runs between its read of the state
// and the decision made on it: a thread stalled there, made deterministic.
TOLLGATE_BEGIN_NAMESPACE
namespace detail {
struct concurrency_probe {
  template <class F>
  static permit acquire_with(concurrency_limiter& c, std::uint64_t n, F&& between) {
    return c.acquire_with(n, std::forward<F>(between));
  }
};
}  // namespace detail
TOLLGATE_END_NAMESPACE

TEST_CASE("an acquirer stalled across a shrink is held to the new limit", "[concurrency][live]") {
  // Limit 10, 9 held: 5 more cannot fit. While the acquirer is stalled, the
  // limit drops to 1 and only then are the 9 units freed, so no order of
  // events admits the 5: before the change 9 are held, after it the limit
  // is 1.
  concurrency_limiter c(10);
  permit h = c.try_acquire(9);
  REQUIRE(h);
  int stalls = 0;
  permit p = detail::concurrency_probe::acquire_with(c, 5, [&] {
    if (stalls++ != 0) return;
    CHECK(c.set_limit(1) == errc::ok);  // CHECK, not REQUIRE: nothing may throw in here
    h.release();
  });
  CHECK(stalls == 1);  // the stall happened, once
  CHECK_FALSE(p);
  CHECK(c.in_use() == 0);
  CHECK(c.limit() == 1);
  // And after the stall, the new limit is the one in force.
  CHECK(c.try_acquire(2).decision().never());
  CHECK(c.try_acquire(1));
}

TEST_CASE("concurrency limits: range, and releases beyond what is held", "[concurrency][errors]") {
  static_assert(concurrency_limiter::validate(concurrency_limiter::max_limit) == errc::ok, "");
  static_assert(concurrency_limiter::validate(concurrency_limiter::max_limit + 1) == errc::too_large, "");
  CHECK(concurrency_limiter::max_limit == 4294967295u);
  errc ec = errc::ok;
  concurrency_limiter bad(std::uint64_t{1} << 32, ec);
  CHECK(ec == errc::too_large);
  CHECK(bad.try_acquire(1).decision().why() == reason::misconfigured);
  CHECK_THROWS_AS(concurrency_limiter(std::uint64_t{1} << 40), config_error);

  concurrency_limiter c(concurrency_limiter::max_limit);
  permit all = c.try_acquire(concurrency_limiter::max_limit);
  REQUIRE(all);
  CHECK(c.in_use() == concurrency_limiter::max_limit);
  CHECK(c.limit() == concurrency_limiter::max_limit);  // the count does not spill into the limit
  CHECK_FALSE(c.try_acquire(1));
  CHECK(c.try_acquire(std::uint64_t{1} << 32).decision().never());
  CHECK(c.set_limit(std::uint64_t{1} << 32) == errc::too_large);
  CHECK(c.limit() == concurrency_limiter::max_limit);
  all.release();
  CHECK(c.in_use() == 0);

  // Releasing more than is held is a caller's bug; it releases what is held
  // and leaves the limit alone.
  permit two = c.try_acquire(2);
  REQUIRE(two);
  c.release_detached(two.detach() + 5);
  CHECK(c.in_use() == 0);
  CHECK(c.limit() == concurrency_limiter::max_limit);
  c.release_detached(std::numeric_limits<std::uint64_t>::max());
  CHECK(c.in_use() == 0);
  CHECK(c.limit() == concurrency_limiter::max_limit);
  CHECK(c.try_acquire(3));
}

TEST_CASE("property: with live limit changes the count matches a plain counter", "[concurrency][oracle][live]") {
  for (std::uint64_t seed : tgtest::seeds(3)) {
    INFO("seed " << seed);
    tgtest::rng g(seed);
    std::uint64_t limit = g.between(1, 20);
    concurrency_limiter c(limit);
    std::vector<permit> held;
    std::uint64_t count = 0, mismatches = 0, admitted = 0, busy = 0;
    for (int i = 0; i < 30000; ++i) {
      const std::uint64_t op = g.between(0, 9);
      if (op == 0) {
        limit = g.between(1, 20);
        if (c.set_limit(limit) != errc::ok) ++mismatches;
      } else if (op <= 4 && !held.empty()) {
        const std::size_t k = static_cast<std::size_t>(g.between(0, held.size() - 1));
        count -= held[k].count();
        if (g.chance(50)) {
          held.erase(held.begin() + static_cast<std::ptrdiff_t>(k));
        } else {
          c.release_detached(held[k].detach());
          held.erase(held.begin() + static_cast<std::ptrdiff_t>(k));
        }
      } else {
        const std::uint64_t n = g.between(1, 21);
        permit p = c.try_acquire(n);
        const bool expect = n <= limit && count + n <= limit;
        if (static_cast<bool>(p) != expect) ++mismatches;
        if (p.decision().never() != (n > limit)) ++mismatches;
        if (p) {
          count += n;
          ++admitted;
          if (count > limit) ++mismatches;  // the bound: right after an admission, held <= limit
          held.push_back(std::move(p));
        } else if (expect == false && n <= limit) {
          ++busy;
        }
      }
      if (c.in_use() != count || c.limit() != limit) ++mismatches;
      if (c.available() != (count >= limit ? 0 : limit - count)) ++mismatches;
    }
    CHECK(mismatches == 0);
    CHECK(admitted > 1000);
    CHECK(busy > 1000);
  }
}

TEST_CASE("threads: live limit changes race acquisitions and releases", "[concurrency][live][threads]") {
  // Limits move among 1, 4 and 10 while three threads take 1 .. 12 units.
  // Whatever the interleaving: never more than 10 held at once (the largest
  // limit), 11 or 12 always `never`, 1 never `never`, and every unit back.
  for (std::uint64_t seed : tgtest::seeds(1)) {
    INFO("seed " << seed);
    concurrency_limiter c(10);
    std::atomic<std::int64_t> tally{0}, worst{0};
    std::atomic<std::uint64_t> wrong{0}, admitted{0};
    std::atomic<bool> stop{false};
    const std::uint64_t ops = 20000 * tgtest::stress_factor();
    std::thread changer([&] {
      tgtest::rng g(seed);
      const std::uint64_t limits[] = {1, 4, 10};
      while (!stop.load(std::memory_order_relaxed))
        if (c.set_limit(limits[g.between(0, 2)]) != errc::ok) wrong.fetch_add(1);
    });
    std::vector<std::thread> workers;
    for (unsigned t = 0; t < 3; ++t) {
      workers.emplace_back([&, t] {
        tgtest::rng g(seed * 31 + t);
        for (std::uint64_t i = 0; i < ops; ++i) {
          const std::uint64_t n = g.between(1, 12);
          permit p = c.try_acquire(n);
          if ((n > 10 && !p.decision().never()) || (n == 1 && p.decision().never())) wrong.fetch_add(1);
          if (!p) continue;
          admitted.fetch_add(1, std::memory_order_relaxed);
          const std::int64_t now_held = tally.fetch_add(static_cast<std::int64_t>(n)) + static_cast<std::int64_t>(n);
          std::int64_t w = worst.load();
          while (now_held > w && !worst.compare_exchange_weak(w, now_held)) {
          }
          tally.fetch_sub(static_cast<std::int64_t>(n));
          if (g.chance(50)) c.release_detached(p.detach());
        }
      });
    }
    for (auto& w : workers) w.join();
    stop.store(true);
    changer.join();
    CHECK(wrong.load() == 0);
    CHECK(worst.load() <= 10);
    CHECK(admitted.load() > 0);
    CHECK(c.in_use() == 0);
  }
}

TEST_CASE("the account passes the concurrency range on", "[concurrency][account][errors]") {
  account_config c;
  c.concurrency = limit(std::uint64_t{1} << 32);
  errc ec = errc::ok;
  account<manual_clock> too_big(c, nanoseconds(0), ec);
  CHECK(ec == errc::too_large);

  c.concurrency = limit(10);
  account<manual_clock> a(c, nanoseconds(0), ec);
  REQUIRE(ec == errc::ok);
  tier_row t;
  t.concurrency = limit(std::uint64_t{1} << 32);
  CHECK(a.set_limits(t, nanoseconds(0)) == errc::too_large);
  CHECK(*a.remaining(nanoseconds(0)).concurrency == 10);
  t.concurrency = limit(concurrency_limiter::max_limit);
  CHECK(a.set_limits(t, nanoseconds(0)) == errc::ok);
  CHECK(*a.remaining(nanoseconds(0)).concurrency == concurrency_limiter::max_limit);
}
