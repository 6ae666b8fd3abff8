// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// token_bucket.hpp: a lock-free GCRA token bucket whose whole state is one
// atomic 64-bit word (the theoretical arrival time, TAT).
//
// Guarantee. With rate r = count/period, emission interval T = period/count
// and burst B: over any interval of length t (in the supplied timestamps), the
// bucket admits at most  B + floor(t / T)  units, and a caller that keeps it
// from ever sitting full gets exactly that many. There is no lost fractional
// refill and no drift: time is counted in ticks of 1/s ns, where s is chosen
// so that T is a whole number of ticks. That is possible for every rate whose
// reduced count/period needs s <= 14 (every Kimi limit needs s = 1: RPM 3 ->
// 20 s, TPM 5,000,000 -> 12 us, TPD 1,500,000 -> 57.6 ms; 7/s needs s = 7).
// Other rates use s = 14 and round T up to the next tick: the bucket then runs
// slower than asked by less than 1/14 ns per unit (`interval()` returns the
// interval in force, `exact()` says which case applies), never faster. Rates
// that cannot be represented within 0.1 % are refused (errc::rate_too_fine).
//
// Horizon. Ticks are counted in 62 bits from an epoch: the origin (the
// construction time, or one you pass) to begin with. Every accepted
// configuration spans at least 10 years from its epoch (`horizon()` says
// exactly how long; configurations that cannot are refused at construction),
// and the bucket never runs out of it: once a call's `now` is 2^57 ticks past
// the epoch (4.6 years / s: 120 days at s = 14), the epoch moves forward to
// 2^56 ticks before it, the TAT with it by the same whole nanoseconds: exact
// (every decision at that `now` or later is the one the old epoch gave). The
// move is a writer's step: try_acquire and charge make it only when no
// writer is inside (they try once, without waiting), set_rate and set_burst
// always do; writers are inside only for a few stores, so months of room
// remain. So a bucket keeps its bound and exact
// waits for any `now` up to INT64_MAX. A `now` before the epoch counts as the
// epoch, so readings that lag the latest by more than 2^56 ticks (2.3 years
// / s: 60 days at s = 14) are evaluated as if made at the epoch: never more
// permissive than the latest time seen.
//
// Time going backwards. A `now` earlier than the state's time is evaluated at
// face value: the decision is never more permissive than one made at the
// latest time seen, and the TAT never decreases (except through `refund`).
// The bound above holds over supplied timestamps in any order. If threads'
// clock readings differ by up to d, then over any real-time interval t at most
// B + floor((t + d) / T) units are admitted. The same rule means that one
// admission or charge at a bogus far-future `now` (INT64_MAX, say) makes the
// bucket owe until then: every ordinary `now` afterwards waits for centuries.
// That is "never more permissive" working as stated; the way out is
// `reset(now)`, which forgets what is owed.
//
// Decisions. n == 0 is always admitted and changes nothing. n > B is
// `never` (reason::exceeds_capacity). Otherwise a refused request gets the
// exact wait, rounded up to the nanosecond: not admissible one nanosecond
// earlier, admissible at it if nothing else is admitted meanwhile. A refusal
// writes nothing.
//
// Refunds. An admission made with a ticket (try_acquire(n, now, ticket),
// try_acquire_and_charge) can give units back with refund(ticket, n, now):
// at most the part of its own intervals still ahead at `now`, in whole
// units, and never more than the bucket owes. That keeps the bound above for
// the units admitted net of refunds, whatever came between (the rule is in
// bucket_ticket.hpp). A ticket from before a set_rate, set_burst or reset
// gives nothing back; an epoch move keeps tickets good (it is exact).
// refund(n, now) without a ticket is deprecated: it is only safe for undoing
// the latest admission.
//
// Reconfiguration during an operation. Every decision is made under the
// configuration in force at its CAS, however many reconfigurations (rate,
// burst, reset or epoch moves) a stalled thread sleeps through: each
// configuration slot carries a 64-bit generation that the call reads before
// the parameters and checks after its CAS (a stale CAS, which can only have
// raised the TAT, is undone if the word is still its own, else left as debt,
// and the call decides again). A refund checks the same generation after its
// CAS; a stale one (which lowered the TAT) is undone if the word is still
// its own, else the ticks it took off are owed again at once, and it
// decides again. In that last case only (four reconfigurations while the
// refund stalled between its read and its CAS, the word back to the exact
// value it read, and another call landing between its CAS and its undo), the
// calls in between may see up to k intervals of the old configuration more
// room (k the units the refund computed), owed back right after.
//
// Writers without a lock. set_rate, set_burst, reset and epoch moves claim
// an owner word by CAS; nothing else waits for them. A writer that finds it
// held waits while the holder shows no change for a few thousand looks
// (yields), then takes it over: a process killed at any instruction of a
// reconfiguration, a reset or a refund delays the next writer by those looks
// (about a millisecond), never forever, and leaves every word consistent (a
// refund holds nothing). A holder taken over while only slow can do no harm:
// its writes to the slot fail (each field is written by CAS under the
// claim's tag, see detail/bucket_slots.hpp), the taker owes one tick more in
// the state word before it reads it, so the old holder's installing CAS
// fails, and it starts again with a new claim. What remains: a holder taken
// over installs a slot the taker is filling if the state word came back to
// the exact value it read after that tick (refunds, or a debt saturated at
// the horizon, can bring it back) while it stalled; and a field tag wraps
// after 2^32 claims.
//
// State layout. The state word holds the TAT in its low 62 bits and, in its
// top two, the tag of the configuration slot in force: a reconfiguration
// fills the next of four slots and installs its tag with one CAS (see
// detail/bucket_slots.hpp for the slots, their generations and the owner
// word; detail/gcra_params.hpp for the ticks).
//
// Concurrency contract. Every member function is thread-safe. try_acquire,
// try_acquire_and_charge and charge are lock-free (one CAS loop on the state
// word, no allocation, no system call besides the clock read of the
// overloads without `now`); refund is lock-free too and never waits (it gives
// nothing back for a ticket from another configuration). available,
// time_until and full_in read one word and may be stale the moment they
// return. set_rate, set_burst and reset take turns on the owner word (see
// above; never waiting for acquirers or refunds); the first two keep the
// units owed at `now`, converted to the new interval and rounded up. A
// change is applied as of the `now` it is given: one that lags the latest
// time seen by d can hand back at most d x (new rate - old rate) units early
// (the skew bound above). The state is standard-layout, address-free atomics
// of lock-free types, so a bucket may live in memory shared between processes.

