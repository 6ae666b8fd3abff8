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
// A ticket names the window object that issued it (an identity from one
// counter of the program, drawn again by import_counts and import_slots),
// so a ticket of another window, or of this one from before an import,
// gives nothing back: not into a window restored from the old one's counts,
// which would otherwise give back units of an admission it never counted.
// A ticket built from a slot and tokens (the account's) names no window
// and is not checked. (Two programs sharing a region draw from two
// counters: a ticket carried to another program's other window is told
// apart by its slot only.)
#ifndef TOLLGATE_WINDOW_TICKET_HPP
#define TOLLGATE_WINDOW_TICKET_HPP

#include <tollgate/config.hpp>

#include <atomic>
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

  constexpr window_ticket() noexcept = default;
  constexpr window_ticket(std::uint64_t s, std::uint64_t t, std::uint64_t u) noexcept : slot(s), tokens(t), units(u) {}
  constexpr window_ticket(std::uint64_t s, std::uint64_t t, std::uint64_t u, std::uint64_t w) noexcept
      : slot(s), tokens(t), units(u), window(w) {}
  window_ticket(const window_ticket&) = delete;
  window_ticket& operator=(const window_ticket&) = delete;
  window_ticket(window_ticket&& o) noexcept
      : slot(o.slot), tokens(std::exchange(o.tokens, 0)), units(std::exchange(o.units, 0)), window(o.window) {}
  window_ticket& operator=(window_ticket&& o) noexcept {
    if (this != &o) {
      slot = o.slot;
      window = o.window;
      tokens = std::exchange(o.tokens, 0);
      units = std::exchange(o.units, 0);
    }
    return *this;
  }
};

namespace detail {

// A new window identity: 64 bits, so it does not wrap while a program runs.
inline std::uint64_t next_window_id() noexcept {
  static std::atomic<std::uint64_t> last{0};
  // relaxed: only uniqueness matters, which the RMW's atomicity gives (it
  // pairs with no other operation); the value reaches other threads with
  // the window itself. Not a detail::atomic: no lock-free protocol reads it.
  return last.fetch_add(1, std::memory_order_relaxed) + 1;
}
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
