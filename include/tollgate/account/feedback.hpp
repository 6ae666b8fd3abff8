// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/feedback.hpp: what the account does with the server's answers.
//
// Contract. on_response(error_info, hint, now) pauses or stops the account
// by pause.hpp's rules; under server_model::learn it first moves the named
// dimension to the margin policy (learn.hpp), so the pause follows the policy
// learned; with adaptive_concurrency a concurrency 429 or an overload lowers
// the concurrency limit (adaptive_concurrency.hpp), and apply_adaptive puts
// a changed limit into the limiter, again if it moved meanwhile, so racing
// changes end at the latest. Thread-safe and lock-free.
//
// This header is included by account.hpp after the account; including it
// alone includes account.hpp first.
#ifndef TOLLGATE_ACCOUNT_FEEDBACK_HPP
#define TOLLGATE_ACCOUNT_FEEDBACK_HPP

#include <tollgate/account.hpp>
#include <tollgate/config.hpp>
#include <tollgate/adaptive_concurrency.hpp>
#include <cstdint>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency>
void account<Clock, Currency>::on_response(const error_info& e, std::optional<nanoseconds> hint, nanoseconds now) noexcept {
    using namespace account_policy;
    const clamped_hint h = clamp_hint(e.kind, hint, e.hint, cfg_.max_pause);
    if (h.capped) counters_.add_capped_hint();
    // Learn first: the pause then follows the policy learned.
    const learn_step learnt = learn_.on() ? learn_.learn(e.kind, now) : learn_step{};
    const response_decision r = pause_after(e.kind, h.hint, waits(now));
    if (r.action == response_action::stop) pause_.stop();
    else if (r.action == response_action::pause) pause_.pause_for(r.pause, now);
    if (learn_.on()) learn_.guard(learnt, nanoseconds(detail::sat_offset(now.count(), static_cast<std::uint64_t>(r.pause.count()))));
    if (adaptive_.on() && account_policy::shrinks_concurrency(e))
      apply_adaptive(adaptive_.on_signal(in_flight(), counters_.snapshot().admitted));
  }

template <class Clock, class Currency>
void account<Clock, Currency>::apply_adaptive(std::optional<std::uint64_t> changed) noexcept {
    if (!changed || !d_.conc) return;
    for (int i = 0; i < 8; ++i) {
      const std::uint64_t l = adaptive_.limit();
      (void)d_.conc->set_limit(l);  // 1 .. 2^32 - 1 (adaptive_concurrency::init)
      if (adaptive_.limit() == l) break;
    }
    update_chunks();
  }

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_FEEDBACK_HPP
