// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/civil.hpp: exact proleptic Gregorian arithmetic on whole days since
// 1970-01-01, and the calendar periods (days, months) of a fixed UTC offset
// that keyed_budgets resets on. Integers only: no <chrono> calendar types
// (C++17), no floating point, no table beyond the month lengths. Nothing here
// is public API.
//
// Periods are counted from the one that holds 1970-01-01 00:00 at the offset
// (index 0); every time before it is in period 0 too (as calendar_quota counts
// its days). A `now` is a system_clock reading (ns since 1970-01-01Z), taken
// in 128 bits with the offset, so every int64 `now` has an exact period:
// at most 106,753 days or 3,508 months, so a day index fits 17 bits and a
// month index 12.
#ifndef TOLLGATE_DETAIL_CIVIL_HPP
#define TOLLGATE_DETAIL_CIVIL_HPP

#include <tollgate/config.hpp>
#include <tollgate/detail/arith.hpp>

#include <cstdint>
#include <limits>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

constexpr bool civil_leap(std::int64_t y) noexcept { return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0); }

// Leap years among 1..n (n >= 0).
constexpr std::int64_t civil_leaps_through(std::int64_t n) noexcept { return n / 4 - n / 100 + n / 400; }

// Days from 1970-01-01 to 1 January of year y (y >= 1970).
constexpr std::int64_t civil_year_start(std::int64_t y) noexcept {
  return 365 * (y - 1970) + civil_leaps_through(y - 1) - civil_leaps_through(1969);
}

// Days from 1 January to the first of month m (1..12), in a leap year or not.
constexpr std::int64_t civil_month_offset(bool leap, unsigned m) noexcept {
  constexpr std::int64_t before[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
  return before[m - 1] + (m > 2 && leap ? 1 : 0);
}

// Months since 1970-01 of day d (days since 1970-01-01, d >= 0).
constexpr std::uint64_t civil_month_of_day(std::int64_t d) noexcept {
  // d / 366 is at most the year offset; a year is 365 or 366 days, so the
  // guess is short by at most d / 366 - d / 365.25 + 1: a few steps.
  std::int64_t y = 1970 + d / 366;
  while (civil_year_start(y + 1) <= d) ++y;
  const std::int64_t day_of_year = d - civil_year_start(y);
  const bool leap = civil_leap(y);
  // No month is longer than 31 days, so the month is at least this; the
  // loop runs at most twice.
  unsigned m = static_cast<unsigned>(day_of_year / 31) + 1;
  while (m < 12 && civil_month_offset(leap, m + 1) <= day_of_year) ++m;
  return static_cast<std::uint64_t>((y - 1970) * 12 + static_cast<std::int64_t>(m) - 1);
}

// The first day (days since 1970-01-01) of month q (months since 1970-01).
constexpr std::int64_t civil_month_start(std::uint64_t q) noexcept {
  const std::int64_t y = 1970 + static_cast<std::int64_t>(q / 12);
  return civil_year_start(y) + civil_month_offset(civil_leap(y), static_cast<unsigned>(q % 12) + 1);
}

enum class period_kind : std::uint8_t { none, day, month };

// The periods of one calendar: which period a `now` is in, and when one
// starts. Plain values, fixed at construction.
struct calendar_periods {
  static constexpr std::int64_t day_ns = 86400LL * 1000000000LL;
  // Above every index an int64 `now` maps to, with the offset.
  static constexpr std::uint64_t max_day_index = 106753, max_month_index = 3508;

  period_kind kind = period_kind::none;
  std::int64_t offset_ns = 0;  // the zone's offset from UTC, at most +-24 h

  // The period of `now`; 0 for `none` and for every time before 1970-01-01
  // at the offset.
  constexpr std::uint64_t index(std::int64_t now) const noexcept {
    if (kind == period_kind::none) return 0;
    const i128 local = static_cast<i128>(now) + offset_ns;
    if (local < 0) return 0;
    // A 64-bit division wherever it fits (the 128-bit one is a library
    // call); the days fit int64 either way (local < 2^63 + 1 day).
    const std::int64_t days = local <= std::numeric_limits<std::int64_t>::max()
                                  ? static_cast<std::int64_t>(local) / day_ns
                                  : static_cast<std::int64_t>(local / day_ns);
    return kind == period_kind::day ? static_cast<std::uint64_t>(days) : civil_month_of_day(days);
  }
  // When period q starts (ns since 1970-01-01Z; may lie outside int64).
  constexpr i128 start(std::uint64_t q) const noexcept {
    const std::int64_t days = kind == period_kind::day ? static_cast<std::int64_t>(q) : civil_month_start(q);
    return static_cast<i128>(days) * day_ns - offset_ns;
  }
  // From `now` to the start of the next period: at least 1 ns, INT64_MAX
  // when that start is INT64_MAX or more ns away (or never, for `none`).
  constexpr std::int64_t reset_in(std::int64_t now) const noexcept {
    constexpr std::int64_t top = std::numeric_limits<std::int64_t>::max();
    if (kind == period_kind::none) return top;
    const i128 gap = start(index(now) + 1) - now;
    return gap >= top ? top : gap < 1 ? 1 : static_cast<std::int64_t>(gap);
  }
};

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_CIVIL_HPP
