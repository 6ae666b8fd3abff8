// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/budget_reservation.hpp: the parts of a per-key budget table
// (keyed_budgets.hpp) that a caller holds or names: the reservation that
// reserve() hands out, the reuse rule and the calendar period a table is
// built with, and the state of one entry.
//
// A reservation holds its amount of one key's budget until it is settled
// (keyed_budgets::settle), released, dropped or destroyed: move-only, and
// dropped at most once. Dropping (or destroying) it unsettled keeps its
// money committed: in a table with a period, in the entry's period of that
// moment and no later one. Not thread-safe itself (one owner); its table is.
#ifndef TOLLGATE_KEYED_BUDGET_RESERVATION_HPP
#define TOLLGATE_KEYED_BUDGET_RESERVATION_HPP

#include <tollgate/config.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/keyed/claim.hpp>
#include <tollgate/keyed/key.hpp>
#include <tollgate/money.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <utility>

TOLLGATE_BEGIN_NAMESPACE

template <class Currency, class Hash>
class keyed_budgets;

namespace detail {
struct keyed_budget_state {
  // Without a period: reserved + settled, nano-units; negative: saturated
  // (budget.hpp). With one: the word {period, committed} (keyed_budgets).
  atomic<std::int64_t> committed{0};
  atomic<std::int64_t> spent{0};  // settled, nano-units; with a period the word {period, spent}
  // With a period: what the reservations pinning the entry hold (or are
  // about to hold, or have just settled), nano-units: what a rollover
  // carries. Unused without a period.
  atomic<std::int64_t> held{0};
};
using keyed_budget_slots = keyed_slots<keyed_budget_state>;
}  // namespace detail

enum class keyed_budget_reuse : std::uint8_t {
  never,  // only erase() frees an entry
  idle,   // budgets reset: an entry with no reservation held may be reclaimed
};

// The calendar period a table's budgets reset on (see the header).
enum class budget_period : std::uint8_t {
  none,   // never (only erase, or reuse idle): the default
  day,    // at every midnight of the offset
  month,  // at midnight of the first of every month of the offset
};
struct budget_calendar {
  budget_period period = budget_period::none;
  std::chrono::minutes utc_offset{0};  // the zone whose midnight resets (+05:45 is 345); at most +-24 h
};

template <class C>
class keyed_reservation {
 public:
  keyed_reservation() noexcept = default;
  keyed_reservation(const keyed_reservation&) = delete;
  keyed_reservation& operator=(const keyed_reservation&) = delete;
  keyed_reservation(keyed_reservation&& o) noexcept { take(o); }
  keyed_reservation& operator=(keyed_reservation&& o) noexcept {
    if (this != &o) {
      drop();
      take(o);
    }
    return *this;
  }
  ~keyed_reservation() { drop(); }

  money<C> amount;   // what is held
  money<C> missing;  // when refused: how much more budget it would have needed
  keyed_status status = keyed_status::bad_class;
  bool busy = false;       // refused: the key holds max_held reservations
  bool saturated = false;  // refused: the key's totals overflowed (budget.hpp)
  bool admitted() const noexcept { return status == keyed_status::admitted; }
  explicit operator bool() const noexcept { return admitted(); }
  // Whether it still holds money (admitted, not settled, not dropped).
  bool held() const noexcept { return owner_ != nullptr; }

  // With a period: the period (keyed_budgets::period_at) its money counts
  // in: the one it was admitted in, and once settled the one it was charged
  // to. 0 without a period.
  std::uint64_t period() const noexcept { return period_; }

  // Unpins its entry without settling: its money stays committed (with a
  // period: in the entry's period of the moment, and no later one).
  void drop() noexcept {
    if (owner_ == nullptr) return;
    auto& e = (*owner_)[slot_];
    // seq_cst: ends our part of what a rollover carries (keyed_budgets,
    // reserve_periodic); our pin (unpinned below) keeps the entry ours.
    if (carries_) (void)e.s.held.fetch_sub(amount.nanos(), std::memory_order_seq_cst);
    carries_ = false;
    detail::keyed_budget_slots::unpin(e);
    owner_ = nullptr;
  }

 private:
  template <class, class>
  friend class keyed_budgets;
  void take(keyed_reservation& o) noexcept {
    amount = o.amount;
    missing = o.missing;
    status = o.status;
    busy = o.busy;
    saturated = o.saturated;
    owner_ = std::exchange(o.owner_, nullptr);
    slot_ = o.slot_;
    period_ = o.period_;
    carries_ = std::exchange(o.carries_, false);
  }
  detail::keyed_budget_slots* owner_ = nullptr;  // set while it pins its entry
  std::size_t slot_ = 0;
  std::uint64_t period_ = 0;
  bool carries_ = false;  // its amount is in the entry's `held` (a table with a period)
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_BUDGET_RESERVATION_HPP
