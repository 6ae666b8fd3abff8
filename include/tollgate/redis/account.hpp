// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/account.hpp: an account whose state lives in Redis, shared by every
// process and host that names it, generic over the user's executor: a
// callable `reply(const std::vector<std::string>& argv)` that sends one
// command and returns its reply (or a reply of kind error when the server
// cannot be reached or does not answer within the caller's timeout). The
// library opens no socket.
//
// Contract. try_admit decides every dimension at once, in one script call
// (redis/script.hpp), at the server's time. The stateless part (tokens,
// worst-case money, `never` for a request no state could admit) is
// account_policy::assess, as in the in-process account, and costs no call.
// A lease's settle, settle_rejected or drop never blocks and makes no call: it
// is queued and carried by the next call of the same account object (admit,
// remaining, flush; at most max_queued_per_call per call, the rest by the next;
// an admission first flushes a charge past a reservation queued beyond that).
// Until then what it frees stays counted, so capacity comes back late, never
// early; a queued charge lands at the carrying call's time (later, so it stays
// in the window longer). A process that never calls again gives its slots back
// at the leases' deadlines (lease_timeout); its reservations stay counted as a
// dropped lease's do. So do those of a lease settled after its deadline (a
// request longer than lease_timeout): the lease set no longer holds it, so its
// unused tokens are not refunded and its money stays committed at the worst
// case, for good (the safe side; the in-process account returns both at any
// time). Set lease_timeout above the longest request.
// Faults: a call that fails (error reply, garbage, the executor's timeout:
// Redis unreachable, slow past the caller's timeout, or erroring) is, by
// default, a refusal with outcome::server_error or outcome::garbage (fail
// closed: decision wait 0, reason busy). With options::on_fault =
// fault_mode::local_share the account decides instead, for
// options::fallback_for after each failed call (then Redis is tried again),
// in a local in-process account holding options::share_percent of each
// limit (rounded down; a limit that rounds to 0 leaves no fallback), outcome
// local. A budget always fails closed: with a budget configured there is no
// fallback. Bound: while hosts are in fallback, a window admits at most the
// limit (through Redis) plus share_percent of it per host in fallback (its
// local admissions, unknown to Redis, also count against it for a window
// after Redis is back); with share_percent = 100 / hosts, a fleet wholly cut
// off from Redis keeps the limit. A local lease settles into the local
// account. In every mode the failed call's queued settlements stay queued
// and are sent again (a release, a refund and a money return apply once,
// through the lease's record, and only in the epoch that made the lease: a
// settlement queued before a state loss frees nothing of the next epoch,
// whose ids start again at 1; a charge for tokens used beyond the
// reservation may apply twice, the safe side). A call that timed out may
// have been applied: it is treated as admitted and dropped (its reservation
// stays until its lease deadline, never less), whatever the mode. NOSCRIPT (SCRIPT FLUSH, a new server) is
// answered by sending the EVAL form, which loads the body again; with
// options::functions a missing function (FUNCTION FLUSH, a new server) by
// FUNCTION LOAD REPLACE and the same FCALL. A lease must not outlive its
// account; an exception from the executor leaves the account as it was (the
// queue is kept, less chunk returns: redis/chunk.hpp) and reaches the caller.
// Threads: one account object is used by one thread at a time (its queue is
// not shared; two threads calling one object at once corrupt its memory:
// undefined behaviour, no lock guards it); several threads or processes each
// make their own object on the same name and share the state in Redis.
// Chunked mode (options::chunk_parts): one call per chunk of window units
// leased to this object; see redis/chunk.hpp, which states its bounds.
// Test mode (options::test_mode) sends a supplied `now`, which the script
// honours only for an account created in test mode (and then sets no key
// expiry); an account not in test mode never sends one.
#ifndef TOLLGATE_REDIS_ACCOUNT_HPP
#define TOLLGATE_REDIS_ACCOUNT_HPP

