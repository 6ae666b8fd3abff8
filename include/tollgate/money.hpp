// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// money.hpp: exact fixed-point money, one type per currency.
//
// An amount is a signed 64-bit count of nano-units (10^-9 of a dollar or a
// yuan): up to about 9.2 billion units either way. Every price this library
// knows is a whole number of nano-units per token ($0.95 per million tokens =
// 950 nano-dollars per token), so the ledger never rounds. Rounding happens
// only when formatting for display: half away from zero, to the decimals
// asked for. USD and CNY are different types; adding one to the other, or
// comparing them, does not compile.
//
// Overflow is never silent: the operators throw money_overflow (or, without
// exceptions, print the reason and abort); the checked_* functions report it
// through their return value instead.
#ifndef TOLLGATE_MONEY_HPP
#define TOLLGATE_MONEY_HPP

#include <tollgate/config.hpp>
#include <tollgate/detail/arith.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#if !TOLLGATE_NO_EXCEPTIONS
#include <stdexcept>
#endif

TOLLGATE_BEGIN_NAMESPACE

struct usd_tag {
  static constexpr std::string_view code = "USD";
  static constexpr std::string_view symbol = "$";
};
struct cny_tag {
  static constexpr std::string_view code = "CNY";
  static constexpr std::string_view symbol = "\xC2\xA5";  // U+00A5 YEN SIGN, as the CN price pages write it
};

#if !TOLLGATE_NO_EXCEPTIONS
class money_overflow : public std::overflow_error {
 public:
  money_overflow() : std::overflow_error("tollgate: money amount overflows 64 bits of nano-units") {}
};
#endif

namespace detail {
[[noreturn]] inline void money_overflowed() {
#if !TOLLGATE_NO_EXCEPTIONS
  throw money_overflow();
#else
  std::fputs("tollgate: money amount overflows 64 bits of nano-units\n", stderr);
  std::abort();
#endif
}
}  // namespace detail

template <class Currency>
class money {
 public:
  using currency = Currency;
  static constexpr std::int64_t nanos_per_unit = 1000000000;

  constexpr money() noexcept = default;
  static constexpr money from_nanos(std::int64_t n) noexcept { return money(n); }
  // Whole units: from_units(3) is 3.00.
  static constexpr money from_units(std::int64_t units) {
    if (units > std::numeric_limits<std::int64_t>::max() / nanos_per_unit ||
        units < std::numeric_limits<std::int64_t>::min() / nanos_per_unit)
      detail::money_overflowed();
    return money(units * nanos_per_unit);
  }
  static constexpr money max() noexcept { return money(std::numeric_limits<std::int64_t>::max()); }

  constexpr std::int64_t nanos() const noexcept { return n_; }

  friend constexpr bool operator==(money a, money b) noexcept { return a.n_ == b.n_; }
  friend constexpr bool operator!=(money a, money b) noexcept { return a.n_ != b.n_; }
  friend constexpr bool operator<(money a, money b) noexcept { return a.n_ < b.n_; }
  friend constexpr bool operator<=(money a, money b) noexcept { return a.n_ <= b.n_; }
  friend constexpr bool operator>(money a, money b) noexcept { return a.n_ > b.n_; }
  friend constexpr bool operator>=(money a, money b) noexcept { return a.n_ >= b.n_; }

