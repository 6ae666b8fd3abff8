// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/permit_snapshot.hpp: a keyed_permits table as bytes, and back. No
// I/O: the caller stores the bytes. Included by keyed_permits.hpp after the
// class.
//
// What a restore means. A permits table holds nothing but the units its
// holders hold, and a restart ends every holder. But a gateway's holders
// are requests it sent to a server, and the server does not stop counting
// them when the gateway dies: a generation the client abandoned usually
// runs to its end, and counts against the server's concurrency limit of the
// key until then. A restarted gateway that admitted a full limit at once
// could send twice the limit for a while. So restore() hands the units each
// key held at the snapshot back as permits (a keyed_permit_holds, one
// permit per key), held in the restored table like any other, and says how
// long to keep them: `hold` (the longest a request may run at the server,
// counted from the snapshot: your request timeout) less the wall-clock time
// between snapshot and restore. The table has no clock: the caller releases
// them (clear() or let them go) when keep_for has passed, or earlier when
// it learns those requests are over (the server's own count, say). A hold
// of zero, or one the downtime used up, restores nothing held: the contract
// that a restart releases everything, chosen explicitly. Only units held at
// the snapshot come back; requests started after it are not known.
//
// Format 2 (format 1, the same fields with keys under SipHash-2-4, is
// refused with wrong_version): "TGP1", then little-endian u64 fields: version, the table's
// fingerprint (capacity, window, every class's limit, and the hash of two
// fixed probe keys, so a table under another seed or hash is told apart
// without storing the seed), the wall-clock time, the number of entries n,
// then n x (slot, hash, class, held), slots strictly ascending; and the
// FNV-1a checksum of every byte before it. Entries that hold nothing, and
// erased ones (their limit was reset), are not stored.
//
// restore() refuses, changing nothing (`out` included), with the account's
// codes (account_restore_errc): bytes that are not a snapshot (bad_format),
// of an unknown version (wrong_version), of a table configured otherwise or
// under another seed (other_configuration: another capacity, window, limit
// list or seed; also a misconfigured table), short or long (truncated),
// whose checksum does not match (corrupted; it only catches accidents), or
// whose fields do not fit this table (out_of_range: more entries than the
// capacity, slots not ascending or outside their hash's window, a hash held
// twice, a class index not the table's, held zero or above its class's
// limit). A hold below zero is zero. It refuses with in_use a table that has started
// taking traffic (any entry claimed, pinned or erased since construction)
// or that holds restored permits: a restore that gave permits back makes
// the table in use (those permits release into its entries); one that gave
// none back does not. On success `out` is replaced (permits it held are
// released first).
//
// Concurrency. snapshot() is thread-safe with everything: it pins each live
// entry while it reads its held count (a moment of it: permits acquired or
// released at the same time land in it or not). A key that moved to another
// entry during the scan (erased, then claimed again) is stored once, with
// the larger count. restore() must not race any other use: restore into a
// new table, before sharing it. The permits in `out` must not outlive the
// table, as any permit.
#ifndef TOLLGATE_KEYED_PERMIT_SNAPSHOT_HPP
#define TOLLGATE_KEYED_PERMIT_SNAPSHOT_HPP

#include <tollgate/keyed_permits.hpp>
#include <tollgate/keyed/snapshot_frame.hpp>

#include <algorithm>
#include <limits>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

// The units a restore gave back, and how long to keep them (see above).
struct keyed_permit_holds {
  std::vector<keyed_permit> permits;  // one per key that held units at the snapshot
  nanoseconds keep_for{0};            // from the restore; zero when nothing came back
  std::uint64_t units() const noexcept {
    std::uint64_t u = 0;
    for (const keyed_permit& p : permits) u += p.count();
    return u;
  }
  void clear() noexcept {
    permits.clear();
    keep_for = nanoseconds(0);
  }
};

template <class Hash>
std::uint64_t keyed_permits<Hash>::fingerprint() const noexcept {
  detail::byte_writer w;
  w.u64(slots_.capacity());
  w.u64(slots_.window());
  w.u64(limits_.size());
  for (const std::uint64_t l : limits_) w.u64(l);
  w.u64(hash_(std::uint64_t{0x746f6c6c67617465ULL}));
  w.u64(hash_(std::string_view("tollgate keyed table")));
  return w.checksum();
}

