// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/chunk.hpp: chunked mode of the Redis account (options::chunk_parts,
// off by default). One script call (op chunk) counts a chunk of request
// units and token units in the head sub-window of each strict window (RPM,
// TPM, a rolling TPD), takes a slice of each spaced bucket's time (see
// "Spaced buckets"), takes a chunk of concurrency slots when a
// concurrency limit is set and a chunk of money when a budget is, and
// leases them to the calling account object,
// which spends them on its later requests with no call, as the in-process
// account's per-thread credit does (account/credit.hpp).
//
// Contract.
//   Exact. Every unit is counted on the server before it is spent, and
//   spent only while the sub-window it was counted in is the head of every
//   window it was counted in: by the server's time in test mode (the
//   supplied `now`, from the grant's time to the first sub-window's end);
//   else on the steady clock from the moment the call was sent (the server
//   decided after that) for the time the grant said was left, less 1/1024
//   of it (clock rates that differ by up to about 1000 ppm); the request a
//   grant comes with is spent at the call, as an admission without chunks
//   (its reply may arrive after the sub-window ended). So each
//   window's count at every time is at least what was admitted in it, and
//   the fleet keeps every bound the non-chunked account states (strict
//   windows: fixed_window, sliding_log, token_bucket, learn while strict:
//   learn's chunks, redis/feedback.hpp).
//   A server clock stepped forward frees a chunk's counts as early as it
//   frees every count (as without chunks). A call at a time that later
//   proves ahead (a clock stepped forward and back; in test mode a supplied
//   now that goes back) takes out, at its time, what it finds past its
//   deadline or out of the window, held chunks' units and slots among them,
//   and their holders, which make no call, go on spending them by their own
//   clocks: what the held chunks had unspent (units and free slots, N chunks
//   at most) is spent after that call too, until those chunks end (a sub-
//   window at most). Without chunks the calls that follow at the true time
//   are held (docs/redis.md, "Time"); with chunks that holds calls, not a
//   chunk's local spending.
//   Concurrency slots. A chunk also takes up to concurrency / chunk_parts
//   slots (at least 1, at most max_chunk_slots, and no more than the limit
//   has free): leases of their own ids in the lease set, all with the
//   deadline end_us + lease_timeout. A request spent from the chunk holds
//   one; when it ends (settle, settle_rejected, drop) the slot goes back
//   into the chunk if that chunk is still held, and is given to another
//   request only while the chunk is spendable, so before end_us: every
//   holder keeps its slot lease_timeout at least, as with admit's leases,
//   and never two holders at once. A slot of a chunk no longer held (its
//   request outlived it), and a chunk's free slots when it goes, are queued
//   as drops for the next call (before a local admission, a flush carries
//   them once they reach a chunk's slots). The slots come back on the server
//   late, never early: at the drop's call, or at the deadline, at most
//   lease_timeout plus one sub-window of the narrowest enforced window after
//   the grant (a dead holder's too: a window / 15 later than admit's).
//   Concurrency false refusals: N objects keep at most N chunks of slots
//   unused (and less than a chunk of queued drops each) until their next
//   call or the deadline; with a small limit (below chunk_parts x objects)
//   an idle object's chunk of one slot refuses others until that object's
//   next call or the chunk's deadline, so give it back (release_chunk() and
//   flush()) when an object goes idle. The hold after a state loss (the
//   layout's hold_us) is lease_timeout plus that sub-window for a chunked
//   object with a concurrency limit; every object of one account should use
//   the same chunk_parts.
//   Money. A chunk also commits up to budget / chunk_parts nanos (at least
//   the request's worst case, at most what the budget has left). A request
//   spent from it takes its worst case from the chunk; when it ends, what it
//   did not cost goes back into the chunk if that chunk is still held (else
//   a money return for the next call), and its cost is reported with the
//   chunk's end (one settlement with no lease: spent plus the costs,
//   committed plus what they cost beyond their worst cases). A dropped
//   request's worst case stays committed, as without chunks; a refused one's
//   comes back. The chunk's unspent money goes back with the chunk's other
//   leftovers. A cost beyond a worst case is paid from the chunk's money
//   at once; if that cannot pay it all, the chunk ends there and its report
//   (the owed part in it) is queued. While the object's queue holds a
//   charge past a reservation (this one, or a request of a chunk no longer
//   held) it spends no chunk: its next admission carries the charge before
//   it decides (flushing first what one call cannot carry:
//   max_queued_per_call), as without chunks, and any call carries it in
//   turn. So the budget's bound is the one without chunks: what is spent
//   stays within the budget plus what requests cost beyond their worst
//   cases, and each grant or admission by a call is decided with its own
//   object's overruns charged (other objects' queued ones not yet). What
//   chunks add: a chunk's requests spend money its grant committed, so after
//   another object's overrun has used the budget up, the chunks still held
//   may start requests worth their unspent money (N / chunk_parts of the
//   budget at most), whose own overruns come on top. Until an object's chunk
//   ends the server's `spent` lacks its requests' costs (its committed holds
//   them). A call that fails forgets the money returns it
//   carried (applied twice they would free another's money): that money
//   stays committed, the safe side. A process that dies holding a chunk
//   keeps its money committed for good (as a dead process's reservations:
//   kept as spent). False refusals: N objects hold at most N
//   chunks of money unspent, N / chunk_parts of the budget.
//   Spaced buckets (window_counter, gcra and `unknown`, the default). A chunk
//   of a bucket of burst 1 is a slice of its time, not a burst: the grant
//   needs every bucket ready at the call's time t (a 0-token request where
//   the token bucket is not gets no chunk: an admission as without chunks)
//   and moves each bucket's TAT to t + D, D the shorter of the wanted units'
//   times (requests x RPM's interval rounded up to the µs, as admissions come
//   at whole µs; tokens x TPM's interval, rounded up; at least the request's
//   own), so no other admission comes before t + D. The holder runs each
//   bucket as the in-process account does (burst 1, its own interval, in its
//   ticks) over [t, t + D): a request of n tokens is taken where each TAT is
//   at or before the time and max(TAT, time) + its units' intervals stays
//   within D less a margin; where only the spacing holds it back, the holder
//   answers wait (to its next interval) with no call, as the in-process
//   bucket would. The time is the supplied now in test mode (exact, no
//   margin); else a lower bound of the server's, the grant's time plus the
//   steady time since the reply came, at 1023/1024, and the margin is the
//   call's round trip (plus 1/1024) plus D / 512 plus 2 µs: the server's time
//   at each admission is later than its bound by less than that, by a part
//   that only grows, so the true times keep each interval and end within D.
//   Each admission's server_now_us is that lower bound. So the fleet's
//   admissions, at their server times, pass the same GCRA the account runs
//   without chunks, and each model the spaced policy is safe against
//   (account/policy.hpp). What a slice leaves unspent is kept as spent
//   (giving it back would need the TAT still at t + D and no refund since):
//   up to D of the bucket's time per chunk not spent in full (an object that
//   goes idle, releases early, or dies). So a slice's size follows its
//   object's demand: the full chunk (limit / chunk_parts requests, the tokens
//   in proportion) for an object's first slice, then twice what its last one
//   used (its requests spent, or the share of its time its buckets' TATs
//   reached, the larger; so twice its size when used in full, up to the full
//   chunk), at least 2 requests: an object that sends one request now and
//   then takes slices of 2 requests' time. Refunds: a chunk's requests refund
//   only their tokens of strict windows (TPD); no admission before a slice's
//   end refunds into a bucket (<p>g moves to it). One slice at a time: the
//   other objects are refused until it ends (their wait says so), so D, which
//   chunk_parts sets (limit / chunk_parts requests' time), is the longest
//   time one object keeps the bucket; it must be well above the round trip,
//   since the margin comes off it.
//   Refused at construction (layout_errc::chunk): what a chunk cannot keep
//   exact. A calendar-day TPD (not done: its day is not a sub-window), and
//   an account with no RPM, TPM or TPD (a chunk lives one sub-window or
//   slice). A script call with op chunk on such a configuration is refused
//   as a bad call.
//   Sizes. A chunk is limit / chunk_parts units of each window (requests;
//   tokens: the smaller of TPM's and TPD's, and at least the request's own
//   tokens). Below 2 units for an enforced window there are no chunks: the
//   account admits per request as without chunked mode.
//   Leftovers. A chunk's unspent units go back into their own sub-windows,
//   queued at the head of the account's queue when the next chunk is taken
//   (so that call carries them, before it decides), when a pause or a stop
//   is set through this object, or on release_chunk(). A refund of unused
//   tokens of a chunk's request goes back into the held chunk (up to its
//   grant) when that chunk is counted in the same sub-windows, else it is
//   queued as a return. A call that fails
//   (an error, garbage, a timeout) forgets the returns it carried (it may
//   have applied them; applied twice they would free another's units; so
//   does an exception from the executor, also one on the SCRIPT LOAD after
//   a NOSCRIPT's EVAL): those units stay counted until they leave the
//   window, the safe side.
//   Tokens used beyond a request's reservation are charged by the next call
//   at its time, as without chunks; a chunk taken before that charge is not
//   held back by it (what credit.hpp states of a debt).
//   False refusals. One object holds at most one chunk (its next chunk call
//   returns the last one first): N objects keep at most N / chunk_parts of
//   each limit counted but not spent, so a request is refused only where
//   the window, counting only what was admitted, has at most that much room.
//   With refund_unused_tokens, refunds queued as returns are carried before
//   an object's next local admission once they reach a chunk's tokens: an
//   object keeps at most its chunk (a grant: at most the larger of a chunk
//   and the request's tokens) and less than a chunk of queued refunds, plus
//   what its leases refunded since its last admission (carried by its next
//   call, as without chunks): 2 N / chunk_parts of a token limit and those.
//   A process that dies (or an object destroyed) holding a chunk loses it:
//   its units count as spent until their sub-window leaves the window (one
//   window and one sub-window at most).
//   Pause and stop. A 429 or a quota error seen by another host reaches a
//   chunk holder at its next call: it may spend its chunk until the chunk's
//   sub-window ends (a window / 15 at most).
//   Threads. The chunk belongs to its account object, used by one thread at
//   a time (each thread makes its own object): spending it takes no lock and
//   no atomic operation. Two threads on one object corrupt its memory.
//   Test mode: try_admit without a supplied now is a bad call (no call).
//   A 0-token request where a token window's head is ahead of its time is
//   admitted as without chunks (a lease; no chunk: the stale sub-window
//   takes no chunk's tokens), so its decision and its wait agree.
#ifndef TOLLGATE_REDIS_CHUNK_HPP
#define TOLLGATE_REDIS_CHUNK_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/redis/chunk_slice.hpp>
#include <tollgate/redis/layout.hpp>
#include <tollgate/redis/outcome.hpp>
#include <tollgate/redis/protocol.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {

