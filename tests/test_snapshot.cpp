// Snapshot and restore: counts survive a restart at any phase, never leaving a
// window earlier than without the restart; 0.1.0 snapshots; hostile fields;
// restores into accounts in use; extreme times.
#include "catch_compat.hpp"
#include "account_support.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace tollgate;
using namespace std::chrono;
using tgtest::ns;

namespace {
using test_account = account<manual_clock>;
using errc_t = test_account::restore_errc;
constexpr std::int64_t i64max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t i64min = std::numeric_limits<std::int64_t>::min();

using tgtest::k26;
using tgtest::req;

// A snapshot as its fields: the 4-byte tag, then 64-bit words; the last
// word is the checksum, which encode() recomputes.
struct fields {
  std::string tag;
  std::vector<std::uint64_t> w;
};
fields decode(const std::string& s) {
  fields f;
  f.tag = s.substr(0, 4);
  for (std::size_t i = 4; i + 8 <= s.size(); i += 8) {
    std::uint64_t v = 0;
    for (int b = 0; b < 8; ++b) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(s[i + static_cast<std::size_t>(b)])) << (8 * b);
    f.w.push_back(v);
  }
  return f;
}
std::string encode(const fields& f) {
  std::string s = f.tag;
  for (std::size_t i = 0; i + 1 < f.w.size(); ++i)
    for (int b = 0; b < 8; ++b) s.push_back(static_cast<char>((f.w[i] >> (8 * b)) & 0xFF));
  const std::uint64_t sum = detail::fnv1a(s);
  for (int b = 0; b < 8; ++b) s.push_back(static_cast<char>((sum >> (8 * b)) & 0xFF));
  return s;
}
std::string unhex(const char* h) {
  std::string s;
  auto nib = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (; h[0] && h[1]; h += 2) s.push_back(static_cast<char>(nib(h[0]) * 16 + nib(h[1])));
  return s;
}

account_config rpm_only(std::uint64_t l) {
  account_config c;
  c.rpm = limit(l);
  c.model = server_model::sliding_log;
  return c;
}

// Greedy requests of 1 token at every `step` in [from, to]: the admission times.
std::vector<std::int64_t> greedy(test_account& a, ns from, ns to, ns step) {
  std::vector<std::int64_t> out;
  for (ns t = from; t <= to; t += step)
    if (a.try_admit(req(1, 0), t)) out.push_back(t.count());
  return out;
}
}  // namespace

TEST_CASE("snapshot: a restart at any phase keeps every count at least as long as without it", "[account][snapshot]") {
  // L = 10 per minute, 4 s sub-windows. Ten requests at 43.999 s (slot 10,
  // its last millisecond), a snapshot at 44 s (slot 11, its first instant),
  // restored without downtime into an account whose clock is 3.999 s into
  // its slot. Counting whole slots, the restored ten would leave at the new
  // account's slot boundary 60 s after their slot: 56.001 s after the
  // restore, while the sliding log needs them until 59.999 s after it.
  const ns wall = seconds(1800000000);
  test_account a(rpm_only(10), ns(0));
  for (int i = 0; i < 10; ++i) REQUIRE(a.try_admit(req(1, 0), milliseconds(43999)));
  const std::string bytes = a.snapshot(seconds(44), wall);
  for (const ns downtime : std::initializer_list<ns>{ns(0), milliseconds(1500), milliseconds(3999), seconds(4), seconds(30)}) {
    INFO("downtime " << downtime.count());
    for (const ns phase : std::initializer_list<ns>{ns(0), ns(1), milliseconds(2000), milliseconds(3999), ns(3999999999)}) {
      INFO("phase " << phase.count());
      const ns now2 = seconds(1000) + phase;  // origin 0: slot 250 + phase
      test_account b(rpm_only(10), ns(0));
      REQUIRE(b.restore(bytes, now2, wall + downtime) == errc_t::ok);
      // New time t is old time t - now2 + 44 s + downtime.
      const ns shift = seconds(44) + downtime - now2;
      const std::vector<std::int64_t> got = greedy(b, now2, now2 + seconds(130), milliseconds(1));
      std::vector<std::pair<std::int64_t, std::uint64_t>> log;
      for (int i = 0; i < 10; ++i) log.emplace_back(ns(milliseconds(43999)).count(), 1);
      for (std::int64_t t : got) log.emplace_back(t + shift.count(), 1);
      CHECK(tgtest::max_window_sum(log, ns(seconds(60)).count()) <= 10);
      // Not more than needed either: the old account would have dropped
      // them at 104 s (its slot 26), so the restored one admits from then.
      REQUIRE(!got.empty());
      CHECK(got.front() + shift.count() <= ns(seconds(104)).count());
    }
  }
}

namespace {
// Admits `r` as soon as the account lets it, from `from` to `to`: the
// admission times and tokens.
std::vector<std::pair<std::int64_t, std::uint64_t>> as_soon_as(test_account& a, const request& r, ns from, ns to) {
  std::vector<std::pair<std::int64_t, std::uint64_t>> out;
  for (ns t = from; t <= to;) {
    const auto x = a.try_admit(r, t);
    if (x) {
      out.emplace_back(t.count(), x.tokens);
      continue;
    }
    if (x.decision.never()) break;
    t += x.decision.retry_after() > ns(0) ? x.decision.retry_after() : ns(1);
  }
  return out;
}
}  // namespace

TEST_CASE("snapshot: Tier0's daily window keeps a day's tokens across a restart at a later phase", "[account][snapshot]") {
  // The default policy at Tier0: TPD 1,500,000 in a rolling 24 h window of
  // 96-minute sub-windows. A day's tokens taken in the last 12 minutes of a
  // sub-window, a snapshot as the next one starts, a restore without
  // downtime 95.99 minutes into the new account's sub-window: counted in
  // whole sub-windows, the tokens would leave about 94 minutes early and
  // the next day's worth would be admitted inside the same 24 h.
  const account_config c = account_config::from_tier(*kimi_tiers_2026_05.tier(0));
  const ns wall = seconds(1800000000), slot = minutes(96);
  const request r = req(1000, 64536);  // max_request_tokens
  test_account a(c, ns(0));
  auto log = as_soon_as(a, r, slot - minutes(12), slot - ns(1));
  std::uint64_t day = 0;
  for (const auto& e : log) day += e.second;
  REQUIRE(day > 1400000);
  const std::string bytes = a.snapshot(slot, wall);
  const ns now2 = slot * 10 + slot - milliseconds(600);
  test_account b(c, ns(0));
  REQUIRE(b.restore(bytes, now2, wall) == errc_t::ok);
  const ns shift = slot - now2;  // new time + shift = old time
  const std::size_t before = log.size();
  for (const auto& e : as_soon_as(b, r, now2, now2 + hours(26))) log.emplace_back(e.first + shift.count(), e.second);
  CHECK(tgtest::max_window_sum(log, ns(hours(24)).count()) <= 1500000);
  CHECK(log.size() - before >= before);  // the restored account did admit the next day's worth
}

