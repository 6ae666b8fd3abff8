// keyed_windows and keyed_permits snapshot/restore: round trips; restores
// at random phases and downtimes that never let a count go early (checked
// against a brute-force sliding log over the admissions of both tables, and
// against the table that did not restart); every byte of a snapshot flipped
// and every length cut refused; other configurations refused.
#include "catch_compat.hpp"
#include "keyed_support.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

using namespace tollgate;
using tgtest::ns;

namespace {

using namespace tgkeyed;

using tgtest::sec;
using errc_t = account_restore_errc;

// Word indexes of both formats: 0 version, 1 fingerprint, 2 wall, then the
// windows' 3 lead, 4 n, and 5 words per entry (slot, hash, class, left,
// counts) from 5; the permits' 3 n and 4 words per entry (slot, hash,
// class, held) from 4. The checksum last.
constexpr std::size_t w_version = 0, w_fp = 1, w_wall = 2;
constexpr std::size_t ww_lead = 3, ww_n = 4, ww_first = 5, ww_row = 5;
constexpr std::size_t wp_n = 3, wp_first = 4, wp_row = 4;

using event_log = std::vector<std::pair<std::int64_t, std::uint64_t>>;

}  // namespace

// The restart rule against the two oracles. Table a takes a random
// schedule, is snapshot at a random `now` (sometimes behind its latest
// admissions), and restored after a random downtime into table b of another
// origin, so both slot grids have random phases. Then (1) each key's first
// request to b, at a random time, is admitted only if a, which did not
// restart, would admit it at the same wall-clock moment; (2) b takes a
// random schedule, and a brute-force sliding log over the admissions of a
// and b in wall-clock time finds no window (t - W, t] with more than L.
TEST_CASE("keyed_windows snapshot: restored counts never leave early, at any phase and downtime", "[keyed][snapshot]") {
  const std::vector<window_class> classes = {{5, ns(sec)}, {9, ns(5 * sec / 2)}};
  const std::uint64_t trials = tgtest::sized(60);
  std::uint64_t probes = 0, both_refused = 0, only_b_refused = 0, restored = 0, worst = 0;
  for (std::uint64_t trial = 0; trial < trials; ++trial) {
    const std::uint64_t seed = tgtest::seed_for(0x3A70 + trial);
    INFO("trial " << trial << " schedule seed " << seed << " " << tgtest::seed_note());
    tgtest::rng g(seed);
    const hash_seed hs = seed_from(0x3A6F);
    const std::int64_t oa = static_cast<std::int64_t>(g.between(0, 100 * sec));
    keyed_windows<manual_clock> a(64, classes, hs, ns(oa));
    const std::uint64_t keys = 30;
    std::map<std::uint64_t, event_log> log;  // wall-clock times
    // a's time x is wall time x + wall_of_a; b's time u is wall time u + wall_of_b.
    const std::int64_t wall_of_a = static_cast<std::int64_t>(g.between(0, 1000)) * sec + 1700000000LL * sec;
    std::int64_t now = oa + static_cast<std::int64_t>(g.between(0, 20 * sec));
    for (int step = 0; step < 400; ++step) {
      now += static_cast<std::int64_t>(g.between(0, sec / 10));
      const std::uint64_t k = g.between(0, keys - 1), n = g.between(1, 3);
      if (a.try_acquire(k, static_cast<std::size_t>(k % 2), n, ns(now)).admitted())
        log[k].emplace_back(now + wall_of_a, n);
    }
    // Sometimes a `now` behind the last admissions (a lagging clock read).
    const std::int64_t snap_now = g.chance(25) ? now - static_cast<std::int64_t>(g.between(0, 2 * sec))
                                               : now + static_cast<std::int64_t>(g.between(0, 2 * sec));
    const ns snap_wall(snap_now + wall_of_a);
    const std::string bytes = a.snapshot(ns(snap_now), snap_wall);
    const words f = decode(bytes);
    REQUIRE(f.w.size() == ww_first + ww_row * f.w[ww_n] + 1);
    restored += f.w[ww_n];

    const std::int64_t down = static_cast<std::int64_t>(g.between(0, 4 * sec));
    const std::int64_t ob = static_cast<std::int64_t>(g.next() % static_cast<std::uint64_t>(1000 * sec));
    const std::int64_t now2 = ob + static_cast<std::int64_t>(g.between(0, 10 * sec));
    const std::int64_t wall_of_b = snap_wall.count() + down - now2;
    keyed_windows<manual_clock> b(64, classes, hs, ns(ob));
    REQUIRE(b.restore(bytes, ns(now2), ns(now2 + wall_of_b)) == errc_t::ok);

    // (1) First requests, at increasing times, one per key.
    std::int64_t u = now2;
    for (std::uint64_t k = 0; k < keys; ++k) {
      u += static_cast<std::int64_t>(g.between(0, sec / 8));
      const std::size_t c = static_cast<std::size_t>(k % 2);
      const std::uint64_t n = g.between(1, classes[c].limit);
      const keyed_result rb = b.try_acquire(k, c, n, ns(u));
      const keyed_result ra = a.try_acquire(k, c, n, ns(u + wall_of_b - wall_of_a));
      INFO("key " << k << " n " << n << " at " << u - now2 << " ns after the restore");
      if (rb.admitted()) {
        CHECK(ra.admitted());
        log[k].emplace_back(u + wall_of_b, n);
      } else if (ra.admitted()) {
        ++only_b_refused;
      } else {
        ++both_refused;
      }
      ++probes;
    }
    // (2) A random schedule on b.
    for (int step = 0; step < 400; ++step) {
      u += static_cast<std::int64_t>(g.between(0, sec / 10));
      const std::uint64_t k = g.between(0, keys - 1), n = g.between(1, 3);
      if (b.try_acquire(k, static_cast<std::size_t>(k % 2), n, ns(u)).admitted())
        log[k].emplace_back(u + wall_of_b, n);
    }
    for (const auto& kv : log) {
      const window_class& c = classes[static_cast<std::size_t>(kv.first % 2)];
      const std::uint64_t most = tgtest::max_window_sum(kv.second, c.window.count());
      INFO("key " << kv.first << " most in one window " << most);
      CHECK(most <= c.limit);
      if (most > worst) worst = most;
    }
  }
  CHECK(probes == trials * 30);
  CHECK(both_refused * 4 > trials);  // the restored counts refused something
  CHECK(restored > 10 * trials);
  CHECK(worst == 9);             // some window was full (the bound is tight)
  WARN("first requests refused by the restored table alone: " << only_b_refused << " of " << probes);
}

