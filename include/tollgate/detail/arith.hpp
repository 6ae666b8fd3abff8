// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/arith.hpp: overflow-checked and 128-bit integer helpers. Nothing here
// is public API.
#ifndef TOLLGATE_DETAIL_ARITH_HPP
#define TOLLGATE_DETAIL_ARITH_HPP

#include <tollgate/config.hpp>

#include <cstdint>
#include <limits>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

#if defined(__SIZEOF_INT128__)
__extension__ typedef unsigned __int128 u128;
__extension__ typedef __int128 i128;
#else
#error "tollgate needs a compiler with a 128-bit integer type (g++, clang)"
#endif

// a * b / c rounded down; c > 0. Saturates at UINT64_MAX.
constexpr std::uint64_t mul_div_floor(std::uint64_t a, std::uint64_t b, std::uint64_t c) noexcept {
  const u128 q = static_cast<u128>(a) * b / c;
  return q > std::numeric_limits<std::uint64_t>::max() ? std::numeric_limits<std::uint64_t>::max()
                                                       : static_cast<std::uint64_t>(q);
}

// a * b / c rounded up; c > 0. Saturates at UINT64_MAX.
constexpr std::uint64_t mul_div_ceil(std::uint64_t a, std::uint64_t b, std::uint64_t c) noexcept {
  const u128 p = static_cast<u128>(a) * b;
  const u128 q = p / c + (p % c != 0 ? 1 : 0);
  return q > std::numeric_limits<std::uint64_t>::max() ? std::numeric_limits<std::uint64_t>::max()
                                                       : static_cast<std::uint64_t>(q);
}

constexpr std::uint64_t sat_add(std::uint64_t a, std::uint64_t b) noexcept {
  return a > std::numeric_limits<std::uint64_t>::max() - b ? std::numeric_limits<std::uint64_t>::max()
                                                           : a + b;
}

constexpr std::uint64_t sat_mul(std::uint64_t a, std::uint64_t b) noexcept {
  const u128 p = static_cast<u128>(a) * b;
  return p > std::numeric_limits<std::uint64_t>::max() ? std::numeric_limits<std::uint64_t>::max()
                                                       : static_cast<std::uint64_t>(p);
}

constexpr std::uint64_t ceil_div(std::uint64_t a, std::uint64_t b) noexcept {
  return a / b + (a % b != 0 ? 1 : 0);
}

constexpr std::uint64_t gcd(std::uint64_t a, std::uint64_t b) noexcept {
  while (b != 0) {
    const std::uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// max(0, a - b) for signed 64-bit values, as unsigned, without overflow.
constexpr std::uint64_t positive_difference(std::int64_t a, std::int64_t b) noexcept {
  return a > b ? static_cast<std::uint64_t>(a) - static_cast<std::uint64_t>(b) : 0;
}

// max(0, to - from) as int64, saturating at INT64_MAX: the wait from `from`
// until `to`, defined for every pair of values.
constexpr std::int64_t sat_gap(std::int64_t from, std::int64_t to) noexcept {
  const std::uint64_t d = positive_difference(to, from);
  return d > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ? std::numeric_limits<std::int64_t>::max()
                                                                                   : static_cast<std::int64_t>(d);
}

// b + d as int64, saturating at INT64_MAX.
constexpr std::int64_t sat_offset(std::int64_t b, std::uint64_t d) noexcept {
  const std::uint64_t room =
      static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) - static_cast<std::uint64_t>(b);
  // For negative b the subtraction above wraps to a value > INT64_MAX, which is the true room.
  return d >= room ? std::numeric_limits<std::int64_t>::max()
                   : static_cast<std::int64_t>(static_cast<std::uint64_t>(b) + d);
}

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_ARITH_HPP