TEST_CASE("snapshot: each window keeps its counts exactly as the old account's grid would", "[account][snapshot]") {
  // The slot a count was taken in ends at a boundary of the old grid; a
  // restored window moves its grid onto those boundaries, whatever its own
  // origin, so each count leaves exactly when it would have.
  const ns wall = seconds(1800000000);
  for (const ns origin_a : std::initializer_list<ns>{ns(0), ns(123456789), seconds(-7)}) {
    test_account a(rpm_only(3), origin_a);
    // 4 s slots: 10 s is in slot 2, which leaves when slot 18 begins (72 s);
    // 45 s is in slot 11, which leaves at 108 s.
    REQUIRE(a.try_admit(req(1, 0), origin_a + seconds(10)));
    REQUIRE(a.try_admit(req(1, 0), origin_a + seconds(45)));
    const ns now1 = origin_a + seconds(50);
    const std::string bytes = a.snapshot(now1, wall);
    for (const ns origin_b : std::initializer_list<ns>{ns(0), ns(777), seconds(1000) + ns(1), ns(i64min / 2)}) {
      INFO("origins " << origin_a.count() << " " << origin_b.count());
      test_account b(rpm_only(3), origin_b);
      const ns now2 = origin_b + seconds(5000) + milliseconds(1234);
      REQUIRE(b.restore(bytes, now2, wall + seconds(2)) == errc_t::ok);
      const ns shift = now2 - seconds(2) - now1;  // old time + shift = new time
      CHECK(*b.remaining(origin_a + seconds(72) - ns(1) + shift).requests == 1);
      CHECK(*b.remaining(origin_a + seconds(72) + shift).requests == 2);
      CHECK(*b.remaining(origin_a + seconds(108) - ns(1) + shift).requests == 2);
      CHECK(*b.remaining(origin_a + seconds(108) + shift).requests == 3);
      CHECK(*a.remaining(origin_a + seconds(72) - ns(1)).requests == 1);
      CHECK(*a.remaining(origin_a + seconds(72)).requests == 2);
    }
  }
}

namespace {
// Made by 0.1.0 (format 1): the scenarios below, run by that version.
// Strict (sliding_log): concurrency 5, RPM 10, TPM 100,000, TPD 1,000,000,
// max_request_tokens 8,000, budget $5, origin 0; 1,000 + 2,000 tokens at
// 3.999 s, 41 s, 43.999 s and 43.999 s, each settled as 1,000 in, 1,500 out;
// a 429 at 44 s with a 10 s hint; snapshot at 44 s, wall 1.8e9 s.
const char* const v1_strict =
    "54474131010000000000000051b65745fde0bf4f0000b49376e2fa1800000000"
    "0000000000e40b540200000002000000000000000b0000000000000001000000"
    "000000000100000000000000030000000000000002000000000000000b000000"
    "00000000b80b0000000000000100000000000000282300000000000001000000"
    "000000000000000000000000e02e000000000000c031a80100000000c031a801"
    "00000000023c61a1bb65ba26";
// Spaced (server model unknown), TPD per calendar day (UTC): the same
// limits without a budget, origin and `now` on the wall clock (1.8e9 s);
// 1,000 + 2,000 tokens at +0, +7 s, +14 s, never settled; snapshot at +15 s.
const char* const v1_spaced =
    "54474131010000000000000016f7fe2392da859f00d6c5117ae2fa1800000000"
    "0000000000000000000000002bfde051010000003a5d03390000000028230000"
    "0061510027a06926c1f0d554";

account_config v1_config(server_model m) {
  account_config c;
  c.concurrency = limit(5);
  c.rpm = limit(10);
  c.tpm = limit(100000);
  c.tpd = limit(1000000);
  c.model = m;
  c.max_request_tokens = 8000;
  if (m == server_model::sliding_log) c.budget = usd::from_units(5);
  else c.calendar_day = true;
  return c;
}
}  // namespace

TEST_CASE("snapshot: 0.1.0 snapshots restore, rounding toward keeping", "[account][snapshot]") {
  const ns wall = seconds(1800000000);
  SECTION("strict windows, budget, pause") {
    // The same run, uninterrupted, is the oracle.
    test_account a(v1_config(server_model::sliding_log), ns(0));
    for (ns t : {milliseconds(3999), milliseconds(41000), milliseconds(43999), milliseconds(43999)}) {
      auto x = a.try_admit(req(1000, 2000), t);
      REQUIRE(x);
      x.lease.settle(usage{1000, 0, 1500, 0, 0}, t);
    }
    a.on_response(classify(429, ""), seconds(10), seconds(44));
    const std::string v1 = unhex(v1_strict);
    REQUIRE(decode(v1).w[0] == 1);
    // Restored 2.5 s of wall time later into a clock 3.999 s into its slot.
    const ns now2 = milliseconds(1003999), down = milliseconds(2500);
    test_account b(v1_config(server_model::sliding_log), ns(0));
    REQUIRE(b.restore(v1, now2, wall + down) == errc_t::ok);
    const ns shift = now2 - down - seconds(44);  // old time + shift = new time
    const auto r0 = b.remaining(now2);
    CHECK(r0.paused_for == seconds(10) - down);
    CHECK(*r0.requests == 6);
    CHECK(*r0.tokens_minute == 100000 - 12000);
    CHECK(*r0.tokens_day == 1000000 - 12000);
    CHECK(*r0.budget == usd::from_units(5) - usd::from_nanos(4 * (1000 * 950 + 1500 * 4000)));
    // Slot 0 left the old window at 64 s, slot 10 at 104 s: the format kept
    // only whole ages, so the restored account keeps them as if the
    // snapshot had been at the start of slot 11 (it was: exactly). (Token
    // remaining() of the old account also counts its threads' leftover
    // credit, which a snapshot leaves out: compared by value.)
    for (ns t = now2; t <= now2 + seconds(70); t += milliseconds(250)) {
      INFO("t " << t.count());
      const auto rb = b.remaining(t), ra = a.remaining(t - shift);
      CHECK(*rb.requests <= *ra.requests);
      CHECK(rb.paused_for >= ra.paused_for);
    }
    const auto at = [&](ns old_time) { return b.remaining(old_time + shift); };
    CHECK(*at(seconds(64) - ns(1)).requests == 6);
    CHECK(*at(seconds(64)).requests == 7);
    CHECK(*at(seconds(64) - ns(1)).tokens_minute == 100000 - 12000);
    CHECK(*at(seconds(64)).tokens_minute == 100000 - 9000);
    CHECK(*at(seconds(104) - ns(1)).requests == 7);
    CHECK(*at(seconds(104)).requests == 10);
    CHECK(*at(seconds(104)).tokens_minute == 100000);
    // The day window's 96-minute slot 0 left the old window at 16 x 96 min;
    // the snapshot was 44 s into that slot, which format 1 did not record:
    // kept 44 s longer.
    CHECK(*at(minutes(16 * 96) + seconds(44) - ns(1)).tokens_day == 1000000 - 12000);
    CHECK(*at(minutes(16 * 96) + seconds(44)).tokens_day == 1000000);
  }
  SECTION("spaced buckets, calendar day") {
    const ns t = wall;
    test_account a(v1_config(server_model::unknown), t);
    for (int i = 0; i < 3; ++i) REQUIRE(a.try_admit(req(1000, 2000), t + seconds(7 * i)));
    const std::string v1 = unhex(v1_spaced);
    test_account b(v1_config(server_model::unknown), seconds(5));
    const ns now2 = t + seconds(15) + milliseconds(700);  // 0.7 s of downtime, on the wall clock
    REQUIRE(b.restore(v1, now2, now2) == errc_t::ok);
    for (ns x = now2; x <= now2 + seconds(20); x += milliseconds(100)) {
      INFO("t " << x.count());
      const auto rb = b.remaining(x), ra = a.remaining(x);
      CHECK(*rb.requests <= *ra.requests);
      CHECK(*rb.tokens_minute <= *ra.tokens_minute);
      CHECK(*rb.tokens_day == *ra.tokens_day);
    }
    CHECK(*b.remaining(now2).tokens_day == 1000000 - 9000);
  }
}

