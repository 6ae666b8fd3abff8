// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/shared_lease.hpp: what a shared account's lease does when it is
// settled, rejected, cancelled, renewed or dropped (shared_account.hpp
// declares the lease in account/shared_parts.hpp and includes this at its
// end; including this header alone includes the account).
//
// Contract. As the in-process lease (account/lease.hpp): settle charges the
// usage's exact cost and gives back unused tokens only where the account was
// configured to (`refund_unused_tokens`); extra tokens are charged as debt at
// `now`; a rejected request is not billed (its tokens stay counted); the slot
// word is freed exactly once, by this lease, by the handle that kept it for
// its next leases (account/shared_slot_cache.hpp), or by a reaper (whichever
// CAS wins). A lease used in a child of fork() that has not claimed its own
// identity does nothing: the slot and the money are its parent's.
#ifndef TOLLGATE_ACCOUNT_SHARED_LEASE_HPP
#define TOLLGATE_ACCOUNT_SHARED_LEASE_HPP

#include <tollgate/shared_account.hpp>

#include <cstdint>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
bool shared_lease<Clock, Currency, Slots, Lines>::live() const noexcept {
  // relaxed: process-local (see detail::bump_fork_epoch).
  return acc_ != nullptr && epoch_ == detail::fork_epoch().load(std::memory_order_relaxed);
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
void shared_lease<Clock, Currency, Slots, Lines>::release_slot() noexcept {
  // Kept for this thread's next lease where it can be (no CAS), else freed.
  if (acc_ != nullptr && slot_ != no_slot && !acc_->keep_slot(slot_, stamp_)) (void)acc_->s_->slots.give(slot_, stamp_);
  slot_ = no_slot;
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
void shared_lease<Clock, Currency, Slots, Lines>::drop() noexcept {
  if (live()) release_slot();
  acc_ = nullptr;
  slot_ = no_slot;
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
bool shared_lease<Clock, Currency, Slots, Lines>::renew(nanoseconds now) noexcept {
  if (!live() || slot_ == no_slot) return false;
  if (acc_->s_->slots.renew(slot_, stamp_, acc_->opts_.identity, now)) return true;
  slot_ = no_slot;  // reaped: the reaper freed the word
  return false;
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
basic_settle_result<Currency> shared_lease<Clock, Currency, Slots, Lines>::settle(const usage& u, nanoseconds now) noexcept {
  basic_settle_result<Currency> res;
  if (!live()) {
    drop();
    return res;
  }
  auto& d = acc_->s_->d;
  using limiters = detail::account_limiters<Clock, Currency>;
  const std::uint64_t used = detail::sat_add(u.prompt, u.completion);
  const std::uint64_t extra = used > tokens_ ? used - tokens_ : 0;
  if (extra > 0) {
    res.debt_tokens = extra;
    d.charge_debt(extra, now);
    acc_->credit_.bump_windows();  // this process's lines refill through the windows (credit.hpp)
  } else if (acc_->s_->refund_unused && used < tokens_) {
    const std::uint64_t back = tokens_ - used;
    res.refunded_tokens = back;
    limiters::give_tokens(d.tpm_w, d.tpm_b, tpm_s_, tpm_c_, tokens_, back, now);
    if (d.day_q) (void)d.day_q->refund(day_t_, back);
    else limiters::give_tokens(d.tpd_w, d.tpd_b, tpd_s_, 0, tokens_, back, now);
  }
  detail::settle_money(d.money, money_, model_, u, res);
  drop();
  return res;
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
void shared_lease<Clock, Currency, Slots, Lines>::settle_rejected(nanoseconds now) noexcept {
  (void)now;
  if (live() && acc_->s_->d.money && money_) acc_->s_->d.money->release(money_);
  drop();
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
basic_settle_result<Currency> shared_lease<Clock, Currency, Slots, Lines>::settle_cancelled(const std::optional<usage>& known,
                                                                                     nanoseconds now) noexcept {
  if (known) return settle(*known, now);
  basic_settle_result<Currency> res;
  if (live() && acc_->s_->d.money && money_) {
    res.cost = money_.amount;
    (void)acc_->s_->d.money->settle(money_, money_.amount);
  }
  drop();
  return res;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SHARED_LEASE_HPP
