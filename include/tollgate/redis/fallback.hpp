// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/fallback.hpp: what the Redis account (redis/account.hpp) does when
// a call to Redis fails, and the configuration of its local fallback.
// Contract (the whole rule, with its bound per host, is in account.hpp):
// fault_mode::local_share decides in an in-process account holding
// share_percent of each limit, rounded down, without overflow for any
// limit; a share of 0 or above 100, a limit that rounds to 0, or a budget
// (budgets always fail closed) leaves no fallback (an empty optional).
// The fallback's account gives no per-thread credit (no thread holds units
// another could use).
#ifndef TOLLGATE_REDIS_FALLBACK_HPP
#define TOLLGATE_REDIS_FALLBACK_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/config.hpp>
#include <tollgate/tiers.hpp>

#include <cstdint>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {

// What the account does when a call to Redis fails (see the contract).
enum class fault_mode : unsigned char {
  fail_closed,  // refuse (outcome::server_error / garbage)
  local_share,  // decide in a local account holding share_percent of each limit; budgets still fail closed
};

// The fallback's limits: share_percent of each, rounded down; no budget
// (budgets fail closed), so none when the account has one.
namespace detail_fallback {
template <class Currency>
std::optional<basic_account_config<Currency>> local_share(const basic_account_config<Currency>& c, unsigned pct) {
  using config_type = basic_account_config<Currency>;
  if (pct == 0 || pct > 100 || c.budget) return std::nullopt;
  config_type l = c;
  l.per_thread_credit = false;  // exact: no thread holds units another could use
  for (limit* x : {&l.concurrency, &l.rpm, &l.tpm, &l.tpd}) {
    if (!x->is_finite()) continue;
    const std::uint64_t v = *x->value();
    // v * pct / 100 without overflow (v < 2^64, pct <= 100).
    const std::uint64_t s = v / 100 * pct + v % 100 * pct / 100;
    if (s == 0) return std::nullopt;
    *x = limit(s);
  }
  return l;
}
}  // namespace detail_fallback

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_FALLBACK_HPP
