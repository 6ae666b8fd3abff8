// libFuzzer target: keyed_windows::restore(), keyed_permits::restore() and
// keyed_budgets::restore() on hostile snapshots that pass the checksum. The input is a program: it
// picks a table kind and shape, runs keys on it, takes a real snapshot,
// changes its fields (boundary values, small steps, random words, a word
// more or less) and recomputes the checksum, so every mutation reaches the
// range checks; then restores at any `now`, `wall` and hold. Nothing may
// crash or trip a sanitizer; a refused restore leaves the table (and the
// permits' `out`) as they were; a restored table keeps every key within its
// limit from then on, snapshots again into bytes that restore, and (permits)
// releases every restored unit without a count going below zero; (budgets)
// no key settles more than its limit in a period after the restore, nor
// reserves more than remaining() says is left.
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

// Changes a snapshot's words, keeping its tag; the checksum is recomputed.
std::string mutate(input& in, const std::string& good) {
  std::vector<std::uint64_t> w = words_of(good);
  static const std::uint64_t edge[] = {0, 1, 2, 3, 4, 5, 15, 16, 17, 255, 256, 333333334, 0xffffffffULL,
                                       std::uint64_t{1} << 31, std::uint64_t{1} << 32, std::uint64_t{1} << 40,
                                       std::uint64_t{1} << 62,
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
  return bytes_of(good.substr(0, 4), w);
}

// Keys land where their low bits say: small tables fill and displace.
struct low_hash {
  explicit low_hash(hash_seed s) : salt(s.k0) {}
  std::uint64_t operator()(std::uint64_t id) const { return (id * 0x9E3779B97F4A7C15ULL) ^ salt; }
  std::uint64_t operator()(std::string_view s) const { return s.size() ^ salt; }
  std::uint64_t salt;
};

constexpr std::int64_t sec = 1000000000;

// Both classes keep any key within 5 in every 1 s window, whichever a
// hostile snapshot gave it.
void windows(input& in) {
  using table = keyed_windows<manual_clock, low_hash>;
  static const std::vector<window_class> classes = {{5, ns(sec)}, {3, ns(2 * sec)}};
  const std::size_t cap = 1 + in.byte() % 16, window = 1 + in.byte() % 16;
  const hash_seed seed{in.bytes(2), 0};
  const std::int64_t oa = in.sane_time();
  table a(cap, classes, seed, ns(oa), window);
  std::int64_t t = oa;
  for (unsigned k = in.byte() % 32; k > 0; --k) {
    t += static_cast<std::int64_t>(in.bytes(4)) * 100;
    const std::uint64_t key = in.byte() % 24;
    if (in.byte() == 3) (void)a.erase(key);
    else (void)a.try_acquire(key, key % 2, 1 + in.byte() % 3, ns(in.byte() == 9 ? t - 5 * sec : t));
  }
  const std::int64_t now1 = in.byte() < 32 ? in.any_time() : t + static_cast<std::int64_t>(in.bytes(4)) * 100;
  const std::int64_t wall1 = in.any_time();
  const std::string hostile = mutate(in, a.snapshot(ns(now1), ns(wall1)));

  const bool ordinary = in.byte() >= 64;
  const std::int64_t ob = ordinary ? in.sane_time() : in.any_time();
  const std::int64_t now2 = ordinary ? ob + static_cast<std::int64_t>(in.bytes(5)) : in.any_time();
  const std::int64_t wall2 = in.any_time();
  table b(cap, classes, seed, ns(ob), window);
  const std::string before = b.snapshot(ns(now2), ns(0));
  if (b.restore(hostile, ns(now2), ns(wall2)) != account_restore_errc::ok) {
    if (b.snapshot(ns(now2), ns(0)) != before) __builtin_trap();  // refused, yet changed
    for (std::uint64_t key = 0; key < 24; ++key)
      if (b.contains(key)) __builtin_trap();
    return;
  }
  // What a restored table holds snapshots into bytes that restore.
  {
    table c(cap, classes, seed, ns(ob), window);
    if (c.restore(b.snapshot(ns(now2), ns(wall2)), ns(now2), ns(wall2)) != account_restore_errc::ok) __builtin_trap();
  }
  std::map<std::uint64_t, std::vector<std::pair<std::int64_t, std::uint64_t>>> log;
  std::int64_t u = now2;
  for (unsigned k = 0; k < 64; ++k) {
    if (ordinary) u += static_cast<std::int64_t>(in.bytes(3)) * 1000;
    const std::uint64_t key = in.byte() % 24;
    const std::uint64_t n = 1 + in.byte() % 3;
    if (b.try_acquire(key, key % 2, n, ns(u)).admitted()) log[key].emplace_back(u, n);
  }
  if (!ordinary) return;
  for (const auto& kv : log)
    if (tgtest::max_window_sum(kv.second, sec) > 5) __builtin_trap();
}

void permits(input& in) {
  using table = keyed_permits<low_hash>;
  static const std::vector<std::uint64_t> limits = {2, 5, 1};
  const std::size_t cap = 1 + in.byte() % 16, window = 1 + in.byte() % 16;
  const hash_seed seed{in.bytes(2), 0};
  table a(cap, limits, seed, window);
  std::vector<keyed_permit> held;
  for (unsigned k = in.byte() % 32; k > 0; --k) {
    const std::uint64_t key = in.byte() % 24;
    const std::uint8_t op = in.byte();
    if (op < 16) (void)a.erase(key);
    else if (op < 80 && !held.empty()) held.erase(held.begin() + static_cast<std::ptrdiff_t>(op % held.size()));
    else {
      keyed_permit p = a.try_acquire(key, key % 3, 1 + in.byte() % 3);
      if (p) held.push_back(std::move(p));
    }
  }
  const std::int64_t wall1 = in.any_time();
  const std::string hostile = mutate(in, a.snapshot(ns(wall1)));
  const std::int64_t wall2 = in.any_time(), hold = in.any_time();
  table b(cap, limits, seed, window);
  table side(cap, limits, seed, window);
  keyed_permit_holds out;
  out.permits.push_back(side.try_acquire(std::uint64_t{1}, 1, 1));
  out.keep_for = ns(7);
  const std::string before = b.snapshot(ns(0));
  if (b.restore(hostile, ns(wall2), ns(hold), out) != account_restore_errc::ok) {
    if (b.snapshot(ns(0)) != before) __builtin_trap();
    if (out.permits.size() != 1 || out.keep_for != ns(7) || side.in_use(std::uint64_t{1}) != 1) __builtin_trap();
    for (std::uint64_t key = 0; key < 24; ++key)
      if (b.contains(key)) __builtin_trap();
    return;
  }
  if (side.in_use(std::uint64_t{1}) != 0) __builtin_trap();  // the old content of `out` was released
  if (out.keep_for.count() < 0 || (out.permits.empty() != (out.keep_for.count() == 0))) __builtin_trap();
  for (const keyed_permit& p : out.permits)
    if (p.count() == 0 || p.count() > 5) __builtin_trap();
  {
    table c(cap, limits, seed, window);
    keyed_permit_holds o;
    if (c.restore(b.snapshot(ns(wall2)), ns(wall2), ns(1), o) != account_restore_errc::ok) __builtin_trap();
  }
  // Traffic beside the restored permits: no key above the largest limit;
  // then everything released: nothing held anywhere.
  std::vector<keyed_permit> more;
  for (unsigned k = 0; k < 48; ++k) {
    const std::uint64_t key = in.byte() % 24;
    const std::uint8_t op = in.byte();
    if (op < 8) (void)b.erase(key);
    else if (op < 40 && !out.permits.empty()) out.permits.pop_back();
    else {
      keyed_permit p = b.try_acquire(key, key % 3, 1 + in.byte() % 3);
      if (p) more.push_back(std::move(p));
    }
    if (b.in_use(key) > 5) __builtin_trap();
  }
  out.clear();
  more.clear();
  for (std::uint64_t key = 0; key < 24; ++key)
    if (b.in_use(key) != 0) __builtin_trap();
}
// Limits 5 and 9 units, a calendar of none, days or months at an offset.
void budgets(input& in) {
  using table = keyed_budgets<usd_tag, low_hash>;
  static const std::vector<usd> limits = {usd::from_units(5), usd::from_units(9)};
  const std::size_t cap = 1 + in.byte() % 16, window = 1 + in.byte() % 16;
  const hash_seed seed{in.bytes(2), 0};
  budget_calendar cal;
  cal.period = static_cast<budget_period>(in.byte() % 3);
  cal.utc_offset = std::chrono::minutes(static_cast<std::int64_t>(in.byte() % 97) * 30 - 1440);
  const keyed_budget_reuse reuse = in.byte() % 4 == 0 ? keyed_budget_reuse::idle : keyed_budget_reuse::never;
  table a(cap, limits, seed, cal, reuse, window);
  std::vector<keyed_reservation<usd_tag>> held;
  std::int64_t t = in.sane_time();
  for (unsigned k = in.byte() % 32; k > 0; --k) {
    t += static_cast<std::int64_t>(in.bytes(6)) - (std::int64_t{1} << 40);
    const std::uint64_t key = in.byte() % 24;
    const std::uint8_t op = in.byte();
    if (op < 16) (void)a.erase(key);
    else if (op < 80 && !held.empty()) {
      const std::size_t at = op % held.size();
      if (op % 3 != 0) (void)a.settle(held[at], usd::from_nanos(static_cast<std::int64_t>(in.bytes(5))), ns(t));
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(at));
    } else {
      keyed_reservation<usd_tag> r =
          a.reserve(key, key % 2, usd::from_nanos(static_cast<std::int64_t>(in.bytes(5))), ns(t));
      if (r) held.push_back(std::move(r));
    }
  }
  const std::int64_t snap = in.byte() < 32 ? in.any_time() : t;
  const std::string hostile = mutate(in, a.snapshot(ns(snap)));
  table b(cap, limits, seed, cal, reuse, window);
  const std::string before = b.snapshot(ns(0));
  if (b.restore(hostile) != account_restore_errc::ok) {
    if (b.snapshot(ns(0)) != before) __builtin_trap();  // refused, yet changed
    for (std::uint64_t key = 0; key < 24; ++key)
      if (b.contains(key)) __builtin_trap();
    return;
  }
  {
    table c(cap, limits, seed, cal, reuse, window);
    const std::string again = b.snapshot(ns(snap));
    if (c.restore(again) != account_restore_errc::ok) __builtin_trap();
    if (c.snapshot(ns(snap)) != again) __builtin_trap();
  }
  // After the restore, in every period, what each key settles at or below
  // what it reserved stays within its limit, and nothing is admitted past
  // what remaining() said was left.
  const bool ordinary = in.byte() >= 64;
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::int64_t> settled;  // (key, period) -> nanos
  std::int64_t u = ordinary ? snap : in.any_time();
  for (unsigned k = 0; k < 64; ++k) {
    if (ordinary && u < (std::int64_t{1} << 62)) u += static_cast<std::int64_t>(in.bytes(6));
    const std::uint64_t key = in.byte() % 24;
    const std::int64_t amount = static_cast<std::int64_t>(in.bytes(5));
    const usd before_r = b.remaining(key, key % 2, ns(u));
    if (before_r.nanos() < 0 || before_r.nanos() > usd::from_units(9).nanos()) __builtin_trap();
    keyed_reservation<usd_tag> r = b.reserve(key, key % 2, usd::from_nanos(amount), ns(u));
    if (r && amount > before_r.nanos()) __builtin_trap();  // admitted past what was left
    if (!r) continue;
    const std::int64_t cost = amount == 0 ? 0 : static_cast<std::int64_t>(in.bytes(5)) % (amount + 1);
    (void)b.settle(r, usd::from_nanos(cost), ns(u));
    std::int64_t& s = settled[{key, r.period()}];
    s += cost;
    // (With idle reuse an entry that holds nothing may go to another key,
    // and its own key starts over: the user's reset.)
    if (reuse == keyed_budget_reuse::never && s > usd::from_units(9).nanos()) __builtin_trap();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  input in{data, size};
  switch (in.byte() % 3) {
    case 0: windows(in); break;
    case 1: permits(in); break;
    default: budgets(in); break;
  }
  return 0;
}
