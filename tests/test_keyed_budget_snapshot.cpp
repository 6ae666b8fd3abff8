// keyed_budgets snapshot/restore: round trips with and without a calendar;
// held money coming back committed in the entry's period; rollovers and
// clocks going backwards across the restart; random schedules of reserve,
// settle, release and drop across a snapshot and restore at random times,
// checked against a per-key oracle that counts both processes' money in
// every period; every byte flipped, every length cut, every field and
// every other configuration refused, changing nothing.
#include "catch_compat.hpp"
#include "keyed_support.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

using namespace tollgate;
using tgtest::ns;

namespace {

using namespace tgkeyed;

using tgtest::day_ns;
using errc_t = account_restore_errc;
using budgets = keyed_budgets<usd_tag>;

budget_calendar cal(budget_period p, std::int64_t offset_min = 0) {
  budget_calendar c;
  c.period = p;
  c.utc_offset = std::chrono::minutes(offset_min);
  return c;
}

using home_budgets = keyed_budgets<usd_tag, home_hash>;

// Word indexes: 0 version, 1 fingerprint, 2 n, then 6 words per entry
// (slot, hash, class, period, committed, spent) from 3; the checksum last.
constexpr std::size_t w_version = 0, w_fp = 1, w_n = 2, w_first = 3, w_row = 6;

}  // namespace

TEST_CASE("keyed_budgets snapshot: round trip without a calendar; held money comes back committed", "[keyed][snapshot]") {
  const hash_seed hs = seed_from(0xB5A1);
  budgets a(64, {usd::from_units(10), usd::from_units(100)}, hs);
  keyed_reservation<usd_tag> r1 = a.reserve("alice", 0, usd::from_units(4));
  keyed_reservation<usd_tag> r2 = a.reserve("alice", 0, usd::from_units(3));
  REQUIRE((r1 && r2));
  CHECK(a.settle(r1, usd::from_units(2)) == usd::from_units(2));
  keyed_reservation<usd_tag> r3 = a.reserve("bob", 1, usd::from_units(60));
  REQUIRE(r3);
  CHECK(a.settle(r3, usd::from_units(70)) == usd::from_units(-10));  // an overspend, recorded
  keyed_reservation<usd_tag> r4 = a.reserve("carol", 1, usd::from_units(1));
  REQUIRE(r4);
  a.release(r4);  // carol: an entry of class 1 with nothing spent
  const std::string bytes = a.snapshot();
  const words f = decode(bytes);
  REQUIRE(f.tag == "TGB1");
  REQUIRE(f.w[w_n] == 3);
  REQUIRE(f.w.size() == w_first + 3 * w_row + 1);

  budgets b(64, {usd::from_units(10), usd::from_units(100)}, hs);
  REQUIRE(b.restore(bytes) == errc_t::ok);
  // alice: 2 settled, 3 held at the snapshot: 5 committed, 2 spent.
  CHECK(b.remaining("alice", 0) == usd::from_units(5));
  CHECK(b.spent("alice") == usd::from_units(2));
  CHECK(b.remaining("bob", 0) == usd::from_units(30));  // bob's own class 1, not the asked 0
  CHECK(b.spent("bob") == usd::from_units(70));
  CHECK(b.contains("carol"));
  CHECK(b.remaining("carol", 0) == usd::from_units(100));
  CHECK_FALSE(b.contains("dave"));
  // Nothing restored is held: the old reservation's 3 is spent for good.
  CHECK_FALSE(b.reserve("alice", 0, usd::from_nanos(5000000001)));
  keyed_reservation<usd_tag> r5 = b.reserve("alice", 0, usd::from_units(5));
  CHECK(r5);
  CHECK(b.remaining("alice", 0) == usd());
  // The old table's reservation settles there, not here.
  CHECK(a.settle(r2, usd::from_units(1)) == usd::from_units(2));
  CHECK(b.remaining("alice", 0) == usd());
  b.release(r5);
  // The restored table's snapshot is the same bytes.
  CHECK(b.snapshot() == bytes);
  // A total at the top of the range comes back so.
  budgets s(8, {usd::from_units(10)}, hs);
  keyed_reservation<usd_tag> big = s.reserve("x", 0, usd::from_units(1));
  REQUIRE(big);
  (void)s.settle(big, usd::from_nanos(std::numeric_limits<std::int64_t>::max()));
  CHECK_FALSE(s.reserve("x", 0, usd::from_nanos(1)));
  budgets s2(8, {usd::from_units(10)}, hs);
  REQUIRE(s2.restore(s.snapshot()) == errc_t::ok);
  CHECK_FALSE(s2.reserve("x", 0, usd::from_nanos(1)));
  CHECK(s2.remaining("x", 0) == usd());
  CHECK(s2.spent("x") == usd::from_nanos(std::numeric_limits<std::int64_t>::max()));
}

