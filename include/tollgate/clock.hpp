// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// clock.hpp: time is std::chrono::nanoseconds, a signed 64-bit count since an
// origin that depends on the clock. A clock is a type with a static
// `now() noexcept -> std::chrono::nanoseconds`, so limiters take it as a
// template parameter and their state stays plain data.
#ifndef TOLLGATE_CLOCK_HPP
#define TOLLGATE_CLOCK_HPP

#include <tollgate/config.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <type_traits>
#if defined(__unix__) || defined(__APPLE__)
#include <time.h>
#endif

TOLLGATE_BEGIN_NAMESPACE

using nanoseconds = std::chrono::nanoseconds;

// std::chrono::steady_clock in nanoseconds (on Linux: CLOCK_MONOTONIC through
// the vDSO, about 20 ns a read).
struct steady_clock {
  static constexpr bool is_steady = true;
  static nanoseconds now() noexcept {
    return std::chrono::duration_cast<nanoseconds>(std::chrono::steady_clock::now().time_since_epoch());
  }
};

// A cheaper monotonic clock with a coarse resolution: CLOCK_MONOTONIC_COARSE
// on Linux, which advances once per kernel tick (1 to 4 ms; `resolution()`
// tells). It shares CLOCK_MONOTONIC's origin, so it can be mixed with
// steady_clock, but it lags it by up to one tick: limiters treat such a
// reading as a slightly stale one (never more permissive). Elsewhere it is
// steady_clock.
struct coarse_clock {
  static constexpr bool is_steady = true;
  static nanoseconds now() noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return nanoseconds(static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec);
#else
    return steady_clock::now();
#endif
  }
  // How far apart two distinct readings can be.
  static nanoseconds resolution() noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
    timespec ts;
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &ts) == 0)
      return nanoseconds(static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec);
#endif
    return nanoseconds(1);
  }
};

// Wall-clock time in nanoseconds since 1970-01-01T00:00:00Z, for limits that
// reset at a calendar boundary (calendar_quota). Not monotonic.
struct system_clock {
  static constexpr bool is_steady = false;
  static constexpr bool reads_unix_time = true;  // a calendar day needs no mapping
  static nanoseconds now() noexcept {
    return std::chrono::duration_cast<nanoseconds>(std::chrono::system_clock::now().time_since_epoch());
  }
};

// A clock that moves only when told to: for tests and simulations. Each Tag
// type is an independent clock, shared by every limiter that names it. It is
// thread-safe; `set` may move time backwards, which limiters must survive.
template <class Tag>
struct basic_manual_clock {
  static constexpr bool is_steady = false;
  // Tests and simulations set Unix times: a calendar day reads them as such.
  static constexpr bool reads_unix_time = true;
  // relaxed: the value is the only data the clock publishes; a reader that
  // needs ordering with other memory gets it from its own synchronisation.
  static nanoseconds now() noexcept { return nanoseconds(value_.load(std::memory_order_relaxed)); }
  static void set(nanoseconds t) noexcept { value_.store(t.count(), std::memory_order_relaxed); }
  // relaxed RMW: concurrent advances must not lose each other's time, and no
  // other memory rides on the value.
  static nanoseconds advance(nanoseconds d) noexcept {
    return nanoseconds(value_.fetch_add(d.count(), std::memory_order_relaxed) + d.count());
  }

 private:
  static inline std::atomic<std::int64_t> value_{0};
};

namespace detail {
// Whether Clock's readings are Unix time (it says so by reads_unix_time).
template <class C, class = void>
struct reads_unix_time : std::false_type {};
template <class C>
struct reads_unix_time<C, std::void_t<decltype(C::reads_unix_time)>> : std::bool_constant<C::reads_unix_time> {};
}  // namespace detail

struct manual_clock_tag {};
using manual_clock = basic_manual_clock<manual_clock_tag>;

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_CLOCK_HPP
