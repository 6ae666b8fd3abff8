// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/protocol.hpp: the client side of the script, as pure functions: a
// call's argv (the words of one EVALSHA / EVAL command) and the decoding of
// its reply. The library opens no socket: the user's Redis client sends the
// argv and hands back the reply as a `reply` value.
//
// Contract. build_call never fails (numbers are clamped to what the layout
// allows, see layout.hpp). decode_call is defined for every reply, however
// malformed: anything but an array of integers of the expected length with
// in-range values decodes as call_status::garbage (a refusal), never as an
// admission; an admission needs a lease id of at least 1. An error reply
// decodes as call_status::server_error, or call_status::noscript when the
// server lost the script or the function (send the EVAL form, which loads
// the body again, or FUNCTION LOAD first).
#ifndef TOLLGATE_REDIS_PROTOCOL_HPP
#define TOLLGATE_REDIS_PROTOCOL_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/redis/layout.hpp>
#include <tollgate/redis/script.hpp>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {

// One RESP value, as any client library can produce it.
struct reply {
  enum class kind : unsigned char { nil, integer, string, status, error, array };
  kind type = kind::nil;
  std::int64_t integer = 0;
  std::string str;  // string, status and error
  std::vector<reply> elements;

  static reply of_integer(std::int64_t v) {
    reply r;
    r.type = kind::integer;
    r.integer = v;
    return r;
  }
  static reply of_error(std::string s) {
    reply r;
    r.type = kind::error;
    r.str = std::move(s);
    return r;
  }
};

// One settlement that rides on a later call.
struct queued {
  // chunk_return: a chunk's leftovers (redis/chunk.hpp): reserved_nanos
  // requests into rpm's sub-window actual_nanos, refund_tokens tokens into
  // tpm_slot and tpd_slot; lease 0. money_return: reserved_nanos of a
  // chunk's money back (no request spent them); lease 0.
  enum class kind : unsigned char { settle = 1, settle_rejected = 2, drop = 3, chunk_return = 4, money_return = 5 };
  kind what = kind::drop;
  std::uint64_t lease = 0;
  std::uint64_t epoch = 0;  // the tag of the epoch that made the lease
  std::int64_t reserved_nanos = 0;
  std::int64_t actual_nanos = 0;
  std::uint64_t charge_tokens = 0;  // used beyond the reservation
  std::uint64_t refund_tokens = 0;  // unused, when the policy refunds
  std::int64_t tpm_slot = -1, tpd_slot = -1;  // a window's sub-window, a bucket's admission µs, a day
  std::uint64_t reserved_tokens = 0;  // what the admission reserved (a spaced bucket's refund needs it)
};

enum class op : unsigned char { admit, peek, flush, waits, control, init, chunk };
constexpr const char* to_string(op o) noexcept {
  switch (o) {
    case op::admit: return "admit";
    case op::peek: return "peek";
    case op::flush: return "flush";
    case op::waits: return "waits";
    case op::control: return "control";
    case op::init: return "init";
    case op::chunk: return "chunk";
  }
  return "?";
}

// The most settlements one call carries; the rest ride on the next.
inline constexpr std::size_t max_queued_per_call = 64;

struct call_args {
  op what = op::admit;
  std::optional<std::int64_t> now_us;  // test mode only
  std::uint64_t tokens = 0;
  std::int64_t worst_nanos = 0;
  std::vector<std::string> extra;  // control's or init's words
};

namespace detail_protocol {
inline std::string num(std::int64_t v) { return std::to_string(v); }
inline std::string num(std::uint64_t v) { return std::to_string(v); }
constexpr std::uint64_t clamp_u(std::uint64_t v, std::uint64_t top) noexcept { return v < top ? v : top; }
constexpr std::int64_t clamp_i(std::int64_t v, std::int64_t lo, std::int64_t hi) noexcept {
  return v < lo ? lo : v > hi ? hi : v;
}
// The script's units: a time in µs (floor: an earlier time is never more
// permissive), a µs reply as a duration (within ±2^53 µs), money in [0, 2^52].
constexpr std::int64_t to_us(nanoseconds now) noexcept { return now.count() <= 0 ? 0 : now.count() / 1000; }
constexpr nanoseconds from_us(std::int64_t v) noexcept {
  return nanoseconds(clamp_i(v, -(std::int64_t(1) << 53), std::int64_t(1) << 53) * 1000);
}
constexpr std::int64_t clamp_money(std::int64_t v) noexcept { return clamp_i(v, 0, std::int64_t(1) << 52); }
}  // namespace detail_protocol

