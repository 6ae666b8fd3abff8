// The Redis layout without a server: key names, units, the hold, and which
// configurations it refuses.
#include "catch_compat.hpp"
#include "account_support.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <tollgate/redis/layout.hpp>

#include <chrono>
#include <cstdint>
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
  CHECK(l.key("tpd") == "tollgate:{org-1}:tpd");
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

TEST_CASE("redis layout refuses what the script cannot hold exactly", "[redis]") {
  tr::layout out;
  account_config c = strict_config();
  CHECK(tr::make_layout("", c, out) == tr::layout_errc::bad_name);
  CHECK(tr::make_layout("a{b}", c, out) == tr::layout_errc::bad_name);
  CHECK(tr::make_layout("a b", c, out) == tr::layout_errc::bad_name);
  CHECK(tr::make_layout(std::string(65, 'a'), c, out) == tr::layout_errc::bad_name);
  CHECK(tr::make_layout(std::string(64, 'a'), c, out) == tr::layout_errc::ok);
  for (server_model m : {server_model::unknown, server_model::gcra, server_model::window_counter}) {
    account_config d = c;
    d.model = m;
    CHECK(tr::make_layout("a", d, out) == tr::layout_errc::policy);
  }
  account_config d = c;
  d.calendar_day = true;
  CHECK(tr::make_layout("a", d, out) == tr::layout_errc::policy);
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
