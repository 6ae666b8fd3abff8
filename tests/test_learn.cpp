// server_model::learn (account/learn.hpp) against the five server models of
// server_models.hpp: the account starts on the strict window, switches a
// dimension to the margin policy on the first 429 naming it, and the caller
// resends every 429'd request. Checks the header's bound: at most one 429
// per dimension (none from fixed window, sliding log, token bucket), with and
// without delivery jitter (windows W + J), no request lost, and the margin
// policy's throughput after the switch.
#include "catch_compat.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"
#include "learn_support.hpp"
#include "server_models.hpp"
#include "../examples/sim/swarm.hpp"

#include <atomic>
#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace tollgate;
using namespace std::chrono;
using tgtest::ns;

namespace {
using namespace tgtest::servers;
using learn_phase = account_policy::learn_phase;
using acct_t = account<manual_clock>;

struct scenario {
  const char* name;
  std::uint64_t limit;
  ns window;
  std::uint64_t max_request;  // 1: a request limit; else tokens, requests of 1..max_request
  std::int64_t jitter;        // each request reaches the server 0..jitter ns late, in order
};

const scenario scenarios[] = {
    {"requests, L = 10 per 5 s", 10, seconds(5), 1, 0},
    {"requests, L = 10 per 5 s, 2 ms jitter", 10, seconds(5), 1, 2000000},
    {"requests, Tier0 RPM 3", 3, minutes(1), 1, 0},
    {"requests, Tier0 RPM 3, 2 ms jitter", 3, minutes(1), 1, 2000000},
    {"tokens, L = 20,000 per 60 s, m = 2,000", 20000, seconds(60), 2000, 0},
    {"tokens, L = 20,000 per 60 s, m = 2,000, 2 ms jitter", 20000, seconds(60), 2000, 2000000},
    // The margin policy admits more here: learn starts (and stays) on it.
    {"requests, RPM 100 (starts spaced)", 100, minutes(1), 1, 0},
    {"requests, RPM 100 (starts spaced), 2 ms jitter", 100, minutes(1), 1, 2000000},
};

bool starts_spaced(const scenario& sc) { return sc.max_request == 1 && sc.limit >= 17; }

account_config config_for(const scenario& sc, server_model m, bool windows_with_jitter = true, bool credit = false) {
  account_config c;
  c.model = m;
  c.lease_timeout = ns(0);
  c.per_thread_credit = credit;  // on, a token window of 20,000 takes its units a chunk at a time
  const ns w = sc.window + ns(windows_with_jitter ? sc.jitter : 0);  // W + J, as policy.hpp asks
  tgtest::put_learn_limit(c, sc.limit, w, sc.max_request);
  return c;
}

// The server's 429 as Kimi words it, classified as the account sees it.
error_info rejection(const scenario& sc) { return tgtest::kimi_rate_429(sc.limit, sc.max_request); }

struct outcome {
  std::uint64_t generated = 0, completed = 0, sent = 0, rejected = 0;
  std::uint64_t units_in = 0;  // units the server accepted in [measure_from, measure_to)
  std::int64_t first_rejection = -1;
  std::int64_t last_accepted = 0;
  std::uint64_t widenings = 0;
  std::uint64_t after_widening = 0;  // 429s that came after the margin had widened
};

// One closed-loop trial: `requests` requests with a random (or, saturated,
// back-to-back) arrival schedule, each sent when the account admits it; a
// 429 is fed back at the time the server saw it and the same request sent
// again. Every loop is bounded by the request count.
outcome run_trial(const scenario& sc, int server_kind, server_model m, std::uint64_t seed, bool saturate,
                  std::uint64_t requests, std::int64_t phase, bool windows_with_jitter = true,
                  std::int64_t measure_from = INT64_MAX, std::int64_t measure_to = INT64_MAX,
                  std::uint64_t restart_every = 0) {
  tgtest::rng g(seed);
  const std::int64_t w = sc.window.count();
  auto srv = make_server_at(server_kind, sc.limit, w, phase);
  const account_config cfg = config_for(sc, m, windows_with_jitter, (seed & 1) != 0);
  auto a = std::make_unique<acct_t>(cfg, ns(0));
  const error_info e429 = rejection(sc);
  outcome o;
  std::int64_t now = 0, delivered = 0;
  for (std::uint64_t i = 0; i < requests; ++i) {
    if (!saturate) {
      const std::uint64_t pick = g.between(0, 9);
      const std::uint64_t uw = static_cast<std::uint64_t>(w);
      if (pick < 4) {
      } else if (pick < 7) {
        now += static_cast<std::int64_t>(g.between(0, uw / sc.limit * sc.max_request));
      } else if (pick < 9) {
        now += static_cast<std::int64_t>(g.between(0, uw / 4));
      } else {
        now += static_cast<std::int64_t>(g.between(0, uw * 2));
      }
    }
    const std::uint64_t n = g.between(1, sc.max_request);
    request r;
    r.prompt_tokens = sc.max_request == 1 ? 0 : n;
    r.max_tokens = 0;
    ++o.generated;
    for (int attempt = 0; attempt < 10000; ++attempt) {
      auto x = a->try_admit(r, ns(now));
      if (!x) {
        REQUIRE(x.decision.later());
        now += x.decision.retry_after().count();
        if (!saturate && g.chance(20)) now += static_cast<std::int64_t>(g.between(0, 1000000));
        continue;
      }
      ++o.sent;
      std::int64_t at = now + static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(sc.jitter)));
      if (at < delivered) at = delivered;  // in-order delivery
      delivered = at;
      if (srv->accept(at, sc.max_request == 1 ? 1 : n)) {
        if (at >= measure_from && at < measure_to) o.units_in += sc.max_request == 1 ? 1 : n;
        o.last_accepted = at;
        x.lease.settle(usage{n, 0, 0, 0, 0}, ns(now));
        ++o.completed;
        if (restart_every != 0 && o.completed % restart_every == 0) {
          // A restart: the snapshot restored into a new account (supplied
          // time as the wall clock too).
          const std::string snap = a->snapshot(ns(now), ns(now));
          auto b = std::make_unique<acct_t>(cfg, ns(now));
          REQUIRE(b->restore(snap, ns(now), ns(now)) == account_restore_errc::ok);
          a = std::move(b);
        }
        break;
      }
      ++o.rejected;
      if (o.first_rejection < 0) o.first_rejection = at;
      x.lease.settle_rejected(ns(now));
      if (now < at) now = at;  // the answer comes back once the server has seen the request
      if (a->learned(ns(now)).widenings > 0) ++o.after_widening;
      a->on_response(e429, nanoseconds(seconds(1)), ns(now));
    }
  }
  o.widenings = a->learned(ns(now)).widenings;
  return o;
}

int trial_count() {
  if (const char* s = std::getenv("TOLLGATE_LEARN_TRIALS")) {
    const long v = std::strtol(s, nullptr, 10);
    if (v > 0 && v < 100000) return static_cast<int>(v);
  }
  return static_cast<int>(tgtest::sized(150));
}

bool strict_safe(int server_kind) { return server_kind == 0 || server_kind == 1 || server_kind == 3; }
// The one cell where the margin policy itself is not safe (docs/server-models.md).
bool margin_unsafe(const scenario& sc, int server_kind) {
  return sc.max_request > 1 && sc.jitter > 0 && server_kind == 4;
}

}  // namespace

