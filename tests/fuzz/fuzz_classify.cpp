// libFuzzer target: the error classifier and the rate-limit header reader
// must accept any bytes. Built with clang -fsanitize=fuzzer,address,undefined.
#include <tollgate/http.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  const int status = size > 0 ? 200 + data[0] * 2 : 429;
  const tollgate::error_info e = tollgate::classify(status, s);
  if (e.message.size() > s.size() || e.type.size() > s.size()) __builtin_trap();
  tollgate::rate_limit_headers h;
  const std::size_t cut = size / 2;
  h.read(s.substr(0, cut), s.substr(cut), tollgate::nanoseconds(0));
  h.read("x-ratelimit-reset-tokens", s, tollgate::nanoseconds(0));
  h.read("retry-after", s, tollgate::nanoseconds(1790000000000000000LL));
  (void)h.retry_hint();
  return 0;
}