namespace {
struct trial_config {
  account_config c;
  ns wr, wt;  // the request and token windows
};
trial_config random_config(tgtest::rng& r) {
  trial_config t;
  account_config& c = t.c;
  c.model = r.chance(50) ? server_model::sliding_log : server_model::unknown;
  c.rpm = limit(r.between(2, 12));
  c.tpm = limit(r.between(9000, 40000));
  c.tpd = limit(r.between(20000, 120000));
  c.max_request_tokens = 4000;
  c.calendar_day = r.chance(25);
  if (r.chance(50)) c.budget = usd::from_nanos(static_cast<std::int64_t>(r.between(20000000, 200000000)));
  c.request_window = r.chance(50) ? ns(seconds(60)) : ns(milliseconds(r.between(1000, 120000)) + ns(r.between(0, 999999)));
  c.token_window = r.chance(50) ? ns(seconds(60)) : ns(milliseconds(r.between(1000, 120000)) + ns(r.between(1, 999)));
  t.wr = c.request_window;
  t.wt = c.token_window;
  return t;
}
using events = std::vector<std::pair<std::int64_t, std::uint64_t>>;
}  // namespace

TEST_CASE("snapshot: restore at random phases is never more permissive than no restart", "[account][snapshot]") {
  // Random configurations, schedules, snapshot times, downtimes (none, a
  // sub-window and a nanosecond either side, a day, backwards) and origins
  // of the new account. What the old account admitted before the snapshot
  // plus what the restored one admits after (on old time: new time minus the
  // clock offset and the downtime) must keep every bound: no window (t-W, t]
  // over its limit, the spaced buckets' bound, the day's limit, the budget.
  std::uint64_t trials = 0, b_admitted = 0;
  for (std::uint64_t seed : tgtest::seeds(6)) {
    INFO("seed " << seed << " (TOLLGATE_SEED=" << seed << " repeats it)");
    tgtest::rng r(seed);
    for (int trial = 0; trial < 150; ++trial) {
      INFO("trial " << trial);
      const trial_config tc = random_config(r);
      const account_config& c = tc.c;
      const std::int64_t wall0 = 1800000000LL * 1000000000LL + static_cast<std::int64_t>(r.between(0, 86400000000000ULL));
      // A calendar day is read from `now`, which must then be the wall clock.
      const std::int64_t oa = c.calendar_day ? wall0 : static_cast<std::int64_t>(r.between(0, 2000000000000000ULL)) - 1000000000000000LL;
      test_account a(c, ns(oa));
      events req_log, tok_log, day_log;
      std::int64_t money = 0;
      std::int64_t t = oa + static_cast<std::int64_t>(r.between(0, 200000000000ULL));
      const std::int64_t span = std::max(tc.wr.count(), tc.wt.count());
      auto run = [&](test_account& x, std::int64_t from, std::int64_t to, std::int64_t to_old) {
        std::uint64_t n = 0;
        for (std::int64_t u = from; u <= to;) {
          const std::uint64_t p = r.between(1, 1500), m = r.between(1, 2500);
          auto ad = x.try_admit(req(p, m), ns(u));
          if (ad) {
            ++n;
            req_log.emplace_back(u + to_old, 1);
            tok_log.emplace_back(u + to_old, p + m);
            day_log.emplace_back(c.calendar_day ? u : u + to_old, p + m);
            money += ad.worst_case.nanos();
          }
          const unsigned pick = static_cast<unsigned>(r.between(0, 9));
          u += static_cast<std::int64_t>(r.between(0, static_cast<std::uint64_t>(pick < 5 ? span / 400 : pick < 9 ? span / 40 : span / 4)));
        }
        return n;
      };
      const std::int64_t end_a = t + static_cast<std::int64_t>(r.between(0, static_cast<std::uint64_t>(3 * span)));
      (void)run(a, t, end_a, 0);
      if (r.chance(20)) a.on_response(classify(429, ""), milliseconds(r.between(0, 30000)), ns(end_a));
      // Soon after the last admission (within a sub-window), or later.
      const std::int64_t now1 =
          end_a + static_cast<std::int64_t>(r.between(0, static_cast<std::uint64_t>(r.chance(60) ? span / 15 : span)));
      const std::int64_t wall1 = c.calendar_day ? now1 : wall0;
      const std::string bytes = a.snapshot(ns(now1), ns(wall1));
      // Downtime.
      const std::int64_t w = tc.wr.count() / 15 + 1;  // about a request sub-window
      std::int64_t d = 0;
      switch (r.between(0, 7)) {
        case 0: d = 0; break;
        case 1: d = w - 1; break;
        case 2: d = w; break;
        case 3: d = w + 1; break;
        case 4: d = static_cast<std::int64_t>(r.between(0, static_cast<std::uint64_t>(2 * span))); break;
        case 5: d = static_cast<std::int64_t>(r.between(23, 25)) * 3600000000000LL + static_cast<std::int64_t>(r.between(0, 3600000000000ULL)); break;
        case 6: d = -static_cast<std::int64_t>(r.between(1, 100000000000ULL)); break;
        default: d = static_cast<std::int64_t>(r.between(0, 5000000000ULL)); break;
      }
      const std::int64_t wall2 = wall1 + d, dd = d > 0 ? d : 0;
      // The new account: any origin, any phase; on the wall clock for a calendar day.
      const std::int64_t ob = static_cast<std::int64_t>(r.between(0, 4000000000000000ULL)) - 2000000000000000LL;
      const std::int64_t now2 = c.calendar_day ? wall2 : ob + static_cast<std::int64_t>(r.between(0, 20000000000000ULL));
      test_account b(c, ns(c.calendar_day ? wall2 - static_cast<std::int64_t>(r.between(0, 1000000000000ULL)) : ob));
      REQUIRE(b.restore(bytes, ns(now2), ns(wall2)) == errc_t::ok);
      const std::int64_t to_old = now1 + dd - now2;  // new time + to_old = old time
      // Peeks first (nothing consumed): requests, pause and money are never
      // more available than in the old account at the same moment.
      for (int k = 0; k < 12; ++k) {
        const std::int64_t u = now2 + static_cast<std::int64_t>(r.between(0, static_cast<std::uint64_t>(2 * span)));
        const auto rb = b.remaining(ns(u)), ra = a.remaining(ns(u + to_old));
        CHECK(*rb.requests <= *ra.requests);
        CHECK(rb.paused_for >= ra.paused_for);
        if (c.budget) CHECK(*rb.budget <= *ra.budget);
      }
      b_admitted += run(b, now2, now2 + static_cast<std::int64_t>(r.between(0, static_cast<std::uint64_t>(3 * span))), to_old);
      if (c.calendar_day || r.chance(50)) {
        // And a day later, for the daily limit.
        const std::int64_t later = now2 + 86400000000000LL - static_cast<std::int64_t>(r.between(0, 7200000000000ULL));
        b_admitted += run(b, later, later + span, to_old);
      }
      ++trials;
      if (c.model == server_model::sliding_log) {
        CHECK(tgtest::max_window_sum(req_log, tc.wr.count()) <= *c.rpm.value());
        CHECK(tgtest::max_window_sum(tok_log, tc.wt.count()) <= *c.tpm.value());
      } else {
        // One request at a time, spaced: requests at (L - 1) per window plus
        // 2 ms each, burst 1; tokens at (TPM - m) per window, the largest
        // request (m) as the burst.
        const std::uint64_t l = *c.rpm.value() - 1;
        CHECK(tgtest::bucket_bound_excess(req_log, l, static_cast<std::uint64_t>(tc.wr.count()) + 2000000ULL * l, 1) == 0);
        CHECK(tgtest::bucket_bound_excess(tok_log, *c.tpm.value() - c.max_request_tokens, static_cast<std::uint64_t>(tc.wt.count()),
                                          c.max_request_tokens) == 0);
      }
      if (c.calendar_day) {
        std::map<std::int64_t, std::uint64_t> per_day;
        for (const auto& e : day_log) per_day[e.first / 86400000000000LL] += e.second;
        for (const auto& e : per_day) CHECK(e.second <= *c.tpd.value());
      } else {
        CHECK(tgtest::max_window_sum(day_log, 86400000000000LL) <= *c.tpd.value());
      }
      if (c.budget) CHECK(money <= c.budget->nanos());
    }
  }
  CHECK(trials > 0);
  CHECK(b_admitted > 0);  // the restored accounts were exercised
}

