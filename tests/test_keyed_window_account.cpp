// admit_keyed for keyed_windows: a request admitted only when its key's
// window and the account both admit it, all or nothing. The give-back rule
// (keyed_windows::refund) case by case; random schedules against an exact
// model of the key's window and a twin account that sees only what the
// composite's account was asked; threads with a shared clock against the
// strict bound, with no allowance for lagging give-backs (the header states
// none).
#include "catch_compat.hpp"
#include "keyed_support.hpp"
#include "support.hpp"
#include "account_support.hpp"
#include "tollgate_under_test.hpp"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <vector>

using namespace tollgate;
using tgtest::ns;

namespace {

using namespace tgkeyed;

using tgtest::sec;

account_config small_account(std::uint64_t rpm) {
  account_config c;
  c.concurrency = limit(64);
  c.rpm = limit(rpm);
  c.tpm = limit(10000000);
  c.tpd = limit(100000000);
  c.model = server_model::sliding_log;
  c.max_request_tokens = 4000;
  return c;
}

// A key's window the slow way: its newest slot and the counts of it and
// the three before (as keyed_windows states it).
struct model_window {
  std::int64_t tag = 0;
  std::uint64_t c[4] = {0, 0, 0, 0};
  std::uint64_t incarnation = 0;
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

// The account allows 3 requests a minute; the key 2 units in any 3 s. Each
// side's refusal leaves the other as it was, and the key's units come back
// into the slot they were counted in.
TEST_CASE("keyed windows: admission under the account is all or nothing", "[keyed]") {
  account<manual_clock> acc(small_account(3), ns(0));
  keyed_windows<manual_clock> keys(8, {{2, std::chrono::seconds(3)}}, seed_from(0x7a01), ns(0));
  const request r = tgtest::req(100, 100);
  const std::string_view alice("alice"), bob("bob"), carol("carol");
  auto x = admit_keyed(keys, acc, alice, 0, 1, r, ns(0));
  REQUIRE(x.admitted());
  CHECK(x.key_ticket.units == 1);
  auto y = admit_keyed(keys, acc, alice, 0, 1, r, ns(0));
  REQUIRE(y.admitted());
  // The key refuses: the account is not asked and keeps its third request.
  auto z = admit_keyed(keys, acc, alice, 0, 1, r, ns(0));
  CHECK_FALSE(z.admitted());
  CHECK(z.key.status() == keyed_status::limited);
  CHECK_FALSE(z.account_asked);
  CHECK(z.key_ticket.units == 0);
  auto w = admit_keyed(keys, acc, bob, 0, 1, r, ns(0));
  REQUIRE(w.admitted());  // the account's third
  // The account refuses (RPM): bob's unit comes back, at once and in full.
  auto v = admit_keyed(keys, acc, bob, 0, 1, r, ns(sec));
  CHECK_FALSE(v.admitted());
  CHECK(v.account_asked);
  CHECK(v.account.refused.has(dimension::rpm));
  CHECK(v.given_back == 1);
  CHECK(v.key_ticket.units == 0);
  // bob holds 1 (at 0 s) of 2: exactly one more fits, in the slot of 1 s.
  CHECK(keys.try_acquire(bob, 0, 1, ns(sec)).admitted());
  CHECK(keys.try_acquire(bob, 0, 1, ns(sec)).status() == keyed_status::limited);
  // A new key refused by the account holds nothing of its new entry.
  auto u = admit_keyed(keys, acc, carol, 0, 2, r, ns(sec));
  CHECK_FALSE(u.admitted());
  CHECK(u.given_back == 2);
  CHECK(keys.try_acquire(carol, 0, 2, ns(sec)).admitted());
  // More than the key's limit: never, the account not asked.
  auto big = admit_keyed(keys, acc, std::uint64_t{7}, 0, 3, r, ns(sec));
  CHECK(big.key.result().never());
  CHECK_FALSE(big.account_asked);
}

// The give-back rule: exact out of the charged slot while it is counted,
// nothing once it has left, into another incarnation of the key, for
// another key or another table; partial, and never twice.
TEST_CASE("keyed windows: refund gives back out of the charged slot only", "[keyed]") {
  keyed_windows<manual_clock> t(8, {{3, std::chrono::seconds(3)}}, seed_from(0x7a02), ns(0));  // 1 s slots
  keyed_windows<manual_clock> other(8, {{3, std::chrono::seconds(3)}}, seed_from(0x7a02), ns(0));
  const std::uint64_t k = 5;
  keyed_ticket a, b;
  REQUIRE(t.try_acquire(k, 0, 2, ns(0), a).admitted());
  CHECK(a.units == 2);
  REQUIRE(t.try_acquire(k, 0, 1, ns(2 * sec), b).admitted());  // full: 2 in slot 0, 1 in slot 2
  CHECK(t.try_acquire(k, 0, 1, ns(2 * sec)).status() == keyed_status::limited);
  // Another table's ticket, or one for another key: nothing.
  keyed_ticket foreign;
  REQUIRE(other.try_acquire(k, 0, 1, ns(0), foreign).admitted());
  CHECK(t.refund(k, foreign, 1) == 0);
  CHECK(t.refund(std::uint64_t{6}, a, 1) == 0);
  CHECK(a.units == 2);
  // Partial, out of slot 0 while the newest is slot 2, at no `now`.
  CHECK(t.refund(k, a, 1) == 1);
  CHECK(a.units == 1);
  CHECK(t.try_acquire(k, 0, 1, ns(2 * sec)).admitted());
  CHECK(t.try_acquire(k, 0, 1, ns(2 * sec)).status() == keyed_status::limited);
  CHECK(t.refund(k, a, 5) == 1);  // at most what it still holds
  CHECK(t.refund(k, a, 1) == 0);  // never twice
  // Slot 0 leaves at slot 4: then nothing comes back, and none is needed.
  REQUIRE(t.try_acquire(k, 0, 1, ns(4 * sec)).admitted());  // slots 2 (1 + 1) and 4 (1): full
  keyed_ticket c;
  REQUIRE(t.try_acquire(std::uint64_t{9}, 0, 1, ns(0), c).admitted());
  REQUIRE(t.try_acquire(std::uint64_t{9}, 0, 1, ns(5 * sec)).admitted());  // slot 0 has left
  CHECK(t.refund(std::uint64_t{9}, c, 1) == 0);
  CHECK(c.units == 1);
  // Slot 2 is still counted at slot 4: b's unit comes back from it.
  CHECK(t.refund(k, b, 1) == 1);
  CHECK(t.try_acquire(k, 0, 1, ns(4 * sec)).admitted());
  // Erased between: the ticket gives nothing into the key's new entry.
  keyed_ticket d;
  REQUIRE(t.try_acquire(std::uint64_t{11}, 0, 2, ns(6 * sec), d).admitted());
  REQUIRE(t.erase(std::uint64_t{11}));
  REQUIRE(t.try_acquire(std::uint64_t{11}, 0, 3, ns(6 * sec)).admitted());
  CHECK(t.refund(std::uint64_t{11}, d, 2) == 0);
  CHECK(t.try_acquire(std::uint64_t{11}, 0, 1, ns(6 * sec)).status() == keyed_status::limited);
  // n == 0 leaves an empty ticket.
  keyed_ticket e;
  CHECK(t.try_acquire(std::uint64_t{12}, 0, 0, ns(6 * sec), e).admitted());
  CHECK(e.units == 0);
}

// A table restored from another's snapshot holds the same entries and claim
// generations, but the old table's tickets give nothing back into it.
TEST_CASE("keyed windows: a snapshotted table's tickets give nothing into the restored one", "[keyed]") {
  keyed_windows<manual_clock> t(8, {{3, std::chrono::seconds(3)}}, seed_from(0x7a03), ns(0));
  keyed_ticket a;
  REQUIRE(t.try_acquire(std::uint64_t{1}, 0, 2, ns(0), a).admitted());
  const std::string bytes = t.snapshot(ns(0), ns(0));
  keyed_windows<manual_clock> u(8, {{3, std::chrono::seconds(3)}}, seed_from(0x7a03), ns(0));
  REQUIRE(u.restore(bytes, ns(0), ns(0)) == account_restore_errc::ok);
  CHECK(u.refund(std::uint64_t{1}, a, 2) == 0);
  CHECK(u.try_acquire(std::uint64_t{1}, 0, 2, ns(0)).status() == keyed_status::limited);
  CHECK(t.refund(std::uint64_t{1}, a, 2) == 2);
}

// Random schedules: every key decision equals the exact model of its window
// (which never sees a request the account refused, nor units refunded
// later), a twin account asked exactly when the composite's was gives the
// same answers (a refused key touched nothing of the account), every
// account refusal gave all the key's units back, and every key's units
// admitted net of refunds keep the strict bound, across erasures and
// reclaims. Refunds of admitted requests come later, at any step, as for a
// request that was never sent.
TEST_CASE("keyed windows: admit_keyed against a model and a twin account", "[keyed]") {
  INFO(tgtest::seed_note());
  std::uint64_t refusals = 0, refunded = 0, admitted = 0;
  for (std::uint64_t trial = 0; trial < 40; ++trial) {
    tgtest::rng g(tgtest::seed_for(0x7a10 + trial));
    const std::size_t cap = static_cast<std::size_t>(g.between(1, 6));
    const std::uint64_t limit = g.between(1, 6);
    const std::int64_t window = static_cast<std::int64_t>(g.between(3, 5)) * sec;
    const std::int64_t width = (window + 2) / 3;
    const std::uint64_t rpm = g.between(2, 12);
    account<manual_clock> acc(small_account(rpm), ns(0)), twin(small_account(rpm), ns(0));
    keyed_windows<manual_clock> t(cap, {{limit, ns(window)}}, seed_from(0x7a20 + trial), ns(0), cap);
    std::map<std::uint64_t, model_window> live;
    std::map<std::uint64_t, std::vector<std::pair<std::int64_t, std::uint64_t>>> events;
    struct held {
      std::uint64_t key, incarnation;
      std::int64_t slot;
      std::size_t event;
      keyed_ticket ticket;
    };
    std::vector<held> tickets;
    std::vector<std::int64_t> requests;
    std::uint64_t incarnations = 0;
    std::int64_t now = 0, latest = 0, last_op = 0;
    auto sync = [&] {
      for (auto l = live.begin(); l != live.end();) {
        if (t.contains(l->first)) {
          ++l;
          continue;
        }
        REQUIRE(l->second.fresh_at(last_op / width));  // reclaimed only once fresh
        l = live.erase(l);
      }
    };
    for (int step = 0; step < 600; ++step) {
      INFO("trial " << trial << " step " << step << " cap " << cap << " now " << now);
      now += static_cast<std::int64_t>(g.between(0, 2 * sec));
      if (g.chance(8)) now = now > 2 * sec ? now - static_cast<std::int64_t>(g.between(0, 2 * sec)) : now;
      sync();
      if (!tickets.empty() && g.chance(4)) {  // a request never sent: its key units back
        const std::size_t i = static_cast<std::size_t>(g.between(0, tickets.size() - 1));
        held h = std::move(tickets[i]);
        tickets.erase(tickets.begin() + static_cast<std::ptrdiff_t>(i));
        const std::uint64_t ask = g.between(1, h.ticket.units + 1);
        const std::uint64_t before = h.ticket.units;
        const std::uint64_t got = t.refund(h.key, h.ticket, ask);
        std::uint64_t want = 0;
        auto it = live.find(h.key);
        if (it != live.end() && it->second.incarnation == h.incarnation && it->second.tag - h.slot < 4) {
          std::uint64_t& c = it->second.c[it->second.tag - h.slot];
          want = std::min({ask, before, c});
          c -= want;
          events[h.key][h.event].second -= want;
        }
        REQUIRE(got == want);
        CHECK(h.ticket.units == before - got);
        refunded += got;
        continue;
      }
      const std::uint64_t key = g.between(0, 11);
      auto it = live.find(key);
      REQUIRE(t.contains(key) == (it != live.end()));
      const std::int64_t s = now / width;
      last_op = now;
      if (g.chance(10)) {
        REQUIRE(t.erase(key) == (it != live.end()));
        if (it != live.end()) live.erase(it);
        events.erase(key);  // an explicit reset: the bound starts again
        continue;
      }
      const std::uint64_t n = g.between(0, limit + 1);
      const request r = tgtest::req(10, 10);
      auto x = admit_keyed(t, acc, key, 0, n, r, ns(now));
      // The model's answer for the key.
      bool key_admits = false;
      if (n == 0) {
        key_admits = true;
      } else if (n > limit) {
        CHECK(x.key.result().never());
      } else {
        bool room = it != live.end();
        if (!room) {
          room = live.size() < cap;
          for (const auto& l : live) room = room || l.second.fresh_at(s);
        }
        if (!room) {
          REQUIRE(x.key.status() == keyed_status::table_full);
        } else {
          if (it == live.end()) {  // the model claims it only as the table does: on a try
            latest = now > latest ? now : latest;
            model_window fresh;
            fresh.tag = latest / width;
            fresh.incarnation = ++incarnations;
            it = live.emplace(key, fresh).first;
          }
          model_window& m = it->second;
          if (s < m.tag) {
            REQUIRE(x.key.result().why() == reason::stale_time);
          } else {
            model_window at = m;
            at.advance(s);
            key_admits = at.sum() + n <= limit;
            if (key_admits) {
              m = at;
              m.c[0] += n;  // taken back below if the account refuses
            }
          }
        }
      }
      REQUIRE(x.key.admitted() == key_admits);
      REQUIRE(x.account_asked == key_admits);
      if (!key_admits) {
        sync();
        continue;
      }
      auto ta = twin.try_admit(r, ns(now));
      REQUIRE(x.account.decision.admitted() == ta.decision.admitted());
      CHECK(x.account.decision.retry_after() == ta.decision.retry_after());
      if (!x.account.decision.admitted()) {
        ++refusals;
        CHECK(x.given_back == n);  // one thread, one `now`: always all of them
        CHECK(x.key_ticket.units == 0);
        if (n > 0) live[key].c[0] -= n;
        sync();
        continue;
      }
      ++admitted;
      requests.push_back(now);
      x.account.lease.settle(usage{10, 0, 10, 0, 0}, ns(now));
      ta.lease.settle(usage{10, 0, 10, 0, 0}, ns(now));
      if (n > 0) {
        CHECK(x.key_ticket.units == n);
        events[key].emplace_back(now, n);
        tickets.push_back(held{key, live[key].incarnation, s, events[key].size() - 1, std::move(x.key_ticket)});
      }
      sync();
    }
    for (const auto& kv : events) CHECK(tgtest::max_window_sum(kv.second, window) <= limit);
    std::vector<std::pair<std::int64_t, std::uint64_t>> reqs;
    for (std::int64_t at : requests) reqs.emplace_back(at, 1);
    CHECK(tgtest::max_window_sum(reqs, 60 * sec) <= rpm);
  }
  // The schedules reached every branch that matters.
  CHECK(refusals > 100);
  CHECK(refunded > 50);
  CHECK(admitted > 100);
}

// Threads admit through a small account (RPM 40) on 12 keys (at most 3 in
// any 1 s each) with a shared clock, some of them stalling between drawing
// their `now` and the call (their give-backs lag the key's latest time),
// one erasing keys 0-2 now and then, and some admitted requests refunded
// later as never sent. Every key that was never erased keeps the strict
// bound exactly for its units admitted net of give-backs and refunds: no
// skew allowance, as the header states. An account refusal gives back at
// most what its key took (less only when the key's window moved W on).
TEST_CASE("keyed windows: admit_keyed under threads keeps both bounds exactly", "[keyed]") {
  const std::int64_t window = sec;
  const std::uint64_t limit = 3, rpm = 40;
  account<manual_clock> acc(small_account(rpm), ns(0));
  keyed_windows<manual_clock> keys(32, {{limit, ns(window)}}, seed_from(0x7a30), ns(0), 8);
  const request r = tgtest::req(10, 10);
  std::atomic<std::int64_t> clock{0};  // relaxed: a counter of test time only
  const int threads = 3;
  const std::uint64_t ops = 20000 * tgtest::stress_factor();
  struct ev {
    std::uint64_t key;
    std::int64_t at;
    std::uint64_t n;
  };
  std::vector<std::vector<ev>> units(threads);     // per key: units still counted for the key
  std::vector<std::vector<std::int64_t>> reqs(threads);  // the account's admissions
  std::vector<std::set<std::uint64_t>> erased(threads);
  std::vector<std::uint64_t> over(threads, 0), refused(threads, 0), partial(threads, 0), back(threads, 0);
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      const std::size_t me = static_cast<std::size_t>(i);
      tgtest::rng g(tgtest::seed_for(0x7a40 + me));
      for (std::uint64_t j = 0; j < ops; ++j) {
        const std::int64_t now =
            clock.fetch_add(static_cast<std::int64_t>(g.between(1, 20000000)), std::memory_order_relaxed);
        if (g.chance(10)) std::this_thread::yield();  // a stall: this `now` lags the others'
        const std::uint64_t key = g.between(0, 11);
        if (i == 0 && key < 3 && g.chance(8)) {
          if (keys.erase(key)) erased[me].insert(key);
          continue;
        }
        const std::uint64_t n = g.between(1, 2);
        auto x = admit_keyed(keys, acc, key, 0, n, r, ns(now));
        if (x.admitted()) {
          reqs[me].push_back(now);
          x.account.lease.settle(usage{10, 0, 10, 0, 0}, ns(now));
          std::uint64_t kept = n;
          if (g.chance(6)) {
            const std::uint64_t got = keys.refund(key, x.key_ticket, n);
            back[me] += got;
            kept -= got;
          }
          if (kept > 0) units[me].push_back({key, now, kept});
        } else if (x.account_asked) {
          ++refused[me];
          if (x.given_back > n) ++over[me];
          if (x.given_back < n) {
            ++partial[me];
            units[me].push_back({key, now, n - x.given_back});  // still counted for the key
          }
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
  for (const auto& log : units)
    for (const ev& e : log) per_key[e.key].emplace_back(e.at, e.n);
  for (const auto& log : reqs)
    for (std::int64_t at : log) requests.emplace_back(at, 1);
  std::uint64_t worst = 0, checked = 0;
  for (auto& kv : per_key) {
    if (gone.count(kv.first) != 0) continue;
    ++checked;
    const std::uint64_t m = tgtest::max_window_sum(kv.second, window);
    if (m > worst) worst = m;
  }
  std::uint64_t total_over = 0, total_refused = 0, total_partial = 0, total_back = 0;
  for (int i = 0; i < threads; ++i) {
    const std::size_t me = static_cast<std::size_t>(i);
    total_over += over[me];
    total_refused += refused[me];
    total_partial += partial[me];
    total_back += back[me];
  }
  INFO("account refusals " << total_refused << ", partial give-backs " << total_partial << ", refunded "
                           << total_back << ", keys checked " << checked);
  CHECK(worst <= limit);
  CHECK(checked >= 9);
  CHECK(total_over == 0);
  CHECK(total_refused > 1000);  // the account refused often: many give-backs were exercised
  CHECK(total_back > 0);
  CHECK(tgtest::max_window_sum(requests, 60 * sec) <= rpm);
}

// One hot key, its give-backs racing its admissions: threads admit through
// an account that admits them all and refund half of what they took at once
// (requests never sent), with a clock that keeps the key saturated. The
// units admitted net of refunds keep the strict bound exactly.
TEST_CASE("keyed windows: give-backs racing admissions on one key keep the bound", "[keyed]") {
  const std::int64_t window = sec;
  const std::uint64_t limit = 4;
  account<manual_clock> acc(small_account(1000000000), ns(0));
  keyed_windows<manual_clock> keys(4, {{limit, ns(window)}}, seed_from(0x7a50), ns(0), 4);
  const request r = tgtest::req(1, 1);
  std::atomic<std::int64_t> clock{0};  // relaxed: a counter of test time only
  const int threads = 3;
  const std::uint64_t ops = 40000 * tgtest::stress_factor();
  std::vector<std::vector<std::pair<std::int64_t, std::uint64_t>>> kept(threads);
  std::vector<std::uint64_t> back(threads, 0);
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      const std::size_t me = static_cast<std::size_t>(i);
      tgtest::rng g(tgtest::seed_for(0x7a60 + me));
      for (std::uint64_t j = 0; j < ops; ++j) {
        const std::int64_t now =
            clock.fetch_add(static_cast<std::int64_t>(g.between(0, 200000000)), std::memory_order_relaxed);
        auto x = admit_keyed(keys, acc, std::uint64_t{1}, 0, 1, r, ns(now));
        if (!x.admitted()) continue;
        x.account.lease.settle(usage{1, 0, 1, 0, 0}, ns(now));
        if (g.chance(50)) {
          const std::uint64_t got = keys.refund(std::uint64_t{1}, x.key_ticket, 1);
          back[me] += got;
          if (got == 1) continue;
        }
        kept[me].emplace_back(now, 1);
      }
    });
  }
  for (std::thread& th : pool) th.join();
  INFO(tgtest::seed_note());
  std::vector<std::pair<std::int64_t, std::uint64_t>> all;
  std::uint64_t refunds = 0;
  for (int i = 0; i < threads; ++i) {
    const std::size_t me = static_cast<std::size_t>(i);
    all.insert(all.end(), kept[me].begin(), kept[me].end());
    refunds += back[me];
  }
  INFO("refunded " << refunds << ", kept " << all.size());
  CHECK(tgtest::max_window_sum(all, window) <= limit);
  CHECK(refunds > 10000);
  CHECK(all.size() > 10000);
}