TEST_CASE("keyed_budgets snapshot: periods across the restart", "[keyed][snapshot]") {
  const hash_seed hs = seed_from(0xB5A2);
  const std::int64_t d3 = 3 * day_ns, d4 = 4 * day_ns, d5 = 5 * day_ns;
  auto make = [&] { return std::make_unique<budgets>(16, std::vector<usd>{usd::from_units(10)}, hs, cal(budget_period::day)); };
  auto a = make();
  keyed_reservation<usd_tag> held = a->reserve("k", 0, usd::from_units(4), ns(d3 + 1));
  keyed_reservation<usd_tag> done = a->reserve("k", 0, usd::from_units(3), ns(d3 + 2));
  REQUIRE((held && done));
  REQUIRE(a->settle(done, usd::from_units(3), ns(d3 + 3)) == usd());
  SECTION("snapshot in the entry's period") {
    const std::string bytes = a->snapshot(ns(d3 + 10));
    CHECK(decode(bytes).w[w_first + 3] == 3);  // day 3
    auto b = make();
    REQUIRE(b->restore(bytes) == errc_t::ok);
    CHECK(b->remaining("k", 0, ns(d3 + 20)) == usd::from_units(3));  // 3 settled + 4 held
    CHECK(b->spent("k", ns(d3 + 20)) == usd::from_units(3));
    // The clock went backwards across the restart: still day 3's total.
    CHECK(b->remaining("k", 0, ns(d3 - day_ns)) == usd::from_units(3));
    CHECK_FALSE(b->reserve("k", 0, usd::from_units(4), ns(d3 - day_ns)));
    // The next day starts over: the held 4 stayed in day 3.
    CHECK(b->remaining("k", 0, ns(d4)) == usd::from_units(10));
    keyed_reservation<usd_tag> r = b->reserve("k", 0, usd::from_units(10), ns(d4));
    REQUIRE(r);
    CHECK(r.period() == 4);
    CHECK(b->settle(r, usd::from_units(10), ns(d4 + 1)) == usd());
    CHECK(b->spent("k", ns(d4 + 1)) == usd::from_units(10));
  }
  SECTION("snapshot at a time past the entry's period: stored as it is, never rolled over") {
    const std::string bytes = a->snapshot(ns(d4 + 10));
    const words f = decode(bytes);
    CHECK(f.w[w_first + 3] == 3);                                        // still day 3
    CHECK(f.w[w_first + 4] == static_cast<std::uint64_t>(7000000000LL)); // 3 settled + 4 held
    CHECK(f.w[w_first + 5] == static_cast<std::uint64_t>(3000000000LL)); // 3 settled
    CHECK(bytes == a->snapshot(ns(d3 + 10)));                            // the time plays no part
    auto b = make();
    REQUIRE(b->restore(bytes) == errc_t::ok);
    // Back in day 3 (a snapshot clock ahead of the traffic's): day 3's total.
    CHECK(b->remaining("k", 0, ns(d3 + 20)) == usd::from_units(3));
    CHECK_FALSE(b->reserve("k", 0, usd::from_units(4), ns(d3 + 20)));
    // Day 4 starts over, as after a drop at the snapshot: the held 4 stayed in day 3.
    CHECK(b->remaining("k", 0, ns(d4 + 20)) == usd::from_units(10));
    CHECK(b->spent("k", ns(d4 + 20)) == usd());
    CHECK(b->remaining("k", 0, ns(d5)) == usd::from_units(10));
  }
  SECTION("restore long after, and a table that took no traffic restored again") {
    auto b = make();
    REQUIRE(b->restore(a->snapshot(ns(d3 + 10))) == errc_t::ok);
    a->release(held, ns(d3 + 4));
    REQUIRE(b->restore(a->snapshot(ns(d4 + 10))) == errc_t::ok);  // the later bytes win
    CHECK(b->remaining("k", 0, ns(d3 + 20)) == usd::from_units(7));  // the 4 released before them
    CHECK(b->remaining("k", 0, ns(400 * day_ns)) == usd::from_units(10));
    keyed_reservation<usd_tag> r = b->reserve("k", 0, usd::from_units(1), ns(d4 + 20));
    REQUIRE(r);
    CHECK(b->restore(a->snapshot(ns(d4 + 10))) == errc_t::in_use);
    b->release(r, ns(d4 + 21));
    CHECK(b->restore(a->snapshot(ns(d4 + 10))) == errc_t::in_use);
  }
  a->release(held, ns(d3 + 4));
}

