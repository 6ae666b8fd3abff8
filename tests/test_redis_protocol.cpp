// The Redis layout and the client side of its script, without a server:
// which configurations the layout refuses, the argv a call builds, and the
// reply decoder fed garbage (it must never decode an admission from it).
#include "catch_compat.hpp"
#include "account_support.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <tollgate/redis/account.hpp>
#include <tollgate/redis/layout.hpp>
#include <tollgate/redis/protocol.hpp>

#include <algorithm>
#include <chrono>
#include <optional>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

using namespace tollgate;
namespace tr = tollgate::redis;

namespace {

account_config strict_config() {
  account_config c;
  c.model = server_model::sliding_log;
  c.concurrency = limit(10);
  c.rpm = limit(100);
  c.tpm = limit(50000);
  c.tpd = limit(1500000);
  c.budget = usd::from_nanos(5000000000);
  return c;
}

}  // namespace

TEST_CASE("redis layout: keys under one hash tag, units in us, the hold", "[redis]") {
  const tr::layout l = tr::make_layout("org-1", strict_config());
  CHECK(l.key("epoch") == "tollgate:{org-1}:epoch");
  CHECK(l.key("leases") == "tollgate:{org-1}:leases");
  CHECK(l.concurrency == 10);
  CHECK(l.w[0].limit == 100);
  CHECK(l.w[0].period_us == 60000000);
  CHECK(l.w[0].width_us == 4000000);
  CHECK(l.w[2].period_us == 86400000000ULL);
  // The hold covers every sub-window the daily window counts, and the lease timeout.
  CHECK(l.hold_us == 16 * (86400000000ULL / 15));
  CHECK(l.budget);
  CHECK(l.budget_nanos == 5000000000);
  // A window that is not a whole number of µs, or of 15 µs, rounds up (stricter).
  account_config c = strict_config();
  c.request_window = nanoseconds(1000000001);
  const tr::layout m = tr::make_layout("x", c);
  CHECK(m.w[0].period_us == 1000001);
  CHECK(m.w[0].width_us == 66667);
}

TEST_CASE("redis layout: the spaced buckets in the in-process account's ticks, the calendar day's offset", "[redis]") {
  account_config c;  // server model unknown: both limits spaced
  c.rpm = limit(100);
  c.tpm = limit(50000);
  c.max_request_tokens = 10000;
  c.calendar_day = true;
  c.tpd = limit(1500000);
  c.utc_offset = std::chrono::minutes(-90);
  const tr::layout l = tr::make_layout("s", c);
  // RPM: 99 per 60 s + 99 x 2 ms, 608,060,606.06 ns apart: scale 14 (T rounded
  // up to 8,512,848,485 ticks of 1/14 ns, as token_bucket), 14,000 ticks a µs.
  CHECK(l.w[0].limit == 100);
  CHECK(l.b[0].per_us == 14000);
  CHECK(l.b[0].whole_us == 608060);
  CHECK(l.b[0].ticks == 8485);
  // TPM: 40,000 per 60.002 s, 1,500,050 ns apart: scale 1.
  CHECK(l.b[1].per_us == 1000);
  CHECK(l.b[1].whole_us == 1500);
  CHECK(l.b[1].ticks == 50);
  {
    token_bucket<manual_clock> b(account_policy::spaced_request_rate(100, std::chrono::minutes(1)), 1, nanoseconds(0));
    CHECK(b.effective_rate().period.count() == 8512848485);
    CHECK(b.effective_rate().count == 14);
  }
  // The calendar day: offset + 2 days, in µs; the hold after a loss is the
  // buckets' (the longest: 40,000 + 10,000 token intervals); the script
  // holds a calendar day to the next midnight itself.
  CHECK(l.day_code == static_cast<std::uint64_t>(2 * 86400000000LL - 90LL * 60 * 1000000));
  CHECK(l.hold_us == 60002000 + 15000500);
  CHECK(l.w[2].period_us == 0);
}