TEST_CASE("learn: the pure rule (phase, lesson, widening)", "[learn]") {
  using namespace account_policy;
  CHECK(phase_at(not_switched, seconds(60), ns(0)) == learn_phase::strict);
  CHECK(phase_at(100, ns(50), ns(100)) == learn_phase::both);
  CHECK(phase_at(100, ns(50), ns(149)) == learn_phase::both);
  CHECK(phase_at(100, ns(50), ns(150)) == learn_phase::spaced);
  CHECK(phase_at(100, ns(50), ns(20)) == learn_phase::both);  // a `now` before the switch: in it
  CHECK(phase_at(std::numeric_limits<std::int64_t>::max() - 1, ns(50), ns(0)) == learn_phase::both);  // saturates
  CHECK(stage_at(false, 5, 6, ns(7)) == learn_stage::none);
  CHECK(stage_at(true, not_switched, not_switched, ns(7)) == learn_stage::strict);
  CHECK(stage_at(true, 5, not_switched, ns(7)) == learn_stage::guarded);  // the guard not yet set
  CHECK(stage_at(true, 5, 8, ns(7)) == learn_stage::guarded);
  CHECK(stage_at(true, 5, 8, ns(8)) == learn_stage::widenable);
  const learn_stage N = learn_stage::none, S = learn_stage::strict, G = learn_stage::guarded, W = learn_stage::widenable;
  auto eq = [](learn_step a, bool r, bool t, bool w) {
    return a.switch_requests == r && a.switch_tokens == t && a.widen == w;
  };
  CHECK(eq(learn_from(error_kind::rpm, S, S), true, false, false));
  CHECK(eq(learn_from(error_kind::tpm, S, S), false, true, false));
  CHECK(eq(learn_from(error_kind::rpm, G, S), false, false, false));  // during the switch's pause: nothing
  CHECK(eq(learn_from(error_kind::rpm, W, S), false, false, true));
  CHECK(eq(learn_from(error_kind::tpm, W, S), false, true, false));
  CHECK(eq(learn_from(error_kind::rpm, N, S), false, false, false));  // no request limit to move
  CHECK(eq(learn_from(error_kind::rate_limit, S, S), true, true, false));
  CHECK(eq(learn_from(error_kind::rate_limit, W, S), false, true, false));
  CHECK(eq(learn_from(error_kind::rate_limit, W, W), false, false, true));
  CHECK(eq(learn_from(error_kind::rate_limit, N, W), false, false, true));
  CHECK(eq(learn_from(error_kind::rate_limit, W, G), false, false, false));
  CHECK(eq(learn_from(error_kind::rate_limit, N, N), false, false, false));
  for (error_kind k : {error_kind::concurrency, error_kind::tpd, error_kind::overloaded, error_kind::quota,
                       error_kind::server_error, error_kind::none})
    CHECK(eq(learn_from(k, S, S), false, false, false));
  CHECK(widened_margin(milliseconds(2), milliseconds(256)) == milliseconds(4));
  CHECK(widened_margin(milliseconds(200), milliseconds(256)) == milliseconds(256));
  CHECK(widened_margin(milliseconds(256), milliseconds(256)) == milliseconds(256));
  CHECK(widened_margin(ns(0), milliseconds(256)) == milliseconds(1));
  CHECK(widened_margin(ns(std::numeric_limits<std::int64_t>::max()), ns(std::numeric_limits<std::int64_t>::max())) ==
        ns(std::numeric_limits<std::int64_t>::max()));
}

TEST_CASE("learn: a dimension starts on the strict window only where it admits more", "[learn]") {
  using account_policy::starts_strict;
  using account_policy::spaced_request_rate;
  using account_policy::spaced_token_rate;
  const ns w = minutes(1);
  // Requests: 15/16 of L against L - 1 (and 2 ms per request).
  CHECK(starts_strict(3, w, spaced_request_rate(3, w), 15));
  CHECK(starts_strict(16, w, spaced_request_rate(16, w), 15));  // 15 per W against 15 per W + 30 ms
  CHECK_FALSE(starts_strict(17, w, spaced_request_rate(17, w), 15));
  CHECK_FALSE(starts_strict(100, w, spaced_request_rate(100, w), 15));
  // Tokens: 15/16 of L against L - m.
  CHECK(starts_strict(500000, w, *spaced_token_rate(500000, 201000, w), 15));
  CHECK_FALSE(starts_strict(2000000, w, *spaced_token_rate(2000000, 101000, w), 15));
  CHECK(starts_strict(2000000, w, *spaced_token_rate(2000000, 130000, w), 15));
  // Degenerate inputs keep the strict window; huge ones do not overflow.
  CHECK(starts_strict(5, ns(0), rate(4, w), 15));
  CHECK(starts_strict(std::numeric_limits<std::uint64_t>::max(), ns(std::numeric_limits<std::int64_t>::max()),
                      rate(std::numeric_limits<std::uint64_t>::max(), ns(std::numeric_limits<std::int64_t>::max())), 4096));
  // The account: RPM 100 runs the margin policy from the start; a 429 then
  // switches nothing (there is nothing to switch) and widens the margin.
  account_config c;
  c.model = server_model::learn;
  c.rpm = limit(100);
  c.tpm = limit(2000000);
  c.max_request_tokens = 130000;
  acct_t a(c, ns(0));
  CHECK(std::string(a.policy(dimension::rpm)) == "spaced with margin (admits more here than the strict window)");
  CHECK(std::string(a.policy(dimension::tpm)) == "strict window (learning)");
  CHECK(a.learned(ns(0)).requests == learn_phase::spaced);
  CHECK_FALSE(a.learned(ns(0)).requests_switched_at);
  request r;
  r.max_tokens = 0;
  REQUIRE(a.try_admit(r, ns(0)));
  const auto x = a.try_admit(r, ns(0));
  CHECK(x.decision.retry_after() == ns(60000000000 / 99 + 1) + milliseconds(2));  // (60 s + 99 x 2 ms) / 99, rounded up
  a.on_response(classify(429, R"({"error":{"message":"request reached organization max RPM: 100","type":"rate_limit_reached_error"}})"),
                std::nullopt, ns(1));
  CHECK(a.learned(ns(1)).switches == 0);
  CHECK(a.learned(ns(1)).widenings == 1);
  CHECK(a.learned(ns(1)).margin == milliseconds(4));
}

TEST_CASE("learn: the spacing margin is a configuration value", "[learn]") {
  account_config c;
  c.rpm = limit(3);
  c.lease_timeout = ns(0);
  c.per_thread_credit = false;
  c.spacing_margin = milliseconds(5);
  acct_t a(c, ns(0));
  request r;
  r.max_tokens = 0;
  REQUIRE(a.try_admit(r, ns(0)));
  const auto x = a.try_admit(r, ns(0));
  // 2 per (60 s + 2 * 5 ms): 30.005 s apart.
  CHECK(x.decision.retry_after() == milliseconds(30005));
  c.spacing_margin = ns(-1);
  errc e = errc::ok;
  acct_t bad(c, ns(0), e);
  CHECK(e == errc::zero_period);
  c.spacing_margin = milliseconds(300);
  c.model = server_model::learn;  // a margin above the cap it may widen to
  acct_t bad2(c, ns(0), e);
  CHECK(e == errc::zero_period);
}

TEST_CASE("learn: a Kimi RPM 429 switches the request limit, for one window through both policies", "[learn]") {
  account_config c;
  c.model = server_model::learn;
  c.rpm = limit(3);
  c.tpm = limit(100000);
  c.max_request_tokens = 10000;
  c.lease_timeout = ns(0);
  c.per_thread_credit = false;
  acct_t a(c, ns(0));
  CHECK(std::string(a.policy(dimension::rpm)) == "strict window (learning)");
  request r;
  r.max_tokens = 0;
  r.prompt_tokens = 100;
  // The strict window: three at once.
  for (int i = 0; i < 3; ++i) REQUIRE(a.try_admit(r, ns(0)));
  CHECK_FALSE(a.try_admit(r, ns(0)));
  // The server says RPM at 1 s: the request limit switches, the tokens stay.
  a.on_response(classify(429, R"({"error":{"message":"request reached organization max RPM: 3, please try again after 1 seconds","type":"rate_limit_reached_error"}})"),
                nanoseconds(seconds(1)), ns(seconds(1)));
  learned_view v = a.learned(ns(seconds(1)));
  CHECK(v.requests == learn_phase::both);
  CHECK(v.tokens == learn_phase::strict);
  CHECK(v.switches == 1);
  REQUIRE(v.requests_switched_at);
  CHECK(*v.requests_switched_at == seconds(1));
  CHECK(std::string(a.policy(dimension::rpm)) == "spaced with margin (learned)");
  // The shadow saw three requests at 0: the spaced bucket admits the next
  // three intervals (30.002 s each) later, and the pause is at least that.
  const ns interval = milliseconds(30002);
  CHECK(nanoseconds(a.paused_until()) >= 3 * interval);
  a.clear_pause();
  const auto early = a.try_admit(r, 3 * interval - ns(1));
  CHECK_FALSE(early);
  CHECK(early.refused.has(dimension::rpm));
  CHECK(early.decision.retry_after() == ns(1));
  REQUIRE(a.try_admit(r, 3 * interval));
  // Past one window from the switch: the bucket alone, one request per interval.
  v = a.learned(ns(seconds(61)));
  CHECK(v.requests == learn_phase::spaced);
  REQUIRE(a.try_admit(r, 4 * interval));
  CHECK_FALSE(a.try_admit(r, 5 * interval - ns(1)));
  REQUIRE(a.try_admit(r, 5 * interval));
  CHECK(a.remaining(5 * interval).requests == std::uint64_t{0});
}

