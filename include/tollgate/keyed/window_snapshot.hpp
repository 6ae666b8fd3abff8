// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/window_snapshot.hpp: a keyed_windows table as bytes, and back, so a
// restart does not hand every key a fresh window. No I/O: the caller stores
// the bytes. Included by keyed_windows.hpp after the class.
//
// Format 2 (format 1, the same fields with keys under SipHash-2-4, is
// refused with wrong_version): "TGW1", then little-endian u64 fields: version, the table's
// fingerprint (capacity, window, every class's limit and slot width, and
// the hash of two fixed probe keys, so a table under another seed or hash
// is told apart without storing the seed), the wall-clock time, how far the
// latest claim time was ahead of the snapshot's `now` (ns), the number of
// entries n, then n x (slot, hash, class, left, counts), slots strictly
// ascending; and the FNV-1a checksum of every byte before it. `left` is the
// time from `now` until the entry's newest slot stops being counted (the
// start of the slot 4 after it; at most (2^31 + 3) slot widths); `counts`
// holds in byte i the count of the slot i before the newest, counts that
// have already left the window zeroed. Entries that count nothing are fresh
// and not stored.
//
// Time. restore() keeps every count for what was left of it minus the
// wall-clock time between snapshot and restore (pass system_clock::now()
// as `wall`; one that went backwards counts as no time passed), rounded
// toward keeping: the restored table's slot grid has its own phase, and
// each count goes to the slot of that grid whose end is the first at or
// after the time the count had to stay, so it stays at most one slot width
// longer than it had to and never shorter, at any phase of either table
// and after any downtime. Counts of one entry keep their distances (whole
// slots apart in both tables). The newest slot moves with its count, so a
// `now` that the old table refused as stale (behind its newest slot) is
// refused by the restored one too, until at least the same moment. The
// table's latest claim time is kept as keyed_buckets keeps it, so a key
// that comes back with an earlier `now` is refused as stale. Hence the
// header's bound holds across a restart in wall-clock time: in every
// window (t - W, t] no key gets more than L, counting the admissions of
// both tables. (Bound of the encoding: a key whose newest slot was 2^31
// slots ahead of the snapshot's `now`, 68 years at 1 s, keeps its newest
// count up to one slot less; it is refused as stale all that while.)
//
// restore() refuses, changing nothing, with the account's codes and rules
// (account_restore_errc): bytes that are not a snapshot (bad_format), of an
// unknown version (wrong_version), of a table configured otherwise or under
// another seed (other_configuration: another capacity, window, class list
// or seed), short or long (truncated), whose checksum does not match
// (corrupted; it only catches accidents), or whose fields do not fit this
// table (out_of_range: more entries than the capacity, slots not ascending
// or outside their hash's window, a hash held twice, a class index not the
// table's, `left` zero or past its bound or INT64_MAX, counts above 32
// bits, a newest count of zero, counts summing above the class's limit, a
// count kept that had left the window, a lead past INT64_MAX). It refuses
// with in_use a table that has started taking traffic (any entry claimed,
// pinned or erased since construction or the last restore), and a
// misconfigured table (bad_class at every call) with other_configuration.
// A restored table that took no traffic may be restored again.
//
// Concurrency. snapshot() is thread-safe with everything: it pins each live
// entry while it reads it, and an admission racing it lands in this
// snapshot or after it. A key that moved to another entry during the scan
// (erased, or its entry reused, then claimed again) is stored once, the
// entry whose newest count stays longer (then the larger sum). restore()
// must not race any other use: restore into a new table, before sharing it.
#ifndef TOLLGATE_KEYED_WINDOW_SNAPSHOT_HPP
#define TOLLGATE_KEYED_WINDOW_SNAPSHOT_HPP

#include <tollgate/keyed_windows.hpp>
#include <tollgate/keyed/snapshot_frame.hpp>

#include <algorithm>
#include <limits>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Hash>
std::uint64_t keyed_windows<Clock, Hash>::fingerprint() const noexcept {
  detail::byte_writer w;
  w.u64(slots_.capacity());
  w.u64(slots_.window());
  w.u64(cls_.size());
  for (const params& p : cls_) {
    w.u64(p.limit);
    w.u64(p.width);
  }
  w.u64(hash_(std::uint64_t{0x746f6c6c67617465ULL}));
  w.u64(hash_(std::string_view("tollgate keyed table")));
  return w.checksum();
}

