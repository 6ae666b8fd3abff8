// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/script.hpp: the account's decision as a Redis script (an EVAL /
// EVALSHA body), on the layout of redis/layout.hpp. It is a second
// implementation of the decisions of account/policy.hpp (Lua cannot run the
// C++); what it shares with the in-process account is the
// state's meaning, the constants and the tests that keep the two equal
// (tests/redis/test_redis.cpp: the differential test).
//
// Contract. One call decides every dimension all-or-nothing: it reads and
// checks every key first, writes nothing when it refuses (but the clock it
// has seen, the lease deadlines that passed and the queued settlements it
// carries), and answers integers only:
//   {code, refused_bits, wait_us, lease_id, tpm_slot, tpd_slot, now_us, epoch}
//   code: 0 admitted, 1 wait (wait_us > 0, rounded up), 2 busy (a lease must
//   end first), 3 never (a request above a limit), 4 stopped (quota error,
//   until resume), 5 held (state was lost, or one key of it: wait_us until
//   the hold ends, see layout.hpp),
//   6 budget held (state was lost: until restore_budget), 7 corrupt (a key
//   of the account holds what the script never writes: refused, never
//   admitted, nothing written), 8 bad call (version, arguments, or a
//   supplied `now` to an account not in test mode, or none to one that is),
//   9 other configuration (a window's width differs from the one its counts
//   were made with, see layout.hpp: refused, nothing written), 10 relearn
//   (server_model::learn: the fleet's margin level, in wait_us, is above the
//   call's; nothing written: rebuild the buckets at it and call again,
//   redis/feedback.hpp).
//   refused_bits are those of tollgate::dimension; now_us is the time the
//   call decided at (the server's, or the supplied one in test mode); epoch
//   is the tag of the epoch that decided (0 when none was read).
// Leases. A lease is named by its epoch's tag and its id; a settlement whose
// tag is not the epoch's (its lease was made before a state loss, where ids
// started again at 1) is of a lease this epoch does not hold: it frees no
// slot, returns no money and refunds no tokens (what it charges, tokens used
// beyond the reservation and money spent, still counts: the safe side).
// Time is the server's TIME, never a client's. A call decides at its own
// time, also one behind the latest a call used (a clock stepped back, a
// failover to a server whose clock is behind): such a time never adds
// capacity. A strict window decides it at its own time while that is in or
// after the head sub-window, a calendar day while it is in or after the day
// counted; before those the call is refused (stale) with the wait from its
// own time to where the window or day admits, as the in-process account's
// (account/limiters.hpp). Only an admission or a charge moves a head or the
// day, never a peek or a refusal; the latest time seen bounds only what
// frees capacity (a bucket's refund, a rate change's cut), where later frees
// no more. Every wait counts from the call's own time. Only an account
// created in test mode takes `now` from the call, and then no key gets an
// expiry (expiry runs on the real clock).
// The body runs as an EVAL script or, unchanged, inside a Functions library
// (function_library below).
// Cost: an admission that carries one settlement runs 7 commands (TIME, the
// epoch's HMGET of 54 fields, ZCARD, ZMSCORE, ZADD, ZREM, the epoch's HSET),
// whatever the policies; a window's ring is read (one HMGET) only at the end
// of its head sub-window, for a refusal's wait or a refund into an older
// sub-window (docs/redis.md). A spaced bucket and a calendar day cost no
// command: a few fields of the epoch each.
// Needs Redis 6.2 or later (ZMSCORE); Functions need 7.
// Policies here, each the in-process account's (account/limiters.hpp):
//   strict sliding windows for RPM, TPM and a rolling 24 h TPD (the server
//     models fixed_window, sliding_log, token_bucket);
//   the spaced buckets for RPM and TPM (window_counter, gcra, unknown): GCRA
//     of burst 1 at the same rate, margin and ticks (1 / (1000 x scale) µs,
//     the scale the in-process bucket uses, so intervals round up as there),
//     the TAT as whole µs plus ticks, each below 2^53: the same decision at
//     a whole-µs `now`, the wait rounded up to the µs (never earlier); a
//     debt past 2^52 µs from the origin saturates there. A refund follows
//     bucket_ticket.hpp (at most the admission's own intervals still ahead,
//     and what is owed); a lease admitted before a change of the bucket's
//     rate refunds nothing; a change of rate keeps the time owed until;
//   learn (account/learn.hpp): each of RPM and TPM keeps both, the strict
//     window until a rate 429 that names it (or none) switches it, then for
//     a window both, then the bucket alone, started from the shadow of the
//     strict traffic; a widening moves the fleet's level and the buckets at
//     once to the next margin's rate, each owing the units it owed (as
//     set_rate in-process); the same decisions as the in-process account at
//     whole-µs times that do not go back, for windows of a whole number of
//     15 µs (the differential test; elsewhere as the strict windows and
//     buckets above: sub-windows rounded up, and a time behind the latest
//     never refused where the in-process bucket's roll-back would be), see
//     redis/feedback.hpp;
//   the calendar day (calendar_quota) of the script's time at utc_offset:
//     exact day numbers (µs from the Unix epoch), reset at the first
//     admission or charge of a new day, never back to a past day (a call
//     before the day counted is stale), a refund only into its own day,
//     charges saturating at 2^40 - 1;
//   concurrency leases with deadlines, a budget, pause and stop.
#ifndef TOLLGATE_REDIS_SCRIPT_HPP
#define TOLLGATE_REDIS_SCRIPT_HPP

