// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/ticket.hpp: what a keyed_buckets or keyed_windows admission leaves
// for refunding it later (keyed_buckets::refund and keyed_windows.hpp's
// give-back state the rules).
//
// A ticket names the table object that issued it: an identity drawn at
// construction and again by restore() (detail/identity.hpp: never 0, never
// repeated within a program image, salted per image and process). A
// ticket of another table, or of this one from before a restore(), gives
// nothing back, even when its slot and claim generation happen to match an
// entry there. Two copies of the header built into shared libraries with
// hidden symbols each draw on their own: identities the two draw, n and m
// of them, meet with probability at most (n + m + 1) / 2^64.
#ifndef TOLLGATE_KEYED_TICKET_HPP
#define TOLLGATE_KEYED_TICKET_HPP

#include <tollgate/config.hpp>
#include <tollgate/detail/identity.hpp>

#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

// A default ticket gives back nothing. Move-only: a copy could refund the
// same units twice. A moved-from ticket holds no units, so refunding it
// gives nothing back.
struct keyed_ticket {
  std::uint64_t hash = 0;   // the key's
  std::uint64_t end = 0;    // buckets: ticks after the origin, the end of the admission's own intervals;
                            // windows: the slot it charged (numbered from the origin)
  std::uint64_t units = 0;  // units it may still give back
  std::size_t cls = 0;      // the class of the entry it was taken on
  std::size_t slot = 0;     // the entry it was taken on
  std::uint64_t claim = 0;  // that entry's claim generation then (never 0 for a real admission)
  std::uint64_t table = 0;  // the issuing table's identity then (never 0 for a real admission)

  constexpr keyed_ticket() noexcept = default;
  constexpr keyed_ticket(std::uint64_t h, std::uint64_t e, std::uint64_t u, std::size_t c, std::size_t s,
                         std::uint64_t cl, std::uint64_t tb) noexcept
      : hash(h), end(e), units(u), cls(c), slot(s), claim(cl), table(tb) {}
  keyed_ticket(const keyed_ticket&) = delete;
  keyed_ticket& operator=(const keyed_ticket&) = delete;
  constexpr keyed_ticket(keyed_ticket&& o) noexcept
      : hash(o.hash), end(o.end), units(o.units), cls(o.cls), slot(o.slot), claim(o.claim), table(o.table) {
    o.units = 0;
  }
  constexpr keyed_ticket& operator=(keyed_ticket&& o) noexcept {
    if (this != &o) {
      hash = o.hash;
      end = o.end;
      cls = o.cls;
      slot = o.slot;
      claim = o.claim;
      table = o.table;
      units = o.units;
      o.units = 0;
    }
    return *this;
  }
};

namespace detail {

// A new table identity (detail/identity.hpp); it reaches other threads
// with the table itself.
inline std::uint64_t next_keyed_table_id() noexcept { return fresh_identity(); }

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_TICKET_HPP
