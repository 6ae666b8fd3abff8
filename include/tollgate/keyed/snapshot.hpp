// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/snapshot.hpp: a keyed_buckets table as bytes, and back, so a
// restart does not hand every key a fresh burst. No I/O: the caller stores
// the bytes. Included by keyed_buckets.hpp after the class.
//
// Format 2 (format 1, the same fields with keys under SipHash-2-4, is
// refused with wrong_version): "TGK1", then little-endian u64 fields: version, the table's
// fingerprint (capacity, window, every class's scale, interval and burst,
// and the hash of two fixed probe keys, so a table under another seed or
// hash is told apart without storing the seed), the wall-clock time, how
// far the latest claim time was ahead of the snapshot's `now` (ns), the
// number of entries n, then n x (slot, hash, class, owed), slots strictly
// ascending; and the FNV-1a checksum of every byte before it (the
// account's). `owed` is the time from `now` until the entry's bucket is
// full again, rounded up to the nanosecond; entries that owe nothing are
// fresh and not stored.
//
// Time. restore() keeps each entry's debt for what was left of it minus
// the wall-clock time between snapshot and restore (pass
// system_clock::now() as `wall`; one that went backwards counts as no time
// passed), rounded toward keeping: a restored key is never fresher than it
// was, and each sits in the slot it had (its window and home are those of
// the same capacity). The table's latest claim time is kept the same way,
// so a key that comes back with an earlier `now` still owes what it owed.
//
// restore() refuses, changing nothing, with the account's codes and rules
// (account_restore_errc): bytes that are not a snapshot (bad_format), of an
// unknown version (wrong_version), of a table configured otherwise or under
// another seed (other_configuration), short or long (truncated), whose
// checksum does not match (corrupted; it only catches accidents), or whose
// fields do not fit this table (out_of_range: more entries than the
// capacity, slots not ascending or outside their hash's window, a hash held
// twice, a class index not the table's, nothing owed or more than a
// class's whole tick range, a lead past INT64_MAX). It refuses with in_use a
// table that has started taking traffic (any entry claimed, pinned or
// erased since construction or the last restore), and a misconfigured
// table (bad_class at every call) with other_configuration.
//
// Tickets. restore() draws a new table identity (keyed/ticket.hpp), so no
// keyed_ticket issued before it, by the snapshot's table or any other,
// gives anything back into the restored table: each restored entry's debt
// already counts what those tickets took, and its claim generation starts
// again, so a ticket dead in the old table (its key erased or evicted and
// claimed again) would otherwise name a live entry. The cost is on the
// safe side: units of admissions in flight across a restore are not given
// back.
//
// Concurrency. snapshot() is thread-safe with everything: it pins each live
// entry while it reads it (so it cannot be reclaimed under the read), and
// an admission racing it lands in this snapshot or after it. A key that
// moved to another entry during the scan (reclaimed or erased, then
// claimed again) is stored once, with the larger of its two debts. restore() must
// not race any other use: restore into a new table, before sharing it.
#ifndef TOLLGATE_KEYED_SNAPSHOT_HPP
#define TOLLGATE_KEYED_SNAPSHOT_HPP

#include <tollgate/keyed_buckets.hpp>
#include <tollgate/account/snapshot.hpp>
#include <tollgate/keyed/snapshot_frame.hpp>

#include <algorithm>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Hash>
std::uint64_t keyed_buckets<Clock, Hash>::fingerprint() const noexcept {
  detail::byte_writer w;
  w.u64(capacity_);
  w.u64(window_);
  w.u64(params_.size());
  for (const detail::gcra_params& p : params_) {
    w.u64(p.scale);
    w.u64(p.interval);
    w.u64(p.burst);
  }
  w.u64(hash_(std::uint64_t{0x746f6c6c67617465ULL}));
  w.u64(hash_(std::string_view("tollgate keyed table")));
  return w.checksum();
}

