// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/credit.hpp: per-thread credit, which lets the first 16 threads
// spend strict-window units and concurrency units without touching shared
// state.
//
// Window credit. A thread that owns a statistics shard (the first 16 to
// count) takes a strict window's units a chunk at a time: one CAS on the
// window's head admits its request and counts `chunk` more units in the same
// slot, which it then spends on its later requests in that slot with plain
// loads and stores on its own cache line. Every unit is counted in the
// window before it is spent, and spent only in the slot it was counted in,
// and only while that slot is the window's head (a `now` in a slot the head
// has left is stale, refused as without credit; one relaxed load of the
// head word), so the window's bound holds exactly as if each request had
// taken its own units, and a thread decides as it would without credit.
// A window epoch, bumped by a limit change and by a debt (usage settled
// beyond the reservation puts a window over its limit), makes each line
// give its window credit back at its owner's next take and refill through
// the window, which then decides (and waits the debt out) as without
// credit. What a credit costs: units counted but not yet spent. They are
// given back to the window, into the slot they were counted in (the head or
// an older slot still in the window; never one that has left it), when the
// owner's next request finds the slot over or its credit too small, or the
// window refuses it. A line holds units of one slot at a time, at most one
// chunk.
//
// Concurrency credit. The same for the concurrency limit: a thread takes
// 1 + chunk units from the limiter in one CAS and hands them to its later
// leases; a lease released on such a thread returns its unit to that
// thread's credit, which gives everything above one chunk back once it holds
// two. Units held as credit are held from the limiter, so leases in flight
// never exceed the limit. A limit change bumps the epoch, and each thread
// gives its credit back before taking a unit under the new limit. A thread
// that exits holding credit leaves it on its shard, for the next thread that
// claims that shard.
//
// Bound. chunk = limit / 1024 with up to 16 lines (limits below 1,024
// units get no credit and behave exactly as without it), limit / (64 x
// lines) with more (the shared account's `Lines`). Units counted but not
// spent are at any moment at most a chunk per line: other threads can be
// refused falsely by at most 16 chunks of a window (under 1.6 % of its
// limit; `Lines` chunks, under 1/64 of it for any `Lines`, in the shared
// account) and 16 x 2 chunks of the concurrency limit (under 3.2 %): a
// request is refused only where the window, counting only what was
// admitted, has at most that much room for it. After a limit change or a
// debt, a line whose thread does not take again keeps what it held (no other
// thread may write its line): window credit of the old chunk, counted in a
// slot at or before the change's, which leaves the window at the latest
// K + 1 slots (a window and a sub-window) after it; until then the bound is
// 16 chunks of the larger of the old and new limits, and a debt is not
// waited out by those lines' chunks (a chunk per line at most). Concurrency
// credit has no such end: up to 2 old chunks per line stay held until its
// thread next takes or releases a unit (or the next thread claims its shard). Leftovers go back into their
// own slot: were they left counted once another thread moved the window on,
// each line could hold a chunk in every slot of the window (K + 1 times
// the bound). A thread is never refused because of its own credit: a
// refusal gives the refused thread's window credit back (give_back) before
// the account asks the windows for a wait, so the wait is the same with
// credit as without.
//
// Concurrency. Each line is written by the thread that owns its shard only
// (relaxed loads and stores; ownership passes between threads through the
// shard claim's release/acquire, detail/shard_counters.hpp); the fields are
// atomic only so that readers (remaining(), snapshot()) may read them, which
// they do relaxed, as a snapshot. Chunks, the epochs and the head's slot
// are lone values read relaxed: a thread that sees a change late takes (or
// spends) as if its request had come before the change, as a direct
// try_acquire racing it could; a change that happens before the request is
// seen (coherence). The epochs live in this object, one per process: in the
// shared account a debt run up through one process's handle makes only
// that process's lines give back (the others: the bound above). Lines hold window slot
// numbers and times, no pointer: address-free, but owned per thread shard.
#ifndef TOLLGATE_ACCOUNT_CREDIT_HPP
#define TOLLGATE_ACCOUNT_CREDIT_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/concurrency.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/detail/shard_counters.hpp>
#include <tollgate/sliding_window.hpp>

