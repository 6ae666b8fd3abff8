// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/shared_cold.hpp: the shared account's cold paths (shared_account.hpp
// declares them and includes this at its end; including this header alone
// includes the account): the credit set-up at open, a thread's first
// credit line, the lines (and kept slot words) a handle gives back, and a
// scan of the slot words when the account runs out of them. Out of the
// admission path, out of line: none is called by an admission that finds a
// line and a free (or kept) slot word.
#ifndef TOLLGATE_ACCOUNT_SHARED_COLD_HPP
#define TOLLGATE_ACCOUNT_SHARED_COLD_HPP

#include <tollgate/shared_account.hpp>

#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
unsigned shared_account<Clock, Currency, Slots, Lines>::claim_line(unsigned sh, nanoseconds now) noexcept {
  const std::int64_t at = map_.retry_at[sh];
  // Retried at most once per retry_ of supplied time (and whenever time goes back).
  std::int64_t ahead = 0;
  if (at != INT64_MIN && now.count() < at && !__builtin_sub_overflow(at, now.count(), &ahead) && ahead <= retry_)
    return static_cast<unsigned>(Lines);
  auto& lines = s_->credit;
  std::uint64_t word = 0;
  std::size_t i = lines.claim(opts_.identity, detail::probe_start(), word);
  if (i == lines.none && opts_.alive) {
    const std::uint64_t me = opts_.identity;
    (void)lines.reap(credit_, [this, me](std::uint64_t who) { return who == me || opts_.alive(who, opts_.context); });
    i = lines.claim(opts_.identity, detail::probe_start(), word);
  }
  if (i == lines.none) {
    map_.retry_at[sh] = detail::sat_offset(now.count(), static_cast<std::uint64_t>(retry_));
    return static_cast<unsigned>(Lines);
  }
  credit_.forget(static_cast<unsigned>(i));  // a dead owner's half-written fields, or nothing
  map_.line[sh] = static_cast<std::uint32_t>(i);
  map_.word[sh] = word;
  cache_.set_owned(sh);  // its shelf may now keep slot words (shared_slot_cache.hpp)
  return static_cast<unsigned>(i);
}

// The chunks and the lines: credit only where some window grants a chunk
// (credit.hpp's chunk_of for this many lines: smaller limits run exactly as
// without credit) or the concurrency limit a kept slot word.
template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
void shared_account<Clock, Currency, Slots, Lines>::set_up_credit() noexcept {
  map_.clear();
  cache_.forget_all();  // (none kept: release_lines ran first)
  cache_.cap = 0;
  if (!s_->credit_on) return;
  limiters& d = s_->d;
  typename credit::window_type* const ws[credit::kinds] = {d.strict(0), d.strict(1), d.strict(2)};
  credit_.bind(ws);
  bool any = false;
  for (unsigned k = 0; k < credit::kinds; ++k)
    if (ws[k] && ws[k]->unit() > 0) {
      credit_.set_unit(k, ws[k]->unit());
      any = any || credit::chunk_of(*ws[k], static_cast<unsigned>(Lines)) > 0;
    }
  const typename credit::window_type* cws[credit::kinds] = {ws[0], ws[1], ws[2]};
  credit_.update(true, cws, 0);  // concurrency credit is the kept slot words'
  cache_.cap = detail::shared_slot_cache::cap_for(s_->slots.limit, Lines);
  // Lines for the windows' credit or for kept words: either needs an owner
  // per line, which bounds what all users hold (shared_slot_cache.hpp).
  if (any || cache_.cap > 0) credit_.place(s_->credit.lines, static_cast<unsigned>(Lines));
}

// Gives each line this handle's process owns its credit back and frees it.
template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
void shared_account<Clock, Currency, Slots, Lines>::release_lines() noexcept {
  if (s_ == nullptr || needs_claim() || !credit_.enabled()) {
    map_.clear();
    cache_.forget_all();  // none kept (no line), or the parent's
    return;
  }
  cache_.give_all(s_->slots);  // before the lines: the words are kept only under a line
  limiters& d = s_->d;
  typename credit::window_type* ws[credit::kinds] = {d.strict(0), d.strict(1), d.strict(2)};
  for (unsigned sh = 0; sh < detail::thread_shards; ++sh) {
    const std::uint32_t i = map_.line[sh];
    if (i == detail::shared_credit_map::no_line) continue;
    (void)credit_.give_back(ws, i);
    (void)s_->credit.release(i, map_.word[sh]);
  }
  map_.clear();
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
void shared_account<Clock, Currency, Slots, Lines>::reap(nanoseconds now) noexcept {
  if (interval_ <= 0 && !(opts_.alive || s_->slots.timeout > 0)) return;
  std::uint64_t by_deadline = 0, by_death = 0;
  const std::uint64_t me = opts_.identity;
  auto alive = [this, me](std::uint64_t who) {
    return who == me || opts_.alive == nullptr || opts_.alive(who, opts_.context);
  };
  s_->slots.reap(now, interval_, alive, by_deadline, by_death);
  // relaxed: statistics.
  if (by_deadline) s_->reclaimed_deadline.fetch_add(by_deadline, std::memory_order_relaxed);
  if (by_death) s_->reclaimed_dead.fetch_add(by_death, std::memory_order_relaxed);
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SHARED_COLD_HPP
