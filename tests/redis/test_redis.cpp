// The account's decision in a real redis-server (started by the test on
// 127.0.0.1, a free port, no persistence; stopped through its pid):
//   differential: random schedules through the in-process account and the
//     script with a supplied now decide alike, waits equal after rounding up
//     to the µs; with SCRIPT FLUSH now and then (the NOSCRIPT fallback);
//   state lost: the server restarted mid-run: nothing admitted for the hold,
//     the budget refuses until restored, no window bound broken across it;
//   garbage in the account's keys: a distinct refusal, nothing written;
//   a stopped server past the client's timeout: a refusal, then recovery.
#include "../catch_compat.hpp"
#include "../account_support.hpp"
#include "../support.hpp"
#include "../tollgate_under_test.hpp"
#include "redis_support.hpp"

#include <tollgate/redis/account.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

using namespace tollgate;
namespace tr = tollgate::redis;
using tgredis::client;
using tgredis::exec;
using tgredis::server;

namespace {

using redis_account = tr::account<exec>;

constexpr std::int64_t us = 1000;
constexpr std::int64_t ms = 1000 * us;
constexpr std::int64_t sec = 1000 * ms;

std::int64_t ceil_us(nanoseconds d) { return static_cast<std::int64_t>(tr::ceil_us(d)); }

// Every server model: strict windows (fixed_window, sliding_log,
// token_bucket), the spaced buckets (window_counter, gcra, unknown) and
// learn (both, switched by the answers fed back), with margins of odd nanoseconds so that
// the buckets' intervals need sub-nanosecond ticks (scales up to 14), and a
// calendar-day TPD at a random UTC offset beside the rolling one. Windows a
// whole number of 15 µs (so the script's µs sub-windows are the account's ns
// ones exactly).
account_config random_config(tgtest::rng& g, bool learn = false) {
  account_config c;
  const server_model models[] = {server_model::fixed_window,   server_model::sliding_log, server_model::token_bucket,
                                 server_model::window_counter, server_model::gcra,        server_model::unknown,
                                 server_model::learn};
  c.model = learn ? server_model::learn : models[g.between(0, 6)];
  if (g.chance(70)) c.concurrency = limit(g.between(1, 4));
  if (g.chance(85)) c.rpm = limit(g.between(1, 40));
  if (g.chance(85)) c.tpm = limit(g.between(50, 1000));
  if (g.chance(60)) c.tpd = limit(g.between(200, 1023));
  const std::int64_t windows[] = {150 * ms, 1500 * ms, 60000 * ms};
  c.request_window = nanoseconds(windows[g.between(0, 2)]);
  c.token_window = nanoseconds(windows[g.between(0, 2)]);
  // The spaced token policy needs max_request_tokens below the limit; most
  // requests (up to 400 tokens) then fit it, some are refused as too large.
  if (c.tpm.is_finite()) c.max_request_tokens = g.between(*c.tpm.value() / 2, *c.tpm.value() - 1);
  const std::int64_t margins[] = {2 * ms, 0, static_cast<std::int64_t>(g.between(1, 5000000)),
                                  static_cast<std::int64_t>(g.between(1, 999))};
  c.spacing_margin = nanoseconds(margins[g.between(0, 3)]);
  if (g.chance(40)) {
    c.calendar_day = true;
    c.utc_offset = std::chrono::minutes(static_cast<std::int64_t>(g.between(0, 48 * 60)) - 24 * 60);
  }
  c.refund_unused_tokens = g.chance(50);
  if (g.chance(50)) c.budget = usd::from_nanos(static_cast<std::int64_t>(g.between(1, 100)) * 1000000);
  const std::int64_t answers[] = {0, 500 * ms, 60000 * ms, 86400000 * ms};
  c.max_pause = nanoseconds(answers[g.between(0, 3)]);
  c.lease_timeout = nanoseconds(0);  // the in-process side: no reclaim (the Redis side's deadline is never reached)
  c.per_thread_credit = false;
  return c;
}
account_config redis_side(account_config c) {
  c.lease_timeout = std::chrono::hours(24 * 30);
  return c;
}

request random_request(tgtest::rng& g) {
  request r;
  r.model = g.chance(90) ? tgtest::k26() : nullptr;
  r.prompt_tokens = g.between(0, 200);
  if (g.chance(90)) r.max_tokens = g.between(0, 200);
  return r;
}

error_info random_answer(tgtest::rng& g, std::optional<nanoseconds>& header, bool learn = false) {
  const error_kind kinds[] = {error_kind::rpm,        error_kind::tpm,        error_kind::tpd,   error_kind::concurrency,
                              error_kind::rate_limit, error_kind::overloaded, error_kind::quota, error_kind::auth};
  const error_kind lessons[] = {error_kind::rpm, error_kind::tpm, error_kind::rate_limit};
  error_info e;
  e.kind = learn && g.chance(50) ? lessons[g.between(0, 2)] : kinds[g.chance(90) ? g.between(0, 5) : g.between(6, 7)];
  e.status = e.kind == error_kind::auth ? 401 : 429;
  auto hint = [&]() -> std::optional<nanoseconds> {
    switch (g.between(0, 3)) {
      case 0: return std::nullopt;
      case 1: return nanoseconds(static_cast<std::int64_t>(g.between(0, 5000)) * ms + static_cast<std::int64_t>(g.between(0, 999)));
      case 2: return nanoseconds(-static_cast<std::int64_t>(g.between(1, 1000)));
      default: return std::chrono::hours(24 * 400);
    }
  };
  e.hint = hint();
  header = g.chance(50) ? hint() : std::nullopt;
  return e;
}

std::string describe(const account_config& c) {
  auto l = [](const limit& x) { return x.is_finite() ? std::to_string(*x.value()) : std::string("-"); };
  return "conc " + l(c.concurrency) + " rpm " + l(c.rpm) + " tpm " + l(c.tpm) + " tpd " + l(c.tpd) + " model " +
         to_string(c.model) + " budget " + (c.budget ? std::to_string(c.budget->nanos()) : std::string("-")) +
         " refund " + std::to_string(c.refund_unused_tokens) + " windows " + std::to_string(c.request_window.count()) +
         "/" + std::to_string(c.token_window.count()) + " max_pause " + std::to_string(c.max_pause.count()) +
         " m " + std::to_string(c.max_request_tokens) + " margin " + std::to_string(c.spacing_margin.count()) +
         (c.calendar_day ? " calendar day at " + std::to_string(c.utc_offset.count()) + " min" : std::string());
}

struct tally {
  std::uint64_t admitted = 0, refused = 0, waits = 0, answers = 0, flushes = 0;
  // The spaced and calendar paths reached: waits a spaced bucket named,
  // admissions after a calendar day's rollover, refunds into a spaced bucket.
  std::uint64_t spaced_waits = 0, rollovers = 0, bucket_refunds = 0;
  // learn: dimensions switched, widenings, decisions in the both and spaced
  // phases, refunds into learn's bucket.
  std::uint64_t switches = 0, widenings = 0, both = 0, spaced = 0, learn_refunds = 0;
};

// One differential run of `trials` random accounts; SCRIPT FLUSH every
// `flush_every` steps when non-zero. With `objects` > 1 the Redis side is a
// fleet of that many account objects on one name, each step through one of
// them at random, against one in-process account: what one object learned
// (a pause, a switch, a widening) the others decide by.
tally differential(server& srv, std::uint64_t stream, int trials, int steps, int flush_every, bool functions = false,
                   bool learn = false, std::size_t objects = 1) {
  client conn(srv.port()), admin(srv.port());
  REQUIRE(conn.connected());
  const std::uint64_t seed = tgtest::seed_for(stream);
  tgtest::rng g(seed);
  INFO(tgtest::seed_note() << " stream seed " << seed);
  tally t;
  for (int trial = 0; trial < trials; ++trial) {
    const account_config c = random_config(g, learn);
    INFO("trial " << trial << ": " << describe(c));
    const nanoseconds origin(static_cast<std::int64_t>(g.between(1, 1000000)) * us + 1700000000 * sec);
    account<manual_clock> a(c, origin);
    const bool spaced = !account_policy::strict_for(c.model);
    std::int64_t last_day = -1;
    std::vector<std::unique_ptr<redis_account>> fleet;
    for (std::size_t i = 0; i < objects; ++i)
      fleet.push_back(std::make_unique<redis_account>("d" + std::to_string(stream) + "-" + std::to_string(trial),
                                                      redis_side(c), exec{&conn}, tr::options{true, functions}));
    REQUIRE(fleet[0]->create(true, origin.count() / us) == tr::outcome::ok);
    struct held_pair {
      lease<manual_clock> first;
      redis_account::lease_type second;
      std::size_t object;
    };
    std::vector<held_pair> held;
    nanoseconds now = origin;
    for (int step = 0; step < steps; ++step) {
      INFO("step " << step << " at " << now.count());
      const std::size_t pick = objects > 1 ? static_cast<std::size_t>(g.between(0, objects - 1)) : 0;
      INFO("object " << pick);
      redis_account& b = *fleet[pick];
      if (g.chance(3)) now += nanoseconds(static_cast<std::int64_t>(g.between(0, 2 * 3600)) * sec);
      else now += nanoseconds(static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(c.request_window.count() / 8 / us))) * us);
      if (flush_every > 0 && step % flush_every == flush_every / 2) {
        if (functions) REQUIRE(admin.call({"FUNCTION", "FLUSH"}).type == tr::reply::kind::status);
        else REQUIRE(admin.call({"SCRIPT", "FLUSH"}).type == tr::reply::kind::status);
        ++t.flushes;
      }
      const std::uint64_t op = g.between(0, 99);
      if (op < 60) {
        const request r = random_request(g);
        auto x = a.try_admit(r, now);
        auto y = b.try_admit(r, now);
        INFO("outcome " << tr::to_string(y.how));
        std::string learned_note;
        if (c.model == server_model::learn) {
          const learned_view lv = a.learned(now);
          learned_note = std::string("learned: phases ") + to_string(lv.requests) + "/" + to_string(lv.tokens) +
                         " margin " + std::to_string(lv.margin.count()) + " widenings " +
                         std::to_string(lv.widenings) + " level " + std::to_string(b.state_layout().learn.level);
        }
        INFO(learned_note);
        REQUIRE(y.how == tr::outcome::ok);
        REQUIRE(x.decision.what() == y.d.what());
        REQUIRE(x.decision.why() == y.d.why());
        REQUIRE(ceil_us(x.decision.retry_after()) * us == y.d.retry_after().count());
        REQUIRE(x.refused.bits == y.refused.bits);
        REQUIRE(x.tokens == y.tokens);
        REQUIRE(x.worst_case == y.worst_case);
        REQUIRE(static_cast<bool>(x.lease) == static_cast<bool>(y.lease));
        if (c.model == server_model::learn) {  // decisions in each phase
          const learned_view lv = a.learned(now);
          using lp = account_policy::learn_phase;
          if (lv.requests == lp::both || lv.tokens == lp::both) ++t.both;
          if (lv.requests == lp::spaced || lv.tokens == lp::spaced) ++t.spaced;
        }
        if (x) {
          ++t.admitted;
          if (c.calendar_day && c.tpd.is_finite()) {
            const std::int64_t day = (now.count() + c.utc_offset.count() * 60 * sec) / (86400 * sec);
            if (last_day >= 0 && day > last_day) ++t.rollovers;
            last_day = day;
          }
          REQUIRE(y.server_now_us == now.count() / us);
          held.push_back(held_pair{std::move(x.lease), std::move(y.lease), pick});
        } else {
          ++t.refused;
          if (x.decision.later() && x.decision.retry_after() > nanoseconds(0)) ++t.waits;
          if (spaced && (x.refused.has(dimension::rpm) || x.refused.has(dimension::tpm)) && x.decision.later()) ++t.spaced_waits;
        }
      } else if (op < 90) {
        if (held.empty()) continue;
        const std::size_t i = static_cast<std::size_t>(g.between(0, held.size() - 1));
        auto& h = held[i];
        const std::uint64_t kind = g.between(0, 9);
        if (kind < 6) {
          const std::uint64_t reserved = h.first.reserved_tokens();
          usage u{g.between(0, reserved + 50), g.between(0, reserved / 2 + 20), 0, 0, 0};
          const auto sr = h.first.settle(u, now);
          if (spaced && c.tpm.is_finite() && sr.refunded_tokens > 0) ++t.bucket_refunds;
          if (c.model == server_model::learn && sr.refunded_tokens > 0 &&
              a.learned(now).tokens == account_policy::learn_phase::spaced)
            ++t.learn_refunds;
          h.second.settle(u);
        } else if (kind < 8) {
          h.first.settle_rejected(now);
          h.second.settle_rejected();
        } else {
          h.first = lease<manual_clock>();
          h.second = redis_account::lease_type();
        }
        REQUIRE(fleet[h.object]->queued_count() == 1);
        REQUIRE(fleet[h.object]->flush(now));
        held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
      } else if (op < 94) {
        std::optional<nanoseconds> header;
        const error_info e = random_answer(g, header, learn);
        a.on_response(e, header, now);
        REQUIRE(b.on_response(e, header, now) == tr::outcome::ok);
        ++t.answers;
      } else if (op < 97) {
        a.resume();
        REQUIRE(b.resume(now) == tr::outcome::ok);
      } else {
        a.clear_pause();
        REQUIRE(b.clear_pause(now) == tr::outcome::ok);
      }
      const auto v = a.remaining(now);
      const auto w = b.remaining(now);
      REQUIRE(w.how == tr::outcome::ok);
      if (c.concurrency.is_finite()) REQUIRE(a.in_flight() == w.values.in_flight);
      if (c.rpm.is_finite()) REQUIRE(*v.requests == *w.values.available[0]);
      if (c.tpm.is_finite()) REQUIRE(*v.tokens_minute == *w.values.available[1]);
      if (c.tpd.is_finite()) REQUIRE(*v.tokens_day == *w.values.available[2]);
      if (c.budget)
        REQUIRE(a.budget_remaining()->nanos() == std::max<std::int64_t>(0, c.budget->nanos() - w.values.committed_nanos));
    }
    if (c.model == server_model::learn) {
      const learned_view lv = a.learned(now);
      t.switches += lv.switches;
      t.widenings += lv.widenings;
      std::uint64_t level = 0;  // the objects that called since the last widening know it
      for (const auto& o : fleet) level = std::max(level, o->state_layout().learn.level);
      REQUIRE(level == lv.widenings);
    }
    held.clear();  // the in-process leases go first; the Redis ones queue into b, dropped with it
  }
  return t;
}

}  // namespace

