// The interleaving checker on keyed_buckets: claims of one new key racing
// each other, and an eviction racing an admission on the entry it evicts.
// Every execution is checked against each key's bucket bound.
#include "../catch_compat.hpp"
#include "explore.hpp"

#include <tollgate/keyed_buckets.hpp>
#include <tollgate/keyed_budgets.hpp>
#include <tollgate/keyed_permits.hpp>
#include <tollgate/keyed_windows.hpp>
#include <tollgate/keyed_overflow.hpp>
#include <tollgate/token_bucket.hpp>

#include <initializer_list>
#include <map>

using namespace tollgate;
using tgcheck::bounds;
using tgcheck::execution;
using tgcheck::scheduler;
using tgtest::ns;

namespace {

constexpr std::int64_t sec = 1000000000;

// Every key hashes to itself: small keys all have home 0, so every claim
// contends for the same few entries.
struct self_hash {
  explicit self_hash(hash_seed) {}
  std::uint64_t operator()(std::uint64_t id) const { return id; }
  std::uint64_t operator()(std::string_view s) const { return s.size(); }
};

struct keyed_op {
  std::uint64_t key;
  std::uint64_t n;  // 0: erase the key
  std::int64_t at;
};
using keyed_script = std::vector<keyed_op>;

// Oracle: for each key, its admissions over every interval t are at most
// B + t / T (1 per second, burst 2), whatever entries they landed on.
struct keyed_exec : execution {
  keyed_buckets<manual_clock, self_hash> t;
  std::map<std::uint64_t, std::vector<std::pair<std::int64_t, std::uint64_t>>> log;
  keyed_exec(scheduler& s, std::size_t cap, const keyed_script& setup, const std::vector<keyed_script>& scripts)
      : t(cap, {{rate(1, ns(sec)), 2}}, hash_seed{}, ns(0), cap) {
    for (const keyed_op& op : setup) {
      if (t.try_acquire(op.key, 0, op.n, ns(op.at)).admitted()) log[op.key].emplace_back(op.at, op.n);
    }
    for (const keyed_script& sc : scripts)
      bodies.push_back([this, &s, sc] {
        for (const keyed_op& op : sc) {
          if (op.n == 0) {
            const bool had = t.erase(op.key);
            s.note("erase(key " + std::to_string(op.key) + "): " + (had ? "had an entry" : "none"));
            if (had) ++erased[op.key];
            continue;
          }
          const keyed_result r = t.try_acquire(op.key, 0, op.n, ns(op.at));
          s.note("try_acquire(key " + std::to_string(op.key) + ", " + std::to_string(op.n) + ", " +
                 std::to_string(op.at) + "): " + to_string(r.status()));
          if (r.admitted()) log[op.key].emplace_back(op.at, op.n);
        }
      });
  }
  std::map<std::uint64_t, std::uint64_t> erased;  // erases that found the key
  std::string check(const scheduler::outcome&) override {
    for (const auto& kv : log) {
      // Each erase may hand the key one more burst (it forgets what it owed).
      const std::uint64_t x = tgtest::bucket_bound_excess(kv.second, 1, sec, 2);
      const auto er = erased.find(kv.first);
      if (x > (er == erased.end() ? 0 : 2 * er->second))
        return "key " + std::to_string(kv.first) + " admitted " + std::to_string(x) + " units over B + t / T";
    }
    return "";
  }
};

tgcheck::factory keyed_factory(std::size_t cap, keyed_script setup, std::vector<keyed_script> scripts) {
  return [=](scheduler& s) -> std::unique_ptr<execution> {
    return std::make_unique<keyed_exec>(s, cap, setup, scripts);
  };
}

std::uint64_t project_seed() { return tgtest::seeds(1).front(); }

}  // namespace

