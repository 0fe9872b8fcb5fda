// FakeControlPlane: a minimal AgentService on loopback for the agent's tests. It records every
// AgentMessage it receives, sends the snapshots a test queues on the current stream, and can
// drop the stream. Real gRPC, real sockets; only the control plane's logic is left out.
#pragma once

#include <grpcpp/grpcpp.h>

#include <deque>
#include <functional>
#include <optional>
#include <thread>

#include <catch2/catch.hpp>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "flexgate/v1/agent.grpc.pb.h"

namespace flexgate::agent::testing {

namespace v1 = flexgate::v1;

class FakeControlPlane final : public v1::AgentService::Service {
 public:
  explicit FakeControlPlane(
      std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials()) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", credentials, &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    REQUIRE(server_ != nullptr);
  }
  ~FakeControlPlane() override {
    DropStream();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  grpc::Status Connect(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::ControlMessage, v1::AgentMessage>* stream) override {
    {
      absl::MutexLock lock(&mu_);
      auto auth = context->client_metadata().find("authorization");
      if (auth != context->client_metadata().end()) {
        authorization_ = std::string(auth->second.data(), auth->second.size());
      }
      ++streams_;
      current_ = context;
      outbox_.clear();
      live_ = true;
    }
    std::thread writer([this, stream] {
      for (;;) {
        v1::ControlMessage message;
        {
          absl::MutexLock lock(&mu_);
          auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return !outbox_.empty() || !live_;
          };
          mu_.Await(absl::Condition(&ready));
          if (!live_) return;
          message = std::move(outbox_.front());
          outbox_.pop_front();
        }
        if (!stream->Write(message)) return;
      }
    });
    v1::AgentMessage in;
    while (stream->Read(&in)) {
      absl::MutexLock lock(&mu_);
      received_.push_back(in);
    }
    {
      absl::MutexLock lock(&mu_);
      live_ = false;
      current_ = nullptr;
    }
    writer.join();
    return grpc::Status::OK;
  }

  void Send(v1::Snapshot snapshot) {
    absl::MutexLock lock(&mu_);
    v1::ControlMessage m;
    *m.mutable_snapshot() = std::move(snapshot);
    outbox_.push_back(std::move(m));
  }

  void DropStream() {
    absl::MutexLock lock(&mu_);
    if (current_ != nullptr) current_->TryCancel();
  }

  // Waits until some received message satisfies `pred` and returns it.
  std::optional<v1::AgentMessage> WaitFor(std::function<bool(const v1::AgentMessage&)> pred,
                                          absl::Duration timeout = absl::Seconds(10)) {
    absl::MutexLock lock(&mu_);
    std::optional<v1::AgentMessage> found;
    auto match = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (const auto& m : received_) {
        if (pred(m)) {
          found = m;
          return true;
        }
      }
      return false;
    };
    mu_.AwaitWithTimeout(absl::Condition(&match), timeout);
    return found;
  }

  std::vector<v1::AgentMessage> received() {
    absl::MutexLock lock(&mu_);
    return received_;
  }
  int hellos() {
    absl::MutexLock lock(&mu_);
    int n = 0;
    for (const auto& m : received_) n += m.has_hello();
    return n;
  }
  std::string authorization() {
    absl::MutexLock lock(&mu_);
    return authorization_;
  }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  std::vector<v1::AgentMessage> received_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::ControlMessage> outbox_ ABSL_GUARDED_BY(mu_);
  grpc::ServerContext* current_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool live_ ABSL_GUARDED_BY(mu_) = false;
  int streams_ ABSL_GUARDED_BY(mu_) = 0;
  std::string authorization_ ABSL_GUARDED_BY(mu_);
};

inline std::function<bool(const v1::AgentMessage&)> IsHello() {
  return [](const v1::AgentMessage& m) { return m.has_hello(); };
}
inline std::function<bool(const v1::AgentMessage&)> AckFor(const std::string& nonce) {
  return [nonce](const v1::AgentMessage& m) { return m.has_ack() && m.ack().nonce() == nonce; };
}
inline std::function<bool(const v1::AgentMessage&)> NackFor(const std::string& nonce) {
  return [nonce](const v1::AgentMessage& m) { return m.has_nack() && m.nack().nonce() == nonce; };
}

}  // namespace flexgate::agent::testing