TEST_CASE("redis layout refuses what the script cannot hold exactly", "[redis]") {
  tr::layout out;
  account_config c = strict_config();
  CHECK(tr::make_layout("", c, out) == tr::layout_errc::bad_name);
  CHECK(tr::make_layout("a{b}", c, out) == tr::layout_errc::bad_name);
  CHECK(tr::make_layout("a b", c, out) == tr::layout_errc::bad_name);
  CHECK(tr::make_layout(std::string(65, 'a'), c, out) == tr::layout_errc::bad_name);
  CHECK(tr::make_layout(std::string(64, 'a'), c, out) == tr::layout_errc::ok);
  // Every server model and the calendar day have a script now; what the
  // spaced policy cannot hold is refused as `spacing`, a calendar day's
  // limit beyond calendar_quota's as too_large.
  for (server_model m : {server_model::unknown, server_model::gcra, server_model::window_counter}) {
    account_config d = c;
    d.model = m;
    d.max_request_tokens = 10000;
    CHECK(tr::make_layout("a", d, out) == tr::layout_errc::ok);
    d.max_request_tokens = 50000;  // the margin leaves no room: the in-process account refuses it too
    CHECK(tr::make_layout("a", d, out) == tr::layout_errc::spacing);
    d.max_request_tokens = 10000;
    d.tpm = limit(2000000000);  // finer than the bucket holds within 0.1 % (rate_too_fine in-process)
    CHECK(tr::make_layout("a", d, out) == tr::layout_errc::spacing);
    d = c;
    d.model = m;
    d.max_request_tokens = 10000;
    d.rpm = limit(20000000000ULL);  // 2 ms per request: a spacing period beyond 400 days
    CHECK(tr::make_layout("a", d, out) == tr::layout_errc::spacing);
    d.rpm = limit(10000000000ULL);  // 231 days
    CHECK(tr::make_layout("a", d, out) == tr::layout_errc::ok);
  }
  account_config d = c;
  d.calendar_day = true;
  CHECK(tr::make_layout("a", d, out) == tr::layout_errc::ok);
  d.tpd = limit(tr::calendar_day_limit);
  CHECK(tr::make_layout("a", d, out) == tr::layout_errc::ok);
  d.tpd = limit(tr::calendar_day_limit + 1);
  CHECK(tr::make_layout("a", d, out) == tr::layout_errc::too_large);
  d = c;
  d.tpm = limit(tr::max_units);
  CHECK(tr::make_layout("a", d, out) == tr::layout_errc::ok);
  d.tpm = limit(tr::max_units + 1);
  CHECK(tr::make_layout("a", d, out) == tr::layout_errc::too_large);
  d = c;
  d.budget = usd::from_nanos(tr::max_money);
  CHECK(tr::make_layout("a", d, out) == tr::layout_errc::ok);
  d.budget = usd::from_nanos(tr::max_money + 1);
  CHECK(tr::make_layout("a", d, out) == tr::layout_errc::too_large);
  d = c;
  d.request_window = std::chrono::microseconds(14);
  CHECK(tr::make_layout("a", d, out) == tr::layout_errc::window);
  d.request_window = std::chrono::microseconds(15);
  CHECK(tr::make_layout("a", d, out) == tr::layout_errc::ok);
  d.request_window = std::chrono::hours(24 * 401);
  CHECK(tr::make_layout("a", d, out) == tr::layout_errc::window);
  d = c;
  d.lease_timeout = nanoseconds(0);
  CHECK(tr::make_layout("a", d, out) == tr::layout_errc::no_lease_timeout);
#if !TOLLGATE_NO_EXCEPTIONS
  CHECK_THROWS_AS(tr::make_layout("a", d), tr::layout_error);
#endif
}

