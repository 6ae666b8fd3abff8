// The interleaving checker on every lock-free primitive: small
// configurations that make wrap-around reachable in a few steps, every
// execution checked against the structure's exact oracle.
#include "../catch_compat.hpp"
#include "explore.hpp"

#include <tollgate/budget.hpp>
#include <tollgate/calendar_quota.hpp>
#include <tollgate/concurrency.hpp>
#include <tollgate/sliding_window.hpp>
#include <tollgate/token_bucket.hpp>

#include <map>

using namespace tollgate;
using tgcheck::bounds;
using tgcheck::execution;
using tgcheck::scheduler;
using tgcheck::supplied_clock;
using tgtest::ns;

namespace {

std::uint64_t project_seed() { return tgtest::seeds(1).front(); }
std::uint64_t scaled(std::uint64_t n) { return tgcheck::large() ? n * 20 : n; }
// Preemptions of the cheaper exhaustive scenarios: one more on demand.
unsigned preemptions(unsigned n) { return tgcheck::large() ? n + 1 : n; }

std::string show(const decision& d) {
  if (d.admitted()) return "admitted";
  return std::string("refused (wait ") + std::to_string(d.retry_after().count()) + ")";
}

// ---------------------------------------------------------------- window --

struct window_op {
  enum kind { acquire, refund, refund_head } k = acquire;
  std::uint64_t n = 1;
  std::int64_t at = -1;  // scripted time; -1: the supplied clock's next reading
};
using script = std::vector<window_op>;

// Oracle: the admitted (time, units), less what refunds returned; no window
// (t - W, t] may hold more than L.
template <std::size_t K>
struct window_exec : execution {
  sliding_window<manual_clock, K> w;
  std::uint64_t limit;
  std::int64_t window;
  supplied_clock clk;
  std::vector<std::pair<std::int64_t, std::uint64_t>> log;
  struct per_thread {
    window_ticket ticket;
    std::size_t entry = SIZE_MAX;  // log entry of the ticket
    std::uint64_t refund_in_flight = 0;
  };
  std::vector<per_thread> th;

  window_exec(scheduler& s, std::uint64_t l, std::int64_t win, const std::vector<script>& scripts,
              std::vector<std::int64_t> jumps, std::int64_t t0, const std::vector<std::int64_t>& setup)
      : w(rate(l, ns(win)), ns(0)), limit(l), window(win), th(scripts.size()) {
    clk.t = t0;
    clk.jumps = std::move(jumps);
    // The window's layout, for the trace: head, cached sum, limit, then the ring after three plain words.
    s.label(&w, sizeof(w), [](std::size_t off) {
      if (off == 0) return std::string("head");
      if (off == 8) return std::string("older-sum");
      if (off == 16) return std::string("limit");
      return "ring[" + std::to_string((off - 56) / 8) + "]";
    });
    for (std::int64_t t : setup)  // before the threads start: no steps
      if (w.try_acquire(1, ns(t))) log.emplace_back(t, 1);
    for (std::size_t i = 0; i < scripts.size(); ++i)
      bodies.push_back([this, &s, i, sc = scripts[i]] {
        per_thread& me = th[i];
        for (const window_op& op : sc) {
          if (op.k == window_op::acquire) {
            const std::int64_t t = op.at >= 0 ? op.at : clk.next(s);
            window_ticket tk;
            const decision d = w.try_acquire(op.n, ns(t), tk);
            s.note("try_acquire(" + std::to_string(op.n) + ", " + std::to_string(t) + "): " + show(d));
            if (d.admitted()) {
              log.emplace_back(t, op.n);
              me.ticket = std::move(tk);
              me.entry = log.size() - 1;
            }
          } else if (me.entry != SIZE_MAX) {
            me.refund_in_flight = op.n < me.ticket.tokens ? op.n : me.ticket.tokens;
            const std::uint64_t got = op.k == window_op::refund ? w.refund(me.ticket, op.n) : w.refund_to_head(me.ticket, op.n);
            me.refund_in_flight = 0;
            log[me.entry].second -= got;
            s.note(std::string(op.k == window_op::refund ? "refund(" : "refund_to_head(") + std::to_string(op.n) +
                   "): " + std::to_string(got));
          }
        }
      });
  }
  std::string check(const scheduler::outcome& o) override {
    auto events = log;
    // A thread that stopped inside a refund may have given the units back:
    // count them as given back (the bound must hold either way).
    for (std::size_t i = 0; i < th.size(); ++i)
      if (o.crashed[i] && th[i].refund_in_flight && th[i].entry != SIZE_MAX)
        events[th[i].entry].second -= th[i].refund_in_flight;
    const std::uint64_t worst = tgtest::max_window_sum(events, window);
    if (worst > limit)
      return "sliding_window admitted " + std::to_string(worst) + " units in one window of limit " +
             std::to_string(limit);
    return "";
  }
};

template <std::size_t K>
tgcheck::factory window_factory(std::uint64_t l, std::int64_t win, std::vector<script> scripts,
                                std::vector<std::int64_t> jumps, std::int64_t t0,
                                std::vector<std::int64_t> setup = {}) {
  return [=](scheduler& s) -> std::unique_ptr<execution> {
    return std::make_unique<window_exec<K>>(s, l, win, scripts, jumps, t0, setup);
  };
}

constexpr std::int64_t sec = 1000000000;

}  // namespace

