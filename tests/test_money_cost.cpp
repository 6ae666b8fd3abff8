#include "catch_compat.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <atomic>
#include <limits>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

using namespace tollgate;

namespace {
constexpr usd dollars_nanos(std::int64_t n) { return usd::from_nanos(n); }
constexpr model_info model(std::string_view id) { return *find_model(id); }
constexpr std::uint64_t in_usd(std::string_view id) { return model(id).usd_prices.input->nanos_per_token; }
constexpr std::uint64_t cached_usd(std::string_view id) { return model(id).usd_prices.cached->nanos_per_token; }
constexpr std::uint64_t out_usd(std::string_view id) { return model(id).usd_prices.output->nanos_per_token; }
constexpr std::uint64_t in_cny(std::string_view id) { return model(id).cny_prices.input->nanos_per_token; }
constexpr std::uint64_t cached_cny(std::string_view id) { return model(id).cny_prices.cached->nanos_per_token; }
constexpr std::uint64_t out_cny(std::string_view id) { return model(id).cny_prices.output->nanos_per_token; }
}  // namespace

// ---- the catalog: every published figure of the model table ----
// Prices are nano-units per token = thousandths per 1M tokens.
static_assert(in_usd("kimi-k3") == 3000 && cached_usd("kimi-k3") == 300 && out_usd("kimi-k3") == 15000, "");
static_assert(in_cny("kimi-k3") == 20000 && cached_cny("kimi-k3") == 2000 && out_cny("kimi-k3") == 100000, "");
static_assert(model("kimi-k3").cache_write_5m->nanos_per_token == 3000, "");
static_assert(model("kimi-k3").cache_write_1h->nanos_per_token == 6000, "");
static_assert(*model("kimi-k3").context_window == 1048576 && *model("kimi-k3").default_max_tokens == 131072, "");
static_assert(in_usd("kimi-k2.7-code") == 950 && cached_usd("kimi-k2.7-code") == 190 && out_usd("kimi-k2.7-code") == 4000, "");
static_assert(in_cny("kimi-k2.7-code") == 6500 && cached_cny("kimi-k2.7-code") == 1300 && out_cny("kimi-k2.7-code") == 27000, "");
static_assert(in_usd("kimi-k2.7-code-highspeed") == 1900 && cached_usd("kimi-k2.7-code-highspeed") == 380 &&
                  out_usd("kimi-k2.7-code-highspeed") == 8000, "");
static_assert(in_cny("kimi-k2.7-code-highspeed") == 13000 && cached_cny("kimi-k2.7-code-highspeed") == 2600 &&
                  out_cny("kimi-k2.7-code-highspeed") == 54000, "");
static_assert(*model("kimi-k2.7-code").context_window == 262144 && !model("kimi-k2.7-code").default_max_tokens, "");
static_assert(in_usd("kimi-k2.6") == 950 && cached_usd("kimi-k2.6") == 160 && out_usd("kimi-k2.6") == 4000, "");
static_assert(in_cny("kimi-k2.6") == 6500 && cached_cny("kimi-k2.6") == 1100 && out_cny("kimi-k2.6") == 27000, "");
static_assert(*model("kimi-k2.6").context_window == 262144 && *model("kimi-k2.6").default_max_tokens == 32768, "");
static_assert(model("kimi-k2.6").status_date == "2026-04-20", "");
static_assert(model("kimi-k2.6").batch_published->cached->nanos_per_token == 100, "published $0.10, not the rule's $0.096");
static_assert(in_usd("kimi-k2.5") == 600 && cached_usd("kimi-k2.5") == 100 && out_usd("kimi-k2.5") == 3000, "");
static_assert(model("kimi-k2.5").status == model_status::retired && model("kimi-k2.5").status_date == "2026-08-31", "");
static_assert(in_usd("kimi-k2-0905-preview") == 600 && cached_usd("kimi-k2-0905-preview") == 150 &&
                  out_usd("kimi-k2-0905-preview") == 2500, "");
