// The interleaving checker on the account: tiny limits (no per-thread
// credit below 1,024 units), strict windows, the concurrency slot table with
// its reaper, and a budget, every execution against exact logs.
#include "../catch_compat.hpp"
#include "../account_support.hpp"
#include "explore.hpp"

#include <tollgate/account.hpp>
#include <tollgate/account/shared_credit.hpp>
#include <tollgate/account/shared_slot_cache.hpp>
#include <tollgate/account/shared_slots.hpp>
#include <tollgate/models.hpp>

using namespace tollgate;
using tgcheck::bounds;
using tgcheck::execution;
using tgcheck::scheduler;
using tgcheck::supplied_clock;
using tgtest::ns;

namespace {

constexpr std::int64_t sec = 1000000000;
using acct = account<manual_clock>;

using tgtest::k26;
using tgtest::req;

struct account_op {
  enum kind { admit, settle, failed, drop } k = admit;
  std::uint64_t prompt = 10, max = 10;
};

account_config tiny(bool reaper) {
  account_config c;
  c.model = server_model::sliding_log;  // strict windows
  c.concurrency = limit(2);
  c.rpm = limit(2);
  c.tpm = limit(50);
  c.tpd = limit::unlimited();
  c.max_request_tokens = 40;
  c.lease_timeout = reaper ? ns(30 * sec) : ns(0);
  return c;
}

// Oracle: no request window holds more than rpm admissions, no token
// window more than tpm reserved tokens (usage never exceeds a reservation
// and unused tokens stay counted), the settled cost stays within the budget,
// and without a reaper the leases held (a ghost count raised after an
// admission, lowered before a release) never pass the concurrency limit.
// When every thread is done the account holds exactly the leases still held.
struct account_exec : execution {
  account_config cfg;
  acct a;
  supplied_clock clk;
  std::vector<std::pair<std::int64_t, std::uint64_t>> reqs, toks;
  std::uint64_t rpm_limit, tpm_limit;
  std::int64_t settled_cost = 0;
  std::uint64_t ghost = 0;
  std::string broken;
  struct per_thread {
    admission<manual_clock, usd_tag> ad;
    bool holding = false;
    bool admitting = false;  // inside try_admit (a stop there may leave a slot taken)
    bool releasing = false;
  };
  std::vector<per_thread> th;
  account_exec(scheduler& s, const account_config& c, const std::vector<std::vector<account_op>>& scripts,
               std::vector<std::int64_t> jumps)
      : cfg(c), a(c, ns(0)), rpm_limit(*c.rpm.value()), tpm_limit(*c.tpm.value()), th(scripts.size()) {
    clk.jumps = std::move(jumps);
    for (std::size_t i = 0; i < scripts.size(); ++i)
      bodies.push_back([this, &s, i, sc = scripts[i]] {
        per_thread& me = th[i];
        for (const account_op& op : sc) {
          if (op.k == account_op::admit) {
            if (me.holding) continue;
            const std::int64_t t = clk.next(s);
            me.admitting = true;
            me.ad = a.try_admit(req(op.prompt, op.max), ns(t));
            me.admitting = false;
            s.note("try_admit(" + std::to_string(op.prompt) + "+" + std::to_string(op.max) + ", " + std::to_string(t) +
                   "): " + (me.ad ? "admitted" : "refused"));
            if (!me.ad) continue;
            me.holding = true;
            reqs.emplace_back(t, 1);
            toks.emplace_back(t, op.prompt + op.max);
            ++ghost;
            if (cfg.lease_timeout == ns(0) && ghost > *cfg.concurrency.value() && broken.empty())
              broken = "account let " + std::to_string(ghost) + " leases be held, concurrency " +
                       std::to_string(*cfg.concurrency.value());
          } else if (me.holding) {
            --ghost;
            me.releasing = true;
            const std::int64_t t = clk.next(s);
            if (op.k == account_op::settle) {
              const settle_result r = me.ad.lease.settle(usage{op.prompt, 0, op.max, 0, 0}, ns(t));
              settled_cost += r.cost.nanos();
            } else if (op.k == account_op::failed) {
              me.ad.lease.settle_failed(ns(t));
            } else {
              me.ad.lease = admission<manual_clock, usd_tag>{}.lease;  // dropped: releases the slot, keeps the reservations
            }
            me.releasing = false;
            me.holding = false;
            s.note(op.k == account_op::settle ? "settle" : op.k == account_op::failed ? "settle_failed" : "drop");
          }
        }
      });
  }
  std::string check(const scheduler::outcome& o) override {
    if (!broken.empty()) return broken;
    const std::uint64_t r = tgtest::max_window_sum(reqs, cfg.request_window.count());
    if (r > rpm_limit)
      return "account admitted " + std::to_string(r) + " requests in one request window, rpm " + std::to_string(rpm_limit);
    const std::uint64_t t = tgtest::max_window_sum(toks, cfg.token_window.count());
    if (t > tpm_limit)
      return "account admitted " + std::to_string(t) + " tokens in one token window, tpm " + std::to_string(tpm_limit);
    if (cfg.budget && settled_cost > cfg.budget->nanos())
      return "account settled " + std::to_string(settled_cost) + " against a budget of " +
             std::to_string(cfg.budget->nanos());
    // Units certainly, and possibly, still held. A thread stopped inside an
    // admission may have taken its unit and a chunk of credit (limit / 1024
    // for limits of 1,024 and more) before recording it: a stopped process
    // keeps those.
    const std::uint64_t conc = *cfg.concurrency.value();
    const std::uint64_t chunk = conc >= 1024 ? conc / 1024 : 0;
    std::uint64_t lo = 0, hi = 0;
    for (std::size_t i = 0; i < th.size(); ++i) {
      if (th[i].holding && !th[i].releasing) ++lo;
      if (th[i].holding) ++hi;
      else if (o.crashed[i] && th[i].releasing) ++hi;
      else if (o.crashed[i] && th[i].admitting) hi += 1 + chunk;
    }
    const std::uint64_t f = a.in_flight();
    // The reaper may have taken slots back from leases still held.
    if (f > hi || (cfg.lease_timeout == ns(0) && f < lo))
      return "account has " + std::to_string(f) + " in flight, the threads hold " + std::to_string(lo) + ".." +
             std::to_string(hi);
    return "";
  }
};

tgcheck::factory account_factory(account_config c, std::vector<std::vector<account_op>> scripts,
                                 std::vector<std::int64_t> jumps) {
  return [=](scheduler& s) -> std::unique_ptr<execution> {
    return std::make_unique<account_exec>(s, c, scripts, jumps);
  };
}

// The request and token windows are a minute in 15 sub-windows of 4 s.
const std::vector<std::int64_t> jumps = {0, 1, 4 * sec, 64 * sec, -4 * sec};

}  // namespace

