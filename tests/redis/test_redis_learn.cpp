// server_model::learn in Redis: a fleet of account objects (three, as three
// processes would hold) on one name, each request sent through one of them
// at random, against the five server models of ../server_models.hpp, each
// 429 fed back (on_response) by the object that got it before any object's
// next admission. The bound of account/learn.hpp holds for the fleet: at
// most one 429 per rate dimension, none from the fixed-window, sliding-log
// and token-bucket servers nor where learn starts spaced; where the margin
// policy itself is not safe (tokens against GCRA with jitter), no 429 after
// the first widening. Every 429'd request is resent and none is lost.
// Supplied times (test mode), whole µs; windows W + J as policy.hpp asks.
#include "../catch_compat.hpp"
#include "../account_support.hpp"
#include "../learn_support.hpp"
#include "../server_models.hpp"
#include "../support.hpp"
#include "../tollgate_under_test.hpp"
#include "redis_support.hpp"

#include <tollgate/redis/account.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

using namespace tollgate;
namespace tr = tollgate::redis;
using tgredis::client;
using tgredis::exec;


namespace {

// The executor, counting the calls.
struct counting_exec {
  exec inner;
  std::uint64_t* calls;
  tr::reply operator()(const std::vector<std::string>& argv) {
    ++*calls;
    return inner(argv);
  }
};
using redis_account = tr::account<counting_exec>;
using namespace tgtest::servers;

struct scenario {
  const char* name;
  std::uint64_t limit;
  std::int64_t window_ms;
  std::uint64_t max_request;  // 1: a request limit; else tokens, requests of 1..max_request
  std::int64_t jitter_us;     // each request reaches the server 0..jitter late, in order
};

const scenario scenarios[] = {
    {"requests, L = 10 per 5 s", 10, 5000, 1, 0},
    {"requests, L = 10 per 5 s, 2 ms jitter", 10, 5000, 1, 2000},
    {"requests, Tier0 RPM 3", 3, 60000, 1, 0},
    {"tokens, L = 20,000 per 60 s, m = 2,000", 20000, 60000, 2000, 0},
    {"tokens, L = 20,000 per 60 s, m = 2,000, 2 ms jitter", 20000, 60000, 2000, 2000},
    {"requests, RPM 100 (starts spaced)", 100, 60000, 1, 0},
};

bool starts_spaced(const scenario& sc) { return sc.max_request == 1 && sc.limit >= 17; }
bool strict_safe(int kind) { return kind == 0 || kind == 1 || kind == 3; }
bool margin_unsafe(const scenario& sc, int kind) { return sc.max_request > 1 && sc.jitter_us > 0 && kind == 4; }

account_config config_for(const scenario& sc) {
  account_config c;
  c.model = server_model::learn;
  c.lease_timeout = std::chrono::hours(1);
  tgtest::put_learn_limit(c, sc.limit, nanoseconds(sc.window_ms * 1000000 + sc.jitter_us * 1000), sc.max_request);
  return c;
}

error_info rejection(const scenario& sc) { return tgtest::kimi_rate_429(sc.limit, sc.max_request); }

struct fleet_outcome {
  std::uint64_t generated = 0, completed = 0, sent = 0, rejected = 0, after_widening = 0;
  std::uint64_t level = 0;
  std::uint64_t calls = 0;  // executor calls
};

fleet_outcome run_fleet(client& conn, const std::string& name, const scenario& sc, int kind, std::uint64_t seed,
                        bool saturate, std::uint64_t requests, std::int64_t phase_us, std::uint32_t chunk_parts = 0) {
  tgtest::rng g(seed);
  const std::int64_t us = 1000;
  const std::int64_t w = sc.window_ms * 1000 * us;
  auto srv = make_server_at(kind, sc.limit, w, phase_us * us);
  const account_config cfg = config_for(sc);
  std::vector<std::unique_ptr<redis_account>> fleet;
  tr::options opt{true};
  opt.chunk_parts = chunk_parts;
  fleet_outcome o;
  for (int i = 0; i < 3; ++i)
    fleet.push_back(std::make_unique<redis_account>(name, cfg, counting_exec{exec{&conn}, &o.calls}, opt));
  REQUIRE(fleet[0]->create(true, 0) == tr::outcome::ok);
  const error_info e429 = rejection(sc);
  std::int64_t now = 0, delivered = 0;  // ns, whole µs
  auto to_us_up = [&](std::int64_t t) { return (t + us - 1) / us * us; };
  for (std::uint64_t i = 0; i < requests; ++i) {
    if (!saturate) {
      const std::uint64_t pick = g.between(0, 9);
      const std::uint64_t uw = static_cast<std::uint64_t>(w / us);
      if (pick < 4) {
      } else if (pick < 7) {
        now += us * static_cast<std::int64_t>(g.between(0, uw / sc.limit * sc.max_request));
      } else if (pick < 9) {
        now += us * static_cast<std::int64_t>(g.between(0, uw / 4));
      } else {
        now += us * static_cast<std::int64_t>(g.between(0, uw * 2));
      }
    }
    const std::uint64_t n = g.between(1, sc.max_request);
    request r;
    r.prompt_tokens = sc.max_request == 1 ? 0 : n;
    r.max_tokens = 0;
    ++o.generated;
    redis_account& a = *fleet[g.between(0, 2)];
    for (int attempt = 0; attempt < 10000; ++attempt) {
      auto x = a.try_admit(r, nanoseconds(now));
      REQUIRE(x.how == tr::outcome::ok);
      if (!x) {
        REQUIRE(x.d.later());
        now = to_us_up(now + x.d.retry_after().count());
        if (!saturate && g.chance(20)) now += us * static_cast<std::int64_t>(g.between(0, 1000));
        continue;
      }
      ++o.sent;
      std::int64_t at = now + static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(sc.jitter_us * us)));
      if (at < delivered) at = delivered;  // in-order delivery
      delivered = at;
      if (srv->accept(at, sc.max_request == 1 ? 1 : n)) {
        x.lease.settle(usage{n, 0, 0, 0, 0});
        ++o.completed;
        break;
      }
      ++o.rejected;
      x.lease.settle_rejected();
      if (now < at) now = to_us_up(at);  // the answer comes back once the server has seen the request
      if (a.state_layout().learn.level > 0) ++o.after_widening;
      REQUIRE(a.on_response(e429, nanoseconds(std::chrono::seconds(1)), nanoseconds(now)) == tr::outcome::ok);
    }
  }
  for (auto& a : fleet) REQUIRE(a->flush(nanoseconds(now)));
  o.level = fleet[0]->state_layout().learn.level;
  return o;
}