static_assert(in_cny("kimi-k2-0905-preview") == 4000 && cached_cny("kimi-k2-0905-preview") == 1000 &&
                  out_cny("kimi-k2-0905-preview") == 16000, "");
static_assert(model("kimi-k2-0905-preview").status_date == "2026-05-25", "");
static_assert(in_usd("kimi-k2-turbo-preview") == 1150 && cached_usd("kimi-k2-turbo-preview") == 150 &&
                  out_usd("kimi-k2-turbo-preview") == 8000, "");
static_assert(in_cny("kimi-k2-turbo-preview") == 8000 && cached_cny("kimi-k2-turbo-preview") == 1000 &&
                  out_cny("kimi-k2-turbo-preview") == 58000, "");
// The merged row: only the cached price and the retirement are unambiguous.
static_assert(cached_usd("kimi-k2-thinking") == 150 && !model("kimi-k2-thinking").usd_prices.input &&
                  !model("kimi-k2-thinking").context_window, "");
static_assert(cached_usd("kimi-k2-thinking-turbo") == 150 && !model("kimi-k2-thinking-turbo").usd_prices.output, "");
static_assert(model("kimi-k2-0711-preview").status_date == "2026-05-25", "");
static_assert(in_usd("moonshot-v1-8k") == 200 && out_usd("moonshot-v1-8k") == 2000 && in_cny("moonshot-v1-8k") == 2000 &&
                  out_cny("moonshot-v1-8k") == 10000 && *model("moonshot-v1-8k").context_window == 8192, "");
static_assert(in_usd("moonshot-v1-32k") == 1000 && out_usd("moonshot-v1-32k") == 3000 && in_cny("moonshot-v1-32k") == 5000 &&
                  out_cny("moonshot-v1-32k") == 20000 && *model("moonshot-v1-32k").context_window == 32768, "");
static_assert(in_usd("moonshot-v1-128k") == 2000 && out_usd("moonshot-v1-128k") == 5000 &&
                  in_cny("moonshot-v1-128k") == 10000 && out_cny("moonshot-v1-128k") == 30000 &&
                  *model("moonshot-v1-128k").context_window == 131072, "");
static_assert(model("moonshot-v1-8k").usd_prices.no_cache, "v1 has no cache pricing");
static_assert(model("moonshot-v1-128k").status_date == "2026-08-31", "");
static_assert(model("kimi-latest").status == model_status::deprecated && model("kimi-latest").status_date == "2026-01-28", "");
static_assert(!find_model("kimi-k9"), "an unknown id is empty, never a price of zero");
static_assert(third_party_guide_prices[0].id == "kimi-k2.5" && third_party_guide_prices[0].input.nanos_per_token == 600 &&
                  third_party_guide_prices[0].output.nanos_per_token == 2000, "");
static_assert(third_party_guide_prices[1].id == "kimi-k2.6" && third_party_guide_prices[1].input.nanos_per_token == 550 &&
                  third_party_guide_prices[1].output.nanos_per_token == 2650, "");

static_assert(kimi_other_prices::web_search_call == usd::from_nanos(5000000), "$0.005 per web search call");
static_assert(kimi_other_prices::legacy_cache_create.nanos_per_token == 24000, "¥24 per 1M to create a cache");
static_assert(kimi_other_prices::legacy_cache_storage_per_minute.nanos_per_token == 10000, "¥10 per 1M per minute");
static_assert(kimi_other_prices::legacy_cache_call == cny::from_nanos(20000000), "¥0.02 per call");
static_assert(kimi_other_prices::k3_min_cached_prefix_tokens == 256, "");

