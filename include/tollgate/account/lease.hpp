// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/lease.hpp: what an admission hands back: the decision, every
// dimension that refused, and the lease that holds what was reserved.
//
// Contract. A lease is move-only and belongs to the account that admitted
// it, which it must not outlive. It releases its concurrency slot once:
// when settled (settle, settle_rejected, settle_failed, settle_cancelled)
// or destroyed, whichever comes first; a lease dropped without settling
// keeps its reservations (the safe side). It records the tickets its
// dimensions gave (window slots, bucket ends and configurations, the
// calendar day, the money reserved, its slot-table word) so that settling
// can give back or charge exactly what was taken. Settling is thread-safe
// with everything the account does, and lock-free; the settle functions are
// defined after the account (account/settle.hpp). Moving a lease is not
// thread-safe (it is one object).
#ifndef TOLLGATE_ACCOUNT_LEASE_HPP
#define TOLLGATE_ACCOUNT_LEASE_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/config.hpp>
#include <tollgate/budget.hpp>
#include <tollgate/calendar_quota.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/cost.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/money.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency>
class account;

// What settling a lease did.
template <class Currency = usd_tag>
struct basic_settle_result {
  money<Currency> cost;              // the exact cost charged (zero when not billed)
  std::int64_t overspend_nanos = 0;  // cost above the money reserved
  std::uint64_t debt_tokens = 0;     // tokens used beyond the reservation
  std::uint64_t refunded_tokens = 0;
};
using settle_result = basic_settle_result<usd_tag>;

namespace detail {
// A settle's money (every lease type): the call's exact cost from the model
// (none: not billed), charged against its reservation when the account has a
// budget. An uncomputable cost keeps the whole reservation as spent: the safe side.
template <class Currency>
void settle_money(std::optional<budget<Currency>>& b, budget_reservation<Currency>& r, const model_info* m,
                  const usage& u, basic_settle_result<Currency>& res) noexcept {
  if (b && r) {
    const auto c = m ? cost<Currency>(*m, u) : cost_breakdown<Currency>{cost_errc::unknown_price, {}, {}, {}, {}, {}};
    const money<Currency> actual = c ? c.total : r.amount;
    const money<Currency> diff = b->settle(r, actual);
    res.cost = actual;
    res.overspend_nanos = diff.nanos() < 0 ? -diff.nanos() : 0;
  } else if (m) {
    const auto c = cost<Currency>(*m, u);
    if (c) res.cost = c.total;
  }
}
}  // namespace detail

template <class Clock = steady_clock, class Currency = usd_tag>
class lease {
 public:
  // User-provided, so that `lease()` runs the member initializers only and
  // does not zero the whole object first (see the fields).
  lease() noexcept {}  // NOLINT(modernize-use-equals-default)
  lease(const lease&) = delete;
  lease& operator=(const lease&) = delete;
  lease(lease&& o) noexcept { take(o); }
  lease& operator=(lease&& o) noexcept {
    if (this != &o) {
      if (acc_) acc_->drop(*this);
      take(o);
    }
    return *this;
  }
  // Dropped without settling: the slot is released, the reservations stay
  // (the safe side). The release is out of line, so that destroying a
  // settled lease (every admission's end) is one inlined test.
  ~lease() {
    if (acc_) acc_->drop(*this);
  }

  explicit operator bool() const noexcept { return acc_ != nullptr; }
  std::uint64_t reserved_tokens() const noexcept { return tokens_; }

  // A heartbeat for a long stream: its concurrency slot is reclaimed only
  // lease_timeout after the last renewal (see account/slot_table.hpp). True
  // while the lease holds its slot; false once the deadline passed and the
  // account took the slot back (the stream then runs beyond the limit's
  // count: settle it as usual), or when it holds none (no concurrency limit,
  // no lease_timeout, or the table was full).
  bool renew(nanoseconds now) noexcept { return acc_ != nullptr && acc_->renew_slot(*this, now); }

  // The response arrived with its usage: charge it exactly.
  basic_settle_result<Currency> settle(const usage& u, nanoseconds now) noexcept;
  // The server answered 429: Kimi does not bill it; the tokens stay counted.
  void settle_rejected(nanoseconds now) noexcept;
  // 5xx, timeout, lost connection without usage: keep the tokens, bill nothing.
  void settle_failed(nanoseconds now) noexcept;
  // A stream cancelled part-way: with the usage known so far (the last usage
  // chunk), exactly as settle; without it, bills the reserved worst case (the
  // server bills what it generated before the cancel, which the caller cannot
  // know) and keeps every reserved token counted, whatever the refund policy.
  // The result's cost is then the reserved worst case (zero without a budget).
  basic_settle_result<Currency> settle_cancelled(const std::optional<usage>& known, nanoseconds now) noexcept;

 private:
  friend class account<Clock, Currency>;
  void take(lease& o) noexcept {
    acc_ = std::exchange(o.acc_, nullptr);
    slot_ = std::exchange(o.slot_, no_slot);
    holds_ = std::exchange(o.holds_, false);
    in_flight_ = std::exchange(o.in_flight_, false);
    day_t_ = std::move(o.day_t_);
    money_ = o.money_;
    tokens_ = std::exchange(o.tokens_, 0);
    if (slot_ != no_slot) stamp_ = o.stamp_;
    if (acc_) {
      rpm_s_ = o.rpm_s_;
      tpm_s_ = o.tpm_s_;
      tpd_s_ = o.tpd_s_;
      rpm_c_ = o.rpm_c_;
      tpm_c_ = o.tpm_c_;
      model_ = o.model_;
    }
  }
  // The fields without an initializer are written by the admission before
  // anything reads them (once acc_ is set) and
  // copied only then. Initializing them would leave one run of zeros longer
  // than 64 bytes in every admission, which g++ clears with `rep stos`: about
  // 11 ns of start-up per try_admit on the machines we measured.
  static constexpr std::size_t no_slot = static_cast<std::size_t>(-1);
  account<Clock, Currency>* acc_ = nullptr;
  std::size_t slot_ = no_slot;  // its entry in the account's slot table, if any
  // Set although always written with slot_: once the release is inlined into
  // a caller, g++ cannot see that through a moved-into default lease and
  // warns in the caller's code (-Wmaybe-uninitialized). It sits between
  // slot_ (all ones) and holds_, so no long run of zeros forms.
  std::uint64_t stamp_ = 0;      // what it wrote there
  bool holds_ = false;           // it holds one concurrency unit
  bool in_flight_ = false;       // counted in flight by the header gates (server_remaining.hpp)
  // The window slots its requests and tokens were counted in (the rest of
  // each window ticket follows from tokens_); for a spaced bucket instead,
  // its ticket's end, with the configuration in *_c_.
  std::uint64_t rpm_s_, tpm_s_, tpd_s_;
  std::uint64_t rpm_c_, tpm_c_;
  quota_ticket day_t_;
  budget_reservation<Currency> money_;
  const model_info* model_;
  std::uint64_t tokens_ = 0;
};

template <class Clock = steady_clock, class Currency = usd_tag>
struct admission {
  tollgate::decision decision = tollgate::decision::refuse(reason::misconfigured);
  dimension_set refused;                   // every dimension that refused
  tollgate::lease<Clock, Currency> lease;  // valid when admitted
  std::uint64_t tokens = 0;                // prompt + max_tokens as reserved (or as it would have been)
  money<Currency> worst_case;              // the money reserved (or that would have been)
  nanoseconds at{0};                       // the `now` the decision was made at
  explicit operator bool() const noexcept { return decision.admitted(); }
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_LEASE_HPP
