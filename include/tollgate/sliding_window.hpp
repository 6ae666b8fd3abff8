// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// sliding_window.hpp: a strict, lock-free sliding-window counter.
//
// Guarantee. For a limit L per window W: in every half-open window (t - W, t]
// of the supplied timestamps, the units admitted never exceed L, under any
// interleaving of threads. No server that counts "at most L in any W" can
// reject what this admitted (see the compliance tables in docs/server-models.md).
//
// How. Time is cut into slots of width w = ceil(W / K) (K = `Subwindows`,
// default 15). A request at slot s is admitted if the units already admitted
// in slots s-K .. s, plus its own, stay within L. Those K+1 slots cover every
// window (t - W, t] with t in slot s, so the bound holds; the price is that
// the oldest slot counts in full although part of it has left the window.
// Under saturation the window therefore admits about K/(K+1) of L per W
// (15/16 = 93.75 % by default): more sub-windows, more throughput, more
// state. Exactly: a caller that asks continuously gets L per (K+1)*w.
//
// State (fixed size, address-free, shareable between processes): one head
// word {current slot h: 40 bits, units admitted in h: 24 bits} decided by a
// single CAS, and a ring of K+1 words {slot tag: 40 bits, units: 24 bits}
// holding the final counts of the K slots before h, plus one word caching
// their sum for the current head. The thread that moves the head past slot h
// writes h's count into the ring and the new sum into the cache *before* its
// CAS, so any thread that sees the new head also sees both. Hence L (in units) is at
// most 2^24 - 1 = 16,777,215. Larger limits are counted in units of
// u = ceil(L / (2^24 - 1)) tokens: every request is rounded up to whole units
// and L down, so the bound still holds (u = 1 for every Kimi limit; `unit()`
// tells). The 40-bit slot number gives at least 10 years from the origin:
// slots of at least 287,015 ns, so the shortest window is min_window =
// (287,015 - 1) * K + 1 ns, 4,305,211 ns (about 4.3 ms) for the default
// K = 15 and 287,015 ns for K = 1; a shorter one is refused with
// errc::window_too_short. Charges can fill a field: counts saturate at
// 2^24 - 1, which then reads "at least this many". Such a count is never
// refunded from, and a saturated cached sum is not used: decisions and
// retry_after then add up the ring's per-slot counts.
//
// Why this layout (measured in bench/, one thread, same run): one 64-bit word
// of four 12-bit counts is as cheap (0.93x) but caps L at 4,095 with only
// four counters (3/4 of L per W under saturation); a 16-byte CAS alone costs
// 2.6x a one-word CAS and is not lock-free through std::atomic here; coarser
// units fit any L but round every request up. This design reads two words
// and CASes one.
//
// Time going backwards. A `now` in the current head slot or later is exact. A
// `now` in a slot the head has already left cannot be checked (the ring no
// longer holds every window it falls in): it is refused with
// reason::stale_time and retry_after = the time to the head slot's start;
// retry with a fresh clock reading. The Clock overloads re-read the clock.
// The same rule means that one admission or charge at a bogus far-future
// `now` (INT64_MAX, say) moves the head there, and every ordinary `now`
// afterwards is stale (for up to 292 years). The window has not been made
// more permissive, as stated; the way out is `reset()`, which forgets every
// count.
//
// Extreme times. Every function is defined for every `now`: times before the
// origin count as the origin; times past the last of the 2^40 slots count as
// that slot; waits saturate at INT64_MAX and are never negative.
//
// Decisions. n == 0 is admitted and changes nothing. ceil(n/u) > L is
// `never`. A refusal writes nothing; its retry_after is exact: the start of
// the first slot at which the request fits, assuming no other admissions.
//
// Refunds. try_acquire can fill a window_ticket; refund(ticket, n) returns up
// to the ticket's remaining tokens. A refund into a slot that has left the
// window is a no-op (nothing to give back), and so is one into a slot whose
// count is at its ceiling of 2^24 - 1 units (after charge(), say): such a
// count means "at least this many", so no unit of it is provably the
// ticket's, and giving any back could re-open a window that is over its
// limit (the ticket is then left as it was). Concurrent races only ever make
// the ring over-count (the safe side). refund_to_head gives back only while
// the ticket's slot is the head (through the head's release CAS), for callers
// that must know a reader who sees the refund sees what they did before it.
// A ticket of another window, or from before an import, gives nothing back
// (by the issuer's address and identity; window/ticket.hpp states the
// residue).
//
// Live change. set_limit is thread-safe; in any window that spans a change at
// most the larger of the two limits is admitted.
//
// Concurrency contract. All member functions are thread-safe and lock-free.
// try_acquire is one acquire load of the head, one relaxed load of the
// cached sum of the K older slots, and one CAS; moving the head to a new slot
// reads the K ring words and adds a CAS on a ring word and on the cache.
// available/time_until read a snapshot that may be stale on return.
#ifndef TOLLGATE_SLIDING_WINDOW_HPP
#define TOLLGATE_SLIDING_WINDOW_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/error.hpp>
#include <tollgate/rate.hpp>
#include <tollgate/window/ticket.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE


