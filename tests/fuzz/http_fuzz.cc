// libFuzzer target: arbitrary bytes sent as one client connection's input to a real proxy
// worker (loopback socket), with a real in-process upstream behind it.
//
// Invariants checked per input, besides "no crash, no sanitizer report, no hang":
//  - every byte the proxy sends back is a sequence of well-formed HTTP/1.1 responses;
//  - a response the proxy made itself (no x-upstream header) carries a status from the set the
//    request path can produce (400, 404, 408, 413, 414, 417, 431, 50x, ...);
//  - the connection is closed by the proxy once the client half-closes (no hang: 5 s);
//  - the proxy keeps serving: a clean request on a fresh connection gets 200 (checked every 16
//    inputs to keep the exec rate up).
//
// Build: CC=clang CXX=clang++ cmake -DFLEXGATE_FUZZ=ON -B build-fuzz ...; run from the build
// directory with a scratch corpus directory first (libFuzzer writes new inputs into it):
//   mkdir -p fuzz/http_corpus
//   tests/bin/http_fuzz -max_total_time=600 fuzz/http_corpus ../tests/fuzz/corpus/http
#include <arpa/inet.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/notification.h"
#include "common/config_loader.h"
#include "dataplane/proxy/proxy_server.h"
#include "dataplane/proxy/route_table.h"
#include "tests/harness/http/test_upstream.h"

namespace {

using flexgate::dataplane::ProxyServer;

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "http_fuzz invariant violated: %s\n", what);
    std::abort();
  }
}

// Routes that reach every kind of local and proxied answer.
constexpr char kConfig[] = R"(
clusters:
  - name: up
    endpoints: [{ address: 127.0.0.1, port: PORT }]
  - name: dead
    connect_timeout: 0.5s
    endpoints: [{ address: 127.0.0.1, port: 1 }]
routes:
  - { name: direct, match: { path: { exact: /direct } }, direct_response: { status: 200, body: ok } }
  - { name: redirect, match: { path: { prefix: /redirect } }, redirect: { host: example.test } }
  - { name: dead, match: { path: { prefix: /dead } }, cluster: dead }
  - { name: hosted, match: { hosts: ["*.example.test"], path: { regex: "/r/[a-z]+" } }, cluster: up }
  - name: rewrite
    match: { path: { prefix: /api/ }, methods: [GET, POST, PUT] }
    prefix_rewrite: /
    cluster: up
    request_headers: { set: [{ name: x-a, value: b }], remove: [cookie] }
  - { name: none, match: { path: { prefix: /none } }, direct_response: { status: 404 } }
  - { name: all, match: { path: { prefix: / } }, cluster: up }
)";

struct Env {
  std::unique_ptr<flexgate::testing::TestUpstream> upstream;
  std::unique_ptr<ProxyServer> proxy;
  uint16_t port = 0;
};

Env* GetEnv() {
  static Env* env = [] {
    auto* e = new Env;
    auto up = flexgate::testing::TestUpstream::Start("fz");
    Check(up.ok(), "test upstream starts");
    e->upstream = *std::move(up);
    flexgate::dataplane::ProxyServerOptions opts;
    opts.listen_addresses = {"127.0.0.1:0"};
    opts.workers = 1;
    opts.limits.max_header_bytes = 4096;
    opts.limits.max_body_bytes = 8192;
    opts.limits.header_timeout = absl::Seconds(2);
    opts.limits.request_timeout = absl::Seconds(1);
    opts.limits.connect_timeout = absl::Milliseconds(500);
    auto proxy = ProxyServer::Create(opts);
    Check(proxy.ok(), "proxy created");
    e->proxy = *std::move(proxy);
    std::string text =
        absl::StrReplaceAll(kConfig, {{"PORT", absl::StrCat(e->upstream->port())}});
    auto config = flexgate::ParseConfig(text);
    Check(config.ok(), "fuzz config parses");
    auto table = flexgate::dataplane::CompileRouteTable(*config, 1, "fuzz");
    Check(table.ok(), "fuzz config compiles");
    absl::Notification swapped;
    e->proxy->UpdateRouteTable(*table, [&] { swapped.Notify(); });
    Check(e->proxy->Start().ok(), "proxy starts");
    Check(swapped.WaitForNotificationWithTimeout(absl::Seconds(5)), "table published");
    e->port = e->proxy->listen_port(0);
    // The environment lives for the whole process: libFuzzer exits without running destructors
    // of function statics reliably, and the worker threads must outlive every input.
    return e;
  }();
  return env;
}