  // false on overflow (and `out` untouched).
  friend constexpr bool checked_add(money a, money b, money& out) noexcept {
    std::int64_t r = 0;
    if (__builtin_add_overflow(a.n_, b.n_, &r)) return false;
    out = money(r);
    return true;
  }
  friend constexpr bool checked_sub(money a, money b, money& out) noexcept {
    std::int64_t r = 0;
    if (__builtin_sub_overflow(a.n_, b.n_, &r)) return false;
    out = money(r);
    return true;
  }
  friend constexpr bool checked_mul(money a, std::int64_t k, money& out) noexcept {
    std::int64_t r = 0;
    if (__builtin_mul_overflow(a.n_, k, &r)) return false;
    out = money(r);
    return true;
  }
  friend constexpr money operator+(money a, money b) {
    money r;
    if (!checked_add(a, b, r)) detail::money_overflowed();
    return r;
  }
  friend constexpr money operator-(money a, money b) {
    money r;
    if (!checked_sub(a, b, r)) detail::money_overflowed();
    return r;
  }
  friend constexpr money operator*(money a, std::int64_t k) {
    money r;
    if (!checked_mul(a, k, r)) detail::money_overflowed();
    return r;
  }
  constexpr money operator-() const {
    if (n_ == std::numeric_limits<std::int64_t>::min()) detail::money_overflowed();
    return money(-n_);
  }
  constexpr money& operator+=(money b) { return *this = *this + b; }
  constexpr money& operator-=(money b) { return *this = *this - b; }

 private:
  constexpr explicit money(std::int64_t n) noexcept : n_(n) {}
  std::int64_t n_ = 0;
};

using usd = money<usd_tag>;
using cny = money<cny_tag>;

// Formats with the currency symbol and `decimals` (0..9) fraction digits,
// rounding half away from zero: format(usd 3.899999999) == "$3.90";
// negative amounts as "-$1.50".
template <class C>
std::string format(money<C> m, int decimals = 2) {
  if (decimals < 0) decimals = 0;
  if (decimals > 9) decimals = 9;
  const bool neg = m.nanos() < 0;
  // Magnitude as unsigned: INT64_MIN has no positive int64.
  std::uint64_t mag = neg ? 0 - static_cast<std::uint64_t>(m.nanos()) : static_cast<std::uint64_t>(m.nanos());
  std::uint64_t step = 1;
  for (int i = decimals; i < 9; ++i) step *= 10;
  std::uint64_t q = mag / step;
  if ((mag % step) * 2 >= step) ++q;  // half away from zero
  std::uint64_t scale = 1;
  for (int i = 0; i < decimals; ++i) scale *= 10;
  const std::uint64_t whole = q / scale, frac = q % scale;
  char buf[48];
  if (decimals == 0)
    std::snprintf(buf, sizeof buf, "%llu", static_cast<unsigned long long>(whole));
  else
    std::snprintf(buf, sizeof buf, "%llu.%0*llu", static_cast<unsigned long long>(whole), decimals,
                  static_cast<unsigned long long>(frac));
  std::string out;
  if (neg && (whole != 0 || frac != 0)) out += '-';
  out += C::symbol;
  out += buf;
  return out;
}

// Why a money string was refused.
enum class parse_errc : unsigned char {
  ok = 0,
  empty,
  wrong_currency,   // a symbol or code other than this currency's
  bad_character,    // anything but digits, one '.', a leading sign and the symbol
  too_many_decimals,  // more than 9: finer than a nano-unit
  overflow,
};

constexpr const char* message(parse_errc e) noexcept {
  switch (e) {
    case parse_errc::ok: return "ok";
    case parse_errc::empty: return "empty amount";
    case parse_errc::wrong_currency: return "amount is in another currency";
    case parse_errc::bad_character: return "amount is not a decimal number";
    case parse_errc::too_many_decimals: return "amount has more than 9 decimals";
    case parse_errc::overflow: return "amount too large";
  }
  return "?";
}