template <class Clock = steady_clock, std::size_t Subwindows = 15>
class alignas(TOLLGATE_CACHELINE_SIZE) sliding_window {
  static_assert(Subwindows >= 1, "a window needs at least one sub-window");
  static_assert(Subwindows <= 4096, "more than 4096 sub-windows makes every admission slow");
  using L = detail::window_limits;
  static constexpr std::uint64_t K = Subwindows;
  static constexpr std::size_t ring_size = Subwindows + 1;

 public:
  using clock = Clock;
  static constexpr std::size_t subwindows = Subwindows;
  // The shortest window this many sub-windows allow (see the header comment).
  static constexpr nanoseconds min_window{static_cast<std::int64_t>((L::min_width_ns - 1) * K + 1)};

  // limit = r.count units per window r.period; origin = Clock::now().
  explicit sliding_window(rate r) : sliding_window(r, Clock::now()) {}
  sliding_window(rate r, nanoseconds origin) {
    const errc e = init(r, origin);
    if (e != errc::ok) detail::fail(e);
  }
  // Never throws: on error sets `ec`; the window then refuses everything.
  sliding_window(rate r, nanoseconds origin, errc& ec) noexcept { ec = init(r, origin); }

  sliding_window(const sliding_window&) = delete;
  sliding_window& operator=(const sliding_window&) = delete;

  static constexpr errc validate(rate r) noexcept {
    if (r.count == 0) return errc::zero_count;
    if (r.period.count() <= 0) return errc::zero_period;
    const std::uint64_t width = detail::ceil_div(static_cast<std::uint64_t>(r.period.count()), K);
    if (width < L::min_width_ns) return errc::window_too_short;
    return errc::ok;
  }

