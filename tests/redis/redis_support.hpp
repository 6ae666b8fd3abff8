// Test support for the Redis tests: a redis-server started on 127.0.0.1 at a
// free port without persistence, stopped through its pid (also when a test
// fails: the destructor), and a tiny blocking RESP client over loopback TCP
// with a receive timeout. Tests only: the library itself opens no socket.
#ifndef TOLLGATE_TESTS_REDIS_SUPPORT_HPP
#define TOLLGATE_TESTS_REDIS_SUPPORT_HPP

#include <tollgate/redis/protocol.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace tgredis {

using tollgate::redis::reply;

// The server binary: TOLLGATE_REDIS_SERVER, else redis-server on PATH.
inline std::string server_binary() {
  if (const char* p = std::getenv("TOLLGATE_REDIS_SERVER")) return p;
  const char* path = std::getenv("PATH");
  std::string s = path ? path : "/usr/bin:/usr/sbin";
  std::size_t b = 0;
  while (b <= s.size()) {
    std::size_t e = s.find(':', b);
    if (e == std::string::npos) e = s.size();
    const std::string cand = s.substr(b, e - b) + "/redis-server";
    if (::access(cand.c_str(), X_OK) == 0) return cand;
    b = e + 1;
  }
  return std::string();
}

// A port the kernel has just handed out (bound, then closed).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

class client {
 public:
  client() = default;
  explicit client(int port, int timeout_ms = 2000) { connect(port, timeout_ms); }
  client(const client&) = delete;
  client& operator=(const client&) = delete;
  client(client&& o) noexcept : fd_(o.fd_), buf_(std::move(o.buf_)) { o.fd_ = -1; }
  ~client() { close(); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    buf_.clear();
  }
  bool connect(int port, int timeout_ms = 2000) {
    close();
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return false;
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close();
      return false;
    }
    port_ = port;
    return true;
  }
  bool connected() const { return fd_ >= 0; }

  // One command; an error reply ("ERR tollgate-test: ...") when the socket
  // fails or times out (the connection is then dropped: a late reply must not
  // be read as the next one's).
  reply call(const std::vector<std::string>& argv) {
    if (fd_ < 0 && (port_ < 0 || !connect(port_))) return reply::of_error("ERR tollgate-test: not connected");
    std::string out = "*" + std::to_string(argv.size()) + "\r\n";
    for (const std::string& a : argv) out += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    std::size_t sent = 0;
    while (sent < out.size()) {
      const ssize_t k = ::send(fd_, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (k <= 0) return fail("send");
      sent += static_cast<std::size_t>(k);
    }
    reply r;
    if (!parse(r, 0)) return fail("receive");
    return r;
  }
  reply operator()(const std::vector<std::string>& argv) { return call(argv); }

 private:
  reply fail(const char* what) {
    close();
    return reply::of_error(std::string("ERR tollgate-test: ") + what + " failed or timed out");
  }
  bool fill() {
    char tmp[65536];
    const ssize_t k = ::recv(fd_, tmp, sizeof tmp, 0);
    if (k <= 0) return false;
    buf_.append(tmp, static_cast<std::size_t>(k));
    return true;
  }
  bool line(std::string& l) {
    for (int guard = 0; guard < 100000; ++guard) {
      const std::size_t e = buf_.find("\r\n");
      if (e != std::string::npos) {
        l = buf_.substr(0, e);
        buf_.erase(0, e + 2);
        return true;
      }
      if (!fill()) return false;
    }
    return false;
  }
  bool parse(reply& r, int depth) {
    if (depth > 8) return false;
    std::string l;
    if (!line(l) || l.empty()) return false;
    const std::string body = l.substr(1);
    switch (l[0]) {
      case '+': r.type = reply::kind::status; r.str = body; return true;
      case '-': r.type = reply::kind::error; r.str = body; return true;
      case ':': r.type = reply::kind::integer; r.integer = std::strtoll(body.c_str(), nullptr, 10); return true;
      case '$': {
        const long n = std::strtol(body.c_str(), nullptr, 10);
        if (n < 0) { r.type = reply::kind::nil; return true; }
        while (buf_.size() < static_cast<std::size_t>(n) + 2)
          if (!fill()) return false;
        r.type = reply::kind::string;
        r.str = buf_.substr(0, static_cast<std::size_t>(n));
        buf_.erase(0, static_cast<std::size_t>(n) + 2);
        return true;
      }
      case '*': {
        const long n = std::strtol(body.c_str(), nullptr, 10);
        if (n < 0) { r.type = reply::kind::nil; return true; }
        r.type = reply::kind::array;
        r.elements.resize(static_cast<std::size_t>(n));
        for (auto& e : r.elements)
          if (!parse(e, depth + 1)) return false;
        return true;
      }
      default: return false;
    }
  }
  int fd_ = -1;
  int port_ = -1;
  std::string buf_;
};

// A redis-server of our own: started on construction, stopped (SIGKILL and
// reaped) on destruction or stop().
class server {
 public:
  server() { start(); }
  server(const server&) = delete;
  server& operator=(const server&) = delete;
  ~server() { stop(); }
  bool running() const { return pid_ > 0; }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }

  // A new process on the same port (after stop(): the state is gone).
  bool start() {
    const std::string bin = server_binary();
    if (bin.empty()) return false;
    if (port_ < 0) port_ = free_port();
    for (int attempt = 0; attempt < 3 && port_ > 0; ++attempt) {
      const std::string p = std::to_string(port_);
      const pid_t pid = ::fork();
      if (pid == 0) {
        const int null_fd = ::open("/dev/null", O_WRONLY);  // its log: start-up noise
        if (null_fd >= 0) ::dup2(null_fd, 1);
        ::execl(bin.c_str(), bin.c_str(), "--port", p.c_str(), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                "no", "--daemonize", "no", "--loglevel", "warning", static_cast<char*>(nullptr));
        ::_exit(127);
      }
      if (pid < 0) return false;
      pid_ = pid;
      // Up within 5 s (50 tries), or try another port.
      for (int i = 0; i < 50; ++i) {
        client c;
        if (c.connect(port_, 200)) {
          const reply r = c.call({"PING"});
          if (r.type == reply::kind::status && r.str == "PONG") return true;
        }
        int st = 0;
        if (::waitpid(pid_, &st, WNOHANG) == pid_) break;  // it died (port taken?)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      stop();
      port_ = free_port();
    }
    return false;
  }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGCONT);  // a stopped process must be able to die
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
  }
  void pause_process() { if (pid_ > 0) ::kill(pid_, SIGSTOP); }
  void continue_process() { if (pid_ > 0) ::kill(pid_, SIGCONT); }

 private:
  pid_t pid_ = -1;
  int port_ = -1;
};

// The account's executor over one test connection; counts the script calls
// (EVALSHA, EVAL, FCALL) into `calls` when one is given.
struct exec {
  client* c;
  std::uint64_t* calls = nullptr;
  tollgate::redis::reply operator()(const std::vector<std::string>& argv) const {
    if (calls && (argv[0] == "EVALSHA" || argv[0] == "EVAL" || argv[0] == "FCALL")) ++*calls;
    return c->call(argv);
  }
};

}  // namespace tgredis

#endif
