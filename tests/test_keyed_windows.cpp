// keyed_windows: an exact per-key model and the strict-window bound over
// random schedules with many keys, forced collisions and a small table; a
// flood of new keys against a full table; threaded stress.
#include "catch_compat.hpp"
#include "keyed_support.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

using namespace tollgate;
using tgtest::ns;

namespace {

using namespace tgkeyed;

using tgtest::sec;

// A key's window the slow way: its newest slot and the counts of it and
// the three before.
struct model_window {
  std::int64_t tag = 0;
  std::uint64_t c[4] = {0, 0, 0, 0};
  std::uint64_t sum() const { return c[0] + c[1] + c[2] + c[3]; }
  void advance(std::int64_t s) {
    while (tag < s) {
      c[3] = c[2], c[2] = c[1], c[1] = c[0], c[0] = 0;
      ++tag;
    }
  }
  bool fresh_at(std::int64_t s) const { return sum() == 0 || s >= tag + 4; }
};

}  // namespace

TEST_CASE("keyed windows: configurations and the class of a live key", "[keyed]") {
  errc ec = errc::ok;
  keyed_windows<manual_clock> a(4, {{256, std::chrono::seconds(60)}}, hash_seed{}, ns(0), 4, ec);
  CHECK(ec == errc::too_large);
  keyed_windows<manual_clock> b(4, {{10, std::chrono::milliseconds(999)}}, hash_seed{}, ns(0), 4, ec);
  CHECK(ec == errc::window_too_short);
  CHECK(b.try_acquire(std::uint64_t{1}, 0, 1, ns(0)).status() == keyed_status::bad_class);
  keyed_windows<manual_clock> c(4, {{0, std::chrono::seconds(1)}}, hash_seed{}, ns(0), 4, ec);
  CHECK(ec == errc::zero_count);
  CHECK(keyed_windows<manual_clock>::bytes_per_entry() == 72);

  keyed_windows<manual_clock> t(8, {{2, std::chrono::seconds(3)}, {5, std::chrono::seconds(3)}}, hash_seed{5, 6}, ns(0));
  CHECK(t.try_acquire("u", 0, 0, ns(0)).admitted());
  CHECK_FALSE(t.contains("u"));
  CHECK(t.try_acquire("u", 0, 3, ns(0)).result().never());
  CHECK_FALSE(t.contains("u"));
  CHECK(t.try_acquire("u", 0, 2, ns(0)).admitted());
  // Class 0 (limit 2) stays the key's whatever a later call names.
  const keyed_result r = t.try_acquire("u", 1, 1, ns(sec / 2));
  CHECK(r.status() == keyed_status::limited);
  CHECK(r.result().retry_after() == ns(4 * sec - sec / 2));  // slot 0 leaves at slot 4
  CHECK(t.try_acquire("u", 1, 1, ns(4 * sec)).admitted());
  // Behind the newest slot: stale, with the time to that slot's start.
  const keyed_result st = t.try_acquire("u", 0, 1, ns(3 * sec));
  CHECK(st.result().why() == reason::stale_time);
  CHECK(st.result().retry_after() == ns(sec));
  CHECK(t.erase("u"));
  CHECK_FALSE(t.contains("u"));
}

