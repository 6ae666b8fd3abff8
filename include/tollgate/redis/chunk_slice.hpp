// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/chunk_slice.hpp: a spaced bucket's slice of a chunk (redis/chunk.hpp,
// "Spaced buckets", states the contract): the holder's own copy of the
// bucket over the slice's time. Internal to chunked mode; no I/O.
#ifndef TOLLGATE_REDIS_CHUNK_SLICE_HPP
#define TOLLGATE_REDIS_CHUNK_SLICE_HPP

#include <tollgate/config.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/redis/layout.hpp>

#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {

// A spaced bucket's share of a chunk: the in-process bucket of burst 1
// (token_bucket at the layout's ticks), run by the holder alone over the
// chunk's time. Times are ticks since the grant.
struct chunk_slice {
  bool on = false;
  std::uint64_t per_us = 0;    // ticks per µs
  std::uint64_t interval = 0;  // ticks per unit
  std::uint64_t tat = 0;       // the holder's TAT
  std::uint64_t limit = 0;     // its TAT never passes this: the chunk's end, less the margin

  // Sets it up for a slice of `slice_us` of the bucket `b`, less `margin_us` at its end.
  void start(const bucket_params& b, std::uint64_t slice_us, std::uint64_t margin_us) noexcept {
    on = b.per_us != 0;
    if (!on) return;
    per_us = b.per_us;
    interval = b.whole_us * b.per_us + b.ticks;
    tat = 0;
    limit = saturate(detail::u128(slice_us > margin_us ? slice_us - margin_us : 0) * per_us);
  }
  // Whether n units admitted at `at_us` µs after the grant fit, and the TAT
  // they leave (a request of 0 tokens takes nothing from a token bucket).
  bool fits(std::uint64_t n, std::uint64_t at_us, std::uint64_t& after) const noexcept {
    after = tat;
    if (!on || n == 0) return true;
    const std::uint64_t at = saturate(detail::u128(at_us) * per_us);
    if (tat > at) return false;
    const detail::u128 e = detail::u128(at) + detail::u128(n) * interval;
    if (e > limit) return false;
    after = static_cast<std::uint64_t>(e);
    return true;
  }
  // An admission of n units at `at_us`: the grant's own request (admitted
  // by the server whatever the margin) or one that fits.
  void charge(std::uint64_t n, std::uint64_t at_us) noexcept {
    if (!on || n == 0) return;
    const std::uint64_t at = saturate(detail::u128(at_us) * per_us);
    tat = saturate(detail::u128(tat > at ? tat : at) + detail::u128(n) * interval);
  }
  static std::uint64_t saturate(detail::u128 x) noexcept {
    const std::uint64_t top = std::uint64_t(1) << 62;
    return x > top ? top : static_cast<std::uint64_t>(x);
  }
};

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_CHUNK_SLICE_HPP
