// libFuzzer target: Retry-After (seconds, fractions, HTTP-dates) and
// retry-after-ms on any bytes. A wait is never negative.
#include <tollgate/http.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  for (std::int64_t now : {0LL, 1790000000000000000LL, 9223372036854775807LL})
    if (auto d = tollgate::parse_retry_after(s, tollgate::nanoseconds(now)))
      if (d->count() < 0) __builtin_trap();
  if (auto d = tollgate::parse_retry_after_ms(s))
    if (d->count() < 0) __builtin_trap();
  return 0;
}