#include <tollgate/config.hpp>
#include <tollgate/account.hpp>
#include <tollgate/account/config.hpp>
#include <tollgate/account/pause.hpp>
#include <tollgate/account/policy.hpp>
#include <tollgate/cost.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/http.hpp>
#include <tollgate/money.hpp>
#include <tollgate/redis/chunk_calls.hpp>
#include <tollgate/redis/fallback.hpp>
#include <tollgate/redis/feedback.hpp>
#include <tollgate/redis/layout.hpp>
#include <tollgate/redis/lease.hpp>
#include <tollgate/redis/options.hpp>
#include <tollgate/redis/outcome.hpp>
#include <tollgate/redis/protocol.hpp>
#include <tollgate/redis/wait_spread.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {

template <class Executor, class Currency>
class basic_account {
 public:
  using config_type = basic_account_config<Currency>;
  using lease_type = lease<Executor, Currency>;
  using amount = money<Currency>;

  struct admission {
    decision d = decision::refuse(reason::misconfigured);
    dimension_set refused;
    std::uint64_t tokens = 0;
    amount worst_case;
    lease_type lease;
    outcome how = outcome::ok;
    std::int64_t server_now_us = 0;  // the time the script decided at (0 when it did not answer)
    explicit operator bool() const noexcept { return d.admitted(); }
  };
  struct remaining_view {
    outcome how = outcome::ok;
    peek_reply values;
  };

  // Throws layout_error for a configuration the script cannot hold (see
  // layout.hpp). Makes no call.
  basic_account(std::string_view name, const config_type& c, Executor ex, options o = {})
      : cfg_(c), layout_(make_layout(name, c)), ex_(std::move(ex)), opt_(o),
        rules_(account_policy::admission_rules<Currency>::of(c)), sizes_(chunk_sizes_of(layout_, o.chunk_parts)) {
    if (o.chunk_parts != 0) chunk_check(layout_, sizes_);
    if (o.on_fault == fault_mode::local_share) local_cfg_ = detail_fallback::local_share(c, o.share_percent);
  }
  basic_account(const basic_account&) = delete;
  basic_account& operator=(const basic_account&) = delete;
  ~basic_account() = default;  // queued settlements not yet carried are left to the leases' deadlines

  const config_type& config() const noexcept { return cfg_; }
  const layout& state_layout() const noexcept { return layout_; }
  std::size_t queued_count() const noexcept { return queue_.size(); }
  const std::vector<queued>& queued_settlements() const noexcept { return queue_; }  // in the order they ride
  // Chunked mode (redis/chunk.hpp): the sizes asked for, the chunk held, and
  // its leftovers queued for the next call (no call now).
  const chunk_sizes& chunk_size() const noexcept { return sizes_; }
  const held_chunk& chunk() const noexcept { return chunk_; }
  void release_chunk() { detail_chunk::calls::release(*this); }
  // The local fallback's configuration (empty when there is none: fail
  // closed, a budget, a share that leaves a limit at 0).
  const std::optional<config_type>& fallback_config() const noexcept { return local_cfg_; }
  // Whether decisions are local now (a call failed less than fallback_for ago).
  bool in_fallback(std::optional<nanoseconds> now = std::nullopt) const {
    return local_cfg_ && fault_until_ && clock_now(now) < *fault_until_;
  }

  // Creates the account's epoch if it has none. fresh: the caller states that
  // nothing ran on this account in the last window (no hold). In test mode
  // `origin_us` is the epoch's origin. Against an epoch made with other
  // window widths: outcome::other_configuration (layout.hpp).
  // Deployment: create(true) is a first-deployment step, run once by an
  // operator, never at every process start. A Redis that lost its data (a
  // restart without persistence, a failover) looks exactly like one never
  // used (no epoch), so a create(true) at each start after such a loss would
  // skip the state-loss hold and admit a second window's worth beside what
  // the lost state still counted. A process's start calls create(false), or
  // nothing: the first call on a missing epoch starts a held one itself.
  outcome create(bool fresh, std::optional<std::int64_t> origin_us = std::nullopt) {
    call_args a;
    a.what = op::init;
    a.now_us = opt_.test_mode ? std::optional<std::int64_t>(origin_us.value_or(0)) : std::nullopt;
    a.extra = {fresh ? "1" : "0", opt_.test_mode ? "1" : "0"};
    call_reply r;
    return simple(a, r, false);
  }