#ifndef TOLLGATE_TOKEN_BUCKET_HPP
#define TOLLGATE_TOKEN_BUCKET_HPP

#include <tollgate/config.hpp>
#include <tollgate/bucket_ticket.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/detail/bucket_slots.hpp>
#include <tollgate/detail/gcra_params.hpp>
#include <tollgate/error.hpp>
#include <tollgate/rate.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

namespace detail {
// Test seams where a test can reconfigure the bucket (a stalled thread,
// without threads): between an acquirer's read of the parameters and of the
// state, and before its CAS. They do nothing unless a test specialises them.
template <class Clock>
struct token_bucket_stall {
  static void before_load() noexcept {}
  static void before_cas() noexcept {}
};
}  // namespace detail

template <class Clock = steady_clock>
class alignas(TOLLGATE_CACHELINE_SIZE) token_bucket {
  using L = detail::gcra_limits;

 public:
  using clock = Clock;
  enum class start { full, empty };

  // Builds a bucket whose origin is Clock::now(). Throws config_error (or,
  // without exceptions, aborts with the reason) on a bad configuration.
  token_bucket(rate r, std::uint64_t burst, start s = start::full) : token_bucket(r, burst, Clock::now(), s) {}

  // Builds a bucket with an explicit origin: times before it count as it.
  token_bucket(rate r, std::uint64_t burst, nanoseconds origin, start s = start::full) {
    const errc e = init(r, burst, origin, s);
    if (e != errc::ok) detail::fail(e);
  }

  // Never throws: on a bad configuration sets `ec` and builds a bucket that
  // refuses everything with reason::misconfigured.
  token_bucket(rate r, std::uint64_t burst, nanoseconds origin, start s, errc& ec) noexcept {
    ec = init(r, burst, origin, s);
  }