TEST_CASE("catalog: every model is dated and sourced; current ones as listed on 2026-09-02", "[money]") {
  int current = 0;
  for (const model_info& m : kimi_models) {
    INFO(std::string(m.id));
    CHECK_FALSE(m.as_of.empty());
    CHECK_FALSE(m.source.empty());
    if (m.status == model_status::current) ++current;
    if (m.status != model_status::current) CHECK_FALSE(m.status_date.empty());
    // Never a price of zero: unknown is empty.
    for (auto p : {m.usd_prices.input, m.usd_prices.cached, m.usd_prices.output})
      if (p) CHECK(p->nanos_per_token > 0);
  }
  CHECK(current == 4);
  CHECK(find_model(std::string("kimi-k2.6"))->id == "kimi-k2.6");  // run-time look-up
}

// ---- money ----
static_assert(usd::from_units(3) + usd::from_nanos(900000000) == dollars_nanos(3900000000), "");

TEST_CASE("money: exact, typed, checked", "[money]") {
  usd a;
  REQUIRE(parse("$0.95", a) == parse_errc::ok);
  CHECK(a.nanos() == 950000000);
  REQUIRE(parse("0.95", a) == parse_errc::ok);
  CHECK(a.nanos() == 950000000);
  REQUIRE(parse("USD 3.90", a) == parse_errc::ok);
  CHECK(format(a) == "$3.90");
  REQUIRE(parse("-1.5", a) == parse_errc::ok);
  CHECK(format(a) == "-$1.50");
  cny y;
  REQUIRE(parse("\xC2\xA5" "27", y) == parse_errc::ok);
  CHECK(format(y) == "\xC2\xA5" "27.00");
  REQUIRE(parse("27.00 CNY", y) == parse_errc::ok);
  CHECK(y == cny::from_units(27));
  CHECK(parse("", a) == parse_errc::empty);
  CHECK(parse("$", a) == parse_errc::empty);
  CHECK(parse("1.2.3", a) == parse_errc::bad_character);
  CHECK(parse("12a", a) == parse_errc::bad_character);
  CHECK(parse("\xC2\xA5" "5", a) == parse_errc::wrong_currency);
  CHECK(parse("$5", y) == parse_errc::wrong_currency);
  CHECK(parse("0.0000000001", a) == parse_errc::too_many_decimals);
  CHECK(parse("99999999999", a) == parse_errc::overflow);
  CHECK(parse("9223372036.854775807", a) == parse_errc::ok);
  CHECK(a == usd::max());
  // Formatting rounds half away from zero, only for display.
  CHECK(format(usd::from_nanos(3899999999)) == "$3.90");
  CHECK(format(usd::from_nanos(3894999999)) == "$3.89");
  CHECK(format(usd::from_nanos(3895000000)) == "$3.90");
  CHECK(format(usd::from_nanos(-3895000000)) == "-$3.90");
  CHECK(format(usd::from_nanos(-1)) == "$0.00");
  CHECK(format(usd::from_nanos(950000000), 4) == "$0.9500");
  CHECK(format(usd::from_nanos(123), 9) == "$0.000000123");
  CHECK(format(usd::from_units(12), 0) == "$12");
  // Overflow is reported, never wrapped.
  usd r;
  CHECK_FALSE(checked_add(usd::max(), usd::from_nanos(1), r));
  CHECK_THROWS_AS(usd::max() + usd::from_nanos(1), money_overflow);
  CHECK_THROWS_AS(usd::max() * 2, money_overflow);
  CHECK_THROWS_AS(usd::from_units(10000000000LL), money_overflow);
  // Prices per million tokens must be exact per token.
  token_price<usd_tag> p;
  CHECK(price_per_million("$0.95", p) == price_errc::ok);
  CHECK(p.nanos_per_token == 950);
  CHECK(per_million(p) == usd::from_nanos(950000000));
  CHECK(price_per_million("0.0955", p) == price_errc::finer_than_a_nano_unit);
  CHECK(price_per_million("-1", p) == price_errc::negative);
  CHECK(price_per_million("abc", p) == price_errc::not_a_number);
}

