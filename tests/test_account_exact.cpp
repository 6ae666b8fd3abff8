// The account's exactness: the wait a refusal reports, pauses after server
// feedback, what a hint may do, worst-case cost with cache writes, and the
// limits the account checks at configuration.
#include "catch_compat.hpp"
#include "server_models.hpp"
#include "account_support.hpp"
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

namespace Catch {
template <>
struct StringMaker<std::chrono::nanoseconds> {
  static std::string convert(std::chrono::nanoseconds d) { return std::to_string(d.count()) + " ns"; }
};
}  // namespace Catch

namespace {
using exact_account = account<manual_clock>;
constexpr ns t0{0};

using tgtest::k26;
using tgtest::req;
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
    exact_account a(c, t0);
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
  exact_account a(c, t0);
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
    } else if (what < 97) {
      // A live change of limits (the same dimensions, each scaled by 1/2 to
      // 2): it may take capacity away and give it back. (Below 2^24: a
      // window's unit is fixed when it is built.)
      auto scale = [&](const limit& l, std::uint64_t floor_value) {
        if (!l.is_finite()) return l;
        const std::uint64_t v = std::min<std::uint64_t>(*l.value() * g.between(50, 200) / 100, 16000000);
        return limit(v > floor_value ? v : floor_value);
      };
      tier_row t;
      t.concurrency = scale(c.concurrency, 1);
      t.rpm = scale(c.rpm, 2);
      t.tpm = scale(c.tpm, c.max_request_tokens + 1);
      t.tpd = scale(c.tpd, 1);
      errc e = errc::ok;
      on(th, [&] { e = a.set_limits(t, now); });
      CHECK(e == errc::ok);
      mark(true, true);
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

// --- Pauses after server feedback ---
namespace {
const char* const rpm_429 =
    "{\"error\":{\"message\":\"request reached organization max RPM: 3, please try again after 1 seconds\","
    "\"type\":\"rate_limit_reached_error\"}}";
const char* const tpm_429 =
    "{\"error\":{\"message\":\"request reached organization TPM rate limit, current:500100, limit:500000, please try "
    "again after 1 seconds\",\"type\":\"rate_limit_reached_error\"}}";
const char* const plain_429 =
    "{\"error\":{\"message\":\"rate limited, please try again after 1 seconds\",\"type\":\"rate_limit_reached_error\"}}";

constexpr server_model every_model[] = {server_model::unknown,        server_model::fixed_window,
                                        server_model::sliding_log,    server_model::window_counter,
                                        server_model::token_bucket,   server_model::gcra};
bool strict(server_model m) {
  return m == server_model::fixed_window || m == server_model::sliding_log || m == server_model::token_bucket;
}
account_config rpm3(server_model m) {
  account_config c;
  c.concurrency = limit(4);
  c.rpm = limit(3);
  c.tpm = limit(500000);
  c.tpd = limit(1500000);
  c.model = m;
  return c;
}
// The stated rule's least pause for a request-limit 429: one emission
// interval of the limit as the policy runs it.
ns request_interval(server_model m) {
  return strict(m) ? ns(seconds(20)) : ns(seconds(30) + milliseconds(2));  // spaced: (60 s + 2 ms x 2) / 2
}
ns token_interval(server_model m) {
  return strict(m) ? ns(120000) : ns(detail::ceil_div(60002000000ULL, 500000 - 65536));
}
}  // namespace

TEST_CASE("account exact: a rate 429 pauses for the larger of the hint and one interval, under every model", "[account][exact]") {
  for (const server_model m : every_model) {
    INFO("server model " << to_string(m));
    const ns at = seconds(10);
    {
      exact_account a(rpm3(m), t0);
      a.on_response(classify(429, rpm_429), std::nullopt, at);
      CHECK(a.paused_until() == at + request_interval(m));  // "RPM 3 means 20 s", not the 1 s hint
      a.on_response(classify(429, rpm_429), seconds(45), at);
      CHECK(a.paused_until() == at + seconds(45));  // a longer hint wins
    }
    {
      exact_account a(rpm3(m), t0);
      a.on_response(classify(429, plain_429), std::nullopt, at);  // names no dimension: as RPM
      CHECK(a.paused_until() == at + request_interval(m));
    }
    {
      exact_account a(rpm3(m), t0);
      a.on_response(classify(429, tpm_429), std::nullopt, at);  // W / L of 500,000 tokens is far below the hint
      CHECK(a.paused_until() == at + seconds(1));
      const auto x = a.try_admit(req(10, 10), at + seconds(1) - ns(1));
      CHECK(x.refused.has(dimension::paused));
      CHECK(a.try_admit(req(10, 10), at + seconds(1)));
    }
    {
      // The token interval binds when the hint is shorter.
      exact_account a(rpm3(m), t0);
      a.on_response(classify(429, "{\"error\":{\"message\":\"request reached organization TPM rate limit\","
                                  "\"type\":\"rate_limit_reached_error\"}}"),
                    std::nullopt, at);
      CHECK(a.paused_until() == at + token_interval(m));
    }
    {
      // The account's own wait binds when its window is full: three
      // requests at 10 s leave the strict window full until their slot has
      // left it; the spaced policy waits one interval after the first.
      exact_account a(rpm3(m), t0);
      int admitted = 0;
      for (int i = 0; i < 3; ++i)
        if (auto x = a.try_admit(req(10, 10), at)) {
          ++admitted;
          x.lease.settle_failed(at);
        }
      a.on_response(classify(429, rpm_429), std::nullopt, at);
      if (strict(m)) {
        CHECK(admitted == 3);
        CHECK(a.paused_until() == seconds(72));  // slot [8 s, 12 s) leaves the window at 72 s
      } else {
        CHECK(admitted == 1);
        CHECK(a.paused_until() == at + request_interval(m));
      }
    }
  }
}

TEST_CASE("account exact: a server that counts another client's requests, under every server model", "[account][exact]") {
  // The server sees this account's requests and another client's, one
  // request a minute; when it refuses, the account pauses by the rule and the
  // next request it admits is never sooner than one interval later.
  std::uint64_t refusals = 0;
  for (const std::uint64_t seed : tgtest::seeds(4))
    for (int kind = 0; kind < tgtest::servers::server_count; ++kind)
      for (const server_model m : every_model) {
        INFO("seed " << seed << ", server " << tgtest::servers::server_names[kind] << ", account model " << to_string(m));
        tgtest::rng g(seed + static_cast<std::uint64_t>(kind) * 31);
        auto srv = tgtest::servers::make_server(kind, 3, ns(minutes(1)).count(), g);
        exact_account a(rpm3(m), t0);
        ns now = t0, next_foreign = ns(static_cast<std::int64_t>(g.between(0, 60000000000ULL)));
        for (int i = 0; i < 200; ++i) {
          now += ns(static_cast<std::int64_t>(g.between(1, 30000000000ULL)));
          while (next_foreign <= now) {
            (void)srv->accept(next_foreign.count(), 1);
            next_foreign += minutes(1);
          }
          auto x = a.try_admit(req(10, 10), now);
          if (!x) continue;
          if (srv->accept(now.count(), 1)) {
            x.lease.settle_failed(now);
            continue;
          }
          ++refusals;
          x.lease.settle_rejected(now);
          a.on_response(classify(429, rpm_429), std::nullopt, now);
          REQUIRE(a.paused_until() >= now + request_interval(m));
          CHECK_FALSE(a.try_admit(req(10, 10), now + request_interval(m) - ns(1)));
        }
      }
  // The other client's requests must have made servers refuse some of ours.
  CHECK(refusals >= 10 * tgtest::seeds(4).size());
  std::printf("account exact: %llu server 429s paused for\n", static_cast<unsigned long long>(refusals));
}

TEST_CASE("account exact: a hint counts for at most max_pause; clear_pause ends a pause", "[account][exact]") {
  const ns wall = seconds(1800000000);  // 2027
  account_config c = rpm3(server_model::sliding_log);
  exact_account a(c, t0);
  rate_limit_headers h;
  REQUIRE(h.read("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT", wall));
  REQUIRE(h.retry_hint());
  CHECK(*h.retry_hint() > ns(hours(24 * 365 * 200)));  // centuries
  a.on_response(429, h, rpm_429, seconds(10));
  CHECK(a.paused_until() == seconds(10) + hours(24));
  CHECK(a.stats().capped_hints == 1);
  // "try again after 99999999999 seconds", from the body.
  a.on_response(classify(429, "{\"error\":{\"message\":\"please try again after 99999999999 seconds\","
                              "\"type\":\"rate_limit_reached_error\"}}"),
                std::nullopt, seconds(20));
  CHECK(a.paused_until() == seconds(20) + hours(24));
  CHECK(a.stats().capped_hints == 2);
  // The TPD reset and an overload hint are capped the same way.
  a.on_response(classify(429, "{\"error\":{\"type\":\"rate_limit_reached_error\",\"message\":\"organization TPD rate "
                              "limit, current: 9, limit: 5\"}}"),
                hours(1000), seconds(30));
  // (the local reset, not capped, is when slot 0 leaves the 24 h window)
  CHECK(a.paused_until() >= seconds(30) + hours(24));
  CHECK(a.paused_until() <= hours(24) + minutes(96));
  CHECK(a.stats().capped_hints == 3);
  // resume() lifts a stop, not a pause.
  a.resume();
  CHECK(a.try_admit(req(10, 10), hours(1)).refused.has(dimension::paused));
  a.clear_pause();
  CHECK(a.paused_until().count() == std::numeric_limits<std::int64_t>::min());
  CHECK(a.try_admit(req(10, 10), hours(1)));
  // A hint at the cap is not counted; a shorter cap cuts more.
  account_config short_cap = c;
  short_cap.max_pause = minutes(5);
  exact_account b(short_cap, t0);
  b.on_response(classify(429, rpm_429), minutes(5), t0);
  CHECK(b.stats().capped_hints == 0);
  b.on_response(classify(429, rpm_429), minutes(50), t0);
  CHECK(b.paused_until() == minutes(5));
  CHECK(b.stats().capped_hints == 1);
  // Zero: hints never lengthen a pause beyond the account's own wait.
  account_config no_hints = c;
  no_hints.max_pause = ns(0);
  exact_account z(no_hints, t0);
  z.on_response(classify(429, rpm_429), hours(5), t0);
  CHECK(z.paused_until() == seconds(20));
  // A negative cap is refused.
  account_config bad = c;
  bad.max_pause = ns(-1);
  errc e = errc::ok;
  exact_account refused(bad, t0, e);
  CHECK(e == errc::zero_period);
}

TEST_CASE("account exact: pauses and waits read at extreme times are defined", "[account][exact]") {
  constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min(), hi = std::numeric_limits<std::int64_t>::max();
  for (const server_model m : every_model) {
    INFO("server model " << to_string(m));
    if (!strict(m)) {
      // Read at a much earlier `now`: the pause's time left saturates. (Only
      // where no dimension is a sliding window: a window read at INT64_MIN
      // is the window's own edge, issue 14 item 2, fixed there.)
      account_config c = rpm3(m);
      c.tpd = limit::unlimited();
      exact_account a(c, t0);
      a.on_response(classify(429, rpm_429), seconds(5), t0);
      const auto v = a.remaining(ns(lo));
      CHECK(v.paused_for.count() == hi);
      const auto x = a.try_admit(req(10, 10), ns(lo));
      CHECK_FALSE(x);
      CHECK(x.refused.has(dimension::paused));
      CHECK(x.decision.retry_after().count() == hi);
    }
    // A pause from an extreme `now` saturates instead of wrapping.
    exact_account b(rpm3(m), t0);
    b.on_response(classify(429, rpm_429), hours(24), ns(hi - 1));
    CHECK(b.paused_until().count() == hi);
    CHECK(b.remaining(ns(hi)).paused_for == ns(0));
    exact_account d(rpm3(m), t0);
    d.on_response(classify(429, rpm_429), seconds(1), ns(lo));
    CHECK(d.paused_until() >= ns(lo) + seconds(1));
    CHECK(d.try_admit(req(10, 10), seconds(100)));
  }
}

// --- Cache writes and the budget ---
TEST_CASE("account exact: the worst case bounds cache writes, so a budget is never overspent", "[account][exact][money]") {
  static const model_info k3_info = *find_model("kimi-k3");
  const model_info* k3 = &k3_info;
  // The call: 10,000 prompt tokens written to the 1-hour cache and
  // 1,000 output tokens cost $0.105; the worst case was $0.045.
  const usage u{10000, 0, 1000, 0, 10000};
  CHECK(cost(*k3, u).total == usd::from_nanos(105000000));
  CHECK(worst_case_cost(*k3, 10000, 1000).total == usd::from_nanos(105000000));
  CHECK(worst_case_cost(*k3, 10000, 1000, cache_writes{0, 10000}).total == usd::from_nanos(105000000));
  CHECK(worst_case_cost(*k3, 10000, 1000, cache_writes{}).total == usd::from_nanos(45000000));
  CHECK(worst_case_cost(*k3, 10000, 1000, cache_writes{10000, 0}).total == usd::from_nanos(75000000));
  // A model without write prices: nothing added, and a declared write is unknown.
  CHECK(worst_case_cost(*k26(), 1000, 2000).total == usd::from_nanos(1000 * 950 + 2000 * 4000));
  CHECK(worst_case_cost(*k26(), 1000, 2000, cache_writes{1, 0}).error == cost_errc::unknown_price);
  // CNY has no write prices: undeclared writes have no worst case; declared
  // none, the rest is priced.
  CHECK(worst_case_cost<cny_tag>(*k3, 10000, 1000).error == cost_errc::unknown_price);
  CHECK(worst_case_cost<cny_tag>(*k3, 10000, 1000, cache_writes{}).total == cny::from_nanos(10000 * 20000 + 1000 * 100000));

  // An account spending its budget on kimi-k3 calls, some declaring their
  // writes, each settled with a random usage within its request.
  for (const std::uint64_t seed : tgtest::seeds(8)) {
    INFO("seed " << seed << " (TOLLGATE_SEED)");
    tgtest::rng g(seed);
    account_config c;
    c.model = server_model::sliding_log;
    c.budget = usd::from_units(static_cast<std::int64_t>(g.between(1, 5)));
    exact_account a(c, t0);
    std::int64_t spent = 0;
    int settled = 0;
    for (int i = 0; i < 400; ++i) {
      request r;
      r.model = k3;
      r.prompt_tokens = g.between(0, 200000);
      r.max_tokens = g.between(1, 20000);
      const bool declared = g.chance(50);
      if (declared) r.planned_cache_writes = cache_writes{g.between(0, r.prompt_tokens), g.between(0, r.prompt_tokens)};
      auto x = a.try_admit(r, ns(i));
      if (!x) {
        CHECK(x.refused.has(dimension::budget));
        continue;
      }
      usage used;
      used.prompt = g.between(0, r.prompt_tokens);
      used.cached = g.between(0, used.prompt);
      used.completion = g.between(0, *r.max_tokens);
      if (declared) {
        used.cache_write_5m = g.between(0, r.planned_cache_writes->write_5m);
        used.cache_write_1h = g.between(0, r.planned_cache_writes->write_1h);
      } else {
        // At most the prompt in all, in either lifetime.
        used.cache_write_1h = g.chance(50) ? r.prompt_tokens : g.between(0, r.prompt_tokens);
        used.cache_write_5m = g.between(0, r.prompt_tokens - used.cache_write_1h);
      }
      const auto res = x.lease.settle(used, ns(i));
      CHECK(res.overspend_nanos == 0);  // within its reservation
      spent += res.cost.nanos();
      ++settled;
      CHECK(a.stats().spent_nanos == spent);
      CHECK(spent <= c.budget->nanos());
    }
    CHECK(settled > 0);
  }
}

// --- The limits the account checks at configuration ---
TEST_CASE("account exact: the largest token limit a margin policy runs, checked with its numbers", "[account][exact]") {
  account_config c = account_config::from_tier(*kimi_tiers_2026_09.tier(5));
  c.model = server_model::unknown;
  const std::uint64_t top = exact_account::largest_token_limit(c);
  CHECK(top == 840840000ULL + 65536);  // one token per 71.3 ns of a minute, plus the margin
  {
    c.tpm = limit(top);
    errc e = errc::zero_count;
    exact_account a(c, t0, e);
    CHECK(e == errc::ok);
  }
  for (const std::uint64_t refused : {top + 1, std::uint64_t{871416307}, std::uint64_t{1000000000}}) {
    INFO("tpm " << refused);
    c.tpm = limit(refused);
    errc e = errc::ok;
    error_values v;
    exact_account a(c, t0, e, v);
    CHECK(e == errc::rate_too_fine);
    CHECK(v.refused == refused);
    CHECK(v.largest_accepted == top);
#if !TOLLGATE_NO_EXCEPTIONS
    try {
      exact_account thrown(c, t0);
      FAIL("accepted");
    } catch (const config_error& x) {
      CHECK(x.code() == errc::rate_too_fine);
      CHECK(x.values().refused == refused);
      CHECK(x.values().largest_accepted == top);
      CHECK(std::string(x.what()).find(std::to_string(top)) != std::string::npos);
    }
#endif
  }
  // No holes: every limit up to the largest is accepted, every one above it
  // refused (the bucket alone accepted some above and refused others).
  for (const std::uint64_t seed : tgtest::seeds(2)) {
    tgtest::rng g(seed);
    INFO("seed " << seed << " (TOLLGATE_SEED)");
    for (int i = 0; i < 3000; ++i) {
      const std::uint64_t l = i % 2 == 0 ? g.between(c.max_request_tokens + 1, top) : g.between(top + 1, 3 * top);
      c.tpm = limit(l);
      errc e = errc::ok;
      exact_account a(c, t0, e);
      INFO("tpm " << l);
      REQUIRE((e == errc::ok) == (l <= top));
    }
  }
  // A live change is checked the same way.
  c.tpm = limit(5000000);
  exact_account live(c, t0);
  tier_row up = *kimi_tiers_2026_09.tier(5);
  up.tpm = limit(top + 1);
  CHECK(live.set_limits(up, t0) == errc::rate_too_fine);
  up.tpm = limit(top);
  CHECK(live.set_limits(up, t0) == errc::ok);
  // Strict policies take any token limit; a spaced request limit must keep
  // its interval within 63 bits.
  account_config s = c;
  s.model = server_model::sliding_log;
  CHECK(exact_account::largest_token_limit(s) == std::numeric_limits<std::uint64_t>::max());
  s.tpm = limit(3 * top);
  errc se = errc::zero_count;
  exact_account strict_acct(s, t0, se);
  CHECK(se == errc::ok);
  account_config r = c;
  r.rpm = limit(exact_account::largest_request_limit(r) + 1);
  errc re = errc::ok;
  error_values rv;
  exact_account many(r, t0, re, rv);
  CHECK(re == errc::too_large);
  CHECK(rv.largest_accepted == exact_account::largest_request_limit(r));
}

TEST_CASE("account exact: an account built with an error refuses everything", "[account][exact]") {
  // Errors found before, between and after the dimensions are built.
  std::vector<account_config> bad;
  account_config margin = rpm3(server_model::unknown);
  margin.max_request_tokens = 600000;  // not below TPM 500,000
  bad.push_back(margin);
  account_config fine_rate = rpm3(server_model::unknown);
  fine_rate.tpm = limit(2000000000);
  bad.push_back(fine_rate);
  account_config pause = rpm3(server_model::sliding_log);
  pause.max_pause = ns(-5);
  bad.push_back(pause);
  for (const account_config& c : bad) {
    errc e = errc::ok;
    exact_account a(c, t0, e);
    REQUIRE(e != errc::ok);
    a.resume();
    std::vector<lease<manual_clock>> held;
    for (int i = 0; i < 10; ++i) {
      auto x = a.try_admit(req(10, 10), seconds(100 * i));
      CHECK_FALSE(x);
      CHECK(x.decision.never());
      CHECK(x.decision.why() == reason::misconfigured);
      if (x) held.push_back(std::move(x.lease));
    }
  }
}

TEST_CASE("account exact: per_thread_credit off leaves no unit with a thread; on, a refusal names only what refused", "[account][exact][credit]") {
  account_config c;
  c.concurrency = limit(4096);  // credit chunk 4
  c.rpm = limit(2048);          // chunk 2
  c.tpm = limit(1048576);       // chunk 1,024 tokens
  c.tpd = limit::unlimited();
  c.model = server_model::sliding_log;
  for (const bool credit : {true, false}) {
    INFO("credit " << credit);
    c.per_thread_credit = credit;
    exact_account a(c, t0);
    REQUIRE(a.try_admit(req(10, 10), t0));  // this thread: 1 request, plus a chunk with credit
    std::uint64_t other = 0;
    std::thread([&] {
      while (a.try_admit(req(10, 10), t0)) ++other;
    }).join();
    // With credit this thread still holds 2 requests' units the other
    // thread could not take; without, the other thread gets every one.
    CHECK(other == (credit ? 2045u : 2047u));
  }
  // A thread holding a concurrency unit as credit is not refused for
  // concurrency, even when the limiter has none left.
  account_config k = c;
  k.concurrency = limit(1024);  // chunk 1
  k.rpm = limit(1023);          // a strict window without credit, the binding limit
  k.per_thread_credit = true;
  exact_account a(k, t0);
  std::vector<lease<manual_clock>> held;
  for (int i = 0; i < 1023; ++i) {
    auto x = a.try_admit(req(10, 10), t0);
    REQUIRE(x);
    held.push_back(std::move(x.lease));
  }
  CHECK(*a.remaining(t0).concurrency == 1);  // the unit this thread holds
  const auto x = a.try_admit(req(10, 10), t0);
  CHECK_FALSE(x);
  CHECK(x.refused.has(dimension::rpm));
  CHECK_FALSE(x.refused.has(dimension::concurrency));
  CHECK(x.decision.retry_after() > ns(0));
}
