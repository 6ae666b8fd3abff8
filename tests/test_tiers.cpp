#include "catch_compat.hpp"
#include "tollgate_under_test.hpp"

using namespace tollgate;

namespace {
constexpr usd dollars(std::int64_t d) { return usd::from_units(d); }
constexpr cny yuan(std::int64_t y) { return cny::from_units(y); }

// One row of expected figures, written out from the published tables.
struct expect_row {
  int tier;
  std::int64_t usd_threshold, cny_threshold;
  std::uint64_t concurrency, rpm, tpm;
  std::uint64_t tpd;  // 0 = unlimited
  std::uint64_t search_qps;  // 0 = not in the table
};

template <std::size_t N>
constexpr bool row_matches(const tier_table<N>& t, const expect_row& e) {
  const auto r = t.tier(e.tier);
  if (!r) return false;
  const limit tpd = e.tpd == 0 ? limit::unlimited() : limit(e.tpd);
  const limit qps = e.search_qps == 0 ? limit::unknown() : limit(e.search_qps);
  return r->recharge_usd == dollars(e.usd_threshold) && r->recharge_cny == yuan(e.cny_threshold) &&
         r->concurrency == limit(e.concurrency) && r->rpm == limit(e.rpm) && r->tpm == limit(e.tpm) &&
         r->tpd == tpd && r->web_search_qps == qps;
}

constexpr expect_row table_a[] = {
    {0, 1, 0, 1, 3, 500000, 1500000, 0},         {1, 10, 50, 50, 200, 2000000, 0, 0},
    {2, 20, 100, 100, 500, 3000000, 0, 0},       {3, 100, 500, 200, 5000, 3000000, 0, 0},
    {4, 1000, 5000, 400, 5000, 4000000, 0, 0},   {5, 3000, 20000, 1000, 10000, 5000000, 0, 0},
};
constexpr expect_row table_b[] = {
    {0, 1, 0, 1, 3, 500000, 1500000, 1},       {1, 10, 50, 15, 100, 2000000, 0, 3},
    {2, 20, 100, 40, 100, 3000000, 0, 5},      {3, 100, 500, 50, 200, 3000000, 0, 10},
    {4, 1000, 5000, 60, 200, 4000000, 0, 20},  {5, 3000, 20000, 100, 300, 5000000, 0, 50},
};

template <std::size_t N, std::size_t M>
constexpr bool all_rows(const tier_table<N>& t, const expect_row (&e)[M]) {
  if (M != N) return false;
  for (const expect_row& r : e)
    if (!row_matches(t, r)) return false;
  return true;
}
}  // namespace

// Every figure of both tables, checked at compile time.
static_assert(all_rows(kimi_tiers_2026_05, table_a), "table of the original specification");
static_assert(all_rows(kimi_tiers_2026_09, table_b), "September 2026 table");
static_assert(&kimi_tiers_latest == &kimi_tiers_2026_09, "the newest table is the default");
static_assert(kimi_tiers_2026_05.as_of == "2026-05-08", "");
static_assert(kimi_tiers_2026_09.as_of == "2026-09-23", "");
static_assert(kimi_tiers_2026_09.tier(1)->rpm.value() == 100u, "");
static_assert(!kimi_tiers_2026_09.tier(6), "no Tier6");
static_assert(kimi_tiers_2026_09.tier(1)->tpd.is_unlimited(), "unlimited is its own value");
static_assert(!kimi_tiers_2026_09.tier(1)->tpd.value(), "unlimited has no number");
static_assert(kimi_recharge_rules::voucher_threshold == dollars(5) && kimi_recharge_rules::voucher_amount == dollars(5), "");
static_assert(!kimi_recharge_rules::vouchers_count_toward_tier, "");
static_assert(kimi_tier_history::tier0_tpm_2024 == limit(32000), "2024-era Tier0 TPM");
static_assert(kimi_tier_history::observed_org_tpm == limit(64000) && kimi_tier_history::observed_project_tpm == limit(100), "");
static_assert(kimi_recharge_rules::minimum_to_start == dollars(1) && kimi_recharge_rules::cn_new_user_voucher == yuan(15), "");
static_assert(kimi_code_plan::concurrency == limit(30) && kimi_code_plan::quota_window_hours == 5, "");
static_assert(kimi_code_plan::approx_calls_per_window_low == 300 && kimi_code_plan::approx_calls_per_window_high == 1200, "");

TEST_CASE("tier look-up by recharge, in USD and CNY", "[tiers]") {
  constexpr auto t = kimi_tiers_latest;
  STATIC_REQUIRE(t.for_recharge(dollars(1))->tier == 0);
  STATIC_REQUIRE(t.for_recharge(dollars(19))->tier == 1);
  STATIC_REQUIRE(t.for_recharge(dollars(20))->tier == 2);
  STATIC_REQUIRE(t.for_recharge(dollars(1000000))->tier == 5);
  STATIC_REQUIRE(!t.for_recharge(usd::from_nanos(999999999)));  // below $1: no tier
  STATIC_REQUIRE(t.for_recharge(yuan(0))->tier == 0);
  STATIC_REQUIRE(t.for_recharge(yuan(499))->tier == 2);
  STATIC_REQUIRE(t.for_recharge(yuan(20000))->tier == 5);
  // Run time too.
  usd paid;
  REQUIRE(parse("$150", paid) == parse_errc::ok);
  CHECK(t.for_recharge(paid)->tier == 3);
  CHECK(t.tier(3)->concurrency == limit(50));
}

TEST_CASE("user tables and row overrides", "[tiers]") {
  // Override one row at run time: an account granted a higher RPM by support.
  tier_row mine = *kimi_tiers_2026_09.tier(2);
  mine.rpm = limit(250);
  const auto custom = kimi_tiers_2026_09.with_row(mine);
  CHECK(custom.tier(2)->rpm == limit(250));
  CHECK(custom.tier(1)->rpm == limit(100));
  CHECK(kimi_tiers_2026_09.tier(2)->rpm == limit(100));  // the shipped table is untouched
  // A table of one's own, same type shape, at compile time.
  constexpr tier_table<1> own{"my proxy", "2026-11-23", "our gateway config",
                              {{{0, usd(), cny(), limit(8), limit(60), limit(100000), limit::unknown(), limit::unknown()}}}};
  STATIC_REQUIRE(own.tier(0)->rpm == limit(60));
  STATIC_REQUIRE(!own.tier(0)->tpd.is_known());
  CHECK(limit() == limit::unknown());
  CHECK(limit::unlimited() != limit(0));
}