TEST_CASE("redis call argv: keys, clamped numbers, queued settlements", "[redis]") {
  const tr::layout l = tr::make_layout("acct", strict_config());
  tr::call_args a;
  a.what = tr::op::admit;
  a.tokens = ~std::uint64_t(0);
  a.worst_nanos = -5;
  tr::queued q;
  q.what = tr::queued::kind::settle;
  q.lease = 7;
  q.epoch = 1700000000123456;
  q.charge_tokens = ~std::uint64_t(0);
  const auto argv = tr::build_call(l, a, &q, 1, "0123456789012345678901234567890123456789");
  REQUIRE(argv.size() == 2 + 1 + 2 + 19 + 7 + 5 + 10);
  CHECK(argv[0] == "EVALSHA");
  CHECK(argv[2] == "2");      // two keys: the epoch (with the windows) and the lease set
  CHECK(argv[3] == "tollgate:{acct}:epoch");
  CHECK(argv[4] == "tollgate:{acct}:leases");
  CHECK(argv[5] == "3");      // layout version
  CHECK(argv[6] == "admit");
  CHECK(argv[7].empty());    // no supplied now: TIME
  CHECK(argv[21] == std::to_string(tr::max_units + 1));  // tokens beyond every limit: never
  CHECK(argv[22] == "0");    // worst case clamped to 0
  CHECK(argv[23] == "1");    // one queued settlement
  for (int i = 24; i < 36; ++i) CHECK(argv[static_cast<std::size_t>(i)] == "0");  // no bucket, day, learn
  CHECK(argv[36] == "1");    // settle
  CHECK(argv[37] == "7");
  CHECK(argv[40] == std::to_string(std::uint64_t(1) << 52));
  CHECK(argv[44] == "1700000000123456");  // the lease's epoch tag
  CHECK(argv[45] == "0");    // the tokens it reserved
  const auto eval = tr::build_call(l, a, &q, 0);
  CHECK(eval[0] == "EVAL");
  CHECK(eval[1] == std::string(tr::script));
  const auto f = tr::build_fcall(l, a, &q, 1);
  CHECK(f[0] == "FCALL");
  CHECK(f[1] == std::string(tr::function_name));
  CHECK(f[1].size() == 20);
  CHECK(f[1].rfind("tollgate_v3_", 0) == 0);
  CHECK(f[1].find_first_not_of("0123456789abcdef", 12) == std::string::npos);
  CHECK(std::vector<std::string>(f.begin() + 2, f.end()) == std::vector<std::string>(argv.begin() + 2, argv.end()));
  const std::string lib = tr::function_library();
  CHECK(lib.rfind("#!lua name=" + f[1] + "\n", 0) == 0);
  CHECK(lib.find(std::string(tr::script)) != std::string::npos);
}

// server_model::learn: both policies per dimension, the level in the call,
// a relearn answer rebuilding the buckets at a wider margin.
TEST_CASE("redis learn layout: windows and buckets, levels, relearn", "[redis]") {
  tollgate::account_config c;
  c.model = tollgate::server_model::learn;
  c.rpm = tollgate::limit(3);    // starts strict (RPM 3)
  c.tpm = tollgate::limit(100000);
  c.max_request_tokens = 1000;   // m = L / 100: spaced from the start
  c.lease_timeout = std::chrono::seconds(60);
  tr::layout l = tr::make_layout("learner", c);
  REQUIRE(l.learn.on);
  CHECK_FALSE(l.learn.spaced_start[0]);
  CHECK(l.learn.spaced_start[1]);
  CHECK(l.learn.max_level == 7);  // 2 ms doubled to 256 ms
  CHECK(l.w[0].width_us == 4000000);  // the strict window kept
  CHECK(l.b[0].per_us != 0);
  CHECK(l.learn.extra_tokens == 0);
  const tr::bucket_params b0 = l.b[0];
  tr::call_args a;
  auto argv = tr::build_call(l, a, nullptr, 0, "0123456789012345678901234567890123456789");
  CHECK(argv[tr::argv_word(27)] == "1");  // level 0
  CHECK(argv[tr::argv_word(29)] == "7");
  CHECK(argv[tr::argv_word(30)] == "2");  // tpm spaced from the start
  CHECK(argv[tr::argv_word(31)] == "1000");
  tr::learn_rebuild(l, 3);  // 16 ms
  CHECK(l.learn.level == 3);
  CHECK(tr::learn_margin(l.learn, 3) == std::chrono::milliseconds(16));
  CHECK(l.b[0].whole_us > b0.whole_us);  // wider spacing
  CHECK(l.learn.extra_tokens > 0);
  tr::patch_learn(argv, l);
  CHECK(argv == tr::build_call(l, a, nullptr, 0, "0123456789012345678901234567890123456789"));
  tr::learn_rebuild(l, 99);
  CHECK(l.learn.level == 7);
  tr::reply r;
  r.type = tr::reply::kind::array;
  for (std::int64_t v : {10, 0, 5, 0, -1, -1, 1000, 7}) r.elements.push_back(tr::reply::of_integer(v));
  CHECK(tr::relearn_level(r) == std::optional<std::uint64_t>(5));
  tr::call_reply cr;
  REQUIRE(tr::decode_call(r, cr, tr::op::admit) == tr::call_status::ok);
  CHECK(cr.code == tr::script_code::relearn);
  r.elements[0] = tr::reply::of_integer(9);
  CHECK_FALSE(tr::relearn_level(r));
  r.elements[0] = tr::reply::of_integer(11);
  CHECK(tr::decode_call(r, cr, tr::op::admit) == tr::call_status::garbage);
  c.max_spacing_margin = std::chrono::milliseconds(1);  // below the margin
  tr::layout bad;
  CHECK(tr::make_layout("learner", c, bad) == tr::layout_errc::spacing);
}

