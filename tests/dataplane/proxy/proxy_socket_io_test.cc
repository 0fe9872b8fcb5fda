// The proxy's own socket I/O (Conn over uv_poll_t): writes the kernel does not take queue on the
// connection and leave whole and in order, resets and refused connects surface as the errors the
// upper layers expect, and a listener that runs out of file descriptors pauses instead of
// spinning, then serves the waiting client.
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "proxy_test_env.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::dataplane::test {
namespace {

// Bodies far larger than what the kernel buffers of a stalled loopback connection hold
// (net.ipv4.tcp_wmem's maximum is 4 MiB, and a reader that does not read keeps its receive
// window at the initial size), so that the proxy must queue and apply back-pressure.
constexpr size_t kBigKb = 12 * 1024;

std::string Pattern(size_t n) {
  std::string s(n, 'x');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}

// Waits until `value` has made progress (reached `at_least`) and then stopped changing for
// `quiet`: the proxy is blocked on a peer that does not read. Quiescence can only be observed
// over time, hence the fixed quiet period.
bool WaitForStall(const std::function<uint64_t()>& value, uint64_t at_least,
                  absl::Duration quiet = absl::Milliseconds(300),
                  absl::Duration timeout = absl::Seconds(20)) {
  if (!WaitUntil([&] { return value() >= at_least; }, timeout)) return false;
  absl::Time deadline = absl::Now() + timeout;
  uint64_t last = value();
  absl::Time since = absl::Now();
  while (absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
    uint64_t v = value();
    if (v != last) {
      last = v;
      since = absl::Now();
    } else if (absl::Now() - since >= quiet) {
      return true;
    }
  }
  return false;
}

// Every KiB i of a /big body is the letter 'a' + i % 26 (see TestUpstream).
bool IsBigBody(const std::string& body, size_t kb) {
  if (body.size() != kb * 1024) return false;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != static_cast<char>('a' + (i / 1024) % 26)) return false;
  }
  return true;
}

// A blocking loopback listener on port 0, for an upstream the test drives by hand.
class RawListener {
 public:
  RawListener() {
    fd_ = ListenLoopback(16, &port_, SOCK_STREAM | SOCK_CLOEXEC);
  }
  ~RawListener() { ::close(fd_); }
  RawListener(const RawListener&) = delete;
  RawListener& operator=(const RawListener&) = delete;

  uint16_t port() const { return port_; }
  // The next connection, or -1 after `timeout`.
  int Accept(absl::Duration timeout = absl::Seconds(10)) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) != 1) return -1;
    return ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// Reads from blocking socket `fd` until `out` holds `n` bytes; false on EOF, error or timeout.
bool ReadExactly(int fd, size_t n, std::string& out, absl::Duration timeout = absl::Seconds(20)) {
  absl::Time deadline = absl::Now() + timeout;
  char buf[65536];
  while (out.size() < n) {
    int left_ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (left_ms <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, left_ms) != 1) return false;
    ssize_t r = ::recv(fd, buf, std::min(sizeof(buf), n - out.size()), 0);
    if (r <= 0) return false;
    out.append(buf, static_cast<size_t>(r));
  }
  return true;
}

// A blocking TCP connection to the proxy, opened by hand (the test needs the descriptor).
int ConnectRaw(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  return fd;
}

bool SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t r = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (r <= 0) return false;
    data.remove_prefix(static_cast<size_t>(r));
  }
  return true;
}

TEST_CASE("a response larger than the socket buffers reaches a stalled client whole and in order") {
  ProxyEnv env(kDefaultConfig, {}, 1);
  HttpClient c = env.Client();
  c.set_timeout(absl::Seconds(30));
  HttpRequest req;
  req.path = absl::StrCat("/big?kb=", kBigKb);
  REQUIRE(c.Send(req).ok());
  // The client does not read: the proxy fills the socket, queues the rest and stops reading the
  // upstream once its queue passes the high-water mark.
  auto sent = [&] { return env.proxy().CollectStats().bytes_sent; };
  REQUIRE(WaitForStall(sent, 256 * 1024));
  CHECK(sent() < kBigKb * 1024);
  auto r = c.ReadResponse();
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(IsBigBody(r->body, kBigKb));
  // The connection is still usable, and so is the upstream connection behind it.
  auto again = c.Get("/64k");
  REQUIRE(again.ok());
  CHECK(again->body.size() == 65536u);
  CHECK(env.up(0).connections() == 1);
}