TEST_CASE("redis: the script and the in-process account decide alike", "[redis_server][differential]") {
  server srv;
  REQUIRE(srv.running());
  const tally t = differential(srv, 17101, 120, 400, 0);
  // The schedules reach every kind of outcome (else the comparison is weak).
  CHECK(t.admitted > 1000);
  CHECK(t.refused > 2000);
  CHECK(t.waits > 500);
  CHECK(t.answers > 200);
  INFO("spaced waits " << t.spaced_waits << ", rollovers " << t.rollovers << ", bucket refunds " << t.bucket_refunds);
  CHECK(t.spaced_waits > 300);
  CHECK(t.rollovers > 5);
  CHECK(t.bucket_refunds > 40);
}

// server_model::learn alone, with rate 429s fed back often: switches,
// the both and spaced phases, widenings (the fleet's level) and refunds into
// learn's bucket all reached, every decision and wait the in-process one's.
TEST_CASE("redis: learn decides as the in-process account, switch by switch", "[redis_server][differential]") {
  server srv;
  REQUIRE(srv.running());
  const tally t = differential(srv, 17104, 60, 400, 0, false, true);
  INFO("switches " << t.switches << ", widenings " << t.widenings << ", both " << t.both << ", spaced " << t.spaced
                   << ", learn refunds " << t.learn_refunds);
  CHECK(t.admitted > 1000);
  CHECK(t.switches > 40);
  CHECK(t.widenings > 40);
  CHECK(t.both > 100);
  CHECK(t.spaced > 300);
  CHECK(t.learn_refunds > 20);
}

