// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/key.hpp: what every keyed table shares — the seed and the keyed
// hash of its keys, and the status of a keyed decision.
#ifndef TOLLGATE_KEYED_KEY_HPP
#define TOLLGATE_KEYED_KEY_HPP

#include <tollgate/config.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/siphash.hpp>

#include <cstdint>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

// The secret of a table's hash: 128 bits the user draws at random (and
// keeps, to find the same keys after a restart).
struct hash_seed {
  std::uint64_t k0 = 0;
  std::uint64_t k1 = 0;
};

// The default key hash: SipHash-1-3 under the seed, ids and strings under
// different derived keys. A replacement (tests force collisions with one)
// takes a hash_seed and hashes both key kinds.
//
// Why 1-3 and not 2-4: the hash is a serial chain of rounds on every
// admission (8 rounds for an id under 2-4, 5 under 1-3), and the keyed
// tables' snapshots (format 2) say which hash wrote them. SipHash-1-3 is the
// reduced-round variant hash tables use against collision flooding; it is
// still keyed by the whole seed, with a thinner margin against
// cryptanalysis than 2-4 (keyed_buckets.hpp states what the collision odds
// rest on). Tables of format 1 (SipHash-2-4) are refused by restore() with
// wrong_version, never read under the other hash.
class sip_key_hash {
 public:
  explicit sip_key_hash(hash_seed s) noexcept : ids_(s.k0, s.k1 ^ 0x6964000000000000ULL), strings_(s.k0, s.k1) {}
  std::uint64_t operator()(std::uint64_t id) const noexcept { return ids_.word(id); }
  std::uint64_t operator()(std::string_view s) const noexcept {
    return strings_.bytes(reinterpret_cast<const unsigned char*>(s.data()), s.size());
  }

 private:
  detail::siphash13 ids_;
  detail::siphash13 strings_;
};

enum class keyed_status : std::uint8_t {
  admitted,    // the key's entry admitted
  limited,     // the key's entry refused: see the decision (later or never)
  table_full,  // a new key, and no entry of its window may be reused
  bad_class,   // the class index is not one of the table's (or the table is misconfigured)
  overflow,    // a new key met a full window and went to the overflow limiter: see its decision
};

constexpr const char* to_string(keyed_status s) noexcept {
  switch (s) {
    case keyed_status::admitted: return "admitted";
    case keyed_status::limited: return "limited";
    case keyed_status::table_full: return "table_full";
    case keyed_status::bad_class: return "bad_class";
    case keyed_status::overflow: return "overflow";
  }
  return "?";
}

class keyed_result {
 public:
  constexpr keyed_result(decision d, keyed_status s) noexcept : d_(d), s_(s) {}
  constexpr keyed_status status() const noexcept { return s_; }
  constexpr const decision& result() const noexcept { return d_; }
  // By the key's entry, or by the overflow limiter (keyed_overflow.hpp).
  constexpr bool admitted() const noexcept {
    return s_ == keyed_status::admitted || (s_ == keyed_status::overflow && d_.admitted());
  }
  constexpr bool table_full() const noexcept { return s_ == keyed_status::table_full; }
  constexpr explicit operator bool() const noexcept { return admitted(); }

 private:
  decision d_;
  keyed_status s_;
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_KEY_HPP
