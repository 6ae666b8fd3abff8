// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/hiredis.hpp: an executor for redis::basic_account over hiredis (0.14
// and later; link -lhiredis). Optional: no other header includes it, and it
// is the one header of the library that opens sockets. It follows Redis
// Cluster redirections itself, which hiredis 0.14 does not, for accounts
// whose keys share one slot (every key of an account has its hash tag):
//   MOVED <slot> <host>:<port>  the slot's owner changed: the call goes again
//     there, and every later call goes there first;
//   ASK <slot> <host>:<port>    the slot is migrating: the call goes again
//     there once, after ASKING, and later calls still go to the owner.
// At most 5 redirections a call (then an error reply). Keyless commands
// (SCRIPT LOAD, FUNCTION LOAD) go to the node the last MOVED named, which
// owns the account's slot. Functions must be loaded on every node that may
// own the slot (the account loads them on NOSCRIPT / function not found).
//
// Contract. operator() sends one command and returns its reply, never
// throws and never blocks longer than the timeout per network step
// (connect, send, receive); a connection that failed or timed out is closed
// (a late reply is never read as the next one's) and made again at the next
// call; any failure comes back as an error reply beginning
// "ERR tollgate-hiredis:", which the account treats as a failed call (see
// redis/account.hpp: fail closed or its local fallback). Connections are
// kept per node, at most 16 (beyond that a node's connection other than the
// one calls go to first is closed and reused). Move-only (a moved-from
// executor answers every call with an error reply); one thread at a time, as
// the account.
#ifndef TOLLGATE_REDIS_HIREDIS_HPP
#define TOLLGATE_REDIS_HIREDIS_HPP

#include <tollgate/config.hpp>
#include <tollgate/redis/protocol.hpp>

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {

namespace detail_hiredis {

struct context_free {
  void operator()(redisContext* c) const noexcept { redisFree(c); }
};
using context_ptr = std::unique_ptr<redisContext, context_free>;

// A hiredis reply as a tollgate reply (nested at most 8 deep; deeper: nil).
inline reply convert(const redisReply* r, int depth = 0) {
  reply out;
  if (r == nullptr || depth > 8) return out;
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      out.type = reply::kind::integer;
      out.integer = static_cast<std::int64_t>(r->integer);
      break;
    case REDIS_REPLY_STRING:
      out.type = reply::kind::string;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = reply::kind::status;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = reply::kind::error;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ARRAY:
      out.type = reply::kind::array;
      out.elements.reserve(r->elements);
      for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i], depth + 1));
      break;
    default: break;  // nil, and the RESP3 types of later versions (never asked for here)
  }
  return out;
}

// "MOVED 3999 127.0.0.1:6381" -> host, port; false for anything else.
inline bool redirection(std::string_view err, std::string_view word, std::string& host, int& port) {
  if (err.size() <= word.size() + 1 || err.compare(0, word.size(), word) != 0 || err[word.size()] != ' ') return false;
  const std::size_t sp = err.find(' ', word.size() + 1);
  if (sp == std::string_view::npos) return false;
  const std::string_view addr = err.substr(sp + 1);
  const std::size_t colon = addr.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 >= addr.size() || addr.size() - colon > 6) return false;
  int p = 0;
  for (char ch : addr.substr(colon + 1)) {
    if (ch < '0' || ch > '9') return false;
    p = p * 10 + (ch - '0');
  }
  if (p <= 0 || p > 65535) return false;
  host.assign(addr.substr(0, colon));
  port = p;
  return true;
}

}  // namespace detail_hiredis

class hiredis_executor {
 public:
  hiredis_executor(std::string host, int port, std::chrono::milliseconds timeout = std::chrono::milliseconds(500))
      : timeout_(timeout) {
    primary_ = node_index(host, port);
  }
  hiredis_executor(hiredis_executor&&) noexcept = default;
  hiredis_executor& operator=(hiredis_executor&&) noexcept = default;
  hiredis_executor(const hiredis_executor&) = delete;
  hiredis_executor& operator=(const hiredis_executor&) = delete;

