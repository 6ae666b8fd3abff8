// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/snapshot.hpp: the account's snapshot as bytes: what it has
// counted (window contents, what buckets owe, the calendar day's usage, the
// budget, a pause or a stop, what server_model::learn has learned, the
// server's stated remainders), so a restart does not reset the daily limit,
// the budget or the lessons. No I/O: the caller stores the bytes. Permits in flight are not
// kept (their money stays committed: the safe side).
//
// Format 3: "TGA1", then little-endian u64 fields: version, the
// configuration's fingerprint, the wall-clock time, the stop flag, the time
// left of the pause; per strict window (requests, tokens, day, those that
// exist) its unit, n and n x (time left, units), soonest first; per spaced
// bucket what it owes; the calendar quota's word; the budget's committed and
// spent; under server_model::learn, per dimension it learns (requests,
// tokens) the time since its switch, the time left of its guard (both
// 2^64 - 1 when not yet), its shadow's lead and what its spaced bucket
// owes, then the margin and the widenings (learn.hpp); the header gates,
// always: per dimension the time left and the remainder (zeros: none); and
// an FNV-1a checksum of every byte before it. The learned words and gates
// age like every other time here.
//
// Time. Each count is stored with the time from the snapshot's `now`
// until this account would have dropped it, and restore() keeps it that
// long minus the wall-clock time between snapshot and restore (pass
// system_clock::now() as `wall`), at any phase of either account's slots:
// a restart never lets a count leave a window earlier than it would have
// without the restart (each window moves its slot grid to the stored
// times, so it holds nothing longer either). Buckets keep what they owe
// (rounded up), pauses what is left of them, the calendar quota its day and
// usage (UTC day numbers at the offset, as the account maps its clock to Unix
// time: config.hpp's unix_time_at_zero, so a reboot, which restarts a steady
// clock, keeps the day). A wall clock that went backwards counts as no time
// passed; one that jumped forward ages the counts by the jump. A stop or a
// pause already set in the restoring account stays (the later pause end
// wins): a restore never lifts a restriction.
//
// Versions. This writes format 3. Format 2 is format 3 without the learned
// words and the gates: restore() reads it as a restart that learned nothing
// and saw no headers. Format 1 (0.1.0) kept window ages in
// whole slots, which drops the position inside the slot; restore() reads
// it rounding toward keeping (as if the snapshot was taken at the start of
// its slot: counts stay up to one slot longer than they had to, never
// shorter). Two things format 1 did not record are assumed: that the
// snapshot's `now` was not behind the windows' latest slot, and that a
// window's unit (limits above 16,777,215 tokens) was that of this account.
//
// restore() refuses, changing nothing, bytes that are not a snapshot
// (bad_format), of an unknown version or of format 1 or 2 into an account
// with server_model::learn or trust_rate_limit_headers, which both came
// with format 3 (wrong_version), of an account
// configured otherwise (other_configuration), short or long (truncated),
// whose checksum does not match (corrupted; it only catches accidents),
// or whose fields do not fit this configuration (out_of_range: more
// window entries than slots, counts above the 24-bit field, times beyond a
// window's or bucket's horizon, ages out of the window, a negative or
// inconsistent budget, a calendar day after tomorrow's, a stop flag other
// than 0 or 1, a learned time beyond INT64_MAX, a guard without a switch, a
// margin outside [spacing_margin, max_spacing_margin], a gate beyond
// INT64_MAX). It refuses with in_use an account that has started taking
// traffic (any try_admit that got past the stop and pause checks to the
// limits, admitted or not, or after a restore one refused by a pause, whose
// wait read the restored counts): its counts would be lost and its leases
// would settle against counts they were not taken from. A restored account
// that has not started may be restored again.
// Restore into a new account, before sharing it. A try_admit that races
// the restore is refused (dimension::paused, reason::busy, no wait) until
// it is done; no other member function may run at the same time.
//
// Concurrency. write() reads the limiters as they run (a count racing it
// lands in this snapshot or the next, never in both: see the window's
// export_counts and the credit's give_back); restore() writes them and must
// not race any other use (the account holds admissions off while it runs).
#ifndef TOLLGATE_ACCOUNT_SNAPSHOT_HPP
#define TOLLGATE_ACCOUNT_SNAPSHOT_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/config.hpp>
#include <tollgate/account/credit.hpp>
#include <tollgate/account/learn.hpp>
#include <tollgate/account/limiters.hpp>
#include <tollgate/account/pause.hpp>
#include <tollgate/account/server_remaining.hpp>
#include <tollgate/detail/arith.hpp>

#include <cstdint>
#include <limits>
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

