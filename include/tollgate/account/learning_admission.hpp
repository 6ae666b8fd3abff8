// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/learning_admission.hpp: the account's admission when it learns
// from the server: under server_model::learn (learn.hpp) a dimension past
// its switch skips its strict window and takes learn's spaced bucket, and
// with trust_rate_limit_headers the server's stated remainders gate every
// admission (server_remaining.hpp).
//
// Contract. The same all-or-nothing steps as account::admit_into, in the
// same order, then the header gates, then learn's buckets: a refusal at any
// step gives back every step before it. Settle's refund goes to the ticket
// the admission took (the window's slot before the switch, learn's bucket
// after it; during the overlap window both keep the tokens, the safe side).
// Concurrency: as the account's (lock-free; learn's words and the gates are
// the only state added, each with its own atomic protocol). Kept apart from
// admit_into so that other accounts pay one branch for it.
//
// This header is included by account.hpp after the account; including it
// alone includes account.hpp first.
#ifndef TOLLGATE_ACCOUNT_LEARNING_ADMISSION_HPP
#define TOLLGATE_ACCOUNT_LEARNING_ADMISSION_HPP

#include <tollgate/account.hpp>
#include <tollgate/config.hpp>
#include <tollgate/account/learn.hpp>
#include <tollgate/account/server_remaining.hpp>
#include <tollgate/bucket_ticket.hpp>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency>
void account<Clock, Currency>::admit_learning(admission_type& a, const request& r, std::uint64_t n, nanoseconds now,
                                        unsigned shard) noexcept {
    const phases ph = learn_.phases_at(now);
    lease_type& l = a.lease;
    l.rpm_s_ = l.tpm_s_ = l.tpd_s_ = l.rpm_c_ = l.tpm_c_ = 0;  // a dimension not taken leaves its slot 0
    l.model_ = r.model;
    if (d_.conc) {
      // Slots held past their deadline may come back: reap and try again.
      if (!take_unit(shard) && !(reap(now) && take_unit(shard)))
        return refuse_and_report(a, n, now, shard);
      l.holds_ = true;
      l.acc_ = this;  // so that a roll-back below releases the slot
      slots_.claim(now, shard, l.slot_, l.stamp_);
    }
    if (!take_requests(l, now, shard, ph.requests != learn_phase::spaced)) return refuse_and_report(a, n, now, shard);
    if (!take_tokens(d_.tpm_w, d_.tpm_b, credit::tpm, l.tpm_s_, l.tpm_c_, n, now, shard,
                     ph.tokens != learn_phase::spaced)) {
      give_request(l, ph, now);
      return refuse_and_report(a, n, now, shard);
    }
    bool day_ok = true;
    std::uint64_t no_bucket = 0;  // tpd_b is never built: the daily limit is a window or a quota
    if (d_.day_q) day_ok = d_.day_q->try_acquire(n, now, l.day_t_).admitted();
    else day_ok = take_tokens(d_.tpd_w, d_.tpd_b, credit::tpd, l.tpd_s_, no_bucket, n, now, shard);
    if (!day_ok) {
      give_tokens(l, ph, n, now);
      give_request(l, ph, now);
      return refuse_and_report(a, n, now, shard);
    }
    if (d_.money) {
      l.money_ = d_.money->reserve(a.worst_case);
      if (!l.money_) {
        give_day(l, n, now);
        give_tokens(l, ph, n, now);
        give_request(l, ph, now);
        return refuse_and_report(a, n, now, shard);
      }
    }
    using gate = detail::remaining_gates::take_result;
    // Every dimension the server states is gated, enforced here or not: the
    // headers are the only limit the account knows for one it does not enforce.
    const gate gr = gates_.take(0, 1, now);
    const gate gt = gr == gate::refused ? gate::open : gates_.take(1, n, now);
    if (gr == gate::refused || gt == gate::refused || (learn_.on() && !learn_take(l, ph, n, now))) {
      if (gr == gate::taken) gates_.give(0, 1);
      if (gt == gate::taken) gates_.give(1, n);
      if (d_.money) d_.money->release(l.money_);
      give_day(l, n, now);
      give_tokens(l, ph, n, now);
      give_request(l, ph, now);
      return refuse_and_report(a, n, now, shard);
    }
    l.acc_ = this;
    l.tokens_ = n;
    if (gates_.on()) {  // in flight until answered (server_remaining.hpp)
      gates_.sent(n);
      l.in_flight_ = true;
    }
    counters_.add_admitted(shard, n);
    a.decision = decision::admit();
  }

template <class Clock, class Currency>
bool account<Clock, Currency>::learn_take(lease_type& l, phases ph, std::uint64_t n, nanoseconds now) noexcept {
    bucket_ticket rt, tt;
    if (ph.requests != learn_phase::strict && !learn_.take(0, 1, now, rt)) return false;
    if (ph.tokens != learn_phase::strict && !learn_.take(1, n, now, tt)) {
      if (ph.requests != learn_phase::strict) learn_.give(0, rt, 1, now);
      return false;
    }
    if (ph.requests == learn_phase::strict) learn_.shadow(0, 1, now);
    if (ph.tokens == learn_phase::strict) learn_.shadow(1, n, now);
    using ls = detail::learn_state<Clock>;
    if (ph.tokens == learn_phase::strict) {
      l.tpm_c_ = ls::window_ticket;
    } else if (ph.tokens == learn_phase::both) {
      l.tpm_c_ = ls::no_refund;  // two tickets, one field: both keep the tokens (the safe side)
    } else {
      l.tpm_s_ = tt.end;
      l.tpm_c_ = tt.config;
    }
    return true;
  }

template <class Clock, class Currency>
void account<Clock, Currency>::give_tokens_back(std::uint64_t slot, std::uint64_t cfg, std::uint64_t reserved, std::uint64_t back,
                        nanoseconds now) noexcept {
    using ls = detail::learn_state<Clock>;
    if (!learn_.on() || cfg == ls::window_ticket) {
      limiters::give_tokens(d_.tpm_w, d_.tpm_b, slot, learn_.on() ? 0 : cfg, reserved, back, now);
    } else if (cfg != ls::no_refund) {
      bucket_ticket t{slot, reserved, cfg};
      learn_.give(1, t, back, now);
    }
  }

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_LEARNING_ADMISSION_HPP
