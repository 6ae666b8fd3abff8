// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// calendar_quota.hpp: a quota per calendar day that resets at midnight of a
// fixed UTC offset, read from wall-clock time (nanoseconds since 1970-01-01Z).
// A quota on another clock (a steady one, whose zero is the boot) is given
// the Unix time at that clock's zero (`clock_origin`) and counts its days as
// the UTC days of `now + clock_origin`.
//
// Use it only when you know in which time zone your server's day resets.
// Kimi says its daily token limit "resets the next day" without naming the
// zone; a rolling 24 h sliding_window stays inside any calendar reset and is
// the safe default for such limits.
//
// Guarantee. Within each calendar day [midnight, next midnight) of the given
// offset, the units admitted never exceed the limit (days of the Unix time
// now + clock_origin, exactly as the quota maps it: a mapping that is off by
// e seconds from true UTC moves every midnight by e). Usage charged after the
// fact (charge) may push a day past it; admissions then wait for the next day.
//
// Time going backwards. A `now` in a day before the one the state is in is
// refused with reason::stale_time (retry_after = time to that day's start);
// the state never moves to an earlier day. Times before 1970 count as day 0.
// The same rule means that one admission or charge at a bogus far-future
// `now` (INT64_MAX is in the year 2262) moves the state to that day, and every
// ordinary `now` afterwards is stale. The quota has not been made more
// permissive, as stated; the way out is `reset()`, which forgets the day and
// its usage. Every function is defined for every `now`; waits are never
// negative, and a wait for a day that starts after INT64_MAX (the last day
// representable) is INT64_MAX. Days are computed in 128 bits, so the day of
// a `now` and the start of the next day agree up to INT64_MAX: the stated
// wait for the next day is exact there too.
//
// Concurrency contract. All member functions are thread-safe; try_acquire,
// charge and refund are one CAS loop on a single word {day: 24 bits, used:
// 40 bits} (limits up to 2^40 - 1). Peeks may be stale on return. The state
// is address-free and may live in shared memory.
#ifndef TOLLGATE_CALENDAR_QUOTA_HPP
#define TOLLGATE_CALENDAR_QUOTA_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/detail/identity.hpp>
#include <tollgate/error.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>

TOLLGATE_BEGIN_NAMESPACE

// What a quota admission charged, for refunds. It names the quota object
// that issued it, twice: by its address in the issuing process (two live
// objects of one process never share one, so another live quota's ticket
// is refused for certain, also a ticket of a quota another process built in
// shared memory) and by an identity drawn at construction
// (detail/identity.hpp: never repeated within a process, salted per
// process, so identities two processes draw, n and m of them, meet with
// probability at most (n + m + 1) / 2^64). A ticket of another quota gives
// nothing back: not into one restored from the old one's word
// (import_word), which would otherwise give back units of an admission it
// never counted. What the identity alone tells apart (with that
// probability; for certain when this process drew both): a ticket refunded
// into a quota now at the issuer's address (the issuer destroyed, or its
// region unmapped and another mapped there), a ticket carried to another
// process, and one built field by field with issuer 0 (not checked).
// Move-only: a copy could refund the same units twice. A moved-from ticket
// holds no units, so refunding it gives nothing back.
struct quota_ticket {
  std::uint64_t day = 0;
  std::uint64_t units = 0;
  std::uint64_t quota = 0;     // the issuing quota's identity
  std::uintptr_t issuer = 0;   // the issuing quota's address in this process; 0: not checked

  constexpr quota_ticket() noexcept = default;
  constexpr quota_ticket(std::uint64_t d, std::uint64_t u, std::uint64_t q, std::uintptr_t i = 0) noexcept
      : day(d), units(u), quota(q), issuer(i) {}
  quota_ticket(const quota_ticket&) = delete;
  quota_ticket& operator=(const quota_ticket&) = delete;
  constexpr quota_ticket(quota_ticket&& o) noexcept : day(o.day), units(o.units), quota(o.quota), issuer(o.issuer) {
    o.units = 0;
  }
  constexpr quota_ticket& operator=(quota_ticket&& o) noexcept {
    if (this != &o) {
      day = o.day;
      quota = o.quota;
      issuer = o.issuer;
      units = o.units;
      o.units = 0;
    }
    return *this;
  }
};

