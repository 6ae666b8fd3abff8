// keyed_permits and keyed_budgets: per-key oracles over random schedules
// with many keys, forced collisions and a small table; floods of new keys
// against a full table; threaded stress against the per-key bounds.
#include "catch_compat.hpp"
#include "keyed_support.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace tollgate;
using tgtest::ns;

namespace {

using namespace tgkeyed;

// One incarnation of a group's entry, as the oracle sees it.
struct incarnation {
  std::size_t cls = 0;
  std::int64_t held = 0;       // permits: units held; budgets: committed nano-units
  std::int64_t spent = 0;      // budgets: settled
  std::uint64_t holds = 0;     // permit or reservation objects pinning it
};

using usd_budgets = keyed_budgets<usd_tag, pair_hash>;

}  // namespace

TEST_CASE("keyed permits: configurations, zero, never and the class of a live key", "[keyed]") {
  errc ec = errc::ok;
  keyed_permits<> bad(0, {1}, hash_seed{}, 16, ec);
  CHECK(ec == errc::zero_count);
  CHECK(bad.try_acquire(std::uint64_t{1}, 0).status() == keyed_status::bad_class);
  keyed_permits<> bad2(4, {std::uint64_t{1} << 32}, hash_seed{}, 16, ec);
  CHECK(ec == errc::too_large);
  keyed_permits<> bad3(4, {0}, hash_seed{}, 16, ec);
  CHECK(ec == errc::zero_count);
  CHECK(keyed_permits<>::bytes_per_entry() == 72);

  keyed_permits<> t(8, {2, 5}, hash_seed{1, 2});
  CHECK(t.try_acquire(std::uint64_t{1}, 2).status() == keyed_status::bad_class);
  keyed_permit z = t.try_acquire(std::uint64_t{1}, 0, 0);
  CHECK(static_cast<bool>(z));
  CHECK_FALSE(t.contains(std::uint64_t{1}));  // n == 0 claims nothing
  keyed_permit big = t.try_acquire(std::uint64_t{1}, 0, 3);
  CHECK(big.status() == keyed_status::limited);
  CHECK(big.result().result().never());
  CHECK_FALSE(t.contains(std::uint64_t{1}));
  {
    keyed_permit a = t.try_acquire("alice", 0, 2);
    REQUIRE(a);
    CHECK(t.in_use("alice") == 2);
    // The live key keeps class 0 (limit 2) whatever class a later call names.
    keyed_permit b = t.try_acquire("alice", 1, 1);
    CHECK(b.status() == keyed_status::limited);
    CHECK(b.result().result().why() == reason::busy);
    keyed_permit moved = std::move(a);
    CHECK(t.in_use("alice") == 2);
    moved.release();
    CHECK(t.in_use("alice") == 0);
    moved.release();  // once only
    CHECK(t.in_use("alice") == 0);
  }
  CHECK(t.contains("alice"));
}

