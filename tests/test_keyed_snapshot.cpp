// keyed_buckets snapshot/restore: round trips that keep every key's debt
// (never fresher), the latest claim time, and every refusal of hostile
// bytes with the account's codes.
#include "catch_compat.hpp"
#include "forge_ticket.hpp"
#include "keyed_support.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <thread>
#include <string_view>
#include <vector>

using namespace tollgate;
using tgtest::ns;

namespace {

using namespace tgkeyed;

// Word indexes: 0 version, 1 fingerprint, 2 wall, 3 lead, 4 n, then 4 per
// entry (slot, hash, class, owed) from 5; the checksum last.
constexpr std::size_t w_version = 0, w_fp = 1, w_lead = 3, w_n = 4, w_first = 5;

using errc_t = account_restore_errc;
using tgtest::sec;

}  // namespace

// Random tables on two classes (one exact at scale 1, one at scale 7 that
// rounds), snapshot at a random `now`, restored after a random downtime
// into a table with another origin: every key then decides as the old one
// would have `down` later, or more strictly (never fresher), and on the
// scale-1 class exactly.
TEST_CASE("keyed snapshot: a restored table keeps every key's debt, aged by the downtime", "[keyed][snapshot]") {
  std::uint64_t compared = 0, owing = 0;
  for (std::uint64_t stream = 0; stream < 8; ++stream) {
    const std::uint64_t seed = tgtest::seed_for(0x5A5 + stream);
    INFO("schedule seed " << seed << " " << tgtest::seed_note());
    tgtest::rng g(seed);
    const std::vector<key_class> classes = {{rate(1, ns(sec)), 4}, {rate(7, ns(sec)), 5}};
    const hash_seed hs = seed_from(30);
    const std::size_t cap = 64;
    keyed_buckets<manual_clock> a(cap, classes, hs, ns(0));
    const std::uint64_t keys = 40;
    std::int64_t now = 0;
    for (int step = 0; step < 1500; ++step) {
      now += static_cast<std::int64_t>(g.between(0, sec / 50));
      const std::uint64_t k = g.between(0, keys - 1);
      (void)a.try_acquire(k, static_cast<std::size_t>(k % 2), g.between(1, 3), ns(now));
    }
    const ns wall(1800000000LL * sec);
    const std::string bytes = a.snapshot(ns(now), wall);
    const std::int64_t down = static_cast<std::int64_t>(g.between(0, sec));
    const std::int64_t origin2 = static_cast<std::int64_t>(g.between(0, 1000)) * sec;
    const std::int64_t now2 = origin2 + static_cast<std::int64_t>(g.between(0, 5 * sec));
    keyed_buckets<manual_clock> b(cap, classes, hs, ns(origin2));
    REQUIRE(b.restore(bytes, ns(now2), wall + ns(down)) == errc_t::ok);
    for (std::uint64_t k = 0; k < keys; ++k) {
      const std::size_t c = static_cast<std::size_t>(k % 2);
      const std::uint64_t old_av = a.available(k, c, ns(now + down)), new_av = b.available(k, c, ns(now2));
      if (old_av < classes[c].burst) ++owing;
      if (c == 0) CHECK(new_av == old_av);
      else CHECK(new_av <= old_av);
      CHECK(new_av + 1 >= old_av);  // rounding costs at most one unit's nanosecond
      // The waits for the whole burst agree (scale 1) or the new one is no shorter.
      const keyed_result ra = a.try_acquire(k, c, classes[c].burst, ns(now + down));
      const keyed_result rb = b.try_acquire(k, c, classes[c].burst, ns(now2));
      if (c == 0) {
        CHECK(rb.admitted() == ra.admitted());
        if (!ra.admitted()) CHECK(rb.result().retry_after() == ra.result().retry_after());
      } else {
        if (rb.admitted()) CHECK(ra.admitted());  // never fresher
        if (!ra.admitted()) CHECK(rb.result().retry_after() >= ra.result().retry_after());
        if (ra.admitted() && !rb.admitted()) CHECK(rb.result().retry_after() <= ns(1));
      }
      ++compared;
    }
  }
  CHECK(compared == 8 * 40);
  CHECK(owing > 100);  // most keys owed something at the snapshot
}