template <class Hash>
std::string keyed_permits<Hash>::snapshot(nanoseconds wall) const {
  struct row {
    std::uint64_t slot, hash, cls, held;
  };
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
      // entry cannot be reclaimed, so its hash and class are its occupant's.
      if (!e.ctl.compare_exchange_weak(c, c + S::pin_one + S::ver_one, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
        continue;
      // relaxed: stable while pinned (hash), or a moment of the count, as in held().
      const std::uint64_t h = e.hash.load(std::memory_order_relaxed);
      const std::uint64_t u = e.s.held.load(std::memory_order_relaxed);
      S::unpin(e);
      if (u != 0) rows.push_back(row{s, h, S::class_of(c), u});
      break;
    }
  }
  // A key erased and claimed again in another entry while we scanned shows
  // twice: keep its larger count (the safe side).
  std::sort(rows.begin(), rows.end(), [](const row& x, const row& y) {
    return x.hash != y.hash ? x.hash < y.hash : x.held > y.held;
  });
  rows.erase(std::unique(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.hash == y.hash; }),
             rows.end());
  std::sort(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.slot < y.slot; });
  detail::byte_writer out;
  out.raw("TGP1", 4);
  out.u64(snapshot_version);
  out.u64(fingerprint());
  out.u64(static_cast<std::uint64_t>(wall.count()));
  out.u64(rows.size());
  for (const row& r : rows) {
    out.u64(r.slot);
    out.u64(r.hash);
    out.u64(r.cls);
    out.u64(r.held);
  }
  out.u64(out.checksum());
  return out.out;
}

template <class Hash>
account_restore_errc keyed_permits<Hash>::restore(std::string_view bytes, nanoseconds wall, nanoseconds hold,
                                                  keyed_permit_holds& out) {
  using E = account_restore_errc;
  if (!detail::keyed_untouched(slots_)) return E::in_use;
  detail::byte_reader r{bytes};
  const E opened = detail::open_keyed_snapshot(bytes, "TGP1", 4, r);
  if (opened != E::ok) return opened;
  std::uint64_t ver = 0, fp = 0, then = 0, n = 0;
  if (!r.u64(ver) || !r.u64(fp) || !r.u64(then) || !r.u64(n)) return E::truncated;
  if (ver != snapshot_version) return E::wrong_version;
  if (slots_.capacity() == 0 || fp != fingerprint()) return E::other_configuration;
  if (n > slots_.capacity()) return E::out_of_range;
  if (r.left() / 32 < n) return E::truncated;
  struct row {
    std::uint64_t slot, hash, cls, held;
  };
  std::vector<row> rows;
  rows.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t k = 0; k < n; ++k) {
    row x{};
    (void)r.u64(x.slot);
    (void)r.u64(x.hash);
    (void)r.u64(x.cls);
    (void)r.u64(x.held);
    if (!detail::keyed_in_window(slots_, x.hash, x.slot) || (k > 0 && x.slot <= rows.back().slot))
      return E::out_of_range;
    if (x.cls >= limits_.size()) return E::out_of_range;
    if (x.held == 0 || x.held > limits_[static_cast<std::size_t>(x.cls)]) return E::out_of_range;
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
  constexpr std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  const detail::i128 gap = static_cast<detail::i128>(wall.count()) - static_cast<std::int64_t>(then);
  const std::uint64_t down = gap <= 0 ? 0 : gap >= static_cast<detail::i128>(top) ? top : static_cast<std::uint64_t>(gap);
  const std::uint64_t h = hold.count() <= 0 ? 0 : static_cast<std::uint64_t>(hold.count());
  keyed_permit_holds back;
  if (h <= down || rows.empty()) {  // nothing held any more: the table as new
    out = std::move(back);
    return E::ok;
  }
  back.keep_for = nanoseconds(static_cast<std::int64_t>(h - down));
  back.permits.reserve(rows.size());
  // relaxed stores throughout: nothing may use the table during restore();
  // the caller's hand-off to other threads publishes it. Each restored
  // entry is live with one pin (its permit's, which the permit's release
  // takes) and version 1: the table is in use.
  for (const row& x : rows) {
    const std::size_t slot = static_cast<std::size_t>(x.slot);
    typename S::entry& e = slots_[slot];
    e.hash.store(x.hash, std::memory_order_relaxed);
    slots_.set_hint(slot, x.hash);
    e.s.held.store(x.held, std::memory_order_relaxed);
    e.claim.store(1, std::memory_order_relaxed);
    e.ctl.store(S::st_live | (x.cls << S::cls_shift) | S::pin_one | S::ver_one, std::memory_order_relaxed);
    back.permits.push_back(keyed_permit(&slots_, slot, x.held, {decision::admit(), keyed_status::admitted}));
  }
  for (const row& x : rows) detail::keyed_free_before(slots_, x.hash, static_cast<std::size_t>(x.slot));
  out = std::move(back);
  return E::ok;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_PERMIT_SNAPSHOT_HPP
