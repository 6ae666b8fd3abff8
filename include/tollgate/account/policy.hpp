// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/policy.hpp: the account's decisions that need no state, as
// functions from plain values to plain values: which limiter each dimension
// runs under a server model and with which margin, the largest limits a
// policy can run, how many tokens a request reserves, which dimensions
// refuse a request outright, and how the dimensions' answers compose into
// one refusal and its wait.
//
// Contract. Every function here is pure (constexpr where the types allow),
// defined for every input (saturating, never overflowing) and tested alone
// (tests/test_account_parts.cpp). The account (account.hpp) applies them to
// limiters in its own memory; another state backend (shared memory, a
// server-side script) applies the same functions to its own state, so what a
// backend must share with the account is the state's meaning, these
// constants and the test vectors, not its code.
//
// Server model. Kimi does not document how it counts. `server_model` says
// which model to stay inside; each dimension then uses the policy the
// compliance tests found safe against it (docs/server-models.md, "The compliance
// tables"):
//   fixed_window, sliding_log, token_bucket -> strict sliding window at L
//   window_counter, gcra, unknown (default) -> one request at a time, each
//       spaced by its own size, at L - m per window (m = 1 for requests,
//       plus spacing_margin, 2 ms by default, between requests; m =
//       max_request_tokens for tokens, over the window plus spacing_margin)
//   learn -> the strict window until the first 429 that names the
//       dimension, then the margin policy (account/learn.hpp)
// `unknown` is safe against all five models (the margin costs m per window)
// when the server sees requests at the times they were admitted, or up to
// 1 ms later. Delivery jitter J breaks every policy against some model: a
// request sent just before a window boundary and delivered after it counts
// in the next window. Set request_window and token_window to W + J (the
// server's window plus the largest delay between admission and the server's
// clock) to keep the strict policy safe against fixed window, sliding log and
// token bucket, and the margin policy against all but a GCRA token limit (a
// 1-token request W / (L - m) before the next may arrive closer than W / L).
// The daily limit is a strict rolling 24 h window under every model (safe
// whatever time zone the server's day uses, and against fixed-window, log and
// bucket counting; spacing a day's tokens over the day would cost hours), or a
// per-day quota with `calendar_day`.
#ifndef TOLLGATE_ACCOUNT_POLICY_HPP
#define TOLLGATE_ACCOUNT_POLICY_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/cost.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/error.hpp>
#include <tollgate/models.hpp>
#include <tollgate/money.hpp>
#include <tollgate/rate.hpp>
#include <tollgate/token_bucket.hpp>

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

