// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/shared_parts.hpp: the process-local parts of a shared_account
// (shared_account.hpp): its options, its leases and admissions, its
// statistics, the fork watch, and the state it places in a region (with
// its region_key, so that a region of another account type is refused).
//
// Process identity: nonzero, below 2^48, one that a later process cannot
// repeat (a pid and an incarnation number, say); the liveness check
// (identity -> alive?) must not call a live process dead. Without a check,
// slots come back by their deadline only.
//
// fork(). A child inherits this object and its leases. Until it calls
// claim(its own identity) it admits nothing (dimension::stopped,
// reason::misconfigured, needs_claim() true), so its leases never carry its
// parent's identity; leases it inherited are inert in it (settling or
// dropping one does nothing: the parent settles its own). The epoch is a
// process-local counter bumped by a pthread_atfork child handler that
// open() registers once.
//
// Time. Processes on one host share CLOCK_MONOTONIC (steady_clock); tests
// may use region_clock (shared_region.hpp), whose word lives in a region.
// A `now` older than one the region has seen (another process's later
// reading) keeps the account's rule: a window that cannot decide at it
// refuses it with the wait to the time it can. A slot's deadline counts from
// the `now` it was taken (or renewed) at: a reading that lags by d brings
// that slot's reclaim d earlier.
//
// Included by shared_account.hpp; the lease's members that reach into the
// account are defined in account/shared_lease.hpp, which it includes last.
//
// Where each part of a shared account lives.
//   In the region (address-free: plain atomics and integers, no pointer):
//   the limiters (their std::optional wrappers are trivially destructible
//   and hold their values in place), the pause and stop words, the
//   admission rules (plain values), the slot table and its owner words, the
//   reclaim counters, the credit lines and their owner words.
//   In this process, beside it (the shared_account object): the pointer to
//   the region's state, the configuration (equal in every process, by the
//   fingerprint), this process's identity and liveness check, its fork
//   epoch, its statistics, the credit chunks, which line each of its
//   threads owns and the slot words each keeps (account/shared_slot_cache.hpp). Leases are process-local (they point at this
//   object and name the model, whose prices a settle needs); there is no
//   release hook and no thread-local index.
#ifndef TOLLGATE_ACCOUNT_SHARED_PARTS_HPP
#define TOLLGATE_ACCOUNT_SHARED_PARTS_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/config.hpp>
#include <tollgate/account/limiters.hpp>
#include <tollgate/account/pause.hpp>
#include <tollgate/account/policy.hpp>
#include <tollgate/account/shared_credit.hpp>
#include <tollgate/account/shared_slots.hpp>
#include <tollgate/account/lease.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/cost.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/error.hpp>
#include <tollgate/region_key.hpp>
#include <tollgate/shared_region.hpp>

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <type_traits>

TOLLGATE_BEGIN_NAMESPACE

struct shared_account_options {
  std::uint64_t identity = 0;  // this process: nonzero, below 2^48, never repeated (see the header)
  // Optional: is the process with this identity alive? Called for slots a
  // scan finds held (and for a region left half-built, shared_region.hpp).
  bool (*alive)(std::uint64_t identity, void* context) = nullptr;
  void* context = nullptr;
  // At most one scan for reclaimable slots per this much supplied time,
  // region-wide (without a liveness check: lease_timeout / 16).
  nanoseconds scan_interval = std::chrono::milliseconds(100);
};

struct shared_open_result {
  region_errc region = region_errc::ok;  // the region's answer (shared_region.hpp)
  errc config = errc::ok;                // the configuration's (checked before the region is touched)
  error_values values;                   // for a limit too large
  bool constructed = false;              // this call built the account
  explicit operator bool() const noexcept { return region == region_errc::ok && config == errc::ok; }
};

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
class shared_account;

// What settling a shared lease did: as the account's (account/lease.hpp).
template <class Clock = steady_clock, class Currency = usd_tag, std::size_t Slots = 64, std::size_t Lines = 16>
class shared_lease {
 public:
  using owner_type = shared_account<Clock, Currency, Slots, Lines>;
  shared_lease() noexcept = default;
  shared_lease(const shared_lease&) = delete;
  shared_lease& operator=(const shared_lease&) = delete;
  shared_lease(shared_lease&& o) noexcept { take(o); }
  shared_lease& operator=(shared_lease&& o) noexcept {
    if (this != &o) {
      drop();
      take(o);
    }
    return *this;
  }
  // Dropped without settling: the slot is released, the reservations stay.
  ~shared_lease() { drop(); }