// Two threads claim key 5 at once, each asking for the whole burst: if both
// published an entry, 4 units would be admitted at one instant. A third
// entry is held by key 6 (live), so the claims race over entries 1 and 2.
TEST_CASE("checker: keyed_buckets, two claims of one new key", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = tgcheck::large() ? 4 : 3;
  const auto r = tgcheck::explore_exhaustive(
      s, "keyed claim/claim of one key, cap 3", 2, b,
      keyed_factory(3, {{6, 1, 0}}, {{{5, 2, 0}, {5, 1, 0}}, {{5, 2, 0}, {5, 1, 0}}}));
  CHECK(r.complete);
  CHECK(r.failure == "");
}

// Key 1 took its burst at 0 and is full again at 2 s; key 6 took its burst
// at 1 s and owes until 3 s, so the table has no unused entry and key 2's
// claim at 2 s must evict key 1 (a claim takes an unused entry first), while
// another thread admits on key 1 at 2 s (its burst, then more). Erasing key
// 6 then frees an entry for key 1 to claim again. An eviction that lands
// after that admission would lose key 1's state, and its next admissions
// would start from a fresh bucket.
TEST_CASE("checker: keyed_buckets, eviction racing an admission on the evicted entry", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = tgcheck::large() ? 4 : 3;
  const auto r = tgcheck::explore_exhaustive(
      s, "keyed evict/admit, cap 2", 2, b,
      keyed_factory(2, {{1, 2, 0}, {6, 2, sec}},
                    {{{1, 2, 2 * sec}, {1, 2, 2 * sec}}, {{2, 1, 2 * sec}, {6, 0, 2 * sec}}}));
  CHECK(r.complete);
  CHECK(r.failure == "");
}

// A probe passes an entry whose hint names another key (keyed/claim.hpp,
// may_hold) while a claim rewrites that hint. Key 1 is full again at 2 s in
// entry 0 (hint 1) and key 2 owes in entry 1, so key 3's first claim at 2 s
// evicts key 1 from entry 0 while the other thread admits on key 3, and
// either thread may stop forever at any step. The claimer writes the hint
// before its publish; written after it, a claimer stopped between the two
// would leave the other passing entry 0 for ever (its claims find key 3
// live and retry: no progress).
TEST_CASE("checker: keyed_buckets, a probe passing a hint the key's claim rewrites", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = tgcheck::large() ? 4 : 3;
  b.crashes = 1;
  const auto r = tgcheck::explore_exhaustive(
      s, "keyed hint/claim, cap 2, a crash", 2, b,
      keyed_factory(2, {{1, 2, 0}, {2, 2, sec}}, {{{3, 2, 2 * sec}}, {{3, 1, 2 * sec}, {3, 1, 2 * sec}}}));
  CHECK(r.complete);
  CHECK(r.failure == "");
}

// Three threads, claims, evictions and admissions on three keys over two
// entries, random schedules with a crash (a thread stopped forever must not
// stop the others: no waiting on claims).
TEST_CASE("checker: keyed_buckets, random claim/evict schedules", "[checker]") {
  scheduler s(3);
  bounds b;
  b.preemptions = 4;
  b.crashes = 1;
  const std::vector<keyed_script> scripts = {
      {{1, 2, 0}, {2, 1, sec}, {1, 1, 2 * sec}, {3, 2, 2 * sec}},
      {{2, 2, 0}, {1, 1, 2 * sec}, {3, 1, 2 * sec}, {1, 2, 3 * sec}},
      {{3, 1, 0}, {1, 2, sec}, {2, 2, 2 * sec}, {1, 1, 4 * sec}}};
  const auto r = tgcheck::explore_random(s, "keyed 3 keys, 2 entries, 3x4 ops", 3, b, keyed_factory(2, {}, scripts),
                                         tgcheck::large() ? 200000 : 10000, project_seed() + 191, 5, 300, 30);
  CHECK(r.failure == "");
}

