// shared_region: construct or attach in place, and every refusal.

#include "catch_compat.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace tollgate;

namespace Catch {
template <>
struct StringMaker<region_errc> {
  static std::string convert(region_errc e) { return message(e); }
};
}  // namespace Catch

namespace {
using bucket = token_bucket<manual_clock>;
constexpr std::size_t need = region_size<bucket>();

// Bytes aligned as a mapping would be.
struct alignas(4096) bytes_t {
  unsigned char b[8192];
};
static_assert(need <= sizeof(bytes_t), "");

region_options opts(std::uint64_t fp, std::uint64_t token) {
  region_options o;
  o.fingerprint = fp;
  o.token = token;
  return o;
}
auto make_bucket = [](void* at) { new (at) bucket(rate(10, std::chrono::seconds(1)), 5, std::chrono::nanoseconds(0)); };
}  // namespace

TEST_CASE("shared_region: the first opener builds, the next attaches to the same object", "[shared_region]") {
  static bytes_t mem{};
  const auto a = open_region<bucket>(mem.b, need, opts(7, 1), make_bucket);
  REQUIRE(a);
  CHECK(a.constructed);
  CHECK(a.error == region_errc::ok);
  CHECK(a.object->try_acquire(3, std::chrono::nanoseconds(0)).admitted());
  int built = 0;
  const auto b = open_region<bucket>(mem.b, need, opts(7, 2), [&](void*) { ++built; });
  REQUIRE(b);
  CHECK_FALSE(b.constructed);
  CHECK(built == 0);
  CHECK(b.object == a.object);
  CHECK(b.object->available(std::chrono::nanoseconds(0)) == 2);
  const auto c = attach_region<bucket>(mem.b, need, 7);
  REQUIRE(c);
  CHECK(c.object == a.object);
}

TEST_CASE("shared_region: refusals name the reason and change no byte", "[shared_region]") {
  static bytes_t mem{};
  REQUIRE(open_region<bucket>(mem.b, need, opts(7, 1), make_bucket));
  std::vector<unsigned char> before(mem.b, mem.b + need);
  auto same = [&] { return std::memcmp(before.data(), mem.b, need) == 0; };

  CHECK(attach_region<bucket>(mem.b, need, 8).error == region_errc::wrong_config);
  CHECK(open_region<bucket>(mem.b, need, opts(8, 3), make_bucket).error == region_errc::wrong_config);
  CHECK(attach_region<bucket>(mem.b, need + 64, 7).error == region_errc::wrong_size);
  CHECK(attach_region<sliding_window<manual_clock>>(mem.b, need, 7).error != region_errc::ok);
  CHECK(attach_region<concurrency_limiter>(mem.b, need, 7).error == region_errc::wrong_type);
  CHECK(attach_region<bucket>(nullptr, need, 7).error == region_errc::null_bytes);
  CHECK(attach_region<bucket>(mem.b, need - 1, 7).error == region_errc::too_small);
  CHECK(attach_region<bucket>(mem.b + 8, need, 7).error == region_errc::misaligned);
  CHECK(open_region<bucket>(mem.b, need, opts(7, 0), make_bucket).error == region_errc::bad_token);
  CHECK(open_region<bucket>(mem.b, need, opts(7, std::uint64_t{1} << 62), make_bucket).error ==
        region_errc::bad_token);
  CHECK(same());

  // Another layout version, a torn header (one field changed, the check word
  // not), another magic, a state word we never write: each refused.
  auto with = [&](std::size_t off, unsigned char v, region_errc want) {
    bytes_t copy = mem;
    copy.b[off] = static_cast<unsigned char>(copy.b[off] ^ v);
    const std::vector<unsigned char> snap(copy.b, copy.b + need);
    CHECK(attach_region<bucket>(copy.b, need, 7).error == want);
    CHECK(open_region<bucket>(copy.b, need, opts(7, 5), make_bucket).error == want);
    CHECK(std::memcmp(snap.data(), copy.b, need) == 0);
  };
  with(8, 1, region_errc::bad_magic);         // magic
  with(16, 1, region_errc::corrupt);          // version, check word not updated
  with(24, 1, region_errc::corrupt);          // size
  with(48, 1, region_errc::corrupt);          // object size
  with(56, 1, region_errc::corrupt);          // the check word itself
  with(0, 1, region_errc::bad_magic);         // state word: phase 3
  CHECK(same());
  {
    // A consistent header of another layout version.
    bytes_t copy = mem;
    auto* h = reinterpret_cast<detail::region_header*>(copy.b);
    h->version += 1;
    h->check = detail::region_check(*h);
    CHECK(attach_region<bucket>(copy.b, need, 7).error == region_errc::wrong_version);
  }
  {
    // Garbage: random bytes, with each possible phase.
    tgtest::rng g(tgtest::project_seed());
    for (int i = 0; i < 64; ++i) {
      bytes_t junk;
      for (auto& c : junk.b) c = static_cast<unsigned char>(g.next());
      junk.b[0] = static_cast<unsigned char>((junk.b[0] & ~3u) | 2u);  // claims ready
      INFO("seed " << tgtest::project_seed());
      const auto r = attach_region<bucket>(junk.b, need, 7);
      CHECK_FALSE(r);
      CHECK((r.error == region_errc::bad_magic || r.error == region_errc::corrupt));
    }
  }
}

