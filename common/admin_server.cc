// AdminServer implementation: one libuv loop on one thread, llhttp in its strict mode, exact-path
// dispatch. Built for probes and scrapers, so it favours bounded memory and simple lifetimes over
// throughput: each connection has a hard cap on buffered request bytes, an idle timer, and the
// server as a whole caps the number of open connections.
#include "common/admin_server.h"

#include <netdb.h>
#include <sys/socket.h>
#include <uv.h>

#include <atomic>
#include <cstring>
#include <list>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "llhttp.h"

namespace flexgate {
namespace {

// A request line plus headers above this size is answered 431 and the connection closed.
constexpr size_t kMaxRequestHeadBytes = 16 * 1024;
// Admin endpoints take no bodies worth keeping; larger bodies are refused with 413.
constexpr size_t kMaxRequestBodyBytes = 64 * 1024;
// Connections beyond this count are closed as soon as they are accepted.
constexpr size_t kMaxConnections = 256;
// A connection with no complete request for this long is closed (slow clients, stuck probes).
constexpr uint64_t kIdleTimeoutMs = 30'000;

const char* ReasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

// Splits "host:port", "[v6]:port" or ":port" (all interfaces). The port must be numeric.
absl::Status SplitHostPort(const std::string& address, std::string* host, uint16_t* port) {
  std::string port_text;
  if (!address.empty() && address[0] == '[') {
    size_t close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("bad address \"", address, "\""));
    }
    *host = address.substr(1, close - 1);
    port_text = address.substr(close + 2);
  } else {
    size_t colon = address.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad address \"", address, "\": expected HOST:PORT"));
    }
    *host = address.substr(0, colon);
    port_text = address.substr(colon + 1);
  }
  uint32_t value = 0;
  if (!absl::SimpleAtoi(port_text, &value) || value > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in address \"", address, "\""));
  }
  if (host->empty()) *host = "0.0.0.0";
  *port = static_cast<uint16_t>(value);
  return absl::OkStatus();
}

class AdminServerImpl;

// One accepted connection. Owned by the server's list; freed only from the close callback of its
// TCP handle, after its timer has been closed too (libuv: memory of a handle lives until close).
struct Connection {
  uv_tcp_t tcp;  // first member: handle->data points to the Connection anyway
  uv_timer_t idle_timer;
  llhttp_t parser;
  AdminServerImpl* server = nullptr;
  std::list<Connection*>::iterator self;

  AdminRequest request;
  std::string url;
  size_t head_bytes = 0;
  size_t body_bytes = 0;
  int pending_writes = 0;
  // Set once a response that ends the connection is queued; further input is ignored.
  bool closing = false;
  int open_handles = 0;
};

struct WriteRequest {
  uv_write_t req;
  std::string data;
  Connection* conn;
};

class AdminServerImpl final : public AdminServer {
 public:
  explicit AdminServerImpl(std::string address) : address_(std::move(address)) {
    llhttp_settings_init(&settings_);
    settings_.on_message_begin = &OnMessageBegin;
    settings_.on_url = &OnUrl;
    settings_.on_header_field = &OnHeaderBytes;
    settings_.on_header_value = &OnHeaderBytes;
    settings_.on_headers_complete = &OnHeadersComplete;
    settings_.on_body = &OnBody;
    settings_.on_message_complete = &OnMessageComplete;
  }

  ~AdminServerImpl() override { Stop(); }

  void Handle(std::string path, AdminHandler handler) override {
    handlers_[std::move(path)] = std::move(handler);
  }

  absl::Status Start() override {
    if (started_) return absl::FailedPreconditionError("admin server already started");
    std::string host;
    uint16_t port = 0;
    if (absl::Status s = SplitHostPort(address_, &host, &port); !s.ok()) return s;

    // Resolve at start-up only (blocking is fine here, never on the loop).
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* result = nullptr;
    std::string port_text = std::to_string(port);
    if (int rc = getaddrinfo(host.c_str(), port_text.c_str(), &hints, &result); rc != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("admin address \"", address_, "\": ", gai_strerror(rc)));
    }
    sockaddr_storage bind_addr{};
    std::memcpy(&bind_addr, result->ai_addr, result->ai_addrlen);
    freeaddrinfo(result);

    if (int rc = uv_loop_init(&loop_); rc != 0) return UvError("uv_loop_init", rc);
    uv_tcp_init(&loop_, &listener_);
    listener_.data = this;
    uv_async_init(&loop_, &stop_async_, &OnStopAsync);
    stop_async_.data = this;

