// Server-model compliance: which tollgate policy stays inside which server
// model. Five test-only models of how an API server may count, each tried at
// random phases against random arrival schedules with random request sizes.
// A cell is "safe" when the server never rejected a request the policy
// admitted, in every trial. The table printed here is the one in the README.
#include "catch_compat.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"
#include "server_models.hpp"

#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>

using namespace tollgate;
using namespace std::chrono;
using tgtest::i128;
using tgtest::ns;

namespace {
using namespace tgtest::servers;

using policy = std::function<decision(std::uint64_t, ns)>;
const char* const policy_names[] = {"bucket, burst L", "strict window at L", "smooth at L", "smooth with margin",
                                    "spaced with margin"};
constexpr int policy_count = 5;

// L per W with requests of 1..m units. smooth = GCRA with burst m at L per W;
// the margin variant runs at (L - m) per W; "spaced" admits one request only
// when the previous one's whole emission time has passed, at (L - m) per W.
policy make_policy(int kind, std::uint64_t l, ns w, std::uint64_t m) {
  switch (kind) {
    case 0: {
      auto b = std::make_shared<token_bucket<manual_clock>>(rate(l, w), l, ns(0));
      return [b](std::uint64_t n, ns t) { return b->try_acquire(n, t); };
    }
    case 1: {
      auto s = std::make_shared<sliding_window<manual_clock>>(rate(l, w), ns(0));
      return [s](std::uint64_t n, ns t) { return s->try_acquire(n, t); };
    }
    case 2: {
      auto b = std::make_shared<token_bucket<manual_clock>>(rate(l, w), m, ns(0));
      return [b](std::uint64_t n, ns t) { return b->try_acquire(n, t); };
    }
    case 3: {
      auto b = std::make_shared<token_bucket<manual_clock>>(rate(l - m, w), m, ns(0));
      return [b](std::uint64_t n, ns t) { return b->try_acquire(n, t); };
    }
    default: {
      // One request at a time, each spaced by its own size: admit when the
      // previous request's emission time has passed (take 1 with burst 1),
      // then charge the rest of its units. At L - m per W.
      auto b = std::make_shared<token_bucket<manual_clock>>(rate(l - m, w), 1, ns(0));
      return [b](std::uint64_t n, ns t) {
        const decision d = b->try_acquire(1, t);
        if (d.admitted() && n > 1) b->charge(n - 1, t);
        return d;
      };
    }
  }
}

struct scenario {
  const char* name;
  std::uint64_t limit;
  ns window;
  std::uint64_t max_request;
  std::int64_t jitter;  // the server sees each request 0..jitter ns late, in order
  bool expected_safe[policy_count][server_count];
};

struct cell_result {
  std::uint64_t sent = 0, rejected = 0;
};

// One trial: a caller with a random arrival schedule (bursts, idle gaps,
// retries at the exact retry_after) paced by the policy, every admitted
// request sent to the server.
cell_result run_trial(int p, int s, const scenario& sc, std::uint64_t seed, bool saturate, std::uint64_t windows,
                      std::uint64_t* admitted_units) {
  tgtest::rng g(seed);
  const std::int64_t w = sc.window.count();
  auto srv = make_server(s, sc.limit, w, g);
  policy pol = make_policy(p, sc.limit, sc.window, sc.max_request);
  cell_result r;
  std::int64_t now = 0;
  const std::int64_t end = w * static_cast<std::int64_t>(windows);
  std::uint64_t units = 0;
  std::int64_t delivered = 0;
  while (now < end) {
    if (!saturate) {
      const std::uint64_t pick = g.between(0, 9);
      const std::uint64_t uw = static_cast<std::uint64_t>(w);
      if (pick < 3) {
      } else if (pick < 6) {
        now += static_cast<std::int64_t>(g.between(0, uw / sc.limit * sc.max_request));
      } else if (pick < 9) {
        now += static_cast<std::int64_t>(g.between(0, uw / 4));
      } else {
        now += static_cast<std::int64_t>(g.between(0, uw * 2));
      }
    }
    const std::uint64_t n = g.between(1, sc.max_request);
    for (;;) {
      const decision d = pol(n, ns(now));
      if (d.admitted()) break;
      REQUIRE_FALSE(d.never());
      now += d.retry_after().count();
      if (!saturate && g.chance(20)) now += static_cast<std::int64_t>(g.between(0, 1000000));
    }
    if (now >= end) break;
    ++r.sent;
    units += n;
    std::int64_t arrival = now + static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(sc.jitter)));
    if (arrival < delivered) arrival = delivered;  // in-order delivery
    delivered = arrival;
    if (!srv->accept(arrival, n)) ++r.rejected;
  }
  if (admitted_units) *admitted_units = units;
  return r;
}