  decision try_acquire(std::uint64_t n, nanoseconds now, window_ticket& ticket) noexcept {
    ticket = window_ticket{};
    if (n == 0) return decision::admit();
    const std::uint64_t u = unit_;
    if (u == 0) return decision::refuse(reason::misconfigured);
    const std::uint64_t lim = limit_.load(std::memory_order_relaxed);  // relaxed: a lone value, any recent one is valid
    const std::uint64_t nu = u == 1 ? n : detail::ceil_div(n, u);
    if (nu > lim) return decision::refuse(reason::exceeds_capacity);
    const std::uint64_t s = slot_at(now);
    // acquire: pairs with the CAS that installed this head (and, through it,
    // with the ring write its author made before that CAS).
    std::uint64_t w = head_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint64_t h = detail::slot_of_word(w);
      const std::uint64_t cur = detail::units_of_word(w);
      if (s < h) return stale(h, now);
      const std::uint64_t used = window_sum(s, h, cur);
      if (used + nu > lim) return decision::wait(wait_for(s, h, cur, lim - nu, now));
      if (s == h) {
        // acq_rel: acquire as for the load above (on failure too); release
        // so a thread that later moves the head past h and reads this word
        // sees nothing older.
        if (head_.compare_exchange_weak(w, detail::pack_slot(h, cur + nu), std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
          ticket = window_ticket{s, n, nu, id_, reinterpret_cast<std::uintptr_t>(this)};
          return decision::admit();
        }
      } else {
        publish_final(h, cur);
        publish_older(s, used);  // slot s is empty: `used` is the sum of s-K .. s-1
        // acq_rel: release publishes the ring write just made to every thread
        // that acquires this head; acquire as above.
        if (head_.compare_exchange_weak(w, detail::pack_slot(s, nu), std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
          ticket = window_ticket{s, n, nu, id_, reinterpret_cast<std::uintptr_t>(this)};
          return decision::admit();
        }
      }
    }
  }
  decision try_acquire(std::uint64_t n, nanoseconds now) noexcept {
    window_ticket t;
    return try_acquire(n, now, t);
  }
  decision try_acquire(std::uint64_t n, window_ticket& ticket) noexcept {
    // A stale reading from this thread's own clock read means another thread
    // read a later time first: read again (bounded) rather than refuse.
    decision d = try_acquire(n, Clock::now(), ticket);
    for (int i = 0; i < 3 && d.why() == reason::stale_time; ++i) d = try_acquire(n, Clock::now(), ticket);
    return d;
  }
  decision try_acquire(std::uint64_t n = 1) noexcept {
    window_ticket t;
    return try_acquire(n, t);
  }

  // Charges n tokens unconditionally (usage learnt after the fact): the
  // window may go over its limit, and later admissions wait until the excess
  // has left it. A stale `now` charges the head slot. Saturates at 2^24 - 1
  // units per slot.
  void charge(std::uint64_t n, nanoseconds now) noexcept;
  void charge(std::uint64_t n) noexcept { charge(n, Clock::now()); }

  // Returns up to n of the ticket's tokens; returns the tokens given back
  // (0 when the ticket's slot has left the window). Updates the ticket.
  std::uint64_t refund(window_ticket& t, std::uint64_t n) noexcept { return refund_impl(t, n, false); }
  // The same, but only while the ticket's slot is still the head slot: a
  // refund that lands, if at all, through the head's release CAS (which a
  // reader acquiring the head then sees with everything stored before it).
  std::uint64_t refund_to_head(window_ticket& t, std::uint64_t n) noexcept { return refund_impl(t, n, true); }

  // Tokens that could be admitted at `now` (peek). A stale `now` is read as
  // the head slot.
  std::uint64_t available(nanoseconds now) const noexcept {
    if (unit_ == 0) return 0;
    const std::uint64_t lim = limit_.load(std::memory_order_relaxed);  // relaxed: as in try_acquire
    const std::uint64_t w = head_.load(std::memory_order_acquire);     // acquire: as in try_acquire
    const std::uint64_t h = detail::slot_of_word(w);
    std::uint64_t s = slot_at(now);
    if (s < h) s = h;
    const std::uint64_t used = window_sum(s, h, detail::units_of_word(w));
    return used >= lim ? 0 : (lim - used) * unit_;
  }
  std::uint64_t available() const noexcept { return available(Clock::now()); }

  // What try_acquire(n, now) would answer, without consuming.
  decision time_until(std::uint64_t n, nanoseconds now) const noexcept {
    if (n == 0) return decision::admit();
    if (unit_ == 0) return decision::refuse(reason::misconfigured);
    const std::uint64_t lim = limit_.load(std::memory_order_relaxed);  // relaxed: as in try_acquire
    const std::uint64_t nu = detail::ceil_div(n, unit_);
    if (nu > lim) return decision::refuse(reason::exceeds_capacity);
    const std::uint64_t w = head_.load(std::memory_order_acquire);  // acquire: as in try_acquire
    const std::uint64_t h = detail::slot_of_word(w);
    const std::uint64_t cur = detail::units_of_word(w);
    const std::uint64_t s = slot_at(now);
    if (s < h) return stale(h, now);
    if (window_sum(s, h, cur) + nu > lim) return decision::wait(wait_for(s, h, cur, lim - nu, now));
    return decision::admit();
  }
  decision time_until(std::uint64_t n = 1) const noexcept { return time_until(n, Clock::now()); }

  // Time from `now` until everything admitted so far has left the window:
  // until the newest slot that still counts something leaves it (zero for a
  // window that counts nothing, however recently its head moved).
  nanoseconds empty_in(nanoseconds now) const noexcept {
    if (unit_ == 0) return nanoseconds(0);
    const std::uint64_t w = head_.load(std::memory_order_acquire);  // acquire: as in try_acquire
    const std::uint64_t h = detail::slot_of_word(w);
    std::uint64_t newest = h;
    if (detail::units_of_word(w) == 0) {
      for (;;) {
        if (newest == 0 || newest + K == h) return nanoseconds(0);  // nothing left in the ring
        --newest;
        if (ring_units(newest) > 0) break;
      }
    }
    return nanoseconds(detail::sat_gap(now.count(), slot_start(newest + K + 1).count()));
  }

  // Snapshot support, by time: every slot still in the window as (time from
  // `now` until the window drops it, units), soonest first. A restarted
  // window given these by import_counts keeps every unit at least that long,
  // whatever its own origin and slot phase. A stale `now` gives longer times
  // (counts stay until the window itself would drop them). The times are at
  // least 1 ns and saturate at INT64_MAX.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> export_counts(nanoseconds now) const {
    return export_counts(now, [](std::uint64_t) { return std::uint64_t{0}; });
  }
  // The same, leaving out `unspent(j)` units of slot j (units a caller
  // counted in advance and has not used: the account's per-thread credit).
  template <class Unspent>
  std::vector<std::pair<std::uint64_t, std::uint64_t>> export_counts(nanoseconds now, Unspent&& unspent) const;