#include <cstdint>
#include <memory>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

namespace detail {

template <class Window>
class thread_credit {
 public:
  using window_type = Window;
  enum : unsigned { rpm, tpm, tpd, kinds };  // the windows that can grant credit
  static constexpr std::uint64_t divisor = 1024;
  // What a window's limit is divided by for its chunk, with `lines` lines:
  // 1,024 up to 16 lines, 64 x lines above, so that all lines together hold
  // at most 1/64 of a limit (see the header).
  static constexpr std::uint64_t divisor_for(unsigned lines) noexcept {
    return lines > detail::thread_shards ? std::uint64_t{64} * lines : divisor;
  }

  struct credit {
    detail::atomic<std::uint64_t> slot{0};  // the window slot the units are counted in
    detail::atomic<std::uint64_t> left{0};  // units counted there and not yet spent
    detail::atomic<std::int64_t> start{0}, end{0};  // the slot's span [start, end)
  };
  struct alignas(TOLLGATE_CACHELINE_SIZE) line {
    credit c[kinds];
    // Concurrency units this thread holds from the limiter for leases to
    // come, and the limit change they were taken under.
    detail::atomic<std::uint64_t> units{0};
    detail::atomic<std::uint64_t> epoch{0};
    // The window epoch its window credit was taken under (see renew()).
    detail::atomic<std::uint64_t> window_epoch{0};
  };

  static std::uint64_t chunk_of(const Window& w, unsigned lines = detail::thread_shards) noexcept {
    return w.unit() == 0 ? 0 : w.limit() / w.unit() / divisor_for(lines);
  }

  // The lines, allocated once (at construction: limits raised later may need them).
  void allocate() {
    own_.reset(new line[detail::thread_shards]);
    lines_ = own_.get();
    count_ = detail::thread_shards;
    rescale();
  }
  // The seam over where the lines live: `count` lines at `lines`, owned by
  // the caller (the shared account's region, shared_account.hpp), in place
  // of allocate()'s. Line i is then written only by the user that owns it
  // (the caller's claim, not the shard numbers), who passes i as `shard`.
  void place(line* lines, unsigned count) noexcept {
    own_.reset();
    lines_ = count > 0 ? lines : nullptr;
    count_ = lines_ ? count : 0;
    rescale();
  }
  bool enabled() const noexcept { return lines_ != nullptr; }
  unsigned lines() const noexcept { return count_; }
  // Forgets line i's window credit: its units stay counted where they were
  // taken (the safe side). For a line whose last owner died, whose fields
  // may be half-written; only with no other writer of the line.
  void forget(unsigned i) noexcept {
    if (i >= count_) return;
    for (credit& c : lines_[i].c) {
      // relaxed: the caller owns the line. An empty span: no `now` is in it,
      // so the next take refills and rewrites every field.
      c.left.store(0, std::memory_order_relaxed);
      c.start.store(0, std::memory_order_relaxed);
      c.end.store(0, std::memory_order_relaxed);
    }
  }
  // The windows renew() gives old credit back to, fixed at construction
  // (before the lines are used: plain pointers, read by every line's owner).
  void bind(Window* const (&ws)[kinds]) noexcept {
    for (unsigned k = 0; k < kinds; ++k) windows_[k] = ws[k];
  }
  // Each window's unit, fixed at construction.
  void set_unit(unsigned kind, std::uint64_t u) noexcept { unit_[kind] = u; }

