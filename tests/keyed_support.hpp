// Helpers the keyed-table tests share: seeded hash keys, two test hashes that
// place keys where a test wants them, and a snapshot's words.
#ifndef TOLLGATE_TESTS_KEYED_SUPPORT_HPP
#define TOLLGATE_TESTS_KEYED_SUPPORT_HPP

#include "support.hpp"
#include "tollgate_under_test.hpp"  // the modular headers or the single header

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tgkeyed {

inline std::uint64_t mix(std::uint64_t v) {
  tgtest::rng g(v);
  return g.next();
}

// Keys 2g and 2g+1 share the full hash of group g (forced collisions), and
// groups land where a seeded mix puts them.
struct pair_hash {
  explicit pair_hash(tollgate::hash_seed s) : salt(s.k0) {}
  std::uint64_t operator()(std::uint64_t id) const { return mix((id >> 1) ^ salt); }
  std::uint64_t operator()(std::string_view s) const { return mix(s.size() ^ salt); }
  std::uint64_t salt;
};

// Every key hashes to itself times a stride: key k's home is k * 2^60 / 2^64
// x capacity (capacity 16: slot k), small keys fill the table's front.
struct home_hash {
  explicit home_hash(tollgate::hash_seed s) : salt(s.k0) {}
  std::uint64_t operator()(std::uint64_t id) const { return (id << 60) | (id >> 4) | (salt & 0xff) << 20; }
  std::uint64_t operator()(std::string_view s) const { return s.size() ^ salt; }
  std::uint64_t salt;
};

inline tollgate::hash_seed seed_from(std::uint64_t stream) {
  tgtest::rng g(tgtest::seed_for(stream));
  const std::uint64_t a = g.next();
  return tollgate::hash_seed{a, g.next()};
}

// A snapshot as its words after the 4-byte tag; encode() recomputes the
// checksum (the last word).
struct words {
  std::string tag;
  std::vector<std::uint64_t> w;
};
inline words decode(const std::string& s) {
  words f;
  f.tag = s.substr(0, 4);
  for (std::size_t i = 4; i + 8 <= s.size(); i += 8) {
    std::uint64_t v = 0;
    for (int b = 0; b < 8; ++b)
      v |= static_cast<std::uint64_t>(static_cast<unsigned char>(s[i + static_cast<std::size_t>(b)])) << (8 * b);
    f.w.push_back(v);
  }
  return f;
}
inline std::string encode(const words& f) {
  std::string s = f.tag;
  for (std::size_t i = 0; i + 1 < f.w.size(); ++i)
    for (int b = 0; b < 8; ++b) s.push_back(static_cast<char>((f.w[i] >> (8 * b)) & 0xFF));
  const std::uint64_t sum = tollgate::detail::fnv1a(s);
  for (int b = 0; b < 8; ++b) s.push_back(static_cast<char>((sum >> (8 * b)) & 0xFF));
  return s;
}

}  // namespace tgkeyed

#endif
