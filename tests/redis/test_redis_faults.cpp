// Faults, each with its rule (redis/account.hpp, redis/script.hpp):
//   state lost (redis-server restarted without persistence mid-run): nothing
//     admitted for the hold (the longest window: here a rolling 24 h), then the
//     budget refuses until restored; no window's bound broken across the loss;
//   the lease set lost on its own (an eviction): nothing admitted until
//     what it held has left (lease_end, kept in the epoch); the epoch kept
//     (in the ctest entry of the restart group: state lost);
//   garbage in any of the account's keys: outcome::corrupt, no admission,
//     no key changed;
//   a stopped server (SIGSTOP) past the client's timeout: a refusal; a call
//     that timed out may have been applied, and its lease then holds its slot
//     until its deadline, never less.
#include "../catch_compat.hpp"
#include "../account_support.hpp"
#include "../support.hpp"
#include "../tollgate_under_test.hpp"
#include "redis_support.hpp"

#include <tollgate/redis/account.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
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
constexpr std::int64_t sec = 1000000 * us;

// A call that may meet a connection the restart broke: one retry.
template <class F>
auto retry_once(F f) {
  auto r = f();
  if (r.how == tr::outcome::server_error) r = f();
  return r;
}

}  // namespace

TEST_CASE("redis: a restart loses the state; the hold keeps every bound", "[redis_server][restart]") {
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port());
  account_config c;
  c.model = server_model::sliding_log;
  c.rpm = limit(20);
  c.tpm = limit(2000);
  c.tpd = limit(20000);
  c.concurrency = limit(3);
  c.budget = usd::from_nanos(1000000000);
  c.lease_timeout = std::chrono::seconds(30);
  const nanoseconds origin(1700000000 * sec);
  redis_account a("restart", c, exec{&conn}, tr::options{true});
  REQUIRE(a.create(true, origin.count() / us) == tr::outcome::ok);

  const std::uint64_t seed = tgtest::seed_for(17201);
  tgtest::rng g(seed);
  INFO(tgtest::seed_note() << " stream seed " << seed);
  std::vector<std::pair<std::int64_t, std::uint64_t>> reqs, toks;  // admissions (µs, units)
  nanoseconds now = origin;
  const nanoseconds loss_at = origin + std::chrono::hours(20);
  bool restarted = false;
  std::int64_t first_after = -1, hold_end = -1;
  std::uint64_t held = 0, budget_held = 0, admitted_after = 0;
  bool restored = false;
  for (int step = 0; step < 12000; ++step) {
    now += nanoseconds(static_cast<std::int64_t>(g.between(0, 40)) * sec);
    if (!restarted && now >= loss_at) {
      srv.stop();
      REQUIRE(srv.start());
      restarted = true;
    }
    auto x = retry_once([&] { return a.try_admit(tgtest::req(g.between(1, 100), g.between(1, 200)), now); });
    if (restarted && first_after < 0) {
      // The first call after the loss finds no epoch and starts the hold.
      REQUIRE(x.how == tr::outcome::held);
      first_after = now.count() / us;
      hold_end = first_after + static_cast<std::int64_t>(a.state_layout().hold_us);
      REQUIRE(x.d.retry_after().count() == static_cast<std::int64_t>(a.state_layout().hold_us) * us);
    }
    if (x.how == tr::outcome::held) {
      ++held;
      REQUIRE(now.count() / us < hold_end);
      REQUIRE(x.d.retry_after().count() == (hold_end - now.count() / us) * us);
    }
    if (x.how == tr::outcome::budget_held) {
      ++budget_held;
      REQUIRE(now.count() / us >= hold_end);
      if (budget_held == 5) {
        REQUIRE(a.restore_budget(usd::from_nanos(0), usd::from_nanos(0), now) == tr::outcome::ok);
        restored = true;
      }
    }
    if (x) {
      REQUIRE(x.how == tr::outcome::ok);
      REQUIRE((!restarted || now.count() / us >= hold_end));
      REQUIRE((!restarted || restored));
      if (restarted) ++admitted_after;
      reqs.emplace_back(now.count() / us, 1);
      toks.emplace_back(now.count() / us, x.tokens);
      auto l = std::move(x.lease);
      if (g.chance(50)) l.settle(usage{g.between(0, 100), 0, g.between(0, 100), 0, 0});
    }
    if (restarted && admitted_after > 50) break;
  }
  REQUIRE(restarted);
  CHECK(held > 100);
  CHECK(budget_held >= 5);
  CHECK(admitted_after > 50);
  // Every window's bound across the loss (the script's windows: µs, rounded up).
  const tr::layout& l = a.state_layout();
  CHECK(tgtest::max_window_sum(reqs, static_cast<std::int64_t>(l.w[0].period_us)) <= 20);
  CHECK(tgtest::max_window_sum(toks, static_cast<std::int64_t>(l.w[1].period_us)) <= 2000);
  CHECK(tgtest::max_window_sum(toks, static_cast<std::int64_t>(l.w[2].period_us)) <= 20000);
  // The daily window was full at the loss: without the hold it would not be.
  CHECK(tgtest::max_window_sum(toks, static_cast<std::int64_t>(l.w[2].period_us)) > 15000);
}

