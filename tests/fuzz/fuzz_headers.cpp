// libFuzzer target: the rate-limit header reader, with any bytes as a header
// name and value (the input is cut in two at its first byte's position).
#include <tollgate/http.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  const std::size_t cut = size > 0 ? data[0] % (size + 1) : 0;
  tollgate::rate_limit_headers h;
  (void)h.read(s.substr(0, cut), s.substr(cut), tollgate::nanoseconds(1790000000000000000LL));
  // Every known header name with the whole input as its value.
  for (std::string_view name : {"x-ratelimit-limit-requests", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-requests",
                                "x-ratelimit-reset-tokens", "retry-after-ms", "retry-after", "x-retry-after"})
    if (!h.read(name, s, tollgate::nanoseconds(0))) __builtin_trap();
  if (auto d = h.retry_hint())
    if (d->count() < 0) __builtin_trap();
  return 0;
}