// Why restore() refused (see the header comment); account::restore_errc.
enum class account_restore_errc : unsigned char {
  ok,
  bad_format,
  wrong_version,
  other_configuration,
  truncated,
  corrupted,
  out_of_range,  // a field does not fit this configuration (see above)
  in_use,        // the account has started taking traffic
};
namespace detail {

template <class Clock, class Currency>
struct account_codec {
  using limiters = account_limiters<Clock, Currency>;
  using window = typename limiters::window;
  using bucket = typename limiters::bucket;
  using credit = thread_credit<window>;
  using config_type = basic_account_config<Currency>;
  using count_list = std::vector<std::pair<std::uint64_t, std::uint64_t>>;
  using learn = learn_state<Clock>;
  static constexpr std::uint64_t version = 3;
  static constexpr std::uint64_t version_no_learn = 2;  // no learned words, no header gates
  static constexpr std::uint64_t version_slots = 1;  // 0.1.0's format: window ages in whole slots

  // A hash of everything that shapes the state: a snapshot only restores
  // into an account configured the same way.
  static std::uint64_t fingerprint(const config_type& c) noexcept {
    byte_writer w;
    for (const limit* l : {&c.concurrency, &c.rpm, &c.tpm, &c.tpd}) {
      w.u64(static_cast<std::uint64_t>(l->what()));
      w.u64(l->value().value_or(0));
    }
    w.u64(static_cast<std::uint64_t>(c.model));
    w.u64(c.calendar_day ? 1 : 0);
    w.u64(static_cast<std::uint64_t>(c.utc_offset.count()));
    w.u64(c.max_request_tokens);
    w.u64(c.budget ? static_cast<std::uint64_t>(c.budget->nanos()) : 0);
    w.u64(static_cast<std::uint64_t>(c.request_window.count()));
    w.u64(static_cast<std::uint64_t>(c.token_window.count()));
    // The budget's currency (USD, the first, adds nothing: fingerprints of
    // USD accounts are those of 0.1.0, so their snapshots still restore).
    if (!std::is_same<Currency, usd_tag>::value) w.raw(Currency::code.data(), Currency::code.size());
    return w.checksum();
  }

  // The limiters alone (no learn state, no gates in force): for tests of the codec.
  static std::string write(const config_type& cfg, const limiters& d, const credit& cr, const pause_state& p,
                           nanoseconds now, nanoseconds wall) {
    const learn ls;
    const remaining_gates g;
    return write(cfg, d, cr, p, ls, g, now, wall);
  }
  static account_restore_errc restore(const config_type& cfg, limiters& d, credit& cr, pause_state& ps,
                                      std::string_view bytes, nanoseconds now, nanoseconds wall) {
    learn ls;
    remaining_gates g;
    return restore(cfg, d, cr, ps, ls, g, bytes, now, wall);
  }

  static std::string write(const config_type& cfg, const limiters& d, const credit& cr, const pause_state& p,
                           const learn& ls, const remaining_gates& g, nanoseconds now, nanoseconds wall) {
    byte_writer w;
    w.raw("TGA1", 4);
    w.u64(version);
    w.u64(fingerprint(cfg));
    w.u64(static_cast<std::uint64_t>(wall.count()));
    w.u64(p.stopped() ? 1 : 0);
    w.u64(detail::positive_difference(p.until(), now.count()));
    const std::optional<window>* ws[credit::kinds] = {&d.rpm_w, &d.tpm_w, &d.tpd_w};
    for (unsigned k = 0; k < credit::kinds; ++k) {
      const std::optional<window>* x = ws[k];
      if (!*x) continue;
      // Credit not yet spent is not carried: like an admission that has not
      // happened yet, it is not part of the state at this moment.
      const auto counts = (*x)->export_counts(now, [&](std::uint64_t j) { return cr.in_slot(k, j); });
      w.u64((*x)->unit());
      w.u64(counts.size());
      for (const auto& e : counts) {
        w.u64(e.first);
        w.u64(e.second);
      }
    }
    for (const std::optional<bucket>* x : {&d.rpm_b, &d.tpm_b})
      if (*x) w.u64(static_cast<std::uint64_t>((*x)->owed(now).count()));
    if (d.day_q) w.u64(d.day_q->export_word());
    if (d.money) {
      const auto t = d.money->export_totals();
      // A settle racing this read can show its spend before its commit:
      // committed is never below spent.
      w.u64(static_cast<std::uint64_t>(t.first > t.second ? t.first : t.second));
      w.u64(static_cast<std::uint64_t>(t.second));
    }
    if (ls.on()) {
      const typename learn::saved_words lw = ls.save(now);
      for (unsigned k = 0; k < 2; ++k) {
        if (!ls.has(k)) continue;
        for (std::uint64_t x : {lw.since[k], lw.guard[k], lw.lead[k], lw.owed[k]}) w.u64(x);
      }
      w.u64(lw.margin);
      w.u64(lw.widenings);
    }
    std::uint64_t gw[4] = {0, 0, 0, 0};
    g.save(now, gw);
    for (std::uint64_t x : gw) w.u64(x);
    w.u64(w.checksum());
    return w.out;
  }