namespace detail {
// A new quota identity (detail/identity.hpp); it reaches other threads with
// the quota itself.
inline std::uint64_t next_quota_id() noexcept { return fresh_identity(); }
}  // namespace detail

template <class Clock = system_clock>
class alignas(TOLLGATE_CACHELINE_SIZE) calendar_quota {
 public:
  using clock = Clock;
  static constexpr unsigned used_bits = 40;
  static constexpr std::uint64_t max_limit = (std::uint64_t{1} << used_bits) - 1;
  static constexpr std::int64_t day_ns = 86400LL * 1000000000LL;

  // `utc_offset` is the offset of the zone whose midnight resets the quota
  // (+8 h for China Standard Time); at most +-24 h.
  explicit calendar_quota(std::uint64_t limit, std::chrono::minutes utc_offset = std::chrono::minutes(0)) {
    const errc e = init(limit, utc_offset);
    if (e != errc::ok) detail::fail(e);
  }
  calendar_quota(std::uint64_t limit, std::chrono::minutes utc_offset, errc& ec) noexcept {
    ec = init(limit, utc_offset);
  }
  // On a clock whose readings are not Unix time: `clock_origin` is the Unix
  // time (ns since 1970-01-01Z) at the clock's zero; any value is accepted.
  calendar_quota(std::uint64_t limit, std::chrono::minutes utc_offset, nanoseconds clock_origin) {
    const errc e = init(limit, utc_offset);
    if (e != errc::ok) detail::fail(e);
    origin_ = clock_origin.count();
  }
  calendar_quota(std::uint64_t limit, std::chrono::minutes utc_offset, nanoseconds clock_origin, errc& ec) noexcept {
    ec = init(limit, utc_offset);
    origin_ = clock_origin.count();
  }
  calendar_quota(const calendar_quota&) = delete;
  calendar_quota& operator=(const calendar_quota&) = delete;

  static constexpr errc validate(std::uint64_t limit, std::chrono::minutes utc_offset) noexcept {
    if (limit == 0) return errc::zero_count;
    if (limit > max_limit) return errc::too_large;
    if (utc_offset > std::chrono::hours(24) || utc_offset < -std::chrono::hours(24)) return errc::too_large;
    return errc::ok;
  }

  decision try_acquire(std::uint64_t n, nanoseconds now, quota_ticket& ticket) noexcept {
    ticket = quota_ticket{};
    if (n == 0) return decision::admit();
    const std::uint64_t lim = limit_.load(std::memory_order_relaxed);  // relaxed: a lone value
    if (lim == 0) return decision::refuse(reason::misconfigured);
    if (n > lim) return decision::refuse(reason::exceeds_capacity);
    const std::uint64_t d = day_of(now);
    // acquire/acq_rel: the word is the only shared data, so relaxed would do;
    // acquire/release make a quota usable as a hand-off point at no cost on
    // x86 and keep every RMW ordered with the peeks.
    std::uint64_t w = state_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint64_t wd = w >> used_bits;
      if (d < wd) return decision::wait(wait_until(wd, now), reason::stale_time);
      const std::uint64_t used = d > wd ? 0 : (w & max_limit);
      if (used + n > lim) return decision::wait(wait_until(d + 1, now));
      if (state_.compare_exchange_weak(w, (d << used_bits) | (used + n), std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
        ticket = quota_ticket{d, n, id_, reinterpret_cast<std::uintptr_t>(this)};
        return decision::admit();
      }
    }
  }
  decision try_acquire(std::uint64_t n, nanoseconds now) noexcept {
    quota_ticket t;
    return try_acquire(n, now, t);
  }
  decision try_acquire(std::uint64_t n = 1) noexcept { return try_acquire(n, Clock::now()); }