TEST_CASE("checker: account with tiny limits, exhaustive", "[checker][account]") {
  scheduler s(2);
  bounds b;
  b.preemptions = tgcheck::large() ? 2 : 1;
  const account_op ad, st{account_op::settle}, dr{account_op::drop};
  const std::vector<std::int64_t> few = {0, 64 * sec};
  const auto r = tgcheck::explore_exhaustive(s, "account rpm 2 tpm 50 conc 2, 2 threads", 2, b,
                                             account_factory(tiny(false), {{ad, st, ad}, {ad, dr, ad}}, few));
  CHECK(r.complete);
  CHECK(r.failure == "");
}

TEST_CASE("checker: account with tiny limits, random schedules", "[checker][account]") {
  const std::uint64_t runs = tgcheck::large() ? 100000 : 10000;
  const std::uint64_t seed = tgtest::seeds(1).front();
  const account_op ad, st{account_op::settle}, fl{account_op::failed}, dr{account_op::drop};
  const account_op big{account_op::admit, 20, 20};
  bounds b;
  b.preemptions = 3;
  b.crashes = 1;
  b.steps = 5000;
  {
    scheduler s(3);
    const auto r = tgcheck::explore_random(
        s, "account windows + concurrency, 3 threads", 3, b,
        account_factory(tiny(false), {{ad, st, ad, fl, ad}, {big, dr, ad, st}, {ad, fl, big, st}}, jumps), runs,
        seed + 505, 4, 400, 30);
    CHECK(r.failure == "");
  }
  {
    // Leases time out after 30 s: the reaper scans the slot table when the
    // account runs out of slots, racing the holders' releases.
    scheduler s(3);
    account_config c = tiny(true);
    c.concurrency = limit(1);
    const std::vector<std::int64_t> long_jumps = {0, 1, 4 * sec, 31 * sec, 64 * sec};
    const auto r = tgcheck::explore_random(
        s, "account slot table and reaper, 3 threads", 3, b,
        account_factory(c, {{ad, st, ad, dr}, {ad, fl, ad, st}, {ad, dr, ad, fl}}, long_jumps), runs, seed + 606, 4,
        400, 30);
    CHECK(r.failure == "");
  }
  {
    // A budget for two and a half worst cases.
    scheduler s(3);
    account_config c = tiny(false);
    const auto wc = worst_case_cost<usd_tag>(*k26(), 10, 10);
    REQUIRE(wc);
    c.budget = usd::from_nanos(wc.total.nanos() * 5 / 2);
    const auto r = tgcheck::explore_random(
        s, "account budget, 3 threads", 3, b,
        account_factory(c, {{ad, st, ad, st}, {ad, st, ad, dr}, {ad, fl, ad, st}}, jumps), runs, seed + 707, 4, 400,
        30);
    CHECK(r.failure == "");
  }
  {
    // Limits of 1,024 units: each thread takes window and concurrency units
    // a chunk at a time and spends them without touching shared state.
    scheduler s(3);
    account_config c = tiny(false);
    c.rpm = limit(1024);
    c.tpm = limit(1024);
    c.concurrency = limit(1024);
    c.max_request_tokens = 1024;
    const account_op large{account_op::admit, 300, 200}, small{account_op::admit, 100, 100};
    const auto r = tgcheck::explore_random(
        s, "account per-thread credit, 3 threads", 3, b,
        account_factory(c, {{large, st, small, st, large}, {small, dr, large, st, small}, {large, fl, small, large}}, jumps), runs,
        seed + 808, 4, 600, 30);
    CHECK(r.failure == "");
  }
}

