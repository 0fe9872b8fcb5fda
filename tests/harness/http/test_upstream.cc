#include "tests/harness/http/test_upstream.h"

#include <arpa/inet.h>
#include <llhttp.h>
#include <uv.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/tls/tls.h"

namespace flexgate::testing {

namespace {
struct UpConn;
}  // namespace

struct TestUpstream::Impl {
  std::string name;
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_async_t stop_async;
  std::thread thread;
  uint16_t port = 0;
  std::atomic<uint64_t> connections{0};
  std::atomic<uint64_t> requests{0};
  std::atomic<int> health_status{200};
  std::atomic<uint64_t> health_requests{0};
  mutable absl::Mutex mu;
  std::string last_head ABSL_GUARDED_BY(mu);
  absl::flat_hash_set<UpConn*> conns;  // loop thread only
  bool stopped = false;                // loop thread only
  bool joined = false;
  std::shared_ptr<const tls::TlsServerContext> tls;  // null = plain HTTP
};

namespace {

// One server-side connection. Requests are answered strictly in order: parsing pauses at the end
// of each request until its (possibly delayed) response is written.
struct UpConn {
  TestUpstream::Impl* server;
  uv_tcp_t tcp;
  uv_timer_t timer;
  llhttp_t parser;
  int open_handles = 2;
  bool closing = false;
  bool busy = false;       // a response is pending (slow)
  bool close_after = false;
  bool echo = false;       // upgraded (/ws): echo raw bytes
  std::string head;        // request line + headers as received (reconstructed)
  std::string url;
  std::string field, value;
  bool in_value = false;
  std::string body;
  std::string pending;     // unparsed pipelined bytes
  std::string delayed;     // response waiting for the timer
  size_t trickle_step = 0; // /trickle: bytes of `delayed` sent per timer tick
  std::unique_ptr<tls::TlsSession> tls;  // TLS mode only
};

UpConn* C(llhttp_t* p) { return static_cast<UpConn*>(p->data); }

void OnClosed(uv_handle_t* h) {
  auto* c = static_cast<UpConn*>(h->data);
  if (--c->open_handles == 0) delete c;
}

void WriteCiphertext(UpConn* c);

void CloseConn(UpConn* c) {
  if (c->closing) return;
  if (c->tls != nullptr && c->tls->handshake_done()) {
    // Best effort close_notify: usually fits in the socket buffer at once.
    c->tls->Shutdown();
    std::string out;
    c->tls->TakeCiphertext(&out);
    uv_buf_t b = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
    if (!out.empty()) uv_try_write(reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1);
  }
  c->closing = true;
  c->server->conns.erase(c);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), OnClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), OnClosed);
}

struct WriteReq {
  uv_write_t req;
  std::string data;
  UpConn* conn;
  bool close_after;
};

void RawWrite(UpConn* c, std::string data, bool close_after);

void Write(UpConn* c, std::string data, bool close_after = false) {
  if (c->closing) return;
  if (c->tls != nullptr) {
    if (!c->tls->WritePlaintext(data).ok()) {
      CloseConn(c);
      return;
    }
    if (close_after) c->tls->Shutdown();
    std::string out;
    c->tls->TakeCiphertext(&out);
    RawWrite(c, std::move(out), close_after);
    return;
  }
  RawWrite(c, std::move(data), close_after);
}

void WriteCiphertext(UpConn* c) {
  if (c->closing || !c->tls->HasCiphertext()) return;
  std::string out;
  c->tls->TakeCiphertext(&out);
  RawWrite(c, std::move(out), false);
}

void RawWrite(UpConn* c, std::string data, bool close_after) {
  if (c->closing) return;
  auto* w = new WriteReq;
  w->data = std::move(data);
  w->conn = c;
  w->close_after = close_after;
  w->req.data = w;
  uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1, [](uv_write_t* r, int) {
    auto* w = static_cast<WriteReq*>(r->data);
    if (w->close_after) CloseConn(w->conn);
    delete w;
  });
  if (rc != 0) {
    delete w;
    CloseConn(c);
  }
}

