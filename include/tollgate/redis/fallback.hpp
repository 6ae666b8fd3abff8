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
// another could use). A pause or a stop the account object has seen (in a
// reply of Redis: another host's 429 or quota error; or set by its own
// on_response) holds its fallback too: a stop until resume(), a pause until
// its end on the fallback's clock. on_response while Redis cannot be reached
// pauses or stops this object's fallback only: other hosts learn of it only
// through Redis.
#ifndef TOLLGATE_REDIS_FALLBACK_HPP
#define TOLLGATE_REDIS_FALLBACK_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/redis/outcome.hpp>
#include <tollgate/redis/protocol.hpp>
#include <tollgate/tiers.hpp>

#include <cstdint>
#include <optional>
#include <utility>

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

// What Redis last said of a pause or a stop, kept for the fallback.
struct seen_control {
  bool stopped = false;
  std::optional<nanoseconds> paused_until;  // on the fallback's clock
  void pause(nanoseconds until) {
    if (!paused_until || until > *paused_until) paused_until = until;
  }
  // A reply decided at `now` (the fallback's clock): a stop is seen until an
  // admission shows it lifted; a pause's wait until its end.
  template <class Reply>
  void note(const Reply& r, nanoseconds now) {
    if (r.code == script_code::stopped) stopped = true;
    if (r.code == script_code::admitted) stopped = false;
    if (r.code == script_code::wait && (r.refused_bits & static_cast<std::uint16_t>(dimension::paused)) != 0)
      pause(now + detail_protocol::from_us(r.wait_us));
  }
};

// The account's local decisions (redis/account.hpp befriends this).
struct local_calls {
  // The fallback's account, made at its first use; false when there is none.
  template <class Acc>
  static bool ready(Acc& a, nanoseconds now) {
    if (!a.local_cfg_) return false;
    if (!a.local_) {
      errc ec = errc::ok;
      a.local_.emplace(*a.local_cfg_, now, ec);
      if (ec != errc::ok) {
        a.local_cfg_.reset();  // no fallback after all: fail closed
        a.local_.reset();
        return false;
      }
    }
    return true;
  }
  // A local decision for a request assessed in `x` (no budget: there is none).
  template <class Acc, class Request, class Admission>
  static bool admit(Acc& a, const Request& req, Admission& x, nanoseconds now) {
    if (!ready(a, now)) return false;
    x.how = outcome::local;
    x.server_now_us = 0;
    if (a.seen_.stopped) {
      x.refused.add(dimension::stopped);
      x.d = decision::refuse(reason::misconfigured);
      return true;
    }
    if (a.seen_.paused_until && now < *a.seen_.paused_until) {
      x.refused.add(dimension::paused);
      x.d = decision::wait(*a.seen_.paused_until - now);
      return true;
    }
    auto y = a.local_->try_admit(req, now);
    x.d = y.decision;
    x.refused = y.refused;
    if (y) {
      x.lease.acc_ = &a;
      x.lease.tokens_ = y.tokens;
      x.lease.local_ = std::move(y.lease);
    }
    return true;
  }
};
}  // namespace detail_fallback

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_FALLBACK_HPP