// Hole 1: a mover that read head h and stalled until the head had gone K + 1
// slots on wrote h's count over the ring entry of the newer slot sharing its
// index, erasing it. Scripted times; every interleaving within 2 preemptions.
TEST_CASE("checker: sliding_window, a mover stalled across K+1 slots (hole 1)", "[checker]") {
  scheduler s(2);
  const std::int64_t w = sec;  // K = 2, W = 2 s: slots of 1 s
  std::vector<script> scripts = {
      {{window_op::acquire, 1, w}},                                                       // A: moves the head off slot 0
      {{window_op::acquire, 1, 4 * w - 1}, {window_op::acquire, 1, 4 * w}, {window_op::acquire, 1, 5 * w}}};  // B
  bounds b;
  b.preemptions = preemptions(2);
  const auto r = tgcheck::explore_exhaustive(s, "sliding_window K=2 L=2 hole 1 (scripted)", 2, b,
                                             window_factory<2>(2, 2 * w, scripts, {0}, 0, {0}));
  CHECK(r.complete);
  CHECK(r.failure == "");
  // The same with either thread stopping forever at any step: the other
  // keeps the bound and finishes.
  b.crashes = 1;
  const auto c = tgcheck::explore_exhaustive(s, "sliding_window K=2 L=2 hole 1, one thread stops", 2, b,
                                             window_factory<2>(2, 2 * w, scripts, {0}, 0, {0}));
  CHECK(c.complete);
  CHECK(c.failure == "");
}

TEST_CASE("checker: sliding_window, exhaustive with time jumps", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = 2;
  {
    const std::int64_t w = 2 * sec;  // K = 1: one slot of 2 s
    const std::vector<std::int64_t> jumps = {0, 1, w, 2 * w};
    std::vector<script> scripts = {{{}, {}}, {{}, {}}};
    const auto r = tgcheck::explore_exhaustive(s, "sliding_window K=1 L=2, 2x2 acquires", 2, b,
                                               window_factory<1>(2, 2 * sec, scripts, jumps, w - 1, {0}));
    CHECK(r.complete);
    CHECK(r.failure == "");
  }
  {
    const std::int64_t w = sec;  // K = 2
    const std::vector<std::int64_t> jumps = {0, 1, w, 3 * w};
    std::vector<script> scripts = {{{}, {window_op::refund, 1, -1}}, {{}, {}}};
    b.preemptions = preemptions(2);
    const auto r = tgcheck::explore_exhaustive(s, "sliding_window K=2 L=2, acquire+refund / 2 acquires", 2, b,
                                               window_factory<2>(2, 2 * sec, scripts, jumps, w - 1, {0}));
    CHECK(r.complete);
    CHECK(r.failure == "");
  }
}

TEST_CASE("checker: sliding_window, random schedules with crashes", "[checker]") {
  scheduler s(3);
  bounds b;
  b.preemptions = 3;
  b.crashes = 1;
  const std::uint64_t seed = project_seed();
  auto run = [&](auto k_tag, std::uint64_t limit) {
    constexpr std::size_t K = decltype(k_tag)::value;
    const std::int64_t win = static_cast<std::int64_t>(K) * sec;
    const std::int64_t w = sec;
    const std::vector<std::int64_t> jumps = {0, 1, w, static_cast<std::int64_t>(K + 1) * w, -w};
    std::vector<script> scripts = {
        {{}, {}, {window_op::refund, 1, -1}, {}},
        {{}, {}, {}, {window_op::refund_head, 1, -1}},
        {{}, {window_op::acquire, 2, -1}, {}, {}}};
    const auto r = tgcheck::explore_random(
        s, "sliding_window K=" + std::to_string(K) + " L=" + std::to_string(limit) + ", 3x4 ops", 3, b,
        window_factory<K>(limit, win, scripts, jumps, w - 1, {0}), scaled(10000), seed + K * 10 + limit, 4, 120, 30);
    CHECK(r.failure == "");
  };
  run(std::integral_constant<std::size_t, 1>{}, 2);
  run(std::integral_constant<std::size_t, 2>{}, 2);
  run(std::integral_constant<std::size_t, 2>{}, 3);
  run(std::integral_constant<std::size_t, 3>{}, 2);
}

// ---------------------------------------------------------------- bucket --

