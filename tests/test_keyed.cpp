// keyed_buckets: per-key oracles over random schedules, a flood of new keys
// against a full table, threaded claim/evict races against the bucket bound.
#include "catch_compat.hpp"
#include "keyed_support.hpp"
#include "support.hpp"
#include "account_support.hpp"
#include "tollgate_under_test.hpp"

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace tollgate;
using tgtest::ns;

namespace {

using namespace tgkeyed;

}  // namespace

TEST_CASE("keyed: SipHash-2-4 and SipHash-1-3 give the reference outputs", "[keyed]") {
  // Key 00..0f; message 00..(len-1): the reference implementation's vectors.
  const detail::siphash24 h(0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL);
  unsigned char msg[16];
  for (unsigned i = 0; i < 16; ++i) msg[i] = static_cast<unsigned char>(i);
  CHECK(h.bytes(msg, 0) == 0x726fdb47dd0e0e31ULL);
  CHECK(h.bytes(msg, 1) == 0x74f839c593dc67fdULL);
  CHECK(h.bytes(msg, 8) == 0x93f5f5799a932462ULL);
  CHECK(h.bytes(msg, 15) == 0xa129ca6149be45e5ULL);
  // SipHash-1-3, the same key and messages; and the zero key on no bytes.
  const detail::siphash13 h13(0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL);
  CHECK(h13.bytes(msg, 0) == 0xabac0158050fc4dcULL);
  CHECK(h13.bytes(msg, 1) == 0xc9f49bf37d57ca93ULL);
  CHECK(h13.bytes(msg, 8) == 0x369095118d299a8eULL);
  CHECK(h13.bytes(msg, 15) == 0xd320d86d2a519956ULL);
  CHECK(h13.bytes(msg, 16) == 0xcc4fdd1a7d908b66ULL);
  CHECK(detail::siphash13(0, 0).bytes(nullptr, 0) == 0xd1fba762150c532cULL);
  // word() is bytes() of the little-endian word (its own code path).
  CHECK(h.word(0x0706050403020100ULL) == h.bytes(msg, 8));
  CHECK(h13.word(0x0706050403020100ULL) == h13.bytes(msg, 8));
  tgtest::rng g(tgtest::seed_for(4401));
  for (int i = 0; i < 1000; ++i) {
    const std::uint64_t v = g.next();
    unsigned char b[8];
    for (int j = 0; j < 8; ++j) b[j] = static_cast<unsigned char>(v >> (8 * j));
    INFO("word " << v);
    REQUIRE(h.word(v) == h.bytes(b, 8));
    REQUIRE(h13.word(v) == h13.bytes(b, 8));
  }
  // The keyed tables' hash is SipHash-1-3 under the seed (ids under a
  // derived key); another seed, another function; ids and strings apart.
  const sip_key_hash a(hash_seed{1, 2}), b(hash_seed{1, 3});
  CHECK(a(std::uint64_t{42}) == detail::siphash13(1, 2 ^ 0x6964000000000000ULL).word(42));
  CHECK(a(std::string_view(reinterpret_cast<const char*>(msg), 15)) == detail::siphash13(1, 2).bytes(msg, 15));
  CHECK(a(std::uint64_t{42}) != b(std::uint64_t{42}));
  CHECK(a(std::uint64_t{0x0706050403020100ULL}) != a(std::string_view(reinterpret_cast<const char*>(msg), 8)));
}