// What the script cannot tell from its own writing: a field removed (every
// field but the first 13 is written first when it is first needed, so one
// missing reads as 0) or set to a value the script could write. Such a
// change is not garbage but other state, decided as it stands: removing a
// window's count frees that window (stated in layout.hpp).
TEST_CASE("redis: garbage in the account's keys is refused, nothing written", "[redis_server][garbage]") {
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port()), admin(srv.port());
  account_config c;
  c.model = server_model::fixed_window;
  c.rpm = limit(100);
  c.tpm = limit(100000);
  c.tpd = limit(1000000);
  c.concurrency = limit(5);
  c.budget = usd::from_nanos(1000000000);
  const nanoseconds now(1700000000 * sec);
  struct spoil {
    const char* part;
    std::vector<std::string> cmd;  // {part} stands for the key
    std::int64_t at_s = 0;          // the refused calls' time, s after the first admission
  };
  // A window's ring (its older sub-windows) is read when a decision needs
  // it: past the head's sub-window (4 s here), so those cases call later.
  const std::vector<spoil> cases = {
      {"epoch", {"DEL", "{}", "SET", "{}", "x"}},
      {"epoch", {"HSET", "{}", "origin", "abc"}},
      {"epoch", {"HSET", "{}", "committed", "-5"}},
      {"epoch", {"HSET", "{}", "pause", "1.5"}},
      {"epoch", {"HSET", "{}", "last", "1e300"}},
      {"epoch", {"HDEL", "{}", "next"}},
      {"epoch", {"HSET", "{}", "lv", "1"}},
      {"epoch", {"HSET", "{}", "lv", "2"}},  // an epoch of layout 2 (no buckets, no calendar day): refused, never misread
      {"epoch", {"HSET", "{}", "tq", "1.5"}},
      {"epoch", {"HSET", "{}", "rg", "x"}},
      {"epoch", {"HSET", "{}", "cu", "-1"}},
      {"epoch", {"HSET", "{}", "lcount", "x"}},
      {"epoch", {"HSET", "{}", "lease_end", "-1"}},
      {"epoch", {"HSET", "{}", "rh", "x"}},
      {"epoch", {"HSET", "{}", "tc", "-1"}},
      {"epoch", {"HSET", "{}", "ds", "1.5"}},
      {"epoch", {"HSET", "{}", "r3", "-1"}, 5},
      {"epoch", {"HSET", "{}", "t15", "abc"}, 9},
      // Text the script never writes (it writes digits only), and flags past 1:
      // once read as numbers, they lifted a stop or a hold.
      {"epoch", {"HSET", "{}", "stop", "2"}},
      {"epoch", {"HSET", "{}", "stop", " 1"}},
      {"epoch", {"HSET", "{}", "started", "7"}},
      {"epoch", {"HSET", "{}", "bhold", "2"}},
      {"epoch", {"HSET", "{}", "hold", "1e3"}},
      {"epoch", {"HSET", "{}", "rc", "0x10"}},
      {"epoch", {"HSET", "{}", "pause", "+5"}},
      {"leases", {"SET", "{}", "x"}},
      {"leases", {"ZADD", "{}", "1e300", "99"}},
      {"leases", {"LPUSH", "{}", "a"}},
  };
  int n = 0;
  for (const spoil& s : cases) {
    INFO("case " << n << ": " << s.part << " " << s.cmd[0]);
    redis_account a("garbage-" + std::to_string(n++), c, exec{&conn}, tr::options{true});
    REQUIRE(a.create(true, now.count() / us) == tr::outcome::ok);
    REQUIRE(a.try_admit(tgtest::req(10, 10), now));
    const std::string key = a.state_layout().key(s.part);
    // DEL first when the case replaces the key's type.
    std::vector<std::string> cmd;
    for (const std::string& w : s.cmd) cmd.push_back(w == "{}" ? key : w);
    if (cmd[0] == "DEL") {
      REQUIRE(admin.call({cmd[0], cmd[1]}).type == tr::reply::kind::integer);
      cmd.erase(cmd.begin(), cmd.begin() + 2);
    } else if (cmd[0] == "SET" || cmd[0] == "LPUSH") {
      REQUIRE(admin.call({"DEL", key}).type == tr::reply::kind::integer);
    }
    const tr::reply w = admin.call(cmd);
    REQUIRE(w.type != tr::reply::kind::error);
    auto dump = [&] {
      std::vector<std::string> out;
      for (const char* p : {"epoch", "leases"}) {
        const tr::reply r = admin.call({"DUMP", a.state_layout().key(p)});
        out.push_back(r.type == tr::reply::kind::string ? r.str : std::string("(none)"));
      }
      return out;
    };
    const auto before = dump();
    for (int i = 0; i < 3; ++i) {
      const auto x = a.try_admit(tgtest::req(10, 10), now + nanoseconds((s.at_s + i) * sec));
      REQUIRE_FALSE(x);
      REQUIRE_FALSE(x.lease);
      REQUIRE(x.how == tr::outcome::corrupt);
    }
    CHECK(a.remaining(now + nanoseconds(s.at_s * sec)).how != tr::outcome::ok);
    CHECK(dump() == before);
  }
}

TEST_CASE("redis: a stopped server past the timeout refuses; a lost admission holds its slot to its deadline",
          "[redis_server][timeout]") {
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port(), 300), admin(srv.port());
  account_config c;
  c.model = server_model::sliding_log;
  c.concurrency = limit(1);
  c.rpm = limit(1000);
  c.lease_timeout = std::chrono::seconds(10);
  const nanoseconds t0(1700000000 * sec);
  redis_account a("timeout", c, exec{&conn}, tr::options{true});
  REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
  {
    auto x = a.try_admit(tgtest::req(1, 1), t0);
    REQUIRE(x);
  }  // dropped: the release is queued
  srv.pause_process();
  const auto y = a.try_admit(tgtest::req(1, 1), t0 + nanoseconds(sec));
  srv.continue_process();
  REQUIRE_FALSE(y);
  REQUIRE(y.how == tr::outcome::server_error);
  REQUIRE(a.queued_count() == 1);  // kept, sent again
  // The server may still run the call it had queued: wait (bounded) until
  // it answers again, then see whether that admission landed.
  int answered = -1;  // 1: lease 2 (the timed-out call's) is in the set
  for (int i = 0; i < 50 && answered < 0; ++i) {
    const tr::reply r = admin.call({"ZSCORE", a.state_layout().key("leases"), "2"});
    if (r.type == tr::reply::kind::nil) answered = 0;
    else if (r.type == tr::reply::kind::string) answered = 1;
    else std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(answered >= 0);
  // The first lease's release rides on this call. The lost admission's lease
  // (if it landed) keeps the one slot until its deadline, t0 + 1 s + 10 s.
  const auto z = a.try_admit(tgtest::req(1, 1), t0 + nanoseconds(2 * sec));
  REQUIRE(z.how == tr::outcome::ok);
  REQUIRE(a.queued_count() == 0);
  const bool landed = answered == 1;
  INFO("the timed-out admission " << (landed ? "landed" : "did not land"));
  if (landed) {
    REQUIRE(z.d.why() == reason::busy);
    const auto before = a.try_admit(tgtest::req(1, 1), t0 + nanoseconds(11 * sec - 1000));
    REQUIRE_FALSE(before);
    const auto after = a.try_admit(tgtest::req(1, 1), t0 + nanoseconds(11 * sec));
    REQUIRE(after);
  } else {
    REQUIRE(z);
  }
}

TEST_CASE("redis: a clock that steps back frees nothing", "[redis_server][time]") {
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port());
  account_config c;
  c.model = server_model::fixed_window;
  c.rpm = limit(5);
  c.lease_timeout = std::chrono::minutes(5);
  const nanoseconds t0(1700000000 * sec);
  redis_account a("back", c, exec{&conn}, tr::options{true});
  REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
  for (int i = 0; i < 5; ++i) REQUIRE(a.try_admit(tgtest::req(1, 1), t0 + nanoseconds(i * sec)));
  const auto later = a.try_admit(tgtest::req(1, 1), t0 + nanoseconds(30 * sec));
  REQUIRE(later.d.later());
  for (std::int64_t back : {29, 10, 0}) {
    INFO("now back at t0 + " << back << " s");
    const auto x = a.try_admit(tgtest::req(1, 1), t0 + nanoseconds(back * sec));
    REQUIRE_FALSE(x);
    CHECK(x.server_now_us == (t0.count() + back * sec) / us);  // decided at its own time
    // The wait counts from the call's own time: to the same moment as the later call's.
    CHECK(x.d.retry_after() == later.d.retry_after() + nanoseconds((30 - back) * sec));
  }
  // Past the wait from the latest time, admitted again.
  CHECK(a.try_admit(tgtest::req(1, 1), t0 + nanoseconds(30 * sec) + later.d.retry_after()));
}

TEST_CASE("redis: a time before the state began is refused until it began", "[redis_server][time]") {
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port());
  account_config c;
  c.model = server_model::sliding_log;
  c.rpm = limit(5);
  c.lease_timeout = std::chrono::minutes(5);
  const nanoseconds t0(1700000000 * sec);
  redis_account a("early", c, exec{&conn}, tr::options{true});
  REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
  const auto x = a.try_admit(tgtest::req(1, 1), t0 - std::chrono::seconds(3));
  REQUIRE(x.how == tr::outcome::ok);
  REQUIRE_FALSE(x);
  CHECK(x.refused.has(dimension::rpm));
  CHECK(x.d.retry_after() == std::chrono::seconds(3));  // to the first sub-window's start
  CHECK(x.server_now_us == (t0.count() - 3 * sec) / us);
  CHECK(a.try_admit(tgtest::req(1, 1), t0));
}

