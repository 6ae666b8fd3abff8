// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// cost.hpp: the exact cost of a call from its token usage and a model's
// prices, and the worst-case cost of a call before it is sent.
//
//   cost = uncached input x input price + cached input x cached price
//        + output x output price + cache writes x their prices
//
// Providers disagree on whether the reported prompt count includes the cached
// tokens: Kimi and OpenAI include them (uncached = prompt - cached), Anthropic
// does not (uncached = prompt). That is an explicit option, never a guess.
// Batch pricing uses the provider's published batch price where one is
// recorded (kimi-k2.6 cached input: $0.10 per 1M), else 60 % of list, which
// must come out whole in nano-units.
//
// Everything is integer arithmetic in 128 bits, checked into 64: no rounding
// anywhere, overflow reported. A price the catalog does not know is an error
// when tokens of that kind were used, never a cost of zero.
#ifndef TOLLGATE_COST_HPP
#define TOLLGATE_COST_HPP

#include <tollgate/config.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/models.hpp>
#include <tollgate/money.hpp>

#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>

TOLLGATE_BEGIN_NAMESPACE

// Token counts as the API reports them.
struct usage {
  std::uint64_t prompt = 0;      // prompt tokens (see cost_options::prompt_includes_cached)
  std::uint64_t cached = 0;      // prompt tokens served from the cache
  std::uint64_t completion = 0;  // generated tokens
  std::uint64_t cache_write_5m = 0;
  std::uint64_t cache_write_1h = 0;
};

struct cost_options {
  bool prompt_includes_cached = true;  // Kimi, OpenAI: true; Anthropic: false
  bool batch = false;
};

enum class cost_errc : unsigned char {
  ok = 0,
  unknown_price,          // tokens of a kind whose price the catalog does not know
  cached_exceeds_prompt,  // cached > prompt while the prompt is said to include them
  batch_unavailable,      // batch pricing asked for a model without a documented batch price
  batch_not_exact,        // 60 % of a list price is not a whole number of nano-units
  overflow,
};

constexpr const char* message(cost_errc e) noexcept {
  switch (e) {
    case cost_errc::ok: return "ok";
    case cost_errc::unknown_price: return "a price needed for this usage is not known for this model";
    case cost_errc::cached_exceeds_prompt: return "cached tokens exceed prompt tokens";
    case cost_errc::batch_unavailable: return "no batch price is documented for this model";
    case cost_errc::batch_not_exact: return "60% of the list price is not a whole number of nano-units";
    case cost_errc::overflow: return "cost overflows 64 bits of nano-units";
  }
  return "?";
}

template <class C>
struct cost_breakdown {
  cost_errc error = cost_errc::ok;
  money<C> input, cached, output, cache_write, total;
  constexpr explicit operator bool() const noexcept { return error == cost_errc::ok; }
};

namespace detail {
template <class C>
constexpr const price_list<C>& prices_of(const model_info& m) noexcept {
  if constexpr (std::is_same<C, usd_tag>::value)
    return m.usd_prices;
  else
    return m.cny_prices;
}

// The batch price of one class of tokens: published override, else 60 % of list.
template <class C>
constexpr cost_errc batch_price(std::optional<token_price<C>> list, std::optional<token_price<usd_tag>> published,
                                std::optional<token_price<C>>& out) noexcept {
  if constexpr (std::is_same<C, usd_tag>::value) {
    if (published) {
      out = *published;
      return cost_errc::ok;
    }
  } else {
    (void)published;
  }
  if (!list) {
    out = std::nullopt;
    return cost_errc::ok;
  }
  if ((list->nanos_per_token * 6) % 10 != 0) return cost_errc::batch_not_exact;
  out = token_price<C>{list->nanos_per_token * 6 / 10};
  return cost_errc::ok;
}

// count x price into `acc`; false when the price is needed but unknown.
template <class C>
constexpr bool add_term(std::uint64_t count, std::optional<token_price<C>> price, u128& acc, u128& term) noexcept {
  term = 0;
  if (count == 0) return true;
  if (!price) return false;
  term = static_cast<u128>(count) * price->nanos_per_token;  // < 2^128: both factors < 2^64
  // Saturating: each term may be near 2^128, so a plain sum of five could
  // wrap to a small total and pass as ok (a15). Saturated, it is an overflow.
  const u128 room = ~u128{0} - acc;
  acc = term > room ? ~u128{0} : acc + term;
  return true;
}
}  // namespace detail