// A key spends its whole day at 23:59; the snapshot is taken at a clock
// reading past midnight (a clock ahead of the traffic's, or stepped forward
// and corrected after the restart); calls back at 23:59:30 of the same day
// must be refused after the restore as they are without it.
TEST_CASE("keyed_budgets snapshot: a snapshot clock past midnight reopens no money of the day", "[keyed][snapshot]") {
  const hash_seed hs = seed_from(0xB5A4);
  const std::vector<usd> limits{usd::from_units(10)};
  for (const budget_calendar c : {cal(budget_period::day), cal(budget_period::month, -345)}) {
    INFO("calendar " << static_cast<int>(c.period));
    // The last minute of a period: 23:59 of day 20000, or of the last day
    // of the month holding it (at -05:45).
    budgets probe(1, limits, hs, c);
    const std::int64_t base = 20000 * day_ns;
    const std::int64_t end = base + probe.reset_in(ns(base)).count();  // the period's end
    const std::int64_t t0 = end - 60000000000LL, t_snap = end + 60000000000LL, t_back = end - 30000000000LL;
    REQUIRE(probe.period_at(ns(t0)) + 1 == probe.period_at(ns(t_snap)));
    REQUIRE(probe.period_at(ns(t_back)) == probe.period_at(ns(t0)));
    int admitted[2] = {0, 0};
    for (int restart = 0; restart < 2; ++restart) {
      budgets a(16, limits, hs, c);
      keyed_reservation<usd_tag> r = a.reserve("tenant", 0, usd::from_units(10), ns(t0));
      REQUIRE(r);
      REQUIRE(a.settle(r, usd::from_units(10), ns(t0)) == usd());
      budgets b(16, limits, hs, c);
      budgets* use = &a;
      if (restart == 1) {
        REQUIRE(b.restore(a.snapshot(ns(t_snap))) == errc_t::ok);
        use = &b;
      }
      CHECK(use->remaining("tenant", 0, ns(t_back)) == usd());
      CHECK(use->spent("tenant", ns(t_back)) == usd::from_units(10));
      for (int i = 0; i < 10; ++i) {
        keyed_reservation<usd_tag> x = use->reserve("tenant", 0, usd::from_units(1), ns(t_back));
        if (x) {
          ++admitted[restart];
          (void)use->settle(x, usd::from_units(1), ns(t_back));
        }
      }
      // The next period starts over with or without the restart.
      CHECK(use->remaining("tenant", 0, ns(t_snap)) == usd::from_units(10));
    }
    CHECK(admitted[0] == 0);
    CHECK(admitted[1] == admitted[0]);
  }
}