  // Reads one window's entries (format 2: unit, n, n x (time left, units);
  // format 1: n, n x (age, units)) as (time left at the snapshot, units of
  // this window), checking every field.
  static account_restore_errc read_window(byte_reader& r, std::uint64_t ver, const window& w, count_list& out) {
    using WL = detail::window_limits;
    constexpr std::uint64_t K = window::subwindows;
    std::uint64_t unit = w.unit(), n = 0;
    if (ver != version_slots) {
      if (!r.u64(unit)) return account_restore_errc::truncated;
      if (unit == 0) return account_restore_errc::out_of_range;
    }
    if (!r.u64(n)) return account_restore_errc::truncated;
    if (n > K + 1) return account_restore_errc::out_of_range;  // a window holds K + 1 slots
    if (r.left() / 16 < n) return account_restore_errc::truncated;
    const std::uint64_t horizon = static_cast<std::uint64_t>(w.import_horizon().count());
    const std::uint64_t width = static_cast<std::uint64_t>(w.slot_width().count());
    std::uint64_t prev = 0;
    for (std::uint64_t k = 0; k < n; ++k) {
      std::uint64_t a = 0, units = 0;
      (void)r.u64(a);
      (void)r.u64(units);
      if (units == 0 || units > WL::max_units) return account_restore_errc::out_of_range;
      std::uint64_t left = 0;
      if (ver == version_slots) {
        // Ages from oldest to newest, each in the window. Kept as if the
        // snapshot was taken at the start of its slot: the longest it can
        // have had to stay.
        if (a > K || (k > 0 && a >= prev)) return account_restore_errc::out_of_range;
        left = detail::sat_mul(K + 1 - a, width);
      } else {
        // Times left, soonest first, within the window's horizon.
        if (a == 0 || a > horizon || (k > 0 && a <= prev)) return account_restore_errc::out_of_range;
        left = a;
      }
      prev = a;
      // The snapshot's units in this window's (equal unless the limit was
      // changed live across 16,777,215 tokens), rounded up.
      out.emplace_back(left, detail::mul_div_ceil(units, unit, w.unit()));
    }
    return account_restore_errc::ok;
  }

  // The most a bucket can owe: its whole tick range, rounded up.
  static std::uint64_t max_owed(const bucket& b) noexcept {
    const std::uint64_t m = detail::sat_add(detail::sat_add(static_cast<std::uint64_t>(b.horizon().count()),
                                                            detail::sat_mul(b.burst(), static_cast<std::uint64_t>(b.interval().count()))),
                                            1);
    const std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    return m > top ? top : m;
  }