template <class Clock, class Hash>
std::string keyed_buckets<Clock, Hash>::snapshot(nanoseconds now, nanoseconds wall) const {
  struct row {
    std::uint64_t slot, hash, cls, owed;
  };
  std::vector<row> rows;
  for (std::size_t s = 0; s < capacity_; ++s) {
    entry& e = slots_[s];
    // acquire: as in pin() (pairs with the publish store).
    std::uint64_t c = e.ctl.load(std::memory_order_acquire);
    for (;;) {
      if (state_of(c) != st_live) break;  // free, erased, or a claim not yet published: fresh
      if ((c & pin_mask) == pin_mask) {  // as in pin(): wait for one of 32767 admissions
        std::this_thread::yield();
        c = e.ctl.load(std::memory_order_acquire);  // acquire: as above
        continue;
      }
      // acq_rel / acquire: the pin of pin(): while pinned the entry cannot
      // be reclaimed, so its hash and class are its occupant's.
      if (!e.ctl.compare_exchange_weak(c, c + pin_one + ver_one, std::memory_order_acq_rel, std::memory_order_acquire))
        continue;
      const detail::gcra_params& p = params_[class_of(c)];
      // relaxed: stable while pinned (hash), or a moment of the bucket (TAT), as in admit().
      const std::uint64_t h = e.hash.load(std::memory_order_relaxed);
      std::uint64_t tat = e.s.tat.load(std::memory_order_relaxed);
      if (sealed(tat)) tat = start_ticks(p);  // what the seal stands for (our pin fails its claim)
      const std::uint64_t now_t = ticks(now, p);
      if (tat > now_t) {
        rows.push_back(row{s, h, class_of(c), static_cast<std::uint64_t>(ticks_to_ns(tat - now_t, p).count())});
      }
      unpin(e);
      break;
    }
  }
  // A key reclaimed or erased and claimed again in another entry while we
  // scanned shows twice: keep its larger debt (the safe side), in one of
  // its slots.
  std::sort(rows.begin(), rows.end(), [](const row& x, const row& y) {
    return x.hash != y.hash ? x.hash < y.hash : x.owed > y.owed;
  });
  rows.erase(std::unique(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.hash == y.hash; }),
             rows.end());
  std::sort(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.slot < y.slot; });
  detail::byte_writer w;
  w.raw("TGK1", 4);
  w.u64(snapshot_version);
  w.u64(fingerprint());
  w.u64(static_cast<std::uint64_t>(wall.count()));
  const std::uint64_t since = detail::positive_difference(now.count(), origin_);
  const std::uint64_t latest = start_time();
  w.u64(latest > since ? latest - since : 0);
  w.u64(rows.size());
  for (const row& r : rows) {
    w.u64(r.slot);
    w.u64(r.hash);
    w.u64(r.cls);
    w.u64(r.owed);
  }
  w.u64(w.checksum());
  return w.out;
}

