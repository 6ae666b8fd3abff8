// The hiredis adapter (redis/hiredis.hpp), built only when hiredis is found:
//   one server: the account through hiredis, SCRIPT FLUSH (the EVAL
//     fallback), a killed server (an error reply, fail closed) and the
//     reconnection after it comes back;
//   a three-node Redis Cluster on loopback ports: MOVED (the executor starts
//     at a node that does not own the account's slot, follows, and stays at
//     the owner), ASK while the slot migrates (the keys moved first: the call
//     goes to the importing node after ASKING, later calls still start at
//     the owner), and MOVED again once the slot has moved. Runs about 5 s.
#include "../catch_compat.hpp"
#include "../account_support.hpp"
#include "../support.hpp"
#include "../tollgate_under_test.hpp"
#include "redis_support.hpp"

#include <tollgate/redis/account.hpp>
#include <tollgate/redis/hiredis.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

using namespace tollgate;
namespace tr = tollgate::redis;
using tgredis::client;
using tgredis::server;

namespace {

constexpr std::int64_t us = 1000;
constexpr std::int64_t sec = 1000000 * us;
using hi_account = tr::account<tr::hiredis_executor>;

account_config small_config() {
  account_config c;
  c.model = server_model::sliding_log;
  c.concurrency = limit(3);
  c.rpm = limit(100);
  c.tpm = limit(100000);
  c.lease_timeout = std::chrono::seconds(30);
  return c;
}

// A free port whose cluster bus port (port + 10000) is free too.
int cluster_port() {
  for (int i = 0; i < 200; ++i) {
    const int p = tgredis::free_port();
    if (p <= 0 || p > 55535) continue;
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(p + 10000));
    const bool free_bus = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    if (fd >= 0) ::close(fd);
    if (free_bus) return p;
  }
  return -1;
}

