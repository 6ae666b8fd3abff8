// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// retry.hpp: when (and whether) to send a failed request again.
//
// Backoff grows from `base` by doubling up to `cap`, with full jitter (a wait
// uniform in [0, backoff]) or decorrelated jitter (uniform in [base, 3 x the
// previous wait], capped), from a random source you inject (deterministic
// tests). A server hint (Retry-After and friends, or Kimi's "try again after N
// seconds") is honoured even above `cap`, up to `max_wait`; a longer hint -
// a daily limit's Retry-After of 1,152 s, say - gives up with
// `gave_up::hint_too_long` instead of hanging silently or spinning. Kinds that
// must not be retried (quota, auth, context too long ...) give up at once.
// Every retry must go through the account again: it counts toward RPM like
// any request. Turn off your HTTP SDK's own retries, which no limiter sees.
#ifndef TOLLGATE_RETRY_HPP
#define TOLLGATE_RETRY_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/http.hpp>

#include <chrono>
#include <cstdint>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

enum class jitter : unsigned char { none, full, decorrelated };

struct retry_policy {
  nanoseconds base = std::chrono::milliseconds(500);
  nanoseconds cap = std::chrono::seconds(8);
  nanoseconds max_wait = std::chrono::seconds(120);  // longest server hint still honoured
  int max_attempts = 3;                              // including the first
  std::optional<nanoseconds> deadline;               // give up if the retry would start after it (from the first attempt)
  tollgate::jitter jitter = tollgate::jitter::full;
};

enum class gave_up : unsigned char { no, not_retryable, attempts_exhausted, hint_too_long, deadline };

constexpr const char* to_string(gave_up g) noexcept {
  switch (g) {
    case gave_up::no: return "retry";
    case gave_up::not_retryable: return "not retryable";
    case gave_up::attempts_exhausted: return "attempts exhausted";
    case gave_up::hint_too_long: return "server asks to wait longer than max_wait";
    case gave_up::deadline: return "the retry would start after the deadline";
  }
  return "?";
}

struct retry_decision {
  gave_up reason = gave_up::no;
  nanoseconds wait{0};
  constexpr explicit operator bool() const noexcept { return reason == gave_up::no; }
};

// splitmix64, for callers who need a default source.
struct splitmix64 {
  std::uint64_t state = 0x9E3779B97F4A7C15ULL;
  constexpr std::uint64_t operator()() noexcept {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
};

// The retry state of one logical request.
class retrier {
 public:
  explicit constexpr retrier(retry_policy p = {}) noexcept : p_(p), prev_(p.base) {}

  // After failed attempt number attempts() (1 = the first): whether to try
  // again and how long to wait. `elapsed` is the time since the first
  // attempt; `rng` returns uniform 64-bit values.
  template <class Rng>
  constexpr retry_decision next(const error_info& e, nanoseconds elapsed, Rng& rng,
                                std::optional<nanoseconds> header_hint = std::nullopt) noexcept {
    ++attempts_;
    retry_decision d;
    if (!e.retry) {
      d.reason = gave_up::not_retryable;
      return d;
    }
    if (attempts_ >= p_.max_attempts) {
      d.reason = gave_up::attempts_exhausted;
      return d;
    }
    const std::optional<nanoseconds> hint = header_hint ? header_hint : e.hint;
    const nanoseconds own = backoff(rng);
    if (hint) {
      if (*hint > p_.max_wait) {
        d.reason = gave_up::hint_too_long;
        d.wait = *hint;
        return d;
      }
      d.wait = *hint > own ? *hint : own;  // never earlier than the server asked
    } else {
      d.wait = own;
    }
    if (p_.deadline && elapsed + d.wait > *p_.deadline) {
      d.reason = gave_up::deadline;
      return d;
    }
    return d;
  }

  constexpr int attempts() const noexcept { return attempts_; }

 private:
  template <class Rng>
  constexpr nanoseconds backoff(Rng& rng) noexcept {
    const std::int64_t base = p_.base.count() > 0 ? p_.base.count() : 1;
    const std::int64_t cap = p_.cap.count() > base ? p_.cap.count() : base;
    std::int64_t exp = base;
    for (int i = 1; i < attempts_ && exp < cap; ++i) exp = exp > cap / 2 ? cap : exp * 2;
    if (exp > cap) exp = cap;
    auto uniform = [&](std::int64_t lo, std::int64_t hi) {  // [lo, hi]
      const std::uint64_t span = static_cast<std::uint64_t>(hi - lo) + 1;
      return lo + static_cast<std::int64_t>(rng() % span);
    };
    switch (p_.jitter) {
      case jitter::none: return nanoseconds(exp);
      case jitter::full: return nanoseconds(uniform(0, exp));
      case jitter::decorrelated: {
        const std::int64_t hi = prev_.count() > cap / 3 ? cap : prev_.count() * 3;
        prev_ = nanoseconds(uniform(base, hi > base ? hi : base));
        return prev_;
      }
    }
    return nanoseconds(exp);
  }

  retry_policy p_;
  nanoseconds prev_;
  int attempts_ = 0;
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_RETRY_HPP