namespace {
account_config full_config(server_model m) {
  account_config c = v1_config(m);
  c.budget = usd::from_units(5);
  return c;
}
// A snapshot of an account that has counted something in every dimension.
std::string busy_snapshot(server_model m, ns now, ns wall) {
  test_account a(full_config(m), now - seconds(30));
  for (int i = 0; i < 4; ++i) {
    auto x = a.try_admit(req(1000, 2000), now - seconds(30) + seconds(7 * i));
    REQUIRE(x);
    if (i % 2 == 0) x.lease.settle(usage{1000, 0, 1500, 0, 0}, now - seconds(29) + seconds(7 * i));
  }
  a.on_response(classify(429, ""), seconds(10), now - seconds(2));
  return a.snapshot(now, wall);
}
// Everything remaining() shows, for "nothing changed" checks.
bool same_view(const test_account::remaining_view& x, const test_account::remaining_view& y) {
  return x.concurrency == y.concurrency && x.requests == y.requests && x.tokens_minute == y.tokens_minute &&
         x.tokens_day == y.tokens_day && x.budget == y.budget && x.paused_for == y.paused_for && x.stopped == y.stopped &&
         x.requests_reset_in == y.requests_reset_in && x.tokens_minute_reset_in == y.tokens_minute_reset_in &&
         x.tokens_day_reset_in == y.tokens_day_reset_in;
}
}  // namespace

