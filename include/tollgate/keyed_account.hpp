// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed_account.hpp: one request admitted only when both its key's limit
// (keyed_buckets, keyed_windows, keyed_permits, keyed_budgets) and the
// organisation's account admit it.
//
// All or nothing. The key is asked first, with a ticket; a refusal there
// leaves the account untouched. Then the account; if it refuses, the key's
// units are given back at the same `now` by the ticket rule of
// keyed_buckets::refund, which returns all of them unless another refund on
// that key came between (then what the rule allows: the safe side, as a
// refund that returns less only keeps units counted). So a request refused
// by either side holds nothing of the other. The key's bound then holds for
// the units admitted net of these give-backs when `now` is not behind the
// latest time the key has seen; a thread that stalls between its clock
// reading and the give-back (its `now` lagging by d) may return up to
// ceil(d / T) units early, keyed_buckets::refund's skew rule. In between, for the few steps
// of the account's decision, the key's units are held: a concurrent call on
// the same key can be refused for them (the conservative side).
//
// After both admitted, `key_ticket` holds the key's units: a request that is
// never sent can give them back with keys.refund(key, key_ticket, n, now)
// (the ticket rule; nothing once the key's entry was erased or reclaimed,
// whose new entry owes none of them), and settle or drop the lease as the
// account says. Dropping the ticket keeps the key's units counted (the safe
// side), as dropping a lease keeps the account's reservations; the two may
// be given back or dropped in either order, neither touches the other.
//
// The same for keyed_permits and keyed_budgets: the key's permit or
// reservation is taken first; if the account refuses, it is released at
// once (all of it: a permit or reservation gives back exactly what it
// holds), so a refused request holds nothing of either. After both
// admitted the caller holds both and releases or settles each as usual.
//
// The same for keyed_windows, with a ticket: the key is asked first (a
// refusal leaves the account untouched); if the account refuses, the key's
// units are taken back out of the very slot they were counted in
// (keyed_windows.hpp's give-back rule). Bound: for every key, at most L
// units in every window (t - W, t] of the supplied times, counting the
// units admitted net of these give-backs, exactly, under any interleaving:
// a window's give-back depends on no `now`, so a thread that stalls between
// its clock reading and the give-back returns nothing early (no skew, unlike
// the bucket's). It gives back all the units (given_back == units) unless,
// in between, a call on the same key at a `now` at least W later moved the
// key's window 4 slots past them (they are then counted by no later
// decision) or the key was erased or reclaimed (its new entry owes none of
// them); given_back says what came back. While the account decides, the
// units are held: a concurrent call on the key can be refused for them.
// After both admitted, `key_ticket` can give them back with
// keys.refund(key, key_ticket, n) for a request never sent.
//
// Thread-safe as its two parts are; lock-free when both paths are (the
// account's admission, and keyed admission on a live key).
#ifndef TOLLGATE_KEYED_ACCOUNT_HPP
#define TOLLGATE_KEYED_ACCOUNT_HPP

#include <tollgate/config.hpp>
#include <tollgate/account.hpp>
#include <tollgate/keyed_buckets.hpp>
#include <tollgate/keyed_budgets.hpp>
#include <tollgate/keyed_permits.hpp>
#include <tollgate/keyed_windows.hpp>

#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock = steady_clock, class Currency = usd_tag>
struct keyed_admission {
  keyed_result key{decision::refuse(reason::misconfigured), keyed_status::bad_class};
  bool account_asked = false;                 // false: the key refused, the account was not asked
  admission<Clock, Currency> account;         // the account's answer (and lease) when asked
  std::uint64_t given_back = 0;               // key units returned after an account refusal
  keyed_ticket key_ticket;                    // the key's units when both admitted (else empty)
  bool admitted() const noexcept { return key.admitted() && account_asked && account.decision.admitted(); }
  explicit operator bool() const noexcept { return admitted(); }
};

// Takes `units` from the key's bucket (class `cls` if it claims an entry)
// and admits `r` on the account, both or neither. Key is a 64-bit id or a
// string_view.
template <class Clock, class Currency, class Hash, class Key>
keyed_admission<Clock, Currency> admit_keyed(keyed_buckets<Clock, Hash>& keys, account<Clock, Currency>& acc,
                                             const Key& key, std::size_t cls, std::uint64_t units,
                                             const request& r, nanoseconds now) noexcept {
  keyed_admission<Clock, Currency> out;
  keyed_ticket t;
  out.key = keys.try_acquire(key, cls, units, now, t);
  if (!out.key.admitted()) return out;
  out.account_asked = true;
  out.account = acc.try_admit(r, now);
  if (out.account.decision.admitted()) out.key_ticket = std::move(t);
  else out.given_back = keys.refund(key, t, units, now);
  return out;
}

