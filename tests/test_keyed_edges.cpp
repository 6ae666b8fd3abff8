// keyed_buckets at its edges: a class's horizon, tickets across erase and
// reclaim, and admit_keyed's all-or-nothing rule under hostile orders.
#include "catch_compat.hpp"
#include "support.hpp"
#include "account_support.hpp"
#include "tollgate_under_test.hpp"

#include <atomic>
#include <cstdint>
#include <map>
#include <set>
#include <string_view>
#include <thread>
#include <vector>

using namespace tollgate;
using tgtest::ns;

namespace {

hash_seed edge_seed(std::uint64_t stream) {
  tgtest::rng g(tgtest::seed_for(stream));
  const std::uint64_t a = g.next();
  return hash_seed{a, g.next()};
}

// Every key hashes to itself: small keys all have home 0.
struct ident_hash {
  explicit ident_hash(hash_seed) {}
  std::uint64_t operator()(std::uint64_t id) const { return id; }
  std::uint64_t operator()(std::string_view s) const { return s.size(); }
};

// Keys 2g and 2g+1 share the hash of group g (forced collisions).
struct twin_hash {
  explicit twin_hash(hash_seed s) : salt(s.k0) {}
  std::uint64_t operator()(std::uint64_t id) const {
    tgtest::rng g((id >> 1) ^ salt);
    return g.next();
  }
  std::uint64_t operator()(std::string_view s) const { return s.size() ^ salt; }
  std::uint64_t salt;
};

constexpr std::int64_t max_ticks = (std::int64_t{1} << 62) - 1;

}  // namespace

// Class 0: 1 per us, burst 3 (scale 1, so its horizon is 2^62 - 1 - 3000 ns);
// class 1: 1 per us, burst 1 (2000 ns later).
TEST_CASE("keyed: a class ends at its horizon: exact up to it, never past it", "[keyed]") {
  keyed_buckets<manual_clock> t(16, {{rate(1, ns(1000)), 3}, {rate(1, ns(1000)), 1}}, edge_seed(20), ns(0));
  const std::int64_t ha = max_ticks - 3000, hb = max_ticks - 1000;
  CHECK(t.horizon(0) == ns(ha));
  CHECK(t.horizon(1) == ns(hb));
  CHECK(t.horizon(2) == ns(0));
  // Just below it: the exact waits of any bucket.
  const std::int64_t b = ha - 10000;
  for (int i = 0; i < 3; ++i) REQUIRE(t.try_acquire(std::uint64_t{1}, 0, 1, ns(b)).admitted());
  const keyed_result w = t.try_acquire(std::uint64_t{1}, 0, 1, ns(b));
  CHECK(w.status() == keyed_status::limited);
  CHECK(w.result().later());
  CHECK(w.result().retry_after() == ns(1000));
  CHECK_FALSE(t.try_acquire(std::uint64_t{1}, 0, 1, ns(b + 999)).admitted());
  CHECK(t.try_acquire(std::uint64_t{1}, 0, 1, ns(b + 1000)).admitted());
  // At it: a new key still gets its burst; a wait that would end past it is never.
  for (int i = 0; i < 3; ++i) REQUIRE(t.try_acquire(std::uint64_t{2}, 0, 1, ns(ha)).admitted());
  const keyed_result at = t.try_acquire(std::uint64_t{2}, 0, 1, ns(ha));
  CHECK(at.status() == keyed_status::limited);
  CHECK(at.result().never());
  CHECK(at.result().why() == reason::exceeds_capacity);
  // Past it: everything is never, a new key takes no entry, nothing is available.
  for (const std::int64_t p : {ha + 1, ha + 1000000, std::int64_t{INT64_MAX}}) {
    INFO("now " << p);
    const keyed_result fresh = t.try_acquire(std::uint64_t{3}, 0, 1, ns(p));
    CHECK(fresh.status() == keyed_status::limited);
    CHECK(fresh.result().never());
    CHECK_FALSE(t.contains(std::uint64_t{3}));
    CHECK(t.available(std::uint64_t{3}, 0, ns(p)) == 0);
    CHECK(t.try_acquire(std::uint64_t{1}, 0, 1, ns(p)).result().never());
    CHECK(t.available(std::uint64_t{1}, 0, ns(p)) == 0);
    CHECK(t.try_acquire(std::uint64_t{1}, 0, 0, ns(p)).admitted());  // n == 0 changes nothing
  }
  // Class 1 still counts there: exact until its own horizon.
  REQUIRE(t.try_acquire(std::uint64_t{4}, 1, 1, ns(ha + 1)).admitted());
  const keyed_result c1 = t.try_acquire(std::uint64_t{4}, 1, 1, ns(ha + 1));
  CHECK(c1.result().later());
  CHECK(c1.result().retry_after() == ns(1000));
  CHECK(t.try_acquire(std::uint64_t{4}, 1, 1, ns(ha + 1001)).admitted());  // owes until hb + 1
  // Its next unit would be admissible at hb + 1, past the horizon: never, already before it.
  CHECK(t.try_acquire(std::uint64_t{4}, 1, 1, ns(hb - 500)).result().never());
  CHECK(t.try_acquire(std::uint64_t{4}, 1, 1, ns(hb)).result().never());
  // Another key of class 1 at hb itself: admitted (the last exact instant).
  CHECK(t.try_acquire(std::uint64_t{5}, 1, 1, ns(hb)).admitted());
  CHECK(t.try_acquire(std::uint64_t{4}, 1, 1, ns(hb + 1)).result().never());
}