// What one chunk call asks for (requests, tokens); on = false: no chunks
// (chunked mode off, or limits too small for chunks).
struct chunk_sizes {
  bool on = false;
  std::uint64_t requests = 0, tokens = 0;
  std::uint64_t slots = 0;  // concurrency slots a chunk asks for (0: no concurrency limit)
  std::int64_t money = 0;   // nanos a chunk asks for (0: no budget; at least the request's worst case)
};

// The most concurrency slots one chunk asks for: each is a lease record (a
// member of the lease set, an argument pair of the call's ZADD).
inline constexpr std::uint64_t max_chunk_slots = 256;

// Whether chunked mode keeps the layout's configuration exact (see above).
constexpr bool chunk_keepable(const layout& l) noexcept {
  if (l.day_code != 0) return false;
  return l.w[0].limit != 0 || l.w[1].limit != 0 || l.w[2].limit != 0;
}

constexpr chunk_sizes chunk_sizes_of(const layout& l, unsigned parts) noexcept {
  chunk_sizes z;
  if (parts == 0) return z;
  // An unenforced rpm grants what is asked; the count only bounds the chunk.
  z.requests = l.w[0].limit != 0 ? l.w[0].limit / parts : (std::uint64_t(1) << 30);
  const bool tokens_on = l.w[1].limit != 0 || l.w[2].limit != 0;
  std::uint64_t t = max_units;  // the smaller of TPM's and TPD's chunks
  for (int k = 1; k < 3; ++k)
    if (l.w[k].limit != 0 && l.w[k].limit / parts < t) t = l.w[k].limit / parts;
  z.tokens = tokens_on ? t : 0;
  z.on = z.requests >= 2 && (!tokens_on || z.tokens >= 2);
  if (l.concurrency != 0) {
    // At least one: the request's own (a limit below the parts still gets
    // chunks of one slot, reused locally while the chunk lives).
    const std::uint64_t c = l.concurrency / parts;
    z.slots = c < 1 ? 1 : c > max_chunk_slots ? max_chunk_slots : c;
  }
  if (l.budget) z.money = l.budget_nanos / static_cast<std::int64_t>(parts);
  return z;
}

