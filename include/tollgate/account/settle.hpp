// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/settle.hpp: what settling a lease gives back or charges, by the
// answer the request got.
//
// Contract. settle(usage) charges the exact cost (cost.hpp) against the
// money reserved and, when refund_unused_tokens is set, gives back the
// tokens not used, by the lease's tickets (a window's slot, a bucket's
// ticket, the calendar day); tokens used beyond the reservation are charged
// as debt that later admissions wait out (the windows and the day may then
// go over their limit, never the reservation bound of the requests
// admitted); threads' window credit counted before the debt is given back
// at each one's next take (account/credit.hpp: a line whose thread does not
// take again keeps its chunk until its slot leaves the window). A cost that cannot be computed keeps the whole reservation as
// spent (the safe side). settle_rejected (a 429, which Kimi does not bill)
// frees the money and keeps the tokens counted; settle_failed (5xx,
// timeout) the same; settle_cancelled without a known usage bills the
// reserved worst case and keeps every token. Each releases the lease's
// concurrency slot, once. Thread-safe and lock-free: each step is one of the
// primitives' own operations.
//
// This header is included by account.hpp after the account; including it
// alone includes account.hpp first.
#ifndef TOLLGATE_ACCOUNT_SETTLE_HPP
#define TOLLGATE_ACCOUNT_SETTLE_HPP

#include <tollgate/account.hpp>
#include <tollgate/config.hpp>
#include <tollgate/account/lease.hpp>
#include <tollgate/cost.hpp>
#include <tollgate/detail/arith.hpp>

#include <cstdint>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency>
basic_settle_result<Currency> lease<Clock, Currency>::settle(const usage& u, nanoseconds now) noexcept {
  basic_settle_result<Currency> res;
  if (!acc_) return res;
  account<Clock, Currency>& a = *acc_;
  const std::uint64_t used = detail::sat_add(u.prompt, u.completion);
  const std::uint64_t extra = used > tokens_ ? used - tokens_ : 0;
  a.counters_.add_used(used, extra);
  auto& d = a.d_;
  if (extra > 0) {
    res.debt_tokens = extra;  // beyond the reservation: a debt that later admissions wait out
    d.charge_debt(extra, now);
    // Threads' window credit was counted before the debt: they give it back
    // and refill through the windows, which wait the debt out (credit.hpp).
    a.credit_.bump_windows();
  } else if (a.cfg_.refund_unused_tokens && used < tokens_) {
    const std::uint64_t back = tokens_ - used;
    res.refunded_tokens = back;
    a.give_tokens_back(tpm_s_, tpm_c_, tokens_, back, now);
    if (d.day_q) (void)d.day_q->refund(day_t_, back);
    else d.give_tokens(d.tpd_w, d.tpd_b, tpd_s_, 0, tokens_, back, now);
  }
  detail::settle_money(d.money, money_, model_, u, res);
  if (holds_) a.adaptive_success();  // a success while its slot is still counted in flight
  a.release_slot(*this);
  return res;
}

template <class Clock, class Currency>
void lease<Clock, Currency>::settle_rejected(nanoseconds now) noexcept {
  (void)now;
  if (!acc_) return;
  if (acc_->d_.money && money_) acc_->d_.money->release(money_);
  acc_->release_slot(*this);
}

template <class Clock, class Currency>
void lease<Clock, Currency>::settle_failed(nanoseconds now) noexcept {
  settle_rejected(now);  // the same bookkeeping: tokens stay counted, nothing is billed
}

template <class Clock, class Currency>
basic_settle_result<Currency> lease<Clock, Currency>::settle_cancelled(const std::optional<usage>& known,
                                                                      nanoseconds now) noexcept {
  if (known) return settle(*known, now);
  basic_settle_result<Currency> res;
  if (!acc_) return res;
  account<Clock, Currency>& a = *acc_;
  a.counters_.add_used(tokens_);  // unknown: counted as the whole reservation
  if (a.d_.money && money_) {
    res.cost = money_.amount;
    (void)a.d_.money->settle(money_, money_.amount);
  }
  a.release_slot(*this);
  return res;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SETTLE_HPP