  static account_restore_errc restore(const config_type& cfg, limiters& d, credit& cr, pause_state& ps, learn& ls,
                                      remaining_gates& g, std::string_view bytes, nanoseconds now, nanoseconds wall) {
    detail::byte_reader r{bytes};
    if (bytes.size() < 12 || bytes.substr(0, 4) != "TGA1" || !r.skip(4)) return account_restore_errc::bad_format;
    // The checksum covers every byte before it: check it first, so nothing
    // below reads a corrupted length.
    if (bytes.size() < 4 + 8 * 6) return account_restore_errc::truncated;
    detail::byte_reader tail{bytes.substr(bytes.size() - 8)};
    std::uint64_t sum = 0;
    (void)tail.u64(sum);
    if (detail::fnv1a(bytes.substr(0, bytes.size() - 8)) != sum) return account_restore_errc::corrupted;
    r.in = bytes.substr(0, bytes.size() - 8);  // the fields only
    std::uint64_t ver = 0, fp = 0, then = 0, stop = 0, pause = 0;
    if (!r.u64(ver) || !r.u64(fp) || !r.u64(then) || !r.u64(stop) || !r.u64(pause)) return account_restore_errc::truncated;
    if (ver != version && ver != version_no_learn && ver != version_slots) return account_restore_errc::wrong_version;
    // server_model::learn and the header gates came with format 3: no older
    // snapshot of such an account exists, and one rewritten as older would
    // restore as a restart that learned nothing and saw no headers.
    if (ver != version && (cfg.model == server_model::learn || cfg.trust_rate_limit_headers))
      return account_restore_errc::wrong_version;
    if (fp != fingerprint(cfg)) return account_restore_errc::other_configuration;
    constexpr std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    if (stop > 1 || pause > top) return account_restore_errc::out_of_range;
    count_list win[credit::kinds];
    std::optional<window>* ws[credit::kinds] = {&d.rpm_w, &d.tpm_w, &d.tpd_w};
    for (unsigned i = 0; i < credit::kinds; ++i) {
      if (!*ws[i]) continue;
      const account_restore_errc e = read_window(r, ver, **ws[i], win[i]);
      if (e != account_restore_errc::ok) return e;
    }
    std::uint64_t owed[2] = {0, 0}, day_word = 0, committed = 0, spent = 0;
    std::optional<bucket>* bs[2] = {&d.rpm_b, &d.tpm_b};
    for (int i = 0; i < 2; ++i) {
      if (!*bs[i]) continue;
      if (!r.u64(owed[i])) return account_restore_errc::truncated;
      if (owed[i] > max_owed(**bs[i])) return account_restore_errc::out_of_range;
    }
    if (d.day_q) {
      if (!r.u64(day_word)) return account_restore_errc::truncated;
      // A day after tomorrow (a clock a day ahead is allowed for) would
      // refuse everything as stale for as long.
      if ((day_word >> calendar_quota<Clock>::used_bits) > d.day_q->day_at(now) + 1) return account_restore_errc::out_of_range;
    }
    if (d.money) {
      if (!r.u64(committed) || !r.u64(spent)) return account_restore_errc::truncated;
      // Non-negative, and nothing spent that was not committed. Committed
      // may pass the limit (calls that cost more than they reserved): that
      // budget refuses everything, as before the restart.
      if (committed > top || spent > top || spent > committed) return account_restore_errc::out_of_range;
    }
    typename learn::saved_words lw;
    std::uint64_t gw[4] = {0, 0, 0, 0};
    const bool learned = ver == version && ls.on();
    if (learned) {
      for (unsigned k = 0; k < 2; ++k) {
        if (!ls.has(k)) continue;
        if (!r.u64(lw.since[k]) || !r.u64(lw.guard[k]) || !r.u64(lw.lead[k]) || !r.u64(lw.owed[k]))
          return account_restore_errc::truncated;
      }
      if (!r.u64(lw.margin) || !r.u64(lw.widenings)) return account_restore_errc::truncated;
      if (!ls.fits(lw)) return account_restore_errc::out_of_range;
    }
    if (ver == version) {
      for (std::uint64_t& x : gw)
        if (!r.u64(x)) return account_restore_errc::truncated;
      if (gw[0] > top || gw[2] > top) return account_restore_errc::out_of_range;
    }
    if (r.left() != 0) return account_restore_errc::truncated;

    // Everything checked: apply. The wall-clock time between snapshot and
    // restore, zero if the clock went backwards.
    const detail::i128 gap = static_cast<detail::i128>(wall.count()) - static_cast<std::int64_t>(then);
    const std::uint64_t down = gap <= 0 ? 0 : gap >= static_cast<detail::i128>(top) ? top : static_cast<std::uint64_t>(gap);
    // Credit lines hold nothing in a fresh account; cleared all the same,
    // since what they would hold was counted against the replaced counts.
    cr.clear_windows();
    for (unsigned i = 0; i < credit::kinds; ++i) {
      if (!*ws[i]) continue;
      count_list aged;
      for (const auto& e : win[i])
        if (e.first > down) aged.emplace_back(e.first - down, e.second);
      (*ws[i])->import_counts(now, aged);
    }
    for (int i = 0; i < 2; ++i)
      if (*bs[i]) (*bs[i])->restore_owed(nanoseconds(static_cast<std::int64_t>(owed[i] > down ? owed[i] - down : 0)), now);
    if (d.day_q) d.day_q->import_word(day_word);
    if (d.money) d.money->import_totals(static_cast<std::int64_t>(committed), static_cast<std::int64_t>(spent));
    // A stop set before the restore (a quota error already seen) stays, as a
    // misconfigured account stays stopped: a restore only adds restrictions.
    ps.restore_stop(stop != 0 || ps.stopped());
    if (pause > down) ps.pause_for(nanoseconds(static_cast<std::int64_t>(pause - down)), now);
    if (learned) ls.load(lw, now, down);
    g.load(gw, now, down);
    return account_restore_errc::ok;
  }
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SNAPSHOT_HPP