// Each restored count stays at least as long as it was to stay, and at
// most one slot width longer; a restore in the same frame (same origin,
// `now` and wall) writes the same bytes again.
TEST_CASE("keyed_windows snapshot: counts stay their time, at most a slot longer; same-frame round trip", "[keyed][snapshot]") {
  const std::vector<window_class> classes = {{4, ns(sec)}, {7, ns(3 * sec)}};
  const std::uint64_t widths[] = {333333334, sec};
  std::uint64_t checked = 0;
  const std::uint64_t trials = tgtest::sized(40);
  for (std::uint64_t trial = 0; trial < trials; ++trial) {
    const std::uint64_t seed = tgtest::seed_for(0x3B00 + trial);
    INFO("trial " << trial << " schedule seed " << seed << " " << tgtest::seed_note());
    tgtest::rng g(seed);
    const hash_seed hs = seed_from(0x3B01);
    const std::int64_t oa = static_cast<std::int64_t>(g.between(0, 10 * sec));
    keyed_windows<manual_clock> a(32, classes, hs, ns(oa));
    std::int64_t now = oa;
    for (int step = 0; step < 100; ++step) {
      now += static_cast<std::int64_t>(g.between(0, sec / 5));
      const std::uint64_t k = g.between(0, 11);
      (void)a.try_acquire(k, static_cast<std::size_t>(k % 2), g.between(1, 2), ns(now));
    }
    const ns wall(1800000000LL * sec + static_cast<std::int64_t>(g.between(0, sec)));
    const std::string bytes = a.snapshot(ns(now), wall);
    {
      keyed_windows<manual_clock> same(32, classes, hs, ns(oa));
      REQUIRE(same.restore(bytes, ns(now), wall) == errc_t::ok);
      CHECK(same.snapshot(ns(now), wall) == bytes);
    }
    const words f = decode(bytes);
    const std::int64_t down = static_cast<std::int64_t>(g.between(0, 2 * sec));
    const std::int64_t ob = static_cast<std::int64_t>(g.next() % static_cast<std::uint64_t>(100 * sec));
    const std::int64_t now2 = ob + static_cast<std::int64_t>(g.between(0, 5 * sec));
    keyed_windows<manual_clock> b(32, classes, hs, ns(ob));
    REQUIRE(b.restore(bytes, ns(now2), wall + ns(down)) == errc_t::ok);
    for (std::uint64_t k = 0; k < 12; ++k) {
      const std::size_t c = static_cast<std::size_t>(k % 2);
      std::uint64_t left = 0;
      for (std::uint64_t i = 0; i < f.w[ww_n]; ++i) {
        const std::size_t at = ww_first + ww_row * static_cast<std::size_t>(i);
        if (f.w[at + 1] == sip_key_hash(hs)(k)) left = f.w[at + 3];
      }
      INFO("key " << k << " left " << left << " down " << down);
      const std::int64_t keep = static_cast<std::int64_t>(left) - down;
      CHECK(b.contains(k) == (keep > 0));
      if (keep <= 0) continue;
      // Its newest count still counts 1 ns before its time is up (no room
      // for a whole limit), and nothing counts a slot width after it.
      CHECK_FALSE(b.try_acquire(k, c, classes[c].limit, ns(now2 + keep - 1)).admitted());
      CHECK(b.try_acquire(k, c, classes[c].limit, ns(now2 + keep + static_cast<std::int64_t>(widths[c]))).admitted());
      ++checked;
    }
  }
  CHECK(checked > trials);  // about 6 keys of 12 owe something per trial
}