TEST_CASE("snapshot: fields that do not fit the configuration are refused, changing nothing", "[account][snapshot]") {
  // The checksum is recomputed after each change: only the range checks
  // stand between these bytes and the account.
  const ns wall = seconds(1800000000), now = wall;  // `now` on the wall clock, for the calendar day
  SECTION("strict windows and budget") {
    const std::string good = busy_snapshot(server_model::sliding_log, now, wall);
    const fields f = decode(good);
    // Layout: version, fingerprint, wall, stop, pause; per window: unit, n,
    // n x (time left, units); budget: committed, spent; four gate words; checksum.
    REQUIRE(f.w[0] == 3);
    const std::size_t rpm = 5, rpm_n = f.w[rpm + 1];
    REQUIRE(rpm_n == 4);  // four requests 7 s apart: four 4 s slots
    const std::size_t tpm = rpm + 2 + 2 * rpm_n, tpm_n = f.w[tpm + 1];
    const std::size_t tpd = tpm + 2 + 2 * tpm_n, tpd_n = f.w[tpd + 1];
    const std::size_t money = tpd + 2 + 2 * tpd_n;
    REQUIRE(money + 7 == f.w.size());
    struct change {
      const char* what;
      std::size_t at;
      std::uint64_t value;
      errc_t want;
    };
    const std::uint64_t neg = static_cast<std::uint64_t>(-1), big = std::uint64_t{1} << 63;
    const change changes[] = {
        {"version 4", 0, 4, errc_t::wrong_version},
        {"version 0", 0, 0, errc_t::wrong_version},
        {"stop flag 2", 3, 2, errc_t::out_of_range},
        {"pause beyond INT64_MAX", 4, big, errc_t::out_of_range},
        {"window unit 0", rpm, 0, errc_t::out_of_range},
        {"more entries than slots", rpm + 1, 17, errc_t::out_of_range},
        {"huge entry count", rpm + 1, neg, errc_t::out_of_range},
        {"time left 0", rpm + 2, 0, errc_t::out_of_range},
        {"time left beyond the horizon", rpm + 2, big - 1, errc_t::out_of_range},
        {"entries out of order", rpm + 4, f.w[rpm + 2], errc_t::out_of_range},
        {"units 0", rpm + 3, 0, errc_t::out_of_range},
        {"units above 24 bits", rpm + 3, 1 << 24, errc_t::out_of_range},
        {"token units above 24 bits", tpm + 3, neg, errc_t::out_of_range},
        {"day window count", tpd + 1, 1000, errc_t::out_of_range},
        {"negative committed budget", money, neg, errc_t::out_of_range},
        {"committed below spent", money, f.w[money + 1] - 1, errc_t::out_of_range},
        {"negative spent", money + 1, big, errc_t::out_of_range},
        {"request gate beyond INT64_MAX", money + 2, big, errc_t::out_of_range},
        {"token gate beyond INT64_MAX", money + 4, big, errc_t::out_of_range},
    };
    for (const change& ch : changes) {
      INFO(ch.what);
      fields g = f;
      g.w[ch.at] = ch.value;
      test_account c(full_config(server_model::sliding_log), now);
      const auto before = c.remaining(now);
      CHECK(c.restore(encode(g), now, wall) == ch.want);
      CHECK(same_view(c.remaining(now), before));
      // Nothing half-applied, and the account still takes a good snapshot.
      CHECK(c.restore(good, now, wall) == errc_t::ok);
      CHECK(*c.remaining(now).requests == 6);
    }
    // Lengths: a word short or a word long, with a valid checksum.
    fields shorter = f, longer = f;
    shorter.w.erase(shorter.w.begin() + static_cast<std::ptrdiff_t>(money));
    longer.w.insert(longer.w.end() - 1, 0);
    test_account c(full_config(server_model::sliding_log), now);
    CHECK(c.restore(encode(shorter), now, wall) == errc_t::truncated);
    CHECK(c.restore(encode(longer), now, wall) == errc_t::truncated);
    // A count above the limit but within the field (a debt) is kept: it
    // refuses everything until it has left.
    fields debt = f;
    debt.w[tpm + 3] = 200000;
    test_account d(full_config(server_model::sliding_log), now);
    REQUIRE(d.restore(encode(debt), now, wall) == errc_t::ok);
    CHECK(*d.remaining(now).tokens_minute == 0);
    CHECK_FALSE(d.try_admit(req(1, 1), now + seconds(11)));
  }
  SECTION("spaced buckets and a calendar day") {
    account_config cfg = full_config(server_model::unknown);
    cfg.calendar_day = true;
    test_account a(cfg, now - seconds(30));
    REQUIRE(a.try_admit(req(1000, 2000), now - seconds(30)));
    const std::string good = a.snapshot(now, wall);
    const fields f = decode(good);
    // version, fingerprint, wall, stop, pause, owed (requests), owed
    // (tokens), day word, committed, spent, four gate words, checksum.
    REQUIRE(f.w.size() == 15);
    const std::uint64_t today = static_cast<std::uint64_t>(now.count() / 86400000000000LL);
    REQUIRE(f.w[7] >> 40 == today);
    struct change {
      const char* what;
      std::size_t at;
      std::uint64_t value;
      errc_t want;
    };
    const change changes[] = {
        {"request bucket owes beyond its horizon", 5, std::uint64_t{1} << 63, errc_t::out_of_range},
        {"token bucket owes beyond its horizon", 6, static_cast<std::uint64_t>(i64max), errc_t::out_of_range},
        {"a day two days ahead", 7, (today + 2) << 40, errc_t::out_of_range},
        {"the last day of the field", 7, ~std::uint64_t{0}, errc_t::out_of_range},
    };
    for (const change& ch : changes) {
      INFO(ch.what);
      fields g = f;
      g.w[ch.at] = ch.value;
      test_account c(cfg, now);
      const auto before = c.remaining(now);
      CHECK(c.restore(encode(g), now, wall) == ch.want);
      CHECK(same_view(c.remaining(now), before));
    }
    // Tomorrow (a clock a day ahead) and a full day's usage are accepted:
    // no more permissive than the state says.
    fields g = f;
    g.w[7] = ((today + 1) << 40) | 5;
    test_account c(cfg, now);
    REQUIRE(c.restore(encode(g), now, wall) == errc_t::ok);
    CHECK_FALSE(c.try_admit(req(1, 1), now + seconds(60)));  // today is stale against tomorrow's state
  }
}

TEST_CASE("snapshot: a restore into an account in use is refused; one racing admissions keeps the bound", "[account][snapshot]") {
  const ns wall = seconds(1800000000);
  test_account full(rpm_only(10), ns(0));
  for (int i = 0; i < 10; ++i) REQUIRE(full.try_admit(req(1, 0), seconds(1)));
  const std::string bytes = full.snapshot(seconds(2), wall);
  SECTION("after one admission") {
    test_account b(rpm_only(10), ns(0));
    REQUIRE(b.try_admit(req(1, 0), seconds(2)));
    const auto before = b.remaining(seconds(2));
    CHECK(b.restore(bytes, seconds(2), wall) == errc_t::in_use);
    CHECK(same_view(b.remaining(seconds(2)), before));
    // The restore did not replace the count: 9 more, not 0, and not 10.
    int n = 0;
    while (b.try_admit(req(1, 0), seconds(2))) ++n;
    CHECK(n == 9);
  }
  SECTION("refusals alone do not put an account in use; a second restore replaces the first") {
    test_account c(rpm_only(10), ns(0));
    request huge = req(1, 0);
    huge.max_tokens = std::uint64_t{1} << 40;  // beyond the model's context: never
    CHECK(c.try_admit(huge, seconds(1)).decision.never());
    CHECK(c.restore(bytes, seconds(2), wall) == errc_t::ok);
    CHECK(*c.remaining(seconds(2)).requests == 0);
    test_account empty(rpm_only(10), ns(0));
    CHECK(c.restore(empty.snapshot(seconds(2), wall), seconds(2), wall) == errc_t::ok);
    CHECK(*c.remaining(seconds(2)).requests == 10);
  }
  SECTION("threads admitting while it runs") {
    // Either the restore wins and every admission sees the restored (full)
    // window, or an admission wins and the restore is refused: never both.
    for (int round = 0; round < 40; ++round) {
      INFO("round " << round);
      test_account b(rpm_only(10), ns(0));
      std::atomic<int> go{0}, admitted{0};
      std::vector<std::thread> ts;
      for (int k = 0; k < 3; ++k)
        ts.emplace_back([&] {
          go.fetch_add(1);
          while (go.load() < 4) {
          }
          for (int i = 0; i < 200; ++i)
            if (b.try_admit(req(1, 0), seconds(2))) admitted.fetch_add(1);
        });
      go.fetch_add(1);
      while (go.load() < 4) {
      }
      const errc_t e = b.restore(bytes, seconds(2), wall);
      for (auto& t : ts) t.join();
      CHECK((e == errc_t::ok || e == errc_t::in_use));
      if (e == errc_t::ok) CHECK(admitted.load() == 0);
      else CHECK(admitted.load() == 10);
    }
  }
}