  // The chunks in force: for each window (null: none) and the concurrency
  // limit (0: none); off gives no credit at all. Bumps both epochs, so every
  // thread gives back what it took under the previous limits before it takes
  // more.
  void update(bool on, const Window* const (&ws)[kinds], std::uint64_t conc_limit) noexcept {
    for (unsigned k = 0; k < kinds; ++k) {
      const std::uint64_t units = on && ws[k] && ws[k]->unit() != 0 ? ws[k]->limit() / ws[k]->unit() : 0;
      // relaxed (both): lone values; a thread that sees the old chunk takes a chunk of the old size.
      limit_units_[k].store(units, std::memory_order_relaxed);
      chunk_[k].store(units / divisor_for(count_ > 0 ? count_ : detail::thread_shards), std::memory_order_relaxed);
    }
    conc_chunk_.store(on ? conc_limit / divisor : 0, std::memory_order_relaxed);  // relaxed: as above
    conc_epoch_.fetch_add(1, std::memory_order_relaxed);  // relaxed: as above
    bump_windows();
  }
  // Makes every line give its window credit back before it spends more (a
  // limit changed, or a debt put a window over its limit): its next take
  // then refills through the window, which decides as without credit.
  void bump_windows() noexcept {
    // relaxed: a lone value. A thread that sees the bump late spends its
    // credit as if its request had come before the change (as a direct
    // try_acquire racing it could); one that the change happens before sees it.
    window_epoch_.fetch_add(1, std::memory_order_relaxed);
  }

  // Takes n tokens of window `kind` for a request on `shard`, from credit if
  // it can, else from the window; `slot` is where they were counted.
  // Spending credit is the hot path (inline); refills and refusals are not.
  [[gnu::always_inline]] bool take_window(Window& w, unsigned kind, std::uint64_t n, nanoseconds now,
                                          std::uint64_t& slot, unsigned shard) noexcept {
    if (shard < count_) {
      line& l = lines_[shard];
      credit& c = l.c[kind];
      const std::uint64_t u = unit_[kind];
      const std::uint64_t nu = n <= u ? 1 : detail::ceil_div(n, u);
      // relaxed (all of l): this thread owns the line, see the header.
      // relaxed (window_epoch_): a lone value, see bump_windows().
      const std::uint64_t left = c.left.load(std::memory_order_relaxed);
      if (left >= nu && now.count() >= c.start.load(std::memory_order_relaxed) &&
          now.count() < c.end.load(std::memory_order_relaxed) &&
          l.window_epoch.load(std::memory_order_relaxed) == window_epoch_.load(std::memory_order_relaxed)) {
        const std::uint64_t s = c.slot.load(std::memory_order_relaxed);
        // Only while the slot is the window's head: a `now` in a slot the
        // head has left is stale, refused as without credit (head_slot()'s
        // relaxed load: see there).
        if (s == w.head_slot()) {
          c.left.store(left - nu, std::memory_order_relaxed);
          slot = s;
          return true;
        }
      }
    }
    return take_window_slow(w, kind, n, now, slot, shard);
  }