// The words after the script (or its SHA): numkeys, keys, ARGV.
inline void append_call(std::vector<std::string>& out, const layout& l, const call_args& a,
                        const queued* q, std::size_t nq) {
  using namespace detail_protocol;
  constexpr std::uint64_t top_units = std::uint64_t(1) << 52;
  if (nq > max_queued_per_call) nq = max_queued_per_call;
  out.push_back("2");
  for (const char* part : {"epoch", "leases"}) out.push_back(l.key(part));
  out.push_back(num(layout_version));
  out.push_back(to_string(a.what));
  out.push_back(a.now_us ? num(clamp_i(*a.now_us, 0, (std::int64_t(1) << 53) - 1)) : std::string());
  out.push_back(num(l.concurrency));
  out.push_back(num(l.lease_records ? l.lease_us : 0));  // 0: no lease record
  for (const window_params& w : l.w) {
    out.push_back(num(w.limit));
    out.push_back(num(w.period_us));
    out.push_back(num(w.width_us));
  }
  out.push_back(l.budget ? num(l.budget_nanos) : std::string("-1"));
  out.push_back(num(l.hold_us));
  out.push_back(num(clamp_u(a.tokens, max_units + 1)));  // above every limit: refused `never`
  out.push_back(num(clamp_i(a.worst_nanos, 0, max_money + 1)));
  out.push_back(num(static_cast<std::uint64_t>(nq)));
  for (const bucket_params& b : l.b) {
    out.push_back(num(b.per_us));
    out.push_back(num(b.whole_us));
    out.push_back(num(b.ticks));
  }
  out.push_back(num(l.day_code));
  // server_model::learn: its level (+1; 0: not learn), spacing tokens, top
  // level, the dimensions spaced from the start, max_request_tokens.
  const learn_params& lp = l.learn;
  out.push_back(num(lp.on ? lp.level + 1 : 0));
  out.push_back(num(clamp_u(lp.extra_tokens, top_units)));
  out.push_back(num(lp.max_level));
  out.push_back(num(static_cast<std::uint64_t>((lp.spaced_start[0] ? 1 : 0) | (lp.spaced_start[1] ? 2 : 0))));
  out.push_back(num(clamp_u(lp.max_request_tokens, top_units)));
  for (std::size_t i = 0; i < nq; ++i) {
    const queued& x = q[i];
    out.push_back(num(static_cast<std::uint64_t>(x.what)));
    out.push_back(num(clamp_u(x.lease, (std::uint64_t(1) << 53) - 1)));
    out.push_back(num(clamp_i(x.reserved_nanos, 0, std::int64_t(1) << 52)));
    out.push_back(num(clamp_i(x.actual_nanos, 0, std::int64_t(1) << 52)));
    out.push_back(num(clamp_u(x.charge_tokens, top_units)));
    out.push_back(num(clamp_u(x.refund_tokens, top_units)));
    out.push_back(num(clamp_i(x.tpm_slot, -1, std::int64_t(1) << 52)));
    out.push_back(num(clamp_i(x.tpd_slot, -1, std::int64_t(1) << 52)));
    out.push_back(num(clamp_u(x.epoch, (std::uint64_t(1) << 53) - 1)));
    out.push_back(num(clamp_u(x.reserved_tokens, top_units)));
  }
  for (const std::string& e : a.extra) out.push_back(e);
}