// The same through a fleet of three objects: a widening one object learned
// moves the others (relearn) before they decide, and a lesson sent by an
// object behind the fleet's level carries the fleet's next level.
TEST_CASE("redis: learn through three objects decides as one in-process account", "[redis_server][differential]") {
  server srv;
  REQUIRE(srv.running());
  const tally t = differential(srv, 17105, 40, 400, 0, false, true, 3);
  INFO("switches " << t.switches << ", widenings " << t.widenings);
  CHECK(t.admitted > 500);
  CHECK(t.switches > 30);
  CHECK(t.widenings > 100);
}

// Times behind the latest one seen (a clock stepped back, a failover to a
// server whose clock is behind; F4): admissions and peeks at random times,
// one in four behind the latest by up to two windows and three hours, on the
// strict models. The in-process account is no oracle here (its refused
// admissions move its heads, which a lagging time then sees), so every
// admission is checked against the bounds by brute force: requests and
// tokens in every (x - W, x] of the true times, and tokens per calendar day
// or in every rolling 24 h. Leases are dropped at once (no refund, the
// tokens stay counted).
TEST_CASE("redis: times behind the latest never admit past a bound", "[redis_server][differential]") {
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port());
  const std::uint64_t seed = tgtest::seed_for(17104);
  tgtest::rng g(seed);
  INFO(tgtest::seed_note() << " stream seed " << seed);
  std::uint64_t lagging_admitted = 0, lagging_refused = 0, admitted = 0;
  constexpr std::int64_t day = 86400 * sec;
  for (int trial = 0; trial < 60; ++trial) {
    account_config c = random_config(g);
    if (!account_policy::strict_for(c.model)) c.model = server_model::sliding_log;
    c.budget.reset();
    INFO("trial " << trial << ": " << describe(c));
    const nanoseconds origin(static_cast<std::int64_t>(g.between(1, 1000000)) * us + 1700000000 * sec);
    redis_account b("lag-" + std::to_string(trial), redis_side(c), exec{&conn}, tr::options{true});
    REQUIRE(b.create(true, origin.count() / us) == tr::outcome::ok);
    std::vector<std::pair<std::int64_t, std::uint64_t>> taken;  // (time ns, tokens) of each admission
    const std::int64_t most = 2 * std::max(c.request_window.count(), c.token_window.count()) + 3 * 3600 * sec;
    nanoseconds now = origin;
    for (int step = 0; step < 400; ++step) {
      if (g.chance(3)) now += nanoseconds(static_cast<std::int64_t>(g.between(0, 2 * 3600)) * sec);
      else now += nanoseconds(static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(c.request_window.count() / 8 / us))) * us);
      nanoseconds at = now;
      const bool lagging = g.chance(25);
      if (lagging) {
        const std::int64_t span = std::min((now - origin).count(), most) / us;
        at -= nanoseconds(static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(span))) * us);
      }
      INFO("step " << step << " at " << at.count() << " (latest " << now.count() << ")");
      if (g.chance(30)) {
        REQUIRE(b.remaining(at).how == tr::outcome::ok);
        continue;
      }
      auto y = b.try_admit(random_request(g), at);
      REQUIRE(y.how == tr::outcome::ok);
      if (y) {
        ++admitted;
        if (lagging) ++lagging_admitted;
        REQUIRE(y.server_now_us == at.count() / us);
        taken.emplace_back(at.count(), y.tokens);
        y.lease = redis_account::lease_type();  // dropped: carried by the next call
      } else if (lagging) {
        ++lagging_refused;
      }
    }
    // The bounds, by brute force over every admission's time x.
    for (const auto& e : taken) {
      const std::int64_t x = e.first;
      std::uint64_t req = 0, tok = 0, tok_day = 0;
      for (const auto& f : taken) {
        if (f.first <= x && f.first > x - c.request_window.count()) ++req;
        if (f.first <= x && f.first > x - c.token_window.count()) tok += f.second;
        if (c.calendar_day) {
          const std::int64_t off = c.utc_offset.count() * 60 * sec;
          if ((f.first + off) / day == (x + off) / day) tok_day += f.second;
        } else if (f.first <= x && f.first > x - day) {
          tok_day += f.second;
        }
      }
      INFO("at " << x << ": " << req << " requests, " << tok << " tokens, " << tok_day << " in the day");
      if (c.rpm.is_finite()) REQUIRE(req <= *c.rpm.value());
      if (c.tpm.is_finite()) REQUIRE(tok <= *c.tpm.value());
      if (c.tpd.is_finite()) REQUIRE(tok_day <= *c.tpd.value());
    }
  }
  INFO("admitted " << admitted << ", behind the latest: " << lagging_admitted << " admitted, " << lagging_refused
                   << " refused");
  CHECK(admitted > 1000);
  CHECK(lagging_admitted > 50);
  CHECK(lagging_refused > 500);
}