namespace {

// The shared account's slot words: threads (each a process with its own
// identity) take and give back; one may stop forever at any step, as a
// killed process. A word still held is then the stopped one's: its owner
// word names it with the word's generation (a liveness check frees it at the
// next scan) or names no holding of that generation (killed between its CAS
// and its name: the deadline frees it); never another process with the
// word's generation.
struct slots_exec : execution {
  tollgate::detail::shared_slots<2> sl{};
  std::size_t threads;
  slots_exec(scheduler& s, std::size_t n, unsigned rounds, std::uint64_t limit) : threads(n) {
    sl.init(limit, ns(0), ns(0));
    for (std::size_t i = 0; i < n; ++i)
      bodies.push_back([this, &s, i, rounds] {
        for (unsigned r = 0; r < rounds; ++r) {
          std::size_t slot = 0;
          std::uint64_t stamp = 0;
          if (!sl.take(ns(static_cast<std::int64_t>(r)), i, i + 1, slot, stamp)) continue;
          s.note("took slot " + std::to_string(slot));
          (void)sl.give(slot, stamp);
        }
      });
  }
  std::string check(const scheduler::outcome& o) override {
    using tollgate::detail::slot_word;
    for (std::size_t j = 0; j < sl.limit; ++j) {
      const std::uint64_t w = sl.words[j].load(std::memory_order_relaxed);      // relaxed: all threads stopped
      const std::uint64_t own = sl.owners[j].load(std::memory_order_relaxed);  // relaxed: as above
      if (!slot_word::held(w)) continue;
      const std::uint64_t who = own >> slot_word::gen_bits;
      if ((own & slot_word::gen_mask) != slot_word::generation(w)) continue;  // unnamed: the deadline's
      if (who == 0 || who > threads || !o.crashed[static_cast<std::size_t>(who - 1)])
        return "slot " + std::to_string(j) + " is held in the name of " + std::to_string(who) + ", which did not stop";
    }
    return "";
  }
};

tgcheck::factory slots_factory(std::size_t n, unsigned rounds, std::uint64_t limit) {
  return [=](scheduler& s) -> std::unique_ptr<execution> { return std::make_unique<slots_exec>(s, n, rounds, limit); };
}

}  // namespace