  // The same by age: (age in slots relative to `now`'s slot, units), oldest
  // first. Ages drop where `now` lies in its slot; import_slots has to assume
  // the worst. export_counts keeps it.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> export_slots(nanoseconds now) const {
    return export_slots(now, [](std::uint64_t) { return std::uint64_t{0}; });
  }
  template <class Unspent>
  std::vector<std::pair<std::uint64_t, std::uint64_t>> export_slots(nanoseconds now, Unspent&& unspent) const;

  // The longest time import_counts can keep a count (about the 40-bit slot
  // horizon: at least 10 years); longer times count as this.
  nanoseconds import_horizon() const noexcept;

  // Replaces the window's contents with counts as export_counts gives them
  // (time from `now` until each may leave, units), each kept at least that
  // long: never dropped early (round toward keeping). The window moves its
  // slot grid so that the latest of those times falls on a slot boundary,
  // so a restart at any phase of the old or the new window loses nothing and
  // holds nothing longer than the old window would have (times that did not
  // come from one grid keep some counts up to one slot longer). A time so
  // long that no slot of the window's grid at `now` can hold it makes the
  // window refuse everything (as stale) until it has passed. Units above the
  // 24-bit field saturate; zero times and units are skipped. Not
  // thread-safe: call it before sharing the window (it moves the origin).
  // Tickets from before it, this window's or another's, give nothing back.
  void import_counts(nanoseconds now, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& counts) noexcept;

  // Loads slots by age (export_slots) into a window not shared yet. The
  // position of the old `now` inside its slot is not known, so each count is
  // kept as if it had been at the very start (round toward keeping): until
  // (K + 1 - age) slot widths from `now`. Ages above K have left the window.
  void import_slots(nanoseconds now, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& slots);

  // Forgets every count: the window is as it was built (same origin and
  // limit). For recovering from a bogus far-future `now` (see the header).
  // Not thread-safe: call it while no other thread uses the window.
  void reset() noexcept {
    // relaxed: no other thread may use the window meanwhile (see above); the
    // final release store publishes the cleared ring with the head.
    for (auto& e : ring_) e.store(0, std::memory_order_relaxed);
    older_.store(0, std::memory_order_relaxed);
    head_.store(0, std::memory_order_release);
  }

  // Changes the limit (tokens per window); the window keeps its counts.
  [[nodiscard]] errc set_limit(std::uint64_t tokens) noexcept {
    if (unit_ == 0) return errc::ok;
    if (tokens == 0) return errc::zero_count;
    const std::uint64_t units = tokens / unit_;
    if (units == 0) return errc::zero_count;
    if (units > L::max_units) return errc::too_large;
    limit_.store(units, std::memory_order_relaxed);  // relaxed: a lone value (see try_acquire)
    return errc::ok;
  }

  // The limit in force, in tokens (a multiple of unit()).
  std::uint64_t limit() const noexcept { return limit_.load(std::memory_order_relaxed) * unit_; }
  std::uint64_t unit() const noexcept { return unit_; }
  // The head's slot (a snapshot): a `now` in an earlier slot is stale.
  std::uint64_t head_slot() const noexcept {
    // relaxed: a lone value, read for a decision that needs no count: by
    // coherence it is this thread's own last move or a later one, and every
    // move that happens before the call; a racing move it misses orders the
    // caller's decision before that move.
    return detail::slot_of_word(head_.load(std::memory_order_relaxed));
  }
  nanoseconds window() const noexcept { return nanoseconds(window_); }
  nanoseconds slot_width() const noexcept { return nanoseconds(width_); }
  nanoseconds origin() const noexcept { return nanoseconds(origin_); }

 private:
  // Calls f(j, age, units) for every slot j still in the window at `now`,
  // oldest first, with `unspent(j)` units left out (slots left empty skipped).
  template <class Unspent, class F>
  void visit_slots(nanoseconds now, Unspent& unspent, F&& f) const;

  std::uint64_t refund_impl(window_ticket& t, std::uint64_t n, bool head_only) noexcept;

  errc init(rate r, nanoseconds origin) noexcept {
    origin_ = origin.count();
    id_ = detail::next_window_id();
    const errc e = validate(r);
    if (e != errc::ok) return e;
    window_ = r.period.count();
    width_ = detail::ceil_div(static_cast<std::uint64_t>(r.period.count()), K);
    const std::uint64_t u = r.count <= L::max_units ? 1 : detail::ceil_div(r.count, L::max_units);
    // relaxed: construction precedes sharing.
    limit_.store(r.count / u, std::memory_order_relaxed);
    unit_ = u;
    return errc::ok;
  }

  std::uint64_t slot_at(nanoseconds now) const noexcept {
    const std::uint64_t s = detail::positive_difference(now.count(), origin_) / width_;
    return s > L::max_slot ? L::max_slot : s;
  }
  nanoseconds slot_start(std::uint64_t s) const noexcept {
    return nanoseconds(detail::sat_offset(origin_, detail::sat_mul(s, width_)));
  }

  // A `now` in a slot before the head h: retry once h has started.
  decision stale(std::uint64_t h, nanoseconds now) const noexcept {
    const std::int64_t wait = detail::sat_gap(now.count(), slot_start(h).count());
    return decision::wait(nanoseconds(wait > 0 ? wait : 1), reason::stale_time);
  }

  // Units of slot j as far as the ring knows (j below the head h).
  std::uint64_t ring_units(std::uint64_t j) const noexcept {
    // relaxed: the acquire load of the head that the caller made already
    // made every final count up to h visible; a newer value is only ever a
    // refund (smaller) or an over-count (larger), both safe to see or miss.
    const std::uint64_t r = ring_[j % ring_size].load(std::memory_order_relaxed);
    return detail::slot_of_word(r) == j ? detail::units_of_word(r) : 0;
  }

  // Units admitted in the K slots before head h. The mover that installed h
  // cached that sum in `older_`; the ring is the fallback when the cache
  // already belongs to a later head, or is saturated (then it is only a
  // lower bound of the sum).
  std::uint64_t older_of(std::uint64_t h) const noexcept {
    // relaxed: written before the release CAS that installed head h, which
    // the caller acquired; a refund's later decrement is safe to see or miss.
    const std::uint64_t c = older_.load(std::memory_order_relaxed);
    if (detail::slot_of_word(c) == h && detail::units_of_word(c) != L::max_units) return detail::units_of_word(c);
    std::uint64_t sum = 0;
    for (std::uint64_t j = h >= K ? h - K : 0; j < h; ++j) sum += ring_units(j);
    return sum;
  }

  // Units admitted in slots s-K .. s (s >= h), given head h holding cur.
  std::uint64_t window_sum(std::uint64_t s, std::uint64_t h, std::uint64_t cur) const noexcept {
    if (s == h) return cur + older_of(h);
    const std::uint64_t lo = s >= K ? s - K : 0;
    if (h < lo) return 0;
    std::uint64_t sum = cur;
    for (std::uint64_t j = lo; j < h; ++j) sum += ring_units(j);
    return sum;
  }

  // Time from `now` until the first slot s' > s whose window (s'-K .. s')
  // holds at most `room` units, slots after h being empty. Summed from the
  // ring's per-slot counts (s' > h), never from the cached sum: a saturated
  // cache is below the real sum, and taking real counts off it ends the wait
  // too early.
  nanoseconds wait_for(std::uint64_t s, std::uint64_t h, std::uint64_t cur, std::uint64_t room,
                       nanoseconds now) const noexcept {
    std::uint64_t target = s + 1;
    std::uint64_t lo = target >= K ? target - K : 0;
    std::uint64_t sum = window_sum(target, h, cur);
    while (sum > room && lo <= h) {
      sum -= lo == h ? cur : ring_units(lo);
      ++lo;
      target = lo + K;  // the first slot whose window starts at lo
    }
    const std::int64_t wait = detail::sat_gap(now.count(), slot_start(target).count());
    return nanoseconds(wait > 0 ? wait : 1);
  }

  // Records h's final count in the ring before the head leaves h. Only ever
  // raises the stored count for slot h: racing movers publish counts that are
  // at most the final one, and the winner's is the final one. A mover that
  // stalled after reading head h may resume after the head has gone K + 1 or
  // more slots on: h's entry then holds a newer, live slot (h left every
  // window that slot is in), and overwriting it would erase that slot's
  // count. Such a mover writes nothing, and its head CAS then fails.
  void publish_final(std::uint64_t h, std::uint64_t cur) noexcept {
    detail::atomic<std::uint64_t>& e = ring_[h % ring_size];
    // relaxed: ordered before the head CAS that follows, whose release
    // publishes it.
    std::uint64_t r = e.load(std::memory_order_relaxed);
    for (;;) {
      const std::uint64_t tag = detail::slot_of_word(r);
      if (tag > h || (tag == h && detail::units_of_word(r) >= cur)) return;
      // relaxed: as above; the following release CAS on the head publishes it.
      if (e.compare_exchange_weak(r, detail::pack_slot(h, cur), std::memory_order_relaxed,
                                  std::memory_order_relaxed))
        return;
    }
  }

  // Caches the sum of the K slots before new head s. Racing movers to s
  // computed it from the same final counts, except that a loser may have seen
  // a smaller count for the old head: keeping the largest is never too low.
  void publish_older(std::uint64_t s, std::uint64_t sum) noexcept {
    // After charges a sum can pass the 24-bit field: saturating keeps it at
    // or above any limit, so it still refuses everything it must.
    if (sum > L::max_units) sum = L::max_units;
    // relaxed: ordered before the head CAS that follows, whose release
    // publishes it.
    std::uint64_t c = older_.load(std::memory_order_relaxed);
    for (;;) {
      const std::uint64_t tag = detail::slot_of_word(c);
      if (tag > s || (tag == s && detail::units_of_word(c) >= sum)) return;
      // relaxed: as above.
      if (older_.compare_exchange_weak(c, detail::pack_slot(s, sum), std::memory_order_relaxed,
                                       std::memory_order_relaxed))
        return;
    }
  }

  detail::atomic<std::uint64_t> head_{0};
  detail::atomic<std::uint64_t> older_{0};  // {head slot: 40 bits, units in the K slots before it: 24 bits}
  detail::atomic<std::uint64_t> limit_{0};
  std::uint64_t unit_ = 0;  // 0: misconfigured
  std::uint64_t width_ = 1;
  std::int64_t window_ = 0;
  std::int64_t origin_ = 0;
  std::uint64_t id_ = 0;  // this window's identity (window/ticket.hpp): set by init() and the imports only
  detail::atomic<std::uint64_t> ring_[ring_size] = {};

  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "tollgate needs lock-free 64-bit atomics");
};

TOLLGATE_END_NAMESPACE

// Definitions of the corrections after the fact (charges, refunds) and of
// the snapshot support.
#include <tollgate/window/correct.hpp>
#include <tollgate/window/snapshot.hpp>

#endif  // TOLLGATE_SLIDING_WINDOW_HPP