namespace {

struct bucket_op {
  enum kind { acquire, set_rate, set_burst, refund, reset } k = acquire;
  std::uint64_t n = 1;       // units, or the new burst
  rate r = rate(1, ns(1));   // set_rate's rate
  bool scripted_time = false;
  std::int64_t at = 0;
};
using bucket_script = std::vector<bucket_op>;

// Oracle: over every interval of length t, at most B + t * r units, with B
// the largest burst and r the fastest rate the bucket is ever given, plus
// what the header allows a change applied at a lagging `now` to hand back
// early (d x (new rate - old rate), rounded up).
struct bucket_exec : execution {
  token_bucket<manual_clock> b;
  supplied_clock clk;
  std::vector<std::pair<std::int64_t, std::uint64_t>> log;
  std::uint64_t env_count, env_period, env_burst;
  rate slowest;  // the slowest rate the bucket is ever given
  std::int64_t latest = 0;  // the latest time any thread has read
  tgtest::u128 slack_scaled = 0;  // early units allowed by lagging changes, times env_period
  // An allowance of max(n, B) units for each call that spans four or more
  // changes (what the header stated before the generation check), when
  // `documented`; else the exact bound, which every scenario now checks.
  bool documented;
  std::uint64_t changes_started = 0, changes_done = 0, spanning = 0;
  // Every change; one that never returned (its thread crashed) may still be
  // in force, with a lag up to the latest time read by the end.
  struct change {
    std::int64_t t;
    rate before, after;
    bool done;
  };
  std::vector<change> changes;
  // Refunds: each thread's last ticketed admission (its log entry) and what
  // a refund that never returned may have given back.
  struct per_thread {
    bucket_ticket ticket;
    std::size_t entry = SIZE_MAX;
    std::uint64_t refund_in_flight = 0;
  };
  std::vector<per_thread> th;
  bool had_reset = false;
  bool tickets = false;  // admissions take tickets when some script refunds
  unsigned writers = 0;  // scripts that reconfigure
  bucket_exec(scheduler& s, rate r0, std::uint64_t burst0, const std::vector<bucket_script>& scripts,
              std::vector<std::int64_t> jumps, std::int64_t t0, bool doc)
      : b(r0, burst0, ns(0)), env_count(r0.count), env_period(static_cast<std::uint64_t>(r0.period.count())),
        env_burst(burst0), slowest(r0), documented(doc) {
    clk.t = t0;
    latest = t0;
    clk.jumps = std::move(jumps);
    s.label(&b, sizeof(b), [](std::size_t off) {
      // The layout in token_bucket.hpp: the state word on its line; then the
      // origin, the owner word and claim counter, the four slots and the
      // hint. A slot: the generation, interval and burst (with the scale
      // above them), epoch, config (two tagged halves each), exact (one
      // word), count and period (two each).
      static const char* const f[] = {"gen",       "interval.hi", "interval.lo", "burst.hi",  "burst.lo",
                                      "epoch.hi",  "epoch.lo",    "config.hi",   "config.lo", "exact",
                                      "count.hi",  "count.lo",    "period.hi",   "period.lo"};
      constexpr std::size_t line = TOLLGATE_CACHELINE_SIZE, slots = line + 24, slot = 14 * 8;
      if (off == 0) return std::string("state");
      if (off == line + 8) return std::string("owner");
      if (off == line + 16) return std::string("claims");
      if (off == slots + 4 * slot) return std::string("hint");
      if (off < slots || off > slots + 4 * slot) return std::string("?");
      return "slot[" + std::to_string((off - slots) / slot) + "]." + f[((off - slots) % slot) / 8];
    });
    for (const auto& sc : scripts)
      for (const auto& op : sc) {
        if (op.k == bucket_op::set_burst && op.n > env_burst) env_burst = op.n;
        if (op.k == bucket_op::set_rate &&
            static_cast<tgtest::u128>(op.r.count) * static_cast<std::uint64_t>(slowest.period.count()) <
                static_cast<tgtest::u128>(slowest.count) * static_cast<std::uint64_t>(op.r.period.count()))
          slowest = op.r;
        // The fastest rate: the largest count / period.
        if (op.k == bucket_op::set_rate &&
            static_cast<tgtest::u128>(op.r.count) * env_period >
                static_cast<tgtest::u128>(env_count) * static_cast<std::uint64_t>(op.r.period.count())) {
          env_count = op.r.count;
          env_period = static_cast<std::uint64_t>(op.r.period.count());
        }
      }
    th.resize(scripts.size());
    for (const auto& sc : scripts) {
      bool writes = false;
      for (const auto& op : sc) {
        tickets = tickets || op.k == bucket_op::refund;
        writes = writes || op.k == bucket_op::set_rate || op.k == bucket_op::set_burst || op.k == bucket_op::reset;
      }
      writers += writes ? 1 : 0;
    }
    for (std::size_t i = 0; i < scripts.size(); ++i)
      bodies.push_back([this, &s, i, sc = scripts[i]] {
        per_thread& me = th[i];
        for (const bucket_op& op : sc) {
          const std::int64_t t = op.scripted_time ? op.at : clk.next(s);
          if (t > latest) latest = t;
          if (op.k == bucket_op::acquire) {
            const std::uint64_t done_before = changes_done;
            const decision d = tickets ? b.try_acquire(op.n, ns(t), me.ticket) : b.try_acquire(op.n, ns(t));
            s.note("try_acquire(" + std::to_string(op.n) + ", " + std::to_string(t) + "): " + show(d));
            if (d.admitted()) {
              me.entry = log.size();
              log.emplace_back(t, op.n);
            }
            if (d.admitted() && changes_started - done_before >= 4) spanning += std::max(op.n, env_burst);
          } else if (op.k == bucket_op::refund) {
            me.refund_in_flight = op.n < me.ticket.units ? op.n : me.ticket.units;
            const std::uint64_t got = b.refund(me.ticket, op.n, ns(t));
            me.refund_in_flight = 0;
            if (me.entry != SIZE_MAX) log[me.entry].second -= got;
            s.note("refund(" + std::to_string(op.n) + ", " + std::to_string(t) + "): " + std::to_string(got));
          } else if (op.k == bucket_op::reset) {
            had_reset = true;  // forgets what is owed, by design: only progress is checked after one
            b.reset(ns(t));
            s.note("reset(" + std::to_string(t) + ")");
          } else {
            ++changes_started;
            // With writers on several threads, the rate a change replaces is
            // the one in force at its install, not what it reads first: count
            // a rate change from the slowest rate.
            const rate before = writers > 1 && op.k == bucket_op::set_rate ? slowest : b.current_rate();
            const std::size_t mine = changes.size();
            changes.push_back({t, before, op.k == bucket_op::set_rate ? op.r : before, false});
            const errc e = op.k == bucket_op::set_rate ? b.set_rate(op.r, ns(t)) : b.set_burst(op.n, ns(t));
            s.note(std::string(op.k == bucket_op::set_rate ? "set_rate(" : "set_burst(") +
                   (op.k == bucket_op::set_rate ? std::to_string(op.r.count) + "/" + std::to_string(op.r.period.count())
                                                : std::to_string(op.n)) +
                   ", " + std::to_string(t) + "): " + (e == errc::ok ? "ok" : "error"));
            changes[mine].done = true;
            slack_scaled += lag_slack(t, before, op.k == bucket_op::set_rate ? op.r : before);
            ++changes_done;
          }
        }
      });
  }
  // d x (new rate - old rate) for a change applied at t, d its lag behind
  // the latest time read, in units times env_period.
  tgtest::u128 lag_slack(std::int64_t t, rate before, rate after) const {
    const std::int64_t lag = latest - t;
    if (lag <= 0) return 0;
    const tgtest::i128 up = static_cast<tgtest::i128>(after.count) * before.period.count() -
                            static_cast<tgtest::i128>(before.count) * after.period.count();
    if (up <= 0) return 0;
    return static_cast<tgtest::u128>(static_cast<tgtest::i128>(lag) * up * static_cast<tgtest::i128>(env_period) /
                                      (static_cast<tgtest::i128>(before.period.count()) * after.period.count())) +
           env_period;
  }
  std::string check(const scheduler::outcome& o) override {
    // A thread that stopped inside a refund may have given the units back.
    for (std::size_t i = 0; i < th.size(); ++i)
      if (o.crashed[i] && th[i].refund_in_flight && th[i].entry != SIZE_MAX) log[th[i].entry].second -= th[i].refund_in_flight;
    if (had_reset) return "";
    const std::uint64_t excess = tgtest::bucket_bound_excess(log, env_count, env_period, env_burst);
    tgtest::u128 all = slack_scaled;
    for (const change& c : changes)
      if (!c.done) all += lag_slack(c.t, c.before, c.after);
    const std::uint64_t slack = static_cast<std::uint64_t>((all + env_period - 1) / env_period) +
                                (documented ? spanning : 0);
    if (excess > slack)
      return "token_bucket admitted " + std::to_string(excess) + " units over B + r*t (B = " + std::to_string(env_burst) +
             ", r = " + std::to_string(env_count) + "/" + std::to_string(env_period) + " ns, allowed skew " +
             std::to_string(slack) + (documented ? ", with calls spanning four changes" : "") + ")";
    return "";
  }
};

tgcheck::factory bucket_factory(rate r0, std::uint64_t burst0, std::vector<bucket_script> scripts,
                                std::vector<std::int64_t> jumps, std::int64_t t0, bool documented = false) {
  return [=](scheduler& s) -> std::unique_ptr<execution> {
    return std::make_unique<bucket_exec>(s, r0, burst0, scripts, jumps, t0, documented);
  };
}

bucket_op at0(bucket_op o) {
  o.scripted_time = true;
  o.at = 0;
  return o;
}

}  // namespace

