// common/admin_server over real loopback sockets: exact-path dispatch, query strings, HEAD,
// keep-alive and pipelining, bad input, limits, and clean stop.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>

#include <catch2/catch.hpp>

#include "common/admin_server.h"
#include "test_http_client.h"

namespace flexgate {
namespace {

using agent::testing::HttpGet;
using agent::testing::ParseResponse;
using agent::testing::SendRaw;

std::unique_ptr<AdminServer> StartServer(std::atomic<int>* calls = nullptr) {
  auto server = AdminServer::Create("127.0.0.1:0");
  REQUIRE(server.ok());
  (*server)->Handle("/hello", [calls](const AdminRequest& req) {
    if (calls != nullptr) ++*calls;
    return AdminResponse{200, "text/plain", "method=" + req.method + " path=" + req.path +
                                                " query=" + req.query + "\n"};
  });
  (*server)->Handle("/unavailable", [](const AdminRequest&) {
    return AdminResponse{503, "application/json", "{\"ready\":false}\n"};
  });
  REQUIRE((*server)->Start().ok());
  REQUIRE((*server)->port() != 0);
  return *std::move(server);
}

TEST_CASE("exact-path handlers, query strings and 404") {
  auto server = StartServer();
  auto r = HttpGet(server->port(), "/hello?verbose=1&x=2");
  CHECK(r.status == 200);
  CHECK(r.body == "method=GET path=/hello query=verbose=1&x=2\n");
  CHECK_THAT(r.headers, Catch::Contains("Content-Type: text/plain"));
  CHECK_THAT(r.headers, Catch::Contains("Content-Length: 43"));

  auto s = HttpGet(server->port(), "/unavailable");
  CHECK(s.status == 503);
  CHECK(s.body == "{\"ready\":false}\n");
  CHECK_THAT(s.headers, Catch::Contains("application/json"));

  CHECK(HttpGet(server->port(), "/hello/").status == 404);  // exact paths only
  CHECK(HttpGet(server->port(), "/").status == 404);
  CHECK(HttpGet(server->port(), "/hell").status == 404);
}

TEST_CASE("HEAD gets the headers of GET and no body") {
  auto server = StartServer();
  auto r = HttpGet(server->port(), "/hello", "HEAD");
  CHECK(r.status == 200);
  CHECK(r.body.empty());
  CHECK_THAT(r.headers, Catch::Contains("Content-Length: 31"));
}

TEST_CASE("keep-alive: pipelined requests on one connection are answered in order") {
  std::atomic<int> calls{0};
  auto server = StartServer(&calls);
  std::string raw = SendRaw(server->port(),
                            "GET /hello?n=1 HTTP/1.1\r\nHost: a\r\n\r\n"
                            "GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n"
                            "GET /hello?n=3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  size_t first = raw.find("query=n=1");
  size_t second = raw.find("HTTP/1.1 404");
  size_t third = raw.find("query=n=3");
  CHECK(first != std::string::npos);
  CHECK(second != std::string::npos);
  CHECK(third != std::string::npos);
  CHECK(first < second);
  CHECK(second < third);
  CHECK(calls == 2);
  // The server closed after the request that asked it to (SendRaw read to EOF within timeout).
  CHECK_THAT(raw, Catch::EndsWith("query=n=3\n"));
}

TEST_CASE("HTTP/1.0 and half-closing clients get their answer, then the connection closes") {
  auto server = StartServer();
  auto r = ParseResponse(SendRaw(server->port(), "GET /hello HTTP/1.0\r\n\r\n", 5000,
                                 /*half_close=*/true));
  CHECK(r.status == 200);
  CHECK(r.body == "method=GET path=/hello query=\n");
  CHECK_THAT(r.headers, Catch::Contains("Connection: close"));
}

TEST_CASE("malformed requests get 400 and the connection closes") {
  auto server = StartServer();
  CHECK(ParseResponse(SendRaw(server->port(), "GARBAGE\r\n\r\n")).status == 400);
  CHECK(ParseResponse(SendRaw(server->port(), "GET /hello HTTP/1.1\r\nBad Header\r\n\r\n")).status ==
        400);
  // The server survives bad input.
  CHECK(HttpGet(server->port(), "/hello").status == 200);
}

TEST_CASE("oversized request heads get 431, oversized bodies 413") {
  auto server = StartServer();
  std::string big(20 * 1024, 'a');
  auto r = ParseResponse(
      SendRaw(server->port(), "GET /hello HTTP/1.1\r\nHost: a\r\nX-Big: " + big + "\r\n\r\n"));
  CHECK(r.status == 431);
  std::string body(100 * 1024, 'b');
  auto b = ParseResponse(SendRaw(server->port(),
                                 "POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: " +
                                     std::to_string(body.size()) + "\r\n\r\n" + body));
  CHECK(b.status == 413);
  CHECK(HttpGet(server->port(), "/hello").status == 200);
}

TEST_CASE("stop closes idle connections, frees the port, and is idempotent") {
  auto server = StartServer();
  uint16_t port = server->port();
  // An idle client holds a connection open; Stop must not wait for it.
  int idle = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(idle, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  CHECK(HttpGet(port, "/hello").status == 200);  // the idle connection has been accepted by now

  auto t0 = std::chrono::steady_clock::now();
  server->Stop();
  server->Stop();
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
  char c;
  CHECK(recv(idle, &c, 1, 0) == 0);  // closed by the server
  close(idle);
  CHECK(HttpGet(port, "/hello").status == 0);  // nothing listens any more
  server.reset();
}

TEST_CASE("bind errors are reported by Start, bad addresses by Create") {
  auto first = StartServer();
  auto second = AdminServer::Create("127.0.0.1:" + std::to_string(first->port()));
  REQUIRE(second.ok());
  absl::Status s = (*second)->Start();
  CHECK_FALSE(s.ok());
  CHECK_THAT(std::string(s.message()), Catch::Contains("address already in use"));

  CHECK_FALSE(AdminServer::Create("no-port").ok());
  CHECK_FALSE(AdminServer::Create("127.0.0.1:http").ok());
  CHECK_FALSE(AdminServer::Create("[::1:80").ok());
}

TEST_CASE("IPv6 loopback works when the host has it") {
  auto server = AdminServer::Create("[::1]:0");
  REQUIRE(server.ok());
  (*server)->Handle("/x", [](const AdminRequest&) { return AdminResponse{}; });
  absl::Status s = (*server)->Start();
  if (!s.ok()) {
    WARN("no IPv6 loopback here: " << s.ToString());
    return;
  }
  CHECK((*server)->port() != 0);
}

}  // namespace
}  // namespace flexgate
