// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// bucket/writers.hpp: token_bucket's writers, none of which takes a lock:
// refunds (by ticket, or the unsafe uncapped form), reset, the
// reconfiguration of the rate and the burst, and construction.
//
// Contract (each function's own is with its declaration, token_bucket.hpp).
// A writer claims the owner word with a number no other claim repeats; one
// that shows no change for TOLLGATE_BUCKET_TAKEOVER_POLLS looks is taken
// over, so a writer that stopped for good (a process killed inside
// set_rate) delays the next one, never blocks it. Every slot field a writer
// writes carries its claim, so a writer taken over cannot finish its change
// over the taker's. Refunds exclude nobody: they check the configuration's
// generation after their CAS, as acquirers do, and undo or charge back a
// stale one. The residual cases are stated in token_bucket.hpp.
//
// This header is included by token_bucket.hpp after the class; including
// it alone includes token_bucket.hpp first.
#ifndef TOLLGATE_BUCKET_WRITERS_HPP
#define TOLLGATE_BUCKET_WRITERS_HPP

#include <tollgate/token_bucket.hpp>
#include <tollgate/config.hpp>
#include <tollgate/bucket_ticket.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/bucket_slots.hpp>
#include <tollgate/detail/gcra_params.hpp>
#include <tollgate/error.hpp>
#include <tollgate/rate.hpp>

#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock>
std::uint64_t token_bucket<Clock>::refund(bucket_ticket& t, std::uint64_t n, nanoseconds now) noexcept {
  if (n > t.units) n = t.units;
  if (n == 0) return 0;
  if (t.issuer != 0 && t.issuer != reinterpret_cast<std::uintptr_t>(this)) return 0;  // another bucket's
  std::uint64_t got = 0;
  std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
  for (;;) {
    const std::size_t i = slot_index(w);
    detail::gcra_params p = slots_.hot(i);
    p.config = slots_.config(i);
    if (p.burst == 0 || p.config != t.config) break;
    const std::uint64_t tat = w & L::max_ticks;
    const std::uint64_t k = detail::ticket_refundable(t, n, now.count(), origin_, p, tat, ticks(now, p));
    if (k == 0) break;
    if (lower(w, i, p, k * p.interval)) {
      got = k;
      t.end -= k * p.interval;  // no wrap (k fits in t.end - now); its intervals end sooner
      break;
    }
  }
  t.units -= got;
  return got;
}

template <class Clock>
std::uint64_t token_bucket<Clock>::refund(std::uint64_t n, nanoseconds now) noexcept {
  if (n == 0) return 0;
  std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
  for (;;) {
    const std::size_t i = slot_index(w);
    const detail::gcra_params p = slots_.hot(i);
    if (p.burst == 0) return 0;
    const std::uint64_t now_t = ticks(now, p);
    const std::uint64_t tat = w & L::max_ticks;
    if (tat <= now_t) return 0;  // already full at `now`
    const std::uint64_t back = detail::sat_mul(n, p.interval);
    const std::uint64_t next = tat - now_t > back ? tat - back : now_t;
    if (lower(w, i, p, tat - next)) return (tat - next) / p.interval;
  }
}

template <class Clock>
void token_bucket<Clock>::reset(nanoseconds now, start st) noexcept {
  for (;;) {
    const std::uint64_t id = claim();
    if (id == 0) continue;  // taken over while fencing: claim again
    const auto mine = [&] { return writer_.holds(id); };
    std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
    detail::gcra_params p = params_of(w);
    if (p.burst == 0) {
      writer_.unlock(id);
      return;
    }
    const std::size_t cur = slot_index(w), next = detail::bucket_slots::next(cur);
    const rate r = slots_.rate_of(cur);
    p.epoch = now.count() > origin_ ? now.count() : origin_;
    // A new installation (stalled callers see it by the generation) and a
    // new configuration: what was owed is forgotten, so no ticket from
    // before may give back against what comes after.
    p.gen = id;
    p.config = detail::fresh_bucket_config();
    if (!slots_.store(next, p, r, mine)) continue;  // taken over: the taker fills it
    const std::uint64_t nw = (static_cast<std::uint64_t>(next) << L::tat_bits) | (st == start::full ? 0 : p.tau);
    bool done = false;
    while (mine() && slot_index(w) == cur) {
      // release: publishes the slot, as in reconfigure_locked(); acquire
      // on failure: reload as usual. Whatever an acquirer did meanwhile is
      // forgotten too (one that read the old slot fails its CAS or its
      // generation check).
      if (state_.compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire)) {
        done = true;
        break;
      }
    }
    if (!done) continue;
    slots_.set_hint(next);
    writer_.unlock(id);
    return;
  }
}

