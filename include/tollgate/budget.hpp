// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// budget.hpp: a lock-free spending limit with reserve -> settle.
//
// Guarantee. Reservations are admitted only while reserved + settled stays
// within the limit, so as long as every call settles at or below what it
// reserved (reserve the worst case: worst_case_cost), the settled total never
// exceeds the limit, under any number of threads. A call that costs more than
// it reserved is still recorded (the money is spent) and reported as an
// overspend by settle.
//
// Concurrency contract. All member functions are thread-safe and lock-free:
// reserve is one CAS loop, settle one saturating CAS loop on the committed
// total and one on the spent total. remaining/spent may be stale on return. A reservation is
// a plain value; settle it exactly once (settle marks it settled, a second
// settle does nothing). A reservation never settled keeps its money reserved:
// the safe side.
//
// Zero. reserve() of zero (or less) is always admitted, even over an
// overspent or saturated budget: it holds nothing, and a call whose worst
// case is free cannot spend (an account's free requests go through).
//
// Saturation. Totals are 64-bit nano-units (about 9.2 billion units of the
// currency); any limit up to money::max() works, and totals that reach it
// exactly (reservations summing to a limit of money::max()) are ordinary
// totals that shrink back when released. Settling usage whose sum passes it
// (absurd amounts, e.g. two settles of INT64_MAX nano-units) does not wrap:
// `saturated()` turns true for good (a mark no sum can reach: the committed
// total's sign bit), remaining() is zero, spent() sticks at the maximum, and
// every later reserve above zero is refused with `saturated` set in the
// reservation (and `missing` at the maximum). Only a new budget (or
// import_totals) clears it: a count that overflowed cannot be trusted to
// shrink back. export_totals reports a saturated committed total as the
// maximum, which refuses everything above zero when imported.
//
// Placement. The state (two lock-free atomic totals and a limit written once
// before sharing) is address-free: a budget may live in memory shared
// between processes (shared_region.hpp). Reservations are plain values a
// process keeps; one held by a process that dies is never settled, so its
// money stays committed: kept as spent.
#ifndef TOLLGATE_BUDGET_HPP
#define TOLLGATE_BUDGET_HPP

#include <tollgate/config.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/error.hpp>
#include <tollgate/money.hpp>

#include <atomic>
#include <cstdint>
#include <limits>
#include <utility>

TOLLGATE_BEGIN_NAMESPACE

template <class C>
struct budget_reservation {
  money<C> amount;    // what is held
  money<C> missing;   // when refused: how much more budget it would have needed
  bool admitted = false;
  bool settled = false;
  bool saturated = false;  // refused because the budget's totals overflowed (see budget)
  constexpr explicit operator bool() const noexcept { return admitted; }
};

template <class C>
class alignas(TOLLGATE_CACHELINE_SIZE) budget {
 public:
  explicit budget(money<C> limit) {
    if (limit.nanos() <= 0) detail::fail(errc::zero_count);
    limit_ = limit.nanos();
  }
  budget(money<C> limit, errc& ec) noexcept {
    ec = limit.nanos() <= 0 ? errc::zero_count : errc::ok;
    limit_ = ec == errc::ok ? limit.nanos() : 0;
  }
  budget(const budget&) = delete;
  budget& operator=(const budget&) = delete;

