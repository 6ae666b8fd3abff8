// libFuzzer target: durations, dates, money and the token estimator on any
// bytes. Checks a few invariants besides "no crash, no sanitizer report".
#include <tollgate/estimate.hpp>
#include <tollgate/http.hpp>
#include <tollgate/money.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  if (auto d = tollgate::parse_retry_after(s, tollgate::nanoseconds(1790000000000000000LL)))
    if (d->count() < 0) __builtin_trap();
  if (auto d = tollgate::parse_retry_after_ms(s))
    if (d->count() < 0) __builtin_trap();
  if (auto d = tollgate::parse_go_duration(s))
    if (d->count() < 0) __builtin_trap();
  tollgate::usd u;
  if (tollgate::parse(s, u) == tollgate::parse_errc::ok) {
    // Whatever parsed formats back and parses to the same amount at 9 decimals.
    tollgate::usd again;
    if (tollgate::parse(tollgate::format(u, 9), again) != tollgate::parse_errc::ok || again != u) __builtin_trap();
  }
  const tollgate::text_census c = tollgate::census(s);
  if (c.ascii + c.cjk + c.other + c.invalid_bytes > size) __builtin_trap();
  if (tollgate::estimate_tokens(s) > size + 1) __builtin_trap();
  return 0;
}
