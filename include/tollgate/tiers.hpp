// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// tiers.hpp: dated tables of Kimi's rate-limit tiers, as constexpr data.
//
// A tier is reached by cumulative recharge (vouchers do not count). Kimi has
// changed the table during 2026, so both versions ship, each with the date it
// was seen and its source; `kimi_tiers_latest` names the newest and nothing
// else in the library assumes a table. A table is a plain constexpr value:
// declare your own of the same type, or copy one and change a row.
//
// "Unlimited" and "unknown" are distinct values of `limit`, never a large
// number or zero.
#ifndef TOLLGATE_TIERS_HPP
#define TOLLGATE_TIERS_HPP

#include <tollgate/config.hpp>
#include <tollgate/money.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

// A limit from a published table: a number, "unlimited", or not published.
class limit {
 public:
  enum class kind : unsigned char { unknown, finite, unlimited };
  constexpr limit() noexcept = default;
  constexpr explicit limit(std::uint64_t v) noexcept : v_(v), k_(kind::finite) {}
  static constexpr limit unlimited() noexcept { return limit(kind::unlimited); }
  static constexpr limit unknown() noexcept { return limit(kind::unknown); }

  constexpr kind what() const noexcept { return k_; }
  constexpr bool is_finite() const noexcept { return k_ == kind::finite; }
  constexpr bool is_unlimited() const noexcept { return k_ == kind::unlimited; }
  constexpr bool is_known() const noexcept { return k_ != kind::unknown; }
  // The number; an empty optional for unlimited and unknown.
  constexpr std::optional<std::uint64_t> value() const noexcept {
    return k_ == kind::finite ? std::optional<std::uint64_t>(v_) : std::nullopt;
  }
  friend constexpr bool operator==(limit a, limit b) noexcept {
    return a.k_ == b.k_ && (a.k_ != kind::finite || a.v_ == b.v_);
  }
  friend constexpr bool operator!=(limit a, limit b) noexcept { return !(a == b); }

 private:
  constexpr explicit limit(kind k) noexcept : k_(k) {}
  std::uint64_t v_ = 0;
  kind k_ = kind::unknown;
};

struct tier_row {
  int tier = 0;
  usd recharge_usd;  // cumulative recharge that unlocks the tier (international site)
  cny recharge_cny;  // the same on the CN site
  limit concurrency, rpm, tpm, tpd;
  limit web_search_qps;  // per search endpoint; not in every table
};

template <std::size_t N>
struct tier_table {
  std::string_view name;
  std::string_view as_of;   // when the figures were seen (YYYY-MM-DD)
  std::string_view source;  // where
  std::array<tier_row, N> rows;

  // The row of tier `t`, if the table has it.
  constexpr std::optional<tier_row> tier(int t) const noexcept {
    for (const tier_row& r : rows)
      if (r.tier == t) return r;
    return std::nullopt;
  }
  // The highest tier whose threshold a cumulative recharge reaches (vouchers
  // do not count); empty below the lowest threshold.
  constexpr std::optional<tier_row> for_recharge(usd paid) const noexcept {
    // Indices, not optional assignment: std::optional's is not constexpr in C++17.
    std::size_t best = N;
    for (std::size_t i = 0; i < N; ++i)
      if (rows[i].recharge_usd <= paid && (best == N || rows[i].recharge_usd >= rows[best].recharge_usd)) best = i;
    return best == N ? std::nullopt : std::optional<tier_row>(rows[best]);
  }
  constexpr std::optional<tier_row> for_recharge(cny paid) const noexcept {
    std::size_t best = N;
    for (std::size_t i = 0; i < N; ++i)
      if (rows[i].recharge_cny <= paid && (best == N || rows[i].recharge_cny >= rows[best].recharge_cny)) best = i;
    return best == N ? std::nullopt : std::optional<tier_row>(rows[best]);
  }
  // A copy with row `r` replacing the row of the same tier (or unchanged if
  // the table has no such tier).
  constexpr tier_table with_row(const tier_row& r) const noexcept {
    tier_table t = *this;
    for (tier_row& x : t.rows)
      if (x.tier == r.tier) x = r;
    return t;
  }
};

namespace detail {
constexpr usd dollars(std::int64_t d) { return usd::from_units(d); }
constexpr cny yuan(std::int64_t y) { return cny::from_units(y); }
}  // namespace detail