// ---- cost ----
TEST_CASE("cost: the worked examples hold exactly", "[money]") {
  constexpr model_info k26 = model("kimi-k2.6");
  // 2,000,000 input + 500,000 output at $0.95 / $4.00 = $3.90.
  constexpr auto c = cost(k26, usage{2000000, 0, 500000, 0, 0});
  STATIC_REQUIRE(c.total == usd::from_nanos(3900000000));
  CHECK(format(c.total) == "$3.90");
  CHECK(c.input == usd::from_nanos(1900000000));
  CHECK(c.output == usd::from_units(2));
  // The same in CNY: 2 x 6.5 + 0.5 x 27 = 26.50.
  CHECK(format(cost<cny_tag>(k26, usage{2000000, 0, 500000, 0, 0}).total) == "\xC2\xA5" "26.50");
  // A fully cached call costs the cached price, not the input price.
  const auto cached = cost(k26, usage{1000000, 1000000, 0, 0, 0});
  CHECK(cached.total == usd::from_nanos(160000000));
  CHECK(cached.input == usd());
  // Summing a million one-token calls equals one million-token call.
  usd sum;
  for (int i = 0; i < 1000000; ++i) sum += cost(k26, usage{1, 0, 1, 0, 0}).total;
  CHECK(sum == cost(k26, usage{1000000, 0, 1000000, 0, 0}).total);
}

TEST_CASE("cost: inclusive vs exclusive prompt counts, batch, cache writes, errors", "[money]") {
  const model_info k26 = model("kimi-k2.6");
  // Kimi/OpenAI report prompt including cached; Anthropic-style excluding.
  const auto inc = cost(k26, usage{1000, 400, 0, 0, 0});
  CHECK(inc.total == usd::from_nanos(600 * 950 + 400 * 160));
  const auto exc = cost(k26, usage{1000, 400, 0, 0, 0}, cost_options{false, false});
  CHECK(exc.total == usd::from_nanos(1000 * 950 + 400 * 160));
  CHECK(cost(k26, usage{10, 11, 0, 0, 0}).error == cost_errc::cached_exceeds_prompt);
  // Batch: 60 % of list, except the published cached price ($0.10, not $0.096).
  const auto b = cost(k26, usage{1000000, 1000000, 1000000, 0, 0}, cost_options{false, true});
  CHECK(b.input == usd::from_nanos(570000000));
  CHECK(b.cached == usd::from_nanos(100000000));
  CHECK(b.output == usd::from_nanos(2400000000));
  CHECK(cost(model("kimi-k3"), usage{1, 0, 0, 0, 0}, cost_options{true, true}).error == cost_errc::batch_unavailable);
  CHECK(cost<cny_tag>(k26, usage{1000000, 0, 0, 0, 0}, cost_options{true, true}).total == cny::from_nanos(3900000000));
  // kimi-k3 cache writes: $3.00 (5 min) and $6.00 (1 h) per 1M.
  const auto k3 = cost(model("kimi-k3"), usage{0, 0, 0, 1000000, 1000000});
  CHECK(k3.cache_write == usd::from_units(9));
  CHECK(cost<cny_tag>(model("kimi-k3"), usage{0, 0, 0, 1, 0}).error == cost_errc::unknown_price);
  // No cache pricing: cached tokens are ordinary input.
  CHECK(cost(model("moonshot-v1-8k"), usage{1000, 1000, 0, 0, 0}).total == usd::from_nanos(200000));
  // Unknown prices are errors only where they are needed.
  CHECK(cost(model("kimi-k2-thinking"), usage{100, 0, 0, 0, 0}).error == cost_errc::unknown_price);
  CHECK(cost(model("kimi-k2-thinking"), usage{100, 100, 0, 0, 0}).total == usd::from_nanos(15000));
  CHECK(cost(model("kimi-k2.5"), usage{1, 0, 0, 0, 0}).total == usd::from_nanos(600));
  CHECK(cost<cny_tag>(model("kimi-k2.5"), usage{1, 0, 0, 0, 0}).error == cost_errc::unknown_price);
  // Overflow is reported.
  CHECK(cost(model("kimi-k3"), usage{0, 0, 1ULL << 62, 0, 0}).error == cost_errc::overflow);
  CHECK(std::string(message(cost_errc::overflow)).find("overflow") != std::string::npos);
}