TEST_CASE("keyed_windows snapshot: the latest claim time and a stale newest slot come back", "[keyed][snapshot]") {
  const hash_seed hs = seed_from(0x3B10);
  const std::vector<window_class> cls = {{3, ns(3 * sec)}};  // slots of 1 s
  keyed_windows<manual_clock> a(16, cls, hs, ns(0));
  REQUIRE(a.try_acquire(std::uint64_t{1}, 0, 1, ns(10 * sec)).admitted());  // the latest claim: 10 s
  // A snapshot at 4 s: key 1's newest slot (10) is 6 s ahead; claims have seen 6 s more.
  const std::string bytes = a.snapshot(ns(4 * sec), ns(100 * sec));
  const words f = decode(bytes);
  REQUIRE(f.w[ww_n] == 1);
  CHECK(f.w[w_wall] == static_cast<std::uint64_t>(100 * sec));
  CHECK(f.w[ww_lead] == static_cast<std::uint64_t>(6 * sec));
  CHECK(f.w[ww_first + 3] == static_cast<std::uint64_t>(10 * sec));  // counted until slot 14 starts
  CHECK(f.w[ww_first + 4] == 1);
  // 2 s down, restored at 50.5 s of a table with origin 0: the key's count
  // must stay until 58.5 s, so it goes to slot 55 (counted until 59 s: slot
  // 54's 58 s is too early), which starts 4.5 s from now (the old table's
  // newest slot started at what is 54.5 s here).
  keyed_windows<manual_clock> b(16, cls, hs, ns(0));
  REQUIRE(b.restore(bytes, ns(50 * sec + sec / 2), ns(102 * sec)) == errc_t::ok);
  const keyed_result stale = b.try_acquire(std::uint64_t{1}, 0, 1, ns(50 * sec + sec / 2));
  CHECK(stale.result().why() == reason::stale_time);
  CHECK(stale.result().retry_after() == ns(4 * sec + sec / 2));
  // A new key that comes with this `now` starts at the kept claim time
  // (6 s lead less 2 s down: 54.5 s, slot 54) and is refused as stale too.
  const keyed_result fresh = b.try_acquire(std::uint64_t{2}, 0, 1, ns(50 * sec + sec / 2));
  CHECK(fresh.result().why() == reason::stale_time);
  CHECK(fresh.result().retry_after() == ns(3 * sec + sec / 2));
  CHECK(b.try_acquire(std::uint64_t{1}, 0, 1, ns(54 * sec)).result().why() == reason::stale_time);
  CHECK(b.try_acquire(std::uint64_t{1}, 0, 2, ns(55 * sec)).admitted());  // 1 + 2 = 3
  CHECK_FALSE(b.try_acquire(std::uint64_t{1}, 0, 1, ns(58 * sec + sec / 2)).admitted());
  CHECK(b.try_acquire(std::uint64_t{1}, 0, 3, ns(59 * sec)).admitted());  // slot 55's counts left at 59 s
}