  // Charges n units unconditionally to the day of `now` (usage known after
  // the fact); saturates at 2^40 - 1. A stale `now` charges the state's day.
  void charge(std::uint64_t n, nanoseconds now) noexcept {
    if (n == 0 || limit_.load(std::memory_order_relaxed) == 0) return;  // relaxed: a lone value
    const std::uint64_t d = day_of(now);
    std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in try_acquire
    for (;;) {
      const std::uint64_t wd = w >> used_bits;
      const std::uint64_t day = d > wd ? d : wd;
      const std::uint64_t used = d > wd ? 0 : (w & max_limit);
      std::uint64_t next = detail::sat_add(used, n);
      if (next > max_limit) next = max_limit;
      // acq_rel/acquire: as in try_acquire.
      if (state_.compare_exchange_weak(w, (day << used_bits) | next, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
        return;
    }
  }

  // Gives back up to n of the ticket's units if its day is still current
  // and the ticket is this quota's (its address and identity, see
  // quota_ticket).
  std::uint64_t refund(quota_ticket& t, std::uint64_t n) noexcept {
    if (n > t.units) n = t.units;
    if (n == 0 || t.quota != id_) return 0;
    if (t.issuer != 0 && t.issuer != reinterpret_cast<std::uintptr_t>(this)) return 0;  // another quota's
    std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in try_acquire
    for (;;) {
      if ((w >> used_bits) != t.day) return 0;  // that day is over
      const std::uint64_t used = w & max_limit;
      const std::uint64_t take = n < used ? n : used;
      // acq_rel/acquire: as in try_acquire.
      if (state_.compare_exchange_weak(w, (t.day << used_bits) | (used - take), std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
        t.units -= n;
        return n;
      }
    }
  }

  std::uint64_t used(nanoseconds now) const noexcept {
    const std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in try_acquire
    return day_of(now) > (w >> used_bits) ? 0 : (w & max_limit);
  }
  std::uint64_t available(nanoseconds now) const noexcept {
    const std::uint64_t lim = limit_.load(std::memory_order_relaxed);  // relaxed: a lone value
    const std::uint64_t u = used(now);
    return u >= lim ? 0 : lim - u;
  }
  decision time_until(std::uint64_t n, nanoseconds now) const noexcept {
    if (n == 0) return decision::admit();
    const std::uint64_t lim = limit_.load(std::memory_order_relaxed);  // relaxed: a lone value
    if (lim == 0) return decision::refuse(reason::misconfigured);
    if (n > lim) return decision::refuse(reason::exceeds_capacity);
    const std::uint64_t d = day_of(now);
    const std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in try_acquire
    const std::uint64_t wd = w >> used_bits;
    if (d < wd) return decision::wait(wait_until(wd, now), reason::stale_time);
    const std::uint64_t u = d > wd ? 0 : (w & max_limit);
    if (u + n > lim) return decision::wait(wait_until(d + 1, now));
    return decision::admit();
  }
  // Time from `now` to the next reset (the next midnight at the offset).
  // Saturates at INT64_MAX (a `now` long before 1970); never negative.
  nanoseconds reset_in(nanoseconds now) const noexcept {
    return nanoseconds(detail::sat_gap(now.count(), day_start(day_of(now) + 1).count()));
  }

  // Snapshot support: the raw state word {day, used} (days are absolute, so
  // it survives restarts as it is), and its inverse for a quota that has
  // admitted nothing yet: tickets of the quota whose word is imported give
  // nothing back here, but this quota's own from before it would.
  std::uint64_t export_word() const noexcept { return state_.load(std::memory_order_acquire); }  // acquire: as in try_acquire
  void import_word(std::uint64_t w) noexcept { state_.store(w, std::memory_order_release); }      // release: publishes it
  // The day `now` falls in, as the state word counts days (since 1970-01-01
  // at the offset, of now + clock_origin; 0 before it): what a restore
  // checks an imported word by.
  std::uint64_t day_at(nanoseconds now) const noexcept { return day_of(now); }

  // Forgets the day and its usage (for recovering from a bogus far-future
  // `now`, see the header). Thread-safe: an acquire racing it is decided
  // before it (and forgotten) or after it.
  void reset() noexcept { state_.store(0, std::memory_order_release); }  // release: as in import_word

  [[nodiscard]] errc set_limit(std::uint64_t limit) noexcept {
    if (limit_.load(std::memory_order_relaxed) == 0) return errc::ok;  // misconfigured stays so
    const errc e = validate(limit, std::chrono::minutes(0));
    if (e == errc::ok) limit_.store(limit, std::memory_order_relaxed);  // relaxed: a lone value
    return e;
  }
  std::uint64_t limit() const noexcept { return limit_.load(std::memory_order_relaxed); }
  std::chrono::minutes utc_offset() const noexcept {
    return std::chrono::duration_cast<std::chrono::minutes>(nanoseconds(offset_));
  }
  nanoseconds clock_origin() const noexcept { return nanoseconds(origin_); }

 private:
  errc init(std::uint64_t limit, std::chrono::minutes off) noexcept {
    const errc e = validate(limit, off);
    if (e != errc::ok) return e;
    offset_ = std::chrono::duration_cast<nanoseconds>(off).count();
    limit_.store(limit, std::memory_order_relaxed);  // relaxed: construction precedes sharing
    id_ = detail::next_quota_id();
    return errc::ok;
  }
  // In 128 bits, without saturating: day_start below inverts it exactly, so
  // the wait to a day's start ends in that day (a05: a day saturated at
  // INT64_MAX here but not there made that wait 1 ns, for ever).
  std::uint64_t day_of(nanoseconds now) const noexcept {
    const detail::i128 local = static_cast<detail::i128>(now.count()) + origin_ + offset_;
    if (local < 0) return 0;
    // A 64-bit division where it fits (every ordinary time): the 128-bit one is a library call.
    if (local <= std::numeric_limits<std::int64_t>::max()) return static_cast<std::uint64_t>(static_cast<std::int64_t>(local) / day_ns);
    return static_cast<std::uint64_t>(local / day_ns);  // < 2^19: INT64_MAX twice over is 213,504 days
  }
  // From `now` to the start of day d, for a refusal: at least 1 ns; INT64_MAX
  // for a day that starts after INT64_MAX (it never comes).
  nanoseconds wait_until(std::uint64_t d, nanoseconds now) const noexcept {
    if (start_of(d) > std::numeric_limits<std::int64_t>::max()) return nanoseconds::max();
    const std::int64_t wait = detail::sat_gap(now.count(), day_start(d).count());
    return nanoseconds(wait > 0 ? wait : 1);
  }
  detail::i128 start_of(std::uint64_t d) const noexcept {
    return static_cast<detail::i128>(d) * day_ns - origin_ - offset_;
  }
  nanoseconds day_start(std::uint64_t d) const noexcept {
    const detail::i128 t = start_of(d);
    constexpr detail::i128 top = std::numeric_limits<std::int64_t>::max(), bottom = std::numeric_limits<std::int64_t>::min();
    return nanoseconds(t > top ? std::numeric_limits<std::int64_t>::max()
                       : t < bottom ? std::numeric_limits<std::int64_t>::min() : static_cast<std::int64_t>(t));
  }

  detail::atomic<std::uint64_t> state_{0};
  detail::atomic<std::uint64_t> limit_{0};  // 0: misconfigured
  std::int64_t offset_ = 0;
  std::int64_t origin_ = 0;  // the Unix time at the clock's zero
  std::uint64_t id_ = 0;     // this quota's identity (see quota_ticket): set by init() only
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_CALENDAR_QUOTA_HPP
