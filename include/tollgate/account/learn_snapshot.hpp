// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/learn_snapshot.hpp: what a snapshot (account/snapshot.hpp, format 3)
// carries of server_model::learn's state (account/learn.hpp), and how a
// restore applies it: the learned words as times relative to the snapshot's
// `now`, checked against the configuration (fits) before anything is
// written, and applied to a state not yet shared, older by the downtime
// (load), so that what was learned survives a restart and nothing restored
// is fresher than it was.
//
// This header is included by learn.hpp after the class; including it alone
// includes learn.hpp first.
#ifndef TOLLGATE_ACCOUNT_LEARN_SNAPSHOT_HPP
#define TOLLGATE_ACCOUNT_LEARN_SNAPSHOT_HPP

#include <tollgate/account/learn.hpp>
#include <tollgate/config.hpp>
#include <tollgate/detail/arith.hpp>

#include <cstdint>
#include <limits>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

template <class Clock>
typename learn_state<Clock>::saved_words learn_state<Clock>::save(nanoseconds now) const noexcept {
    saved_words w;
    for (unsigned k = 0; k < 2; ++k) {
      if (!b_[k]) continue;
      // relaxed: lone values; a snapshot racing a switch keeps one side of it.
      const std::int64_t s = switched_[k].load(std::memory_order_relaxed);
      const std::int64_t g = guard_[k].load(std::memory_order_relaxed);
      if (s != account_policy::not_switched) w.since[k] = positive_difference(now.count(), s);
      // A guard read after a switch this snapshot missed goes with it.
      if (g != account_policy::not_switched && s != account_policy::not_switched)
        w.guard[k] = positive_difference(g, now.count());
      w.lead[k] = positive_difference(shadow_[k].load(std::memory_order_relaxed), now.count());  // relaxed: lone
      w.owed[k] = static_cast<std::uint64_t>(b_[k]->owed(now).count());
    }
    w.margin = static_cast<std::uint64_t>(margin_.load(std::memory_order_relaxed));  // relaxed: a lone value
    w.widenings = widenings_.load(std::memory_order_relaxed);                       // relaxed: a counter
    return w;
  }
  // Whether `w` fits this configuration (the margin within its range, every
  // time within int64, a guard only after a switch).
template <class Clock>
bool learn_state<Clock>::fits(const saved_words& w) const noexcept {
    constexpr std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    if (w.margin < static_cast<std::uint64_t>(base_margin_.count()) || w.margin > static_cast<std::uint64_t>(cap_.count()))
      return false;
    for (unsigned k = 0; k < 2; ++k) {
      if (!b_[k]) continue;
      if (w.lead[k] > top || w.owed[k] > top || (w.guard[k] != none_word && w.guard[k] > top)) return false;
      if (w.since[k] == none_word && w.guard[k] != none_word) return false;  // a guard only after a switch
      // A dimension spaced from the start here may come saved "never
      // switched" from an account built strict (set_limits to a higher tier
      // keeps the start it was built with): load() switches it at the restore.
    }
    return true;
  }
  // Applies checked words to a learn state not yet shared, `down` (the
  // wall-clock time between snapshot and restore) later: switches and
  // guards are that much older, leads and debts that much shorter.
template <class Clock>
void learn_state<Clock>::load(const saved_words& w, nanoseconds now, std::uint64_t down) noexcept {
    constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min();
    // Every store below is relaxed: restore runs before sharing, and the
    // account's release store that ends the restore (setup.hpp) publishes them.
    margin_.store(static_cast<std::int64_t>(w.margin), std::memory_order_relaxed);  // relaxed: see above
    widenings_.store(w.widenings, std::memory_order_relaxed);                       // relaxed: see above
    (void)install(now);  // the margin's rates (accepted at the widest margin by check_limits)
    for (unsigned k = 0; k < 2; ++k) {
      if (!b_[k] || started_spaced_[k]) {
        if (!b_[k]) continue;
        b_[k]->restore_owed(nanoseconds(static_cast<std::int64_t>(w.owed[k] > down ? w.owed[k] - down : 0)), now);
        // Saved on the strict window (never switched): spaced from here on,
        // its bucket charged from the shadow as a switch charges it, so the
        // first spaced request is spaced from the strict traffic before it.
        if (w.since[k] == none_word && w.lead[k] > down)
          charge_lead(k, sat_offset(now.count(), w.lead[k] - down), now.count(), now);
        continue;
      }
      if (w.since[k] != none_word) {
        const std::uint64_t age = sat_add(w.since[k], down);
        const std::uint64_t room = positive_difference(now.count(), lo);
        // relaxed: see above (the restore's release store stands in for switch_to_spaced's).
        switched_[k].store(age >= room ? lo : static_cast<std::int64_t>(static_cast<std::uint64_t>(now.count()) - age),
                           std::memory_order_relaxed);
        claimed_[k].store(true, std::memory_order_relaxed);  // relaxed: see above
        switches_.fetch_add(1, std::memory_order_relaxed);   // relaxed: a counter
      }
      if (w.guard[k] != none_word)  // relaxed: see above
        guard_[k].store(w.guard[k] > down ? sat_offset(now.count(), w.guard[k] - down) : lo, std::memory_order_relaxed);
      if (w.lead[k] > down)  // relaxed: see above
        shadow_[k].store(sat_offset(now.count(), w.lead[k] - down), std::memory_order_relaxed);
      b_[k]->restore_owed(nanoseconds(static_cast<std::int64_t>(w.owed[k] > down ? w.owed[k] - down : 0)), now);
    }
  }

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_LEARN_SNAPSHOT_HPP