// The exact cost of a call, split by token class, in currency C (usd_tag or cny_tag).
template <class C = usd_tag>
constexpr cost_breakdown<C> cost(const model_info& m, const usage& u, cost_options o = {}) noexcept {
  cost_breakdown<C> r;
  price_list<C> p = detail::prices_of<C>(m);
  if (o.batch) {
    if (!m.batch_available && !m.batch_published) {
      r.error = cost_errc::batch_unavailable;
      return r;
    }
    const batch_override pub = m.batch_published ? *m.batch_published : batch_override{};
    cost_errc e = detail::batch_price<C>(p.input, pub.input, p.input);
    if (e == cost_errc::ok) e = detail::batch_price<C>(p.cached, pub.cached, p.cached);
    if (e == cost_errc::ok) e = detail::batch_price<C>(p.output, pub.output, p.output);
    if (e != cost_errc::ok) {
      r.error = e;
      return r;
    }
  }
  std::uint64_t uncached = u.prompt;
  if (o.prompt_includes_cached) {
    if (u.cached > u.prompt) {
      r.error = cost_errc::cached_exceeds_prompt;
      return r;
    }
    uncached = u.prompt - u.cached;
  }
  // A model without cache pricing bills cached tokens as ordinary input.
  const std::optional<token_price<C>> cached_price = p.no_cache ? p.input : p.cached;
  std::optional<token_price<C>> w5, w1;
  if constexpr (std::is_same<C, usd_tag>::value) {
    w5 = m.cache_write_5m;
    w1 = m.cache_write_1h;
  }
  detail::u128 total = 0, t_in = 0, t_cached = 0, t_out = 0, t_w5 = 0, t_w1 = 0;
  if (!detail::add_term(uncached, p.input, total, t_in) || !detail::add_term(u.cached, cached_price, total, t_cached) ||
      !detail::add_term(u.completion, p.output, total, t_out) || !detail::add_term(u.cache_write_5m, w5, total, t_w5) ||
      !detail::add_term(u.cache_write_1h, w1, total, t_w1)) {
    r.error = cost_errc::unknown_price;
    return r;
  }
  constexpr detail::u128 top = static_cast<detail::u128>(std::numeric_limits<std::int64_t>::max());
  if (total > top) {
    r.error = cost_errc::overflow;
    return r;
  }
  auto m_of = [](detail::u128 v) { return money<C>::from_nanos(static_cast<std::int64_t>(v)); };
  r.input = m_of(t_in);
  r.cached = m_of(t_cached);
  r.output = m_of(t_out);
  r.cache_write = m_of(t_w5 + t_w1);
  r.total = m_of(total);
  return r;
}

// Explicit cache writes a request asks for: prompt tokens the server writes
// to the cache with a 5-minute or a 1-hour lifetime (kimi-k3), billed on top
// of the prompt.
struct cache_writes {
  std::uint64_t write_5m = 0;
  std::uint64_t write_1h = 0;
};

namespace detail {
template <class C>
[[gnu::always_inline]] constexpr cost_breakdown<C> worst_case(const model_info& m, std::uint64_t prompt_estimate,
                                                              std::optional<std::uint64_t> max_tokens,
                                                              const std::optional<cache_writes>& w,
                                                              cost_options o) noexcept;
}  // namespace detail

// The most a call can cost before it is sent: every prompt token at the
// uncached input price, every allowed output token at the output price, and
// the largest cache write the call can make: its whole prompt at the dearer
// of the model's write prices (a call writes at most its prompt to the
// cache). A model that writes to the cache at prices unknown in C (kimi-k3
// in yuan: its catalog lists dollar write prices only) has no computable
// worst case unless the request declares its writes: unknown_price, which an
// account refuses as `never` (dimension::budget), since a reservation
// without the writes would let them overspend the budget. Declare them
// (cache_writes{} for none) to reserve the rest. Pass the model's default cap when the
// request has no max_tokens; if that is unknown too, the stated worst case is
// the context window minus the prompt. Bounds cost() of every usage with
// prompt <= prompt_estimate and completion <= the cap.
template <class C = usd_tag>
constexpr cost_breakdown<C> worst_case_cost(const model_info& m, std::uint64_t prompt_estimate,
                                            std::optional<std::uint64_t> max_tokens, cost_options o = {}) noexcept {
  return detail::worst_case<C>(m, prompt_estimate, max_tokens, std::nullopt, o);
}
// The same for a request that declares its cache writes: they are priced as
// declared (a write of a kind the model has no price for is unknown_price).
// Bounds cost() of every usage that also writes at most what was declared.
template <class C = usd_tag>
constexpr cost_breakdown<C> worst_case_cost(const model_info& m, std::uint64_t prompt_estimate,
                                            std::optional<std::uint64_t> max_tokens, const cache_writes& declared,
                                            cost_options o = {}) noexcept {
  return detail::worst_case<C>(m, prompt_estimate, max_tokens, declared, o);
}

namespace detail {
template <class C>
[[gnu::always_inline]] constexpr cost_breakdown<C> worst_case(const model_info& m, std::uint64_t prompt_estimate,
                                                              std::optional<std::uint64_t> max_tokens,
                                                              const std::optional<cache_writes>& w,
                                                              cost_options o) noexcept {
  std::uint64_t out = 0;
  if (max_tokens) {
    out = *max_tokens;
  } else if (m.default_max_tokens) {
    out = *m.default_max_tokens;
  } else if (m.context_window) {
    out = *m.context_window > prompt_estimate ? *m.context_window - prompt_estimate : 0;
  } else {
    cost_breakdown<C> r;
    r.error = cost_errc::unknown_price;  // no way to bound the output
    return r;
  }
  usage u;
  u.prompt = prompt_estimate;
  u.completion = out;
  o.prompt_includes_cached = true;
  if (!w && !m.cache_write_5m && !m.cache_write_1h) return cost<C>(m, u, o);  // no writes to price (most models)
  if (w) {
    u.cache_write_5m = w->write_5m;
    u.cache_write_1h = w->write_1h;
  } else if constexpr (std::is_same<C, usd_tag>::value) {
    // Undeclared: the whole prompt at the dearer write price, if any.
    const std::uint64_t p5 = m.cache_write_5m ? m.cache_write_5m->nanos_per_token : 0;
    const std::uint64_t p1 = m.cache_write_1h ? m.cache_write_1h->nanos_per_token : 0;
    if (m.cache_write_1h && p1 >= p5) u.cache_write_1h = prompt_estimate;
    else if (m.cache_write_5m) u.cache_write_5m = prompt_estimate;
  } else {
    // Undeclared writes at prices this currency does not know: no bound (a26).
    cost_breakdown<C> r;
    r.error = cost_errc::unknown_price;
    return r;
  }
  return cost<C>(m, u, o);
}
}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_COST_HPP
