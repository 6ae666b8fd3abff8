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
// roll-back at a rate whose tick is finer than a nanosecond.
//
// Whose ticket. A ticket is honoured only by the bucket that issued it, under
// the configuration it was taken under: it names both, and a refund of any
// other ticket gives nothing back. It names the bucket by its address in
// the issuing process: two live objects of one process never share one, so
// a ticket of another live bucket of this process is refused for certain,
// also one of a bucket another process built in shared memory (with this
// process's address of it). It names the configuration by a number drawn at
// construction and at every set_rate, set_burst and reset
// (detail/identity.hpp): never repeated within a process, and salted per
// process, so numbers drawn by two processes that draw n and m of them meet
// with probability at most (n + m + 1) / 2^64. A ticket from before a
// reconfiguration gives nothing back, nor one carried to a bucket restored
// from its bucket's owed() (restore_owed), which would otherwise give back
// units of an admission it never counted.
//
// What remains, told apart by the configuration number alone (so with the
// probability above; for certain when this process drew both numbers): a
// ticket refunded into a bucket now at the issuer's address (the issuer
// destroyed, or its region unmapped and another mapped there); a ticket
// carried to another process; and a ticket built field by field with issuer
// 0 (as the account rebuilds its own), whose address is not checked.

#ifndef TOLLGATE_BUCKET_TICKET_HPP
#define TOLLGATE_BUCKET_TICKET_HPP

#include <tollgate/config.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/gcra_params.hpp>
#include <tollgate/detail/identity.hpp>

#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

// A default ticket refunds nothing. Move-only: a copy could refund the same
// units twice. A moved-from ticket holds no units, so refunding it gives
// nothing back.
struct bucket_ticket {
  std::uint64_t end = 0;       // ticks after the origin: admission time + its units' intervals (exact)
  std::uint64_t units = 0;     // units it may still give back
  std::uint64_t config = 0;    // the rate and burst it was taken under (the bucket's number for them)
  std::uintptr_t issuer = 0;   // the issuing bucket's address in this process; 0: not checked

  constexpr bucket_ticket() noexcept = default;
  constexpr bucket_ticket(std::uint64_t e, std::uint64_t u, std::uint64_t c, std::uintptr_t i = 0) noexcept
      : end(e), units(u), config(c), issuer(i) {}
  bucket_ticket(const bucket_ticket&) = delete;
  bucket_ticket& operator=(const bucket_ticket&) = delete;
  constexpr bucket_ticket(bucket_ticket&& o) noexcept : end(o.end), units(o.units), config(o.config), issuer(o.issuer) {
    o.units = 0;
  }
  constexpr bucket_ticket& operator=(bucket_ticket&& o) noexcept {
    if (this != &o) {
      end = o.end;
      config = o.config;
      issuer = o.issuer;
      units = o.units;
      o.units = 0;
    }
    return *this;
  }
};

namespace detail {

// A configuration number no bucket of this process has used, and one of
// another process's with the probability stated above (detail/identity.hpp).
// Never 0, a default ticket's. It reaches other threads through the
// bucket's own publication of its slot.
inline std::uint64_t fresh_bucket_config() noexcept { return fresh_identity(); }

// The ticket of an admission of n units plus `extra` charged, made at now_t
// (ticks from p's epoch) that moved the TAT from `base` (max(TAT, now_t)) to
// `next`, by the bucket at `issuer`. Its own intervals end at now_t + (next - base). Saturating is safe:
// `now` in ticket_refundable then saturates too, and nothing is given back.
constexpr bucket_ticket make_bucket_ticket(const gcra_params& p, std::int64_t origin, std::uint64_t now_t,
                                           std::uint64_t base, std::uint64_t next, std::uint64_t n,
                                           std::uint64_t extra, std::uintptr_t issuer) noexcept {
  bucket_ticket t;
  t.end = sat_add(sat_mul(positive_difference(p.epoch, origin), p.scale), now_t + (next - base));
  t.units = sat_add(n, extra);
  t.config = p.config;
  t.issuer = issuer;
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