TEST_CASE("keyed: bad configurations are refused", "[keyed]") {
  const std::vector<key_class> one{{per_second(10), 5}};
  errc ec = errc::ok;
  keyed_buckets<manual_clock> a(0, one, {}, ns(0), 16, ec);
  CHECK(ec == errc::zero_count);
  CHECK(a.try_acquire(std::uint64_t{1}, 0, 1, ns(0)).status() == keyed_status::bad_class);
  CHECK_FALSE(a.erase(std::uint64_t{1}));
  CHECK_FALSE(a.contains(std::uint64_t{1}));
  keyed_buckets<manual_clock> b(8, {}, {}, ns(0), 16, ec);
  CHECK(ec == errc::zero_count);
  keyed_buckets<manual_clock> c(8, one, {}, ns(0), 0, ec);
  CHECK(ec == errc::zero_count);
  keyed_buckets<manual_clock> d(8, std::vector<key_class>(65, key_class{per_second(1), 1}), {}, ns(0), 4, ec);
  CHECK(ec == errc::too_large);
  keyed_buckets<manual_clock> e(8, {{per_second(10), 0}}, {}, ns(0), 4, ec);
  CHECK(ec == errc::zero_burst);
#if !TOLLGATE_NO_EXCEPTIONS
  CHECK_THROWS_AS(keyed_buckets<manual_clock>(8, {{rate(0, std::chrono::seconds(1)), 1}}, {}, ns(0)), config_error);
#endif
  keyed_buckets<manual_clock> ok(8, one, {}, ns(0), 100, ec);
  CHECK(ec == errc::ok);
  CHECK(ok.window() == 8);
  CHECK(ok.try_acquire(std::uint64_t{1}, 1, 1, ns(0)).status() == keyed_status::bad_class);
  CHECK(ok.try_acquire(std::uint64_t{1}, 0, 6, ns(0)).result().never());
  CHECK(ok.try_acquire(std::uint64_t{1}, 0, 0, ns(0)).admitted());
}

TEST_CASE("keyed: string keys and ids, classes fixed at claim, erase", "[keyed]") {
  keyed_buckets<manual_clock> t(16, {{per_second(1), 2}, {per_second(1), 5}}, seed_from(1), ns(0));
  CHECK(t.try_acquire(std::string_view("alice"), 0, 2, ns(0)).admitted());
  const keyed_result r = t.try_acquire(std::string_view("alice"), 1, 1, ns(0));  // class stays 0
  CHECK(r.status() == keyed_status::limited);
  CHECK(r.result().retry_after() == std::chrono::seconds(1));
  CHECK(t.try_acquire(std::string_view("bob"), 1, 5, ns(0)).admitted());
  CHECK(t.available(std::string_view("alice"), 1, ns(500000000)) == 0);
  CHECK(t.available(std::string_view("carol"), 1, ns(0)) == 5);
  CHECK(t.contains(std::string_view("alice")));
  CHECK(t.erase(std::string_view("alice")));
  CHECK_FALSE(t.contains(std::string_view("alice")));
  CHECK_FALSE(t.erase(std::string_view("alice")));
  CHECK(t.try_acquire(std::string_view("alice"), 1, 5, ns(0)).admitted());  // an explicit reset
  CHECK(t.try_acquire(std::uint64_t{7}, 0, 1, ns(0)).admitted());
  CHECK(t.available(std::uint64_t{7}, 0, ns(0)) == 1);
  CHECK(keyed_buckets<manual_clock>::bytes_per_entry() == 72);
}