TEST_CASE("learn: the shadow of a long strict phase leads by at most two windows' worth", "[learn]") {
  // An hour at the strict window's full rate (10 per 5 s, more than the
  // spaced 9 per 5.018 s), then a 429: the first spaced admission comes at
  // most 2L spaced intervals after the switch, not the ~7 minutes an
  // uncapped shadow would have run ahead.
  account_config c;
  c.model = server_model::learn;
  c.rpm = limit(10);
  c.request_window = seconds(5);
  c.lease_timeout = ns(0);
  c.per_thread_credit = false;
  acct_t a(c, ns(0));
  request r;
  r.max_tokens = 0;
  std::int64_t now = 0;
  std::uint64_t sent = 0;
  for (int i = 0; i < 20000 && now < ns(hours(1)).count(); ++i) {
    const auto x = a.try_admit(r, ns(now));
    if (x) {
      ++sent;
      continue;
    }
    REQUIRE(x.decision.later());
    now += x.decision.retry_after().count();
  }
  CHECK(sent >= 6700);  // the strict window's rate: about 10 per 5 s x 15 / 16
  a.on_response(classify(429, R"({"error":{"message":"request reached organization max RPM: 10","type":"rate_limit_reached_error"}})"),
                std::nullopt, ns(now));
  const ns interval = milliseconds(5000 / 9 + 2) + ns(1);  // 5.018 s / 9, rounded up
  const ns pause_end = a.paused_until();
  CHECK(pause_end <= ns(now) + 20 * interval);
  CHECK(pause_end >= ns(now) + interval);
  CHECK(a.try_admit(r, pause_end));
}

TEST_CASE("learn: unused tokens go back by the ticket of the phase they were taken in", "[learn]") {
  account_config c;
  c.model = server_model::learn;
  c.tpm = limit(20000);
  c.max_request_tokens = 2000;
  c.refund_unused_tokens = true;
  c.lease_timeout = ns(0);
  c.per_thread_credit = false;
  acct_t a(c, ns(0));
  request r;
  r.prompt_tokens = 2000;
  r.max_tokens = 0;
  // Strict: the window gets 1,500 of 2,000 back.
  auto x = a.try_admit(r, ns(0));
  REQUIRE(x);
  CHECK(*a.remaining(ns(0)).tokens_minute == 18000);
  x.lease.settle(usage{500, 0, 0, 0, 0}, ns(1));
  CHECK(*a.remaining(ns(1)).tokens_minute == 19500);
  const error_info tpm429 = classify(429, R"({"error":{"message":"request reached organization TPM rate limit, current: 0, limit: 20000","type":"rate_limit_reached_error"}})");
  a.on_response(tpm429, std::nullopt, ns(2));
  a.clear_pause();
  CHECK(a.learned(ns(2)).tokens == learn_phase::both);
  // Switching: two tickets, one field: nothing goes back (the safe side).
  const ns t1 = seconds(30);
  x = a.try_admit(r, t1);
  REQUIRE(x);
  const decision before = a.try_admit(r, t1).decision;
  x.lease.settle(usage{500, 0, 0, 0, 0}, t1);
  CHECK(a.try_admit(r, t1).decision.retry_after() == before.retry_after());
  // Spaced: the bucket gets 1,500 back, so the next request comes sooner.
  const ns t2 = seconds(120);
  REQUIRE(a.learned(t2).tokens == learn_phase::spaced);
  x = a.try_admit(r, t2);
  REQUIRE(x);
  const ns wait_full = a.try_admit(r, t2).decision.retry_after();
  x.lease.settle(usage{500, 0, 0, 0, 0}, t2);
  const ns wait_back = a.try_admit(r, t2).decision.retry_after();
  CHECK(wait_back < wait_full);
  // (60 s + 2 ms) / 18,000 per token: 500 tokens' worth.
  CHECK(wait_back.count() > 0);
}

TEST_CASE("learn: a rate 429 that names no dimension switches every strict one", "[learn]") {
  account_config c;
  c.model = server_model::learn;
  c.rpm = limit(10);
  c.tpm = limit(100000);
  c.max_request_tokens = 10000;
  acct_t a(c, ns(0));
  const error_info e = classify(429, R"({"error":{"message":"Organization Rate limit exceeded, please try again after 1 seconds","type":"rate_limit_reached_error"}})");
  REQUIRE(e.kind == error_kind::rate_limit);
  a.on_response(e, std::nullopt, ns(5));
  const learned_view v = a.learned(ns(5));
  CHECK(v.requests == learn_phase::both);
  CHECK(v.tokens == learn_phase::both);
  CHECK(v.switches == 2);
  // Concurrency, daily and overload answers teach nothing.
  acct_t b(c, ns(0));
  b.on_response(classify(429, R"({"error":{"message":"request reached max organization concurrency: 30, please try again after 1 seconds","type":"rate_limit_reached_error"}})"),
                std::nullopt, ns(5));
  b.on_response(classify(429, R"({"error":{"message":"The engine is currently overloaded, please try again later","type":"engine_overloaded_error"}})"),
                std::nullopt, ns(5));
  CHECK(b.learned(ns(5)).switches == 0);
}

TEST_CASE("learn: at most one 429 per dimension against every server model, none lost", "[learn]") {
  const int trials = trial_count();
  std::printf("\nlearn against the five server models (%d random trials and 32 saturated phases per cell):\n", trials);
  std::printf("| scenario | fixed | log | counter | bucket | GCRA-1 |\n|---|---|---|---|---|---|\n");
  for (const scenario& sc : scenarios) {
    std::printf("| %s |", sc.name);
    for (int s = 0; s < server_count; ++s) {
      std::uint64_t worst = 0, total = 0, unknown_total = 0, runs = 0;
      const std::int64_t w = sc.window.count();
      for (int t = 0; t < trials + 32; ++t) {
        const bool sat = t >= trials;
        const std::uint64_t seed = tgtest::seed_for(7919ULL * static_cast<std::uint64_t>(s) + static_cast<std::uint64_t>(t));
        tgtest::rng pg(seed ^ 0x5bd1e995ULL);
        // Saturated trials: windows starting on a grid of 32 phases.
        const std::int64_t phase = sat ? w / 32 * (t - trials) : static_cast<std::int64_t>(pg.between(0, static_cast<std::uint64_t>(w)));
        const std::uint64_t count = sc.max_request == 1 ? sc.limit * 8 : 80;
        const outcome o = run_trial(sc, s, server_model::learn, seed, sat, count, phase);
        INFO(sc.name << " vs " << server_names[s] << ", trial " << t << (sat ? " (saturated)" : "") << ", phase " << phase
                     << ": " << o.rejected << " 429s of " << o.sent << " sent, " << tgtest::seed_note());
        CHECK(o.completed == o.generated);  // every 429'd request was resent and went through
        CHECK(o.sent == o.completed + o.rejected);
        if (margin_unsafe(sc, s)) {
          unknown_total += run_trial(sc, s, server_model::unknown, seed, sat, count, phase).rejected;
          // Past the switch the margin policy's own 429s, until the first
          // widening: after it, the per-request spacing covers the jitter.
          CHECK(o.after_widening == 0);
        } else {
          CHECK(o.rejected <= 1);
          if (strict_safe(s) || starts_spaced(sc)) CHECK(o.rejected == 0);
        }
        worst = std::max(worst, o.rejected);
        total += o.rejected;
        ++runs;
      }
      if (margin_unsafe(sc, s)) {
        std::printf(" %llu (unknown %llu) |", static_cast<unsigned long long>(total),
                    static_cast<unsigned long long>(unknown_total));
      } else {
        std::printf(" max %llu, %llu in %llu |", static_cast<unsigned long long>(worst),
                    static_cast<unsigned long long>(total), static_cast<unsigned long long>(runs));
      }
    }
    std::printf("\n");
    std::fflush(stdout);
  }
}

TEST_CASE("learn: where the margin policy is not safe, no more 429s than unknown over long runs", "[learn]") {
  // Tokens against a GCRA server with 2 ms of jitter: `unknown` keeps
  // getting the odd 429 for as long as it runs; learn gets its switch's,
  // the margin policy's until its first widening, and none after it.
  const scenario& sc = scenarios[5];
  std::uint64_t l_total = 0, u_total = 0;
  for (int t = 0; t < 12; ++t) {
    const std::uint64_t seed = tgtest::seed_for(104729ULL + static_cast<std::uint64_t>(t));
    const outcome l = run_trial(sc, 4, server_model::learn, seed, t % 2 == 0, 20000, 0);
    const outcome u = run_trial(sc, 4, server_model::unknown, seed, t % 2 == 0, 20000, 0);
    INFO("trial " << t << ": learn " << l.rejected << " (" << l.after_widening << " after widening), unknown "
                  << u.rejected << ", " << tgtest::seed_note());
    CHECK(l.completed == l.generated);
    CHECK(l.after_widening == 0);
    l_total += l.rejected;
    u_total += u.rejected;
  }
  std::printf("tokens vs GCRA, 2 ms jitter, 12 runs of 20,000 requests: learn %llu 429s, unknown %llu\n",
              static_cast<unsigned long long>(l_total), static_cast<unsigned long long>(u_total));
  CHECK(l_total <= u_total);
}

