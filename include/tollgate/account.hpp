// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account.hpp: every limit of one API account, taken all at once or not at
// all: concurrency, requests per minute, tokens per minute, tokens per day,
// and an optional budget in dollars or yuan.
//
// Currency. account<Clock> budgets in dollars (account_config);
// account<Clock, cny_tag> in yuan (cny_account_config), pricing every
// request from the model's CNY list (a model without one cannot be admitted
// against a yuan budget). Amounts are money<Currency> throughout, so a dollar
// amount given to a yuan account does not compile.
//
// Kimi's limits are per organization, shared by all models and keys, so make
// one account object per organization and send every request through it.
//
// Admission. try_admit(request, now) reserves a concurrency slot, 1 request,
// prompt + max_tokens tokens in TPM and TPD (Kimi counts max_tokens at
// admission; without one, the model's default output cap, else the context
// window minus the prompt) and the request's worst-case cost (cost.hpp: with
// the cache writes it declares, else the largest it can make), which bounds
// what settle charges for any usage within the request. In all
// dimensions or in none: a partial success is rolled back, so under
// concurrency a request may be refused falsely but nothing is ever
// over-admitted. A refusal names every dimension that refused, and its wait is
// the largest of theirs; it is `never` when the request can never fit
// (tokens > the limit or above max_request_tokens under a margin policy,
// prompt + max_tokens > the context window, worst-case cost > the budget).
// The wait keeps the decision contract for the whole account, with per-thread
// credit on or off: the same request from the same thread is refused at
// now + wait - 1 ns unless capacity was given back meanwhile (a refund, a
// thread's credit given back, set_limits), and admitted at now + wait unless
// capacity was taken meanwhile (an admission, a debt, a pause). A refusal
// that also names concurrency or the budget needs a permit or money back as
// well (with nothing else waiting, its wait is zero, reason::busy). While
// paused, the wait is the later of the pause's end and the other dimensions'.
//
// Server model. Kimi does not document how it counts. `server_model` says
// which model to stay inside; each dimension then uses the policy the
// compliance tests found safe against it (README, "Which policy stays inside
// which server?"):
//   fixed_window, sliding_log, token_bucket -> strict sliding window at L
//   window_counter, gcra, unknown (default) -> one request at a time, each
//       spaced by its own size, at L - m per window (m = 1 for requests,
//       plus 2 ms between requests; m = max_request_tokens for tokens, over
//       the window plus 2 ms)
// `unknown` is safe against all five models (the margin costs m per window)
// when the server sees requests at the times they were admitted, or up to
// 1 ms later. Delivery jitter J breaks every policy against some model: a
// request sent just before a window boundary and delivered after it counts
// in the next window. Set request_window and token_window to W + J (the
// server's window plus the largest delay between admission and the server's
// clock) to keep the strict policy safe against fixed window, sliding log and
// token bucket, and the margin policy against all but a GCRA token limit (a
// 1-token request W / (L - m) before the next may arrive closer than W / L).
// The daily limit is a strict rolling 24 h window under every model (safe
// whatever time zone the server's day uses, and against fixed-window, log and
// bucket counting; spacing a day's tokens over the day would cost hours), or a
// per-day quota with `calendar_day`.
//
// Settling. The lease returned with an admission releases the concurrency
// slot when settled or destroyed. settle(usage) charges the exact cost and,
// when refund_unused_tokens is set (OpenAI-style accounting; off for Kimi,
// whose server already counted max_tokens), gives back unused tokens; usage
// above the reservation is charged as debt that later admissions wait out.
// A 429 (not billed by Kimi) frees the money and keeps the tokens counted; a
// 5xx or timeout keeps the tokens and charges nothing; a lease dropped
// without settling keeps its reservations (the safe side).
//
// Hung requests. A concurrency slot held past lease_timeout is reclaimed
// when the account runs out of slots (stats().reclaimed counts them): a
// one-word-per-slot table records when each lease took its slot, and the
// lease and the reaper race with one CAS, so the unit comes back once. Each
// of the first 16 threads has limit / 16 words of its own (1 to 64), which it
// claims with a plain store (no other thread claims them); beyond those, and
// for other threads, a shared table of twice the concurrency limit. The
// table is scanned at most once per lease_timeout / 16 of time, so a hung
// lease comes back by the first refusal that long after its deadline.
//
// Server feedback. on_response(...) pauses the whole account, under every
// server model and policy alike:
//   RPM 429: for the largest of the server's hint, one emission interval of
//     the request limit (W / L rounded up: RPM 3 means 20 s; under a margin
//     policy the spaced interval in force, 30 s + 2 ms) and the account's own
//     wait for one more request (Kimi says "try again after 1 seconds");
//   TPM 429: the same with the token limit (W / L per token; under a margin
//     policy the interval in force, (W + 2 ms) / (L - m));
//   a rate 429 that names no dimension, or concurrency: as RPM (as TPM
//     without a request limit);
//   TPD 429: until the later of the hint and the local daily reset;
//   overload: for the hint, else 1 s, without counting as a limit.
// A hint counts for at most max_pause (24 h by default; stats().capped_hints
// counts the hints cut). A pause only ever lengthens; clear_pause() ends it.
// A balance/quota error stops the account until resume() (which does not end
// a pause).
//
// Live change. set_limits moves a running account to another tier's limits
// (same dimensions) keeping what it has counted; it is thread-safe with
// admissions, but config() may then be read torn: read it from one thread.
//
// Snapshot. snapshot()/restore() carry what the account has counted across a
// restart, as bytes the caller stores (see the functions).
//
// Concurrency contract. try_admit, settle and on_response are thread-safe
// and lock-free (each dimension is one of the lock-free primitives; the pause
// is one atomic word). Counters are per-thread shards (a plain load and store
// on the hot path for the first 16 threads to count, a relaxed fetch_add on a
// shared shard for the others; detail/shard_counters.hpp) and relaxed
// atomics: exact once threads are joined, approximate while they run. A lease must not outlive
// its account.
//
// Per-thread credit. With limits of 1,024 units and more, each of the first
// 16 threads takes strict-window units and concurrency units a chunk at a
// time (limit / 1024) and spends them without touching shared state: every
// unit is counted before it is spent, and window units only in the slot they
// were counted in, so the bounds above hold exactly. The price is false
// refusals: units one thread holds cannot be admitted by another (at most
// 1.6 % of a window's limit and 3.2 % of the concurrency limit, and a thread
// is never refused for want of its own credit while the window is on its
// slot). remaining() and in_flight() count credit as not in flight. Limits
// below 1,024 have no credit and behave exactly as without it. A refusal gives
// the refused thread's window credit back before it reports a wait (as its
// next attempt would), so the wait is the same with credit as without.
// per_thread_credit = false turns credit off for every limit.
//
// Cost. Spending credit, an admission and its settle take one atomic
// read-modify-write (giving the slot-table word back; none with lease_timeout
// zero) and nothing shared; a refill takes one CAS per window and one on the
// permit count. Without credit: five (four with lease_timeout zero, one more
// beyond a thread's own slot words). bench/ has the ratios.
#ifndef TOLLGATE_ACCOUNT_HPP
#define TOLLGATE_ACCOUNT_HPP

#include <tollgate/config.hpp>
#include <tollgate/budget.hpp>
#include <tollgate/calendar_quota.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/concurrency.hpp>
#include <tollgate/cost.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/detail/shard_counters.hpp>
#include <tollgate/error.hpp>
#include <tollgate/http.hpp>
#include <tollgate/models.hpp>
#include <tollgate/sliding_window.hpp>
#include <tollgate/tiers.hpp>
#include <tollgate/token_bucket.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

namespace detail {
constexpr std::uint64_t fnv1a(std::string_view s) noexcept {
  std::uint64_t h = 1469598103934665603ULL;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h;
}
// Little-endian fixed-width encoding for snapshots.
struct byte_writer {
  std::string out;
  void raw(const char* p, std::size_t n) { out.append(p, n); }
  void u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  }
  std::uint64_t checksum() const noexcept { return fnv1a(out); }
};
struct byte_reader {
  std::string_view in;
  std::size_t pos = 0;
  bool skip(std::size_t n) noexcept {
    if (in.size() - pos < n) return false;
    pos += n;
    return true;
  }
  bool u64(std::uint64_t& v) noexcept {
    if (in.size() - pos < 8) return false;
    v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[pos + static_cast<std::size_t>(i)])) << (8 * i);
    pos += 8;
    return true;
  }
  std::size_t left() const noexcept { return in.size() - pos; }
};
}  // namespace detail

enum class server_model : unsigned char { unknown, fixed_window, sliding_log, window_counter, token_bucket, gcra };

constexpr const char* to_string(server_model m) noexcept {
  switch (m) {
    case server_model::unknown: return "unknown";
    case server_model::fixed_window: return "fixed window";
    case server_model::sliding_log: return "sliding log";
    case server_model::window_counter: return "sliding-window counter";
    case server_model::token_bucket: return "token bucket";
    case server_model::gcra: return "GCRA burst 1";
  }
  return "?";
}

// The dimensions a decision can name, as bits.
enum class dimension : std::uint16_t {
  concurrency = 1 << 0,
  rpm = 1 << 1,
  tpm = 1 << 2,
  tpd = 1 << 3,
  budget = 1 << 4,
  context = 1 << 5,      // prompt + max_tokens beyond the model's context window
  request_size = 1 << 6,  // above max_request_tokens, or no way to bound the output
  paused = 1 << 7,       // after a server 429 or overload
  stopped = 1 << 8,      // after a quota/balance error, until resume()
};

struct dimension_set {
  std::uint16_t bits = 0;
  constexpr bool has(dimension d) const noexcept { return (bits & static_cast<std::uint16_t>(d)) != 0; }
  constexpr void add(dimension d) noexcept { bits = static_cast<std::uint16_t>(bits | static_cast<std::uint16_t>(d)); }
  constexpr bool empty() const noexcept { return bits == 0; }
};

// The account's limits. Currency is the budget's: usd_tag (account_config)
// or cny_tag (cny_account_config); the account computes costs from the
// model's price list in that currency.
template <class Currency = usd_tag>
struct basic_account_config {
  using currency = Currency;
  limit concurrency = limit::unknown();  // unknown or unlimited: not enforced
  limit rpm = limit::unknown();
  limit tpm = limit::unknown();
  limit tpd = limit::unknown();
  server_model model = server_model::unknown;
  bool calendar_day = false;                     // TPD per calendar day at utc_offset, instead of rolling 24 h
  std::chrono::minutes utc_offset{0};
  bool refund_unused_tokens = false;             // Kimi: false (the server counted max_tokens)
  std::uint64_t max_request_tokens = 65536;      // m: the largest prompt + max_tokens, the margin of token limits
  std::optional<money<Currency>> budget;         // a spending limit, if any
  // The windows of the request and token limits: Kimi's are a minute; a
  // gateway may count per second.
  nanoseconds request_window = std::chrono::minutes(1);
  nanoseconds token_window = std::chrono::minutes(1);
  // A concurrency slot held longer than this (a hung request, a holder that
  // vanished) is reclaimed when the account runs out of slots, and counted in
  // stats().reclaimed. Kimi documents requests of up to two hours. Zero:
  // never, and no slot table (two atomic operations fewer per request).
  nanoseconds lease_timeout = std::chrono::hours(2);
  // Per-thread credit (see the header): on, the first 16 threads take window
  // and concurrency units a chunk at a time and spend them without touching
  // shared state; off, every admission takes its units from the shared
  // limiters and no thread ever holds units another could have used. Off
  // suits accounts shared between processes, where a process that dies
  // holding credit would keep it counted. It does not shape the state: a
  // snapshot restores into an account with the switch either way.
  bool per_thread_credit = true;
  // The longest pause a server's hint (Retry-After, "try again after N
  // seconds") can cause; a longer hint is cut to it and counted in
  // stats().capped_hints. 24 hours: no Kimi limit counts over a longer window
  // (the daily one resets within a day in any time zone), so a longer hint is
  // a mistake, and one of year 9999 must not stop the account for centuries.
  // The account's own waits (its windows, the local daily reset) are not
  // capped. Zero: hints never lengthen a pause. Negative: refused.
  nanoseconds max_pause = std::chrono::hours(24);