// One table: every scenario against every server model, through `parts`
// chunks (0: a call per request). With chunks the requests a holder spends
// after another object's lesson, from a chunk granted before it, count as in
// flight (redis/feedback.hpp): at most two objects' chunks, ceil(L / parts)
// units each (requests, or tokens of requests of at least one), beside the
// one 429. Calls per request include the refusals of this closed loop.
void fleet_table(unsigned parts) {
  tgredis::server srv;
  REQUIRE(srv.running());
  client conn(srv.port());
  REQUIRE(conn.connected());
  const int trials = static_cast<int>(tgtest::sized(parts == 0 ? 6 : 3));
  std::printf("\nlearn in Redis, three objects%s, against the five server models (%d random trials and 4 saturated "
              "phases per cell):\n| scenario | fixed | log | counter | bucket | GCRA-1 |\n|---|---|---|---|---|---|\n",
              parts == 0 ? "" : (", chunks of 1/" + std::to_string(parts)).c_str(), trials);
  std::uint64_t switched_runs = 0;
  for (std::size_t si = 0; si < sizeof scenarios / sizeof scenarios[0]; ++si) {
    const scenario& sc = scenarios[si];
    std::printf("| %s |", sc.name);
    for (int s = 0; s < server_count; ++s) {
      std::uint64_t worst = 0, total = 0, calls = 0, sent = 0;
      const std::int64_t w_us = sc.window_ms * 1000;
      for (int t = 0; t < trials + 4; ++t) {
        const bool sat = t >= trials;
        const std::uint64_t seed = tgtest::seed_for(104729ULL * si + 7919ULL * static_cast<std::uint64_t>(s) +
                                                    static_cast<std::uint64_t>(t) + 31ULL * parts);
        tgtest::rng pg(seed ^ 0x5bd1e995ULL);
        const std::int64_t phase = sat ? w_us / 4 * (t - trials) : static_cast<std::int64_t>(pg.between(0, static_cast<std::uint64_t>(w_us)));
        const std::uint64_t count = sc.max_request == 1 ? sc.limit * 6 : 60;
        const std::string name = "learn-" + std::to_string(parts) + "-" + std::to_string(si) + "-" + std::to_string(s) +
                                 "-" + std::to_string(t);
        const fleet_outcome o = run_fleet(conn, name, sc, s, seed, sat, count, phase, parts);
        INFO(sc.name << " vs " << server_names[s] << ", trial " << t << (sat ? " (saturated)" : "") << ", phase "
                     << phase << " us: " << o.rejected << " 429s of " << o.sent << " sent, level " << o.level << ", "
                     << tgtest::seed_note());
        CHECK(o.completed == o.generated);
        CHECK(o.sent == o.completed + o.rejected);
        const std::uint64_t in_flight = parts == 0 ? 0 : 2 * ((sc.limit + parts - 1) / parts);
        if (margin_unsafe(sc, s)) {
          CHECK(o.after_widening == 0);
        } else {
          CHECK(o.rejected <= 1 + in_flight);
          if (strict_safe(s) || starts_spaced(sc)) CHECK(o.rejected == 0);
        }
        if (o.rejected > 0) ++switched_runs;
        calls += o.calls;
        sent += o.sent;
        worst = o.rejected > worst ? o.rejected : worst;
        total += o.rejected;
      }
      std::printf(" max %llu, %llu in %d, %.2f calls/request |", static_cast<unsigned long long>(worst),
                  static_cast<unsigned long long>(total), trials + 4, static_cast<double>(calls) / static_cast<double>(sent));

    }
    std::printf("\n");
    std::fflush(stdout);
  }
  // The switch is reached (the counter and GCRA servers answer the strict
  // start's bursts with a 429), else the bound above is checked on nothing.
  CHECK(switched_runs > 20);
}

}  // namespace