// Random schedules across a restart against a per-key oracle. Table a
// takes reserves, settles at or below what was reserved, releases and
// drops at times that mostly move forward (sometimes back by up to a
// period), is snapshot at a random time (behind its last call, or ahead of
// it by up to three periods: across midnights and month ends no call has
// seen) and "dies" with reservations held; table b restores the bytes and
// takes another schedule from a time near a's last call (sometimes a
// period before it). The oracle tracks each key's entry period as the
// rules state (the latest period of an admitted reserve or a settle),
// charges settled and dropped money to it, and charges what a held at the
// snapshot to the entry's period (a drop at the snapshot: the snapshot's
// own time plays no part). Then in every period, for every key, the money
// of both processes together is within the limit; every decision of b is
// the oracle's; and every decision of b is also that of a itself, kept
// alive with its reservations dropped at the snapshot, taking the same
// schedule (the restart changes nothing else).
TEST_CASE("keyed_budgets snapshot: random schedules across a restart vs a per-key oracle", "[keyed][snapshot]") {
  INFO(tgtest::seed_note());
  const std::uint64_t trials = tgtest::sized(40);
  const std::int64_t lim[2] = {10, 25};  // units
  const std::int64_t unit = 1000000000;
  for (std::uint64_t trial = 0; trial < trials; ++trial) {
    tgtest::rng g(tgtest::seed_for(0xB5A3 + trial));
    INFO("trial " << trial);
    const budget_period kind = trial % 3 == 0 ? budget_period::none : trial % 3 == 1 ? budget_period::day
                                                                                    : budget_period::month;
    const std::int64_t step = kind == budget_period::month ? 30 * day_ns : day_ns;
    const hash_seed hs = seed_from(0xB5A30 + trial);
    const std::vector<usd> limits = {usd::from_units(lim[0]), usd::from_units(lim[1])};
    budgets a(16, limits, hs, cal(kind, 345));
    budgets b(16, limits, hs, cal(kind, 345));
    struct key_model {
      bool seen = false;
      std::size_t cls = 0;
      std::uint64_t q = 0;                           // the entry's period
      std::map<std::uint64_t, std::int64_t> money;  // period -> settled, dropped or lost at the restart (nanos)
    };
    std::map<std::uint64_t, key_model> m;
    struct held_res {
      std::uint64_t key;
      keyed_reservation<usd_tag> r;
      keyed_reservation<usd_tag> twin;  // the same call on the twin table, if any
    };
    std::int64_t t = 19000 * day_ns + static_cast<std::int64_t>(g.next() % static_cast<std::uint64_t>(step));
    auto period = [&](std::int64_t at) { return a.period_at(ns(at)); };
    auto committed = [&](const key_model& k, std::uint64_t p, const std::vector<held_res>& hv, std::uint64_t key) {
      std::int64_t c = 0;
      auto it = k.money.find(p);
      if (it != k.money.end()) c = it->second;
      for (const held_res& h : hv)
        if (h.key == key) c += h.r.amount.nanos();
      return c;
    };
    // One process's schedule on `tab`, starting from the model `m`; every
    // call also on `twin` when given, which must decide the same.
    auto run = [&](budgets& tab, std::vector<held_res>& hv, unsigned ops, budgets* twin) {
      for (unsigned i = 0; i < ops; ++i) {
        if (g.chance(10)) t -= static_cast<std::int64_t>(g.next() % static_cast<std::uint64_t>(step));
        else t += static_cast<std::int64_t>(g.next() % static_cast<std::uint64_t>(step / 3));
        const std::uint64_t key = g.between(0, 5);
        key_model& k = m[key];
        const std::uint64_t op = g.between(0, 9);
        if (op < 5 || hv.empty()) {
          const std::size_t cls = key % 2;
          if (!k.seen) k.cls = cls, k.q = period(t);
          const std::int64_t lim_k = lim[k.cls] * unit;
          const std::int64_t amount = static_cast<std::int64_t>(g.between(1, static_cast<std::uint64_t>(lim_k / 2)));
          const std::uint64_t p = period(t) > k.q ? period(t) : k.q;
          // A rollover carries what is held; the room is the limit less the
          // period's money and what is held.
          const std::int64_t c = p > k.q ? committed(k, ~std::uint64_t{0}, hv, key) : committed(k, k.q, hv, key);
          keyed_reservation<usd_tag> r = tab.reserve(key, cls, usd::from_nanos(amount), ns(t));
          keyed_reservation<usd_tag> r2;
          if (twin != nullptr) {
            r2 = twin->reserve(key, cls, usd::from_nanos(amount), ns(t));
            REQUIRE(r2.admitted() == r.admitted());
            CHECK(r2.period() == r.period());
          }
          const bool fits = c + amount <= lim_k;
          REQUIRE(r.admitted() == fits);
          if (fits) {
            k.seen = true;
            k.q = p;
            CHECK(r.period() == p);
            hv.push_back(held_res{key, std::move(r), std::move(r2)});
          }
        } else {
          const std::size_t at = static_cast<std::size_t>(g.next() % hv.size());
          const std::uint64_t hk = hv[at].key;
          key_model& h = m[hk];
          const std::int64_t amount = hv[at].r.amount.nanos();
          if (op < 8) {
            const std::int64_t cost = static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(amount)));
            const std::uint64_t p = period(t) > h.q ? period(t) : h.q;
            CHECK(tab.settle(hv[at].r, usd::from_nanos(cost), ns(t)) == usd::from_nanos(amount - cost));
            CHECK(hv[at].r.period() == p);
            if (twin != nullptr) {
              CHECK(twin->settle(hv[at].twin, usd::from_nanos(cost), ns(t)) == usd::from_nanos(amount - cost));
              CHECK(hv[at].twin.period() == p);
            }
            h.q = p;
            h.money[p] += cost;
          } else if (op == 8) {
            tab.release(hv[at].r, ns(t));
            if (twin != nullptr) twin->release(hv[at].twin, ns(t));
            h.q = period(t) > h.q ? period(t) : h.q;
          } else {
            hv[at].r.drop();  // stays committed in the entry's period
            hv[at].twin.drop();
            h.money[h.q] += amount;
          }
          hv.erase(hv.begin() + static_cast<std::ptrdiff_t>(at));
        }
        if (twin != nullptr) {
          CHECK(twin->remaining(key, k.cls, ns(t)) == tab.remaining(key, k.cls, ns(t)));
          CHECK(twin->spent(key, ns(t)) == tab.spent(key, ns(t)));
        }
        // The oracle's own invariant, both processes so far.
        for (const auto& kv : m)
          for (const auto& pm : kv.second.money) REQUIRE(pm.second <= lim[kv.second.cls] * unit);
      }
    };
    std::vector<held_res> ha;
    run(a, ha, 60 + static_cast<unsigned>(g.next() % 60), nullptr);
    // The snapshot, at a time near the last one (behind, or ahead by up to
    // three periods).
    const std::int64_t t_last = t;
    const std::int64_t ts = g.chance(2) ? t + static_cast<std::int64_t>(g.next() % static_cast<std::uint64_t>(3 * step))
                                        : t - static_cast<std::int64_t>(g.next() % static_cast<std::uint64_t>(step));
    const std::string bytes = a.snapshot(ns(ts));
    // The process dies: what it holds is charged to the entry's period, as
    // a drop there.
    for (const held_res& h : ha) m[h.key].money[m[h.key].q] += h.r.amount.nanos();
    for (const auto& kv : m)
      for (const auto& pm : kv.second.money) REQUIRE(pm.second <= lim[kv.second.cls] * unit);
    REQUIRE(b.restore(bytes) == errc_t::ok);
    // The dead process's reservations are settled nowhere; a, kept as the
    // twin, sees them dropped at the snapshot.
    for (held_res& h : ha) h.r.drop();
    // The restored table agrees with the oracle on every key, in its
    // entry's period and at the snapshot's time (a later period starts over:
    // nothing restored is held).
    for (const auto& kv : m) {
      if (!kv.second.seen) continue;
      const key_model& k = kv.second;
      const std::int64_t c = committed(k, k.q, {}, 0);
      // Time 0 is in period 0: decided in the entry's period.
      CHECK(b.remaining(kv.first, k.cls, ns(0)) == usd::from_nanos(lim[k.cls] * unit - c));
      CHECK(b.remaining(kv.first, k.cls, ns(ts)) ==
            usd::from_nanos(period(ts) > k.q ? lim[k.cls] * unit : lim[k.cls] * unit - c));
    }
    // The new process: from a time up to a period before a's last call.
    t = t_last - static_cast<std::int64_t>(g.next() % static_cast<std::uint64_t>(step));
    std::vector<held_res> hb;
    run(b, hb, 60 + static_cast<unsigned>(g.next() % 60), &a);
    for (held_res& h : hb) {
      m[h.key].money[m[h.key].q] += h.r.amount.nanos();
      h.r.drop();
      h.twin.drop();
    }
    for (const auto& kv : m)
      for (const auto& pm : kv.second.money) CHECK(pm.second <= lim[kv.second.cls] * unit);
  }
}

