// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/config.hpp: the account's vocabulary: the server models it can
// stay inside, the dimensions a decision names, the account's limits
// (basic_account_config, from a tier row) and a request.
//
// Contract. Plain values, no state: every type here is a literal type that
// copies freely and means the same in any process (no pointer but a
// request's model, which names a price list, not state). Which limiter each
// dimension runs, and with which margin, follows from the configuration by
// the functions of account/policy.hpp; the account (account.hpp) enforces it.
#ifndef TOLLGATE_ACCOUNT_CONFIG_HPP
#define TOLLGATE_ACCOUNT_CONFIG_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/cost.hpp>
#include <tollgate/models.hpp>
#include <tollgate/money.hpp>
#include <tollgate/tiers.hpp>

#include <chrono>
#include <cstdint>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

// `learn` (account/learn.hpp): each request and token limit starts on the
// strict window and moves to the margin policy on the first 429 that names it.
enum class server_model : unsigned char { unknown, fixed_window, sliding_log, window_counter, token_bucket, gcra, learn };

constexpr const char* to_string(server_model m) noexcept {
  switch (m) {
    case server_model::unknown: return "unknown";
    case server_model::fixed_window: return "fixed window";
    case server_model::sliding_log: return "sliding log";
    case server_model::window_counter: return "sliding-window counter";
    case server_model::token_bucket: return "token bucket";
    case server_model::gcra: return "GCRA burst 1";
    case server_model::learn: return "learn from 429s";
  }
  return "?";
}

// The dimensions a decision can name, as bits.
enum class dimension : std::uint16_t {
  concurrency = 1 << 0,
  rpm = 1 << 1,
  tpm = 1 << 2,
  tpd = 1 << 3,
  budget = 1 << 4,
  context = 1 << 5,      // prompt + max_tokens beyond the model's context window
  request_size = 1 << 6,  // above max_request_tokens, or no way to bound the output
  paused = 1 << 7,       // after a server 429 or overload
  stopped = 1 << 8,      // after a quota/balance error, until resume()
};

struct dimension_set {
  std::uint16_t bits = 0;
  constexpr bool has(dimension d) const noexcept { return (bits & static_cast<std::uint16_t>(d)) != 0; }
  constexpr void add(dimension d) noexcept { bits = static_cast<std::uint16_t>(bits | static_cast<std::uint16_t>(d)); }
  constexpr bool empty() const noexcept { return bits == 0; }
};