TEST_CASE("worst-case cost before sending", "[money]") {
  const model_info k26 = model("kimi-k2.6");
  CHECK(worst_case_cost(k26, 1000, 2000).total == usd::from_nanos(1000 * 950 + 2000 * 4000));
  // No max_tokens: the model's default cap (32,768 for kimi-k2.6).
  CHECK(worst_case_cost(k26, 1000, std::nullopt).total == usd::from_nanos(1000 * 950 + 32768 * 4000));
  // Default cap unknown: the context window minus the prompt.
  CHECK(worst_case_cost(model("kimi-k2.7-code"), 2144, std::nullopt).total ==
        usd::from_nanos(2144 * 950 + 260000LL * 4000));
  CHECK(worst_case_cost(model("kimi-latest"), 10, std::nullopt).error == cost_errc::unknown_price);
}

// ---- budget ----
TEST_CASE("budget: reserve, settle, release, refuse with what is missing", "[money]") {
  budget<usd_tag> b(usd::from_units(10));
  auto r1 = b.reserve(usd::from_units(6));
  REQUIRE(r1);
  auto r2 = b.reserve(usd::from_units(5));
  CHECK_FALSE(r2);
  CHECK(r2.missing == usd::from_units(1));
  CHECK(b.settle(r1, usd::from_units(2)) == usd::from_units(4));
  CHECK(b.remaining() == usd::from_units(8));
  CHECK(b.settle(r1, usd::from_units(2)) == usd());  // settles once
  auto r3 = b.reserve(usd::from_units(8));
  REQUIRE(r3);
  b.release(r3);  // e.g. a 429: not billed
  CHECK(b.remaining() == usd::from_units(8));
  auto r4 = b.reserve(usd::from_units(1));
  CHECK(b.settle(r4, usd::from_units(3)) == -usd::from_units(2));  // overspend reported
  CHECK(b.spent() == usd::from_units(5));
  CHECK(b.remaining() == usd::from_units(5));
  CHECK_THROWS_AS(budget<usd_tag>(usd()), config_error);
  errc ec = errc::ok;
  budget<cny_tag> bad(cny(), ec);
  CHECK(ec == errc::zero_count);
  CHECK_FALSE(bad.reserve(cny::from_nanos(1)));
}

TEST_CASE("budget: absurd usage saturates and the budget then refuses everything", "[money][edge]") {
  const std::int64_t top = std::numeric_limits<std::int64_t>::max();
  budget<usd_tag> b(usd::from_units(10));
  CHECK_FALSE(b.saturated());
  auto r1 = b.reserve(usd::from_units(1));
  auto r2 = b.reserve(usd::from_units(1));
  auto held = b.reserve(usd::from_units(1));
  REQUIRE(r1);
  REQUIRE(r2);
  REQUIRE(held);
  // Two settles of INT64_MAX nano-dollars: the totals stick at the maximum
  // instead of wrapping negative.
  (void)b.settle(r1, usd::from_nanos(top));
  (void)b.settle(r2, usd::from_nanos(top));
  CHECK(b.saturated());
  CHECK(b.spent() == usd::from_nanos(top));
  CHECK(b.remaining() == usd());
  const auto r3 = b.reserve(usd::from_nanos(1));
  CHECK_FALSE(r3);
  CHECK(r3.saturated);
  CHECK(r3.missing == usd::from_nanos(top));
  CHECK(b.reserve(usd()));  // a free call holds nothing: admitted even now
  // Releasing a reservation held from before cannot bring it back.
  b.release(held);
  CHECK(b.saturated());
  CHECK_FALSE(b.reserve(usd::from_nanos(1)));
  CHECK(b.spent() == usd::from_nanos(top));
}