// erase racing admissions on the key it erases, in a table of one entry: no
// erase waits for an admission in progress (each thread finishes within the
// step bound), and the key that takes the entry afterwards keeps its exact
// bound.
TEST_CASE("checker: keyed_buckets, erase racing admissions", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = tgcheck::large() ? 4 : 3;
  const auto r = tgcheck::explore_exhaustive(
      s, "keyed erase/admit, cap 1", 2, b,
      keyed_factory(1, {{1, 1, 0}}, {{{1, 1, 0}, {1, 1, 0}, {1, 2, 0}}, {{1, 0, 0}, {2, 2, 0}, {2, 1, 0}}}));
  CHECK(r.complete);
  CHECK(r.failure == "");
}

namespace {

// Thread A takes key 5's burst with a ticket and gives it back (as
// admit_keyed does when the account refuses); thread B erases key 5 and
// takes it again, then asks for more. Oracle: for each entry incarnation
// (the ticket's slot and claim generation), the units admitted on it net
// of what its own tickets gave back are at most the burst, 2, all at one
// instant. A refund landing in B's new entry lets B take 4 there.
struct refund_erase_exec : execution {
  keyed_buckets<manual_clock, self_hash> t{1, {{rate(1, ns(sec)), 2}}, hash_seed{}, ns(0), 1};
  std::map<std::pair<std::size_t, std::uint64_t>, std::int64_t> net;
  explicit refund_erase_exec(scheduler& s) {
    bodies.push_back([this, &s] {
      keyed_ticket k;
      if (!t.try_acquire(std::uint64_t{5}, 0, 2, ns(0), k).admitted()) return;
      net[{k.slot, k.claim}] += 2;
      const std::uint64_t got = t.refund(std::uint64_t{5}, k, 2, ns(0));
      s.note("A gave back " + std::to_string(got));
      net[{k.slot, k.claim}] -= static_cast<std::int64_t>(got);
    });
    bodies.push_back([this, &s] {
      s.note(std::string("B erase: ") + (t.erase(std::uint64_t{5}) ? "had" : "none"));
      for (const std::uint64_t n : std::initializer_list<std::uint64_t>{2, 1, 1}) {
        keyed_ticket k;
        if (t.try_acquire(std::uint64_t{5}, 0, n, ns(0), k).admitted()) net[{k.slot, k.claim}] += static_cast<std::int64_t>(n);
      }
    });
  }
  std::string check(const scheduler::outcome&) override {
    for (const auto& kv : net) {
      if (kv.second > 2)
        return "entry incarnation " + std::to_string(kv.first.second) + " admitted " + std::to_string(kv.second) +
               " units net at one instant (burst 2)";
    }
    return "";
  }
};

}  // namespace

TEST_CASE("checker: keyed_buckets, a refund racing erase and the key's new claim", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = tgcheck::large() ? 4 : 3;
  const auto r = tgcheck::explore_exhaustive(s, "keyed refund/erase/reclaim, cap 1", 2, b,
                                             [](scheduler& sc) -> std::unique_ptr<execution> {
                                               return std::make_unique<refund_erase_exec>(sc);
                                             });
  CHECK(r.complete);
  CHECK(r.failure == "");
}