TEST_CASE("keyed: table_full near a horizon gives the exact wait, or never", "[keyed]") {
  SECTION("one class") {
    keyed_buckets<manual_clock, ident_hash> t(1, {{rate(1, ns(1000)), 1}}, hash_seed{}, ns(0), 1);
    const std::int64_t h = max_ticks - 1000;
    REQUIRE(t.try_acquire(std::uint64_t{1}, 0, 1, ns(h - 2000)).admitted());  // full at h - 1000
    const keyed_result f = t.try_acquire(std::uint64_t{2}, 0, 1, ns(h - 2000));
    CHECK(f.table_full());
    CHECK(f.result().retry_after() == ns(1000));
    CHECK(t.try_acquire(std::uint64_t{2}, 0, 1, ns(h - 1001)).table_full());
    REQUIRE(t.try_acquire(std::uint64_t{2}, 0, 1, ns(h - 1000)).admitted());  // full at h
    const keyed_result g = t.try_acquire(std::uint64_t{3}, 0, 1, ns(h - 500));
    CHECK(g.table_full());
    CHECK(g.result().retry_after() == ns(500));
    REQUIRE(t.try_acquire(std::uint64_t{3}, 0, 1, ns(h)).admitted());  // full at h + 1000: past it
    const keyed_result n = t.try_acquire(std::uint64_t{4}, 0, 1, ns(h));
    CHECK(n.table_full());
    CHECK(n.result().never());
    CHECK(t.try_acquire(std::uint64_t{4}, 0, 1, ns(h + 1)).result().never());
  }
  SECTION("an entry past its class's horizon is full for a class that lasts longer") {
    keyed_buckets<manual_clock, ident_hash> t(1, {{rate(1, ns(1000)), 3}, {rate(1, ns(1000)), 1}}, hash_seed{}, ns(0),
                                              1);
    const std::int64_t ha = max_ticks - 3000;
    REQUIRE(t.try_acquire(std::uint64_t{1}, 0, 3, ns(ha - 100)).admitted());  // owes until ha + 2900
    const keyed_result f = t.try_acquire(std::uint64_t{2}, 1, 1, ns(ha - 100));
    CHECK(f.table_full());
    CHECK(f.result().retry_after() == ns(101));  // at ha + 1 entry 0 can admit nothing ever again
    CHECK(t.try_acquire(std::uint64_t{2}, 1, 1, ns(ha)).table_full());
    CHECK(t.try_acquire(std::uint64_t{2}, 1, 1, ns(ha + 1)).admitted());
    CHECK_FALSE(t.contains(std::uint64_t{1}));
  }
}

