// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// Tickets are move-only (a copy could refund the same units twice). Tests
// that check a ticket carried to another object, or of an older day, gives
// nothing back build such a duplicate field by field, on purpose.
#ifndef TOLLGATE_TESTS_FORGE_TICKET_HPP
#define TOLLGATE_TESTS_FORGE_TICKET_HPP

#include <tollgate/bucket_ticket.hpp>
#include <tollgate/calendar_quota.hpp>
#include <tollgate/keyed/ticket.hpp>

namespace tgtest {
inline tollgate::bucket_ticket forge(const tollgate::bucket_ticket& t) { return {t.end, t.units, t.config, t.issuer}; }
inline tollgate::quota_ticket forge(const tollgate::quota_ticket& t) { return {t.day, t.units, t.quota, t.issuer}; }
inline tollgate::keyed_ticket forge(const tollgate::keyed_ticket& t) {
  return {t.hash, t.end, t.units, t.cls, t.slot, t.claim, t.table};
}
}  // namespace tgtest

#endif  // TOLLGATE_TESTS_FORGE_TICKET_HPP