std::string QueryParam(const std::string& url, std::string_view key) {
  size_t q = url.find('?');
  if (q == std::string::npos) return "";
  std::string_view rest(url);
  rest.remove_prefix(q + 1);
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view kv = rest.substr(0, amp);
    size_t eq = kv.find('=');
    if (kv.substr(0, eq) == key) return eq == std::string_view::npos ? "" : std::string(kv.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return "";
}

std::string Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 404: return "Not Found";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

void Process(UpConn* c, const char* data, size_t len);

void Respond(UpConn* c) {
  TestUpstream::Impl* s = c->server;
  const std::string& name = s->name;
  std::string method = llhttp_method_name(static_cast<llhttp_method_t>(c->parser.method));
  std::string path = c->url.substr(0, c->url.find('?'));
  bool keep_alive = llhttp_should_keep_alive(&c->parser) != 0;
  bool head = method == "HEAD";
  {
    absl::MutexLock lock(&s->mu);
    s->last_head = c->head;
  }
  s->requests.fetch_add(1);

  if (path == "/drop") {
    CloseConn(c);
    return;
  }
  if (path == "/ws" && c->parser.upgrade) {
    c->echo = true;
    Write(c, absl::StrCat("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                          "connection: Upgrade\r\nx-upstream: ", name, "\r\n\r\n"));
    return;
  }
  int status = 200;
  std::string body;
  std::string extra = absl::StrCat("x-upstream: ", name, "\r\n");
  bool chunked = false;
  std::vector<std::string> chunks;
  if (method == "POST" || method == "PUT") {
    body = c->body;
  } else if (path == "/64k") {
    body.assign(65536, 'x');
    for (size_t i = 0; i < body.size(); i += 64) body[i] = static_cast<char>('a' + (i / 64) % 26);
  } else if (path == "/chunked") {
    chunked = true;
    for (int i = 0; i < 5; ++i) chunks.push_back(absl::StrCat(name, " chunk ", i, "\n"));
  } else if (path == "/big") {
    chunked = true;
    int kb = 0;
    (void)absl::SimpleAtoi(QueryParam(c->url, "kb"), &kb);
    for (int i = 0; i < kb; ++i) chunks.push_back(std::string(1024, static_cast<char>('a' + i % 26)));
  } else if (absl::StartsWith(path, "/status/")) {
    (void)absl::SimpleAtoi(path.substr(8), &status);
    if (status < 100 || status > 999) status = 500;
    body = absl::StrCat(name, " status ", status, "\n");
  } else if (path == "/health") {
    status = s->health_status.load();
    s->health_requests.fetch_add(1);
    body = absl::StrCat(name, " health ", status, "\n");
  } else if (path == "/trickle") {
    // A head with repeated and empty values, odd spacing, hop-by-hop and Via lines between the
    // others, and an odd reason phrase, so that a proxy that reassembles a head from several
    // reads, or forwards runs of received lines, has something to get wrong.
    status = 299;
    extra +=
        "x-one: first value\r\nkeep-alive: timeout=5\r\nx-empty:\r\n"
        "x-two:\t second, value \r\nvia: 1.0 origin\r\nx-one: again\r\n"
        "connection: keep-alive\r\n";
    body = "trickled body\n";
  } else if (path == "/headers") {
    body = c->head;
  } else {
    body = absl::StrCat(name, " ", method, " ", c->url.substr(0, c->url.find('?')), "\n");
  }
  if (path == "/close") keep_alive = false;

  std::string out = absl::StrCat("HTTP/1.1 ", status, " ", Reason(status), "\r\n", extra);
  bool bodyless = status < 200 || status == 204 || status == 304;
  if (chunked) {
    out.append("transfer-encoding: chunked\r\n");
  } else if (!bodyless) {
    absl::StrAppend(&out, "content-type: text/plain\r\ncontent-length: ", body.size(), "\r\n");
  }
  if (!keep_alive) out.append("connection: close\r\n");
  out.append("\r\n");
  if (!head && !bodyless) {
    if (chunked) {
      for (const auto& ch : chunks) {
        char hex[20];
        snprintf(hex, sizeof(hex), "%zx\r\n", ch.size());
        absl::StrAppend(&out, hex, ch, "\r\n");
      }
      out.append("0\r\n\r\n");
    } else {
      out.append(body);
    }
  }
  c->close_after = !keep_alive;

  if (path == "/trickle") {
    // The response leaves in pieces of `step` bytes, one every 2 ms, so that the reader gets
    // its head (and body) over many reads.
    size_t step = 3;
    (void)absl::SimpleAtoi(QueryParam(c->url, "step"), &step);
    c->trickle_step = std::max<size_t>(step, 1);
    c->busy = true;
    c->delayed = std::move(out);
    uv_timer_start(&c->timer, [](uv_timer_t* t) {
      auto* c = static_cast<UpConn*>(t->data);
      size_t n = std::min(c->trickle_step, c->delayed.size());
      std::string piece = c->delayed.substr(0, n);
      c->delayed.erase(0, n);
      bool last = c->delayed.empty();
      if (!last) {
        Write(c, std::move(piece), false);
        return;  // the repeating timer sends the next piece
      }
      uv_timer_stop(t);
      c->busy = false;
      Write(c, std::move(piece), c->close_after);
      if (c->close_after) return;
      std::string pending;
      pending.swap(c->pending);
      if (!pending.empty()) Process(c, pending.data(), pending.size());
    }, 2, 2);
    return;
  }
  int delay = 0;
  if (path == "/slow") (void)absl::SimpleAtoi(QueryParam(c->url, "ms"), &delay);
  if (delay > 0) {
    c->busy = true;
    c->delayed = std::move(out);
    uv_timer_start(&c->timer, [](uv_timer_t* t) {
      auto* c = static_cast<UpConn*>(t->data);
      c->busy = false;
      Write(c, std::move(c->delayed), c->close_after);
      if (c->close_after) return;
      std::string pending;
      pending.swap(c->pending);
      if (!pending.empty()) Process(c, pending.data(), pending.size());
    }, static_cast<uint64_t>(delay), 0);
    return;
  }
  Write(c, std::move(out), c->close_after);
}

const llhttp_settings_t* RequestSettings() {
  static const llhttp_settings_t settings = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_message_begin = [](llhttp_t* p) {
      UpConn* c = C(p);
      c->head.clear();
      c->url.clear();
      c->body.clear();
      c->field.clear();
      c->value.clear();
      c->in_value = false;
      return 0;
    };
    s.on_url = [](llhttp_t* p, const char* at, size_t n) {
      C(p)->url.append(at, n);
      return 0;
    };
    s.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
      UpConn* c = C(p);
      if (c->in_value) {
        absl::StrAppend(&c->head, c->field, ": ", c->value, "\n");
        c->field.clear();
        c->value.clear();
        c->in_value = false;
      }
      c->field.append(at, n);
      return 0;
    };
    s.on_header_value = [](llhttp_t* p, const char* at, size_t n) {
      UpConn* c = C(p);
      c->in_value = true;
      c->value.append(at, n);
      return 0;
    };
    s.on_headers_complete = [](llhttp_t* p) {
      UpConn* c = C(p);
      // Only /ws switches protocols; anywhere else an upgrade request is answered as plain HTTP
      // and the connection keeps parsing requests.
      if (c->url.rfind("/ws", 0) != 0 || (c->url.size() > 3 && c->url[3] != '?')) p->upgrade = 0;
      if (c->in_value || !c->field.empty()) absl::StrAppend(&c->head, c->field, ": ", c->value, "\n");
      c->in_value = false;
      // The request line is known completely only now (the version comes after the URL).
      c->head = absl::StrCat(llhttp_method_name(static_cast<llhttp_method_t>(p->method)), " ",
                             c->url, " HTTP/", p->http_major, ".", p->http_minor, "\n", c->head);
      return 0;
    };
    s.on_body = [](llhttp_t* p, const char* at, size_t n) {
      C(p)->body.append(at, n);
      return 0;
    };
    s.on_message_complete = [](llhttp_t* p) {
      Respond(C(p));
      return static_cast<int>(HPE_PAUSED);
    };
    return s;
  }();
  return &settings;
}

void Process(UpConn* c, const char* data, size_t len) {
  while (len > 0 && !c->closing) {
    if (c->busy || c->close_after) {
      if (!c->close_after) c->pending.append(data, len);
      return;
    }
    llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
    if (err == HPE_OK) return;
    if (err == HPE_PAUSED) {
      size_t used = static_cast<size_t>(llhttp_get_error_pos(&c->parser) - data);
      llhttp_resume(&c->parser);
      data += used;
      len -= used;
      if (c->echo) {
        // Bytes behind the upgrade request are already the tunnelled protocol.
        if (len > 0) Write(c, std::string(data, len));
        return;
      }
      continue;
    }
    Write(c, "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", true);
    return;
  }
}

// TLS mode: decrypts what arrived and handles the plaintext as the plain path would.
void OnTlsRead(UpConn* c, ssize_t n, const uv_buf_t* b) {
  if (n > 0) {
    c->tls->FeedCiphertext(absl::string_view(b->base, static_cast<size_t>(n)));
  } else {
    c->tls->FeedEof();
  }
  std::vector<char> plain(16384);
  for (;;) {
    size_t got = 0;
    auto r = c->tls->ReadPlaintext(plain.data(), plain.size(), &got);
    WriteCiphertext(c);
    if (c->closing) return;
    if (r == tls::TlsSession::ReadResult::kData) {
      if (c->echo) {
        Write(c, std::string(plain.data(), got));
      } else {
        Process(c, plain.data(), got);
      }
      if (c->closing) return;
      continue;
    }
    if (r == tls::TlsSession::ReadResult::kWantMore && n > 0) return;
    CloseConn(c);  // close_notify, EOF, or a TLS failure (its alert was flushed above)
    return;
  }
}

void OnConnection(uv_stream_t* server, int status) {
  auto* s = static_cast<TestUpstream::Impl*>(server->data);
  if (status < 0 || s->stopped) return;
  auto* c = new UpConn;
  c->server = s;
  uv_tcp_init(&s->loop, &c->tcp);
  uv_timer_init(&s->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  llhttp_init(&c->parser, HTTP_REQUEST, RequestSettings());
  c->parser.data = c;
  s->conns.insert(c);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    CloseConn(c);
    return;
  }
  if (s->tls != nullptr) {
    auto session = s->tls->NewSession();
    if (!session.ok()) {
      CloseConn(c);
      return;
    }
    c->tls = *std::move(session);
  }
  s->connections.fetch_add(1);
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c->tcp),
      [](uv_handle_t*, size_t suggested, uv_buf_t* b) {
        *b = uv_buf_init(new char[suggested], static_cast<unsigned>(suggested));
      },
      [](uv_stream_t* st, ssize_t n, const uv_buf_t* b) {
        auto* c = static_cast<UpConn*>(st->data);
        if (c->tls != nullptr && n != 0) {
          OnTlsRead(c, n, b);
        } else if (n < 0) {
          CloseConn(c);
        } else if (n > 0 && c->echo) {
          Write(c, std::string(b->base, static_cast<size_t>(n)));
        } else if (n > 0) {
          Process(c, b->base, static_cast<size_t>(n));
        }
        delete[] b->base;
      });
}

}  // namespace