// The table of the project's original specification, as the official limits
// page showed it in early to mid 2026 and as quoted verbatim on 2026-05-08.
// No web-search column.
inline constexpr tier_table<6> kimi_tiers_2026_05{
    "Kimi API rate limits (pre-August 2026)",
    "2026-05-08",
    "platform.kimi.ai/docs/pricing/limits (quoted 2026-05-08; same rows on platform.moonshot.ai earlier in 2026); "
    "CNY thresholds from platform.kimi.com/docs/pricing/limits.md",
    {{
        {0, detail::dollars(1), detail::yuan(0), limit(1), limit(3), limit(500000), limit(1500000), limit::unknown()},
        {1, detail::dollars(10), detail::yuan(50), limit(50), limit(200), limit(2000000), limit::unlimited(),
         limit::unknown()},
        {2, detail::dollars(20), detail::yuan(100), limit(100), limit(500), limit(3000000), limit::unlimited(),
         limit::unknown()},
        {3, detail::dollars(100), detail::yuan(500), limit(200), limit(5000), limit(3000000), limit::unlimited(),
         limit::unknown()},
        {4, detail::dollars(1000), detail::yuan(5000), limit(400), limit(5000), limit(4000000), limit::unlimited(),
         limit::unknown()},
        {5, detail::dollars(3000), detail::yuan(20000), limit(1000), limit(10000), limit(5000000),
         limit::unlimited(), limit::unknown()},
    }}};

// The table after Kimi's August 2026 rule change, as transcribed verbatim from
// the international and CN limits pages on 2026-09-23 (Tier2 corroborated by
// account evidence dated 2026-09-19). Concurrency and RPM are much lower than
// in the earlier table; TPM and TPD are unchanged.
inline constexpr tier_table<6> kimi_tiers_2026_09{
    "Kimi API rate limits (September 2026)",
    "2026-09-23",
    "platform.kimi.ai/docs/pricing/limits and platform.kimi.com/docs/pricing/limits, transcribed 2026-09-23; "
    "Tier2 corroborated by account evidence of 2026-09-19",
    {{
        {0, detail::dollars(1), detail::yuan(0), limit(1), limit(3), limit(500000), limit(1500000), limit(1)},
        {1, detail::dollars(10), detail::yuan(50), limit(15), limit(100), limit(2000000), limit::unlimited(),
         limit(3)},
        {2, detail::dollars(20), detail::yuan(100), limit(40), limit(100), limit(3000000), limit::unlimited(),
         limit(5)},
        {3, detail::dollars(100), detail::yuan(500), limit(50), limit(200), limit(3000000), limit::unlimited(),
         limit(10)},
        {4, detail::dollars(1000), detail::yuan(5000), limit(60), limit(200), limit(4000000), limit::unlimited(),
         limit(20)},
        {5, detail::dollars(3000), detail::yuan(20000), limit(100), limit(300), limit(5000000), limit::unlimited(),
         limit(50)},
    }}};

// The newest table tollgate knows. Code that must not change meaning when a
// newer table ships should name a dated table instead.
inline constexpr const tier_table<6>& kimi_tiers_latest = kimi_tiers_2026_09;

// Earlier figures that show the table is data, not a constant. Dated where
// the sources date them; none of them is used by default.
struct kimi_tier_history {
  // Tier0's TPM in 2024-era summaries (a CSDN summary of the limits page).
  static constexpr limit tier0_tpm_2024 = limit(32000);
  static constexpr std::string_view tier0_tpm_2024_source = "wenku.csdn.net/answer/16en79q3iw (2024)";
  // Limits quoted by live 429 messages (third-party fixtures, undated):
  // "TPM rate limit, current: 64001, limit: 64000" and a project-level
  // "TPM rate limit, current: 1410, limit: 100".
  static constexpr limit observed_org_tpm = limit(64000);
  static constexpr limit observed_project_tpm = limit(100);
};

// Recharge rules stated on the limits page (seen 2026-09-23).
struct kimi_recharge_rules {
  static constexpr usd minimum_to_start = usd::from_units(1);  // at least $1 before any call
  static constexpr usd voucher_threshold = usd::from_units(5);  // cumulative recharge that earns...
  static constexpr usd voucher_amount = usd::from_units(5);     // ...a $5 voucher
  static constexpr bool vouchers_count_toward_tier = false;
  static constexpr cny cn_new_user_voucher = cny::from_units(15);  // CN site; not usable for kimi-k3
  static constexpr std::string_view as_of = "2026-09-23";
};

// The Kimi Code plan (a membership plan with its own endpoint and keys, not a
// tier of the API above).
struct kimi_code_plan {
  static constexpr std::string_view endpoint = "https://api.kimi.com/coding/v1";
  static constexpr std::string_view key_prefix = "sk-kimi-";
  static constexpr limit concurrency = limit(30);
  static constexpr std::int64_t quota_window_hours = 5;
  // "A 5-hour token quota supports approximately 300-1,200 API calls": an
  // approximation in the plan's description, not an enforced number.
  static constexpr std::uint64_t approx_calls_per_window_low = 300;
  static constexpr std::uint64_t approx_calls_per_window_high = 1200;
  static constexpr std::string_view as_of = "2026-10";
  static constexpr std::string_view source =
      "kimi.com/code/docs (key advantages), quoted by Moonshot staff at forum.moonshot.ai";
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_TIERS_HPP
