// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/chunk_calls.hpp: the Redis account's side of chunked mode
// (redis/chunk.hpp states the contract): taking a chunk by a call, spending
// it, and what a chunk request's end gives back (its slot, its money, its
// unused tokens). Internal: redis/account.hpp and redis/lease.hpp use it.
#ifndef TOLLGATE_REDIS_CHUNK_CALLS_HPP
#define TOLLGATE_REDIS_CHUNK_CALLS_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/redis/chunk.hpp>
#include <tollgate/redis/outcome.hpp>
#include <tollgate/redis/protocol.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {

namespace detail_chunk {
// The account's chunk calls (redis/account.hpp befriends this).
struct calls {
  // A failed call may have applied what it carried: its chunk returns are
  // forgotten (applied twice they would free others' units), the rest is
  // sent again (each applies once, or is a charge: the safe side).
  template <class Acc>
  static void forget(Acc& a) {
    std::size_t kept = 0;
    for (std::size_t i = 0; i < a.queue_.size(); ++i)
      if (i >= a.sent_ || (a.queue_[i].what != queued::kind::chunk_return &&
                           a.queue_[i].what != queued::kind::money_return))
        a.queue_[kept++] = a.queue_[i];
    a.queue_.resize(kept);
    a.sent_ = 0;
    recount(a);
  }
  // The held chunk's leftovers and free slots, queued for the very next call.
  template <class Acc>
  static void release(Acc& a) {
    std::vector<std::uint64_t> drops;
    std::vector<queued> money;
    const std::uint64_t e = a.chunk_.epoch;
    const std::optional<queued> q = a.chunk_.give_back(drops, money);
    for (std::uint64_t id : drops) a.return_front(held_chunk::dropping(e, id));
    for (const queued& m : money) a.return_front(m);
    if (q) a.return_front(*q);
  }
  // The tokens the queued chunk returns hold (after a call changed the queue).
  template <class Acc>
  static void recount(Acc& a) {
    a.back_ = 0;
    for (const queued& q : a.queue_)
      if (q.what == queued::kind::chunk_return) a.back_ += q.refund_tokens;
    a.owed_ = 0;
    for (const queued& q : a.queue_) a.owed_ += owes(q) ? 1 : 0;
  }
  // A queued charge past what was reserved (a cost beyond a worst case): no
  // chunk spends while one waits, so the next call charges it before it
  // decides, as without chunks.
  static bool owes(const queued& q) noexcept {
    return q.what == queued::kind::settle && q.actual_nanos > q.reserved_nanos;
  }
  // A refund of a request spent from a chunk: into the held chunk, up to its
  // grant, when it is counted in the same sub-windows of the same epoch
  // (spent again only while they are the head, as the chunk's own); the rest
  // is queued as a return.
  template <class Acc>
  static void refund(Acc& a, std::uint64_t e, std::int64_t s1, std::int64_t s2, std::uint64_t t) {
    held_chunk& h = a.chunk_;
    if (h.live && h.epoch == e && h.slots[1] == s1 && h.slots[2] == s2 && h.tokens < h.granted) {
      const std::uint64_t m = t < h.granted - h.tokens ? t : h.granted - h.tokens;
      h.tokens += m;
      t -= m;
    }
    if (t == 0) return;
    const std::int64_t s[3] = {-1, s1, s2};
    a.return_front(held_chunk::returning(e, s, 0, t));
  }
  // Before a local admission: queued returns of a chunk's tokens past one
  // chunk's size are carried now (a flush), so a holder that calls rarely
  // keeps less than a chunk of them counted. A failed flush leaves it.
  // So are queued slot drops once they reach a chunk's slots.
  template <class Acc>
  static std::size_t drops_queued(const Acc& a) noexcept {
    std::size_t n = 0;
    for (const queued& q : a.queue_)
      if (q.what == queued::kind::drop) ++n;
    return n;
  }
  template <class Acc>
  static void carry_back(Acc& a, std::optional<std::int64_t> now_us) {
    while (a.chunk_.live && ((a.sizes_.tokens > 0 && a.back_ >= a.sizes_.tokens) ||
                             (a.sizes_.slots > 0 && drops_queued(a) >= a.sizes_.slots))) {
      call_args f;
      f.what = op::flush;
      f.now_us = now_us;
      call_reply r;
      if (a.simple(f, r, true) != outcome::ok) return;
    }
  }
  // Before an admission's call (a chunk's or one request's): a charge past a
  // reservation queued beyond what one call carries (max_queued_per_call) is
  // carried first by flushes, so the call charges it before it decides and
  // no chunk is spent while it waits. A flush that is not ok ends it: its
  // answer is the admission's.
  template <class Acc>
  static bool owed_out_of_reach(const Acc& a) noexcept {
    if (a.owed_ == 0) return false;
    for (std::size_t i = max_queued_per_call; i < a.queue_.size(); ++i)
      if (owes(a.queue_[i])) return true;
    return false;
  }
  template <class Acc>
  static outcome carry_owed(Acc& a, const call_args& c, call_reply& r) {
    while (owed_out_of_reach(a)) {  // each flush carries 64 entries: the loop ends
      call_args f;
      f.what = op::flush;
      f.now_us = c.now_us;
      const outcome o = a.simple(f, r, true);
      if (o != outcome::ok) return o;
    }
    return outcome::ok;
  }
  // Sends one command; an exception from the executor (it may have sent
  // the command) forgets the chunk returns it carried, then passes on.
  template <class Acc>
  static reply send(Acc& a, const std::vector<std::string>& argv) {
    struct guard {
      Acc& a;
      bool armed = true;
      ~guard() {
        if (armed) forget(a);
      }
    } g{a};
    reply r = a.ex_(argv);
    g.armed = false;
    return r;
  }
  // One chunk call (op chunk): a grant becomes the held chunk; any other
  // answer is decoded into r as admit's.
  template <class Acc>
  static outcome take(Acc& a, call_args& c, call_reply& r) {
    // Spaced buckets: a slice's unspent time is lost, so its size follows
    // the object's demand (held_chunk::next_want), the tokens in proportion.
    std::uint64_t want_r = a.sizes_.requests, want_t = a.sizes_.tokens;
    // (learn: while its last chunk was a slice, past the switch).
    if ((a.layout_.b[0].per_us != 0 || a.layout_.b[1].per_us != 0) && (!a.layout_.learn.on || a.chunk_.has_slices())) {
      want_r = a.chunk_.next_want(a.sizes_.requests);
      want_t = static_cast<std::uint64_t>(detail::u128(a.sizes_.tokens) * want_r / a.sizes_.requests);
    }
    a.release_chunk();  // its leftovers ride on this call, before it decides
    if (const outcome o = carry_owed(a, c, r); o != outcome::ok) return o;
    const std::uint64_t t = want_t > c.tokens ? want_t : c.tokens;  // at least the request's
    const std::int64_t m = a.sizes_.money > c.worst_nanos ? a.sizes_.money : c.worst_nanos;  // at least the request's
    c.extra = {std::to_string(want_r), std::to_string(t), std::to_string(a.sizes_.slots),
               std::to_string(m)};
    if (a.sha_.empty() && !a.opt_.functions) a.learn_sha();
    std::vector<std::string> argv = a.words(c, true);
    const nanoseconds sent = a.opt_.test_mode ? nanoseconds(0) : steady_clock::now();
    chunk_reply g;
    bool granted = false;
    call_status st = decode_chunk(a.send(argv), g, r, granted);
    if (st == call_status::noscript) st = decode_chunk(a.resend(argv), g, r, granted);
    const nanoseconds received = a.opt_.test_mode ? nanoseconds(0) : steady_clock::now();
    if (st != call_status::ok) {
      forget(a);
      return st == call_status::garbage ? outcome::garbage : outcome::server_error;
    }
    // A grant carried the queue; a refusal too, unless it wrote nothing.
    a.carried(granted || (r.code != script_code::corrupt && r.code != script_code::bad_call &&
                          r.code != script_code::other_configuration));
    if (!granted) return Acc::how_of(r.code);
    a.chunk_.take(g, sent, a.layout_.w[1].limit != 0 || a.layout_.w[2].limit != 0, a.layout_.concurrency != 0,
                  a.layout_.budget, &a.layout_, received);
    return outcome::ok;
  }
  // Decided by the held chunk with no call: spent from it, or (a spaced
  // bucket's slice not yet ready) told to wait, as the in-process account
  // would; false: a call decides.
  template <class Acc, class Request, class Admission>
  static bool local(Acc& a, const Request& req, Admission& x, std::optional<std::int64_t> now_us, nanoseconds at) {
    if (a.chunk_.covers(x.tokens, now_us, at, x.worst_case.nanos())) {
      spend(a, req, x, now_us, at);
      return true;
    }
    std::uint64_t bits = 0;
    const std::uint64_t w = a.chunk_.slice_wait(x.tokens, now_us, at, x.worst_case.nanos(), bits);
    if (w == 0) return false;
    x.how = outcome::ok;
    x.d = decision::wait(nanoseconds(static_cast<std::int64_t>(w) * 1000));
    x.refused.bits = static_cast<std::uint16_t>(bits);
    x.server_now_us = a.chunk_.server_time(now_us, at);
    return true;
  }
  // An admission spent from the chunk (which covers it) at `at`.
  template <class Acc, class Request, class Admission>
  static void spend(Acc& a, const Request& req, Admission& x, std::optional<std::int64_t> now_us, nanoseconds at) {
    const std::uint64_t id = a.chunk_.spend(x.tokens, x.worst_case.nanos(), a.chunk_.since_grant(now_us, at));
    x.how = outcome::ok;
    x.d = decision::admit();
    x.server_now_us = a.chunk_.server_time(now_us, at);
    auto& l = x.lease;
    l.acc_ = &a;
    l.epoch_ = a.chunk_.epoch;
    l.tokens_ = x.tokens;
    l.tpm_slot_ = a.chunk_.slots[1];
    l.tpd_slot_ = a.chunk_.slots[2];
    l.refund_ = a.cfg_.refund_unused_tokens;
    l.model_ = req.model;
    l.chunk_ = true;
    l.id_ = id;
    l.serial_ = a.chunk_.serial;
    l.money_ = a.chunk_.money_on ? x.worst_case.nanos() : 0;
  }
  // A chunk request's money when it ends, `cost` of its worst case `worst`
  // (0 when refused by the server: all back; a drop keeps it committed and
  // does not come here): into the chunk if that chunk is still held (the
  // part not spent is spendable again), else queued for the next call.
  template <class Acc>
  static void end_money(Acc& a, std::uint64_t e, std::uint64_t serial, std::int64_t worst, std::int64_t cost) {
    if (!a.layout_.budget) return;
    held_chunk& h = a.chunk_;
    const std::int64_t back = cost < worst ? worst - cost : 0, beyond = cost > worst ? cost - worst : 0;
    if (h.live && h.money_on && h.serial == serial && h.epoch == e) {
      // A cost past the worst case is paid first from the chunk's money
      // (committed already); if that cannot pay it all, the chunk ends now:
      // its report, the owed part in it, is queued, and any next call
      // (admission, peek, flush) charges it before it decides.
      const std::int64_t paid = beyond < h.money ? beyond : h.money;
      h.money += back - paid;
      h.spent += cost;
      h.over += beyond - paid;
      if (h.over > 0) release(a);
      return;
    }
    std::vector<queued> out;
    held_chunk::money_ended(e, back, cost, beyond, out);
    for (const queued& q : out) a.enqueue(q);
  }
  // A chunk request's slot, when it ends: back among the chunk's free slots
  // if that chunk is still held (reused only while the chunk covers, so
  // before its end: every holder keeps it lease_us at least), else dropped
  // by a later call.
  template <class Acc>
  static void give_slot(Acc& a, std::uint64_t e, std::uint64_t serial, std::uint64_t id) {
    if (id == 0) return;
    held_chunk& h = a.chunk_;
    if (h.live && h.serial == serial && h.epoch == e) {
      h.free_ids.push_back(id);
      return;
    }
    a.enqueue(held_chunk::dropping(e, id));
  }
};
}  // namespace detail_chunk

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_CHUNK_CALLS_HPP