  reply operator()(const std::vector<std::string>& argv) {
    if (nodes_.empty()) return reply::of_error("ERR tollgate-hiredis: no node (a moved-from executor)");
    std::size_t at = primary_;
    bool asking = false;
    for (int hop = 0; hop <= max_redirections; ++hop) {
      reply r = send(at, argv, asking);
      if (r.type != reply::kind::error) return r;
      std::string host;
      int port = 0;
      if (detail_hiredis::redirection(r.str, "MOVED", host, port)) {
        at = primary_ = node_index(host, port);
        asking = false;
        continue;
      }
      if (detail_hiredis::redirection(r.str, "ASK", host, port)) {
        at = node_index(host, port);
        asking = true;
        continue;
      }
      return r;
    }
    return reply::of_error("ERR tollgate-hiredis: too many redirections");
  }

  // Where calls go first (the node the last MOVED named), for tests and logs.
  std::string primary() const {
    if (nodes_.empty()) return std::string();
    return nodes_[primary_].host + ":" + std::to_string(nodes_[primary_].port);
  }

  static constexpr int max_redirections = 5;
  static constexpr std::size_t max_nodes = 16;

 private:
  struct node {
    std::string host;
    int port = 0;
    detail_hiredis::context_ptr ctx;
  };

  timeval tv() const noexcept {
    const long long ms = timeout_.count() <= 0 ? 1 : static_cast<long long>(timeout_.count());
    timeval t{};
    t.tv_sec = static_cast<decltype(t.tv_sec)>(ms / 1000);
    t.tv_usec = static_cast<decltype(t.tv_usec)>((ms % 1000) * 1000);
    return t;
  }

  std::size_t node_index(const std::string& host, int port) {
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i].host == host && nodes_[i].port == port) return i;
    if (nodes_.size() >= max_nodes) {
      // Reuse the oldest slot that is not where calls go first.
      const std::size_t victim = primary_ == 0 ? 1 : 0;
      nodes_[victim].host = host;
      nodes_[victim].port = port;
      nodes_[victim].ctx.reset();
      return victim;
    }
    nodes_.push_back(node{host, port, nullptr});
    return nodes_.size() - 1;
  }

  redisContext* connect(node& n) {
    if (n.ctx) return n.ctx.get();
    detail_hiredis::context_ptr c(redisConnectWithTimeout(n.host.c_str(), n.port, tv()));
    if (!c || c->err) return nullptr;
    if (redisSetTimeout(c.get(), tv()) != REDIS_OK) return nullptr;
    n.ctx = std::move(c);
    return n.ctx.get();
  }

  reply fail(node& n, const char* what) {
    std::string msg = std::string("ERR tollgate-hiredis: ") + what + " " + n.host + ":" + std::to_string(n.port);
    if (n.ctx && n.ctx->errstr[0] != '\0') msg += std::string(": ") + n.ctx->errstr;
    n.ctx.reset();  // a late reply must not be read as the next one's
    return reply::of_error(std::move(msg));
  }

  reply command(node& n, const std::vector<std::string>& argv) {
    std::vector<const char*> a;
    std::vector<std::size_t> len;
    a.reserve(argv.size());
    len.reserve(argv.size());
    for (const std::string& s : argv) {
      a.push_back(s.data());
      len.push_back(s.size());
    }
    void* raw = redisCommandArgv(n.ctx.get(), static_cast<int>(a.size()), a.data(), len.data());
    if (raw == nullptr) return fail(n, "call failed or timed out at");
    redisReply* r = static_cast<redisReply*>(raw);
    reply out = detail_hiredis::convert(r);
    freeReplyObject(r);
    return out;
  }

  reply send(std::size_t i, const std::vector<std::string>& argv, bool asking) {
    node& n = nodes_[i];
    if (argv.empty() || argv.size() > 1000000) return reply::of_error("ERR tollgate-hiredis: bad command");
    if (connect(n) == nullptr) return fail(n, "cannot connect to");
    if (asking) {
      const reply ok = command(n, {"ASKING"});
      if (ok.type == reply::kind::error) return ok;
    }
    return command(n, argv);
  }

  std::chrono::milliseconds timeout_;
  std::vector<node> nodes_;
  std::size_t primary_ = 0;
};

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_HIREDIS_HPP