// Random schedules against an exact oracle: with the window the whole
// table, every answer is determined (admitted, limited, table_full), and a
// key that loses its entry must have held nothing.
TEST_CASE("keyed permits: per-key oracle over random schedules", "[keyed]") {
  INFO(tgtest::seed_note());
  const std::vector<std::uint64_t> limits = {1, 2, 3};
  for (std::uint64_t trial = 0; trial < 40; ++trial) {
    tgtest::rng g(tgtest::seed_for(0x9e71 + trial));
    const std::size_t cap = static_cast<std::size_t>(g.between(1, 6));
    keyed_permits<pair_hash> t(cap, limits, seed_from(trial), cap);
    std::map<std::uint64_t, std::uint64_t> live;  // group -> incarnation id
    std::map<std::uint64_t, incarnation> incs;    // id -> state (live or erased)
    struct held_permit {
      keyed_permit p;
      std::uint64_t inc;
    };
    std::vector<held_permit> out;
    std::uint64_t next_id = 1;
    auto pinned = [&] {
      std::size_t n = 0;
      for (const auto& kv : incs) n += kv.second.holds > 0 ? 1 : 0;
      return n;
    };
    // Sync with the table: an entry may vanish only when nothing pins it.
    auto sync = [&] {
      for (auto l = live.begin(); l != live.end();) {
        if (t.contains(l->first * 2)) {
          ++l;
          continue;
        }
        REQUIRE(incs[l->second].holds == 0);
        incs.erase(l->second);
        l = live.erase(l);
      }
    };
    for (int step = 0; step < 600; ++step) {
      INFO("trial " << trial << " step " << step << " cap " << cap);
      sync();
      const std::uint64_t key = g.between(0, 23), grp = key >> 1;
      auto it = live.find(grp);
      REQUIRE(t.contains(key) == (it != live.end()));
      const std::uint64_t op = g.between(0, 9);
      if (op < 5) {
        const std::size_t cls = static_cast<std::size_t>(g.between(0, 2));
        const std::uint64_t n = g.between(0, 3);
        keyed_permit p = t.try_acquire(key, cls, n);
        if (n == 0) {
          CHECK(p.status() == keyed_status::admitted);
          continue;
        }
        if (it != live.end()) {
          incarnation& in = incs[it->second];
          const std::uint64_t lim = limits[in.cls];
          if (n > lim) {
            REQUIRE(p.status() == keyed_status::limited);
            CHECK(p.result().result().never());
          } else if (static_cast<std::uint64_t>(in.held) + n > lim) {
            REQUIRE(p.status() == keyed_status::limited);
            CHECK(p.result().result().why() == reason::busy);
          } else {
            REQUIRE(p.status() == keyed_status::admitted);
            in.held += static_cast<std::int64_t>(n);
            ++in.holds;
            out.push_back({std::move(p), it->second});
          }
        } else if (n > limits[cls]) {
          REQUIRE(p.status() == keyed_status::limited);
        } else if (pinned() == cap) {
          REQUIRE(p.status() == keyed_status::table_full);
        } else {
          REQUIRE(p.status() == keyed_status::admitted);
          const std::uint64_t id = next_id++;
          incs[id] = incarnation{cls, static_cast<std::int64_t>(n), 0, 1};
          live[grp] = id;
          out.push_back({std::move(p), id});
        }
      } else if (op < 9) {
        if (out.empty()) continue;
        const std::size_t i = static_cast<std::size_t>(g.between(0, out.size() - 1));
        incarnation& in = incs[out[i].inc];
        in.held -= static_cast<std::int64_t>(out[i].p.count());
        --in.holds;
        out[i].p.release();
        bool is_live = false;
        for (const auto& kv : live) is_live = is_live || kv.second == out[i].inc;
        if (!is_live && in.holds == 0) incs.erase(out[i].inc);  // an erased entry, now free
        out.erase(out.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        REQUIRE(t.erase(key) == (it != live.end()));
        if (it != live.end()) {
          if (incs[it->second].holds == 0) incs.erase(it->second);
          live.erase(it);
        }
      }
      sync();
      for (const auto& kv : live) CHECK(t.in_use(kv.first * 2) == static_cast<std::uint64_t>(incs[kv.second].held));
    }
  }
}

TEST_CASE("keyed permits: a flood of new keys changes no held permit", "[keyed]") {
  const std::size_t cap = 1024;
  keyed_permits<> t(cap, {2}, seed_from(0xf10d));
  std::vector<keyed_permit> held;
  std::vector<std::uint64_t> keys;
  for (std::uint64_t k = 0; held.size() < cap && k < 2000000; ++k) {
    keyed_permit p = t.try_acquire(k, 0);
    if (p) {
      held.push_back(std::move(p));
      keys.push_back(k);
    } else {
      REQUIRE(p.status() == keyed_status::table_full);
    }
  }
  REQUIRE(held.size() == cap);  // every entry pinned
  std::uint64_t full = 0;
  const std::uint64_t flood = tgtest::sized(1000000);
  for (std::uint64_t i = 0; i < flood; ++i) {
    const keyed_permit p = t.try_acquire((std::uint64_t{1} << 40) + i, 0);
    full += p.status() == keyed_status::table_full ? 1 : 0;
  }
  CHECK(full == flood);
  for (const std::uint64_t k : keys) {
    REQUIRE(t.in_use(k) == 1);
    keyed_permit another = t.try_acquire(k, 0);
    CHECK(another);  // its limit is intact: exactly one more
    CHECK(t.try_acquire(k, 0).status() == keyed_status::limited);
  }
}

// Threads acquire and release permits on 64 keys over a table of 16: a
// count kept beside the table (raised after an admission, lowered before
// the release) never passes a key's limit, though entries are reclaimed
// all the time; at the end nothing is held.
TEST_CASE("keyed permits: threaded stress keeps every key within its limit", "[keyed]") {
  INFO(tgtest::seed_note());
  keyed_permits<> t(16, {2}, seed_from(0x57e5), 16);
  std::vector<std::atomic<int>> in_flight(64);
  for (auto& a : in_flight) a.store(0);
  std::atomic<int> worst{0};
  std::atomic<std::uint64_t> admitted{0};
  const std::uint64_t rounds = 40000 * tgtest::stress_factor();
  std::vector<std::thread> ts;
  for (unsigned th = 0; th < 4; ++th) {
    ts.emplace_back([&, th] {
      tgtest::rng g(tgtest::seed_for(0x57e50 + th));
      for (std::uint64_t i = 0; i < rounds; ++i) {
        const std::uint64_t k = g.between(0, 63);
        keyed_permit p = t.try_acquire(k, 0, g.between(1, 2));
        if (!p) continue;
        const int now_in = in_flight[k].fetch_add(static_cast<int>(p.count())) + static_cast<int>(p.count());
        int w = worst.load();
        while (now_in > w && !worst.compare_exchange_weak(w, now_in)) {
        }
        admitted.fetch_add(1);
        if (g.chance(30)) std::this_thread::yield();
        in_flight[k].fetch_sub(static_cast<int>(p.count()));
        p.release();
      }
    });
  }
  for (auto& x : ts) x.join();
  CHECK(worst.load() <= 2);
  CHECK(admitted.load() > 0);
  for (std::uint64_t k = 0; k < 64; ++k) CHECK(t.in_use(k) == 0);
  // Nothing pins an entry: 16 new keys can hold one each.
  std::vector<keyed_permit> all;
  for (std::uint64_t k = 1000; all.size() < 16 && k < 1100; ++k) {
    keyed_permit p = t.try_acquire(k, 0);
    if (p) all.push_back(std::move(p));
  }
  CHECK(all.size() == 16);
}

TEST_CASE("keyed budgets: configurations, zero, settle rules", "[keyed]") {
  errc ec = errc::ok;
  keyed_budgets<> bad(4, {usd::from_nanos(0)}, hash_seed{}, keyed_budget_reuse::never, 16, ec);
  CHECK(ec == errc::zero_count);
  CHECK(bad.reserve(std::uint64_t{1}, 0, usd::from_nanos(1)).status == keyed_status::bad_class);
  CHECK(keyed_budgets<>::bytes_per_entry() == 72);
  keyed_budgets<> t(8, {usd::from_units(10)}, hash_seed{3, 4});
  keyed_reservation<usd_tag> z = t.reserve("t1", 0, usd());
  CHECK(z.admitted());
  CHECK_FALSE(z.held());
  CHECK_FALSE(t.contains("t1"));
  keyed_reservation<usd_tag> big = t.reserve("t1", 0, usd::from_units(11));
  CHECK(big.status == keyed_status::limited);
  CHECK(big.missing == usd::from_units(1));
  CHECK_FALSE(t.contains("t1"));
  keyed_reservation<usd_tag> a = t.reserve("t1", 0, usd::from_units(6));
  REQUIRE(a);
  CHECK(t.remaining("t1", 0) == usd::from_units(4));
  CHECK(t.reserve("t1", 0, usd::from_units(5)).missing == usd::from_units(1));
  CHECK(t.settle(a, usd::from_units(2)) == usd::from_units(4));
  CHECK(t.settle(a, usd::from_units(2)) == usd());  // once only
  CHECK(t.spent("t1") == usd::from_units(2));
  CHECK(t.remaining("t1", 0) == usd::from_units(8));
  keyed_reservation<usd_tag> b = t.reserve("t1", 0, usd::from_units(3));
  b.drop();  // dropped unsettled: its money stays committed
  CHECK(t.remaining("t1", 0) == usd::from_units(5));
  CHECK(t.settle(b, usd()) == usd());
  // Overspend is recorded.
  keyed_reservation<usd_tag> c = t.reserve("t1", 0, usd::from_units(1));
  CHECK(t.settle(c, usd::from_units(3)) == usd::from_units(-2));
  CHECK(t.spent("t1") == usd::from_units(5));
  // A reservation of another table gives nothing here.
  keyed_budgets<> other(8, {usd::from_units(10)}, hash_seed{3, 4});
  keyed_reservation<usd_tag> d = other.reserve("t1", 0, usd::from_units(1));
  CHECK(t.settle(d, usd()) == usd());
  CHECK(other.remaining("t1", 0) == usd::from_units(9));
}

// Random schedules against an exact oracle, for both reuse rules.
TEST_CASE("keyed budgets: per-key oracle over random schedules", "[keyed]") {
  INFO(tgtest::seed_note());
  const std::vector<std::int64_t> lim = {5, 9};
  for (std::uint64_t trial = 0; trial < 40; ++trial) {
    tgtest::rng g(tgtest::seed_for(0xb0d6 + trial));
    const keyed_budget_reuse reuse = trial % 2 == 0 ? keyed_budget_reuse::never : keyed_budget_reuse::idle;
    const std::size_t cap = static_cast<std::size_t>(g.between(1, 6));
    usd_budgets t(cap, {usd::from_nanos(lim[0]), usd::from_nanos(lim[1])}, seed_from(trial), reuse, cap);
    std::map<std::uint64_t, std::uint64_t> live;
    std::map<std::uint64_t, incarnation> incs;
    struct held_res {
      keyed_reservation<usd_tag> r;
      std::uint64_t inc;
    };
    std::vector<held_res> out;
    std::uint64_t next_id = 1;
    auto occupied = [&] {  // entries no new key may take
      std::size_t n = 0;
      for (const auto& kv : incs) {
        bool is_live = false;
        for (const auto& l : live) is_live = is_live || l.second == kv.first;
        n += kv.second.holds > 0 || (is_live && reuse == keyed_budget_reuse::never) ? 1 : 0;
      }
      return n;
    };
    // An entry may vanish only when the user said budgets reset, and
    // nothing pinned it.
    auto sync = [&] {
      for (auto l = live.begin(); l != live.end();) {
        if (t.contains(l->first * 2)) {
          ++l;
          continue;
        }
        REQUIRE(reuse == keyed_budget_reuse::idle);
        REQUIRE(incs[l->second].holds == 0);
        incs.erase(l->second);
        l = live.erase(l);
      }
    };
    auto gone = [&](std::uint64_t id) {
      for (const auto& l : live)
        if (l.second == id) return false;
      return incs[id].holds == 0;
    };
    for (int step = 0; step < 600; ++step) {
      INFO("trial " << trial << " step " << step << " cap " << cap);
      sync();
      const std::uint64_t key = g.between(0, 23), grp = key >> 1;
      auto it = live.find(grp);
      REQUIRE(t.contains(key) == (it != live.end()));
      const std::uint64_t op = g.between(0, 11);
      if (op < 5) {
        const std::size_t cls = static_cast<std::size_t>(g.between(0, 1));
        const std::int64_t amt = static_cast<std::int64_t>(g.between(0, 6));
        keyed_reservation<usd_tag> r = t.reserve(key, cls, usd::from_nanos(amt));
        if (amt == 0) {
          CHECK(r.admitted());
          CHECK_FALSE(r.held());
          continue;
        }
        if (it != live.end()) {
          incarnation& in = incs[it->second];
          if (in.held + amt > lim[in.cls]) {
            REQUIRE(r.status == keyed_status::limited);
            CHECK(r.missing.nanos() == in.held + amt - lim[in.cls]);
          } else {
            REQUIRE(r.status == keyed_status::admitted);
            in.held += amt;
            ++in.holds;
            out.push_back({std::move(r), it->second});
          }
        } else if (amt > lim[cls]) {
          REQUIRE(r.status == keyed_status::limited);
        } else if (occupied() == cap) {
          REQUIRE(r.status == keyed_status::table_full);
        } else {
          REQUIRE(r.status == keyed_status::admitted);
          const std::uint64_t id = next_id++;
          incs[id] = incarnation{cls, amt, 0, 1};
          live[grp] = id;
          out.push_back({std::move(r), id});
        }
      } else if (op < 10) {
        if (out.empty()) continue;
        const std::size_t i = static_cast<std::size_t>(g.between(0, out.size() - 1));
        incarnation& in = incs[out[i].inc];
        const std::int64_t amt = out[i].r.amount.nanos();
        if (op == 9) {  // dropped: stays committed
          out[i].r.drop();
        } else {
          const std::int64_t actual = static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(amt) + 1));
          CHECK(t.settle(out[i].r, usd::from_nanos(actual)).nanos() == amt - actual);
          in.held += actual - amt;
          in.spent += actual;
        }
        --in.holds;
        const std::uint64_t id = out[i].inc;
        out.erase(out.begin() + static_cast<std::ptrdiff_t>(i));
        if (gone(id)) incs.erase(id);
      } else {
        REQUIRE(t.erase(key) == (it != live.end()));
        if (it != live.end()) {
          const std::uint64_t id = it->second;
          live.erase(it);
          if (gone(id)) incs.erase(id);
        }
      }
      sync();
      for (const auto& kv : live) {
        const incarnation& in = incs[kv.second];
        CHECK(t.remaining(kv.first * 2, 0).nanos() == (in.held >= lim[in.cls] ? 0 : lim[in.cls] - in.held));
        CHECK(t.spent(kv.first * 2 + 1).nanos() == in.spent);
      }
    }
  }
}

