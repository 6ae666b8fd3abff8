// The interleaving checker's scheduler (test-only; built with
// TOLLGATE_INTERLEAVING_CHECKER, so every detail::atomic operation of the
// library calls the step hook first).
//
// An execution runs 2-3 logical threads, each a real std::thread (so
// thread_local state behaves as in production), one at a time: a baton
// passes between them, and before every atomic step the thread holding it
// asks a chooser whether to go on, to hand the baton to another thread (a
// preemption, bounded per execution), or to stop forever (a crash, bounded
// too). Bodies also ask the chooser for data (how far the supplied clock
// jumps before their next operation). Everything else is deterministic, so a
// schedule is the list of the chooser's answers and replays exactly.
//
// Two choosers: dfs_chooser enumerates every schedule within the bounds
// (stateless depth-first search, each execution replayed from scratch), and
// pct_chooser draws randomized priority schedules (PCT: random thread
// priorities, lowered at a few random steps) for longer scenarios.
//
// It explores sequentially consistent interleavings only: the memory orders
// are the business of TSan on the threaded stress tests.
#ifndef TOLLGATE_TESTS_CHECKER_SCHEDULER_HPP
#define TOLLGATE_TESTS_CHECKER_SCHEDULER_HPP

#include <tollgate/detail/atomic.hpp>