TEST_CASE("redis: learn, a fleet of three objects, at most one 429 per dimension against every server model",
          "[redis_server][learn]") {
  fleet_table(0);
}

TEST_CASE("redis: learn in chunked mode, the same bound but for chunks granted before the lesson",
          "[redis_server][learn]") {
  fleet_table(4);
}

// Past the switch, and where learn starts spaced, a chunk is a slice of the
// buckets' time (redis/chunk.hpp "Spaced buckets"): one object sending
// back to back makes a call per slice (and one to learn that the slice's
// requests are spent), not per request: RPM 100 (spaced from the start) in
// chunks of 1/4, and RPM 16 (the largest that starts strict) after an RPM 429
// and its window, in chunks of 1/2.
TEST_CASE("redis: learn in chunked mode takes slices once spaced", "[redis_server][learn]") {
  tgredis::server srv;
  REQUIRE(srv.running());
  client conn(srv.port());
  for (const std::uint64_t l : {std::uint64_t(100), std::uint64_t(16)}) {
    INFO("RPM " << l);
    account_config c;
    c.model = server_model::learn;
    c.rpm = limit(l);
    c.lease_timeout = std::chrono::hours(1);
    std::uint64_t calls = 0;
    tr::options opt{true};
    opt.chunk_parts = l == 100 ? 4 : 2;
    redis_account a("slices-" + std::to_string(l), c, counting_exec{exec{&conn}, &calls}, opt);
    REQUIRE(a.create(true, 0) == tr::outcome::ok);
    REQUIRE(a.state_layout().learn.spaced_start[0] == (l == 100));
    const std::uint64_t per_chunk = l / opt.chunk_parts;
    std::int64_t now = 0;
    const std::int64_t us = 1000;
    if (l == 16) {  // the lesson, then past its window (60 s)
      error_info e;
      e.kind = error_kind::rpm;
      e.status = 429;
      REQUIRE(a.on_response(e, std::nullopt, nanoseconds(now)) == tr::outcome::ok);
      now = 61 * 1000000 * us;
    }
    const std::uint64_t before = calls;
    std::uint64_t admitted = 0, sliced = 0;
    for (int i = 0; i < 20000 && admitted < 120; ++i) {
      auto x = a.try_admit(tgtest::req(1, 1), nanoseconds(now));
      REQUIRE(x.how == tr::outcome::ok);
      if (x) {
        ++admitted;
        if (a.chunk().has_slices()) ++sliced;
        x.lease.settle(usage{1, 1, 0, 0, 0});
        continue;
      }
      INFO("refused at " << now << ": " << to_string(x.d.what()) << " " << x.d.retry_after().count() << " bits "
                         << x.refused.bits);
      REQUIRE(x.d.later());
      now += (x.d.retry_after().count() + us - 1) / us * us;
    }
    REQUIRE(admitted == 120);
    CHECK(sliced == admitted);
    // Two calls a slice (its grant, then a refusal once its requests are spent), a few more.
    CHECK(calls - before <= 2 * (admitted / per_chunk) + 4);
  }
}

