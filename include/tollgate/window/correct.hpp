// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// window/correct.hpp: the strict window's corrections after the fact:
// charging usage learnt later (charge) and giving back what a ticket
// charged (refund, refund_to_head).
//
// Contract (each function's own is with its declaration, sliding_window.hpp).
// A charge may take the window over its limit; later admissions then wait
// until the excess has left it. A refund gives back at most what its ticket
// still holds, and nothing once the ticket's slot has left the window or its
// count has saturated (such a count means "at least this many": no unit of
// it is provably the ticket's). Concurrency: lock-free CASes on the head
// (acq_rel, as try_acquire's) and, for refunds into older slots, a release
// CAS on one ring word (for the snapshot export, which acquires it) and a
// relaxed one on the cached sum (lone counters: a reader that misses a
// decrement over-counts, the safe side). Included by
// sliding_window.hpp after the class; including it alone includes that first.
#ifndef TOLLGATE_WINDOW_CORRECT_HPP
#define TOLLGATE_WINDOW_CORRECT_HPP

#include <tollgate/sliding_window.hpp>
#include <tollgate/config.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/atomic.hpp>

#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, std::size_t Subwindows>
inline void sliding_window<Clock, Subwindows>::charge(std::uint64_t n, nanoseconds now) noexcept {
  if (n == 0 || unit_ == 0) return;
  const std::uint64_t nu = unit_ == 1 ? n : detail::ceil_div(n, unit_);
  const std::uint64_t s = slot_at(now);
  std::uint64_t w = head_.load(std::memory_order_acquire);  // acquire: as in try_acquire
  for (;;) {
    const std::uint64_t h = detail::slot_of_word(w);
    const std::uint64_t cur = detail::units_of_word(w);
    if (s <= h) {
      const std::uint64_t next = cur + nu > L::max_units || cur + nu < cur ? L::max_units : cur + nu;
      // acq_rel/acquire: as in try_acquire.
      if (head_.compare_exchange_weak(w, detail::pack_slot(h, next), std::memory_order_acq_rel,
                                      std::memory_order_acquire))
        return;
    } else {
      publish_final(h, cur);
      publish_older(s, window_sum(s, h, cur));
      // acq_rel/acquire: as in try_acquire (moving the head).
      if (head_.compare_exchange_weak(w, detail::pack_slot(s, nu > L::max_units ? L::max_units : nu),
                                      std::memory_order_acq_rel, std::memory_order_acquire))
        return;
    }
  }
}

template <class Clock, std::size_t Subwindows>
inline std::uint64_t sliding_window<Clock, Subwindows>::refund_impl(window_ticket& t, std::uint64_t n, bool head_only) noexcept {
  if (n > t.tokens) n = t.tokens;
  if (n == 0 || unit_ == 0 || (t.window != 0 && t.window != id_)) return 0;  // another window's (ticket.hpp)
  if (t.issuer != 0 && t.issuer != reinterpret_cast<std::uintptr_t>(this)) return 0;  // the same
  const std::uint64_t keep_units = detail::ceil_div(t.tokens - n, unit_);
  const std::uint64_t back = t.units - keep_units;
  std::uint64_t w = head_.load(std::memory_order_acquire);  // acquire: as in try_acquire
  for (;;) {
    const std::uint64_t h = detail::slot_of_word(w);
    if (t.slot == h) {
      const std::uint64_t cur = detail::units_of_word(w);
      if (cur == L::max_units) return 0;  // saturated: at least this much, nothing provably ours to give back
      const std::uint64_t take = back < cur ? back : cur;
      // acq_rel/acquire: as in try_acquire.
      if (head_.compare_exchange_weak(w, detail::pack_slot(h, cur - take), std::memory_order_acq_rel,
                                      std::memory_order_acquire))
        break;
      continue;
    }
    if (head_only || t.slot > h || t.slot + K < h) return 0;  // not ours, or out of the window: nothing to give back
    detail::atomic<std::uint64_t>& e = ring_[t.slot % ring_size];
    // relaxed: the ring word carries only itself; the head CAS that moved
    // past t.slot already published its count, and we read that head above.
    std::uint64_t r = e.load(std::memory_order_relaxed);
    for (;;) {
      if (detail::slot_of_word(r) != t.slot) return 0;  // overwritten: slot left the ring
      const std::uint64_t cnt = detail::units_of_word(r);
      if (cnt == L::max_units) return 0;  // saturated: as for the head
      const std::uint64_t take = back < cnt ? back : cnt;
      // release: pairs with the snapshot export's acquire load of the ring
      // word (window/snapshot.hpp), so an export that sees this decrement
      // also sees what the refunder stored before it (the account's credit
      // zeroes its line first). Else a lone counter (failure relaxed):
      // readers that miss the decrement over-count.
      if (e.compare_exchange_weak(r, detail::pack_slot(t.slot, cnt - take), std::memory_order_release,
                                  std::memory_order_relaxed)) {
        // The cached sum for head h was computed before h was installed,
        // hence before this decrement: take the same units off it. A cache
        // for a later head was computed from the ring, with or without this
        // decrement: leave it (too high is safe, twice is not). A saturated
        // cache is only a lower bound of the ring's sum (older_of reads the
        // ring then): taking units off it would make it look exact.
        std::uint64_t c = older_.load(std::memory_order_relaxed);  // relaxed: as in older_of
        while (detail::slot_of_word(c) == h && detail::units_of_word(c) != L::max_units) {
          const std::uint64_t u = detail::units_of_word(c);
          const std::uint64_t off = take < u ? take : u;
          // relaxed: a lone cached sum, as in publish_older.
          if (older_.compare_exchange_weak(c, detail::pack_slot(h, u - off), std::memory_order_relaxed,
                                           std::memory_order_relaxed))
            break;
        }
        break;
      }
    }
    break;
  }
  t.tokens -= n;
  t.units = keep_units;
  return n;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_WINDOW_CORRECT_HPP