// Three cluster nodes on free loopback ports, their files in a directory of
// their own under the system's temporary directory; killed (and the
// directory removed) on destruction.
class cluster {
 public:
  cluster() {
    namespace fs = std::filesystem;
    dir_ = fs::temp_directory_path() / ("tollgate-cluster-" + std::to_string(::getpid()));
    std::error_code ec;
    fs::create_directories(dir_, ec);
    const std::string bin = tgredis::server_binary();
    for (int i = 0; i < 3 && !bin.empty(); ++i) {
      const int port = cluster_port();
      if (port < 0) break;
      const std::string p = std::to_string(port), conf = "nodes-" + p + ".conf", d = dir_.string();
      const pid_t pid = ::fork();
      if (pid == 0) {
        const int null_fd = ::open("/dev/null", O_WRONLY);
        if (null_fd >= 0) ::dup2(null_fd, 1);
        ::execl(bin.c_str(), bin.c_str(), "--port", p.c_str(), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                "no", "--cluster-enabled", "yes", "--cluster-config-file", conf.c_str(), "--dir", d.c_str(),
                "--loglevel", "warning", static_cast<char*>(nullptr));
        ::_exit(127);
      }
      if (pid > 0) {
        pids_.push_back(pid);
        ports_.push_back(port);
      }
    }
  }
  ~cluster() {
    for (pid_t p : pids_) {
      ::kill(p, SIGKILL);
      int st = 0;
      ::waitpid(p, &st, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  cluster(const cluster&) = delete;
  cluster& operator=(const cluster&) = delete;
  const std::vector<int>& ports() const { return ports_; }

  // Up, joined with every slot assigned, and agreed (bounded: 15 s).
  bool form() {
    if (ports_.size() != 3) return false;
    for (int port : ports_) {
      bool up = false;
      for (int i = 0; i < 50 && !up; ++i) {
        client c;
        up = c.connect(port, 200) && c.call({"PING"}).str == "PONG";
        if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (!up) return false;
    }
    // Slots split in three, then the nodes introduced (what
    // `redis-cli --cluster create` does, without depending on redis-cli).
    const int bounds[4] = {0, 5461, 10923, 16384};
    for (std::size_t i = 0; i < 3; ++i) {
      client c(ports_[i]);
      std::vector<std::string> cmd = {"CLUSTER", "ADDSLOTSRANGE", std::to_string(bounds[i]), std::to_string(bounds[i + 1] - 1)};
      if (c.call(cmd).type != tr::reply::kind::status) return false;
    }
    client first(ports_[0]);
    for (std::size_t i = 1; i < 3; ++i)
      if (first.call({"CLUSTER", "MEET", "127.0.0.1", std::to_string(ports_[i])}).type != tr::reply::kind::status)
        return false;
    for (int i = 0; i < 150; ++i) {
      bool ok = true;
      for (int port : ports_) {
        client c(port);
        const tr::reply r = c.call({"CLUSTER", "INFO"});
        ok = ok && r.type == tr::reply::kind::string && r.str.find("cluster_state:ok") != std::string::npos &&
             r.str.find("cluster_known_nodes:3") != std::string::npos;
      }
      if (ok) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  std::string id(int port) {
    client c(port);
    return c.call({"CLUSTER", "MYID"}).str;
  }
  // The port of the node that owns `slot`, as node `asked` sees it.
  int owner(long slot, int asked) {
    client c(asked);
    const tr::reply r = c.call({"CLUSTER", "SLOTS"});
    for (const tr::reply& range : r.elements) {
      if (range.elements.size() < 3) continue;
      if (slot >= range.elements[0].integer && slot <= range.elements[1].integer)
        return static_cast<int>(range.elements[2].elements[1].integer);
    }
    return -1;
  }

 private:
  std::filesystem::path dir_;
  std::vector<pid_t> pids_;
  std::vector<int> ports_;
};

}  // namespace

TEST_CASE("redis hiredis: the account through hiredis; a killed server, then back", "[redis_server][hiredis]") {
  server srv;
  REQUIRE(srv.running());
  client admin(srv.port());
  const nanoseconds t0(1700000000 * sec);
  hi_account a("hiredis", small_config(), tr::hiredis_executor("127.0.0.1", srv.port(), std::chrono::milliseconds(300)),
               tr::options{true});
  REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
  int admitted = 0;
  for (int i = 0; i < 20; ++i) {
    if (i == 10) REQUIRE(admin.call({"SCRIPT", "FLUSH"}).type == tr::reply::kind::status);
    auto x = a.try_admit(tgtest::req(10, 10), t0 + nanoseconds(i * sec));
    REQUIRE(x.how == tr::outcome::ok);
    if (x) ++admitted;
    x.lease.settle(usage{10, 0, 10, 0, 0});
  }
  CHECK(admitted == 20);
  const auto v = a.remaining(t0 + nanoseconds(20 * sec));
  REQUIRE(v.how == tr::outcome::ok);
  CHECK(*v.values.available[0] == 80);
  srv.stop();
  const auto x = a.try_admit(tgtest::req(10, 10), t0 + nanoseconds(21 * sec));
  CHECK(x.how == tr::outcome::server_error);
  CHECK_FALSE(x);
  REQUIRE(srv.start());  // same port, state lost: held
  const auto y = a.try_admit(tgtest::req(10, 10), t0 + nanoseconds(22 * sec));
  CHECK(y.how == tr::outcome::held);
}

TEST_CASE("redis hiredis: a moved-from executor answers with an error reply", "[redis_server][hiredis]") {
  tr::hiredis_executor a("127.0.0.1", 1, std::chrono::milliseconds(50));
  tr::hiredis_executor b(std::move(a));
  const tr::reply r = a({"PING"});  // NOLINT(bugprone-use-after-move): the state it is defined for
  CHECK(r.type == tr::reply::kind::error);
  CHECK(a.primary().empty());
  CHECK(b.primary() == "127.0.0.1:1");
  const tr::reply s = b({"PING"});  // nothing listens on port 1: an error reply, not a hang
  CHECK(s.type == tr::reply::kind::error);
  CHECK(s.str.rfind("ERR tollgate-hiredis:", 0) == 0);
}

TEST_CASE("redis hiredis: a three-node cluster: MOVED and ASK followed, keys on one slot", "[redis_server][cluster]") {
  cluster cl;
  REQUIRE(cl.form());
  const std::vector<int>& ports = cl.ports();
  const nanoseconds t0(1700000000 * sec);
  const tr::layout l = tr::make_layout("clustered", small_config());
  client probe(ports[0]);
  const long slot = static_cast<long>(probe.call({"CLUSTER", "KEYSLOT", l.key("epoch")}).integer);
  CHECK(probe.call({"CLUSTER", "KEYSLOT", l.key("leases")}).integer == slot);
  const int own = cl.owner(slot, ports[0]);
  REQUIRE(own > 0);
  int other = ports[0] == own ? ports[1] : ports[0];
  int third = 0;
  for (int p : ports)
    if (p != own && p != other) third = p;
  // Start at a node that does not own the slot: MOVED, followed.
  hi_account a("clustered", small_config(), tr::hiredis_executor("127.0.0.1", other), tr::options{true});
  REQUIRE(a.create(true, t0.count() / us) == tr::outcome::ok);
  CHECK(a.try_admit(tgtest::req(10, 10), t0));  // its lease dropped at once: the release queued
  auto held = a.try_admit(tgtest::req(10, 10), t0);
  REQUIRE(held);
  client owner(own);
  CHECK(owner.call({"EXISTS", l.key("epoch"), l.key("leases")}).integer == 2);
  CHECK(a.state_layout().prefix == "tollgate:{clustered}:");
  // The slot migrates to the third node: its keys first, then ASK.
  const std::string own_id = cl.id(own), third_id = cl.id(third);
  client dest(third);
  REQUIRE(dest.call({"CLUSTER", "SETSLOT", std::to_string(slot), "IMPORTING", own_id}).type == tr::reply::kind::status);
  REQUIRE(owner.call({"CLUSTER", "SETSLOT", std::to_string(slot), "MIGRATING", third_id}).type == tr::reply::kind::status);
  const tr::reply m = owner.call({"MIGRATE", "127.0.0.1", std::to_string(third), "", "0", "5000", "KEYS", l.key("epoch"),
                                  l.key("leases")});
  REQUIRE(m.type == tr::reply::kind::status);
  held.lease.settle(usage{10, 0, 10, 0, 0});  // carried by the next call, through ASK
  auto x = a.try_admit(tgtest::req(10, 10), t0 + nanoseconds(sec));
  REQUIRE(x.how == tr::outcome::ok);
  CHECK(x);
  CHECK(a.queued_count() == 0);
  // On the importing node (ASKING: it does not own the slot yet): x's lease
  // only (the first two were released by the calls that carried them).
  REQUIRE(dest.call({"ASKING"}).type == tr::reply::kind::status);
  CHECK(dest.call({"ZCARD", l.key("leases")}).integer == 1);
  // The slot has moved: MOVED to the third node, which stays where calls go.
  for (int p : ports) {
    client c(p);
    REQUIRE(c.call({"CLUSTER", "SETSLOT", std::to_string(slot), "NODE", third_id}).type == tr::reply::kind::status);
  }
  x.lease.settle(usage{10, 0, 10, 0, 0});
  const auto y = a.try_admit(tgtest::req(10, 10), t0 + nanoseconds(2 * sec));
  REQUIRE(y.how == tr::outcome::ok);
  CHECK(y);
  const auto v = a.remaining(t0 + nanoseconds(2 * sec));
  REQUIRE(v.how == tr::outcome::ok);
  CHECK(*v.values.available[0] == 100 - 4);  // four admissions, through every redirection
}