  [[gnu::noinline]] bool take_window_slow(Window& w, unsigned kind, std::uint64_t n, nanoseconds now,
                                          std::uint64_t& slot, unsigned shard) noexcept {
    window_ticket t;
    if (n == 0 || shard >= count_) {
      const bool ok = w.try_acquire(n, now, t).admitted();
      slot = t.slot;
      return ok;
    }
    renew(lines_[shard]);
    // relaxed: a lone value, changed only by set_limits (which bumps the
    // epoch after it: a chunk of the old size read here goes back at the
    // next take, as renew() gives it back).
    const std::uint64_t chunk = chunk_[kind].load(std::memory_order_relaxed);
    credit& c = lines_[shard].c[kind];
    const std::uint64_t u = w.unit();
    const std::uint64_t nu = n <= u ? 1 : detail::ceil_div(n, u);
    // relaxed (all of c): as above.
    std::uint64_t left = c.left.load(std::memory_order_relaxed);
    const bool same_slot = now.count() >= c.start.load(std::memory_order_relaxed) &&
                           now.count() < c.end.load(std::memory_order_relaxed) &&
                           c.slot.load(std::memory_order_relaxed) == w.head_slot();
    if (chunk > 0 && same_slot && left >= nu) {  // (the fast path's case, for a caller that went straight here)
      c.left.store(left - nu, std::memory_order_relaxed);
      slot = c.slot.load(std::memory_order_relaxed);
      return true;
    }
    if (left > 0) {
      // The slot is over (nothing of it can be spent any more), or what is
      // left is too little for this request: back into its slot, so a line
      // never holds more than the chunk of its last refill.
      give_credit(w, c, left);
      left = 0;
    }
    if (chunk == 0) {  // (limits below the divisor: exactly as without credit)
      const bool ok = w.try_acquire(n, now, t).admitted();
      slot = t.slot;
      return ok;
    }
    // From the window: this request and a chunk more, in one CAS.
    window_ticket big;
    if (w.try_acquire(detail::sat_mul(nu + chunk, u), now, big).admitted()) {
      const std::uint64_t width = static_cast<std::uint64_t>(w.slot_width().count());
      const std::int64_t start = detail::sat_offset(w.origin().count(), detail::sat_mul(big.slot, width));
      c.slot.store(big.slot, std::memory_order_relaxed);
      c.start.store(start, std::memory_order_relaxed);
      c.end.store(detail::sat_offset(start, width), std::memory_order_relaxed);
      c.left.store(big.units > nu ? big.units - nu : 0, std::memory_order_relaxed);
      slot = big.slot;
      return true;
    }
    // No room for a chunk: this request alone (what this thread held is
    // back already, so its own credit never refuses it).
    const bool ok = w.try_acquire(n, now, t).admitted();
    slot = t.slot;
    return ok;
  }

  // After a refusal on `shard`: gives the thread's window credit back (as its
  // next attempt would) and returns the concurrency units it holds under the
  // current limit (a permit it can take).
  std::uint64_t give_back(Window* const (&ws)[kinds], unsigned shard) noexcept {
    if (shard >= count_) return 0;
    line& l = lines_[shard];
    for (unsigned k = 0; k < kinds; ++k) {
      // relaxed: this thread owns the line, see the header.
      const std::uint64_t left = l.c[k].left.load(std::memory_order_relaxed);
      if (ws[k] && left > 0) give_credit(*ws[k], l.c[k], left);
    }
    // relaxed: as in take_unit.
    if (l.epoch.load(std::memory_order_relaxed) == conc_epoch_.load(std::memory_order_relaxed))
      return l.units.load(std::memory_order_relaxed);
    return 0;
  }

