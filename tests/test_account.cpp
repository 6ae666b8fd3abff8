#include "catch_compat.hpp"
#include "server_models.hpp"
#include "account_support.hpp"
#include "credit_oracle.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <mutex>
#include <queue>
#include <thread>
#include <tuple>
#include <vector>

using namespace tollgate;
using namespace std::chrono;
using tgtest::ns;

namespace {
using paced_account = account<manual_clock>;
constexpr ns t0{0};
using tgtest::k26;
using tgtest::req;
account_config small(server_model m = server_model::sliding_log) {
  account_config c;
  c.concurrency = limit(2);
  c.rpm = limit(3);
  c.tpm = limit(10000);
  c.tpd = limit(50000);
  c.model = m;
  c.max_request_tokens = 4000;
  return c;
}
}  // namespace

TEST_CASE("account: admits in every dimension or in none", "[account]") {
  paced_account a(small(), t0);
  auto x = a.try_admit(req(1000, 1000), t0);
  REQUIRE(x);
  CHECK(x.tokens == 2000);
  auto y = a.try_admit(req(1000, 1000), t0);
  REQUIRE(y);
  CHECK(a.in_flight() == 2);
  // Concurrency is full: refused, and nothing else was taken.
  auto z = a.try_admit(req(1000, 1000), t0);
  CHECK_FALSE(z);
  CHECK(z.refused.has(dimension::concurrency));
  CHECK_FALSE(z.refused.has(dimension::rpm));
  CHECK(z.decision.why() == reason::busy);
  x.lease.settle(usage{1000, 0, 500, 0, 0}, seconds(1));
  CHECK(a.in_flight() == 1);
  // The third request fits concurrency and RPM (3 per minute, strict).
  auto w = a.try_admit(req(1000, 1000), seconds(1));
  REQUIRE(w);
  // Now RPM and concurrency both refuse: both are named; the wait is RPM's.
  auto v = a.try_admit(req(100, 100), seconds(2));
  CHECK_FALSE(v);
  CHECK(v.refused.has(dimension::concurrency));
  CHECK(v.refused.has(dimension::rpm));
  CHECK(v.decision.later());
  CHECK(v.decision.retry_after() > seconds(50));
  const account_stats s = a.stats();
  CHECK(s.admitted == 3);
  CHECK(s.refused == 2);
}

TEST_CASE("account: refusals that can never succeed", "[account]") {
  account_config c = small();
  c.budget = usd::from_units(1);
  paced_account a(c, t0);
  const auto big = a.try_admit(req(9000, 2000), t0);  // 11,000 tokens > TPM 10,000
  CHECK(big.decision.never());
  CHECK(big.refused.has(dimension::tpm));
  request huge = req(300000, 1000);  // beyond kimi-k2.6's 262,144-token context
  const auto ctx = a.try_admit(huge, t0);
  CHECK(ctx.decision.never());
  CHECK(ctx.refused.has(dimension::context));
  account_config tiny = small();
  tiny.budget = usd::from_nanos(1000);  // a thousandth of a cent
  paced_account b(tiny, t0);
  const auto poor = b.try_admit(req(1000, 1000), t0);
  CHECK(poor.decision.never());
  CHECK(poor.refused.has(dimension::budget));
  request unbounded;
  unbounded.prompt_tokens = 10;  // no model, no max_tokens: no bound on the output
  CHECK(a.try_admit(unbounded, t0).refused.has(dimension::request_size));
  // Margin policies refuse requests above max_request_tokens.
  paced_account m(small(server_model::unknown), t0);
  const auto over = m.try_admit(req(3000, 2000), t0);
  CHECK(over.decision.never());
  CHECK(over.refused.has(dimension::request_size));
  // No max_tokens: kimi-k2.6's default cap of 32,768 is reserved.
  account_config wide = small();
  wide.tpm = limit(100000);
  wide.tpd = limit(1000000);
  paced_account d(wide, t0);
  request no_cap = req(1000, 0);
  no_cap.max_tokens.reset();
  const auto dc = d.try_admit(no_cap, t0);
  REQUIRE(dc);
  CHECK(dc.tokens == 1000 + 32768);
}

TEST_CASE("account: a budget in yuan, priced from the model's CNY list", "[account][money]") {
  cny_account_config c;
  c.concurrency = limit(2);
  c.rpm = limit(3);
  c.tpm = limit(10000);
  c.tpd = limit(50000);
  c.model = server_model::sliding_log;
  c.budget = cny::from_nanos(120000000);  // 0.12 yuan
  account<manual_clock, cny_tag> a(c, t0);
  // kimi-k2.6 in yuan per token: 6,500 input, 1,100 cached input, 27,000 output (nano-units).
  auto x = a.try_admit(req(1000, 4000), t0);
  REQUIRE(x);
  CHECK(x.worst_case == cny::from_nanos(1000 * 6500 + 4000 * 27000));
  CHECK(*a.budget_remaining() == cny::from_nanos(120000000) - x.worst_case);
  const basic_settle_result<cny_tag> r = x.lease.settle(usage{1000, 200, 500, 0, 0}, seconds(1));
  CHECK(r.cost == cny::from_nanos(800 * 6500 + 200 * 1100 + 500 * 27000));
  CHECK(r.overspend_nanos == 0);
  CHECK(*a.budget_remaining() == cny::from_nanos(120000000) - r.cost);
  CHECK(a.stats().spent_nanos == r.cost.nanos());
  CHECK(*a.remaining(seconds(1)).budget == *a.budget_remaining());
  // Another worst case no longer fits what is left: a wait, not `never`.
  const auto y = a.try_admit(req(1000, 4000), seconds(2));
  CHECK_FALSE(y);
  CHECK(y.refused.has(dimension::budget));
  CHECK_FALSE(y.decision.never());
  // A worst case above the whole budget never fits.
  const auto z = a.try_admit(req(1000, 5000), seconds(2));
  CHECK(z.decision.never());
  CHECK(z.refused.has(dimension::budget));
  // A model without a yuan price list cannot be budgeted in yuan.
  const model_info* usd_only = nullptr;
  for (const model_info& m : kimi_models)
    if (m.usd_prices.input && m.usd_prices.output && !m.cny_prices.input && m.context_window) usd_only = &m;
  REQUIRE(usd_only != nullptr);
  request ru = req(10, 10);
  ru.model = usd_only;
  const auto u = a.try_admit(ru, seconds(2));
  CHECK(u.decision.never());
  CHECK(u.refused.has(dimension::budget));

  // The spend survives a restart; a dollar account refuses a yuan snapshot.
  const std::string snap = a.snapshot(seconds(3), seconds(1000));
  account<manual_clock, cny_tag> b(c, t0);
  REQUIRE(b.restore(snap, seconds(3), seconds(1000)) == account<manual_clock, cny_tag>::restore_errc::ok);
  CHECK(*b.budget_remaining() == *a.budget_remaining());
  account_config d;
  d.concurrency = c.concurrency;
  d.rpm = c.rpm;
  d.tpm = c.tpm;
  d.tpd = c.tpd;
  d.model = c.model;
  d.budget = usd::from_nanos(120000000);  // the same number of nano-units, in dollars
  paced_account e(d, t0);
  CHECK(e.restore(snap, seconds(3), seconds(1000)) == paced_account::restore_errc::other_configuration);
}

TEST_CASE("account: time waited, per dimension", "[account]") {
  account_config c;
  c.rpm = limit(1);
  c.model = server_model::sliding_log;
  paced_account a(c, t0);
  dimension_set s;
  s.add(dimension::rpm);
  s.add(dimension::tpm);
  a.record_wait(s, seconds(5));
  a.record_wait(s, seconds(-5));  // nothing: a clock that went backwards adds no time
  auto st = a.stats();
  CHECK(st.waited_ns_by[1] == ns(seconds(5)).count());  // rpm
  CHECK(st.waited_ns_by[2] == ns(seconds(5)).count());  // tpm
  CHECK(st.waited_ns_by[0] == 0);
  CHECK(st.waited_ns_by[3] == 0);

  // The waiting room reports the head's waits: from the refusal to the next try.
  const ns clock_was = manual_clock::now();
  manual_clock::set(t0);
  REQUIRE(a.try_admit(req(10, 10), t0));
  waiting_room<manual_clock> room(a);
  const std::uint64_t refused_before = a.stats().refused;
  bool admitted = false;
  std::thread w([&] { admitted = static_cast<bool>(room.admit(req(10, 10), ns(hours(1)))); });
  // Once the head has been refused at t0, move the clock to when the window
  // (15 slots of 4 s, the oldest counted in full) has room again: 64 s.
  for (int spin = 0; a.stats().refused == refused_before && spin < 100000000; ++spin) std::this_thread::yield();
  REQUIRE(a.stats().refused > refused_before);
  manual_clock::set(seconds(64));
  room.notify();
  w.join();
  CHECK(admitted);
  st = a.stats();
  CHECK(st.waited_ns_by[1] == ns(seconds(5) + seconds(64)).count());
  CHECK(st.waited_ns_by[0] == 0);  // concurrency is not enforced here
  CHECK(room.waited() == seconds(64));
  manual_clock::set(clock_was);
}

TEST_CASE("account: policies per server model", "[account]") {
  paced_account strict(small(server_model::fixed_window), t0);
  CHECK(std::string(strict.policy(dimension::rpm)) == "strict window");
  paced_account unknown(small(server_model::unknown), t0);
  CHECK(std::string(unknown.policy(dimension::rpm)) == "spaced with margin");
  CHECK(std::string(unknown.policy(dimension::tpd)) == "strict window (24 h)");
  // Unknown: 2 requests per minute evenly (3 - 1 of margin), one at a time.
  CHECK(unknown.try_admit(req(100, 100), t0));
  const auto second = unknown.try_admit(req(100, 100), t0);
  CHECK(second.refused.has(dimension::rpm));
  CHECK_FALSE(second.refused.has(dimension::tpd));  // the daily limit is a strict window: no spacing
  CHECK(second.decision.retry_after() == seconds(30) + milliseconds(2));  // 2 of margin, 2 ms apart
  account_config bad = small(server_model::unknown);
  bad.max_request_tokens = 10000;  // not below TPM: no room for a margin
  CHECK_THROWS_AS(paced_account(bad, t0), config_error);
  account_config cal = small();
  cal.calendar_day = true;
  cal.utc_offset = hours(8);
  paced_account c(cal, t0);
  CHECK(std::string(c.policy(dimension::tpd)) == "calendar day");
}