namespace {
// Types of one shape, one named for regions and two not.
struct unnamed_a {
  std::uint64_t w[6];
};
struct unnamed_b {
  std::uint64_t w[6];
};
struct named_c {
  std::uint64_t w[6];
};
struct other_tag {};
}  // namespace

template <>
struct tollgate::region_key<named_c> {
  static constexpr std::uint64_t value = tollgate::region_name_key("tests.named_c/1");
};

namespace {
// Builds an A (with `make`) in a fresh region of A's size and attaches it as
// B; the attach's answer. A itself always attaches.
template <class A, class B, class Make>
region_errc attach_as(Make make) {
  static_assert(region_size<A>() == region_size<B>(), "a pair of one size: only the type can tell them apart");
  auto mem = std::make_unique<bytes_t>();
  REQUIRE(region_size<A>() <= sizeof(mem->b));
  REQUIRE(open_region<A>(mem->b, region_size<A>(), opts(0, 1), make));
  CHECK(attach_region<A>(mem->b, region_size<A>(), 0).error == region_errc::ok);
  const region_errc e = attach_region<B>(mem->b, region_size<B>(), 0).error;
  CHECK(open_region<B>(mem->b, region_size<B>(), opts(0, 2), [](void*) {}).error == e);
  return e;
}
}  // namespace

// The type key names the primitive, its clock, its currency and its
// sub-windows, not only its size (pairs of one size, fingerprint 0 for both).
TEST_CASE("shared_region: an object never attaches as another type of its size", "[shared_region]") {
  using std::chrono::nanoseconds;
  auto budget_usd = [](void* at) { new (at) budget<usd_tag>(usd::from_units(10)); };
  CHECK(attach_as<budget<usd_tag>, budget<cny_tag>>(budget_usd) == region_errc::wrong_type);
  auto steady_bucket = [](void* at) { new (at) token_bucket<tollgate::steady_clock>(per_second(10), 10, nanoseconds(0)); };
  CHECK(attach_as<token_bucket<tollgate::steady_clock>, token_bucket<tollgate::system_clock>>(steady_bucket) == region_errc::wrong_type);
  CHECK(attach_as<token_bucket<tollgate::steady_clock>, token_bucket<coarse_clock>>(steady_bucket) == region_errc::wrong_type);
  CHECK(attach_as<token_bucket<tollgate::steady_clock>, token_bucket<manual_clock>>(steady_bucket) == region_errc::wrong_type);
  CHECK(attach_as<token_bucket<tollgate::steady_clock>, token_bucket<region_clock>>(steady_bucket) == region_errc::wrong_type);
  CHECK(attach_as<token_bucket<manual_clock>, token_bucket<basic_manual_clock<other_tag>>>([](void* at) {
          new (at) token_bucket<manual_clock>(per_second(10), 10, nanoseconds(0));
        }) == region_errc::wrong_type);
  auto steady_window = [](void* at) { new (at) sliding_window<tollgate::steady_clock>(per_minute(100), nanoseconds(0)); };
  CHECK(attach_as<sliding_window<tollgate::steady_clock>, sliding_window<tollgate::system_clock>>(steady_window) ==
        region_errc::wrong_type);
  static_assert(sizeof(sliding_window<tollgate::steady_clock, 15>) == sizeof(sliding_window<tollgate::steady_clock, 14>),
                "15 and 14 sub-windows take one size");
  CHECK(attach_as<sliding_window<tollgate::steady_clock, 15>, sliding_window<tollgate::steady_clock, 14>>(steady_window) ==
        region_errc::wrong_type);
  auto quota = [](void* at) { new (at) calendar_quota<tollgate::system_clock>(100); };
  CHECK(attach_as<calendar_quota<tollgate::system_clock>, calendar_quota<tollgate::steady_clock>>(quota) == region_errc::wrong_type);
  auto limiter = [](void* at) { new (at) concurrency_limiter(2); };
  CHECK(attach_as<concurrency_limiter, calendar_quota<tollgate::system_clock>>(limiter) == region_errc::wrong_type);
  CHECK(attach_as<concurrency_limiter, budget<usd_tag>>(limiter) == region_errc::wrong_type);
  CHECK(attach_as<calendar_quota<tollgate::system_clock>, budget<usd_tag>>(quota) == region_errc::wrong_type);
  // Types of your own: a named one is told apart from an unnamed one of its
  // shape. Two unnamed ones of one shape are not (the stated weakness: name
  // your types).
  auto a = [](void* at) { new (at) unnamed_a{}; };
  CHECK(attach_as<unnamed_a, named_c>(a) == region_errc::wrong_type);
  CHECK(attach_as<named_c, unnamed_a>([](void* at) { new (at) named_c{}; }) == region_errc::wrong_type);
  CHECK(attach_as<unnamed_a, unnamed_b>(a) == region_errc::ok);
  CHECK(region_key<named_c>::value != 0);
  CHECK(region_key<unnamed_a>::value == 0);
}

