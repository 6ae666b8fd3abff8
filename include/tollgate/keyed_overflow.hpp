// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed_overflow.hpp: new keys that find their window of a keyed table
// full of live entries are sent to one limiter the user names, instead of
// being refused with table_full. For keyed_buckets and keyed_windows: a
// token_bucket, sliding_window or anything with try_acquire(n, now)
// returning a decision. For keyed_permits: a concurrency_limiter (anything
// with try_acquire(n) returning a permit), whose permit the caller then
// holds and releases. For keyed_budgets: a budget (anything with
// reserve(amount) returning a reservation), settled or released through
// settle_or_overflow() or the budget itself.
//
// Guarantee. The table is asked exactly as by its own call, and only its
// table_full answer is replaced: the request is then decided by the
// overflow limiter (status keyed_status::overflow, the limiter's
// decision). The overflow path reads and writes nothing in the table, so
// every key keeps its entry's bound and no live entry changes; all the keys
// sent to overflow together get at most the overflow limiter's bound (for
// a token bucket of rate r and burst B: B + floor(t / T) over any interval
// t; for a sliding window: its L in every W; for a concurrency limiter: its
// limit held at once; for a budget: its limit reserved and settled, all
// shared among them). A key sent to overflow while its window is full and
// admitted on its own entry later can therefore get its class's bound plus
// what it wins of the overflow limiter's: size the overflow limiter for
// what the table's new keys may share when it is full.
//
// Overflow admissions of buckets and windows carry no keyed_ticket (a
// ticket names an entry); give units back through the overflow limiter's
// own means if it has them. A permit or reservation from the overflow
// limiter returns to that limiter, never to the table. A budget
// reservation names no issuer, so the hold remembers the overflow limiter
// that decided it, and settle_or_overflow() refuses to settle it into any
// other (a mixed-up argument would otherwise free money the other budget
// never held and let it pass its limit).
//
// Thread-safe and lock-free as the table and the limiter are.
#ifndef TOLLGATE_KEYED_OVERFLOW_HPP
#define TOLLGATE_KEYED_OVERFLOW_HPP

#include <tollgate/budget.hpp>
#include <tollgate/concurrency.hpp>
#include <tollgate/config.hpp>
#include <tollgate/keyed_buckets.hpp>
#include <tollgate/keyed_budgets.hpp>
#include <tollgate/keyed_permits.hpp>
#include <tollgate/keyed_windows.hpp>
#include <tollgate/money.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {
struct keyed_overflow_access;
}  // namespace detail

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

// The same for a keyed_windows table.
template <class Clock, class Hash, class Key, class Overflow>
keyed_result try_acquire_or_overflow(keyed_windows<Clock, Hash>& keys, Overflow& overflow, const Key& key,
                                     std::size_t cls, std::uint64_t n, nanoseconds now) noexcept {
  const keyed_result r = keys.try_acquire(key, cls, n, now);
  if (!r.table_full()) return r;
  return keyed_result(overflow.try_acquire(n, now), keyed_status::overflow);
}

// What a permits or budgets table with an overflow limiter gives: the
// table's hold (a keyed_permit or keyed_reservation), or, when the key's
// window was full, the overflow limiter's (its permit or reservation; the
// table's is then refused with table_full and holds nothing). Move-only as
// the holds are; each returns to its own owner.
template <class KeyHold, class OverflowHold>
struct keyed_overflow_hold {
  KeyHold key;                  // the table's answer and what it holds
  OverflowHold overflow{};      // the overflow limiter's, when `sent`
  bool sent = false;            // the key's window was full: decided by the overflow limiter
  keyed_status status() const noexcept { return sent ? keyed_status::overflow : key_status(key); }
  bool admitted() const noexcept { return sent ? static_cast<bool>(overflow) : static_cast<bool>(key); }
  explicit operator bool() const noexcept { return admitted(); }
  // Whether `limiter` is the overflow limiter that decided it (false when
  // not `sent`).
  template <class Limiter>
  bool decided_by(const Limiter& limiter) const noexcept {
    return sent && issuer_ == static_cast<const void*>(std::addressof(limiter));
  }