// The chunk an account object holds.
struct held_chunk {
  bool live = false;
  bool tokens_on = false;  // a token window is enforced: the chunk's tokens bound its requests
  std::uint64_t epoch = 0;
  std::int64_t slots[3] = {-1, -1, -1};
  std::uint64_t requests = 0, tokens = 0;  // left
  std::uint64_t granted_requests = 0;      // the requests granted (kept after the chunk goes: the next slice's size)
  std::uint64_t granted = 0;               // the tokens granted: refunds fill it up to this
  std::int64_t start_us = 0, end_us = 0;   // server µs: the grant's time, the first sub-window's end
  nanoseconds sent{0};                     // steady: when the granting call was sent
  nanoseconds received{0};                 // steady: when its reply came
  nanoseconds until{0};                    // steady: spendable before this (not in test mode)
  chunk_slice spaced[2];                   // the spaced buckets of rpm and tpm (on: the grant sliced one)
  std::uint64_t spacing_tokens = 0;        // learn: what each request of tokens charges its slice more
  bool slots_on = false;                   // a concurrency limit: each request takes one of free_ids
  std::vector<std::uint64_t> free_ids;     // the chunk's slots (lease ids) no request holds
  std::uint64_t serial = 0;                // counts the chunks this object took: a slot comes back
                                           // into free_ids only from a request of this same chunk
  std::int64_t slot_end_us = 0;            // server µs: the slots' deadline (end_us + lease_us)
  bool money_on = false;                   // a budget: each request's worst case comes from money
  std::int64_t money = 0;                  // nanos committed for the chunk no request holds or spent
  std::int64_t spent = 0, over = 0;        // nanos its ended requests cost; of them, beyond their worst case and the chunk's money