// A time ahead of the true one (a server clock stepped forward and corrected,
// a failover to a replica whose clock is behind) seen by one call, even a
// peek, must not make the calls at the true time decide at it: the window
// that is full at the true time stays full (the in-process account refuses
// the same calls).
TEST_CASE("redis: a peek at a time ahead frees nothing at the true time", "[redis_server][time]") {
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port());
  account_config c;
  c.model = server_model::fixed_window;
  c.rpm = limit(10);
  c.lease_timeout = std::chrono::minutes(10);
  const nanoseconds t0(1700000000 * sec);
  redis_account a("ahead", c, exec{&conn}, tr::options{true});
  REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
  account<manual_clock> l(c, t0);
  int admitted = 0;
  for (int i = 0; i < 10; ++i) {
    REQUIRE(a.try_admit(tgtest::req(1, 1), t0));
    REQUIRE(l.try_admit(tgtest::req(1, 1), t0));
    ++admitted;
  }
  const auto peek = a.remaining(t0 + std::chrono::seconds(65));
  REQUIRE(peek.how == tr::outcome::ok);
  REQUIRE(*peek.values.available[0] == 10);
  CHECK(*l.remaining(t0 + std::chrono::seconds(65)).requests == 10);
  for (int i = 0; i < 10; ++i) {
    const nanoseconds now = t0 + nanoseconds(sec + i * 100000 * us);
    INFO("at t0 + " << (now - t0).count() << " ns");
    const auto x = a.try_admit(tgtest::req(1, 1), now);
    const auto y = l.try_admit(tgtest::req(1, 1), now);
    REQUIRE(x.how == tr::outcome::ok);
    CHECK_FALSE(y);
    CHECK_FALSE(x);
    if (x) ++admitted;
    CHECK(x.server_now_us == now.count() / us);
    CHECK(x.refused.bits == y.refused.bits);
    CHECK(static_cast<std::int64_t>(tr::ceil_us(y.decision.retry_after())) * us == x.d.retry_after().count());
  }
  CHECK(admitted <= 10);  // requests in the true window (t - 60 s, t] at t0 + 1.9 s
}

// Concurrency 2, leases of 5 s. A is admitted at t0 and still runs. One call
// comes at a time ahead, past A's deadline: a peek, an admission, or a peek
// after the server dropped the lease set. Calls at the true time after it
// must still count A. A peek ahead changes nothing: one more is admitted.
// An admission ahead holds a slot itself (its deadline is later than the
// true time) and removed A's lease: with concurrency alone the true-time
// calls are refused for concurrency with the wait to A's deadline exactly;
// with a strict window too, chunked or not, the admission has moved the
// window's head ahead, which refuses them until then (the window's rule).
// A lost set found ahead: the slots are taken until A's deadline.
TEST_CASE("redis: a call at a time ahead frees no slot at the true time", "[redis_server][time]") {
  for (int how = 0; how < 3; ++how) {  // 0 a peek ahead, 1 an admission ahead, 2 a peek after the set was lost
    for (int shape = 0; shape < 3; ++shape) {  // 0 concurrency alone, 1 and a window, 2 that chunked
      INFO((how == 0 ? "a peek" : how == 1 ? "an admission" : "set lost, a peek") << " ahead; shape " << shape);
      server srv;
      REQUIRE(srv.running());
      client conn(srv.port()), admin(srv.port());
      account_config c;
      c.model = server_model::sliding_log;
      if (shape > 0) {
        c.rpm = limit(1600);
        c.request_window = std::chrono::milliseconds(1500);
      }
      c.concurrency = limit(2);
      c.lease_timeout = std::chrono::seconds(5);
      const nanoseconds t0(1700000000 * sec);
      tr::options o{true};
      o.chunk_parts = shape == 2 ? 2 : 0;
      redis_account a("ahead-slots", c, exec{&conn}, o), b("ahead-slots", c, exec{&conn}, o),
          p("ahead-slots", c, exec{&conn}, o);
      REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
      auto x = a.try_admit(tgtest::req(1, 1), t0);
      REQUIRE(x);
      CHECK(x.lease.from_chunk() == (shape == 2));
      // x's slot ends by then: its chunk's end (a 100 ms sub-window) plus the lease timeout.
      const nanoseconds deadline = t0 + c.lease_timeout + (shape == 2 ? std::chrono::milliseconds(100) : nanoseconds(0));
      const nanoseconds ahead = t0 + std::chrono::seconds(20);
      int held = 1;  // x: held at every true time below
      std::vector<redis_account::admission> keep;
      if (how == 2) REQUIRE(admin.call({"DEL", a.state_layout().key("leases")}).integer == 1);
      if (how != 1) {
        REQUIRE(p.remaining(ahead).how == tr::outcome::ok);
      } else {
        auto y = p.try_admit(tgtest::req(1, 1), ahead);
        REQUIRE(y);  // decided at its own time
        keep.push_back(std::move(y));
      }
      for (int i = 0; i < 4; ++i) {
        const nanoseconds now = t0 + std::chrono::milliseconds(1 + i);
        auto z = b.try_admit(tgtest::req(1, 1), now);
        REQUIRE(z.how == tr::outcome::ok);
        if (z) {
          ++held;
          keep.push_back(std::move(z));
          continue;
        }
        INFO("refused at t0 + " << (now - t0).count() << " ns: bits " << z.refused.bits << ", wait "
                                << z.d.retry_after().count() << " ns");
        if (how == 0) {
          CHECK(z.refused.bits == static_cast<std::uint16_t>(dimension::concurrency));  // full: A and one more
          CHECK(z.d.retry_after() == nanoseconds(0));
        } else if (how == 2 || shape == 0) {
          CHECK(z.refused.bits == static_cast<std::uint16_t>(dimension::concurrency));
          CHECK(now + z.d.retry_after() == deadline);
        } else {
          CHECK(z.refused.has(dimension::rpm));  // behind the head the admission ahead moved
          CHECK(now + z.d.retry_after() >= deadline);
        }
      }
      CHECK(held <= 2);
      CHECK(held == (how == 0 ? 2 : 1));
      if (how == 2 || (how == 1 && shape == 0)) {
        // At A's deadline its slot is free at any time.
        CHECK(b.try_admit(tgtest::req(1, 1), deadline - nanoseconds(us)).refused.has(dimension::concurrency));
        CHECK(b.try_admit(tgtest::req(1, 1), deadline));
      }
    }
  }
}