  explicit operator bool() const noexcept { return acc_ != nullptr; }
  std::uint64_t reserved_tokens() const noexcept { return tokens_; }

  // A heartbeat (account/lease.hpp): true while the lease holds its slot.
  inline bool renew(nanoseconds now) noexcept;
  inline basic_settle_result<Currency> settle(const usage& u, nanoseconds now) noexcept;
  inline void settle_rejected(nanoseconds now) noexcept;
  void settle_failed(nanoseconds now) noexcept { settle_rejected(now); }
  inline basic_settle_result<Currency> settle_cancelled(const std::optional<usage>& known, nanoseconds now) noexcept;

 private:
  friend class shared_account<Clock, Currency, Slots, Lines>;
  static constexpr std::size_t no_slot = static_cast<std::size_t>(-1);
  inline bool live() const noexcept;  // issued in this process (not inherited through fork)
  inline void drop() noexcept;
  inline void release_slot() noexcept;
  void take(shared_lease& o) noexcept {
    acc_ = std::exchange(o.acc_, nullptr);
    slot_ = std::exchange(o.slot_, no_slot);
    stamp_ = o.stamp_;
    day_t_ = std::move(o.day_t_);
    money_ = o.money_;
    o.money_ = budget_reservation<Currency>();
    tokens_ = std::exchange(o.tokens_, 0);
    if (acc_) {
      epoch_ = o.epoch_;
      rpm_s_ = o.rpm_s_;
      tpm_s_ = o.tpm_s_;
      tpd_s_ = o.tpd_s_;
      rpm_c_ = o.rpm_c_;
      tpm_c_ = o.tpm_c_;
      model_ = o.model_;
    }
  }
  // As the account's lease (account/lease.hpp): the fields without an
  // initializer are written by the admission (once acc_ is set) before
  // anything reads them, and copied only then; initialized, they made one
  // run of zeros of about 130 bytes in every admission, which g++ cleared
  // with `rep stos` (a sixth of an admit + settle's time, by sampling).
  owner_type* acc_ = nullptr;
  std::size_t slot_ = no_slot;
  std::uint64_t stamp_ = 0;  // written with slot_; set so that g++ sees it (as the account's)
  std::uint64_t epoch_;
  std::uint64_t rpm_s_, tpm_s_, tpd_s_, rpm_c_, tpm_c_;
  quota_ticket day_t_;
  budget_reservation<Currency> money_;
  const model_info* model_;
  std::uint64_t tokens_ = 0;
};

template <class Clock = steady_clock, class Currency = usd_tag, std::size_t Slots = 64, std::size_t Lines = 16>
struct shared_admission {
  tollgate::decision decision = tollgate::decision::refuse(reason::misconfigured);
  dimension_set refused;
  shared_lease<Clock, Currency, Slots, Lines> lease;  // valid when admitted
  std::uint64_t tokens = 0;
  money<Currency> worst_case;
  nanoseconds at{0};
  explicit operator bool() const noexcept { return decision.admitted(); }
};

// This process's statistics, and the region's reclaims.
template <class Currency = usd_tag>
struct shared_account_stats {
  std::uint64_t admitted = 0, refused = 0;  // by this process
  std::uint64_t reclaimed_by_deadline = 0, reclaimed_dead = 0;  // by every process
  std::int64_t spent_nanos = 0;  // settled by every process
};