TEST_CASE("stress: a budget never overspends under concurrency", "[money][stress]") {
  for (unsigned threads : {2u, 4u, 8u}) {
    budget<usd_tag> b(usd::from_units(50));
    std::atomic<std::int64_t> settled{0};
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        tgtest::rng g(tgtest::seed_for(100 + t));
        const model_info k26 = *find_model("kimi-k2.6");
        for (std::uint64_t i = 0; i < 5000 * tgtest::stress_factor(); ++i) {
          const std::uint64_t prompt = g.between(100, 20000), cap = g.between(100, 8000);
          const auto worst = worst_case_cost(k26, prompt, cap).total;
          auto r = b.reserve(worst);
          if (!r) continue;
          const usage u{prompt, g.between(0, prompt), g.between(0, cap), 0, 0};
          const usd actual = cost(k26, u).total;
          b.settle(r, actual);
          settled.fetch_add(actual.nanos());
        }
      });
    }
    for (auto& th : pool) th.join();
    INFO(threads << " threads, " << tgtest::seed_note());
    CHECK(settled.load() <= usd::from_units(50).nanos());
    CHECK(settled.load() == b.spent().nanos());
    CHECK(b.spent() > usd::from_units(40));  // the budget was actually used up
  }
}

// ---- estimate ----
namespace {
// Sample texts written for these tests.
constexpr std::string_view english =
    "The swarm sends its requests in waves, and each wave must fit inside the account's limits. "
    "When the limiter says no, the agent waits exactly as long as it was told and then asks again.";
constexpr std::string_view chinese =
    "\xE6\xAF\x8F\xE4\xB8\xAA\xE4\xBB\xA3\xE7\x90\x86\xE5\x9C\xA8\xE5\x8F\x91\xE9\x80\x81\xE8\xAF\xB7\xE6\xB1\x82"
    "\xE4\xB9\x8B\xE5\x89\x8D\xE9\x83\xBD\xE8\xA6\x81\xE5\x85\x88\xE8\x8E\xB7\xE5\xBE\x97\xE8\xAE\xB8\xE5\x8F\xAF"
    "\xEF\xBC\x8C\xE8\xBF\x99\xE6\xA0\xB7\xE6\x95\xB4\xE4\xB8\xAA\xE8\xB4\xA6\xE6\x88\xB7\xE5\xB0\xB1\xE4\xB8\x8D"
    "\xE4\xBC\x9A\xE8\xB6\x85\xE8\xBF\x87\xE9\x99\x90\xE5\x88\xB6\xE3\x80\x82";
constexpr std::string_view code =
    "for (auto& agent : swarm) {\n  if (auto d = rpm.try_acquire(1, now); !d) now += d.retry_after();\n}\n";
}  // namespace

