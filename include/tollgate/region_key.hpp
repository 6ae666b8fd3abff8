// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// region_key.hpp: the name of a type as a shared region records it, so that
// a region built for one type is refused (region_errc::wrong_type) when
// attached as another, also one of the same size.
//
// A region stores its object's type key: the size, the alignment and the
// layout class of the type, and region_key<T>::value, a 64-bit name of the
// type and of every template parameter that changes what its bytes mean.
// The library names what it places and what those depend on:
//   token_bucket<Clock>, sliding_window<Clock, Subwindows>,
//   calendar_quota<Clock>, concurrency_limiter, budget<Currency>;
//   the clocks steady_clock, coarse_clock, system_clock,
//   basic_manual_clock<Tag>, basic_region_clock<Tag> (and the tags of
//   manual_clock and region_clock);
//   a currency by its `code` ("USD", "CNY", or your own currency's).
// So budget<usd_tag> never attaches as budget<cny_tag>, token_bucket<
// steady_clock> never as token_bucket<system_clock>, a concurrency_limiter
// never as a calendar_quota or a budget of its size.
//
// Your own types. A type without a specialisation is unnamed (value 0): its
// key is its shape only, so it attaches as any other unnamed type of the
// same size and alignment (never as a named one). Name a type you place in
// a region by specialising region_key, from a name of yours and the keys or
// numbers of its parameters:
//   template <> struct tollgate::region_key<my_counter> {
//     static constexpr std::uint64_t value = tollgate::region_name_key("myapp.counter/1");
//   };
// An unnamed clock (or tag) is 0 too: token_bucket<your_clock> is told apart
// from token_bucket<steady_clock>, but not from token_bucket of another
// unnamed clock; name the clock the same way to tell those apart. A key must
// be the same in every program that maps the region: build it from names
// and numbers, never from addresses, typeid or a compiler's function name
// (they differ between builds and compilers).
#ifndef TOLLGATE_REGION_KEY_HPP
#define TOLLGATE_REGION_KEY_HPP

#include <tollgate/config.hpp>
#include <tollgate/budget.hpp>
#include <tollgate/calendar_quota.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/concurrency.hpp>
#include <tollgate/sliding_window.hpp>
#include <tollgate/token_bucket.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

TOLLGATE_BEGIN_NAMESPACE

// The key of a name (FNV-1a of its bytes) with the keys or numbers of its
// parameters mixed in (FNV-1a over their 8 bytes each), in order.
template <class... Vs>
constexpr std::uint64_t region_name_key(std::string_view name, Vs... params) noexcept {
  std::uint64_t h = 14695981039346656037ULL;
  for (const char c : name) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  const std::uint64_t vs[] = {0, static_cast<std::uint64_t>(params)...};
  for (std::size_t j = 1; j < sizeof vs / sizeof vs[0]; ++j)
    for (int i = 0; i < 8; ++i) {
      h ^= (vs[j] >> (8 * i)) & 0xffu;
      h *= 1099511628211ULL;
    }
  return h;
}

// A type's name for regions: 0 (unnamed) unless specialised (see above).
template <class T, class = void>
struct region_key {
  static constexpr std::uint64_t value = 0;
};

namespace detail {
template <class C, class = void>
struct currency_code_key {
  static constexpr std::uint64_t value = 0;
};
template <class C>
struct currency_code_key<C, std::void_t<decltype(C::code)>> {
  static constexpr std::uint64_t value = region_name_key(C::code);
};
}  // namespace detail

template <class Tag>
struct basic_region_clock;
struct region_clock_tag;

template <>
struct region_key<steady_clock> {
  static constexpr std::uint64_t value = region_name_key("tollgate.steady_clock");
};
template <>
struct region_key<coarse_clock> {
  static constexpr std::uint64_t value = region_name_key("tollgate.coarse_clock");
};
template <>
struct region_key<system_clock> {
  static constexpr std::uint64_t value = region_name_key("tollgate.system_clock");
};
template <>
struct region_key<manual_clock_tag> {
  static constexpr std::uint64_t value = region_name_key("tollgate.manual_clock_tag");
};
template <>
struct region_key<region_clock_tag> {
  static constexpr std::uint64_t value = region_name_key("tollgate.region_clock_tag");
};
template <class Tag>
struct region_key<basic_manual_clock<Tag>> {
  static constexpr std::uint64_t value = region_name_key("tollgate.basic_manual_clock", region_key<Tag>::value);
};
template <class Tag>
struct region_key<basic_region_clock<Tag>> {
  static constexpr std::uint64_t value = region_name_key("tollgate.basic_region_clock", region_key<Tag>::value);
};

template <class Clock>
struct region_key<token_bucket<Clock>> {
  static constexpr std::uint64_t value = region_name_key("tollgate.token_bucket", region_key<Clock>::value);
};
template <class Clock, std::size_t Subwindows>
struct region_key<sliding_window<Clock, Subwindows>> {
  static constexpr std::uint64_t value =
      region_name_key("tollgate.sliding_window", region_key<Clock>::value, Subwindows);
};
template <class Clock>
struct region_key<calendar_quota<Clock>> {
  static constexpr std::uint64_t value = region_name_key("tollgate.calendar_quota", region_key<Clock>::value);
};
template <>
struct region_key<concurrency_limiter> {
  static constexpr std::uint64_t value = region_name_key("tollgate.concurrency_limiter");
};
// A currency by its code, or by its own region_key where it has none.
template <class C>
struct region_key<budget<C>> {
  static constexpr std::uint64_t value =
      region_name_key("tollgate.budget", detail::currency_code_key<C>::value, region_key<C>::value);
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REGION_KEY_HPP