TEST_CASE("checker: shared slots, a process killed at any step leaves only slots named for it", "[checker][account]") {
  bounds b;
  b.preemptions = tgcheck::large() ? 3 : 2;
  b.crashes = 1;
  {
    scheduler s(2);
    const auto r = tgcheck::explore_exhaustive(s, "shared slots limit 1, 2 processes x 2 takes, one killed", 2, b,
                                               slots_factory(2, 2, 1));
    CHECK(r.complete);
    CHECK(r.failure == "");
  }
  {
    scheduler s(3);
    bounds rb = b;
    rb.preemptions = 3;
    rb.steps = 2000;
    const auto r = tgcheck::explore_random(s, "shared slots limit 2, 3 processes x 3 takes, one killed", 3, rb,
                                           slots_factory(3, 3, 2), tgcheck::large() ? 100000 : 10000,
                                           tgtest::seeds(1).front() + 909, 4, 200, 30);
    CHECK(r.failure == "");
  }
}

namespace {

// The shared account's slot words against a liveness check: processes take
// the one word of a limit of 1 at times in different milliseconds, give it
// back, and finish (an exited process: the check calls it dead); one that
// finds the word held scans with that check, as the account does, and so
// does a scanner (another process). A scan
// must never free the word of a holder that is running: a live holder whose
// release fails, or a take while another live holder holds the word, is a
// failure. It fails when the owner word is named before the CAS and a loser
// puts back what it replaced (three takers: the last loser restores the
// first one's name over the winner's) and when the generation starts at 0
// again in a later millisecond (the previous holder's name matches the next
// holding until its holder names itself).
struct slots_live_exec : execution {
  tollgate::detail::shared_slots<2> sl{};
  std::size_t holder = 0;    // 1 + the thread holding word 0, 0: none (a ghost: threads run one at a time)
  bool exited[4] = {};       // finished: the liveness check calls it dead
  std::string broken;
  bool alive(scheduler& s, std::uint64_t who) {
    const std::size_t t = static_cast<std::size_t>(who - 1);
    return t >= 4 || (!exited[t] && !s.crashed(t));
  }
  slots_live_exec(scheduler& s, std::size_t n, unsigned rounds, unsigned scans) {
    sl.init(1, ns(0), ns(0));  // no deadline: only the liveness check frees a word
    auto check = [this, &s](std::uint64_t who) { return alive(s, who); };
    for (std::size_t i = 0; i < n; ++i)
      bodies.push_back([this, &s, i, rounds, check] {
        for (unsigned r = 0; r < rounds; ++r) {
          // Each thread and round in its own millisecond.
          const nanoseconds now = ns(static_cast<std::int64_t>((r * 4 + i) * 1000000 + 1));
          std::size_t slot = 0;
          std::uint64_t stamp = 0;
          if (!sl.take(now, 0, i + 1, slot, stamp)) {
            std::uint64_t by_deadline = 0, by_death = 0;
            sl.reap(now, 0, check, by_deadline, by_death);
            continue;
          }
          if (holder != 0 && !s.crashed(holder - 1) && !exited[holder - 1] && broken.empty())
            broken = "word taken by " + std::to_string(i + 1) + " while " + std::to_string(holder) + " holds it";
          holder = i + 1;
          s.note("took the word");
          if (holder == i + 1) holder = 0;  // before the release: never counted free while held
          const bool gave = sl.give(slot, stamp);
          if (!gave && broken.empty())
            broken = "the word of " + std::to_string(i + 1) + ", running, was freed by a scan";
        }
        exited[i] = true;
      });
    if (scans > 0)
      bodies.push_back([this, scans, check] {
        for (unsigned r = 0; r < scans; ++r) {
          std::uint64_t by_deadline = 0, by_death = 0;
          sl.reap(ns(static_cast<std::int64_t>(100 + r) * 1000000), 0, check, by_deadline, by_death);
        }
      });
  }
  std::string check(const scheduler::outcome&) override { return broken; }
};

tgcheck::factory slots_live_factory(std::size_t n, unsigned rounds, unsigned scans) {
  return [=](scheduler& s) -> std::unique_ptr<execution> {
    return std::make_unique<slots_live_exec>(s, n, rounds, scans);
  };
}

}  // namespace

