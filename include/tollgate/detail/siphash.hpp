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

// SipHash-c-d: `c` rounds per message word, `d` to finish.
template <int C, int D>
class basic_siphash {
  static_assert(C >= 1 && D >= 1, "SipHash needs at least one round of each kind");

 public:
  constexpr basic_siphash(std::uint64_t k0, std::uint64_t k1) noexcept
      : v0_(k0 ^ 0x736f6d6570736575ULL), v1_(k1 ^ 0x646f72616e646f6dULL), v2_(k0 ^ 0x6c7967656e657261ULL),
        v3_(k1 ^ 0x7465646279746573ULL) {}

  // The hash of `len` bytes at `p` (p may be null when len is 0).
  std::uint64_t bytes(const unsigned char* p, std::size_t len) const noexcept {
    std::uint64_t v0 = v0_, v1 = v1_, v2 = v2_, v3 = v3_;
    const std::size_t whole = len - len % 8;
    for (std::size_t i = 0; i < whole; i += 8) compress(v0, v1, v2, v3, load_le(p + i, 8));
    compress(v0, v1, v2, v3, (static_cast<std::uint64_t>(len & 0xff) << 56) | load_le(p + whole, len % 8));
    return finish(v0, v1, v2, v3);
  }

  // The hash of the 8 little-endian bytes of v: bytes() of them, without
  // the byte loop (one message word, then the length block of 8 bytes).
  std::uint64_t word(std::uint64_t v) const noexcept {
    std::uint64_t v0 = v0_, v1 = v1_, v2 = v2_, v3 = v3_;
    compress(v0, v1, v2, v3, v);
    compress(v0, v1, v2, v3, std::uint64_t{8} << 56);
    return finish(v0, v1, v2, v3);
  }

 private:
  static void compress(std::uint64_t& v0, std::uint64_t& v1, std::uint64_t& v2, std::uint64_t& v3,
                       std::uint64_t m) noexcept {
    v3 ^= m;
    for (int i = 0; i < C; ++i) round(v0, v1, v2, v3);
    v0 ^= m;
  }
  static std::uint64_t finish(std::uint64_t& v0, std::uint64_t& v1, std::uint64_t& v2, std::uint64_t& v3) noexcept {
    v2 ^= 0xff;
    for (int i = 0; i < D; ++i) round(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
  }
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

using siphash24 = basic_siphash<2, 4>;
using siphash13 = basic_siphash<1, 3>;

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_SIPHASH_HPP