  token_bucket(const token_bucket&) = delete;
  token_bucket& operator=(const token_bucket&) = delete;
  // Checks a configuration without building anything.
  static constexpr errc validate(rate r, std::uint64_t burst) noexcept {
    detail::gcra_params p{};
    return detail::make_gcra_params(r, burst, p);
  }

  // Takes n units if the bucket holds them at `now`.
  decision try_acquire(std::uint64_t n, nanoseconds now) noexcept { return acquire(n, 0, now, nullptr); }
  decision try_acquire(std::uint64_t n = 1) noexcept { return try_acquire(n, Clock::now()); }
  // The same, filling `t` for a later refund (a refusal leaves it empty).
  decision try_acquire(std::uint64_t n, nanoseconds now, bucket_ticket& t) noexcept { return acquire(n, 0, now, &t); }
  // Takes n units if the bucket holds them at `now` and, in the same step,
  // charges `extra` more as debt (usage known to follow the admission). The
  // ticket covers all n + extra units. n == 0 admits and only charges.
  decision try_acquire_and_charge(std::uint64_t n, std::uint64_t extra, nanoseconds now, bucket_ticket& t) noexcept {
    return acquire(n, extra, now, &t);
  }

  // Charges n units unconditionally: usage learnt after the fact becomes a
  // debt that later requests wait out. Saturates at the horizon (one
  // interval below the top of the ticks, so that the wait a request after it
  // is given stays exact).
  void charge(std::uint64_t n, nanoseconds now) noexcept { (void)acquire(0, n, now, nullptr); }
  void charge(std::uint64_t n) noexcept { charge(n, Clock::now()); }

  // Gives back up to n of the units an admission took, as its ticket allows,
  // and returns how many it gave (the ticket keeps the rest): at most
  //     min(n, t.units, (t.end - now) / T, owed(now) / T)
  // whole units, the part of the admission's own intervals still ahead (see
  // bucket_ticket.hpp; the test oracle checks it). A ticket from before a set_rate,
  // set_burst or reset returns nothing, nor one of another bucket (by its
  // address and configuration number: bucket_ticket.hpp states the residue). A refund at a `now` that lags the latest
  // time seen by d can return up to ceil(d / T) units early (the skew bound above).
  std::uint64_t refund(bucket_ticket& t, std::uint64_t n, nanoseconds now) noexcept;

  // Deprecated: a refund without a ticket takes n intervals off the current
  // TAT, which is safe only when no other admission came after the units
  // being returned (one owner undoing its own last acquire). Otherwise it can
  // cancel a later caller's charge; use the ticket overload. The bucket
  // never holds more than B and the TAT never moves below `now`. Returns the
  // whole units actually returned.
  std::uint64_t refund(std::uint64_t n, nanoseconds now) noexcept;
  std::uint64_t refund(std::uint64_t n) noexcept { return refund(n, Clock::now()); }

  // Whole units available at `now` (peek: consumes nothing).
  std::uint64_t available(nanoseconds now) const noexcept {
    const std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
    const detail::gcra_params p = hot_params_of(w);
    if (p.burst == 0) return 0;
    return detail::gcra_available(w & L::max_ticks, ticks(now, p), p);
  }
  std::uint64_t available() const noexcept { return available(Clock::now()); }

  // What try_acquire(n, now) would answer, without consuming.
  decision time_until(std::uint64_t n, nanoseconds now) const noexcept {
    if (n == 0) return decision::admit();
    const std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
    const detail::gcra_params p = hot_params_of(w);
    if (p.burst == 0) return decision::refuse(reason::misconfigured);
    if (n > p.burst) return decision::refuse(reason::exceeds_capacity);
    const std::uint64_t now_t = ticks(now, p);
    const std::uint64_t tat = w & L::max_ticks;
    const std::uint64_t need = (tat > now_t ? tat : now_t) + n * p.interval;
    if (need - now_t > p.tau) return decision::wait(wait_from(now, need - now_t - p.tau, p));
    return decision::admit();
  }
  decision time_until(std::uint64_t n = 1) const noexcept { return time_until(n, Clock::now()); }