// Random schedules of admissions and peeks whose times mostly move on, jump
// ahead past every deadline now and then, and one in five lags behind the
// latest time by up to two lease timeouts. Leases are held to their
// deadlines (never settled), so a slot frees only by time. Checked by brute
// force over the admissions' own times: at every admission's time x at most
// `concurrency` admissions a with a.t <= x < a's deadline.
TEST_CASE("redis: slots freed by time stay within the limit at times behind the latest", "[redis_server][time]") {
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port());
  const std::uint64_t seed = tgtest::seed_for(17211);
  tgtest::rng g(seed);
  INFO(tgtest::seed_note() << " stream seed " << seed);
  std::uint64_t admitted = 0, lagging_admitted = 0, stale_refused = 0;
  for (int trial = 0; trial < 40; ++trial) {
    account_config c;
    c.model = server_model::sliding_log;
    const auto conc = g.between(1, 4);
    c.concurrency = limit(conc);
    const std::int64_t lease = static_cast<std::int64_t>(g.between(1, 10)) * sec;
    c.lease_timeout = nanoseconds(lease);
    INFO("trial " << trial << ": concurrency " << conc << ", lease " << lease << " ns");
    const nanoseconds origin(1700000000 * sec + static_cast<std::int64_t>(g.between(0, 1000000)) * us);
    redis_account a("lag-slots-" + std::to_string(trial), c, exec{&conn}, tr::options{true});
    REQUIRE(a.create(true, origin.count() / us) == tr::outcome::ok);
    std::vector<std::int64_t> taken;  // admissions' times, ns
    std::vector<redis_account::lease_type> held;
    nanoseconds latest = origin;
    for (int step = 0; step < 300; ++step) {
      if (g.chance(5)) latest += nanoseconds(lease + static_cast<std::int64_t>(g.between(0, 3)) * sec);
      else latest += nanoseconds(static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(lease / 4 / us))) * us);
      nanoseconds at = latest;
      const bool lagging = g.chance(20);
      if (lagging) {
        const std::int64_t span = std::min((latest - origin).count(), 2 * lease) / us;
        at -= nanoseconds(static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(span))) * us);
      }
      INFO("step " << step << " at " << (at - origin).count() << " ns from the origin (latest "
                   << (latest - origin).count() << ")");
      if (g.chance(20)) {
        REQUIRE(a.remaining(at).how == tr::outcome::ok);
        continue;
      }
      auto y = a.try_admit(tgtest::req(1, 1), at);
      REQUIRE(y.how == tr::outcome::ok);
      if (y) {
        ++admitted;
        if (lagging) ++lagging_admitted;
        taken.push_back(at.count());
        held.push_back(std::move(y.lease));
      } else {
        REQUIRE(y.refused.has(dimension::concurrency));
        if (y.d.retry_after() > nanoseconds(0)) ++stale_refused;
      }
    }
    for (const std::int64_t x : taken) {
      std::uint64_t in = 0;
      for (const std::int64_t t : taken) in += t <= x && x < t + lease ? 1 : 0;
      INFO("at " << (x - origin.count()) << " ns from the origin: " << in << " slots held");
      REQUIRE(in <= conc);
    }
  }
  INFO("admitted " << admitted << ", behind the latest " << lagging_admitted << ", refused for slots removed later "
                   << stale_refused);
  CHECK(admitted > 1000);
  CHECK(lagging_admitted > 50);
  CHECK(stale_refused > 50);
}

// A lease set smaller than the calls left it (a member removed behind the
// script's back): the lost leases end by the latest deadline the set had, so
// admissions hold until then, as for a set lost whole.
TEST_CASE("redis: a lease set that lost a member holds until its latest deadline", "[redis_server][time]") {
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port()), admin(srv.port());
  account_config c;
  c.model = server_model::sliding_log;
  c.concurrency = limit(2);
  c.lease_timeout = std::chrono::seconds(10);
  const nanoseconds t0(1700000000 * sec);
  redis_account a("shrunk", c, exec{&conn}, tr::options{true});
  REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
  auto x1 = a.try_admit(tgtest::req(1, 1), t0);
  auto x2 = a.try_admit(tgtest::req(1, 1), t0 + std::chrono::seconds(1));
  REQUIRE(x1);
  REQUIRE(x2);
  REQUIRE(admin.call({"ZREM", a.state_layout().key("leases"), std::to_string(x2.lease.id())}).integer == 1);
  const nanoseconds end = t0 + std::chrono::seconds(11);  // x2's deadline, the set's latest
  const auto y = a.try_admit(tgtest::req(1, 1), t0 + std::chrono::seconds(2));
  REQUIRE(y.how == tr::outcome::held);
  CHECK(y.d.retry_after() == end - (t0 + std::chrono::seconds(2)));
  CHECK(a.try_admit(tgtest::req(1, 1), end - nanoseconds(us)).how == tr::outcome::held);
  x1.lease.settle(usage{1, 0, 1, 0, 0});
  x2.lease.settle(usage{1, 0, 1, 0, 0});
  CHECK(a.try_admit(tgtest::req(1, 1), end));
}

// The calendar day at UTC offsets around midnight, with calls that go back
// across it: decided as calendar_quota does (a day before the one counted is
// refused, with the wait to when it can be decided), and never more than the
// limit in a day.
TEST_CASE("redis: a calendar day decides a time before its day as in-process", "[redis_server][time]") {
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port());
  constexpr std::int64_t DAY = 86400 * sec / us;  // µs
  for (int off : {-1440, -1439, -721, -1, 0, 1, 345, 1439, 1440}) {
    INFO("utc offset " << off << " min");
    account_config c;
    c.model = server_model::fixed_window;
    c.tpd = limit(1000);
    c.calendar_day = true;
    c.utc_offset = std::chrono::minutes(off);
    c.unix_time_at_zero = nanoseconds(0);
    c.lease_timeout = std::chrono::minutes(10);
    const std::int64_t mid = 20001 * DAY - std::int64_t(off) * 60 * sec / us;  // a midnight at the offset, µs
    const std::int64_t origin = mid - DAY / 2;
    redis_account a("cal" + std::to_string(off + 2000), c, exec{&conn}, tr::options{true});
    REQUIRE(a.create(true, origin) == tr::outcome::ok);
    account<manual_clock> l(c, nanoseconds(origin * us));
    std::int64_t used0 = 0, used1 = 0;
    for (std::int64_t t : {mid - 3 * sec / us, mid - 2, mid - 1, mid - 1, mid, mid, mid + 1, mid - 1, mid - 500000,
                           mid - 5, mid + 2, mid + DAY - 1, mid + DAY, mid + DAY - 5}) {
      INFO("at midnight " << (t - mid) << " us");
      const request r = tgtest::req(0, 400);
      const auto x = a.try_admit(r, nanoseconds(t * us));
      const auto y = l.try_admit(r, nanoseconds(t * us));
      REQUIRE(x.how == tr::outcome::ok);
      CHECK(static_cast<bool>(x) == static_cast<bool>(y));
      CHECK(x.refused.bits == y.refused.bits);
      CHECK(static_cast<std::int64_t>(tr::ceil_us(y.decision.retry_after())) * us == x.d.retry_after().count());
      if (x && t < mid) used0 += 400;
      else if (x && t < mid + DAY) used1 += 400;
    }
    CHECK(used0 <= 1000);
    CHECK(used1 <= 1000);
  }
}

TEST_CASE("redis: state keys expire when they would read empty; the epoch never", "[redis_server][expiry]") {
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port()), admin(srv.port());
  account_config c;
  c.model = server_model::token_bucket;
  c.concurrency = limit(2);
  c.rpm = limit(10);
  c.tpm = limit(1000);
  c.tpd = limit(100000);
  c.request_window = std::chrono::milliseconds(150);
  c.token_window = std::chrono::milliseconds(1500);
  c.lease_timeout = std::chrono::seconds(20);
  redis_account a("expiry", c, exec{&conn});  // the server's time: keys get expiries
  REQUIRE(a.create(true) == tr::outcome::ok);
  auto x = a.try_admit(tgtest::req(10, 10));
  REQUIRE(x);
  auto pttl = [&](const char* part) {
    const tr::reply r = admin.call({"PTTL", a.state_layout().key(part)});
    REQUIRE(r.type == tr::reply::kind::integer);
    return r.integer;
  };
  CHECK(pttl("epoch") == -1);  // no expiry: it holds the windows too
  for (const char* part : {"rpm", "tpm", "tpd"}) CHECK(pttl(part) == -2);  // no such keys (layout 1 had them)
  // The lease set lives to its latest deadline and up to an eighth of the
  // lease timeout more (in ms, rounded up, and 1 ms more), so its expiry
  // moves once per 2.5 s here, not on every lease.
  CHECK(pttl("leases") > 20000);
  CHECK(pttl("leases") <= 22501);
  {
    (void)admin.call({"CONFIG", "RESETSTAT"});
    std::vector<redis_account::lease_type> more;
    for (int i = 0; i < 30; ++i) {
      auto y = a.try_admit(tgtest::req(1, 1));
      if (y) y.lease.settle(usage{1, 0, 1, 0, 0});
    }
    const tr::reply st = admin.call({"INFO", "commandstats"});
    REQUIRE(st.type == tr::reply::kind::string);
    INFO(st.str);
    // 30 calls within well under 2.5 s: the expiry moved at most once.
    const bool moved_rarely = st.str.find("cmdstat_pexpire:calls=") == std::string::npos ||
                              st.str.find("cmdstat_pexpire:calls=1,") != std::string::npos;
    CHECK(moved_rarely);
  }
  // Without concurrency, budget or refunds a lease guards nothing: no record.
  account_config d;
  d.model = server_model::sliding_log;
  d.tpm = limit(1000);
  d.token_window = std::chrono::seconds(2);
  redis_account b("no-records", d, exec{&conn});
  REQUIRE(b.create(true) == tr::outcome::ok);
  std::vector<redis_account::lease_type> ls;
  for (int i = 0; i < 5; ++i) {
    auto y = b.try_admit(tgtest::req(10, 10));
    REQUIRE(y);
    ls.push_back(std::move(y.lease));
  }
  CHECK(admin.call({"EXISTS", b.state_layout().key("leases")}).integer == 0);  // while they are held
  for (auto& l : ls) l.settle(usage{50, 0, 50, 0, 0});  // 80 beyond the reservation: charged all the same
  const auto v = b.remaining();
  REQUIRE(v.how == tr::outcome::ok);
  CHECK(*v.values.available[1] == 1000 - 5 * 20 - 5 * 80);  // remaining() carried the settlements
}