// The schedule that found it: a ticket from before erase(key) gave 3 units
// back into the key's new entry, 6 units at one instant against burst 3.
TEST_CASE("keyed: a ticket gives back only into the entry it charged", "[keyed]") {
  const std::int64_t s = 1000000000;
  SECTION("erase, then the key again") {
    keyed_buckets<manual_clock> t(16, {{rate(1, ns(s)), 3}}, edge_seed(21), ns(0));
    const ns now(1000);
    keyed_ticket old;
    REQUIRE(t.try_acquire(std::uint64_t{7}, 0, 3, now, old).admitted());
    REQUIRE(t.erase(std::uint64_t{7}));
    int a = 0;
    for (int i = 0; i < 3; ++i) a += t.try_acquire(std::uint64_t{7}, 0, 1, now).admitted() ? 1 : 0;
    CHECK(a == 3);
    CHECK(t.refund(std::uint64_t{7}, old, 3, now) == 0);
    CHECK(t.available(std::uint64_t{7}, 0, now) == 0);
    CHECK_FALSE(t.try_acquire(std::uint64_t{7}, 0, 1, now).admitted());
  }
  SECTION("evicted, the same entry claimed again, a refund whose now lags") {
    keyed_buckets<manual_clock, ident_hash> t(1, {{rate(1, ns(s)), 3}}, hash_seed{}, ns(0), 1);
    keyed_ticket old;
    REQUIRE(t.try_acquire(std::uint64_t{7}, 0, 3, ns(0), old).admitted());    // owes until 3 s
    REQUIRE(t.try_acquire(std::uint64_t{8}, 0, 1, ns(3 * s)).admitted());     // evicts key 7
    REQUIRE(t.try_acquire(std::uint64_t{7}, 0, 3, ns(4 * s)).admitted());     // evicts key 8: owes until 7 s
    CHECK(t.refund(std::uint64_t{7}, old, 3, ns(s)) == 0);  // old intervals still ahead at 1 s, but not its entry
    CHECK(t.available(std::uint64_t{7}, 0, ns(4 * s)) == 0);
    // A ticket of the live entry still gives back.
    keyed_ticket cur;
    REQUIRE(t.try_acquire(std::uint64_t{7}, 0, 1, ns(6 * s), cur).admitted());  // owes until 8 s
    CHECK(t.refund(std::uint64_t{7}, cur, 1, ns(6 * s)) == 1);
  }
}

