// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/claim.hpp: the entry protocol of keyed_buckets — pinning a key's
// live entry, refunds into it, claiming a free or full entry for a new
// key, erasing, and the peeks. Included by keyed_buckets.hpp after the class, whose header states
// the contract, the bound and the control word's layout; each step below
// says which atomic operation it pairs with.
#ifndef TOLLGATE_KEYED_CLAIM_HPP
#define TOLLGATE_KEYED_CLAIM_HPP

#include <tollgate/keyed_buckets.hpp>

TOLLGATE_BEGIN_NAMESPACE

// Finds the key's live entry and pins it (one more admission in progress,
// version advanced). The entry's hash is read between a load of the
// control word and a CAS that expects it unchanged: a new occupant writes
// its hash only after a claim CAS that advances the version, and our CAS
// (release) precedes that claim CAS (acquire) in the word's order, so the
// hash we compared cannot be the new occupant's.
template <class Clock, class Hash>
bool keyed_buckets<Clock, Hash>::pin(std::uint64_t h, std::size_t& slot, std::size_t& cls) noexcept {
  const std::size_t home = home_of(h);
  for (std::size_t i = 0; i < window_; ++i) {
    const std::size_t s = at(home, i);
    entry& e = entries_[s];
    // acquire: pairs with the publish store (release) of the occupant, so
    // its hash and initial TAT are visible.
    std::uint64_t c = e.ctl.load(std::memory_order_acquire);
    for (;;) {
      const std::uint64_t st = state_of(c);
      // Slots never return to empty, and a claim takes the first candidate
      // of its window, so no live entry of this key lies past an empty
      // one. (A stale read only sends us to claim(), which rechecks.)
      if (st == st_empty) return false;
      // relaxed: validated by the CAS below, as explained above.
      if (st != st_live || e.hash.load(std::memory_order_relaxed) != h) break;
      if ((c & pin_mask) == pin_mask) {  // 32767 admissions in progress: wait for one
        std::this_thread::yield();
        c = e.ctl.load(std::memory_order_acquire);  // acquire: as above
        continue;
      }
      // acq_rel: release orders our hash read before any later claim CAS
      // (acquire) on this word; acquire pairs with the publish store so
      // the bucket's value is visible. acquire on failure: as the load.
      if (e.ctl.compare_exchange_weak(c, c + pin_one + ver_one, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
        slot = s;
        cls = class_of(c);
        return true;
      }
    }
  }
  return false;
}

// Gives back what the ticket rule allows into the entry the ticket charged
// (keyed_buckets::refund states the rule).
template <class Clock, class Hash>
std::uint64_t keyed_buckets<Clock, Hash>::refund_hash(std::uint64_t h, keyed_ticket& t, std::uint64_t n,
                                                       nanoseconds now) noexcept {
  if (n > t.units) n = t.units;
  if (n == 0 || t.hash != h || t.table != id_ || t.cls >= params_.size()) return 0;  // id_: see restore()
  std::size_t slot = 0, cls = 0;
  if (!pin(h, slot, cls)) return 0;
  std::uint64_t got = 0;
  // relaxed: as in acquire_hash(); another incarnation of the key (or of
  // the entry) has another slot or claim generation.
  if (cls == t.cls && slot == t.slot && entries_[slot].claim.load(std::memory_order_relaxed) == t.claim) {
    const detail::gcra_params& p = params_[cls];
    const std::uint64_t now_t = ticks(now, p);
    detail::atomic<std::uint64_t>& tat = entries_[slot].tat;
    std::uint64_t w = tat.load(std::memory_order_relaxed);  // relaxed: as in admit()
    for (;;) {
      if (w <= now_t || t.end <= now_t) break;  // full at `now`, or its intervals are behind
      std::uint64_t cap = detail::sat_mul(n, p.interval);
      if (t.end - now_t < cap) cap = t.end - now_t;
      if (w - now_t < cap) cap = w - now_t;
      const std::uint64_t k = cap / p.interval;
      if (k == 0) break;
      // relaxed / relaxed: as in admit().
      if (tat.compare_exchange_weak(w, w - k * p.interval, std::memory_order_relaxed, std::memory_order_relaxed)) {
        got = k;
        t.end -= k * p.interval;
        break;
      }
    }
  }
  unpin(entries_[slot]);
  t.units -= got;
  return got;
}

// The latest `now` seen by any claim, in ns: the start of claimed
// entries, so that a key cannot get units twice by coming back earlier.
template <class Clock, class Hash>
void keyed_buckets<Clock, Hash>::note_time(nanoseconds now) noexcept {
  const std::uint64_t t = detail::positive_difference(now.count(), origin_);
  // relaxed: the value travels to a later claimer of a key we evict
  // through our claim CAS (sequenced after this) and that claimer's scan
  // load of the same control word (seq_cst, an acquire; every later
  // change of the word is an RMW, so the release sequence holds), which
  // precedes its read in start_time().
  std::uint64_t w = latest_.load(std::memory_order_relaxed);
  // relaxed / relaxed: a max, only ever raised.
  while (w < t && !latest_.compare_exchange_weak(w, t, std::memory_order_relaxed, std::memory_order_relaxed)) {
  }
}
template <class Clock, class Hash>
std::uint64_t keyed_buckets<Clock, Hash>::start_time() const noexcept {
  return latest_.load(std::memory_order_relaxed);  // relaxed: see note_time()
}

// Claims an entry of the window for the key, published pinned; or says
// to retry (the key appeared, or our claim lost a same-key race) or that
// the window is full of live entries (with the time until the first is
// full again).
//
// Two claimers of one key must not both publish. Each, owning its entry,
// writes TAT and hash, then marks it hashed (seq_cst CAS), then scans the
// window (seq_cst loads) for the key: in the single total order of those
// steps the later marker's scan sees the earlier one's mark (or its live
// entry). Seeing a live entry of the key, a claimer withdraws its own;
// seeing another hashed claim of the key, it withdraws that one (a CAS on
// its control word: its owner's publish CAS then fails, and it retries
// and finds ours). So two claims never both publish, and no claimer
// waits for another: a stalled claim is withdrawn by the next claimer of
// its key. (Two claimers that withdraw each other both retry: claims of
// one new key are obstruction-free, not lock-free.)
template <class Clock, class Hash>
typename keyed_buckets<Clock, Hash>::claim_outcome keyed_buckets<Clock, Hash>::claim(std::uint64_t h, std::size_t cls,
                                                                                   nanoseconds now, std::size_t& slot,
                                                                                   nanoseconds& wait,
                                                                                   bool& known) noexcept {
  const std::size_t home = home_of(h);
  constexpr std::size_t none = ~std::size_t{0};
  std::size_t pick = none, pick_i = 0;
  std::uint64_t pick_c = 0;
  known = false;
  std::uint64_t soonest = ~std::uint64_t{0};
  for (std::size_t i = 0; i < window_; ++i) {
    const std::size_t s = at(home, i);
    entry& e = entries_[s];
    // seq_cst: part of the claim protocol above; as an acquire it pairs
    // with the publish store so a live entry's hash is visible.
    const std::uint64_t c = e.ctl.load(std::memory_order_seq_cst);
    const std::uint64_t st = state_of(c);
    // seq_cst: as the load above.
    if (st == st_live && e.hash.load(std::memory_order_seq_cst) == h) return claim_outcome::retry;  // pin it
    if (pick != none) continue;
    if (st == st_empty || st == st_free) {
      pick = s, pick_i = i, pick_c = c;
    } else if (st == st_live && pins_of(c) == 0) {
      const detail::gcra_params& p = params_[class_of(c)];
      // acquire: pairs with the unpins (release) that precede c in the
      // word's order (RMWs all, so their release sequences reach c), so
      // every finished admission's TAT is seen; any pin after c advances
      // the version and fails our claim CAS.
      const std::uint64_t tat = e.tat.load(std::memory_order_acquire);
      const std::uint64_t now_t = ticks(now, p);
      // Past its class's horizon an entry refuses everything, as a fresh
      // one of its class does there: full, so reclaimable.
      if (tat <= now_t || past_t(now_t, p)) {
        pick = s, pick_i = i, pick_c = c;
      } else {
        // Full when its TAT is reached, or once past its horizon.
        std::uint64_t d = static_cast<std::uint64_t>(ticks_to_ns(tat - now_t, p).count());
        const std::uint64_t end = static_cast<std::uint64_t>(detail::gcra_horizon_ns(p)) + 1 -
                                  detail::positive_difference(now.count(), origin_);  // > 0: not past
        if (end < d) d = end;
        if (d < soonest) soonest = d;
        known = true;
      }
    }
  }
  if (pick == none) {
    const std::uint64_t top = static_cast<std::uint64_t>(INT64_MAX);
    wait = nanoseconds(static_cast<std::int64_t>(soonest > top ? top : soonest));
    return claim_outcome::full;
  }
  // Before our claim CAS, so that an eviction by us carries our time.
  note_time(now);
  entry& e = entries_[pick];
  const std::uint64_t ver = (pick_c & ver_mask) + ver_one;
  std::uint64_t expect = pick_c;
  // seq_cst: the claim; as an acquire it pairs with the pins' release
  // (their hash reads come before our hash store) and the unpins' (as
  // for the TAT above).
  if (!e.ctl.compare_exchange_strong(expect, ver | st_claiming, std::memory_order_seq_cst)) {
    return claim_outcome::retry;
  }
  // The entry is ours until we free it: others may only move it from
  // hashed to withdrawn, and nobody else writes its hash or TAT.
  // relaxed: published by the hashed CAS (seq_cst, a release), which the
  // scans acquire.
  e.hash.store(h, std::memory_order_relaxed);
  // A new incarnation: tickets of earlier ones give nothing back here.
  // relaxed / relaxed: only an owner writes it, and each owner's claim CAS
  // (acquire) follows the previous owner's publish or free (releases, RMWs
  // all) in the word's order; pinners read it after the publish CAS below.
  e.claim.store(e.claim.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  std::uint64_t mine = ver | st_claiming;
  // seq_cst: the mark of the protocol above. Cannot fail: only we write
  // a claiming entry.
  (void)e.ctl.compare_exchange_strong(mine, ver | st_hashed, std::memory_order_seq_cst);
  for (std::size_t i = 0; i < window_; ++i) {
    if (i == pick_i) continue;
    entry& o = entries_[at(home, i)];
    std::uint64_t c = o.ctl.load(std::memory_order_seq_cst);  // seq_cst: the scan
    for (;;) {
      const std::uint64_t st = state_of(c);
      if (st != st_live && st != st_hashed) break;
      // seq_cst: the scan. A hashed or live state fixes the hash for its
      // version, and the CAS below checks the version.
      if (o.hash.load(std::memory_order_seq_cst) != h) break;
      if (st == st_live) {
        // A live entry of the key: withdraw ours. seq_cst CAS: fails if
        // another claim withdrew us first.
        // seq_cst exchange (an RMW, so release sequences stay whole):
        // from hashed, or from withdrawn if another claim withdrew us.
        (void)e.ctl.exchange(ver | st_free, std::memory_order_seq_cst);
        return claim_outcome::retry;
      }
      // Another claim of the key: withdraw it (seq_cst CAS; on failure
      // it published or was withdrawn: look again at what it is now).
      if (o.ctl.compare_exchange_strong(c, (c & ver_mask) | st_withdrawn, std::memory_order_seq_cst)) break;
    }
  }
  // The TAT starts at the latest time any claim has seen, read after the
  // scan: every earlier entry of this key was either seen by the scan
  // (live: we withdrew; hashed: we withdrew it, it never admits) or was
  // already reclaimed, and the scan's load of its control word came after
  // that evictor's claim CAS, so after its note_time(). Its TAT was not
  // after the evictor's `now`: starting here loses none of what it owed.
  const detail::gcra_params& p = params_[cls];
  const std::uint64_t begin = detail::sat_mul(start_time(), p.scale);
  // relaxed: published by the publish CAS below (seq_cst, a release).
  e.tat.store(begin > L::max_ticks ? L::max_ticks : begin, std::memory_order_relaxed);
  // seq_cst (a release): publishes TAT and hash; pinned for our own
  // admission. Fails if another claim of the key withdrew ours.
  std::uint64_t m = ver | st_hashed;
  if (!e.ctl.compare_exchange_strong(m, ver | st_live | (static_cast<std::uint64_t>(cls) << cls_shift) | pin_one,
                                     std::memory_order_seq_cst)) {
    // Withdrawn: only we free it (seq_cst exchange, as above).
    (void)e.ctl.exchange(ver | st_free, std::memory_order_seq_cst);
    return claim_outcome::retry;
  }
  slot = pick;
  return claim_outcome::claimed;
}

template <class Clock, class Hash>
bool keyed_buckets<Clock, Hash>::erase_hash(std::uint64_t h) noexcept {
  if (capacity_ == 0) return false;
  const std::size_t home = home_of(h);
  for (std::size_t i = 0; i < window_; ++i) {
    entry& e = entries_[at(home, i)];
    std::uint64_t c = e.ctl.load(std::memory_order_acquire);  // acquire: as in pin()
    for (;;) {
      if (state_of(c) == st_empty) return false;
      // relaxed: validated by the CAS, as in pin()
      if (state_of(c) != st_live || e.hash.load(std::memory_order_relaxed) != h) break;
      // Free now, or erasing until the admissions in progress unpin (the
      // last one frees it). acq_rel / acquire: as the pin CAS; the version
      // advances so stale pinners fail.
      const std::uint64_t next =
          ((c & ver_mask) + ver_one) | (pins_of(c) == 0 ? st_free : (c & pin_mask) | st_erasing);
      if (e.ctl.compare_exchange_weak(c, next, std::memory_order_acq_rel, std::memory_order_acquire)) return true;
    }
  }
  return false;
}

// Reads the key's TAT and class without pinning.
template <class Clock, class Hash>
bool keyed_buckets<Clock, Hash>::peek_tat(std::uint64_t h, std::uint64_t* tat, std::size_t* cls) const noexcept {
  if (capacity_ == 0) return false;
  const std::size_t home = home_of(h);
  for (std::size_t i = 0; i < window_; ++i) {
    const entry& e = entries_[at(home, i)];
    const std::uint64_t c = e.ctl.load(std::memory_order_acquire);  // acquire: as in pin()
    if (state_of(c) == st_empty) return false;
    // relaxed: a peek; a racing reclaim can only show a newer occupant.
    if (state_of(c) != st_live || e.hash.load(std::memory_order_relaxed) != h) continue;
    if (tat != nullptr) *tat = e.tat.load(std::memory_order_relaxed);  // relaxed: a peek
    if (cls != nullptr) *cls = class_of(c);
    return true;
  }
  return false;
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
  const std::uint64_t now_t = ticks(now, p);
  const std::uint64_t owed = tat > now_t ? tat - now_t : 0;
  return owed >= p.tau ? 0 : (p.tau - owed) / p.interval;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_CLAIM_HPP
