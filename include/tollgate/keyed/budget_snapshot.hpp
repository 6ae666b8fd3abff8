// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/budget_snapshot.hpp: a keyed_budgets table as bytes, and back, so a
// restart does not hand every key a whole budget again. No I/O: the caller
// stores the bytes. Included by keyed_budgets.hpp after the class.
//
// Format 2 (format 1, the same fields with keys under SipHash-2-4, is
// refused with wrong_version): "TGB1", then little-endian u64 fields: version, the table's
// fingerprint (capacity, window, every class's limit, the calendar's period
// and UTC offset, and the hash of two fixed probe keys, so a table under
// another seed or hash is told apart without storing the seed), the number
// of entries n, then n x (slot, hash, class, period, committed, spent),
// slots strictly ascending; and the FNV-1a checksum of every byte before
// it. Every live entry is stored (a key's class stays its own), erased ones
// are not (erase is a reset). Without a calendar, `period` is 0 and
// `committed` and `spent` are the entry's int64 totals as bits (committed
// INT64_MIN: saturated, budget.hpp); with one, `period` is the entry's
// period and the two are its totals in that period (committed of all ones
// below the period bits: saturated).
//
// What a restart keeps. A reservation does not survive one: its holder
// died, but the request it paid for may have run and be billed. So what is
// held at the snapshot stays committed, in the entry's own period, and
// nothing restored is held: the restored entries have no reservations, no
// pins. A restore is exactly the old table with every reservation held at
// the snapshot dropped there (a drop keeps its money committed in the
// entry's period and carries it no further). Hence no key spends more in a
// period than it could without the restart, counting both processes: what
// the old process settled or held in a period is committed there, and the
// new one starts from it.
// - With a calendar, every entry is stored as it is: its own period and its
//   totals there, whatever the time of the snapshot. A snapshot never rolls
//   an entry over (a snapshot whose clock is ahead of the traffic's, or past
//   a midnight no call has seen, must not move a key into a period no call
//   ran in: a call back in the entry's period would then be decided in the
//   later one, against only what was held, and spend the old period's
//   budget twice). The first call after the restore makes the rollover as
//   it would without the restart: a key whose first call is in a later
//   period starts that period over (nothing is held, so nothing carries:
//   the held money stayed in the entry's period, where a dropped
//   reservation's stays); a call in the entry's period or an earlier one
//   (the wall clock went backwards, before or across the restart) is
//   decided in the entry's period against the stored total, so a restore
//   never reopens money. Neither snapshot() nor restore() needs a time.
// - Without a calendar, held money stays committed for good (as a
//   reservation dropped unsettled).
// `spent` is a statistic, read beside traffic: it may lag `committed` by a
// settle in progress at the snapshot.
//
// restore() refuses, changing nothing, with the account's codes and rules
// (account_restore_errc): bytes that are not a snapshot (bad_format), of an
// unknown version (wrong_version), of a table configured otherwise or under
// another seed (other_configuration: another capacity, window, limit list,
// calendar period or offset, or seed; also a misconfigured table), short or
// long (truncated), whose checksum does not match (corrupted; it only
// catches accidents), or whose fields do not fit this table (out_of_range:
// more entries than the capacity, slots not ascending or outside their
// hash's window, a hash held twice, a class index not the table's; without
// a calendar a period other than 0, a committed total below zero other than
// the saturated mark, a spent total below zero; with one a period past the
// last an int64 time maps to, a total above the value bits). It refuses
// with in_use a table that has started taking traffic (any entry claimed,
// pinned or erased since construction or the last restore). A restored
// table that took no traffic may be restored again (the later bytes win).
// The reuse mode (keyed_budget_reuse) is not part of the configuration.
//
// Concurrency. snapshot() is thread-safe with everything: it pins each live
// entry while it reads it (a moment of its totals: a reservation racing it
// lands in this snapshot or after it). A key that moved to another entry
// during the scan (erased and claimed again) is stored once, the entry
// with the later period, then the larger committed total. restore() must
// not race any other use: restore into a new table, before sharing it.
#ifndef TOLLGATE_KEYED_BUDGET_SNAPSHOT_HPP
#define TOLLGATE_KEYED_BUDGET_SNAPSHOT_HPP

