// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/feedback.hpp: a server's answer fed to a Redis account
// (basic_account::on_response): the pause or stop of account/pause.hpp for
// the whole fleet, and under server_model::learn the lesson of a rate 429,
// kept in the epoch so that every process of the fleet follows it.
//
// Learn in Redis. The rule, its bound and its phases are account/learn.hpp's
// and account/learn_rules.hpp's; the script keeps its words in the epoch
// (redis/layout.hpp learn_params, script_spaced.hpp): per dimension when it
// switched, its guard, its shadow (charged by every strict admission, and by
// a chunk at its end) and its bucket; the margin's level for the fleet. A
// rate 429 that names a dimension (or none) costs three calls: the lesson
// (control "learn": the switch, or a widening), the limiters' waits after it,
// the pause with the switched dimensions' guard. A process killed between
// the first and the last leaves the guard at the lesson's time plus
// max_pause plus the longest window (hold_us): later 429s widen nothing until
// then. A widening raises the fleet's level; each other process learns it
// from its next call, which the script answers "relearn" with the level,
// writing nothing: the process rebuilds its buckets at that level
// (learn_rebuild) and calls again, so no decision is made at a narrower
// margin than the fleet's (a lesson's next-level buckets are rewritten with
// the rest: patch_learn). What a chunk or slice holder spends it was granted
// before the lesson (a strict dimension's chunk, a spaced one's slice at the
// margin then in force; none during the "both" window): those requests count
// as in flight for the bound, as requests admitted before the first 429 was
// fed back do in-process. A state
// loss loses what was learned but the level each process holds (the first
// call raises the epoch's to it): the dimensions start strict again.
#ifndef TOLLGATE_REDIS_FEEDBACK_HPP
#define TOLLGATE_REDIS_FEEDBACK_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/pause.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/http.hpp>
#include <tollgate/redis/chunk_calls.hpp>
#include <tollgate/redis/fallback.hpp>
#include <tollgate/redis/layout.hpp>
#include <tollgate/redis/outcome.hpp>
#include <tollgate/redis/protocol.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {
namespace detail_feedback {

// The lesson's kind in the script: 1 rpm, 2 tpm, 3 a rate limit naming neither.
constexpr int lesson_kind(error_kind k) noexcept {
  return k == error_kind::rpm ? 1 : k == error_kind::tpm ? 2 : k == error_kind::rate_limit ? 3 : 0;
}

struct calls {
  // One command; a relearn answer rebuilds learn's buckets at the fleet's
  // level and sends the call again at it (nothing was written), also a call
  // built before an earlier relearn moved the level (a NOSCRIPT resend).
  template <class Acc>
  static reply send(Acc& a, const std::vector<std::string>& argv) {
    reply r = detail_chunk::calls::send(a, argv);
    if (!a.layout_.learn.on) return r;
    std::vector<std::string> again;
    for (int i = 0; i < 4; ++i) {
      const std::optional<std::uint64_t> lv = relearn_level(r);
      if (!lv) return r;
      rebuild(a, *lv);
      if (!learn_stale(again.empty() ? argv : again, a.layout_)) return r;  // sent at this level: not ours to fix
      if (again.empty()) again = argv;
      patch_learn(again, a.layout_);
      r = detail_chunk::calls::send(a, again);
    }
    return r;
  }
  // Up to the fleet's level; never down.
  template <class Acc>
  static void rebuild(Acc& a, std::uint64_t level) {
    if (level > a.layout_.learn.level) learn_rebuild(a.layout_, level);
  }

