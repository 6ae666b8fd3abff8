// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed_overflow.hpp: new keys that find their window of a keyed_buckets
// table full of live entries are sent to one limiter the user names (a
// token_bucket, sliding_window or anything with try_acquire(n, now)
// returning a decision), instead of being refused with table_full.
//
// Guarantee. The table is asked exactly as by keyed_buckets::try_acquire,
// and only its table_full answer is replaced: the request is then decided
// by the overflow limiter (status keyed_status::overflow, the limiter's
// decision). The overflow path reads and writes nothing in the table, so
// every key keeps its entry's bound and no live entry changes; all the keys
// sent to overflow together get at most the overflow limiter's bound (for
// a token bucket of rate r and burst B: B + floor(t / T) over any interval
// t, shared among them). A key sent to overflow while its window is full
// and admitted on its own entry later can therefore get its class's bound
// plus what it wins of the overflow limiter's: size the overflow limiter
// for what the table's new keys may share when it is full.
//
// Overflow admissions carry no keyed_ticket (a ticket names an entry); give
// units back through the overflow limiter's own means if it has them.
//
// Thread-safe and lock-free as the table and the limiter are.
#ifndef TOLLGATE_KEYED_OVERFLOW_HPP
#define TOLLGATE_KEYED_OVERFLOW_HPP

#include <tollgate/config.hpp>
#include <tollgate/keyed_buckets.hpp>

#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

// Takes n units for the key from its entry (claiming one with class `cls`
// if it has none), or from `overflow` when its window is full of live
// entries. Key is a 64-bit id or a string_view.
template <class Clock, class Hash, class Key, class Overflow>
keyed_result try_acquire_or_overflow(keyed_buckets<Clock, Hash>& keys, Overflow& overflow, const Key& key,
                                     std::size_t cls, std::uint64_t n, nanoseconds now) noexcept {
  const keyed_result r = keys.try_acquire(key, cls, n, now);
  if (!r.table_full()) return r;
  return keyed_result(overflow.try_acquire(n, now), keyed_status::overflow);
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_OVERFLOW_HPP