// An exact model of the table's buckets (scale 1, times that never go back
// for admissions, refunds that may lag) with erase, eviction, reclaim and
// refunds mixed in; each refund must give exactly what the ticket rule
// allows on the entry it charged, and nothing once that entry is gone.
TEST_CASE("keyed: refund oracle over random schedules with erase and reclaim", "[keyed]") {
  struct tk {
    std::uint64_t key, grp, inc;
    std::int64_t end;
    std::uint64_t units;
    keyed_ticket real;
  };
  const std::int64_t interval[2] = {1000, 1500};
  const std::uint64_t burst[2] = {3, 5};
  std::uint64_t stale_tried = 0, given = 0, refunds = 0, reclaims = 0;
  for (std::uint64_t stream = 0; stream < 10; ++stream) {
    const std::uint64_t seed = tgtest::seed_for(0xBEEF + stream);
    INFO("schedule seed " << seed << " " << tgtest::seed_note());
    tgtest::rng g(seed);
    const std::size_t cap = static_cast<std::size_t>(g.between(2, 10));
    const std::size_t window = static_cast<std::size_t>(g.between(1, cap));
    const std::uint64_t groups = g.between(3, 20);
    INFO("capacity " << cap << " window " << window << " groups " << groups);
    keyed_buckets<manual_clock, twin_hash> t(cap, {{rate(1, ns(1000)), 3}, {rate(2, ns(3000)), 5}},
                                             hash_seed{g.next(), 0}, ns(0), window);
    std::vector<std::int64_t> tat(groups, 0);
    std::vector<std::uint64_t> inc(groups, 0);
    std::vector<tk> tickets;
    std::int64_t now = 0;
    for (int step = 0; step < 5000; ++step) {
      now += static_cast<std::int64_t>(g.between(0, 700));
      const std::uint64_t grp = g.between(0, groups - 1), key = grp * 2 + g.between(0, 1);
      const std::size_t c = static_cast<std::size_t>(grp % 2);
      const std::int64_t T = interval[c];
      INFO("step " << step << " now " << now << " key " << key);
      const std::uint64_t op = g.between(0, 99);
      if (op < 5) {  // erase: a fresh bucket, a new incarnation
        const bool had = t.contains(key);
        CHECK(t.erase(key) == had);
        tat[grp] = 0;
        ++inc[grp];
      } else if (op < 40 && !tickets.empty()) {  // refund a random ticket, maybe with a lagging now
        tk& x = tickets[static_cast<std::size_t>(g.between(0, tickets.size() - 1))];
        const std::int64_t lag = static_cast<std::int64_t>(g.between(0, 4000));
        const std::int64_t rn = now > lag ? now - lag : 0;
        const std::uint64_t n = g.between(1, 5);
        const std::uint64_t by = g.chance(90) ? x.key : key;  // sometimes another key's
        const std::int64_t Tx = interval[x.grp % 2];
        std::uint64_t expect = 0;
        const bool current = t.contains(x.key) && x.inc == inc[x.grp];
        if (!current && x.units > 0 && x.end > rn) ++stale_tried;
        if (current && (by >> 1) == x.grp && x.end > rn && tat[x.grp] > rn) {
          std::uint64_t k = n < x.units ? n : x.units;
          const std::uint64_t a = static_cast<std::uint64_t>((x.end - rn) / Tx);
          const std::uint64_t b = static_cast<std::uint64_t>((tat[x.grp] - rn) / Tx);
          if (a < k) k = a;
          if (b < k) k = b;
          expect = k;
        }
        const std::uint64_t got = t.refund(by, x.real, n, ns(rn));
        ++refunds;
        REQUIRE(got == expect);
        given += got;
        tat[x.grp] -= static_cast<std::int64_t>(got) * Tx;
        x.end -= static_cast<std::int64_t>(got) * Tx;
        x.units -= got;
        CHECK(x.real.units == x.units);
      } else {  // acquire with a ticket
        const std::uint64_t n = g.between(0, 6);
        const bool present = t.contains(key);
        keyed_ticket real;
        const keyed_result r = t.try_acquire(key, c, n, ns(now), real);
        if (r.table_full()) {
          CHECK_FALSE(present);
          CHECK(tat[grp] <= now);
          continue;
        }
        if (!present && t.contains(key)) {
          ++inc[grp];
          ++reclaims;
        }
        if (n == 0) {
          CHECK(r.admitted());
          continue;
        }
        if (n > burst[c]) {
          CHECK(r.result().never());
          continue;
        }
        const std::int64_t need = (tat[grp] > now ? tat[grp] : now) + static_cast<std::int64_t>(n) * T;
        const std::int64_t tau = static_cast<std::int64_t>(burst[c]) * T;
        if (need - now > tau) {
          CHECK(r.status() == keyed_status::limited);
          CHECK(r.result().retry_after() == ns(need - now - tau));
          CHECK(real.units == 0);
        } else {
          REQUIRE(r.admitted());
          tat[grp] = need;
          tickets.push_back(tk{key, grp, inc[grp], need, n, std::move(real)});
          if (tickets.size() > 64) tickets.erase(tickets.begin());
        }
      }
    }
  }
  // The schedules reach every case, stale tickets whose intervals were still ahead included.
  CHECK(stale_tried > 50);
  CHECK(given > 200);
  CHECK(refunds > 1000);
  CHECK(reclaims > 200);
}

namespace {
account_config small_account(std::uint64_t rpm) {
  account_config c;
  c.concurrency = limit(64);
  c.rpm = limit(rpm);
  c.tpm = limit(100000000);
  c.tpd = limit(1000000000);
  c.model = server_model::sliding_log;
  c.max_request_tokens = 4000;
  return c;
}
}  // namespace

