// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// tollgate.hpp: the whole library.
#ifndef TOLLGATE_TOLLGATE_HPP
#define TOLLGATE_TOLLGATE_HPP

#include <tollgate/config.hpp>
#include <tollgate/error.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/rate.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/token_bucket.hpp>
#include <tollgate/sliding_window.hpp>
#include <tollgate/calendar_quota.hpp>
#include <tollgate/concurrency.hpp>
#include <tollgate/money.hpp>
#include <tollgate/tiers.hpp>
#include <tollgate/models.hpp>
#include <tollgate/cost.hpp>
#include <tollgate/budget.hpp>
#include <tollgate/estimate.hpp>
#include <tollgate/http.hpp>
#include <tollgate/retry.hpp>
#include <tollgate/account.hpp>
#include <tollgate/waiting_room.hpp>
#include <tollgate/keyed_buckets.hpp>
#include <tollgate/keyed_permits.hpp>
#include <tollgate/keyed_budgets.hpp>
#include <tollgate/keyed_windows.hpp>
#include <tollgate/keyed_account.hpp>
#include <tollgate/keyed_overflow.hpp>
#include <tollgate/shared_region.hpp>
#include <tollgate/shared_account.hpp>

#endif  // TOLLGATE_TOLLGATE_HPP