TEST_CASE("redis reply decoder: garbage never decodes as an admission", "[redis]") {
  using tr::reply;
  auto ints = [](std::vector<std::int64_t> v) {
    reply r;
    r.type = reply::kind::array;
    for (auto x : v) r.elements.push_back(reply::of_integer(x));
    return r;
  };
  tr::call_reply out;
  REQUIRE(tr::decode_call(ints({0, 0, 0, 5, 1, 2, 100, 77}), out) == tr::call_status::ok);
  CHECK(out.code == tr::script_code::admitted);
  CHECK(out.lease == 5);
  CHECK(tr::decode_call(reply::of_error("NOSCRIPT No matching script"), out) == tr::call_status::noscript);
  CHECK(tr::decode_call(reply::of_error("ERR Function not found"), out) == tr::call_status::noscript);
  CHECK(tr::decode_call(reply::of_error("ERR x"), out) == tr::call_status::server_error);
  CHECK(tr::decode_call(ints({0, 0, 0, 5, 1, 2, 77}), out) == tr::call_status::garbage);          // short
  CHECK(tr::decode_call(ints({11, 0, 0, 5, 1, 2, 100, 77}), out) == tr::call_status::garbage);    // unknown code
  REQUIRE(tr::decode_call(ints({9, 0, 0, 0, -1, -1, 0, 0}), out) == tr::call_status::ok);         // other widths
  CHECK(out.code == tr::script_code::other_configuration);
  CHECK(tr::decode_refusal(ints({9, 0, 0, 0, -1, -1, 0, 0})) == tr::script_code::other_configuration);
  CHECK(tr::decode_refusal(ints({7, 0, 0, 0, -1, -1, 0, 0})) == tr::script_code::corrupt);
  CHECK_FALSE(tr::decode_refusal(ints({1, 2, 5, 0, -1, -1, 100, 77})));  // a wait is no such refusal
  CHECK(tr::decode_call(ints({0, 4, 0, 5, 1, 2, 100, 77}), out) == tr::call_status::garbage);     // admitted, refused bits
  CHECK(tr::decode_call(ints({1, 2, 0, 0, -1, -1, 100, 77}), out) == tr::call_status::garbage);   // a wait of 0
  CHECK(tr::decode_call(ints({0, 0, 0, 5, 1, 2, std::int64_t(1) << 53, 77}), out) == tr::call_status::garbage);
  // Lease ids start at 1: an admission with lease 0 is garbage, and so is a
  // lease on the answer of an op that admits nothing.
  CHECK(tr::decode_call(ints({0, 0, 0, 0, 1, 2, 100, 77}), out) == tr::call_status::garbage);
  CHECK(tr::decode_call(ints({0, 0, 0, 0, 1, 2, 100, 77}), out, tr::op::admit) == tr::call_status::garbage);
  CHECK(tr::decode_call(ints({0, 0, 0, 0, -1, -1, 100, 77}), out, tr::op::flush) == tr::call_status::ok);
  CHECK(tr::decode_call(ints({0, 0, 0, 0, -1, -1, 100, 77}), out, tr::op::control) == tr::call_status::ok);
  CHECK(tr::decode_call(ints({0, 0, 0, 5, -1, -1, 100, 77}), out, tr::op::control) == tr::call_status::garbage);
  // An admission names its epoch (a lease is its epoch's tag and its id).
  CHECK(tr::decode_call(ints({0, 0, 0, 5, 1, 2, 100, 0}), out) == tr::call_status::garbage);
  CHECK(tr::decode_call(ints({0, 0, 0, 5, 1, 2, 100, -1}), out) == tr::call_status::garbage);
  REQUIRE(tr::decode_call(ints({0, 0, 0, 5, 1, 2, 100, 77}), out) == tr::call_status::ok);
  CHECK(out.epoch == 77);

  // Random replies: any shape, any values. The decoder must return, and an
  // `ok` decode of an admission needs exactly the admitted shape.
  const std::uint64_t seed = tgtest::seed_for(17017);
  tgtest::rng g(seed);
  INFO(tgtest::seed_note() << " stream seed " << seed);
  std::uint64_t ok = 0, admitted = 0, grants = 0;
  for (int i = 0; i < 30000; ++i) {
    reply r;
    const auto shape = g.between(0, 5);
    if (shape == 0) {
      r.type = static_cast<reply::kind>(g.between(0, 4));
      r.integer = static_cast<std::int64_t>(g.next());
      r.str = std::string(g.between(0, 12), static_cast<char>(g.between(0, 255)));
    } else {
      r.type = reply::kind::array;
      const std::size_t n = g.chance(70) ? (g.chance(70) ? 8 : 14) : g.between(0, 15);
      for (std::size_t k = 0; k < n; ++k) {
        reply e;
        e.type = g.chance(90) ? reply::kind::integer : static_cast<reply::kind>(g.between(0, 5));
        const auto v = g.between(0, 3);
        e.integer = v == 0 ? static_cast<std::int64_t>(g.next()) : v == 1 ? 0 : static_cast<std::int64_t>(g.between(0, 10)) - 2;
        if (e.type == reply::kind::array && g.chance(50)) e.elements.push_back(reply::of_integer(1));
        r.elements.push_back(e);
      }
      // A grant without slots, money or a slice ends in five zeros: reached often enough.
      if (n == 14 && g.chance(50)) {
        for (std::size_t k = 9; k < 14; ++k) r.elements[k] = reply::of_integer(0);
        r.elements[0] = reply::of_integer(0);
      }
    }
    tr::call_reply c;
    if (tr::decode_call(r, c) == tr::call_status::ok) {
      ++ok;
      REQUIRE(r.elements.size() == 8);
      for (const auto& e : r.elements) REQUIRE(e.type == reply::kind::integer);
      if (c.code == tr::script_code::admitted) {
        ++admitted;
        REQUIRE(c.refused_bits == 0);
        REQUIRE(c.lease >= 1);
        REQUIRE(c.epoch >= 1);
      }
    }
    tr::peek_reply p;
    (void)tr::decode_peek(r, p);
    std::int64_t w[3];
    (void)tr::decode_waits(r, w);
    // A chunk's grant needs its shape: 14 integers, a request at least, an
    // end after its time, an epoch, slots ending after the chunk, an end
    // within its slice; a refusal's reply is never a grant.
    tr::chunk_reply cr;
    tr::call_reply cc;
    bool granted = true;
    if (tr::decode_chunk(r, cr, cc, granted) == tr::call_status::ok) {
      if (granted) {
        ++grants;
        REQUIRE(r.elements.size() == 14);
        REQUIRE(cr.requests >= 1);
        REQUIRE(cr.slice_us >= 0);
        if (cr.slice_us > 0) REQUIRE(cr.end_us <= cr.now_us + cr.slice_us);
        REQUIRE(cr.end_us > cr.now_us);
        REQUIRE(cr.epoch >= 1);
        if (cr.slot_count > 0) {
          REQUIRE(cr.first_id >= 1);
          REQUIRE(cr.slot_end_us > cr.end_us);
        }
      } else {
        REQUIRE(r.elements.size() == 8);
        if (cc.code == tr::script_code::admitted) REQUIRE(cc.lease >= 1);  // admit's shape: a lease
      }
    } else {
      REQUIRE_FALSE(granted);
    }
  }
  CHECK(ok > 100);  // the generator reaches valid replies too
  CHECK(admitted > 10);
  CHECK(grants > 0);
}