void run_scenario(const scenario& sc) {
  const int trials = 24;
  std::printf("\nCompliance, %s: L = %llu per %lld s, requests of 1..%llu units, delivery jitter %lld ms\n",
              sc.name, static_cast<unsigned long long>(sc.limit),
              static_cast<long long>(sc.window.count() / 1000000000), static_cast<unsigned long long>(sc.max_request),
              static_cast<long long>(sc.jitter / 1000000));
  std::printf("| policy | saturated share of L per W |");
  for (int s = 0; s < server_count; ++s) std::printf(" %s |", server_names[s]);
  std::printf("\n|---|---|");
  for (int s = 0; s < server_count; ++s) std::printf("---|");
  std::printf("\n");
  for (int p = 0; p < policy_count; ++p) {
    // Share under saturation, over 60 windows.
    std::uint64_t units = 0;
    run_trial(p, 1, sc, tgtest::seed_for(7), true, 60, &units);
    const double share = static_cast<double>(units) / (60.0 * static_cast<double>(sc.limit));
    cell_result totals[server_count];
    for (int s = 0; s < server_count; ++s) {
      for (int t = 0; t < trials; ++t) {
        const std::uint64_t seed =
            tgtest::seed_for(1000003ULL * static_cast<std::uint64_t>(p * 10 + s) + static_cast<std::uint64_t>(t));
        const cell_result r = run_trial(p, s, sc, seed, t % 3 == 0, 30, nullptr);
        totals[s].sent += r.sent;
        totals[s].rejected += r.rejected;
      }
    }
    std::printf("| %s | %.3f |", policy_names[p], share);
    for (int s = 0; s < server_count; ++s) {
      if (totals[s].rejected == 0)
        std::printf(" safe |");
      else
        std::printf(" no: %llu of %llu rejected |", static_cast<unsigned long long>(totals[s].rejected),
                    static_cast<unsigned long long>(totals[s].sent));
    }
    std::printf("\n");
    std::fflush(stdout);
    for (int s = 0; s < server_count; ++s) {
      INFO(sc.name << ": " << policy_names[p] << " vs " << server_names[s] << ": " << totals[s].rejected << " of "
                   << totals[s].sent << " rejected, " << tgtest::seed_note());
      CHECK(totals[s].sent > 0);
      CHECK((totals[s].rejected == 0) == sc.expected_safe[p][s]);
    }
  }
}

}  // namespace

TEST_CASE("compliance table: request limits", "[compliance]") {
  // L = 10 per 5 s, as in the HAProxy measurement the design records.
  const scenario sc{"request limit",
                    10,
                    seconds(5),
                    1,
                    0,
                    {
                        // fixed, log, counter, bucket, GCRA-1
                        {false, false, false, true, false},  // bucket, burst L
                        {true, true, false, true, false},  // strict window at L
                        {true, true, false, true, true},  // smooth at L (burst m)
                        {true, true, true, true, true},  // smooth with margin (L - m per W, burst m)
                        {true, true, true, true, true},  // spaced with margin (one request at a time)
                    }};
  run_scenario(sc);
}

TEST_CASE("compliance table: request limits, 2 ms delivery jitter", "[compliance]") {
  const scenario sc{"request limit",
                    10,
                    seconds(5),
                    1,
                    2000000,
                    {
                        // fixed, log, counter, bucket, GCRA-1
                        {false, false, false, false, false},  // bucket, burst L
                        {true, true, false, true, false},  // strict window at L
                        {true, false, false, true, false},  // smooth at L (burst m)
                        {true, true, true, true, true},  // smooth with margin (L - m per W, burst m)
                        {true, true, true, true, true},  // spaced with margin (one request at a time)
                    }};
  run_scenario(sc);
}

TEST_CASE("compliance table: token limits", "[compliance]") {
  const scenario sc{"token limit",
                    20000,
                    seconds(60),
                    2000,
                    0,
                    {
                        // fixed, log, counter, bucket, GCRA-1
                        {false, false, false, true, false},  // bucket, burst L
                        {true, true, false, true, false},  // strict window at L
                        {false, false, false, true, false},  // smooth at L (burst m)
                        {true, true, true, true, false},  // smooth with margin (L - m per W, burst m)
                        {true, true, true, true, true},  // spaced with margin (one request at a time)
                    }};
  run_scenario(sc);
}

TEST_CASE("compliance table: token limits, 2 ms delivery jitter", "[compliance]") {
  const scenario sc{"token limit",
                    20000,
                    seconds(60),
                    2000,
                    2000000,
                    {
                        // fixed, log, counter, bucket, GCRA-1
                        {false, false, false, false, false},  // bucket, burst L
                        {true, true, false, true, false},  // strict window at L
                        {false, false, false, true, false},  // smooth at L (burst m)
                        {true, true, true, true, false},  // smooth with margin (L - m per W, burst m)
                        {true, true, true, true, false},  // spaced with margin (one request at a time)
                    }};
  run_scenario(sc);
}
