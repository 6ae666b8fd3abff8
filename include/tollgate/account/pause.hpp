// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/pause.hpp: what the account does with the server's answer: the
// pause after a 429 or an overload, the stop after a quota error, and the
// state word that holds them.
//
// The rule (pause_after), under every server model and policy alike:
//   RPM 429: for the largest of the server's hint, one emission interval of
//     the request limit (W / L rounded up: RPM 3 means 20 s; under a margin
//     policy the spaced interval in force, 30 s + spacing_margin) and the
//     account's own wait for one more request (Kimi says "try again after 1
//     seconds");
//   TPM 429: the same with the token limit (W / L per token; under a margin
//     policy the interval in force, (W + spacing_margin) / (L - m));
//   under server_model::learn the waits are those of the policy the
//     dimension runs once the answer has taught it (account/learn.hpp);
//   a rate 429 that names no dimension, or concurrency: as RPM (as TPM
//     without a request limit);
//   TPD 429: until the later of the hint and the local daily reset; an
//     account without a daily limit of its own takes the next midnight at
//     utc_offset (config.hpp; UTC by default) as that reset, the calendar
//     day it would count (a server whose day rolls or starts elsewhere
//     answers the first request after it with another TPD 429, which
//     pauses again: one 429 per day at most, not one per request);
//   overload: for the hint, else 1 s, without counting as a limit;
//   quota/balance error: stop until resume() (which does not end a pause).
// A hint counts for at most max_pause (24 h by default; clamp_hint says when
// it was cut, which the account counts in stats().capped_hints); the
// account's own waits are not capped. A pause only ever lengthens;
// clear_pause() ends it.
//
// Contract. clamp_hint and pause_after are pure: the account passes the
// waits its limiters report (its own wait for one request and one token,
// the daily reset), so another state backend gets the same pause from the
// same numbers. pause_state is two words: the pause's end (one int64, moved
// forward only, by CAS) and the stop flag. Both are lone values, so relaxed
// suffices for the pause (a stale read delays or advances a pause by the
// race window, which the server's own limits cover); the stop flag is
// release/acquire so that a stop is seen with what preceded it. Address-free:
// the words mean the same in any process that maps them.
#ifndef TOLLGATE_ACCOUNT_PAUSE_HPP
#define TOLLGATE_ACCOUNT_PAUSE_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/http.hpp>

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