namespace {
// An acquirer reads the word and slot 0 (1 per ms, burst 4) while four
// set_rate calls at the same `now` bring the tag back to slot 0 (now 1 per s)
// and a full bucket's word back to the same value.
std::vector<bucket_script> wrap_scripts() {
  const rate fast(1, std::chrono::milliseconds(1)), slow(1, std::chrono::seconds(1));
  bucket_op a, to_slow, to_fast, take3;
  a.n = 4;
  to_slow.k = to_fast.k = bucket_op::set_rate;
  to_slow.r = slow;
  to_fast.r = fast;
  take3.n = 3;
  return {{at0(a)}, {at0(to_slow), at0(to_fast), at0(to_slow), at0(to_slow), at0(take3)}};
}
}  // namespace

// The exact bound across four changes during one call. The acquirer reads
// the word and its slot, stalls while four set_rate calls bring the same tag
// (and word) back under another configuration, then CASes: without the
// slot's generation check its CAS succeeded with the old parameters, charged
// 4 units of 1 ms, and 3 more were admitted at the same instant, 7 against a
// burst of 4. The generation check catches it (see acquire() in
// token_bucket.hpp), so the exact bound holds.
TEST_CASE("checker: token_bucket, exact bound when the slot tag wraps", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = 2;
  const auto r = tgcheck::explore_exhaustive(s, "token_bucket B=4, 4 changes, exact bound", 2, b,
                                             bucket_factory(rate(1, std::chrono::milliseconds(1)), 4, wrap_scripts(),
                                                            {0}, 0, false));
  CHECK(r.complete);
  CHECK(r.failure == "");
}

// The weaker bound the header once stated for that case (at most max(n, B)
// more per call that spans four changes): implied by the exact one, kept
// because it runs with one more preemption in the large mode.
TEST_CASE("checker: token_bucket, documented bound when the slot tag wraps", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = 2;
  b.preemptions = preemptions(2);
  const auto r = tgcheck::explore_exhaustive(s, "token_bucket B=4, 4 changes, stated bound", 2, b,
                                             bucket_factory(rate(1, std::chrono::milliseconds(1)), 4, wrap_scripts(),
                                                            {0}, 0, true));
  CHECK(r.complete);
  CHECK(r.failure == "");
}

