// The seam between the account's decisions and its state: random schedules
// through the in-process account and through a second state backend (plain
// integers in a byte buffer, under a mutex: account_backend.hpp) that shares
// only the pure decisions and the meaning of the state. Every admission's
// decision, wait, reason, refusal set, tokens and money must be identical,
// and so must what each dimension has left after every step.
#include "catch_compat.hpp"
#include "account_backend.hpp"
#include "account_support.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

using namespace tollgate;
using tgtest::plain_account;

namespace {

using tgtest::ms;
using tgtest::sec;

account_config random_config(tgtest::rng& g) {
  account_config c;
  const server_model strict[] = {server_model::fixed_window, server_model::sliding_log, server_model::token_bucket};
  c.model = strict[g.between(0, 2)];
  if (g.chance(70)) c.concurrency = limit(g.between(1, 4));
  if (g.chance(85)) c.rpm = limit(g.between(1, 40));
  if (g.chance(85)) c.tpm = limit(g.between(50, 1000));
  if (g.chance(60)) c.tpd = limit(g.between(200, 1023));
  const std::int64_t windows[] = {100 * ms, 1000 * ms, 60000 * ms};
  c.request_window = nanoseconds(windows[g.between(0, 2)]);
  c.token_window = nanoseconds(windows[g.between(0, 2)]);
  c.refund_unused_tokens = g.chance(50);
  if (g.chance(50)) c.budget = usd::from_nanos(static_cast<std::int64_t>(g.between(1, 100)) * 1000000);
  const std::int64_t answers[] = {0, 500 * ms, 60000 * ms, 86400000 * ms};
  c.max_pause = nanoseconds(answers[g.between(0, 3)]);
  c.lease_timeout = nanoseconds(0);
  c.per_thread_credit = g.chance(50);  // limits below 1,024 grant no credit either way
  return c;
}

request random_request(tgtest::rng& g) {
  request r;
  r.model = g.chance(90) ? tgtest::k26() : nullptr;
  r.prompt_tokens = g.between(0, 200);
  if (g.chance(90)) r.max_tokens = g.between(0, 200);
  return r;
}

error_info random_answer(tgtest::rng& g, std::optional<nanoseconds>& header) {
  const error_kind kinds[] = {error_kind::rpm,        error_kind::tpm,        error_kind::tpd,  error_kind::concurrency,
                              error_kind::rate_limit, error_kind::overloaded, error_kind::quota, error_kind::auth};
  error_info e;
  e.kind = kinds[g.chance(90) ? g.between(0, 5) : g.between(6, 7)];  // a quota stop now and then
  e.status = e.kind == error_kind::auth ? 401 : 429;
  auto hint = [&]() -> std::optional<nanoseconds> {
    switch (g.between(0, 3)) {
      case 0: return std::nullopt;
      case 1: return nanoseconds(static_cast<std::int64_t>(g.between(0, 5000)) * ms);
      case 2: return nanoseconds(-static_cast<std::int64_t>(g.between(1, 1000)));
      default: return std::chrono::hours(24 * 400);  // longer than any max_pause
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
         "/" + std::to_string(c.token_window.count()) + " max_pause " + std::to_string(c.max_pause.count());
}

}  // namespace

TEST_CASE("account and a plain-integer backend decide alike on random schedules", "[account][backend]") {
  const std::uint64_t seed = tgtest::seed_for(15017);
  tgtest::rng g(seed);
  INFO(tgtest::seed_note() << " stream seed " << seed);
  std::uint64_t admitted = 0, refused = 0, waits = 0, answers = 0;
  for (int trial = 0; trial < 120; ++trial) {
    const account_config c = random_config(g);
    REQUIRE(plain_account::covers(c));
    INFO("trial " << trial << ": " << describe(c));
    const nanoseconds origin(static_cast<std::int64_t>(g.between(0, 1000000000)));
    account<manual_clock> a(c, origin);
    plain_account b(c, origin);
    std::vector<std::pair<lease<manual_clock>, std::uint64_t>> held;
    nanoseconds now = origin;
    for (int step = 0; step < 400; ++step) {
      INFO("step " << step << " at " << now.count());
      if (g.chance(3)) now += nanoseconds(static_cast<std::int64_t>(g.between(0, 2 * 3600)) * sec);  // past windows and pauses
      else now += nanoseconds(static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(c.request_window.count() / 8))));
      const std::uint64_t op = g.between(0, 99);
      if (op < 60) {
        const request r = random_request(g);
        auto x = a.try_admit(r, now);
        auto y = b.try_admit(r, now);
        REQUIRE(x.decision.what() == y.d.what());
        REQUIRE(x.decision.why() == y.d.why());
        REQUIRE(x.decision.retry_after() == y.d.retry_after());
        REQUIRE(x.refused.bits == y.refused.bits);
        REQUIRE(x.tokens == y.tokens);
        REQUIRE(x.worst_case == y.worst_case);
        REQUIRE(static_cast<bool>(x.lease) == (y.lease != 0));
        if (x) {
          ++admitted;
          held.emplace_back(std::move(x.lease), y.lease);
        } else {
          ++refused;
          if (x.decision.later() && x.decision.retry_after() > nanoseconds(0)) ++waits;
        }
      } else if (op < 90) {
        if (held.empty()) continue;
        const std::size_t i = static_cast<std::size_t>(g.between(0, held.size() - 1));
        auto& h = held[i];
        const std::uint64_t kind = g.between(0, 9);
        if (kind < 6) {
          const std::uint64_t reserved = h.first.reserved_tokens();
          usage u{g.between(0, reserved + 50), g.between(0, reserved / 2 + 20), 0, 0, 0};
          (void)h.first.settle(u, now);
          b.settle(h.second, u, now);
        } else if (kind < 8) {
          h.first.settle_rejected(now);
          b.settle_rejected(h.second);
        } else {
          h.first = lease<manual_clock>();  // dropped: the slot comes back, the reservations stay
          b.drop(h.second);
        }
        held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
      } else if (op < 94) {
        std::optional<nanoseconds> header;
        const error_info e = random_answer(g, header);
        a.on_response(e, header, now);
        b.on_response(e, header, now);
        ++answers;
      } else if (op < 97) {
        a.resume();
        b.resume();
      } else {
        a.clear_pause();
        b.clear_pause();
      }
      // What each dimension has left, after every step.
      const auto v = a.remaining(now);
      REQUIRE(a.in_flight() == b.in_flight());
      if (c.rpm.is_finite()) REQUIRE(*v.requests == b.available(0, now));
      if (c.tpm.is_finite()) REQUIRE(*v.tokens_minute == b.available(1, now));
      if (c.tpd.is_finite()) REQUIRE(*v.tokens_day == b.available(2, now));
      if (c.budget) REQUIRE(a.budget_remaining()->nanos() == std::max<std::int64_t>(0, c.budget->nanos() - b.committed()));
    }
  }
  // The schedules reach every kind of outcome (else the comparison is weak).
  CHECK(admitted > 1500);
  CHECK(refused > 4000);
  CHECK(waits > 1000);
  CHECK(answers > 600);
}