namespace {

// A refund racing the eviction of the entry it gives back into (admissions
// do not pin, so an evictor seals the full bucket and then claims it; the
// refund's pin fails that claim and the refund must replace the seal, not
// subtract from it). Key 1 took its burst at 0 (ticket kept) and is full
// at 2.5 s; key 6 owes until 3 s, so key 2's claim at 2.5 s must evict key
// 1. Thread A gives key 1's units back at a stale 0 and takes them again,
// then more at 2.5 s; thread B claims key 2, erases key 6 and takes key 1 at
// 2.5 s. Oracle: key 1's admissions net of what its tickets gave back keep
// B + t / T but for the refund's stated skew (a `now` 2.5 s behind may give
// back ceil(2.5) = 3 units early), and every bucket is whole afterwards
// (a refund that subtracted from a seal would leave key 1 refused for
// ever: it must be full again by 100 s).
struct refund_evict_exec : execution {
  keyed_buckets<manual_clock, self_hash> t{2, {{rate(1, ns(sec)), 2}}, hash_seed{}, ns(0), 2};
  std::vector<std::pair<std::int64_t, std::uint64_t>> log;  // key 1, net
  keyed_ticket first;
  explicit refund_evict_exec(scheduler& s) {
    if (t.try_acquire(std::uint64_t{1}, 0, 2, ns(0), first).admitted()) log.emplace_back(0, 2);
    (void)t.try_acquire(std::uint64_t{6}, 0, 2, ns(sec));
    bodies.push_back([this, &s] {
      const std::uint64_t got = t.refund(std::uint64_t{1}, first, 2, ns(0));
      s.note("A gave back " + std::to_string(got));
      log[0].second -= got;
      take(s, "A", 0);
      take(s, "A", 5 * sec / 2);
    });
    bodies.push_back([this, &s] {
      s.note(std::string("B claims key 2: ") + to_string(t.try_acquire(std::uint64_t{2}, 0, 1, ns(5 * sec / 2)).status()));
      (void)t.erase(std::uint64_t{6});
      take(s, "B", 5 * sec / 2);
    });
  }
  void take(scheduler& s, const char* who, std::int64_t at) {
    const keyed_result r = t.try_acquire(std::uint64_t{1}, 0, 2, ns(at));
    s.note(std::string(who) + " takes 2 of key 1 at " + std::to_string(at) + ": " + to_string(r.status()));
    if (r.admitted()) log.emplace_back(at, 2);
  }
  std::string check(const scheduler::outcome&) override {
    const std::uint64_t x = tgtest::bucket_bound_excess(log, 1, sec, 2);
    if (x > 3) return "key 1 admitted " + std::to_string(x) + " units over B + t / T, net of refunds (skew allows 3)";
    for (const std::uint64_t k : {1, 2, 6})
      if (t.available(k, 0, ns(100 * sec)) != 2) return "key " + std::to_string(k) + " is not full again at 100 s";
    return "";
  }
};

}  // namespace

TEST_CASE("checker: keyed_buckets, a refund racing the eviction of its entry", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = tgcheck::large() ? 4 : 3;
  const auto r = tgcheck::explore_exhaustive(s, "keyed refund/evict, cap 2", 2, b,
                                             [](scheduler& sc) -> std::unique_ptr<execution> {
                                               return std::make_unique<refund_evict_exec>(sc);
                                             });
  CHECK(r.complete);
  CHECK(r.failure == "");
}

namespace {

// A snapshot scanning the table while key 1 is erased from entry 0 and
// claimed again in entry 1 (key 2 took entry 0): the scan can meet key 1
// twice. The bytes must restore (a key in two entries is refused as
// out_of_range), keeping at least the debt key 1 has at the end.
struct snapshot_exec : execution {
  keyed_buckets<manual_clock, self_hash> t{3, {{rate(1, ns(sec)), 2}}, hash_seed{}, ns(0), 3};
  std::string bytes;
  explicit snapshot_exec(scheduler& s) {
    (void)t.try_acquire(std::uint64_t{1}, 0, 1, ns(0));  // entry 0, owes 1 s
    bodies.push_back([this, &s] {
      bytes = t.snapshot(ns(0), ns(0));
      s.note("snapshot of " + std::to_string(bytes.size()) + " bytes");
    });
    bodies.push_back([this] {
      (void)t.erase(std::uint64_t{1});
      (void)t.try_acquire(std::uint64_t{2}, 0, 1, ns(0));
      (void)t.try_acquire(std::uint64_t{1}, 0, 2, ns(0));
    });
  }
  std::string check(const scheduler::outcome&) override {
    keyed_buckets<manual_clock, self_hash> r{3, {{rate(1, ns(sec)), 2}}, hash_seed{}, ns(0), 3};
    const account_restore_errc e = r.restore(bytes, ns(0), ns(0));
    if (e != account_restore_errc::ok) return "the snapshot does not restore: code " + std::to_string(static_cast<int>(e));
    return "";
  }
};

}  // namespace