TEST_CASE("keyed budgets: a flood of new keys changes no budget", "[keyed]") {
  const std::size_t cap = 1024;
  keyed_budgets<> t(cap, {usd::from_units(10)}, seed_from(0xf10e));
  std::vector<std::uint64_t> keys;
  for (std::uint64_t k = 0; keys.size() < cap && k < 2000000; ++k) {
    keyed_reservation<usd_tag> r = t.reserve(k, 0, usd::from_units(4));
    if (r) {
      (void)t.settle(r, usd::from_units(3));
      keys.push_back(k);
    } else {
      REQUIRE(r.status == keyed_status::table_full);
    }
  }
  REQUIRE(keys.size() == cap);
  std::uint64_t full = 0;
  const std::uint64_t flood = tgtest::sized(1000000);
  for (std::uint64_t i = 0; i < flood; ++i) {
    full += t.reserve((std::uint64_t{1} << 40) + i, 0, usd::from_units(1)).status == keyed_status::table_full ? 1 : 0;
  }
  CHECK(full == flood);
  for (const std::uint64_t k : keys) {
    REQUIRE(t.spent(k) == usd::from_units(3));
    REQUIRE(t.remaining(k, 0) == usd::from_units(7));
    CHECK(t.reserve(k, 0, usd::from_units(8)).status == keyed_status::limited);
  }
}