  // A concurrency unit for a lease on `shard`. The fast paths (units from
  // this thread's credit, or back to it) are split from the slow ones so
  // that a caller can keep the slow call out of line with no more arguments
  // than it needs (the account does).
  bool take_unit(concurrency_limiter& lim, unsigned shard) noexcept {
    return take_unit_fast(shard) || take_unit_slow(lim, shard);
  }
  [[gnu::always_inline]] bool take_unit_fast(unsigned shard) noexcept {
    if (shard < count_) {
      line& c = lines_[shard];
      // relaxed: as in take_unit_slow.
      const std::uint64_t left = c.units.load(std::memory_order_relaxed);
      if (left > 0 && c.epoch.load(std::memory_order_relaxed) == conc_epoch_.load(std::memory_order_relaxed)) {
        c.units.store(left - 1, std::memory_order_relaxed);
        return true;
      }
    }
    return false;
  }
  bool take_unit_slow(concurrency_limiter& lim, unsigned shard) noexcept {
    if (shard >= count_) return take_direct(lim, 1);
    line& c = lines_[shard];
    // relaxed (c.*): this thread owns the line. relaxed (epoch, chunk): lone
    // values, see the header.
    std::uint64_t left = c.units.load(std::memory_order_relaxed);
    const std::uint64_t epoch = conc_epoch_.load(std::memory_order_relaxed);
    if (c.epoch.load(std::memory_order_relaxed) != epoch) {
      c.units.store(0, std::memory_order_relaxed);
      if (left > 0) lim.release_detached(left);
      left = 0;
      c.epoch.store(epoch, std::memory_order_relaxed);
    }
    if (left > 0) {
      c.units.store(left - 1, std::memory_order_relaxed);
      return true;
    }
    const std::uint64_t chunk = conc_chunk_.load(std::memory_order_relaxed);
    if (chunk > 0 && take_direct(lim, 1 + chunk)) {
      c.units.store(chunk, std::memory_order_relaxed);
      return true;
    }
    return take_direct(lim, 1);
  }
  // A lease's unit back, on the releasing thread.
  void give_unit(concurrency_limiter& lim) noexcept {
    unsigned shard = detail::thread_shards;
    if (!give_unit_fast(shard)) give_unit_slow(lim, shard);
  }
  // True when the unit went back to this thread's credit; else `shard` is
  // the thread's, for give_unit_slow.
  [[gnu::always_inline]] bool give_unit_fast(unsigned& shard) noexcept {
    shard = lines_ ? detail::this_thread_shard() : detail::thread_shards;
    if (shard < count_) {
      line& c = lines_[shard];
      // relaxed: as in take_unit_slow.
      const std::uint64_t left = c.units.load(std::memory_order_relaxed) + 1;
      if (left <= 2 * conc_chunk_.load(std::memory_order_relaxed) &&
          c.epoch.load(std::memory_order_relaxed) == conc_epoch_.load(std::memory_order_relaxed)) {
        c.units.store(left, std::memory_order_relaxed);
        return true;
      }
    }
    return false;
  }
  void give_unit_slow(concurrency_limiter& lim, unsigned shard) noexcept {
    if (shard >= count_) {
      lim.release_detached(1);
      return;
    }
    line& c = lines_[shard];
    // relaxed: as in take_unit.
    const std::uint64_t chunk = conc_chunk_.load(std::memory_order_relaxed);
    const std::uint64_t epoch = conc_epoch_.load(std::memory_order_relaxed);
    const std::uint64_t left = c.units.load(std::memory_order_relaxed) + 1;
    const bool current = c.epoch.load(std::memory_order_relaxed) == epoch;
    if (!current || left > 2 * chunk) {
      const std::uint64_t keep = current ? chunk : 0;
      c.units.store(keep, std::memory_order_relaxed);
      lim.release_detached(left - keep);
    } else {
      c.units.store(left, std::memory_order_relaxed);
    }
  }

  // Concurrency units held as credit by every thread (a snapshot).
  std::uint64_t units_held() const noexcept {
    if (!lines_) return 0;
    std::uint64_t sum = 0;
    // relaxed: a snapshot of other threads' lines.
    for (unsigned i = 0; i < count_; ++i) sum += lines_[i].units.load(std::memory_order_relaxed);
    return sum;
  }
  // Units of window `kind` held as credit in slot j (a snapshot).
  std::uint64_t in_slot(unsigned kind, std::uint64_t j) const noexcept {
    if (!lines_) return 0;
    std::uint64_t sum = 0;
    for (unsigned i = 0; i < count_; ++i) {
      const credit& c = lines_[i].c[kind];
      // relaxed: as in held_at.
      if (c.slot.load(std::memory_order_relaxed) == j) sum += c.left.load(std::memory_order_relaxed);
    }
    return sum;
  }
  // Units of window `kind` held as credit in `now`'s slot, by every thread
  // (a snapshot: owners change them as it is read).
  std::uint64_t held_at(unsigned kind, nanoseconds now) const noexcept {
    if (!lines_) return 0;
    std::uint64_t sum = 0;
    for (unsigned i = 0; i < count_; ++i) {
      const credit& c = lines_[i].c[kind];
      // relaxed: a statistic-grade read of another thread's line.
      if (now.count() >= c.start.load(std::memory_order_relaxed) && now.count() < c.end.load(std::memory_order_relaxed))
        sum += c.left.load(std::memory_order_relaxed);
    }
    return sum;
  }
  // Forgets the window credit (a restore replaced the counts it was taken from).
  void clear_windows() noexcept {
    if (!lines_) return;
    for (unsigned i = 0; i < count_; ++i)
      for (credit& c : lines_[i].c) c.left.store(0, std::memory_order_relaxed);  // relaxed: not shared yet
  }

