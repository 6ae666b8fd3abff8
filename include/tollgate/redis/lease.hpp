// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/lease.hpp: a lease of the Redis account (redis/account.hpp). Its
// settle, settle_rejected or drop never blocks and makes no call: it is
// queued in its account and carried by the account's next call (until
// then what it frees stays counted: capacity comes back late, never early).
// A lease the local fallback admitted settles into the local account at
// once; one spent from a chunk (redis/chunk.hpp) queues only a charge or a
// refund (which goes into the held chunk when it is counted with it), no
// release. Each of them is done once: the lease is empty after it, and a
// second call, or one on an empty (default or moved-from) lease, does
// nothing. A lease must not outlive its account.
#ifndef TOLLGATE_REDIS_LEASE_HPP
#define TOLLGATE_REDIS_LEASE_HPP

#include <tollgate/config.hpp>
#include <tollgate/account.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/cost.hpp>
#include <tollgate/money.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/redis/chunk_calls.hpp>
#include <tollgate/redis/fallback.hpp>
#include <tollgate/redis/protocol.hpp>

#include <cstdint>
#include <utility>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {

template <class Executor, class Currency = usd_tag>
class basic_account;

// A lease of the Redis account: settle or drop it (RAII: dropped when it
// goes out of scope unsettled). Moves only.
template <class Executor, class Currency = usd_tag>
class lease {
 public:
  using account_type = basic_account<Executor, Currency>;
  lease() noexcept = default;
  lease(const lease&) = delete;
  lease& operator=(const lease&) = delete;
  lease(lease&& o) noexcept { take(o); }
  lease& operator=(lease&& o) noexcept {
    if (this != &o) {
      drop();
      take(o);
    }
    return *this;
  }
  ~lease() { drop(); }
  explicit operator bool() const noexcept { return acc_ != nullptr; }
  std::uint64_t id() const noexcept { return id_; }
  // The tag of the epoch that made it (see redis/layout.hpp): ids repeat
  // across epochs, the pair never.
  std::uint64_t epoch() const noexcept { return epoch_; }
  std::uint64_t reserved_tokens() const noexcept { return tokens_; }
  money<Currency> reserved_money() const noexcept { return money<Currency>::from_nanos(money_); }

  // Settles the actual usage: tokens beyond the reservation are charged,
  // unused ones refunded when the account refunds; the budget is charged the
  // actual cost (the whole reservation when the cost cannot be computed).
  void settle(const usage& u) {
    if (!acc_) return;
    if (local_) {
      (void)local_.settle(u, std::exchange(acc_, nullptr)->local_now());
      return;
    }
    const std::uint64_t used = detail::sat_add(u.prompt, u.completion);
    std::int64_t actual = money_;  // the whole reservation when the cost cannot be computed
    if (model_) {
      const auto c = cost<Currency>(*model_, u);
      if (c) actual = c.total.nanos();
    }
    if (chunk_) {  // spent from a chunk: its slot and money are the chunk's (redis/chunk.hpp)
      detail_chunk::calls::give_slot(*acc_, epoch_, serial_, id_);
      detail_chunk::calls::end_money(*acc_, epoch_, serial_, money_, actual);
      if (used > tokens_) {
        queued q = base(queued::kind::settle);
        q.lease = 0;
        q.reserved_nanos = 0;
        q.charge_tokens = used - tokens_;
        finish(q);
      } else if (refund_ && used < tokens_) {
        detail_chunk::calls::refund(*std::exchange(acc_, nullptr), epoch_, tpm_slot_, tpd_slot_, tokens_ - used);
      } else {
        acc_ = nullptr;
      }
      return;
    }
    queued q = base(queued::kind::settle);
    if (used > tokens_) q.charge_tokens = used - tokens_;
    else if (refund_ && used < tokens_) q.refund_tokens = tokens_ - used;
    q.actual_nanos = actual;
    finish(q);
  }
  // The request was refused by the server before it ran: the money comes back.
  void settle_rejected() {
    if (!acc_) return;
    if (local_) return local_.settle_rejected(std::exchange(acc_, nullptr)->local_now());
    if (chunk_) {  // its units were spent when it was admitted (the server counted it); its money comes back
      detail_chunk::calls::give_slot(*acc_, epoch_, serial_, id_);
      detail_chunk::calls::end_money(*std::exchange(acc_, nullptr), epoch_, serial_, money_, 0);
      return;
    }
    finish(base(queued::kind::settle_rejected));
  }
  // The slot comes back; the reservations stay.
  void drop() {
    if (!acc_) return;
    if (local_) {
      acc_ = nullptr;
      local_ = local_lease();
      return;
    }
    if (chunk_) {  // its slot (if any) goes back to the chunk, its reservation stays
      detail_chunk::calls::give_slot(*std::exchange(acc_, nullptr), epoch_, serial_, id_);
      return;
    }
    finish(base(queued::kind::drop));
  }
  // Whether the local fallback account admitted it.
  bool is_local() const noexcept { return static_cast<bool>(local_); }
  // Whether it was spent from this object's chunk (no call made; its id is
  // the chunk's slot it holds, 0 without a concurrency limit).
  bool from_chunk() const noexcept { return chunk_; }

 private:
  friend account_type;
  friend struct detail_chunk::calls;
  friend struct detail_fallback::local_calls;
  queued base(queued::kind k) const noexcept {
    queued q;
    q.what = k;
    q.lease = id_;
    q.epoch = epoch_;
    q.reserved_nanos = money_;
    q.tpm_slot = tpm_slot_;
    q.tpd_slot = tpd_slot_;
    q.reserved_tokens = tokens_;
    return q;
  }
  void finish(const queued& q) {
    account_type* a = acc_;
    acc_ = nullptr;
    a->enqueue(q);
  }
  void take(lease& o) noexcept {
    acc_ = std::exchange(o.acc_, nullptr);
    id_ = o.id_;
    epoch_ = o.epoch_;
    tokens_ = o.tokens_;
    money_ = o.money_;
    tpm_slot_ = o.tpm_slot_;
    tpd_slot_ = o.tpd_slot_;
    refund_ = o.refund_;
    model_ = o.model_;
    chunk_ = o.chunk_;
    serial_ = o.serial_;
    local_ = std::move(o.local_);
  }
  using local_lease = tollgate::lease<steady_clock, Currency>;
  account_type* acc_ = nullptr;
  local_lease local_;
  std::uint64_t id_ = 0, epoch_ = 0, tokens_ = 0;
  std::uint64_t serial_ = 0;  // the chunk it was spent from (redis/chunk.hpp)
  std::int64_t money_ = 0, tpm_slot_ = -1, tpd_slot_ = -1;
  bool refund_ = false;
  bool chunk_ = false;
  const model_info* model_ = nullptr;
};

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_LEASE_HPP