#include <tollgate/config.hpp>
#include <tollgate/redis/script_check.hpp>
#include <tollgate/redis/script_decide.hpp>
#include <tollgate/redis/script_settle.hpp>
#include <tollgate/redis/script_spaced.hpp>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {

// KEYS: epoch, leases.
// ARGV: 1 layout version (3), 2 op (admit, peek, flush, waits, control, init,
//   chunk: redis/chunk.hpp),
//   3 now_us ("" = TIME), 4 concurrency (0 off), 5 lease_us (0: keep no
//   lease record),
//   6-14 limit, period_us, width_us of rpm, tpm, tpd (limit 0 off),
//   (a spaced or calendar dimension: its limit, period and width 0),
//   15 budget nanos (-1 off), 16 hold_us, 17 tokens, 18 worst-case nanos,
//   19 count of queued settlements P, 20-25 the spaced buckets of rpm, tpm:
//   ticks per µs (0: none), the interval's whole µs and ticks; 26 the
//   calendar day's offset code (layout.hpp; 0: none), 27-31 learn: its level
//   + 1 (0: not learn), the tokens a request's spacing charges, the top
//   level, the dimensions spaced from the start (1 rpm, 2 tpm),
//   max_request_tokens; then P x 10:
//     kind (1 settle, 2 settle_rejected, 3 drop, 4 a chunk's return: requests
//     in the reserved word into rpm's sub-window in the actual word, tokens in
//     the refund word into the tpm and tpd slots, lease id 0), lease id, reserved nanos,
//     actual nanos, tokens to charge, tokens to refund, tpm slot, tpd slot
//     (slot -1: none; a bucket's slot is its admission's µs from the origin,
//     a calendar day's its day), the lease's epoch tag, the tokens reserved
//   then for control: what (pause_us [with learn's switched dimensions to
//   guard], stop, resume, clear_pause, restore_budget; learn: kind (1 rpm, 2
//   tpm, 3 rate limit), provisional guard µs, the next level's buckets as
//   ARGV 20-25, answered {0, 0, level, 0, dimensions switched, -1, now_us,
//   epoch}; guard: dimensions, pause µs), value[, value]; for init: fresh (0/1), test (0/1); for
//   chunk: the requests, tokens, concurrency slots and money wanted (at
//   least 1, the tokens of ARGV 17, 1 and the worst case of ARGV 18, which
//   it admits or refuses as admit would), granted up to what each strict
//   window, the concurrency limit and the budget have left, answered {0,
//   requests, tokens, end_us, rpm slot, tpm slot, tpd slot, now_us, epoch,
//   slots, first id, slots' deadline, money} (protocol.hpp,
//   decode_chunk; the slots are leases of consecutive ids, all ending at
//   end_us + lease_us); 0 tokens where a token window's head is ahead of its
//   time: no chunk, an admission with a lease in admit's shape.
//   Refused (bad call) with a bucket or a calendar day. Queued kind 5: a
//   chunk's money back (reserved nanos; lease id 0).
// The whole body is one chunk, joined at compile time from its four parts
// (redis/script_check.hpp, script_spaced.hpp, script_settle.hpp,
// script_decide.hpp),
// so the text sent and its SHA are those of one string.
namespace detail_script {
template <std::size_t N>
struct script_text {
  char data[N + 1];
  constexpr std::string_view view() const noexcept { return std::string_view(data, N); }
};
template <std::size_t N>
constexpr script_text<N> join_script(std::string_view a, std::string_view b, std::string_view c,
                                     std::string_view d) noexcept {
  script_text<N> t{};
  std::size_t at = 0;
  for (std::string_view part : {a, b, c, d})
    for (std::size_t i = 0; i < part.size(); ++i) t.data[at++] = part[i];
  return t;  // data[N] stays 0 (value-initialised)
}
inline constexpr auto script_joined =
    join_script<script_check.size() + script_spaced.size() + script_settle.size() + script_decide.size()>(
        script_check, script_spaced, script_settle, script_decide);
}  // namespace detail_script
inline constexpr std::string_view script = detail_script::script_joined.view();

// The same body as a Redis Functions library (Redis 7): loaded once with
// FUNCTION LOAD REPLACE, kept with the dataset (it survives a restart that
// keeps the data, and is lost with it), called with FCALL. The name carries
// the layout version and a hash of the text (tollgate_v3_ and 8 hex digits
// of its FNV-1a), so processes of two texts each load and call their own
// while a fleet upgrades: no process runs a text it was not built with.
namespace detail_script {
struct name_text {
  char data[21];
  constexpr std::string_view view() const noexcept { return std::string_view(data, 20); }
};
constexpr name_text make_function_name(std::string_view body) noexcept {
  std::uint32_t h = 2166136261u;
  for (char ch : body) {
    h ^= static_cast<unsigned char>(ch);
    h *= 16777619u;
  }
  name_text n{};
  constexpr std::string_view head = "tollgate_v3_";
  for (std::size_t i = 0; i < head.size(); ++i) n.data[i] = head[i];
  constexpr char hex[] = "0123456789abcdef";
  for (std::size_t i = 0; i < 8; ++i) n.data[12 + i] = hex[(h >> (28 - 4 * i)) & 15u];
  return n;
}
inline constexpr name_text function_name_text = make_function_name(script);
}  // namespace detail_script
inline constexpr std::string_view function_name = detail_script::function_name_text.view();
inline std::string function_library() {
  std::string lib = "#!lua name=" + std::string(function_name) + "\nredis.register_function('" +
                    std::string(function_name) + "', function(KEYS, ARGV)\n";
  lib += script;
  lib += "\nend)\n";
  return lib;
}

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_SCRIPT_HPP