TEST_CASE("checker: token_bucket, exhaustive and random schedules", "[checker]") {
  const std::int64_t T = sec;  // 1 per second
  const std::vector<std::int64_t> jumps = {0, 1, T, 3 * T, -T};
  {
    scheduler s(2);
    bounds b;
    b.preemptions = 2;
    bucket_op one, two;
    two.n = 2;
    std::vector<bucket_script> scripts = {{one, two}, {two, one}};
    const auto r = tgcheck::explore_exhaustive(s, "token_bucket B=2, 2x2 acquires", 2, b,
                                               bucket_factory(rate(1, ns(T)), 2, scripts, jumps, 0));
    CHECK(r.complete);
    CHECK(r.failure == "");
  }
  {
    scheduler s(3);
    bounds b;
    b.preemptions = 3;
    b.crashes = 1;
    bucket_op one, two, burst1, burst3, rate2;
    two.n = 2;
    burst1.k = burst3.k = bucket_op::set_burst;
    burst1.n = 1;
    burst3.n = 3;
    rate2.k = bucket_op::set_rate;
    rate2.r = rate(2, ns(T));
    bucket_op rate1 = rate2;
    rate1.r = rate(1, ns(T));
    std::vector<bucket_script> scripts = {{one, two, one, one},
                                          {two, one, two},
                                          {burst3, rate2, burst1, rate1, burst3, rate2}};
    const auto r = tgcheck::explore_random(s, "token_bucket B<=3, 2 acquirers + 6 changes", 3, b,
                                           bucket_factory(rate(1, ns(T)), 2, scripts, jumps, 0), scaled(10000),
                                           project_seed() + 101, 4, 250, 30);
    CHECK(r.failure == "");
  }
}

// An abandoned writer: the first thread reconfigures and may stop forever at
// any of its steps (a process killed inside set_rate, set_burst or a refund);
// the other must still finish its own reconfigurations and refunds (the
// step bound catches a wait that never ends: "no progress") and the bound
// must hold. With few takeover looks in the checker's build, the schedules
// also take over a writer that was only preempted and let it run on: the
// claim tags and the taker's tick must make its late writes fail.
TEST_CASE("checker: token_bucket, a writer that stops forever blocks nobody", "[checker]") {
  const std::int64_t T = sec;
  bucket_op take, give, fast, slow, burst1, burst3, rst;
  take.n = 2;
  give.k = bucket_op::refund;
  give.n = 2;
  fast.k = slow.k = bucket_op::set_rate;
  fast.r = rate(2, ns(T));
  slow.r = rate(1, ns(T));
  burst1.k = burst3.k = bucket_op::set_burst;
  burst1.n = 1;
  burst3.n = 3;
  rst.k = bucket_op::reset;
  {
    // Every crash point of either thread (a writer, a refund, an acquire).
    scheduler s(2);
    bounds b;
    b.preemptions = 0;
    b.crashes = 1;
    std::vector<bucket_script> scripts = {{take, fast, give, burst1}, {take, slow, give, burst3, take}};
    const auto r = tgcheck::explore_exhaustive(s, "token_bucket, a writer or refund stops forever", 2, b,
                                               bucket_factory(rate(1, ns(T)), 2, scripts, {T}, 0));
    CHECK(r.complete);
    CHECK(r.failure == "");
  }
  {
    // A reset that stops forever at any step, then everything else.
    scheduler s(2);
    bounds b;
    b.preemptions = 0;
    b.crashes = 1;
    std::vector<bucket_script> scripts = {{rst, fast}, {take, slow, give, rst, take}};
    const auto r = tgcheck::explore_exhaustive(s, "token_bucket, a reset stops forever", 2, b,
                                               bucket_factory(rate(1, ns(T)), 2, scripts, {0}, 0));
    CHECK(r.complete);
    CHECK(r.failure == "");
  }
  {
    // A writer preempted anywhere, taken over, then let run on: its late
    // writes must fail.
    scheduler s(2);
    bounds b;
    b.preemptions = 2;
    std::vector<bucket_script> scripts = {{fast}, {burst3, take}};
    const auto r = tgcheck::explore_exhaustive(s, "token_bucket, a slow writer taken over", 2, b,
                                               bucket_factory(rate(1, ns(T)), 2, scripts, {0}, 0));
    CHECK(r.complete);
    CHECK(r.failure == "");
  }
  {
    // Longer random schedules: three threads, writers taken over while
    // preempted, and crashes. All at one `now`: an acquire at a `now` older
    // than a change's is decided against the state the change left, which
    // B + r*t over the supplied timestamps does not describe (the header's
    // skew bound does); the lagging cases are the single-writer scenarios'.
    scheduler s(3);
    bounds b;
    b.preemptions = 4;
    b.crashes = 1;
    std::vector<bucket_script> scripts = {{take, fast, burst3, give, slow},
                                          {burst1, take, give, fast, take},
                                          {take, take, slow, burst3, give}};
    const auto r = tgcheck::explore_random(s, "token_bucket, writers taken over", 3, b,
                                           bucket_factory(rate(1, ns(T)), 2, scripts, {0}, 0), scaled(20000),
                                           project_seed() + 103, 4, 400, 30);
    CHECK(r.failure == "");
  }
}

// -------------------------------------------------------- calendar quota --