namespace detail {

// Bumped in every child of fork() (see the header).
inline std::atomic<std::uint64_t>& fork_epoch() noexcept {
  static std::atomic<std::uint64_t> e{0};
  return e;
}
inline void bump_fork_epoch() noexcept {
  // relaxed: the child is single-threaded when the handler runs; later
  // threads it starts are ordered after it by their creation.
  fork_epoch().fetch_add(1, std::memory_order_relaxed);
}
inline void watch_forks() noexcept {
  static const int registered = pthread_atfork(nullptr, nullptr, &bump_fork_epoch);
  (void)registered;
}
// Where a thread starts probing the slot table, so two threads do not race
// for the same word; any value is correct.
inline std::size_t probe_start() noexcept {
  static std::atomic<std::size_t> next{0};
  // relaxed: only spreads threads over the table.
  static thread_local const std::size_t mine = next.fetch_add(7, std::memory_order_relaxed);
  return mine;
}

// The limiters' configuration: concurrency is the slot table's.
template <class Currency>
basic_account_config<Currency> shared_limiters_config(const basic_account_config<Currency>& c) noexcept {
  basic_account_config<Currency> x = c;
  x.concurrency = limit::unknown();
  return x;
}

// Every value that shapes the state or the decisions (per_thread_credit
// too: every process must run the lines the same way).
template <class Currency, std::size_t Slots, std::size_t Lines>
std::uint64_t shared_fingerprint(const basic_account_config<Currency>& c) noexcept {
  auto lim = [](const limit& l) -> std::uint64_t { return l.is_finite() ? *l.value() : ~std::uint64_t{0}; };
  return region_fingerprint_of(
      lim(c.concurrency), lim(c.rpm), lim(c.tpm), lim(c.tpd), static_cast<unsigned>(c.model), c.calendar_day,
      c.utc_offset.count(), c.unix_time_at_zero ? c.unix_time_at_zero->count() : 0, c.unix_time_at_zero.has_value(),
      c.refund_unused_tokens, c.max_request_tokens, c.budget ? c.budget->nanos() : -1, c.request_window.count(),
      c.token_window.count(), c.lease_timeout.count(), c.max_pause.count(), c.spacing_margin.count(),
      std::is_same<Currency, usd_tag>::value, Slots, c.per_thread_credit, Lines);
}

// Whether a shared layout of `Slots` slots can run `c`: errc::ok, else the
// first reason (and its values in `v`).
template <class Clock, class Currency, std::size_t Slots>
errc shared_check(const basic_account_config<Currency>& c, error_values& v) noexcept {
  if (c.model == server_model::learn || c.adaptive_concurrency || c.trust_rate_limit_headers)
    return errc::not_shareable;
  if (c.max_pause < nanoseconds(0) || c.spacing_margin < nanoseconds(0)) return errc::zero_period;
  if (auto x = c.concurrency.value()) {
    if (*x == 0) return errc::zero_count;
    if (*x > Slots) {
      v = error_values{*x, Slots};
      return errc::too_large;
    }
  }
  errc e = account_policy::check_limits(c, c.rpm, c.tpm, v);
  if (e != errc::ok) return e;
  // The limiters refuse what they cannot run: build them once, here.
  account_limiters<Clock, Currency> probe;
  return probe.build(shared_limiters_config(c), nanoseconds(0));
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
struct shared_account_state {
  account_limiters<Clock, Currency> d;  // concurrency is not among them: see slots
  pause_state pause;
  account_policy::admission_rules<Currency> rules;
  std::uint64_t refund_unused = 0;
  shared_slots<Slots> slots;
  detail::atomic<std::uint64_t> reclaimed_deadline{0}, reclaimed_dead{0};
  std::uint64_t credit_on = 0;  // per_thread_credit, as built (the fingerprint holds it too)
  shared_credit_lines<typename account_limiters<Clock, Currency>::window, Lines> credit;
};

}  // namespace detail

// The shared account's state by name, clock, currency and slot count: a
// region built for one of them is refused (wrong_type) as another; "/2":
// the slot words of detail/slot_word.hpp; "/3": the credit lines
// (account/shared_credit.hpp), with their count in the key; "/5": a taker
// names itself after its CAS and the generation always steps by one
// (account/shared_slots.hpp), which a process of "/3" would not keep ("/4"
// was a withdrawn slot protocol's).
template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
struct region_key<detail::shared_account_state<Clock, Currency, Slots, Lines>> {
  static constexpr std::uint64_t value =
      region_name_key("tollgate.shared_account/5", region_key<Clock>::value, region_key<budget<Currency>>::value,
                      Slots, Lines);
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SHARED_PARTS_HPP
