// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// models.hpp: the Kimi model catalog as constexpr data: context windows,
// prices per token in USD and CNY, cache-write and batch prices, the default
// output cap, status and dates, each with where it was seen.
//
// Prices are token_price values: nano-units per token, which is also the
// price per million tokens in thousandths ($0.95 per 1M = 950). A figure the
// sources do not give is `unknown` (an empty optional), never zero; a model
// that has no cached-input price says so (`no_cache`). Retired models stay in
// the catalog with their retirement dates, so old logs can still be costed.
#ifndef TOLLGATE_MODELS_HPP
#define TOLLGATE_MODELS_HPP

#include <tollgate/config.hpp>
#include <tollgate/money.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

enum class model_status : unsigned char { current, deprecated, retired };

// The prices of one model in one currency.
template <class C>
struct price_list {
  std::optional<token_price<C>> input;   // cache miss
  std::optional<token_price<C>> cached;  // cache hit
  std::optional<token_price<C>> output;
  bool no_cache = false;  // the model has no cached-input price (not "unknown")
};

// A published batch price that differs from the 60 %-of-list rule.
struct batch_override {
  std::optional<token_price<usd_tag>> input, cached, output;
  std::string_view as_of, source;
};

struct model_info {
  std::string_view id;
  model_status status = model_status::current;
  std::string_view status_date;  // GA, deprecation or retirement date, if known
  std::optional<std::uint64_t> context_window;
  std::optional<std::uint64_t> default_max_tokens;  // the output cap used when max_tokens is absent
  price_list<usd_tag> usd_prices;
  price_list<cny_tag> cny_prices;
  std::optional<token_price<usd_tag>> cache_write_5m;  // explicit cache writes, 5-minute lifetime
  std::optional<token_price<usd_tag>> cache_write_1h;  // and 1-hour lifetime
  bool batch_available = false;  // the Batch API (60 % of list) is documented for this model
  std::optional<batch_override> batch_published;
  std::string_view as_of;
  std::string_view source;
  std::string_view note;
};

namespace detail {
constexpr std::optional<token_price<usd_tag>> p_usd(std::uint64_t nanos_per_token) {
  return token_price<usd_tag>{nanos_per_token};
}
constexpr std::optional<token_price<cny_tag>> p_cny(std::uint64_t nanos_per_token) {
  return token_price<cny_tag>{nanos_per_token};
}
constexpr std::optional<std::uint64_t> n(std::uint64_t v) { return v; }
inline constexpr std::nullopt_t unknown = std::nullopt;
}  // namespace detail