template <class Clock, class Hash>
std::uint64_t keyed_windows<Clock, Hash>::max_left(const params& p) noexcept {
  const std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  const std::uint64_t m = detail::sat_mul(stale_from + 3, p.width);
  return m < top ? m : top;
}

template <class Clock, class Hash>
std::string keyed_windows<Clock, Hash>::snapshot(nanoseconds now, nanoseconds wall) const {
  struct row {
    std::uint64_t slot, hash, cls, left, counts, sum;
  };
  std::vector<row> rows;
  const std::uint64_t t = since(now);
  for (std::size_t s = 0; s < slots_.capacity(); ++s) {
    entry& e = slots_[s];
    // acquire: as in keyed_slots::pin() (pairs with the publish CAS).
    std::uint64_t c = e.ctl.load(std::memory_order_acquire);
    for (;;) {
      if (S::state_of(c) != S::st_live) break;  // free, erased, or a claim not yet published: fresh
      if ((c & S::pin_mask) == S::pin_mask) {  // as in pin(): wait for one of 32767 calls
        std::this_thread::yield();
        c = e.ctl.load(std::memory_order_acquire);  // acquire: as above
        continue;
      }
      // acq_rel / acquire: the pin of keyed_slots::pin(): while pinned the
      // entry cannot be reclaimed, so its hash and class are its occupant's.
      if (!e.ctl.compare_exchange_weak(c, c + S::pin_one + S::ver_one, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
        continue;
      const std::size_t k = S::class_of(c);
      const params& p = cls_[k];
      // relaxed: stable while pinned (hash), or a moment of the window (its
      // word), as in acquire_hash().
      const std::uint64_t h = e.hash.load(std::memory_order_relaxed);
      const std::uint64_t w = e.s.word.load(std::memory_order_relaxed);
      S::unpin(e);
      if ((w >> 32) == 0) break;  // counts nothing: fresh
      // The newest slot, as a signed distance from now's slot (the word
      // reads 2^31 or more behind as ahead).
      const std::uint64_t st = t / p.width, d = behind(w, st);
      const detail::i128 newest = static_cast<detail::i128>(st) -
                                  (d < stale_from ? static_cast<detail::i128>(d)
                                                  : -static_cast<detail::i128>((tag_mask + 1) - d));
      // Count i (slot newest - i) is counted until the start of slot newest - i + 4.
      const detail::i128 left0 = (newest + 4) * static_cast<detail::i128>(p.width) - static_cast<detail::i128>(t);
      if (left0 <= 0) break;  // every count has left: fresh
      std::uint64_t counts = 0, sum = 0;
      for (unsigned i = 0; i < 4; ++i) {
        if (left0 - static_cast<detail::i128>(i) * p.width <= 0) break;  // left, and so are the older ones
        counts |= count(w, i) << (8 * i);
        sum += count(w, i);
      }
      const std::uint64_t most = max_left(p);
      const std::uint64_t left = left0 > static_cast<detail::i128>(most) ? most : static_cast<std::uint64_t>(left0);
      rows.push_back(row{s, h, k, left, counts, sum});
      break;
    }
  }
  // A key erased or moved and claimed again in another entry while we
  // scanned shows twice: keep the entry that counts longer (then more).
  std::sort(rows.begin(), rows.end(), [](const row& x, const row& y) {
    if (x.hash != y.hash) return x.hash < y.hash;
    return x.left != y.left ? x.left > y.left : x.sum > y.sum;
  });
  rows.erase(std::unique(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.hash == y.hash; }),
             rows.end());
  std::sort(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.slot < y.slot; });
  detail::byte_writer out;
  out.raw("TGW1", 4);
  out.u64(snapshot_version);
  out.u64(fingerprint());
  out.u64(static_cast<std::uint64_t>(wall.count()));
  const std::uint64_t latest = slots_.start_time();
  out.u64(latest > t ? latest - t : 0);
  out.u64(rows.size());
  for (const row& r : rows) {
    out.u64(r.slot);
    out.u64(r.hash);
    out.u64(r.cls);
    out.u64(r.left);
    out.u64(r.counts);
  }
  out.u64(out.checksum());
  return out.out;
}