TEST_CASE("redis chunk reply decoder: a grant, a refusal, garbage", "[redis]") {
  using tr::reply;
  auto ints = [](std::vector<std::int64_t> v) {
    reply r;
    r.type = reply::kind::array;
    for (auto x : v) r.elements.push_back(reply::of_integer(x));
    return r;
  };
  tr::chunk_reply g;
  tr::call_reply c;
  bool granted = false;
  REQUIRE(tr::decode_chunk(ints({0, 10, 500, 2000, 3, 4, -1, 1500, 77, 0, 0, 0, 0, 0}), g, c, granted) == tr::call_status::ok);
  CHECK(granted);
  CHECK(g.requests == 10);
  CHECK(g.tokens == 500);
  CHECK(g.end_us == 2000);
  CHECK(g.slots[0] == 3);
  CHECK(g.slots[2] == -1);
  CHECK(g.now_us == 1500);
  CHECK(g.epoch == 77);
  CHECK(g.slot_count == 0);
  // Slots: ids from 1 on, ending after the chunk; none: all three 0.
  REQUIRE(tr::decode_chunk(ints({0, 10, 500, 2000, 3, 4, -1, 1500, 77, 3, 41, 9000, 0, 0}), g, c, granted) ==
          tr::call_status::ok);
  CHECK(g.slot_count == 3);
  CHECK(g.first_id == 41);
  CHECK(g.slot_end_us == 9000);
  CHECK(tr::decode_chunk(ints({0, 10, 500, 2000, 3, 4, -1, 1500, 77, 3, 0, 9000, 0, 0}), g, c, granted) ==
        tr::call_status::garbage);
  CHECK(tr::decode_chunk(ints({0, 10, 500, 2000, 3, 4, -1, 1500, 77, 3, 41, 2000, 0, 0}), g, c, granted) ==
        tr::call_status::garbage);
  CHECK(tr::decode_chunk(ints({0, 10, 500, 2000, 3, 4, -1, 1500, 77, 0, 41, 0, 0, 0}), g, c, granted) ==
        tr::call_status::garbage);
  CHECK(tr::decode_chunk(ints({0, 10, 500, 2000, 3, 4, -1, 1500, 77, -1, 0, 0, 0, 0}), g, c, granted) ==
        tr::call_status::garbage);
  // Money: from 0 to 2^52 nanos.
  REQUIRE(tr::decode_chunk(ints({0, 10, 500, 2000, 3, 4, -1, 1500, 77, 0, 0, 0, 12345, 0}), g, c, granted) ==
          tr::call_status::ok);
  CHECK(g.money_nanos == 12345);
  CHECK(tr::decode_chunk(ints({0, 10, 500, 2000, 3, 4, -1, 1500, 77, 0, 0, 0, -1, 0}), g, c, granted) ==
        tr::call_status::garbage);
  CHECK(tr::decode_chunk(ints({0, 10, 500, 2000, 3, 4, -1, 1500, 77, 0, 0, 0, (std::int64_t(1) << 52) + 1, 0}), g, c,
                         granted) == tr::call_status::garbage);
  // The 9- and 12-integer grants of earlier versions are no grants.
  CHECK(tr::decode_chunk(ints({0, 10, 500, 2000, 3, 4, -1, 1500, 77, 0, 0, 0, 0}), g, c, granted) ==
        tr::call_status::garbage);
  CHECK(tr::decode_chunk(ints({0, 10, 500, 2000, 3, 4, -1, 1500, 77}), g, c, granted) == tr::call_status::garbage);
  // A spaced buckets' slice: [now, now + slice), which the chunk's end is within.
  REQUIRE(tr::decode_chunk(ints({0, 10, 500, 2000, -1, -1, -1, 1500, 77, 0, 0, 0, 0, 500}), g, c, granted) ==
          tr::call_status::ok);
  CHECK(g.slice_us == 500);
  CHECK(tr::decode_chunk(ints({0, 10, 500, 2000, -1, -1, -1, 1500, 77, 0, 0, 0, 0, 499}), g, c, granted) ==
        tr::call_status::garbage);
  CHECK(tr::decode_chunk(ints({0, 10, 500, 2000, -1, -1, -1, 1500, 77, 0, 0, 0, 0, -1}), g, c, granted) ==
        tr::call_status::garbage);
  CHECK(tr::decode_chunk(ints({0, 0, 500, 2000, 3, 4, -1, 1500, 77, 0, 0, 0, 0}), g, c, granted) == tr::call_status::garbage);
  CHECK(tr::decode_chunk(ints({0, 10, 500, 1500, 3, 4, -1, 1500, 77, 0, 0, 0, 0, 0}), g, c, granted) == tr::call_status::garbage);
  CHECK(tr::decode_chunk(ints({0, 10, 500, 2000, 3, 4, -1, 1500, 0, 0, 0, 0, 0, 0}), g, c, granted) == tr::call_status::garbage);
  CHECK(tr::decode_chunk(ints({1, 10, 500, 2000, 3, 4, -1, 1500, 77, 0, 0, 0, 0}), g, c, granted) == tr::call_status::garbage);
  REQUIRE(tr::decode_chunk(ints({1, 2, 5000, 0, -1, -1, 100, 77}), g, c, granted) == tr::call_status::ok);
  CHECK_FALSE(granted);
  CHECK(c.code == tr::script_code::wait);
  CHECK(c.wait_us == 5000);
  // An 8-integer admission is admit's (a 0-token request beside a stale
  // token window): it needs a lease id and an epoch, as admit's does.
  REQUIRE(tr::decode_chunk(ints({0, 0, 0, 5, 1, 2, 100, 77}), g, c, granted) == tr::call_status::ok);
  CHECK_FALSE(granted);
  CHECK(c.code == tr::script_code::admitted);
  CHECK(c.lease == 5);
  CHECK(tr::decode_chunk(ints({0, 0, 0, 0, 1, 2, 100, 77}), g, c, granted) == tr::call_status::garbage);
  CHECK(tr::decode_chunk(ints({0, 0, 0, 5, 1, 2, 100, 0}), g, c, granted) == tr::call_status::garbage);
  CHECK(tr::decode_chunk(reply::of_error("NOSCRIPT x"), g, c, granted) == tr::call_status::noscript);
}