// EVALSHA <sha> ... (the SHA from SCRIPT LOAD) or, without one, EVAL <body> ...
inline std::vector<std::string> build_call(const layout& l, const call_args& a, const queued* q, std::size_t nq,
                                           std::string_view sha = {}) {
  std::vector<std::string> out;
  out.reserve(45 + 10 * (nq < max_queued_per_call ? nq : max_queued_per_call));
  if (sha.empty()) {
    out.emplace_back("EVAL");
    out.emplace_back(script);
  } else {
    out.emplace_back("EVALSHA");
    out.emplace_back(sha);
  }
  append_call(out, l, a, q, nq);
  return out;
}
inline std::vector<std::string> build_script_load() { return {"SCRIPT", "LOAD", std::string(script)}; }
// FCALL tollgate_v3 ... (the Functions library, function_library()).
inline std::vector<std::string> build_fcall(const layout& l, const call_args& a, const queued* q, std::size_t nq) {
  std::vector<std::string> out;
  out.reserve(45 + 10 * (nq < max_queued_per_call ? nq : max_queued_per_call));
  out.emplace_back("FCALL");
  out.emplace_back(function_name);
  append_call(out, l, a, q, nq);
  return out;
}
inline std::vector<std::string> build_function_load() { return {"FUNCTION", "LOAD", "REPLACE", function_library()}; }

enum class call_status : unsigned char {
  ok,            // decoded: see code
  server_error,  // an error reply (the text is kept)
  noscript,      // EVALSHA of a script, or FCALL of a function, the server does not have
  garbage,       // a reply of the wrong shape or range
};

// What the script's codes mean (script.hpp).
enum class script_code : unsigned char {
  admitted = 0, wait = 1, busy = 2, never = 3, stopped = 4, held = 5, budget_held = 6, corrupt = 7, bad_call = 8,
  other_configuration = 9,
  relearn = 10,  // server_model::learn: the fleet's margin is wider (wait_us carries its level); rebuild, call again
};
// Where learn's words sit in a call's argv (the words of build_call or
// build_fcall): the rpm and tpm buckets (ARGV 20-25), the level and the
// spacing tokens (ARGV 27, 28), and in a lesson (control "learn") the next
// level's buckets (after "learn", kind and guard); ARGV i is word 4 + i.
inline constexpr std::size_t argv_word(std::size_t i) noexcept { return 4 + i; }
namespace detail_protocol {
inline void put_buckets(std::vector<std::string>& argv, std::size_t at, const layout& l) {
  for (std::size_t k = 0; k < 2; ++k) {
    argv[at + 3 * k] = num(l.b[k].per_us);
    argv[at + 3 * k + 1] = num(l.b[k].whole_us);
    argv[at + 3 * k + 2] = num(l.b[k].ticks);
  }
}
}  // namespace detail_protocol
// Whether a built call was made at another learn level than l's.
inline bool learn_stale(const std::vector<std::string>& argv, const layout& l) {
  return l.learn.on && argv.size() > argv_word(31) && argv[argv_word(27)] != detail_protocol::num(l.learn.level + 1);
}
// Rewrites a built call's learn words at l's level (after a relearn reply),
// a lesson's next level included, so a call sent again says one level.
inline void patch_learn(std::vector<std::string>& argv, const layout& l) {
  using namespace detail_protocol;
  if (argv.size() <= argv_word(31)) return;
  put_buckets(argv, argv_word(20), l);
  argv[argv_word(27)] = num(l.learn.on ? l.learn.level + 1 : 0);
  argv[argv_word(28)] = num(l.learn.extra_tokens);
  if (argv[argv_word(2)] != "control") return;
  const std::size_t b = argv_word(32 + 10 * static_cast<std::size_t>(std::strtoull(argv[argv_word(19)].c_str(), nullptr, 10)));
  if (argv.size() < b + 9 || argv[b] != "learn") return;  // "learn", kind, guard, then the buckets
  layout next = l;
  learn_rebuild(next, next.learn.level + 1);
  put_buckets(argv, b + 3, next);
}


struct decoded {
  call_status status = call_status::garbage;
  std::vector<std::int64_t> values;  // the integers, when status is ok
  std::string error;                 // when status is server_error
};

// Any reply: an array of exactly `n` integers within +-2^53, else garbage.
inline decoded decode_integers(const reply& r, std::size_t n) {
  decoded d;
  if (r.type == reply::kind::error) {
    const bool lost = r.str.compare(0, 8, "NOSCRIPT") == 0 || r.str.compare(0, 22, "ERR Function not found") == 0;
    d.status = lost ? call_status::noscript : call_status::server_error;
    d.error = r.str.substr(0, 200);
    return d;
  }
  if (r.type != reply::kind::array || r.elements.size() != n) return d;
  constexpr std::int64_t lim = std::int64_t(1) << 53;
  for (const reply& e : r.elements) {
    if (e.type != reply::kind::integer || e.integer <= -lim || e.integer >= lim) return decoded{};
    d.values.push_back(e.integer);
  }
  d.status = call_status::ok;
  return d;
}