TEST_CASE("checker: keyed_buckets, a snapshot racing erase and the key's new claim", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = tgcheck::large() ? 4 : 3;
  const auto r = tgcheck::explore_exhaustive(s, "keyed snapshot/erase/reclaim, cap 3", 2, b,
                                             [](scheduler& sc) -> std::unique_ptr<execution> {
                                               return std::make_unique<snapshot_exec>(sc);
                                             });
  CHECK(r.complete);
  CHECK(r.failure == "");
}

namespace {

// A snapshot racing the eviction of a full bucket (sealed, then claimed):
// the snapshot must not take a seal for a debt (the restore would refuse
// it as out of range), and what it keeps restores. Key 1 is full at 2.5 s,
// key 6 owes until 3 s; key 2's claim at 2.5 s evicts key 1 while the
// other thread snapshots at 2.5 s, then takes key 2 again.
struct snapshot_evict_exec : execution {
  keyed_buckets<manual_clock, self_hash> t{2, {{rate(1, ns(sec)), 2}}, hash_seed{}, ns(0), 2};
  std::string bytes;
  explicit snapshot_evict_exec(scheduler& s) {
    (void)t.try_acquire(std::uint64_t{1}, 0, 2, ns(0));
    (void)t.try_acquire(std::uint64_t{6}, 0, 2, ns(sec));
    bodies.push_back([this, &s] {
      bytes = t.snapshot(ns(5 * sec / 2), ns(0));
      s.note("snapshot of " + std::to_string(bytes.size()) + " bytes");
    });
    bodies.push_back([this, &s] {
      s.note(std::string("key 2: ") + to_string(t.try_acquire(std::uint64_t{2}, 0, 1, ns(5 * sec / 2)).status()));
      (void)t.try_acquire(std::uint64_t{2}, 0, 1, ns(5 * sec / 2));
    });
  }
  std::string check(const scheduler::outcome&) override {
    keyed_buckets<manual_clock, self_hash> r{2, {{rate(1, ns(sec)), 2}}, hash_seed{}, ns(0), 2};
    const account_restore_errc e = r.restore(bytes, ns(5 * sec / 2), ns(0));
    if (e != account_restore_errc::ok) return "the snapshot does not restore: code " + std::to_string(static_cast<int>(e));
    if (r.available(std::uint64_t{6}, 0, ns(5 * sec / 2)) > 1) return "key 6 lost its debt (half a second: 1 unit left)";
    return "";
  }
};

}  // namespace

TEST_CASE("checker: keyed_buckets, a snapshot racing the eviction of a full bucket", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = tgcheck::large() ? 4 : 3;
  const auto r = tgcheck::explore_exhaustive(s, "keyed snapshot/evict, cap 2", 2, b,
                                             [](scheduler& sc) -> std::unique_ptr<execution> {
                                               return std::make_unique<snapshot_evict_exec>(sc);
                                             });
  CHECK(r.complete);
  CHECK(r.failure == "");
}

namespace {

// Keys 2 and 3 race for the one entry key 1 leaves free (table of 2, key 1
// live); the loser goes to the overflow bucket (burst 2). Oracle: each
// key's own admissions and the overflow's, all at one instant, are at most
// a burst each.
struct overflow_exec : execution {
  keyed_buckets<manual_clock, self_hash> t{2, {{rate(1, ns(sec)), 2}}, hash_seed{}, ns(0), 2};
  token_bucket<manual_clock> spill{rate(1, ns(sec)), 2, ns(0)};
  std::map<std::uint64_t, std::uint64_t> own;
  std::uint64_t spilled = 0;
  explicit overflow_exec(scheduler& s) {
    (void)t.try_acquire(std::uint64_t{1}, 0, 1, ns(0));
    for (std::uint64_t key : std::initializer_list<std::uint64_t>{2, 3}) {
      bodies.push_back([this, &s, key] {
        for (const std::uint64_t n : std::initializer_list<std::uint64_t>{2, 1}) {
          const keyed_result r = try_acquire_or_overflow(t, spill, key, 0, n, ns(0));
          s.note("key " + std::to_string(key) + ": " + to_string(r.status()) + (r.admitted() ? " admitted" : ""));
          if (!r.admitted()) continue;
          if (r.status() == keyed_status::overflow) spilled += n;
          else own[key] += n;
        }
      });
    }
  }
  std::string check(const scheduler::outcome&) override {
    if (spilled > 2) return "the overflow admitted " + std::to_string(spilled) + " (burst 2)";
    for (const auto& kv : own)
      if (kv.second > 2) return "key " + std::to_string(kv.first) + " took " + std::to_string(kv.second) + " (burst 2)";
    return "";
  }
};

}  // namespace