  template <class Acc>
  static outcome on_response(Acc& a, const error_info& e, std::optional<nanoseconds> hint, std::optional<nanoseconds> now) {
    using namespace account_policy;
    const clamped_hint h = clamp_hint(e.kind, hint, e.hint, a.cfg_.max_pause);
    // Learn first: the pause then follows the policy learned.
    std::uint64_t switched = 0;
    if (a.layout_.learn.on && lesson_kind(e.kind) != 0) {
      const outcome o = lesson(a, lesson_kind(e.kind), now, switched);
      if ((o == outcome::server_error || o == outcome::garbage) &&
          detail_fallback::local_calls::ready(a, a.clock_now(now)))
        a.local_->on_response(e, hint, a.clock_now(now));  // as for the waits below: the fallback learns at least
      if (o != outcome::ok) return o;
    }
    call_args w;
    w.what = op::waits;
    if (!a.stamp(w, now)) return outcome::bad_call;
    std::vector<std::string> argv = a.words(w, true);
    reply rp = a.send(argv);
    std::int64_t v[3] = {0, 0, 0};
    call_status st = decode_waits(rp, v);
    if (st == call_status::noscript) {
      rp = a.resend(argv);
      st = decode_waits(rp, v);
    }
    if (st == call_status::garbage)
      if (auto c = decode_refusal(rp)) return a.how_of(*c);
    if (st != call_status::ok) {
      a.forget_returns();
      // Redis is not told: this object's fallback holds it at least.
      if (detail_fallback::local_calls::ready(a, a.clock_now(now))) a.local_->on_response(e, hint, a.clock_now(now));
      return st == call_status::garbage ? outcome::garbage : outcome::server_error;
    }
    a.carried(true);
    own_waits ow;
    ow.request_limit = a.layout_.w[0].limit > 0;
    ow.request = a.us(v[0]);
    ow.token = a.us(v[1]);
    ow.daily_reset = a.us(v[2]);
    // Without a daily limit of its own a TPD 429 pauses until the next midnight
    // (account/pause.hpp); the script keeps a calendar only for a calendar-day
    // TPD, so here the client reckons it: from the supplied time in test mode,
    // else from its system clock.
    if (a.layout_.w[2].limit == 0)
      ow.daily_reset = until_midnight(now ? *now : system_clock::now(),
                                      now ? a.cfg_.unix_time_at_zero.value_or(nanoseconds(0)) : nanoseconds(0),
                                      a.cfg_.utc_offset);
    const response_decision rd = pause_after(e.kind, h.hint, ow);
    constexpr std::uint64_t top = std::uint64_t(1) << 50;  // 35 years: as good as forever
    const std::uint64_t p = rd.action == response_action::pause ? ceil_us(rd.pause) : 0;
    if (rd.action != response_action::pause && switched != 0)
      if (const outcome o = control(a, {"guard", std::to_string(switched), "0"}, now); o != outcome::ok) return o;
    if (rd.action == response_action::none) return outcome::ok;
    a.release_chunk();  // paused or stopped: this object's chunk goes back with the call that says so
    std::vector<std::string> what = {"stop"};
    if (rd.action != response_action::stop) what = {"pause_us", std::to_string(p < top ? p : top)};
    if (switched != 0 && rd.action != response_action::stop) what.push_back(std::to_string(switched));
    const outcome o = control(a, std::move(what), now);
    if (o == outcome::ok && rd.action == response_action::stop) a.seen_.stopped = true;
    if (o == outcome::ok && rd.action != response_action::stop) a.seen_.pause(a.clock_now(now) + rd.pause);
    return o;
  }

 private:
  template <class Acc>
  static outcome control(Acc& a, std::vector<std::string> what, std::optional<nanoseconds> now) {
    call_args c;
    c.what = op::control;
    a.stamp(c, now);
    c.extra = std::move(what);
    call_reply r;
    return a.simple(c, r, false);
  }
  // The lesson (control "learn"): `switched` the dimensions it switched.
  // Its guard until the pause is set: max_pause and the longest window
  // (hold_us).
  template <class Acc>
  static outcome lesson(Acc& a, int kind, std::optional<nanoseconds> now, std::uint64_t& switched) {
    constexpr std::uint64_t top = std::uint64_t(1) << 50;
    const std::uint64_t mp = ceil_us(a.cfg_.max_pause);
    const std::uint64_t g = mp < top && a.layout_.hold_us < top ? mp + a.layout_.hold_us : top;
    call_args c;
    c.what = op::control;
    if (!a.stamp(c, now)) return outcome::bad_call;
    c.extra = {"learn", std::to_string(kind), std::to_string(g)};
    // The next level's buckets, which a widening installs at once.
    layout next = a.layout_;
    learn_rebuild(next, next.learn.level + 1);
    for (const bucket_params& b : next.b)
      for (std::uint64_t x : {b.per_us, b.whole_us, b.ticks}) c.extra.push_back(std::to_string(x));
    call_reply r;
    const outcome o = a.simple(c, r, false);
    if (o != outcome::ok) return o;
    if (r.wait_us > 0) rebuild(a, static_cast<std::uint64_t>(r.wait_us));
    switched = r.tpm_slot > 0 ? static_cast<std::uint64_t>(r.tpm_slot) & 3u : 0;
    return outcome::ok;
  }
};

}  // namespace detail_feedback
}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_FEEDBACK_HPP
