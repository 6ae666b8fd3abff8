// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/budget_ops.hpp: keyed_budgets' set-up, its reservations and, in a
// table with a period, the rollover protocol and the settlement, out of the
// class so that its header stays readable.
// Included by keyed_budgets.hpp after the class, whose header states the
// contract, the bound and the protocol these follow.
#ifndef TOLLGATE_KEYED_BUDGET_OPS_HPP
#define TOLLGATE_KEYED_BUDGET_OPS_HPP

#include <tollgate/keyed_budgets.hpp>

TOLLGATE_BEGIN_NAMESPACE

template <class Currency, class Hash>
keyed_reservation<Currency> keyed_budgets<Currency, Hash>::reserve_hash(std::uint64_t h, std::size_t cls, M amount,
                                                                        nanoseconds now) noexcept {
  if (cls >= limits_.size()) return refused(amount, 0, keyed_status::bad_class);
  if (amount.nanos() <= 0) return refused(M(), 0, keyed_status::admitted);  // holds nothing
  const std::uint64_t p = cal_.index(now.count());
  std::size_t slot = 0, c = cls;
  std::uint64_t pins = 0;
  for (;;) {
    if (slots_.pin(h, slot, c, &pins)) break;
    if (amount.nanos() > limits_[cls])
      return refused(amount, shortfall(0, amount.nanos(), limits_[cls]), keyed_status::limited);
    const bool idle = reuse_ == keyed_budget_reuse::idle;
    // No pin (checked by the claim): no reservation held. Reused only when
    // the user said budgets reset.
    auto reusable = [idle](typename S::entry&, std::size_t) { return idle; };
    const std::int64_t fresh = periodic() ? word(pack(p, 0)) : 0;  // zero totals, in the claimer's period
    auto start = [fresh](typename S::entry& e) {
      // relaxed: published by the claim's publish CAS (a release).
      e.s.committed.store(fresh, std::memory_order_relaxed);
      e.s.spent.store(fresh, std::memory_order_relaxed);
      e.s.held.store(0, std::memory_order_relaxed);
    };
    const detail::claim_outcome o = slots_.claim(h, cls, 0, slot, reusable, start);
    if (o == detail::claim_outcome::retry) continue;
    if (o == detail::claim_outcome::full) return refused(amount, 0, keyed_status::table_full);
    c = cls;
    pins = 0;
    break;
  }
  typename S::entry& e = slots_[slot];
  const std::int64_t limit = limits_[c];
  if (pins >= max_held) {
    S::unpin(e);
    keyed_reservation<Currency> r = refused(amount, 0, keyed_status::limited);
    r.busy = true;
    return r;
  }
  if (periodic()) return reserve_periodic(e, slot, limit, amount, p);
  // acquire / acq_rel: budget.hpp's orders on the committed total.
  std::int64_t w = e.s.committed.load(std::memory_order_acquire);
  for (;;) {
    std::int64_t next = 0;
    if (w < 0 || __builtin_add_overflow(w, amount.nanos(), &next) || next > limit) {
      S::unpin(e);
      keyed_reservation<Currency> r = refused(amount, w < 0 ? top : shortfall(w, amount.nanos(), limit),
                                              keyed_status::limited);
      r.saturated = w < 0;
      return r;
    }
    if (e.s.committed.compare_exchange_weak(w, next, std::memory_order_acq_rel, std::memory_order_acquire)) break;
  }
  keyed_reservation<Currency> r = refused(amount, 0, keyed_status::admitted);
  r.owner_ = &slots_;  // the pin stays until settle or drop
  r.slot_ = slot;
  return r;
}

template <class Currency, class Hash>
errc keyed_budgets<Currency, Hash>::init(std::size_t capacity, const std::vector<M>& limits, std::size_t window,
                                         budget_calendar cal) {
  if (capacity == 0 || window == 0 || limits.empty()) return errc::zero_count;
  if (limits.size() > max_classes || capacity > (std::size_t{1} << 40)) return errc::too_large;
  if (cal.utc_offset > std::chrono::hours(24) || cal.utc_offset < -std::chrono::hours(24)) return errc::too_large;
  std::int64_t most = top;
  switch (cal.period) {
    case budget_period::none: break;
    case budget_period::day: most = max_day_limit; break;
    case budget_period::month: most = max_month_limit; break;
    default: return errc::too_large;
  }
  std::vector<std::int64_t> ls;
  ls.reserve(limits.size());
  for (const M& l : limits) {
    if (l.nanos() <= 0) return errc::zero_count;
    if (l.nanos() > most) return errc::too_large;
    ls.push_back(l.nanos());
  }
  slots_.init(capacity, window);
  limits_ = std::move(ls);
  calendar_ = cal;
  cal_.kind = cal.period == budget_period::day     ? detail::period_kind::day
              : cal.period == budget_period::month ? detail::period_kind::month
                                                   : detail::period_kind::none;
  cal_.offset_ns = std::chrono::duration_cast<nanoseconds>(cal.utc_offset).count();
  shift_ = cal.period == budget_period::day ? 47 : 52;
  return errc::ok;
}