TEST_CASE("keyed snapshot: fresh entries are not stored, and the latest claim time is kept", "[keyed][snapshot]") {
  const hash_seed hs = seed_from(31);
  keyed_buckets<manual_clock> a(16, {{rate(1, ns(sec)), 2}}, hs, ns(0));
  REQUIRE(a.try_acquire(std::uint64_t{1}, 0, 2, ns(0)).admitted());       // full at 2 s
  REQUIRE(a.try_acquire(std::uint64_t{2}, 0, 1, ns(20 * sec)).admitted()); // the latest claim: 20 s
  // A snapshot at 10 s (a lagging `now`): key 1 full (not stored), key 2
  // owes until 21 s, and claims have seen 10 s more than this `now`.
  const std::string bytes = a.snapshot(ns(10 * sec), ns(0));
  const words f = decode(bytes);
  REQUIRE(f.w.size() == 5 + 4 + 1);
  CHECK(f.w[w_n] == 1);
  CHECK(f.w[w_lead] == static_cast<std::uint64_t>(10 * sec));
  CHECK(f.w[w_first + 3] == static_cast<std::uint64_t>(11 * sec));
  keyed_buckets<manual_clock> b(16, {{rate(1, ns(sec)), 2}}, hs, ns(0));
  REQUIRE(b.restore(bytes, ns(100 * sec), ns(4 * sec)) == errc_t::ok);  // 4 s down
  CHECK_FALSE(b.contains(std::uint64_t{1}));
  CHECK(b.contains(std::uint64_t{2}));
  CHECK(b.available(std::uint64_t{2}, 0, ns(100 * sec)) == 0);  // owes 11 s less 4 s down
  const keyed_result w2 = b.try_acquire(std::uint64_t{2}, 0, 1, ns(100 * sec));
  CHECK(w2.result().retry_after() == ns(6 * sec));
  // A new key starts 6 s ahead (10 s lead less 4 s down): it owes that much.
  const keyed_result n = b.try_acquire(std::uint64_t{3}, 0, 1, ns(100 * sec));
  CHECK(n.status() == keyed_status::limited);
  CHECK(n.result().retry_after() == ns(5 * sec));
  // Restoring twice into a table that took no traffic is allowed, as for the
  // account; after traffic it is in_use.
  keyed_buckets<manual_clock> c(16, {{rate(1, ns(sec)), 2}}, hs, ns(0));
  REQUIRE(c.restore(bytes, ns(0), ns(0)) == errc_t::ok);
  REQUIRE(c.restore(bytes, ns(0), ns(0)) == errc_t::ok);
  // A new key: it claims an entry (and owes the 10 s lead, so it is refused).
  REQUIRE(c.try_acquire(std::uint64_t{5}, 0, 1, ns(0)).status() == keyed_status::limited);
  REQUIRE(c.contains(std::uint64_t{5}));
  CHECK(c.restore(bytes, ns(0), ns(0)) == errc_t::in_use);
}

