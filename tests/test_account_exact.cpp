// The account's exactness: the wait a refusal reports, pauses after server
// feedback, what a hint may do, worst-case cost with cache writes, and the
// limits the account checks at configuration.
#include "catch_compat.hpp"
#include "server_models.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace tollgate;
using namespace std::chrono;
using tgtest::ns;

namespace {
using acct = account<manual_clock>;
constexpr ns t0{0};

const model_info* k26() {
  static const model_info m = *find_model("kimi-k2.6");
  return &m;
}
request req(std::uint64_t prompt, std::uint64_t max_tokens) {
  request r;
  r.model = k26();
  r.prompt_tokens = prompt;
  r.max_tokens = max_tokens;
  return r;
}
}  // namespace

TEST_CASE("account exact: a refusal's wait ignores the thread's own credit (Tier0, default policy)", "[account][exact]") {
  // Requests of 17,000 tokens, each sent at the wait the previous refusal
  // gave. The daily window grants this thread credit (chunk 1,464); after
  // 1,479,000 tokens the spaced minute limit refuses the next request, and
  // its wait must be the minute limit's (seconds), not the day's.
  for (const bool credit : {true, false}) {
    account_config c = account_config::from_tier(*kimi_tiers_2026_09.tier(0));
    c.per_thread_credit = credit;
    c.lease_timeout = ns(0);
    acct a(c, t0);
    ns now = t0;
    std::uint64_t tokens = 0;
    int checked = 0;
    while (tokens + 17000 <= 1500000) {
      auto x = a.try_admit(req(1000, 16000), now);
      if (x) {
        tokens += 17000;
        x.lease.settle_failed(now);
        continue;
      }
      INFO("credit " << credit << ", after " << tokens << " tokens at " << now.count() << " ns");
      REQUIRE(x.decision.later());
      const ns w = x.decision.retry_after();
      REQUIRE(w > ns(0));
      // The day still has room for it: the wait is the minute limit's.
      CHECK(w.count() < ns(minutes(1)).count());
      CHECK_FALSE(a.try_admit(req(1000, 16000), now + w - ns(1)));
      now += w;
      auto y = a.try_admit(req(1000, 16000), now);
      REQUIRE(y);
      tokens += 17000;
      y.lease.settle_failed(now);
      ++checked;
    }
    CHECK(tokens == 1496000);
    CHECK(checked >= 80);
  }
}