TEST_CASE("account: settling — refunds, debt, 429s, failures, dropped leases", "[account]") {
  account_config c = small();
  c.budget = usd::from_units(10);
  c.refund_unused_tokens = true;
  {
    paced_account a(c, t0);
    auto x = a.try_admit(req(1000, 4000), t0);
    REQUIRE(x);
    CHECK(*a.budget_remaining() == usd::from_units(10) - x.worst_case);
    const settle_result r = x.lease.settle(usage{1000, 200, 500, 0, 0}, seconds(1));
    CHECK(r.refunded_tokens == 3500);
    CHECK(r.cost == usd::from_nanos(800 * 950 + 200 * 160 + 500 * 4000));
    CHECK(*a.budget_remaining() == usd::from_units(10) - r.cost);
    // The refund made room: 8,000 more tokens fit this minute (1,500 + 8,000 <= 10,000).
    CHECK(a.try_admit(req(4000, 4000), seconds(1)));
  }
  {
    c.refund_unused_tokens = false;  // Kimi: the server already counted max_tokens
    paced_account a(c, t0);
    auto x = a.try_admit(req(1000, 4000), t0);
    REQUIRE(x);
    CHECK(x.lease.settle(usage{1000, 0, 100, 0, 0}, seconds(1)).refunded_tokens == 0);
    // Usage above the reservation becomes debt.
    auto y = a.try_admit(req(1000, 1000), seconds(2));
    REQUIRE(y);
    const settle_result r = y.lease.settle(usage{1000, 0, 4000, 0, 0}, seconds(3));
    CHECK(r.debt_tokens == 3000);
    CHECK(a.stats().debt_tokens == 3000);
    // 5,000 + 5,000 in the window now: full.
    CHECK(a.try_admit(req(10, 10), seconds(4)).refused.has(dimension::tpm));
    // A 429 frees the money and keeps the tokens; a failure the same.
    auto z = a.try_admit(req(10, 10), seconds(70));
    REQUIRE(z);
    const usd before = *a.budget_remaining();
    z.lease.settle_rejected(seconds(70));
    CHECK(*a.budget_remaining() > before);
    CHECK(a.in_flight() == 0);
    // A dropped lease frees its slot but keeps its money reserved.
    const usd held = *a.budget_remaining();
    {
      auto d = a.try_admit(req(10, 10), seconds(71));
      REQUIRE(d);
      CHECK(a.in_flight() == 1);
    }
    CHECK(a.in_flight() == 0);
    CHECK(*a.budget_remaining() < held);
  }
}

TEST_CASE("account: server feedback pauses, stops and resumes", "[account]") {
  paced_account a(small(server_model::unknown), t0);
  // Kimi says "try again after 1 seconds"; RPM 3 with a margin means 30 s (and 2 ms).
  const error_info e = classify(429, "{\"error\":{\"message\":\"request reached organization max RPM: 3, please try again after 1 seconds\",\"type\":\"rate_limit_reached_error\"}}");
  a.on_response(e, std::nullopt, seconds(10));
  CHECK(a.paused_until() == seconds(40) + milliseconds(2));
  const auto p = a.try_admit(req(10, 10), seconds(20));
  CHECK(p.refused.has(dimension::paused));
  CHECK(p.decision.retry_after() == seconds(20) + milliseconds(2));
  // A longer server hint wins.
  a.on_response(e, seconds(100), seconds(10));
  CHECK(a.paused_until() == seconds(110));
  // Overload backs off without counting as a limit.
  paced_account b(small(), t0);
  b.on_response(classify(429, "{\"error\":{\"type\":\"engine_overloaded_error\",\"message\":\"The engine is currently overloaded\"}}"),
                std::nullopt, seconds(5));
  CHECK(b.paused_until() == seconds(6));
  // TPD: until the later of the hint and the local reset.
  paced_account d(small(), t0);
  REQUIRE(d.try_admit(req(1000, 1000), t0));
  d.on_response(classify(429, "{\"error\":{\"type\":\"rate_limit_reached_error\",\"message\":\"organization TPD rate limit, current: 9, limit: 5\"}}"),
                seconds(1152), seconds(10));
  CHECK(d.paused_until() >= hours(24));
  // Quota: stopped until resume(), a clear never.
  paced_account q(small(), t0);
  q.on_response(classify(429, "{\"error\":{\"type\":\"exceeded_current_quota_error\",\"message\":\"insufficient balance\"}}"),
                std::nullopt, t0);
  CHECK(q.stopped());
  const auto s = q.try_admit(req(10, 10), t0);
  CHECK(s.decision.never());
  CHECK(s.refused.has(dimension::stopped));
  q.resume();
  CHECK(q.try_admit(req(10, 10), t0));
  // Straight from the response: status, headers read one by one, body.
  paced_account h(small(server_model::unknown), t0);
  rate_limit_headers hdr;
  CHECK(hdr.read("Retry-After", "45", t0));
  h.on_response(429, hdr, "{\"error\":{\"message\":\"request reached organization max RPM: 3, please try again after 1 seconds\",\"type\":\"rate_limit_reached_error\"}}", seconds(10));
  CHECK(h.paused_until() == seconds(55));  // the header's 45 s beats the account's own 30 s
  paced_account ok(small(), t0);
  ok.on_response(200, rate_limit_headers{}, "{\"choices\":[]}", seconds(10));
  CHECK(ok.paused_until() < seconds(10));
  CHECK_FALSE(ok.stopped());
}

TEST_CASE("account: a cancelled stream settles what is known, else the worst case", "[account]") {
  account_config c = small();
  c.budget = usd::from_units(1);
  c.refund_unused_tokens = true;
  paced_account a(c, t0);
  // Usage known up to the cancel: exactly as settle (here with a refund).
  auto x = a.try_admit(req(1000, 4000), t0);
  REQUIRE(x);
  const settle_result r = x.lease.settle_cancelled(usage{1000, 0, 300, 0, 0}, seconds(1));
  CHECK(r.cost == usd::from_nanos(1000 * 950 + 300 * 4000));
  CHECK(r.refunded_tokens == 3700);
  CHECK(*a.budget_remaining() == usd::from_units(1) - r.cost);
  // Nothing known: the worst case is billed and every token stays counted.
  auto y = a.try_admit(req(1000, 4000), seconds(2));
  REQUIRE(y);
  const usd worst = y.worst_case;
  const settle_result w = y.lease.settle_cancelled(std::nullopt, seconds(3));
  CHECK(w.cost == worst);
  CHECK(w.refunded_tokens == 0);
  CHECK(*a.budget_remaining() == usd::from_units(1) - r.cost - worst);
  CHECK(a.stats().spent_nanos == (r.cost + worst).nanos());
  CHECK(a.stats().tokens_used == 1300 + 5000);
  CHECK(a.in_flight() == 0);
  // 1,300 + 5,000 of 10,000 tokens this minute: 4,000 more do not fit.
  CHECK(a.try_admit(req(2000, 2000), seconds(4)).refused.has(dimension::tpm));
  // Settling twice does nothing more.
  CHECK(y.lease.settle_cancelled(std::nullopt, seconds(5)).cost == usd());
}

TEST_CASE("account: introspection and a live upgrade keep the counts", "[account]") {
  account_config c = account_config::from_tier(*kimi_tiers_2026_09.tier(1), server_model::sliding_log);
  c.budget = usd::from_units(5);
  paced_account a(c, t0);
  auto x = a.try_admit(req(1000, 1000), t0);
  REQUIRE(x);
  auto v = a.remaining(t0);
  CHECK(*v.concurrency == 14);
  CHECK(*v.requests == 99);
  CHECK(*v.tokens_minute == 2000000 - 2000);
  CHECK_FALSE(v.tokens_day);  // unlimited: not enforced
  CHECK(*v.budget == usd::from_units(5) - x.worst_case);
  CHECK(v.requests_reset_in == seconds(64));  // 16 sub-windows of 4 s
  CHECK(v.tokens_minute_reset_in == seconds(64));
  for (int i = 0; i < 99; ++i) REQUIRE(a.try_admit(req(10, 10), t0).lease.reserved_tokens() == 20);
  CHECK(a.try_admit(req(10, 10), t0).refused.has(dimension::rpm));
  // Upgrade to Tier3 (RPM 200): the 100 already counted stay counted.
  REQUIRE(a.set_limits(*kimi_tiers_2026_09.tier(3), seconds(1)) == errc::ok);
  CHECK(*a.remaining(seconds(1)).requests == 100);
  CHECK(*a.remaining(seconds(1)).concurrency == 49);
  CHECK(a.try_admit(req(10, 10), seconds(1)));
  // A dimension cannot appear live (Tier0 has a finite TPD).
  CHECK(a.set_limits(*kimi_tiers_2026_09.tier(0), seconds(1)) != errc::ok);
}