// Parses "$0.95", "0.95", "-1.5", "USD 3.90", "¥27", "27.00 CNY". Exact: up
// to 9 decimals, never rounded. Spaces around the symbol or code are allowed.
template <class C>
constexpr parse_errc parse(std::string_view s, money<C>& out) noexcept {
  auto trim = [](std::string_view v) {
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
    return v;
  };
  s = trim(s);
  if (s.empty()) return parse_errc::empty;
  bool neg = false;
  if (s.front() == '-' || s.front() == '+') {
    neg = s.front() == '-';
    s = trim(s.substr(1));
  }
  // Currency marks: this currency's symbol or code in front, or its code behind.
  auto strip_front = [&](std::string_view mark) {
    if (s.size() >= mark.size() && s.substr(0, mark.size()) == mark) {
      s = trim(s.substr(mark.size()));
      return true;
    }
    return false;
  };
  if (!strip_front(C::symbol) && !strip_front(C::code)) {
    if (s.size() >= C::code.size() && s.substr(s.size() - C::code.size()) == C::code)
      s = trim(s.substr(0, s.size() - C::code.size()));
  }
  if (!neg && !s.empty() && s.front() == '-') {  // "$-1.5"
    neg = true;
    s = trim(s.substr(1));
  }
  if (s.empty()) return parse_errc::empty;
  std::uint64_t whole = 0, frac = 0;
  int frac_digits = -1, digits = 0;
  for (char ch : s) {
    if (ch == '.') {
      if (frac_digits >= 0) return parse_errc::bad_character;
      frac_digits = 0;
      continue;
    }
    if (ch < '0' || ch > '9') {
      const unsigned char u = static_cast<unsigned char>(ch);
      return (u >= 0x80 || ch == '$' || (ch >= 'A' && ch <= 'Z')) ? parse_errc::wrong_currency
                                                                 : parse_errc::bad_character;
    }
    ++digits;
    const std::uint64_t d = static_cast<std::uint64_t>(ch - '0');
    if (frac_digits < 0) {
      if (whole > (std::numeric_limits<std::uint64_t>::max() - d) / 10) return parse_errc::overflow;
      whole = whole * 10 + d;
    } else {
      if (++frac_digits > 9) return parse_errc::too_many_decimals;
      frac = frac * 10 + d;
    }
  }
  if (digits == 0) return parse_errc::bad_character;
  for (int i = frac_digits < 0 ? 0 : frac_digits; i < 9; ++i) frac *= 10;
  const detail::u128 total = static_cast<detail::u128>(whole) * 1000000000u + frac;
  const detail::u128 limit = neg ? static_cast<detail::u128>(std::numeric_limits<std::int64_t>::max()) + 1
                                 : static_cast<detail::u128>(std::numeric_limits<std::int64_t>::max());
  if (total > limit) return parse_errc::overflow;
  const std::uint64_t t = static_cast<std::uint64_t>(total);
  out = money<C>::from_nanos(neg ? static_cast<std::int64_t>(0 - t) : static_cast<std::int64_t>(t));
  return parse_errc::ok;
}

// A price per token, in nano-units: the same number as the price per million
// tokens in thousandths of a unit ($0.95 per 1M tokens = 950).
template <class C>
struct token_price {
  std::uint64_t nanos_per_token = 0;
  friend constexpr bool operator==(token_price a, token_price b) noexcept {
    return a.nanos_per_token == b.nanos_per_token;
  }
  friend constexpr bool operator!=(token_price a, token_price b) noexcept { return !(a == b); }
};

// The price of one million tokens, as money.
template <class C>
constexpr money<C> per_million(token_price<C> p) {
  if (p.nanos_per_token > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) / 1000000)
    detail::money_overflowed();
  return money<C>::from_nanos(static_cast<std::int64_t>(p.nanos_per_token * 1000000));
}

// A price given per million tokens as a money string ("0.95", "$0.95"). The
// price per token must come out whole in nano-units (at most 3 decimals per
// million tokens); anything finer cannot be billed exactly and is refused.
enum class price_errc : unsigned char { ok = 0, not_a_number, negative, finer_than_a_nano_unit };

template <class C>
constexpr price_errc price_per_million(std::string_view s, token_price<C>& out) noexcept {
  money<C> m;
  if (parse(s, m) != parse_errc::ok) return price_errc::not_a_number;
  if (m.nanos() < 0) return price_errc::negative;
  if (m.nanos() % 1000000 != 0) return price_errc::finer_than_a_nano_unit;
  out = token_price<C>{static_cast<std::uint64_t>(m.nanos() / 1000000)};
  return price_errc::ok;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_MONEY_HPP
