// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/outcome.hpp: how a call of the Redis account (redis/account.hpp)
// went, beside its decision: the script decided, or the state was held,
// corrupt or of another configuration, or the call failed (and then
// whether the local fallback decided). to_string is defined for every
// value ("?" for one outside the enumeration).
#ifndef TOLLGATE_REDIS_OUTCOME_HPP
#define TOLLGATE_REDIS_OUTCOME_HPP

#include <tollgate/config.hpp>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {

// How a call to Redis went, beside the decision.
enum class outcome : unsigned char {
  ok,            // the script decided (the decision says what)
  held,          // the state was lost: nothing is admitted until the hold ends (decision: wait)
  budget_held,   // the state was lost: the budget refuses until restore_budget
  corrupt,       // a key of the account holds what the script never writes
  bad_call,      // version or mode mismatch (a supplied now to an account not in test mode)
  other_configuration,  // a window's width differs from the one the epoch's counts were made with
  server_error,  // an error reply, an unreachable server or a timeout
  garbage,       // a reply of the wrong shape
  local,         // Redis failed: decided by the local fallback account (fault_mode::local_share)
};
constexpr const char* to_string(outcome o) noexcept {
  switch (o) {
    case outcome::ok: return "ok";
    case outcome::held: return "held after lost state";
    case outcome::budget_held: return "budget held after lost state";
    case outcome::corrupt: return "corrupt state";
    case outcome::bad_call: return "bad call";
    case outcome::other_configuration: return "another window width than the account's state was made with";
    case outcome::server_error: return "server error";
    case outcome::garbage: return "garbage reply";
    case outcome::local: return "decided locally (Redis failed)";
  }
  return "?";
}

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_OUTCOME_HPP