// The key with an expiry (the lease set: the key a volatile-* eviction
// policy takes) lost on its own, in test mode so nothing else expires. What
// it held is unknown, but it ends by lease_end, which the epoch keeps:
// admissions hold until then, and no bound is broken across the loss. (The
// windows live in the epoch, lost only with it: the restart case.)
TEST_CASE("redis: the lease set lost alone holds until what it counted has left",
          "[redis_server][restart][evict]") {
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port()), admin(srv.port());
  const std::uint64_t seed = tgtest::seed_for(17207);
  tgtest::rng g(seed);
  INFO(tgtest::seed_note() << " stream seed " << seed);
  const nanoseconds t0(1700000000 * sec);
  {
    account_config c;
    c.model = server_model::sliding_log;
    c.rpm = limit(1000);
    c.tpm = limit(1000000);
    c.tpd = limit(10000000);
    c.concurrency = limit(2);
    c.lease_timeout = std::chrono::seconds(30);
    redis_account a("alone-leases", c, exec{&conn}, tr::options{true});
    REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
    const tr::layout& l = a.state_layout();
    std::vector<redis_account::lease_type> held;
    nanoseconds now = t0;
    std::int64_t last = 0;
    // Fill the concurrency limit (2 leases).
    for (int i = 0; i < 2; ++i) {
      now += nanoseconds(static_cast<std::int64_t>(g.between(0, 3000)) * 1000 * us);
      auto x = a.try_admit(tgtest::req(50, 50), now);
      REQUIRE(x);
      last = now.count() / us;
      held.push_back(std::move(x.lease));
    }
    REQUIRE_FALSE(a.try_admit(tgtest::req(50, 50), now));
    REQUIRE(admin.call({"DEL", l.key("leases")}).integer == 1);
    // The end of what the lost set held: the latest lease's deadline.
    const std::int64_t end = last + static_cast<std::int64_t>(l.lease_us);
    for (int i = 0; i < 20; ++i) {
      now += nanoseconds(static_cast<std::int64_t>(g.between(1, 2000)) * 1000 * us);
      if (now.count() / us >= end) break;
      const auto x = a.try_admit(tgtest::req(50, 50), now);
      REQUIRE_FALSE(x);
      REQUIRE(x.how == tr::outcome::held);
      REQUIRE(x.d.retry_after().count() == (end - now.count() / us) * us);
    }
    const auto before = a.try_admit(tgtest::req(50, 50), nanoseconds((end - 1) * us));
    REQUIRE(before.how == tr::outcome::held);
    for (auto& h : held) h.settle(usage{50, 0, 50, 0, 0});
    const auto after = a.try_admit(tgtest::req(50, 50), nanoseconds(end * us));
    REQUIRE(after.how == tr::outcome::ok);
    REQUIRE(after);
  }

  // Keys that are gone for their own reasons are no loss: a lease set that
  // emptied (every lease settled) and a window that has left its window.
  account_config c;
  c.model = server_model::sliding_log;
  c.rpm = limit(3);
  c.concurrency = limit(2);
  c.lease_timeout = std::chrono::seconds(30);
  redis_account a("alone-empty", c, exec{&conn}, tr::options{true});
  REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
  {
    auto x = a.try_admit(tgtest::req(1, 1), t0);
    auto y = a.try_admit(tgtest::req(1, 1), t0);
    REQUIRE(x);
    REQUIRE(y);
    x.lease.settle(usage{1, 0, 1, 0, 0});
    y.lease.settle(usage{1, 0, 1, 0, 0});
  }
  REQUIRE(a.flush(t0));
  REQUIRE(admin.call({"EXISTS", a.state_layout().key("leases")}).integer == 0);
  auto z = a.try_admit(tgtest::req(1, 1), t0 + nanoseconds(sec));
  REQUIRE(z.how == tr::outcome::ok);
  REQUIRE(z);
  z.lease.settle(usage{1, 0, 1, 0, 0});
  REQUIRE(a.flush(t0 + nanoseconds(sec)));
  REQUIRE(admin.call({"EXISTS", a.state_layout().key("leases")}).integer == 0);
  // An epoch without the lease set's records reads them as 0: the next call
  // counts the set again (here empty: no loss).
  REQUIRE(admin.call({"HDEL", a.state_layout().key("epoch"), "lcount", "llo", "lease_end", "lease_exp"}).integer >= 1);
  // (After the window's three requests have left it: 16 sub-windows.)
  const std::int64_t gone = t0.count() / us + 16 * static_cast<std::int64_t>(a.state_layout().w[0].width_us);
  const auto w = a.try_admit(tgtest::req(1, 1), nanoseconds(gone * us));
  CHECK(w.how == tr::outcome::ok);
  CHECK(w);
}

namespace {

struct counting_exec {
  client* c;
  int* calls;
  tr::reply operator()(const std::vector<std::string>& argv) const {
    ++*calls;
    return c->call(argv);
  }
};

}  // namespace

