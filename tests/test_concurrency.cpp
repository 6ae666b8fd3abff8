#include "catch_compat.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <cstddef>
#include <limits>
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
  constexpr std::uint64_t top = std::numeric_limits<std::uint64_t>::max();
  concurrency_limiter c(top);
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
