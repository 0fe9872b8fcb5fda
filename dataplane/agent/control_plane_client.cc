#include "dataplane/agent/control_plane_client.h"

#include <grpcpp/grpcpp.h>

#include <deque>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "dataplane/agent/backoff.h"
#include "flexgate/v1/agent.grpc.pb.h"

namespace flexgate::agent {
namespace {

namespace v1 = flexgate::v1;

// Snapshots of 10,000 routes are several megabytes; the gRPC default of 4 MB is too small.
constexpr int kMaxSnapshotBytes = 64 * 1024 * 1024;

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(what, " ", path, ": cannot read"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int Ms(absl::Duration d) { return static_cast<int>(absl::ToInt64Milliseconds(d)); }

google::protobuf::Duration ToProto(absl::Duration d) {
  google::protobuf::Duration out;
  int64_t ns = absl::ToInt64Nanoseconds(d);
  out.set_seconds(ns / 1'000'000'000);
  out.set_nanos(static_cast<int32_t>(ns % 1'000'000'000));
  return out;
}

}  // namespace

class ControlPlaneClient::Impl {
 public:
  Impl(ControlPlaneClientOptions options, std::shared_ptr<grpc::ChannelCredentials> credentials,
       SnapshotApplier* applier, SnapshotCache* cache, AgentState* state)
      : options_(std::move(options)),
        credentials_(std::move(credentials)),
        applier_(applier),
        cache_(cache),
        state_(state) {
    const ControlPlaneOptions& c = options_.connection;
    // Keepalive pings detect a dead control plane even when the stream is quiet. The control
    // plane must permit pings at this rate (GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS).
    args_.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, Ms(c.keepalive_time));
    args_.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Ms(c.keepalive_timeout));
    args_.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args_.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    // A fresh channel per attempt with its own subchannel: our backoff (full jitter) is then the
    // only one deciding when to reconnect, instead of a shared subchannel's own back-off state.
    args_.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args_.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, kMaxSnapshotBytes);
    args_.SetString(GRPC_ARG_PRIMARY_USER_AGENT_STRING,
                    absl::StrCat("flexgate-agent/", options_.agent_version));
    if (!c.server_name.empty()) args_.SetSslTargetNameOverride(c.server_name);
  }

  ~Impl() { Stop(); }

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      stopping_ = true;
      if (context_ != nullptr) context_->TryCancel();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  bool StopRequested() {
    absl::MutexLock lock(&mu_);
    return stopping_;
  }

  void Run() {
    const ControlPlaneOptions& c = options_.connection;
    Backoff backoff(c.reconnect_base, c.reconnect_max);
    while (!StopRequested()) {
      absl::Time started = absl::Now();
      bool established = RunStream();
      if (StopRequested()) break;
      if (established && absl::Now() - started >= c.stable_after) backoff.Reset();
      absl::Duration delay = backoff.Next();
      FG_LOG_INFO("reconnecting to control plane",
                  {{"address", c.address}, {"in_ms", absl::ToInt64Milliseconds(delay)},
                   {"attempt", backoff.attempts()}});
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), delay);
    }
  }

  // One stream from Hello to its end. Returns whether the Hello went out (the stream was up).
  bool RunStream() {
    const ControlPlaneOptions& c = options_.connection;
    std::shared_ptr<grpc::Channel> channel =
        grpc::CreateCustomChannel(c.address, credentials_, args_);
    std::unique_ptr<v1::AgentService::Stub> stub = v1::AgentService::NewStub(channel);
    grpc::ClientContext context;
    context.AddMetadata("authorization", absl::StrCat("Bearer ", c.token));
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return false;
      context_ = &context;
      messages_.clear();
      stream_ended_ = false;
    }
    std::unique_ptr<grpc::ClientReaderWriter<v1::AgentMessage, v1::ControlMessage>> stream =
        stub->Connect(&context);

    bool established = stream->Write(HelloMessage());
    std::thread reader;
    if (established) {
      state_->SetControlPlaneConnected(true);
      state_->control_plane_connects.fetch_add(1, std::memory_order_relaxed);
      FG_LOG_INFO("control plane stream open",
                  {{"address", c.address}, {"agent_id", state_->agent_id()}});
      // Reads block, so they get a thread of their own; this thread does every write.
      reader = std::thread([this, s = stream.get()] {
        v1::ControlMessage message;
        while (s->Read(&message)) {
          absl::MutexLock lock(&mu_);
          messages_.push_back(std::move(message));
          message.Clear();
        }
        absl::MutexLock lock(&mu_);
        stream_ended_ = true;
      });
      ServeStream(stream.get());
    }