int ConnectProxy(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  Check(fd >= 0, "socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  if (rc != 0 && errno == EINTR) {
    // libFuzzer's timeout alarm interrupted a connect that was waiting (a SYN retransmit): the
    // connect goes on in the kernel, so wait for it instead of calling connect again.
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    pollfd p{fd, POLLOUT, 0};
    int ready = 0;
    while (ready <= 0 && absl::Now() < deadline) {
      ready = ::poll(&p, 1, 100);
      if (ready < 0 && errno != EINTR) break;
    }
    int err = ETIMEDOUT;
    socklen_t len = sizeof(err);
    if (ready > 0) ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    rc = err == 0 ? 0 : -1;
    errno = err;
  }
  if (rc != 0) {
    std::fprintf(stderr, "connect to the proxy failed: %s\n", std::strerror(errno));
    Check(false, "connect to proxy");
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

// Sends `data` (as much as the proxy takes; it may close early on bad input), half-closes, and
// returns everything the proxy answers until it closes. Aborts on a hang.
std::string Exchange(uint16_t port, const uint8_t* data, size_t size) {
  int fd = ConnectProxy(port);
  std::string out;
  size_t sent = 0;
  bool write_open = true;
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  char buf[16384];
  while (true) {
    pollfd p{fd, static_cast<short>(POLLIN | (write_open ? POLLOUT : 0)), 0};
    int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    Check(ms > 0, "the proxy neither answered nor closed within 5 s");
    int rc = ::poll(&p, 1, ms);
    if (rc < 0 && errno == EINTR) continue;
    Check(rc >= 0, "poll");
    if (rc == 0) continue;
    if (write_open && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = sent < size ? ::send(fd, data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT)
                              : 0;
      if (n > 0) sent += static_cast<size_t>(n);
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) write_open = false;
      if (sent == size && write_open) {
        ::shutdown(fd, SHUT_WR);
        write_open = false;
      }
    }
    if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n > 0) {
        out.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) break;
    }
  }
  ::close(fd);
  return out;
}

// Checks the proxy's output: well-formed responses, and local ones with an expected status.
struct ResponseCheck {
  int status = 0;
  bool from_upstream = false;
  bool field_is_upstream = false;
  std::string field;
  int responses = 0;
};

bool LocalStatusAllowed(int s) {
  switch (s) {
    case 100: case 200: case 301: case 400: case 404: case 405: case 408: case 413: case 414:
    case 417: case 431: case 502: case 503: case 504: case 505:
      return true;
    default:
      return false;
  }
}

void CheckOutput(const std::string& out) {
  if (out.empty()) return;  // closed without an answer: incomplete input at EOF
  Check(out.rfind("HTTP/1.1 ", 0) == 0, "output starts with a status line");
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = [](llhttp_t* p) {
    auto* c = static_cast<ResponseCheck*>(p->data);
    c->from_upstream = false;
    c->field.clear();
    return 0;
  };
  s.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
    static_cast<ResponseCheck*>(p->data)->field.append(at, n);
    return 0;
  };
  s.on_header_field_complete = [](llhttp_t* p) {
    auto* c = static_cast<ResponseCheck*>(p->data);
    if (c->field == "x-upstream") c->from_upstream = true;
    c->field.clear();
    return 0;
  };
  s.on_headers_complete = [](llhttp_t* p) {
    auto* c = static_cast<ResponseCheck*>(p->data);
    c->status = p->status_code;
    ++c->responses;
    if (!c->from_upstream && c->status != 100) {
      Check(LocalStatusAllowed(c->status), "a local response has an expected status");
    }
    return 0;
  };
  ResponseCheck check;
  llhttp_t parser;
  llhttp_init(&parser, HTTP_RESPONSE, &s);
  parser.data = &check;
  llhttp_errno_t err = llhttp_execute(&parser, out.data(), out.size());
  // A response to HEAD carries framing headers without a body, which a standalone parser cannot
  // know; stop checking at the first disagreement after a complete response.
  if (err != HPE_OK) Check(check.responses >= 1, "the first response is well-formed");
}

void CheckAlive(uint16_t port) {
  static const char kReq[] = "GET /direct HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
  std::string out = Exchange(port, reinterpret_cast<const uint8_t*>(kReq), sizeof(kReq) - 1);
  Check(out.rfind("HTTP/1.1 200 ", 0) == 0, "the proxy still serves after an input");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static uint64_t runs = 0;
  Env* env = GetEnv();
  std::string out = Exchange(env->port, data, size);
  CheckOutput(out);
  if (++runs % 16 == 0) CheckAlive(env->port);
  return 0;
}