TEST_CASE("snapshot: extreme wall and now are defined; a clock that went backwards is no downtime", "[account][snapshot]") {
  const std::int64_t extremes[] = {i64min, i64min + 1, -1, 0, 1800000000LL * 1000000000LL, i64max - 1, i64max};
  for (server_model m : {server_model::sliding_log, server_model::unknown}) {
    for (std::int64_t now1 : extremes)
      for (std::int64_t wall1 : {i64min, std::int64_t{0}, i64max}) {
        account_config c = rpm_only(3);
        c.model = m;
        test_account a2(c, ns(now1));
        for (int i = 0; i < 3; ++i) (void)a2.try_admit(req(1, 0), ns(now1));
        a2.on_response(classify(429, ""), seconds(5), ns(now1));
        const std::string bytes = a2.snapshot(ns(now1), ns(wall1));
        for (std::int64_t now2 : extremes)
          for (std::int64_t wall2 : {i64min, wall1, i64max}) {
            INFO(to_string(m) << " now " << now1 << " -> " << now2 << ", wall " << wall1 << " -> " << wall2);
            test_account b(c, ns(now2));
            const errc_t e = b.restore(bytes, ns(now2), ns(wall2));
            CHECK((e == errc_t::ok || e == errc_t::out_of_range));
            if (e != errc_t::ok) continue;
            const auto v = b.remaining(ns(now2));
            (void)b.try_admit(req(1, 0), ns(now2));
            // Backwards or no wall time: nothing has aged (unless `now`
            // itself saturates at the end of time).
            if (wall2 <= wall1 && now2 < i64max - 1 && now1 < i64max - 1) CHECK(*v.requests == 0);
          }
      }
  }
  // A wall clock that went back an hour: as if no time passed.
  test_account a(rpm_only(3), ns(0));
  for (int i = 0; i < 3; ++i) REQUIRE(a.try_admit(req(1, 0), seconds(1)));
  const ns wall = seconds(1800000000);
  const std::string bytes = a.snapshot(seconds(2), wall);
  test_account b(rpm_only(3), ns(0)), c(rpm_only(3), ns(0));
  REQUIRE(b.restore(bytes, seconds(500), wall - hours(1)) == errc_t::ok);
  REQUIRE(c.restore(bytes, seconds(500), wall) == errc_t::ok);
  for (ns t = seconds(500); t < seconds(600); t += milliseconds(500))
    CHECK(same_view(b.remaining(t), c.remaining(t)));
  CHECK(*b.remaining(seconds(500) + seconds(59) - ns(1)).requests == 0);
  CHECK(*b.remaining(seconds(500) + seconds(63)).requests == 3);
}

namespace {
// A tiny copy of 0.1.0's encoder, fed from a format 3 snapshot of a strict
// account: each window's entries become (age in slots of `now`'s slot,
// units), without the unit word, and the four gate words go. `widths` are the windows' slot widths, in
// the order they are written; `origin` and `now` those of the snapshot.
std::string as_format_1(const std::string& v2, const std::vector<std::int64_t>& widths, std::int64_t origin, std::int64_t now) {
  const fields f = decode(v2);
  fields g;
  g.tag = f.tag;
  g.w.assign(f.w.begin(), f.w.begin() + 5);
  g.w[0] = 1;
  std::size_t at = 5;
  for (const std::int64_t w : widths) {
    const std::uint64_t n = f.w[at + 1];
    g.w.push_back(n);
    const std::int64_t s = (now - origin) / w;
    for (std::uint64_t k = 0; k < n; ++k) {
      const std::int64_t left = static_cast<std::int64_t>(f.w[at + 2 + 2 * k]);
      const std::int64_t j = (now + left - origin) / w - 16;  // left runs to the start of slot j + K + 1
      g.w.push_back(static_cast<std::uint64_t>(s - j));
      g.w.push_back(f.w[at + 3 + 2 * k]);
    }
    at += 2 + 2 * n;
  }
  g.w.insert(g.w.end(), f.w.begin() + static_cast<std::ptrdiff_t>(at), f.w.end() - 5);
  g.w.push_back(0);  // the checksum's place
  return encode(g);
}
}  // namespace

TEST_CASE("snapshot: a 0.1.0 snapshot at a random phase restores at most one slot more strictly", "[account][snapshot]") {
  // The same state in both formats, restored into twin accounts: format 1
  // keeps each count at least as long as format 2 (never more permissive)
  // and less than one slot longer.
  std::uint64_t compared = 0;
  for (std::uint64_t seed : tgtest::seeds(4)) {
    INFO("seed " << seed << " (TOLLGATE_SEED=" << seed << " repeats it)");
    tgtest::rng r(seed);
    for (int trial = 0; trial < 60; ++trial) {
      INFO("trial " << trial);
      trial_config tc = random_config(r);
      account_config& c = tc.c;
      c.model = server_model::sliding_log;
      c.calendar_day = false;
      const std::int64_t oa = static_cast<std::int64_t>(r.between(0, 2000000000000000ULL)) - 1000000000000000LL;
      test_account a(c, ns(oa));
      std::int64_t t = oa + static_cast<std::int64_t>(r.between(0, 100000000000ULL));
      const std::int64_t span = std::max(tc.wr.count(), tc.wt.count());
      for (int k = 0; k < 40; ++k) {
        (void)a.try_admit(req(r.between(1, 1500), r.between(1, 2500)), ns(t));
        t += static_cast<std::int64_t>(r.between(0, static_cast<std::uint64_t>(span / 20)));
      }
      const std::int64_t now1 = t + static_cast<std::int64_t>(r.between(0, static_cast<std::uint64_t>(span / 10)));
      const ns wall = seconds(1800000000);
      const std::string v2 = a.snapshot(ns(now1), wall);
      const std::int64_t wr = (tc.wr.count() + 14) / 15, wt = (tc.wt.count() + 14) / 15, wd = 5760000000000LL;
      const std::string v1 = as_format_1(v2, {wr, wt, wd}, oa, now1);
      const std::int64_t ob = static_cast<std::int64_t>(r.between(0, 2000000000000000ULL)) - 1000000000000000LL;
      const std::int64_t now2 = ob + static_cast<std::int64_t>(r.between(0, 10000000000000ULL));
      const ns down = ns(static_cast<std::int64_t>(r.between(0, static_cast<std::uint64_t>(span))));
      test_account b1(c, ns(ob)), b2(c, ns(ob));
      REQUIRE(b1.restore(v1, ns(now2), wall + down) == errc_t::ok);
      REQUIRE(b2.restore(v2, ns(now2), wall + down) == errc_t::ok);
      for (int k = 0; k < 20; ++k) {
        const ns u = ns(now2 + static_cast<std::int64_t>(r.between(0, static_cast<std::uint64_t>(span + span / 8))));
        const auto x1 = b1.remaining(u), x2 = b2.remaining(u);
        CHECK(*x1.requests <= *x2.requests);
        CHECK(*x1.tokens_minute <= *x2.tokens_minute);
        CHECK(*x1.tokens_day <= *x2.tokens_day);
        CHECK(*b1.remaining(u + ns(wr)).requests >= *x2.requests);
        CHECK(*b1.remaining(u + ns(wt)).tokens_minute >= *x2.tokens_minute);
        ++compared;
      }
    }
  }
  CHECK(compared > 0);
}