template <class Clock, class Hash>
account_restore_errc keyed_windows<Clock, Hash>::restore(std::string_view bytes, nanoseconds now, nanoseconds wall) {
  using E = account_restore_errc;
  if (!detail::keyed_untouched(slots_)) return E::in_use;
  detail::byte_reader r{bytes};
  const E opened = detail::open_keyed_snapshot(bytes, "TGW1", 5, r);
  if (opened != E::ok) return opened;
  std::uint64_t ver = 0, fp = 0, then = 0, ahead = 0, n = 0;
  if (!r.u64(ver) || !r.u64(fp) || !r.u64(then) || !r.u64(ahead) || !r.u64(n)) return E::truncated;
  if (ver != snapshot_version) return E::wrong_version;
  if (slots_.capacity() == 0 || fp != fingerprint()) return E::other_configuration;
  constexpr std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (ahead > top || n > slots_.capacity()) return E::out_of_range;
  if (r.left() / 40 < n) return E::truncated;
  struct row {
    std::uint64_t slot, hash, cls, left, counts;
  };
  std::vector<row> rows;
  rows.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t k = 0; k < n; ++k) {
    row x{};
    (void)r.u64(x.slot);
    (void)r.u64(x.hash);
    (void)r.u64(x.cls);
    (void)r.u64(x.left);
    (void)r.u64(x.counts);
    if (!detail::keyed_in_window(slots_, x.hash, x.slot) || (k > 0 && x.slot <= rows.back().slot))
      return E::out_of_range;
    if (x.cls >= cls_.size()) return E::out_of_range;
    const params& p = cls_[static_cast<std::size_t>(x.cls)];
    if (x.left == 0 || x.left > max_left(p)) return E::out_of_range;
    if (x.counts > tag_mask || (x.counts & 0xff) == 0) return E::out_of_range;
    std::uint64_t sum = 0;
    for (unsigned i = 0; i < 4; ++i) {
      const std::uint64_t ci = (x.counts >> (8 * i)) & 0xff;
      // A count whose slot had left the window at the snapshot is not kept.
      if (ci != 0 && x.left <= i * p.width) return E::out_of_range;
      sum += ci;
    }
    if (sum > p.limit) return E::out_of_range;
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
  for (std::size_t s = 0; s < slots_.capacity(); ++s) {
    slots_[s].ctl.store(0, std::memory_order_relaxed);
    slots_.set_hint(s, 0);
    slots_[s].claim.store(0, std::memory_order_relaxed);
  }
  const std::uint64_t t = since(now);
  const std::uint64_t lead = ahead > down ? ahead - down : 0;
  const std::uint64_t latest = detail::sat_add(t, lead);
  if (latest > slots_.start_time()) slots_.set_start_time(latest);
  for (const row& x : rows) {
    if (x.left <= down) continue;  // every count has left by now: fresh
    const std::size_t slot = static_cast<std::size_t>(x.slot), k = static_cast<std::size_t>(x.cls);
    const params& p = cls_[k];
    const std::uint64_t keep = x.left - down;  // from `now`, until the newest count may leave
    // The newest slot m: the first whose end ((m + 4) slots) is at or after t + keep.
    // t + keep < 2^65 and width >= 1 s: the quotient fits 64 bits. m may be
    // just below the origin (wrapping): only differences mod 2^32 are read.
    const detail::u128 end = (static_cast<detail::u128>(t) + keep + p.width - 1) / p.width;
    detail::i128 m = static_cast<detail::i128>(end) - 4;
    // At most 2^31 slots ahead of now's, so still read as ahead: max_left
    // keeps it there (keep <= (2^31 + 3) widths); this only makes it certain.
    const detail::i128 st = static_cast<detail::i128>(t / p.width);
    if (m - st > static_cast<detail::i128>(stale_from)) m = st + stale_from;
    std::uint64_t counts = 0;
    for (unsigned i = 0; i < 4; ++i) {
      if (keep <= i * p.width) break;  // left during the downtime, as the older ones
      counts |= ((x.counts >> (8 * i)) & 0xff) << (8 * i);
    }
    entry& e = slots_[slot];
    e.hash.store(x.hash, std::memory_order_relaxed);
    slots_.set_hint(slot, x.hash);
    e.s.word.store((counts << 32) | (static_cast<std::uint64_t>(m) & tag_mask), std::memory_order_relaxed);
    e.claim.store(1, std::memory_order_relaxed);
    e.ctl.store(S::st_live | (static_cast<std::uint64_t>(k) << S::cls_shift), std::memory_order_relaxed);
  }
  for (const row& x : rows) {
    if (x.left > down) detail::keyed_free_before(slots_, x.hash, static_cast<std::size_t>(x.slot));
  }
  // A new identity, as keyed_buckets' restore() draws: the restored entries
  // repeat claim generations, and no earlier ticket may name them.
  id_ = detail::next_keyed_table_id();
  return E::ok;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_WINDOW_SNAPSHOT_HPP