TEST_CASE("learn: jitter beyond the assumed one widens the margin until it stops", "[learn]") {
  // Windows left at W (no allowance for jitter) and 8 ms of delivery
  // jitter: the strict window is unsafe against every model, so learn
  // switches; past the switch, each further 429 doubles the margin.
  const scenario cases[] = {{"requests, L = 10 per 5 s, 8 ms jitter", 10, seconds(5), 1, 8000000},
                            {"tokens, L = 20,000 per 60 s, m = 2,000, 8 ms jitter", 20000, seconds(60), 2000, 8000000}};
  for (const scenario& sc : cases) {
    for (int s = 0; s < server_count; ++s) {
      std::uint64_t worst = 0, total = 0, widen = 0;
      for (int t = 0; t < 64; ++t) {
        const std::uint64_t seed = tgtest::seed_for(31337ULL * static_cast<std::uint64_t>(s + 1) + static_cast<std::uint64_t>(t));
        const std::uint64_t count = sc.max_request == 1 ? 400 : 400;
        const outcome o = run_trial(sc, s, server_model::learn, seed, t % 2 == 0, count,
                                    static_cast<std::int64_t>(seed % static_cast<std::uint64_t>(sc.window.count())), false);
        INFO(sc.name << " vs " << server_names[s] << ", trial " << t << ": " << o.rejected << " 429s, "
                     << o.widenings << " widenings, " << tgtest::seed_note());
        CHECK(o.completed == o.generated);
        // The switch's, one per doubling until the margin passes 8 ms (2 -> 4
        // -> 8 -> 16 ms: three), and one more that a switch's pause let through.
        CHECK(o.rejected <= 5);
        worst = std::max(worst, o.rejected);
        total += o.rejected;
        widen += o.widenings;
      }
      std::printf("%s vs %s: at most %llu 429s per run, %llu in 64 runs, %llu widenings\n", sc.name, server_names[s],
                  static_cast<unsigned long long>(worst), static_cast<unsigned long long>(total),
                  static_cast<unsigned long long>(widen));
    }
  }
}

TEST_CASE("learn: after the switch, the margin policy's throughput", "[learn]") {
  // Saturated against the sliding-window counter and the GCRA server: the
  // 429 comes early; from two windows after it, over ten windows, the learn
  // account gets what `unknown` gets over the same span (within one request).
  for (const scenario& sc : {scenarios[0], scenarios[2], scenarios[4]}) {
    for (int s : {2, 4}) {
      const std::int64_t w = sc.window.count();
      const std::uint64_t count = sc.max_request == 1 ? sc.limit * 16 : 600;
      const outcome probe = run_trial(sc, s, server_model::learn, 1, true, count, 0);
      REQUIRE(probe.first_rejection >= 0);
      const std::int64_t from = probe.first_rejection + 2 * w, to = from + 10 * w;
      const outcome l = run_trial(sc, s, server_model::learn, 1, true, count, 0, true, from, to);
      const outcome u = run_trial(sc, s, server_model::unknown, 1, true, count, 0, true, from, to);
      REQUIRE(l.last_accepted >= to);
      REQUIRE(u.last_accepted >= to);
      INFO(sc.name << " vs " << server_names[s] << ": learn " << l.units_in << ", unknown " << u.units_in
                   << " units in ten windows");
      CHECK(l.rejected == 1);
      CHECK(u.rejected == 0);
      const std::uint64_t slack = sc.max_request == 1 ? 1 : 2 * sc.max_request;
      CHECK(l.units_in + slack >= u.units_in);
      CHECK(u.units_in + slack >= l.units_in);
      std::printf("after the switch, %s vs %s: learn %llu, unknown %llu units in ten windows\n", sc.name, server_names[s],
                  static_cast<unsigned long long>(l.units_in), static_cast<unsigned long long>(u.units_in));
    }
  }
}

TEST_CASE("learn: Tier0 RPM 3 throughput against the log, fixed and bucket models", "[learn]") {
  // 241 requests back to back (the first at 0): requests per minute.
  const scenario sc{"Tier0", 3, minutes(1), 1, 0};
  for (int s : {0, 1, 3}) {
    const outcome l = run_trial(sc, s, server_model::learn, 3, true, 241, 0);
    const outcome u = run_trial(sc, s, server_model::unknown, 3, true, 241, 0);
    CHECK(l.rejected == 0);
    CHECK(u.rejected == 0);
    const double lr = 240.0 * 60e9 / static_cast<double>(l.last_accepted);
    const double ur = 240.0 * 60e9 / static_cast<double>(u.last_accepted);
    std::printf("Tier0 RPM 3 vs %s, saturated: learn %.2f, unknown %.2f requests per minute\n", server_names[s], lr, ur);
    CHECK(lr >= 2.8);
    CHECK(ur < 2.01);
  }
}

TEST_CASE("learn: the simulator's swarm, at most one 429 per limit, every request done", "[learn]") {
  namespace sim = tollgate_sim;
  const server_model models[] = {server_model::fixed_window, server_model::sliding_log, server_model::window_counter,
                                 server_model::token_bucket, server_model::gcra};
  for (const auto* table : {&kimi_tiers_2026_05, &kimi_tiers_2026_09}) {
    for (int tier = 0; tier <= 5; ++tier) {
      for (server_model m : models) {
        sim::job j;
        j.tier = *table->tier(tier);
        if (tier == 0) j.tier.tpd = limit(100000000);
        j.model = model_by_id("kimi-k2.6");
        j.agents = 100;
        j.requests_per_agent = tier == 0 ? 1 : 3;
        j.server = m;
        j.assumed = server_model::learn;
        INFO("table " << table->as_of << ", tier " << tier << ", server " << to_string(m));
        const sim::run_result r = sim::run(j, true);
        CHECK(r.failed == 0);
        CHECK(r.completed == r.total);
        CHECK(r.rejected_by[static_cast<int>(sim::server::verdict::rpm)] <= 1);
        CHECK(r.rejected_by[static_cast<int>(sim::server::verdict::tpm)] <= 1);
        CHECK(r.rejected_by[static_cast<int>(sim::server::verdict::concurrency)] == 0);
        CHECK(r.rejected_by[static_cast<int>(sim::server::verdict::tpd)] == 0);
        if (m != server_model::window_counter && m != server_model::gcra) CHECK(r.rejected_429 == 0);
      }
    }
  }
}

TEST_CASE("learn: the issue's Tier0 job, 2.8 requests per minute where unknown gets 2.0", "[learn]") {
  // tollgate-sim --tier 0 --agents 30 --requests 2 --tpd 100000000: 29 m 45 s
  // as unknown, 21 m 03 s assuming the sliding log.
  namespace sim = tollgate_sim;
  for (server_model m : {server_model::fixed_window, server_model::sliding_log, server_model::token_bucket}) {
    sim::job j;
    j.tier = *kimi_tiers_2026_09.tier(0);
    j.tier.tpd = limit(100000000);
    j.model = model_by_id("kimi-k2.6");
    j.agents = 30;
    j.requests_per_agent = 2;
    j.server = m;
    j.assumed = server_model::learn;
    const sim::run_result l = sim::run(j, true);
    j.assumed = server_model::unknown;
    const sim::run_result u = sim::run(j, true);
    INFO("server " << to_string(m) << ": learn " << l.finish << " ns, unknown " << u.finish << " ns");
    CHECK(l.rejected_429 == 0);
    CHECK(l.completed == 60);
    // As the issue measures it: 60 requests over the time to finish them all.
    const double lr = 60.0 / (static_cast<double>(l.finish) / static_cast<double>(sim::minute));
    const double ur = 60.0 / (static_cast<double>(u.finish) / static_cast<double>(sim::minute));
    std::printf("issue's Tier0 job vs %s: learn %.2f, unknown %.2f requests per minute\n", to_string(m), lr, ur);
    CHECK(l.finish <= 21 * sim::minute + 10 * sim::second);
    CHECK(u.finish >= 29 * sim::minute);
    CHECK(lr >= 2.8);
  }
}

// ---- adaptive concurrency (adaptive_concurrency.hpp) ----

TEST_CASE("adaptive concurrency: the pure rule", "[learn]") {
  using namespace account_policy;
  CHECK(aimd_decreased(50, 1) == 45);
  CHECK(aimd_decreased(10, 1) == 9);
  CHECK(aimd_decreased(5, 1) == 4);
  CHECK(aimd_decreased(2, 1) == 1);
  CHECK(aimd_decreased(1, 1) == 1);
  CHECK(aimd_decreased(30, 28) == 28);
  CHECK(aimd_decreased(0xFFFFFFFFULL, 1) == 0xFFFFFFFFULL / 10 * 9 + 0xFFFFFFFFULL % 10 * 9 / 10);
  CHECK(aimd_decreased(std::numeric_limits<std::uint64_t>::max(), 1) < std::numeric_limits<std::uint64_t>::max());
  CHECK(aimd_grown(aimd_state{3, 0}, 10).credit == 1);
  CHECK(aimd_grown(aimd_state{3, 2}, 10).limit == 4);
  CHECK(aimd_grown(aimd_state{3, 2}, 10).credit == 0);
  CHECK(aimd_grown(aimd_state{10, 9}, 10).limit == 10);
  CHECK(aimd_grows(5, 10));
  CHECK_FALSE(aimd_grows(4, 10));
  CHECK(aimd_grows(2, 3));
  CHECK_FALSE(aimd_grows(1, 3));
  auto sig = [](int status, const char* body) { return shrinks_concurrency(classify(status, body)); };
  CHECK(sig(429, R"({"error":{"message":"request reached max organization concurrency: 30","type":"rate_limit_reached_error"}})"));
  CHECK(sig(429, R"({"error":{"message":"The engine is currently overloaded, please try again later","type":"engine_overloaded_error"}})"));
  CHECK(sig(503, "Service Unavailable"));
  CHECK(sig(529, "overloaded"));
  CHECK(sig(403, "You have reached the concurrent request limit of your plan"));
  CHECK_FALSE(sig(500, "Internal Server Error"));
  CHECK_FALSE(sig(502, "Bad Gateway"));
  CHECK_FALSE(sig(429, R"({"error":{"message":"request reached organization max RPM: 3","type":"rate_limit_reached_error"}})"));
  CHECK_FALSE(sig(200, "{}"));
}