  // In test mode a `now` is needed: outcome::bad_call, without a call.
  admission try_admit(const request& req) {
    return opt_.test_mode ? refused(outcome::bad_call) : admit(req, std::nullopt, std::nullopt);
  }
  // Test mode only: decides at `now` (an account not in test mode refuses:
  // outcome::bad_call, without a call).
  admission try_admit(const request& req, nanoseconds now) {
    if (!opt_.test_mode) return refused(outcome::bad_call);
    return admit(req, to_us(now), now);
  }

  // Sends the queued settlements now. True when nothing is left queued.
  bool flush(std::optional<nanoseconds> now = std::nullopt) {
    while (!queue_.empty()) {
      call_args a;
      a.what = op::flush;
      if (!stamp(a, now)) return false;
      call_reply r;
      if (simple(a, r, true) != outcome::ok) return false;
    }
    return true;
  }

  // A server's answer: pauses (the whole fleet) or stops the account by the
  // rule of account/pause.hpp, with the limiters' own waits read from Redis.
  // Under server_model::learn a rate 429 also teaches the fleet (redis/feedback.hpp).
  outcome on_response(const error_info& e, std::optional<nanoseconds> hint, std::optional<nanoseconds> now = std::nullopt) {
    return detail_feedback::calls::on_response(*this, e, hint, now);
  }
  // Lifts a stop (and this object's fallback's, whether Redis answers or not).
  outcome resume(std::optional<nanoseconds> now = std::nullopt) {
    if (local_) local_->resume();
    const outcome o = control({"resume"}, now);
    if (o == outcome::ok) seen_.stopped = false;
    return o;
  }
  outcome clear_pause(std::optional<nanoseconds> now = std::nullopt) {
    if (local_) local_->clear_pause();
    const outcome o = control({"clear_pause"}, now);
    if (o == outcome::ok) seen_.paused_until.reset();
    return o;
  }
  // After lost state: what the budget has committed and spent (from the
  // caller's own records, or a snapshot), which lifts the budget's hold.
  outcome restore_budget(amount committed, amount spent, std::optional<nanoseconds> now = std::nullopt) {
    return control({"restore_budget", std::to_string(clampm(committed.nanos())), std::to_string(clampm(spent.nanos()))},
                   now);
  }

  // What each dimension has left (carries the queue).
  remaining_view remaining(std::optional<nanoseconds> now = std::nullopt) {
    remaining_view v;
    call_args a;
    a.what = op::peek;
    if (!stamp(a, now)) {
      v.how = outcome::bad_call;
      return v;
    }
    std::vector<std::string> argv = words(a, true);
    reply rp = send(argv);
    call_status st = decode_peek(rp, v.values);
    if (st == call_status::noscript) {
      rp = resend(argv);
      st = decode_peek(rp, v.values);
    }
    if (st == call_status::ok) carried(true);
    else forget_returns();
    // The spaced token bucket admits one request at a time: what it has left
    // is a request's worth (max_request_tokens) or nothing, as in-process
    // (learn's: the script says it, by phase).
    if (st == call_status::ok && layout_.b[1].per_us > 0 && !layout_.learn.on && v.values.available[1])
      v.values.available[1] = *v.values.available[1] > 0 ? cfg_.max_request_tokens : 0;
    v.how = st == call_status::ok ? outcome::ok : st == call_status::garbage ? outcome::garbage : outcome::server_error;
    if (st == call_status::garbage)
      if (auto c = decode_refusal(rp)) v.how = how_of(*c);
    return v;
  }

 private:
  friend lease_type;
  friend struct detail_chunk::calls;
  friend struct detail_fallback::local_calls;
  friend struct detail_feedback::calls;
  void forget_returns() { detail_chunk::calls::forget(*this); }
  using local_account = tollgate::account<steady_clock, Currency>;
  void enqueue(const queued& q) { queue_.push_back(q); owed_ += detail_chunk::calls::owes(q); }
  // A chunk's return rides on the very next call, ahead of the queue.
  void return_front(const queued& q) {
    queue_.insert(queue_.begin(), q);
    back_ += q.refund_tokens; owed_ += detail_chunk::calls::owes(q);
  }

