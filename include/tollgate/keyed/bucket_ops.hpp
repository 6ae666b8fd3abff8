// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/bucket_ops.hpp: keyed_buckets' side of the entry protocol of
// keyed/claim.hpp — its admission without a pin, when a bucket may be reclaimed, how a claimed one
// starts, refunds into it, and the peeks. Included by keyed_buckets.hpp
// after the class, whose header states the contract and the bound.
#ifndef TOLLGATE_KEYED_BUCKET_OPS_HPP
#define TOLLGATE_KEYED_BUCKET_OPS_HPP

#include <tollgate/keyed_buckets.hpp>

TOLLGATE_BEGIN_NAMESPACE

// An admission on an entry of the key (its claim generation gen): the
// bucket's CAS is its one read-modify-write. Unpinned (found by find()),
// it stops at a seal (`how` = sealed: the caller pins the entry and comes
// back) and at a sign that the entry is no longer that incarnation (`how`
// = moved: nothing of this call counts for the key, the caller looks
// again). Pinned, no claim can land, so a seal (of an evictor that read
// the control word before our pin) is replaced by the state it stands for.
template <class Clock, class Hash>
decision keyed_buckets<Clock, Hash>::admit_live(entry& e, std::uint64_t gen, const detail::gcra_params& p,
                                                std::uint64_t n, nanoseconds now, std::uint64_t& end, bool pinned,
                                                live_how& how) noexcept {
  how = live_how::done;
  const std::uint64_t now_t = ticks(now, p);
  if (n > p.burst || past_t(now_t, p)) return decision::refuse(reason::exceeds_capacity);
  detail::atomic<std::uint64_t>& tat = e.s.tat;
  // acquire: pairs with the release of a claimer's start store (its
  // release sequence: every later write of the word is an RMW), so a
  // value a new occupant wrote comes with that occupant's generation,
  // which the checks below then read.
  std::uint64_t w = tat.load(std::memory_order_acquire);
  for (;;) {
    if (sealed(w)) {
      if (!pinned) {
        how = live_how::sealed;
        return decision::refuse(reason::busy);
      }
      // acq_rel / acquire: as the admission's CAS below; on failure w is
      // the word's value (the sealer's own undo came first).
      const std::uint64_t fresh = start_ticks(p);
      if (tat.compare_exchange_strong(w, fresh, std::memory_order_acq_rel, std::memory_order_acquire)) w = fresh;
      continue;
    }
    const std::uint64_t base = w > now_t ? w : now_t;  // <= 2^62 + tau: no overflow below
    const std::uint64_t need = base + n * p.interval;
    if (need - now_t > p.tau) {
      // relaxed: ordered after the acquire that read w (above).
      if (e.claim.load(std::memory_order_relaxed) != gen) break;
      return wait_or_never(now, ticks_to_ns(need - now_t - p.tau, p), p);
    }
    // acq_rel / acquire: the admission; acquire as the load above (also
    // on failure, for the next round's w), release so an evictor's seal
    // CAS and a snapshot that read our value see what came before it.
    if (tat.compare_exchange_weak(w, need, std::memory_order_acq_rel, std::memory_order_acquire)) {
      // relaxed: after the acquire of our CAS.
      if (e.claim.load(std::memory_order_relaxed) == gen) {
        end = need;
        // relaxed: restore() is not run beside admissions (it only tells
        // a table used before it from one that was not).
        if (!admitted_.load(std::memory_order_relaxed)) admitted_.store(true, std::memory_order_relaxed);
        return decision::admit();
      }
      // The entry was claimed again: our CAS charged the erased bucket
      // before that claim, or the new occupant (our w equal, by chance, to
      // its start). Not undone: the new occupant may have taken units on
      // top, and a CAS back cannot tell our charge from an equal value
      // (the interleaving checker's erase scenario found exactly that). It
      // keeps the charge, the conservative side.
      break;
    }
    // relaxed: after the failed CAS's acquire. Not needed for the bound
    // (the check after a successful CAS catches a new occupant) but it
    // spares that occupant a charge.
    if (e.claim.load(std::memory_order_relaxed) != gen) break;
  }
  how = live_how::moved;
  return decision::refuse(reason::busy);
}