// The oracle: one exact continuous bucket per hash group that never forgets
// (an erase refills it). The table must decide exactly as the group's
// bucket does, refuse table_full only for a group whose bucket is full and
// only when at least `window` other groups are not full, and show every
// group that is not full as present.
TEST_CASE("keyed: per-key oracle over random schedules with a small table", "[keyed]") {
  struct cls_def {
    std::uint64_t count, period, burst;
  };
  const cls_def defs[2] = {{1, 1000, 3}, {2, 3000, 5}};
  std::uint64_t total_full = 0, total_claims = 0, total_admitted = 0, total_limited = 0;
  // Twelve schedules, each from its own stream of the project seed.
  for (std::uint64_t stream = 0; stream < 12; ++stream) {
    const std::uint64_t seed = tgtest::seed_for(0xC0FFEE + stream);
    INFO("schedule seed " << seed << " " << tgtest::seed_note());
    tgtest::rng g(seed);
    const std::size_t cap = static_cast<std::size_t>(g.between(2, 16));
    const std::size_t window = static_cast<std::size_t>(g.between(1, cap));
    const std::uint64_t keys = g.between(8, 60);
    INFO("capacity " << cap << " window " << window << " keys " << keys);
    keyed_buckets<manual_clock, pair_hash> t(
        cap, {{rate(1, ns(1000)), 3}, {rate(2, ns(3000)), 5}}, hash_seed{g.next(), 0}, ns(0), window);
    std::vector<tgtest::rational_bucket> oracle;
    for (std::uint64_t grp = 0; grp < (keys + 1) / 2; ++grp) {
      const cls_def& d = defs[grp % 2];
      oracle.emplace_back(d.count, d.period, d.burst, 0);
    }
    auto full = [&](std::uint64_t grp, std::int64_t now) {
      return oracle[grp].available(now) == oracle[grp].burst && oracle[grp].scaled == oracle[grp].cap();
    };
    std::int64_t now = 0;
    for (int step = 0; step < 4000; ++step) {
      now += static_cast<std::int64_t>(g.between(0, 1500));
      const std::uint64_t k = g.between(0, keys - 1), grp = k >> 1;
      const std::size_t cls = static_cast<std::size_t>(grp % 2);
      INFO("step " << step << " now " << now << " key " << k);
      if (g.chance(4)) {
        const bool had = t.contains(k);
        if (!full(grp, now)) CHECK(had);
        CHECK(t.erase(k) == had);
        CHECK_FALSE(t.contains(k));
        oracle[grp] = tgtest::rational_bucket(defs[cls].count, defs[cls].period, defs[cls].burst, now);
        continue;
      }
      const std::uint64_t n = g.between(0, 6);
      const bool present = t.contains(k);
      const bool was_full = full(grp, now);
      if (!was_full) REQUIRE(present);  // lossless: a bucket that owes keeps its entry
      std::size_t not_full_others = 0;
      for (std::uint64_t o = 0; o < oracle.size(); ++o) not_full_others += (o != grp && !full(o, now)) ? 1 : 0;
      const std::uint64_t wait = oracle[grp].wait_for(n, now);
      const keyed_result r = t.try_acquire(k, cls, n, ns(now));
      if (r.table_full()) {
        ++total_full;
        CHECK(n > 0);
        CHECK(was_full);
        CHECK_FALSE(present);
        CHECK(not_full_others >= window);
        CHECK_FALSE(t.contains(k));
        continue;
      }
      if (n > defs[cls].burst) {
        CHECK(r.status() == keyed_status::limited);
        CHECK(r.result().never());
      } else if (oracle[grp].try_take(n, now)) {
        ++total_admitted;
        CHECK(r.status() == keyed_status::admitted);
        if (!present && n > 0) ++total_claims;
      } else {
        ++total_limited;
        CHECK(r.status() == keyed_status::limited);
        CHECK(r.result().later());
        CHECK(r.result().retry_after() == ns(static_cast<std::int64_t>(wait)));
      }
      if (step % 97 == 0) {  // every group's peek agrees with its oracle
        for (std::uint64_t o = 0; o < oracle.size(); ++o) {
          CHECK(t.available(o * 2, static_cast<std::size_t>(o % 2), ns(now)) == oracle[o].available(now));
        }
      }
    }
  }
  // The schedules reach every case: refusals of both kinds and reclaims.
  CHECK(total_full > 100);
  CHECK(total_limited > 100);
  CHECK(total_admitted > 1000);
  CHECK(total_claims > 500);
}