  void take(const chunk_reply& g, nanoseconds sent_at, bool tokens_enforced, bool slots_enforced,
            bool money_enforced = false, const layout* buckets = nullptr, nanoseconds received_at = nanoseconds(0)) {
    live = true;
    ++serial;
    money_on = money_enforced;
    money = g.money_nanos;
    spent = over = 0;
    slots_on = slots_enforced;
    free_ids.clear();
    for (std::uint64_t j = 0; j < g.slot_count; ++j) free_ids.push_back(g.first_id + j);
    slot_end_us = g.slot_end_us;
    tokens_on = tokens_enforced;
    epoch = g.epoch;
    for (int k = 0; k < 3; ++k) slots[k] = g.slots[k];
    requests = g.requests;
    granted_requests = g.requests;
    tokens = g.tokens;
    granted = g.tokens;
    start_us = g.now_us;
    end_us = g.end_us;
    sent = sent_at;
    const std::int64_t left = end_us - start_us;  // > 0 (decode_chunk)
    until = sent_at + nanoseconds((left - left / 1024) * 1000);
    received = received_at < sent_at ? sent_at : received_at;
    // The server's time at a local admission is known to within the call's
    // round trip, and the clocks' rates to 1/1024: a slice ends that much
    // early (test mode: the supplied now is exact).
    std::uint64_t margin = 0;
    if (received_at != nanoseconds(0)) {
      const std::uint64_t trip = static_cast<std::uint64_t>((received - sent).count());
      margin = (trip + trip / 1024) / 1000 + 1 + static_cast<std::uint64_t>(left) / 512 + 2;
    }
    // A dimension counted in a window (a slot) has no slice: under learn,
    // one still on its strict window.
    spacing_tokens = buckets ? buckets->learn.extra_tokens : 0;
    for (int k = 0; k < 2; ++k) {
      if (buckets && g.slice_us > 0 && g.slots[k] < 0)
        spaced[k].start(buckets->b[k], static_cast<std::uint64_t>(g.slice_us), margin);
      else spaced[k] = chunk_slice{};
    }
  }
  bool has_slices() const noexcept { return spaced[0].on || spaced[1].on; }
  // The requests the next slice asks for (spaced buckets: "Spaced buckets"
  // above): `most` (the full chunk) for the first, then twice what the
  // last one used (twice its size when used in full), at least 2. What a
  // slice used is the larger of its requests spent and the share of its
  // time its buckets' TATs reached (a token bucket can end a slice before
  // its requests do); it stays known after the slice goes.
  std::uint64_t next_want(std::uint64_t most) const noexcept {
    if (granted_requests == 0) return most;
    std::uint64_t used = granted_requests - requests;
    for (const chunk_slice& b : spaced) {
      if (!b.on || b.limit == 0) continue;
      const std::uint64_t tat = b.tat < b.limit ? b.tat : b.limit;
      const std::uint64_t share = static_cast<std::uint64_t>(
          (detail::u128(granted_requests) * tat + b.limit - 1) / b.limit);  // rounded up
      if (share > used) used = share;
    }
    const std::uint64_t w = used > most / 2 ? most : 2 * used;
    return w < 2 ? (most < 2 ? most : 2) : w;
  }
  // A lower bound on the server's time, µs after the grant: the supplied
  // now, else the steady time since the reply came, at 1023/1024.
  std::uint64_t since_grant(std::optional<std::int64_t> now_us, nanoseconds at) const noexcept {
    if (now_us) return *now_us > start_us ? static_cast<std::uint64_t>(*now_us - start_us) : 0;
    const std::int64_t d = (at - received).count();
    return d > 0 ? static_cast<std::uint64_t>(d - d / 1024) / 1000 : 0;
  }
  // Whether both slices take a request of n tokens at `at_us` after the grant.
  bool slices_fit(std::uint64_t n, std::uint64_t at_us) const noexcept {
    std::uint64_t x = 0;
    return spaced[0].fits(1, at_us, x) && spaced[1].fits(slice_tokens(n), at_us, x);
  }
  std::uint64_t slice_tokens(std::uint64_t n) const noexcept { return n == 0 ? 0 : detail::sat_add(n, spacing_tokens); }
  // Whether a request of n tokens can be spent from it now: test mode at
  // the supplied µs, else at the steady clock's `at`.
  bool covers(std::uint64_t n, std::optional<std::int64_t> now_us, nanoseconds at, std::int64_t worst = 0) const noexcept {
    if (!covers_but_time(n, worst)) return false;  // money: over > 0 is a cost it could not pay, owed
    if (has_slices() && !slices_fit(n, since_grant(now_us, at))) return false;
    if (now_us) return *now_us >= start_us && *now_us < end_us;
    return at >= sent && at < until;
  }
  // The server time a local admission stands for: the supplied one, else
  // the grant's time plus the steady time since the call was sent (at or
  // after the true one, and before end_us).
  // Where the chunk would take the request but for its slices' spacing: the
  // wait in µs until it does (0: it does not, a call decides), as the
  // in-process bucket's; the bits of the buckets that wait (2 rpm, 4 tpm).
  std::uint64_t slice_wait(std::uint64_t n, std::optional<std::int64_t> now_us, nanoseconds at, std::int64_t worst,
                           std::uint64_t& bits) const noexcept {
    if (!has_slices() || !covers_but_time(n, worst)) return 0;
    const std::uint64_t from = since_grant(now_us, at);
    std::uint64_t ready = 0;  // µs after the grant at which every bucket that waits is ready
    bits = 0;
    for (int k = 0; k < 2; ++k) {
      const chunk_slice& b = spaced[k];
      if (!b.on || (k == 1 && n == 0)) continue;
      const std::uint64_t r = (b.tat + b.per_us - 1) / b.per_us;  // whole µs, rounded up
      if (r > from) bits |= k == 0 ? 2u : 4u;
      if (r > ready) ready = r;
    }
    if (ready <= from || !slices_fit(n, ready)) return 0;
    const std::uint64_t wait = ready - from;
    if (now_us) return *now_us + static_cast<std::int64_t>(wait) < end_us ? wait : 0;
    return at + nanoseconds((wait + wait / 1023 + 1) * 1000) < until ? wait : 0;
  }
  // Everything covers checks but the time and the slices.
  bool covers_but_time(std::uint64_t n, std::int64_t worst) const noexcept {
    if (!live || requests == 0 || (tokens_on && tokens < n) || (slots_on && free_ids.empty())) return false;
    return !(money_on && (money < worst || over > 0));
  }
  // With spaced buckets, the lower bound the slices were decided at (so
  // the admissions' stamps keep their spacing).
  std::int64_t server_time(std::optional<std::int64_t> now_us, nanoseconds at) const noexcept {
    if (now_us) return *now_us;
    if (has_slices()) return start_us + static_cast<std::int64_t>(since_grant(now_us, at));
    return start_us + (at - sent).count() / 1000;
  }
  // Spends one request of n tokens at `at_us` after the grant (it fits:
  // covers); its slot's lease id (0: no slots).
  std::uint64_t spend(std::uint64_t n, std::int64_t worst = 0, std::uint64_t at_us = 0) noexcept {
    spaced[0].charge(1, at_us);
    spaced[1].charge(slice_tokens(n), at_us);
    requests -= 1;
    if (tokens_on) tokens -= n;
    if (money_on) money -= worst;
    if (!slots_on) return 0;
    const std::uint64_t id = free_ids.back();
    free_ids.pop_back();
    return id;
  }
  // Its leftovers as a return (nothing when none), and the chunk gone; its
  // free slots are moved to `drops` (each to be dropped by a later call),
  // its money to `money_out` (what goes back, what its requests cost).
  std::optional<queued> give_back(std::vector<std::uint64_t>& drops, std::vector<queued>& money_out) {
    if (!live) return std::nullopt;
    live = false;
    if (money_on) money_ended(epoch, money, spent, over, money_out);
    money = spent = over = 0;
    for (std::uint64_t id : free_ids) drops.push_back(id);
    free_ids.clear();
    const std::uint64_t r = slots[0] >= 0 ? requests : 0;
    const std::uint64_t t = slots[1] >= 0 || slots[2] >= 0 ? tokens : 0;
    if (r == 0 && t == 0) return std::nullopt;
    return returning(epoch, slots, r, t);
  }
  // Money of epoch e: `back` nanos no request holds any more, and requests
  // that cost `cost`, `beyond` of it past their worst case: a money return
  // (committed less back) and a settlement with no lease (spent plus cost,
  // committed plus beyond), which applies its charge even if sent twice
  // (the safe side), where a return sent twice would free another's money.
  static void money_ended(std::uint64_t e, std::int64_t back, std::int64_t cost, std::int64_t beyond,
                          std::vector<queued>& out) {
    if (back > 0) {
      queued q;
      q.what = queued::kind::money_return;
      q.epoch = e;
      q.reserved_nanos = back;
      out.push_back(q);
    }
    if (cost > 0) {
      queued q;
      q.what = queued::kind::settle;
      q.epoch = e;
      q.reserved_nanos = cost - beyond;
      q.actual_nanos = cost;
      out.push_back(q);
    }
  }
  // The drop of a chunk's slot `id` of epoch e (no request holds it).
  static queued dropping(std::uint64_t e, std::uint64_t id) noexcept {
    queued q;
    q.what = queued::kind::drop;
    q.lease = id;
    q.epoch = e;
    return q;
  }
  // A return of r requests and t tokens into the sub-windows `s` of epoch e.
  static queued returning(std::uint64_t e, const std::int64_t (&s)[3], std::uint64_t r, std::uint64_t t) noexcept {
    queued q;
    q.what = queued::kind::chunk_return;
    q.epoch = e;
    q.reserved_nanos = static_cast<std::int64_t>(r);
    q.actual_nanos = s[0] < 0 ? 0 : s[0];
    q.refund_tokens = t;
    q.tpm_slot = s[1];
    q.tpd_slot = s[2];
    return q;
  }
};

