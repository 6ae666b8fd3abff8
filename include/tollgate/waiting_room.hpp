// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// waiting_room.hpp: blocking, fair admission to an account.
//
// admit(request, deadline, cancel) returns an admission, waiting for it if
// need be. Waiters are served strictly in arrival order: only the one at the
// head of the line asks the account; the others sleep on their own condition
// variable and are woken one at a time, when the head leaves. The head sleeps
// for exactly the account's retry_after, or, when the account is waiting for
// a permit or money to come back, until a lease releases capacity (the room
// hooks the account's release notification) or its deadline. So a large
// request is not starved by small ones arriving after it, and 300 agents let
// loose at once do not stampede: one asks, 299 sleep.
//
// A waiter leaves without an admission when its deadline passes or when its
// cancel flag is set (call notify() after setting it: it wakes every waiter,
// so a cancelled one leaves even behind the head); it then returns the
// last refusal the account gave (or a `later` with reason::busy if it never
// asked). Admissions happen only before the deadline: the account is asked
// only at a Clock time < deadline with the flag seen clear, so a call that
// arrives with its deadline past or its flag set is never admitted. (A flag
// set while the account is being asked is seen at the next check.)
//
// Concurrency contract. admit() and notify() are thread-safe. The waiting
// path takes the room's mutex (this is where callers block anyway); the
// account's try_admit stays lock-free for callers that do not wait. A room
// must outlive its waiters and must not outlive its account; one room per
// account (it installs the account's release hook).
#ifndef TOLLGATE_WAITING_ROOM_HPP
#define TOLLGATE_WAITING_ROOM_HPP

#include <tollgate/config.hpp>
#include <tollgate/account.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>

TOLLGATE_BEGIN_NAMESPACE

// Where one call stood in a waiting room: numbers the room gives under its
// lock, 1, 2, ... in the order calls arrived and in the order they left
// (admitted or not). Serving in arrival order means: when a call is
// admitted, every call that arrived before it has already left.
struct room_visit {
  std::uint64_t arrival = 0;
  std::uint64_t departure = 0;
};

template <class Clock = steady_clock, class Currency = usd_tag>
class waiting_room {
 public:
  using admission_type = admission<Clock, Currency>;
  explicit waiting_room(account<Clock, Currency>& a) : acct_(a) { acct_.set_release_hook(&waiting_room::on_release, this); }
  ~waiting_room() { acct_.set_release_hook(nullptr, nullptr); }
  waiting_room(const waiting_room&) = delete;
  waiting_room& operator=(const waiting_room&) = delete;

  // `deadline` is a time of the account's Clock. `visit`, if given, receives
  // this call's arrival and departure numbers (for tracing).
  admission_type admit(const request& r, nanoseconds deadline, const std::atomic<bool>* cancel = nullptr,
                       room_visit* visit = nullptr) {
    const nanoseconds arrived = Clock::now();
    struct account_time {  // adds the time spent here to the room's counter, on every way out
      waiting_room& room;
      nanoseconds from;
      ~account_time() {
        const nanoseconds d = Clock::now() - from;
        // relaxed: a statistic.
        room.waited_ns_.fetch_add(d.count() > 0 ? d.count() : 0, std::memory_order_relaxed);
        room.served_.fetch_add(1, std::memory_order_relaxed);
      }
    } timing{*this, arrived};
    waiter me;
    me.visit = visit;
    std::unique_lock<std::mutex> lock(m_);
    line_.push_back(&me);
    if (visit) visit->arrival = arrivals_ + 1;
    ++arrivals_;
    admission_type last;
    last.decision = decision::wait(nanoseconds(0), reason::busy);
    for (;;) {
      const bool give_up = (cancel && cancel->load(std::memory_order_acquire)) || Clock::now() >= deadline;
      if (line_.front() != &me) {
        if (give_up) return leave(me, std::move(last));
        sleep_until(lock, me, deadline);
        continue;
      }
      // The head that gives up leaves without asking (a04: asking once more
      // admitted calls past their deadline or cancelled).
      const nanoseconds asked = Clock::now();
      if (give_up || asked >= deadline) return leave(me, std::move(last));
      last = acct_.try_admit(r, asked);
      if (last || last.decision.never()) return leave(me, std::move(last));
      const nanoseconds w = last.decision.retry_after();
      // A time to wait for, or (a permit, money) a release to wait for.
      sleep_until(lock, me, w > nanoseconds(0) && asked + w < deadline ? asked + w : deadline);
      // From the refusal to the next try: the time these dimensions cost.
      acct_.record_wait(last.refused, Clock::now() - asked);
    }
  }

  // Wakes every waiter to re-check its cancel flag and deadline, and the head
  // to ask the account again: call it after setting a cancel flag, after
  // capacity came back by other means than a lease, or after moving a manual
  // clock. (A lease's release wakes the head alone.)
  void notify() {
    std::lock_guard<std::mutex> lock(m_);
    for (waiter* w : line_) w->cv.notify_one();
  }

  // Total time callers spent in admit(), in the account's Clock, and how
  // many calls returned (for metrics; relaxed counters). The time the head
  // of the line slept, per dimension that refused it, is in the account's
  // stats().waited_ns_by; the rest of waited() is mostly time spent in line
  // behind the head.
  nanoseconds waited() const noexcept { return nanoseconds(waited_ns_.load(std::memory_order_relaxed)); }
  std::uint64_t served() const noexcept { return served_.load(std::memory_order_relaxed); }

  // Waiters in line now (a snapshot).
  std::size_t waiting() {
    std::lock_guard<std::mutex> lock(m_);
    return line_.size();
  }

 private:
  struct waiter {
    std::condition_variable cv;
    room_visit* visit = nullptr;
  };

  static void on_release(void* self) {
    waiting_room& room = *static_cast<waiting_room*>(self);
    std::lock_guard<std::mutex> lock(room.m_);
    if (!room.line_.empty()) room.line_.front()->cv.notify_one();  // only the head asks the account
  }

  admission_type leave(waiter& me, admission_type&& a) {
    ++departures_;
    if (me.visit) me.visit->departure = departures_;
    const bool was_head = line_.front() == &me;
    for (auto it = line_.begin(); it != line_.end(); ++it)
      if (*it == &me) {
        line_.erase(it);
        break;
      }
    if (was_head && !line_.empty()) line_.front()->cv.notify_one();  // the next one's turn: wake it alone
    return std::move(a);
  }

  // Sleeps until woken or `until` (a time of Clock), converted to the
  // standard steady clock the condition variable waits on.
  void sleep_until(std::unique_lock<std::mutex>& lock, waiter& me, nanoseconds until) {
    const nanoseconds left = until - Clock::now();
    if (left <= nanoseconds(0)) return;
    // Cap a single sleep so a Clock that is not real time (a manual clock)
    // still re-checks its deadline now and then.
    const nanoseconds cap = std::chrono::seconds(1);
    me.cv.wait_for(lock, left < cap ? left : cap);
  }

  account<Clock, Currency>& acct_;
  std::atomic<std::int64_t> waited_ns_{0};
  std::atomic<std::uint64_t> served_{0};
  std::mutex m_;
  std::deque<waiter*> line_;
  std::uint64_t arrivals_ = 0, departures_ = 0;  // guarded by m_
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_WAITING_ROOM_HPP