template <class Clock, class Hash>
account_restore_errc keyed_buckets<Clock, Hash>::restore(std::string_view bytes, nanoseconds now, nanoseconds wall) {
  using E = account_restore_errc;
  // In use: any entry claimed, pinned or erased (construction and restore
  // leave version 0), or any admission (they do not pin: admitted_).
  // relaxed: restore() must not race any other use.
  if (!detail::keyed_untouched(slots_) || admitted_.load(std::memory_order_relaxed)) return E::in_use;
  detail::byte_reader r{bytes};
  // The tag, then the checksum before any length is read.
  const E opened = detail::open_keyed_snapshot(bytes, "TGK1", 5, r);
  if (opened != E::ok) return opened;
  std::uint64_t ver = 0, fp = 0, then = 0, ahead = 0, n = 0;
  if (!r.u64(ver) || !r.u64(fp) || !r.u64(then) || !r.u64(ahead) || !r.u64(n)) return E::truncated;
  if (ver != snapshot_version) return E::wrong_version;
  if (capacity_ == 0 || fp != fingerprint()) return E::other_configuration;
  constexpr std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (ahead > top || n > capacity_) return E::out_of_range;
  if (r.left() / 32 < n) return E::truncated;
  struct row {
    std::uint64_t slot, hash, cls, owed;
  };
  std::vector<row> rows;
  rows.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t k = 0; k < n; ++k) {
    row x{};
    (void)r.u64(x.slot);
    (void)r.u64(x.hash);
    (void)r.u64(x.cls);
    (void)r.u64(x.owed);
    // Its slot must lie in its hash's window, slots ascending.
    if (!detail::keyed_in_window(slots_, x.hash, x.slot) || (k > 0 && x.slot <= rows.back().slot))
      return E::out_of_range;
    if (x.cls >= params_.size()) return E::out_of_range;
    const detail::gcra_params& p = params_[static_cast<std::size_t>(x.cls)];
    // The most an entry can owe: its class's whole tick range, rounded up.
    const std::uint64_t most = detail::ceil_div(L::max_ticks, p.scale) + 1;
    if (x.owed == 0 || x.owed > most || x.owed > top) return E::out_of_range;
    rows.push_back(x);
  }
  if (r.left() != 0) return E::truncated;
  {
    std::vector<std::uint64_t> hs;
    hs.reserve(rows.size());
    for (const row& x : rows) hs.push_back(x.hash);
    std::sort(hs.begin(), hs.end());
    if (std::adjacent_find(hs.begin(), hs.end()) != hs.end()) return E::out_of_range;  // a key in two entries
  }

  // Everything checked: apply. The wall-clock time between snapshot and
  // restore, zero if the clock went backwards.
  const detail::i128 gap = static_cast<detail::i128>(wall.count()) - static_cast<std::int64_t>(then);
  const std::uint64_t down = gap <= 0 ? 0 : gap >= static_cast<detail::i128>(top) ? top : static_cast<std::uint64_t>(gap);
  // relaxed stores throughout: nothing may use the table during restore();
  // the caller's hand-off to other threads publishes it.
  // A new identity: the restored entries restart their claim generations,
  // so a ticket of the snapshot's table (or of any other) could name one
  // of them; with another identity none gives anything back here.
  id_ = detail::next_keyed_table_id();
  admitted_.store(false, std::memory_order_relaxed);
  for (std::size_t s = 0; s < capacity_; ++s) {
    slots_[s].ctl.store(0, std::memory_order_relaxed);
    slots_.set_hint(s, 0);
    slots_[s].claim.store(0, std::memory_order_relaxed);
  }
  const std::uint64_t since = detail::positive_difference(now.count(), origin_);
  const std::uint64_t lead = ahead > down ? ahead - down : 0;
  const std::uint64_t latest = detail::sat_add(since, lead);
  slots_.set_start_time(latest > start_time() ? latest : start_time());
  for (const row& x : rows) {
    if (x.owed <= down) continue;  // owed nothing by now: fresh
    const std::size_t slot = static_cast<std::size_t>(x.slot), cls = static_cast<std::size_t>(x.cls);
    const detail::gcra_params& p = params_[cls];
    entry& e = slots_[slot];
    const std::uint64_t tat = detail::sat_add(ticks(now, p), detail::sat_mul(x.owed - down, p.scale));
    e.hash.store(x.hash, std::memory_order_relaxed);
    slots_.set_hint(slot, x.hash);
    e.s.tat.store(tat > L::max_ticks ? L::max_ticks : tat, std::memory_order_relaxed);
    e.claim.store(1, std::memory_order_relaxed);
    e.ctl.store(st_live | (static_cast<std::uint64_t>(cls) << cls_shift), std::memory_order_relaxed);
  }
  for (const row& x : rows) {
    if (x.owed > down) detail::keyed_free_before(slots_, x.hash, static_cast<std::size_t>(x.slot));
  }
  return E::ok;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_SNAPSHOT_HPP