// The reply of admit, init, flush and control.
struct call_reply {
  script_code code = script_code::bad_call;
  std::uint16_t refused_bits = 0;
  std::int64_t wait_us = 0;
  std::uint64_t lease = 0;
  std::int64_t tpm_slot = -1, tpd_slot = -1;
  std::int64_t now_us = 0;
  std::uint64_t epoch = 0;  // the deciding epoch's tag (an admission's lease carries it)
};
// `what` is the op the call was built for: code 0 answers an admit with a
// lease id of at least 1 (ids start at 1) and an epoch tag of at least 1,
// every other op with lease id 0.
inline call_status decode_call(const reply& r, call_reply& out, op what = op::admit) {
  decoded d = decode_integers(r, 8);
  if (d.status != call_status::ok) return d.status;
  const auto& v = d.values;
  if (v[0] < 0 || v[0] > 10 || v[1] < 0 || v[1] > 0x1ff || v[2] < 0 || v[3] < 0 || v[4] < -1 || v[5] < -1 || v[6] < 0 ||
      v[7] < 0)
    return call_status::garbage;
  const script_code c = static_cast<script_code>(v[0]);
  // An admission carries a lease; a wait carries a positive wait.
  if ((c == script_code::admitted && v[1] != 0) || (c == script_code::wait && v[2] <= 0)) return call_status::garbage;
  if (c == script_code::admitted && (what == op::admit) != (v[3] >= 1)) return call_status::garbage;
  if (c == script_code::admitted && what == op::admit && v[7] < 1) return call_status::garbage;
  out.code = c;
  out.refused_bits = static_cast<std::uint16_t>(v[1]);
  out.wait_us = v[2];
  out.lease = static_cast<std::uint64_t>(v[3]);
  out.tpm_slot = v[4];
  out.tpd_slot = v[5];
  out.now_us = v[6];
  out.epoch = static_cast<std::uint64_t>(v[7]);
  return call_status::ok;
}

// A relearn reply's level, if `r` is one (a call reply of code 10).
inline std::optional<std::uint64_t> relearn_level(const reply& r) {
  call_reply c;
  if (decode_call(r, c, op::flush) != call_status::ok || c.code != script_code::relearn || c.wait_us > 64)
    return std::nullopt;
  return static_cast<std::uint64_t>(c.wait_us);
}

