// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/snapshot_frame.hpp: the parts of a keyed table's snapshot that do
// not depend on what an entry holds (keyed_buckets, keyed_windows,
// keyed_permits and keyed_budgets): the frame (a 4-byte
// tag, little-endian u64 words, the account's FNV-1a checksum last), the
// "not in use" test, and the entries a restore frees so that lookups reach
// the restored ones past them.
#ifndef TOLLGATE_KEYED_SNAPSHOT_FRAME_HPP
#define TOLLGATE_KEYED_SNAPSHOT_FRAME_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/snapshot.hpp>
#include <tollgate/keyed/claim.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

// Opens a snapshot: checks the tag, the least size (`head` words after the
// tag, and the checksum) and the checksum, and leaves `r` on the words
// after the tag, the checksum cut off. The checksum comes before any length
// is read, so a corrupted length is never trusted.
inline account_restore_errc open_keyed_snapshot(std::string_view bytes, std::string_view tag, std::size_t head,
                                                byte_reader& r) noexcept {
  using E = account_restore_errc;
  if (bytes.size() < tag.size() + 8 || bytes.substr(0, tag.size()) != tag) return E::bad_format;
  if (bytes.size() < tag.size() + 8 * (head + 1)) return E::truncated;
  byte_reader tail{bytes.substr(bytes.size() - 8)};
  std::uint64_t sum = 0;
  (void)tail.u64(sum);
  if (fnv1a(bytes.substr(0, bytes.size() - 8)) != sum) return E::corrupted;
  r = byte_reader{bytes.substr(0, bytes.size() - 8)};
  (void)r.skip(tag.size());
  return E::ok;
}

// Whether no entry was ever claimed, pinned or erased since construction or
// the last restore (each advances its version; both leave version 0).
// relaxed: restore() must not race other use, so this reads this thread's past.
template <class State>
bool keyed_untouched(const keyed_slots<State>& slots) noexcept {
  using S = keyed_slots<State>;
  for (std::size_t s = 0; s < slots.capacity(); ++s) {
    if ((slots[s].ctl.load(std::memory_order_relaxed) & S::ver_mask) != 0) return false;
  }
  return true;
}

// Lookups stop at an empty entry: the entries between a restored one's
// home and its slot become free (they were occupied in the old table).
// relaxed: restore() only, before sharing.
template <class State>
void keyed_free_before(keyed_slots<State>& slots, std::uint64_t hash, std::size_t slot) noexcept {
  using S = keyed_slots<State>;
  for (std::size_t i = 0, home = slots.home_of(hash); slots.at(home, i) != slot; ++i) {
    typename S::entry& e = slots[slots.at(home, i)];
    if (e.ctl.load(std::memory_order_relaxed) == S::st_empty) e.ctl.store(S::st_free, std::memory_order_relaxed);
  }
}

// Whether `slot` lies in the probe window of `hash`.
template <class State>
bool keyed_in_window(const keyed_slots<State>& slots, std::uint64_t hash, std::uint64_t slot) noexcept {
  if (slot >= slots.capacity()) return false;
  const std::size_t home = slots.home_of(hash), s = static_cast<std::size_t>(slot);
  const std::size_t dist = s >= home ? s - home : s + slots.capacity() - home;
  return dist < slots.window();
}

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_SNAPSHOT_FRAME_HPP