TestUpstream::TestUpstream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

TestUpstream::~TestUpstream() { Stop(); }

absl::StatusOr<std::unique_ptr<TestUpstream>> TestUpstream::StartTls(
    std::string name, std::shared_ptr<const tls::TlsServerContext> tls, std::string address) {
  if (tls == nullptr) return absl::InvalidArgumentError("StartTls needs a TLS context");
  return StartImpl(std::move(name), std::move(address), std::move(tls));
}

absl::StatusOr<std::unique_ptr<TestUpstream>> TestUpstream::Start(std::string name,
                                                                  std::string address) {
  return StartImpl(std::move(name), std::move(address), nullptr);
}

absl::StatusOr<std::unique_ptr<TestUpstream>> TestUpstream::StartImpl(
    std::string name, std::string address, std::shared_ptr<const tls::TlsServerContext> tls) {
  auto impl = std::make_unique<Impl>();
  impl->name = std::move(name);
  impl->tls = std::move(tls);
  size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("bad listen address: ", address));
  }
  sockaddr_in addr{};
  if (uv_ip4_addr(address.substr(0, colon).c_str(), port, &addr) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad listen address: ", address));
  }
  uv_loop_init(&impl->loop);
  uv_tcp_init(&impl->loop, &impl->listener);
  impl->listener.data = impl.get();
  int rc = uv_tcp_bind(&impl->listener, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&impl->listener), 512, OnConnection);
  if (rc != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&impl->listener), nullptr);
    uv_run(&impl->loop, UV_RUN_DEFAULT);
    uv_loop_close(&impl->loop);
    return absl::UnavailableError(absl::StrCat("listen ", address, ": ", uv_strerror(rc)));
  }
  sockaddr_storage bound{};
  int len = sizeof(bound);
  uv_tcp_getsockname(&impl->listener, reinterpret_cast<sockaddr*>(&bound), &len);
  impl->port = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  uv_async_init(&impl->loop, &impl->stop_async, [](uv_async_t* a) {
    auto* s = static_cast<Impl*>(a->data);
    s->stopped = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&s->listener), nullptr);
    std::vector<UpConn*> conns(s->conns.begin(), s->conns.end());
    for (UpConn* c : conns) CloseConn(c);
    uv_close(reinterpret_cast<uv_handle_t*>(&s->stop_async), nullptr);
  });
  impl->stop_async.data = impl.get();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] {
    uv_run(&raw->loop, UV_RUN_DEFAULT);
    uv_loop_close(&raw->loop);
  });
  return std::unique_ptr<TestUpstream>(new TestUpstream(std::move(impl)));
}

void TestUpstream::Stop() {
  if (!impl_ || impl_->joined) return;
  impl_->joined = true;
  uv_async_send(&impl_->stop_async);
  impl_->thread.join();
}

uint16_t TestUpstream::port() const { return impl_->port; }
const std::string& TestUpstream::name() const { return impl_->name; }
uint64_t TestUpstream::connections() const { return impl_->connections.load(); }
uint64_t TestUpstream::requests() const { return impl_->requests.load(); }
void TestUpstream::SetHealthStatus(int status) { impl_->health_status.store(status); }
uint64_t TestUpstream::health_requests() const { return impl_->health_requests.load(); }
std::string TestUpstream::last_request_head() const {
  absl::MutexLock lock(&impl_->mu);
  return impl_->last_head;
}

}  // namespace flexgate::testing