TEST_CASE("keyed: a flood of new keys changes no live entry", "[keyed]") {
  const std::size_t cap = 1024;
  // 1 per minute, burst 2: an entry that took a unit owes for a minute.
  keyed_buckets<manual_clock> t(cap, {{per_minute(1), 2}}, seed_from(2), ns(0));
  std::vector<std::uint64_t> held;
  for (std::uint64_t k = 0; held.size() < cap && k < 2000000; ++k) {
    const keyed_result r = t.try_acquire(k, 0, 1, ns(0));
    if (r.admitted()) held.push_back(k);
    else REQUIRE(r.table_full());
  }
  REQUIRE(held.size() == cap);  // every entry live
  std::uint64_t full_refusals = 0, right_wait = 0;
  const std::uint64_t flood = tgtest::sized(1000000);
  for (std::uint64_t i = 0; i < flood; ++i) {
    const keyed_result r = t.try_acquire((std::uint64_t{1} << 40) + i, 0, 1, ns(1000000000));
    full_refusals += r.table_full() ? 1 : 0;
    // The wait is until the soonest entry of its window is full again: every
    // entry took its unit at 0, so each is full at 60 s.
    right_wait += r.result().retry_after() == std::chrono::seconds(59) ? 1 : 0;
  }
  CHECK(full_refusals == flood);
  CHECK(right_wait == flood);
  // Each held key still owes exactly what it owed: one more unit, then 59 s.
  for (std::uint64_t k : held) {
    REQUIRE(t.available(k, 0, ns(1000000000)) == 1);
    REQUIRE(t.try_acquire(k, 0, 1, ns(1000000000)).admitted());
    const keyed_result r = t.try_acquire(k, 0, 1, ns(1000000000));
    REQUIRE(r.status() == keyed_status::limited);
    REQUIRE(r.result().retry_after() == std::chrono::seconds(59));
  }
  // Two minutes on every entry is full: new keys take them over.
  CHECK(t.try_acquire((std::uint64_t{1} << 41), 0, 1, ns(180000000000)).admitted());
}

TEST_CASE("keyed: window occupancy (prints the table_full rate at a load)", "[keyed]") {
  const std::size_t cap = 4096;
  for (double load : {0.5, 0.75, 0.9}) {
    keyed_buckets<manual_clock> t(cap, {{per_minute(1), 1}}, seed_from(3), ns(0));
    std::size_t live = 0;
    std::uint64_t k = 0;
    while (static_cast<double>(live) < load * static_cast<double>(cap)) live += t.try_acquire(k++, 0, 1, ns(0)) ? 1 : 0;
    std::uint64_t refused = 0;
    const std::uint64_t probes = 20000;
    for (std::uint64_t i = 0; i < probes; ++i) {
      const std::uint64_t key = (std::uint64_t{1} << 50) + i;
      const keyed_result r = t.try_acquire(key, 0, 1, ns(0));
      if (r.table_full()) ++refused;
      else CHECK(t.erase(key));
    }
    WARN("load " << load << ": table_full for " << refused << " of " << probes << " new keys (window "
                 << t.window() << ", " << k << " keys to fill)");
    CHECK(refused < probes);
  }
}

// Threads claim, reclaim and admit on overlapping keys of a small table,
// drawing their times from one shared clock; afterwards every key's
// admissions must fit its bucket bound B + t / T over every interval.
TEST_CASE("keyed: threaded claim/evict races keep every key within its bound", "[keyed]") {
  const std::uint64_t period = 10000, burst = 4;
  keyed_buckets<manual_clock> t(64, {{rate(1, ns(static_cast<std::int64_t>(period))), burst}}, seed_from(4), ns(0), 8);
  std::atomic<std::int64_t> clock{0};  // relaxed: a counter of test time only
  const int threads = 4;
  const std::uint64_t ops = 40000 * tgtest::stress_factor();
  struct event {
    std::uint64_t key;
    std::int64_t at;
    std::uint64_t n;
  };
  std::vector<std::vector<event>> logs(threads);
  std::vector<std::uint64_t> fulls(threads, 0);
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      tgtest::rng g(tgtest::seed_for(100 + static_cast<std::uint64_t>(i)));
      for (std::uint64_t j = 0; j < ops; ++j) {
        const std::int64_t now = clock.fetch_add(static_cast<std::int64_t>(g.between(1, 40)), std::memory_order_relaxed);
        // Threads favour the same few keys at the same time: same-key claims race.
        const std::uint64_t key = g.chance(70) ? ((static_cast<std::uint64_t>(now) >> 13) % 300) * 3 + g.between(0, 2)
                                               : g.between(0, 899);
        const std::uint64_t n = g.between(1, 2);
        const keyed_result r = t.try_acquire(key, 0, n, ns(now));
        if (r.admitted()) logs[static_cast<std::size_t>(i)].push_back({key, now, n});
        if (r.table_full()) ++fulls[static_cast<std::size_t>(i)];
      }
    });
  }
  for (std::thread& th : pool) th.join();
  INFO(tgtest::seed_note());
  std::map<std::uint64_t, std::vector<std::pair<std::int64_t, std::uint64_t>>> per_key;
  std::uint64_t admitted = 0, full = 0;
  for (const auto& log : logs) {
    for (const event& e : log) {
      per_key[e.key].emplace_back(e.at, e.n);
      admitted += e.n;
    }
  }
  for (std::uint64_t f : fulls) full += f;
  std::uint64_t worst = 0;
  for (auto& kv : per_key) {
    const std::uint64_t x = tgtest::bucket_bound_excess(kv.second, 1, period, burst);
    if (x > worst) worst = x;
  }
  CHECK(worst == 0);
  CHECK(per_key.size() > 64);  // more keys than entries were served: entries were reclaimed
  CHECK(admitted > 1000);
  CHECK(full > 0);
}