// The caller's mode when Redis fails. Default: fail closed. local_share:
// decisions go to a local account with the stated share of each limit, for
// fallback_for after each failed call (no call to Redis meanwhile), then
// Redis again; a budget always fails closed. With a killed server (calls
// fail at once) and a stopped one (SIGSTOP: calls time out).
TEST_CASE("redis: unreachable or stopped server: fail closed, or a local share of the limits",
          "[redis_server][fallback]") {
  server srv;
  REQUIRE(srv.running());
  const nanoseconds t0(1700000000 * sec);
  account_config c;
  c.model = server_model::sliding_log;
  c.concurrency = limit(4);
  c.rpm = limit(10);
  c.tpm = limit(100000);
  c.lease_timeout = std::chrono::seconds(30);
  account_config with_budget = c;
  with_budget.budget = usd::from_nanos(1000000000);
  tr::options local{true};
  local.on_fault = tr::fault_mode::local_share;
  local.share_percent = 50;
  local.fallback_for = std::chrono::seconds(5);

  SECTION("killed server") {
    client conn(srv.port()), conn2(srv.port()), conn3(srv.port());
    int calls = 0;
    tr::account<counting_exec> a("fb-local", c, counting_exec{&conn, &calls}, local);
    redis_account closed("fb-closed", c, exec{&conn2}, tr::options{true});
    redis_account budget("fb-budget", with_budget, exec{&conn3}, local);
    REQUIRE(a.fallback_config());
    CHECK(*a.fallback_config()->concurrency.value() == 2);
    CHECK(*a.fallback_config()->rpm.value() == 5);
    CHECK_FALSE(budget.fallback_config());  // budgets fail closed
    REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
    REQUIRE(closed.create(true, t0.count() / us) == tr::outcome::ok);
    REQUIRE(budget.create(true, t0.count() / us) == tr::outcome::ok);
    {
      auto x = a.try_admit(tgtest::req(10, 10), t0);
      REQUIRE(x.how == tr::outcome::ok);
      REQUIRE(x);
      CHECK_FALSE(x.lease.is_local());
    }
    srv.stop();
    nanoseconds now = t0 + nanoseconds(sec);
    const auto y = closed.try_admit(tgtest::req(10, 10), now);
    CHECK(y.how == tr::outcome::server_error);
    CHECK_FALSE(y);
    CHECK(y.d.why() == reason::busy);
    const auto z = budget.try_admit(tgtest::req(10, 10), now);
    CHECK(z.how == tr::outcome::server_error);
    CHECK_FALSE(z);
    // Local: 5 requests a minute, 2 at a time.
    const int before = calls;
    std::vector<tr::account<counting_exec>::lease_type> held;
    for (int i = 0; i < 2; ++i) {
      auto x = a.try_admit(tgtest::req(10, 10), now);
      REQUIRE(x.how == tr::outcome::local);
      REQUIRE(x);
      CHECK(x.lease.is_local());
      held.push_back(std::move(x.lease));
    }
    CHECK(calls > before);  // the first one tried Redis
    CHECK(a.in_fallback(now));
    const int tried = calls;
    const auto busy = a.try_admit(tgtest::req(10, 10), now);
    CHECK(busy.how == tr::outcome::local);
    CHECK_FALSE(busy);
    CHECK(busy.refused.has(dimension::concurrency));
    held[0].settle(usage{10, 0, 10, 0, 0});
    held[1].drop();
    int admitted = 2;
    for (int i = 0; i < 5; ++i) {
      auto x = a.try_admit(tgtest::req(10, 10), now + nanoseconds(i * sec));
      REQUIRE(x.how == tr::outcome::local);
      if (x) ++admitted;
    }
    CHECK(admitted == 5);  // the local share of RPM
    CHECK(calls == tried);  // within fallback_for: no call to Redis
    // Past fallback_for the next call tries Redis again (still down: local again).
    const auto again = a.try_admit(tgtest::req(10, 10), t0 + nanoseconds(7 * sec));
    CHECK(calls > tried);
    CHECK(again.how == tr::outcome::local);
    CHECK_FALSE(again);  // the local window is still full
    CHECK(again.d.later());
    // Back (a new, empty server: its state lost): Redis's answer rules again.
    REQUIRE(srv.start());
    const auto back = a.try_admit(tgtest::req(10, 10), t0 + nanoseconds(13 * sec));
    CHECK(back.how == tr::outcome::held);
    CHECK_FALSE(a.in_fallback(t0 + nanoseconds(13 * sec)));
  }

  SECTION("stopped server past the client's timeout") {
    client conn(srv.port(), 300);
    int calls = 0;
    tr::account<counting_exec> a("fb-stop", c, counting_exec{&conn, &calls}, local);
    REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
    REQUIRE(a.try_admit(tgtest::req(10, 10), t0));
    srv.pause_process();
    const auto x = a.try_admit(tgtest::req(10, 10), t0 + nanoseconds(sec));
    const int after_timeout = calls;
    const auto w = a.try_admit(tgtest::req(10, 10), t0 + nanoseconds(2 * sec));
    srv.continue_process();
    CHECK(x.how == tr::outcome::local);
    CHECK(x);
    CHECK(w.how == tr::outcome::local);  // no second timeout: still in fallback
    CHECK(w);
    CHECK(calls == after_timeout);
    // After fallback_for, Redis decides again (with a fresh connection).
    const auto r = a.try_admit(tgtest::req(10, 10), t0 + nanoseconds(7 * sec));
    CHECK(r.how == tr::outcome::ok);
    CHECK(r);
  }
}

// A settlement queued before a state loss rides on a call made after it, in
// the next epoch, whose lease ids started again at 1: it must not free the
// new epoch's lease of the same id (its concurrency slot, its money, its
// refund). A lease is its epoch's tag and its id (redis/layout.hpp).
namespace {

// An executor whose server can be cut off: every command then fails as an
// unreachable server's does.
struct cut_exec {
  client* c;
  const bool* down;
  tr::reply operator()(const std::vector<std::string>& argv) const {
    if (*down) return tr::reply::of_error("ERR unreachable (test)");
    return c->call(argv);
  }
};

}  // namespace

// A stop or a pause holds the local fallback too: one seen in a reply of
// Redis (set by another object), and one set by this object's on_response
// while Redis cannot be reached (then only this object's fallback knows).
// Once the fallback admitted while the whole account was stopped.
TEST_CASE("redis: the local fallback holds a stop and a pause", "[redis_server][fallback]") {
  server srv;
  REQUIRE(srv.running());
  client conn(srv.port());
  // Under learn the 429's lesson is a call of its own: cut off, it too
  // leaves the pause to the fallback.
  for (const server_model model : {server_model::sliding_log, server_model::learn}) {
  INFO("model " << to_string(model));
  account_config c;
  c.model = model;
  c.rpm = limit(100);
  c.request_window = std::chrono::seconds(60);
  c.max_request_tokens = 1000;
  c.lease_timeout = std::chrono::seconds(100);
  tr::options o{true};
  o.on_fault = tr::fault_mode::local_share;
  o.share_percent = 50;
  o.fallback_for = std::chrono::milliseconds(500);  // then Redis is tried again
  bool down = false;
  const std::string name = model == server_model::learn ? "fb-hold-learn" : "fb-hold";
  tr::account<cut_exec> a(name, c, cut_exec{&conn, &down}, o), b(name, c, cut_exec{&conn, &down}, o);
  REQUIRE(a.create(true, 0) == tr::outcome::ok);
  const request rq = tgtest::req(10, 10);
  const auto at = [](std::int64_t m) { return nanoseconds(m * 1000000); };
  auto admitted = [&](tr::account<cut_exec>& x, std::int64_t from) {
    int n = 0;
    for (int i = 0; i < 20; ++i) {
      auto y = x.try_admit(rq, at(from + i));
      if (y) ++n;
      if (y) CHECK(y.how == tr::outcome::local);
    }
    return n;
  };
  // A stop set through A, seen by B in Redis's reply, then Redis is cut off.
  error_info quota;
  quota.kind = error_kind::quota;
  quota.status = 402;
  REQUIRE(a.on_response(quota, std::nullopt, at(1000)) == tr::outcome::ok);
  const auto seen = b.try_admit(rq, at(1100));
  CHECK_FALSE(seen);
  CHECK(seen.refused.has(dimension::stopped));
  down = true;
  {
    const auto y = b.try_admit(rq, at(1200));
    CHECK(y.how == tr::outcome::local);
    CHECK(y.refused.has(dimension::stopped));
  }
  CHECK(admitted(b, 1201) == 0);
  CHECK(admitted(a, 1300) == 0);  // A set it: held as well
  // resume() through Redis lifts it everywhere.
  down = false;
  REQUIRE(a.resume(at(2000)) == tr::outcome::ok);
  REQUIRE(b.try_admit(rq, at(2050)));
  // A 429 with a 30 s hint while Redis is cut off: A's fallback pauses.
  down = true;
  error_info limited;
  limited.kind = error_kind::rpm;
  limited.status = 429;
  CHECK(a.on_response(limited, nanoseconds(30 * sec), at(2200)) == tr::outcome::server_error);
  CHECK(admitted(a, 2300) == 0);
  CHECK(admitted(a, 2200 + 31000) > 0);  // and no longer than the pause
  // A pause another object set, seen by B in a refusal: B's fallback waits it out.
  down = false;
  REQUIRE(a.on_response(limited, nanoseconds(30 * sec), at(40000)) == tr::outcome::ok);
  const auto paused = b.try_admit(rq, at(40100));
  CHECK_FALSE(paused);
  CHECK(paused.refused.has(dimension::paused));
  down = true;
  {
    const auto y = b.try_admit(rq, at(40200));
    CHECK(y.how == tr::outcome::local);
    CHECK(y.refused.has(dimension::paused));
    CHECK(y.d.retry_after() >= at(40000 + 30000) - at(40200));
  }
  CHECK(admitted(b, 40300) == 0);
  }
}

