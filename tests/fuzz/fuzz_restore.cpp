// libFuzzer target: account::restore() on hostile snapshots that pass the
// checksum. The input is a program, not the snapshot: it picks a
// configuration, runs an account on a schedule, takes a real snapshot, then
// changes its fields (boundary values, small steps, random words, a word
// more or less) and recomputes the checksum, so every mutation reaches the
// range checks. Then it restores at any `now` and `wall`. Nothing may crash
// or trip a sanitizer; a refused restore leaves the account exactly as it
// was; a restored account still keeps its limits on what it admits.
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
  // A time near the ordinary range (the primitives' own extreme-time paths
  // are fuzzed elsewhere: this target is about restore()).
  std::int64_t sane_time() { return static_cast<std::int64_t>(bytes(7)) - (std::int64_t{1} << 55); }
};

const model_info& k26() {
  static const model_info m = *find_model("kimi-k2.6");
  return m;
}

account_config pick_config(std::uint8_t k) {
  account_config c;
  c.rpm = limit(5);
  c.tpm = limit(20000);
  c.tpd = limit(60000);
  c.max_request_tokens = 4000;
  c.model = k % 3 == 0 ? server_model::sliding_log : k % 3 == 1 ? server_model::unknown : server_model::fixed_window;
  c.calendar_day = (k & 4) != 0;
  if (k & 8) c.budget = usd::from_nanos(50000000);
  if (k & 16) c.concurrency = limit(3);
  if (k & 32) c.request_window = std::chrono::seconds(7);
  if ((k & 192) == 192) c.model = server_model::learn;  // format 3's learned words
  if (k & 64) c.trust_rate_limit_headers = true;         // format 3's gates
  return c;
}

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

bool same(const account<manual_clock>::remaining_view& x, const account<manual_clock>::remaining_view& y) {
  return x.concurrency == y.concurrency && x.requests == y.requests && x.tokens_minute == y.tokens_minute &&
         x.tokens_day == y.tokens_day && x.budget == y.budget && x.paused_for == y.paused_for && x.stopped == y.stopped;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  input in{data, size};
  const account_config c = pick_config(in.byte());
  request rq;
  rq.model = &k26();

  // The account that writes the snapshot.
  const std::int64_t oa = in.sane_time();
  account<manual_clock> a(c, ns(oa));
  std::int64_t t = oa;
  for (unsigned k = in.byte() % 24; k > 0; --k) {
    t += static_cast<std::int64_t>(in.bytes(4)) * 1000;  // up to 71 minutes
    rq.prompt_tokens = in.bytes(2) % 3000;
    rq.max_tokens = in.bytes(2) % 3000;
    auto x = a.try_admit(rq, ns(t));
    if (x && (in.byte() & 1)) x.lease.settle(usage{rq.prompt_tokens, 0, in.bytes(2) % 4000, 0, 0}, ns(t));
    const std::uint8_t answer = in.byte();
    if (answer == 7) a.on_response(classify(429, ""), ns(static_cast<std::int64_t>(in.bytes(5))), ns(t));
    if (answer == 8) a.on_response(classify(429, "request reached organization max RPM: 5"), std::nullopt, ns(t));
    if (answer == 9) {
      rate_limit_headers h;
      h.remaining_requests = in.bytes(1) % 8;
      h.reset_requests = ns(static_cast<std::int64_t>(in.bytes(5)));
      h.remaining_tokens = in.bytes(2);
      h.reset_tokens = ns(static_cast<std::int64_t>(in.bytes(5)));
      a.observe_rate_limit_headers(h, ns(t));
    }
  }
  const std::int64_t now1 = in.byte() < 32 ? in.any_time() : t + static_cast<std::int64_t>(in.bytes(4)) * 1000;
  const std::int64_t wall1 = in.any_time();
  const std::string good = a.snapshot(ns(now1), ns(wall1));

  // Structure-aware changes, then a valid checksum.
  std::vector<std::uint64_t> w = words_of(good);
  static const std::uint64_t edge[] = {0, 1, 2, 15, 16, 17, (1u << 24) - 1, 1u << 24, std::uint64_t{1} << 40,
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

  // The restore, at any time.
  const bool ordinary = in.byte() >= 64;
  const std::int64_t ob = ordinary ? in.sane_time() : in.any_time();
  const std::int64_t now2 = ordinary ? ob + static_cast<std::int64_t>(in.bytes(5)) : in.any_time();
  const std::int64_t wall2 = in.any_time();
  account<manual_clock> b(c, ns(ob));
  // Peeks far from the origin reach the primitives' own extreme-time paths:
  // compare views only where those are ordinary.
  auto near = [](std::int64_t x) { return x > -(std::int64_t{1} << 60) && x < (std::int64_t{1} << 60); };
  const bool peek = ordinary || (near(now2) && near(ob));
  const auto before = b.remaining(ns(peek ? now2 : 0));
  const auto e = b.restore(hostile, ns(now2), ns(wall2));
  if (e != account<manual_clock>::restore_errc::ok) {
    if (!same(b.remaining(ns(peek ? now2 : 0)), before)) __builtin_trap();  // refused, yet changed
    return 0;
  }
  if (!ordinary) {
    if (near(now2)) (void)b.try_admit(rq, ns(now2));
    return 0;
  }
  // Restored: whatever it holds, what it admits from now on keeps the limits.
  std::vector<std::pair<std::int64_t, std::uint64_t>> reqs, toks;
  std::int64_t money = 0, u = now2;
  for (unsigned k = 0; k < 64; ++k) {
    u += static_cast<std::int64_t>(in.bytes(3)) * 100000;  // up to 28 minutes
    rq.prompt_tokens = in.bytes(2) % 3000;
    rq.max_tokens = in.bytes(2) % 3000;
    auto x = b.try_admit(rq, ns(u));
    if (!x) continue;
    reqs.emplace_back(u, 1);
    toks.emplace_back(u, x.tokens);
    money += x.worst_case.nanos();
  }
  const std::int64_t wr = c.request_window.count(), wt = c.token_window.count();
  if (c.model != server_model::unknown) {  // learn too: each of its phases keeps the window
    if (tgtest::max_window_sum(reqs, wr) > *c.rpm.value()) __builtin_trap();
    if (tgtest::max_window_sum(toks, wt) > *c.tpm.value()) __builtin_trap();
  } else {
    const std::uint64_t l = *c.rpm.value() - 1;
    if (tgtest::bucket_bound_excess(reqs, l, static_cast<std::uint64_t>(wr) + 2000000ULL * l, 1) != 0) __builtin_trap();
    if (tgtest::bucket_bound_excess(toks, *c.tpm.value() - c.max_request_tokens, static_cast<std::uint64_t>(wt),
                                    c.max_request_tokens) != 0)
      __builtin_trap();
  }
  if (!c.calendar_day && tgtest::max_window_sum(toks, 86400000000000LL) > *c.tpd.value()) __builtin_trap();
  if (c.calendar_day) {
    std::map<std::int64_t, std::uint64_t> per_day;  // days of `now` as the quota counts them (0 before 1970)
    for (const auto& x : toks) per_day[x.first < 0 ? 0 : x.first / 86400000000000LL] += x.second;
    for (const auto& x : per_day)
      if (x.second > *c.tpd.value()) __builtin_trap();
  }
  if (c.budget && money > c.budget->nanos()) __builtin_trap();
  return 0;
}