// A relearn answer, then NOSCRIPT on the call sent again (SCRIPT FLUSH, a
// failover to a server without the script): the EVAL form is sent at the
// fleet's level too, so the admission and the lesson go through (they came
// back other_configuration, and the lesson's pause was lost).
TEST_CASE("redis: learn: a script lost right after a relearn", "[redis_server][learn]") {
  tgredis::server srv;
  REQUIRE(srv.running());
  client conn(srv.port()), admin(srv.port());
  struct flushing_exec {
    exec inner;
    client* admin;
    int* armed;
    tr::reply operator()(const std::vector<std::string>& argv) {
      tr::reply r = inner(argv);
      if (*armed > 0 && tr::relearn_level(r)) {
        REQUIRE(admin->call({"SCRIPT", "FLUSH"}).type == tr::reply::kind::status);
        --*armed;
      }
      return r;
    }
  };
  account_config c;
  c.model = server_model::learn;
  c.rpm = limit(100);  // spaced from the start: its first 429 widens
  c.tpm = limit(100000);
  c.max_request_tokens = 1000;
  c.lease_timeout = std::chrono::hours(1);
  std::uint64_t calls = 0;
  redis_account a("lost", c, counting_exec{exec{&conn}, &calls}, tr::options{true});
  REQUIRE(a.create(true, 0) == tr::outcome::ok);
  error_info e;
  e.kind = error_kind::rpm;
  e.status = 429;
  REQUIRE(a.on_response(e, std::nullopt, nanoseconds(1000)) == tr::outcome::ok);
  REQUIRE(a.state_layout().learn.level == 1);
  int armed = 1;
  tr::basic_account<flushing_exec, usd_tag> b("lost", c, flushing_exec{exec{&conn}, &admin, &armed}, tr::options{true});
  const nanoseconds later(std::chrono::seconds(10));
  auto x = b.try_admit(tgtest::req(10, 10), later);
  CHECK(armed == 0);  // the flush came
  REQUIRE(x.how == tr::outcome::ok);
  CHECK(x);
  CHECK(b.state_layout().learn.level == 1);
  armed = 1;
  tr::basic_account<flushing_exec, usd_tag> d("lost", c, flushing_exec{exec{&conn}, &admin, &armed}, tr::options{true});
  e.kind = error_kind::tpm;
  REQUIRE(d.on_response(e, std::nullopt, later + std::chrono::seconds(1)) == tr::outcome::ok);
  CHECK(armed == 0);
  CHECK(d.state_layout().learn.level == 2);  // tpm spaced from the start too: widened again
  REQUIRE(d.remaining(later + std::chrono::seconds(1)).values.paused_for_us > 0);  // the lesson's pause holds
}