// --- The decision contract over random schedules ---
//
// Logical threads run one operation at a time, each on its own OS thread and
// handed over in schedule order, so a run is deterministic whatever the OS
// does. After a refusal with a wait w (one that names no permit or money, for
// which time alone is not enough), the refused thread asks again at t + w - 1
// and at t + w: refused, then admitted. Between the refusal and the asks the
// schedule may run other operations; the first ask is then checked only if
// nothing may have given capacity back meanwhile (a refund of unused tokens,
// or, with credit, any other admission attempt, which may give credit back),
// and the second only if nothing may have taken capacity (an admission, a
// debt, a pause).
namespace {

class handoff_thread {
 public:
  handoff_thread() : th_([this] { loop(); }) {}
  ~handoff_thread() {
    {
      std::lock_guard<std::mutex> g(m_);
      quit_ = true;
    }
    cv_.notify_all();
    th_.join();
  }
  handoff_thread(const handoff_thread&) = delete;
  handoff_thread& operator=(const handoff_thread&) = delete;
  void run(const std::function<void()>& f) {
    std::unique_lock<std::mutex> g(m_);
    job_ = &f;
    cv_.notify_all();
    cv_.wait(g, [&] { return job_ == nullptr; });
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> g(m_);
    for (;;) {
      cv_.wait(g, [&] { return quit_ || job_ != nullptr; });
      if (job_ != nullptr) {
        (*job_)();
        job_ = nullptr;
        cv_.notify_all();
      } else if (quit_) {
        return;
      }
    }
  }
  std::mutex m_;
  std::condition_variable cv_;
  const std::function<void()>* job_ = nullptr;
  bool quit_ = false;
  std::thread th_;
};

struct schedule_config {
  account_config c;
  std::uint64_t max_n = 1;
};

schedule_config random_config(tgtest::rng& g, bool credit) {
  static const server_model models[] = {server_model::unknown,       server_model::fixed_window,
                                        server_model::sliding_log,   server_model::window_counter,
                                        server_model::token_bucket,  server_model::gcra};
  schedule_config s;
  account_config& c = s.c;
  c.model = models[g.between(0, 5)];
  c.request_window = seconds(g.between(1, 60));
  c.token_window = g.chance(50) ? c.request_window : seconds(g.between(1, 60));
  c.concurrency = g.chance(30) ? limit::unlimited()
                               : limit(g.chance(50) ? g.between(1, 8) : g.between(1024, 4096));
  c.rpm = limit(g.chance(50) ? g.between(2, 30) : g.between(1024, 3000));
  const std::uint64_t tpm = g.between(20000, 3000000);
  c.tpm = limit(tpm);
  // Often a day only a little larger than a minute, so that both bind.
  c.tpd = g.chance(20) ? limit::unlimited() : limit(g.between(tpm, (g.chance(50) ? 2 : 8) * tpm));
  c.calendar_day = g.chance(25);
  c.utc_offset = minutes(static_cast<std::int64_t>(g.between(0, 1439)) - 720);
  c.max_request_tokens = std::min<std::uint64_t>(tpm / 4, 65536);
  c.refund_unused_tokens = g.chance(30);
  if (g.chance(20)) c.budget = usd::from_units(static_cast<std::int64_t>(g.between(1, 20)));
  c.lease_timeout = ns(0);  // no reclaiming: a reclaimed slot would be capacity given back
  c.per_thread_credit = credit;
  // Requests large (a few fill a minute) or small (credit builds up).
  s.max_n = std::max<std::uint64_t>(2, std::min<std::uint64_t>(c.max_request_tokens, tpm / (g.chance(50) ? 3 : 300)));
  return s;
}

std::string describe(const account_config& c) {
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "model %s, conc %llu, rpm %llu / %llds, tpm %llu / %llds, tpd %llu%s, m %llu, refund %d, budget %d, "
                "credit %d",
                to_string(c.model), static_cast<unsigned long long>(c.concurrency.value().value_or(0)),
                static_cast<unsigned long long>(c.rpm.value().value_or(0)),
                static_cast<long long>(duration_cast<seconds>(c.request_window).count()),
                static_cast<unsigned long long>(c.tpm.value().value_or(0)),
                static_cast<long long>(duration_cast<seconds>(c.token_window).count()),
                static_cast<unsigned long long>(c.tpd.value().value_or(0)), c.calendar_day ? " (calendar)" : "",
                static_cast<unsigned long long>(c.max_request_tokens), c.refund_unused_tokens ? 1 : 0,
                c.budget ? 1 : 0, c.per_thread_credit ? 1 : 0);
  return buf;
}

ns random_step(tgtest::rng& g, const account_config& c) {
  const std::int64_t slot = c.token_window.count() / 15;
  switch (g.between(0, 9)) {
    case 0: return ns(0);
    case 1: return ns(1);
    case 2: return ns(static_cast<std::int64_t>(g.between(1, 1000000)));
    case 3: return ns(static_cast<std::int64_t>(g.between(1, static_cast<std::uint64_t>(slot))));
    case 4: return ns(slot);
    case 5: return c.request_window / 15;
    case 6: return c.token_window;
    case 7: return c.token_window + ns(slot);
    case 8: return g.chance(10) ? ns(hours(24) / 15) : ns(static_cast<std::int64_t>(g.between(1, 100000000)));
    default: return ns(static_cast<std::int64_t>(g.between(1, 20000000)));
  }
}