TEST_CASE("redis: SCRIPT FLUSH mid-run: the EVAL fallback, the same decisions", "[redis_server][flush]") {
  server srv;
  REQUIRE(srv.running());
  const tally t = differential(srv, 17102, 24, 300, 37);
  CHECK(t.flushes >= 150);
  CHECK(t.admitted > 200);
}

TEST_CASE("redis: the Functions library decides alike, and comes back after FUNCTION FLUSH", "[redis_server][functions]") {
  server srv;
  REQUIRE(srv.running());
  const tally t = differential(srv, 17103, 24, 300, 41, true);
  CHECK(t.flushes >= 160);
  CHECK(t.admitted > 200);
  client admin(srv.port());
  const tr::reply r = admin.call({"FUNCTION", "LIST", "LIBRARYNAME", std::string(tr::function_name)});
  REQUIRE(r.type == tr::reply::kind::array);
  CHECK(r.elements.size() == 1);
}

// What one decision costs the server: the commands the script runs, from
// INFO commandstats. Every dimension on (concurrency, RPM, TPM, TPD, a
// budget), each request settled before the next (its settlement carried by
// the next call): one round trip per request, and at most 7 commands a call
// on average (TIME, the epoch's HMGET, ZCARD, ZMSCORE for the settled lease,
// ZREM, ZADD, the epoch's HSET; a window's ring only at its sub-window's end,
// the lease set's expiry once per eighth of the lease timeout). The same
// under the spaced buckets (server model unknown, no margin, so that every
// request is admitted): a bucket is a few fields of the epoch, no command
// more.
namespace {

void count_calls(server_model model) {
  INFO("server model " << to_string(model));
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port()), admin(srv.port());
  struct counting {
    client* c;
    std::uint64_t* n;
    tr::reply operator()(const std::vector<std::string>& argv) const {
      ++*n;
      return c->call(argv);
    }
  };
  account_config c;
  c.model = model;
  c.concurrency = limit(100);
  const bool spaced = !account_policy::strict_for(model);
  c.rpm = limit(spaced ? 100000000 : 1000000);  // spaced: 600 ns apart
  c.tpm = limit(spaced ? 800000000 : 100000000);
  c.spacing_margin = nanoseconds(0);
  c.tpd = limit(1000000000);
  c.budget = usd::from_nanos(1000000000000);
  c.lease_timeout = std::chrono::seconds(60);
  std::uint64_t sent = 0;
  tr::account<counting> a("calls", c, counting{&conn, &sent});
  REQUIRE(a.create(true) == tr::outcome::ok);
  REQUIRE(a.try_admit(tgtest::req(10, 10)));  // the SHA learnt, the lease set begun
  REQUIRE(a.flush());
  REQUIRE(admin.call({"CONFIG", "RESETSTAT"}).type == tr::reply::kind::status);
  sent = 0;
  constexpr int n = 300;
  int admitted = 0;
  for (int i = 0; i < n; ++i) {
    auto x = a.try_admit(tgtest::req(10, 10));
    REQUIRE(x.how == tr::outcome::ok);
    if (x) ++admitted;
    x.lease.settle(usage{10, 0, 10, 0, 0});
  }
  REQUIRE(a.flush());
  CHECK(admitted == n);
  CHECK(sent == static_cast<std::uint64_t>(n) + 1);  // the last settlement: one flush
  const tr::reply st = admin.call({"INFO", "commandstats"});
  REQUIRE(st.type == tr::reply::kind::string);
  double scripts = 0, inner = 0;
  std::size_t b = 0;
  while (b < st.str.size()) {
    std::size_t e = st.str.find("\r\n", b);
    if (e == std::string::npos) e = st.str.size();
    const std::string l = st.str.substr(b, e - b);
    b = e + 2;
    if (l.compare(0, 8, "cmdstat_") != 0) continue;
    const std::string name = l.substr(8, l.find(':') - 8);
    const double calls = std::atof(l.c_str() + l.find("calls=") + 6);
    if (name == "evalsha") scripts = calls;
    else if (name != "config|resetstat" && name != "info") inner += calls;
  }
  INFO(st.str);
  REQUIRE(scripts == n + 1);
  const double per_call = inner / scripts;
  CHECK(per_call >= 5);  // the count is real: TIME, HMGET, ZCARD, ZADD, HSET at least
  CHECK(per_call <= 7.2);
}

}  // namespace