// Takes `units` from the key's sliding window (class `cls` if it claims an
// entry) and admits `r` on the account, both or neither; the same result as
// for a bucket (given_back: the units taken back out of the window).
template <class Clock, class Currency, class Hash, class Key>
keyed_admission<Clock, Currency> admit_keyed(keyed_windows<Clock, Hash>& keys, account<Clock, Currency>& acc,
                                             const Key& key, std::size_t cls, std::uint64_t units,
                                             const request& r, nanoseconds now) noexcept {
  keyed_admission<Clock, Currency> out;
  keyed_ticket t;
  out.key = keys.try_acquire(key, cls, units, now, t);
  if (!out.key.admitted()) return out;
  out.account_asked = true;
  out.account = acc.try_admit(r, now);
  if (out.account.decision.admitted()) out.key_ticket = std::move(t);
  else out.given_back = keys.refund(key, t, units);
  return out;
}

template <class Clock = steady_clock, class Currency = usd_tag>
struct keyed_permit_admission {
  keyed_permit permit;                  // the key's units when both admitted (else empty)
  keyed_status key = keyed_status::bad_class;  // the key's answer
  bool account_asked = false;           // false: the key refused, the account was not asked
  admission<Clock, Currency> account;   // the account's answer (and lease) when asked
  bool admitted() const noexcept { return key == keyed_status::admitted && account_asked && account.decision.admitted(); }
  explicit operator bool() const noexcept { return admitted(); }
};

// Holds `units` of the key's concurrency limit and admits `r` on the
// account, both or neither.
template <class Clock, class Currency, class Hash, class Key>
keyed_permit_admission<Clock, Currency> admit_keyed(keyed_permits<Hash>& keys, account<Clock, Currency>& acc,
                                                    const Key& key, std::size_t cls, std::uint64_t units,
                                                    const request& r, nanoseconds now) noexcept {
  keyed_permit_admission<Clock, Currency> out;
  keyed_permit p = keys.try_acquire(key, cls, units);
  out.key = p.status();
  if (!p) return out;
  out.account_asked = true;
  out.account = acc.try_admit(r, now);
  if (out.account.decision.admitted()) out.permit = std::move(p);  // else released here
  return out;
}

template <class Clock = steady_clock, class Currency = usd_tag>
struct keyed_budget_admission {
  keyed_reservation<Currency> reservation;  // the key's money when both admitted (else refused or released)
  bool account_asked = false;
  admission<Clock, Currency> account;
  bool admitted() const noexcept { return reservation.admitted() && account_asked && account.decision.admitted(); }
  explicit operator bool() const noexcept { return admitted(); }
};

// Reserves `amount` of the key's budget and admits `r` on the account, both
// or neither. Two clocks: `now` is the account's (its Clock, usually
// steady_clock), `wall` the budget table's (system_clock time, ns since
// 1970-01-01Z: it names the calendar period of a table with one, and a
// refusal by the account releases the reservation at that `wall`). A table
// without a period ignores `wall`.
template <class Clock, class Currency, class Hash, class Key>
keyed_budget_admission<Clock, Currency> admit_keyed(keyed_budgets<Currency, Hash>& keys,
                                                    account<Clock, Currency>& acc, const Key& key, std::size_t cls,
                                                    money<Currency> amount, const request& r, nanoseconds now,
                                                    nanoseconds wall) noexcept {
  keyed_budget_admission<Clock, Currency> out;
  out.reservation = keys.reserve(key, cls, amount, wall);
  if (!out.reservation) return out;
  out.account_asked = true;
  out.account = acc.try_admit(r, now);
  if (!out.account.decision.admitted()) keys.release(out.reservation, wall);
  return out;
}
// The same with the table's time read from system_clock::now() once (so a
// table with a period decides in the wall clock's period; one without
// reads no clock). Pass `wall` above to decide at a time you choose.
template <class Clock, class Currency, class Hash, class Key>
keyed_budget_admission<Clock, Currency> admit_keyed(keyed_budgets<Currency, Hash>& keys,
                                                    account<Clock, Currency>& acc, const Key& key, std::size_t cls,
                                                    money<Currency> amount, const request& r,
                                                    nanoseconds now) noexcept {
  const nanoseconds wall = keys.calendar().period == budget_period::none ? nanoseconds(0) : system_clock::now();
  return admit_keyed(keys, acc, key, cls, amount, r, now, wall);
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_ACCOUNT_HPP