// The official catalog. Prices per token in nano-units = per 1M tokens in
// thousandths: 950 = $0.95 per 1M.
inline constexpr std::array<model_info, 17> kimi_models{{
    {"kimi-k3", model_status::current, "2026-07", detail::n(1048576), detail::n(131072),
     {detail::p_usd(3000), detail::p_usd(300), detail::p_usd(15000), false},
     {detail::p_cny(20000), detail::p_cny(2000), detail::p_cny(100000), false},
     detail::p_usd(3000), detail::p_usd(6000), false, std::nullopt, "2026-10",
     "platform.kimi.ai/docs/pricing/chat-k3; default cap from the K3 guide",
     "current from about 2026-07; cached hits need a prior prompt over 256 tokens"},
    {"kimi-k2.7-code", model_status::current, "", detail::n(262144), detail::unknown,
     {detail::p_usd(950), detail::p_usd(190), detail::p_usd(4000), false},
     {detail::p_cny(6500), detail::p_cny(1300), detail::p_cny(27000), false}, detail::unknown, detail::unknown, true,
     std::nullopt, "2026-09-02", "pricing page fixtures in public code; listed by GET /v1/models on 2026-09-02",
     "default output cap not published"},
    {"kimi-k2.7-code-highspeed", model_status::current, "", detail::n(262144), detail::unknown,
     {detail::p_usd(1900), detail::p_usd(380), detail::p_usd(8000), false},
     {detail::p_cny(13000), detail::p_cny(2600), detail::p_cny(54000), false}, detail::unknown, detail::unknown,
     false, std::nullopt, "2026-09-02", "pricing page fixtures in public code; listed by GET /v1/models on 2026-09-02",
     "default output cap and batch availability not published"},
    {"kimi-k2.6", model_status::current, "2026-04-20", detail::n(262144), detail::n(32768),
     {detail::p_usd(950), detail::p_usd(160), detail::p_usd(4000), false},
     {detail::p_cny(6500), detail::p_cny(1100), detail::p_cny(27000), false}, detail::unknown, detail::unknown, true,
     batch_override{std::nullopt, token_price<usd_tag>{100}, std::nullopt, "2026-10",
                    "third-party price audit: published batch cached-input price $0.10 per 1M, where the 60 % rule "
                    "gives $0.096"},
     "2026-10", "platform.kimi.ai/docs/pricing/chat-k26", "GA 2026-04-20"},
    {"kimi-k2.5", model_status::retired, "2026-08-31", detail::n(262144), detail::unknown,
     {detail::p_usd(600), detail::p_usd(100), detail::p_usd(3000), false},
     {detail::unknown, detail::unknown, detail::unknown, false}, detail::unknown, detail::unknown, true, std::nullopt,
     "2026-01-26", "model list in public code dated 2026-01-26; retirement reported when calls began to 404",
     "retired 2026-08-31"},
    {"kimi-k2-0905-preview", model_status::retired, "2026-05-25", detail::n(262144), detail::unknown,
     {detail::p_usd(600), detail::p_usd(150), detail::p_usd(2500), false},
     {detail::p_cny(4000), detail::p_cny(1000), detail::p_cny(16000), false}, detail::unknown, detail::unknown,
     false, std::nullopt, "2026-01-26", "model list in public code dated 2026-01-26; Moonshot retirement e-mail",
     "retired 2026-05-25"},
    {"kimi-k2-turbo-preview", model_status::retired, "2026-05-25", detail::n(262144), detail::unknown,
     {detail::p_usd(1150), detail::p_usd(150), detail::p_usd(8000), false},
     {detail::p_cny(8000), detail::p_cny(1000), detail::p_cny(58000), false}, detail::unknown, detail::unknown,
     false, std::nullopt, "2026-01-26", "model list in public code dated 2026-01-26",
     "earlier list prices were $2.40 / $0.60 / $10.00 per 1M; retired 2026-05-25"},
    // The sources give one merged row for the next three models ("262,144 / 131,072" context,
    // "$0.60 / $1.15" input, "$2.50 / $8.00" output, $0.15 cached): only the cached price and
    // the retirement date are unambiguous, so the rest is unknown.
    {"kimi-k2-thinking", model_status::retired, "2026-05-25", detail::unknown, detail::unknown,
     {detail::unknown, detail::p_usd(150), detail::unknown, false},
     {detail::unknown, detail::unknown, detail::unknown, false}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-05-25", "public model registries (merged row)",
     "context and input/output prices given only as a merged row for three models"},
    {"kimi-k2-thinking-turbo", model_status::retired, "2026-05-25", detail::unknown, detail::unknown,
     {detail::unknown, detail::p_usd(150), detail::unknown, false},
     {detail::unknown, detail::unknown, detail::unknown, false}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-05-25", "public model registries (merged row)",
     "context and input/output prices given only as a merged row for three models"},
    {"kimi-k2-0711-preview", model_status::retired, "2026-05-25", detail::unknown, detail::unknown,
     {detail::unknown, detail::p_usd(150), detail::unknown, false},
     {detail::unknown, detail::unknown, detail::unknown, false}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-05-25", "public model registries (merged row)",
     "context and input/output prices given only as a merged row for three models"},
    {"moonshot-v1-8k", model_status::retired, "2026-08-31", detail::n(8192), detail::unknown,
     {detail::p_usd(200), detail::unknown, detail::p_usd(2000), true},
     {detail::p_cny(2000), detail::unknown, detail::p_cny(10000), true}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-09-02", "official chat-v1 pricing page (public copy)", "retired 2026-08-31; no cache pricing"},
    {"moonshot-v1-32k", model_status::retired, "2026-08-31", detail::n(32768), detail::unknown,
     {detail::p_usd(1000), detail::unknown, detail::p_usd(3000), true},
     {detail::p_cny(5000), detail::unknown, detail::p_cny(20000), true}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-09-02", "official chat-v1 pricing page (public copy)", "retired 2026-08-31; no cache pricing"},
    {"moonshot-v1-128k", model_status::retired, "2026-08-31", detail::n(131072), detail::unknown,
     {detail::p_usd(2000), detail::unknown, detail::p_usd(5000), true},
     {detail::p_cny(10000), detail::unknown, detail::p_cny(30000), true}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-09-02", "official chat-v1 pricing page (public copy)", "retired 2026-08-31; no cache pricing"},
    // The vision previews share the moonshot-v1 row in the sources; which figure belongs to
    // which is not stated, so only the retirement is recorded.
    {"moonshot-v1-8k-vision-preview", model_status::retired, "2026-08-31", detail::unknown, detail::unknown,
     {detail::unknown, detail::unknown, detail::unknown, true},
     {detail::unknown, detail::unknown, detail::unknown, true}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-09-02", "official chat-v1 pricing page (public copy), merged row",
     "retired 2026-08-31; figures not given separately"},
    {"moonshot-v1-32k-vision-preview", model_status::retired, "2026-08-31", detail::unknown, detail::unknown,
     {detail::unknown, detail::unknown, detail::unknown, true},
     {detail::unknown, detail::unknown, detail::unknown, true}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-09-02", "official chat-v1 pricing page (public copy), merged row",
     "retired 2026-08-31; figures not given separately"},
    {"moonshot-v1-128k-vision-preview", model_status::retired, "2026-08-31", detail::unknown, detail::unknown,
     {detail::unknown, detail::unknown, detail::unknown, true},
     {detail::unknown, detail::unknown, detail::unknown, true}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-09-02", "official chat-v1 pricing page (public copy), merged row",
     "retired 2026-08-31; figures not given separately"},
    {"kimi-latest", model_status::deprecated, "2026-01-28", detail::unknown, detail::unknown,
     {detail::unknown, detail::unknown, detail::unknown, false},
     {detail::unknown, detail::unknown, detail::unknown, false}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-01-28", "platform.kimi.com/docs/models", "deprecated 2026-01-28"},
}};

// Prices that are not per token, as published.
struct kimi_other_prices {
  // The $web_search tool: per call, plus its search tokens billed as input
  // (official docs, seen by 2026-10).
  static constexpr usd web_search_call = usd::from_nanos(5000000);  // $0.005
  // Legacy (2024) explicit Context Caching for moonshot-v1 models, CN site:
  // creating a cache ¥24 per 1M tokens, storage ¥10 per 1M tokens per
  // minute, ¥0.02 per call that uses it; cache tokens free during the beta.
  static constexpr token_price<cny_tag> legacy_cache_create = {24000};
  static constexpr token_price<cny_tag> legacy_cache_storage_per_minute = {10000};
  static constexpr cny legacy_cache_call = cny::from_nanos(20000000);  // ¥0.02
  static constexpr std::string_view legacy_cache_source = "platform.moonshot.cn/docs/price/caching (2024)";
  // kimi-k3 cache hits need a previous prompt of more than 256 tokens.
  static constexpr std::uint64_t k3_min_cached_prefix_tokens = 256;
};

// A third-party listing quoted by the project's original specification, from
// an undated pricing guide. It disagrees with the official prices above and is
// kept separate, for comparison only: the calculator never uses it.
struct third_party_price {
  std::string_view id;
  token_price<usd_tag> input, output;
};
inline constexpr std::array<third_party_price, 2> third_party_guide_prices{{
    {"kimi-k2.5", {600}, {2000}},
    {"kimi-k2.6", {550}, {2650}},
}};
inline constexpr std::string_view third_party_guide_note =
    "third-party pricing guide quoted in the original specification; undated; not official";

// Looks a model up by id; empty for an id the catalog does not know.
constexpr std::optional<model_info> find_model(std::string_view id) noexcept {
  for (const model_info& m : kimi_models)
    if (m.id == id) return m;
  return std::nullopt;
}

// The catalog entry itself (static storage), or nullptr for an unknown id:
// what account requests point to.
constexpr const model_info* model_by_id(std::string_view id) noexcept {
  for (const model_info& m : kimi_models)
    if (m.id == id) return &m;
  return nullptr;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_MODELS_HPP