TEST_CASE("redis: one round trip per request, few commands per decision", "[redis_server][calls]") {
  count_calls(server_model::sliding_log);
  count_calls(server_model::unknown);
}

// The bucket's refund rule where random schedules rarely reach it: a lease
// refunds at most its own intervals still ahead, not a debt charged after
// it (bucket_ticket.hpp). C (10 tokens), then A (100) after C's spacing, then
// C's settlement charges 200 more, then A gives back all 100 at 20 ms into its
// own 300 ms: 93 intervals of 3 ms come back, not 100. The next admission's
// wait is the same in both.
TEST_CASE("redis: a spaced bucket refunds only a lease's own intervals, as in-process", "[redis_server][differential]") {
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port());
  account_config c;  // server model unknown
  c.concurrency = limit(3);
  c.tpm = limit(1000);
  c.max_request_tokens = 500;
  c.token_window = std::chrono::milliseconds(1500);
  c.spacing_margin = nanoseconds(0);  // 500 per 1.5 s: 3 ms a token
  c.refund_unused_tokens = true;
  const nanoseconds t0(1700000000 * sec);
  c.lease_timeout = nanoseconds(0);
  account<manual_clock> a(c, t0);
  redis_account b("own", redis_side(c), exec{&conn}, tr::options{true});
  REQUIRE(b.create(true, t0.count() / us) == tr::outcome::ok);
  const nanoseconds ms1(ms);
  auto both = [&](const request& r, nanoseconds at) {
    auto x = a.try_admit(r, at);
    auto y = b.try_admit(r, at);
    REQUIRE(y.how == tr::outcome::ok);
    REQUIRE(x.decision.what() == y.d.what());
    REQUIRE(ceil_us(x.decision.retry_after()) * us == y.d.retry_after().count());
    return std::make_pair(std::move(x), std::move(y));
  };
  auto lc = both(tgtest::req(5, 5), t0);
  REQUIRE(lc.first);
  auto la = both(tgtest::req(50, 50), t0 + 30 * ms1);
  REQUIRE(la.first);
  (void)lc.first.lease.settle(usage{5, 0, 205, 0, 0}, t0 + 40 * ms1);  // 200 beyond: 600 ms of debt
  lc.second.lease.settle(usage{5, 0, 205, 0, 0});
  REQUIRE(b.flush(t0 + 40 * ms1));
  const auto sr = la.first.lease.settle(usage{0, 0, 0, 0, 0}, t0 + 50 * ms1);
  CHECK(sr.refunded_tokens == 100);  // asked; the bucket gives back 93 intervals
  la.second.lease.settle(usage{0, 0, 0, 0, 0});
  REQUIRE(b.flush(t0 + 50 * ms1));
  auto next = both(tgtest::req(1, 1), t0 + 50 * ms1);
  REQUIRE(next.first.decision.later());
  // The TAT: 30 ms + 300 ms + 600 ms - 93 x 3 ms = 651 ms after t0.
  CHECK(next.first.decision.retry_after() == 601 * ms1);
  CHECK(next.second.d.retry_after() == 601 * ms1);
}