TEST_CASE("checker: keyed_buckets, two new keys racing for the last entry, the loser to overflow", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = tgcheck::large() ? 4 : 3;
  const auto r = tgcheck::explore_exhaustive(s, "keyed claim/claim with overflow, cap 2", 2, b,
                                             [](scheduler& sc) -> std::unique_ptr<execution> {
                                               return std::make_unique<overflow_exec>(sc);
                                             });
  CHECK(r.complete);
  CHECK(r.failure == "");
}

namespace {

// keyed_permits and keyed_budgets in a table of one entry (limit 1 permit;
// budget 2): holds racing claims of another key and erase. A held permit
// or reservation pins its entry, so two keys never hold at once (the one
// entry would have been reclaimed under a hold), and no key holds more
// than its limit. `holding` counts holds beside the table: raised after an
// admission, lowered before the release, so it is at most what the table
// holds.
struct hold_exec : execution {
  keyed_permits<self_hash> permits{1, {1}, hash_seed{}, 1};
  keyed_budgets<usd_tag, self_hash> budgets{1, {usd::from_nanos(2)}, hash_seed{}, keyed_budget_reuse::idle, 1};
  std::map<std::uint64_t, int> holding;
  std::string broke;
  void hold(std::uint64_t key, int units) {
    holding[key] += units;
    int keys = 0;
    for (const auto& kv : holding) keys += kv.second > 0 ? 1 : 0;
    if (keys > 1) broke = "two keys hold on one entry";
  }
  hold_exec(scheduler& s, bool budget) {
    for (const std::uint64_t key : std::initializer_list<std::uint64_t>{1, 2}) {
      bodies.push_back([this, &s, key, budget] {
        for (int round = 0; round < 2; ++round) {
          if (key == 2 && round == 1) {
            const bool had = budget ? budgets.erase(std::uint64_t{1}) : permits.erase(std::uint64_t{1});
            s.note(std::string("erase key 1: ") + (had ? "had" : "none"));
          }
          if (budget) {
            keyed_reservation<usd_tag> r = budgets.reserve(key, 0, usd::from_nanos(2));
            s.note("key " + std::to_string(key) + " reserve: " + to_string(r.status));
            if (!r) continue;
            hold(key, 2);
            if (holding[key] > 2) broke = "key " + std::to_string(key) + " holds over its budget";
            holding[key] -= 2;
            (void)budgets.settle(r, usd::from_nanos(1));
          } else {
            keyed_permit p = permits.try_acquire(key, 0);
            s.note("key " + std::to_string(key) + " acquire: " + to_string(p.status()));
            if (!p) continue;
            hold(key, 1);
            if (holding[key] > 1) broke = "key " + std::to_string(key) + " holds over its limit";
            holding[key] -= 1;
            p.release();
          }
        }
      });
    }
  }
  std::string check(const scheduler::outcome&) override {
    if (!broke.empty()) return broke;
    for (const std::uint64_t k : std::initializer_list<std::uint64_t>{1, 2}) {
      if (permits.in_use(k) != 0) return "key " + std::to_string(k) + " still holds permits";
    }
    return "";
  }
};

}  // namespace

TEST_CASE("checker: keyed_permits, holds racing claims and erase", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = tgcheck::large() ? 4 : 3;
  const auto r = tgcheck::explore_exhaustive(s, "keyed permits hold/claim/erase, cap 1", 2, b,
                                             [](scheduler& sc) -> std::unique_ptr<execution> {
                                               return std::make_unique<hold_exec>(sc, false);
                                             });
  CHECK(r.complete);
  CHECK(r.failure == "");
}