namespace {
// Every key hashes to itself: small keys all have home 0.
struct self_hash {
  explicit self_hash(hash_seed) {}
  std::uint64_t operator()(std::uint64_t id) const { return id; }
  std::uint64_t operator()(std::string_view s) const { return s.size(); }
};
}  // namespace

// A key evicted at 2 s (full then) that comes back with an earlier `now`
// owes what its bucket owed then, not nothing: its new entry starts at the
// latest time any claim has seen.
TEST_CASE("keyed: a key evicted and back with an earlier now gets no extra units", "[keyed]") {
  const std::int64_t s = 1000000000;
  keyed_buckets<manual_clock, self_hash> t(2, {{rate(1, ns(s)), 2}}, hash_seed{}, ns(0), 2);
  REQUIRE(t.try_acquire(std::uint64_t{1}, 0, 2, ns(0)).admitted());      // key 1 owes until 2 s
  REQUIRE(t.try_acquire(std::uint64_t{2}, 0, 1, ns(0)).admitted());      // key 2 in entry 1, until 1 s
  REQUIRE(t.try_acquire(std::uint64_t{3}, 0, 2, ns(2 * s)).admitted());  // evicts key 1 (full at 2 s)
  CHECK_FALSE(t.contains(std::uint64_t{1}));
  CHECK(t.contains(std::uint64_t{3}));
  // Key 1 at 1 s: its old bucket (TAT 2 s) held 1 unit at 1 s, so it gets 1,
  // then waits 1 s; a fresh bucket would have given 2.
  CHECK(t.try_acquire(std::uint64_t{1}, 0, 1, ns(s)).admitted());  // evicts key 2 (full at 1 s)
  const keyed_result r = t.try_acquire(std::uint64_t{1}, 0, 1, ns(s));
  CHECK(r.status() == keyed_status::limited);
  CHECK(r.result().retry_after() == ns(s));
  // Nothing else changed: key 3 took its burst at 2 s.
  CHECK(t.available(std::uint64_t{3}, 0, ns(2 * s)) == 0);
  CHECK(t.try_acquire(std::uint64_t{9}, 0, 1, ns(2 * s)).table_full());
}

