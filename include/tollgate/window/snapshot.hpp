// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// window/snapshot.hpp: the strict window's counts taken out and put back,
// for snapshots (the account's, account/snapshot.hpp) and restarts.
//
// Contract (each function's own is with its declaration, sliding_window.hpp).
// export_counts lists every slot still in the window as (time from `now`
// until the window drops it, units), soonest first; import_counts puts such
// a list into a window not yet shared, keeping every unit at least that
// long, whatever the new window's origin and slot phase: a restart never lets
// a count leave early. The exports read the window as it runs (a snapshot
// that may be stale on return); the imports are not thread-safe (they move
// the origin and rewrite the ring). Included by sliding_window.hpp after the
// class; including it alone includes that first.
#ifndef TOLLGATE_WINDOW_SNAPSHOT_HPP
#define TOLLGATE_WINDOW_SNAPSHOT_HPP

#include <tollgate/sliding_window.hpp>
#include <tollgate/config.hpp>
#include <tollgate/detail/arith.hpp>

#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, std::size_t Subwindows>
template <class Unspent>
inline std::vector<std::pair<std::uint64_t, std::uint64_t>> sliding_window<Clock, Subwindows>::export_counts(nanoseconds now, Unspent&& unspent) const {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  visit_slots(now, unspent, [&](std::uint64_t j, std::uint64_t, std::uint64_t u) {
    // Slot j leaves the window when slot j + K + 1 begins.
    const detail::i128 left = static_cast<detail::i128>(slot_start(j + K + 1).count()) - now.count();
    const detail::i128 top = std::numeric_limits<std::int64_t>::max();
    out.emplace_back(static_cast<std::uint64_t>(left < 1 ? 1 : left > top ? top : left), u);
  });
  return out;
}

template <class Clock, std::size_t Subwindows>
template <class Unspent>
inline std::vector<std::pair<std::uint64_t, std::uint64_t>> sliding_window<Clock, Subwindows>::export_slots(nanoseconds now, Unspent&& unspent) const {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  visit_slots(now, unspent, [&](std::uint64_t, std::uint64_t age, std::uint64_t u) { out.emplace_back(age, u); });
  return out;
}

template <class Clock, std::size_t Subwindows>
inline nanoseconds sliding_window<Clock, Subwindows>::import_horizon() const noexcept {
  const std::uint64_t t = detail::sat_mul(L::max_slot - 2 * K - 4, width_);
  return nanoseconds(t > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
                         ? std::numeric_limits<std::int64_t>::max()
                         : static_cast<std::int64_t>(t));
}

template <class Clock, std::size_t Subwindows>
inline void sliding_window<Clock, Subwindows>::import_counts(nanoseconds now, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& counts) noexcept {
  if (unit_ == 0) return;
  id_ = detail::next_window_id();  // the ring is rewritten: no earlier ticket names it (window/ticket.hpp)
  using detail::i128;
  const std::uint64_t horizon = static_cast<std::uint64_t>(import_horizon().count());
  std::uint64_t longest = 0;
  for (const auto& e : counts)
    if (e.second > 0 && e.first > longest) longest = e.first > horizon ? horizon : e.first;
  // relaxed (all stores below but the head's): not shared yet; the head's
  // release store publishes them to acquirers anyway.
  for (auto& r : ring_) r.store(0, std::memory_order_relaxed);
  if (longest == 0) {
    older_.store(0, std::memory_order_relaxed);
    head_.store(0, std::memory_order_release);  // release: as below
    return;
  }
  // The origin: K + 1 slots (or as many as fit above INT64_MIN) before the
  // slot holding `now`, with `now + longest` on a slot boundary.
  const i128 w = static_cast<i128>(width_);
  const i128 phase = (w - static_cast<i128>(longest) % w) % w;
  i128 o = static_cast<i128>(now.count()) - phase - static_cast<i128>(K + 1) * w;
  const i128 bottom = std::numeric_limits<std::int64_t>::min();
  if (o < bottom) o += (bottom - o + w - 1) / w * w;
  origin_ = static_cast<std::int64_t>(o);
  // The earliest slot whose end of life (the start of slot j + K + 1) is at
  // or after now + t: any later slot keeps the units too.
  auto slot_for = [&](std::uint64_t t) -> std::uint64_t {
    if (t > horizon) t = horizon;
    const i128 a = static_cast<i128>(now.count()) + static_cast<i128>(t) - o;
    if (a <= 0) return 0;
    const i128 j = (a + w - 1) / w - static_cast<i128>(K + 1);
    return j < 0 ? 0 : static_cast<std::uint64_t>(j);
  };
  std::uint64_t head = slot_at(now);
  for (const auto& e : counts)
    if (e.second > 0 && e.first > 0 && slot_for(e.first) > head) head = slot_for(e.first);
  std::uint64_t cur = 0, older = 0;
  for (const auto& e : counts) {
    if (e.second == 0 || e.first == 0) continue;
    const std::uint64_t j = slot_for(e.first);
    // Below head - K only when the head is ahead of `now`: such a slot
    // leaves the window before the head's slot starts, and until then the
    // window refuses everything.
    if (j + K < head) continue;
    const std::uint64_t u = e.second > L::max_units ? L::max_units : e.second;
    if (j == head) {
      cur = cur + u > L::max_units ? L::max_units : cur + u;
      continue;
    }
    detail::atomic<std::uint64_t>& r = ring_[j % ring_size];
    const std::uint64_t was = r.load(std::memory_order_relaxed);
    const std::uint64_t had = detail::slot_of_word(was) == j ? detail::units_of_word(was) : 0;
    r.store(detail::pack_slot(j, had + u > L::max_units ? L::max_units : had + u), std::memory_order_relaxed);
    older = detail::sat_add(older, u);
  }
  older_.store(detail::pack_slot(head, older > L::max_units ? L::max_units : older), std::memory_order_relaxed);
  head_.store(detail::pack_slot(head, cur), std::memory_order_release);  // release: publishes the ring to acquirers
}

template <class Clock, std::size_t Subwindows>
inline void sliding_window<Clock, Subwindows>::import_slots(nanoseconds now, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& slots) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> counts;
  for (const auto& e : slots)
    if (e.first <= K) counts.emplace_back(detail::sat_mul(K + 1 - e.first, width_), e.second);
  import_counts(now, counts);
}

template <class Clock, std::size_t Subwindows>
template <class Unspent, class F>
inline void sliding_window<Clock, Subwindows>::visit_slots(nanoseconds now, Unspent& unspent, F&& f) const {
  if (unit_ == 0) return;
  const std::uint64_t w = head_.load(std::memory_order_acquire);  // acquire: as in try_acquire
  const std::uint64_t h = detail::slot_of_word(w);
  std::uint64_t s = slot_at(now);
  if (s < h) s = h;
  auto put = [&](std::uint64_t j, std::uint64_t u) {
    const std::uint64_t off = unspent(j);
    if (u > off) f(j, s - j, u - off);
  };
  for (std::uint64_t j = (h >= K ? h - K : 0); j < h; ++j) {
    if (j + K < s) continue;
    // acquire: pairs with a ring refund's release CAS (window/correct.hpp),
    // so `unspent(j)`, read after it, sees what the refunder stored before
    // the refund (a unit is then left out once at most).
    const std::uint64_t r = ring_[j % ring_size].load(std::memory_order_acquire);
    put(j, detail::slot_of_word(r) == j ? detail::units_of_word(r) : 0);
  }
  if (h + K >= s) put(h, detail::units_of_word(w));
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_WINDOW_SNAPSHOT_HPP