// Entries that sit past their home (displaced by others) come back in
// their slots, and lookups find them past entries that aged out.
TEST_CASE("keyed snapshot: displaced entries are found after a restore", "[keyed][snapshot]") {
  // All keys share home 0 (the hash is the key), window 8 of 8 entries.
  struct zero_home {
    explicit zero_home(hash_seed) {}
    std::uint64_t operator()(std::uint64_t id) const { return id; }
    std::uint64_t operator()(std::string_view s) const { return s.size(); }
  };
  keyed_buckets<manual_clock, zero_home> a(8, {{rate(1, ns(sec)), 3}}, hash_seed{}, ns(0), 8);
  for (std::uint64_t k = 1; k <= 6; ++k) REQUIRE(a.try_acquire(k, 0, k <= 3 ? 1 : 3, ns(0)).admitted());
  const std::string bytes = a.snapshot(ns(0), ns(0));
  CHECK(decode(bytes).w[w_n] == 6);
  keyed_buckets<manual_clock, zero_home> b(8, {{rate(1, ns(sec)), 3}}, hash_seed{}, ns(0), 8);
  // 1.5 s down: keys 1-3 (1 s owed) are fresh, keys 4-6 owe 1.5 s more.
  REQUIRE(b.restore(bytes, ns(0), ns(sec + sec / 2)) == errc_t::ok);
  for (std::uint64_t k = 1; k <= 3; ++k) CHECK_FALSE(b.contains(k));
  for (std::uint64_t k = 4; k <= 6; ++k) {
    CHECK(b.contains(k));
    CHECK(b.available(k, 0, ns(0)) == 1);
  }
  // Key 5 takes its last unit in its own entry, not a second one.
  CHECK(b.try_acquire(std::uint64_t{5}, 0, 1, ns(0)).admitted());
  CHECK_FALSE(b.try_acquire(std::uint64_t{5}, 0, 1, ns(0)).admitted());
  // Fresh keys take the free entries: 1, 2, 3 and the two never used.
  for (std::uint64_t k = 10; k < 15; ++k) CHECK(b.try_acquire(k, 0, 3, ns(0)).admitted());
  CHECK(b.try_acquire(std::uint64_t{20}, 0, 1, ns(0)).table_full());
}