TEST_CASE("checker: shared slots, a scan never frees the word of a running holder", "[checker][account]") {
  bounds b;
  b.preemptions = tgcheck::large() ? 4 : 3;
  b.crashes = 1;
  {
    scheduler s(2);
    const auto r = tgcheck::explore_exhaustive(s, "shared slots live: 2 processes x 2 takes, scans", 2, b,
                                               slots_live_factory(2, 2, 0));
    CHECK(r.complete);
    CHECK(r.failure == "");
  }
  {
    // Three takers of one word: the put-back race of names written before
    // the CAS needs four preemptions (three names, the winner's CAS, then
    // the losers, the last restoring the first loser's name), and then a
    // scan by a taker that finds the word held after that loser exited.
    scheduler s(3);
    bounds eb = b;
    eb.preemptions = 4;
    eb.crashes = 0;
    const auto r = tgcheck::explore_exhaustive(s, "shared slots live: 3 processes x 2 takes, scans", 3, eb,
                                               slots_live_factory(3, 2, 0));
    CHECK(r.complete);
    CHECK(r.failure == "");
  }
  {
    scheduler s(3);
    bounds rb = b;
    rb.preemptions = 4;
    const auto r = tgcheck::explore_random(s, "shared slots live: 3 processes x 3 takes, scans", 3, rb,
                                           slots_live_factory(3, 3, 0), tgcheck::large() ? 100000 : 20000,
                                           tgtest::seeds(1).front() + 1212, 5, 200, 30);
    CHECK(r.failure == "");
  }
}

namespace {

// The shared account's credit lines (account/shared_credit.hpp): processes
// claim a line, write it (the claimer's forget, as a user's stores, then a
// mark of its own, as a refill), check the mark and release the line;
// reapers whose liveness check calls the stopped ones dead free their
// lines, racing the claims and each other. A line must never have two live
// users or a writer besides its user: a claim that wins a line still used
// by a thread that did not stop, or a mark gone before its user released
// the line (a reaper's forget landing on it), is a failure. When all are
// done, a held line names a stopped thread.
struct lines_exec : execution {
  using window = sliding_window<manual_clock>;
  using lines_t = tollgate::detail::shared_credit_lines<window, 1>;
  lines_t ln{};
  tollgate::detail::thread_credit<window> credit;
  std::size_t users_n;
  std::size_t user[1] = {0};  // 1 + the thread using the line, 0: none (a ghost: threads run one at a time)
  std::string broken;
  lines_exec(scheduler& s, std::size_t users, unsigned rounds, std::size_t reapers, unsigned reaps) : users_n(users) {
    ln.init();
    credit.place(ln.lines, 1);
    for (std::size_t i = 0; i < users; ++i)
      bodies.push_back([this, &s, i, rounds] {
        for (unsigned r = 0; r < rounds; ++r) {
          std::uint64_t word = 0;
          const std::size_t l = ln.claim(i + 1, i, word);
          if (l == lines_t::none) continue;
          if (user[l] != 0 && !s.crashed(user[l] - 1) && broken.empty())
            broken = "line " + std::to_string(l) + " claimed by " + std::to_string(i + 1) + " while " +
                     std::to_string(user[l]) + " uses it";
          user[l] = i + 1;
          s.note("claimed line " + std::to_string(l));
          credit.forget(static_cast<unsigned>(l));
          auto& left = ln.lines[l].c[0].left;
          const std::uint64_t mark = 1000 + i;
          left.store(mark, std::memory_order_relaxed);  // relaxed: this thread's own line
          if (left.load(std::memory_order_relaxed) != mark && broken.empty())  // relaxed: as above
            broken = "line " + std::to_string(l) + " was written by another while " + std::to_string(i + 1) +
                     " used it";
          if (user[l] == i + 1) user[l] = 0;  // before the release: never counted free while in use
          (void)ln.release(l, word);
        }
      });
    // The reapers: other processes whose check knows who stopped.
    for (std::size_t k = 0; k < reapers; ++k)
      bodies.push_back([this, &s, reaps] {
        for (unsigned r = 0; r < reaps; ++r)
          (void)ln.reap(credit, [&s](std::uint64_t who) { return !s.crashed(static_cast<std::size_t>(who - 1)); });
      });
  }
  std::string check(const scheduler::outcome& o) override {
    if (!broken.empty()) return broken;
    const std::uint64_t who = ln.owner(0);
    if (who != 0 && (who > users_n || !o.crashed[static_cast<std::size_t>(who - 1)]))
      return "line 0 is held in the name of " + std::to_string(who) + ", which did not stop";
    return "";
  }
};

tgcheck::factory lines_factory(std::size_t users, unsigned rounds, std::size_t reapers = 1) {
  const unsigned reaps = reapers == 1 ? rounds + 1 : 1;
  return [=](scheduler& s) -> std::unique_ptr<execution> {
    return std::make_unique<lines_exec>(s, users, rounds, reapers, reaps);
  };
}

}  // namespace