// A new key takes an unused entry (free or empty) of its window before
// evicting a live one that is full again: the eviction would lose nothing,
// but it would cost the evicted key a claim on its next call, and keys
// cycling through a table with room would keep trading entries.
TEST_CASE("keyed: a claim takes an unused entry before a reusable live one", "[keyed]") {
  const std::int64_t s = 1000000000;
  keyed_buckets<manual_clock, self_hash> t(4, {{rate(1, ns(s)), 2}}, hash_seed{}, ns(0), 4);
  for (std::uint64_t k = 1; k <= 3; ++k) REQUIRE(t.try_acquire(k, 0, 1, ns(0)).admitted());  // entries 0..2
  REQUIRE(t.erase(std::uint64_t{2}));                                                     // entry 1 free
  // At 5 s keys 1 and 3 are full again (reusable), entry 1 is free, 3 empty.
  REQUIRE(t.try_acquire(std::uint64_t{4}, 0, 1, ns(5 * s)).admitted());
  CHECK(t.contains(std::uint64_t{1}));
  CHECK(t.contains(std::uint64_t{3}));
  REQUIRE(t.try_acquire(std::uint64_t{5}, 0, 1, ns(5 * s)).admitted());
  CHECK(t.contains(std::uint64_t{1}));
  CHECK(t.contains(std::uint64_t{3}));
  // No unused entry left: the first reusable one (key 1's) is taken.
  REQUIRE(t.try_acquire(std::uint64_t{6}, 0, 1, ns(5 * s)).admitted());
  CHECK_FALSE(t.contains(std::uint64_t{1}));
  CHECK(t.contains(std::uint64_t{3}));
  CHECK(t.contains(std::uint64_t{4}));
  CHECK(t.contains(std::uint64_t{5}));
  CHECK(t.contains(std::uint64_t{6}));
  // Keys 4, 5, 6 owe until 6 s and key 3 is reusable: key 7 takes key 3's.
  REQUIRE(t.try_acquire(std::uint64_t{7}, 0, 1, ns(5 * s)).admitted());
  CHECK_FALSE(t.contains(std::uint64_t{3}));
  CHECK(t.try_acquire(std::uint64_t{8}, 0, 1, ns(5 * s)).table_full());
}

TEST_CASE("keyed: refunds follow the ticket rule", "[keyed]") {
  const std::int64_t s = 1000000000;
  keyed_buckets<manual_clock> t(8, {{rate(1, ns(s)), 4}, {rate(1, ns(s)), 4}}, seed_from(5), ns(0));
  keyed_ticket a, b;
  REQUIRE(t.try_acquire(std::uint64_t{1}, 0, 3, ns(0), a).admitted());
  CHECK(a.units == 3);
  CHECK(t.refund(std::uint64_t{2}, a, 3, ns(0)) == 0);  // another key's ticket gives nothing
  CHECK(t.refund(std::uint64_t{1}, a, 1, ns(0)) == 1);
  CHECK(t.available(std::uint64_t{1}, 0, ns(0)) == 2);
  // At 1.5 s half of one of its own intervals is left: no whole unit.
  CHECK(t.refund(std::uint64_t{1}, a, 5, ns(s / 2 * 3)) == 0);
  REQUIRE(t.try_acquire(std::uint64_t{1}, 0, 2, ns(2 * s), b).admitted());  // TAT 4 s
  CHECK(t.refund(std::uint64_t{1}, b, 5, ns(2 * s + s / 2)) == 1);           // 1.5 s of its 2 left
  CHECK(b.units == 1);
  CHECK(t.refund(std::uint64_t{1}, b, 5, ns(2 * s + s / 2)) == 0);
  keyed_ticket none;
  CHECK(t.refund(std::uint64_t{1}, none, 5, ns(0)) == 0);
  // A refusal leaves the ticket empty.
  keyed_ticket c;
  CHECK_FALSE(t.try_acquire(std::uint64_t{1}, 0, 4, ns(2 * s + s / 2), c).admitted());
  CHECK(c.units == 0);
}

