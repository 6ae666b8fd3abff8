// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// rate.hpp: a count per period, the input of rate limiters.
#ifndef TOLLGATE_RATE_HPP
#define TOLLGATE_RATE_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>

#include <chrono>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

// A rate: `count` units per `period`. Periods are chrono durations, so
// `rate{3, 60}` does not compile; write `rate{3, std::chrono::minutes(1)}` or
// `per_minute(3)`.
struct rate {
  std::uint64_t count = 0;
  nanoseconds period{0};

  constexpr rate() noexcept = default;
  template <class Rep, class Period>
  constexpr rate(std::uint64_t n, std::chrono::duration<Rep, Period> p) noexcept
      : count(n), period(std::chrono::duration_cast<nanoseconds>(p)) {}
};

constexpr rate per_second(std::uint64_t n) noexcept { return rate(n, std::chrono::seconds(1)); }
constexpr rate per_minute(std::uint64_t n) noexcept { return rate(n, std::chrono::minutes(1)); }
constexpr rate per_hour(std::uint64_t n) noexcept { return rate(n, std::chrono::hours(1)); }
constexpr rate per_day(std::uint64_t n) noexcept { return rate(n, std::chrono::hours(24)); }

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_RATE_HPP