TEST_CASE("checker: shared credit lines, a claim racing a kill and the reaper never gives a line two live users",
          "[checker][account]") {
  bounds b;
  b.preemptions = tgcheck::large() ? 3 : 2;
  b.crashes = 1;
  {
    scheduler s(3);
    const auto r = tgcheck::explore_exhaustive(s, "credit lines: 2 processes x 2 claims + reaper, one killed", 3, b,
                                               lines_factory(2, 2));
    CHECK(r.complete);
    CHECK(r.failure == "");
  }
  {
    // Two reapers: only the one whose CAS takes the dead owner's word may
    // write the line (a reaper that forgot first, then lost the CAS, could
    // wipe the line of the live owner that claimed it meanwhile).
    scheduler s(4);
    const auto r = tgcheck::explore_exhaustive(s, "credit lines: 2 processes x 1 claim + 2 reapers, one killed", 4, b,
                                               lines_factory(2, 1, 2));
    CHECK(r.complete);
    CHECK(r.failure == "");
  }
  {
    scheduler s(4);
    bounds rb = b;
    rb.preemptions = 3;
    rb.steps = 2000;
    const auto r = tgcheck::explore_random(s, "credit lines: 3 processes x 3 claims + reaper, one killed", 4, rb,
                                           lines_factory(3, 3), tgcheck::large() ? 100000 : 10000,
                                           tgtest::seeds(1).front() + 1010, 4, 200, 30);
    CHECK(r.failure == "");
  }
}