  static constexpr basic_account_config from_tier(const tier_row& t, server_model m = server_model::unknown) noexcept {
    basic_account_config c;
    c.concurrency = t.concurrency;
    c.rpm = t.rpm;
    c.tpm = t.tpm;
    c.tpd = t.tpd;
    c.model = m;
    return c;
  }
};
using account_config = basic_account_config<usd_tag>;
using cny_account_config = basic_account_config<cny_tag>;

struct request {
  const model_info* model = nullptr;  // for the default output cap, context window and prices
  std::uint64_t prompt_tokens = 0;    // an estimate (estimate.hpp) or the tokenizer endpoint's count
  std::optional<std::uint64_t> max_tokens;
  // The explicit cache writes the request asks for (kimi-k3). Without a
  // declaration the reserved worst case assumes the largest: the whole prompt
  // written at the dearer write price. Declared, it reserves exactly those;
  // a usage that writes more is charged in full and reported as overspend.
  std::optional<cache_writes> planned_cache_writes = std::nullopt;
};

// Per-dimension counters, for metrics.
struct account_stats {
  std::uint64_t admitted = 0, refused = 0;
  std::uint64_t refused_by[9] = {};  // indexed by the bit position of `dimension`
  std::uint64_t tokens_reserved = 0, tokens_used = 0, debt_tokens = 0;
  std::uint64_t reclaimed = 0;  // concurrency slots taken back from leases past lease_timeout
  std::uint64_t capped_hints = 0;  // server hints longer than max_pause, cut to it
  std::int64_t spent_nanos = 0;  // in nano-units of the budget's currency
  // Time callers spent waiting because of each dimension (indexed like
  // refused_by), as reported by the waiting layer (waiting_room) through
  // account::record_wait. A wait caused by several dimensions counts in each.
  std::int64_t waited_ns_by[9] = {};
};

template <class Clock, class Currency>
class account;

// What settling a lease did.
template <class Currency = usd_tag>
struct basic_settle_result {
  money<Currency> cost;              // the exact cost charged (zero when not billed)
  std::int64_t overspend_nanos = 0;  // cost above the money reserved
  std::uint64_t debt_tokens = 0;     // tokens used beyond the reservation
  std::uint64_t refunded_tokens = 0;
};
using settle_result = basic_settle_result<usd_tag>;

template <class Clock = steady_clock, class Currency = usd_tag>
class lease {
 public:
  // User-provided, so that `lease()` runs the member initializers only and
  // does not zero the whole object first (see the fields).
  lease() noexcept {}  // NOLINT(modernize-use-equals-default)
  lease(const lease&) = delete;
  lease& operator=(const lease&) = delete;
  lease(lease&& o) noexcept { take(o); }
  lease& operator=(lease&& o) noexcept {
    if (this != &o) {
      if (acc_) acc_->release_slot(*this);
      take(o);
    }
    return *this;
  }
  // Dropped without settling: the slot is released, the reservations stay
  // (the safe side).
  ~lease() {
    if (acc_) acc_->release_slot(*this);
  }

  explicit operator bool() const noexcept { return acc_ != nullptr; }
  std::uint64_t reserved_tokens() const noexcept { return tokens_; }

  // The response arrived with its usage: charge it exactly.
  basic_settle_result<Currency> settle(const usage& u, nanoseconds now) noexcept;
  // The server answered 429: Kimi does not bill it; the tokens stay counted.
  void settle_rejected(nanoseconds now) noexcept;
  // 5xx, timeout, lost connection without usage: keep the tokens, bill nothing.
  void settle_failed(nanoseconds now) noexcept;
  // A stream cancelled part-way: with the usage known so far (the last usage
  // chunk), exactly as settle; without it, bills the reserved worst case (the
  // server bills what it generated before the cancel, which the caller cannot
  // know) and keeps every reserved token counted, whatever the refund policy.
  // The result's cost is then the reserved worst case (zero without a budget).
  basic_settle_result<Currency> settle_cancelled(const std::optional<usage>& known, nanoseconds now) noexcept;

 private:
  friend class account<Clock, Currency>;
  void take(lease& o) noexcept {
    acc_ = std::exchange(o.acc_, nullptr);
    slot_ = std::exchange(o.slot_, no_slot);
    holds_ = std::exchange(o.holds_, false);
    day_t_ = o.day_t_;
    money_ = o.money_;
    tokens_ = std::exchange(o.tokens_, 0);
    if (slot_ != no_slot) stamp_ = o.stamp_;
    if (acc_) {
      rpm_s_ = o.rpm_s_;
      tpm_s_ = o.tpm_s_;
      tpd_s_ = o.tpd_s_;
      rpm_c_ = o.rpm_c_;
      tpm_c_ = o.tpm_c_;
      model_ = o.model_;
    }
  }
  // The fields without an initializer are written by the admission before
  // anything reads them (once acc_ is set) and
  // copied only then. Initializing them would leave one run of zeros longer
  // than 64 bytes in every admission, which g++ clears with `rep stos`: about
  // 11 ns of start-up per try_admit on the machines we measured.
  static constexpr std::size_t no_slot = static_cast<std::size_t>(-1);
  account<Clock, Currency>* acc_ = nullptr;
  std::size_t slot_ = no_slot;  // its entry in the account's slot table, if any
  std::uint64_t stamp_ = 0;      // what it wrote there (set so an inlined release never reads an unset word)
  bool holds_ = false;           // it holds one concurrency unit
  // The window slots its requests and tokens were counted in (the rest of
  // each window ticket follows from tokens_); for a spaced bucket instead,
  // its ticket's end, with the configuration in *_c_.
  std::uint64_t rpm_s_, tpm_s_, tpd_s_;
  std::uint64_t rpm_c_, tpm_c_;
  quota_ticket day_t_;
  budget_reservation<Currency> money_;
  const model_info* model_;
  std::uint64_t tokens_ = 0;
};

template <class Clock = steady_clock, class Currency = usd_tag>
struct admission {
  tollgate::decision decision = tollgate::decision::refuse(reason::misconfigured);
  dimension_set refused;                   // every dimension that refused
  tollgate::lease<Clock, Currency> lease;  // valid when admitted
  std::uint64_t tokens = 0;                // prompt + max_tokens as reserved (or as it would have been)
  money<Currency> worst_case;              // the money reserved (or that would have been)
  nanoseconds at{0};                       // the `now` the decision was made at
  explicit operator bool() const noexcept { return decision.admitted(); }
};

template <class Clock = steady_clock, class Currency = usd_tag>
class account {
  using window = sliding_window<Clock>;
  using bucket = token_bucket<Clock>;
  using lease_type = lease<Clock, Currency>;
  using admission_type = admission<Clock, Currency>;
  using amount = money<Currency>;

 public:
  using clock = Clock;
  using currency = Currency;
  using config_type = basic_account_config<Currency>;

  // Throws config_error (aborts without exceptions) on an invalid
  // configuration: a margin policy whose margin is not below its limit, a
  // window the primitives refuse, a negative max_pause, or a limit above what
  // its policy can run (see largest_token_limit), which throws with the limit
  // refused and the largest accepted (config_error::values()).
  explicit account(const config_type& c, nanoseconds origin = Clock::now()) {
    error_values v;
    const errc e = init(c, origin, v);
    if (e != errc::ok) detail::fail(e, v);
  }
  // Never throws: on error sets `ec` (and `v`, for a limit too large), and
  // the account refuses every request for good (dimension::stopped,
  // reason::misconfigured; resume() does not lift it).
  account(const config_type& c, nanoseconds origin, errc& ec) noexcept {
    error_values v;
    ec = init_or_stop(c, origin, v);
  }
  account(const config_type& c, nanoseconds origin, errc& ec, error_values& v) noexcept {
    ec = init_or_stop(c, origin, v);
  }