// After both sides admitted, the key's ticket and the account's lease are
// independent: either may be given back or dropped first, and neither
// touches the other; a key erased meanwhile takes no refund into its new
// entry.
TEST_CASE("keyed: admit_keyed's key ticket and lease, given back or dropped in either order", "[keyed]") {
  account<manual_clock> acc(small_account(100), ns(0));
  keyed_buckets<manual_clock> keys(8, {{per_second(1), 2}}, edge_seed(22), ns(0));
  const request r = tgtest::req(100, 100);
  const std::string_view alice("alice");
  const ns now(0);
  {  // the key first, then the lease
    auto x = admit_keyed(keys, acc, alice, 0, 1, r, now);
    REQUIRE(x.admitted());
    CHECK(x.key_ticket.units == 1);
    CHECK(acc.in_flight() == 1);
    CHECK(keys.available(alice, 0, now) == 1);
    CHECK(keys.refund(alice, x.key_ticket, 1, now) == 1);
    CHECK(keys.available(alice, 0, now) == 2);
    CHECK(acc.in_flight() == 1);
    x.account.lease.settle_failed(now);
    CHECK(acc.in_flight() == 0);
    CHECK(keys.available(alice, 0, now) == 2);
  }
  {  // the lease first, then the key
    auto x = admit_keyed(keys, acc, alice, 0, 2, r, now);
    REQUIRE(x.admitted());
    x.account.lease.settle(usage{100, 0, 10, 0, 0}, now);
    CHECK(acc.in_flight() == 0);
    CHECK(keys.available(alice, 0, now) == 0);
    CHECK(keys.refund(alice, x.key_ticket, 2, now) == 2);
    CHECK(keys.available(alice, 0, now) == 2);
  }
  {  // both dropped: the lease frees its slot, the key's units stay counted
    auto x = admit_keyed(keys, acc, alice, 0, 1, r, now);
    REQUIRE(x.admitted());
    CHECK(acc.in_flight() == 1);
  }
  CHECK(acc.in_flight() == 0);
  CHECK(keys.available(alice, 0, now) == 1);
  {  // erased between: the ticket gives nothing into the key's new entry
    auto x = admit_keyed(keys, acc, alice, 0, 1, r, now);
    REQUIRE(x.admitted());
    REQUIRE(keys.erase(alice));
    REQUIRE(keys.try_acquire(alice, 0, 2, now).admitted());
    CHECK(keys.refund(alice, x.key_ticket, 1, now) == 0);
    CHECK(keys.available(alice, 0, now) == 0);
  }
  // A refusal by either side leaves no ticket.
  auto y = admit_keyed(keys, acc, alice, 0, 1, r, now);
  CHECK_FALSE(y.admitted());
  CHECK(y.key_ticket.units == 0);
}