TEST_CASE("snapshot: a restore keeps a stop set before it (a02)", "[account][snapshot]") {
  const account_config c = account_config::from_tier(*kimi_tiers_latest.tier(1));
  const ns now = seconds(100), wall = seconds(1700000000);
  test_account before(c, now);
  const std::string bytes = before.snapshot(now, wall);  // not stopped
  test_account after(c, now);
  error_info e;
  e.kind = error_kind::quota;  // a balance error: stop until resume()
  after.on_response(e, std::nullopt, now);
  REQUIRE(after.stopped());
  CHECK(after.restore(bytes, now, wall) == errc_t::ok);
  CHECK(after.stopped());
  const auto x = after.try_admit(req(10, 100), now);
  CHECK_FALSE(x);
  CHECK(x.refused.has(dimension::stopped));
  after.resume();
  CHECK(after.try_admit(req(10, 100), now));
}

TEST_CASE("snapshot: a restored paused account states its full wait (a16)", "[account][snapshot]") {
  for (server_model m : {server_model::sliding_log, server_model::unknown}) {
    INFO("server model " << to_string(m));
    account_config c;
    c.model = m;
    c.rpm = limit(3);
    const ns now = seconds(1000), wall = seconds(1700000000);
    test_account a(c, now);
    while (a.try_admit(req(10, 10), now)) {
    }
    error_info e;
    e.kind = error_kind::overloaded;
    a.on_response(e, seconds(1), now);
    const auto own = a.try_admit(req(10, 10), now);
    REQUIRE(own.decision.later());
    const std::string bytes = a.snapshot(now, wall);
    test_account b(c, seconds(5));
    REQUIRE(b.restore(bytes, seconds(5), wall) == errc_t::ok);
    const auto x = b.try_admit(req(10, 10), seconds(5));
    REQUIRE(x.decision.later());
    CHECK(x.decision.retry_after() == own.decision.retry_after());  // no time passed between them
    CHECK(x.refused.has(dimension::rpm));
    CHECK_FALSE(b.try_admit(req(10, 10), seconds(5) + x.decision.retry_after() - ns(1)));
    CHECK(b.try_admit(req(10, 10), seconds(5) + x.decision.retry_after()));
  }
}

namespace {
struct uptime_clock {  // a steady clock: zero at boot, not 1970
  static ns now() noexcept { return ns(0); }
};
}  // namespace

TEST_CASE("snapshot: the calendar day survives a reboot of a steady clock (a17)", "[account][snapshot]") {
  using boot_account = account<uptime_clock>;
  const ns monday = hours(24) * 20780;  // 2026-11-23T00:00:00Z
  account_config c;
  c.tpd = limit(100000);
  c.model = server_model::sliding_log;
  c.calendar_day = true;
  c.budget = usd::from_units(5);
  // Booted three days ago; now Monday 10:00 UTC.
  const ns up_a = hours(72) + seconds(100);
  c.unix_time_at_zero = monday + hours(10) - up_a;
  boot_account a(c, up_a);
  auto x = a.try_admit(req(40000, 20000), up_a);
  REQUIRE(x);
  x.lease.settle(usage{40000, 0, 20000, 0, 0}, up_a);
  const ns wall_a = monday + hours(10);
  const std::string bytes = a.snapshot(up_a, wall_a);
  // Rebooted: the new clock is at 50 s at Monday 11:00 UTC.
  const ns up_b = seconds(50);
  c.unix_time_at_zero = monday + hours(11) - up_b;
  boot_account b(c, up_b);
  REQUIRE(b.restore(bytes, up_b, monday + hours(11)) == errc_t::ok);
  CHECK(*b.remaining(up_b).tokens_day == 40000);  // the day's usage kept
  CHECK(*b.budget_remaining() == *a.budget_remaining());
  CHECK(b.remaining(up_b).tokens_day_reset_in == hours(13));
  CHECK_FALSE(b.try_admit(req(40000, 20000), up_b));
  CHECK(b.try_admit(req(20000, 20000), up_b));
}