namespace {

// The shared account's kept slot words (account/shared_slot_cache.hpp):
// processes (one shelf each, keeping one word) admit and settle on a limit of
// one word with a deadline; a reaper scans at later times with a liveness
// check that calls exited and killed processes dead; one process may be
// killed at any step. Two live processes' leases are never in flight on one
// word unless a scan that had not ended before one of them was taken ran at
// least lease_timeout after its admission (a hung lease's reclaim: the
// stated L + 1 case), and no lease's word is freed under it by an earlier
// scan; at
// the end every word still held is named for a killed
// process or for none (the others gave theirs back). It fails when a kept
// word is reused without its renewal in a later millisecond (a scan at 5 ms
// frees a lease admitted at 3 ms on a word stamped at 1 ms) and when the
// reuse ignores a scan's free (two leases on one word).
struct kept_slots_exec : execution {
  static constexpr std::int64_t ms = 1000000, timeout = 4 * ms;
  tollgate::detail::shared_slots<2> sl{};
  tollgate::detail::shared_slot_cache cache[3];
  std::size_t procs;
  std::size_t holder = 0;       // 1 + the process whose lease is in flight on word 0 (ghost)
  std::int64_t admitted = 0;    // that lease's admission time
  std::int64_t latest_scan = -1;  // the latest time a scan started at (ghost; scans go forward in time)
  unsigned scans_started = 0, scans_done = 0;
  unsigned mark = 0;  // scans_done at the in-flight lease's admission
  // A scan that could free a lease admitted at `t` after `done` scans had
  // ended: one not ended by then, at least lease_timeout after it.
  bool may_expire(std::int64_t t, unsigned done) const { return scans_started > done && latest_scan - t >= timeout; }
  bool exited[3] = {};
  std::string broken;
  bool alive(scheduler& s, std::uint64_t who) {
    const std::size_t t = static_cast<std::size_t>(who - 1);
    return t >= procs || (!exited[t] && !s.crashed(t));
  }
  kept_slots_exec(scheduler& s, std::size_t n, unsigned scans, bool twice_at_first) : procs(n) {
    sl.init(1, ns(timeout), ns(0));
    auto check = [this, &s](std::uint64_t who) { return alive(s, who); };
    // Rounds at 1 ms (twice: a reuse in the stamp's millisecond) and 3 ms
    // (a reuse that must renew).
    std::vector<std::int64_t> at{ms, 3 * ms};
    if (twice_at_first) at.insert(at.begin(), ms);
    for (std::size_t i = 0; i < n; ++i) {
      cache[i].cap = 1;
      cache[i].set_owned(0);
      bodies.push_back([this, &s, i, at] {
        for (std::int64_t t : at) {
          std::size_t slot = 0;
          std::uint64_t stamp = 0;
          const unsigned my_mark = scans_done;  // before the take: a scan ended by then cannot free it
          if (!cache[i].take(0, sl, i + 1, ns(t), slot, stamp) && !sl.take(ns(t), 0, i + 1, slot, stamp)) continue;
          // Two leases on one word: one of them must be a hung lease's that a
          // scan could reclaim (this one's too: its CAS may predate the other's).
          if (holder != 0 && holder != i + 1 && !s.crashed(holder - 1) && !may_expire(admitted, mark) &&
              !may_expire(t, my_mark) && broken.empty())
            broken = "word handed to " + std::to_string(i + 1) + " at " + std::to_string(t) + " while the lease of " +
                     std::to_string(holder) + " from " + std::to_string(admitted) + " is in flight";
          holder = i + 1;
          admitted = t;
          mark = my_mark;
          s.note("admitted");
          // relaxed: a look of the test's own. Freed under the lease: only by
          // a scan at least lease_timeout after its admission.
          if (sl.words[slot].load(std::memory_order_relaxed) != stamp && !may_expire(t, my_mark) && broken.empty())
            broken = "the lease of " + std::to_string(i + 1) + " from " + std::to_string(t) +
                     " was freed by a scan at " + std::to_string(latest_scan);
          if (holder == i + 1) holder = 0;  // before the settle: never counted free while in flight
          if (!cache[i].put(0, sl, slot, stamp)) (void)sl.give(slot, stamp);
        }
        cache[i].give_all(sl);
        exited[i] = true;
      });
    }
    if (scans > 0)
      bodies.push_back([this, scans, check] {
        for (unsigned r = 0; r < scans; ++r) {
          const std::int64_t t = (5 + 3 * static_cast<std::int64_t>(r)) * ms;
          latest_scan = t;
          ++scans_started;
          std::uint64_t by_deadline = 0, by_death = 0;
          sl.reap(ns(t), 0, check, by_deadline, by_death);
          ++scans_done;
        }
      });
  }
  std::string check(const scheduler::outcome& o) override {
    if (!broken.empty()) return broken;
    using tollgate::detail::slot_word;
    const std::uint64_t w = sl.words[0].load(std::memory_order_relaxed);      // relaxed: all threads stopped
    const std::uint64_t own = sl.owners[0].load(std::memory_order_relaxed);  // relaxed: as above
    if (!slot_word::held(w) || (own & slot_word::gen_mask) != slot_word::generation(w)) return "";
    const std::uint64_t who = own >> slot_word::gen_bits;
    if (who == 0 || who > procs || !o.crashed[static_cast<std::size_t>(who - 1)])
      return "word 0 is held in the name of " + std::to_string(who) + ", which did not stop";
    return "";
  }
};

tgcheck::factory kept_slots_factory(std::size_t n, unsigned scans, bool twice_at_first) {
  return [=](scheduler& s) -> std::unique_ptr<execution> {
    return std::make_unique<kept_slots_exec>(s, n, scans, twice_at_first);
  };
}

}  // namespace

TEST_CASE("checker: kept slot words, a reaper never frees a live lease early and no word is handed out twice",
          "[checker][account]") {
  bounds b;
  b.preemptions = tgcheck::large() ? 2 : 1;
  b.crashes = 1;
  {
    scheduler s(3);
    const auto r = tgcheck::explore_exhaustive(s, "kept slots: 2 processes x 2 leases, a reaper x 1", 3, b,
                                               kept_slots_factory(2, 1, false));
    CHECK(r.complete);
    CHECK(r.failure == "");
  }
  {
    scheduler s(4);
    bounds rb = b;
    rb.preemptions = 4;
    rb.steps = 3000;
    const auto r = tgcheck::explore_random(s, "kept slots: 3 processes x 3 leases, a reaper x 2", 4, rb,
                                           kept_slots_factory(3, 2, true), tgcheck::large() ? 200000 : 40000,
                                           tgtest::seeds(1).front() + 1616, 5, 300, 30);
    CHECK(r.failure == "");
  }
}