// Random schedules against the exact model (with the window the whole
// table every answer is determined), and every key's admissions against
// the strict bound: at most L in any (t - W, t], across evictions.
TEST_CASE("keyed windows: per-key model and strict bound over random schedules", "[keyed]") {
  INFO(tgtest::seed_note());
  for (std::uint64_t trial = 0; trial < 60; ++trial) {
    tgtest::rng g(tgtest::seed_for(0x3d1f + trial));
    const std::size_t cap = static_cast<std::size_t>(g.between(1, 6));
    const std::uint64_t limit = g.between(1, 6);
    const std::int64_t window = static_cast<std::int64_t>(g.between(3, 5)) * sec;
    const std::int64_t width = (window + 2) / 3;
    keyed_windows<manual_clock, pair_hash> t(cap, {{limit, ns(window)}}, seed_from(trial), ns(0), cap);
    std::map<std::uint64_t, model_window> live;
    std::map<std::uint64_t, std::vector<std::pair<std::int64_t, std::uint64_t>>> events;
    std::int64_t now = 0, latest = 0, last_op = 0;
    auto sync = [&] {
      for (auto l = live.begin(); l != live.end();) {
        if (t.contains(l->first * 2)) {
          ++l;
          continue;
        }
        // Reclaimed: only when all its counts had left at the claimer's now.
        REQUIRE(l->second.fresh_at(last_op / width));
        l = live.erase(l);
      }
    };
    for (int step = 0; step < 800; ++step) {
      INFO("trial " << trial << " step " << step << " cap " << cap << " now " << now);
      now += static_cast<std::int64_t>(g.between(0, 2 * sec));
      if (g.chance(8)) now = now > 2 * sec ? now - static_cast<std::int64_t>(g.between(0, 2 * sec)) : now;
      sync();
      const std::uint64_t key = g.between(0, 23), grp = key >> 1;
      auto it = live.find(grp);
      REQUIRE(t.contains(key) == (it != live.end()));
      const std::int64_t s = now / width;
      last_op = now;
      if (g.chance(8)) {
        REQUIRE(t.erase(key) == (it != live.end()));
        if (it != live.end()) live.erase(it);
        events.erase(grp);  // an explicit reset: the bound starts again
        continue;
      }
      const std::uint64_t n = g.between(0, limit + 1);
      const keyed_result r = t.try_acquire(key, 0, n, ns(now));
      if (n == 0) {
        CHECK(r.admitted());
        continue;
      }
      if (n > limit) {
        REQUIRE(r.status() == keyed_status::limited);
        CHECK(r.result().never());
        continue;
      }
      if (it == live.end()) {
        bool room = live.size() < cap;
        for (const auto& l : live) room = room || l.second.fresh_at(s);
        if (!room) {
          REQUIRE(r.status() == keyed_status::table_full);
          continue;
        }
        latest = now > latest ? now : latest;
        model_window fresh;
        fresh.tag = latest / width;
        it = live.emplace(grp, fresh).first;
      }
      model_window& m = it->second;
      if (s < m.tag) {
        REQUIRE(r.status() == keyed_status::limited);
        CHECK(r.result().why() == reason::stale_time);
        CHECK(r.result().retry_after() == ns(m.tag * width - now));
        continue;
      }
      model_window at = m;  // moved to slot s only by an admission
      at.advance(s);
      if (at.sum() + n <= limit) {
        REQUIRE(r.status() == keyed_status::admitted);
        at.c[0] += n;
        m = at;
        events[grp].emplace_back(now, n);
      } else {
        REQUIRE(r.status() == keyed_status::limited);
        std::uint64_t left = at.sum();
        std::int64_t j = 1;
        for (; j <= 4; ++j) {
          left -= at.c[4 - j];
          if (left + n <= limit) break;
        }
        CHECK(r.result().retry_after() == ns((s + j) * width - now));
      }
      sync();
    }
    for (const auto& kv : events) CHECK(tgtest::max_window_sum(kv.second, window) <= limit);
  }
}