// Threads admit through a small account (RPM 40) on 16 keys with a shared
// clock (about 10 minutes of it), one of them erasing keys 0-3 now and then.
// Afterwards every key that was never erased kept its bucket bound up to the
// skew the header states: a give-back at a `now` that lags the latest time
// the key has seen by d may return up to ceil(d / T) of its units early, so
// a key may exceed B + floor(t / T) by at most the sum, over its give-backs,
// of min(units given back, ceil(lag / T)), the lag measured from the shared
// clock after the call (an upper bound). With no give-back lagging (a
// thread not stalled between drawing its `now` and returning) that is zero.
// The account keeps its RPM over every minute, and every account refusal
// gave back at most what its key took.
TEST_CASE("keyed: admit_keyed under threads keeps both bounds", "[keyed]") {
  const std::int64_t period = 200000000;  // the key: 1 per 200 ms, burst 3
  const std::uint64_t burst = 3;
  account<manual_clock> acc(small_account(40), ns(0));
  keyed_buckets<manual_clock> keys(64, {{rate(1, ns(period)), burst}}, edge_seed(23), ns(0), 8);
  const request r = tgtest::req(10, 10);
  std::atomic<std::int64_t> clock{0};  // relaxed: a counter of test time only
  const int threads = 3;
  const std::uint64_t ops = 20000 * tgtest::stress_factor();
  struct ev {
    std::uint64_t key;
    std::int64_t at;
    std::uint64_t n;
  };
  std::vector<std::vector<ev>> admitted(threads);
  std::vector<std::map<std::uint64_t, std::uint64_t>> skew(threads);  // key -> units early allowed
  std::vector<std::set<std::uint64_t>> erased(threads);
  std::vector<std::uint64_t> over(threads, 0), refused(threads, 0);
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      const std::size_t me = static_cast<std::size_t>(i);
      tgtest::rng g(tgtest::seed_for(300 + me));
      for (std::uint64_t j = 0; j < ops; ++j) {
        const std::int64_t now = clock.fetch_add(static_cast<std::int64_t>(g.between(1, 20000000)), std::memory_order_relaxed);
        const std::uint64_t key = g.between(0, 15);
        if (i == 0 && key < 4 && g.chance(5)) {  // only keys 0-3 are ever erased
          if (keys.erase(key)) erased[me].insert(key);
          continue;
        }
        const std::uint64_t n = g.between(1, 2);
        auto x = admit_keyed(keys, acc, key, 0, n, r, ns(now));
        if (x.admitted()) {
          admitted[me].push_back({key, now, n});
          x.account.lease.settle(usage{10, 0, 10, 0, 0}, ns(now));
        } else if (x.account_asked) {
          ++refused[me];
          if (x.given_back > n) ++over[me];
          // relaxed: every `now` drawn before the give-back is below this.
          const std::int64_t lag = clock.load(std::memory_order_relaxed) - now;
          const std::uint64_t early = static_cast<std::uint64_t>((lag + period - 1) / period);
          skew[me][key] += early < x.given_back ? early : x.given_back;
        }
      }
    });
  }
  for (std::thread& th : pool) th.join();
  INFO(tgtest::seed_note());
  std::set<std::uint64_t> gone;
  for (const auto& e : erased) gone.insert(e.begin(), e.end());
  std::map<std::uint64_t, std::vector<std::pair<std::int64_t, std::uint64_t>>> per_key;
  std::vector<std::pair<std::int64_t, std::uint64_t>> requests;
  for (const auto& log : admitted) {
    for (const ev& e : log) {
      per_key[e.key].emplace_back(e.at, e.n);
      requests.emplace_back(e.at, 1);
    }
  }
  std::uint64_t worst = 0, checked = 0, skewed = 0;
  for (auto& kv : per_key) {
    if (gone.count(kv.first) != 0) continue;
    ++checked;
    std::uint64_t allowed = 0;
    for (const auto& m : skew) {
      const auto it = m.find(kv.first);
      if (it != m.end()) allowed += it->second;
    }
    const std::uint64_t x = tgtest::bucket_bound_excess(kv.second, 1, static_cast<std::uint64_t>(period), burst);
    if (x > allowed && x - allowed > worst) worst = x - allowed;
    if (x > 0) ++skewed;
  }
  INFO(skewed << " keys used some of the skew allowance");
  CHECK(worst == 0);
  CHECK(checked > 4);
  CHECK(tgtest::max_window_sum(requests, 60000000000) <= 40);
  std::uint64_t bad = 0, refusals = 0;
  for (int i = 0; i < threads; ++i) {
    bad += over[static_cast<std::size_t>(i)];
    refusals += refused[static_cast<std::size_t>(i)];
  }
  CHECK(bad == 0);
  CHECK(refusals > 100);  // the account refused often: the give-back path ran
  CHECK(requests.size() > 100);
}