  // The fallback's limits: share_percent of each, rounded down; no budget
  // (budgets fail closed), so none when the account has one.
  // The fallback's clock: the supplied time in test mode (the latest one for
  // a settlement, which has none), else the steady clock.
  nanoseconds clock_now(std::optional<nanoseconds> now) const {
    if (now) return *now;
    return opt_.test_mode ? last_now_ : steady_clock::now();
  }
  nanoseconds local_now() const { return clock_now(std::nullopt); }
  void note_now(std::optional<nanoseconds> now) {
    if (now && *now > last_now_) last_now_ = *now;
  }
  bool admit_local(const request& req, admission& a, nanoseconds now) {
    return detail_fallback::local_calls::admit(*this, req, a, now);
  }

  static std::int64_t to_us(nanoseconds now) noexcept { return detail_protocol::to_us(now); }
  static nanoseconds us(std::int64_t v) noexcept { return detail_protocol::from_us(v); }
  static std::int64_t clampm(std::int64_t v) noexcept { return detail_protocol::clamp_money(v); }

  bool stamp(call_args& a, std::optional<nanoseconds> now) const {
    if (opt_.test_mode != now.has_value()) return false;
    if (now) a.now_us = to_us(*now);
    return true;
  }
  std::vector<std::string> words(const call_args& a, bool carry) {
    const std::size_t n = carry ? (queue_.size() < max_queued_per_call ? queue_.size() : max_queued_per_call) : 0;
    sent_ = n;
    if (opt_.functions) return build_fcall(layout_, a, queue_.data(), n);
    return build_call(layout_, a, queue_.data(), n, sha_);
  }
  // An exception from the executor forgets the chunk returns the call carried.
  // Under learn a relearn answer is handled there (redis/feedback.hpp).
  reply send(const std::vector<std::string>& argv) { return detail_feedback::calls::send(*this, argv); }
  // After NOSCRIPT: the EVAL form (loads the body), then the SHA is learnt
  // again; for a function, FUNCTION LOAD and the same FCALL.
  reply resend(std::vector<std::string>& argv) {
    if (opt_.functions) {
      (void)ex_(build_function_load());
      return send(argv);
    }
    argv[0] = "EVAL";
    argv[1] = std::string(script);
    sha_.clear();
    reply r = send(argv);
    learn_sha();
    return r;
  }
  void learn_sha() {  // through send: an exception forgets the returns an EVAL just applied
    const reply r = send(build_script_load());
    if (r.type == reply::kind::string && r.str.size() == 40) sha_ = r.str;
  }
  void carried(bool carry) {
    if (carry && sent_ > 0) queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(sent_));
    sent_ = 0;
    detail_chunk::calls::recount(*this);
  }
  outcome simple(call_args& a, call_reply& r, bool carry) {
    if (sha_.empty() && !opt_.functions) learn_sha();
    std::vector<std::string> argv = words(a, carry);
    call_status st = decode_call(send(argv), r, a.what);
    if (st == call_status::noscript) st = decode_call(resend(argv), r, a.what);
    if (st != call_status::ok) {
      forget_returns();
      return st == call_status::garbage ? outcome::garbage : outcome::server_error;
    }
    carried(carry && r.code != script_code::corrupt && r.code != script_code::bad_call &&
            r.code != script_code::other_configuration);
    return how_of(r.code);
  }
  outcome control(std::vector<std::string> what, std::optional<nanoseconds> now) {
    call_args a;
    a.what = op::control;
    if (!stamp(a, now)) return outcome::bad_call;
    a.extra = std::move(what);
    call_reply r;
    return simple(a, r, true);
  }
  static outcome how_of(script_code c) noexcept {
    switch (c) {
      case script_code::held: return outcome::held;
      case script_code::budget_held: return outcome::budget_held;
      case script_code::corrupt: return outcome::corrupt;
      case script_code::bad_call: return outcome::bad_call;
      case script_code::other_configuration: return outcome::other_configuration;
      case script_code::relearn: return outcome::other_configuration;  // a level this object cannot reach
      default: return outcome::ok;
    }
  }
  admission refused(outcome o) {
    admission a;
    a.how = o;
    a.d = o == outcome::server_error || o == outcome::garbage ? decision::wait(nanoseconds(0), reason::busy)
                                                              : decision::refuse(reason::misconfigured);
    return a;
  }

  admission admit(const request& req, std::optional<std::int64_t> now_us, std::optional<nanoseconds> now) {
    note_now(now);
    admission a;
    a.tokens = account_policy::assess<Currency>(req, rules_, a.refused, a.worst_case);
    if (!a.refused.empty()) {
      a.d = decision::refuse(reason::exceeds_capacity);
      return a;
    }
    if (sizes_.on) detail_chunk::calls::carry_back(*this, now_us);
    const nanoseconds sent = opt_.test_mode ? nanoseconds(0) : steady_clock::now();
    if (sizes_.on && owed_ == 0 && detail_chunk::calls::local(*this, req, a, now_us, sent)) return a;
    if (in_fallback(now) && admit_local(req, a, clock_now(now))) return a;
    call_args c;
    c.what = sizes_.on ? op::chunk : op::admit;
    c.now_us = now_us;
    c.tokens = a.tokens;
    c.worst_nanos = a.worst_case.nanos();
    call_reply r;
    outcome o;
    if (sizes_.on) {
      o = detail_chunk::calls::take(*this, c, r);
      if (o == outcome::ok && chunk_.live) {
        fault_until_.reset();
        seen_.stopped = false;
        detail_chunk::calls::spend(*this, req, a, now_us, chunk_.sent);
        return a;
      }
    } else {
      o = detail_chunk::calls::carry_owed(*this, c, r);  // an overrun out of this call's reach: first
      if (o == outcome::ok) o = simple(c, r, true);
    }
    a.how = o;
    if (o == outcome::server_error || o == outcome::garbage) {
      if (local_cfg_) {
        const nanoseconds t = clock_now(now);
        fault_until_ = t + opt_.fallback_for;
        if (admit_local(req, a, t)) return a;
      }
      admission f = refused(o);
      f.tokens = a.tokens;
      f.worst_case = a.worst_case;
      return f;
    }
    fault_until_.reset();  // Redis answered: its decisions rule again
    seen_.note(r, clock_now(now));
    a.server_now_us = r.now_us;
    a.refused.bits = r.refused_bits;
    const nanoseconds wait = spread(r.wait_us);  // wait and held only
    switch (r.code) {
      case script_code::admitted: {
        a.d = decision::admit();
        lease_type& l = a.lease;
        l.acc_ = this;
        l.id_ = r.lease;
        l.epoch_ = r.epoch;
        l.tokens_ = a.tokens;
        l.money_ = a.worst_case.nanos();
        l.tpm_slot_ = r.tpm_slot;
        l.tpd_slot_ = r.tpd_slot;
        l.refund_ = cfg_.refund_unused_tokens;
        l.model_ = req.model;
        break;
      }
      case script_code::wait: a.d = decision::wait(wait); break;
      case script_code::busy: a.d = decision::wait(nanoseconds(0), reason::busy); break;
      case script_code::never: a.d = decision::refuse(reason::exceeds_capacity); break;
      case script_code::held: a.d = decision::wait(wait); break;
      default: a.d = decision::refuse(reason::misconfigured); break;
    }
    return a;
  }

  config_type cfg_;
  layout layout_;
  Executor ex_;
  options opt_;
  account_policy::admission_rules<Currency> rules_;
  std::vector<queued> queue_;
  std::size_t sent_ = 0;
  std::string sha_;
  std::optional<config_type> local_cfg_;  // the fallback's configuration, if any
  std::optional<local_account> local_;    // made at the first failed call
  detail_fallback::seen_control seen_;    // pause and stop, for the fallback
  std::optional<nanoseconds> fault_until_;
  nanoseconds last_now_{0};
  chunk_sizes sizes_;
  held_chunk chunk_;
  std::uint64_t back_ = 0;  // tokens of the chunk returns queued (redis/chunk.hpp)
  std::size_t owed_ = 0;    // queued charges past a reservation: no chunk spends while one waits
  wait_spreader spread_;
  nanoseconds spread(std::int64_t us_) { return us(opt_.test_mode ? us_ : spread_.spread(us_, opt_.wait_spread_percent)); }
};
template <class Executor>
using account = basic_account<Executor, usd_tag>;

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_ACCOUNT_HPP