template <class Clock, class Hash>
std::uint64_t keyed_buckets<Clock, Hash>::refund_hash(std::uint64_t h, keyed_ticket& t, std::uint64_t n,
                                                       nanoseconds now) noexcept {
  if (n > t.units) n = t.units;
  if (n == 0 || t.hash != h || t.table != id_ || t.cls >= params_.size()) return 0;  // id_: see restore()
  std::size_t slot = 0, cls = 0;
  if (!slots_.pin(h, slot, cls)) return 0;
  std::uint64_t got = 0;
  entry& e = slots_[slot];
  // relaxed: as in acquire_hash(); another incarnation of the key (or of
  // the entry) has another slot or claim generation.
  if (cls == t.cls && slot == t.slot && e.claim.load(std::memory_order_relaxed) == t.claim) {
    const detail::gcra_params& p = params_[cls];
    const std::uint64_t now_t = ticks(now, p);
    detail::atomic<std::uint64_t>& tat = e.s.tat;
    std::uint64_t w = tat.load(std::memory_order_relaxed);  // relaxed: stable in meaning while pinned
    for (;;) {
      if (sealed(w)) {
        // Our pin moved the control word on, so the sealer's claim fails:
        // put back the state the seal stands for (acq_rel / acquire: as
        // admit_live's; on failure w is the word's value), then go on.
        const std::uint64_t fresh = start_ticks(p);
        if (tat.compare_exchange_strong(w, fresh, std::memory_order_acq_rel, std::memory_order_acquire)) w = fresh;
        continue;
      }
      if (w <= now_t || t.end <= now_t) break;  // full at `now`, or its intervals are behind
      std::uint64_t cap = detail::sat_mul(n, p.interval);
      if (t.end - now_t < cap) cap = t.end - now_t;
      if (w - now_t < cap) cap = w - now_t;
      const std::uint64_t k = cap / p.interval;
      if (k == 0) break;
      // relaxed / relaxed: the word is the whole bucket, and its generation
      // cannot change while we are pinned.
      if (tat.compare_exchange_weak(w, w - k * p.interval, std::memory_order_relaxed, std::memory_order_relaxed)) {
        got = k;
        t.end -= k * p.interval;
        break;
      }
    }
  }
  unpin(e);
  t.units -= got;
  return got;
}