// The rollover protocol (a table with a period; the entry pinned by us).
//
// The committed word {period q, c} is the only word a decision reads: c is
// what is reserved and settled in q. A call in a later period p replaces
// it, in one CAS, with {p, what is held}, so every transition names the
// period it leaves: a thread that read the word before a rollover and
// stalled fails its CAS (the period field differs, and it only grows), so
// it cannot reset a newer period's total nor add to a finished one; it
// reloads and decides again in the period the word is in now. A `now` in a
// period before the word's is decided in the word's period (never an old
// period's room).
//
// `held` must be at least what the reservations admitted into the word
// hold, at every rollover CAS: a reserve adds its amount to `held` before
// its CAS on the word, and a settle or drop takes it out after its own.
// seq_cst on `held` and on the word make that so: a rollover whose CAS
// follows an admission's read the word at or after that admission's CAS,
// so its later load of `held` follows the admission's add in the single
// order. The error is on the safe side only: a rollover racing a reserve
// in progress (announced, not yet decided) or a settle just done carries
// that amount too, so the new period has that much less room.
template <class Currency, class Hash>
keyed_reservation<Currency> keyed_budgets<Currency, Hash>::reserve_periodic(typename S::entry& e, std::size_t slot,
                                                                            std::int64_t limit, M amount,
                                                                            std::uint64_t p) noexcept {
  const std::int64_t a = amount.nanos();
  if (a > limit || !announce(e.s.held, a)) {
    // Too large for any period, or absurdly many calls in flight (held
    // would pass 2^63): refused as a peek decides, nothing announced.
    const std::int64_t c = committed_view(e, p);
    S::unpin(e);
    keyed_reservation<Currency> r = refused(amount, c < 0 ? top : shortfall(c, a, limit), keyed_status::limited);
    r.saturated = c < 0;
    r.busy = a <= limit;
    return r;
  }
  const std::uint64_t mark = value_mask();
  // seq_cst: the load and the CAS below are the word's side of the
  // protocol above (and acquire/release, as budget.hpp's total).
  std::uint64_t w = bits(e.s.committed.load(std::memory_order_seq_cst));
  std::uint64_t at = 0;
  for (;;) {
    const std::uint64_t q = period_of_word(w), v = w & mark;
    std::uint64_t next = 0;
    if (q < p) {
      // A rollover with our admission: the new period starts with what is
      // held, ours included. seq_cst: the protocol above.
      std::int64_t held = e.s.held.load(std::memory_order_seq_cst);
      if (held < 0) held = 0;  // cannot be (a sum of amounts): defensive
      if (held > limit) return refuse_announced(e, a, shortfall(held, 0, limit), false);
      next = pack(p, bits(held));
      at = p;
    } else {
      if (v == mark) return refuse_announced(e, a, top, true);
      if (word(v) + a > limit) return refuse_announced(e, a, shortfall(word(v), a, limit), false);
      next = pack(q, v + bits(a));
      at = q;
    }
    std::int64_t expect = word(w);
    // seq_cst / seq_cst: the protocol above; on failure we reload.
    if (e.s.committed.compare_exchange_weak(expect, word(next), std::memory_order_seq_cst,
                                            std::memory_order_seq_cst))
      break;
    w = bits(expect);
  }
  keyed_reservation<Currency> r = refused(amount, 0, keyed_status::admitted);
  r.owner_ = &slots_;  // the pin stays until settle or drop
  r.slot_ = slot;
  r.period_ = at;
  r.carries_ = true;
  return r;
}

template <class Currency, class Hash>
auto keyed_budgets<Currency, Hash>::settle_periodic(keyed_reservation<Currency>& r, std::int64_t actual,
                                                    std::uint64_t p) noexcept -> M {
  typename S::entry& e = slots_[r.slot_];
  const std::int64_t a = r.amount.nanos();
  const std::uint64_t mark = value_mask();
  // seq_cst: the word's side of reserve_periodic's protocol; our amount is
  // in the word's value, admitted there or carried by every rollover since
  // (our announcement is still in `held`).
  std::uint64_t w = bits(e.s.committed.load(std::memory_order_seq_cst));
  std::uint64_t at = 0;
  for (;;) {
    const std::uint64_t q = period_of_word(w), v = w & mark;
    std::uint64_t next = 0;
    if (q < p) {
      // Roll over first: what is held (ours included, replaced by the cost).
      const std::int64_t held = e.s.held.load(std::memory_order_seq_cst);  // seq_cst: the protocol
      next = pack(p, add_value(held < 0 ? 0 : bits(held), actual - a));
      at = p;
    } else {
      at = q;
      if (v == mark) break;  // saturated for this period: stays so
      next = pack(q, add_value(v, actual - a));
    }
    std::int64_t expect = word(w);
    // seq_cst / seq_cst: as in reserve_periodic; on failure we reload.
    if (e.s.committed.compare_exchange_weak(expect, word(next), std::memory_order_seq_cst,
                                            std::memory_order_seq_cst))
      break;
    w = bits(expect);
  }
  add_spent_periodic(e.s.spent, at, actual);
  r.period_ = at;
  r.drop();  // takes our amount out of `held` (after our CAS), then unpins
  return M::from_nanos(a - actual);
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_BUDGET_OPS_HPP