namespace {

account_config adaptive_config(std::uint64_t configured) {
  account_config c;
  c.concurrency = limit(configured);
  c.adaptive_concurrency = true;
  c.lease_timeout = ns(0);
  c.per_thread_credit = false;
  return c;
}

const char* const concurrency_429 =
    R"({"error":{"message":"request reached max organization concurrency","type":"rate_limit_reached_error"}})";

struct cap_phase {
  std::int64_t from_s;
  std::uint64_t cap;
};

struct adaptive_run {
  std::uint64_t rejected[8] = {};       // 429s per phase
  std::uint64_t settled_rejected[8] = {};  // 429s per phase from 20 rounds after its change
  bool in_band = true;
  std::string first_miss;
};

// A client that keeps more requests waiting than any cap, each taking 0.8 to
// 1.2 s (a round is about 1 s), against a server that refuses beyond its
// hidden cap. Samples the limit every 100 ms.
adaptive_run run_hidden_cap(const cap_phase* phases, int n_phases, std::uint64_t configured, std::uint64_t seed,
                            std::int64_t end_s) {
  tgtest::rng g(seed);
  acct_t a(adaptive_config(configured), ns(0));
  const error_info e429 = classify(429, concurrency_429);
  struct flight {
    std::int64_t done;
    std::unique_ptr<lease<manual_clock>> l;
  };
  std::vector<flight> out;
  std::uint64_t server_in_flight = 0;
  adaptive_run res;
  const std::int64_t ms = 1000000, end = end_s * 1000 * ms;
  std::int64_t now = 0, next_sample = 0;
  request r;
  r.max_tokens = 0;
  auto phase_at = [&](std::int64_t t) {
    int p = 0;
    for (int i = 0; i < n_phases; ++i)
      if (t >= phases[i].from_s * 1000 * ms) p = i;
    return p;
  };
  for (int step = 0; step < 2000000 && now < end; ++step) {
    // The limit, 20 rounds after each change: constant since the last step,
    // so sampled before anything happens at `now`.
    while (next_sample < now) {
      const int p = phase_at(next_sample);
      const std::uint64_t cap = std::min(phases[p].cap, configured);
      const std::uint64_t l = a.adaptive().limit;
      if (next_sample >= (phases[p].from_s + 20) * 1000 * ms &&
          (static_cast<double>(l) < 0.9 * static_cast<double>(cap) || static_cast<double>(l) > 1.1 * static_cast<double>(cap)) &&
          res.in_band) {
        res.in_band = false;
        res.first_miss = "limit " + std::to_string(l) + " against a cap of " + std::to_string(cap) + " at " +
                         std::to_string(next_sample / ms) + " ms";
      }
      CHECK(l >= 1);
      CHECK(l <= configured);
      next_sample += 100 * ms;
    }
    // Completions due now.
    for (std::size_t i = 0; i < out.size();) {
      if (out[i].done <= now) {
        --server_in_flight;
        out[i].l->settle(usage{10, 0, 10, 0, 0}, ns(now));
        out[i] = std::move(out.back());
        out.pop_back();
      } else {
        ++i;
      }
    }
    // Send while the account admits.
    for (int k = 0; k < 1000; ++k) {
      auto x = a.try_admit(r, ns(now));
      if (!x) break;
      const int p = phase_at(now);
      if (server_in_flight >= phases[p].cap) {
        ++res.rejected[p];
        if (now >= (phases[p].from_s + 20) * 1000 * ms) ++res.settled_rejected[p];
        x.lease.settle_rejected(ns(now));
        a.on_response(e429, std::nullopt, ns(now));
        continue;
      }
      ++server_in_flight;
      out.push_back(flight{now + static_cast<std::int64_t>(g.between(800, 1200)) * ms,
                           std::make_unique<lease<manual_clock>>(std::move(x.lease))});
    }
    std::int64_t next = end;
    for (const flight& f : out) next = std::min(next, f.done);
    now = next > now ? next : now + ms;
  }
  return res;
}

}  // namespace

TEST_CASE("adaptive concurrency: follows a hidden cap that changes mid-run, within 10 % after 20 rounds", "[learn]") {
  // Configured 50; the server's real cap 40, then 12, then 30, then 80
  // (above the configured limit: the limit goes back to 50 and stays).
  const cap_phase phases[] = {{0, 40}, {100, 12}, {200, 30}, {300, 80}};
  for (int t = 0; t < 8; ++t) {
    const std::uint64_t seed = tgtest::seed_for(4242ULL + static_cast<std::uint64_t>(t));
    const adaptive_run r = run_hidden_cap(phases, 4, 50, seed, 400);
    INFO("trial " << t << ": " << r.first_miss << "; 429s per phase " << r.rejected[0] << ", " << r.rejected[1] << ", "
                  << r.rejected[2] << ", " << r.rejected[3] << "; " << tgtest::seed_note());
    CHECK(r.in_band);
    // Bounded: in the settled part of each phase (80 rounds), about one
    // probe above the cap per 0.1 H + 2 rounds, each costing a 429 or two
    // (measured: 13 / 28 / 17 under 16 seeds).
    CHECK(r.settled_rejected[0] <= 25);
    CHECK(r.settled_rejected[1] <= 45);
    CHECK(r.settled_rejected[2] <= 30);
    CHECK(r.settled_rejected[3] == 0);
    if (t == 0)
      std::printf("adaptive concurrency, caps 40 / 12 / 30 / 80 (configured 50), 100 rounds each: 429s %llu / %llu / %llu / %llu "
                  "(from round 20 of each: %llu / %llu / %llu / %llu)\n",
                  (unsigned long long)r.rejected[0], (unsigned long long)r.rejected[1], (unsigned long long)r.rejected[2],
                  (unsigned long long)r.rejected[3], (unsigned long long)r.settled_rejected[0],
                  (unsigned long long)r.settled_rejected[1], (unsigned long long)r.settled_rejected[2],
                  (unsigned long long)r.settled_rejected[3]);
  }
}

TEST_CASE("adaptive concurrency: one drop per round, latency alone never shrinks it, a floor and a ceiling", "[learn]") {
  acct_t a(adaptive_config(40), ns(0));
  request r;
  r.max_tokens = 0;
  std::vector<lease<manual_clock>> held;
  for (int i = 0; i < 40; ++i) {
    auto x = a.try_admit(r, ns(0));
    REQUIRE(x);
    held.push_back(std::move(x.lease));
  }
  // Ten signals of one burst: one drop.
  for (int i = 0; i < 10; ++i) a.on_response(classify(429, concurrency_429), std::nullopt, ns(1));
  CHECK(a.adaptive().limit == 36);
  CHECK(a.adaptive().drops == 1);
  CHECK(a.adaptive().signals == 10);
  CHECK(a.remaining(ns(1)).concurrency == std::uint64_t{0});
  // The round ends once as many requests as were in flight (40) have been
  // admitted since: one at a time here.
  for (auto& l : held) l.settle_failed(ns(2));
  held.clear();
  for (int i = 0; i < 39; ++i) {
    auto x = a.try_admit(r, ns(2));
    REQUIRE(x);
    x.lease.settle_failed(ns(2));
  }
  a.on_response(classify(503, "Service Unavailable"), std::nullopt, ns(3));
  CHECK(a.adaptive().drops == 1);
  REQUIRE(a.try_admit(r, ns(3)));
  a.on_response(classify(503, "Service Unavailable"), std::nullopt, ns(3));
  CHECK(a.adaptive().drops == 2);
  CHECK(a.adaptive().limit == 32);
  // Successes with slow responses only ever grow it, up to the configured 40.
  std::int64_t now = 10;
  for (int round = 0; round < 200; ++round) {
    std::vector<lease<manual_clock>> batch;
    for (;;) {
      auto x = a.try_admit(r, ns(now));
      if (!x) break;
      batch.push_back(std::move(x.lease));
    }
    now += ns(seconds(1 + round)).count();  // latency grows with every round
    for (auto& l : batch) l.settle(usage{10, 0, 10, 0, 0}, ns(now));
  }
  CHECK(a.adaptive().limit == 40);
  CHECK(a.adaptive().drops == 2);
  // The floor: many rounds of overload end at concurrency_floor.
  account_config c = adaptive_config(40);
  c.concurrency_floor = 5;
  acct_t f(c, ns(0));
  for (int i = 0; i < 100; ++i) {  // each round: the limit's worth admitted, every one answered 529
    std::vector<lease<manual_clock>> out;
    for (auto x = f.try_admit(r, ns(i)); x; x = f.try_admit(r, ns(i))) out.push_back(std::move(x.lease));
    for (auto& l : out) l.settle_rejected(ns(i));
    f.on_response(classify(529, ""), std::nullopt, ns(i));
  }
  CHECK(f.adaptive().limit == 5);
  // Refused configurations.
  errc e = errc::ok;
  c.concurrency_floor = 0;
  acct_t bad(c, ns(0), e);
  CHECK(e == errc::zero_count);
  c.concurrency_floor = 41;
  acct_t bad2(c, ns(0), e);
  CHECK(e == errc::too_large);
  account_config none;
  none.adaptive_concurrency = true;
  acct_t bad3(none, ns(0), e);
  CHECK(e == errc::zero_count);
  // Off: all zero, and the limit never moves.
  account_config off = adaptive_config(40);
  off.adaptive_concurrency = false;
  acct_t o(off, ns(0));
  o.on_response(classify(429, concurrency_429), std::nullopt, ns(1));
  CHECK(o.adaptive().limit == 0);
  CHECK(o.remaining(ns(1)).concurrency == std::uint64_t{40});
}