 private:
  friend struct detail::keyed_overflow_access;
  const void* issuer_ = nullptr;  // the overflow limiter, when `sent`
  static keyed_status key_status(const keyed_permit& p) noexcept { return p.status(); }
  template <class C>
  static keyed_status key_status(const keyed_reservation<C>& r) noexcept {
    return r.status;
  }
};
namespace detail {
struct keyed_overflow_access {
  template <class H, class L>
  static void mark(H& h, const L& limiter) noexcept {
    h.sent = true;
    h.issuer_ = static_cast<const void*>(std::addressof(limiter));
  }
};
}  // namespace detail
using keyed_overflow_permit = keyed_overflow_hold<keyed_permit, permit>;
template <class C = usd_tag>
using keyed_overflow_reservation = keyed_overflow_hold<keyed_reservation<C>, budget_reservation<C>>;

// Holds n units of the key's concurrency limit (claiming an entry with
// class `cls` if it has none), or n units of `overflow` when its window is
// full of live entries. Release the result's `key` or `overflow` permit
// (whichever it holds) as any permit.
template <class Hash, class Key, class Overflow>
auto try_acquire_or_overflow(keyed_permits<Hash>& keys, Overflow& overflow, const Key& key, std::size_t cls,
                             std::uint64_t n) noexcept
    -> keyed_overflow_hold<keyed_permit, decltype(overflow.try_acquire(n))> {
  keyed_overflow_hold<keyed_permit, decltype(overflow.try_acquire(n))> out;
  out.key = keys.try_acquire(key, cls, n);
  if (out.key.status() != keyed_status::table_full) return out;
  detail::keyed_overflow_access::mark(out, overflow);
  out.overflow = overflow.try_acquire(n);
  return out;
}

// Reserves `amount` of the key's budget (claiming an entry with class
// `cls` if it has none; `now` names the period of a table with one), or of
// `overflow` when its window is full of live entries (a table that reuses
// no entry fills for good: its new keys then all share the overflow
// budget). Settle or release with settle_or_overflow().
template <class Currency, class Hash, class Key, class Overflow>
auto reserve_or_overflow(keyed_budgets<Currency, Hash>& keys, Overflow& overflow, const Key& key, std::size_t cls,
                         money<Currency> amount, nanoseconds now) noexcept
    -> keyed_overflow_hold<keyed_reservation<Currency>, decltype(overflow.reserve(amount))> {
  keyed_overflow_hold<keyed_reservation<Currency>, decltype(overflow.reserve(amount))> out;
  out.key = keys.reserve(key, cls, amount, now);
  if (out.key.status != keyed_status::table_full) return out;
  detail::keyed_overflow_access::mark(out, overflow);
  out.overflow = overflow.reserve(amount);
  return out;
}

// Settles what reserve_or_overflow() holds where it is held (the table at
// `now`, or the overflow budget); returns reserved - actual as their own
// settle does, nothing for a hold already settled or refused. actual zero
// releases it. A hold sent to another overflow budget than `overflow` (or
// made by another table than `keys`: its own settle refuses it) is left as
// it is, still held, and zero returned: settle it with its own.
template <class Currency, class Hash, class Overflow, class OverflowHold>
money<Currency> settle_or_overflow(keyed_budgets<Currency, Hash>& keys, Overflow& overflow,
                                   keyed_overflow_hold<keyed_reservation<Currency>, OverflowHold>& h,
                                   money<Currency> actual, nanoseconds now) noexcept {
  if (h.sent) return h.decided_by(overflow) ? overflow.settle(h.overflow, actual) : money<Currency>();
  return keys.settle(h.key, actual, now);
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_OVERFLOW_HPP
