// A libcurl client paced by tollgate: sends chat-completion-shaped POSTs to a
// server that enforces a request rate and a concurrency limit, and reports
// what came back. Modes:
//   unpaced    fire every request at once (the swarm without tollgate)
//   paced      one account with the server's limits (margin policy)
//   overdrive  an account that believes in twice the server's rate: the
//              server's 429s pause the account, and every request is retried
//              until it succeeds (nothing is lost)
//
//   tollgate-curl-client --url URL --requests N --rate R --concurrency C --mode MODE
//                        [--margin-ms M]
//
// The account spaces admissions; the server spaces arrivals. Between the two lie
// this process's own scheduling, the connection and the server's reading of its
// clock: on a loaded host their jitter runs to several milliseconds, past the
// library's default 2 ms spacing margin (meant for a server's clock ticks). A real
// client over a real network sets the margin to the jitter it sees; 20 ms here.
#include <tollgate/tollgate.hpp>

#include <curl/curl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

using namespace tollgate;

namespace {
struct transfer {
  CURL* easy = nullptr;
  std::string body, retry_after;
  std::size_t index = 0;
  lease<steady_clock> held;
};

std::size_t on_body(char* p, std::size_t size, std::size_t n, void* user) {
  static_cast<transfer*>(user)->body.append(p, size * n);
  return size * n;
}
std::size_t on_header(char* p, std::size_t size, std::size_t n, void* user) {
  const std::string_view line(p, size * n);
  const auto colon = line.find(':');
  if (colon != std::string_view::npos) {
    std::string name(line.substr(0, colon));
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (name == "retry-after") static_cast<transfer*>(user)->retry_after = std::string(line.substr(colon + 1));
  }
  return size * n;
}
[[noreturn]] void usage_error(const char* m) {
  std::fprintf(stderr, "tollgate-curl-client: %s\n", m);
  std::exit(2);
}
}  // namespace

int main(int argc, char** argv) {
  std::string url, mode = "paced";
  long requests = 40, rate_per_s = 10, concurrency = 4, margin_ms = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view a = argv[i];
    if (a == "--url") url = argv[i + 1];
    else if (a == "--requests") requests = std::strtol(argv[i + 1], nullptr, 10);
    else if (a == "--rate") rate_per_s = std::strtol(argv[i + 1], nullptr, 10);
    else if (a == "--concurrency") concurrency = std::strtol(argv[i + 1], nullptr, 10);
    else if (a == "--mode") mode = argv[i + 1];
    else if (a == "--margin-ms") margin_ms = std::strtol(argv[i + 1], nullptr, 10);
    else usage_error("unknown option");
  }
  if (url.empty() || requests <= 0 || rate_per_s <= 1 || concurrency <= 1 || margin_ms < 0 || margin_ms > 1000)
    usage_error("bad arguments");
  if (mode != "paced" && mode != "unpaced" && mode != "overdrive") usage_error("--mode is paced, unpaced or overdrive");

  account_config cfg;
  // nginx's limit_req is a leaky bucket (GCRA with burst 1 here): the margin
  // policy. Its limit_conn is released when nginx finalizes a request, which
  // can be a moment after the client has the whole response: one slot of margin.
  cfg.model = server_model::gcra;
  cfg.request_window = std::chrono::seconds(1);
  cfg.spacing_margin = std::chrono::milliseconds(margin_ms);
  if (cfg.max_spacing_margin < cfg.spacing_margin) cfg.max_spacing_margin = cfg.spacing_margin;
  cfg.rpm = limit(static_cast<std::uint64_t>(mode == "overdrive" ? rate_per_s * 2 : rate_per_s));
  cfg.concurrency = limit(static_cast<std::uint64_t>(mode == "overdrive" ? concurrency : concurrency - 1));
  account<steady_clock> acct(cfg);

  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURLM* multi = curl_multi_init();
  std::vector<transfer> xfers(static_cast<std::size_t>(requests));
  std::deque<std::size_t> pending;
  for (std::size_t i = 0; i < xfers.size(); ++i) pending.push_back(i);
  const std::string payload = "{\"model\":\"kimi-k2.6\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":5}";
  long ok = 0, lost = 0, sent = 0, rejected = 0, by_rpm = 0, by_conc = 0, by_other = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int running = 0;
  while (ok + lost < requests && std::chrono::steady_clock::now() < deadline) {
    long wait_ms = 50;
    while (!pending.empty()) {
      transfer& t = xfers[pending.front()];
      if (mode != "unpaced") {
        request r;
        r.prompt_tokens = 10;
        r.max_tokens = 5;
        admission<steady_clock> ad = acct.try_admit(r);
        if (!ad) {
          if (ad.decision.never()) usage_error("a request can never be admitted");
          const long ms = static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(ad.decision.retry_after()).count()) + 1;
          wait_ms = ad.decision.retry_after().count() > 0 ? std::min(ms, 50L) : 5;
          break;
        }
        t.held = std::move(ad.lease);
      }
      t.index = pending.front();
      pending.pop_front();
      t.body.clear();
      t.retry_after.clear();
      t.easy = curl_easy_init();
      curl_easy_setopt(t.easy, CURLOPT_URL, url.c_str());
      curl_easy_setopt(t.easy, CURLOPT_POSTFIELDS, payload.c_str());
      curl_easy_setopt(t.easy, CURLOPT_WRITEFUNCTION, on_body);
      curl_easy_setopt(t.easy, CURLOPT_WRITEDATA, &t);
      curl_easy_setopt(t.easy, CURLOPT_HEADERFUNCTION, on_header);
      curl_easy_setopt(t.easy, CURLOPT_HEADERDATA, &t);
      curl_easy_setopt(t.easy, CURLOPT_PRIVATE, &t);
      curl_easy_setopt(t.easy, CURLOPT_TIMEOUT, 20L);
      curl_multi_add_handle(multi, t.easy);
      ++sent;
    }
    curl_multi_perform(multi, &running);
    curl_multi_poll(multi, nullptr, 0, static_cast<int>(wait_ms), nullptr);
    curl_multi_perform(multi, &running);
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      transfer* t = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&t));
      long status = 0;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      curl_multi_remove_handle(multi, msg->easy_handle);
      curl_easy_cleanup(msg->easy_handle);
      t->easy = nullptr;
      const nanoseconds now = steady_clock::now();
      if (status == 200) {
        ++ok;
        t->held.settle(usage{10, 0, 5, 0, 0}, now);
        continue;
      }
      const error_info e = classify(static_cast<int>(status), t->body);
      if (status == 429) {
        ++rejected;
        if (e.kind == error_kind::rpm) ++by_rpm;
        else if (e.kind == error_kind::concurrency) ++by_conc;
        else ++by_other;
      }
      if (mode == "unpaced" || !e.retry) {
        ++lost;
        t->held.settle_failed(now);
        continue;
      }
      // Paced: tell the account, and send the request again when it says so.
      acct.on_response(e, parse_retry_after(t->retry_after, system_clock::now()), now);
      t->held.settle_rejected(now);
      pending.push_back(t->index);
    }
  }
  for (transfer& t : xfers)
    if (t.easy) {
      curl_multi_remove_handle(multi, t.easy);
      curl_easy_cleanup(t.easy);
      ++lost;
    }
  curl_multi_cleanup(multi);
  curl_global_cleanup();
  std::printf("mode %s: requests %ld, sent %ld, ok %ld, 429 %ld (rpm %ld, concurrency %ld, other %ld), lost %ld\n",
              mode.c_str(), requests, sent, ok, rejected, by_rpm, by_conc, by_other, lost);
  return 0;
}