template <class Clock>
bool token_bucket<Clock>::lower(std::uint64_t& w, std::size_t i, const detail::gcra_params& p, std::uint64_t by) noexcept {
  const std::uint64_t nw = w - by;  // by <= the TAT: the tag bits stay
  // acq_rel / acquire: as in acquire(); the generation check after it is
  // ordered by the acquire half.
  if (!state_.compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire)) return false;
  if (__builtin_expect(slots_.gen(i) == p.gen, 1)) return true;
  std::uint64_t cur = nw;
  // acq_rel / acquire: as above.
  if (state_.compare_exchange_strong(cur, w, std::memory_order_acq_rel, std::memory_order_acquire)) return false;
  for (;;) {  // overtaken: owe the ticks again, in whatever slot is in force now
    const std::uint64_t tat = cur & L::max_ticks;
    const std::uint64_t back = tat + by > L::max_ticks ? L::max_ticks : tat + by;
    // acq_rel / acquire: as above.
    if (state_.compare_exchange_weak(cur, (cur & ~L::max_ticks) | back, std::memory_order_acq_rel,
                                     std::memory_order_acquire))
      break;
  }
  w = cur;
  return false;
}

template <class Clock>
errc token_bucket<Clock>::init(rate r, std::uint64_t burst, nanoseconds origin, start st) noexcept {
  origin_ = origin.count();
  detail::gcra_params p{};
  const errc e = detail::make_gcra_params(r, burst, p);
  p.epoch = origin_;
  p.gen = 1;  // the construction's claim number
  p.config = detail::fresh_bucket_config();  // not another bucket's (bucket_ticket.hpp)
  if (e != errc::ok) {  // slot 0 stays zero but its epoch: burst 0 means misconfigured
    slots_.init(0, detail::gcra_params{0, 0, 0, 0, false, origin_, 1, 0}, rate());
    return e;
  }
  slots_.init(0, p, r);
  // relaxed: construction happens before any other thread can see the
  // object (publishing it is the user's synchronisation).
  state_.store(st == start::full ? 0 : p.tau, std::memory_order_relaxed);
  return errc::ok;
}

template <class Clock>
errc token_bucket<Clock>::reconfigure_locked(std::uint64_t id, const rate* nr, const std::uint64_t* nb, nanoseconds now,
                                              bool& lost) noexcept {
  const auto mine = [&] { return writer_.holds(id); };
  std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
  const std::size_t cur = slot_index(w);
  // Nobody rewrites the slot in force, so these reads are stable.
  const detail::gcra_params cp = params_of(w);
  const rate r = nr ? *nr : slots_.rate_of(cur);
  const std::uint64_t b = nb ? *nb : cp.burst;
  detail::gcra_params np{};
  const errc e = cp.burst == 0 ? errc::ok : detail::make_gcra_params(r, b, np);
  if (cp.burst == 0 || e != errc::ok) {  // a misconfigured bucket stays so
    writer_.unlock(id);
    return e;
  }
  np.epoch = detail::gcra_epoch_for(np, cp.epoch, now.count());
  if (!nr && !nb && np.epoch == cp.epoch) {  // an epoch move that another writer already made
    writer_.unlock(id);
    return errc::ok;
  }
  // An epoch move keeps the configuration (tickets stay good: it is exact).
  np.config = nr || nb ? detail::fresh_bucket_config() : cp.config;
  np.gen = id;
  const std::size_t next = detail::bucket_slots::next(cur);
  if (!slots_.store(next, np, r, mine)) {
    lost = true;
    return errc::ok;
  }
  for (;;) {
    // Taken over (or, past a takeover, the word came back to a value we
    // read and another slot is in force): the taker decides.
    if (!mine() || slot_index(w) != cur) {
      lost = true;
      return errc::ok;
    }
    const std::uint64_t nt = detail::gcra_convert_tat(w & L::max_ticks, cp, np, now.count());
    // release: publishes the slot written above to every reader that
    // acquires a word carrying its tag. acquire on failure: reload as usual.
    if (state_.compare_exchange_weak(w, (static_cast<std::uint64_t>(next) << L::tat_bits) | nt,
                                     std::memory_order_acq_rel, std::memory_order_acquire))
      break;
  }
  slots_.set_hint(next);
  writer_.unlock(id);
  return errc::ok;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_BUCKET_WRITERS_HPP