// A bucket entry is reusable when it is full at the claimer's `now` (TAT
// not after it) or past its class's horizon (it refuses everything there,
// as a fresh one does), or sealed (full at an earlier evictor's `now`, which
// the latest time covers); otherwise it notes when it will be (`soonest`,
// ns). The claimer seals the one it picks before its claim CAS and
// restores it if that CAS fails (keyed_buckets.hpp states the protocol). A
// claimed bucket starts with its TAT at the latest time any claim has seen
// (keyed/claim.hpp says why that loses nothing owed).
template <class Clock, class Hash>
detail::claim_outcome keyed_buckets<Clock, Hash>::claim(std::uint64_t h, std::size_t cls, nanoseconds now,
                                                        std::size_t& slot, std::uint64_t& soonest,
                                                        bool& known) noexcept {
  const std::uint64_t since = detail::positive_difference(now.count(), origin_);
  auto reusable = [&](entry& e, std::size_t c) {
    const detail::gcra_params& p = params_[c];
    // acquire: pairs with the unpins (release) that precede the control
    // word the claim read with no pins (keyed/claim.hpp).
    const std::uint64_t tat = e.s.tat.load(std::memory_order_acquire);
    const std::uint64_t now_t = ticks(now, p);
    if (sealed(tat)) {
      // A seal whose claimer may still claim (it names the control word
      // as it is) is passed; its claimer finishes, or the key's next
      // admission pins the entry, which makes the seal a stale one.
      // relaxed: a filter; seize() checks again.
      return !pending(tat, e.ctl.load(std::memory_order_relaxed));
    }
    if (tat <= now_t || past_t(now_t, p)) return true;
    // Full when its TAT is reached, or once past its horizon.
    std::uint64_t d = static_cast<std::uint64_t>(ticks_to_ns(tat - now_t, p).count());
    const std::uint64_t end = static_cast<std::uint64_t>(detail::gcra_horizon_ns(p)) + 1 - since;  // > 0: not past
    if (end < d) d = end;
    if (d < soonest) soonest = d;
    known = true;
    return false;
  };
  auto start = [&](entry& e) {
    // release: published by the publish CAS (seq_cst, a release) for
    // pinners, and a release of its own for admit_live(), whose acquire
    // of it orders its generation check after our claim.
    e.s.tat.store(start_ticks(params_[cls]), std::memory_order_release);
  };
  std::uint64_t was = 0, mine = 0;  // the picked bucket's word before our seal, and our seal
  auto seize = [&](entry& e, std::uint64_t c) {
    const detail::gcra_params& p = params_[class_of(c)];
    // acquire: as reusable's load.
    std::uint64_t w = e.s.tat.load(std::memory_order_acquire);
    // Another claimer's seal on the same control word: its claim may still
    // land. Not defeated (two claimers of different keys doing that to
    // each other could go on for ever): the scan passes it (reusable).
    if (sealed(w) && pending(w, c)) return false;
    const std::uint64_t now_t = ticks(now, p);
    if (!sealed(w) && w > now_t && !past_t(now_t, p)) return false;  // owes again: not ours to take
    was = w;
    // relaxed: only the count's atomicity matters (each ticket drawn once).
    mine = seal_of(c, seals_.fetch_add(1, std::memory_order_relaxed));
    // acq_rel / relaxed: the seal. It succeeds only on the value we
    // checked, so no admission came between; acquire pairs with the
    // admissions' releases as reusable's load.
    return e.s.tat.compare_exchange_strong(w, mine, std::memory_order_acq_rel, std::memory_order_relaxed);
  };
  auto unseize = [&](entry& e, std::uint64_t) {
    // Our claim failed: our seal back to the value it replaced. acq_rel /
    // relaxed: our seal is ours alone (its ticket), so while it stands
    // nothing changed the bucket; if an admission replaced it first, this
    // fails and changes nothing.
    std::uint64_t x = mine;
    (void)e.s.tat.compare_exchange_strong(x, was, std::memory_order_acq_rel, std::memory_order_relaxed);
  };
  return slots_.claim(h, cls, since, slot, reusable, start, seize, unseize);
}

// Reads the key's TAT and class without pinning.
template <class Clock, class Hash>
bool keyed_buckets<Clock, Hash>::peek_tat(std::uint64_t h, std::uint64_t* tat, std::size_t* cls) const noexcept {
  std::size_t c = 0;
  const entry* e = slots_.peek(h, c);
  if (e == nullptr) return false;
  if (tat != nullptr) *tat = e->s.tat.load(std::memory_order_relaxed);  // relaxed: a peek
  if (cls != nullptr) *cls = c;
  return true;
}

template <class Clock, class Hash>
std::uint64_t keyed_buckets<Clock, Hash>::available_hash(std::uint64_t h, std::size_t cls,
                                                         nanoseconds now) const noexcept {
  if (cls >= params_.size()) return 0;
  std::uint64_t tat = 0;
  std::size_t c = cls;
  if (!peek_tat(h, &tat, &c)) return past(now, params_[cls]) ? 0 : params_[cls].burst;
  const detail::gcra_params& p = params_[c];
  if (past(now, p)) return 0;
  if (sealed(tat)) tat = start_ticks(p);  // what the seal stands for
  const std::uint64_t now_t = ticks(now, p);
  const std::uint64_t owed = tat > now_t ? tat - now_t : 0;
  return owed >= p.tau ? 0 : (p.tau - owed) / p.interval;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_BUCKET_OPS_HPP
