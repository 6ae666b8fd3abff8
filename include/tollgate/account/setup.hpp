// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/setup.hpp: building an account from its configuration, moving it
// to new limits, restoring it from a snapshot, and how it starts taking
// traffic.
//
// Contract. build() makes every dimension the configuration names, or stops
// the account for good with the first error (init_or_stop): an account never
// admits through a dimension it failed to build. set_limits keeps what every
// dimension has counted (account.hpp). restore() applies a snapshot only to
// an account that has not started taking traffic (start_use: one
// compare-exchange from fresh or restored to started), and an admission that
// races it is refused as busy (account.hpp, account/snapshot.hpp).
//
// This header is included by account.hpp after the account; including it
// alone includes account.hpp first.
#ifndef TOLLGATE_ACCOUNT_SETUP_HPP
#define TOLLGATE_ACCOUNT_SETUP_HPP

#include <tollgate/account.hpp>
#include <tollgate/config.hpp>
#include <cstdint>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency>
errc account<Clock, Currency>::init(const config_type& c, nanoseconds origin, error_values& vals) noexcept {
    const errc e = build(c, origin, vals);
    rules_ = account_policy::admission_rules<Currency>::of(c);  // as built (a failed build may lack some)
    rules_.spaced_tokens = (d_.margin_tokens && d_.tpm_b) || learn_.has(1);
    rules_.budget = d_.money.has_value();
    return e;
  }

template <class Clock, class Currency>
errc account<Clock, Currency>::build(const config_type& c, nanoseconds origin, error_values& vals) noexcept {
    cfg_ = c;
    errc e = errc::ok;
    if (c.max_pause < nanoseconds(0) || c.spacing_margin < nanoseconds(0)) return errc::zero_period;
    if ((e = account_policy::check_limits(c, c.rpm, c.tpm, vals)) != errc::ok) return e;
    if (auto v = c.concurrency.value()) {
      d_.conc.emplace(*v, e);
      if (e != errc::ok) return e;
      slots_.allocate(*v, c.lease_timeout, origin);  // once, here: never on the admission path
    }
    if ((e = d_.build(c, origin)) != errc::ok) return e;
    if ((e = learn_.build(c, origin)) != errc::ok) return e;
    if (c.trust_rate_limit_headers) gates_.enable();
    if (c.adaptive_concurrency) {
      if (!d_.conc) return errc::zero_count;
      if ((e = adaptive_.init(d_.conc->limit(), c.concurrency_floor)) != errc::ok) return e;
    }
    const window* ws[credit::kinds] = {d_.strict(0), d_.strict(1), d_.strict(2)};
    for (unsigned k = 0; k < credit::kinds; ++k)
      if (ws[k] && ws[k]->unit() > 0) credit_.set_unit(k, ws[k]->unit());
    window* const own[credit::kinds] = {d_.strict(0), d_.strict(1), d_.strict(2)};
    credit_.bind(own);
    update_chunks();
    // Once, here: limits raised later (set_limits) may need it.
    if (c.per_thread_credit && (d_.rpm_w || d_.tpm_w || d_.tpd_w || d_.conc)) credit_.allocate();
    return errc::ok;
  }

template <class Clock, class Currency>
errc account<Clock, Currency>::set_limits(const tier_row& t, nanoseconds now) noexcept {
    if (!d_.same_dimensions(t)) return errc::zero_count;  // a dimension would appear or disappear
    errc e = errc::ok;
    error_values ignored;
    if ((e = account_policy::check_limits(cfg_, t.rpm, t.tpm, ignored)) != errc::ok) return e;
    if (d_.conc && (e = d_.conc->set_limit(*t.concurrency.value())) != errc::ok) return e;
    if (adaptive_.on()) {
      if ((e = adaptive_.set_max(*t.concurrency.value())) != errc::ok) return e;
      apply_adaptive(adaptive_.limit());
    }
    update_chunks();  // before any later error: credit taken under the old limit goes back
    if ((e = d_.set_rate_limits(cfg_, t, now)) != errc::ok) return e;
    if (learn_.on() && (e = learn_.set_limits(t, now)) != errc::ok) return e;
    cfg_.concurrency = t.concurrency;
    cfg_.rpm = t.rpm;
    cfg_.tpm = t.tpm;
    cfg_.tpd = t.tpd;
    update_chunks();
    return errc::ok;
  }

template <class Clock, class Currency>
account_restore_errc account<Clock, Currency>::restore(std::string_view bytes, nanoseconds now, nanoseconds wall) {
    unsigned char before = use_fresh;
    // acq_rel: acquire pairs with the release store that ended an earlier
    // restore; the claim itself publishes nothing (admissions that see it
    // refuse without reading state). Failure: relaxed, the value is all we use.
    if (!use_.compare_exchange_strong(before, use_restoring, std::memory_order_acq_rel, std::memory_order_relaxed) &&
        (before != use_restored ||
         !use_.compare_exchange_strong(before, use_restoring, std::memory_order_acq_rel, std::memory_order_relaxed)))
      return restore_errc::in_use;
    const restore_errc e = codec::restore(cfg_, d_, credit_, pause_, learn_, gates_, bytes, now, wall);
    // release: pairs with the acquire load in try_admit, so an admission that
    // sees the account fresh or restored sees everything restored. A refused
    // restore changed nothing: the account is as it was.
    use_.store(e == restore_errc::ok ? static_cast<unsigned char>(use_restored) : before, std::memory_order_release);
    return e;
  }

template <class Clock, class Currency>
bool account<Clock, Currency>::start_use() noexcept {
    unsigned char expected = use_fresh;
    // acq_rel: acquire as in try_admit (the restore's release store); a
    // failure sees `restoring`, `restored` or `started`, read with acquire for
    // the same reason when it is `started` by another admission (no state to see).
    if (use_.compare_exchange_strong(expected, use_started, std::memory_order_acq_rel, std::memory_order_acquire))
      return true;
    // acq_rel/acquire: as above, from a restored account.
    if (expected == use_restored &&
        use_.compare_exchange_strong(expected, use_started, std::memory_order_acq_rel, std::memory_order_acquire))
      return true;
    return expected == use_started;
  }

template <class Clock, class Currency>
bool account<Clock, Currency>::renew_slot(lease_type& l, nanoseconds now) noexcept {
    if (!l.holds_ || l.slot_ == lease_type::no_slot) return false;
    if (slots_.renew(l.slot_, l.stamp_, now)) return true;
    l.holds_ = false;  // reaped: the reaper gave the unit back
    return false;
  }

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SETUP_HPP
