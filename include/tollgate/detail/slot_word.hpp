// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/slot_word.hpp: the word that records one holding of a concurrency
// unit, for the account's slot table (account/slot_table.hpp) and the shared
// account's slots (account/shared_slots.hpp).
//
// Layout. {held: 1 bit, time: 47 bits, generation: 16 bits}. The time is 1 +
// the holding's admission (or last renewal) time in milliseconds after the
// table's origin, rounded up (so a holding is never reclaimed early). A free
// word keeps the time and generation of its last holding.
//
// Stamps never repeat. Each stamp a word takes (a take or a renewal) is
// greater than the word's previous one as the pair (time, generation): the
// generation steps by one, the time never goes back (a stale `now` keeps the
// later time), and when the generation wraps to 0 the time steps by at least
// a millisecond. So a holder whose word was reclaimed (past its deadline, or
// its process called dead) and who is in fact alive can never free a later
// holding's word, however many takes came between: its release CAS expects
// a stamp the word will never hold again. (With the time freed to 0 and
// 16-bit generations, 65,536 takes at one stale millisecond brought the
// stamp back and the late release freed a live holding's unit.) The price: a
// holding's recorded time can be later than its own `now`, by the lag of a
// stale `now` behind the word's last stamp, or by a millisecond per 65,536
// takes of one word within a millisecond, and it is then reclaimed that much
// later (the safe side). A `now` at or past max_ms (285 years after the
// origin) takes no stamp at all (the tables refuse it: slot_table.hpp,
// shared_slots.hpp), so one far-future `now` cannot push a word's time to
// where no deadline is reached; the pair may still carry past max_ms + 1 (a
// generation wrap at the last millisecond), up to the field's end, 2^63 - 1,
// which no run of takes reaches (2^63 stamps), so a stamp never comes back.
// A take at a later millisecond starts the generation again at 0: the pair
// still increases. A `now` ahead of the true time by D delays the deadline
// of every later holding of the word by up to D, until the true time passes
// it (the never-back rule; the safe side: a permit comes back later).
#ifndef TOLLGATE_DETAIL_SLOT_WORD_HPP
#define TOLLGATE_DETAIL_SLOT_WORD_HPP

#include <tollgate/config.hpp>

#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

namespace detail {

struct slot_word {
  static constexpr unsigned gen_bits = 16;
  static constexpr std::uint64_t gen_mask = (std::uint64_t{1} << gen_bits) - 1;
  static constexpr std::uint64_t held_bit = std::uint64_t{1} << 63;
  static constexpr std::uint64_t max_ms = 9000000000000;  // 285 years: ms * 10^6 fits 63 bits

  static constexpr bool held(std::uint64_t w) noexcept { return (w & held_bit) != 0; }
  // 1 + the holding's time in ms after the origin (0: never held).
  static constexpr std::uint64_t time(std::uint64_t w) noexcept { return (w & ~held_bit) >> gen_bits; }
  static constexpr std::uint64_t generation(std::uint64_t w) noexcept { return w & gen_mask; }
  // The word once the holding stamped `w` is given back or reclaimed.
  static constexpr std::uint64_t freed(std::uint64_t w) noexcept { return w & ~held_bit; }
  // The stamp that follows `w` (a free word for a take, the holding's own
  // stamp for a renewal) for a holding at `t` = 1 + its ms after the origin:
  // the pair (time, generation) read as one number, one more than `w`'s, or
  // {t, 0} if that is later. So the generation steps by one, a wrap carries
  // a millisecond into the time, and a stale `t` keeps the later time. Three
  // operations on the admission path, where comparing the fields one by one
  // cost about 12 instructions and 1.5 ns (docs/performance.md).
  static constexpr std::uint64_t next(std::uint64_t w, std::uint64_t t) noexcept {
    constexpr std::uint64_t top = ~held_bit;  // the field's end: 2^63 stamps away, never reached
    const std::uint64_t after = (w & ~held_bit) + 1;
    const std::uint64_t at = (t < max_ms + 1 ? t : max_ms + 1) << gen_bits;
    const std::uint64_t s = after > at ? after : at;
    return held_bit | (s < top ? s : top);
  }
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_SLOT_WORD_HPP