struct pending_check {
  unsigned thread;
  request r;
  ns at, wait;
  bool needs_return;  // the refusal also named a permit or money
  bool returned = false, taken = false;
  std::size_t due = 0;  // the op index at which to ask again
};

// One schedule; returns the number of (earlier, at) checks made.
std::pair<std::uint64_t, std::uint64_t> run_schedule(std::uint64_t seed, unsigned threads, bool credit, int ops) {
  tgtest::rng g(seed);
  const schedule_config sc = random_config(g, credit);
  const account_config& c = sc.c;
  INFO("schedule seed " << seed << ", " << threads << " thread(s), " << describe(c));
  acct a(c, t0);
  std::vector<std::unique_ptr<handoff_thread>> workers;
  for (unsigned i = 1; i < threads; ++i) workers.push_back(std::make_unique<handoff_thread>());
  auto on = [&](unsigned th, const std::function<void()>& f) {
    if (th == 0) f();
    else workers[th - 1]->run(f);
  };
  std::vector<std::vector<lease<manual_clock>>> held(threads);
  std::vector<pending_check> pending;
  std::uint64_t earlier_checks = 0, at_checks = 0;
  ns now = t0;
  auto random_request = [&]() {
    const std::uint64_t n = g.between(1, sc.max_n);
    const std::uint64_t prompt = g.between(0, n - 1);
    return req(prompt, n - prompt);
  };
  // Marks what an operation may have done to every pending check.
  auto mark = [&](bool took, bool gave) {
    for (pending_check& p : pending) {
      p.taken = p.taken || took;
      p.returned = p.returned || gave;
    }
  };
  const bool trace = std::getenv("TOLLGATE_TRACE") != nullptr;
  auto admit = [&](unsigned th, const request& r, ns t) {
    admission<manual_clock> x;
    on(th, [&] { x = a.try_admit(r, t); });
    if (trace)
      std::printf("t=%lld th=%u n=%llu -> %s refused %u wait %lld rem rpm %llu tpm %llu tpd %llu\n",
                  static_cast<long long>(t.count()), th,
                  static_cast<unsigned long long>(r.prompt_tokens + r.max_tokens.value_or(0)),
                  x ? "admit" : "refuse", x.refused.bits, static_cast<long long>(x.decision.retry_after().count()),
                  static_cast<unsigned long long>(a.remaining(t).requests.value_or(0)),
                  static_cast<unsigned long long>(a.remaining(t).tokens_minute.value_or(0)),
                  static_cast<unsigned long long>(a.remaining(t).tokens_day.value_or(0)));
    return x;
  };
  auto keep = [&](unsigned th, admission<manual_clock>& x) {
    on(th, [&] { held[th].push_back(std::move(x.lease)); });
  };
  for (int op = 0; op < ops; ++op) {
    // Due checks first, in the order they were made.
    for (std::size_t i = 0; i < pending.size();) {
      pending_check p = pending[i];
      if (p.due > static_cast<std::size_t>(op)) {
        ++i;
        continue;
      }
      pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(i));
      INFO("check of a refusal at " << p.at.count() << " ns with wait " << p.wait.count() << " ns, thread " << p.thread
                                    << ", op " << op);
      if (now < p.at + p.wait - ns(1)) now = p.at + p.wait - ns(1);
      if (now == p.at + p.wait - ns(1)) {
        auto x = admit(p.thread, p.r, now);
        if (!p.returned) {
          ++earlier_checks;
          REQUIRE_FALSE(x);
        }
        if (x) {
          mark(true, false);
          p.taken = true;
          keep(p.thread, x);
        }
      }
      if (!p.needs_return) {
        // At the wait, or later if the schedule is already past it (time
        // alone only admits more).
        if (now < p.at + p.wait) now = p.at + p.wait;
        auto y = admit(p.thread, p.r, now);
        if (!p.taken) {
          ++at_checks;
          INFO("asked again: refused by " << y.refused.bits << ", wait " << y.decision.retry_after().count() << " ns");
          REQUIRE(y);
        }
        mark(static_cast<bool>(y), credit);
        if (y) keep(p.thread, y);
      }
    }
    now += random_step(g, c);
    const unsigned th = static_cast<unsigned>(g.between(0, threads - 1));
    const std::uint64_t what = g.between(0, 99);
    if (what < 60 || held[th].empty()) {
      const request r = random_request();
      auto x = admit(th, r, now);
      if (x) {
        mark(true, false);
        keep(th, x);
        continue;
      }
      mark(false, credit);  // a refused attempt may give credit back
      const decision d = x.decision;
      if (!d.later() || d.retry_after() <= ns(0) || d.why() == reason::stale_time) continue;
      pending_check p{th, r, now, d.retry_after(),
                      x.refused.has(dimension::concurrency) || x.refused.has(dimension::budget)};
      // Half the checks ask straight away (nothing meanwhile), the others
      // after a few more operations.
      p.due = static_cast<std::size_t>(op) + (g.chance(50) ? 1 : g.between(2, 6));
      pending.push_back(p);
    } else if (what < 95) {
      // Settle one of this thread's leases: used within the reservation
      // (a refund when the policy says so), beyond it (debt), or failed.
      const std::size_t k = static_cast<std::size_t>(g.between(0, held[th].size() - 1));
      const std::uint64_t reserved = held[th][k].reserved_tokens();
      const std::uint64_t kind = g.between(0, 9);
      bool took = false, gave = false;
      on(th, [&] {
        lease<manual_clock>& l = held[th][k];
        if (kind < 5) {
          usage u;
          u.prompt = reserved / 2;
          u.completion = kind == 0 ? reserved - u.prompt : g.between(0, reserved - u.prompt);
          const auto res = l.settle(u, now);
          gave = res.refunded_tokens > 0;
          took = res.overspend_nanos > 0;  // money beyond the reservation
        } else if (kind < 7) {
          usage u;
          u.prompt = reserved;
          u.completion = g.between(1, 1000);
          (void)l.settle(u, now);
          took = true;
        } else {
          l.settle_failed(now);
        }
        held[th].erase(held[th].begin() + static_cast<std::ptrdiff_t>(k));
      });
      mark(took, gave);
    } else {
      // A rate 429 from the server: a pause can only refuse more.
      on(th, [&] {
        a.on_response(classify(429, "{\"error\":{\"type\":\"rate_limit_reached_error\",\"message\":\"request reached "
                                    "organization max RPM: 3, please try again after 1 seconds\"}}"),
                      std::nullopt, now);
      });
      mark(true, false);
    }
  }
  for (unsigned th = 0; th < threads; ++th)
    on(th, [&] { held[th].clear(); });  // each thread drops its own leases
  return {earlier_checks, at_checks};
}

}  // namespace

TEST_CASE("account exact: a refused caller is refused 1 ns before its wait and admitted at it", "[account][exact]") {
  std::uint64_t earlier = 0, at = 0;
  const std::vector<std::uint64_t> seeds = tgtest::seeds(6);
  for (const std::uint64_t seed : seeds)
    for (const bool credit : {true, false})
      for (const unsigned threads : {1u, 2u, 3u}) {
        const auto n = run_schedule(seed + 1000003ULL * threads + (credit ? 7 : 0), threads, credit, 600);
        earlier += n.first;
        at += n.second;
      }
  // The schedules must actually exercise the contract.
  CHECK(earlier >= 20 * seeds.size());
  CHECK(at >= 20 * seeds.size());
  std::printf("account exact: %llu checks 1 ns early, %llu at the wait\n", static_cast<unsigned long long>(earlier),
              static_cast<unsigned long long>(at));
}