TEST_CASE("adaptive concurrency: the simulator's swarm against a hidden cap", "[learn]") {
  // Tier1 (2026-09) allows 15 in flight; the server holds 8.
  namespace sim = tollgate_sim;
  sim::job j;
  j.tier = *kimi_tiers_2026_09.tier(1);
  j.model = model_by_id("kimi-k2.6");
  j.agents = 100;
  j.requests_per_agent = 5;
  j.hidden_concurrency = 8;
  const sim::run_result r = sim::run(j, true);
  const std::uint64_t c429 = r.rejected_by[static_cast<int>(sim::server::verdict::concurrency)];
  INFO("limit " << r.adaptive.limit << ", drops " << r.adaptive.drops << ", 429s " << c429 << " of " << r.requests);
  CHECK(r.failed == 0);
  CHECK(r.completed == r.total);
  CHECK(r.adaptive.limit >= 7);
  CHECK(r.adaptive.limit <= 9);
  CHECK(r.adaptive.signals == c429);  // every concurrency 429 counted
  CHECK(c429 * 100 <= 12 * r.requests);  // measured: 9 % (a probe every two rounds of 8)
  std::printf("swarm, hidden cap 8 of 15: limit %llu at the end, %llu concurrency 429s in %llu sends\n",
              (unsigned long long)r.adaptive.limit, (unsigned long long)c429, (unsigned long long)r.requests);
}

TEST_CASE("learn and adaptive concurrency under threads: switches, widenings and drops race admissions", "[learn]") {
  // Four threads admit and settle on one account (manual time, each its
  // own clock reading) while a fifth feeds 429s of every kind. Checked:
  // nothing is lost or left held, each dimension switches once, the limits
  // stay in range. Run it under TSan for the memory orders.
  account_config c;
  c.model = server_model::learn;
  c.concurrency = limit(64);
  c.rpm = limit(10);
  c.tpm = limit(20000);
  c.request_window = seconds(5);
  c.max_request_tokens = 2000;
  c.adaptive_concurrency = true;
  c.lease_timeout = ns(0);
  acct_t a(c, ns(0));
  std::atomic<std::int64_t> clock{0};
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> admitted{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      tgtest::rng g(tgtest::seed_for(77 + static_cast<std::uint64_t>(t)));
      request r;
      r.max_tokens = 0;
      for (int i = 0; i < 4000 && !stop.load(std::memory_order_relaxed); ++i) {
        r.prompt_tokens = g.between(1, 2000);
        const ns now(clock.fetch_add(static_cast<std::int64_t>(g.between(0, 5000000)), std::memory_order_relaxed));
        auto x = a.try_admit(r, now);
        if (!x) continue;
        admitted.fetch_add(1, std::memory_order_relaxed);
        if (g.chance(50)) x.lease.settle(usage{r.prompt_tokens / 2, 0, 0, 0, 0}, now);
        else x.lease.settle_rejected(now);
      }
    });
  }
  ts.emplace_back([&] {
    const char* bodies[] = {
        R"({"error":{"message":"request reached organization max RPM: 10","type":"rate_limit_reached_error"}})",
        R"({"error":{"message":"request reached organization TPM rate limit, current: 0, limit: 20000","type":"rate_limit_reached_error"}})",
        R"({"error":{"message":"request reached max organization concurrency: 64","type":"rate_limit_reached_error"}})",
        R"({"error":{"message":"Organization Rate limit exceeded","type":"rate_limit_reached_error"}})"};
    for (int i = 0; i < 400; ++i) {
      a.on_response(classify(429, bodies[i % 4]), std::nullopt, ns(clock.load(std::memory_order_relaxed)));
      a.clear_pause();
    }
  });
  for (auto& t : ts) t.join();
  const learned_view v = a.learned(ns(clock.load()));
  CHECK(v.switches <= 2);
  CHECK(v.margin >= milliseconds(2));
  CHECK(v.margin <= milliseconds(256));
  CHECK(a.in_flight() == 0);
  CHECK(a.adaptive().limit >= 1);
  CHECK(a.adaptive().limit <= 64);
  CHECK(admitted.load() > 0);
}

// ---- the server's rate-limit headers as ground truth (server_remaining.hpp) ----

TEST_CASE("headers: the gate's rule", "[learn]") {
  using account_policy::remaining_gate;
  using account_policy::tightened;
  const remaining_gate none{};
  remaining_gate g = tightened(none, 5, seconds(10), ns(100));
  CHECK(g.until == 100 + ns(seconds(10)).count());
  CHECK(g.left == 5);
  // A later response: the later end, the smaller remainder (never looser).
  remaining_gate h = tightened(g, 7, seconds(20), ns(200));
  CHECK(h.until == 200 + ns(seconds(20)).count());
  CHECK(h.left == 5);
  h = tightened(g, 2, seconds(1), ns(200));
  CHECK(h.until == g.until);
  CHECK(h.left == 2);
  // Once the gate's end has passed, the new one stands alone.
  h = tightened(g, 9, seconds(1), ns(seconds(11)));
  CHECK(h.left == 9);
  // Saturating, and a negative reset counts as none.
  CHECK(tightened(none, 1, ns(std::numeric_limits<std::int64_t>::max()), ns(5)).until == std::numeric_limits<std::int64_t>::max());
  CHECK(tightened(none, 1, ns(-5), ns(5)).until == 5);
}

namespace {

struct shared_key_run {
  std::uint64_t ours = 0, rejected = 0, others = 0;
  std::uint64_t unexplained = 0;  // 429s with no request of the other client since our last answer
};

// A sliding-log server of L per W shared with another client that sends
// `share` percent of L per W at random times; every answer to us carries
// x-ratelimit-remaining-requests (L minus the log's count) and
// x-ratelimit-reset-requests (until the oldest entry leaves). Our client is
// saturated, paced by an account that assumes the sliding log.
shared_key_run run_shared_key(std::uint64_t share, bool trust, std::uint64_t seed, int windows) {
  tgtest::rng g(seed);
  const std::uint64_t L = 20;
  const std::int64_t W = ns(seconds(60)).count();
  account_config c;
  c.model = server_model::sliding_log;
  c.rpm = limit(L);
  c.lease_timeout = ns(0);
  c.per_thread_credit = false;
  c.trust_rate_limit_headers = trust;
  acct_t a(c, ns(0));
  std::deque<std::int64_t> log;
  auto expire = [&](std::int64_t t) {
    while (!log.empty() && log.front() <= t - W) log.pop_front();
  };
  auto headers_at = [&](std::int64_t t) {
    rate_limit_headers h;
    h.remaining_requests = L - log.size();
    h.reset_requests = ns(log.empty() ? W : log.front() + W - t);
    return h;
  };
  shared_key_run res;
  const std::int64_t end = W * windows;
  const std::int64_t other_gap = share == 0 ? end : W / static_cast<std::int64_t>(L * share / 100);
  std::int64_t now = 0, next_other = static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(other_gap)));
  bool other_since_answer = false;
  request r;
  r.max_tokens = 0;
  const std::string body429 =
      R"({"error":{"message":"request reached organization max RPM: 20","type":"rate_limit_reached_error"}})";
  for (int step = 0; step < 100000 && now < end; ++step) {
    // The other client's requests up to now.
    while (next_other <= now) {
      expire(next_other);
      if (log.size() < L) {
        log.push_back(next_other);
        ++res.others;
        other_since_answer = true;
      }
      next_other += static_cast<std::int64_t>(g.between(static_cast<std::uint64_t>(other_gap / 2),
                                                        static_cast<std::uint64_t>(other_gap * 3 / 2)));
    }
    auto x = a.try_admit(r, ns(now));
    if (!x) {
      REQUIRE(x.decision.later());
      now += x.decision.retry_after().count();
      continue;
    }
    expire(now);
    if (log.size() < L) {
      log.push_back(now);
      ++res.ours;
      a.observe_rate_limit_headers(headers_at(now), ns(now));
      other_since_answer = false;
      x.lease.settle(usage{0, 0, 0, 0, 0}, ns(now));
    } else {
      ++res.rejected;
      if (!other_since_answer) ++res.unexplained;
      x.lease.settle_rejected(ns(now));
      a.on_response(429, headers_at(now), body429, ns(now));
      other_since_answer = false;
    }
  }
  return res;
}

}  // namespace