namespace account_policy {

// max(0, until - now), saturated: defined for every pair of times.
constexpr nanoseconds time_left(std::int64_t until, nanoseconds now) noexcept {
  const std::uint64_t d = detail::positive_difference(until, now.count());
  constexpr std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  return nanoseconds(static_cast<std::int64_t>(d < top ? d : top));
}

// The kinds of answer whose hint can lengthen a pause.
constexpr bool pauses(error_kind k) noexcept {
  return k == error_kind::concurrency || k == error_kind::rpm || k == error_kind::tpm || k == error_kind::rate_limit ||
         k == error_kind::tpd || k == error_kind::overloaded;
}

struct clamped_hint {
  nanoseconds hint{0};
  bool capped = false;  // the hint was longer than max_pause and was cut to it
};
// The server's hint as a pause may use it: the header's if any, else the
// body's, else none (zero); negative counts as zero; longer than max_pause
// is cut to it (for the kinds that pause).
constexpr clamped_hint clamp_hint(error_kind k, std::optional<nanoseconds> header, std::optional<nanoseconds> body,
                                  nanoseconds max_pause) noexcept {
  nanoseconds h = header ? *header : (body ? *body : nanoseconds(0));
  if (h < nanoseconds(0)) h = nanoseconds(0);
  if (h > max_pause && pauses(k)) return clamped_hint{max_pause, true};
  return clamped_hint{h, false};
}

// What the account's limiters say at the answer's time.
struct own_waits {
  nanoseconds request{0};  // max(emission interval, own wait for one request); 0 without a request limit
  nanoseconds token{0};    // the same for one token
  bool request_limit = false;  // the account enforces a request limit
  nanoseconds daily_reset{0};  // until the daily limit is back to full (without one: until_midnight)
};

// From `now` to the next midnight at `utc_offset` of a clock whose zero is
// Unix time `unix_at_zero`: in (0, 24 h] (a full day at midnight itself).
// In 128 bits: defined for every input.
constexpr nanoseconds until_midnight(nanoseconds now, nanoseconds unix_at_zero, std::chrono::minutes utc_offset) noexcept {
  constexpr detail::i128 day = static_cast<detail::i128>(86400) * 1000000000;
  const detail::i128 local = static_cast<detail::i128>(now.count()) + unix_at_zero.count() +
                             static_cast<detail::i128>(utc_offset.count()) * 60 * 1000000000;
  detail::i128 into = local % day;
  if (into < 0) into += day;
  return nanoseconds(static_cast<std::int64_t>(day - into));
}

enum class response_action : unsigned char { none, pause, stop };
struct response_decision {
  response_action action = response_action::none;
  nanoseconds pause{0};  // for `pause`: how long from the answer's time
};

// The one rule (see the header comment), from a clamped hint.
constexpr response_decision pause_after(error_kind k, nanoseconds hint, const own_waits& w) noexcept {
  switch (k) {
    case error_kind::quota: return response_decision{response_action::stop, nanoseconds(0)};
    case error_kind::concurrency:
    case error_kind::rpm:
    case error_kind::tpm:
    case error_kind::rate_limit: {
      nanoseconds own{0};
      if (k != error_kind::tpm) own = w.request;
      if (k != error_kind::rpm && (k == error_kind::tpm || !w.request_limit)) own = w.token > own ? w.token : own;
      return response_decision{response_action::pause, hint > own ? hint : own};
    }
    case error_kind::tpd:
      return response_decision{response_action::pause, hint > w.daily_reset ? hint : w.daily_reset};
    case error_kind::overloaded:
      return response_decision{response_action::pause, hint > nanoseconds(0) ? hint : std::chrono::seconds(1)};
    default: return response_decision{};
  }
}

}  // namespace account_policy

namespace detail {

// The pause's end and the stop flag (see the header comment).
class pause_state {
 public:
  // A stop that resume() cannot lift (an account built with an error).
  void stop_for_good() noexcept {
    for_good_ = true;
    stopped_.store(true, std::memory_order_relaxed);  // relaxed: construction precedes sharing
  }
  void stop() noexcept { stopped_.store(true, std::memory_order_release); }  // release: pairs with stopped()'s acquire
  void resume() noexcept {
    if (!for_good_) stopped_.store(false, std::memory_order_release);  // release: as in stop
  }
  // Sets the flag as a snapshot had it (a stop for good stays).
  void restore_stop(bool s) noexcept { stopped_.store(s || for_good_, std::memory_order_release); }  // release: as in stop
  bool stopped() const noexcept { return stopped_.load(std::memory_order_acquire); }  // acquire: pairs with stop()
  // relaxed: a lone time value (see the header comment).
  std::int64_t until() const noexcept { return until_.load(std::memory_order_relaxed); }
  void pause_for(nanoseconds d, nanoseconds now) noexcept {
    const std::int64_t u = detail::sat_offset(now.count(), static_cast<std::uint64_t>(d.count() > 0 ? d.count() : 0));
    // relaxed: a lone time value that only moves forward (max by CAS).
    std::int64_t cur = until_.load(std::memory_order_relaxed);
    while (u > cur && !until_.compare_exchange_weak(cur, u, std::memory_order_relaxed)) {
    }
  }
  // relaxed: as in pause_for; a pause_for racing this may land after it and stand.
  void clear() noexcept { until_.store(std::numeric_limits<std::int64_t>::min(), std::memory_order_relaxed); }

 private:
  detail::atomic<std::int64_t> until_{std::numeric_limits<std::int64_t>::min()};
  detail::atomic<bool> stopped_{false};
  bool for_good_ = false;
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_PAUSE_HPP