namespace account_policy {

// The limiter a dimension runs.
enum class limiter : unsigned char {
  none,           // not enforced (the limit is unknown or unlimited)
  strict_window,  // sliding_window at L
  spaced,         // token_bucket of burst 1 at L - m, spaced by each request's size
  calendar_day,   // calendar_quota: per day at a UTC offset
};

// Whether a server model lets a dimension run the strict window (learn:
// until it learns otherwise).
constexpr bool strict_for(server_model m) noexcept {
  return m == server_model::fixed_window || m == server_model::sliding_log || m == server_model::token_bucket ||
         m == server_model::learn;
}
// Whether a dimension may run the margin policy under the model (now, or
// after learning): its limits must then be ones that policy can run.
constexpr bool spaced_possible(server_model m) noexcept {
  return !strict_for(m) || m == server_model::learn;
}

template <class Currency>
constexpr limiter request_limiter(const basic_account_config<Currency>& c) noexcept {
  return !c.rpm.is_finite() ? limiter::none : strict_for(c.model) ? limiter::strict_window : limiter::spaced;
}
template <class Currency>
constexpr limiter token_limiter(const basic_account_config<Currency>& c) noexcept {
  return !c.tpm.is_finite() ? limiter::none : strict_for(c.model) ? limiter::strict_window : limiter::spaced;
}
// A strict rolling 24 h window whatever the server model, or a calendar day.
template <class Currency>
constexpr limiter day_limiter(const basic_account_config<Currency>& c) noexcept {
  return !c.tpd.is_finite() ? limiter::none : c.calendar_day ? limiter::calendar_day : limiter::strict_window;
}

// The default spacing margin (account_config::spacing_margin).
inline constexpr nanoseconds default_spacing_margin = std::chrono::milliseconds(2);

// The token margin policy spaces L - m tokens over W + margin (2 ms by
// default): a sliding-window counter that reads its clock in whole
// milliseconds sees up to 1 ms less of the current period than has passed,
// which at exactly (L - m) per W let a saturated client's estimate reach
// L + 0.3 (L = 20,000 per minute, m = 2,000). The 2 ms cover that tick and
// 1 ms of delivery jitter. A window the margin would overflow keeps W; a
// negative margin counts as zero.
constexpr nanoseconds margin_window(nanoseconds w, nanoseconds margin = default_spacing_margin) noexcept {
  const std::int64_t g = margin.count() > 0 ? margin.count() : 0;
  return w.count() > std::numeric_limits<std::int64_t>::max() - g ? w : w + nanoseconds(g);
}

// The spaced request policy: one request of margin per window (a limit of 1
// leaves none to spare), and `margin` (2 ms by default) more between
// requests: at exactly L - 1 evenly spaced, a sliding-window counter's
// estimate sits exactly on L, and a server clock that ticks in milliseconds
// (or 1 ms of jitter) tips it over. `l` must not exceed
// largest_request_limit for the margin (so the window cannot overflow); a
// window that would overflow saturates.
constexpr rate spaced_request_rate(std::uint64_t l, nanoseconds w,
                                   nanoseconds margin = default_spacing_margin) noexcept {
  const std::uint64_t n = l > 1 ? l - 1 : 1;
  const std::uint64_t g = margin.count() > 0 ? static_cast<std::uint64_t>(margin.count()) : 0;
  const std::int64_t span = detail::sat_offset(w.count(), detail::sat_mul(g, n));
  return rate(n, nanoseconds(span));
}
// The spaced token policy: L - m tokens over margin_window(W, margin). The
// margin must leave room: 0 < m < l, else nullopt (errc::too_large).
constexpr std::optional<rate> spaced_token_rate(std::uint64_t l, std::uint64_t m, nanoseconds w,
                                                nanoseconds margin = default_spacing_margin) noexcept {
  if (m == 0 || m >= l) return std::nullopt;
  return rate(l - m, margin_window(w, margin));
}

// The largest token limit (per token_window) a configuration accepts.
// Under a margin policy (window_counter, gcra, unknown) tokens run through
// a bucket spaced at (L - m) per W whose emission interval must be held
// within 0.1 % (token_bucket.hpp): every L - m up to 14,014 per us of W
// qualifies (about one token per 71.3 ns: 840,840,000 + m per minute, so
// 840,905,536 with the default m), and a larger limit is refused
// (errc::rate_too_fine) even where the bucket could run it exactly, so that
// the accepted limits have no holes. The strict window takes any limit.
constexpr std::uint64_t largest_token_limit(server_model model, nanoseconds token_window,
                                            std::uint64_t max_request_tokens) noexcept {
  if (!spaced_possible(model) || token_window.count() <= 0) return std::numeric_limits<std::uint64_t>::max();
  const std::uint64_t w = static_cast<std::uint64_t>(token_window.count());
  return detail::sat_add(detail::mul_div_floor(w, detail::gcra_limits::max_scale * 1001, 1000000), max_request_tokens);
}
// The largest request limit: under a margin policy the spaced interval adds
// the margin (the largest it can grow to, under learn) per request to the
// window, which must fit in 63 bits of nanoseconds (with 2 ms, about
// 4.6 * 10^12 requests per window).
constexpr std::uint64_t largest_request_limit(server_model model, nanoseconds request_window,
                                              nanoseconds margin = default_spacing_margin) noexcept {
  if (!spaced_possible(model) || request_window.count() <= 0 || margin.count() <= 0)
    return std::numeric_limits<std::uint64_t>::max();
  const std::uint64_t room = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max() - request_window.count());
  return room / static_cast<std::uint64_t>(margin.count());
}
// The margin a configuration's spaced requests may come to use.
template <class Currency>
constexpr nanoseconds widest_margin(const basic_account_config<Currency>& c) noexcept {
  return c.model == server_model::learn ? c.max_spacing_margin : c.spacing_margin;
}

// The limits a margin policy can run: too_large for a request limit,
// rate_too_fine for a token limit, with the value refused and the largest
// accepted in `v`.
template <class Currency>
constexpr errc check_limits(const basic_account_config<Currency>& c, const limit& rpm, const limit& tpm,
                            error_values& v) noexcept {
  const std::uint64_t rl = largest_request_limit(c.model, c.request_window, widest_margin(c));
  const std::uint64_t tl = largest_token_limit(c.model, c.token_window, c.max_request_tokens);
  if (auto x = rpm.value(); x && *x > rl) {
    v = error_values{*x, rl};
    return errc::too_large;
  }
  if (auto x = tpm.value(); x && *x > tl) {
    v = error_values{*x, tl};
    return errc::rate_too_fine;
  }
  return errc::ok;
}

// The constants of a configuration that the stateless part of an
// admission reads (fixed at construction: set_limits changes none).
template <class Currency>
struct admission_rules {
  bool spaced_tokens = false;           // the token limit runs the spaced policy
  std::uint64_t max_request_tokens = 0;  // m
  bool budget = false;                  // the account has a budget
  money<Currency> budget_limit;
  static constexpr admission_rules of(const basic_account_config<Currency>& c) noexcept {
    admission_rules x;
    // Under learn the tokens may move to the spaced policy: the same
    // requests are refused from the start.
    x.spaced_tokens = token_limiter(c) == limiter::spaced || (c.model == server_model::learn && c.tpm.is_finite());
    x.max_request_tokens = c.max_request_tokens;
    x.budget = c.budget.has_value();
    if (c.budget) x.budget_limit = *c.budget;
    return x;
  }
};