#include "../support.hpp"

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace tgcheck {

using tollgate::detail::atomic_op;

constexpr int crash_choice = -2;  // pick_thread's answer: the current thread stops forever

struct bounds {
  unsigned preemptions = 2;   // switches away from a thread that could go on
  unsigned crashes = 0;       // threads that may stop forever
  std::uint64_t steps = 2000;  // atomic steps per execution before "no progress"
};

class chooser {
 public:
  virtual ~chooser() = default;
  virtual void begin() {}
  // Who takes the next step. `current` is at a step (or -1: it finished or
  // crashed, and `others` must supply the next); `others` are the other
  // runnable threads in id order.
  virtual int pick_thread(int current, const std::vector<int>& others, bool may_preempt, bool may_crash,
                          std::uint64_t step) = 0;
  virtual std::size_t pick(std::size_t n) = 0;  // a data choice in [0, n)
};

// Depth-first enumeration: a trail of (choice, options) per decision with
// more than one option; the next execution takes the deepest one that has
// an untried option and replays the prefix.
class dfs_chooser : public chooser {
 public:
  void begin() override { pos_ = 0; }
  int pick_thread(int current, const std::vector<int>& others, bool may_preempt, bool may_crash,
                  std::uint64_t) override {
    opts_.clear();
    if (current >= 0) {
      opts_.push_back(current);
      if (may_preempt) opts_.insert(opts_.end(), others.begin(), others.end());
      if (may_crash) opts_.push_back(crash_choice);
    } else {
      opts_ = others;
    }
    return opts_[pick(opts_.size())];
  }
  std::size_t pick(std::size_t n) override {
    if (n <= 1) return 0;
    if (pos_ < trail_.size()) {
      point& p = trail_[pos_++];
      if (p.count != n) diverged_ = true;  // the scenario is not deterministic
      return p.chosen < n ? p.chosen : 0;
    }
    trail_.push_back(point{0, n});
    ++pos_;
    return 0;
  }
  // Moves to the next schedule; false when every one has been tried.
  bool advance() {
    while (!trail_.empty() && trail_.back().chosen + 1 >= trail_.back().count) trail_.pop_back();
    if (trail_.empty()) return false;
    ++trail_.back().chosen;
    return true;
  }
  bool diverged() const { return diverged_; }

 private:
  struct point {
    std::size_t chosen, count;
  };
  std::vector<point> trail_;
  std::vector<int> opts_;
  std::size_t pos_ = 0;
  bool diverged_ = false;
};

// PCT-style random schedules: distinct random priorities; at `depth - 1`
// random steps the running thread drops to the lowest priority so far; the
// highest-priority runnable thread runs. Crashes strike a random thread at a
// random step. Data choices are uniform.
class pct_chooser : public chooser {
 public:
  pct_chooser(std::uint64_t seed, unsigned threads, unsigned depth, std::uint64_t expected_steps,
              unsigned crash_percent)
      : g_(seed), threads_(threads), depth_(depth), expected_(expected_steps ? expected_steps : 1),
        crash_percent_(crash_percent) {}
  void begin() override {
    prio_.assign(threads_, 0);
    for (unsigned i = 0; i < threads_; ++i) prio_[i] = depth_ + 1 + i;
    for (unsigned i = threads_; i > 1; --i) std::swap(prio_[i - 1], prio_[g_.next() % i]);
    change_.clear();
    for (unsigned i = 0; i + 1 < depth_; ++i) change_.push_back(1 + g_.next() % expected_);
    next_low_ = depth_;
    crash_step_ = g_.chance(crash_percent_) ? 1 + g_.next() % expected_ : 0;
  }
  int pick_thread(int current, const std::vector<int>& others, bool may_preempt, bool may_crash,
                  std::uint64_t step) override {
    if (current >= 0) {
      for (std::uint64_t c : change_)
        if (c == step && next_low_ > 0) prio_[static_cast<std::size_t>(current)] = next_low_--;
      if (may_crash && step >= crash_step_ && crash_step_ != 0) {
        crash_step_ = 0;
        return crash_choice;
      }
    }
    int best = current;
    if (current < 0 || may_preempt)
      for (int o : others)
        if (best < 0 || prio_[static_cast<std::size_t>(o)] > prio_[static_cast<std::size_t>(best)]) best = o;
    return best;
  }
  std::size_t pick(std::size_t n) override { return n <= 1 ? 0 : static_cast<std::size_t>(g_.next() % n); }

 private:
  tgtest::rng g_;
  unsigned threads_, depth_;
  std::uint64_t expected_;
  unsigned crash_percent_;
  std::vector<std::uint64_t> prio_, change_;
  std::uint64_t next_low_ = 0, crash_step_ = 0;
};

// Records another chooser's answers, or replays recorded ones (to print the
// schedule of a failing execution).
class recording_chooser : public chooser {
 public:
  explicit recording_chooser(chooser* inner) : inner_(inner) {}
  void begin() override {
    pos_ = 0;
    if (inner_) {
      log_.clear();
      inner_->begin();
    }
  }
  int pick_thread(int current, const std::vector<int>& others, bool may_preempt, bool may_crash,
                  std::uint64_t step) override {
    if (!inner_) return static_cast<int>(log_[pos_++]);
    const int r = inner_->pick_thread(current, others, may_preempt, may_crash, step);
    log_.push_back(r);
    return r;
  }
  std::size_t pick(std::size_t n) override {
    if (!inner_) return static_cast<std::size_t>(log_[pos_++]);
    const std::size_t r = inner_->pick(n);
    log_.push_back(static_cast<long long>(r));
    return r;
  }
  std::vector<long long> log() const { return log_; }
  static recording_chooser replay(std::vector<long long> log) {
    recording_chooser r(nullptr);
    r.log_ = std::move(log);
    return r;
  }

 private:
  chooser* inner_;
  std::vector<long long> log_;
  std::size_t pos_ = 0;
};

class scheduler {
 public:
  explicit scheduler(unsigned threads) : n_(threads), slots_(threads) {
    tollgate::detail::interleaving_hook::step = &scheduler::hook;  // before any worker starts
    for (unsigned i = 0; i < n_; ++i) slots_[i].t = std::thread([this, i] { worker(static_cast<int>(i)); });
  }
  ~scheduler() {
    {
      std::lock_guard<std::mutex> lk(m_);
      quit_ = true;
    }
    for (auto& s : slots_) s.cv.notify_one();
    for (auto& s : slots_) s.t.join();
  }
  scheduler(const scheduler&) = delete;
  scheduler& operator=(const scheduler&) = delete;

  struct outcome {
    bool progress = true;  // every surviving thread finished within the step bound
    std::uint64_t steps = 0;
    unsigned preemptions = 0;
    std::vector<bool> crashed;
  };

  // One execution of bodies[i] on logical thread i. `check` runs when every
  // thread has finished or crashed, before the crashed ones are let go (they
  // then run to the end unscheduled, so nothing is left behind).
  outcome run(const std::vector<std::function<void()>>& bodies, chooser& c, const bounds& b,
              const std::function<void(const outcome&)>& check) {
    std::unique_lock<std::mutex> lk(m_);
    bodies_ = &bodies;
    chooser_ = &c;
    bounds_ = b;
    res_ = outcome{};
    free_steps_ = 0;
    res_.crashed.assign(n_, false);
    for (auto& s : slots_) {
      s.state = st::running;
      s.free = false;
      s.done = false;
    }
    trace_.clear();
    c.begin();
    ++epoch_;
    const int first = c.pick_thread(-1, runnable_except(-1), false, false, 0);
    hand(first);
    // Everyone finished, or stopped forever (and not let go past the step bound).
    main_cv_.wait(lk, [&] {
      for (const auto& s : slots_)
        if (!s.done && !(s.state == st::crashed && !s.free)) return false;
      return true;
    });
    const outcome o = res_;
    lk.unlock();
    check(o);
    lk.lock();
    for (auto& s : slots_)
      if (s.state == st::crashed) s.free = true;
    for (auto& s : slots_) s.cv.notify_one();
    main_cv_.wait(lk, [&] {
      for (const auto& s : slots_)
        if (!s.done) return false;
      return true;
    });
    bodies_ = nullptr;
    labels_.clear();
    return o;
  }

  // For bodies: the running logical thread, and a data choice.
  static int self() { return tls_id_; }
  std::size_t choose(std::size_t n) {
    std::lock_guard<std::mutex> lk(m_);
    if (slots_[static_cast<std::size_t>(tls_id_)].free) return 0;
    return chooser_->pick(n);
  }
  // Tracing for a replayed failure: a line per step and per note.
  void set_tracing(bool on) { tracing_ = on; }
  void note(const std::string& s) {
    if (!tracing_) return;
    std::lock_guard<std::mutex> lk(m_);
    if (slots_[static_cast<std::size_t>(tls_id_)].free) return;  // after the check: not part of the schedule
    trace_ += "  T" + std::to_string(tls_id_) + ": " + s + "\n";
  }
  std::string trace() const { return trace_; }
  // Names the atomics of an object in the trace, by offset (addresses
  // otherwise). Labels last for one execution.
  void label(const void* base, std::size_t size, std::function<std::string(std::size_t)> fn) {
    labels_.push_back(label_t{base, size, std::move(fn)});
  }
  // Whether thread i has stopped forever, for a body that plays a liveness
  // check (a process's death is known to the one that reaped it).
  bool crashed(std::size_t i) {
    std::lock_guard<std::mutex> g(m_);
    return i < slots_.size() && slots_[i].state == st::crashed;
  }

 private:
  enum class st { running, finished, crashed };
  struct slot {
    std::thread t;
    std::condition_variable cv;
    st state = st::finished;
    bool free = false;  // runs unscheduled (a crashed thread let go, or past the step bound)
    bool done = false;  // its body returned
  };

  static void hook(const void* addr, atomic_op op) noexcept {
    if (tls_sched_ != nullptr) tls_sched_->on_step(tls_id_, addr, op);
  }

  unsigned crashed_count() const {
    unsigned c = 0;
    for (const auto& s : slots_) c += s.state == st::crashed ? 1 : 0;
    return c;
  }
  std::vector<int> runnable_except(int me) const {
    std::vector<int> v;
    for (unsigned i = 0; i < n_; ++i)
      if (static_cast<int>(i) != me && slots_[i].state == st::running) v.push_back(static_cast<int>(i));
    return v;
  }
  void hand(int next) {
    if (next < 0) {
      main_cv_.notify_one();
      turn_ = -1;
      return;
    }
    turn_ = next;
    slots_[static_cast<std::size_t>(next)].cv.notify_one();
  }
  static const char* op_name(atomic_op op) {
    switch (op) {
      case atomic_op::load: return "load";
      case atomic_op::store: return "store";
      case atomic_op::exchange: return "exchange";
      case atomic_op::compare_exchange: return "cas";
      case atomic_op::fetch_add: return "fetch_add";
      case atomic_op::fetch_sub: return "fetch_sub";
      case atomic_op::fetch_or: return "fetch_or";
      case atomic_op::fetch_and: return "fetch_and";
    }
    return "?";
  }
  std::string describe(const void* addr) const {
    const char* a = static_cast<const char*>(addr);
    for (const auto& n : labels_) {
      const char* b = static_cast<const char*>(n.base);
      if (a >= b && a < b + n.size) return n.fn(static_cast<std::size_t>(a - b));
    }
    std::ostringstream os;
    os << addr;
    return os.str();
  }

  void on_step(int me, const void* addr, atomic_op op) {
    std::unique_lock<std::mutex> lk(m_);
    slot& s = slots_[static_cast<std::size_t>(me)];
    if (s.free) {
      // Unscheduled (past the step bound, or a crashed thread let go): a
      // structure that spins for ever here would hang the run, so say so
      // and stop instead.
      if (++free_steps_ > free_step_limit) {
        std::fprintf(stderr, "checker: a thread ran %llu atomic steps unscheduled without finishing: livelock\n",
                     static_cast<unsigned long long>(free_step_limit));
        std::fflush(stderr);
        std::_Exit(3);
      }
      return;
    }
    ++res_.steps;
    if (res_.steps > bounds_.steps) {
      // No progress within the bound: let everyone run unscheduled to the end.
      res_.progress = false;
      for (auto& o : slots_) {
        o.free = true;
        o.cv.notify_one();
      }
      return;
    }
    const bool may_preempt = res_.preemptions < bounds_.preemptions;
    const bool may_crash = crashed_count() < bounds_.crashes;
    const std::vector<int> others = runnable_except(me);
    int next = chooser_->pick_thread(me, others, may_preempt && !others.empty(), may_crash, res_.steps);
    // Traced when it runs: after the switch, if there is one.
    struct on_run {
      scheduler& self;
      int me;
      const void* addr;
      atomic_op op;
      ~on_run() {
        if (self.tracing_ && !self.slots_[static_cast<std::size_t>(me)].free)
          self.trace_ += "  T" + std::to_string(me) + " " + op_name(op) + " " + self.describe(addr) + "\n";
      }
    } traced{*this, me, addr, op};
    if (next == me) return;
    if (next == crash_choice) {
      s.state = st::crashed;
      res_.crashed[static_cast<std::size_t>(me)] = true;
      if (tracing_) trace_ += "  T" + std::to_string(me) + " CRASHES (stops forever before that step)\n";
      const std::vector<int> rest = runnable_except(me);
      next = rest.empty() ? -1 : chooser_->pick_thread(-1, rest, false, false, res_.steps);
    } else {
      ++res_.preemptions;
      if (tracing_) trace_ += "  -- preempted: T" + std::to_string(me) + " -> T" + std::to_string(next) + "\n";
    }
    hand(next);
    s.cv.wait(lk, [&] { return turn_ == me || s.free; });
  }

  void worker(int me) {
    tls_id_ = me;
    std::uint64_t seen = 0;
    slot& s = slots_[static_cast<std::size_t>(me)];
    std::unique_lock<std::mutex> lk(m_);
    for (;;) {
      s.cv.wait(lk, [&] { return quit_ || (epoch_ != seen && bodies_ != nullptr && (turn_ == me || s.free)); });
      if (quit_) return;
      seen = epoch_;
      const std::function<void()>& body = (*bodies_)[static_cast<std::size_t>(me)];
      lk.unlock();
      tls_sched_ = this;
      body();
      tls_sched_ = nullptr;
      lk.lock();
      const bool was_free = s.free;
      if (s.state == st::running) s.state = st::finished;
      s.done = true;
      if (was_free) {
        main_cv_.notify_one();
        continue;
      }
      const std::vector<int> rest = runnable_except(me);
      hand(rest.empty() ? -1 : chooser_->pick_thread(-1, rest, false, false, res_.steps));
      if (rest.empty()) main_cv_.notify_one();
    }
  }

  unsigned n_;
  std::vector<slot> slots_;
  std::mutex m_;
  std::condition_variable main_cv_;
  int turn_ = -1;
  std::uint64_t epoch_ = 0;
  bool quit_ = false;
  const std::vector<std::function<void()>>* bodies_ = nullptr;
  chooser* chooser_ = nullptr;
  bounds bounds_;
  outcome res_;
  static constexpr std::uint64_t free_step_limit = 100000000;
  std::uint64_t free_steps_ = 0;  // unscheduled steps of this execution
  bool tracing_ = false;
  std::string trace_;
  struct label_t {
    const void* base;
    std::size_t size;
    std::function<std::string(std::size_t)> fn;
  };
  std::vector<label_t> labels_;
  static inline thread_local int tls_id_ = -1;
  static inline thread_local scheduler* tls_sched_ = nullptr;
};

}  // namespace tgcheck

#endif