// The account's limits. Currency is the budget's: usd_tag (account_config)
// or cny_tag (cny_account_config); the account computes costs from the
// model's price list in that currency.
template <class Currency = usd_tag>
struct basic_account_config {
  using currency = Currency;
  limit concurrency = limit::unknown();  // unknown or unlimited: not enforced
  limit rpm = limit::unknown();
  limit tpm = limit::unknown();
  limit tpd = limit::unknown();
  server_model model = server_model::unknown;
  bool calendar_day = false;                     // TPD per calendar day at utc_offset, instead of rolling 24 h
  std::chrono::minutes utc_offset{0};
  // For calendar_day: the Unix time (ns since 1970-01-01Z) at the account
  // clock's zero, so that its days are UTC days whatever the clock. Unset:
  // 0 for a clock that reads Unix time (system_clock, manual clocks), else
  // system_clock::now() - Clock::now(), read once at construction. Not part
  // of the configuration a snapshot checks (it differs from boot to boot).
  // The mapping is fixed: a wall clock stepped after construction, or slewed
  // by NTP (up to 500 ppm, 43 s a day), moves the true UTC midnight against
  // the account's by that much, so the daily bound holds for days as the
  // account maps them and a server's day may see up to twice the limit
  // within that drift of its midnight; a new account (or a restore into
  // one) maps afresh.
  std::optional<nanoseconds> unix_time_at_zero;
  bool refund_unused_tokens = false;             // Kimi: false (the server counted max_tokens)
  std::uint64_t max_request_tokens = 65536;      // m: the largest prompt + max_tokens, the margin of token limits
  std::optional<money<Currency>> budget;         // a spending limit, if any
  // The windows of the request and token limits: Kimi's are a minute; a
  // gateway may count per second.
  nanoseconds request_window = std::chrono::minutes(1);
  nanoseconds token_window = std::chrono::minutes(1);
  // A concurrency slot held longer than this (a hung request, a holder that
  // vanished) is reclaimed when the account runs out of slots, and counted in
  // stats().reclaimed. Kimi documents requests of up to two hours. Zero:
  // never, and no slot table (two atomic operations fewer per request).
  nanoseconds lease_timeout = std::chrono::hours(2);
  // Per-thread credit (see the header): on, the first 16 threads take window
  // and concurrency units a chunk at a time and spend them without touching
  // shared state; off, every admission takes its units from the shared
  // limiters and no thread ever holds units another could have used. Off
  // suits accounts shared between processes, where a process that dies
  // holding credit would keep it counted. It does not shape the state: a
  // snapshot restores into an account with the switch either way.
  bool per_thread_credit = true;
  // The longest pause a server's hint (Retry-After, "try again after N
  // seconds") can cause; a longer hint is cut to it and counted in
  // stats().capped_hints. 24 hours: no Kimi limit counts over a longer window
  // (the daily one resets within a day in any time zone), so a longer hint is
  // a mistake, and one of year 9999 must not stop the account for centuries.
  // The account's own waits (its windows, the local daily reset) are not
  // capped. Zero: hints never lengthen a pause. Negative: refused.
  nanoseconds max_pause = std::chrono::hours(24);
  // The margin policy's allowance for a server clock that ticks in
  // milliseconds plus delivery jitter (account/policy.hpp): requests are
  // spaced W / (L - 1) + spacing_margin apart, tokens run over W +
  // spacing_margin. Under server_model::learn a 429 that the margin policy
  // should have prevented doubles it, up to max_spacing_margin
  // (account/learn.hpp). Negative, or a cap below the margin: refused.
  nanoseconds spacing_margin = std::chrono::milliseconds(2);
  // Adaptive concurrency (adaptive_concurrency.hpp): the concurrency limit
  // drops by a tenth on a concurrency 429 or an overload (once per round of
  // requests in flight) and grows back by one per round while in use; never
  // above `concurrency`, never below concurrency_floor (1 .. the limit).
  // Needs a concurrency limit (else refused: zero_count).
  bool adaptive_concurrency = false;
  std::uint64_t concurrency_floor = 1;
  // The server's x-ratelimit-remaining/reset headers as ground truth
  // (account/server_remaining.hpp): after a response that says R remain
  // until now + T, at most R more are admitted before then, less the
  // account's own requests in flight when the response is observed.
  bool trust_rate_limit_headers = false;
  nanoseconds max_spacing_margin = std::chrono::milliseconds(256);

  static constexpr basic_account_config from_tier(const tier_row& t, server_model m = server_model::unknown) noexcept {
    basic_account_config c;
    c.concurrency = t.concurrency;
    c.rpm = t.rpm;
    c.tpm = t.tpm;
    c.tpd = t.tpd;
    c.model = m;
    return c;
  }
};
using account_config = basic_account_config<usd_tag>;
using cny_account_config = basic_account_config<cny_tag>;

struct request {
  const model_info* model = nullptr;  // for the default output cap, context window and prices
  std::uint64_t prompt_tokens = 0;    // an estimate (estimate.hpp) or the tokenizer endpoint's count
  std::optional<std::uint64_t> max_tokens;
  // The explicit cache writes the request asks for (kimi-k3). Without a
  // declaration the reserved worst case assumes the largest: the whole prompt
  // written at the dearer write price. Declared, it reserves exactly those;
  // a usage that writes more is charged in full and reported as overspend.
  std::optional<cache_writes> planned_cache_writes = std::nullopt;
};


TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_CONFIG_HPP
