// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/wait_spread.hpp: how the Redis account spreads the waits it hands
// out (options::wait_spread_percent), so that processes refused at once do
// not all come back at the same instant.
//
// Contract. Every wait the script answers for a window, a bucket, a
// calendar day, a pause or a hold is the exact one (the in-process
// account's, rounded up to the µs); the account object adds to it a part
// drawn uniformly from [0, wait x percent / 100] (whole µs, saturating), so
// a fleet's refused processes, which the script tells the same instant,
// come back spread over that part of the wait, in turn. A spread wait is
// later, never earlier: no bound changes, and a request is never admitted
// sooner for it. Not spread: test mode (its waits are the script's, for
// deterministic tests), the holder's own wait inside a chunk's slice (it
// competes with no one), a wait of 0 (busy). The draws are a splitmix64
// stream per account object, seeded from the object's address and the
// steady clock at its first draw (no I/O; two processes forked from one
// parent draw apart once their clocks differ, as they do to the ns).
#ifndef TOLLGATE_REDIS_WAIT_SPREAD_HPP
#define TOLLGATE_REDIS_WAIT_SPREAD_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>

#include <cstdint>
#include <limits>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {

class wait_spreader {
 public:
  // The spread wait (µs) for a wait of `us`, with `percent` (0: none; above
  // 100 counts as 100).
  std::int64_t spread(std::int64_t us, unsigned percent) noexcept {
    if (us <= 0 || percent == 0) return us;
    if (percent > 100) percent = 100;
    const std::uint64_t top = static_cast<std::uint64_t>(us) / 100 * percent +
                              static_cast<std::uint64_t>(us) % 100 * percent / 100;
    if (top == 0) return us;
    const std::uint64_t extra = next() % (top + 1);
    const std::uint64_t limit =
        static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) - static_cast<std::uint64_t>(us);
    return us + static_cast<std::int64_t>(extra < limit ? extra : limit);
  }

 private:
  std::uint64_t next() noexcept {
    if (!seeded_) {
      state_ = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(this)) ^
               static_cast<std::uint64_t>(steady_clock::now().count());
      seeded_ = true;
    }
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  std::uint64_t state_ = 0;
  bool seeded_ = false;
};

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_WAIT_SPREAD_HPP
