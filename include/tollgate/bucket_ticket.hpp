// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// bucket_ticket.hpp: what a token bucket admission leaves for refunding it
// later, and how much a refund may give back (see token_bucket::refund).
//
// The rule. At `now`, a refund of a ticket returns whole units only, at most
//     min(n, units, (end - now) / T, owed(now) / T)
// where `end` is the admission's time plus the intervals of its units: the
// part of the admission's own intervals still ahead. However many
// admissions, charges and other ticketed refunds came between, giving that
// back keeps every interval within the bucket's bound B + floor(t / T) for
// the units admitted net of refunds. (A refund of the TAT the ticket saw
// would not: an earlier admission's refund can move this one's units down.)
//
// Times are in ticks after the bucket's origin, which an epoch move keeps (it
// moves by whole nanoseconds, and the scale comes with the configuration):
// exact, where a ticket rounded to nanoseconds would keep up to a unit of a
// roll-back at a rate whose tick is finer than a nanosecond. A ticket names
// the configuration it was taken under; one from before a set_rate,
// set_burst or reset gives nothing back. Configuration numbers come from one
// counter of the program (and only rise within a bucket), so a ticket of
// another bucket gives nothing back either: not into a bucket restored from
// its bucket's owed() (restore_owed), which would otherwise give back units
// of an admission it never counted. (Buckets in shared memory keep rising
// numbers, but two programs' counters may meet: a ticket carried to
// another process's other bucket is told apart by its end and units only.)

#ifndef TOLLGATE_BUCKET_TICKET_HPP
#define TOLLGATE_BUCKET_TICKET_HPP

#include <tollgate/config.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/gcra_params.hpp>

#include <atomic>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

// A default ticket refunds nothing. Move-only: a copy could refund the same
// units twice. A moved-from ticket holds no units, so refunding it gives
// nothing back.
struct bucket_ticket {
  std::uint64_t end = 0;     // ticks after the origin: admission time + its units' intervals (exact)
  std::uint64_t units = 0;   // units it may still give back
  std::uint64_t config = 0;  // the rate and burst it was taken under

  constexpr bucket_ticket() noexcept = default;
  constexpr bucket_ticket(std::uint64_t e, std::uint64_t u, std::uint64_t c) noexcept : end(e), units(u), config(c) {}
  bucket_ticket(const bucket_ticket&) = delete;
  bucket_ticket& operator=(const bucket_ticket&) = delete;
  constexpr bucket_ticket(bucket_ticket&& o) noexcept : end(o.end), units(o.units), config(o.config) { o.units = 0; }
  constexpr bucket_ticket& operator=(bucket_ticket&& o) noexcept {
    if (this != &o) {
      end = o.end;
      config = o.config;
      units = o.units;
      o.units = 0;
    }
    return *this;
  }
};

namespace detail {

// A configuration number above `old` that no bucket of this program has
// used (one counter of the program; a bucket's own numbers only rise, also
// when another program's counter set `old`). Never 0, a default ticket's.
inline std::uint64_t fresh_bucket_config(std::uint64_t old) noexcept {
  static std::atomic<std::uint64_t> last{0};
  // relaxed: only uniqueness matters, which the RMW's atomicity gives (it
  // pairs with no other operation); the number reaches other threads
  // through the bucket's own publication of its slot. Not a
  // detail::atomic: no lock-free protocol reads it.
  const std::uint64_t n = last.fetch_add(1, std::memory_order_relaxed) + 1;
  return n > old ? n : old + 1;
}

// The ticket of an admission of n units plus `extra` charged, made at now_t
// (ticks from p's epoch) that moved the TAT from `base` (max(TAT, now_t)) to
// `next`. Its own intervals end at now_t + (next - base). Saturating is safe:
// `now` in ticket_refundable then saturates too, and nothing is given back.
constexpr bucket_ticket make_bucket_ticket(const gcra_params& p, std::int64_t origin, std::uint64_t now_t,
                                           std::uint64_t base, std::uint64_t next, std::uint64_t n,
                                           std::uint64_t extra) noexcept {
  bucket_ticket t;
  t.end = sat_add(sat_mul(positive_difference(p.epoch, origin), p.scale), now_t + (next - base));
  t.units = sat_add(n, extra);
  t.config = p.config;
  return t;
}

// Whole units a refund of up to n (<= t.units) may give back at `now`, under
// p (the ticket's configuration), with the state's TAT `tat` (ticks from p's
// epoch) and `now_t` = gcra_ticks(now, p).
constexpr std::uint64_t ticket_refundable(const bucket_ticket& t, std::uint64_t n, std::int64_t now,
                                          std::int64_t origin, const gcra_params& p, std::uint64_t tat,
                                          std::uint64_t now_t) noexcept {
  // `now` in ticks after the origin, counted from the epoch at the earliest,
  // as gcra_ticks counts it (the epoch is never before the origin), but not
  // capped at the horizon; saturating is rounding up, the safe side here.
  const std::uint64_t from = positive_difference(p.epoch, origin);
  std::uint64_t since = positive_difference(now, origin);
  if (since < from) since = from;
  since = sat_mul(since, p.scale);
  if (t.end <= since) return 0;
  if (tat <= now_t) return 0;  // already full at `now`
  std::uint64_t cap = sat_mul(n, p.interval);
  const std::uint64_t own = t.end - since;
  if (own < cap) cap = own;
  if (tat - now_t < cap) cap = tat - now_t;
  return cap / p.interval;
}

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_BUCKET_TICKET_HPP