 private:
  static bool take_direct(concurrency_limiter& lim, std::uint64_t k) noexcept {
    permit p = lim.try_acquire(k);
    if (!p) return false;
    p.detach();  // owed back through release_detached: give_unit, take_unit or the reaper
    return true;
  }
  // Line l's window credit taken under an older window epoch back into its
  // slots (each into the slot it was counted in, while that is in its window).
  void renew(line& l) noexcept {
    // relaxed (l): this thread owns the line; (window_epoch_): see bump_windows().
    const std::uint64_t e = window_epoch_.load(std::memory_order_relaxed);
    if (l.window_epoch.load(std::memory_order_relaxed) == e) return;
    for (unsigned k = 0; k < kinds; ++k) {
      const std::uint64_t left = l.c[k].left.load(std::memory_order_relaxed);
      if (left == 0) continue;
      if (windows_[k]) give_credit(*windows_[k], l.c[k], left);
      else l.c[k].left.store(0, std::memory_order_relaxed);  // (no window of that kind holds it)
    }
    l.window_epoch.store(e, std::memory_order_relaxed);
  }
  static void give_credit(Window& w, credit& c, std::uint64_t left) noexcept {
    // relaxed: as in take_window. Zeroed before the refund, whose release
    // CAS (on the head, or on the slot's ring word once the head has moved
    // on; window/correct.hpp) then carries it to any snapshot() that sees
    // the refund: the export acquires the word it reads before it reads the
    // lines (window/snapshot.hpp), so a snapshot never leaves these units
    // out twice.
    c.left.store(0, std::memory_order_relaxed);
    const std::uint64_t tokens = detail::sat_mul(left, w.unit());
    window_ticket back{c.slot.load(std::memory_order_relaxed), tokens, left};
    // Into the slot the units were counted in, head or not, while it is in
    // the window: exactly those units, never into a slot that has left (the
    // ticketed refund checks both). Were they left counted once the head
    // moved on, each line could hold a chunk in every slot of the window.
    (void)w.refund(back, tokens);
  }

  // The chunks for the number of lines now in place (update() may run
  // before place(); both run before the lines are used).
  void rescale() noexcept {
    const std::uint64_t d = divisor_for(count_ > 0 ? count_ : detail::thread_shards);
    for (unsigned k = 0; k < kinds; ++k)
      // relaxed: as in update().
      chunk_[k].store(limit_units_[k].load(std::memory_order_relaxed) / d, std::memory_order_relaxed);
  }

  std::unique_ptr<line[]> own_;  // allocate()'s lines
  line* lines_ = nullptr;         // one per owned shard (or per claimed line, place()), when some limit grants credit
  unsigned count_ = 0;            // lines at lines_
  detail::atomic<std::uint64_t> chunk_[kinds] = {};
  detail::atomic<std::uint64_t> limit_units_[kinds] = {};  // each window's limit in units, 0: no credit
  std::uint64_t unit_[kinds] = {1, 1, 1};
  detail::atomic<std::uint64_t> conc_chunk_{0}, conc_epoch_{0};
  detail::atomic<std::uint64_t> window_epoch_{0};  // bumped by update() and bump_windows()
  Window* windows_[kinds] = {};                    // bind()'s windows, for renew()
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_CREDIT_HPP