// learn's "both" phase where random schedules rarely reach it: the window
// still refuses after the switch while the bucket would admit. A request's
// debt (900 tokens beyond its reservation) fills the token window but not
// the shadow, so after a TPM 429 the bucket is ready at once while the window
// stays full for the phase: both accounts refuse, naming TPM, with the same
// wait (the window's, cut at the phase's end), then admit once it is over.
TEST_CASE("redis: learn's switch keeps the window for a window, as in-process", "[redis_server][differential]") {
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port());
  account_config c;
  c.model = server_model::learn;
  c.tpm = limit(1000);
  c.max_request_tokens = 100;  // starts strict: the margin policy admits 900 per 1.502 s, the window 937.5
  c.token_window = std::chrono::milliseconds(1500);
  c.max_pause = nanoseconds(0);
  const nanoseconds t0(1700000000 * sec);
  c.lease_timeout = nanoseconds(0);
  c.per_thread_credit = false;
  account<manual_clock> a(c, t0);
  redis_account b("both", redis_side(c), exec{&conn}, tr::options{true});
  REQUIRE(b.create(true, t0.count() / us) == tr::outcome::ok);
  REQUIRE(b.state_layout().learn.on);
  REQUIRE_FALSE(b.state_layout().learn.spaced_start[1]);
  const nanoseconds ms1(ms);
  auto both = [&](const request& r, nanoseconds at) {
    auto x = a.try_admit(r, at);
    auto y = b.try_admit(r, at);
    REQUIRE(y.how == tr::outcome::ok);
    REQUIRE(x.decision.what() == y.d.what());
    REQUIRE(ceil_us(x.decision.retry_after()) * us == y.d.retry_after().count());
    REQUIRE(x.refused.bits == y.refused.bits);
    return std::make_pair(std::move(x), std::move(y));
  };
  auto l = both(tgtest::req(10, 0), t0);
  REQUIRE(l.first);
  (void)l.first.lease.settle(usage{910, 0, 0, 0, 0}, t0 + ms1);  // 900 beyond the 10 reserved
  l.second.lease.settle(usage{910, 0, 0, 0, 0});
  REQUIRE(b.flush(t0 + ms1));
  error_info e;
  e.kind = error_kind::tpm;
  e.status = 429;
  a.on_response(e, std::nullopt, t0 + 2 * ms1);
  REQUIRE(b.on_response(e, std::nullopt, t0 + 2 * ms1) == tr::outcome::ok);
  REQUIRE(a.learned(t0 + 2 * ms1).tokens == account_policy::learn_phase::both);
  a.clear_pause();
  REQUIRE(b.clear_pause(t0 + 3 * ms1) == tr::outcome::ok);
  // 910 in the window: 90 fit, 100 do not; the bucket (10 tokens of shadow,
  // 17 ms) is ready from 20 ms on.
  auto m = both(tgtest::req(90, 0), t0 + 30 * ms1);
  REQUIRE(m.first);
  auto r = both(tgtest::req(50, 0), t0 + 400 * ms1);
  REQUIRE_FALSE(r.first);
  REQUIRE(r.first.refused.has(dimension::tpm));
  REQUIRE(r.first.decision.retry_after() > nanoseconds(0));
  // After the phase (1.5 s from the switch) the bucket alone decides.
  REQUIRE(a.learned(t0 + 1600 * ms1).tokens == account_policy::learn_phase::spaced);
  auto s = both(tgtest::req(50, 0), t0 + 1600 * ms1);
  REQUIRE(s.first);
}
