// libFuzzer target: the Redis account's reply decoders on any reply tree a
// server or an executor could hand back (any kind, any length, any integers,
// nested arrays). Each decoder must return; what one accepts must have the
// shape its contract names, read here from the reply itself.
#include <tollgate/redis/protocol.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace tr = tollgate::redis;

namespace {

struct bytes {
  const std::uint8_t* p;
  std::size_t n;
  std::uint8_t u8() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  std::int64_t i64() {
    // Small values, the 2^53 edges and any 64-bit word, so range checks are reached.
    switch (u8() % 6) {
      case 0: return static_cast<std::int64_t>(u8()) - 3;
      case 1: return (std::int64_t(1) << 53) - 1 + (u8() % 3);
      case 2: return -(std::int64_t(1) << 53) + 1 - (u8() % 3);
      case 3: return static_cast<std::int64_t>(u8()) << 20;
      default: {
        std::uint64_t v = 0;
        for (int k = 0; k < 8; ++k) v = v << 8 | u8();
        std::int64_t s;
        std::memcpy(&s, &v, sizeof s);
        return s;
      }
    }
  }
};

tr::reply make(bytes& b, int depth) {
  tr::reply r;
  const std::uint8_t k = b.u8();
  // Arrays of integers most of the time: the shapes the decoders accept.
  r.type = depth > 0 && k % 8 != 0 ? tr::reply::kind::integer
           : depth == 0 && k % 8 != 0 ? tr::reply::kind::array
                                      : static_cast<tr::reply::kind>(k % 6);
  if (r.type == tr::reply::kind::integer) r.integer = b.i64();
  if (r.type == tr::reply::kind::string || r.type == tr::reply::kind::status || r.type == tr::reply::kind::error) {
    const std::size_t len = b.u8() % 24;
    for (std::size_t j = 0; j < len; ++j) r.str.push_back(static_cast<char>(b.u8()));
    if (r.type == tr::reply::kind::error && b.u8() % 4 == 0) r.str = "NOSCRIPT No matching script";
  }
  if (r.type == tr::reply::kind::array && depth < 2) {
    const std::uint8_t c = b.u8();
    const std::size_t n = c % 4 == 0 ? c % 16 : c % 4 == 1 ? 8 : c % 4 == 2 ? 14 : 12;
    for (std::size_t j = 0; j < n; ++j) r.elements.push_back(make(b, depth + 1));
  }
  return r;
}

bool all_integers(const tr::reply& r, std::size_t n) {
  if (r.type != tr::reply::kind::array || r.elements.size() != n) return false;
  for (const auto& e : r.elements)
    if (e.type != tr::reply::kind::integer || e.integer >= (std::int64_t(1) << 53) || e.integer <= -(std::int64_t(1) << 53))
      return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  bytes b{data, size};
  const tr::reply r = make(b, 0);
  for (tr::op what : {tr::op::admit, tr::op::flush, tr::op::control}) {
    tr::call_reply c;
    if (tr::decode_call(r, c, what) != tr::call_status::ok) continue;
    if (!all_integers(r, 8)) __builtin_trap();
    if (c.code == tr::script_code::admitted && (c.refused_bits != 0 || (what == tr::op::admit) != (c.lease >= 1))) __builtin_trap();
    if (c.code == tr::script_code::wait && c.wait_us <= 0) __builtin_trap();
  }
  tr::chunk_reply g;
  tr::call_reply refusal;
  bool granted = false;
  const tr::call_status s = tr::decode_chunk(r, g, refusal, granted);
  if (granted) {
    if (s != tr::call_status::ok || !all_integers(r, 14)) __builtin_trap();
    if (g.slice_us < 0 || (g.slice_us > 0 && g.end_us > g.now_us + g.slice_us)) __builtin_trap();
    if (g.requests < 1 || g.end_us <= g.now_us || g.epoch < 1) __builtin_trap();
    if (g.slot_count == 0 ? (g.first_id != 0 || g.slot_end_us != 0) : (g.first_id < 1 || g.slot_end_us <= g.end_us))
      __builtin_trap();
  } else if (s == tr::call_status::ok && !all_integers(r, 8)) {
    __builtin_trap();
  }
  tr::peek_reply p;
  if (tr::decode_peek(r, p) == tr::call_status::ok && (!all_integers(r, 12) || p.now_us < 0)) __builtin_trap();
  std::int64_t w[3];
  if (tr::decode_waits(r, w) == tr::call_status::ok && (!all_integers(r, 3) || w[0] < 0 || w[1] < 0)) __builtin_trap();
  (void)tr::decode_refusal(r);
  if (const auto lv = tr::relearn_level(r)) {  // a level the layout can take, from an 8-integer reply only
    if (*lv > 64 || !all_integers(r, 8)) __builtin_trap();
  }
  return 0;
}