TEST_CASE("account: snapshot and restore carry the counts across a restart", "[account]") {
  auto make_cfg = [](server_model m) {
    account_config c = small(m);
    c.budget = usd::from_units(3);
    c.rpm = limit(10);
    return c;
  };
  for (server_model m : {server_model::sliding_log, server_model::unknown}) {
    INFO(to_string(m));
    paced_account a(make_cfg(m), t0);
    for (int i = 0; i < 3; ++i) {
      auto x = a.try_admit(req(1000, 1000), seconds(i * 30));
      REQUIRE(x);
      x.lease.settle(usage{1000, 0, 900, 0, 0}, seconds(i * 30 + 1));
    }
    a.on_response(classify(429, ""), seconds(30), seconds(70));  // paused until 100 s
    const ns wall = hours(24) * 20780;
    const std::string bytes = a.snapshot(seconds(75), wall);
    // A new process: its clock starts elsewhere; 8 s of wall time passed
    // (two of the RPM window's 4 s sub-windows).
    paced_account b(make_cfg(m), seconds(1000));
    REQUIRE(b.restore(bytes, seconds(1000), wall + seconds(8)) == paced_account::restore_errc::ok);
    const auto ra = a.remaining(seconds(83)), rb = b.remaining(seconds(1000));
    CHECK(ra.budget == rb.budget);
    CHECK(*rb.budget < usd::from_units(3));
    CHECK(rb.paused_for == seconds(17));  // 25 s were left, 8 s passed
    CHECK(*rb.tokens_day == *ra.tokens_day);
    CHECK(*rb.tokens_day < 50000);
    CHECK(*rb.requests == *ra.requests);
    // The restored account refuses what the original would have.
    CHECK(a.try_admit(req(4000, 4000), seconds(101)).decision == b.try_admit(req(4000, 4000), seconds(1018)).decision);
    // Corrupted, truncated, foreign or empty snapshots change nothing.
    paced_account c(make_cfg(m), t0);
    std::string bad = bytes;
    bad[bad.size() / 2] = static_cast<char>(bad[bad.size() / 2] ^ 1);
    CHECK(c.restore(bad, t0, wall) == paced_account::restore_errc::corrupted);
    CHECK(c.restore(bytes.substr(0, bytes.size() - 9), t0, wall) != paced_account::restore_errc::ok);
    CHECK(c.restore("", t0, wall) == paced_account::restore_errc::bad_format);
    CHECK(c.restore("garbage that is long enough to look like something", t0, wall) == paced_account::restore_errc::bad_format);
    account_config other = make_cfg(m);
    other.rpm = limit(11);
    paced_account d(other, t0);
    CHECK(d.restore(bytes, t0, wall) == paced_account::restore_errc::other_configuration);
    CHECK(*c.remaining(t0).budget == usd::from_units(3));  // untouched
  }
}

TEST_CASE("account: slots held past lease_timeout are reclaimed, and returned once", "[account]") {
  account_config c;
  c.concurrency = limit(2);
  c.lease_timeout = seconds(10);
  paced_account a(c, t0);
  auto hung1 = a.try_admit(req(10, 10), t0);
  auto hung2 = a.try_admit(req(10, 10), seconds(1));
  REQUIRE(hung1);
  REQUIRE(hung2);
  CHECK(a.try_admit(req(10, 10), seconds(5)).refused.has(dimension::concurrency));
  // At 10.5 s the first has been held for 10.5 s: reclaimed; the second not yet.
  auto fresh = a.try_admit(req(10, 10), seconds(10) + milliseconds(500));
  REQUIRE(fresh);
  CHECK(a.stats().reclaimed == 1);
  CHECK(a.in_flight() == 2);
  // The hung lease finally settles: its slot was already returned, not twice.
  hung1.lease.settle(usage{10, 0, 10, 0, 0}, seconds(20));
  CHECK(a.in_flight() == 2);
  hung2.lease.settle_failed(seconds(20));  // reclaimable by now, but released by its holder first
  CHECK(a.in_flight() == 1);
  fresh.lease.settle(usage{10, 0, 10, 0, 0}, seconds(20));
  CHECK(a.in_flight() == 0);
  CHECK(a.stats().reclaimed == 1);
  // A word freed by the reaper and claimed again by a lease with the same
  // admission time (a stale supplied `now`) is not the late holder's any more.
  {
    account_config one = c;
    one.concurrency = limit(1);
    paced_account d(one, t0);
    auto late = d.try_admit(req(10, 10), t0);
    REQUIRE(late);
    auto b2 = d.try_admit(req(10, 10), seconds(11));  // reaps `late`
    REQUIRE(b2);
    b2.lease.settle_failed(seconds(11));
    auto again = d.try_admit(req(10, 10), t0);  // the same word, the same time
    REQUIRE(again);
    late.lease.settle_failed(seconds(12));  // must not free `again`'s slot
    CHECK(d.in_flight() == 1);
    // (`again` counts as admitted at 0 s: at 12 s it would be past its own
    // deadline and reclaimed, so ask at 5 s.)
    CHECK(d.try_admit(req(10, 10), seconds(5)).refused.has(dimension::concurrency));
    again.lease.settle_failed(seconds(12));
    CHECK(d.in_flight() == 0);
    CHECK(d.stats().reclaimed == 1);
  }
  // Zero disables reclaiming.
  account_config never = c;
  never.lease_timeout = ns(0);
  paced_account b(never, t0);
  auto x = b.try_admit(req(10, 10), t0);
  auto y = b.try_admit(req(10, 10), t0);
  CHECK(b.try_admit(req(10, 10), hours(100)).refused.has(dimension::concurrency));
  CHECK(b.stats().reclaimed == 0);
  // Without a slot table, leases still give their slots back.
  x.lease.settle_failed(hours(100));
  CHECK(b.in_flight() == 1);
  CHECK(b.try_admit(req(10, 10), hours(100)));  // its lease is dropped at once
  y.lease.settle(usage{10, 0, 10, 0, 0}, hours(100));
  CHECK(b.in_flight() == 0);
}

TEST_CASE("account: the slot table is scanned at most once per lease_timeout / 16", "[account]") {
  account_config c;
  c.concurrency = limit(1);
  c.lease_timeout = seconds(16);  // scans at least 1 s apart
  paced_account a(c, t0);
  auto hung = a.try_admit(req(10, 10), t0);
  REQUIRE(hung);
  CHECK_FALSE(a.try_admit(req(10, 10), milliseconds(15900)));  // scans: nothing has expired
  CHECK_FALSE(a.try_admit(req(10, 10), milliseconds(16500)));  // expired, but 0.6 s after the last scan
  CHECK(a.stats().reclaimed == 0);
  CHECK(a.try_admit(req(10, 10), milliseconds(16900)));  // 1 s after it: reclaimed
  CHECK(a.stats().reclaimed == 1);
  // Time going backwards scans again at once.
  auto again = a.try_admit(req(10, 10), milliseconds(16900));
  REQUIRE(again);
  CHECK_FALSE(a.try_admit(req(10, 10), milliseconds(16000)));
  CHECK(a.try_admit(req(10, 10), seconds(40)));  // `again` held 23 s: reclaimed
  CHECK(a.stats().reclaimed == 2);
}

TEST_CASE("account: a thread's own slot words and the shared ones are all reclaimable", "[account]") {
  // One thread holds 100 leases: the first 64 in its own words, the rest in
  // the shared table. All are reclaimed past the timeout, each exactly once,
  // and the late holders' settles return nothing.
  account_config c;
  c.concurrency = limit(100);
  c.lease_timeout = seconds(10);
  paced_account a(c, t0);
  std::vector<lease<manual_clock>> hung;
  for (int i = 0; i < 100; ++i) {
    auto x = a.try_admit(req(10, 10), t0);
    REQUIRE(x);
    hung.push_back(std::move(x.lease));
  }
  CHECK_FALSE(a.try_admit(req(10, 10), seconds(5)));
  auto fresh = a.try_admit(req(10, 10), seconds(11));
  REQUIRE(fresh);
  CHECK(a.stats().reclaimed == 100);
  CHECK(a.in_flight() == 1);
  for (auto& l : hung) l.settle_failed(seconds(12));
  CHECK(a.in_flight() == 1);
  // A lease taken on another thread (its own words) and settled here frees
  // its word for that thread's successors.
  lease<manual_clock> moved;
  std::thread([&] {
    auto x = a.try_admit(req(10, 10), seconds(12));
    REQUIRE(x);
    moved = std::move(x.lease);
  }).join();
  CHECK(a.in_flight() == 2);
  moved.settle_failed(seconds(12));
  fresh.lease.settle_failed(seconds(12));
  CHECK(a.in_flight() == 0);
  for (int round = 0; round < 3; ++round)
    std::thread([&] {
      auto x = a.try_admit(req(10, 10), seconds(13));
      CHECK(x);
    }).join();
  CHECK(a.in_flight() == 0);
  CHECK(a.stats().reclaimed == 100);
}