// A chunk's slots end lease_us after the chunk's end, up to one sub-window
// of the narrowest enforced window after the grant: the hold after a state
// loss covers that too, so no slot granted before the loss is still held when
// admissions start again.
inline void chunk_hold(layout& l) noexcept {
  std::uint64_t width = 0;
  for (const window_params& w : l.w)
    if (w.limit != 0 && w.width_us > width) width = w.width_us;
  // A spaced bucket's slice: at most its limit's units (a request's tokens
  // are below the token limit: account/policy.hpp), its period.
  for (int k = 0; k < 2; ++k) {
    const bucket_params& b = l.b[k];
    if (b.per_us == 0) continue;
    const detail::u128 iv = detail::u128(b.whole_us) * b.per_us + b.ticks;
    const detail::u128 span = (detail::u128(l.w[k].limit) * iv + b.per_us - 1) / b.per_us;
    const std::uint64_t cap = std::uint64_t(1) << 50;
    const std::uint64_t us = span > cap ? cap : static_cast<std::uint64_t>(span);
    if (us > width) width = us;
  }
  if (l.lease_us + width > l.hold_us) l.hold_us = l.lease_us + width;
}

// Throws layout_error(layout_errc::chunk) (aborts without exceptions) for a
// configuration chunked mode cannot keep exact; with slots, sets the hold.
inline void chunk_check(layout& l, const chunk_sizes& z) {
  if (chunk_keepable(l)) {
    if (z.slots != 0) chunk_hold(l);
    return;
  }
#if !TOLLGATE_NO_EXCEPTIONS
  throw layout_error(layout_errc::chunk);
#else
  std::fprintf(stderr, "tollgate: %s\n", message(layout_errc::chunk));
  std::abort();
#endif
}

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_CHUNK_HPP