// Threads reserve and settle on 32 keys over a table of 32 (never reused):
// no key's settled total passes its limit, and each key's spent is the sum
// its callers settled.
TEST_CASE("keyed budgets: threaded stress keeps every key within its budget", "[keyed]") {
  INFO(tgtest::seed_note());
  const std::int64_t limit = 50000;
  keyed_budgets<usd_tag> t(32, {usd::from_nanos(limit)}, seed_from(0x57e6), keyed_budget_reuse::never, 32);
  std::vector<std::atomic<std::int64_t>> settled(32);
  for (auto& a : settled) a.store(0);
  const std::uint64_t rounds = 30000 * tgtest::stress_factor();
  std::vector<std::thread> ts;
  for (unsigned th = 0; th < 4; ++th) {
    ts.emplace_back([&, th] {
      tgtest::rng g(tgtest::seed_for(0x57e60 + th));
      for (std::uint64_t i = 0; i < rounds; ++i) {
        const std::uint64_t k = g.between(0, 31);
        keyed_reservation<usd_tag> r = t.reserve(k, 0, usd::from_nanos(static_cast<std::int64_t>(g.between(1, 9))));
        if (!r) continue;
        const std::int64_t actual = static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(r.amount.nanos())));
        settled[k].fetch_add(actual);
        (void)t.settle(r, usd::from_nanos(actual));
      }
    });
  }
  for (auto& x : ts) x.join();
  for (std::uint64_t k = 0; k < 32; ++k) {
    CHECK(settled[k].load() <= limit);
    CHECK(t.spent(k).nanos() == settled[k].load());
  }
}