#include <tollgate/keyed_budgets.hpp>
#include <tollgate/keyed/snapshot_frame.hpp>

#include <algorithm>
#include <limits>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

template <class Currency, class Hash>
std::uint64_t keyed_budgets<Currency, Hash>::fingerprint() const noexcept {
  detail::byte_writer w;
  w.u64(slots_.capacity());
  w.u64(slots_.window());
  w.u64(limits_.size());
  for (const std::int64_t l : limits_) w.u64(bits(l));
  w.u64(static_cast<std::uint64_t>(calendar_.period));
  w.u64(bits(static_cast<std::int64_t>(calendar_.utc_offset.count())));
  w.u64(hash_(std::uint64_t{0x746f6c6c67617465ULL}));
  w.u64(hash_(std::string_view("tollgate keyed table")));
  return w.checksum();
}

template <class Currency, class Hash>
std::string keyed_budgets<Currency, Hash>::snapshot() const {
  struct row {
    std::uint64_t slot, hash, cls, period, committed, spent;
  };
  // The order of "more spent": a later period, then a larger committed
  // total, the saturated mark (INT64_MIN without a calendar) the largest.
  const bool per = periodic();
  auto rank = [per](const row& x) {
    return per || static_cast<std::int64_t>(x.committed) >= 0 ? x.committed : ~std::uint64_t{0};
  };
  const std::uint64_t mark = value_mask();
  std::vector<row> rows;
  for (std::size_t s = 0; s < slots_.capacity(); ++s) {
    typename S::entry& e = slots_[s];
    // acquire: as in keyed_slots::pin() (pairs with the publish CAS).
    std::uint64_t c = e.ctl.load(std::memory_order_acquire);
    for (;;) {
      if (S::state_of(c) != S::st_live) break;  // free, erased, or a claim not yet published
      if ((c & S::pin_mask) == S::pin_mask) {  // as in pin(): wait for one of the calls in progress
        std::this_thread::yield();
        c = e.ctl.load(std::memory_order_acquire);  // acquire: as above
        continue;
      }
      // acq_rel / acquire: the pin of keyed_slots::pin(): while pinned the
      // entry cannot be reclaimed, so its hash, class and totals are its
      // occupant's.
      if (!e.ctl.compare_exchange_weak(c, c + S::pin_one + S::ver_one, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
        continue;
      row x{s, e.hash.load(std::memory_order_relaxed), S::class_of(c), 0, 0, 0};  // relaxed: stable while pinned
      if (per) {
        // relaxed: a statistic; only its value in the committed word's
        // period is kept, so no order between the two words is needed.
        const std::uint64_t sw = bits(e.s.spent.load(std::memory_order_relaxed));
        // seq_cst: as committed_view() (a peek of the word; it alone is kept).
        const std::uint64_t w = bits(e.s.committed.load(std::memory_order_seq_cst));
        // As it is, never rolled over (see the header): the committed total
        // already counts what is held, in the word's period.
        x.period = period_of_word(w);
        x.committed = w & mark;
        x.spent = period_of_word(sw) == x.period ? sw & mark : 0;
      } else {
        // acquire: as remaining(); relaxed: a statistic. Reservations held
        // are in the committed total already.
        x.committed = bits(e.s.committed.load(std::memory_order_acquire));
        const std::int64_t sp = e.s.spent.load(std::memory_order_relaxed);
        x.spent = sp < 0 ? 0 : bits(sp);
      }
      S::unpin(e);
      rows.push_back(x);
      break;
    }
  }
  // A key erased and claimed again in another entry while we scanned shows
  // twice: keep the one that has spent more (the safe side).
  std::sort(rows.begin(), rows.end(), [&rank](const row& x, const row& y) {
    if (x.hash != y.hash) return x.hash < y.hash;
    if (x.period != y.period) return x.period > y.period;
    return rank(x) > rank(y);
  });
  rows.erase(std::unique(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.hash == y.hash; }),
             rows.end());
  std::sort(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.slot < y.slot; });
  detail::byte_writer out;
  out.raw("TGB1", 4);
  out.u64(snapshot_version);
  out.u64(fingerprint());
  out.u64(rows.size());
  for (const row& r : rows) {
    out.u64(r.slot);
    out.u64(r.hash);
    out.u64(r.cls);
    out.u64(r.period);
    out.u64(r.committed);
    out.u64(r.spent);
  }
  out.u64(out.checksum());
  return out.out;
}