TEST_CASE("stress: reclaiming races releasing, and each unit comes back exactly once", "[account][stress]") {
  // Rounds of four threads on four slots. Each round starts with every slot
  // held by a lease admitted a round earlier, now past lease_timeout. Two
  // threads release theirs while asking for a new lease; the other two ask
  // while still holding theirs, and let go only once all four have a new one.
  // Four new leases need four slots, and only two can come from releases, so
  // every round reclaims at least two leases (all four when the reaper gets
  // there before the releasing threads do), racing the holders' releases.
  // After each round exactly the four new leases are in flight: a unit
  // returned twice, or lost, shows at once.
  account_config c;
  c.concurrency = limit(4);
  c.lease_timeout = milliseconds(10);
  paced_account a(c, t0);
  constexpr unsigned threads = 4;
  const std::uint64_t rounds = 200 * tgtest::stress_factor();
  const ns step = milliseconds(30);  // a round later, every old lease is past its deadline
  // A reusable spinning barrier (std::barrier is C++20).
  std::atomic<unsigned> arrived{0};
  std::atomic<std::uint64_t> generation{0};
  auto sync = [&] {
    const std::uint64_t g = generation.load();
    if (arrived.fetch_add(1) + 1 == threads) {
      arrived.store(0);
      generation.fetch_add(1);
    } else {
      while (generation.load() == g) std::this_thread::yield();
    }
  };
  std::atomic<bool> over{false}, stuck{false};
  std::atomic<std::uint64_t> wrong_count{0};
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      auto first = a.try_admit(req(10, 10), t0);
      if (!first) stuck.store(true);
      lease<manual_clock> old = std::move(first.lease);
      sync();
      for (std::uint64_t r = 1; r <= rounds && !stuck.load(); ++r) {
        const ns now = step * static_cast<std::int64_t>(r);
        const bool releaser = t < 2;
        if (releaser) {
          if (r % 2 == 0) old.settle(usage{10, 0, 10, 0, 0}, now);
          const lease<manual_clock> gone = std::move(old);  // (dropping releases too)
        }
        auto ad = a.try_admit(req(10, 10), now);
        for (std::uint64_t tries = 0; !ad && tries < 10000000; ++tries) {
          std::this_thread::yield();
          ad = a.try_admit(req(10, 10), now);
        }
        if (!ad) stuck.store(true);
        if (a.in_flight() > 4) over.store(true);
        sync();  // all four have a new lease
        old = std::move(ad.lease);  // the holders let go of theirs: the reaper took it, so nothing comes back
        sync();
        if (t == 0 && a.in_flight() != 4) wrong_count.fetch_add(1);
        sync();
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK_FALSE(stuck.load());
  CHECK_FALSE(over.load());
  CHECK(wrong_count.load() == 0);
  CHECK(a.in_flight() == 0);  // the last leases were dropped with their threads
  const std::uint64_t reclaimed = a.stats().reclaimed;
  INFO("reclaimed " << reclaimed << " in " << rounds << " rounds");
  CHECK(reclaimed >= 2 * rounds);
  CHECK(reclaimed <= 4 * rounds);
}

TEST_CASE("waiting room: served in arrival order, one woken at a time; deadlines and cancellation", "[account][stress]") {
  account_config c;
  c.concurrency = limit(1);
  paced_account a(c, t0);
  waiting_room<manual_clock> room(a);
  auto held = a.try_admit(req(10, 10), t0);
  REQUIRE(held);
  const ns forever(std::numeric_limits<std::int64_t>::max());
  std::mutex order_m;
  std::vector<int> order;
  std::vector<std::thread> pool;
  for (int i = 0; i < 6; ++i) {
    pool.emplace_back([&, i] {
      auto ad = room.admit(req(10, 10), forever);
      REQUIRE(ad);
      {
        std::lock_guard<std::mutex> lock(order_m);
        order.push_back(i);
      }
      ad.lease.settle(usage{10, 0, 10, 0, 0}, t0);  // releases, which wakes the next in line
    });
    // Start the next only once this one is in line, so arrival order is known.
    for (int spin = 0; room.waiting() < static_cast<std::size_t>(i + 1) && spin < 10000000; ++spin) std::this_thread::yield();
  }
  REQUIRE(room.waiting() == 6);
  held.lease.settle(usage{10, 0, 10, 0, 0}, t0);
  for (auto& th : pool) th.join();
  CHECK(order == std::vector<int>{0, 1, 2, 3, 4, 5});
  CHECK(room.served() == 6);
  CHECK(room.waiting() == 0);
  CHECK(a.in_flight() == 0);

  // A deadline already past: refused at once, without asking the account.
  auto blocker = a.try_admit(req(10, 10), t0);
  REQUIRE(blocker);
  const auto late = room.admit(req(10, 10), t0);
  CHECK_FALSE(late);
  CHECK(late.decision.why() == reason::busy);
  // Cancellation wakes and releases a waiter.
  std::atomic<bool> cancel{false};
  std::atomic<bool> returned{false};
  std::thread w([&] {
    const auto r = room.admit(req(10, 10), forever, &cancel);
    CHECK_FALSE(r);
    returned = true;
  });
  for (int spin = 0; room.waiting() < 1 && spin < 10000000; ++spin) std::this_thread::yield();
  cancel = true;
  room.notify();
  w.join();
  CHECK(returned.load());
  CHECK(room.waiting() == 0);
}

namespace {
// A simulated Kimi server: concurrency, RPM and TPM (prompt + max_tokens at
// admission) under one window model, TPD as a 24 h sliding log.
struct kimi_server {
  std::uint64_t conc_limit, in_flight = 0;
  std::unique_ptr<tgtest::servers::server> rpm, tpm;
  std::unique_ptr<tgtest::sliding_log> tpd;
  std::uint64_t rejected = 0;
  kimi_server(const tier_row& t, int model, tgtest::rng& g) : conc_limit(*t.concurrency.value()) {
    rpm = tgtest::servers::make_server(model, *t.rpm.value(), ns(minutes(1)).count(), g);
    tpm = tgtest::servers::make_server(model, *t.tpm.value(), ns(minutes(1)).count(), g);
    if (auto v = t.tpd.value()) tpd = std::make_unique<tgtest::sliding_log>(*v, ns(hours(24)).count());
  }
  bool accept(std::int64_t t, std::uint64_t tokens) {
    bool ok = in_flight < conc_limit;
    // Every dimension sees the request, as a real server's counters would.
    ok = rpm->accept(t, 1) && ok;
    ok = tpm->accept(t, tokens) && ok;
    if (tpd) ok = tpd->try_take(tokens, t) && ok;
    if (ok) ++in_flight; else ++rejected;
    return ok;
  }
};

struct swarm_result {
  std::uint64_t sent = 0, rejected = 0, finished = 0, never = 0;
  std::int64_t end = 0;
};

// `agents` agents each send `per_agent` requests; paced by an account (or,
// when `paced` is false, firing at once and retrying twice after 1 s as SDKs
// do). Virtual time; responses arrive after 2..6 s.
swarm_result run_swarm(const tier_row& tier, int server_kind, server_model assumed, bool paced, unsigned agents,
                       unsigned per_agent, std::uint64_t seed) {
  tgtest::rng g(seed);
  kimi_server srv(tier, server_kind, g);
  account_config cfg = account_config::from_tier(tier, assumed);
  cfg.max_request_tokens = 8000;
  paced_account a(cfg, t0);
  struct event {
    std::int64_t t;
    int kind;  // 0 = response, 1 = try
    unsigned agent;
    bool operator>(const event& o) const { return t != o.t ? t > o.t : kind > o.kind; }
  };
  std::priority_queue<event, std::vector<event>, std::greater<event>> q;
  std::vector<unsigned> left(agents, per_agent), tries(agents, 0);
  std::vector<lease<manual_clock>> held(agents);
  std::vector<std::uint64_t> tokens_of(agents, 0);
  for (unsigned i = 0; i < agents; ++i) q.push({static_cast<std::int64_t>(g.between(0, 1000000)), 1, i});
  swarm_result r;
  std::uint64_t guard = 0;
  while (!q.empty() && ++guard < 5000000) {
    const event e = q.top();
    q.pop();
    if (e.kind == 0) {  // a response arrives
      --srv.in_flight;
      if (paced) held[e.agent].settle(usage{tokens_of[e.agent] / 2, 0, tokens_of[e.agent] / 4, 0, 0}, ns(e.t));
      ++r.finished;
      r.end = e.t;
      if (--left[e.agent] > 0) q.push({e.t, 1, e.agent});
      continue;
    }
    const std::uint64_t prompt = g.between(500, 3000), cap = g.between(500, 4000);
    if (paced) {
      auto ad = a.try_admit(req(prompt, cap), ns(e.t));
      if (!ad) {
        if (ad.decision.never()) ++r.never;
        const std::int64_t w = ad.decision.retry_after().count();
        q.push({e.t + (w > 0 ? w : 50000000) + static_cast<std::int64_t>(g.between(0, 1000)), 1, e.agent});
        continue;
      }
      held[e.agent] = std::move(ad.lease);
    }
    tokens_of[e.agent] = prompt + cap;
    ++r.sent;
    if (srv.accept(e.t, prompt + cap)) {
      q.push({e.t + static_cast<std::int64_t>(g.between(2000, 6000)) * 1000000, 0, e.agent});
    } else if (paced) {
      held[e.agent].settle_rejected(ns(e.t));
      a.on_response(classify(429, ""), seconds(1), ns(e.t));
      q.push({e.t + 1000000000, 1, e.agent});
    } else if (++tries[e.agent] <= 2) {
      q.push({e.t + 1000000000, 1, e.agent});  // an SDK's retry after 1 s
    } else {
      tries[e.agent] = 0;  // gave up on this request
      if (--left[e.agent] > 0) q.push({e.t + 1000000000, 1, e.agent});
    }
  }
  r.rejected = srv.rejected;
  return r;
}
}  // namespace

TEST_CASE("swarm: 300 agents paced by the account get zero 429s at every tier, every server model", "[account][swarm]") {
  const tier_table<6>* tables[] = {&kimi_tiers_2026_05, &kimi_tiers_2026_09};
  const server_model matching[] = {server_model::fixed_window, server_model::sliding_log, server_model::window_counter,
                                   server_model::token_bucket, server_model::gcra};
  std::printf("\nSwarm of 300 agents x 1 request (prompt 500..3000, max_tokens 500..4000), 429s seen by the server:\n");
  std::printf("| table | tier | unpaced (SDK retries) | paced, matching model | paced, unknown |\n|---|---|---|---|---|\n");
  for (const auto* table : tables) {
    for (const tier_row& tier : table->rows) {
      // Under the sanitizers tiers 1 and 5 of each table only (support.hpp, sized();
      // tier 0, whose unpaced runs retry the most, is the slowest to simulate).
      if (tgtest::sanitized_build() && tier.tier != 1 && tier.tier != 5) continue;
      std::uint64_t unpaced = 0, matched = 0, unknown = 0;
      for (int s = 0; s < tgtest::servers::server_count; ++s) {
        const std::uint64_t seed = tgtest::seed_for(17 + static_cast<std::uint64_t>(tier.tier * 10 + s));
        unpaced += run_swarm(tier, s, server_model::unknown, false, 300, 1, seed).rejected;
        const swarm_result m = run_swarm(tier, s, matching[s], true, 300, 1, seed);
        const swarm_result u = run_swarm(tier, s, server_model::unknown, true, 300, 1, seed);
        INFO(table->name << " tier " << tier.tier << " server " << tgtest::servers::server_names[s]
                         << " " << tgtest::seed_note());
        CHECK(m.rejected == 0);
        CHECK(u.rejected == 0);
        CHECK(m.finished == 300);
        CHECK(m.never + u.never == 0);
        CHECK(u.finished == 300);
        matched += m.rejected;
        unknown += u.rejected;
      }
      CHECK(unpaced > 0);
      std::printf("| %s | %d | %llu | %llu | %llu |\n", table->as_of.data(), tier.tier,
                  static_cast<unsigned long long>(unpaced), static_cast<unsigned long long>(matched),
                  static_cast<unsigned long long>(unknown));
    }
  }
  std::fflush(stdout);
}

TEST_CASE("stress: threads admitting, settling and dropping never over-admit", "[account][stress]") {
  for (unsigned threads : {2u, 4u}) {
    INFO(threads << " threads, " << tgtest::seed_note());
    account_config c = small(server_model::sliding_log);
    c.concurrency = limit(3);
    c.rpm = limit(50);
    c.tpm = limit(200000);
    c.tpd = limit::unlimited();
    c.budget = usd::from_units(2);
    paced_account a(c, t0);
    std::atomic<std::int64_t> clock{0}, held{0};
    std::atomic<bool> over{false};
    std::vector<std::vector<std::pair<std::int64_t, std::uint64_t>>> req_log(threads), tok_log(threads);
    std::atomic<std::int64_t> settled_cost{0};
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        tgtest::rng g(tgtest::seed_for(300 + t));
        for (std::uint64_t i = 0; i < 4000 * tgtest::stress_factor(); ++i) {
          const std::int64_t now = g.chance(30) ? clock.fetch_add(static_cast<std::int64_t>(g.between(0, 50000000)))
                                                : clock.load();
          const std::uint64_t prompt = g.between(100, 2000), cap = g.between(100, 2000);
          auto ad = a.try_admit(req(prompt, cap), ns(now));
          if (!ad) continue;
          req_log[t].emplace_back(now, 1);
          tok_log[t].emplace_back(now, prompt + cap);
          // Count the permit while it is held: released by settle or by the
          // lease's destruction, both after the decrement below.
          if (held.fetch_add(1) + 1 > 3) over.store(true);
          if (g.chance(30)) std::this_thread::yield();
          held.fetch_sub(1);
          switch (g.between(0, 3)) {
            case 0: {
              const settle_result r = ad.lease.settle(usage{prompt, g.between(0, prompt), g.between(0, cap), 0, 0}, ns(now));
              settled_cost.fetch_add(r.cost.nanos());
              break;
            }
            case 1: ad.lease.settle_rejected(ns(now)); break;
            case 2: ad.lease.settle_failed(ns(now)); break;
            default: break;  // dropped: keeps its reservations
          }
        }
      });
    }
    for (auto& th : pool) th.join();
    std::vector<std::pair<std::int64_t, std::uint64_t>> reqs, toks;
    for (auto& v : req_log) reqs.insert(reqs.end(), v.begin(), v.end());
    for (auto& v : tok_log) toks.insert(toks.end(), v.begin(), v.end());
    CHECK(reqs.size() > 20);
    CHECK_FALSE(over.load());
    CHECK(a.in_flight() == 0);
    // The strict window's promise, on admission times: never more than L in any minute.
    CHECK(tgtest::max_window_sum(reqs, ns(minutes(1)).count()) <= 50);
    CHECK(tgtest::max_window_sum(toks, ns(minutes(1)).count()) <= 200000);
    CHECK(settled_cost.load() <= usd::from_units(2).nanos());
  }
}

