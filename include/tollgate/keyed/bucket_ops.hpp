// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/bucket_ops.hpp: keyed_buckets' side of the entry protocol of
// keyed/claim.hpp — when a bucket may be reclaimed, how a claimed one
// starts, refunds into it, and the peeks. Included by keyed_buckets.hpp
// after the class, whose header states the contract and the bound.
#ifndef TOLLGATE_KEYED_BUCKET_OPS_HPP
#define TOLLGATE_KEYED_BUCKET_OPS_HPP

#include <tollgate/keyed_buckets.hpp>

TOLLGATE_BEGIN_NAMESPACE

// Gives back what the ticket rule allows into the entry the ticket charged
// (keyed_buckets::refund states the rule).
template <class Clock, class Hash>
std::uint64_t keyed_buckets<Clock, Hash>::refund_hash(std::uint64_t h, keyed_ticket& t, std::uint64_t n,
                                                       nanoseconds now) noexcept {
  if (n > t.units) n = t.units;
  if (n == 0 || t.hash != h || t.table != id_ || t.cls >= params_.size()) return 0;  // id_: see restore()
  std::size_t slot = 0, cls = 0;
  if (!slots_.pin(h, slot, cls)) return 0;
  std::uint64_t got = 0;
  entry& e = slots_[slot];
  // relaxed: as in acquire_hash(); another incarnation of the key (or of
  // the entry) has another slot or claim generation.
  if (cls == t.cls && slot == t.slot && e.claim.load(std::memory_order_relaxed) == t.claim) {
    const detail::gcra_params& p = params_[cls];
    const std::uint64_t now_t = ticks(now, p);
    detail::atomic<std::uint64_t>& tat = e.s.tat;
    std::uint64_t w = tat.load(std::memory_order_relaxed);  // relaxed: as in admit()
    for (;;) {
      if (w <= now_t || t.end <= now_t) break;  // full at `now`, or its intervals are behind
      std::uint64_t cap = detail::sat_mul(n, p.interval);
      if (t.end - now_t < cap) cap = t.end - now_t;
      if (w - now_t < cap) cap = w - now_t;
      const std::uint64_t k = cap / p.interval;
      if (k == 0) break;
      // relaxed / relaxed: as in admit().
      if (tat.compare_exchange_weak(w, w - k * p.interval, std::memory_order_relaxed, std::memory_order_relaxed)) {
        got = k;
        t.end -= k * p.interval;
        break;
      }
    }
  }
  unpin(e);
  t.units -= got;
  return got;
}

// A bucket entry is reusable when it is full at the claimer's `now` (TAT
// not after it) or past its class's horizon (it refuses everything there,
// as a fresh one does); otherwise it notes when it will be (`soonest`, ns).
// A claimed bucket starts with its TAT at the latest time any claim has
// seen (keyed/claim.hpp says why that loses nothing owed).
template <class Clock, class Hash>
detail::claim_outcome keyed_buckets<Clock, Hash>::claim(std::uint64_t h, std::size_t cls, nanoseconds now,
                                                        std::size_t& slot, std::uint64_t& soonest,
                                                        bool& known) noexcept {
  const std::uint64_t since = detail::positive_difference(now.count(), origin_);
  auto reusable = [&](entry& e, std::size_t c) {
    const detail::gcra_params& p = params_[c];
    // acquire: pairs with the unpins (release) that precede the control
    // word the claim read with no pins (keyed/claim.hpp).
    const std::uint64_t tat = e.s.tat.load(std::memory_order_acquire);
    const std::uint64_t now_t = ticks(now, p);
    if (tat <= now_t || past_t(now_t, p)) return true;
    // Full when its TAT is reached, or once past its horizon.
    std::uint64_t d = static_cast<std::uint64_t>(ticks_to_ns(tat - now_t, p).count());
    const std::uint64_t end = static_cast<std::uint64_t>(detail::gcra_horizon_ns(p)) + 1 - since;  // > 0: not past
    if (end < d) d = end;
    if (d < soonest) soonest = d;
    known = true;
    return false;
  };
  auto start = [&](entry& e) {
    const std::uint64_t begin = detail::sat_mul(slots_.start_time(), params_[cls].scale);
    // relaxed: published by the publish CAS (seq_cst, a release).
    e.s.tat.store(begin > L::max_ticks ? L::max_ticks : begin, std::memory_order_relaxed);
  };
  return slots_.claim(h, cls, since, slot, reusable, start);
}

// Reads the key's TAT and class without pinning.
template <class Clock, class Hash>
bool keyed_buckets<Clock, Hash>::peek_tat(std::uint64_t h, std::uint64_t* tat, std::size_t* cls) const noexcept {
  std::size_t c = 0;
  const entry* e = slots_.peek(h, c);
  if (e == nullptr) return false;
  if (tat != nullptr) *tat = e->s.tat.load(std::memory_order_relaxed);  // relaxed: a peek
  if (cls != nullptr) *cls = c;
  return true;
}

template <class Clock, class Hash>
std::uint64_t keyed_buckets<Clock, Hash>::available_hash(std::uint64_t h, std::size_t cls,
                                                         nanoseconds now) const noexcept {
  if (cls >= params_.size()) return 0;
  std::uint64_t tat = 0;
  std::size_t c = cls;
  if (!peek_tat(h, &tat, &c)) return past(now, params_[cls]) ? 0 : params_[cls].burst;
  const detail::gcra_params& p = params_[c];
  if (past(now, p)) return 0;
  const std::uint64_t now_t = ticks(now, p);
  const std::uint64_t owed = tat > now_t ? tat - now_t : 0;
  return owed >= p.tau ? 0 : (p.tau - owed) / p.interval;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_BUCKET_OPS_HPP