TEST_CASE("keyed snapshot: hostile bytes are refused with the account's codes, changing nothing", "[keyed][snapshot]") {
  const hash_seed hs = seed_from(32);
  const std::vector<key_class> classes = {{rate(1, ns(sec)), 3}, {rate(1, ns(sec)), 5}};
  keyed_buckets<manual_clock, home_hash> a(16, classes, hs, ns(0), 4);
  REQUIRE(a.try_acquire(std::uint64_t{2}, 0, 2, ns(0)).admitted());
  REQUIRE(a.try_acquire(std::uint64_t{5}, 1, 1, ns(0)).admitted());
  REQUIRE(a.try_acquire(std::uint64_t{9}, 1, 4, ns(0)).admitted());
  const std::string good = a.snapshot(ns(0), ns(0));
  const words f = decode(good);
  REQUIRE(f.w[w_n] == 3);
  REQUIRE(f.w.size() == w_first + 3 * 4 + 1);
  keyed_buckets<manual_clock, home_hash> b(16, classes, hs, ns(0), 4);
  auto expect = [&](const std::string& bytes, errc_t e) {
    CHECK(b.restore(bytes, ns(0), ns(0)) == e);
    for (const std::uint64_t k : std::initializer_list<std::uint64_t>{2, 5, 9}) CHECK_FALSE(b.contains(k));  // nothing changed
  };
  auto with = [&](std::size_t i, std::uint64_t v) {
    words g = f;
    g.w[i] = v;
    return encode(g);
  };
  expect("", errc_t::bad_format);
  expect("TGA1" + good.substr(4), errc_t::bad_format);
  expect(good.substr(0, 20), errc_t::truncated);
  {
    std::string flip = good;
    flip[30] = static_cast<char>(flip[30] ^ 1);
    expect(flip, errc_t::corrupted);
  }
  expect(with(w_version, 1), errc_t::wrong_version);  // format 1: SipHash-2-4 keys
  expect(with(w_version, 3), errc_t::wrong_version);
  expect(with(w_fp, f.w[w_fp] ^ 1), errc_t::other_configuration);
  {  // another capacity, window, class list or seed: another fingerprint
    keyed_buckets<manual_clock, home_hash> c1(32, classes, hs, ns(0), 4);
    keyed_buckets<manual_clock, home_hash> c2(16, classes, hs, ns(0), 5);
    keyed_buckets<manual_clock, home_hash> c3(16, {{rate(1, ns(sec)), 3}}, hs, ns(0), 4);
    keyed_buckets<manual_clock, home_hash> c4(16, classes, hash_seed{hs.k0 + 1, hs.k1}, ns(0), 4);
    keyed_buckets<manual_clock> c5(16, classes, hs, ns(0), 4);  // another hash
    CHECK(c1.restore(good, ns(0), ns(0)) == errc_t::other_configuration);
    CHECK(c2.restore(good, ns(0), ns(0)) == errc_t::other_configuration);
    CHECK(c3.restore(good, ns(0), ns(0)) == errc_t::other_configuration);
    CHECK(c4.restore(good, ns(0), ns(0)) == errc_t::other_configuration);
    CHECK(c5.restore(good, ns(0), ns(0)) == errc_t::other_configuration);
    errc ec = errc::ok;
    keyed_buckets<manual_clock, home_hash> bad(0, classes, hs, ns(0), 4, ec);
    CHECK(bad.restore(good, ns(0), ns(0)) == errc_t::other_configuration);
  }
  {  // a word more or less, the checksum recomputed
    words g = f;
    g.w.insert(g.w.end() - 1, 0);
    expect(encode(g), errc_t::truncated);
    words h = f;
    h.w.erase(h.w.end() - 2);
    expect(encode(h), errc_t::truncated);
    expect(with(w_n, 4), errc_t::truncated);
  }
  const std::size_t s0 = w_first, s1 = w_first + 4;  // the first two entries' slots
  expect(with(w_n, 17), errc_t::out_of_range);                       // more than the capacity
  expect(with(w_lead, std::uint64_t{1} << 63), errc_t::out_of_range);  // past INT64_MAX
  expect(with(s0, 16), errc_t::out_of_range);                        // no such slot
  expect(with(s1, f.w[s0]), errc_t::out_of_range);                   // slots not ascending
  expect(with(s0, 0), errc_t::out_of_range);                         // before its hash's home (2)
  expect(with(s1 + 1, f.w[s0 + 1]), errc_t::out_of_range);           // one hash in two entries
  expect(with(s0 + 2, 2), errc_t::out_of_range);                     // no such class
  expect(with(s0 + 3, 0), errc_t::out_of_range);                     // owes nothing
  expect(with(s0 + 3, (std::uint64_t{1} << 62) + 1), errc_t::out_of_range);  // beyond the class's range
  // The bytes themselves restore, after all those refusals.
  REQUIRE(b.restore(good, ns(0), ns(0)) == errc_t::ok);
  for (const std::uint64_t k : std::initializer_list<std::uint64_t>{2, 5, 9}) CHECK(b.contains(k));
  CHECK(b.available(std::uint64_t{9}, 1, ns(0)) == 1);
  // A restored table that took no traffic may be restored again; once it
  // has, it is in use, refused before the bytes are even read.
  CHECK(b.restore("", ns(0), ns(0)) == errc_t::bad_format);
  REQUIRE(b.try_acquire(std::uint64_t{9}, 1, 1, ns(0)).admitted());
  CHECK(b.restore("", ns(0), ns(0)) == errc_t::in_use);
  CHECK(b.available(std::uint64_t{9}, 1, ns(0)) == 0);
}