TEST_CASE("headers: another client on the key costs throughput, not 429s", "[learn]") {
  for (std::uint64_t share : {std::uint64_t{10}, std::uint64_t{30}, std::uint64_t{50}}) {
    std::uint64_t with = 0, without = 0, ours_with = 0, ours_without = 0;
    for (int t = 0; t < 6; ++t) {
      const std::uint64_t seed = tgtest::seed_for(991ULL * share + static_cast<std::uint64_t>(t));
      const shared_key_run a = run_shared_key(share, true, seed, 60);
      const shared_key_run b = run_shared_key(share, false, seed, 60);
      INFO("trial " << t << ", " << tgtest::seed_note());
      CHECK(a.unexplained == 0);  // the bound: a 429 only after the other client took units we could not see
      with += a.rejected;
      without += b.rejected;
      ours_with += a.ours;
      ours_without += b.ours;
    }
    INFO("other client " << share << " %: 429s " << with << " trusting the headers, " << without << " not; "
                         << tgtest::seed_note());
    std::printf("headers, other client at %llu %% of RPM 20: 429s %llu trusting them, %llu not; ours %llu and %llu\n",
                (unsigned long long)share, (unsigned long long)with, (unsigned long long)without,
                (unsigned long long)ours_with, (unsigned long long)ours_without);
    CHECK(without > 0);
    CHECK(with <= without);
  }
}

TEST_CASE("headers: the simulator's swarm with another client on the key", "[learn]") {
  // Tier1 (RPM 100), the account assuming the server's model, another
  // client sending 30 % of RPM: trusting the headers, no more 429s than not.
  namespace sim = tollgate_sim;
  for (server_model m : {server_model::fixed_window, server_model::sliding_log, server_model::token_bucket}) {
    sim::job j;
    j.tier = *kimi_tiers_2026_09.tier(1);
    j.model = model_by_id("kimi-k2.6");
    j.agents = 100;
    j.requests_per_agent = 5;
    j.latency_ms = sim::range{1000, 1000};
    j.server = m;
    j.assumed = m;
    j.other_client_percent = 30;
    const sim::run_result t = sim::run(j, true);
    j.trust_headers = false;
    const sim::run_result u = sim::run(j, true);
    INFO("server " << to_string(m) << ": 429s " << t.rejected_429 << " trusting, " << u.rejected_429 << " not");
    CHECK(t.completed == t.total);
    CHECK(u.completed == u.total);
    CHECK(t.other_sent > 0);
    CHECK(t.rejected_429 <= u.rejected_429);
    std::printf("swarm with another client at 30 %% of RPM, %s: paced 429s %llu trusting the headers, %llu not\n",
                to_string(m), (unsigned long long)t.rejected_429, (unsigned long long)u.rejected_429);
  }
}

TEST_CASE("headers: a fresh paused account's wait includes its gates (the decision contract)", "[learn]") {
  // The first answer the account sees is a 429 whose headers close the RPM
  // gate for 30 s and whose Retry-After pauses it for 1 s: no admission has
  // been made, so the limiters are empty, but the gate is not.
  account_config cfg = account_config::from_tier(*kimi_tiers_2026_09.tier(1));
  cfg.trust_rate_limit_headers = true;
  acct_t a(cfg, ns(0));
  rate_limit_headers h;
  h.read("x-ratelimit-remaining-requests", "0", ns(0));
  h.read("x-ratelimit-reset-requests", "30s", ns(0));
  h.read("Retry-After", "1", ns(0));
  a.on_response(429, h,
                R"({"error":{"type":"rate_limit_reached_error","message":"request reached organization max RPM: 100, please try again after 1 seconds"}})",
                ns(0));
  const request r{model_by_id("kimi-k2.6"), 100, 100};
  auto x = a.try_admit(r, ns(0));
  REQUIRE(x.decision.later());
  CHECK(x.refused.has(dimension::paused));
  CHECK(x.refused.has(dimension::rpm));
  const ns w = x.decision.retry_after();
  CHECK(w == ns(seconds(30)));  // was the pause alone: 1 s, then refused again for 29 s
  CHECK_FALSE(a.try_admit(r, w - ns(1)));
  CHECK(a.try_admit(r, w));
}

TEST_CASE("headers: a gate holds for a dimension the account does not enforce", "[learn]") {
  auto hdr = [](std::uint64_t req, std::uint64_t tok) {
    rate_limit_headers h;
    h.remaining_requests = req;
    h.reset_requests = seconds(60);
    h.remaining_tokens = tok;
    h.reset_tokens = seconds(60);
    return h;
  };
  request r;
  r.prompt_tokens = 10;
  r.max_tokens = 10;  // 20 tokens a request
  auto admitted = [&](acct_t& a, ns now, int tries) {
    int k = 0;
    for (int i = 0; i < tries; ++i) {
      auto x = a.try_admit(r, now);
      if (!x) {
        // The refusal names the gate's end as the time to retry.
        CHECK(x.decision.later());
        CHECK(x.decision.retry_after() == ns(seconds(59)));
        continue;
      }
      ++k;
      x.lease.settle(usage{10, 0, 10, 0, 0}, now);
    }
    return k;
  };
  {  // No rate limit known (an unknown tier): the headers are the only one.
    account_config c;
    c.trust_rate_limit_headers = true;
    c.concurrency = limit(100);
    c.lease_timeout = ns(0);
    acct_t a(c, ns(0));
    a.observe_rate_limit_headers(hdr(3, 1000), ns(0));
    CHECK(admitted(a, ns(seconds(1)), 20) == 3);
  }
  {  // RPM only: the token gate holds too (2 of 20 tokens fit in 45).
    account_config c;
    c.trust_rate_limit_headers = true;
    c.rpm = limit(1000);
    c.model = server_model::fixed_window;
    c.lease_timeout = ns(0);
    acct_t a(c, ns(0));
    a.observe_rate_limit_headers(hdr(1000, 45), ns(0));
    CHECK(admitted(a, ns(seconds(1)), 20) == 2);
  }
}

TEST_CASE("adaptive concurrency: a burst settled before its answers are fed back costs one drop", "[learn]") {
  request r;
  r.max_tokens = 0;
  for (bool settle_all_first : {true, false}) {
    acct_t b(adaptive_config(50), ns(0));
    std::vector<lease<manual_clock>> held;
    for (int i = 0; i < 10; ++i) {
      auto x = b.try_admit(r, ns(0));
      REQUIRE(x);
      held.push_back(std::move(x.lease));
    }
    if (settle_all_first)
      for (auto& l : held) l.settle_rejected(ns(1));
    for (auto& l : held) {
      if (!settle_all_first) l.settle_rejected(ns(1));  // the documented order, one answer at a time
      b.on_response(classify(429, concurrency_429), std::nullopt, ns(1));
    }
    INFO("settled all first: " << settle_all_first);
    CHECK(b.adaptive().signals == 10);
    CHECK(b.adaptive().drops == 1);
    CHECK(b.adaptive().limit == 45);
    // The next round: d = 45 admissions after the drop, a signal drops again.
    for (int i = 0; i < 44; ++i) {
      auto x = b.try_admit(r, ns(2));
      REQUIRE(x);
      x.lease.settle_rejected(ns(2));
    }
    b.on_response(classify(429, concurrency_429), std::nullopt, ns(2));
    CHECK(b.adaptive().drops == 1);
    REQUIRE(b.try_admit(r, ns(2)));
    b.on_response(classify(429, concurrency_429), std::nullopt, ns(2));
    CHECK(b.adaptive().drops == 2);
    CHECK(b.adaptive().limit == 40);
  }
}