  // Holds `amount` if it fits; otherwise says how much is missing.
  budget_reservation<C> reserve(money<C> amount) noexcept {
    budget_reservation<C> r;
    if (amount.nanos() <= 0) {  // holds nothing: admitted whatever the totals
      r.admitted = true;
      return r;
    }
    // acquire/acq_rel: the committed total is the only shared data; acquire
    // and release make a budget usable as a hand-off point and cost nothing on
    // x86. Every update is an RMW, so none is lost.
    std::int64_t c = committed_.load(std::memory_order_acquire);
    for (;;) {
      if (c < 0) {  // saturated
        r.amount = amount;
        r.missing = money<C>::from_nanos(std::numeric_limits<std::int64_t>::max());
        r.saturated = true;
        return r;
      }
      std::int64_t next = 0;
      if (__builtin_add_overflow(c, amount.nanos(), &next) || next > limit_) {
        r.amount = amount;
        // c + amount - limit, saturating: only reported, never stored.
        std::int64_t miss = 0;
        if (__builtin_sub_overflow(c, limit_, &miss) || __builtin_add_overflow(miss, amount.nanos(), &miss))
          miss = std::numeric_limits<std::int64_t>::max();
        r.missing = money<C>::from_nanos(miss);
        return r;
      }
      if (committed_.compare_exchange_weak(c, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
        r.amount = amount;
        r.admitted = true;
        return r;
      }
    }
  }

  // Records the actual cost of a reserved call and frees the rest of the
  // reservation. Returns reserved - actual: negative is an overspend.
  money<C> settle(budget_reservation<C>& r, money<C> actual) noexcept {
    if (!r.admitted || r.settled) return money<C>();
    r.settled = true;
    if (actual.nanos() < 0) actual = money<C>();
    // Both amounts are >= 0, so the delta cannot overflow; the totals can.
    sat_add(committed_, actual.nanos() - r.amount.nanos(), std::memory_order_acq_rel);  // acq_rel: as in reserve
    add_spent(actual.nanos());
    return money<C>::from_nanos(r.amount.nanos() - actual.nanos());
  }
  // Gives the whole reservation back (the call was not billed, e.g. a 429).
  void release(budget_reservation<C>& r) noexcept { (void)settle(r, money<C>()); }

  // Snapshot support: reserved + settled, and settled, in nano-units; and
  // their inverse for a budget not yet shared.
  std::pair<std::int64_t, std::int64_t> export_totals() const noexcept {
    const std::int64_t c = committed_.load(std::memory_order_acquire);  // acquire: as in remaining
    return {c < 0 ? std::numeric_limits<std::int64_t>::max() : c, spent_.load(std::memory_order_relaxed)};  // relaxed: a statistic
  }
  // Negative totals count as zero.
  void import_totals(std::int64_t committed, std::int64_t spent) noexcept {
    spent_.store(spent < 0 ? 0 : spent, std::memory_order_relaxed);               // relaxed: a statistic
    committed_.store(committed < 0 ? 0 : committed, std::memory_order_release);  // release: as in reserve
  }

  money<C> limit() const noexcept { return money<C>::from_nanos(limit_); }
  // Limit minus everything reserved or settled (never negative).
  money<C> remaining() const noexcept {
    const std::int64_t c = committed_.load(std::memory_order_acquire);  // acquire: as in reserve
    return money<C>::from_nanos(c < 0 || c >= limit_ ? 0 : limit_ - c);
  }
  money<C> spent() const noexcept { return money<C>::from_nanos(spent_.load(std::memory_order_relaxed)); }
  // True once a settle overflowed the totals: the budget then refuses
  // everything (see the header).
  bool saturated() const noexcept {
    return committed_.load(std::memory_order_acquire) < 0;  // acquire: as in reserve
  }

 private:
  // The saturation mark: committed totals are never negative otherwise (a
  // settle gives back at most what its reservation added).
  static constexpr std::int64_t sticky = std::numeric_limits<std::int64_t>::min();

  // t += d; a sum past INT64_MAX sets the mark, which then sticks (a delta of
  // any sign leaves it there; a03: the maximum itself had been the mark, so a
  // budget of money::max() fully reserved stuck). One CAS loop: lock-free,
  // and no update is lost.
  static void sat_add(detail::atomic<std::int64_t>& t, std::int64_t d, std::memory_order order) noexcept {
    // relaxed load and failure order: the loop only recomputes from the
    // value; the successful CAS carries `order` (the caller's pairing).
    std::int64_t c = t.load(std::memory_order_relaxed);
    for (;;) {
      std::int64_t next = 0;
      if (c < 0) return;
      if (__builtin_add_overflow(c, d, &next)) next = sticky;  // only upwards: c >= 0
      else if (next < 0) next = 0;  // more given back than held: only after import_totals under leases
      if (t.compare_exchange_weak(c, next, order, std::memory_order_relaxed)) return;
    }
  }
  // spent += d (d >= 0), sticking at INT64_MAX.
  void add_spent(std::int64_t d) noexcept {
    // relaxed: a statistic; the loop only recomputes from the value.
    std::int64_t c = spent_.load(std::memory_order_relaxed);
    for (;;) {
      std::int64_t next = 0;
      if (__builtin_add_overflow(c, d, &next)) next = std::numeric_limits<std::int64_t>::max();
      if (next == c || spent_.compare_exchange_weak(c, next, std::memory_order_relaxed, std::memory_order_relaxed)) return;
    }
  }

  detail::atomic<std::int64_t> committed_{0};  // reserved + settled, in nano-units
  detail::atomic<std::int64_t> spent_{0};
  std::int64_t limit_ = 0;  // written once before sharing
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_BUDGET_HPP