// The account allows 3 requests a minute; the key 2 units a second. Each
// side's refusal leaves the other as it was.
TEST_CASE("keyed: admission under the account is all or nothing", "[keyed]") {
  account_config c;
  c.concurrency = limit(8);
  c.rpm = limit(3);
  c.tpm = limit(100000);
  c.tpd = limit(1000000);
  c.model = server_model::sliding_log;
  c.max_request_tokens = 4000;
  account<manual_clock> acc(c, ns(0));
  keyed_buckets<manual_clock> keys(8, {{per_second(2), 2}}, seed_from(6), ns(0));
  const request r = tgtest::req(100, 100);
  auto x = admit_keyed(keys, acc, std::string_view("alice"), 0, 1, r, ns(0));
  REQUIRE(x.admitted());
  auto y = admit_keyed(keys, acc, std::string_view("alice"), 0, 1, r, ns(0));
  REQUIRE(y.admitted());
  // The key refuses: the account is not asked and keeps its third request.
  auto z = admit_keyed(keys, acc, std::string_view("alice"), 0, 1, r, ns(0));
  CHECK_FALSE(z.admitted());
  CHECK(z.key.status() == keyed_status::limited);
  CHECK_FALSE(z.account_asked);
  auto w = admit_keyed(keys, acc, std::string_view("bob"), 0, 1, r, ns(0));
  REQUIRE(w.admitted());  // the account's third
  // The account refuses (RPM): bob's unit comes back.
  CHECK(keys.available(std::string_view("bob"), 0, ns(0)) == 1);
  auto v = admit_keyed(keys, acc, std::string_view("bob"), 0, 1, r, ns(0));
  CHECK_FALSE(v.admitted());
  CHECK(v.account_asked);
  CHECK(v.account.refused.has(dimension::rpm));
  CHECK(v.given_back == 1);
  CHECK(keys.available(std::string_view("bob"), 0, ns(0)) == 1);
  // A new key refused by the account claimed a full entry and holds nothing.
  auto u = admit_keyed(keys, acc, std::string_view("carol"), 0, 2, r, ns(0));
  CHECK_FALSE(u.admitted());
  CHECK(u.given_back == 2);
  CHECK(keys.available(std::string_view("carol"), 0, ns(0)) == 2);
}

namespace {
struct keyed_clock_tag {};
using keyed_clock = basic_manual_clock<keyed_clock_tag>;
}  // namespace

// Without an origin the table starts at Clock::now(); times before it count
// as it, and the overloads without `now` read the clock.
TEST_CASE("keyed: the origin defaults to the clock, and the clock overloads read it", "[keyed]") {
  const std::int64_t s = 1000000000;
  keyed_clock::set(ns(5 * s));
  keyed_buckets<keyed_clock> t(8, {{rate(1, ns(s)), 2}}, seed_from(7));
  CHECK(t.try_acquire(std::string_view("a"), 0, 2).admitted());  // at 5 s
  const keyed_result r = t.try_acquire(std::string_view("a"), 0, 1, ns(0));  // before the origin: decided at 5 s
  CHECK(r.status() == keyed_status::limited);
  CHECK(r.result().retry_after() == ns(6 * s));  // the wait from `now`: admissible at 6 s
  keyed_clock::set(ns(6 * s));
  CHECK(t.try_acquire(std::string_view("a"), 0).admitted());
  // More than the burst: never, and a new key takes no entry for it.
  const keyed_result big = t.try_acquire(std::uint64_t{3}, 0, 3);
  CHECK(big.result().never());
  CHECK_FALSE(t.contains(std::uint64_t{3}));
}

// A `now` before the origin is decided as the origin, and its wait is from
// `now`: refused 1 ns before it, admitted at it (it was counted from the origin).
TEST_CASE("keyed: waits for a now before the origin are exact from that now", "[keyed]") {
  const std::int64_t sec = 1000000000, origin = 10 * sec;
  for (const std::int64_t asked : {5 * sec, 9 * sec, origin - 1, -7 * sec}) {
    INFO("asked at " << asked);
    auto table = [&] {
      auto t = std::make_unique<keyed_buckets<manual_clock>>(
          4, std::vector<key_class>{{rate(1, ns(3 * sec)), 1}}, hash_seed{}, ns(origin), 4);
      REQUIRE(t->try_acquire(std::uint64_t{1}, 0, 1, ns(origin + sec / 2)).admitted());
      return t;
    };
    auto t = table();
    const keyed_result r = t->try_acquire(std::uint64_t{1}, 0, 1, ns(asked));
    REQUIRE(r.result().later());
    const std::int64_t wait = r.result().retry_after().count();
    CHECK(asked + wait == origin + sec / 2 + 3 * sec);  // one unit per 3 s after the one at 10.5 s
    CHECK_FALSE(t->try_acquire(std::uint64_t{1}, 0, 1, ns(asked + wait - 1)).admitted());
    CHECK(table()->try_acquire(std::uint64_t{1}, 0, 1, ns(asked + wait)).admitted());
  }
}