namespace {

struct quota_op {
  enum kind { acquire, refund, charge } k = acquire;
  std::uint64_t n = 1;
};

// Oracle: per calendar day of the offset, admitted less refunded stays
// within the limit (no charges in these scripts).
struct quota_exec : execution {
  static constexpr std::int64_t day = 86400LL * sec;
  calendar_quota<manual_clock> q;
  std::int64_t offset;
  supplied_clock clk;
  struct entry {
    std::int64_t t;
    std::uint64_t units;
  };
  std::vector<entry> log;
  struct per_thread {
    quota_ticket ticket;
    std::size_t entry = SIZE_MAX;
    std::uint64_t refund_in_flight = 0;
  };
  std::vector<per_thread> th;
  std::uint64_t limit;
  quota_exec(scheduler& s, std::uint64_t l, std::int64_t off_ns, const std::vector<std::vector<quota_op>>& scripts,
             std::vector<std::int64_t> jumps, std::int64_t t0)
      : q(l, std::chrono::duration_cast<std::chrono::minutes>(ns(off_ns))), offset(off_ns), th(scripts.size()), limit(l) {
    clk.t = t0;
    clk.jumps = std::move(jumps);
    s.label(&q, sizeof(q), [](std::size_t off) { return std::string(off == 0 ? "state" : "limit"); });
    for (std::size_t i = 0; i < scripts.size(); ++i)
      bodies.push_back([this, &s, i, sc = scripts[i]] {
        per_thread& me = th[i];
        for (const quota_op& op : sc) {
          if (op.k == quota_op::acquire) {
            const std::int64_t t = clk.next(s);
            quota_ticket tk;
            const decision d = q.try_acquire(op.n, ns(t), tk);
            s.note("try_acquire(" + std::to_string(op.n) + ", " + std::to_string(t) + "): " + show(d));
            if (d.admitted()) {
              log.push_back(entry{t, op.n});
              me.ticket = std::move(tk);
              me.entry = log.size() - 1;
            }
          } else if (op.k == quota_op::refund && me.entry != SIZE_MAX) {
            me.refund_in_flight = op.n < me.ticket.units ? op.n : me.ticket.units;
            const std::uint64_t got = q.refund(me.ticket, op.n);
            me.refund_in_flight = 0;
            log[me.entry].units -= got;
            s.note("refund(" + std::to_string(op.n) + "): " + std::to_string(got));
          }
        }
      });
  }
  std::string check(const scheduler::outcome& o) override {
    std::vector<entry> events = log;
    for (std::size_t i = 0; i < th.size(); ++i)
      if (o.crashed[i] && th[i].refund_in_flight && th[i].entry != SIZE_MAX)
        events[th[i].entry].units -= th[i].refund_in_flight;
    std::map<std::int64_t, std::uint64_t> per_day;
    for (const entry& e : events) {
      const std::int64_t local = e.t + offset;
      per_day[local < 0 ? 0 : local / day] += e.units;
    }
    for (const auto& d : per_day)
      if (d.second > limit)
        return "calendar_quota admitted " + std::to_string(d.second) + " in day " + std::to_string(d.first) +
               " of limit " + std::to_string(limit);
    return "";
  }
};

tgcheck::factory quota_factory(std::uint64_t l, std::int64_t off, std::vector<std::vector<quota_op>> scripts,
                               std::vector<std::int64_t> jumps, std::int64_t t0) {
  return [=](scheduler& s) -> std::unique_ptr<execution> {
    return std::make_unique<quota_exec>(s, l, off, scripts, jumps, t0);
  };
}

}  // namespace

TEST_CASE("checker: calendar_quota across a day boundary", "[checker]") {
  const std::int64_t off = 8 * 3600LL * sec;  // UTC+8
  const std::int64_t midnight = quota_exec::day - off;  // local midnight of day 1
  const std::int64_t hour = 3600LL * sec;
  const std::vector<std::int64_t> jumps = {0, 1, hour, -hour};
  quota_op acq, ref;
  ref.k = quota_op::refund;
  {
    scheduler s(2);
    bounds b;
    b.preemptions = 2;
    b.preemptions = preemptions(2);
    const auto r = tgcheck::explore_exhaustive(s, "calendar_quota L=2, acquire+refund / 2 acquires", 2, b,
                                               quota_factory(2, off, {{acq, ref, acq}, {acq, acq}}, jumps, midnight - 1));
    CHECK(r.complete);
    CHECK(r.failure == "");
  }
  {
    scheduler s(3);
    bounds b;
    b.preemptions = 3;
    b.crashes = 1;
    quota_op two;
    two.n = 2;
    const auto r = tgcheck::explore_random(s, "calendar_quota L=3, 3x4 ops", 3, b,
                                           quota_factory(3, off, {{acq, ref, acq, acq}, {two, acq, ref, acq}, {acq, two, acq, ref}},
                                                         jumps, midnight - 1),
                                           scaled(10000), project_seed() + 202, 4, 40, 30);
    CHECK(r.failure == "");
  }
}

// ----------------------------------------------------------- concurrency --