// The reply of chunk when it grants (redis/chunk.hpp): 13 integers
//   {0, requests, tokens, end_us, rpm slot, tpm slot, tpd slot, now_us, epoch,
//    slots, first id, slots' deadline, money}
// (slot -1: the window is not enforced; end_us the server µs at which the
// first of the head sub-windows they are counted in ends; slots: how many
// concurrency slots, leases of ids first .. first + slots - 1, each ending at
// the deadline; 0 0 0 without a concurrency limit; money: the nanos
// committed for the chunk, 0 without a budget). Any other
// answer is call_reply's shape: a refusal, or an admission with a lease as
// admit's (a 0-token request where a token window's head is ahead: no chunk).
struct chunk_reply {
  std::uint64_t requests = 0, tokens = 0;
  std::int64_t end_us = 0;
  std::int64_t slots[3] = {-1, -1, -1};
  std::int64_t now_us = 0;
  std::uint64_t epoch = 0;
  std::uint64_t slot_count = 0, first_id = 0;
  std::int64_t slot_end_us = 0;
  std::int64_t money_nanos = 0;
  std::int64_t slice_us = 0;  // the spaced buckets' slice, [now_us, now_us + slice_us) (0: none)
};
inline call_status decode_chunk(const reply& r, chunk_reply& out, call_reply& refusal, bool& granted) {
  granted = false;
  if (r.type == reply::kind::array && r.elements.size() == 14) {
    decoded d = decode_integers(r, 14);
    if (d.status != call_status::ok) return d.status;
    const auto& v = d.values;
    // A grant holds at least one request, ends after the time it was made at
    // and comes from an epoch; its slots (if any) have ids from 1 on and end
    // after the grant's end; every other value is in range.
    if (v[0] != 0 || v[1] < 1 || v[2] < 0 || v[3] <= v[7] || v[4] < -1 || v[5] < -1 || v[6] < -1 || v[7] < 0 ||
        v[8] < 1 || v[9] < 0 || (v[9] == 0 && (v[10] != 0 || v[11] != 0)) ||
        (v[9] > 0 && (v[10] < 1 || v[11] <= v[3] || v[9] > (std::int64_t(1) << 30))) || v[12] < 0 ||
        v[12] > (std::int64_t(1) << 52) || v[13] < 0 || v[13] > (std::int64_t(1) << 52) ||
        (v[13] > 0 && v[3] > v[7] + v[13]))
      return call_status::garbage;
    out.slice_us = v[13];
    out.money_nanos = v[12];
    out.slot_count = static_cast<std::uint64_t>(v[9]);
    out.first_id = static_cast<std::uint64_t>(v[10]);
    out.slot_end_us = v[11];
    out.requests = static_cast<std::uint64_t>(v[1]);
    out.tokens = static_cast<std::uint64_t>(v[2]);
    out.end_us = v[3];
    for (int k = 0; k < 3; ++k) out.slots[k] = v[static_cast<std::size_t>(4 + k)];
    out.now_us = v[7];
    out.epoch = static_cast<std::uint64_t>(v[8]);
    granted = true;
    return call_status::ok;
  }
  return decode_call(r, refusal, op::admit);
}

// A refusal that answers any op in place of its own reply (bad call,
// corrupt, other configuration): peek and waits decode it with this, after
// their own shape failed.
inline std::optional<script_code> decode_refusal(const reply& r) {
  call_reply c;
  if (decode_call(r, c, op::flush) != call_status::ok) return std::nullopt;
  if (c.code != script_code::corrupt && c.code != script_code::bad_call && c.code != script_code::other_configuration)
    return std::nullopt;
  return c.code;
}

// The reply of peek.
struct peek_reply {
  std::uint64_t in_flight = 0;
  std::int64_t committed_nanos = 0, spent_nanos = 0, now_us = 0;
  std::optional<std::uint64_t> available[3];  // rpm, tpm, tpd; empty when not enforced
  std::int64_t paused_for_us = 0;
  bool stopped = false, budget_held = false;
  std::int64_t held_for_us = 0;
};
inline call_status decode_peek(const reply& r, peek_reply& out) {
  decoded d = decode_integers(r, 12);
  if (d.status != call_status::ok) return d.status;
  const auto& v = d.values;
  if (v[0] != 0 || v[1] < 0 || v[2] < 0 || v[3] < 0 || v[4] < 0 || v[8] < 0 || v[9] < 0 || v[9] > 1 || v[10] < 0 ||
      v[10] > 1 || v[11] < 0)
    return call_status::garbage;
  for (std::size_t k = 0; k < 3; ++k) {
    const std::int64_t a = v[5 + k];
    if (a < -1) return call_status::garbage;
    out.available[k] = a < 0 ? std::nullopt : std::optional<std::uint64_t>(static_cast<std::uint64_t>(a));
  }
  out.in_flight = static_cast<std::uint64_t>(v[1]);
  out.committed_nanos = v[2];
  out.spent_nanos = v[3];
  out.now_us = v[4];
  out.paused_for_us = v[8];
  out.stopped = v[9] == 1;
  out.budget_held = v[10] == 1;
  out.held_for_us = v[11];
  return call_status::ok;
}

// The reply of waits: own waits in µs for one request, one token, and until
// the daily window is empty.
inline call_status decode_waits(const reply& r, std::int64_t (&out)[3]) {
  decoded d = decode_integers(r, 3);
  if (d.status != call_status::ok) return d.status;
  for (int k = 0; k < 3; ++k) out[k] = d.values[static_cast<std::size_t>(k)];
  if (out[0] < 0 || out[1] < 0) return call_status::garbage;
  return call_status::ok;
}

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_PROTOCOL_HPP