TEST_CASE("stress: threads that admit or wait then settle or drop or cancel, against an exact log", "[account][stress]") {
  // Waiters use the shared manual clock; a driver thread moves it forward
  // and wakes the room, so deadlines pass and windows roll. Afterwards the
  // logs of admission times are checked against every dimension's limit.
  const ns clock_was = manual_clock::now();
  for (server_model model : {server_model::sliding_log, server_model::unknown}) {
    INFO(to_string(model) << ", " << tgtest::seed_note());
    account_config c;
    c.concurrency = limit(2);
    c.rpm = limit(20);
    c.tpm = limit(40000);
    c.tpd = limit(300000);
    c.max_request_tokens = 4000;
    c.model = model;
    c.budget = usd::from_nanos(400000000);  // $0.40: about 20 worst cases of kimi-k2.6 here
    manual_clock::set(t0);
    paced_account a(c, t0);
    waiting_room<manual_clock> room(a);
    constexpr unsigned workers = 4;
    std::vector<std::vector<std::pair<std::int64_t, std::uint64_t>>> req_log(workers), tok_log(workers);
    std::atomic<std::int64_t> held{0}, settled_cost{0}, reserved{0};
    std::atomic<bool> over{false};
    std::atomic<unsigned> done{0};
    std::atomic<std::uint64_t> via_room{0}, left_room{0};
    // Every call through the room: {arrival, departure, admitted}.
    std::vector<std::vector<std::tuple<std::uint64_t, std::uint64_t, bool>>> visits(workers);
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < workers; ++t) {
      pool.emplace_back([&, t] {
        tgtest::rng g(tgtest::seed_for(900 + t));
        for (std::uint64_t i = 0; i < 150 * tgtest::stress_factor(); ++i) {
          const std::uint64_t prompt = g.between(100, 1500), cap = g.between(100, 2000);
          admission<manual_clock> ad;
          if (t % 2 == 0) {
            ad = a.try_admit(req(prompt, cap), manual_clock::now());
          } else {
            // Wait up to 0..90 s of the shared clock; now and then give up at once.
            std::atomic<bool> cancel{g.chance(10)};
            room_visit v;
            ad = room.admit(req(prompt, cap), manual_clock::now() + ns(seconds(g.between(0, 90))), &cancel, &v);
            (ad ? via_room : left_room).fetch_add(1);
            visits[t].emplace_back(v.arrival, v.departure, static_cast<bool>(ad));
          }
          if (!ad) continue;
          req_log[t].emplace_back(ad.at.count(), 1);
          tok_log[t].emplace_back(ad.at.count(), prompt + cap);
          reserved.fetch_add(static_cast<std::int64_t>(prompt + cap));
          if (held.fetch_add(1) + 1 > 2) over.store(true);
          if (g.chance(30)) std::this_thread::yield();
          held.fetch_sub(1);
          const ns now = manual_clock::now();
          switch (g.between(0, 3)) {
            case 0: {
              const settle_result r = ad.lease.settle(usage{prompt, g.between(0, prompt), g.between(0, cap), 0, 0}, now);
              settled_cost.fetch_add(r.cost.nanos());
              break;
            }
            case 1: ad.lease.settle_rejected(now); break;
            case 2: ad.lease.settle_failed(now); break;
            default: break;  // dropped: keeps its reservations
          }
        }
        done.fetch_add(1);
      });
    }
    // The driver: 0.5..3 s of shared time per step, then a wake-up for the head.
    std::thread driver([&] {
      tgtest::rng g(tgtest::seed_for(77));
      for (std::uint64_t step = 0; done.load() < workers && step < 50000000; ++step) {
        manual_clock::set(manual_clock::now() + ns(milliseconds(g.between(500, 3000))));
        room.notify();
        std::this_thread::yield();
      }
    });
    for (auto& th : pool) th.join();
    driver.join();
    REQUIRE(done.load() == workers);
    std::vector<std::pair<std::int64_t, std::uint64_t>> reqs, toks;
    for (auto& v : req_log) reqs.insert(reqs.end(), v.begin(), v.end());
    for (auto& v : tok_log) toks.insert(toks.end(), v.begin(), v.end());
    INFO(reqs.size() << " admitted, " << via_room.load() << " through the room, " << left_room.load() << " left it");
    CHECK(reqs.size() > 20);
    CHECK(via_room.load() > 0);
    CHECK_FALSE(over.load());
    CHECK(a.in_flight() == 0);
    CHECK(room.waiting() == 0);
    CHECK(tgtest::max_window_sum(reqs, ns(minutes(1)).count()) <= 20);
    CHECK(tgtest::max_window_sum(toks, ns(minutes(1)).count()) <= 40000);
    CHECK(tgtest::max_window_sum(toks, ns(hours(24)).count()) <= 300000);
    CHECK(settled_cost.load() <= usd::from_nanos(400000000).nanos());
    // Served in arrival order: when a call was admitted, every call that
    // arrived before it had already left the room.
    std::vector<std::tuple<std::uint64_t, std::uint64_t, bool>> all;
    for (auto& v : visits) all.insert(all.end(), v.begin(), v.end());
    std::sort(all.begin(), all.end());
    std::uint64_t latest_departure = 0, out_of_order = 0;
    for (std::size_t k = 0; k < all.size(); ++k) {
      REQUIRE(std::get<0>(all[k]) == k + 1);  // arrivals are numbered 1..N, each once
      if (std::get<2>(all[k]) && latest_departure > std::get<1>(all[k])) ++out_of_order;
      latest_departure = std::max(latest_departure, std::get<1>(all[k]));
    }
    CHECK(out_of_order == 0);
    // The sharded counters add up to the log once the threads are joined.
    const account_stats st = a.stats();
    CHECK(st.admitted == reqs.size());
    CHECK(st.tokens_reserved == static_cast<std::uint64_t>(reserved.load()));
  }
  manual_clock::set(clock_was);
}

// --- Per-thread credit (limits of 1,024 units and more) ---

namespace {
account_config credit_config() {
  account_config c;
  c.concurrency = limit(4096);  // credit chunk 4
  c.rpm = limit(2048);          // chunk 2
  c.tpm = limit(1048576);       // chunk 1,024 tokens
  c.tpd = limit::unlimited();
  c.model = server_model::sliding_log;
  return c;
}
}  // namespace