  // Time from `now` until the bucket is full again (its reset time).
  nanoseconds full_in(nanoseconds now) const noexcept {
    const std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
    const detail::gcra_params p = hot_params_of(w);
    if (p.burst == 0) return nanoseconds(0);
    const std::uint64_t now_t = ticks(now, p);
    const std::uint64_t tat = w & L::max_ticks;
    return tat > now_t ? wait_from(now, tat - now_t, p) : nanoseconds(0);
  }

  // Snapshot support: what is owed at `now` (time until the bucket is full
  // again), and its inverse for a bucket that has admitted nothing yet:
  // tickets of the bucket whose owed() is restored give nothing back here
  // (bucket_ticket.hpp), but this bucket's own from before it would.
  nanoseconds owed(nanoseconds now) const noexcept { return full_in(now); }
  void restore_owed(nanoseconds owed_for, nanoseconds now) noexcept {
    std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
    const detail::gcra_params p = params_of(w);
    if (p.burst == 0) return;
    const std::uint64_t tat = detail::gcra_owing(owed_for.count(), now.count(), p);
    // release: as in reconfigure; the bucket is not shared yet anyway.
    state_.store((w & ~L::max_ticks) | tat, std::memory_order_release);
  }

  // Forgets everything owed: the bucket is full (or empty, with
  // start::empty) as of `now`, and its epoch moves to `now` (or stays at the
  // origin for an earlier one). For recovering from a bogus far-future `now`
  // (see the header); more permissive than anything else here, by design.
  // Takes turns with set_rate on the owner word; an acquire racing it is
  // decided before or after it (the generation check). Tickets from before
  // it give nothing back.
  void reset(nanoseconds now, start st = start::full) noexcept;

  // Live changes keep the units owed at `now` (see the contract above for a
  // stale `now`); an invalid configuration is refused and changes nothing.
  [[nodiscard]] errc set_rate(rate r, nanoseconds now) noexcept { return reconfigure(&r, nullptr, now); }
  [[nodiscard]] errc set_rate(rate r) noexcept { return set_rate(r, Clock::now()); }
  [[nodiscard]] errc set_burst(std::uint64_t b, nanoseconds now) noexcept { return reconfigure(nullptr, &b, now); }
  [[nodiscard]] errc set_burst(std::uint64_t b) noexcept { return set_burst(b, Clock::now()); }

  rate current_rate() const noexcept {
    return slots_.rate_of(slot_index(state_.load(std::memory_order_acquire)));  // acquire: as in acquire()
  }
  std::uint64_t burst() const noexcept { return in_force().burst; }
  // True when the interval in force is exactly period / count.
  bool exact() const noexcept { return in_force().exact; }
  // The rate actually enforced: scale units per (interval in ticks) ns. It
  // equals the configured rate (reduced) when exact(), else it is slower by
  // less than 0.1 %.
  rate effective_rate() const noexcept {
    const detail::gcra_params p = in_force();
    return rate(p.scale, nanoseconds(static_cast<std::int64_t>(p.interval)));
  }
  // The emission interval in force, rounded up to whole nanoseconds.
  nanoseconds interval() const noexcept { return nanoseconds(detail::gcra_interval_ns(in_force())); }
  // How far from its epoch the bucket counts exactly (at least 10 years; the
  // epoch moves forward long before, see the header).
  nanoseconds horizon() const noexcept { return nanoseconds(detail::gcra_horizon_ns(in_force())); }
  nanoseconds origin() const noexcept { return nanoseconds(origin_); }
  // The epoch in force: the origin, or where it has moved to.
  nanoseconds epoch() const noexcept { return nanoseconds(in_force().epoch); }