TEST_CASE("keyed_budgets snapshot: hostile bytes and other tables are refused, changing nothing", "[keyed][snapshot]") {
  const hash_seed hs = seed_from(0xB5A4);
  const std::vector<usd> limits = {usd::from_units(10), usd::from_units(20)};
  const budget_calendar day = cal(budget_period::day, 345);
  const std::int64_t now = 20000 * day_ns;
  home_budgets a(16, limits, hs, day, keyed_budget_reuse::never, 4);
  keyed_reservation<usd_tag> r2 = a.reserve(std::uint64_t{2}, 0, usd::from_units(3), ns(now));
  keyed_reservation<usd_tag> r5 = a.reserve(std::uint64_t{5}, 1, usd::from_units(4), ns(now));
  keyed_reservation<usd_tag> r9 = a.reserve(std::uint64_t{9}, 1, usd::from_units(5), ns(now));
  REQUIRE((r2 && r5 && r9));
  (void)a.settle(r5, usd::from_units(2), ns(now + 1));
  const std::string good = a.snapshot(ns(now + 2));
  const words f = decode(good);
  REQUIRE(f.tag == "TGB1");
  REQUIRE(f.w[w_n] == 3);
  REQUIRE(f.w.size() == w_first + 3 * w_row + 1);
  home_budgets b(16, limits, hs, day, keyed_budget_reuse::never, 4);
  const std::string empty = b.snapshot(ns(now));
  auto unchanged = [&] {
    for (const std::uint64_t k : std::initializer_list<std::uint64_t>{2, 5, 9}) CHECK_FALSE(b.contains(k));
    CHECK(b.snapshot(ns(now)) == empty);
  };
  auto expect = [&](const std::string& bytes, errc_t e) {
    CHECK(b.restore(bytes) == e);
    unchanged();
  };
  std::uint64_t refused = 0;
  for (std::size_t i = 0; i < good.size(); ++i) {
    for (int bit = 0; bit <= 8; ++bit) {
      std::string x = good;
      x[i] = static_cast<char>(x[i] ^ (bit == 8 ? 0xFF : (1 << bit)));
      const errc_t e = b.restore(x);
      INFO("byte " << i << " bit " << bit);
      CHECK(e == (i < 4 ? errc_t::bad_format : errc_t::corrupted));
      refused += e != errc_t::ok;
    }
  }
  for (std::size_t len = 0; len < good.size(); ++len) {
    const errc_t e = b.restore(good.substr(0, len));
    INFO("cut to " << len);
    CHECK(e != errc_t::ok);
    CHECK(e != errc_t::in_use);
    refused += e != errc_t::ok;
  }
  unchanged();
  CHECK(refused == good.size() * 10);
  auto with = [&](std::size_t i, std::uint64_t v) {
    words g = f;
    g.w[i] = v;
    return encode(g);
  };
  expect("TGP1" + good.substr(4), errc_t::bad_format);
  expect(with(w_version, 0), errc_t::wrong_version);
  expect(with(w_version, 1), errc_t::wrong_version);  // format 1: SipHash-2-4 keys
  expect(with(w_version, 3), errc_t::wrong_version);
  expect(with(w_fp, f.w[w_fp] + 1), errc_t::other_configuration);
  {
    words g = f;
    g.w.insert(g.w.end() - 1, 0);
    expect(encode(g), errc_t::truncated);
    words h = f;
    h.w.erase(h.w.end() - 2);
    expect(encode(h), errc_t::truncated);
    expect(with(w_n, 2), errc_t::truncated);
    expect(with(w_n, ~std::uint64_t{0}), errc_t::out_of_range);
  }
  const std::size_t r0 = w_first, r1 = w_first + w_row;  // key 2 (class 0), key 5 (class 1)
  const std::uint64_t day_bits = (std::uint64_t{1} << 47) - 1;  // the value bits of a day table
  expect(with(w_n, 17), errc_t::out_of_range);                // more than the capacity
  expect(with(r0, 16), errc_t::out_of_range);                 // no such slot
  expect(with(r1, f.w[r0]), errc_t::out_of_range);            // slots not ascending
  expect(with(r0, 6), errc_t::out_of_range);                  // outside its hash's window (2 .. 5)
  expect(with(r1 + 1, f.w[r0 + 1]), errc_t::out_of_range);    // one hash in two entries
  expect(with(r0 + 2, 2), errc_t::out_of_range);              // no such class
  expect(with(r0 + 3, a.period_at(ns(std::numeric_limits<std::int64_t>::max())) + 1),
         errc_t::out_of_range);                               // a period no time is in
  expect(with(r0 + 3, ~std::uint64_t{0}), errc_t::out_of_range);
  expect(with(r0 + 4, day_bits + 1), errc_t::out_of_range);   // committed past the value bits
  expect(with(r0 + 5, day_bits + 1), errc_t::out_of_range);   // spent past the value bits
  {  // the edges that are in range restore
    home_budgets c(16, limits, hs, day, keyed_budget_reuse::never, 4);
    REQUIRE(c.restore(with(r0 + 3, a.period_at(ns(std::numeric_limits<std::int64_t>::max())))) == errc_t::ok);
    home_budgets d(16, limits, hs, day, keyed_budget_reuse::never, 4);
    REQUIRE(d.restore(with(r0 + 4, day_bits)) == errc_t::ok);  // saturated
    CHECK(d.remaining(std::uint64_t{2}, 0, ns(now + 3)) == usd());
    CHECK_FALSE(d.reserve(std::uint64_t{2}, 0, usd::from_nanos(1), ns(now + 3)));
    CHECK(d.remaining(std::uint64_t{2}, 0, ns(now + day_ns)) == usd::from_units(10));  // a new day starts over
  }
  {  // without a calendar: period 0 only, committed >= 0 or the saturated mark, spent >= 0
    home_budgets n1(16, limits, hs, keyed_budget_reuse::never, 4);
    keyed_reservation<usd_tag> x = n1.reserve(std::uint64_t{3}, 0, usd::from_units(1));
    REQUIRE(x);
    const std::string nb = n1.snapshot();
    const words g = decode(nb);
    auto nwith = [&](std::size_t i, std::uint64_t v) {
      words h = g;
      h.w[i] = v;
      return encode(h);
    };
    home_budgets n2(16, limits, hs, keyed_budget_reuse::never, 4);
    CHECK(n2.restore(nwith(w_first + 3, 1)) == errc_t::out_of_range);
    CHECK(n2.restore(nwith(w_first + 4, ~std::uint64_t{0})) == errc_t::out_of_range);
    CHECK(n2.restore(nwith(w_first + 5, ~std::uint64_t{0})) == errc_t::out_of_range);
    CHECK(n2.restore(nwith(w_first + 4, std::uint64_t{1} << 62)) == errc_t::ok);
    CHECK(n2.remaining(std::uint64_t{3}, 0) == usd());
    home_budgets n3(16, limits, hs, keyed_budget_reuse::never, 4);
    CHECK(n3.restore(nwith(w_first + 4, std::uint64_t{1} << 63)) == errc_t::ok);  // the saturated mark
    CHECK(n3.reserve(std::uint64_t{3}, 0, usd::from_nanos(1)).saturated);
    // A calendar table's bytes in a table without one, and back.
    CHECK(n2.restore(good) == errc_t::other_configuration);  // peeks leave it untouched
    home_budgets n4(16, limits, hs, keyed_budget_reuse::never, 4);
    CHECK(n4.restore(good) == errc_t::other_configuration);
    home_budgets n5(16, limits, hs, day, keyed_budget_reuse::never, 4);
    CHECK(n5.restore(nb) == errc_t::other_configuration);
  }
  {  // another capacity, window, limit list, calendar, offset or seed
    home_budgets c1(32, limits, hs, day, keyed_budget_reuse::never, 4);
    home_budgets c2(16, limits, hs, day, keyed_budget_reuse::never, 3);
    home_budgets c3(16, {usd::from_units(10)}, hs, day, keyed_budget_reuse::never, 4);
    home_budgets c4(16, {usd::from_units(10), usd::from_units(21)}, hs, day, keyed_budget_reuse::never, 4);
    home_budgets c5(16, limits, hs, cal(budget_period::month, 345), keyed_budget_reuse::never, 4);
    home_budgets c6(16, limits, hs, cal(budget_period::day, 0), keyed_budget_reuse::never, 4);
    home_budgets c7(16, limits, hash_seed{hs.k0 ^ 1, hs.k1}, day, keyed_budget_reuse::never, 4);
    budgets c8(16, limits, hs, day, keyed_budget_reuse::never, 4);  // another hash function
    CHECK(c1.restore(good) == errc_t::other_configuration);
    CHECK(c2.restore(good) == errc_t::other_configuration);
    CHECK(c3.restore(good) == errc_t::other_configuration);
    CHECK(c4.restore(good) == errc_t::other_configuration);
    CHECK(c5.restore(good) == errc_t::other_configuration);
    CHECK(c6.restore(good) == errc_t::other_configuration);
    CHECK(c7.restore(good) == errc_t::other_configuration);
    CHECK(c8.restore(good) == errc_t::other_configuration);
    // The reuse mode is not part of the configuration.
    home_budgets c9(16, limits, hs, day, keyed_budget_reuse::idle, 4);
    CHECK(c9.restore(good) == errc_t::ok);
    errc ec = errc::ok;
    home_budgets bad(16, {usd()}, hs, day, keyed_budget_reuse::never, 4, ec);
    CHECK(ec == errc::zero_count);
    CHECK(bad.restore(good) == errc_t::other_configuration);
  }
  // A table that took traffic: in_use, even after it was all given back.
  {
    home_budgets u(16, limits, hs, day, keyed_budget_reuse::never, 4);
    keyed_reservation<usd_tag> x = u.reserve(std::uint64_t{1}, 0, usd::from_units(1), ns(now));
    u.release(x, ns(now));
    CHECK(u.restore(good) == errc_t::in_use);
    home_budgets v(16, limits, hs, day, keyed_budget_reuse::never, 4);
    (void)v.erase(std::uint64_t{1});  // erasing a key it does not have touches nothing
    CHECK(v.restore(good) == errc_t::ok);
  }
  // The good bytes restore, and the restored entries sit where they were.
  REQUIRE(b.restore(good) == errc_t::ok);
  CHECK(b.remaining(std::uint64_t{2}, 0, ns(now + 3)) == usd::from_units(7));
  CHECK(b.remaining(std::uint64_t{5}, 0, ns(now + 3)) == usd::from_units(18));
  CHECK(b.remaining(std::uint64_t{9}, 0, ns(now + 3)) == usd::from_units(15));
  CHECK(b.snapshot(ns(now + 2)) == good);
  a.release(r2, ns(now + 3));
  a.release(r9, ns(now + 3));
}