template <class Currency, class Hash>
account_restore_errc keyed_budgets<Currency, Hash>::restore(std::string_view bytes) {
  using E = account_restore_errc;
  if (!detail::keyed_untouched(slots_)) return E::in_use;
  detail::byte_reader r{bytes};
  const E opened = detail::open_keyed_snapshot(bytes, "TGB1", 3, r);
  if (opened != E::ok) return opened;
  std::uint64_t ver = 0, fp = 0, n = 0;
  if (!r.u64(ver) || !r.u64(fp) || !r.u64(n)) return E::truncated;
  if (ver != snapshot_version) return E::wrong_version;
  if (slots_.capacity() == 0 || fp != fingerprint()) return E::other_configuration;
  if (n > slots_.capacity()) return E::out_of_range;
  if (r.left() / 48 < n) return E::truncated;
  struct row {
    std::uint64_t slot, hash, cls, period, committed, spent;
  };
  const bool per = periodic();
  const std::uint64_t last = cal_.index(std::numeric_limits<std::int64_t>::max());
  const std::uint64_t mark = value_mask();
  std::vector<row> rows;
  rows.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t k = 0; k < n; ++k) {
    row x{};
    (void)r.u64(x.slot);
    (void)r.u64(x.hash);
    (void)r.u64(x.cls);
    (void)r.u64(x.period);
    (void)r.u64(x.committed);
    (void)r.u64(x.spent);
    if (!detail::keyed_in_window(slots_, x.hash, x.slot) || (k > 0 && x.slot <= rows.back().slot))
      return E::out_of_range;
    if (x.cls >= limits_.size()) return E::out_of_range;
    if (per) {
      if (x.period > last || x.committed > mark || x.spent > mark) return E::out_of_range;
    } else {
      if (x.period != 0 || word(x.spent) < 0) return E::out_of_range;
      if (word(x.committed) < 0 && word(x.committed) != sticky) return E::out_of_range;
    }
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

  // Everything checked: apply. relaxed stores throughout: nothing may use
  // the table during restore(); the caller's hand-off to other threads
  // publishes it. Entries come back live, unpinned, version 0 (so a table
  // that took no traffic since may be restored again), holding nothing.
  for (std::size_t s = 0; s < slots_.capacity(); ++s) {
    slots_[s].ctl.store(0, std::memory_order_relaxed);
    slots_.set_hint(s, 0);
    slots_[s].claim.store(0, std::memory_order_relaxed);
  }
  for (const row& x : rows) {
    typename S::entry& e = slots_[static_cast<std::size_t>(x.slot)];
    e.hash.store(x.hash, std::memory_order_relaxed);
    slots_.set_hint(static_cast<std::size_t>(x.slot), x.hash);
    e.s.committed.store(word(per ? pack(x.period, x.committed) : x.committed), std::memory_order_relaxed);
    e.s.spent.store(word(per ? pack(x.period, x.spent) : x.spent), std::memory_order_relaxed);
    e.s.held.store(0, std::memory_order_relaxed);
    e.claim.store(1, std::memory_order_relaxed);
    e.ctl.store(S::st_live | (x.cls << S::cls_shift), std::memory_order_relaxed);
  }
  for (const row& x : rows) detail::keyed_free_before(slots_, x.hash, static_cast<std::size_t>(x.slot));
  return E::ok;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_BUDGET_SNAPSHOT_HPP