 private:
  // try_acquire, try_acquire_and_charge and charge: one CAS that adds
  // n + extra intervals, checking only n against the burst (n == 0: none).
  // The tag has two bits, so four reconfigurations while this call is
  // between its read and its CAS can bring back the very word it read, under
  // another installation of the same slot: the slot's generation, read before
  // the parameters and again after the CAS, differs exactly then. Such a CAS
  // only raised the TAT; it is undone if the word is still its own (else
  // kept: debt, the safe side), and the call decides again under the
  // configuration in force. No decision comes from a stale configuration.
  decision acquire(std::uint64_t n, std::uint64_t extra, nanoseconds now, bucket_ticket* t) noexcept {
    if (t) *t = bucket_ticket{};
    if (n == 0 && extra == 0) return decision::admit();
    // The parameters first, from the slot last installed, checked against
    // the word (see "Reading a slot" in detail/bucket_slots.hpp).
    std::size_t i = slots_.hint();
    detail::gcra_params p = slots_.hot(i);
    std::uint64_t now_t = ticks(now, p);
    detail::token_bucket_stall<Clock>::before_load();
    // acquire: pairs with the release CAS in reconfigure_locked() (or store
    // in reset()) that installed the tag we read, or any RMW after it, which
    // continues that release sequence: that slot's contents are visible.
    std::uint64_t w = state_.load(std::memory_order_acquire);
    if (refresh(w, i, p)) now_t = ticks(now, p);
    if (__builtin_expect(detail::gcra_move_due(now_t), 0)) {
      try_move_epoch(now);
      w = state_.load(std::memory_order_acquire);  // acquire: as above
      if (refresh(w, i, p)) now_t = ticks(now, p);
    }
    for (;;) {
      if (p.burst == 0) return decision::refuse(reason::misconfigured);
      if (n > p.burst) return decision::refuse(reason::exceeds_capacity);
      const std::uint64_t tat = w & L::max_ticks;
      const std::uint64_t base = tat > now_t ? tat : now_t;
      // Saturating: a torn read of a slot being rewritten (caught below) must
      // not wrap into a TAT lower than the one read.
      const std::uint64_t need = detail::sat_add(base, detail::sat_mul(n, p.interval));
      if (n > 0 && need - now_t > p.tau) return decision::wait(wait_from(now, need - now_t - p.tau, p));
      std::uint64_t next = need;
      if (extra > 0) next = detail::sat_add(need, detail::sat_mul(extra, p.interval));
      // Saturates at the horizon, one interval below the top (gcra_top): a
      // request after it stays admissible at the wait it is given. Never
      // below `need` (>= tat; <= max_ticks, or it was refused above).
      const std::uint64_t top = detail::gcra_top(p, now_t);
      if (next > top) next = need > top ? need : top;
      const std::uint64_t nw = (w & ~L::max_ticks) | next;
      detail::token_bucket_stall<Clock>::before_cas();
      // acq_rel on success: acquire makes the generation check below see any
      // reinstallation of the slot whose tag this word carries (written
      // before the CAS that installed it, which this CAS follows); release
      // keeps this RMW in the release sequence of the last reconfiguration.
      // On failure `w` is reloaded with acquire, as the first load.
      if (state_.compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire)) {
        if (t) p.config = slots_.config(i);  // checked with the generation below, as the other fields
        if (__builtin_expect(slots_.gen(i) == p.gen, 1)) {  // ordered after the CAS, see above
          if (t)
            *t = detail::make_bucket_ticket(p, origin_, now_t, base, next, n, extra,
                                            reinterpret_cast<std::uintptr_t>(this));
          return decision::admit();
        }
        // Stale: undo if the word is still ours. acq_rel / acquire: as above.
        std::uint64_t cur = nw;
        if (state_.compare_exchange_strong(cur, w, std::memory_order_acq_rel, std::memory_order_acquire)) cur = w;
        w = cur;
      }
      if (refresh(w, i, p)) now_t = ticks(now, p);  // lost a race (`w` is the word now) or met a stale slot
    }
  }
  // Re-reads the parameters (and says so) unless slot i's installation `p` is
  // still the one in force at `w` (loaded, or CAS'd, with acquire before).
  bool refresh(std::uint64_t w, std::size_t& i, detail::gcra_params& p) const noexcept {
    if (__builtin_expect(slot_index(w) == i && slots_.gen(i) == p.gen, 1)) return false;
    i = slot_index(w);
    p = slots_.hot(i);
    return true;
  }

  static std::size_t slot_index(std::uint64_t w) noexcept { return static_cast<std::size_t>(w >> L::tat_bits); }

  detail::gcra_params hot_params_of(std::uint64_t w) const noexcept { return slots_.hot(slot_index(w)); }
  detail::gcra_params params_of(std::uint64_t w) const noexcept { return slots_.full(slot_index(w)); }
  // acquire: as in acquire().
  detail::gcra_params in_force() const noexcept { return params_of(state_.load(std::memory_order_acquire)); }

  static std::uint64_t ticks(nanoseconds now, const detail::gcra_params& p) noexcept {
    return detail::gcra_ticks(now.count(), p);
  }
  static nanoseconds wait_from(nanoseconds now, std::uint64_t t, const detail::gcra_params& p) noexcept {
    return nanoseconds(detail::gcra_wait_from(now.count(), t, p));
  }

  // Moves the epoch if no writer is inside: try once, never wait (the hot
  // paths call it; years of room remain to try again).
  [[gnu::noinline, gnu::cold]] void try_move_epoch(nanoseconds now) noexcept {
    const std::uint64_t id = writer_.new_claim();
    if (!writer_.try_lock(id)) return;  // a writer is inside
    bool lost = false;
    (void)reconfigure_locked(id, nullptr, nullptr, now, lost);  // lost: the taker moves it if due
  }

  // Lowers the word `w` (tag i, read with the installation `p`) by `by`
  // ticks, for a refund. True when done under that installation; false with
  // `w` reloaded when the word moved (decide again). A CAS that lands on a
  // slot refilled since `p` was read (four reconfigurations during the
  // call, the word back to its value) is undone if the word is still ours;
  // if not, the ticks are owed again (added back). Either way the call
  // decides again under the slot in force.
  bool lower(std::uint64_t& w, std::size_t i, const detail::gcra_params& p, std::uint64_t by) noexcept;

  // Takes the owner word with a new claim number and returns it; after a
  // takeover, first owes one tick more in the state word, so that the old
  // holder's installing CAS, which expects the word it read, fails (see
  // detail/bucket_slots.hpp). 0 when taken over in turn meanwhile.
  std::uint64_t claim() noexcept {
    const std::uint64_t id = writer_.new_claim();
    if (!writer_.lock(id)) return id;
    std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
    while (writer_.holds(id)) {
      const std::uint64_t tat = w & L::max_ticks;
      const std::uint64_t nt = tat < L::max_ticks ? tat + 1 : tat - 1;  // a change either way: saturated, one less
      // acq_rel / acquire: as in acquire(); a charge of one tick, the safe side.
      if (state_.compare_exchange_weak(w, (w & ~L::max_ticks) | nt, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
        return id;
    }
    return 0;
  }

  errc init(rate r, std::uint64_t burst, nanoseconds origin, start st) noexcept;

  // Installs a new rate and/or burst (a null pointer keeps the current one),
  // moving the epoch if `now` is far enough from it. A writer taken over
  // starts again with a new claim.
  errc reconfigure(const rate* nr, const std::uint64_t* nb, nanoseconds now) noexcept {
    for (;;) {
      const std::uint64_t id = claim();
      if (id == 0) continue;
      bool lost = false;
      const errc e = reconfigure_locked(id, nr, nb, now, lost);
      if (!lost) return e;
    }
  }
  // The same, with the owner word held by `id`; releases it, or sets `lost`
  // when taken over (nothing installed, the owner word is the taker's).
  errc reconfigure_locked(std::uint64_t id, const rate* nr, const std::uint64_t* nb, nanoseconds now,
                          bool& lost) noexcept;

  // The state word has its line to itself; what acquirers only read starts
  // on the next line, so another thread's CAS never evicts it. The owner
  // word, which only writers touch, sits after the origin.
  detail::atomic<std::uint64_t> state_{0};
  alignas(TOLLGATE_CACHELINE_SIZE) std::int64_t origin_ = 0;  // written once, before the object is shared
  detail::bucket_writer writer_;
  detail::bucket_slots slots_;

  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "tollgate needs lock-free 64-bit atomics");
};

TOLLGATE_END_NAMESPACE

// The writers' definitions, which need the class complete.
#include <tollgate/bucket/writers.hpp>

#endif  // TOLLGATE_TOKEN_BUCKET_HPP
