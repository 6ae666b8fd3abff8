// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// window/ticket.hpp: the strict window's state word and its ticket.
//
// Contract. One 64-bit word {slot: 40 bits, units: 24 bits} is the unit of
// the window's state (its head, its ring, its cached sum): a count of at most
// 2^24 - 1 units per slot, and 2^40 slots, at least 10 years from the origin
// at the shortest slot width (287,015 ns). The words are plain integers: the
// same in any process that maps them. A window_ticket records what one
// admission charged, so that a refund gives back only that (move-only: a copy
// could refund the same tokens twice; a moved-from ticket holds nothing).
// A ticket names the window object that issued it, twice: by its address in
// the issuing process (two live objects of one process never share one, so
// another live window's ticket is refused for certain, also a ticket of a
// window another process built in shared memory) and by an identity drawn
// at construction and again by import_counts and import_slots
// (detail/identity.hpp: never repeated within a process, salted per
// process, so identities two processes draw, n and m of them, meet with
// probability at most (n + m + 1) / 2^64). A ticket of another window, or
// of this one from before an import, gives nothing back: not into a window
// restored from the old one's counts, which would otherwise give back units
// of an admission it never counted. What the identity alone tells apart
// (with that probability; for certain when this process drew both): a
// ticket refunded into a window now at the issuer's address (the issuer
// destroyed, or its region unmapped and another mapped there) and a ticket
// carried to another process. A ticket built from a slot and tokens (the
// account's) names no window (0, 0) and is not checked.
#ifndef TOLLGATE_WINDOW_TICKET_HPP
#define TOLLGATE_WINDOW_TICKET_HPP

#include <tollgate/config.hpp>
#include <tollgate/detail/identity.hpp>

#include <cstdint>
#include <utility>

TOLLGATE_BEGIN_NAMESPACE

// What a window admission charged: needed to refund it. Move-only: a copy
// could refund the same tokens twice. A moved-from ticket holds nothing, so
// refunding it is a no-op.
struct window_ticket {
  std::uint64_t slot = 0;    // the slot charged
  std::uint64_t tokens = 0;  // tokens still charged to it
  std::uint64_t units = 0;   // the same, in the window's units (rounded up)
  std::uint64_t window = 0;  // the issuing window's identity; 0: not checked
  std::uintptr_t issuer = 0;  // the issuing window's address in this process; 0: not checked

  constexpr window_ticket() noexcept = default;
  constexpr window_ticket(std::uint64_t s, std::uint64_t t, std::uint64_t u) noexcept : slot(s), tokens(t), units(u) {}
  constexpr window_ticket(std::uint64_t s, std::uint64_t t, std::uint64_t u, std::uint64_t w,
                          std::uintptr_t i = 0) noexcept
      : slot(s), tokens(t), units(u), window(w), issuer(i) {}
  window_ticket(const window_ticket&) = delete;
  window_ticket& operator=(const window_ticket&) = delete;
  window_ticket(window_ticket&& o) noexcept
      : slot(o.slot), tokens(std::exchange(o.tokens, 0)), units(std::exchange(o.units, 0)), window(o.window),
        issuer(o.issuer) {}
  window_ticket& operator=(window_ticket&& o) noexcept {
    if (this != &o) {
      slot = o.slot;
      window = o.window;
      issuer = o.issuer;
      tokens = std::exchange(o.tokens, 0);
      units = std::exchange(o.units, 0);
    }
    return *this;
  }
};

namespace detail {

// A new window identity (detail/identity.hpp); it reaches other threads
// with the window itself.
inline std::uint64_t next_window_id() noexcept { return fresh_identity(); }
struct window_limits {
  static constexpr unsigned count_bits = 24;
  static constexpr std::uint64_t max_units = (std::uint64_t{1} << count_bits) - 1;
  static constexpr unsigned slot_bits = 40;
  static constexpr std::uint64_t max_slot = (std::uint64_t{1} << slot_bits) - 1;
  static constexpr std::uint64_t min_horizon_ns = 315576000ULL * 1000000000ULL;  // 10 Julian years
  static constexpr std::uint64_t min_width_ns = (min_horizon_ns + max_slot - 1) / max_slot;
  // errc::window_too_short's message states this figure.
  static_assert(min_width_ns == 287015, "update message(errc::window_too_short)");
};

constexpr std::uint64_t pack_slot(std::uint64_t slot, std::uint64_t units) noexcept {
  return (slot << window_limits::count_bits) | units;
}
constexpr std::uint64_t slot_of_word(std::uint64_t w) noexcept { return w >> window_limits::count_bits; }
constexpr std::uint64_t units_of_word(std::uint64_t w) noexcept { return w & window_limits::max_units; }
}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_WINDOW_TICKET_HPP