// Snapshots taken while threads admit, claim, evict and erase: a key that
// moves to another entry during the scan must not appear twice (the restore
// would refuse it as out_of_range); the larger debt is kept.
TEST_CASE("keyed snapshot: taken beside traffic", "[keyed][snapshot]") {
  const hash_seed hs = seed_from(33);
  keyed_buckets<manual_clock> a(32, {{rate(1, ns(1000)), 4}}, hs, ns(0), 8);
  std::atomic<std::int64_t> clock{0};  // relaxed: a counter of test time only
  std::atomic<bool> stop{false};       // relaxed: a flag; join() orders the rest
  std::atomic<int> finished{0};        // relaxed: a count; join() orders the rest
  std::vector<std::thread> pool;
  for (int i = 0; i < 2; ++i) {
    pool.emplace_back([&, i] {
      tgtest::rng g(tgtest::seed_for(400 + static_cast<std::uint64_t>(i)));
      for (int j = 0; j < 200000 && !stop.load(std::memory_order_relaxed); ++j) {
        const std::int64_t now = clock.fetch_add(static_cast<std::int64_t>(g.between(1, 30)), std::memory_order_relaxed);
        (void)a.try_acquire(g.between(0, 99), 0, g.between(1, 2), ns(now));
        if (g.chance(2)) (void)a.erase(g.between(0, 99));
      }
      finished.fetch_add(1, std::memory_order_relaxed);
    });
  }
  std::uint64_t restored = 0;
  for (int round = 0; round < 50; ++round) {
    // Each round after some traffic (bounded: the threads stop on their own).
    while (clock.load(std::memory_order_relaxed) < (round + 1) * 40000 && finished.load(std::memory_order_relaxed) < 2)
      std::this_thread::yield();
    const std::int64_t now = clock.load(std::memory_order_relaxed);
    const std::string bytes = a.snapshot(ns(now), ns(0));
    keyed_buckets<manual_clock> b(32, {{rate(1, ns(1000)), 4}}, hs, ns(0), 8);
    REQUIRE(b.restore(bytes, ns(now), ns(0)) == errc_t::ok);
    restored += decode(bytes).w[w_n];
  }
  stop.store(true, std::memory_order_relaxed);
  for (std::thread& th : pool) th.join();
  CHECK(restored > 0);
}

// The schedule that found it: a ticket dead in the old table (its key
// erased and claimed again) named the restored entry, whose claim
// generation restarts, and gave its units back: a full burst more at one
// instant. No ticket from before a restore, nor of another table, gives
// anything back.
TEST_CASE("keyed snapshot: tickets from before a restore give nothing back", "[keyed][snapshot]") {
  const std::int64_t s = 1000000000;
  const ns now(100000 * s), wall(1764000000 * s);
  const std::vector<key_class> cls{key_class{rate(10, ns(10 * s)), 10}};
  tgtest::rng g(tgtest::seed_for(0x7e57));
  INFO(tgtest::seed_note());
  for (int round = 0; round < 50; ++round) {
    const hash_seed seed = seed_from(0x7e58 + static_cast<std::uint64_t>(round));
    const std::uint64_t key = g.next();
    INFO("round " << round << " key " << key);
    keyed_buckets<manual_clock> a(64, cls, seed, ns(0));
    keyed_ticket dead, live;
    REQUIRE(a.try_acquire(key, 0, 10, now, dead).admitted());
    REQUIRE(a.erase(key));
    REQUIRE(a.try_acquire(key, 0, 10, now, live).admitted());
    CHECK(a.refund(key, dead, 10, now) == 0);  // the old table tells them apart
    const std::string bytes = a.snapshot(now, wall);
    keyed_buckets<manual_clock> b(64, cls, seed, ns(0));
    REQUIRE(b.restore(bytes, now, wall) == account_restore_errc::ok);
    REQUIRE(b.available(key, 0, now) == 0);
    keyed_ticket dead_b = tgtest::forge(dead), live_b = tgtest::forge(live);
    CHECK(b.refund(key, dead_b, 10, now) == 0);
    CHECK(b.refund(key, live_b, 10, now) == 0);  // the safe side: in flight across the restore
    CHECK(b.available(key, 0, now) == 0);
    CHECK_FALSE(b.try_acquire(key, 0, 1, now).admitted());
    // A table of the same configuration that was never restored: a ticket
    // of `a` names the same slot and generation in it, and still gives nothing.
    keyed_buckets<manual_clock> c(64, cls, seed, ns(0));
    REQUIRE(c.try_acquire(key, 0, 10, now).admitted());
    keyed_ticket first = tgtest::forge(dead);
    CHECK(c.refund(key, first, 10, now) == 0);
    CHECK_FALSE(c.try_acquire(key, 0, 1, now).admitted());
    // Its own tickets still give back.
    keyed_ticket own;
    REQUIRE(c.try_acquire(key + 1, 0, 4, now, own).admitted());
    CHECK(c.refund(key + 1, own, 4, now) == 4);
    CHECK(a.refund(key, live, 10, now) == 10);
  }
}