TEST_CASE("keyed_windows snapshot: every flipped byte and cut length is refused, changing nothing", "[keyed][snapshot]") {
  const hash_seed hs = seed_from(0x3B20);
  const std::vector<window_class> classes = {{5, ns(sec)}, {200, ns(60 * sec)}};
  keyed_windows<manual_clock, home_hash> a(16, classes, hs, ns(0), 4);
  REQUIRE(a.try_acquire(std::uint64_t{2}, 0, 2, ns(0)).admitted());
  REQUIRE(a.try_acquire(std::uint64_t{2}, 0, 1, ns(sec / 2)).admitted());
  REQUIRE(a.try_acquire(std::uint64_t{5}, 1, 150, ns(sec)).admitted());
  REQUIRE(a.try_acquire(std::uint64_t{9}, 1, 7, ns(sec)).admitted());
  const std::string good = a.snapshot(ns(sec), ns(sec));
  const words f = decode(good);
  REQUIRE(f.tag == "TGW1");
  REQUIRE(f.w[ww_n] == 3);
  REQUIRE(f.w.size() == ww_first + 3 * ww_row + 1);
  CHECK(f.w[ww_first + 4] == (1u | (2u << 8)));  // key 2: 1 in its newest slot, 2 in the one before
  keyed_windows<manual_clock, home_hash> b(16, classes, hs, ns(0), 4);
  const std::string empty = b.snapshot(ns(sec), ns(0));
  auto unchanged = [&] {
    for (const std::uint64_t k : std::initializer_list<std::uint64_t>{2, 5, 9}) CHECK_FALSE(b.contains(k));
    CHECK(b.snapshot(ns(sec), ns(0)) == empty);
  };
  auto expect = [&](const std::string& bytes, errc_t e) {
    CHECK(b.restore(bytes, ns(sec), ns(sec)) == e);
    unchanged();
  };
  // Every byte flipped (each of its bits in turn, and all of them), every length cut.
  std::uint64_t refused = 0;
  for (std::size_t i = 0; i < good.size(); ++i) {
    for (int bit = 0; bit <= 8; ++bit) {
      std::string x = good;
      x[i] = static_cast<char>(x[i] ^ (bit == 8 ? 0xFF : (1 << bit)));
      const errc_t e = b.restore(x, ns(sec), ns(sec));
      INFO("byte " << i << " bit " << bit);
      CHECK(e == (i < 4 ? errc_t::bad_format : errc_t::corrupted));
      refused += e != errc_t::ok;
    }
  }
  unchanged();
  for (std::size_t len = 0; len < good.size(); ++len) {
    const errc_t e = b.restore(good.substr(0, len), ns(sec), ns(sec));
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
  expect("", errc_t::bad_format);
  expect("TGK1" + good.substr(4), errc_t::bad_format);  // a bucket table's tag
  expect(with(w_version, 1), errc_t::wrong_version);  // format 1: SipHash-2-4 keys
  expect(with(w_version, 3), errc_t::wrong_version);
  expect(with(w_fp, f.w[w_fp] ^ 1), errc_t::other_configuration);
  {
    words g = f;
    g.w.insert(g.w.end() - 1, 0);
    expect(encode(g), errc_t::truncated);
    words h = f;
    h.w.erase(h.w.end() - 2);
    expect(encode(h), errc_t::truncated);
    expect(with(ww_n, 4), errc_t::truncated);
  }
  const std::size_t r0 = ww_first, r1 = ww_first + ww_row;  // key 2 (class 0), key 5 (class 1)
  expect(with(ww_n, 17), errc_t::out_of_range);                            // more than the capacity
  expect(with(ww_lead, std::uint64_t{1} << 63), errc_t::out_of_range);     // past INT64_MAX
  expect(with(r0, 16), errc_t::out_of_range);                              // no such slot
  expect(with(r1, f.w[r0]), errc_t::out_of_range);                         // slots not ascending
  expect(with(r0, 1), errc_t::out_of_range);                               // before its hash's home (2)
  expect(with(r1 + 1, f.w[r0 + 1]), errc_t::out_of_range);                 // one hash in two entries
  expect(with(r0 + 2, 2), errc_t::out_of_range);                           // no such class
  expect(with(r0 + 3, 0), errc_t::out_of_range);                           // counts nothing
  expect(with(r0 + 3, std::uint64_t{1} << 63), errc_t::out_of_range);      // past INT64_MAX
  // Past (2^31 + 3) slot widths; exactly that is accepted.
  const std::uint64_t w0 = 333333334;
  expect(with(r0 + 3, ((std::uint64_t{1} << 31) + 3) * w0 + 1), errc_t::out_of_range);
  expect(with(r0 + 4, 0), errc_t::out_of_range);                           // no count at all
  expect(with(r0 + 4, 2u << 8), errc_t::out_of_range);                     // a newest count of zero
  expect(with(r0 + 4, std::uint64_t{1} << 32), errc_t::out_of_range);      // beyond four 8-bit counts
  expect(with(r0 + 4, 3u | (3u << 8)), errc_t::out_of_range);              // 6 > its class's limit 5
  expect(with(r1 + 4, 150u | (51u << 8)), errc_t::out_of_range);           // 201 > 200
  // Key 2's count of the slot before its newest is counted for 1/3 s from
  // the snapshot (slot 1's end): with `left` one width shorter it had left.
  CHECK(f.w[r0 + 3] == 5 * w0 - static_cast<std::uint64_t>(sec));
  expect(with(r0 + 3, w0), errc_t::out_of_range);
  {
    keyed_windows<manual_clock, home_hash> c(16, classes, hs, ns(0), 4);
    CHECK(c.restore(with(r0 + 3, ((std::uint64_t{1} << 31) + 3) * w0), ns(0), ns(0)) == errc_t::ok);
    CHECK(c.try_acquire(std::uint64_t{2}, 0, 1, ns(0)).result().why() == reason::stale_time);
  }
  {  // another capacity, window, class list, limit, window length, seed or hash
    keyed_windows<manual_clock, home_hash> c1(32, classes, hs, ns(0), 4);
    keyed_windows<manual_clock, home_hash> c2(16, classes, hs, ns(0), 5);
    keyed_windows<manual_clock, home_hash> c3(16, {{5, ns(sec)}}, hs, ns(0), 4);
    keyed_windows<manual_clock, home_hash> c4(16, {{5, ns(sec)}, {201, ns(60 * sec)}}, hs, ns(0), 4);
    keyed_windows<manual_clock, home_hash> c5(16, {{5, ns(sec)}, {200, ns(61 * sec)}}, hs, ns(0), 4);
    keyed_windows<manual_clock, home_hash> c6(16, classes, hash_seed{hs.k0 + 1, hs.k1}, ns(0), 4);
    keyed_windows<manual_clock> c7(16, classes, hs, ns(0), 4);
    keyed_windows<manual_clock, home_hash> c8(16, classes, hs, ns(12345), 4);  // another origin: fine
    CHECK(c1.restore(good, ns(0), ns(0)) == errc_t::other_configuration);
    CHECK(c2.restore(good, ns(0), ns(0)) == errc_t::other_configuration);
    CHECK(c3.restore(good, ns(0), ns(0)) == errc_t::other_configuration);
    CHECK(c4.restore(good, ns(0), ns(0)) == errc_t::other_configuration);
    CHECK(c5.restore(good, ns(0), ns(0)) == errc_t::other_configuration);
    CHECK(c6.restore(good, ns(0), ns(0)) == errc_t::other_configuration);
    CHECK(c7.restore(good, ns(0), ns(0)) == errc_t::other_configuration);
    CHECK(c8.restore(good, ns(0), ns(0)) == errc_t::ok);
    errc ec = errc::ok;
    keyed_windows<manual_clock, home_hash> bad(16, {{0, ns(sec)}}, hs, ns(0), 4, ec);
    REQUIRE(ec == errc::zero_count);
    CHECK(bad.restore(good, ns(0), ns(0)) == errc_t::other_configuration);
    // A bucket table's snapshot is not a window table's.
    keyed_buckets<manual_clock, home_hash> kb(16, {{rate(1, ns(sec)), 2}}, hs, ns(0), 4);
    REQUIRE(kb.try_acquire(std::uint64_t{2}, 0, 1, ns(0)).admitted());
    CHECK(b.restore(kb.snapshot(ns(0), ns(0)), ns(0), ns(0)) == errc_t::bad_format);
  }
  // The bytes themselves restore after all those refusals, and again into
  // a table that took no traffic; after traffic the table is in use.
  REQUIRE(b.restore(good, ns(sec), ns(sec)) == errc_t::ok);
  CHECK(b.restore(good, ns(sec), ns(sec)) == errc_t::ok);
  for (const std::uint64_t k : std::initializer_list<std::uint64_t>{2, 5, 9}) CHECK(b.contains(k));
  CHECK(b.snapshot(ns(sec), ns(sec)) == good);
  CHECK_FALSE(b.try_acquire(std::uint64_t{5}, 1, 51, ns(sec)).admitted());  // key 5 holds 150 of 200
  CHECK(b.restore(good, ns(sec), ns(sec)) == errc_t::in_use);                // a refusal pins: in use
  CHECK(b.restore("", ns(sec), ns(sec)) == errc_t::in_use);
  REQUIRE(b.try_acquire(std::uint64_t{5}, 1, 50, ns(sec)).admitted());
  CHECK_FALSE(b.try_acquire(std::uint64_t{5}, 1, 1, ns(sec)).admitted());  // 200 of 200
  CHECK_FALSE(b.try_acquire(std::uint64_t{2}, 0, 3, ns(sec)).admitted());  // 3 + 3 > 5
  CHECK(b.try_acquire(std::uint64_t{2}, 0, 2, ns(sec)).admitted());
}

// Permits held at the snapshot come back as permits of the restored table,
// to be kept for the hold less the downtime: while kept, no key gets more
// than its limit less what it held; released, each key has its whole limit.
// A hold the downtime used up gives nothing back.
TEST_CASE("keyed_permits snapshot: held units come back as permits for the hold less the downtime", "[keyed][snapshot]") {
  const std::vector<std::uint64_t> limits = {3, 10};
  std::uint64_t kept = 0, dropped = 0;
  const std::uint64_t trials = tgtest::sized(40);
  for (std::uint64_t trial = 0; trial < trials; ++trial) {
    const std::uint64_t seed = tgtest::seed_for(0x3C00 + trial);
    INFO("trial " << trial << " schedule seed " << seed << " " << tgtest::seed_note());
    tgtest::rng g(seed);
    const hash_seed hs = seed_from(0x3C01);
    keyed_permits<> a(64, limits, hs);
    std::vector<keyed_permit> held;
    for (int step = 0; step < 200; ++step) {
      const std::uint64_t k = g.between(0, 19);
      if (g.chance(30) && !held.empty()) {
        held.erase(held.begin() + static_cast<std::ptrdiff_t>(g.between(0, held.size() - 1)));
      } else if (g.chance(3)) {
        (void)a.erase(k);  // its held units no longer count for it
      } else {
        keyed_permit p = a.try_acquire(k, static_cast<std::size_t>(k % 2), g.between(1, 3));
        if (p) held.push_back(std::move(p));
      }
    }
    std::uint64_t expect_units = 0, expect_keys = 0;
    for (std::uint64_t k = 0; k < 20; ++k) {
      expect_units += a.in_use(k);
      expect_keys += a.in_use(k) != 0;
    }
    const ns wall(1800000000LL * sec + static_cast<std::int64_t>(g.next() % static_cast<std::uint64_t>(sec)));
    const std::string bytes = a.snapshot(wall);
    REQUIRE(decode(bytes).w[wp_n] == expect_keys);
    // Odd trials: a hold longer than the downtime; even ones: used up by it.
    const std::int64_t down = static_cast<std::int64_t>(g.between(0, 600)) * sec + static_cast<std::int64_t>(g.between(0, 9));
    const std::int64_t hold = trial % 2 == 1 ? down + static_cast<std::int64_t>(g.between(1, 600 * sec))
                                             : static_cast<std::int64_t>(g.next() % static_cast<std::uint64_t>(down + 1));
    keyed_permits<> b(64, limits, hs);
    keyed_permit_holds out;
    REQUIRE(b.restore(bytes, wall + ns(down), ns(hold), out) == errc_t::ok);
    INFO("hold " << hold << " down " << down);
    if (hold <= down || expect_keys == 0) {
      CHECK(out.permits.empty());
      CHECK(out.keep_for == ns(0));
      for (std::uint64_t k = 0; k < 20; ++k) CHECK(b.in_use(k) == 0);
      ++dropped;
      continue;
    }
    ++kept;
    CHECK(out.keep_for == ns(hold - down));
    {
      // Straight after, before any traffic: the restored permits release
      // into b's entries, so b may not be restored over them.
      keyed_permit_holds again;
      CHECK(b.restore(bytes, wall, ns(hold), again) == errc_t::in_use);
      CHECK(again.permits.empty());
    }
    CHECK(out.permits.size() == expect_keys);
    CHECK(out.units() == expect_units);
    for (std::uint64_t k = 0; k < 20; ++k) {
      const std::size_t c = static_cast<std::size_t>(k % 2);
      const std::uint64_t was = a.in_use(k);
      CHECK(b.in_use(k) == was);
      CHECK(b.contains(k) == (was != 0));
      // While the restored permits are kept: the limit less what was held, and no more.
      if (was < limits[c]) {
        keyed_permit rest = b.try_acquire(k, c, limits[c] - was);
        CHECK(rest);
        CHECK_FALSE(b.try_acquire(k, c, 1));
      } else {
        CHECK(b.try_acquire(k, c, 1).result().result().why() == reason::busy);
      }
    }
    keyed_permit_holds other;
    CHECK(b.restore(bytes, wall, ns(hold), other) == errc_t::in_use);
    out.clear();
    for (std::uint64_t k = 0; k < 20; ++k) {
      CHECK(b.in_use(k) == 0);
      const std::size_t c = static_cast<std::size_t>(k % 2);
      CHECK(b.try_acquire(k, c, limits[c]));
    }
    CHECK(b.restore(bytes, wall, ns(hold), other) == errc_t::in_use);  // it held restored permits
  }
  CHECK(kept + dropped == trials);
  CHECK(kept == trials / 2);  // every odd trial held something at its snapshot
}

TEST_CASE("keyed_permits snapshot: hostile bytes and other tables are refused, changing nothing", "[keyed][snapshot]") {
  const hash_seed hs = seed_from(0x3C10);
  const std::vector<std::uint64_t> limits = {2, 5};
  keyed_permits<home_hash> a(16, limits, hs, 4);
  keyed_permit p2 = a.try_acquire(std::uint64_t{2}, 0, 2);
  keyed_permit p5 = a.try_acquire(std::uint64_t{5}, 1, 4);
  keyed_permit p9 = a.try_acquire(std::uint64_t{9}, 1, 1);
  keyed_permit p9b = a.try_acquire(std::uint64_t{9}, 1, 2);
  REQUIRE((p2 && p5 && p9 && p9b));
  const ns wall(1000 * sec), hold(60 * sec);
  const std::string good = a.snapshot(wall);
  const words f = decode(good);
  REQUIRE(f.tag == "TGP1");
  CHECK(f.w[w_wall] == static_cast<std::uint64_t>(1000 * sec));
  REQUIRE(f.w[wp_n] == 3);
  REQUIRE(f.w.size() == wp_first + 3 * wp_row + 1);
  CHECK(f.w[wp_first + 2 * wp_row + 3] == 3);  // key 9: two permits, 3 units
  keyed_permits<home_hash> b(16, limits, hs, 4);
  // A sentinel in `out`: a permit of another table, which a refusal must not release.
  keyed_permits<home_hash> side(16, limits, hs, 4);
  keyed_permit_holds out;
  out.permits.push_back(side.try_acquire(std::uint64_t{1}, 0, 1));
  out.keep_for = ns(7);
  const std::string empty = b.snapshot(wall);
  auto unchanged = [&] {
    for (const std::uint64_t k : std::initializer_list<std::uint64_t>{2, 5, 9}) CHECK_FALSE(b.contains(k));
    CHECK(b.snapshot(wall) == empty);
    CHECK(out.permits.size() == 1);
    CHECK(out.keep_for == ns(7));
    CHECK(side.in_use(std::uint64_t{1}) == 1);
  };
  auto expect = [&](const std::string& bytes, errc_t e) {
    CHECK(b.restore(bytes, wall, hold, out) == e);
    unchanged();
  };
  std::uint64_t refused = 0;
  for (std::size_t i = 0; i < good.size(); ++i) {
    for (int bit = 0; bit <= 8; ++bit) {
      std::string x = good;
      x[i] = static_cast<char>(x[i] ^ (bit == 8 ? 0xFF : (1 << bit)));
      const errc_t e = b.restore(x, wall, hold, out);
      INFO("byte " << i << " bit " << bit);
      CHECK(e == (i < 4 ? errc_t::bad_format : errc_t::corrupted));
      refused += e != errc_t::ok;
    }
  }
  for (std::size_t len = 0; len < good.size(); ++len) {
    const errc_t e = b.restore(good.substr(0, len), wall, hold, out);
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
  expect("TGW1" + good.substr(4), errc_t::bad_format);
  expect(with(w_version, 0), errc_t::wrong_version);
  expect(with(w_fp, f.w[w_fp] + 1), errc_t::other_configuration);
  {
    words g = f;
    g.w.insert(g.w.end() - 1, 0);
    expect(encode(g), errc_t::truncated);
    words h = f;
    h.w.erase(h.w.end() - 2);
    expect(encode(h), errc_t::truncated);
    expect(with(wp_n, 2), errc_t::truncated);
  }
  const std::size_t r0 = wp_first, r1 = wp_first + wp_row;  // key 2 (class 0), key 5 (class 1)
  expect(with(wp_n, 17), errc_t::out_of_range);                   // more than the capacity
  expect(with(r0, 16), errc_t::out_of_range);                     // no such slot
  expect(with(r1, f.w[r0]), errc_t::out_of_range);                // slots not ascending
  expect(with(r0, 6), errc_t::out_of_range);                      // outside its hash's window (2 .. 5)
  expect(with(r1 + 1, f.w[r0 + 1]), errc_t::out_of_range);        // one hash in two entries
  expect(with(r0 + 2, 2), errc_t::out_of_range);                  // no such class
  expect(with(r0 + 3, 0), errc_t::out_of_range);                  // holds nothing
  expect(with(r0 + 3, 3), errc_t::out_of_range);                  // above its class's limit 2
  expect(with(r1 + 3, ~std::uint64_t{0}), errc_t::out_of_range);  // far above
  {  // another capacity, window, limit list, seed or hash
    keyed_permits<home_hash> c1(32, limits, hs, 4);
    keyed_permits<home_hash> c2(16, limits, hs, 3);
    keyed_permits<home_hash> c3(16, {2, 6}, hs, 4);
    keyed_permits<home_hash> c4(16, {2, 5, 1}, hs, 4);
    keyed_permits<home_hash> c5(16, limits, hash_seed{hs.k0, hs.k1 + 0x100}, 4);
    keyed_permits<home_hash> c6(16, limits, hash_seed{hs.k0 ^ 1, hs.k1}, 4);
    keyed_permits<> c7(16, limits, hs, 4);
    keyed_permit_holds o;
    CHECK(c1.restore(good, wall, hold, o) == errc_t::other_configuration);
    CHECK(c2.restore(good, wall, hold, o) == errc_t::other_configuration);
    CHECK(c3.restore(good, wall, hold, o) == errc_t::other_configuration);
    CHECK(c4.restore(good, wall, hold, o) == errc_t::other_configuration);
    CHECK(c5.restore(good, wall, hold, o) == errc_t::ok);  // home_hash reads only k0's low byte
    CHECK(c6.restore(good, wall, hold, o) == errc_t::other_configuration);
    CHECK(c7.restore(good, wall, hold, o) == errc_t::other_configuration);
    errc ec = errc::ok;
    keyed_permits<home_hash> bad(16, {0}, hs, 4, ec);
    REQUIRE(ec == errc::zero_count);
    CHECK(bad.restore(good, wall, hold, o) == errc_t::other_configuration);
    o.clear();
  }
  // A wall clock that went backwards counts as no downtime; a negative hold as none.
  {
    keyed_permits<home_hash> c(16, limits, hs, 4);
    keyed_permit_holds o;
    REQUIRE(c.restore(good, wall - ns(5 * sec), ns(-1), o) == errc_t::ok);
    CHECK(o.permits.empty());
    CHECK(c.in_use(std::uint64_t{9}) == 0);
    REQUIRE(c.restore(good, wall - ns(5 * sec), hold, o) == errc_t::ok);  // gave nothing back: not in use
    CHECK(o.keep_for == hold);
    CHECK(o.units() == 9);
  }
  // The bytes themselves restore (replacing `out`, whose permit is released).
  REQUIRE(b.restore(good, wall + ns(sec), hold, out) == errc_t::ok);
  CHECK(side.in_use(std::uint64_t{1}) == 0);
  CHECK(out.keep_for == hold - ns(sec));
  CHECK(out.permits.size() == 3);
  CHECK(b.in_use(std::uint64_t{2}) == 2);
  CHECK(b.in_use(std::uint64_t{5}) == 4);
  CHECK(b.in_use(std::uint64_t{9}) == 3);
  CHECK_FALSE(b.try_acquire(std::uint64_t{2}, 0, 1));
  CHECK(b.try_acquire(std::uint64_t{5}, 1, 1));
  CHECK_FALSE(b.try_acquire(std::uint64_t{5}, 1, 2));
  // Erasing a key with restored permits: its next acquisition has the whole
  // limit; the permits still release into the old entry.
  CHECK(b.erase(std::uint64_t{9}));
  keyed_permit n9 = b.try_acquire(std::uint64_t{9}, 1, 5);
  CHECK(n9);
  out.clear();
  CHECK(b.in_use(std::uint64_t{9}) == 5);
  CHECK(b.in_use(std::uint64_t{2}) == 0);
}

// Snapshots taken while threads acquire, release and erase (permits) or
// admit and erase (windows): every snapshot restores (a key that moved
// entries during the scan is stored once), and within its limits.
TEST_CASE("keyed_windows and keyed_permits snapshot: taken beside traffic", "[keyed][snapshot]") {
  const hash_seed hs = seed_from(0x3C20);
  keyed_permits<> p(32, {4}, hs, 8);
  keyed_windows<manual_clock> w(32, {{6, ns(sec)}}, hs, ns(0), 8);
  std::atomic<std::int64_t> clock{0};  // relaxed: a counter of test time only
  std::atomic<bool> stop{false};       // relaxed: a flag; join() orders the rest
  std::atomic<int> finished{0};        // relaxed: a count; join() orders the rest
  std::vector<std::thread> pool;
  for (int i = 0; i < 2; ++i) {
    pool.emplace_back([&, i] {
      tgtest::rng g(tgtest::seed_for(0x3C21 + static_cast<std::uint64_t>(i)));
      std::vector<keyed_permit> mine;
      for (int j = 0; j < 100000 && !stop.load(std::memory_order_relaxed); ++j) {
        const std::uint64_t k = g.between(0, 59);
        const std::int64_t now = clock.fetch_add(static_cast<std::int64_t>(g.between(1, 3000000)), std::memory_order_relaxed);
        (void)w.try_acquire(k, 0, g.between(1, 2), ns(now));
        keyed_permit x = p.try_acquire(k, 0, g.between(1, 2));
        if (x) mine.push_back(std::move(x));
        if (!mine.empty() && (mine.size() > 6 || g.chance(40))) mine.erase(mine.begin());
        if (g.chance(3)) (void)p.erase(g.between(0, 59));
        if (g.chance(3)) (void)w.erase(g.between(0, 59));
      }
      finished.fetch_add(1, std::memory_order_relaxed);
    });
  }
  std::uint64_t rows = 0;
  for (int round = 0; round < 40; ++round) {
    // Each round after some traffic (bounded: the threads stop on their own).
    while (clock.load(std::memory_order_relaxed) < (round + 1) * 5 * sec && finished.load(std::memory_order_relaxed) < 2)
      std::this_thread::yield();
    const std::int64_t now = clock.load(std::memory_order_relaxed);
    const std::string pb = p.snapshot(ns(now)), wb = w.snapshot(ns(now), ns(now));
    keyed_permits<> p2(32, {4}, hs, 8);
    keyed_windows<manual_clock> w2(32, {{6, ns(sec)}}, hs, ns(0), 8);
    keyed_permit_holds out;
    REQUIRE(p2.restore(pb, ns(now), ns(sec), out) == errc_t::ok);
    REQUIRE(w2.restore(wb, ns(now), ns(now)) == errc_t::ok);
    rows += decode(pb).w[wp_n] + decode(wb).w[ww_n];
  }
  stop.store(true, std::memory_order_relaxed);
  for (std::thread& th : pool) th.join();
  CHECK(rows > 0);
}
