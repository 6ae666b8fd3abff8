// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/stats.hpp: the account's counters, for metrics: admissions and
// refusals per dimension, tokens reserved and used, debt, reclaimed slots,
// capped hints, and the time callers waited per dimension.
//
// Contract. Counting never refuses, blocks or allocates. The hot counters
// are per-thread shards (detail/shard_counters.hpp: a plain load and store
// for the first 16 threads to count, a relaxed fetch_add on a shared shard
// for the others); the rare ones are relaxed atomics. Relaxed suffices
// everywhere: each counter is a lone value that orders nothing. A read
// (snapshot()) is exact once the counting threads are joined and
// approximate while they run. Counters saturate only where their 64 bits
// would (never in practice).
#ifndef TOLLGATE_ACCOUNT_STATS_HPP
#define TOLLGATE_ACCOUNT_STATS_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/detail/shard_counters.hpp>

#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

// Per-dimension counters, for metrics.
struct account_stats {
  std::uint64_t admitted = 0, refused = 0;
  std::uint64_t refused_by[9] = {};  // indexed by the bit position of `dimension`
  std::uint64_t tokens_reserved = 0, tokens_used = 0, debt_tokens = 0;
  std::uint64_t reclaimed = 0;  // concurrency slots taken back from leases past lease_timeout
  std::uint64_t capped_hints = 0;  // server hints longer than max_pause, cut to it
  std::int64_t spent_nanos = 0;  // in nano-units of the budget's currency
  // Time callers spent waiting because of each dimension (indexed like
  // refused_by), as reported by the waiting layer (waiting_room) through
  // account::record_wait. A wait caused by several dimensions counts in each.
  std::int64_t waited_ns_by[9] = {};
};

namespace detail {

class account_counters {
 public:
  // The sharded counters, by index.
  enum : std::size_t { admitted, refused, reserved, used, debt, refused_by, count = refused_by + 9 };

  void add_admitted(unsigned shard, std::uint64_t tokens) noexcept {
    hot_.add_at(shard, admitted, 1);
    hot_.add_at(shard, reserved, tokens);
  }
  // Settling: tokens used, and those beyond the reservation.
  void add_used(std::uint64_t used_tokens, std::uint64_t debt_tokens) noexcept {
    hot_.add2(used, used_tokens, debt, debt_tokens);
  }
  void add_used(std::uint64_t used_tokens) noexcept { hot_.add(used, used_tokens); }
  void count_refusal(dimension_set s) noexcept {
    const unsigned shard = detail::this_thread_shard();
    hot_.add_at(shard, refused, 1);
    for (unsigned i = 0; i < 9; ++i)
      if (s.bits & (1u << i)) hot_.add_at(shard, refused_by + i, 1);
  }
  void add_reclaimed(std::uint64_t n) noexcept {
    if (n) reclaimed_.fetch_add(n, std::memory_order_relaxed);  // relaxed: a statistic
  }
  void add_capped_hint() noexcept { capped_hints_.fetch_add(1, std::memory_order_relaxed); }  // relaxed: a statistic
  void record_wait(dimension_set s, nanoseconds d) noexcept {
    if (d <= nanoseconds(0)) return;
    for (unsigned i = 0; i < 9; ++i)
      if (s.bits & (1u << i)) waited_ns_[i].fetch_add(d.count(), std::memory_order_relaxed);  // relaxed: a statistic
  }
  // Everything but spent_nanos (the budget's).
  account_stats snapshot() const noexcept {
    account_stats s;
    s.admitted = hot_.sum(admitted);
    s.refused = hot_.sum(refused);
    for (unsigned i = 0; i < 9; ++i) s.refused_by[i] = hot_.sum(refused_by + i);
    s.tokens_reserved = hot_.sum(reserved);
    s.tokens_used = hot_.sum(used);
    s.debt_tokens = hot_.sum(debt);
    // relaxed: statistics, see the contract.
    s.reclaimed = reclaimed_.load(std::memory_order_relaxed);
    s.capped_hints = capped_hints_.load(std::memory_order_relaxed);
    for (unsigned i = 0; i < 9; ++i) s.waited_ns_by[i] = waited_ns_[i].load(std::memory_order_relaxed);
    return s;
  }

 private:
  detail::shard_counters<count> hot_;
  detail::atomic<std::uint64_t> reclaimed_{0};
  detail::atomic<std::uint64_t> capped_hints_{0};
  detail::atomic<std::int64_t> waited_ns_[9] = {};
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_STATS_HPP