namespace {
struct no_server {
  int calls = 0;
  tr::reply operator()(const std::vector<std::string>&) {
    ++calls;
    return tr::reply::of_error("ERR unreachable");
  }
};
struct garbage_server {
  tgtest::rng g{99};
  tr::reply operator()(const std::vector<std::string>&) {
    tr::reply r;
    r.type = tr::reply::kind::array;
    for (int k = 0; k < 8; ++k) r.elements.push_back(tr::reply::of_integer(static_cast<std::int64_t>(g.next())));
    return r;
  }
};
}  // namespace

TEST_CASE("redis account: an unreachable or babbling server refuses, fail closed", "[redis]") {
  tr::account<no_server> a("acct", strict_config(), no_server{});
  const auto x = a.try_admit(tgtest::req(100, 100));
  CHECK_FALSE(x);
  CHECK(x.how == tr::outcome::server_error);
  CHECK(x.d.why() == reason::busy);
  CHECK_FALSE(x.lease);
  // A supplied now outside test mode: refused without a call.
  const auto y = a.try_admit(tgtest::req(100, 100), nanoseconds(5));
  CHECK(y.how == tr::outcome::bad_call);
  CHECK_FALSE(y);
  // A request no state could admit costs no call.
  const auto z = a.try_admit(tgtest::req(100, 2000000));
  CHECK(z.d.never());
  tr::account<garbage_server> b("acct", strict_config(), garbage_server{});
  for (int i = 0; i < 200; ++i) {
    const auto r = b.try_admit(tgtest::req(10, 10));
    REQUIRE_FALSE(r);
    REQUIRE(r.how == tr::outcome::garbage);
  }
}