  // The largest token limit (per token_window) the configuration accepts.
  // Under a margin policy (window_counter, gcra, unknown) tokens run through
  // a bucket spaced at (L - m) per W whose emission interval must be held
  // within 0.1 % (token_bucket.hpp): every L - m up to 14,014 per us of W
  // qualifies (about one token per 71.3 ns: 840,840,000 + m per minute, so
  // 840,905,536 with the default m), and a larger limit is refused
  // (errc::rate_too_fine) even where the bucket could run it exactly, so that
  // the accepted limits have no holes. The strict window takes any limit.
  static constexpr std::uint64_t largest_token_limit(const config_type& c) noexcept {
    if (strict_for(c.model) || c.token_window.count() <= 0) return std::numeric_limits<std::uint64_t>::max();
    const std::uint64_t w = static_cast<std::uint64_t>(c.token_window.count());
    return detail::sat_add(detail::mul_div_floor(w, detail::gcra_limits::max_scale * 1001, 1000000), c.max_request_tokens);
  }
  // The largest request limit: under a margin policy the spaced interval adds
  // 2 ms per request to the window, which must fit in 63 bits of nanoseconds
  // (about 4.6 * 10^12 requests per window).
  static constexpr std::uint64_t largest_request_limit(const config_type& c) noexcept {
    if (strict_for(c.model) || c.request_window.count() <= 0) return std::numeric_limits<std::uint64_t>::max();
    const std::uint64_t room =
        static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max() - c.request_window.count());
    return room / 2000000;
  }
  account(const account&) = delete;
  account& operator=(const account&) = delete;

  const config_type& config() const noexcept { return cfg_; }

  admission_type try_admit(const request& r, nanoseconds now) noexcept {
    admission_type a;  // the only object returned, so it is built in place
    a.at = now;
    admit_into(a, r, now);
    return a;
  }
  admission_type try_admit(const request& r) noexcept { return try_admit(r, Clock::now()); }

  // Feeds the server's answer back from its parts: the status, the headers
  // read into a rate_limit_headers, and the body. A success changes nothing.
  void on_response(int status, const rate_limit_headers& h, std::string_view body, nanoseconds now) noexcept {
    on_response(classify(status, body), h.retry_hint(), now);
  }
  // The same from a classified error: `hint` is the header hint
  // (rate_limit_headers::retry_hint()), if any.
  void on_response(const error_info& e, std::optional<nanoseconds> hint, nanoseconds now) noexcept {
    nanoseconds h = hint ? *hint : (e.hint ? *e.hint : nanoseconds(0));
    if (h < nanoseconds(0)) h = nanoseconds(0);
    if (h > cfg_.max_pause &&
        (e.kind == error_kind::concurrency || e.kind == error_kind::rpm || e.kind == error_kind::tpm ||
         e.kind == error_kind::rate_limit || e.kind == error_kind::tpd || e.kind == error_kind::overloaded)) {
      h = cfg_.max_pause;
      capped_hints_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    }
    switch (e.kind) {
      case error_kind::quota:
        // release: pairs with the acquire load in try_admit.
        stopped_.store(true, std::memory_order_release);
        break;
      case error_kind::concurrency:
      case error_kind::rpm:
      case error_kind::tpm:
      case error_kind::rate_limit: {
        nanoseconds own{0};
        if (e.kind != error_kind::tpm) own = own_wait(request_kind, now);
        if (e.kind != error_kind::rpm && (e.kind == error_kind::tpm || !(rpm_w_ || rpm_b_))) {
          const nanoseconds t = own_wait(token_kind, now);
          own = t > own ? t : own;
        }
        pause_for(h > own ? h : own, now);
        break;
      }
      case error_kind::tpd: {
        nanoseconds reset = nanoseconds(0);
        if (day_q_) reset = day_q_->reset_in(now);
        else if (tpd_w_) reset = tpd_w_->empty_in(now);
        else if (tpd_b_) reset = tpd_b_->full_in(now);
        pause_for(h > reset ? h : reset, now);
        break;
      }
      case error_kind::overloaded:
        pause_for(h > nanoseconds(0) ? h : std::chrono::seconds(1), now);
        break;
      default:
        break;
    }
  }

  // Called after a lease gives capacity back (a permit, money): the
  // waiting room uses it to wake its head waiter. Set it before the account
  // is shared; nullptr removes it.
  void set_release_hook(void (*fn)(void*), void* ctx) noexcept {
    hook_ctx_.store(ctx, std::memory_order_relaxed);  // relaxed: published by the release store below
    hook_fn_.store(fn, std::memory_order_release);    // release: pairs with the acquire in notify_release
  }

  // Lifts a stop caused by a quota/balance error (after recharging). It does
  // not end a pause: clear_pause() does.
  void resume() noexcept {
    if (!misconfigured_) stopped_.store(false, std::memory_order_release);  // release: as in on_response
  }
  // Ends a pause now (a hint the caller knows to be wrong, an operator's
  // override). Counts and stops stay.
  void clear_pause() noexcept {
    // relaxed: a lone time value, as in pause_for; a pause_for racing this
    // may land after it and stand.
    pause_until_.store(std::numeric_limits<std::int64_t>::min(), std::memory_order_relaxed);
  }
  bool stopped() const noexcept { return stopped_.load(std::memory_order_acquire); }
  nanoseconds paused_until() const noexcept { return nanoseconds(pause_until_.load(std::memory_order_relaxed)); }

  // Leases holding a concurrency unit (units held as threads' credit are not in flight).
  std::uint64_t in_flight() const noexcept {
    if (!conc_) return 0;
    const std::uint64_t u = conc_->in_use(), c = units_held_as_credit();
    return u > c ? u - c : 0;
  }
  std::optional<amount> budget_remaining() const noexcept {
    return budget_ ? std::optional<amount>(budget_->remaining()) : std::nullopt;
  }

  // Adds time a caller spent waiting because of the dimensions in `s` (each
  // counts it): the waiting room reports its sleeps here, and so can a
  // caller's own waiting loop. For metrics (stats().waited_ns_by).
  void record_wait(dimension_set s, nanoseconds d) noexcept {
    if (d <= nanoseconds(0)) return;
    for (unsigned i = 0; i < 9; ++i)
      if (s.bits & (1u << i)) waited_ns_[i].fetch_add(d.count(), std::memory_order_relaxed);  // relaxed: a statistic
  }
  account_stats stats() const noexcept {
    account_stats s;
    s.admitted = stats_.sum(st_admitted);
    s.refused = stats_.sum(st_refused);
    for (unsigned i = 0; i < 9; ++i) s.refused_by[i] = stats_.sum(st_refused_by + i);
    s.tokens_reserved = stats_.sum(st_reserved);
    s.tokens_used = stats_.sum(st_used);
    s.debt_tokens = stats_.sum(st_debt);
    // relaxed: statistics, see the contract.
    s.reclaimed = stats_reclaimed_.load(std::memory_order_relaxed);
    s.capped_hints = capped_hints_.load(std::memory_order_relaxed);
    for (unsigned i = 0; i < 9; ++i) s.waited_ns_by[i] = waited_ns_[i].load(std::memory_order_relaxed);
    s.spent_nanos = budget_ ? budget_->spent().nanos() : 0;
    return s;
  }
  // What each dimension could still admit at `now` (peek; consumes nothing).
  // Dimensions not enforced report nothing.
  struct remaining_view {
    std::optional<std::uint64_t> concurrency, requests, tokens_minute, tokens_day;
    std::optional<amount> budget;
    nanoseconds paused_for{0};  // time left of a pause
    bool stopped = false;
    // When each time-based dimension is back to its full limit (its reset).
    nanoseconds requests_reset_in{0}, tokens_minute_reset_in{0}, tokens_day_reset_in{0};
  };
  remaining_view remaining(nanoseconds now) const noexcept {
    remaining_view v;
    if (conc_) {
      const std::uint64_t l = conc_->limit(), f = in_flight();
      v.concurrency = l > f ? l - f : 0;
    }
    // Units counted in a window but held as a thread's credit can still be
    // admitted (by that thread): they count as remaining.
    if (rpm_w_) v.requests = rpm_w_->available(now) + credit_held(credit_rpm, now) * rpm_w_->unit();
    if (rpm_b_) v.requests = rpm_b_->available(now);
    if (tpm_w_) v.tokens_minute = tpm_w_->available(now) + credit_held(credit_tpm, now) * tpm_w_->unit();
    if (tpm_b_) v.tokens_minute = tpm_b_->available(now) > 0 ? cfg_.max_request_tokens : 0;  // one request at a time
    if (tpd_w_) v.tokens_day = tpd_w_->available(now) + credit_held(credit_tpd, now) * tpd_w_->unit();
    if (day_q_) v.tokens_day = day_q_->available(now);
    if (budget_) v.budget = budget_->remaining();
    if (rpm_w_) v.requests_reset_in = rpm_w_->empty_in(now);
    if (rpm_b_) v.requests_reset_in = rpm_b_->full_in(now);
    if (tpm_w_) v.tokens_minute_reset_in = tpm_w_->empty_in(now);
    if (tpm_b_) v.tokens_minute_reset_in = tpm_b_->full_in(now);
    if (tpd_w_) v.tokens_day_reset_in = tpd_w_->empty_in(now);
    if (day_q_) v.tokens_day_reset_in = day_q_->reset_in(now);
    v.paused_for = time_left(pause_until_.load(std::memory_order_relaxed), now);  // relaxed: as in try_admit
    v.stopped = stopped();
    return v;
  }

  // Moves the account to new limits (an upgrade after a recharge, say)
  // without losing what it has counted: windows keep their counts, buckets
  // what is owed, permits stay held. Only limits the account already
  // enforces can change (a dimension cannot appear or disappear live), and the
  // server model stays. Returns the first error; dimensions before it have
  // changed.
  [[nodiscard]] errc set_limits(const tier_row& t, nanoseconds now) noexcept {
    auto need = [](bool have, const limit& l) { return have != l.is_finite(); };
    if (need(conc_.has_value(), t.concurrency) || need(rpm_w_ || rpm_b_, t.rpm) || need(tpm_w_ || tpm_b_, t.tpm) ||
        need(tpd_w_ || day_q_, t.tpd))
      return errc::zero_count;  // a dimension would appear or disappear
    errc e = errc::ok;
    error_values ignored;
    if ((e = check_limits(cfg_, t.rpm, t.tpm, ignored)) != errc::ok) return e;
    if (conc_ && (e = conc_->set_limit(*t.concurrency.value())) != errc::ok) return e;
    update_chunks();  // before any later error: credit taken under the old limit goes back
    if (rpm_w_ && (e = rpm_w_->set_limit(*t.rpm.value())) != errc::ok) return e;
    if (rpm_b_) {
      const std::uint64_t l = *t.rpm.value() > 1 ? *t.rpm.value() - 1 : 1;
      if ((e = rpm_b_->set_rate(rate(l, cfg_.request_window + std::chrono::milliseconds(2) * static_cast<std::int64_t>(l)), now)) != errc::ok)
        return e;
    }
    if (tpm_w_ && (e = tpm_w_->set_limit(*t.tpm.value())) != errc::ok) return e;
    if (tpm_b_) {
      if (cfg_.max_request_tokens >= *t.tpm.value()) return errc::too_large;
      if ((e = tpm_b_->set_rate(rate(*t.tpm.value() - cfg_.max_request_tokens, margin_window(cfg_.token_window)), now)) !=
          errc::ok)
        return e;
    }
    if (tpd_w_ && (e = tpd_w_->set_limit(*t.tpd.value())) != errc::ok) return e;
    if (day_q_ && (e = day_q_->set_limit(*t.tpd.value())) != errc::ok) return e;
    cfg_.concurrency = t.concurrency;
    cfg_.rpm = t.rpm;
    cfg_.tpm = t.tpm;
    cfg_.tpd = t.tpd;
    update_chunks();
    return errc::ok;
  }

  // Snapshot and restore: what the account has counted (window contents,
  // what buckets owe, the calendar day's usage, the budget, a pause or a
  // stop) as a byte string, so a restart does not reset the daily limit or
  // the budget. No I/O: the caller stores the bytes. Permits in flight are
  // not kept (their money stays committed: the safe side).
  //
  // Time. Each count is stored with the time from the snapshot's `now`
  // until this account would have dropped it, and restore() keeps it that
  // long minus the wall-clock time between snapshot and restore (pass
  // system_clock::now() as `wall`), at any phase of either account's slots:
  // a restart never lets a count leave a window earlier than it would have
  // without the restart (each window moves its slot grid to the stored
  // times, so it holds nothing longer either). Buckets keep what they owe
  // (rounded up), pauses what is left of them, the calendar quota its day and
  // usage (days are absolute). A wall clock that went backwards counts as
  // no time passed; one that jumped forward ages the counts by the jump.
  //
  // Versions. This writes format 2. Format 1 (0.1.0) kept window ages in
  // whole slots, which drops the position inside the slot; restore() reads
  // it rounding toward keeping (as if the snapshot was taken at the start of
  // its slot: counts stay up to one slot longer than they had to, never
  // shorter). Two things format 1 did not record are assumed: that the
  // snapshot's `now` was not behind the windows' latest slot, and that a
  // window's unit (limits above 16,777,215 tokens) was that of this account.
  //
  // restore() refuses, changing nothing, bytes that are not a snapshot
  // (bad_format), of an unknown version (wrong_version), of an account
  // configured otherwise (other_configuration), short or long (truncated),
  // whose checksum does not match (corrupted; it only catches accidents),
  // or whose fields do not fit this configuration (out_of_range: more
  // window entries than slots, counts above the 24-bit field, times beyond a
  // window's or bucket's horizon, ages out of the window, a negative or
  // inconsistent budget, a calendar day after tomorrow's, a stop flag other
  // than 0 or 1). It refuses with in_use an account that has started taking
  // traffic (any try_admit that got past the stop and pause checks to the
  // limits, admitted or not): its counts would be lost and its leases would
  // settle against counts they were not taken from.
  // Restore into a new account, before sharing it. A try_admit that races
  // the restore is refused (dimension::paused, reason::busy, no wait) until
  // it is done; no other member function may run at the same time.
  std::string snapshot(nanoseconds now, nanoseconds wall) const {
    detail::byte_writer w;
    w.raw("TGA1", 4);
    w.u64(snapshot_version);
    w.u64(fingerprint());
    w.u64(static_cast<std::uint64_t>(wall.count()));
    w.u64(stopped() ? 1 : 0);
    const std::int64_t p = pause_until_.load(std::memory_order_relaxed);  // relaxed: as in try_admit
    w.u64(detail::positive_difference(p, now.count()));
    const std::optional<window>* ws[credit_kinds] = {&rpm_w_, &tpm_w_, &tpd_w_};
    for (unsigned k = 0; k < credit_kinds; ++k) {
      const std::optional<window>* x = ws[k];
      if (!*x) continue;
      // Credit not yet spent is not carried: like an admission that has not
      // happened yet, it is not part of the state at this moment.
      const auto counts = (*x)->export_counts(now, [&](std::uint64_t j) { return credit_in_slot(k, j); });
      w.u64((*x)->unit());
      w.u64(counts.size());
      for (const auto& e : counts) {
        w.u64(e.first);
        w.u64(e.second);
      }
    }
    for (const std::optional<bucket>* x : {&rpm_b_, &tpm_b_})
      if (*x) w.u64(static_cast<std::uint64_t>((*x)->owed(now).count()));
    if (day_q_) w.u64(day_q_->export_word());
    if (budget_) {
      const auto t = budget_->export_totals();
      // A settle racing this read can show its spend before its commit:
      // committed is never below spent.
      w.u64(static_cast<std::uint64_t>(t.first > t.second ? t.first : t.second));
      w.u64(static_cast<std::uint64_t>(t.second));
    }
    w.u64(w.checksum());
    return w.out;
  }

  enum class restore_errc : unsigned char {
    ok,
    bad_format,
    wrong_version,
    other_configuration,
    truncated,
    corrupted,
    out_of_range,  // a field does not fit this configuration (see above)
    in_use,        // the account has started taking traffic
  };

  restore_errc restore(std::string_view bytes, nanoseconds now, nanoseconds wall) {
    unsigned char expected = use_fresh;
    // acq_rel: acquire pairs with the release store that ended an earlier
    // restore; the claim itself publishes nothing (admissions that see it
    // refuse without reading state). Failure: relaxed, the value is all we use.
    if (!use_.compare_exchange_strong(expected, use_restoring, std::memory_order_acq_rel, std::memory_order_relaxed))
      return restore_errc::in_use;
    const restore_errc e = restore_claimed(bytes, now, wall);
    // release: pairs with the acquire load in try_admit, so an admission that
    // sees the account fresh again sees everything restored.
    use_.store(use_fresh, std::memory_order_release);
    return e;
  }

  // The policy each dimension runs, for reports.
  const char* policy(dimension d) const noexcept {
    switch (d) {
      case dimension::rpm: return rpm_w_ ? "strict window" : rpm_b_ ? "spaced with margin" : "not enforced";
      case dimension::tpm: return tpm_w_ ? "strict window" : tpm_b_ ? "spaced with margin" : "not enforced";
      case dimension::tpd:
        return day_q_ ? "calendar day" : tpd_w_ ? "strict window (24 h)" : tpd_b_ ? "spaced with margin (24 h)" : "not enforced";
      default: return "";
    }
  }

 private:
  friend class lease<Clock, Currency>;

  // Inlined into try_admit (and release_slot into settle): once 0.2.0's refusal
  // paths grew, g++ kept both out of line, which cost about 2 ns per admission
  // and settle at the same instruction count.
  [[gnu::always_inline]] void admit_into(admission_type& a, const request& r, nanoseconds now) noexcept {
    // How many tokens Kimi will count at admission.
    std::optional<std::uint64_t> out = r.max_tokens;
    if (!out && r.model && r.model->default_max_tokens) out = r.model->default_max_tokens;
    if (!out && r.model && r.model->context_window)
      out = *r.model->context_window > r.prompt_tokens ? *r.model->context_window - r.prompt_tokens : 0;
    if (!out) {
      a.refused.add(dimension::request_size);  // no way to bound the output
      return refuse_never(a, reason::exceeds_capacity);
    }
    const std::uint64_t n = detail::sat_add(r.prompt_tokens, *out);
    a.tokens = n;
    if (r.model && r.model->context_window && n > *r.model->context_window) a.refused.add(dimension::context);
    if (margin_tokens_ && n > cfg_.max_request_tokens && tpm_b_) a.refused.add(dimension::request_size);
    if (budget_) {
      if (!r.model) {
        a.refused.add(dimension::request_size);  // a budget needs prices
      } else {
        // (worst_case_cost with the declared writes, else the largest)
        const auto w = detail::worst_case<Currency>(*r.model, r.prompt_tokens, out, r.planned_cache_writes, cost_options{});
        if (!w) a.refused.add(dimension::budget);
        else {
          a.worst_case = w.total;
          if (w.total > budget_->limit()) a.refused.add(dimension::budget);
        }
      }
    }
    if (!a.refused.empty()) return refuse_never(a, reason::exceeds_capacity);
    if (stopped_.load(std::memory_order_acquire)) {  // acquire: pairs with the release store in on_response
      a.refused.add(dimension::stopped);
      return refuse_never(a, reason::misconfigured);
    }
    // relaxed: a lone time value; a stale read only delays or advances a pause
    // by the race window, which the server's own limits cover.
    const std::int64_t pause = pause_until_.load(std::memory_order_relaxed);
    const unsigned shard = detail::this_thread_shard();
    if (now.count() < pause) {
      // Paused: nothing is taken; the wait is the later of the pause's end
      // and when every other dimension would admit. Before traffic has
      // started (a restore may be writing the state), the pause alone.
      // acquire: as below.
      if (use_.load(std::memory_order_acquire) == use_started)
        return refuse_and_report(a, n, now, shard, time_left(pause, now));
      a.refused.add(dimension::paused);
      count_refusal(a.refused);
      a.decision = decision::wait(time_left(pause, now));
      return;
    }
    // acquire: pairs with the release store that ends a restore, so what it
    // restored is visible here. Once traffic has started this reads the
    // same value for ever (one load on the line of stopped_).
    if (use_.load(std::memory_order_acquire) != use_started && !start_use()) {
      a.refused.add(dimension::paused);  // a restore is being applied
      count_refusal(a.refused);
      a.decision = decision::wait(nanoseconds(0), reason::busy);
      return;
    }

    // Take every dimension in turn; roll back on the first refusal.
    lease_type& l = a.lease;
    l.rpm_s_ = l.tpm_s_ = l.tpd_s_ = l.rpm_c_ = l.tpm_c_ = 0;  // a dimension not taken leaves its slot 0
    l.model_ = r.model;
    if (conc_) {
      // Slots held past their deadline may come back: reap and try again.
      if (!take_unit(shard) && !(reap(now) && take_unit(shard))) return refuse_and_report(a, n, now, shard);
      l.holds_ = true;
      l.acc_ = this;  // so that a roll-back below releases the slot
      register_slot(l, now, shard);
    }
    if (!take_requests(l, now, shard)) return refuse_and_report(a, n, now, shard);
    if (!take_tokens(tpm_w_, tpm_b_, credit_tpm, l.tpm_s_, l.tpm_c_, n, now, shard)) {
      give_requests(l, now);
      return refuse_and_report(a, n, now, shard);
    }
    bool day_ok = true;
    std::uint64_t no_bucket = 0;  // tpd_b_ is never built: the daily limit is a window or a quota
    if (day_q_) day_ok = day_q_->try_acquire(n, now, l.day_t_).admitted();
    else day_ok = take_tokens(tpd_w_, tpd_b_, credit_tpd, l.tpd_s_, no_bucket, n, now, shard);
    if (!day_ok) {
      give_tokens(tpm_w_, tpm_b_, l.tpm_s_, l.tpm_c_, n, n, now);
      give_requests(l, now);
      return refuse_and_report(a, n, now, shard);
    }
    if (budget_) {
      l.money_ = budget_->reserve(a.worst_case);
      if (!l.money_) {
        give_day(l, n, now);
        give_tokens(tpm_w_, tpm_b_, l.tpm_s_, l.tpm_c_, n, n, now);
        give_requests(l, now);
        return refuse_and_report(a, n, now, shard);
      }
    }
    l.acc_ = this;
    l.tokens_ = n;
    stats_.add_at(shard, st_admitted, 1);
    stats_.add_at(shard, st_reserved, n);
    a.decision = decision::admit();
  }


  static constexpr std::uint64_t snapshot_version = 2;
  // 0.1.0's format: window ages in whole slots (see snapshot()).
  static constexpr std::uint64_t snapshot_version_slots = 1;

  // Whether the account has started taking traffic (see restore()).
  enum : unsigned char { use_fresh, use_restoring, use_started };
  [[gnu::noinline, gnu::cold]] bool start_use() noexcept {
    unsigned char expected = use_fresh;
    // acq_rel: acquire as in try_admit (the restore's release store); a
    // failure sees `restoring` or `started`, read with acquire for the same
    // reason when it is `started` by another admission (no state to see).
    if (use_.compare_exchange_strong(expected, use_started, std::memory_order_acq_rel, std::memory_order_acquire))
      return true;
    return expected == use_started;
  }

  using count_list = std::vector<std::pair<std::uint64_t, std::uint64_t>>;

  // Reads one window's entries (format 2: unit, n, n x (time left, units);
  // format 1: n, n x (age, units)) as (time left at the snapshot, units of
  // this window), checking every field.
  static restore_errc read_window(detail::byte_reader& r, std::uint64_t version, const window& w, count_list& out) {
    using WL = detail::window_limits;
    constexpr std::uint64_t K = window::subwindows;
    std::uint64_t unit = w.unit(), n = 0;
    if (version != snapshot_version_slots) {
      if (!r.u64(unit)) return restore_errc::truncated;
      if (unit == 0) return restore_errc::out_of_range;
    }
    if (!r.u64(n)) return restore_errc::truncated;
    if (n > K + 1) return restore_errc::out_of_range;  // a window holds K + 1 slots
    if (r.left() / 16 < n) return restore_errc::truncated;
    const std::uint64_t horizon = static_cast<std::uint64_t>(w.import_horizon().count());
    const std::uint64_t width = static_cast<std::uint64_t>(w.slot_width().count());
    std::uint64_t prev = 0;
    for (std::uint64_t k = 0; k < n; ++k) {
      std::uint64_t a = 0, units = 0;
      (void)r.u64(a);
      (void)r.u64(units);
      if (units == 0 || units > WL::max_units) return restore_errc::out_of_range;
      std::uint64_t left = 0;
      if (version == snapshot_version_slots) {
        // Ages from oldest to newest, each in the window. Kept as if the
        // snapshot was taken at the start of its slot: the longest it can
        // have had to stay.
        if (a > K || (k > 0 && a >= prev)) return restore_errc::out_of_range;
        left = detail::sat_mul(K + 1 - a, width);
      } else {
        // Times left, soonest first, within the window's horizon.
        if (a == 0 || a > horizon || (k > 0 && a <= prev)) return restore_errc::out_of_range;
        left = a;
      }
      prev = a;
      // The snapshot's units in this window's (equal unless the limit was
      // changed live across 16,777,215 tokens), rounded up.
      out.emplace_back(left, detail::mul_div_ceil(units, unit, w.unit()));
    }
    return restore_errc::ok;
  }

  // The most a bucket can owe: its whole tick range, rounded up.
  static std::uint64_t max_owed(const bucket& b) noexcept {
    const std::uint64_t m = detail::sat_add(detail::sat_add(static_cast<std::uint64_t>(b.horizon().count()),
                                                            detail::sat_mul(b.burst(), static_cast<std::uint64_t>(b.interval().count()))),
                                            1);
    const std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    return m > top ? top : m;
  }

  restore_errc restore_claimed(std::string_view bytes, nanoseconds now, nanoseconds wall) {
    detail::byte_reader r{bytes};
    if (bytes.size() < 12 || bytes.substr(0, 4) != "TGA1" || !r.skip(4)) return restore_errc::bad_format;
    // The checksum covers every byte before it: check it first, so nothing
    // below reads a corrupted length.
    if (bytes.size() < 4 + 8 * 6) return restore_errc::truncated;
    detail::byte_reader tail{bytes.substr(bytes.size() - 8)};
    std::uint64_t sum = 0;
    (void)tail.u64(sum);
    if (detail::fnv1a(bytes.substr(0, bytes.size() - 8)) != sum) return restore_errc::corrupted;
    r.in = bytes.substr(0, bytes.size() - 8);  // the fields only
    std::uint64_t version = 0, fp = 0, then = 0, stop = 0, pause = 0;
    if (!r.u64(version) || !r.u64(fp) || !r.u64(then) || !r.u64(stop) || !r.u64(pause)) return restore_errc::truncated;
    if (version != snapshot_version && version != snapshot_version_slots) return restore_errc::wrong_version;
    if (fp != fingerprint()) return restore_errc::other_configuration;
    constexpr std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    if (stop > 1 || pause > top) return restore_errc::out_of_range;
    count_list win[credit_kinds];
    std::optional<window>* ws[credit_kinds] = {&rpm_w_, &tpm_w_, &tpd_w_};
    for (unsigned i = 0; i < credit_kinds; ++i) {
      if (!*ws[i]) continue;
      const restore_errc e = read_window(r, version, **ws[i], win[i]);
      if (e != restore_errc::ok) return e;
    }
    std::uint64_t owed[2] = {0, 0}, day_word = 0, committed = 0, spent = 0;
    std::optional<bucket>* bs[2] = {&rpm_b_, &tpm_b_};
    for (int i = 0; i < 2; ++i) {
      if (!*bs[i]) continue;
      if (!r.u64(owed[i])) return restore_errc::truncated;
      if (owed[i] > max_owed(**bs[i])) return restore_errc::out_of_range;
    }
    if (day_q_) {
      if (!r.u64(day_word)) return restore_errc::truncated;
      // A day after tomorrow (a clock a day ahead is allowed for) would
      // refuse everything as stale for as long.
      if ((day_word >> calendar_quota<Clock>::used_bits) > day_q_->day_at(now) + 1) return restore_errc::out_of_range;
    }
    if (budget_) {
      if (!r.u64(committed) || !r.u64(spent)) return restore_errc::truncated;
      // Non-negative, and nothing spent that was not committed. Committed
      // may pass the limit (calls that cost more than they reserved): that
      // budget refuses everything, as before the restart.
      if (committed > top || spent > top || spent > committed) return restore_errc::out_of_range;
    }
    if (r.left() != 0) return restore_errc::truncated;

    // Everything checked: apply. The wall-clock time between snapshot and
    // restore, zero if the clock went backwards.
    const detail::i128 gap = static_cast<detail::i128>(wall.count()) - static_cast<std::int64_t>(then);
    const std::uint64_t down = gap <= 0 ? 0 : gap >= static_cast<detail::i128>(top) ? top : static_cast<std::uint64_t>(gap);
    // Credit lines hold nothing in a fresh account; cleared all the same,
    // since what they would hold was counted against the replaced counts.
    if (credits_)
      for (unsigned i = 0; i < detail::thread_shards; ++i)
        for (credit& c : credits_[i].c) c.left.store(0, std::memory_order_relaxed);  // relaxed: not shared yet
    for (unsigned i = 0; i < credit_kinds; ++i) {
      if (!*ws[i]) continue;
      count_list aged;
      for (const auto& e : win[i])
        if (e.first > down) aged.emplace_back(e.first - down, e.second);
      (*ws[i])->import_counts(now, aged);
    }
    for (int i = 0; i < 2; ++i)
      if (*bs[i]) (*bs[i])->restore_owed(nanoseconds(static_cast<std::int64_t>(owed[i] > down ? owed[i] - down : 0)), now);
    if (day_q_) day_q_->import_word(day_word);
    if (budget_) budget_->import_totals(static_cast<std::int64_t>(committed), static_cast<std::int64_t>(spent));
    stopped_.store(stop != 0 || misconfigured_, std::memory_order_release);  // release: as in on_response; a misconfigured account stays stopped
    if (pause > down) pause_for(nanoseconds(static_cast<std::int64_t>(pause - down)), now);
    return restore_errc::ok;
  }

  // A hash of everything that shapes the state: a snapshot only restores
  // into an account configured the same way.
  std::uint64_t fingerprint() const noexcept {
    detail::byte_writer w;
    for (const limit* l : {&cfg_.concurrency, &cfg_.rpm, &cfg_.tpm, &cfg_.tpd}) {
      w.u64(static_cast<std::uint64_t>(l->what()));
      w.u64(l->value().value_or(0));
    }
    w.u64(static_cast<std::uint64_t>(cfg_.model));
    w.u64(cfg_.calendar_day ? 1 : 0);
    w.u64(static_cast<std::uint64_t>(cfg_.utc_offset.count()));
    w.u64(cfg_.max_request_tokens);
    w.u64(cfg_.budget ? static_cast<std::uint64_t>(cfg_.budget->nanos()) : 0);
    w.u64(static_cast<std::uint64_t>(cfg_.request_window.count()));
    w.u64(static_cast<std::uint64_t>(cfg_.token_window.count()));
    // The budget's currency (USD, the first, adds nothing: fingerprints of
    // USD accounts are those of 0.1.0, so their snapshots still restore).
    if (!std::is_same<Currency, usd_tag>::value) w.raw(Currency::code.data(), Currency::code.size());
    return w.checksum();
  }

  static constexpr bool strict_for(server_model m) noexcept {
    return m == server_model::fixed_window || m == server_model::sliding_log || m == server_model::token_bucket;
  }

  // The token margin policy spaces L - m tokens over W + 2 ms: a
  // sliding-window counter that reads its clock in whole milliseconds sees
  // up to 1 ms less of the current period than has passed, which at exactly
  // (L - m) per W let a saturated client's estimate reach L + 0.3 (L = 20,000
  // per minute, m = 2,000). The 2 ms cover that tick and 1 ms of delivery
  // jitter. Windows within 2 ms of the largest duration keep W (no overflow).
  static constexpr nanoseconds margin_window(nanoseconds w) noexcept {
    return w.count() > std::numeric_limits<std::int64_t>::max() - 2000000 ? w : w + std::chrono::milliseconds(2);
  }

  // The limits a margin policy can run (see largest_token_limit).
  static errc check_limits(const config_type& c, const limit& rpm, const limit& tpm, error_values& v) noexcept {
    if (auto x = rpm.value(); x && *x > largest_request_limit(c)) {
      v = error_values{*x, largest_request_limit(c)};
      return errc::too_large;
    }
    if (auto x = tpm.value(); x && *x > largest_token_limit(c)) {
      v = error_values{*x, largest_token_limit(c)};
      return errc::rate_too_fine;
    }
    return errc::ok;
  }

  // A failed configuration may have built some dimensions and not others:
  // such an account must not admit through the ones it lacks.
  errc init_or_stop(const config_type& c, nanoseconds origin, error_values& vals) noexcept {
    const errc e = init(c, origin, vals);
    if (e != errc::ok) {
      misconfigured_ = true;
      stopped_.store(true, std::memory_order_relaxed);  // relaxed: construction precedes sharing
    }
    return e;
  }

  errc init(const config_type& c, nanoseconds origin, error_values& vals) noexcept {
    cfg_ = c;
    origin_ = origin.count();
    errc e = errc::ok;
    if (c.max_pause < nanoseconds(0)) return errc::zero_period;
    if ((e = check_limits(c, c.rpm, c.tpm, vals)) != errc::ok) return e;
    const bool strict = strict_for(c.model);
    if (auto v = c.concurrency.value()) {
      conc_.emplace(*v, e);
      if (e != errc::ok) return e;
    }
    if (auto v = c.concurrency.value(); v && c.lease_timeout > nanoseconds(0)) {
      // The slot table, only when leases can time out (it costs a CAS on
      // admission and one on release). Twice the limit, so a later upgrade
      // still finds room (allocated once, here, never on the admission path).
      slot_count_ = static_cast<std::size_t>(*v * 2 < 1u << 20 ? *v * 2 : 1u << 20);
      slot_stride_ = slot_count_ / (detail::thread_shards + 1);
      own_slots_ = static_cast<std::size_t>(*v / 16 < 1 ? 1 : *v / 16 > 64 ? 64 : *v / 16);
      slot_total_ = slot_count_ + detail::thread_shards * own_slots_;
      slots_.reset(new detail::atomic<std::uint64_t>[slot_total_]);
      for (std::size_t i = 0; i < slot_total_; ++i) slots_[i].store(0, std::memory_order_relaxed);
    }
    if (auto v = c.rpm.value()) {
      if (strict) {
        rpm_w_.emplace(rate(*v, c.request_window), origin, e);
      } else {
        // One request of margin per window (a limit of 1 leaves none to spare),
        // and 2 ms more between requests: at exactly L - 1 evenly spaced, a
        // sliding-window counter's estimate sits exactly on L, and a server
        // clock that ticks in milliseconds (or 1 ms of jitter) tips it over.
        const std::uint64_t l = *v > 1 ? *v - 1 : 1;
        rpm_b_.emplace(rate(l, c.request_window + std::chrono::milliseconds(2) * static_cast<std::int64_t>(l)), 1, origin,
                       bucket::start::full, e);
      }
      if (e != errc::ok) return e;
    }
    margin_tokens_ = !strict;
    auto make_tokens = [&](std::optional<window>& w, std::optional<bucket>& b, std::uint64_t l, nanoseconds per) {
      if (strict) {
        w.emplace(rate(l, per), origin, e);
      } else {
        if (c.max_request_tokens == 0 || c.max_request_tokens >= l) {
          e = errc::too_large;  // the margin must leave room: max_request_tokens < limit
          return;
        }
        b.emplace(rate(l - c.max_request_tokens, margin_window(per)), 1, origin, bucket::start::full, e);
      }
    };
    if (auto v = c.tpm.value()) {
      make_tokens(tpm_w_, tpm_b_, *v, c.token_window);
      if (e != errc::ok) return e;
    }
    if (auto v = c.tpd.value()) {
      if (c.calendar_day) {
        day_q_.emplace(*v, c.utc_offset, e);
      } else {
        // A strict rolling 24 h window whatever the server model: spacing a
        // day's tokens evenly over the day would turn a burst the daily limit
        // allows into hours of waiting.
        tpd_w_.emplace(rate(*v, std::chrono::hours(24)), origin, e);
      }
      if (e != errc::ok) return e;
    }
    if (c.budget) {
      budget_.emplace(*c.budget, e);
      if (e != errc::ok) return e;
    }
    const std::optional<window>* ws[credit_kinds] = {&rpm_w_, &tpm_w_, &tpd_w_};
    for (unsigned k = 0; k < credit_kinds; ++k)
      if (*ws[k] && (*ws[k])->unit() > 0) unit_of_[k] = (*ws[k])->unit();
    update_chunks();
    if (c.per_thread_credit && (rpm_w_ || tpm_w_ || tpd_w_ || conc_)) {
      // Allocated once, here: limits raised later (set_limits) may need it.
      credits_.reset(new credit_line[detail::thread_shards]);
    }
    return errc::ok;
  }

  void update_chunks() noexcept {
    const std::optional<window>* ws[credit_kinds] = {&rpm_w_, &tpm_w_, &tpd_w_};
    const bool on = cfg_.per_thread_credit;  // off: no chunks, so no credit line is ever used
    for (unsigned k = 0; k < credit_kinds; ++k) {
      // relaxed: a lone value; a thread that sees the old chunk takes a chunk of the old size.
      chunk_[k].store(on && *ws[k] ? credit_chunk(**ws[k]) : 0, std::memory_order_relaxed);
    }
    // relaxed: as above; the epoch makes every thread give back what it took
    // under the previous limit before it takes more.
    conc_chunk_.store(on && conc_ ? conc_->limit() / credit_divisor : 0, std::memory_order_relaxed);
    conc_epoch_.fetch_add(1, std::memory_order_relaxed);
  }

  [[gnu::always_inline]] bool take_requests(lease_type& l, nanoseconds now, unsigned shard) noexcept {
    if (rpm_w_) return take_window(*rpm_w_, credit_rpm, 1, now, l.rpm_s_, shard);
    if (rpm_b_) {
      bucket_ticket t;
      const bool ok = rpm_b_->try_acquire(1, now, t).admitted();
      l.rpm_s_ = t.end;
      l.rpm_c_ = t.config;
      return ok;
    }
    return true;
  }

  // --- Window credit ---
  // A thread that owns a statistics shard (the first 16 to count) takes a
  // strict window's units a chunk at a time: one CAS on the window's head
  // admits its request and counts `chunk` more units in the same slot, which
  // it then spends on its later requests in that slot with plain loads and
  // stores on its own cache line. Every unit is counted in the window before
  // it is spent, and spent only in the slot it was counted in, so the
  // window's bound holds exactly as if each request had taken its own units.
  // What a credit costs: units counted but not yet spent. They are given back
  // to the window when the owner's next request finds the slot over or the
  // window refuses it, if their slot is still the window's newest (else they
  // stay counted until it leaves the window: the safe side). So a thread is
  // refused because of its own credit only when another thread moved the
  // window on first; other threads can be, by at most 16 chunks (chunk =
  // limit / 1024 units: under 1.6 % of the limit). Limits below 1,024 units
  // get no credit and behave exactly as before.
  enum : unsigned { credit_rpm, credit_tpm, credit_tpd, credit_kinds };
  struct credit {
    // Atomic only so that remaining() may read them: the owner alone writes
    // (relaxed loads and stores; ownership passes between threads through
    // the shard claim's release/acquire, see detail/shard_counters.hpp).
    detail::atomic<std::uint64_t> slot{0};  // the window slot the units are counted in
    detail::atomic<std::uint64_t> left{0};  // units counted there and not yet spent
    detail::atomic<std::int64_t> start{0}, end{0};  // the slot's span [start, end)
  };
  struct alignas(TOLLGATE_CACHELINE_SIZE) credit_line {
    credit c[credit_kinds];
    // Concurrency units this thread holds from the limiter for leases to
    // come, and the limit change they were taken under.
    detail::atomic<std::uint64_t> units{0};
    detail::atomic<std::uint64_t> epoch{0};
  };
  static constexpr std::uint64_t credit_divisor = 1024;

  static std::uint64_t credit_chunk(const window& w) noexcept {
    // relaxed: window::limit is a lone value.
    return w.unit() == 0 ? 0 : w.limit() / w.unit() / credit_divisor;
  }

  // Spending credit is the hot path (inline); refills and refusals are not.
  [[gnu::always_inline]] bool take_window(window& w, unsigned kind, std::uint64_t n, nanoseconds now,
                                          std::uint64_t& slot, unsigned shard) noexcept {
    if (shard < detail::thread_shards && credits_) {
      credit& c = credits_[shard].c[kind];
      const std::uint64_t u = unit_of_[kind];
      const std::uint64_t nu = n <= u ? 1 : detail::ceil_div(n, u);
      // relaxed (all of c): this thread owns the line, see `credit`.
      const std::uint64_t left = c.left.load(std::memory_order_relaxed);
      if (left >= nu && now.count() >= c.start.load(std::memory_order_relaxed) &&
          now.count() < c.end.load(std::memory_order_relaxed)) {
        c.left.store(left - nu, std::memory_order_relaxed);
        slot = c.slot.load(std::memory_order_relaxed);
        return true;
      }
    }
    return take_window_slow(w, kind, n, now, slot, shard);
  }

  [[gnu::noinline]] bool take_window_slow(window& w, unsigned kind, std::uint64_t n, nanoseconds now,
                                          std::uint64_t& slot, unsigned shard) noexcept {
    // relaxed: a lone value, changed only by set_limits.
    const std::uint64_t chunk = n == 0 || shard >= detail::thread_shards ? 0 : chunk_[kind].load(std::memory_order_relaxed);
    window_ticket t;
    if (chunk == 0) {
      const bool ok = w.try_acquire(n, now, t).admitted();
      slot = t.slot;
      return ok;
    }
    credit& c = credits_[shard].c[kind];
    const std::uint64_t u = w.unit();
    const std::uint64_t nu = n <= u ? 1 : detail::ceil_div(n, u);
    // relaxed (all of c): as above.
    std::uint64_t left = c.left.load(std::memory_order_relaxed);
    const bool same_slot = now.count() >= c.start.load(std::memory_order_relaxed) &&
                           now.count() < c.end.load(std::memory_order_relaxed);
    if (same_slot && left >= nu) {  // (the fast path's case, for a caller that went straight here)
      c.left.store(left - nu, std::memory_order_relaxed);
      slot = c.slot.load(std::memory_order_relaxed);
      return true;
    }
    if (left > 0 && !same_slot) {
      give_credit(w, c, left);  // the slot is over: nothing of it can be spent any more
      left = 0;
    }
    // From the window: this request and a chunk more, in one CAS.
    window_ticket big;
    if (w.try_acquire(detail::sat_mul(nu + chunk, u), now, big).admitted()) {
      if (!same_slot || big.slot != c.slot.load(std::memory_order_relaxed)) {
        if (left > 0) give_credit(w, c, left);  // (defensive: a refill lands in the credit's own slot)
        left = 0;
        const std::uint64_t width = static_cast<std::uint64_t>(w.slot_width().count());
        const std::int64_t start = detail::sat_offset(w.origin().count(), detail::sat_mul(big.slot, width));
        c.slot.store(big.slot, std::memory_order_relaxed);
        c.start.store(start, std::memory_order_relaxed);
        c.end.store(detail::sat_offset(start, width), std::memory_order_relaxed);
      }
      c.left.store(left + (big.units > nu ? big.units - nu : 0), std::memory_order_relaxed);
      slot = big.slot;
      return true;
    }
    // No room for a chunk: this request alone, after giving back what this
    // thread holds (so its own credit never refuses it).
    if (left > 0) {
      give_credit(w, c, left);
      left = 0;
    }
    const bool ok = w.try_acquire(n, now, t).admitted();
    slot = t.slot;
    return ok;
  }

  // --- Concurrency credit ---
  // The same idea for the concurrency limit (when it is at least 1,024): a
  // thread that owns a shard takes 1 + chunk units from the limiter in one
  // CAS and hands them to its later leases without touching the limiter; a
  // lease released on such a thread returns its unit to that thread's credit,
  // which gives everything above one chunk back once it holds two. Units held
  // as credit are held from the limiter, so leases in flight never exceed the
  // limit; other threads can be refused falsely by at most 16 x 2 chunks
  // (chunk = limit / 1024: under 3.2 % of the limit). A limit change
  // (set_limits) bumps the epoch, and each thread gives its credit back before
  // taking a unit under the new limit. A thread that exits holding credit
  // leaves it on its shard, for the next thread that claims that shard.
  [[gnu::always_inline]] bool take_unit(unsigned shard) noexcept {
    if (shard < detail::thread_shards && credits_) {
      credit_line& c = credits_[shard];
      // relaxed: as in take_unit_slow.
      const std::uint64_t left = c.units.load(std::memory_order_relaxed);
      if (left > 0 && c.epoch.load(std::memory_order_relaxed) == conc_epoch_.load(std::memory_order_relaxed)) {
        c.units.store(left - 1, std::memory_order_relaxed);
        return true;
      }
    }
    return take_unit_slow(shard);
  }
  [[gnu::noinline]] bool take_unit_slow(unsigned shard) noexcept {
    if (shard >= detail::thread_shards || !credits_) return take_units_direct(1);
    credit_line& c = credits_[shard];
    // relaxed (c.*): this thread owns the line, see `credit`. relaxed
    // (conc_epoch_, conc_chunk_): lone values; a thread that sees a change
    // late takes a unit under the old limit, as a direct try_acquire racing
    // set_limit could.
    std::uint64_t left = c.units.load(std::memory_order_relaxed);
    const std::uint64_t epoch = conc_epoch_.load(std::memory_order_relaxed);
    if (c.epoch.load(std::memory_order_relaxed) != epoch) {
      c.units.store(0, std::memory_order_relaxed);
      if (left > 0) conc_->release_detached(left);
      left = 0;
      c.epoch.store(epoch, std::memory_order_relaxed);
    }
    if (left > 0) {
      c.units.store(left - 1, std::memory_order_relaxed);
      return true;
    }
    const std::uint64_t chunk = conc_chunk_.load(std::memory_order_relaxed);
    if (chunk > 0 && take_units_direct(1 + chunk)) {
      c.units.store(chunk, std::memory_order_relaxed);
      return true;
    }
    return take_units_direct(1);
  }
  bool take_units_direct(std::uint64_t k) noexcept {
    permit p = conc_->try_acquire(k);
    if (!p) return false;
    p.detach();  // owed back through release_detached: give_unit, take_unit or reap
    return true;
  }
  [[gnu::always_inline]] void give_unit() noexcept {
    const unsigned shard = credits_ ? detail::this_thread_shard() : detail::thread_shards;
    if (shard < detail::thread_shards) {
      credit_line& c = credits_[shard];
      // relaxed: as in take_unit_slow.
      const std::uint64_t left = c.units.load(std::memory_order_relaxed) + 1;
      if (left <= 2 * conc_chunk_.load(std::memory_order_relaxed) &&
          c.epoch.load(std::memory_order_relaxed) == conc_epoch_.load(std::memory_order_relaxed)) {
        c.units.store(left, std::memory_order_relaxed);
        return;
      }
    }
    give_unit_slow(shard);
  }
  [[gnu::noinline]] void give_unit_slow(unsigned shard) noexcept {
    if (shard >= detail::thread_shards) {
      conc_->release_detached(1);
      return;
    }
    credit_line& c = credits_[shard];
    // relaxed: as in take_unit.
    const std::uint64_t chunk = conc_chunk_.load(std::memory_order_relaxed);
    const std::uint64_t epoch = conc_epoch_.load(std::memory_order_relaxed);
    const std::uint64_t left = c.units.load(std::memory_order_relaxed) + 1;
    if (c.epoch.load(std::memory_order_relaxed) != epoch || left > 2 * chunk) {
      const std::uint64_t keep = c.epoch.load(std::memory_order_relaxed) == epoch ? chunk : 0;
      c.units.store(keep, std::memory_order_relaxed);
      conc_->release_detached(left - keep);
    } else {
      c.units.store(left, std::memory_order_relaxed);
    }
  }
  std::uint64_t units_held_as_credit() const noexcept {
    if (!credits_) return 0;
    std::uint64_t sum = 0;
    // relaxed: a snapshot of other threads' lines.
    for (unsigned i = 0; i < detail::thread_shards; ++i) sum += credits_[i].units.load(std::memory_order_relaxed);
    return sum;
  }

  static void give_credit(window& w, credit& c, std::uint64_t left) noexcept {
    // relaxed: as in take_window. Zeroed before the refund, whose release CAS
    // on the head then carries it to any snapshot() that sees the refund (so
    // a snapshot never leaves these units out twice).
    c.left.store(0, std::memory_order_relaxed);
    const std::uint64_t tokens = detail::sat_mul(left, w.unit());
    window_ticket back{c.slot.load(std::memory_order_relaxed), tokens, left};
    // Only into the head slot: once the window has moved on, the units stay
    // counted until their slot leaves it (the safe side).
    (void)w.refund_to_head(back, tokens);
  }

  // Units of window `kind` held as credit in slot j (a snapshot).
  std::uint64_t credit_in_slot(unsigned kind, std::uint64_t j) const noexcept {
    if (!credits_) return 0;
    std::uint64_t sum = 0;
    for (unsigned i = 0; i < detail::thread_shards; ++i) {
      const credit& c = credits_[i].c[kind];
      // relaxed: as in credit_held.
      if (c.slot.load(std::memory_order_relaxed) == j) sum += c.left.load(std::memory_order_relaxed);
    }
    return sum;
  }

  // Units of window `kind` held as credit in `now`'s slot, by every thread
  // (a snapshot: owners change them as it is read).
  std::uint64_t credit_held(unsigned kind, nanoseconds now) const noexcept {
    if (!credits_) return 0;
    std::uint64_t sum = 0;
    for (unsigned i = 0; i < detail::thread_shards; ++i) {
      const credit& c = credits_[i].c[kind];
      // relaxed: a statistic-grade read of another thread's line.
      if (now.count() >= c.start.load(std::memory_order_relaxed) && now.count() < c.end.load(std::memory_order_relaxed))
        sum += c.left.load(std::memory_order_relaxed);
    }
    return sum;
  }
  void give_requests(lease_type& l, nanoseconds now) noexcept {
    if (rpm_w_) {
      window_ticket t = ticket_for(*rpm_w_, l.rpm_s_, 1);
      (void)rpm_w_->refund(t, 1);
    }
    if (rpm_b_) {
      bucket_ticket t{l.rpm_s_, 1, l.rpm_c_};
      (void)rpm_b_->refund(t, 1, now);
    }
  }
  // Tokens: a strict window takes n; the spaced bucket takes 1 (the previous
  // request's emission time must have passed) and charges the other n - 1,
  // in one step whose ticket (end in `slot`, configuration in `cfg`) a later
  // refund needs.
  [[gnu::always_inline]] bool take_tokens(std::optional<window>& w, std::optional<bucket>& b, unsigned kind,
                                          std::uint64_t& slot, std::uint64_t& cfg, std::uint64_t n, nanoseconds now,
                                          unsigned shard) noexcept {
    if (n == 0) return true;
    if (w) return take_window(*w, kind, n, now, slot, shard);
    if (b) {
      bucket_ticket t;
      const bool ok = b->try_acquire_and_charge(1, n - 1, now, t).admitted();
      slot = t.end;
      cfg = t.config;
      return ok;
    }
    return true;
  }
  // The ticket a window gave (or would have given) for `tokens` in `slot`.
  static window_ticket ticket_for(const window& w, std::uint64_t slot, std::uint64_t tokens) noexcept {
    const std::uint64_t u = w.unit();
    return window_ticket{slot, tokens, tokens == 0 || u == 0 ? 0 : tokens <= u ? 1 : detail::ceil_div(tokens, u)};
  }
  // Gives back n of the `reserved` tokens counted in `slot` (a bucket: as
  // its ticket, `slot` and `cfg`, allows).
  static void give_tokens(std::optional<window>& w, std::optional<bucket>& b, std::uint64_t slot, std::uint64_t cfg,
                          std::uint64_t reserved, std::uint64_t n, nanoseconds now) noexcept {
    if (w) {
      window_ticket t = ticket_for(*w, slot, reserved);
      (void)w->refund(t, n);
    }
    if (b) {
      bucket_ticket t{slot, reserved, cfg};
      (void)b->refund(t, n, now);
    }
  }
  void give_day(lease_type& l, std::uint64_t n, nanoseconds now) noexcept {
    if (day_q_) (void)day_q_->refund(l.day_t_, n);
    else give_tokens(tpd_w_, tpd_b_, l.tpd_s_, 0, n, n, now);
  }
  static void charge_tokens(std::optional<window>& w, std::optional<bucket>& b, std::uint64_t n, nanoseconds now) noexcept {
    if (w) w->charge(n, now);
    if (b) b->charge(n, now);
  }

  // The least pause after a 429 of the request (or token) limit: the larger
  // of one emission interval of that limit (W / L rounded up; for the spaced
  // policy, its interval in force) and the account's own wait for one unit of
  // it. The server refused although the account may have had room: it counts
  // differently (another client, another window), so wait at least for the
  // spacing the limit itself implies.
  enum : unsigned { request_kind, token_kind };
  nanoseconds own_wait(unsigned kind, nanoseconds now) const noexcept {
    const std::optional<window>& w = kind == request_kind ? rpm_w_ : tpm_w_;
    const std::optional<bucket>& b = kind == request_kind ? rpm_b_ : tpm_b_;
    nanoseconds t{0}, own{0};
    if (w) {
      const std::uint64_t l = w->limit();
      t = nanoseconds(static_cast<std::int64_t>(
          detail::ceil_div(static_cast<std::uint64_t>(w->window().count()), l > 0 ? l : 1)));
      const decision d = w->time_until(1, now);
      if (d.later() && d.why() != reason::stale_time) own = d.retry_after();
    }
    if (b) {
      t = b->interval();
      const decision d = b->time_until(1, now);
      if (d.later()) own = d.retry_after();
    }
    return t > own ? t : own;
  }

  // max(0, until - now), saturated: defined for every pair of times.
  static nanoseconds time_left(std::int64_t until, nanoseconds now) noexcept {
    const std::uint64_t d = detail::positive_difference(until, now.count());
    constexpr std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    return nanoseconds(static_cast<std::int64_t>(d < top ? d : top));
  }

  void pause_for(nanoseconds d, nanoseconds now) noexcept {
    const std::int64_t until = detail::sat_offset(now.count(), static_cast<std::uint64_t>(d.count() > 0 ? d.count() : 0));
    // relaxed: a lone time value that only moves forward (max by CAS).
    std::int64_t cur = pause_until_.load(std::memory_order_relaxed);
    while (until > cur && !pause_until_.compare_exchange_weak(cur, until, std::memory_order_relaxed)) {
    }
  }

  void count_refusal(dimension_set s) noexcept {
    const unsigned shard = detail::this_thread_shard();
    stats_.add_at(shard, st_refused, 1);
    for (unsigned i = 0; i < 9; ++i)
      if (s.bits & (1u << i)) stats_.add_at(shard, st_refused_by + i, 1);
  }

  void refuse_never(admission_type& a, reason why) noexcept {
    count_refusal(a.refused);
    a.decision = decision::refuse(why);
  }

  // After a refusal (everything rolled back): ask every dimension, without
  // consuming, whether and how long it would refuse.
  //
  // The wait is exact for the refused thread (the decision contract, for the
  // whole account): with nothing else admitted and nothing given back
  // meanwhile, it is refused at now + wait - 1 ns and admitted at now + wait
  // by every time-based dimension (and the pause). Its own window credit is
  // given back first, as its next attempt would give it back before asking
  // the windows, so the windows are asked what they hold for this thread.
  // A refusal that also names concurrency or the budget needs a permit or
  // money back as well: the wait is then when time alone stops refusing.
  void refuse_and_report(admission_type& a, std::uint64_t n, nanoseconds now, unsigned shard,
                         nanoseconds paused_for = nanoseconds(0)) noexcept {
    // A roll-back frees nothing that was free before this call, and the
    // waiting room's head calls try_admit under the room's lock: no hook.
    if (a.lease.acc_) release_slot(a.lease, false);
    a.lease = lease_type();
    std::uint64_t own_units = 0;
    if (credits_ && shard < detail::thread_shards) {
      credit_line& line = credits_[shard];
      std::optional<window>* ws[credit_kinds] = {&rpm_w_, &tpm_w_, &tpd_w_};
      for (unsigned k = 0; k < credit_kinds; ++k) {
        // relaxed: this thread owns the line, see `credit`.
        const std::uint64_t left = line.c[k].left.load(std::memory_order_relaxed);
        if (*ws[k] && left > 0) give_credit(**ws[k], line.c[k], left);
      }
      // relaxed: as in take_unit. Units this thread holds are a permit it can take.
      if (line.epoch.load(std::memory_order_relaxed) == conc_epoch_.load(std::memory_order_relaxed))
        own_units = line.units.load(std::memory_order_relaxed);
    }
    nanoseconds wait = paused_for;
    if (paused_for > nanoseconds(0)) a.refused.add(dimension::paused);
    bool never = false;
    auto note = [&](dimension d, decision x) {
      if (x.admitted()) return;
      a.refused.add(d);
      if (x.never()) never = true;
      if (x.retry_after() > wait) wait = x.retry_after();
    };
    if (conc_ && conc_->available() == 0 && own_units == 0) a.refused.add(dimension::concurrency);
    if (rpm_w_) note(dimension::rpm, rpm_w_->time_until(1, now));
    if (rpm_b_) note(dimension::rpm, rpm_b_->time_until(1, now));
    if (tpm_w_) note(dimension::tpm, tpm_w_->time_until(n, now));
    if (tpm_b_) note(dimension::tpm, tpm_b_->time_until(1, now));
    if (tpd_w_) note(dimension::tpd, tpd_w_->time_until(n, now));
    if (tpd_b_) note(dimension::tpd, tpd_b_->time_until(1, now));
    if (day_q_) note(dimension::tpd, day_q_->time_until(n, now));
    if (budget_ && budget_->remaining() < a.worst_case) a.refused.add(dimension::budget);
    if (a.refused.empty()) a.refused.add(dimension::concurrency);  // lost a race: report the first, retry soon
    count_refusal(a.refused);
    if (never)
      a.decision = decision::refuse(reason::exceeds_capacity);
    else if (wait > nanoseconds(0))
      a.decision = decision::wait(wait);
    else
      a.decision = decision::wait(nanoseconds(0), reason::busy);  // a permit or money must come back first
  }

  // The slot table: one word per concurrency unit, {time: 48 bits, generation:
  // 16 bits}. The time is 0 when the word is free, else 1 + the admission
  // time of the lease holding it, in milliseconds from the origin rounded up
  // (so a lease is never reclaimed early). A lease claims a free word with a
  // CAS that also bumps its generation, and frees it with a CAS from the value
  // it wrote; a reaper that finds a word past the deadline frees it with the
  // same CAS. Whoever wins returns the unit, so it is returned exactly once.
  // The generation makes a word freed by the reaper and claimed again by a
  // lease with the same admission time (a stale supplied `now`) a different
  // value, so the late holder's CAS cannot free the new holder's word. The
  // generation has 16 bits: if the word were claimed and freed 65,536 times
  // between a reclaim and the late holder's release, every time with the same
  // millisecond stamp (only a supplied `now` that stands still can do that),
  // the late release would free the newest lease's word and one unit would
  // come back while that lease still runs.
  static constexpr unsigned slot_gen_bits = 16;
  static constexpr std::uint64_t slot_gen_mask = (std::uint64_t{1} << slot_gen_bits) - 1;
  static constexpr std::uint64_t slot_max_ms = 9000000000000;  // 285 years: ms * 10^6 fits 63 bits

  std::uint64_t slot_ms(nanoseconds now) const noexcept {
    std::int64_t d = 0;
    if (__builtin_sub_overflow(now.count(), origin_, &d)) return now.count() > origin_ ? slot_max_ms : 0;
    if (d <= 0) return 0;
    const std::uint64_t ms = (static_cast<std::uint64_t>(d) + 999999) / 1000000;  // rounded up
    return ms < slot_max_ms ? ms : slot_max_ms;
  }

  void register_slot(lease_type& l, nanoseconds now, unsigned shard) noexcept {
    if (slot_count_ == 0) return;
    const std::uint64_t time_part = (slot_ms(now) + 1) << slot_gen_bits;
    if (shard < detail::thread_shards) {
      // The thread's own words first: only their owner turns a free word
      // held (others only free held words, by CAS), so a plain store claims it.
      const std::size_t base = slot_count_ + static_cast<std::size_t>(shard) * own_slots_;
      for (std::size_t i = base; i < base + own_slots_; ++i) {
        // relaxed: this thread's own last write, or a CAS that freed the word
        // (a stale `held` only makes us look further).
        const std::uint64_t w = slots_[i].load(std::memory_order_relaxed);
        if ((w >> slot_gen_bits) != 0) continue;  // held
        const std::uint64_t stamp = time_part | ((w + 1) & slot_gen_mask);
        // relaxed: no other thread can write a free word of this region, so
        // nothing comes between the load and this store; the CASes that later
        // free it are ordered with it by the word's own modification order.
        slots_[i].store(stamp, std::memory_order_relaxed);
        l.slot_ = i;
        l.stamp_ = stamp;
        return;
      }
    }
    // The shared words. Start at a place that depends on the thread, so two
    // threads do not probe the same words.
    std::size_t i = static_cast<std::size_t>(shard) * slot_stride_;
    for (std::size_t k = 0; k < slot_count_; ++k, i = i + 1 == slot_count_ ? 0 : i + 1) {
      // relaxed: only a guess of a free word; the CAS decides.
      std::uint64_t expected = slots_[i].load(std::memory_order_relaxed);
      if ((expected >> slot_gen_bits) != 0) continue;  // held
      const std::uint64_t stamp = time_part | ((expected + 1) & slot_gen_mask);
      // acq_rel: release publishes nothing else but keeps the table's words in
      // one order with the reaper's CAS; acquire on failure is not needed.
      if (slots_[i].compare_exchange_strong(expected, stamp, std::memory_order_acq_rel, std::memory_order_relaxed)) {
        l.slot_ = i;
        l.stamp_ = stamp;
        return;
      }
    }
    // No free word (the limit was raised past the table): this lease cannot be reclaimed.
  }

  [[gnu::always_inline]] void release_slot(lease_type& l, bool notify = true) noexcept {
    bool give = l.holds_;
    if (l.holds_ && l.slot_ != lease_type::no_slot) {
      std::uint64_t expected = l.stamp_;
      // acq_rel/relaxed: as in register_slot. Failure: a reaper took it and returned the unit.
      give = slots_[l.slot_].compare_exchange_strong(expected, l.stamp_ & slot_gen_mask, std::memory_order_acq_rel,
                                                     std::memory_order_relaxed);
    }
    if (give) give_unit();
    l.holds_ = false;
    l.slot_ = lease_type::no_slot;
    l.acc_ = nullptr;
    if (notify) notify_release();
  }

  // Frees the slots of leases held past lease_timeout; returns how many.
  [[gnu::noinline, gnu::cold]] std::uint64_t reap(nanoseconds now) noexcept {
    if (slot_count_ == 0 || cfg_.lease_timeout <= nanoseconds(0)) return 0;
    // One scan per lease_timeout / 16 of time at most (and again whenever
    // time goes backwards): while the account is full and nothing can have
    // expired, a refusal costs a load, not a scan of the table. So a lease is
    // reclaimed by the first refusal at least lease_timeout / 16 after the
    // previous scan and after its own deadline.
    // relaxed: a lone time value; two threads may both scan (each word's CAS decides).
    const std::int64_t last = last_reap_.load(std::memory_order_relaxed);
    std::int64_t since_last = 0;
    if (last != std::numeric_limits<std::int64_t>::min() && !__builtin_sub_overflow(now.count(), last, &since_last) &&
        since_last >= 0 && since_last < cfg_.lease_timeout.count() / 16)
      return 0;
    last_reap_.store(now.count(), std::memory_order_relaxed);  // relaxed: as above
    std::int64_t rel = 0;
    if (__builtin_sub_overflow(now.count(), origin_, &rel)) return 0;  // a `now` no lease can be measured against
    std::uint64_t freed = 0;
    for (std::size_t i = 0; i < slot_total_; ++i) {
      std::uint64_t v = slots_[i].load(std::memory_order_relaxed);  // relaxed: re-checked by the CAS
      const std::uint64_t t = v >> slot_gen_bits;
      if (t == 0) continue;
      // Held since (t - 1) ms after the origin, at the latest.
      const std::int64_t since = static_cast<std::int64_t>(t - 1) * 1000000;
      if (rel < since || rel - since < cfg_.lease_timeout.count()) continue;
      if (slots_[i].compare_exchange_strong(v, v & slot_gen_mask, std::memory_order_acq_rel, std::memory_order_relaxed)) {
        conc_->release_detached(1);
        ++freed;
      }
    }
    if (freed) stats_reclaimed_.fetch_add(freed, std::memory_order_relaxed);  // relaxed: a statistic
    return freed;
  }

  void notify_release() noexcept {
    // acquire: pairs with the release store in set_release_hook, so the
    // context is visible.
    if (auto fn = hook_fn_.load(std::memory_order_acquire)) fn(hook_ctx_.load(std::memory_order_relaxed));
  }

  config_type cfg_;
  std::unique_ptr<detail::atomic<std::uint64_t>[]> slots_;
  std::size_t slot_count_ = 0;
  std::size_t slot_stride_ = 0;  // slot_count_ / (thread_shards + 1): where each thread starts looking
  // After the slot_count_ shared words, own_slots_ words for each owned shard
  // (limit / 16, between 1 and 64), claimed only by the thread that owns it.
  std::size_t own_slots_ = 0;
  std::size_t slot_total_ = 0;
  std::int64_t origin_ = 0;  // the slot table's time origin
  detail::atomic<std::uint64_t> stats_reclaimed_{0};
  detail::atomic<std::uint64_t> capped_hints_{0};
  detail::atomic<void (*)(void*)> hook_fn_{nullptr};
  detail::atomic<void*> hook_ctx_{nullptr};
  bool margin_tokens_ = false;
  std::optional<concurrency_limiter> conc_;
  std::optional<window> rpm_w_, tpm_w_, tpd_w_;
  std::optional<bucket> rpm_b_, tpm_b_, tpd_b_;
  std::optional<calendar_quota<Clock>> day_q_;
  std::optional<budget<Currency>> budget_;
  std::unique_ptr<credit_line[]> credits_;  // one line per owned shard, when some window grants credit
  detail::atomic<std::uint64_t> chunk_[credit_kinds] = {};
  std::uint64_t unit_of_[credit_kinds] = {1, 1, 1};  // each window's unit (fixed at construction)
  detail::atomic<std::uint64_t> conc_chunk_{0}, conc_epoch_{0};
  detail::atomic<std::int64_t> pause_until_{std::numeric_limits<std::int64_t>::min()};
  detail::atomic<bool> stopped_{false};
  bool misconfigured_ = false;  // built with an error: stopped for good
  detail::atomic<unsigned char> use_{use_fresh};  // fresh, restoring or started (see restore())
  // Hot statistics: per-thread shards, a plain load and store each.
  enum : std::size_t { st_admitted, st_refused, st_reserved, st_used, st_debt, st_refused_by, st_count = st_refused_by + 9 };
  detail::shard_counters<st_count> stats_;
  detail::atomic<std::int64_t> waited_ns_[9] = {};
  detail::atomic<std::int64_t> last_reap_{std::numeric_limits<std::int64_t>::min()};  // when reap last scanned
};