TEST_CASE("keyed windows: a flood of new keys changes no live window", "[keyed]") {
  const std::size_t cap = 1024;
  keyed_windows<manual_clock> t(cap, {{3, std::chrono::seconds(60)}}, seed_from(0xf10f), ns(0));
  std::vector<std::uint64_t> keys;
  for (std::uint64_t k = 0; keys.size() < cap && k < 2000000; ++k) {
    const keyed_result r = t.try_acquire(k, 0, 2, ns(0));
    if (r.admitted()) keys.push_back(k);
    else REQUIRE(r.table_full());
  }
  REQUIRE(keys.size() == cap);
  std::uint64_t full = 0, right_wait = 0;
  const std::uint64_t flood = tgtest::sized(1000000);
  for (std::uint64_t i = 0; i < flood; ++i) {
    const keyed_result r = t.try_acquire((std::uint64_t{1} << 40) + i, 0, 1, ns(sec));
    full += r.table_full() ? 1 : 0;
    right_wait += r.result().retry_after() == ns(80 * sec - sec) ? 1 : 0;  // slot 0 leaves at slot 4 (20 s slots)
  }
  CHECK(full == flood);
  CHECK(right_wait == flood);
  for (const std::uint64_t k : keys) {
    REQUIRE(t.try_acquire(k, 0, 1, ns(2 * sec)).admitted());  // exactly its limit left
    REQUIRE(t.try_acquire(k, 0, 1, ns(2 * sec)).status() == keyed_status::limited);
  }
}

// Threads admit on 48 keys over a table of 16 with a shared clock moving
// on: every key's admissions (logged under a lock, beside the table) keep
// the strict bound across evictions.
TEST_CASE("keyed windows: threaded stress keeps the strict bound", "[keyed]") {
  INFO(tgtest::seed_note());
  const std::int64_t window = 3 * sec;
  keyed_windows<manual_clock> t(16, {{4, ns(window)}}, seed_from(0x57e7), ns(0), 16);
  std::atomic<std::int64_t> clock{0};
  std::mutex mu;
  std::map<std::uint64_t, std::vector<std::pair<std::int64_t, std::uint64_t>>> events;
  const std::uint64_t rounds = 30000 * tgtest::stress_factor();
  std::vector<std::thread> ts;
  for (unsigned th = 0; th < 4; ++th) {
    ts.emplace_back([&, th] {
      tgtest::rng g(tgtest::seed_for(0x57e70 + th));
      for (std::uint64_t i = 0; i < rounds; ++i) {
        const std::int64_t now = clock.fetch_add(static_cast<std::int64_t>(g.between(0, 200000)));
        const std::uint64_t k = g.between(0, 47), n = g.between(1, 2);
        if (t.try_acquire(k, 0, n, ns(now)).admitted()) {
          std::lock_guard<std::mutex> lock(mu);
          events[k].emplace_back(now, n);
        }
      }
    });
  }
  for (auto& x : ts) x.join();
  std::uint64_t total = 0;
  for (const auto& kv : events) {
    CHECK(tgtest::max_window_sum(kv.second, window) <= 4);
    total += kv.second.size();
  }
  CHECK(total > 0);
}

// A `now` before the origin is decided as the origin, and its wait is from
// `now`: refused 1 ns before it, admitted at it. (The wait was counted from
// the origin: asked at 5 s with origin 10 s, it said 4 s where 9 s is exact.)
TEST_CASE("keyed windows: waits for a now before the origin are exact from that now", "[keyed]") {
  const std::int64_t origin = 10 * sec;
  for (const std::int64_t asked : {5 * sec, 9 * sec, origin - 1, -7 * sec}) {
    INFO("asked at " << asked);
    auto table = [&] {
      auto t = std::make_unique<keyed_windows<manual_clock>>(4, std::vector<window_class>{{1, std::chrono::seconds(3)}},
                                                             hash_seed{}, ns(origin), 4);
      REQUIRE(t->try_acquire(std::uint64_t{1}, 0, 1, ns(origin + sec / 2)).admitted());
      return t;
    };
    auto t = table();
    const keyed_result r = t->try_acquire(std::uint64_t{1}, 0, 1, ns(asked));
    REQUIRE(r.result().later());
    const std::int64_t wait = r.result().retry_after().count();
    CHECK(asked + wait == origin + 4 * sec);  // slot 0 (of 1 s) leaves at slot 4, 14 s
    CHECK_FALSE(t->try_acquire(std::uint64_t{1}, 0, 1, ns(asked + wait - 1)).admitted());
    CHECK(table()->try_acquire(std::uint64_t{1}, 0, 1, ns(asked + wait)).admitted());
  }
}
