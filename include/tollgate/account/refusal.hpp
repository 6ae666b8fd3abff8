// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/refusal.hpp: what a refused admission gives back and reports.
//
// Contract. After a refusal every dimension already taken is given back,
// newest first (roll_back), the refused thread's own window credit too, and
// then every dimension is asked, without consuming, whether and how long it
// would refuse (refuse_and_report): the wait is the largest of them, exact
// for the refused thread (account.hpp's decision contract), `never` when one
// can never admit, and the refused set names every dimension that refuses.
// A roll-back frees nothing that was free before the call, so it wakes no
// waiter. Lock-free; out of line, so that the admission path stays small.
//
// A refusal after some dimensions were taken leaves their counts as they were,
// but not their windows' heads: a strict window that a rolled-back take moved
// to a later sub-window stays there, so a later call with a `now` before that
// sub-window is refused stale (reason::exhausted, its wait to the head's
// sub-window plus the wait there) as after an admission at that time. Never
// more capacity, sometimes a longer wait for a caller whose clock lags (the
// shared account does the same; the Redis account moves no head on a refusal).
//
// This header is included by account.hpp after the account; including it
// alone includes account.hpp first.
#ifndef TOLLGATE_ACCOUNT_REFUSAL_HPP
#define TOLLGATE_ACCOUNT_REFUSAL_HPP

#include <tollgate/account.hpp>
#include <tollgate/config.hpp>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency>
void account<Clock, Currency>::roll_back(admission_type& a, taken t, std::uint64_t n, nanoseconds now,
                                   unsigned shard) noexcept {
    lease_type& l = a.lease;
    if (t >= taken_day) give_day(l, n, now);
    if (t >= taken_minute) limiters::give_tokens(d_.tpm_w, d_.tpm_b, l.tpm_s_, l.tpm_c_, n, n, now);
    d_.give_request(l.rpm_s_, l.rpm_c_, now);
    refuse_and_report(a, n, now, shard);
  }

namespace detail {
// The header gates' waits for a request of n tokens, as rpm and tpm.
inline void note_gates(const remaining_gates& g, account_policy::refusal& rf, std::uint64_t n, nanoseconds now) noexcept {
  if (!g.on()) return;
  const nanoseconds gw[2] = {g.wait(0, 1, now), g.wait(1, n, now)};
  if (gw[0] > nanoseconds(0)) rf.note(dimension::rpm, decision::wait(gw[0]));
  if (gw[1] > nanoseconds(0)) rf.note(dimension::tpm, decision::wait(gw[1]));
}
}  // namespace detail

template <class Clock, class Currency>
void account<Clock, Currency>::refuse_and_report(admission_type& a, std::uint64_t n, nanoseconds now, unsigned shard,
                         nanoseconds paused_for) noexcept {
    // A roll-back frees nothing that was free before this call, and the
    // waiting room's head calls try_admit under the room's lock: no hook.
    if (a.lease.acc_) release_slot(a.lease, false);
    a.lease = lease_type();
    window* ws[credit::kinds] = {d_.strict(0), d_.strict(1), d_.strict(2)};
    const std::uint64_t own_units = credit_.give_back(ws, shard);
    account_policy::refusal rf(paused_for);
    if (d_.conc && d_.conc->available() == 0 && own_units == 0) rf.add(dimension::concurrency);
    const phases ph = learn_.on() ? learn_.phases_at(now) : phases{};
    // In learn's "both" phase a window's wait ends with the phase:
    // from then on the bucket alone decides, and its wait is noted below.
    d_.report(rf, n, now, learn_.window_left(0, ph.requests, now), learn_.window_left(1, ph.tokens, now));
    learn_.report(rf, n, now, ph);
    detail::note_gates(gates_, rf, n, now);
    if (d_.money && d_.money->remaining() < a.worst_case) rf.add(dimension::budget);
    a.refused = rf.refused();
    counters_.count_refusal(a.refused);
    a.decision = rf.result();
  }

// Paused before any admission (fresh) or while a restore runs: the limiters
// hold nothing to read, but a fresh account's header gates may (a 429 with
// x-ratelimit headers fed back before any traffic): the pause's end and
// theirs. The gates are words of their own, safe to read here.
template <class Clock, class Currency>
void account<Clock, Currency>::refuse_paused_unused(admission_type& a, std::uint64_t n, nanoseconds now,
                                                    nanoseconds paused_for, bool fresh) noexcept {
    account_policy::refusal rf(paused_for);
    if (fresh) detail::note_gates(gates_, rf, n, now);
    a.refused = rf.refused();
    counters_.count_refusal(a.refused);
    a.decision = rf.result();
  }

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_REFUSAL_HPP