TEST_CASE("a request body larger than the socket buffers reaches a stalled upstream whole and in order") {
  RawListener upstream;
  ProxyEnv env("", {}, 1, 0);
  env.Publish(absl::StrCat(R"(
clusters:
  - name: raw
    endpoints: [{ address: 127.0.0.1, port: )", upstream.port(), R"( }]
routes:
  - { name: all, match: { path: { prefix: / } }, cluster: raw }
)"));
  const std::string body = Pattern(kBigKb * 1024 + 13);
  std::optional<absl::StatusOr<HttpResponse>> response;
  std::thread client([&] {
    auto c = HttpClient::Connect("127.0.0.1", env.port(), absl::Seconds(60));
    if (!c.ok()) {
      response = c.status();
      return;
    }
    HttpRequest put;
    put.method = "PUT";
    put.path = "/upload";
    put.body = body;
    response = c->RoundTrip(put);
  });
  int fd = upstream.Accept();
  REQUIRE(fd >= 0);
  // The upstream does not read yet: the proxy queues what the socket does not take and stops
  // reading the client.
  auto received = [&] { return env.proxy().CollectStats().bytes_received; };
  bool stalled = WaitForStall(received, 256 * 1024);
  CHECK(stalled);
  CHECK(received() < body.size());

  std::string in;
  size_t head_end = std::string::npos;
  while (head_end == std::string::npos) {
    REQUIRE(ReadExactly(fd, in.size() + 1, in));
    head_end = in.find("\r\n\r\n");
  }
  std::string head = in.substr(0, head_end + 4);
  std::string got = in.substr(head_end + 4);
  INFO(head);
  REQUIRE(absl::StrContains(absl::AsciiStrToLower(head),
                            absl::StrCat("content-length: ", body.size())));
  REQUIRE(ReadExactly(fd, body.size(), got));
  CHECK(got == body);
  CHECK(SendAll(fd, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"));
  ::close(fd);
  client.join();
  REQUIRE(response.has_value());
  REQUIRE(response->ok());
  CHECK((*response)->status == 200);
  CHECK((*response)->body == "ok");
}

TEST_CASE("a client that resets while its response is queued is closed, and the proxy serves on") {
  ProxyEnv env(kDefaultConfig, {}, 1);
  int fd = ConnectRaw(env.port());
  REQUIRE(SendAll(fd, absl::StrCat("GET /big?kb=", kBigKb, " HTTP/1.1\r\nhost: a\r\n\r\n")));
  auto sent = [&] { return env.proxy().CollectStats().bytes_sent; };
  REQUIRE(WaitForStall(sent, 256 * 1024));
  // SO_LINGER 0: the close sends a RST, with the proxy's queue and the client's receive buffer
  // both full.
  linger lg{1, 0};
  REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0);
  ::close(fd);
  CHECK(WaitUntil([&] { return env.proxy().CollectStats().downstream_connections_active == 0; }));
  auto r = env.Client().Get("/after");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
}

TEST_CASE("a refused upstream connect is answered 503 naming the refusal") {
  ProxyEnv env("", {}, 1);
  env.Publish(absl::StrCat(R"(
clusters:
  - name: dead
    endpoints: [{ address: 127.0.0.1, port: )", flexgate::testing::FreePort(), R"( }]
routes:
  - { name: all, match: { path: { prefix: / } }, cluster: dead }
)"));
  HttpClient c = env.Client();
  for (int i = 0; i < 3; ++i) {
    auto r = c.Get("/x");
    REQUIRE(r.ok());
    CHECK(r->status == 503);
    INFO(r->body);
    CHECK(absl::StrContains(r->body, "connection refused"));
  }
  CHECK(env.proxy().CollectStats().upstream_connect_failures == 3);
}

TEST_CASE("a request queued behind a connect that never completes is answered at the connect timeout") {
  BlackholeListener blackhole;
  ProxyLimits limits;
  limits.connect_timeout = absl::Milliseconds(200);
  ProxyEnv env("", limits, 1, 0);
  env.Publish(absl::StrCat(R"(
clusters:
  - name: hole
    endpoints: [{ address: 127.0.0.1, port: )", blackhole.port(), R"( }]
routes:
  - { name: all, match: { path: { prefix: / } }, cluster: hole }
)"));
  HttpClient c = env.Client();
  HttpRequest put;
  put.method = "PUT";
  put.path = "/x";
  put.body = Pattern(200000);  // more than one write: queued on the connecting socket
  auto r = c.RoundTrip(put);
  REQUIRE(r.ok());
  CHECK(r->status == 503);
  CHECK(absl::StrContains(r->body, "timeout"));
  CHECK(env.proxy().CollectStats().upstream_connections_total == 1);
}

// The highest descriptor number in use by this process.
int HighestOpenFd() {
  int highest = 2;
  DIR* d = ::opendir("/proc/self/fd");
  REQUIRE(d != nullptr);
  while (dirent* e = ::readdir(d)) {
    int fd = 0;
    if (absl::SimpleAtoi(e->d_name, &fd)) highest = std::max(highest, fd);
  }
  ::closedir(d);
  return highest;
}

// Uses up every descriptor this process may open (under a lowered soft limit) until destroyed.
class FdExhaustion {
 public:
  FdExhaustion() {
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved_) == 0);
    rlimit low = saved_;
    low.rlim_cur = static_cast<rlim_t>(HighestOpenFd() + 16);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    int err = 0;
    for (;;) {
      int fd = ::dup(0);
      if (fd < 0) {
        err = errno;
        break;
      }
      fds_.push_back(fd);
    }
    if (err != EMFILE) Release();
    REQUIRE(err == EMFILE);
  }
  ~FdExhaustion() { Release(); }
  void Release() {
    for (int fd : fds_) ::close(fd);
    fds_.clear();
    if (saved_.rlim_cur != 0) ::setrlimit(RLIMIT_NOFILE, &saved_);
    saved_.rlim_cur = 0;
  }

 private:
  rlimit saved_{};
  std::vector<int> fds_;
};

double ProcessCpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

TEST_CASE("out of file descriptors, a listener pauses instead of spinning and serves the client later") {
  ProxyEnv env(kDefaultConfig, {}, 1);
  REQUIRE(env.Client().Get("/warm")->status == 200);
  uint64_t accepted = env.proxy().CollectStats().downstream_connections_total;

  // The client socket exists before the descriptors run out; connecting needs no new one.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  std::string got;
  // Assertions wait until the descriptors are back: a failing one needs descriptors to report,
  // and so do the sanitizers' own checks (they probe memory through a pipe).
  bool connected = false, sent = false;
  double cpu = 0;
  uint64_t accepted_meanwhile = 0;
  {
    FdExhaustion exhausted;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(env.port());
    connected = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    sent = connected && SendAll(fd, "GET /late HTTP/1.1\r\nhost: a\r\n\r\n");
    // The proxy cannot accept it. Spinning on the readable listener would burn a core; the
    // absence of a spin can only be observed over a period of time.
    double cpu_before = ProcessCpuSeconds();
    absl::SleepFor(absl::Milliseconds(500));
    cpu = ProcessCpuSeconds() - cpu_before;
    accepted_meanwhile = env.proxy().CollectStats().downstream_connections_total - accepted;
  }
  REQUIRE(connected);
  REQUIRE(sent);
  CHECK(cpu < 0.1);
  CHECK(accepted_meanwhile == 0);
  // Descriptors are free again: the waiting connection is accepted and answered.
  pollfd p{fd, POLLIN, 0};
  REQUIRE(::poll(&p, 1, 5000) == 1);
  char buf[4096];
  ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
  REQUIRE(n > 0);
  got.assign(buf, static_cast<size_t>(n));
  CHECK(absl::StartsWith(got, "HTTP/1.1 200"));
  ::close(fd);
  CHECK(env.proxy().CollectStats().downstream_connections_total == accepted + 1);
}

TEST_CASE("a request followed at once by the client's FIN is answered and the connection closed") {
  // The FIN usually arrives together with the request, before the proxy reads: an edge-triggered
  // poll then reports no new edge for it after the request is read, and only the peer-closed
  // flag of that event says that the stream has ended.
  ProxyEnv env;
  for (int i = 0; i < 50; ++i) {
    INFO("attempt " << i);
    HttpClient c = env.Client();
    REQUIRE(c.SendRaw("GET /fin HTTP/1.1\r\nHost: localhost\r\n\r\n").ok());
    c.ShutdownWrite();
    auto r = c.ReadResponse();
    REQUIRE(r.ok());
    CHECK(r->status == 200);
    REQUIRE(c.WaitForClose(absl::Seconds(3)));
  }
  CHECK(WaitUntil([&] { return env.proxy().CollectStats().downstream_connections_active == 0; }));
}

}  // namespace
}  // namespace flexgate::dataplane::test