// The account allows 2 requests a minute; each side's refusal leaves the
// other as it was (the key's permit or reservation is released at once).
TEST_CASE("keyed permits and budgets: admission under the account is all or nothing", "[keyed]") {
  auto config = [] {
    account_config c;
    c.concurrency = limit(8);
    c.rpm = limit(2);
    c.tpm = limit(100000);
    c.model = server_model::sliding_log;
    return c;
  };
  request r;
  r.model = model_by_id("kimi-k2.6");
  r.prompt_tokens = 10;
  r.max_tokens = 10;
  {
    account<manual_clock> acc(config(), ns(0));
    keyed_permits<> keys(8, {1}, seed_from(0xacc1));
    auto a = admit_keyed(keys, acc, std::string_view("alice"), 0, 1, r, ns(0));
    REQUIRE(a.admitted());
    CHECK(keys.in_use("alice") == 1);
    // The key refuses (its one permit is held): the account is not asked.
    auto b = admit_keyed(keys, acc, std::string_view("alice"), 0, 1, r, ns(0));
    CHECK_FALSE(b.admitted());
    CHECK(b.key == keyed_status::limited);
    CHECK_FALSE(b.account_asked);
    auto c = admit_keyed(keys, acc, std::string_view("bob"), 0, 1, r, ns(0));
    REQUIRE(c.admitted());  // the account's second
    // The account refuses (RPM): carol's permit is released at once.
    auto d = admit_keyed(keys, acc, std::string_view("carol"), 0, 1, r, ns(0));
    CHECK_FALSE(d.admitted());
    CHECK(d.account_asked);
    CHECK(d.account.refused.has(dimension::rpm));
    CHECK(keys.in_use("carol") == 0);
    a.permit.release();
    CHECK(keys.in_use("alice") == 0);
  }
  {
    account<manual_clock> acc(config(), ns(0));
    keyed_budgets<> keys(8, {usd::from_units(1)}, seed_from(0xacc2));
    auto a = admit_keyed(keys, acc, std::string_view("t1"), 0, usd::from_units(1), r, ns(0));
    REQUIRE(a.admitted());
    auto b = admit_keyed(keys, acc, std::string_view("t1"), 0, usd::from_units(1), r, ns(0));
    CHECK_FALSE(b.admitted());
    CHECK_FALSE(b.account_asked);
    auto c = admit_keyed(keys, acc, std::string_view("t2"), 0, usd::from_units(1), r, ns(0));
    REQUIRE(c.admitted());
    auto d = admit_keyed(keys, acc, std::string_view("t3"), 0, usd::from_units(1), r, ns(0));
    CHECK_FALSE(d.admitted());
    CHECK(d.account_asked);
    CHECK(keys.remaining("t3", 0) == usd::from_units(1));  // given back
    CHECK(keys.settle(a.reservation, usd::from_units(1)) == usd());
    CHECK(keys.spent("t1") == usd::from_units(1));
  }
}