    int rc = uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&bind_addr), 0);
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 128, &OnConnection);
    if (rc != 0) {
      absl::Status error = UvError(absl::StrCat("listen on ", address_), rc);
      CloseAllAndDrainLoop();
      return error;
    }
    sockaddr_storage bound{};
    int len = sizeof(bound);
    uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&bound), &len);
    port_.store(ntohs(bound.ss_family == AF_INET6
                          ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                          : reinterpret_cast<sockaddr_in*>(&bound)->sin_port),
                std::memory_order_release);

    started_ = true;
    thread_ = std::thread([this] { uv_run(&loop_, UV_RUN_DEFAULT); });
    return absl::OkStatus();
  }

  uint16_t port() const override { return port_.load(std::memory_order_acquire); }

  void Stop() override {
    if (!started_ || stopped_.exchange(true)) return;
    uv_async_send(&stop_async_);
    thread_.join();
    int rc = uv_loop_close(&loop_);
    if (rc != 0) FG_LOG_ERROR("admin loop closed with open handles", {{"error", uv_strerror(rc)}});
  }

 private:
  static absl::Status UvError(std::string what, int rc) {
    return absl::UnavailableError(absl::StrCat(what, ": ", uv_strerror(rc)));
  }

  // Used when Start fails after the loop exists: close what was opened and let the loop run the
  // close callbacks so uv_loop_close succeeds.
  void CloseAllAndDrainLoop() {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&stop_async_), nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
  }

  static void OnStopAsync(uv_async_t* async) {
    auto* self = static_cast<AdminServerImpl*>(async->data);
    uv_close(reinterpret_cast<uv_handle_t*>(&self->listener_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&self->stop_async_), nullptr);
    // CloseConnection only starts closing; entries leave the list in the close callbacks, so
    // iterating the list here is safe.
    for (Connection* c : self->connections_) self->CloseConnection(c);
  }

  static void OnConnection(uv_stream_t* listener, int status) {
    auto* self = static_cast<AdminServerImpl*>(listener->data);
    if (status < 0) {
      FG_LOG_WARN("admin accept failed", {{"error", uv_strerror(status)}});
      return;
    }
    auto* conn = new Connection();
    conn->server = self;
    uv_tcp_init(&self->loop_, &conn->tcp);
    conn->tcp.data = conn;
    uv_timer_init(&self->loop_, &conn->idle_timer);
    conn->idle_timer.data = conn;
    conn->open_handles = 2;
    self->connections_.push_front(conn);
    conn->self = self->connections_.begin();
    if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&conn->tcp)) != 0 ||
        self->connections_.size() > kMaxConnections) {
      self->CloseConnection(conn);
      return;
    }
    llhttp_init(&conn->parser, HTTP_REQUEST, &self->settings_);
    conn->parser.data = conn;
    uv_tcp_nodelay(&conn->tcp, 1);
    uv_timer_start(&conn->idle_timer, &OnIdleTimeout, kIdleTimeoutMs, 0);
    uv_read_start(reinterpret_cast<uv_stream_t*>(&conn->tcp), &OnAlloc, &OnRead);
  }

  static void OnAlloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
    auto* conn = static_cast<Connection*>(handle->data);
    buf->base = conn->server->read_buffer_;
    buf->len = sizeof(conn->server->read_buffer_);
  }

  static void OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
    auto* conn = static_cast<Connection*>(stream->data);
    AdminServerImpl* self = conn->server;
    if (nread < 0) {
      // A client that half-closes after its request (printf ... | nc) still gets its answer.
      if (nread == UV_EOF && conn->pending_writes > 0) {
        conn->closing = true;
        uv_read_stop(stream);
        return;
      }
      self->CloseConnection(conn);
      return;
    }
    if (nread == 0 || conn->closing) return;
    llhttp_errno_t err = llhttp_execute(&conn->parser, buf->base, static_cast<size_t>(nread));
    if (err == HPE_OK || err == HPE_PAUSED) return;  // paused: a closing response is queued
    if (conn->closing) return;
    // Our own callbacks return HPE_USER to reject oversized requests after answering them.
    if (err != HPE_USER) self->Respond(conn, AdminResponse{400, "text/plain; charset=utf-8",
                                                           "bad request\n"}, /*close=*/true, false);
  }

  static void OnIdleTimeout(uv_timer_t* timer) {
    auto* conn = static_cast<Connection*>(timer->data);
    conn->server->CloseConnection(conn);
  }

  static int OnMessageBegin(llhttp_t* parser) {
    auto* conn = static_cast<Connection*>(parser->data);
    conn->url.clear();
    conn->head_bytes = 0;
    conn->body_bytes = 0;
    return HPE_OK;
  }

  static int CountHead(Connection* conn, size_t len) {
    conn->head_bytes += len;
    if (conn->head_bytes > kMaxRequestHeadBytes) {
      conn->server->Respond(conn, AdminResponse{431, "text/plain; charset=utf-8",
                                                "request header fields too large\n"},
                            /*close=*/true, false);
      return HPE_USER;
    }
    return HPE_OK;
  }

  static int OnUrl(llhttp_t* parser, const char* at, size_t len) {
    auto* conn = static_cast<Connection*>(parser->data);
    if (int rc = CountHead(conn, len); rc != HPE_OK) return rc;
    conn->url.append(at, len);
    return HPE_OK;
  }

  static int OnHeaderBytes(llhttp_t* parser, const char*, size_t len) {
    return CountHead(static_cast<Connection*>(parser->data), len);
  }

  static int OnHeadersComplete(llhttp_t*) { return HPE_OK; }

  static int OnBody(llhttp_t* parser, const char*, size_t len) {
    auto* conn = static_cast<Connection*>(parser->data);
    conn->body_bytes += len;
    if (conn->body_bytes > kMaxRequestBodyBytes) {
      conn->server->Respond(conn, AdminResponse{413, "text/plain; charset=utf-8",
                                                "request body too large\n"},
                            /*close=*/true, false);
      return HPE_USER;
    }
    return HPE_OK;
  }

  static int OnMessageComplete(llhttp_t* parser) {
    auto* conn = static_cast<Connection*>(parser->data);
    AdminServerImpl* self = conn->server;
    AdminRequest& req = conn->request;
    req.method = llhttp_method_name(static_cast<llhttp_method_t>(llhttp_get_method(parser)));
    size_t q = conn->url.find('?');
    req.path = conn->url.substr(0, q);
    req.query = q == std::string::npos ? std::string() : conn->url.substr(q + 1);
    bool head = req.method == "HEAD";

    AdminResponse response;
    auto it = self->handlers_.find(req.path);
    if (it == self->handlers_.end()) {
      response = AdminResponse{404, "text/plain; charset=utf-8", "not found\n"};
    } else {
      response = it->second(req);
    }
    bool close = !llhttp_should_keep_alive(parser);
    self->Respond(conn, response, close, head);
    // Restart the idle clock: the connection is idle again until the next request.
    uv_timer_start(&conn->idle_timer, &OnIdleTimeout, kIdleTimeoutMs, 0);
    return close ? HPE_PAUSED : HPE_OK;
  }

  void Respond(Connection* conn, const AdminResponse& response, bool close, bool head_only) {
    if (conn->closing) return;
    auto* w = new WriteRequest();
    w->conn = conn;
    absl::StrAppend(&w->data, "HTTP/1.1 ", response.status, " ", ReasonPhrase(response.status),
                    "\r\nContent-Type: ", response.content_type,
                    "\r\nContent-Length: ", response.body.size(),
                    "\r\nCache-Control: no-store\r\n", close ? "Connection: close\r\n" : "",
                    "\r\n");
    if (!head_only) w->data += response.body;
    if (close) conn->closing = true;
    uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    w->req.data = w;
    int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&conn->tcp), &buf, 1, &OnWritten);
    if (rc != 0) {
      delete w;
      CloseConnection(conn);
      return;
    }
    ++conn->pending_writes;
  }

  static void OnWritten(uv_write_t* req, int status) {
    auto* w = static_cast<WriteRequest*>(req->data);
    Connection* conn = w->conn;
    delete w;
    --conn->pending_writes;
    if (status < 0 || (conn->closing && conn->pending_writes == 0)) {
      conn->server->CloseConnection(conn);
    }
  }

  void CloseConnection(Connection* conn) {
    auto* tcp = reinterpret_cast<uv_handle_t*>(&conn->tcp);
    if (uv_is_closing(tcp)) return;
    conn->closing = true;
    uv_close(tcp, &OnHandleClosed);
    uv_close(reinterpret_cast<uv_handle_t*>(&conn->idle_timer), &OnHandleClosed);
  }

  static void OnHandleClosed(uv_handle_t* handle) {
    auto* conn = static_cast<Connection*>(handle->data);
    if (--conn->open_handles > 0) return;
    conn->server->connections_.erase(conn->self);
    delete conn;
  }

  const std::string address_;
  absl::flat_hash_map<std::string, AdminHandler> handlers_;
  llhttp_settings_t settings_;

  uv_loop_t loop_{};
  uv_tcp_t listener_{};
  uv_async_t stop_async_{};
  std::thread thread_;
  std::atomic<uint16_t> port_{0};
  bool started_ = false;
  std::atomic<bool> stopped_{false};

  // Loop-thread state.
  std::list<Connection*> connections_;
  char read_buffer_[16 * 1024];
};

}  // namespace

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::Create(std::string address) {
  std::string host;
  uint16_t port = 0;
  if (absl::Status s = SplitHostPort(address, &host, &port); !s.ok()) return s;
  return std::unique_ptr<AdminServer>(new AdminServerImpl(std::move(address)));
}

}  // namespace flexgate
