// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/options.hpp: the options of the Redis account (redis/account.hpp):
// test mode (a supplied `now`, honoured only by an account created in test
// mode), Functions instead of EVALSHA, and what a failed call does
// (redis/fallback.hpp), chunked mode, the spread of waits. Every value is valid: a share_percent of 0 or above
// 100 means no fallback.
#ifndef TOLLGATE_REDIS_OPTIONS_HPP
#define TOLLGATE_REDIS_OPTIONS_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/redis/fallback.hpp>

#include <chrono>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {

struct options {
  bool test_mode = false;  // take `now` from the caller (tests only)
  bool functions = false;  // FCALL the Functions library (loaded on first need) instead of EVALSHA
  fault_mode on_fault = fault_mode::fail_closed;
  unsigned share_percent = 0;  // local_share: 1 to 100 (0 or above 100: no fallback)
  // local_share: how long decisions stay local after a failed call before
  // the next one tries Redis again (so a slow server costs one timeout per
  // this time, not one per request).
  nanoseconds fallback_for = std::chrono::seconds(1);
  // Chunked mode (redis/chunk.hpp), 0: off. One call leases limit /
  // chunk_parts units of each window to this account object, spent locally
  // while its sub-window is the head; N objects hold at most N / chunk_parts
  // of each limit unspent. A spaced bucket's chunk is a slice of its time
  // (about the window / chunk_parts), held by one object at a time.
  unsigned chunk_parts = 0;
  // Each wait the script answers is lengthened by a random part of up to
  // this percent of it (redis/wait_spread.hpp; not in test mode), so that
  // processes refused at once come back in turn. 0: the exact waits.
  unsigned wait_spread_percent = 10;
};

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_OPTIONS_HPP
