// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// error.hpp: the error codes of bad configurations, and the exception that
// carries them where exceptions are enabled.
#ifndef TOLLGATE_ERROR_HPP
#define TOLLGATE_ERROR_HPP

#include <tollgate/config.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#if !TOLLGATE_NO_EXCEPTIONS
#include <stdexcept>
#include <string>
#endif

TOLLGATE_BEGIN_NAMESPACE

// Why a configuration was refused. `ok` is zero so `if (ec)` reads naturally.
enum class errc : unsigned char {
  ok = 0,
  zero_count,         // a rate of 0 per period, or a limit of 0
  zero_period,        // a period or window of zero or negative length
  zero_burst,         // a bucket that could never hold one unit
  zero_slots,         // a window split into no sub-windows
  too_large,          // a value beyond what the state word can hold
  horizon_too_short,  // the configuration overflows before ten years of uptime
  rate_too_fine,      // the emission interval cannot be represented within 0.1 %
  window_too_short,   // a sliding window's sub-windows are shorter than its 10-year slot counter allows
  not_shareable,      // a feature whose state cannot live in a shared region (shared_account.hpp)
};

// A short, stable English description of `e`.
constexpr const char* message(errc e) noexcept {
  switch (e) {
    case errc::ok: return "ok";
    case errc::zero_count: return "count or limit must be at least 1";
    case errc::zero_period: return "period or window must be a positive duration";
    case errc::zero_burst: return "burst must be at least 1";
    case errc::zero_slots: return "a window needs at least 1 sub-window";
    case errc::too_large: return "value too large for the limiter's state";
    case errc::horizon_too_short:
      return "configuration would overflow before 10 years of uptime";
    case errc::rate_too_fine:
      return "rate too high: its emission interval cannot be represented within 0.1%";
    case errc::window_too_short:
      return "window too short for its sub-window count: each sub-window must be at least 287015 ns "
             "(10 years of uptime in 2^40 slots), so with the default 15 sub-windows the shortest window "
             "is 4305211 ns, about 4.3 ms (sliding_window::min_window; fewer sub-windows allow shorter)";
    case errc::not_shareable:
      return "a shared account cannot run server_model::learn, adaptive_concurrency or trust_rate_limit_headers";
  }
  return "unknown tollgate error";
}

// For an error about one number: the value refused and the largest the
// configuration accepts in its place (both zero when the error has none).
struct error_values {
  std::uint64_t refused = 0;
  std::uint64_t largest_accepted = 0;
  constexpr bool known() const noexcept { return refused != 0 || largest_accepted != 0; }
};

#if !TOLLGATE_NO_EXCEPTIONS
// Thrown by constructors given a configuration they cannot honour exactly.
class config_error : public std::invalid_argument {
 public:
  explicit config_error(errc e) : std::invalid_argument(message(e)), code_(e) {}
  // what() then ends with both numbers.
  config_error(errc e, error_values v)
      : std::invalid_argument(std::string(message(e)) + " (refused " + std::to_string(v.refused) +
                              ", largest accepted " + std::to_string(v.largest_accepted) + ")"),
        code_(e),
        values_(v) {}
  errc code() const noexcept { return code_; }
  const error_values& values() const noexcept { return values_; }

 private:
  errc code_;
  error_values values_;
};
#endif

namespace detail {
// Throws config_error, or without exceptions prints the reason and aborts:
// an invalid limiter must never run silently.
[[noreturn]] inline void fail(errc e) {
#if !TOLLGATE_NO_EXCEPTIONS
  throw config_error(e);
#else
  std::fprintf(stderr, "tollgate: %s\n", message(e));
  std::abort();
#endif
}
// The same with the numbers, when they are known.
[[noreturn]] inline void fail(errc e, error_values v) {
  if (!v.known()) fail(e);
#if !TOLLGATE_NO_EXCEPTIONS
  throw config_error(e, v);
#else
  std::fprintf(stderr, "tollgate: %s (refused %llu, largest accepted %llu)\n", message(e),
               static_cast<unsigned long long>(v.refused), static_cast<unsigned long long>(v.largest_accepted));
  std::abort();
#endif
}
}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ERROR_HPP