TEST_CASE("estimate: errs high by default, against the published ratios", "[money]") {
  struct sample {
    const char* name;
    std::string_view text;
  };
  std::printf("\nToken estimate vs Kimi's published rules of thumb (3-4 English / 1.5-2 Chinese chars per token)\n");
  std::printf("| sample | chars | reference range | conservative | typical |\n|---|---|---|---|---|\n");
  for (const sample& s : {sample{"English", english}, sample{"Chinese", chinese}, sample{"code", code}}) {
    const text_census c = census(s.text);
    CHECK(c.invalid_bytes == 0);
    // The published range for this text: fewest tokens at the high chars/token ratio.
    const double lo = static_cast<double>(c.ascii) / 4.0 + static_cast<double>(c.cjk) / 2.0;
    const double hi = static_cast<double>(c.ascii) / 3.0 + static_cast<double>(c.cjk) / 1.5;
    const std::uint64_t cons = estimate_tokens(s.text);
    const std::uint64_t typ = estimate_tokens(s.text, estimate_options::typical());
    std::printf("| %s | %llu | %.1f-%.1f | %llu | %llu |\n", s.name,
                static_cast<unsigned long long>(c.ascii + c.cjk + c.other), lo, hi,
                static_cast<unsigned long long>(cons), static_cast<unsigned long long>(typ));
    CHECK(static_cast<double>(cons) >= hi);      // conservative: at or above the high end
    CHECK(static_cast<double>(cons) < hi + 1);   // ... by rounding only
    CHECK(static_cast<double>(typ) >= lo);
    CHECK(static_cast<double>(typ) < lo + 1);
  }
  STATIC_REQUIRE(estimate_tokens("") == 0);
  STATIC_REQUIRE(estimate_tokens("abc") == 1);
  STATIC_REQUIRE(estimate_tokens("abcd") == 2);
  STATIC_REQUIRE(estimate_tokens("abcd", estimate_options::typical()) == 1);
  // Invalid UTF-8 is counted, never a crash: each bad byte is a token.
  CHECK(census("\xFF\xFE\x80").invalid_bytes == 3);
  CHECK(estimate_tokens("\xFF\xFE\x80") == 3);
  CHECK(census("\xE6\xAF").invalid_bytes == 2);         // truncated sequence
  CHECK(census("\xC0\xAF").invalid_bytes == 2);         // overlong
  CHECK(census("\xED\xA0\x80").invalid_bytes == 3);     // surrogate
  CHECK(census("\xC3\xA9\xF0\x9F\x98\x80").other == 2);  // e-acute, an emoji
  // Margin and chat overheads.
  estimate_options o;
  o.margin_percent = 10;
  CHECK(estimate_tokens(english, o) >= estimate_tokens(english) * 11 / 10);
  const chat_message msgs[] = {{"system", "Be brief."}, {"user", english}};
  CHECK(estimate_chat_tokens(msgs) ==
        2 + (estimate_tokens("system") + estimate_tokens("Be brief.") + 4) + (estimate_tokens("user") + estimate_tokens(english) + 4));
  // Every byte string is safe.
  INFO(tgtest::seed_note());
  tgtest::rng g(tgtest::seed_for(5));
  for (int i = 0; i < 2000; ++i) {
    std::string junk(static_cast<std::size_t>(g.between(0, 64)), '\0');
    for (char& ch : junk) ch = static_cast<char>(g.between(0, 255));
    const text_census c = census(junk);
    CHECK(c.ascii + c.invalid_bytes + c.cjk + c.other <= junk.size());
    CHECK(estimate_tokens(junk) <= junk.size() + 1);
  }
}

TEST_CASE("budget: totals that reach the maximum exactly are ordinary (a03); zero is always admitted", "[money][edge]") {
  const std::int64_t top = std::numeric_limits<std::int64_t>::max();
  budget<usd_tag> b(usd::max());
  auto r = b.reserve(usd::max());
  REQUIRE(r);
  CHECK_FALSE(b.saturated());
  CHECK(b.remaining() == usd());
  b.release(r);
  CHECK_FALSE(b.saturated());
  CHECK(b.remaining() == usd::max());
  CHECK(b.reserve(usd::from_units(1)));
  budget<usd_tag> c(usd::max());
  auto x = c.reserve(usd::from_nanos(top - 5));
  auto y = c.reserve(usd::from_nanos(5));
  REQUIRE(x);
  REQUIRE(y);
  CHECK_FALSE(c.reserve(usd::from_nanos(1)));
  c.release(x);
  c.release(y);
  CHECK_FALSE(c.saturated());
  CHECK(c.remaining() == usd::max());
  // A snapshot's totals of the maximum import as such.
  CHECK(c.export_totals().first == 0);
  // After an overspend, a free reservation still goes through.
  budget<usd_tag> d(usd::from_units(1));
  auto z = d.reserve(usd::from_units(1));
  REQUIRE(z);
  CHECK(d.settle(z, usd::from_units(2)) == -usd::from_units(1));
  CHECK_FALSE(d.reserve(usd::from_nanos(1)));
  auto free_call = d.reserve(usd());
  CHECK(free_call);
  CHECK(d.settle(free_call, usd()) == usd());
  CHECK(d.spent() == usd::from_units(2));
  // Saturated: still refuses above zero, and reports the maximum as exported.
  budget<usd_tag> s(usd::from_units(1));
  auto s1 = s.reserve(usd::from_nanos(1));
  auto s2 = s.reserve(usd::from_nanos(1));
  (void)s.settle(s1, usd::from_nanos(top));
  (void)s.settle(s2, usd::from_nanos(top));
  CHECK(s.saturated());
  CHECK(s.export_totals().first == top);
  CHECK(s.export_totals().second == top);
  CHECK(s.reserve(usd::from_nanos(1)).saturated);
}

