// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/siphash.hpp: SipHash-2-4, the keyed hash of the keyed tables.
// Nothing here is public API.
//
// Why SipHash: it is a pseudo-random function of its 128-bit key. A client
// that does not know the key sees outputs it cannot tell from random ones,
// so it cannot pick keys that land in one probe window or share a 64-bit
// hash other than by chance (the odds are stated in keyed_buckets.hpp).
// It is also short, portable and well studied. Input bytes are read one by
// one (little-endian words), so the result is the same on every platform.
#ifndef TOLLGATE_DETAIL_SIPHASH_HPP
#define TOLLGATE_DETAIL_SIPHASH_HPP

#include <tollgate/config.hpp>

#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

class siphash24 {
 public:
  constexpr siphash24(std::uint64_t k0, std::uint64_t k1) noexcept
      : v0_(k0 ^ 0x736f6d6570736575ULL), v1_(k1 ^ 0x646f72616e646f6dULL), v2_(k0 ^ 0x6c7967656e657261ULL),
        v3_(k1 ^ 0x7465646279746573ULL) {}

  // The hash of `len` bytes at `p` (p may be null when len is 0).
  std::uint64_t bytes(const unsigned char* p, std::size_t len) const noexcept {
    std::uint64_t v0 = v0_, v1 = v1_, v2 = v2_, v3 = v3_;
    const std::size_t whole = len - len % 8;
    for (std::size_t i = 0; i < whole; i += 8) {
      const std::uint64_t m = load_le(p + i, 8);
      v3 ^= m;
      round(v0, v1, v2, v3);
      round(v0, v1, v2, v3);
      v0 ^= m;
    }
    const std::uint64_t last = (static_cast<std::uint64_t>(len & 0xff) << 56) | load_le(p + whole, len % 8);
    v3 ^= last;
    round(v0, v1, v2, v3);
    round(v0, v1, v2, v3);
    v0 ^= last;
    v2 ^= 0xff;
    for (int i = 0; i < 4; ++i) round(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
  }

  // The hash of the 8 little-endian bytes of v.
  std::uint64_t word(std::uint64_t v) const noexcept {
    unsigned char b[8] = {};
    for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
    return bytes(b, 8);
  }

 private:
  static constexpr std::uint64_t rotl(std::uint64_t x, int b) noexcept { return (x << b) | (x >> (64 - b)); }
  static void round(std::uint64_t& v0, std::uint64_t& v1, std::uint64_t& v2, std::uint64_t& v3) noexcept {
    v0 += v1;
    v1 = rotl(v1, 13);
    v1 ^= v0;
    v0 = rotl(v0, 32);
    v2 += v3;
    v3 = rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = rotl(v1, 17);
    v1 ^= v2;
    v2 = rotl(v2, 32);
  }
  static std::uint64_t load_le(const unsigned char* p, std::size_t n) noexcept {
    std::uint64_t m = 0;
    for (std::size_t i = 0; i < n; ++i) m |= static_cast<std::uint64_t>(p[i]) << (8 * i);
    return m;
  }

  std::uint64_t v0_, v1_, v2_, v3_;
};

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_SIPHASH_HPP