TEST_CASE("account credit: one thread gets every unit, and introspection stays exact", "[account][credit]") {
  paced_account a(credit_config(), t0);
  std::vector<lease<manual_clock>> held;
  for (std::uint64_t i = 1; i <= 2048; ++i) {
    auto x = a.try_admit(req(10, 10), t0);
    REQUIRE(x);
    held.push_back(std::move(x.lease));
    if (i % 97 == 0 || i > 2040) {
      const auto v = a.remaining(t0);
      REQUIRE(*v.requests == 2048 - i);
      REQUIRE(*v.concurrency == 4096 - i);
      REQUIRE(*v.tokens_minute == 1048576 - 20 * i);
      REQUIRE(a.in_flight() == i);
    }
  }
  // Exactly the limit: the thread's own credit never refused it.
  const auto over = a.try_admit(req(10, 10), t0);
  CHECK_FALSE(over);
  CHECK(over.refused.has(dimension::rpm));
  CHECK_FALSE(over.refused.has(dimension::concurrency));
  for (auto& l : held) l.settle_failed(t0);
  CHECK(a.in_flight() == 0);
  CHECK(*a.remaining(t0).concurrency == 4096);
  CHECK(a.stats().admitted == 2048);
}

TEST_CASE("account credit: token credit is given back so a request fits to the last token", "[account][credit]") {
  account_config c = credit_config();
  c.rpm = limit::unlimited();
  paced_account a(c, t0);
  std::uint64_t admitted = 0;
  while (a.try_admit(req(500, 500), t0)) ++admitted;
  CHECK(admitted == 1048);  // 1,048,576 / 1,000
  CHECK(*a.remaining(t0).tokens_minute == 576);
  auto final_one = a.try_admit(req(276, 300), t0);
  CHECK(final_one);
  CHECK(*a.remaining(t0).tokens_minute == 0);
  CHECK_FALSE(a.try_admit(req(1, 0), t0));
  // In a later slot the old credit cannot be spent: the window moves on and
  // everything leaves it after a minute and a slot.
  CHECK(*a.remaining(seconds(64)).tokens_minute == 1048576);
  CHECK(a.try_admit(req(500, 500), seconds(64)));
}

TEST_CASE("account credit: credit counted in one slot is never spent in another", "[account][credit]") {
  paced_account a(credit_config(), t0);
  REQUIRE(a.try_admit(req(10, 10), t0));  // takes 1 + a chunk of 2 in slot 0
  // A minute and a slot later, slot 0 has left the window: were the 2 units
  // spent now, this minute would see 2,050 requests.
  const ns later = seconds(64) + milliseconds(1);
  std::uint64_t admitted = 0;
  while (a.try_admit(req(10, 10), later)) ++admitted;
  CHECK(admitted == 2048);
  // And back inside slot 0's own minute, the window is full at its limit.
  paced_account b(credit_config(), t0);
  REQUIRE(b.try_admit(req(10, 10), t0));
  admitted = 1;
  while (b.try_admit(req(10, 10), seconds(3))) ++admitted;
  CHECK(admitted == 2048);
}

TEST_CASE("account credit: a restore into an account holding credit is refused, counts kept", "[account][credit]") {
  const ns wall = seconds(1800000000);
  paced_account full(credit_config(), t0);
  while (full.try_admit(req(10, 10), t0)) {
  }
  const std::string bytes = full.snapshot(t0, wall);
  paced_account b(credit_config(), t0);
  REQUIRE(b.try_admit(req(10, 10), t0));  // this thread now holds 2 units of credit in slot 0
  const auto before = b.remaining(t0);
  CHECK(b.restore(bytes, t0, wall) == paced_account::restore_errc::in_use);
  CHECK(*b.remaining(t0).requests == *before.requests);
  CHECK(b.try_admit(req(10, 10), t0));  // its own credit, as before
  // A fresh account takes the snapshot, and nothing more fits.
  paced_account c(credit_config(), t0);
  REQUIRE(c.restore(bytes, t0, wall) == paced_account::restore_errc::ok);
  CHECK(*c.remaining(t0).requests == 0);
  CHECK_FALSE(c.try_admit(req(10, 10), t0));
}

TEST_CASE("account credit: credit left by another thread refuses at most its chunks", "[account][credit]") {
  paced_account a(credit_config(), t0);
  // A thread admits and settles one request, then exits: it leaves 2 request
  // units (a chunk) and 5 concurrency units (its chunk of 4 and the unit its
  // lease gave back) on its shard.
  std::thread([&] {
    auto x = a.try_admit(req(10, 10), t0);
    REQUIRE(x);
    x.lease.settle_failed(t0);
  }).join();
  CHECK(a.in_flight() == 0);
  std::vector<lease<manual_clock>> held;
  for (;;) {
    auto x = a.try_admit(req(10, 10), t0);
    if (!x) break;
    held.push_back(std::move(x.lease));
  }
  // 1 request by the thread, 2 units in its credit: 2,045 left for this one.
  CHECK(held.size() == 2045);
  CHECK(held.size() + 1 >= 2048 - 16 * 2);  // the documented bound
  CHECK(*a.remaining(t0).requests == 2);     // held as credit: admissible by its owner
  for (auto& l : held) l.settle_failed(t0);
  CHECK(a.in_flight() == 0);

  // Concurrency: with requests unlimited, leases fill the limit less the
  // departed thread's 5 units.
  account_config c = credit_config();
  c.rpm = limit::unlimited();
  c.tpm = limit::unlimited();
  paced_account b(c, t0);
  std::thread([&] {
    auto x = b.try_admit(req(10, 10), t0);
    REQUIRE(x);
    x.lease.settle_failed(t0);
  }).join();
  held.clear();
  for (;;) {
    auto x = b.try_admit(req(10, 10), t0);
    if (!x) {
      CHECK(x.refused.has(dimension::concurrency));
      break;
    }
    held.push_back(std::move(x.lease));
  }
  CHECK(held.size() == 4096 - 5);
  CHECK(b.in_flight() == 4091);
  CHECK(*b.remaining(t0).concurrency == 5);
  held.clear();  // dropped: the slots come back
  CHECK(b.in_flight() == 0);
}