TEST_CASE("redis: a settlement from before a state loss frees nothing of the next epoch", "[redis_server][restart]") {
  server srv;
  REQUIRE(srv.running());
  client cx(srv.port()), cy(srv.port()), admin(srv.port());
  const request r = tgtest::req(100000, 32768);
  auto lose = [&](const char* name) {
    const std::string p = std::string("tollgate:{") + name + "}:";
    const tr::reply d = admin.call({"DEL", p + "epoch", p + "leases"});
    REQUIRE(d.type == tr::reply::kind::integer);
    REQUIRE(d.integer == 2);
  };

  SECTION("concurrency: one in flight stays one") {
    account_config c;
    c.concurrency = limit(1);
    c.lease_timeout = std::chrono::seconds(10);
    redis_account x("epochs_c", c, exec{&cx}, tr::options{true}), y("epochs_c", c, exec{&cy}, tr::options{true});
    REQUIRE(x.create(true, 0) == tr::outcome::ok);
    auto old = x.try_admit(r, std::chrono::seconds(1));
    REQUIRE(old);
    REQUIRE(old.lease.id() == 1);
    const std::uint64_t old_epoch = old.lease.epoch();
    CHECK(old_epoch >= 1);
    old.lease.settle(usage{10, 0, 5, 0, 0});  // queued in x
    REQUIRE(x.queued_count() == 1);
    lose("epochs_c");
    const auto h = y.try_admit(r, std::chrono::seconds(2));
    REQUIRE(h.how == tr::outcome::held);
    auto in_flight = y.try_admit(r, std::chrono::seconds(13));
    REQUIRE(in_flight);
    REQUIRE(in_flight.lease.id() == 1);  // the same id as the old lease...
    CHECK(in_flight.lease.epoch() != old_epoch);  // ...of another epoch
    CHECK_FALSE(y.try_admit(r, std::chrono::seconds(13) + std::chrono::milliseconds(1)));
    // x's next call carries the old settle: y's lease still runs, so busy.
    const auto second = x.try_admit(r, std::chrono::seconds(14));
    CHECK(x.queued_count() == 0);  // carried (and ignored)
    CHECK_FALSE(second);
    CHECK(second.how == tr::outcome::ok);
    CHECK(second.refused.has(dimension::concurrency));
    const auto v = y.remaining(std::chrono::seconds(14));
    REQUIRE(v.how == tr::outcome::ok);
    CHECK(v.values.in_flight == 1);
    // y's own settle frees its slot.
    in_flight.lease.settle(usage{10, 0, 5, 0, 0});
    CHECK(y.try_admit(r, std::chrono::seconds(15)));
  }

  SECTION("budget: a returned reservation is the lost epoch's, not the new lease's") {
    account_config c;
    c.budget = usd::from_nanos(300000000);  // $0.30; one request reserves over half of it
    c.lease_timeout = std::chrono::seconds(10);
    redis_account x("epochs_b", c, exec{&cx}, tr::options{true}), y("epochs_b", c, exec{&cy}, tr::options{true});
    REQUIRE(x.create(true, 0) == tr::outcome::ok);
    auto old = x.try_admit(r, std::chrono::seconds(1));
    REQUIRE(old);
    REQUIRE(old.worst_case.nanos() * 2 > c.budget->nanos());
    old.lease.settle_rejected();  // queued in x: returns its reservation
    lose("epochs_b");
    CHECK(y.try_admit(r, std::chrono::seconds(2)).how == tr::outcome::budget_held);  // no window: no hold
    REQUIRE(y.restore_budget(usd::from_nanos(0), usd::from_nanos(0), std::chrono::seconds(3)) == tr::outcome::ok);
    auto yl = y.try_admit(r, std::chrono::seconds(15));
    REQUIRE(yl);
    REQUIRE(yl.lease.id() == 1);
    const auto xl = x.try_admit(r, std::chrono::seconds(16));  // carries the old settle_rejected of id 1
    CHECK(x.queued_count() == 0);
    CHECK_FALSE(xl);
    CHECK(xl.refused.has(dimension::budget));
    const auto v = y.remaining(std::chrono::seconds(16));
    REQUIRE(v.how == tr::outcome::ok);
    CHECK(v.values.committed_nanos == yl.worst_case.nanos());  // y's reservation still counted
  }
}