namespace {
std::string unhex(std::string_view h) {
  std::string s;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2)
    s.push_back(static_cast<char>(std::stoi(std::string(h.substr(i, 2)), nullptr, 16)));
  return s;
}
}  // namespace

// Format 1 hashed keys with SipHash-2-4; format 2 with SipHash-1-3. These
// bytes were written by the format-1 code (a 16-entry table, two classes,
// keys 0-11 and 40, the latest claim 2 s ahead of the snapshot's `now`).
// Read under the new hash, their slots and hashes would name other keys:
// they are refused with wrong_version (not other_configuration, not read),
// changing nothing, and the same table snapshots into format 2, which the
// version alone would not let through either: its fingerprint differs too.
TEST_CASE("keyed snapshot: TGK1 bytes of format 1 (SipHash-2-4) are refused, never misread", "[keyed][snapshot]") {
  const std::string old_bytes = unhex(
      "54474b31010000000000000033fdee271155972700002a36fe9c971700943577"
      "0000000009000000000000000200000000000000e7d2fb39034e132a01000000"
      "00000000005b9b5a040000000300000000000000bd6d03724225263401000000"
      "0000000000f3b7ee01000000040000000000000003758d7e6741674401000000"
      "0000000000397b120200000008000000000000005d005c30a6febe8d01000000"
      "000000000015d83604000000090000000000000089b1f42abbcfad9600000000"
      "00000000005ed0b2000000000b00000000000000a1e7133213515fb101000000"
      "00000000007dbba2060000000c000000000000009011b988ef39e6b800000000"
      "0000000000ca9a3b000000000d0000000000000002c4bbf0a820cbdb00000000"
      "000000000084d717000000000e00000000000000781ada47917807e701000000"
      "0000000000c37ec606000000e5e2491239372bdc");
  const hash_seed seed{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  const std::vector<key_class> classes{{per_second(1), 2}, {per_minute(6), 3}};
  keyed_buckets<manual_clock> a(16, classes, seed, ns(0), 4);
  for (std::uint64_t k = 0; k < 12; ++k)
    (void)a.try_acquire(k, k % 2, 1 + k % 3, ns(5 * sec + static_cast<std::int64_t>(k) * 100000000));
  (void)a.try_acquire(std::uint64_t{40}, 0, 1, ns(9 * sec));
  const std::string now_bytes = a.snapshot(ns(7 * sec), ns(1700000000LL * sec));
  REQUIRE(now_bytes.size() == old_bytes.size());  // the same keys and fields
  const words o = decode(old_bytes), f = decode(now_bytes);
  CHECK(o.w[w_version] == 1);
  CHECK(f.w[w_version] == 2);
  CHECK(o.w[w_fp] != f.w[w_fp]);  // the probe keys' hashes changed with the hash
  keyed_buckets<manual_clock> b(16, classes, seed, ns(100 * sec), 4);
  CHECK(b.restore(old_bytes, ns(200 * sec), ns(1700000000LL * sec + 3 * sec)) == account_restore_errc::wrong_version);
  for (std::uint64_t k = 0; k < 12; ++k) CHECK_FALSE(b.contains(k));  // nothing changed
  {  // format-1 bytes relabelled as format 2 (checksum redone): the fingerprint refuses them
    words g = o;
    g.w[w_version] = 2;
    CHECK(b.restore(encode(g), ns(0), ns(0)) == account_restore_errc::other_configuration);
  }
  // Refusals of damaged bytes keep their codes.
  CHECK(b.restore(old_bytes.substr(0, 11), ns(0), ns(0)) == account_restore_errc::bad_format);
  CHECK(b.restore(old_bytes.substr(0, 51), ns(0), ns(0)) == account_restore_errc::truncated);
  CHECK(b.restore(old_bytes.substr(0, old_bytes.size() - 1), ns(0), ns(0)) == account_restore_errc::corrupted);
  // The format-2 bytes restore (the refusals changed nothing), no wall time
  // later: key 40 (1 unit at 9 s) still owes 3 s.
  CHECK(b.restore(now_bytes, ns(200 * sec), ns(1700000000LL * sec)) == account_restore_errc::ok);
  CHECK(b.contains(std::uint64_t{40}));
  CHECK(b.available(std::uint64_t{40}, 0, ns(200 * sec)) == 0);
}

// The other tables' format-1 bytes (SipHash-2-4), written by that code:
// key 7 holding 2 of a window of 4 per 10 s, 2 permits of 5, $1 of $50
// spent. Each is refused with wrong_version, and a table of format 2 that
// took the same traffic is still read.
TEST_CASE("keyed snapshot: windows, permits and budgets of format 1 are refused", "[keyed][snapshot]") {
  const hash_seed seed{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  const std::string windows1 = unhex(
      "5447573101000000000000002cfb73cf385a6ec300002a36fe9c971700000000"
      "0000000001000000000000000100000000000000e7d2fb39034e132a00000000"
      "0000000058f184a3020000000200000000000000c630e6f2f98c1eb4");
  const std::string permits1 = unhex(
      "544750310100000000000000f06fab8776a1f6ca00002a36fe9c971701000000"
      "000000000100000000000000e7d2fb39034e132a000000000000000002000000"
      "00000000c5ddc9c79ab9b460");
  const std::string budgets1 = unhex(
      "544742310100000000000000fd7421c7a2119f90010000000000000001000000"
      "00000000e7d2fb39034e132a0000000000000000000000000000000000ca9a3b"
      "0000000000ca9a3b00000000885b43cc6ff3a7b7");
  const std::vector<window_class> wcls{{4, ns(10 * sec)}};
  const nanoseconds wall(1700000000LL * sec);
  {
    keyed_windows<manual_clock> w(8, wcls, seed, ns(0), 4);
    CHECK(w.restore(windows1, ns(2 * sec), wall) == account_restore_errc::wrong_version);
    CHECK_FALSE(w.contains(std::uint64_t{7}));
    keyed_windows<manual_clock> src(8, wcls, seed, ns(0), 4);
    REQUIRE(src.try_acquire(std::uint64_t{7}, 0, 2, ns(sec)).admitted());
    CHECK(w.restore(src.snapshot(ns(2 * sec), wall), ns(2 * sec), wall) == account_restore_errc::ok);
    CHECK(w.contains(std::uint64_t{7}));
  }
  {
    keyed_permits<> p(8, {5}, seed, 4);
    keyed_permit_holds holds;
    CHECK(p.restore(permits1, wall, ns(sec), holds) == account_restore_errc::wrong_version);
    CHECK_FALSE(p.contains(std::uint64_t{7}));
    keyed_permits<> src(8, {5}, seed, 4);
    keyed_permit h = src.try_acquire(std::uint64_t{7}, 0, 2);
    REQUIRE(h);
    CHECK(p.restore(src.snapshot(wall), wall, ns(sec), holds) == account_restore_errc::ok);
    CHECK(p.contains(std::uint64_t{7}));
  }
  {
    keyed_budgets<> b(8, {usd::from_units(50)}, seed, keyed_budget_reuse::never, 4);
    CHECK(b.restore(budgets1) == account_restore_errc::wrong_version);
    CHECK_FALSE(b.contains(std::uint64_t{7}));
    keyed_budgets<> src(8, {usd::from_units(50)}, seed, keyed_budget_reuse::never, 4);
    keyed_reservation<usd_tag> r = src.reserve(std::uint64_t{7}, 0, usd::from_units(2), ns(0));
    REQUIRE(r);
    (void)src.settle(r, usd::from_units(1), ns(0));
    CHECK(b.restore(src.snapshot()) == account_restore_errc::ok);
    CHECK(b.contains(std::uint64_t{7}));
  }
}