// The overflow limiter, checked against a twin: the same operations on a
// twin table through plain try_acquire, and a twin bucket fed exactly the
// requests the twin table refused as table_full. Every answer must be the
// twin table's, except that table_full becomes the twin bucket's decision
// with status overflow; the overflow admissions fit one bucket's bound, and
// every key's own admissions its class's.
TEST_CASE("keyed: the overflow limiter takes exactly the table_full requests", "[keyed]") {
  std::uint64_t overflowed = 0, overflow_admitted = 0, own = 0;
  for (std::uint64_t stream = 0; stream < 8; ++stream) {
    const std::uint64_t seed = tgtest::seed_for(0xF10 + stream);
    INFO("schedule seed " << seed << " " << tgtest::seed_note());
    tgtest::rng g(seed);
    const std::size_t cap = static_cast<std::size_t>(g.between(2, 8));
    const std::size_t window = static_cast<std::size_t>(g.between(1, cap));
    const std::vector<key_class> classes = {{rate(1, ns(1000)), 3}, {rate(2, ns(3000)), 5}};
    const hash_seed hs{g.next(), 0};
    keyed_buckets<manual_clock, twin_hash> t(cap, classes, hs, ns(0), window), twin(cap, classes, hs, ns(0), window);
    token_bucket<manual_clock> spill(rate(1, ns(400)), 4, ns(0)), spill_twin(rate(1, ns(400)), 4, ns(0));
    std::vector<std::pair<std::int64_t, std::uint64_t>> spilled;
    std::map<std::uint64_t, std::vector<std::pair<std::int64_t, std::uint64_t>>> per_group;
    std::int64_t now = 0;
    for (int step = 0; step < 3000; ++step) {
      now += static_cast<std::int64_t>(g.between(0, 400));
      const std::uint64_t key = g.between(0, 40), grp = key >> 1;
      const std::size_t c = static_cast<std::size_t>(grp % 2);
      const std::uint64_t n = g.between(0, 4);
      INFO("step " << step << " now " << now << " key " << key);
      const keyed_result r = try_acquire_or_overflow(t, spill, key, c, n, ns(now));
      const keyed_result w = twin.try_acquire(key, c, n, ns(now));
      if (w.table_full()) {
        ++overflowed;
        const decision d = spill_twin.try_acquire(n, ns(now));
        CHECK(r.status() == keyed_status::overflow);
        CHECK(r.result() == d);
        CHECK(r.admitted() == d.admitted());
        if (d.admitted()) {
          ++overflow_admitted;
          spilled.emplace_back(now, n);
        }
      } else {
        CHECK(r.status() == w.status());
        CHECK(r.result() == w.result());
        if (r.admitted() && n > 0) {
          ++own;
          per_group[grp].emplace_back(now, n);
        }
      }
    }
    CHECK(tgtest::bucket_bound_excess(spilled, 1, 400, 4) == 0);
    for (auto& kv : per_group) {
      const std::uint64_t x = kv.first % 2 == 0 ? tgtest::bucket_bound_excess(kv.second, 1, 1000, 3)
                                                : tgtest::bucket_bound_excess(kv.second, 2, 3000, 5);
      CHECK(x == 0);
    }
  }
  CHECK(overflowed > 200);
  CHECK(overflow_admitted > 50);
  CHECK(overflowed > overflow_admitted);  // the overflow bucket refused some too
  CHECK(own > 1000);
}

namespace {
using tgtest::sec;
}  // namespace

