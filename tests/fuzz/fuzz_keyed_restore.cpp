// libFuzzer target: keyed_buckets::restore() on hostile snapshots that pass
// the checksum. The input is a program: it picks a table, runs keys on it,
// takes a real snapshot, changes its fields (boundary values, small steps,
// random words, a word more or less) and recomputes the checksum, so every
// mutation reaches the range checks; then restores at any `now` and
// `wall`. Nothing may crash or trip a sanitizer; a refused restore leaves
// the table as it was; a restored table still keeps every key's bound on
// what it admits from then on.
#include <tollgate/tollgate.hpp>

#include "../support.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace {
using namespace tollgate;
using ns = std::chrono::nanoseconds;

struct input {
  const std::uint8_t* p;
  std::size_t n;
  std::uint64_t bytes(unsigned k) {
    std::uint64_t v = 0;
    for (unsigned i = 0; i < k; ++i) {
      v = (v << 8) | (n > 0 ? *p : 0);
      if (n > 0) ++p, --n;
    }
    return v;
  }
  std::uint8_t byte() { return static_cast<std::uint8_t>(bytes(1)); }
  std::int64_t any_time() {
    static const std::int64_t special[] = {std::numeric_limits<std::int64_t>::min(), -1, 0, 1,
                                           1800000000LL * 1000000000LL, std::numeric_limits<std::int64_t>::max()};
    const std::uint8_t k = byte();
    if (k < 6) return special[k];
    return static_cast<std::int64_t>(bytes(8));
  }
  std::int64_t sane_time() { return static_cast<std::int64_t>(bytes(7)) - (std::int64_t{1} << 55); }
};

std::vector<std::uint64_t> words_of(const std::string& s) {
  std::vector<std::uint64_t> w;
  for (std::size_t i = 4; i + 8 <= s.size(); i += 8) {
    std::uint64_t v = 0;
    for (unsigned b = 0; b < 8; ++b) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(s[i + b])) << (8 * b);
    w.push_back(v);
  }
  if (!w.empty()) w.pop_back();  // the checksum
  return w;
}
std::string bytes_of(const std::string& tag, const std::vector<std::uint64_t>& w) {
  std::string s = tag;
  for (std::uint64_t v : w)
    for (unsigned b = 0; b < 8; ++b) s.push_back(static_cast<char>((v >> (8 * b)) & 0xFF));
  const std::uint64_t sum = detail::fnv1a(s);
  for (unsigned b = 0; b < 8; ++b) s.push_back(static_cast<char>((sum >> (8 * b)) & 0xFF));
  return s;
}

// Keys land where their low bits say: small tables fill and displace.
struct low_hash {
  explicit low_hash(hash_seed s) : salt(s.k0) {}
  std::uint64_t operator()(std::uint64_t id) const { return (id * 0x9E3779B97F4A7C15ULL) ^ salt; }
  std::uint64_t operator()(std::string_view s) const { return s.size() ^ salt; }
  std::uint64_t salt;
};
using table = keyed_buckets<manual_clock, low_hash>;

const std::vector<key_class>& classes() {
  static const std::vector<key_class> c = {{rate(1, std::chrono::seconds(1)), 3}, {rate(7, std::chrono::seconds(1)), 5},
                                           {rate(1, std::chrono::minutes(1)), 2}};
  return c;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  input in{data, size};
  const std::size_t cap = 1 + in.byte() % 16, window = 1 + in.byte() % 16;
  const hash_seed seed{in.bytes(2), 0};

  const std::int64_t oa = in.sane_time();
  table a(cap, classes(), seed, ns(oa), window);
  std::int64_t t = oa;
  for (unsigned k = in.byte() % 32; k > 0; --k) {
    t += static_cast<std::int64_t>(in.bytes(4)) * 1000;
    const std::uint64_t key = in.byte() % 24;
    if (in.byte() == 3) (void)a.erase(key);
    else (void)a.try_acquire(key, key % 3, 1 + in.byte() % 4, ns(in.byte() == 9 ? t - 5000000000 : t));
  }
  const std::int64_t now1 = in.byte() < 32 ? in.any_time() : t + static_cast<std::int64_t>(in.bytes(4)) * 1000;
  const std::int64_t wall1 = in.any_time();
  const std::string good = a.snapshot(ns(now1), ns(wall1));

  std::vector<std::uint64_t> w = words_of(good);
  static const std::uint64_t edge[] = {0, 1, 2, 15, 16, 17, std::uint64_t{1} << 40, std::uint64_t{1} << 62,
                                       static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()),
                                       std::uint64_t{1} << 63, ~std::uint64_t{0}};
  for (unsigned k = in.byte() % 6; k > 0 && !w.empty(); --k) {
    const std::size_t at = in.byte() % w.size();
    switch (in.byte() % 6) {
      case 0: w[at] = edge[in.byte() % (sizeof edge / sizeof edge[0])]; break;
      case 1: w[at] += in.bytes(1); break;
      case 2: w[at] -= in.bytes(1); break;
      case 3: w[at] = in.bytes(8); break;
      case 4: w.insert(w.begin() + static_cast<std::ptrdiff_t>(at), in.bytes(8)); break;
      default: w.erase(w.begin() + static_cast<std::ptrdiff_t>(at)); break;
    }
  }
  const std::string hostile = bytes_of(good.substr(0, 4), w);

  const bool ordinary = in.byte() >= 64;
  const std::int64_t ob = ordinary ? in.sane_time() : in.any_time();
  const std::int64_t now2 = ordinary ? ob + static_cast<std::int64_t>(in.bytes(5)) : in.any_time();
  const std::int64_t wall2 = in.any_time();
  table b(cap, classes(), seed, ns(ob), window);
  const std::string before = b.snapshot(ns(now2), ns(0));
  const auto e = b.restore(hostile, ns(now2), ns(wall2));
  if (e != account_restore_errc::ok) {
    if (b.snapshot(ns(now2), ns(0)) != before) __builtin_trap();  // refused, yet changed
    for (std::uint64_t key = 0; key < 24; ++key)
      if (b.contains(key)) __builtin_trap();
    return 0;
  }
  // Restored: a key never holds two entries, and what the table admits from
  // now on keeps each key within its bucket bound.
  std::map<std::uint64_t, std::vector<std::pair<std::int64_t, std::uint64_t>>> log;
  std::int64_t u = now2;
  for (unsigned k = 0; k < 64; ++k) {
    if (ordinary) u += static_cast<std::int64_t>(in.bytes(3)) * 1000;
    const std::uint64_t key = in.byte() % 24;
    const std::uint64_t n = 1 + in.byte() % 3;
    if (b.try_acquire(key, key % 3, n, ns(u)).admitted()) log[key].emplace_back(u, n);
  }
  if (!ordinary) return 0;
  for (const auto& kv : log) {
    // A restored key's class is the one it had, which may differ from key % 3:
    // check against the loosest class of the three (rate 7/s, burst 5).
    if (tgtest::bucket_bound_excess(kv.second, 7, 1000000000, 5) != 0) __builtin_trap();
  }
  return 0;
}