TEST_CASE("learn: the bound spans restores from the snapshot", "[learn]") {
  // Saturated, no jitter, a restart every 7 answers: at most one 429 per
  // dimension over all the restarts, as without them (none from the
  // servers the strict window is safe against).
  const int trials = trial_count() / 10 + 1;
  for (const int si : {2, 4, 0}) {
    const scenario& sc = scenarios[si];
    for (int kind = 0; kind < 5; ++kind) {
      std::uint64_t worst = 0;
      for (int t = 0; t < trials; ++t) {
        const std::uint64_t seed = tgtest::seed_for(7001ULL * static_cast<std::uint64_t>(si + 1) +
                                                    97ULL * static_cast<std::uint64_t>(kind) + static_cast<std::uint64_t>(t));
        const std::int64_t phase = static_cast<std::int64_t>(tgtest::rng(seed).between(0, static_cast<std::uint64_t>(sc.window.count())));
        const outcome o = run_trial(sc, kind, server_model::learn, seed, true, 300, phase, true, INT64_MAX, INT64_MAX, 7);
        INFO(sc.name << " vs server " << kind << ", trial " << t << ", " << tgtest::seed_note());
        CHECK(o.rejected <= (strict_safe(kind) ? 0u : 1u));
        CHECK(o.completed == 300);
        if (o.rejected > worst) worst = o.rejected;
      }
      std::printf("learn across restarts every 7 answers, %s vs server %d: at most %llu 429s per run\n", sc.name, kind,
                  (unsigned long long)worst);
    }
  }
}

TEST_CASE("headers: the gates survive a snapshot and restore", "[learn]") {
  account_config c;
  c.trust_rate_limit_headers = true;
  c.rpm = limit(1000);
  c.tpm = limit(1000000);
  c.model = server_model::fixed_window;
  c.lease_timeout = ns(0);
  request r;
  r.prompt_tokens = 10;
  r.max_tokens = 10;
  acct_t a(c, ns(0));
  rate_limit_headers h;
  h.remaining_requests = 3;
  h.reset_requests = seconds(60);
  h.remaining_tokens = 1000000;
  h.reset_tokens = seconds(60);
  a.observe_rate_limit_headers(h, ns(0));
  {
    auto x = a.try_admit(r, ns(0));
    REQUIRE(x);
    x.lease.settle(usage{10, 0, 10, 0, 0}, ns(0));
  }
  const std::string snap = a.snapshot(ns(0), ns(0));  // 2 left for 60 s
  auto admitted = [&](acct_t& b, ns now) {
    int k = 0;
    for (int i = 0; i < 10; ++i) {
      auto x = b.try_admit(r, now);
      if (!x) continue;
      ++k;
      x.lease.settle(usage{10, 0, 10, 0, 0}, now);
    }
    return k;
  };
  acct_t b(c, ns(0));
  REQUIRE(b.restore(snap, ns(seconds(1)), ns(seconds(1))) == account_restore_errc::ok);
  CHECK(admitted(b, ns(seconds(1))) == 2);
  CHECK(admitted(b, ns(seconds(59)) + ns(999999999)) == 0);  // the gate ends 60 s after the snapshot's wall time
  CHECK(admitted(b, ns(seconds(60))) == 10);
  // Restored past the gate's end (wall clock), nothing of it is left.
  acct_t late(c, ns(0));
  REQUIRE(late.restore(snap, ns(seconds(1)), ns(seconds(61))) == account_restore_errc::ok);
  CHECK(admitted(late, ns(seconds(1))) == 10);
}

TEST_CASE("learn: in the switch's window a refusal's wait ends with it (the decision contract)", "[learn]") {
  // A window that holds more than the new limit (set_limits) after the
  // switch would refuse past the end of the "both" phase; from that end on
  // only the spaced bucket decides, so the wait is cut there.
  const model_info* m = model_by_id("kimi-k2.6");
  SECTION("tokens") {
    account_config c;
    c.model = server_model::learn;
    c.tpm = limit(30000);
    c.max_request_tokens = 8000;
    c.lease_timeout = ns(0);
    acct_t a(c, ns(0));
    REQUIRE(a.try_admit(request{m, 3000, 3000}, ns(0)));
    a.on_response(429, rate_limit_headers{},
                  R"({"error":{"type":"rate_limit_reached_error","message":"request reached organization TPM rate limit, current: 30100, limit: 30000"}})",
                  seconds(1));
    a.clear_pause();
    REQUIRE(a.learned(seconds(1)).tokens == learn_phase::both);
    REQUIRE(a.try_admit(request{m, 3000, 3000}, seconds(17)));
    tier_row t;
    t.tpm = limit(10000);  // the window now holds 12,000 of 10,000
    REQUIRE(a.set_limits(t, seconds(40)) == errc::ok);
    const request r{m, 50, 50};
    const auto x = a.try_admit(r, seconds(40));
    REQUIRE(x.decision.later());
    CHECK(x.refused.has(dimension::tpm));
    const ns w = x.decision.retry_after();
    CHECK(ns(seconds(40)) + w <= ns(seconds(61)));  // was 64 s: the window's slot end, past the phase's (61 s)
    CHECK_FALSE(a.try_admit(r, ns(seconds(40)) + w - ns(1)));
    CHECK(a.try_admit(r, ns(seconds(40)) + w));
  }
  SECTION("requests") {
    account_config c;
    c.model = server_model::learn;
    c.rpm = limit(10);
    c.lease_timeout = ns(0);
    acct_t a(c, ns(0));
    const request r{m, 10, 10};
    REQUIRE(a.try_admit(r, ns(0)));
    a.on_response(429, rate_limit_headers{},
                  R"({"error":{"type":"rate_limit_reached_error","message":"request reached organization max RPM: 10, please try again after 1 seconds"}})",
                  seconds(1));
    a.clear_pause();
    REQUIRE(a.learned(seconds(1)).requests == learn_phase::both);
    for (const int t : {20, 27, 34}) REQUIRE(a.try_admit(r, seconds(t)));
    tier_row t;
    t.rpm = limit(3);  // the window now holds 4 of 3, until 84 s
    REQUIRE(a.set_limits(t, seconds(40)) == errc::ok);
    const auto x = a.try_admit(r, seconds(40));
    REQUIRE(x.decision.later());
    CHECK(x.refused.has(dimension::rpm));
    const ns w = x.decision.retry_after();
    INFO("wait " << w.count() << " ns");
    CHECK(ns(seconds(40)) + w <= ns(seconds(61)));  // was 84 s; the phase ends at 1 s + 60 s
    CHECK_FALSE(a.try_admit(r, ns(seconds(40)) + w - ns(1)));
    CHECK(a.try_admit(r, ns(seconds(40)) + w));
  }
}

TEST_CASE("headers: a gate counts the account's own requests in flight at the response", "[learn]") {
  // Another client took 4 of 10 before; the account admits A, B, C (no
  // headers seen yet); A reaches the server first and its answer says 5
  // remain; B and C reach it after that. The gate must leave room for B and
  // C: it admitted 5 more (12 at the server, two 429s).
  for (const bool settle_first : {false, true}) {
    INFO("settled before the response is observed: " << settle_first);
    account_config cfg;
    cfg.rpm = limit(10);
    cfg.model = server_model::sliding_log;
    cfg.trust_rate_limit_headers = true;
    cfg.lease_timeout = ns(0);
    acct_t a(cfg, ns(0));
    std::deque<ns> log(4, ns(-seconds(1)));  // the server's sliding log, 10 per 60 s
    auto arrive = [&log](ns t) {
      while (!log.empty() && log.front() <= t - seconds(60)) log.pop_front();
      if (log.size() >= 10) return false;
      log.push_back(t);
      return true;
    };
    const request r{model_by_id("kimi-k2.6"), 10, 10};
    auto x = a.try_admit(r, ns(0)), y = a.try_admit(r, ns(0)), z = a.try_admit(r, ns(0));
    REQUIRE((x && y && z));
    REQUIRE(arrive(milliseconds(1)));
    rate_limit_headers h;
    h.read("x-ratelimit-remaining-requests", std::to_string(10 - log.size()), ns(0));
    h.read("x-ratelimit-reset-requests", "59s", ns(0));
    REQUIRE(arrive(milliseconds(2)));
    REQUIRE(arrive(milliseconds(2)));
    ns now = milliseconds(100);
    if (settle_first) x.lease.settle(usage{10, 0, 10}, now);
    a.on_response(200, h, "", now);
    if (!settle_first) x.lease.settle(usage{10, 0, 10}, now);
    int admitted = 0, rejected = 0;
    for (int i = 0; i < 20; ++i, now += milliseconds(10)) {
      auto w = a.try_admit(r, now);
      if (!w) {
        CHECK(w.refused.has(dimension::rpm));
        break;
      }
      ++admitted;
      if (!arrive(now + milliseconds(1))) ++rejected;
      w.lease.settle(usage{10, 0, 10}, now + milliseconds(2));
    }
    CHECK(rejected == 0);  // was 2
    // 5 less B and C; the answered A too while its lease is unsettled (the safe side).
    CHECK(admitted == (settle_first ? 3 : 2));
    y.lease.settle(usage{10, 0, 10}, now);
    z.lease.settle(usage{10, 0, 10}, now);
  }
}