TEST_CASE("checker: keyed_budgets, reservations racing claims and erase", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = tgcheck::large() ? 4 : 3;
  const auto r = tgcheck::explore_exhaustive(s, "keyed budgets reserve/claim/erase, cap 1", 2, b,
                                             [](scheduler& sc) -> std::unique_ptr<execution> {
                                               return std::make_unique<hold_exec>(sc, true);
                                             });
  CHECK(r.complete);
  CHECK(r.failure == "");
}

namespace {

// keyed_windows, one entry (limit 2 per 3 s, 1 s slots): key 1 took 2 at 0,
// so at 4 s its counts have left and key 2 may evict it, while key 1
// admits on it at 4 s. An eviction landing after that admission would lose
// key 1's counts: both keys would take 2 at 4 s on the one entry. Oracle:
// at most 2 admitted at 4 s in all, and each key within L per (t - W, t].
struct window_exec : execution {
  keyed_windows<manual_clock, self_hash> t{1, {{2, ns(3 * sec)}}, hash_seed{}, ns(0), 1};
  std::map<std::uint64_t, std::vector<std::pair<std::int64_t, std::uint64_t>>> log;
  explicit window_exec(scheduler& s) {
    if (t.try_acquire(std::uint64_t{1}, 0, 2, ns(0)).admitted()) log[1].emplace_back(0, 2);
    for (const std::uint64_t first : std::initializer_list<std::uint64_t>{1, 2}) {
      bodies.push_back([this, &s, first] {
        for (const std::uint64_t key : {first, 3 - first}) {
          const std::uint64_t n = key == first ? 2 : 1;
          const keyed_result r = t.try_acquire(key, 0, n, ns(4 * sec));
          s.note("key " + std::to_string(key) + ": " + to_string(r.status()));
          if (r.admitted()) log[key].emplace_back(4 * sec, n);
        }
      });
    }
  }
  std::string check(const scheduler::outcome&) override {
    std::uint64_t at4 = 0;
    for (const auto& kv : log) {
      if (tgtest::max_window_sum(kv.second, 3 * sec) > 2) return "key " + std::to_string(kv.first) + " over L per W";
      for (const auto& e : kv.second) at4 += e.first == 4 * sec ? e.second : 0;
    }
    if (at4 > 2) return std::to_string(at4) + " admitted at 4 s on one entry (limit 2)";
    return "";
  }
};

}  // namespace

TEST_CASE("checker: keyed_windows, eviction racing an admission on the evicted entry", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = tgcheck::large() ? 4 : 3;
  const auto r = tgcheck::explore_exhaustive(s, "keyed windows evict/admit, cap 1", 2, b,
                                             [](scheduler& sc) -> std::unique_ptr<execution> {
                                               return std::make_unique<window_exec>(sc);
                                             });
  CHECK(r.complete);
  CHECK(r.failure == "");
}

namespace {

// keyed_windows, one key (limit 2 per 3 s): thread 1 admits 1 with a ticket
// and gives it back (an account refusal, as admit_keyed does), thread 2
// admits 1 three times, all at 0. A give-back that read the window word and
// wrote it back without a CAS would erase an admission landing in between,
// and thread 2 would get all three. Oracle: the units admitted net of the
// give-back are at most 2, and the give-back returned the unit (nothing
// moved the window on).
struct window_giveback_exec : execution {
  keyed_windows<manual_clock, self_hash> t{2, {{2, ns(3 * sec)}}, hash_seed{}, ns(0), 2};
  std::uint64_t net[2] = {0, 0};
  std::uint64_t given = 0;
  explicit window_giveback_exec(scheduler& s) {
    bodies.push_back([this, &s] {
      keyed_ticket k;
      const keyed_result r = t.try_acquire(std::uint64_t{1}, 0, 1, ns(0), k);
      s.note(std::string("thread 1 admit: ") + to_string(r.status()));
      if (!r.admitted()) return;
      net[0] += 1;
      given = t.refund(std::uint64_t{1}, k, 1);
      s.note("thread 1 gave back " + std::to_string(given));
      net[0] -= given;
    });
    bodies.push_back([this, &s] {
      for (int i = 0; i < 3; ++i) {
        const keyed_result r = t.try_acquire(std::uint64_t{1}, 0, 1, ns(0));
        s.note(std::string("thread 2 admit: ") + to_string(r.status()));
        if (r.admitted()) net[1] += 1;
      }
    });
  }
  std::string check(const scheduler::outcome&) override {
    if (net[0] + net[1] > 2) return std::to_string(net[0] + net[1]) + " admitted net at 0 s (limit 2)";
    if (net[0] > 0 && given != 1) return "the give-back returned " + std::to_string(given) + " of 1";
    return "";
  }
};

}  // namespace

