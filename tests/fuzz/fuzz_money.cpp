// libFuzzer target: money amounts on any bytes. Whatever parses formats back
// and parses to the same amount at nine decimals.
#include <tollgate/money.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  tollgate::usd u;
  if (tollgate::parse(s, u) == tollgate::parse_errc::ok) {
    tollgate::usd again;
    if (tollgate::parse(tollgate::format(u, 9), again) != tollgate::parse_errc::ok || again != u) __builtin_trap();
  }
  tollgate::cny y;
  (void)tollgate::parse(s, y);
  return 0;
}