// Snapshots taken beside two threads that reserve, settle and erase on
// shared keys across day boundaries: every snapshot restores, no restored
// key has more committed than its limit (no call overspends), and once the
// threads are done a snapshot restores into a table that answers every
// key as the original does. (A restored total can pass the limit by a
// reserve in flight: the safe side, keyed_budgets' rollover rule.)
TEST_CASE("keyed_budgets snapshot: taken beside traffic", "[keyed][snapshot]") {
  const hash_seed hs = seed_from(0xB5A5);
  const std::vector<usd> limits = {usd::from_units(3)};
  const std::int64_t start = 20000 * day_ns;
  budgets t(64, limits, hs, cal(budget_period::day));
  std::atomic<std::int64_t> clock{start};  // relaxed: a counter of test time only
  std::atomic<bool> stop{false};           // relaxed: a flag; join() orders the rest
  std::atomic<int> finished{0};            // relaxed: a count; join() orders the rest
  std::vector<std::thread> pool;
  for (int i = 0; i < 2; ++i) {
    pool.emplace_back([&, i] {
      tgtest::rng g(tgtest::seed_for(0xB5A6 + static_cast<std::uint64_t>(i)));
      std::vector<keyed_reservation<usd_tag>> mine;
      for (int j = 0; j < 50000 && !stop.load(std::memory_order_relaxed); ++j) {
        const std::uint64_t k = g.between(0, 23);
        const std::int64_t now =
            clock.fetch_add(static_cast<std::int64_t>(g.between(1, 20000000000ULL)), std::memory_order_relaxed);
        keyed_reservation<usd_tag> r = t.reserve(k, 0, usd::from_nanos(static_cast<std::int64_t>(g.between(1, 2000000000))), ns(now));
        if (r) mine.push_back(std::move(r));
        if (!mine.empty() && (mine.size() > 4 || g.chance(50))) {
          keyed_reservation<usd_tag>& x = mine.front();
          (void)t.settle(x, usd::from_nanos(static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(x.amount.nanos())))), ns(now));
          mine.erase(mine.begin());
        }
        if (g.chance(2)) (void)t.erase(g.between(0, 23));
      }
      for (keyed_reservation<usd_tag>& x : mine) t.release(x, ns(clock.load(std::memory_order_relaxed)));
      finished.fetch_add(1, std::memory_order_relaxed);
    });
  }
  std::uint64_t rows = 0;
  for (int round = 0; round < 30; ++round) {
    while (clock.load(std::memory_order_relaxed) < start + (round + 1) * day_ns / 4 &&
           finished.load(std::memory_order_relaxed) < 2)
      std::this_thread::yield();
    const std::int64_t now = clock.load(std::memory_order_relaxed);
    const std::string bytes = t.snapshot(ns(now));
    // Every `now` a thread used came from the clock before this load.
    const std::int64_t after = clock.load(std::memory_order_relaxed);
    budgets b(64, limits, hs, cal(budget_period::day));
    REQUIRE(b.restore(bytes) == errc_t::ok);
    const words f = decode(bytes);
    rows += f.w[w_n];
    for (std::size_t r = 0; r < f.w[w_n]; ++r) {
      // Stored as it is (never rolled over by the snapshot): an entry may sit
      // in an earlier period than the snapshot's, never in a later one than
      // any call could have reached.
      CHECK(f.w[w_first + r * w_row + 3] <= t.period_at(ns(after)));
      // Within the limit, plus what the two threads may have in flight
      // (a rollover folded at the snapshot counts a reserve being decided).
      CHECK(f.w[w_first + r * w_row + 4] <= 3000000000ULL + 2 * 2000000000ULL);
    }
  }
  stop.store(true, std::memory_order_relaxed);
  for (std::thread& th : pool) th.join();
  const std::int64_t end = clock.load(std::memory_order_relaxed);
  budgets b(64, limits, hs, cal(budget_period::day));
  REQUIRE(b.restore(t.snapshot(ns(end))) == errc_t::ok);
  for (std::uint64_t k = 0; k < 24; ++k) {
    CHECK(b.contains(k) == t.contains(k));
    CHECK(b.remaining(k, 0, ns(end)) == t.remaining(k, 0, ns(end)));
    CHECK(b.spent(k, ns(end)) == t.spent(k, ns(end)));
  }
  CHECK(rows > 0);
}