TEST_CASE("checker: keyed_windows, a give-back racing admissions on the same key", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = tgcheck::large() ? 4 : 3;
  const auto r = tgcheck::explore_exhaustive(s, "keyed windows give-back/admit", 2, b,
                                             [](scheduler& sc) -> std::unique_ptr<execution> {
                                               return std::make_unique<window_giveback_exec>(sc);
                                             });
  CHECK(r.complete);
  CHECK(r.failure == "");
}

namespace {

// keyed_budgets with a day period (limit 2 nano-units a day, one key, one
// entry): two threads reserve 1 and settle 1 twice each, the first round at
// day 1 while the entry is still in day 0 (so both race to roll it over),
// the second of thread 2 with a stale `now` back in day 0. A rollover that
// stalled between reading the word and writing it must not reset day 1's
// total under the other thread's admissions, and a stale `now` must not
// charge day 0: every day's settled total is at most 2, and once both are
// done nothing is held (day 2 has the whole limit).
struct period_exec : execution {
  static constexpr std::int64_t day = 86400 * sec;
  keyed_budgets<usd_tag, self_hash> t{1, {usd::from_nanos(2)}, hash_seed{}, budget_calendar{budget_period::day, {}},
                                      keyed_budget_reuse::never, 1};
  std::map<std::uint64_t, std::int64_t> charged;  // day -> settled
  explicit period_exec(scheduler& s) {
    keyed_reservation<usd_tag> r = t.reserve(std::uint64_t{1}, 0, usd::from_nanos(1), ns(0));
    t.release(r, ns(0));  // the key's entry, in day 0
    for (const int th : {0, 1}) {
      bodies.push_back([this, &s, th] {
        for (int round = 0; round < 2; ++round) {
          const std::int64_t now = th == 1 && round == 1 ? 0 : day;
          keyed_reservation<usd_tag> x = t.reserve(std::uint64_t{1}, 0, usd::from_nanos(1), ns(now));
          s.note("thread " + std::to_string(th) + " reserve at day " + std::to_string(now / day) + ": " +
                 to_string(x.status) + " in day " + std::to_string(x.period()));
          if (!x) continue;
          (void)t.settle(x, usd::from_nanos(1), ns(now));
          charged[x.period()] += 1;
        }
      });
    }
  }
  std::string check(const scheduler::outcome&) override {
    for (const auto& kv : charged)
      if (kv.second > 2) return std::to_string(kv.second) + " settled in day " + std::to_string(kv.first) + " (limit 2)";
    if (t.remaining(std::uint64_t{1}, 0, ns(2 * day)).nanos() != 2) return "something still held after every settle";
    return "";
  }
};

}  // namespace

TEST_CASE("checker: keyed_budgets with a day period, rollovers racing and a stale now", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = tgcheck::large() ? 4 : 3;
  const auto r = tgcheck::explore_exhaustive(s, "keyed budgets day rollover race, cap 1", 2, b,
                                             [](scheduler& sc) -> std::unique_ptr<execution> {
                                               return std::make_unique<period_exec>(sc);
                                             });
  CHECK(r.complete);
  CHECK(r.failure == "");
}