TEST_CASE("shared_region: a constructor that died is refused, or taken over when the check says dead",
          "[shared_region]") {
  static bytes_t mem{};
  // Another opener won the region and stopped before it was ready.
  auto* h = reinterpret_cast<detail::region_header*>(mem.b);
  h->state.store((42u << 2) | 1u);
  int built = 0;
  auto count = [&](void* at) {
    ++built;
    make_bucket(at);
  };
  CHECK(open_region<bucket>(mem.b, need, opts(7, 1), count).error == region_errc::constructing);
  CHECK(attach_region<bucket>(mem.b, need, 7).error == region_errc::constructing);
  region_options o = opts(7, 1);
  std::uint64_t asked = 0;
  o.context = &asked;
  o.alive = [](std::uint64_t token, void* ctx) {
    *static_cast<std::uint64_t*>(ctx) = token;
    return true;
  };
  CHECK(open_region<bucket>(mem.b, need, o, count).error == region_errc::constructing);
  CHECK(asked == 42);
  CHECK(built == 0);
  o.alive = [](std::uint64_t, void*) { return false; };
  const auto r = open_region<bucket>(mem.b, need, o, count);
  REQUIRE(r);
  CHECK(r.constructed);
  CHECK(built == 1);
  CHECK(attach_region<bucket>(mem.b, need, 7).object == r.object);
}

TEST_CASE("shared_region: openers racing build one object", "[shared_region]") {
  for (int round = 0; round < 50; ++round) {
    static bytes_t mem;
    std::memset(mem.b, 0, sizeof mem.b);
    std::atomic<int> built{0}, go{0}, odd{0};
    std::vector<bucket*> seen(4, nullptr);
    std::vector<std::thread> ts;
    for (int i = 0; i < 4; ++i)
      ts.emplace_back([&, i] {
        go.fetch_add(1);
        while (go.load() < 4) std::this_thread::yield();
        for (;;) {
          const auto r = open_region<bucket>(mem.b, need, opts(7, static_cast<std::uint64_t>(i + 1)), [&](void* at) {
            built.fetch_add(1);
            make_bucket(at);
          });
          if (r) {
            seen[static_cast<std::size_t>(i)] = r.object;
            return;
          }
          if (r.error != region_errc::constructing) {  // else the winner is still building: try again
            odd.fetch_add(1);
            return;
          }
          std::this_thread::yield();
        }
      });
    for (auto& t : ts) t.join();
    CHECK(odd.load() == 0);
    CHECK(built.load() == 1);
    for (bucket* b : seen) CHECK(b == seen[0]);
  }
}

// Lease renewal: a short lease_timeout with a long stream that renews keeps
// its slot; once it stops renewing, the slot comes back after the timeout.
TEST_CASE("account: lease renewal keeps a long stream's slot under a short lease_timeout",
          "[account][shared_region]") {
  using std::chrono::milliseconds;
  using std::chrono::seconds;
  account_config c;
  c.concurrency = limit(1);
  c.lease_timeout = seconds(2);
  account<manual_clock> a(c, seconds(0));
  request r;
  r.prompt_tokens = 10;
  r.max_tokens = 10;
  auto stream = a.try_admit(r, seconds(0));
  REQUIRE(stream);
  // A stream of 6 s, renewed every 1.5 s: nobody else gets the slot.
  for (int i = 1; i <= 4; ++i) {
    const auto t = milliseconds(1500 * i);
    CHECK(stream.lease.renew(t));
    CHECK(a.try_admit(r, t + milliseconds(400)).refused.has(dimension::concurrency));
  }
  // It stops renewing at 6 s: the slot comes back after 2 s (and a scan).
  CHECK(a.try_admit(r, milliseconds(7000)).refused.has(dimension::concurrency));
  auto next = a.try_admit(r, milliseconds(8200));
  REQUIRE(next);
  CHECK(a.stats().reclaimed == 1);
  CHECK_FALSE(stream.lease.renew(milliseconds(8300)));  // reaped: it holds no slot any more
  stream.lease.settle_failed(milliseconds(8400));
  CHECK(a.in_flight() == 1);  // the reaped slot was not returned twice
  // Without renewal the same stream loses its slot at 2 s.
  account<manual_clock> b(c, seconds(0));
  auto lone = b.try_admit(r, seconds(0));
  REQUIRE(lone);
  CHECK(b.try_admit(r, milliseconds(2200)));
}