namespace {

struct permit_op {
  enum kind { acquire, release, set_limit } k = acquire;
  std::uint64_t n = 1;
};

// Oracle: a ghost count of units held (raised after an acquire returns,
// lowered before a release starts, so it never exceeds the real count)
// never passes the largest limit; when every thread is done the limiter
// holds exactly the ghost count plus what a stopped thread was releasing.
struct permit_exec : execution {
  concurrency_limiter c;
  std::uint64_t max_limit;
  std::uint64_t ghost = 0;
  std::string broken;
  struct per_thread {
    permit p;
    bool holding = false;  // a released permit still converts to true (its decision)
    std::uint64_t releasing = 0;
  };
  std::vector<per_thread> th;
  permit_exec(scheduler& s, std::uint64_t limit, const std::vector<std::vector<permit_op>>& scripts)
      : c(limit), max_limit(limit), th(scripts.size()) {
    s.label(&c, sizeof(c), [](std::size_t) { return std::string("limit+held"); });  // one word
    for (const auto& sc : scripts)
      for (const auto& op : sc)
        if (op.k == permit_op::set_limit && op.n > max_limit) max_limit = op.n;
    for (std::size_t i = 0; i < scripts.size(); ++i)
      bodies.push_back([this, &s, i, sc = scripts[i]] {
        per_thread& me = th[i];
        for (const permit_op& op : sc) {
          if (op.k == permit_op::acquire && !me.holding) {
            me.p = c.try_acquire(op.n);
            s.note("try_acquire(" + std::to_string(op.n) + "): " + show(me.p.decision()));
            if (me.p) {
              me.holding = true;
              ghost += me.p.count();
              if (ghost > max_limit && broken.empty())
                broken = "concurrency_limiter let " + std::to_string(ghost) + " units be held, limit " +
                         std::to_string(max_limit);
            }
          } else if (op.k == permit_op::release && me.holding) {
            ghost -= me.p.count();
            me.releasing = me.p.count();
            me.p.release();
            me.releasing = 0;
            me.holding = false;
            s.note("release");
          } else if (op.k == permit_op::set_limit) {
            (void)c.set_limit(op.n);
            s.note("set_limit(" + std::to_string(op.n) + ")");
          }
        }
        // Keep what is still held (a permit outlives its body here; the
        // check counts it).
        if (me.holding) (void)me.p.detach();
      });
  }
  std::string check(const scheduler::outcome& o) override {
    if (!broken.empty()) return broken;
    std::uint64_t expect = ghost;
    for (std::size_t i = 0; i < th.size(); ++i)
      if (o.crashed[i]) expect += th[i].releasing;
    if (c.in_use() != expect)
      return "concurrency_limiter holds " + std::to_string(c.in_use()) + " units, the threads hold " +
             std::to_string(expect);
    return "";
  }
};

tgcheck::factory permit_factory(std::uint64_t limit, std::vector<std::vector<permit_op>> scripts) {
  return [=](scheduler& s) -> std::unique_ptr<execution> { return std::make_unique<permit_exec>(s, limit, scripts); };
}

}  // namespace

TEST_CASE("checker: concurrency_limiter at limits 1 and 2", "[checker]") {
  permit_op acq, rel, two;
  rel.k = permit_op::release;
  two.n = 2;
  {
    scheduler s(3);
    bounds b;
    b.preemptions = 2;
    b.crashes = 1;
    b.preemptions = preemptions(2);
    const auto r = tgcheck::explore_exhaustive(s, "concurrency L=1, 3 threads acquire+release", 3, b,
                                               permit_factory(1, {{acq, rel, acq}, {acq, rel}, {acq, rel}}));
    CHECK(r.complete);
    CHECK(r.failure == "");
  }
  {
    scheduler s(3);
    bounds b;
    b.preemptions = 3;
    b.crashes = 1;
    permit_op lim1, lim2;
    lim1.k = lim2.k = permit_op::set_limit;
    lim1.n = 1;
    lim2.n = 2;
    const auto r = tgcheck::explore_random(s, "concurrency L=2, 3 threads with set_limit", 3, b,
                                           permit_factory(2, {{acq, rel, two, rel}, {two, rel, acq, rel}, {lim1, acq, lim2, rel}}),
                                           scaled(10000), project_seed() + 303, 4, 30, 30);
    CHECK(r.failure == "");
  }
}

// ---------------------------------------------------------------- budget --