// A window's counts are kept by sub-window number, which means a time only
// at the width they were counted with: a call with another width (a rolling
// change of request_window, say) is refused, outcome other_configuration,
// nothing written. A change of limits at the same width is allowed: the
// window then admits at most the largest limit in use (redis/layout.hpp).
TEST_CASE("redis: a window of another width is refused; other limits share the counts", "[redis_server][config]") {
  server srv;
  REQUIRE(srv.running());
  client c1(srv.port()), c2(srv.port()), c3(srv.port());
  account_config old_cfg;
  old_cfg.model = server_model::sliding_log;
  old_cfg.rpm = limit(10);
  old_cfg.request_window = std::chrono::seconds(61);  // W + J
  old_cfg.lease_timeout = std::chrono::seconds(30);
  account_config new_cfg = old_cfg;
  new_cfg.request_window = std::chrono::seconds(60);
  const tr::options o{true};
  redis_account b("widths", old_cfg, exec{&c1}, o), a("widths", new_cfg, exec{&c2}, o);
  REQUIRE(b.create(true, 0) == tr::outcome::ok);
  CHECK(a.create(true, 0) == tr::outcome::other_configuration);  // the epoch exists, with 61 s
  const request r = tgtest::req(10, 10);
  const nanoseconds day = std::chrono::hours(24);  // an epoch a day old: the slot numbers far apart
  std::vector<std::pair<std::int64_t, std::uint64_t>> reqs;
  auto note = [&](const redis_account::admission& x, nanoseconds t) {
    if (x) reqs.emplace_back(t.count() / us, 1);
  };
  int got_b = 0;
  for (int i = 0; i < 15; ++i) {
    const nanoseconds t = day + std::chrono::milliseconds(i);
    auto x = b.try_admit(r, t);
    got_b += x ? 1 : 0;
    note(x, t);
  }
  CHECK(got_b == 10);
  for (int i = 0; i < 15; ++i) {
    const nanoseconds t = day + std::chrono::milliseconds(500 + i);
    auto x = a.try_admit(r, t);
    CHECK_FALSE(x);
    CHECK(x.how == tr::outcome::other_configuration);
    CHECK(x.d.why() == reason::misconfigured);
    note(x, t);
  }
  // Every op of the other width is refused the same way.
  CHECK(a.remaining(day + std::chrono::seconds(1)).how == tr::outcome::other_configuration);
  CHECK(a.on_response(error_info{}, std::nullopt, day + std::chrono::seconds(1)) == tr::outcome::other_configuration);
  // The old width's callers are not disturbed: no stale outage, the window
  // frees at its own pace.
  auto later = b.try_admit(r, day + std::chrono::milliseconds(600));
  CHECK_FALSE(later);
  CHECK(later.how == tr::outcome::ok);
  CHECK(later.d.retry_after() < std::chrono::seconds(62));
  {
    const nanoseconds t = day + std::chrono::seconds(62);
    auto x = b.try_admit(r, t);
    CHECK(x);
    note(x, t);
  }
  // One configuration's bound so far: 10 in any window.
  CHECK(tgtest::max_window_sum(reqs, static_cast<std::int64_t>(b.state_layout().w[0].period_us)) <= 10);

  // A tier change at the same width: a caller with a higher limit shares the
  // counts, so the window holds at most the larger limit.
  account_config up = old_cfg;
  up.rpm = limit(20);
  redis_account u("widths", up, exec{&c3}, o);
  int got_u = 0;
  for (int i = 0; i < 30; ++i) {
    const nanoseconds t = day + std::chrono::seconds(62) + std::chrono::milliseconds(10 + i);
    auto x = u.try_admit(r, t);
    got_u += x ? 1 : 0;
    note(x, t);
  }
  CHECK(got_u == 19);  // 20 less the one b took at 62 s
  CHECK_FALSE(b.try_admit(r, day + std::chrono::seconds(63)));
  CHECK(tgtest::max_window_sum(reqs, static_cast<std::int64_t>(b.state_layout().w[0].period_us)) <= 20);

  // A window enforced for the first time adopts the caller's width; then a
  // third width for it is refused.
  account_config tok = old_cfg;
  tok.tpm = limit(100000);
  tok.token_window = std::chrono::seconds(60);
  account_config tok2 = tok;
  tok2.token_window = std::chrono::seconds(90);
  redis_account t1("widths", tok, exec{&c3}, o), t2("widths", tok2, exec{&c2}, o);
  CHECK(t1.try_admit(r, day + std::chrono::seconds(200)));
  const auto y = t2.try_admit(r, day + std::chrono::seconds(201));
  CHECK_FALSE(y);
  CHECK(y.how == tr::outcome::other_configuration);
  CHECK(b.try_admit(r, day + std::chrono::seconds(202)));  // b enforces no tpm: its calls still run
}

// A dimension counted by one policy is refused to a call that runs another
// (a strict window against a spaced bucket's epoch, a rolling day against a
// calendar day's), and a calendar day to a call with another UTC offset:
// other_configuration, nothing written. A spaced bucket's rate may change
// (a change of tier): the time it owes until is kept.
TEST_CASE("redis: another policy or day offset is refused; a spaced rate change keeps the owed time",
          "[redis_server][config]") {
  server srv;
  REQUIRE(srv.running());
  client c1(srv.port()), c2(srv.port());
  const tr::options o{true};
  const request r = tgtest::req(10, 10);
  account_config spaced;  // server model unknown
  spaced.rpm = limit(10);
  spaced.tpm = limit(10000);
  spaced.max_request_tokens = 1000;
  spaced.lease_timeout = std::chrono::seconds(30);
  const nanoseconds t0(1700000000 * sec);

  SECTION("a strict window against a spaced bucket's epoch") {
    redis_account a("pol", spaced, exec{&c1}, o);
    REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
    REQUIRE(a.try_admit(r, t0));
    account_config strict = spaced;
    strict.model = server_model::sliding_log;
    redis_account b("pol", strict, exec{&c2}, o);
    CHECK(b.try_admit(r, t0 + std::chrono::seconds(100)).how == tr::outcome::other_configuration);
    // and the other way round
    redis_account d("pol2", strict, exec{&c1}, o);
    REQUIRE(d.create(true, t0.count() / us) == tr::outcome::ok);
    REQUIRE(d.try_admit(r, t0));
    redis_account e("pol2", spaced, exec{&c2}, o);
    CHECK(e.try_admit(r, t0 + std::chrono::seconds(100)).how == tr::outcome::other_configuration);
  }

  SECTION("a calendar day against a rolling one, or at another offset") {
    account_config cal = spaced;
    cal.tpd = limit(1000);
    cal.calendar_day = true;
    cal.utc_offset = std::chrono::hours(8);
    redis_account a("day", cal, exec{&c1}, o);
    REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
    REQUIRE(a.try_admit(r, t0));
    account_config rolling = cal;
    rolling.calendar_day = false;
    redis_account b("day", rolling, exec{&c2}, o);
    CHECK(b.try_admit(r, t0 + std::chrono::seconds(100)).how == tr::outcome::other_configuration);
    account_config other = cal;
    other.utc_offset = std::chrono::hours(-5);
    redis_account d("day", other, exec{&c2}, o);
    CHECK(d.try_admit(r, t0 + std::chrono::seconds(100)).how == tr::outcome::other_configuration);
    CHECK(a.try_admit(r, t0 + std::chrono::seconds(100)));  // the epoch's own configuration still runs
  }

  SECTION("a spaced rate change keeps the time the bucket owes until") {
    redis_account a("rate", spaced, exec{&c1}, o);
    REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
    REQUIRE(a.try_admit(r, t0));
    const auto w1 = a.try_admit(r, t0 + std::chrono::seconds(1));
    REQUIRE(w1.d.later());
    REQUIRE(w1.refused.has(dimension::rpm));
    account_config faster = spaced;
    faster.rpm = limit(20);
    redis_account b("rate", faster, exec{&c2}, o);
    const auto w2 = b.try_admit(r, t0 + std::chrono::seconds(1));
    REQUIRE(w2.how == tr::outcome::ok);
    CHECK(w2.d.retry_after() == w1.d.retry_after());  // 9 per 60.018 s: 6.668666.. s from t0, kept
    CHECK(b.try_admit(r, t0 + std::chrono::seconds(1) + w1.d.retry_after()));
    // b's admission is spaced at b's interval (19 per 60.038 s); a, at its own,
    // sees b's TAT (in b's ticks, rounded up into its own).
    const auto w3 = a.try_admit(r, t0 + std::chrono::seconds(1) + w1.d.retry_after());
    REQUIRE(w3.d.later());
    CHECK(w3.d.retry_after().count() == (60038000LL + 18) / 19 * 1000);
  }

  SECTION("a calendar day lost holds to the next midnight") {
    account_config cal;
    cal.model = server_model::sliding_log;
    cal.tpd = limit(1000);
    cal.calendar_day = true;
    cal.utc_offset = std::chrono::minutes(330);  // +5:30
    cal.lease_timeout = std::chrono::seconds(30);
    redis_account a("lostday", cal, exec{&c1}, o);
    REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
    REQUIRE(a.try_admit(tgtest::req(400, 400), t0));
    REQUIRE(c2.call({"DEL", a.state_layout().key("epoch")}).type == tr::reply::kind::integer);
    const nanoseconds t1 = t0 + std::chrono::minutes(7);
    const auto x = a.try_admit(r, t1);
    CHECK(x.how == tr::outcome::held);
    const std::int64_t off = 330LL * 60 * sec, day = 86400LL * sec;
    const std::int64_t midnight = ((t1.count() + off) / day + 1) * day - off;
    CHECK(x.d.retry_after().count() == midnight - t1.count());
    CHECK_FALSE(a.try_admit(r, nanoseconds(midnight - 1000)));
    CHECK(a.try_admit(r, nanoseconds(midnight)));
  }
}