namespace {
// Threads that run one task at a time, in the order given: a schedule of
// real threads (each its own credit shard) that is the same on every run.
class turn_runner {
 public:
  explicit turn_runner(unsigned n) {
    for (unsigned k = 0; k < n; ++k)
      pool_.emplace_back([this, k] {
        std::unique_lock<std::mutex> g(m_);
        for (;;) {
          cv_.wait(g, [&] { return stop_ || (task_ && who_ == k); });
          if (stop_) return;
          task_();
          task_ = nullptr;
          cv_.notify_all();
        }
      });
  }
  ~turn_runner() {
    {
      std::lock_guard<std::mutex> g(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : pool_) t.join();
  }
  void run(unsigned k, std::function<void()> f) {
    std::unique_lock<std::mutex> g(m_);
    who_ = k;
    task_ = std::move(f);
    cv_.notify_all();
    cv_.wait(g, [&] { return !task_; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::function<void()> task_;
  unsigned who_ = 0;
  bool stop_ = false;
  std::vector<std::thread> pool_;
};
}  // namespace

TEST_CASE("account credit: other threads' credit refuses falsely by at most 16 chunks, on random schedules",
          "[account][credit]") {
  // 17 threads (16 credit shards at most, one more without) leave credit
  // idle at sub-window boundaries and then burst. Against the exact window
  // (the same slot grid, counting admitted requests only): never over the
  // limit, and a refusal only where the exact window has at most 16 chunks
  // of room. Credit left behind when another thread moves the window on is
  // given back into its own sub-window; left counted there, each thread
  // could hold a chunk in every sub-window (16 x 16 chunks).
  constexpr std::int64_t width = 4000000000;  // 60 s / 15
  constexpr unsigned users = 17;
  turn_runner threads(users);
  std::uint64_t worst_chunks_x100 = 0;
  for (const std::uint64_t seed : tgtest::seeds(6)) {
    tgtest::rng g(seed);
    account_config c;
    c.model = server_model::sliding_log;
    c.rpm = limit(g.between(1024, 40000));
    c.tpm = limit::unlimited();
    c.tpd = limit::unlimited();
    c.lease_timeout = nanoseconds(0);
    const std::uint64_t L = *c.rpm.value(), chunk = L / 1024;
    INFO("seed " << seed << " (" << tgtest::seed_note() << "), rpm " << L << ", chunk " << chunk);
    paced_account a(c, t0);
    tgtest::exact_slots exact{0, width, 15, L, {}, 0, 0, 0};
    std::vector<std::pair<std::int64_t, std::uint64_t>> log;
    bool other_refusal = false;
    const auto steps = tgtest::credit_schedule(g, users, width, 3 * 16);
    for (const auto& st : steps) {
      threads.run(st.user, [&] {
        for (std::uint64_t i = 0; i <= (st.burst ? L : 0); ++i) {
          const auto x = a.try_admit(req(1, 0), ns(st.at));
          if (!x) {
            other_refusal = other_refusal || !x.refused.has(dimension::rpm);
            exact.refused(st.at);
            break;
          }
          exact.admitted(st.at);
          log.emplace_back(st.at, 1);
        }
      });
    }
    CHECK_FALSE(other_refusal);
    CHECK(exact.most <= L);
    CHECK(tgtest::max_window_sum(log, 60 * 1000000000LL) <= L);
    CHECK(exact.refusals > 0);
    CHECK(exact.worst_room <= 16 * chunk);
    worst_chunks_x100 = std::max(worst_chunks_x100, exact.worst_room * 100 / chunk);
  }
  std::printf("credit (in-process): the worst false refusal was %.2f chunks (bound 16)\n",
              static_cast<double>(worst_chunks_x100) / 100);
}

TEST_CASE("account credit: a live limit change takes back concurrency credit", "[account][credit]") {
  tier_row big{}, smaller{};
  big.concurrency = limit(4096);
  big.rpm = limit::unlimited();
  big.tpm = limit::unlimited();
  big.tpd = limit::unlimited();
  smaller = big;
  smaller.concurrency = limit(3);
  account_config c = account_config::from_tier(big, server_model::sliding_log);
  paced_account a(c, t0);
  auto x = a.try_admit(req(10, 10), t0);  // this thread now holds credit
  REQUIRE(x);
  REQUIRE(a.set_limits(smaller, t0) == errc::ok);
  // The credit taken under 4,096 goes back before the next unit is taken:
  // with one lease held, two more fit under the new limit of 3.
  auto y = a.try_admit(req(10, 10), t0);
  auto z = a.try_admit(req(10, 10), t0);
  CHECK(y);
  CHECK(z);
  CHECK_FALSE(a.try_admit(req(10, 10), t0));
  CHECK(a.in_flight() == 3);
}

namespace {
// Requests of 100 tokens another thread gets admitted at `now` (it may hold
// a line of its own; its own credit never refuses it).
std::uint64_t others_fit(paced_account& a, ns now) {
  std::uint64_t n = 0;
  std::thread([&] {
    while (n < 100000 && a.try_admit(req(50, 50), now)) ++n;
  }).join();
  return n;
}
account_config token_credit_config() {
  account_config c;
  c.concurrency = limit::unlimited();
  c.rpm = limit::unlimited();
  c.tpm = limit(1048576);  // chunk 1,024 tokens
  c.tpd = limit::unlimited();
  c.model = server_model::sliding_log;
  return c;
}
tier_row tier_with_tpm(std::uint64_t tpm) {
  tier_row t{};
  t.concurrency = limit::unlimited();
  t.rpm = limit::unlimited();
  t.tpm = limit(tpm);
  t.tpd = limit::unlimited();
  return t;
}
}  // namespace

TEST_CASE("account credit: window credit taken under an old limit goes back at the owner's next take", "[account][credit]") {
  SECTION("a lower limit with a chunk") {
    paced_account a(token_credit_config(), t0);
    REQUIRE(a.try_admit(req(50, 50), t0));  // this thread holds 1,024 tokens of credit
    REQUIRE(a.set_limits(tier_with_tpm(10240), t0) == errc::ok);  // chunk 10
    REQUIRE(a.try_admit(req(50, 50), t0));  // gives the old chunk back, refills with a new one
    // 10,240 - 200 admitted - 10 held by this thread: 100 requests more.
    // Spent from the old chunk instead, 924 would stay held: 91.
    CHECK(others_fit(a, t0) == 100);
  }
  SECTION("a limit below the divisor (no credit)") {
    paced_account a(token_credit_config(), t0);
    REQUIRE(a.try_admit(req(50, 50), t0));
    REQUIRE(a.set_limits(tier_with_tpm(1000), t0) == errc::ok);  // under 1,024 units: chunk 0
    REQUIRE(a.try_admit(req(50, 50), t0));  // no credit: the old chunk goes back, nothing is kept
    CHECK(others_fit(a, t0) == 8);          // exactly as without credit: (1,000 - 200) / 100
  }
}

TEST_CASE("account credit: credit is never spent at a stale time, decisions as without credit", "[account][credit]") {
  account_config on = token_credit_config(), off = on;
  off.per_thread_credit = false;
  paced_account a(on, t0), b(off, t0);
  for (paced_account* x : {&a, &b}) {
    REQUIRE(x->try_admit(req(50, 50), seconds(1)));  // a: this thread holds credit in the 1 s slot
    // Another thread moves the window on (its 1 s slot has left it).
    std::thread([&] { REQUIRE(x->try_admit(req(50, 50), seconds(100))); }).join();
  }
  // This thread again, with its reading from before the other's.
  const auto p = a.try_admit(req(50, 50), seconds(1));
  const auto q = b.try_admit(req(50, 50), seconds(1));
  CHECK_FALSE(q);
  CHECK(q.decision.retry_after() > ns(0));
  CHECK(static_cast<bool>(p) == static_cast<bool>(q));
  CHECK(p.decision.what() == q.decision.what());
  CHECK(p.decision.why() == q.decision.why());
  CHECK(p.decision.retry_after() == q.decision.retry_after());
  CHECK(p.refused.bits == q.refused.bits);
}

TEST_CASE("account credit: a debt is waited out by threads holding credit too", "[account][credit]") {
  account_config on = token_credit_config(), off = on;
  off.per_thread_credit = false;
  paced_account a(on, t0), b(off, t0);
  for (paced_account* x : {&a, &b}) {
    REQUIRE(x->try_admit(req(50, 50), seconds(1)));  // a: this thread holds credit in the 1 s slot
    auto big = x->try_admit(req(100000, 100000), seconds(1));
    REQUIRE(big);
    // The server counted far more than reserved: the window is over its limit.
    CHECK(big.lease.settle(usage{2000000, 0, 0, 0, 0}, seconds(1)).debt_tokens == 1800000);
  }
  const auto p = a.try_admit(req(50, 50), seconds(2));
  const auto q = b.try_admit(req(50, 50), seconds(2));
  CHECK_FALSE(q);
  CHECK(q.refused.has(dimension::tpm));
  CHECK(static_cast<bool>(p) == static_cast<bool>(q));  // not spent from credit counted before the debt
  CHECK(p.decision.retry_after() == q.decision.retry_after());
  CHECK(p.refused.bits == q.refused.bits);
}

TEST_CASE("stress: threads spending credit never over-admit, against an exact log", "[account][stress][credit]") {
  // Three mixes, each made so that one limit binds whatever the threads'
  // interleaving (so its check below bites); all limits are large enough for
  // credit, and every one is checked in every mix.
  struct mix {
    const char* name;
    std::uint64_t concurrency, rpm, tpm;
    unsigned big_percent, release_percent;
    dimension binds;
  };
  const mix mixes[] = {
      {"leases pile up", 1024, 100000, 100000000, 0, 2, dimension::concurrency},
      {"many small requests", 100000, 4096, 100000000, 0, 70, dimension::rpm},
      {"large requests", 100000, 100000, 2000000, 100, 70, dimension::tpm},
  };
  for (const mix& m : mixes) {
    for (unsigned threads : {2u, 4u}) {
      INFO(m.name << ", " << threads << " threads, " << tgtest::seed_note());
      account_config c;
      c.concurrency = limit(m.concurrency);
      c.rpm = limit(m.rpm);
      c.tpm = limit(m.tpm);
      c.tpd = limit(200000000);
      c.model = server_model::sliding_log;
      paced_account a(c, t0);
      std::atomic<std::int64_t> clock{0}, held{0};
      std::atomic<bool> over{false};
      std::atomic<std::uint64_t> refused_by_binding{0};
      std::vector<std::vector<std::pair<std::int64_t, std::uint64_t>>> req_log(threads), tok_log(threads);
      std::vector<std::thread> pool;
      for (unsigned t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          tgtest::rng g(tgtest::seed_for(4100 + t));
          std::vector<lease<manual_clock>> mine;
          for (std::uint64_t i = 0; i < 10000 * tgtest::stress_factor(); ++i) {
            // About 4.5 ms of shared time per attempt: minutes in all, so
            // the windows both fill and roll.
            const std::int64_t now = g.chance(20) ? clock.fetch_add(static_cast<std::int64_t>(g.between(0, 45000000)))
                                                  : clock.load();
            const bool big = g.chance(m.big_percent);
            const std::uint64_t prompt = g.between(1, big ? 1500 : 60), cap = g.between(big ? 500 : 0, big ? 1500 : 40);
            auto ad = a.try_admit(req(prompt, cap), ns(now));
            if (ad) {
              if (static_cast<std::uint64_t>(held.fetch_add(1) + 1) > m.concurrency) over.store(true);
              req_log[t].emplace_back(now, 1);
              tok_log[t].emplace_back(now, prompt + cap);
              mine.push_back(std::move(ad.lease));
            } else if (ad.refused.has(m.binds)) {
              refused_by_binding.fetch_add(1);
            }
            while (!mine.empty() && g.chance(m.release_percent)) {
              const std::size_t k = static_cast<std::size_t>(g.between(0, mine.size() - 1));
              held.fetch_sub(1);  // before the unit goes back
              if (g.chance(50)) mine[k].settle_failed(ns(now));
              else mine[k] = lease<manual_clock>();  // dropped
              mine[k] = std::move(mine.back());
              mine.pop_back();
            }
          }
          held.fetch_sub(static_cast<std::int64_t>(mine.size()));
          mine.clear();
        });
      }
      for (auto& th : pool) th.join();
      std::vector<std::pair<std::int64_t, std::uint64_t>> reqs, toks;
      for (auto& v : req_log) reqs.insert(reqs.end(), v.begin(), v.end());
      for (auto& v : tok_log) toks.insert(toks.end(), v.begin(), v.end());
      INFO(reqs.size() << " admitted; " << refused_by_binding.load() << " refused by the binding limit");
      CHECK(reqs.size() > 1024);
      CHECK(refused_by_binding.load() > 100);
      CHECK_FALSE(over.load());
      CHECK(a.in_flight() == 0);
      CHECK(tgtest::max_window_sum(reqs, ns(minutes(1)).count()) <= m.rpm);
      CHECK(tgtest::max_window_sum(toks, ns(minutes(1)).count()) <= m.tpm);
      CHECK(tgtest::max_window_sum(toks, ns(hours(24)).count()) <= 200000000);
      CHECK(a.stats().admitted == reqs.size());
    }
  }
}

TEST_CASE("unknown server model: late settles with unused tokens stay within TPM", "[account][refund]") {
  // TPM 100,000 with a 10,000-token margin, refund_unused_tokens. K leases
  // reserve 10,000 each back to back; each settles late, unused, right after
  // another request was admitted and used everything. Refunds must not
  // cancel that request's tokens: every 60 s window of used tokens stays
  // within the limit.
  for (int k : {1, 5, 10}) {
    INFO("late leases: " << k);
    account_config c;
    c.tpm = limit(100000);
    c.model = server_model::unknown;
    c.refund_unused_tokens = true;
    c.max_request_tokens = 10000;
    c.lease_timeout = ns(0);
    account<manual_clock> a(c, ns(0));
    request r;
    r.model = &kimi_models[0];
    r.prompt_tokens = 1;
    r.max_tokens = 9999;
    std::vector<std::pair<std::int64_t, std::uint64_t>> used;  // (admission time, tokens the server counts)
    std::int64_t now = 0;
    auto admit = [&] {
      for (int tries = 0; tries < 1000; ++tries) {
        auto ad = a.try_admit(r, ns(now));
        if (ad) return ad;
        REQUIRE(ad.decision.later());
        now += ad.decision.retry_after().count();
      }
      FAIL("never admitted");
      return a.try_admit(r, ns(now));
    };
    std::vector<admission<manual_clock>> late;
    std::vector<std::int64_t> late_at;
    for (int i = 0; i < k; ++i) {
      late.push_back(admit());
      late_at.push_back(now);
    }
    const std::int64_t first = now;
    const usage full{1, 0, 9999};
    for (int i = 0; i < k; ++i) {
      auto x = admit();
      (void)x.lease.settle(full, ns(now));
      used.emplace_back(now, 10000);
      const auto back = late[static_cast<std::size_t>(i)].lease.settle(usage{}, ns(now));
      used.emplace_back(late_at[static_cast<std::size_t>(i)], 10000 - back.refunded_tokens);
    }
    while (now < first + 70000000000LL) {
      auto x = admit();
      (void)x.lease.settle(full, ns(now));
      used.emplace_back(now, 10000);
    }
    CHECK(tgtest::max_window_sum(used, 60000000000LL) <= 100000);
  }
}

namespace {
// A clock whose zero is not 1970 (a steady clock's boot): the calendar day
// must map it to Unix time. Its reading is fixed; tests pass `now`.
struct boot_clock {
  static ns now() noexcept { return seconds(5); }
};
static_assert(!detail::reads_unix_time<boot_clock>::value, "mapped by the account");
static_assert(detail::reads_unix_time<manual_clock>::value && detail::reads_unix_time<tollgate::system_clock>::value, "");
constexpr ns utc_monday = hours(24) * 20780;  // 2026-11-23T00:00:00Z
account_config daily(std::uint64_t tpd) {
  account_config c;
  c.tpd = limit(tpd);
  c.model = server_model::sliding_log;
  c.calendar_day = true;
  return c;
}
}  // namespace

TEST_CASE("account: the calendar day is a UTC day whatever the account's clock (a01)", "[account][calendar_quota]") {
  // The clock's zero is Monday 12:00 UTC: its own day boundary (24 h after
  // its zero) is Tuesday noon, inside one UTC day.
  account_config c = daily(100000);
  c.unix_time_at_zero = utc_monday + hours(12);
  account<boot_clock> a(c, t0);
  const ns edge = hours(24);
  REQUIRE(a.try_admit(req(60000, 40000), edge - seconds(1)));
  const auto second = a.try_admit(req(60000, 40000), edge + seconds(1));
  REQUIRE_FALSE(second);  // same UTC day (Tuesday): the limit is spent
  CHECK(second.refused.has(dimension::tpd));
  // Until Wednesday 00:00 UTC, exactly.
  CHECK(second.decision.retry_after() == hours(12) - seconds(1));
  CHECK(*a.remaining(edge + seconds(1)).tokens_day == 0);
  CHECK(a.remaining(edge + seconds(1)).tokens_day_reset_in == hours(12) - seconds(1));
  CHECK_FALSE(a.try_admit(req(60000, 40000), edge + hours(12) - ns(1)));
  CHECK(a.try_admit(req(60000, 40000), edge + hours(12)));
  // At +8 h the day ends at 16:00 UTC.
  c.utc_offset = hours(8);
  account<boot_clock> cst(c, t0);
  REQUIRE(cst.try_admit(req(60000, 40000), hours(3)));  // Monday 15:00 UTC
  const auto late = cst.try_admit(req(60000, 40000), hours(3));
  REQUIRE_FALSE(late);
  CHECK(late.decision.retry_after() == hours(1));
}

TEST_CASE("account: unset, the calendar day maps the clock by one wall-clock reading at construction", "[account][calendar_quota]") {
  // Not a wall-clock assertion: the reading is bracketed by two others, and
  // the expected reset is computed from both (a midnight between them is
  // the one case that cannot be bracketed: skipped).
  const std::int64_t day = 86400LL * 1000000000LL;
  const std::int64_t before = tollgate::system_clock::now().count();
  account<boot_clock> a(daily(1000), t0);
  const std::int64_t after = tollgate::system_clock::now().count();
  // boot_clock reads 5 s: the account's t = 5 s is the construction's wall time.
  const ns reset = a.remaining(seconds(5)).tokens_day_reset_in;
  if (before / day == after / day) {
    const std::int64_t next = (before / day + 1) * day;
    INFO("reset " << reset.count() << " in [" << next - after << ", " << next - before << "]");
    CHECK(reset.count() >= next - after);
    CHECK(reset.count() <= next - before);
  }
  // A clock that reads Unix time needs no mapping (manual clocks included).
  paced_account m(daily(1000), t0);
  CHECK(m.remaining(utc_monday + hours(15)).tokens_day_reset_in == hours(9));
}

TEST_CASE("account: a stale now gets the exact wait, counted from the time the limiters can decide (a08)", "[account][time]") {
  for (server_model m : {server_model::sliding_log, server_model::fixed_window, server_model::token_bucket}) {
    INFO("server model " << to_string(m));
    for (int dim = 0; dim < 3; ++dim) {
      INFO("dimension " << dim << " (0 RPM, 1 TPM, 2 calendar day)");
      account_config c;
      c.model = m;
      c.max_request_tokens = 1000;
      if (dim == 0) c.rpm = limit(2);
      if (dim == 1) c.tpm = limit(2000);
      if (dim == 2) {
        c.tpd = limit(2000);
        c.calendar_day = true;
      }
      // Two full requests at `late`, then one at a time seen earlier (for
      // the day: the day before).
      const ns late = dim == 2 ? utc_monday + hours(24) + seconds(100) : seconds(100);
      const ns early = dim == 2 ? utc_monday + hours(20) : seconds(30);
      paced_account a(c, t0);
      REQUIRE(a.try_admit(req(500, 500), late));
      REQUIRE(a.try_admit(req(500, 500), late));
      const auto x = a.try_admit(req(500, 500), early);
      REQUIRE(x.decision.later());
      const ns w = x.decision.retry_after();
      INFO("wait " << w.count() << " ns");
      CHECK(early + w > late);  // past the head: the stale gap alone was too short
      CHECK_FALSE(a.try_admit(req(500, 500), early + w - ns(1)));
      CHECK(a.try_admit(req(500, 500), early + w));
    }
  }
}

TEST_CASE("waiting room: a call past its deadline or cancelled at arrival is never admitted (a04)", "[account]") {
  account_config c;
  c.concurrency = limit(1);
  paced_account a(c, t0);
  waiting_room<manual_clock> room(a);
  const ns clock_was = manual_clock::now();
  manual_clock::set(hours(2));
  // Capacity is free: asking would admit.
  const auto late = room.admit(req(10, 10), hours(1));
  CHECK_FALSE(late);
  CHECK(late.decision.why() == reason::busy);  // it never asked
  std::atomic<bool> cancel{true};
  const auto cancelled = room.admit(req(10, 10), hours(3), &cancel);
  CHECK_FALSE(cancelled);
  // At the deadline itself: not admitted either (admissions happen before it).
  CHECK_FALSE(room.admit(req(10, 10), hours(2)));
  CHECK(a.in_flight() == 0);
  CHECK(a.stats().admitted == 0);
  // Before its deadline, the same call is admitted.
  auto ok = room.admit(req(10, 10), hours(3));
  CHECK(ok);
  manual_clock::set(clock_was);
}

TEST_CASE("pause: a TPD 429 without a daily limit of its own pauses until the next midnight", "[account][pause]") {
  // The tier table leaves Tier1's TPD unenforced; the server still has one.
  // The pause was the hint alone (none here): the account kept sending at
  // its RPM pace, one 429 per request, all day.
  const std::string body =
      R"({"error":{"type":"rate_limit_reached_error","message":"request reached organization TPD rate limit, current: 1500100, limit: 1500000"}})";
  const ns day = hours(24), monday = day * 20000;  // 2024-10-04, 00:00 UTC
  struct at_case {
    const char* what;
    std::chrono::minutes offset;
    std::optional<ns> unix_at_zero;
    ns now;
    ns until;
  };
  const at_case cases[] = {
      {"UTC, 15:00", minutes(0), std::nullopt, monday + hours(15), monday + day},
      {"UTC+8 (midnight at 16:00 UTC), 15:00", hours(8), std::nullopt, monday + hours(15), monday + hours(16)},
      {"UTC+8, 17:00", hours(8), std::nullopt, monday + hours(17), monday + day + hours(16)},
      {"UTC-5, 03:00", -hours(5), std::nullopt, monday + hours(3), monday + hours(5)},
      {"a clock whose zero is Monday 22:00 UTC, at 1 h", minutes(0), monday + hours(22), hours(1), hours(2)},
      {"exactly midnight: the next one", minutes(0), std::nullopt, monday, monday + day},
  };
  for (const at_case& c : cases) {
    INFO(c.what);
    account_config cfg = account_config::from_tier(*kimi_tiers_latest.tier(1));
    REQUIRE_FALSE(cfg.tpd.value());
    cfg.utc_offset = c.offset;
    cfg.unix_time_at_zero = c.unix_at_zero;
    paced_account a(cfg, c.now);
    a.on_response(classify(429, body), std::nullopt, c.now);
    CHECK(a.paused_until() == c.until);  // was c.now: no pause
    const auto x = a.try_admit(req(100, 100), c.now + seconds(1));
    REQUIRE(x.decision.later());
    CHECK(x.refused.has(dimension::paused));
    CHECK(c.now + seconds(1) + x.decision.retry_after() == c.until);
    CHECK_FALSE(a.try_admit(req(100, 100), c.until - ns(1)));
    CHECK(a.try_admit(req(100, 100), c.until));
  }
  SECTION("a hint past the midnight stands") {
    account_config cfg = account_config::from_tier(*kimi_tiers_latest.tier(1));
    paced_account a(cfg, monday + hours(23));
    a.on_response(classify(429, body), hours(2), monday + hours(23));
    CHECK(a.paused_until() == monday + hours(25));
  }
}