TEST_CASE("redis wait spread: later by at most its percent, never earlier, spread", "[redis]") {
  tr::wait_spreader s;
  CHECK(s.spread(0, 10) == 0);     // busy: no wait to spread
  CHECK(s.spread(-5, 10) == -5);
  CHECK(s.spread(12345, 0) == 12345);  // off
  CHECK(s.spread(9, 10) == 9);     // a tenth of 9 µs is below a µs
  std::vector<std::int64_t> seen;
  for (int i = 0; i < 2000; ++i) {
    const std::int64_t w = s.spread(100000, 10);
    CHECK(w >= 100000);
    CHECK(w <= 110000);
    seen.push_back(w);
  }
  std::sort(seen.begin(), seen.end());
  const auto distinct = std::unique(seen.begin(), seen.end()) - seen.begin();
  CHECK(distinct > 1500);           // spread, not one instant
  CHECK(seen.front() < 101000);     // over the whole part
  CHECK(seen.back() > 109000);
  // Above 100 counts as 100; a huge wait saturates, never wraps.
  for (int i = 0; i < 100; ++i) {
    const std::int64_t w = s.spread(1000, 1000);
    CHECK(w >= 1000);
    CHECK(w <= 2000);
  }
  const std::int64_t big = std::numeric_limits<std::int64_t>::max() - 5;
  CHECK(s.spread(big, 100) >= big);
  // Two objects draw apart.
  tr::wait_spreader a, b;
  int same = 0;
  for (int i = 0; i < 50; ++i) same += a.spread(1000000, 10) == b.spread(1000000, 10);
  CHECK(same < 5);
}
