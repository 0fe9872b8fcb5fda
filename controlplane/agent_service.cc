#include "controlplane/agent_service.h"

#include <grpcpp/grpcpp.h>
#include <openssl/rand.h>

#include <map>
#include <optional>

#include "absl/hash/hash.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "controlplane/agent_stream_state.h"
#include "controlplane/auth.h"
#include "controlplane/db_workers.h"
#include "controlplane/distributor.h"
#include "controlplane/grpc_status.h"
#include "controlplane/metrics.h"
#include "controlplane/revocation_enforcer.h"
#include "controlplane/store.h"
#include "flexgate/v1/agent.grpc.pb.h"

namespace flexgate::cp {
namespace {

using grpc::ByteBuffer;
using Prepared = std::shared_ptr<const PreparedSnapshot>;
using flexgate::v1::AgentMessage;

std::string RandomHex(int bytes) {
  unsigned char buf[32];
  RAND_bytes(buf, bytes);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(buf), bytes));
}

// One agent stream. gRPC owns the reactor side until OnDone; the Distributor and queued DB tasks
// may hold shared references longer, so the object keeps itself alive through `self_` until
// OnDone and is freed when the last reference goes.
//
// Concurrency: reactor callbacks (OnReadDone, OnWriteDone, OnCancel, OnDone) run on gRPC
// threads, Offer/Close on the distributor's or shutdown thread, EndRevoked on whichever thread
// learned of a revocation (an RPC, the listener, the enforcer's checks), the Hello work on a
// DbWorkers thread. All state is guarded by mu_. StartRead/StartWrite/Finish are never called
// with mu_ held, because gRPC may run a reaction inline in the calling thread. Finish is called exactly
// once, only when no write is in flight and no thread is between deciding to start an
// operation and starting it (busy_ == 0), so nothing starts an operation after Finish.
class AgentSession final : public grpc::ServerBidiReactor<ByteBuffer, ByteBuffer>,
                           public SnapshotSink,
                           public RevocableStream,
                           public std::enable_shared_from_this<AgentSession> {
 public:
  AgentSession(grpc::CallbackServerContext* ctx, const AgentServiceDeps& deps)
      : ctx_(ctx), deps_(deps), session_id_(RandomHex(8)) {}

  static AgentSession* Create(grpc::CallbackServerContext* ctx, const AgentServiceDeps& deps) {
    auto s = std::make_shared<AgentSession>(ctx, deps);
    s->self_ = s;
    s->StartRead(&s->read_buf_);
    return s.get();
  }

  void OnReadDone(bool ok) override {
    Enter();
    if (!ok) {
      // The agent half-closed or the call was cancelled.
      RequestFinish(grpc::Status::OK);
      Leave();
      return;
    }
    AgentMessage msg;
    grpc::Status parsed = grpc::SerializationTraits<AgentMessage>::Deserialize(&read_buf_, &msg);
    if (!parsed.ok()) {
      RequestFinish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "malformed AgentMessage"));
      Leave();
      return;
    }
    if (Handle(msg)) ContinueReading();
    Leave();
  }

  void OnWriteDone(bool ok) override {
    Enter();
    std::optional<AgentStreamState<Prepared>::Send> next;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      next = state_.WriteDone();
      if (!ok) {
        if (!finishing_) {
          finishing_ = true;
          finish_status_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed");
        }
      }
      if (next && !finishing_) {
        BuildWriteLocked(*next);
      } else {
        next.reset();
      }
    }
    if (next) {
      StartWrite(&write_buf_);
      deps_.metrics->snapshot_sends.Increment();
      RecordSent(next->version);
    }
    Leave();
  }

  void OnCancel() override {
    Enter();
    RequestFinish(grpc::Status::CANCELLED);
    Leave();
  }

  void OnDone() override {
    bool registered;
    int64_t tenant_id;
    std::string agent_id;
    std::optional<AgentCredential> credential;
    {
      absl::MutexLock lock(&mu_);
      registered = registered_;
      tenant_id = tenant_id_;
      agent_id = agent_id_;
      credential = credential_;
    }
    if (credential) deps_.revocations->Remove(*credential, this);
    if (registered) {
      deps_.distributor->Unregister(tenant_id, this);
      deps_.metrics->connected_agents.Decrement();
      deps_.workers->Post(shard_key_, DisconnectEvent{tenant_id, agent_id, session_id_});
      FG_LOG_INFO("agent disconnected", {{"tenant_id", tenant_id}, {"agent_id", agent_id}});
    }
    // Last statement: may destroy this object.
    auto keep = std::move(self_);
  }

  // SnapshotSink
  void Offer(Prepared snapshot) override {
    std::optional<AgentStreamState<Prepared>::Send> send;
    {
      absl::MutexLock lock(&mu_);
      if (finishing_ || !hello_done_) return;
      send = state_.Offer(snapshot->version, snapshot->hash, snapshot);
      if (!send) return;
      BuildWriteLocked(*send);
      ++busy_;
    }
    StartWrite(&write_buf_);
    deps_.metrics->snapshot_sends.Increment();
    RecordSent(send->version);
    Leave();
  }

  void Close() override {
    Enter();
    RequestFinish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "control plane shutting down"));
    Leave();
  }

  // RevocableStream. UNAUTHENTICATED, as a new stream with the same credential gets: the agent
  // keeps serving its last-known-good config and keeps retrying with backoff until an operator
  // gives it a new token.
  void EndRevoked(AgentCredential::Kind kind) override {
    Enter();
    RequestFinish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, RevokedMessage(kind)));
    Leave();
  }

 private:
  void Enter() {
    absl::MutexLock lock(&mu_);
    ++busy_;
  }

  // Ends a busy section; calls Finish if the stream is finishing and nothing else is running.
  void Leave() {
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      --busy_;
      if (!finishing_ || finish_called_ || busy_ > 0 || writing_) return;
      finish_called_ = true;
      status = finish_status_;
    }
    Finish(status);
  }

  // Called inside an Enter/Leave section; Leave does the actual Finish.
  void RequestFinish(grpc::Status status) {
    absl::MutexLock lock(&mu_);
    if (finishing_) return;
    finishing_ = true;
    finish_status_ = std::move(status);
  }

  // Called inside an Enter/Leave section.
  void ContinueReading() {
    {
      absl::MutexLock lock(&mu_);
      if (finishing_) return;
    }
    StartRead(&read_buf_);
  }

  void BuildWriteLocked(const AgentStreamState<Prepared>::Send& send)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    SnapshotFrame frame = FrameSnapshot(*send.payload, send.nonce, agent_id_);
    // The shared prefix (the config) goes out without a copy: the slice keeps the prepared
    // snapshot alive until gRPC has written it.
    auto* keep = new Prepared(send.payload);
    grpc::Slice slices[3] = {
        grpc::Slice(frame.header),
        grpc::Slice(const_cast<char*>((*keep)->prefix.data()), (*keep)->prefix.size(),
                    [](void* p) { delete static_cast<Prepared*>(p); }, keep),
        grpc::Slice(frame.suffix)};
    ByteBuffer buf(slices, 3);
    write_buf_.Swap(&buf);
    writing_ = true;
  }

  // Records the send for the fleet view ("pending" = sent, not yet acknowledged). Only called
  // after Hello, when tenant_id_ and agent_id_ no longer change. Queued behind the stream's
  // earlier events, so it lands before the ACK it precedes.
  void RecordSent(uint64_t version) {
    deps_.workers->Post(shard_key_, SentEvent{tenant_id_, agent_id_, version});
  }

  // Returns true when the stream should keep reading.
  bool Handle(const AgentMessage& msg) {
    if (!hello_seen_) {
      if (!msg.has_hello()) {
        RequestFinish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                   "the first message on the stream must be Hello"));
        return false;
      }
      hello_seen_ = true;
      // Every event of one agent id goes to the same database worker, in order, whichever
      // stream (or replica restart) it comes from.
      agent_id_ = msg.hello().agent_id().empty() ? "agent-" + RandomHex(8) : msg.hello().agent_id();
      shard_key_ = absl::Hash<std::string>{}(agent_id_);
      // The Hello work blocks (database), so it runs on a worker, batched with other streams'
      // events; it resumes reading when done.
      Enter();
      auto self = shared_from_this();
      deps_.workers->Post(
          shard_key_,
          HelloEvent{[self, hello = msg.hello()]() -> std::optional<AgentHelloRecord> {
                       auto rec = self->AuthenticateHello(hello);
                       if (!rec) self->Leave();
                       return rec;
                     },
                     [self](absl::StatusOr<uint64_t> last_nack) {
                       self->FinishHello(std::move(last_nack));
                       self->Leave();
                     }});
      return false;
    }
    switch (msg.msg_case()) {
      case AgentMessage::kAck: HandleAck(msg.ack()); break;
      case AgentMessage::kNack: HandleNack(msg.nack()); break;
      case AgentMessage::kHeartbeat: HandleHeartbeat(msg.heartbeat()); break;
      case AgentMessage::kHello:
        FG_LOG_WARN("duplicate Hello ignored", {{"agent_id", agent_id_}});
        break;
      default:
        // TelemetryBatch is reserved for the telemetry work; it is not acknowledged, so the
        // agent keeps it spooled.
        break;
    }
    return true;
  }

  // Runs on a database worker. The agents-row record of an authenticated Hello, or nullopt
  // after finishing the stream with the authentication error.
  std::optional<AgentHelloRecord> AuthenticateHello(const flexgate::v1::Hello& hello) {
    std::string header;
    auto md = ctx_->client_metadata().find("authorization");
    if (md != ctx_->client_metadata().end()) header.assign(md->second.data(), md->second.size());
    absl::StatusOr<std::string> key = !header.empty() || hello.token().empty()
                                          ? ParseBearer(header)
                                          : absl::StatusOr<std::string>(hello.token());
    // Enrollment tokens (or, for compatibility, operator admin keys of tenant "default").
    absl::StatusOr<Principal> who =
        key.ok() ? deps_.auth->AuthenticateAgent(*key) : absl::StatusOr<Principal>(key.status());
    if (!who.ok()) {
      FG_LOG_WARN("agent stream refused", {{"agent_id", hello.agent_id()},
                                           {"error", std::string(who.status().message())}});
      RequestFinish(ToGrpcStatus(who.status()));
      return std::nullopt;
    }

    // Registered before the stream is recorded as connected: a revocation from now on ends it,
    // and one that already happened (the Hello may have authenticated from the cache just
    // before the notification arrived) refuses it here.
    if (std::optional<AgentCredential> credential = CredentialOf(*who)) {
      {
        absl::MutexLock lock(&mu_);
        credential_ = *credential;
      }
      if (!deps_.revocations->Add(*credential, shared_from_this())) {
        FG_LOG_WARN("agent stream refused",
                    {{"agent_id", hello.agent_id()}, {"error", RevokedMessage(credential->kind)}});
        RequestFinish(
            grpc::Status(grpc::StatusCode::UNAUTHENTICATED, RevokedMessage(credential->kind)));
        return std::nullopt;
      }
    }

    AgentHelloRecord rec;
    rec.tenant_id = who->tenant_id;
    rec.agent_id = agent_id_;
    rec.labels = std::map<std::string, std::string>(hello.labels().begin(), hello.labels().end());
    rec.agent_version = hello.agent_version();
    rec.applied_version = hello.applied_version();
    rec.applied_hash = hello.applied_hash();
    rec.session_id = session_id_;
    rec.capabilities.assign(hello.capabilities().begin(), hello.capabilities().end());
    rec.replica = deps_.replica;
    {
      absl::MutexLock lock(&mu_);
      tenant_id_ = rec.tenant_id;
      applied_at_hello_ = {hello.applied_version(), hello.applied_hash()};
    }
    return rec;
  }

  // Runs on a database worker once the agents row is written (or could not be).
  void FinishHello(absl::StatusOr<uint64_t> last_nack) {
    if (!last_nack.ok()) {
      FG_LOG_WARN("cannot record agent connect",
                  {{"agent_id", agent_id_}, {"error", std::string(last_nack.status().message())}});
      RequestFinish(ToGrpcStatus(last_nack.status()));
      return;
    }
    int64_t tenant_id;
    uint64_t applied_version;
    {
      absl::MutexLock lock(&mu_);
      tenant_id = tenant_id_;
      applied_version = applied_at_hello_.first;
      state_.SetApplied(applied_at_hello_.first, std::move(applied_at_hello_.second));
      // A version this agent rejected before is not sent again on a new stream either.
      state_.MarkRejected(*last_nack);
      hello_done_ = true;
      registered_ = true;
    }
    deps_.metrics->connected_agents.Increment();
    FG_LOG_INFO("agent connected", {{"tenant_id", tenant_id},
                                    {"agent_id", agent_id_},
                                    {"applied_version", applied_version}});
    // Register before reading the live version: a version committed after this point reaches
    // the stream through the distributor, one committed before is what Latest returns (from
    // the distributor's memory, without a database read, once the tenant's version is known).
    deps_.distributor->Register(tenant_id, shared_from_this());
    auto latest = deps_.distributor->Latest(tenant_id);
    if (!latest.ok()) {
      FG_LOG_WARN("cannot load live version for agent",
                  {{"agent_id", agent_id_}, {"error", std::string(latest.status().message())}});
    } else if (*latest != nullptr) {
      Offer(*latest);
    }
    ContinueReading();
  }

  // A current ACK moves the stream's state; a late one (the agent applied an earlier snapshot
  // after a newer one was sent) is only recorded for its version: ACK row, convergence sample
  // and, if newer than what is recorded, the agent's applied version.
  void HandleAck(const flexgate::v1::Ack& ack) {
    AgentStreamState<Prepared>::ReplyOutcome out;
    {
      absl::MutexLock lock(&mu_);
      out = state_.OnAck(ack.nonce(), ack.hash());
    }
    if (out.reply == AgentStreamState<Prepared>::Reply::kStale) {
      deps_.metrics->stale_replies.Increment();
      return;
    }
    const bool late = out.reply == AgentStreamState<Prepared>::Reply::kLate;
    if (late) deps_.metrics->late_replies.Increment();
    deps_.metrics->acks.Increment();
    AgentAckRecord rec;
    rec.tenant_id = tenant_id_;
    rec.agent_id = agent_id_;
    rec.version = out.version;
    rec.hash = ack.hash().empty() ? std::move(out.hash) : ack.hash();
    if (ack.has_apply_duration()) {
      rec.apply_ms = ack.apply_duration().seconds() * 1e3 + ack.apply_duration().nanos() / 1e6;
    }
    rec.replica = deps_.replica;
    rec.late = late;
    // The ACK's time is its receipt here, not when a database worker gets to it: under a burst
    // of thousands of ACKs the queue would otherwise inflate the convergence numbers.
    deps_.workers->Post(shard_key_, AckEvent{std::move(rec), absl::Now()});
  }

  // Current or late, a NACK is recorded for the version it answers, which is never sent to this
  // agent again; a late one leaves the pending send alone.
  void HandleNack(const flexgate::v1::Nack& nack) {
    AgentStreamState<Prepared>::ReplyOutcome out;
    {
      absl::MutexLock lock(&mu_);
      out = state_.OnNack(nack.nonce());
    }
    if (out.reply == AgentStreamState<Prepared>::Reply::kStale) {
      deps_.metrics->stale_replies.Increment();
      return;
    }
    const bool late = out.reply == AgentStreamState<Prepared>::Reply::kLate;
    if (late) deps_.metrics->late_replies.Increment();
    deps_.metrics->nacks.Increment();
    FG_LOG_WARN("agent rejected config", {{"tenant_id", tenant_id_},
                                          {"agent_id", agent_id_},
                                          {"version", out.version},
                                          {"late", late},
                                          {"error", nack.error_detail()}});
    deps_.workers->Post(shard_key_,
                        NackEvent{tenant_id_, agent_id_, out.version, nack.error_detail()});
  }

  void HandleHeartbeat(const flexgate::v1::Heartbeat& hb) {
    {
      absl::MutexLock lock(&mu_);
      state_.SetApplied(hb.applied_version(), hb.applied_hash());
    }
    deps_.workers->Post(shard_key_,
                        HeartbeatEvent{tenant_id_, agent_id_, hb.applied_version(),
                                       hb.applied_hash(), hb.healthy(), session_id_});
  }

  grpc::CallbackServerContext* const ctx_;
  const AgentServiceDeps deps_;
  const std::string session_id_;
  std::shared_ptr<AgentSession> self_;  // Dropped in OnDone.

  // Touched only by reactor callbacks, which gRPC serializes for reads.
  ByteBuffer read_buf_;
  bool hello_seen_ = false;

  absl::Mutex mu_;
  AgentStreamState<Prepared> state_ ABSL_GUARDED_BY(mu_);
  ByteBuffer write_buf_ ABSL_GUARDED_BY(mu_);  // Stable while a write is in flight.
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
  // Set once by the Hello work, before the stream is registered; read-only afterwards, so
  // the message handlers (which run only after Hello) read them without the lock.
  bool hello_done_ ABSL_GUARDED_BY(mu_) = false;
  bool registered_ ABSL_GUARDED_BY(mu_) = false;
  // The credential the stream authenticated with, once it has (unregistered in OnDone).
  std::optional<AgentCredential> credential_ ABSL_GUARDED_BY(mu_);
  // What the agent said it serves, from its Hello until the agents row is written.
  std::pair<uint64_t, std::string> applied_at_hello_ ABSL_GUARDED_BY(mu_);
  // Set once when the Hello arrives (agent_id_, shard_key_) or is authenticated (tenant_id_),
  // before any other event of the stream is handled; read-only afterwards.
  int64_t tenant_id_ = 0;
  std::string agent_id_;
  uint64_t shard_key_ = 0;
};

class AgentServiceImpl final
    : public flexgate::v1::AgentService::WithRawCallbackMethod_Connect<
          flexgate::v1::AgentService::Service> {
 public:
  explicit AgentServiceImpl(AgentServiceDeps deps) : deps_(deps) {}

  grpc::ServerBidiReactor<ByteBuffer, ByteBuffer>* Connect(
      grpc::CallbackServerContext* ctx) override {
    return AgentSession::Create(ctx, deps_);
  }

 private:
  const AgentServiceDeps deps_;
};

}  // namespace

std::unique_ptr<grpc::Service> CreateAgentService(AgentServiceDeps deps) {
  return std::make_unique<AgentServiceImpl>(deps);
}

}  // namespace flexgate::cp