TEST_CASE("cost: a 128-bit sum that would wrap is an overflow (a15)", "[money][edge]") {
  model_info m{};
  m.id = "custom";
  const std::uint64_t p = std::uint64_t{1} << 63;
  m.usd_prices.input = token_price<usd_tag>{p};
  m.usd_prices.cached = token_price<usd_tag>{p};
  m.usd_prices.output = token_price<usd_tag>{p};
  const usage u{~std::uint64_t{0}, ~std::uint64_t{0}, 2, 0, 0};
  cost_options o;
  o.prompt_includes_cached = false;
  CHECK(cost<usd_tag>(m, u, o).error == cost_errc::overflow);
  CHECK(worst_case_cost<usd_tag>(m, ~std::uint64_t{0}, (std::uint64_t{1} << 63) + 1).error == cost_errc::overflow);
  m.cache_write_1h = token_price<usd_tag>{p};
  CHECK(worst_case_cost<usd_tag>(m, ~std::uint64_t{0}, 2).error == cost_errc::overflow);
  account_config cfg;
  cfg.budget = usd::from_units(1);
  account<manual_clock> a(cfg, nanoseconds(0));
  const auto x = a.try_admit(request{&m, ~std::uint64_t{0}, 2}, nanoseconds(0));
  CHECK_FALSE(x);
  CHECK(x.refused.has(dimension::budget));
  CHECK(x.decision.never());
}

TEST_CASE("cost: undeclared cache writes at a price unknown in the currency have no worst case (a26)", "[money]") {
  const model_info* k3 = model_by_id("kimi-k3");
  REQUIRE(k3);
  CHECK(worst_case_cost<cny_tag>(*k3, 100000, 1000).error == cost_errc::unknown_price);
  CHECK(worst_case_cost<cny_tag>(*k3, 100000, 1000, cache_writes{}).total ==
        cny::from_nanos(100000LL * 20000 + 1000LL * 100000));
  CHECK(worst_case_cost<cny_tag>(*k3, 100000, 1000, cache_writes{0, 1}).error == cost_errc::unknown_price);
  // A yuan account refuses the undeclared call for good, and takes the
  // declared one with what it can price.
  cny_account_config c;
  c.budget = cny::from_units(100);
  account<manual_clock, cny_tag> a(c, nanoseconds(0));
  request r{k3, 100000, 1000};
  const auto x = a.try_admit(r, nanoseconds(0));
  CHECK_FALSE(x);
  CHECK(x.refused.has(dimension::budget));
  CHECK(x.decision.never());
  r.planned_cache_writes = cache_writes{};
  auto y = a.try_admit(r, nanoseconds(0));
  REQUIRE(y);
  CHECK(y.worst_case == cny::from_nanos(100000LL * 20000 + 1000LL * 100000));
  // Dollar accounts price the writes as before.
  CHECK(worst_case_cost<usd_tag>(*k3, 100000, 1000).total == usd::from_nanos(100000LL * 3000 + 1000LL * 15000 + 100000LL * 6000));
}
