// libFuzzer target: Go-style durations (`1s`, `6m0s`, `2h31m16.752s`) on any
// bytes. A duration is never negative.
#include <tollgate/http.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  if (auto d = tollgate::parse_go_duration(s))
    if (d->count() < 0) __builtin_trap();
  return 0;
}
