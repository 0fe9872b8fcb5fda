// Slow-loris: many connections dribbling a request head one byte at a time are answered 408 and
// closed at the header timeout while a normal client keeps being served; and memory per
// connection is bounded: a head larger than max_header_bytes gets 431 and the proxy stops
// reading that connection instead of buffering what the client keeps sending.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "proxy_test_env.h"

namespace flexgate::dataplane::test {
namespace {

ProxyLimits LorisLimits() {
  ProxyLimits l;
  l.max_header_bytes = 4096;
  l.header_timeout = absl::Milliseconds(600);
  return l;
}

TEST_CASE("slow-loris connections get 408 at the header timeout while others are served") {
  ProxyEnv env(kDefaultConfig, LorisLimits(), /*workers=*/2);
  constexpr int kLoris = 40;
  const std::string head = "GET /slow HTTP/1.1\r\nHost: a\r\nX-Dribble: ";
  std::vector<HttpClient> loris;
  for (int i = 0; i < kLoris; ++i) loris.push_back(env.Client());
  // Dribble one byte per connection per round for well under the timeout (the header timer
  // starts with the first byte), then keep quiet: no byte arrives after the proxy's answer, so
  // the answer cannot be lost to a reset.
  absl::Time start = absl::Now();
  size_t sent = 0;
  HttpClient normal = env.Client();
  int served = 0;
  while (absl::Now() - start < absl::Milliseconds(300)) {
    char byte = sent < head.size() ? head[sent] : 'x';
    for (auto& c : loris) REQUIRE(c.SendRaw(std::string_view(&byte, 1)).ok());
    ++sent;
    // A normal client is served promptly meanwhile, on a keep-alive connection and a new one.
    absl::Time t0 = absl::Now();
    auto r = normal.Get("/normal");
    REQUIRE(r.ok());
    CHECK(r->status == 200);
    auto r2 = env.Client().Get("/fresh");
    REQUIRE(r2.ok());
    CHECK(r2->status == 200);
    CHECK(absl::Now() - t0 < absl::Milliseconds(500));
    ++served;
    absl::SleepFor(absl::Milliseconds(10));  // the dribble's pace
  }
  CHECK(served >= 3);
  for (auto& c : loris) {
    auto r = c.ReadResponse();
    REQUIRE(r.ok());
    CHECK(r->status == 408);
    CHECK(c.WaitForClose(absl::Seconds(5)));
  }
  // Answered at the timeout, not long after it.
  CHECK(absl::Now() - start < absl::Seconds(4));
  ProxyStats st = env.proxy().CollectStats();
  CHECK(st.responses_4xx >= kLoris);
  CHECK(WaitUntil([&] {
    return env.proxy().CollectStats().downstream_connections_active <= 1;  // `normal` only
  }));
  auto after = env.Client().Get("/after");
  REQUIRE(after.ok());
  CHECK(after->status == 200);
}

TEST_CASE("a head over max_header_bytes gets 431 and is not buffered further") {
  ProxyEnv env(kDefaultConfig, LorisLimits(), /*workers=*/1);
  // The status first: a head just over the limit, sent at once.
  {
    HttpClient c = env.Client();
    REQUIRE(c.SendRaw("GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(5000, 'h') +
                      "\r\n\r\n")
                .ok());
    auto r = c.ReadResponse();
    REQUIRE(r.ok());
    CHECK(r->status == 431);
    CHECK(c.WaitForClose(absl::Seconds(5)));
  }
  // Then the memory bound: a client that never stops sending header bytes. The proxy answers
  // 431 once the limit is passed and stops reading; what it took in stays near the limit however
  // much the client pushes.
  uint64_t received_before = env.proxy().CollectStats().bytes_received;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(env.port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  timeval tv{0, 200000};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  std::string start_line = "GET / HTTP/1.1\r\nHost: a\r\nX-Endless: ";
  REQUIRE(::send(fd, start_line.data(), start_line.size(), MSG_NOSIGNAL) > 0);
  const std::string filler(16 * 1024, 'e');
  size_t total = 0;
  absl::Time deadline = absl::Now() + absl::Seconds(3);
  bool refused = false;
  while (absl::Now() < deadline && total < (8u << 20)) {
    ssize_t n = ::send(fd, filler.data(), filler.size(), MSG_NOSIGNAL);
    if (n > 0) {
      total += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      refused = true;  // the proxy closed the connection
      break;
    }
    // n < 0 with EAGAIN: the proxy is not reading; keep trying until the deadline.
  }
  ::close(fd);
  uint64_t taken = env.proxy().CollectStats().bytes_received - received_before;
  INFO("client pushed " << total << " bytes, the proxy read " << taken);
  // The limit, plus at most one read buffer's worth that arrived together with it.
  CHECK(taken <= 4096 + 64 * 1024 + start_line.size());
  // The client could push far more than that into the connection, or was cut off: either way
  // the proxy did not keep reading.
  CHECK((refused || total > 4 * taken));
  CHECK(env.proxy().CollectStats().bad_requests >= 2);
  auto ok = env.Client().Get("/still-serving");
  REQUIRE(ok.ok());
  CHECK(ok->status == 200);
}

}  // namespace
}  // namespace flexgate::dataplane::test