namespace {

struct budget_op {
  enum kind { reserve, settle, release } k = reserve;
  std::int64_t nanos = 0;  // reserve: the amount; settle: the actual cost
};

// Oracle: every call settles within its reservation, so reserved + settled
// (a ghost raised after reserve returns, lowered before settle starts) never
// passes the limit, the settled total neither, and when every thread is
// done the budget's totals are the ghost's (plus what a stopped thread was
// settling).
struct budget_exec : execution {
  budget<usd_tag> bud;
  std::int64_t limit;
  std::int64_t ghost = 0, settled = 0;
  std::string broken;
  struct per_thread {
    budget_reservation<usd_tag> r;
    bool held = false;
    std::int64_t settling = 0, settling_actual = 0;
  };
  std::vector<per_thread> th;
  budget_exec(scheduler& s, std::int64_t l, const std::vector<std::vector<budget_op>>& scripts)
      : bud(usd::from_nanos(l)), limit(l), th(scripts.size()) {
    s.label(&bud, sizeof(bud), [](std::size_t off) { return std::string(off == 0 ? "committed" : "spent"); });
    for (std::size_t i = 0; i < scripts.size(); ++i)
      bodies.push_back([this, &s, i, sc = scripts[i]] {
        per_thread& me = th[i];
        for (const budget_op& op : sc) {
          if (op.k == budget_op::reserve && !me.held) {
            me.r = bud.reserve(usd::from_nanos(op.nanos));
            s.note("reserve(" + std::to_string(op.nanos) + "): " + (me.r ? "held" : "refused"));
            if (me.r) {
              me.held = true;
              ghost += op.nanos;
              if (ghost > limit && broken.empty())
                broken = "budget let " + std::to_string(ghost) + " be reserved or settled, limit " + std::to_string(limit);
            }
          } else if (op.k != budget_op::reserve && me.held) {
            const std::int64_t actual = op.k == budget_op::settle ? std::min(op.nanos, me.r.amount.nanos()) : 0;
            me.settling = me.r.amount.nanos() - actual;
            me.settling_actual = actual;
            ghost -= me.settling;
            if (op.k == budget_op::settle)
              (void)bud.settle(me.r, usd::from_nanos(actual));
            else
              bud.release(me.r);
            me.settling = me.settling_actual = 0;
            settled += actual;
            me.held = false;
            s.note(op.k == budget_op::settle ? "settle(" + std::to_string(actual) + ")" : std::string("release"));
            if (settled > limit && broken.empty()) broken = "budget settled " + std::to_string(settled) + " over its limit";
          }
        }
      });
  }
  std::string check(const scheduler::outcome& o) override {
    if (!broken.empty()) return broken;
    std::int64_t committed = ghost, spent = settled;
    for (std::size_t i = 0; i < th.size(); ++i)
      if (o.crashed[i] && th[i].settling_actual + th[i].settling != 0) {
        // Stopped inside settle: before its first fetch_add, between the two, or not at all.
        const auto tot = bud.export_totals();
        const bool none = tot.first == committed + th[i].settling && tot.second == spent;
        const bool first = tot.first == committed && tot.second == spent;
        if (none || first) return "";
        return "budget totals " + std::to_string(tot.first) + "/" + std::to_string(tot.second) + " after a stop in settle";
      }
    const auto tot = bud.export_totals();
    if (tot.first != committed || tot.second != spent)
      return "budget totals " + std::to_string(tot.first) + "/" + std::to_string(tot.second) + ", expected " +
             std::to_string(committed) + "/" + std::to_string(spent);
    return "";
  }
};

tgcheck::factory budget_factory(std::int64_t l, std::vector<std::vector<budget_op>> scripts) {
  return [=](scheduler& s) -> std::unique_ptr<execution> { return std::make_unique<budget_exec>(s, l, scripts); };
}

}  // namespace

TEST_CASE("checker: budget reserve, settle and release", "[checker]") {
  auto res = [](std::int64_t n) { return budget_op{budget_op::reserve, n}; };
  auto set = [](std::int64_t n) { return budget_op{budget_op::settle, n}; };
  const budget_op rel{budget_op::release, 0};
  {
    scheduler s(2);
    bounds b;
    b.preemptions = 2;
    b.crashes = 1;
    b.preemptions = preemptions(2);
    const auto r = tgcheck::explore_exhaustive(s, "budget 10, reserve/settle/release", 2, b,
                                               budget_factory(10, {{res(6), set(4), res(6), rel}, {res(5), set(5), res(4)}}));
    CHECK(r.complete);
    CHECK(r.failure == "");
  }
  {
    scheduler s(3);
    bounds b;
    b.preemptions = 3;
    b.crashes = 1;
    const auto r = tgcheck::explore_random(
        s, "budget 10, 3 threads", 3, b,
        budget_factory(10, {{res(4), set(4), res(3), rel}, {res(5), rel, res(5), set(2)}, {res(3), set(1), res(6), set(6)}}),
        scaled(10000), project_seed() + 404, 4, 30, 30);
    CHECK(r.failure == "");
  }
}

// ------------------------------------------- concurrency: a shrink mid-call --

namespace {

// Limit 10 with 9 held by a permit taken before the threads start. One
// thread lowers the limit to 1 and only then releases the 9; the other asks
// for 5. No instant admits the 5 (before the release 9 are held, after it the
// limit is 1), so under every interleaving the answer is a refusal, and the
// count ends at 0.
struct shrink_exec : execution {
  concurrency_limiter c{10};
  permit held;
  bool admitted = false;
  explicit shrink_exec(scheduler& s) {
    s.label(&c, sizeof(c), [](std::size_t) { return std::string("limit+held"); });
    held = c.try_acquire(9);  // before the threads start: no steps
    bodies.push_back([this, &s] {
      (void)c.set_limit(1);
      s.note("set_limit(1)");
      held.release();
      s.note("release 9");
    });
    bodies.push_back([this, &s] {
      permit p = c.try_acquire(5);
      s.note("try_acquire(5): " + show(p.decision()));
      admitted = static_cast<bool>(p);
      (void)p.detach();  // counted by the check
    });
  }
  std::string check(const scheduler::outcome&) override {
    if (admitted) return "concurrency_limiter admitted 5 with 9 held under 10, or under a limit of 1";
    if (c.in_use() != 0) return "concurrency_limiter holds " + std::to_string(c.in_use()) + " units, expected 0";
    return "";
  }
};

}  // namespace

TEST_CASE("checker: concurrency_limiter decides against the limit in force", "[checker]") {
  scheduler s(2);
  bounds b;
  b.preemptions = preemptions(2);
  const auto r = tgcheck::explore_exhaustive(s, "concurrency: shrink, then release, beside an acquire", 2, b,
                                             [](scheduler& sc) -> std::unique_ptr<execution> {
                                               return std::make_unique<shrink_exec>(sc);
                                             });
  CHECK(r.complete);
  CHECK(r.executions > 1);
  CHECK(r.failure == "");
}