// A probe passes an entry whose hint names another key without reading it
// (keyed/claim.hpp, may_hold). Every key of ident_hash has home 0, so keys
// 0..3 share one window of four entries; key 0's hash is zero, the hint
// that says nothing, so its entry is always read. Each step checks the
// exact bucket state the keys must have whichever entries they hold.
TEST_CASE("keyed: probes pass entries by their hints, and find every live key", "[keyed]") {
  keyed_buckets<manual_clock, ident_hash> t(4, {{rate(1, ns(sec)), 2}}, hash_seed{}, ns(0), 4);
  const auto take = [&](std::uint64_t k, std::uint64_t n, std::int64_t at) { return t.try_acquire(k, 0, n, ns(at)); };
  REQUIRE(take(1, 2, 0).admitted());  // entry 0, hint 1
  REQUIRE(take(0, 2, 0).admitted());  // entry 1, hint 0
  REQUIRE(take(2, 1, 0).admitted());  // entry 2, hint 2
  CHECK(take(0, 1, 0).status() == keyed_status::limited);  // its own entry, past entry 0's hint
  CHECK(take(2, 1, 0).admitted());
  CHECK(take(2, 1, 0).status() == keyed_status::limited);
  // Entry 0 freed (its hint still 1) and claimed by key 3 (hint 3): keys 0
  // and 2 are still found behind it, with what they owe.
  CHECK(t.erase(std::uint64_t{1}));
  REQUIRE(take(3, 2, 0).admitted());
  CHECK(take(0, 1, 0).status() == keyed_status::limited);
  CHECK(take(2, 1, 0).status() == keyed_status::limited);
  CHECK(t.available(std::uint64_t{0}, 0, ns(sec)) == 1);
  CHECK(t.available(std::uint64_t{3}, 0, ns(0)) == 0);
  // Key 1 comes back to the last unused entry, fresh (it was erased).
  REQUIRE(take(1, 2, 0).admitted());
  CHECK(take(1, 1, 0).status() == keyed_status::limited);
  CHECK(take(9, 1, 0).status() == keyed_status::table_full);
  // At 2 s everything is full again: key 5 evicts the first reusable entry
  // (entry 0, key 3's), whose hint becomes 5; the others keep theirs.
  REQUIRE(take(5, 2, 2 * sec).admitted());
  CHECK_FALSE(t.contains(std::uint64_t{3}));
  CHECK(take(5, 1, 2 * sec).status() == keyed_status::limited);
  CHECK(t.contains(std::uint64_t{0}));
  CHECK(t.contains(std::uint64_t{1}));
  CHECK(t.contains(std::uint64_t{2}));
  // The zero-hash key is erased and found no more; key 3 takes its entry.
  CHECK(t.erase(std::uint64_t{0}));
  CHECK_FALSE(t.erase(std::uint64_t{0}));
  CHECK_FALSE(t.contains(std::uint64_t{0}));
  REQUIRE(take(3, 2, 2 * sec).admitted());
  CHECK(take(3, 1, 2 * sec).status() == keyed_status::limited);
  CHECK(take(5, 1, 2 * sec).status() == keyed_status::limited);
}

// restore() writes the hint of every entry it restores and clears the
// others: a second restore into the same unused table puts key 2 where the
// first put key 1, and a hint left naming key 1 there would hide key 2 from
// every probe (its claims would find it live and retry for ever).
TEST_CASE("keyed: restore leaves every entry's hint its own", "[keyed]") {
  using table = keyed_buckets<manual_clock, ident_hash>;
  table a(4, {{rate(1, ns(sec)), 2}}, hash_seed{}, ns(0), 4);
  REQUIRE(a.try_acquire(std::uint64_t{1}, 0, 1, ns(0)).admitted());  // entry 0, owes 1 s
  REQUIRE(a.try_acquire(std::uint64_t{3}, 0, 2, ns(0)).admitted());  // entry 1, owes 2 s
  table c(4, {{rate(1, ns(sec)), 2}}, hash_seed{}, ns(0), 4);
  REQUIRE(c.try_acquire(std::uint64_t{2}, 0, 2, ns(0)).admitted());  // entry 0, owes 2 s
  table b(4, {{rate(1, ns(sec)), 2}}, hash_seed{}, ns(0), 4);
  REQUIRE(b.restore(a.snapshot(ns(0), ns(0)), ns(0), ns(0)) == account_restore_errc::ok);
  REQUIRE(b.restore(c.snapshot(ns(0), ns(0)), ns(0), ns(0)) == account_restore_errc::ok);
  CHECK_FALSE(b.contains(std::uint64_t{1}));
  CHECK_FALSE(b.contains(std::uint64_t{3}));
  CHECK(b.contains(std::uint64_t{2}));
  CHECK(b.try_acquire(std::uint64_t{2}, 0, 1, ns(0)).status() == keyed_status::limited);
  REQUIRE(b.try_acquire(std::uint64_t{1}, 0, 2, ns(0)).admitted());  // a new key in entry 1
  CHECK(b.try_acquire(std::uint64_t{1}, 0, 1, ns(0)).status() == keyed_status::limited);
  CHECK(b.try_acquire(std::uint64_t{2}, 0, 1, ns(sec)).admitted());
  CHECK(b.try_acquire(std::uint64_t{2}, 0, 1, ns(sec)).status() == keyed_status::limited);
}