template <class Clock, class Currency>
basic_settle_result<Currency> lease<Clock, Currency>::settle(const usage& u, nanoseconds now) noexcept {
  using acct = account<Clock, Currency>;
  basic_settle_result<Currency> res;
  if (!acc_) return res;
  acct& a = *acc_;
  const std::uint64_t used = detail::sat_add(u.prompt, u.completion);
  const std::uint64_t extra = used > tokens_ ? used - tokens_ : 0;
  a.stats_.add2(acct::st_used, used, acct::st_debt, extra);
  if (extra > 0) {
    // Beyond the reservation: a debt that later admissions wait out.
    res.debt_tokens = extra;
    acct::charge_tokens(a.tpm_w_, a.tpm_b_, extra, now);
    if (a.day_q_) a.day_q_->charge(extra, now);
    else acct::charge_tokens(a.tpd_w_, a.tpd_b_, extra, now);
  } else if (a.cfg_.refund_unused_tokens && used < tokens_) {
    const std::uint64_t back = tokens_ - used;
    res.refunded_tokens = back;
    acct::give_tokens(a.tpm_w_, a.tpm_b_, tpm_s_, tpm_c_, tokens_, back, now);
    if (a.day_q_) (void)a.day_q_->refund(day_t_, back);
    else acct::give_tokens(a.tpd_w_, a.tpd_b_, tpd_s_, 0, tokens_, back, now);
  }
  if (a.budget_ && money_) {
    const auto c = model_ ? cost<Currency>(*model_, u) : cost_breakdown<Currency>{cost_errc::unknown_price, {}, {}, {}, {}, {}};
    // An uncomputable cost keeps the whole reservation as spent: the safe side.
    const money<Currency> actual = c ? c.total : money_.amount;
    const money<Currency> diff = a.budget_->settle(money_, actual);
    res.cost = actual;
    res.overspend_nanos = diff.nanos() < 0 ? -diff.nanos() : 0;
  } else if (model_) {
    const auto c = cost<Currency>(*model_, u);
    if (c) res.cost = c.total;
  }
  a.release_slot(*this);
  return res;
}

template <class Clock, class Currency>
void lease<Clock, Currency>::settle_rejected(nanoseconds now) noexcept {
  (void)now;
  if (!acc_) return;
  if (acc_->budget_ && money_) acc_->budget_->release(money_);
  acc_->release_slot(*this);
}

template <class Clock, class Currency>
void lease<Clock, Currency>::settle_failed(nanoseconds now) noexcept {
  settle_rejected(now);  // the same bookkeeping: tokens stay counted, nothing is billed
}

template <class Clock, class Currency>
basic_settle_result<Currency> lease<Clock, Currency>::settle_cancelled(const std::optional<usage>& known,
                                                                      nanoseconds now) noexcept {
  if (known) return settle(*known, now);
  using acct = account<Clock, Currency>;
  basic_settle_result<Currency> res;
  if (!acc_) return res;
  acct& a = *acc_;
  a.stats_.add(acct::st_used, tokens_);  // unknown: counted as the whole reservation
  if (a.budget_ && money_) {
    res.cost = money_.amount;
    (void)a.budget_->settle(money_, money_.amount);
  }
  a.release_slot(*this);
  return res;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_HPP