TEST_CASE("snapshot: format 2 still restores; format 3 carries what learn learned and the header gates", "[account][snapshot]") {
  const ns wall = seconds(1800000000), now = wall;
  SECTION("format 2: format 3 without the gate words") {
    const std::string good = busy_snapshot(server_model::sliding_log, now, wall);
    fields f = decode(good);
    REQUIRE(f.w[0] == 3);
    f.w[0] = 2;
    f.w.erase(f.w.end() - 5, f.w.end() - 1);  // the four gate words, before the checksum
    test_account c(full_config(server_model::sliding_log), now);
    REQUIRE(c.restore(encode(f), now, wall) == errc_t::ok);
    test_account d(full_config(server_model::sliding_log), now);
    REQUIRE(d.restore(good, now, wall) == errc_t::ok);
    CHECK(same_view(c.remaining(now), d.remaining(now)));
  }
  SECTION("learn: switched, widened, range-checked") {
    account_config cfg;
    cfg.model = server_model::learn;
    cfg.rpm = limit(3);
    cfg.lease_timeout = ns(0);
    test_account a(cfg, now);
    REQUIRE(a.try_admit(req(0, 0), now));
    const std::string e429 =
        R"({"error":{"message":"request reached organization max RPM: 3","type":"rate_limit_reached_error"}})";
    a.on_response(classify(429, e429), std::nullopt, now);
    REQUIRE(a.learned(now).switches == 1);
    const std::string good = a.snapshot(now + seconds(5), wall + seconds(5));
    const fields f = decode(good);
    // ..., since, guard, lead, owed (requests), margin, widenings, four gate words, checksum.
    const std::size_t lw = f.w.size() - 1 - 4 - 6;
    REQUIRE(f.w[lw] == std::uint64_t(ns(seconds(5)).count()));  // switched 5 s before the snapshot
    test_account b(cfg, now);
    REQUIRE(b.restore(good, now + seconds(7), wall + seconds(7)) == errc_t::ok);
    const learned_view v = b.learned(now + seconds(7));
    CHECK(v.switches == 1);
    REQUIRE(v.requests_switched_at);
    CHECK(*v.requests_switched_at == now);  // 5 s before the snapshot, 2 s of wall clock since
    CHECK(v.requests == account_policy::learn_phase::both);
    CHECK(v.margin == a.learned(now).margin);
    struct change {
      const char* what;
      std::size_t at;
      std::uint64_t value;
    };
    const std::uint64_t big = std::uint64_t{1} << 63;
    const change changes[] = {
        {"guard beyond INT64_MAX", lw + 1, big},
        {"lead beyond INT64_MAX", lw + 2, big},
        {"owed beyond INT64_MAX", lw + 3, big},
        {"a guard with no switch", lw, ~std::uint64_t{0}},
        {"margin below the configured one", lw + 4, 0},
        {"margin above the widest", lw + 4, std::uint64_t(ns(seconds(1)).count())},
    };
    for (const change& ch : changes) {
      INFO(ch.what);
      fields g = f;
      g.w[ch.at] = ch.value;
      test_account c(cfg, now);
      CHECK(c.restore(encode(g), now, wall) == errc_t::out_of_range);
      CHECK(c.learned(now).switches == 0);
    }
    // The same snapshot rewritten as format 2 (the learned words and the
    // gates dropped) or given format 1's number: learn came with format 3,
    // so no genuine older snapshot of it exists; restoring one would forget
    // the switch.
    for (const std::uint64_t older : {std::uint64_t{2}, std::uint64_t{1}}) {
      INFO("version " << older);
      fields g = f;
      g.w[0] = older;
      g.w.erase(g.w.end() - 1 - 4 - 6, g.w.end() - 1);
      test_account c(cfg, now);
      CHECK(c.restore(encode(g), now, wall) == errc_t::wrong_version);
      CHECK(c.learned(now).switches == 0);
    }
  }
  SECTION("trust_rate_limit_headers: no format 1 or 2 snapshot of it exists") {
    account_config cfg = full_config(server_model::sliding_log);
    cfg.trust_rate_limit_headers = true;
    test_account a(cfg, now);
    const std::string good = a.snapshot(now, wall);
    fields f = decode(good);
    REQUIRE(f.w[0] == 3);
    test_account b(cfg, now);
    REQUIRE(b.restore(good, now, wall) == errc_t::ok);
    for (const std::uint64_t older : {std::uint64_t{2}, std::uint64_t{1}}) {
      INFO("version " << older);
      fields g = f;
      g.w[0] = older;
      g.w.erase(g.w.end() - 5, g.w.end() - 1);  // the four gate words
      test_account c(cfg, now);
      CHECK(c.restore(encode(g), now, wall) == errc_t::wrong_version);
    }
  }
}

TEST_CASE("snapshot: learn after set_limits to a higher tier restores into the limits in force", "[account][snapshot]") {
  // Tier0 (RPM 3: built strict) moved to RPM 100 (built spaced) by
  // set_limits: the running account keeps its strict start and has not
  // switched; an account built from its config() starts RPM spaced.
  // Restoring refused that as "never switched" (out_of_range), and the
  // fingerprint refuses every other configuration: the budget's spending
  // was lost with the snapshot.
  const ns wall = seconds(1800000000), now = seconds(100);
  account_config cfg = account_config::from_tier(*kimi_tiers_latest.tier(0), server_model::learn);
  cfg.budget = usd::from_units(5);
  cfg.lease_timeout = ns(0);
  test_account a(cfg, now);
  tier_row up = *kimi_tiers_latest.tier(0);
  up.rpm = limit(100);
  up.tpm = kimi_tiers_latest.tier(1)->tpm;
  REQUIRE(a.set_limits(up, now) == errc::ok);
  REQUIRE(std::string(a.policy(dimension::rpm)) == "strict window (learning)");
  for (int i = 0; i < 20; ++i) {
    auto x = a.try_admit(req(1000, 1000), now);
    REQUIRE(x);
    x.lease.settle(usage{1000, 0, 800}, now);
  }
  const auto spent = *a.budget_remaining();
  const std::string bytes = a.snapshot(now, wall);

  test_account b(a.config(), seconds(5));
  REQUIRE(std::string(b.policy(dimension::rpm)).find("spaced") == 0);
  REQUIRE(b.restore(bytes, seconds(5), wall + seconds(1)) == errc_t::ok);  // was out_of_range
  CHECK(*b.budget_remaining() == spent);
  // Spaced from the restore, its bucket charged from the strict traffic's
  // shadow (20 requests, 1 s of wall clock since): a fresh bucket would
  // admit at once.
  const auto x = b.try_admit(req(10, 10), seconds(5));
  REQUIRE(x.decision.later());
  CHECK(x.refused.has(dimension::rpm));
  const ns w = x.decision.retry_after();
  CHECK(w > seconds(5));
  CHECK_FALSE(b.try_admit(req(10, 10), seconds(5) + w - ns(1)));
  CHECK(b.try_admit(req(10, 10), seconds(5) + w));

  // The construction's configuration is another one now.
  test_account c(cfg, seconds(5));
  CHECK(c.restore(bytes, seconds(5), wall + seconds(1)) == errc_t::other_configuration);

  SECTION("the other way: built spaced, moved down to a strict start") {
    account_config hi = a.config();
    test_account d(hi, now);
    REQUIRE(d.set_limits(*kimi_tiers_latest.tier(0), now) == errc::ok);
    const std::string down = d.snapshot(now, wall);
    test_account e(d.config(), seconds(5));
    REQUIRE(std::string(e.policy(dimension::rpm)) == "strict window (learning)");
    REQUIRE(e.restore(down, seconds(5), wall + seconds(1)) == errc_t::ok);
    CHECK(e.learned(seconds(5)).requests == account_policy::learn_phase::spaced);  // as d runs it
  }
}