    bool server_ended = false;
    {
      absl::MutexLock lock(&mu_);
      server_ended = stream_ended_;
    }
    // When the server ended the stream (a refusal, a revoked token, a restart), its status is
    // what Finish() reports and what the log should say; cancelling first would replace it
    // with CANCELLED. Otherwise (Stop, a failed write) the call is cancelled so that the reader
    // thread's blocking Read returns.
    if (!server_ended) context.TryCancel();
    if (reader.joinable()) reader.join();
    grpc::Status status = stream->Finish();
    {
      absl::MutexLock lock(&mu_);
      context_ = nullptr;
    }
    state_->SetControlPlaneConnected(false);
    state_->control_plane_disconnects.fetch_add(1, std::memory_order_relaxed);
    if (!StopRequested()) {
      FG_LOG_WARN("control plane stream ended",
                  {{"address", c.address},
                   {"code", static_cast<int>(status.error_code())},
                   {"error", status.error_message()},
                   {"was_open", established}});
    }
    return established;
  }

  // Handles messages and heartbeats until the stream ends, a write fails, or Stop.
  void ServeStream(grpc::ClientReaderWriter<v1::AgentMessage, v1::ControlMessage>* stream) {
    const absl::Duration heartbeat_interval = options_.connection.heartbeat_interval;
    absl::Time next_heartbeat = absl::Now() + heartbeat_interval;
    for (;;) {
      std::deque<v1::ControlMessage> batch;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || stream_ended_ || !messages_.empty();
        };
        mu_.AwaitWithDeadline(absl::Condition(&ready), next_heartbeat);
        if (stopping_) return;
        batch.swap(messages_);
        if (batch.empty() && stream_ended_) return;
      }
      for (const v1::ControlMessage& message : batch) {
        if (message.has_snapshot()) {
          if (!stream->Write(HandleSnapshot(message.snapshot()))) return;
        }
        // TelemetryAck belongs to the telemetry spool, which is not built yet.
      }
      if (absl::Now() >= next_heartbeat) {
        if (!stream->Write(HeartbeatMessage())) return;
        next_heartbeat = absl::Now() + heartbeat_interval;
      }
    }
  }

  v1::AgentMessage HelloMessage() {
    v1::AgentMessage out;
    v1::Hello* hello = out.mutable_hello();
    hello->set_agent_id(state_->agent_id());
    hello->set_token(options_.connection.token);
    for (const auto& [k, v] : options_.labels) (*hello->mutable_labels())[k] = v;
    hello->set_agent_version(options_.agent_version);
    for (const std::string& cap : options_.capabilities) hello->add_capabilities(cap);
    if (std::shared_ptr<const ServedSnapshot> served = state_->served()) {
      hello->set_applied_version(served->version);
      hello->set_applied_hash(served->hash);
    }
    return out;
  }

  v1::AgentMessage HeartbeatMessage() {
    v1::AgentMessage out;
    v1::Heartbeat* hb = out.mutable_heartbeat();
    std::shared_ptr<const ServedSnapshot> served = state_->served();
    if (served) {
      hb->set_applied_version(served->version);
      hb->set_applied_hash(served->hash);
    }
    hb->set_healthy(state_->ready());
    return out;
  }

  v1::AgentMessage Nack(const v1::Snapshot& snapshot, uint64_t current_version,
                        std::string detail) {
    state_->snapshots_rejected.fetch_add(1, std::memory_order_relaxed);
    FG_LOG_WARN("snapshot rejected", {{"version", snapshot.version()},
                                      {"current_version", current_version},
                                      {"error", detail}});
    v1::AgentMessage out;
    v1::Nack* nack = out.mutable_nack();
    nack->set_nonce(snapshot.nonce());
    nack->set_rejected_version(snapshot.version());
    nack->set_current_version(current_version);
    nack->set_error_detail(std::move(detail));
    return out;
  }

  static v1::AgentMessage Ack(const v1::Snapshot& snapshot, absl::Duration apply_duration) {
    v1::AgentMessage out;
    v1::Ack* ack = out.mutable_ack();
    ack->set_version(snapshot.version());
    ack->set_nonce(snapshot.nonce());
    ack->set_hash(snapshot.hash());
    *ack->mutable_apply_duration() = ToProto(apply_duration);
    return out;
  }

  v1::AgentMessage HandleSnapshot(const v1::Snapshot& snapshot) {
    const absl::Time received = absl::Now();
    if (!snapshot.agent_id().empty() && state_->agent_id().empty()) {
      state_->SetAgentId(snapshot.agent_id());
      FG_LOG_INFO("agent id assigned by control plane", {{"agent_id", snapshot.agent_id()}});
    }
    std::shared_ptr<const ServedSnapshot> served = state_->served();
    const uint64_t current = served ? served->version : 0;

    if (served && snapshot.version() == served->version && snapshot.hash() == served->hash) {
      // Typically the version the agent loaded from its cache: already serving, so confirm it
      // and record that the control plane agrees.
      if (served->source != SnapshotSource::kControlPlane) {
        auto confirmed = std::make_shared<ServedSnapshot>(*served);
        confirmed->source = SnapshotSource::kControlPlane;
        state_->SetServed(std::move(confirmed));
      }
      return Ack(snapshot, absl::ZeroDuration());
    }
    if (served && snapshot.version() < served->version) {
      return Nack(snapshot, current,
                  absl::StrCat("stale_version: version ", snapshot.version(),
                               " is older than the served version ", served->version));
    }

    absl::StatusOr<absl::Duration> applied =
        applier_->Apply(snapshot.config(), snapshot.version(), snapshot.hash(),
                        SnapshotSource::kControlPlane, received);
    if (!applied.ok()) return Nack(snapshot, current, std::string(applied.status().message()));

    if (cache_ != nullptr) {
      // Written before the Ack, so an ACKed version survives a restart. A failed write does
      // not turn into a Nack: every worker already serves this version, and an Ack says so.
      if (absl::Status s = cache_->Store(snapshot.version(), snapshot.hash(), snapshot.config());
          s.ok()) {
        state_->cache_writes.fetch_add(1, std::memory_order_relaxed);
      } else {
        state_->cache_errors.fetch_add(1, std::memory_order_relaxed);
        FG_LOG_ERROR("last-known-good cache write failed",
                     {{"version", snapshot.version()}, {"error", s.ToString()}});
      }
    }
    return Ack(snapshot, *applied);
  }

  const ControlPlaneClientOptions options_;
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  grpc::ChannelArguments args_;
  SnapshotApplier* const applier_;
  SnapshotCache* const cache_;
  AgentState* const state_;
  std::thread thread_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The live stream's context, so Stop can cancel a blocked read or connect.
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::deque<v1::ControlMessage> messages_ ABSL_GUARDED_BY(mu_);
  bool stream_ended_ ABSL_GUARDED_BY(mu_) = false;
};

absl::StatusOr<std::unique_ptr<ControlPlaneClient>> ControlPlaneClient::Create(
    ControlPlaneClientOptions options, SnapshotApplier* applier, SnapshotCache* cache,
    AgentState* state) {
  const ControlPlaneOptions& c = options.connection;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (c.tls) {
    grpc::SslCredentialsOptions ssl;
    if (!c.ca_file.empty()) {
      auto ca = ReadFile(c.ca_file, "--cp-ca-file");
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *std::move(ca);
    }
    if (!c.cert_file.empty()) {
      auto cert = ReadFile(c.cert_file, "--cp-cert-file");
      if (!cert.ok()) return cert.status();
      auto key = ReadFile(c.key_file, "--cp-key-file");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *std::move(cert);
      ssl.pem_private_key = *std::move(key);
    }
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  return std::unique_ptr<ControlPlaneClient>(new ControlPlaneClient(std::make_unique<Impl>(
      std::move(options), std::move(credentials), applier, cache, state)));
}

ControlPlaneClient::ControlPlaneClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ControlPlaneClient::~ControlPlaneClient() = default;
void ControlPlaneClient::Start() { impl_->Start(); }
void ControlPlaneClient::Stop() { impl_->Stop(); }

}  // namespace flexgate::agent