// The stateless part of an admission: the tokens a request reserves
// (prompt + output, saturated; the output is max_tokens, else the model's
// default output cap, else the context window minus the prompt, zero if the
// prompt fills it: what Kimi counts at admission), the money it reserves (its worst-case
// cost: cost.hpp, with the cache writes it declares, else the largest it can
// make) and the dimensions that refuse it whatever the state (its decision
// is then `never`, reason::exceeds_capacity):
//   request_size: nothing bounds the output (then nothing else is checked);
//     above max_request_tokens under the spaced token policy; a budget and
//     no model to price the request by;
//   context: prompt + output beyond the model's context window;
//   budget: a worst case that cannot be computed or exceeds the budget.
// Returns the tokens (0 when nothing bounds the output); writes `refused`
// and `worst_case` only where it has something to say (the caller starts
// them empty).
template <class Currency>
[[gnu::always_inline]] constexpr std::uint64_t assess(const request& r, const admission_rules<Currency>& x,
                                                      dimension_set& refused, money<Currency>& worst_case) noexcept {
  std::optional<std::uint64_t> out = r.max_tokens;
  if (!out && r.model && r.model->default_max_tokens) out = r.model->default_max_tokens;
  if (!out && r.model && r.model->context_window)
    out = *r.model->context_window > r.prompt_tokens ? *r.model->context_window - r.prompt_tokens : 0;
  if (!out) {
    refused.add(dimension::request_size);  // no way to bound the output
    return 0;
  }
  const std::uint64_t n = detail::sat_add(r.prompt_tokens, *out);
  if (r.model && r.model->context_window && n > *r.model->context_window) refused.add(dimension::context);
  if (x.spaced_tokens && n > x.max_request_tokens) refused.add(dimension::request_size);
  if (x.budget) {
    if (!r.model) {
      refused.add(dimension::request_size);  // a budget needs prices
    } else {
      const auto w = detail::worst_case<Currency>(*r.model, r.prompt_tokens, out, r.planned_cache_writes, cost_options{});
      if (!w) {
        refused.add(dimension::budget);
      } else {
        worst_case = w.total;
        if (w.total > x.budget_limit) refused.add(dimension::budget);
      }
    }
  }
  return n;
}
// The same as values, for other backends and tests.
template <class Currency>
struct assessment {
  dimension_set refused;
  std::uint64_t tokens = 0;
  money<Currency> worst_case;
};
template <class Currency>
constexpr assessment<Currency> assess(const request& r, const admission_rules<Currency>& x) noexcept {
  assessment<Currency> a;
  a.tokens = assess<Currency>(r, x, a.refused, a.worst_case);
  return a;
}

// One refusal from every dimension's answer (asked without consuming, after
// the roll-back). The wait is the largest of the time-based dimensions' (and
// the pause's); `never` if one of them can never admit; reason::busy with no
// wait if only a permit or money can end it (or the refusal lost a race and
// no dimension refuses any more: it names concurrency and is retried soon).
class refusal {
 public:
  constexpr explicit refusal(nanoseconds paused_for = nanoseconds(0)) noexcept : wait_(paused_for) {
    if (paused_for > nanoseconds(0)) refused_.add(dimension::paused);
  }
  // A dimension that refuses with no time-based wait (concurrency, budget).
  constexpr void add(dimension d) noexcept { refused_.add(d); }
  // A time-based dimension's answer to "would you admit at now".
  constexpr void note(dimension d, decision x) noexcept {
    if (x.admitted()) return;
    refused_.add(d);
    if (x.never()) never_ = true;
    if (x.retry_after() > wait_) wait_ = x.retry_after();
  }
  // Every dimension that refused (never empty once finished).
  constexpr dimension_set refused() const noexcept {
    if (!refused_.empty()) return refused_;
    dimension_set s;
    s.add(dimension::concurrency);  // lost a race: report the first, retry soon
    return s;
  }
  constexpr decision result() const noexcept {
    if (never_) return decision::refuse(reason::exceeds_capacity);
    if (wait_ > nanoseconds(0)) return decision::wait(wait_);
    return decision::wait(nanoseconds(0), reason::busy);  // a permit or money must come back first
  }

 private:
  dimension_set refused_;
  nanoseconds wait_{0};
  bool never_ = false;
};

// The emission interval of a strict window's limit: W / L rounded up (the
// spacing a limit implies, the least pause after its 429; pause.hpp).
constexpr nanoseconds emission_interval(nanoseconds window, std::uint64_t l) noexcept {
  const std::uint64_t w = window.count() > 0 ? static_cast<std::uint64_t>(window.count()) : 0;
  return nanoseconds(static_cast<std::int64_t>(detail::ceil_div(w, l > 0 ? l : 1)));
}

constexpr const char* to_string(limiter k, bool daily = false) noexcept {
  switch (k) {
    case limiter::none: return "not enforced";
    case limiter::strict_window: return daily ? "strict window (24 h)" : "strict window";
    case limiter::spaced: return daily ? "spaced with margin (24 h)" : "spaced with margin";
    case limiter::calendar_day: return "calendar day";
  }
  return "?";
}

}  // namespace account_policy

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_POLICY_HPP
