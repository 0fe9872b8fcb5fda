// flexgate-fleet-sim: a fleet of simulated agents against one flexgate-cp, to measure how fast a
// committed config version reaches every agent (commit -> ACK convergence) and what each
// connected agent costs the control plane in memory and CPU.
//
// Each simulated agent is one AgentService.Connect stream that behaves like flexgate-agent on
// the wire: Hello (distinct agent id, labels), then for every Snapshot an immediate Ack with the
// snapshot's version, nonce and hash. The simulator shares two cores with the control plane, so
// it reads only version, hash and nonce off the wire (PeekSnapshot) instead of materializing
// every agent's copy of the config, which was a third of its CPU; a sample of agents parses the
// whole message and recomputes ConfigHash, which also cross-checks PeekSnapshot.
//
// The streams use gRPC's callback API, so 10,000 of them need no thread each. By default they
// share a modest number of channels (100 streams each, every channel its own TCP connection).
// Real agents have a connection each: --agents-per-channel 1 measures that, including the CP's
// per-connection memory and CPU, at the price of a client that needs a descriptor per agent.
//
// One trial per fleet size N:
//   1. apply an initial version (so every agent has something to receive on connect);
//   2. sample the CP (RSS, CPU), connect N agents, wait until every one has ACKed the initial
//      version, wait for the CP to go quiet, sample again;
//   3. K times: ConfigService.Apply a new version; its commit time is the moment Apply returns;
//      wait until every agent has ACKed it; record each agent's ACK time;
//   4. close all streams.
// Then report convergence p50/p99/max over all agents and versions, connect time, CP RSS per
// agent and CP CPU per agent and version.
//
// This is a benchmark program, not a test: it prints numbers, and exits 1 only when the fleet did
// not converge (missing ACKs, streams that failed, wrong hashes).
//
// WARNING for --server mode: the simulator applies configs to the tenant of --token.
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/canonical.h"
#include "flexgate/v1/agent.pb.h"
#include "flexgate/v1/config_service.grpc.pb.h"
#include "tests/bench/fleet_proc_stats.h"
#include "tests/controlplane/cp_test_support.h"
#include "tests/harness/proc/process.h"
#include "tests/harness/proc/test_postgres.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::bench {
namespace {

namespace v1 = flexgate::v1;

constexpr char kUsage[] =
    "usage: flexgate-fleet-sim --agents N[,N...] --versions K (--spawn | --server HOST:PORT\n"
    "                          --token KEY [--cp-pid PID]) [options]\n"
    "\n"
    "Opens N simulated agent streams against one flexgate-cp, applies K config versions one after\n"
    "another and measures commit -> ACK convergence, connect time, and the CP's RSS and CPU per\n"
    "connected agent. With several sizes (--agents 100,1000) one trial runs per size.\n"
    "\n"
    "  --spawn                  start a throwaway PostgreSQL and a fresh flexgate-cp per trial\n"
    "                           (needs the build's flexgate-cp; FLEXGATE_BIN_DIR overrides)\n"
    "  --server HOST:PORT       an already running flexgate-cp instead. CAUTION: configs are\n"
    "                           applied to the tenant of --token\n"
    "  --token KEY              admin key used to Apply and as the agents' token (--server mode)\n"
    "  --cp-pid PID             the CP's pid, for RSS and CPU samples (--server mode). RSS per\n"
    "                           agent means something only against a freshly started CP: memory\n"
    "                           of earlier streams is reused, not returned to the system\n"
    "  --agents-per-channel M   streams per gRPC channel / TCP connection (default 100)\n"
    "  --routes R               routes per config (default 20)\n"
    "  --timeout SECONDS        limit for connecting the fleet and for each version (default 120)\n"
    "  --hash-sample S          recompute ConfigHash on every S-th agent (default: N/100, min 1)\n"
    "  --no-settle              apply the next version as soon as the last one converged, without\n"
    "                           waiting for the CP to finish its ACK bookkeeping first\n"
    "  --cp-arg ARG             extra flexgate-cp argument (--spawn; repeatable),\n"
    "                           e.g. --cp-arg=--db-workers=4\n"
    "  --json                   also print one JSON line per trial on stdout\n";

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Options {
  std::vector<int> agents;
  int versions = 10;
  bool spawn = false;
  std::string server;
  std::string token;
  pid_t cp_pid = 0;
  int agents_per_channel = 100;
  int routes = 20;
  absl::Duration timeout = absl::Seconds(120);
  int hash_sample = 0;  // 0 = N/100
  bool settle = true;
  std::vector<std::string> cp_args;
  bool json = false;
};

// ---------------------------------------------------------------------------------------------
// The simulated fleet
// ---------------------------------------------------------------------------------------------

// What one agent did with one snapshot.
struct AckRecord {
  uint64_t version = 0;
  int64_t received_ns = 0;  // steady clock
  int64_t acked_ns = 0;     // when the Ack was handed to gRPC
  std::string hash;         // as the snapshot named it
};

// Counters shared by all agents of a trial.
struct FleetState {
  std::atomic<bool> stopping{false};
  std::atomic<int> done{0};
  std::atomic<int> failed{0};
  std::atomic<int> hashes_checked{0};
  std::atomic<int> hash_mismatches{0};
  std::atomic<int> unexpected_messages{0};

  absl::Mutex mu;
  std::vector<std::string> errors ABSL_GUARDED_BY(mu);  // the first few only

  void RecordError(std::string error) {
    absl::MutexLock lock(&mu);
    if (errors.size() < 5) errors.push_back(std::move(error));
  }
};

// The fields of ControlMessage.snapshot the simulator needs, read without parsing the config.
struct SnapshotHeader {
  bool is_snapshot = false;
  uint64_t version = 0;
  std::string hash;
  std::string nonce;
};

// Walks the wire format of a ControlMessage: the snapshot (field 1) is read field by field and
// its config (field 4) skipped. Repeated occurrences merge as in protobuf (last scalar wins),
// which is how the control plane's encode-once framing splits a Snapshot. False when malformed.
bool PeekSnapshot(const std::string& bytes, SnapshotHeader* out) {
  using google::protobuf::internal::WireFormatLite;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  while (uint32_t tag = in.ReadTag()) {
    if (WireFormatLite::GetTagFieldNumber(tag) != 1 ||
        WireFormatLite::GetTagWireType(tag) != WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      if (!WireFormatLite::SkipField(&in, tag)) return false;
      continue;
    }
    out->is_snapshot = true;
    uint32_t length = 0;
    if (!in.ReadVarint32(&length)) return false;
    auto limit = in.PushLimit(static_cast<int>(length));
    while (uint32_t field = in.ReadTag()) {
      const int number = WireFormatLite::GetTagFieldNumber(field);
      const auto type = WireFormatLite::GetTagWireType(field);
      bool ok;
      if (number == 1 && type == WireFormatLite::WIRETYPE_VARINT) {
        ok = in.ReadVarint64(&out->version);
      } else if (number == 2 && type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
        ok = WireFormatLite::ReadString(&in, &out->hash);
      } else if (number == 3 && type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
        ok = WireFormatLite::ReadString(&in, &out->nonce);
      } else {
        ok = WireFormatLite::SkipField(&in, field);
      }
      if (!ok) return false;
    }
    if (in.BytesUntilLimit() != 0) return false;
    in.PopLimit(limit);
  }
  return in.ConsumedEntireMessage();
}

// One agent stream. Reads are serialized by gRPC (one outstanding read); writes are queued here
// so that at most one is outstanding, as the callback API requires. The object must outlive
// OnDone; the trial owns it and destroys it only after every OnDone has run.
using AgentStub = grpc::TemplatedGenericStub<v1::AgentMessage, grpc::ByteBuffer>;
constexpr char kConnectMethod[] = "/flexgate.v1.AgentService/Connect";

class SimAgent final : public grpc::ClientBidiReactor<v1::AgentMessage, grpc::ByteBuffer> {
 public:
  SimAgent(FleetState* fleet, std::string agent_id, bool verify_hash)
      : fleet_(fleet), agent_id_(std::move(agent_id)), verify_hash_(verify_hash) {}

  void Start(AgentStub* stub, const std::string& token,
             const std::map<std::string, std::string>& labels) {
    ctx_.AddMetadata("authorization", absl::StrCat("Bearer ", token));
    stub->PrepareBidiStreamingCall(&ctx_, kConnectMethod, grpc::StubOptions(), this);
    v1::AgentMessage hello;
    hello.mutable_hello()->set_agent_id(agent_id_);
    hello.mutable_hello()->set_token(token);
    hello.mutable_hello()->set_agent_version("fleet-sim");
    hello.mutable_hello()->mutable_labels()->insert(labels.begin(), labels.end());
    StartRead(&in_);
    Write(std::move(hello));
    StartCall();
  }

  void Cancel() { ctx_.TryCancel(); }

  // The newest version this agent has ACKed (0 = none). Readable from any thread.
  uint64_t acked_version() const { return acked_version_.load(std::memory_order_acquire); }

  // Only after OnDone (the trial waits for every stream to end before reading).
  const std::vector<AckRecord>& records() const { return records_; }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // The stream is ending; OnDone follows.
    const int64_t received = NowNs();
    std::string bytes;
    {
      std::vector<grpc::Slice> slices;
      (void)in_.Dump(&slices);
      for (const grpc::Slice& s : slices) {
        bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
      }
    }
    SnapshotHeader snap;
    if (!PeekSnapshot(bytes, &snap) || !snap.is_snapshot) {
      fleet_->unexpected_messages.fetch_add(1, std::memory_order_relaxed);
      fleet_->RecordError(absl::StrCat(agent_id_, ": a ControlMessage that is not a Snapshot"));
      StartRead(&in_);
      return;
    }
    if (verify_hash_) {
      // The whole message on a sample only: parsing and hashing every copy would make the
      // simulator, not the CP, the bottleneck at 10,000 agents.
      fleet_->hashes_checked.fetch_add(1, std::memory_order_relaxed);
      v1::ControlMessage full;
      if (!full.ParseFromString(bytes) || full.snapshot().version() != snap.version ||
          full.snapshot().nonce() != snap.nonce || full.snapshot().hash() != snap.hash ||
          ConfigHash(full.snapshot().config()) != snap.hash) {
        fleet_->hash_mismatches.fetch_add(1, std::memory_order_relaxed);
        fleet_->RecordError(absl::StrCat(agent_id_, ": snapshot ", snap.version, " with hash ",
                                         snap.hash, " does not match its config"));
      }
    }
    v1::AgentMessage ack;
    ack.mutable_ack()->set_version(snap.version);
    ack.mutable_ack()->set_nonce(snap.nonce);
    ack.mutable_ack()->set_hash(snap.hash);
    const int64_t acked = NowNs();
    ack.mutable_ack()->mutable_apply_duration()->set_nanos(static_cast<int32_t>(
        std::min<int64_t>(acked - received, 999'999'999)));
    const uint64_t version = snap.version;
    records_.push_back(AckRecord{version, received, acked, std::move(snap.hash)});
    Write(std::move(ack));
    acked_version_.store(version, std::memory_order_release);
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    std::optional<v1::AgentMessage> next;
    {
      absl::MutexLock lock(&mu_);
      if (ok && !queue_.empty()) {
        next = std::move(queue_.front());
        queue_.pop_front();
      } else {
        writing_ = false;
        queue_.clear();  // A failed write ends the stream; nothing more goes out.
      }
      if (next) out_ = std::move(*next);
    }
    if (next) StartWrite(&out_);
  }

  void OnDone(const grpc::Status& status) override {
    if (!fleet_->stopping.load(std::memory_order_acquire)) {
      // Real agents would reconnect; the simulator counts it as a failure of the run instead,
      // because a reconnect would hide the problem the benchmark is there to find.
      fleet_->failed.fetch_add(1, std::memory_order_relaxed);
      fleet_->RecordError(absl::StrCat(agent_id_, ": stream ended: code ",
                                       static_cast<int>(status.error_code()), " ",
                                       status.error_message()));
    }
    fleet_->done.fetch_add(1, std::memory_order_acq_rel);
  }

 private:
  void Write(v1::AgentMessage msg) {
    {
      absl::MutexLock lock(&mu_);
      if (writing_) {
        queue_.push_back(std::move(msg));
        return;
      }
      writing_ = true;
      out_ = std::move(msg);
    }
    StartWrite(&out_);
  }

  FleetState* const fleet_;
  const std::string agent_id_;
  const bool verify_hash_;
  grpc::ClientContext ctx_;

  grpc::ByteBuffer in_;              // Only the read callback touches it.
  std::vector<AckRecord> records_;   // Only the read callback touches it until OnDone.
  std::atomic<uint64_t> acked_version_{0};

  absl::Mutex mu_;
  v1::AgentMessage out_ ABSL_GUARDED_BY(mu_);  // Stable while a write is in flight.
  std::deque<v1::AgentMessage> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
};

// ---------------------------------------------------------------------------------------------
// Configs and the operator side
// ---------------------------------------------------------------------------------------------

// A valid config whose content differs for every (tag, serial): a few clusters, `routes`
// prefix routes and a direct response naming the serial.
v1::Config MakeConfig(const std::string& tag, int serial, int routes) {
  v1::Config c;
  for (int i = 0; i < 2; ++i) {
    auto* cluster = c.add_clusters();
    cluster->set_name(absl::StrCat("svc", i));
    auto* ep = cluster->add_endpoints();
    ep->set_address("127.0.0.1");
    ep->set_port(static_cast<uint32_t>(18080 + i));
  }
  auto* marker = c.add_routes();
  marker->set_name("fleet-sim-version");
  marker->mutable_match()->mutable_path()->set_exact("/fleet-sim/version");
  marker->mutable_direct_response()->set_status(200);
  marker->mutable_direct_response()->set_body(absl::StrCat(tag, " serial ", serial));
  for (int i = 0; i < std::max(0, routes - 2); ++i) {
    auto* r = c.add_routes();
    r->set_name(absl::StrCat("route", i));
    r->mutable_match()->mutable_path()->set_prefix(absl::StrCat("/api/r", i, "/"));
    r->set_cluster(absl::StrCat("svc", i % 2));
  }
  auto* all = c.add_routes();
  all->set_name("all");
  all->mutable_match()->mutable_path()->set_prefix("/");
  all->set_cluster("svc0");
  return c;
}

struct Applied {
  uint64_t version = 0;
  std::string hash;
  int64_t sent_ns = 0;
  int64_t committed_ns = 0;  // Apply returned
};

absl::StatusOr<Applied> ApplyConfig(v1::ConfigService::Stub* stub, const std::string& token,
                                    const v1::Config& config) {
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::ApplyRequest req;
  *req.mutable_config() = config;
  req.set_message("flexgate-fleet-sim");
  v1::ApplyResponse resp;
  Applied out;
  out.sent_ns = NowNs();
  grpc::Status s = stub->Apply(&ctx, req, &resp);
  out.committed_ns = NowNs();
  if (!s.ok()) {
    return absl::UnavailableError(absl::StrCat("Apply failed: code ", static_cast<int>(s.error_code()),
                                               " ", s.error_message()));
  }
  if (resp.unchanged()) return absl::InternalError("Apply reported the config as unchanged");
  out.version = resp.version();
  out.hash = resp.hash();
  if (out.hash != ConfigHash(config)) {
    return absl::InternalError(absl::StrCat("Apply returned hash ", out.hash,
                                            ", ConfigHash says ", ConfigHash(config)));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// One trial
// ---------------------------------------------------------------------------------------------

struct Quantiles {
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
};

Quantiles Summarize(std::vector<int64_t> ns) {
  Quantiles q;
  if (ns.empty()) return q;
  std::sort(ns.begin(), ns.end());
  auto rank = [&](double p) {
    // Nearest rank: the smallest value with at least p of the samples at or below it.
    size_t i = static_cast<size_t>(std::ceil(p * static_cast<double>(ns.size())));
    return static_cast<double>(ns[std::clamp<size_t>(i, 1, ns.size()) - 1]) / 1e6;
  };
  q.p50_ms = rank(0.50);
  q.p99_ms = rank(0.99);
  q.max_ms = static_cast<double>(ns.back()) / 1e6;
  return q;
}

struct TrialResult {
  int agents = 0;
  int channels = 0;
  int versions = 0;
  bool ok = false;
  std::string error;

  double connect_s = 0;
  Quantiles convergence;        // commit (Apply returned) -> ACK
  Quantiles from_send;          // Apply sent -> ACK
  Quantiles apply;              // Apply round trip
  int acks_before_commit = 0;   // ACKs that preceded Apply's return (counted as 0 ms)
  int64_t missing_acks = 0;
  int wrong_hashes = 0;         // ACKed hash != Apply's hash
  int hashes_checked = 0;
  int hash_mismatches = 0;      // snapshot hash != ConfigHash(snapshot config)
  int failed_streams = 0;

  bool have_cp = false;
  ProcSample cp_before, cp_connected, cp_end;
  // With --spawn: the PostgreSQL server's CPU (it shares the machine with the CP), and always the
  // simulator's own, at the same three points.
  bool have_pg = false;
  absl::Duration pg_before, pg_connected, pg_end;
  absl::Duration sim_before, sim_connected, sim_end;
  int64_t sim_rss_before_kb = 0, sim_rss_connected_kb = 0;

  double CpRssPerAgentKb() const {
    return static_cast<double>(cp_connected.rss_kb - cp_before.rss_kb) / agents;
  }
  double CpConnectCpuPerAgentUs() const {
    return absl::ToDoubleMicroseconds(cp_connected.cpu - cp_before.cpu) / agents;
  }
  double CpCpuPerAgentVersionUs() const {
    return versions == 0 ? 0
                         : absl::ToDoubleMicroseconds(cp_end.cpu - cp_connected.cpu) /
                               (static_cast<double>(agents) * versions);
  }
  double PerAgentVersionUs(absl::Duration d) const {
    return versions == 0 ? 0
                         : absl::ToDoubleMicroseconds(d) / (static_cast<double>(agents) * versions);
  }
  double SimRssPerAgentKb() const {
    return static_cast<double>(sim_rss_connected_kb - sim_rss_before_kb) / agents;
  }
};

void Progress(const std::string& msg) { std::fprintf(stderr, "fleet-sim: %s\n", msg.c_str()); }

bool AwaitAll(const std::vector<std::unique_ptr<SimAgent>>& agents, const FleetState& fleet,
              uint64_t version, absl::Duration timeout) {
  return flexgate::testing::WaitFor(
      [&] {
        if (fleet.failed.load(std::memory_order_relaxed) > 0) return true;
        for (const auto& a : agents) {
          if (a->acked_version() < version) return false;
        }
        return true;
      },
      timeout, absl::Milliseconds(5));
}

int64_t OwnRssKb() {
  absl::StatusOr<ProcSample> s = SampleProcess(getpid());
  return s.ok() ? s->rss_kb : 0;
}

// Runs one fleet of `n` agents against `target`. `cp_pid` 0 = no CP samples.
// With `sample_pg`, the simulator's descendants other than the CP (PostgreSQL) are sampled too.
TrialResult RunTrial(const Options& opt, int n, const std::string& target,
                     const std::string& token, pid_t cp_pid, bool sample_pg) {
  TrialResult r;
  r.have_pg = sample_pg && cp_pid > 0;
  auto sample_others = [&](absl::Duration* pg, absl::Duration* sim) {
    if (r.have_pg) *pg = DescendantsCpu(getpid(), cp_pid);
    absl::StatusOr<ProcSample> self = SampleProcess(getpid());
    if (self.ok()) *sim = self->cpu;
  };
  r.agents = n;
  r.versions = opt.versions;
  r.channels = (n + opt.agents_per_channel - 1) / opt.agents_per_channel;
  r.have_cp = cp_pid > 0;

  std::mt19937_64 rng(std::random_device{}());
  const std::string tag = absl::StrFormat("%d-%016x", getpid(), rng());
  int serial = 0;

  auto op_channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto config_stub = v1::ConfigService::NewStub(op_channel);

  // 1. Something for every agent to receive on connect.
  absl::StatusOr<Applied> initial =
      ApplyConfig(config_stub.get(), token, MakeConfig(tag, serial++, opt.routes));
  if (!initial.ok()) {
    r.error = std::string(initial.status().message());
    return r;
  }

  // 2. Connect the fleet. Distinct channel args make distinct subchannels, so every channel is a
  // TCP connection of its own rather than a share of one.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<AgentStub>> stubs;
  for (int c = 0; c < r.channels; ++c) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("flexgate.fleet_sim.channel", c);
    args.SetMaxReceiveMessageSize(64 << 20);
    channels.push_back(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
    stubs.push_back(std::make_unique<AgentStub>(channels.back()));
  }

  if (r.have_cp) {
    WaitForQuiet(cp_pid, absl::Milliseconds(300), absl::Seconds(10));
    absl::StatusOr<ProcSample> s = SampleProcess(cp_pid);
    if (!s.ok()) {
      r.error = "cannot sample the control plane: " + std::string(s.status().message());
      return r;
    }
    r.cp_before = *s;
  }
  sample_others(&r.pg_before, &r.sim_before);
  r.sim_rss_before_kb = OwnRssKb();

  FleetState fleet;
  const int sample = opt.hash_sample > 0 ? opt.hash_sample : std::max(1, n / 100);
  std::vector<std::unique_ptr<SimAgent>> agents;
  agents.reserve(n);
  Progress(absl::StrCat(n, " agents: connecting over ", r.channels, " channels"));
  const int64_t connect_start = NowNs();
  for (int i = 0; i < n; ++i) {
    agents.push_back(std::make_unique<SimAgent>(&fleet, absl::StrCat("sim-", tag, "-", i),
                                                i % sample == 0));
    agents.back()->Start(stubs[i % r.channels].get(), token,
                         {{"fleet-sim", "1"},
                          {"zone", absl::StrCat("z", i % 3)},
                          {"ring", absl::StrCat(i % 10)}});
  }

  // Ends every stream and waits for gRPC to be done with every reactor; until then the agents
  // must not be destroyed. On a timeout they are leaked on purpose rather than freed under gRPC.
  auto close_fleet = [&] {
    fleet.stopping.store(true, std::memory_order_release);
    for (auto& a : agents) a->Cancel();
    if (!flexgate::testing::WaitFor(
            [&] { return fleet.done.load(std::memory_order_acquire) == n; },
            absl::Seconds(60), absl::Milliseconds(10))) {
      Progress("streams did not end within 60 s; leaking them");
      for (auto& a : agents) (void)a.release();
    }
  };
  auto finish = [&](std::string error) {
    close_fleet();
    r.failed_streams = fleet.failed.load();
    absl::MutexLock lock(&fleet.mu);
    for (const std::string& e : fleet.errors) error += "; " + e;
    r.error = std::move(error);
    return r;
  };

  if (!AwaitAll(agents, fleet, initial->version, opt.timeout) || fleet.failed.load() > 0) {
    int connected = 0;
    for (const auto& a : agents) connected += a->acked_version() >= initial->version;
    return finish(absl::StrCat("only ", connected, " of ", n, " agents connected and ACKed the ",
                               "initial version within the timeout"));
  }
  int64_t last_connect = connect_start;  // Refined from the ACK records at the end.
  r.connect_s = static_cast<double>(NowNs() - connect_start) / 1e9;
  Progress(absl::StrFormat("%d agents connected and ACKed version %d in %.2f s", n,
                           initial->version, r.connect_s));

  if (r.have_cp) {
    WaitForQuiet(cp_pid, absl::Milliseconds(300), absl::Seconds(20));
    absl::StatusOr<ProcSample> s = SampleProcess(cp_pid);
    if (!s.ok()) return finish("control plane gone after connect");
    r.cp_connected = *s;
  }
  sample_others(&r.pg_connected, &r.sim_connected);
  r.sim_rss_connected_kb = OwnRssKb();

  // 3. K versions, one at a time.
  std::vector<Applied> applied;
  for (int k = 0; k < opt.versions; ++k) {
    absl::StatusOr<Applied> a =
        ApplyConfig(config_stub.get(), token, MakeConfig(tag, serial++, opt.routes));
    if (!a.ok()) return finish(std::string(a.status().message()));
    applied.push_back(*a);
    if (!AwaitAll(agents, fleet, a->version, opt.timeout) || fleet.failed.load() > 0) {
      int have = 0;
      for (const auto& ag : agents) have += ag->acked_version() >= a->version;
      return finish(absl::StrCat("version ", a->version, ": only ", have, " of ", n,
                                 " agents ACKed it within the timeout"));
    }
    const double all_ms = static_cast<double>(NowNs() - a->committed_ns) / 1e6;
    Progress(absl::StrFormat("version %d: all %d agents ACKed within ~%.0f ms of commit",
                             a->version, n, all_ms));
    if (opt.settle && r.have_cp) {
      WaitForQuiet(cp_pid, absl::Milliseconds(200), absl::Seconds(10));
    }
  }
  if (r.have_cp) {
    // The CP's ACK bookkeeping (database writes) is part of the cost of a version.
    WaitForQuiet(cp_pid, absl::Milliseconds(300), absl::Seconds(20));
    absl::StatusOr<ProcSample> s = SampleProcess(cp_pid);
    if (!s.ok()) return finish("control plane gone after the versions");
    r.cp_end = *s;
  }
  sample_others(&r.pg_end, &r.sim_end);

  // 4. Close, then read every agent's records (safe after OnDone).
  close_fleet();
  r.failed_streams = fleet.failed.load();
  r.hashes_checked = fleet.hashes_checked.load();
  r.hash_mismatches = fleet.hash_mismatches.load();

  std::vector<int64_t> conv, send, apply;
  for (const Applied& a : applied) apply.push_back(a.committed_ns - a.sent_ns);
  for (const auto& agent : agents) {
    const auto& recs = agent->records();
    for (const AckRecord& rec : recs) {
      if (rec.version == initial->version) last_connect = std::max(last_connect, rec.acked_ns);
    }
    for (const Applied& a : applied) {
      auto it = std::find_if(recs.begin(), recs.end(),
                             [&](const AckRecord& rec) { return rec.version == a.version; });
      if (it == recs.end()) {
        ++r.missing_acks;
        continue;
      }
      if (it->hash != a.hash) ++r.wrong_hashes;
      int64_t d = it->acked_ns - a.committed_ns;
      if (d < 0) {
        ++r.acks_before_commit;
        d = 0;
      }
      conv.push_back(d);
      send.push_back(it->acked_ns - a.sent_ns);
    }
  }
  r.connect_s = static_cast<double>(last_connect - connect_start) / 1e9;
  r.convergence = Summarize(conv);
  r.from_send = Summarize(send);
  r.apply = Summarize(apply);
  r.ok = r.missing_acks == 0 && r.wrong_hashes == 0 && r.hash_mismatches == 0 &&
         r.failed_streams == 0 && fleet.unexpected_messages.load() == 0;
  if (!r.ok) {
    r.error = absl::StrCat("missing_acks=", r.missing_acks, " wrong_hashes=", r.wrong_hashes,
                           " hash_mismatches=", r.hash_mismatches,
                           " failed_streams=", r.failed_streams);
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

void PrintTable(const std::vector<TrialResult>& results) {
  std::printf("\n%7s %5s %9s | %10s %10s %10s | %9s | %12s %12s %14s | %10s | %s\n", "agents",
              "chans", "connect_s", "conv_p50ms", "conv_p99ms", "conv_maxms", "apply_p50",
              "cp_rss_KB/ag", "cp_cpu_us/ag", "cp_us/ag/ver", "sim_KB/ag", "result");
  for (const TrialResult& r : results) {
    std::string cp_rss = "-", cp_cpu = "-", cp_ver = "-";
    if (r.have_cp && r.ok) {
      cp_rss = absl::StrFormat("%.1f", r.CpRssPerAgentKb());
      cp_cpu = absl::StrFormat("%.0f", r.CpConnectCpuPerAgentUs());
      cp_ver = absl::StrFormat("%.1f", r.CpCpuPerAgentVersionUs());
    }
    std::printf("%7d %5d %9.2f | %10.1f %10.1f %10.1f | %9.1f | %12s %12s %14s | %10.1f | %s\n",
                r.agents, r.channels, r.connect_s, r.convergence.p50_ms, r.convergence.p99_ms,
                r.convergence.max_ms, r.apply.p50_ms, cp_rss.c_str(), cp_cpu.c_str(),
                cp_ver.c_str(), r.SimRssPerAgentKb(), r.ok ? "ok" : r.error.c_str());
  }
  for (const TrialResult& r : results) {
    if (!r.ok || !r.have_cp) continue;
    std::printf(
        "N=%d: CP RSS %ld KB -> %ld KB connected (%ld threads); CP CPU %.2f s to connect, "
        "%.2f s for %d versions; send->ACK p99 %.1f ms; %d ACKs before Apply returned; "
        "%d snapshot hashes recomputed\n",
        r.agents, static_cast<long>(r.cp_before.rss_kb), static_cast<long>(r.cp_connected.rss_kb),
        static_cast<long>(r.cp_connected.threads),
        absl::ToDoubleSeconds(r.cp_connected.cpu - r.cp_before.cpu),
        absl::ToDoubleSeconds(r.cp_end.cpu - r.cp_connected.cpu), r.versions,
        r.from_send.p99_ms, r.acks_before_commit, r.hashes_checked);
    absl::PrintF("N=%d: CPU per agent per version: CP %.1f us, PostgreSQL %s us, simulator %.1f us\n",
                 r.agents, r.CpCpuPerAgentVersionUs(),
                 r.have_pg ? absl::StrFormat("%.1f", r.PerAgentVersionUs(r.pg_end - r.pg_connected))
                           : std::string("-"),
                 r.PerAgentVersionUs(r.sim_end - r.sim_connected));
  }
  std::fflush(stdout);
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

void PrintJson(const TrialResult& r) {
  std::string cp = "null";
  if (r.have_cp && r.ok) {
    cp = absl::StrFormat(
        "{\"rss_before_kb\":%d,\"rss_connected_kb\":%d,\"rss_end_kb\":%d,\"threads\":%d,"
        "\"rss_per_agent_kb\":%.2f,\"cpu_connect_s\":%.3f,\"cpu_connect_per_agent_us\":%.1f,"
        "\"cpu_versions_s\":%.3f,\"cpu_per_agent_per_version_us\":%.2f,"
        "\"pg_cpu_connect_s\":%s,\"pg_cpu_versions_s\":%s}",
        r.cp_before.rss_kb, r.cp_connected.rss_kb, r.cp_end.rss_kb, r.cp_connected.threads,
        r.CpRssPerAgentKb(), absl::ToDoubleSeconds(r.cp_connected.cpu - r.cp_before.cpu),
        r.CpConnectCpuPerAgentUs(), absl::ToDoubleSeconds(r.cp_end.cpu - r.cp_connected.cpu),
        r.CpCpuPerAgentVersionUs(),
        r.have_pg ? absl::StrFormat("%.3f", absl::ToDoubleSeconds(r.pg_connected - r.pg_before))
                  : "null",
        r.have_pg ? absl::StrFormat("%.3f", absl::ToDoubleSeconds(r.pg_end - r.pg_connected))
                  : "null");
  }
  auto q = [](const Quantiles& x) {
    return absl::StrFormat("{\"p50\":%.2f,\"p99\":%.2f,\"max\":%.2f}", x.p50_ms, x.p99_ms,
                           x.max_ms);
  };
  absl::PrintF(
      "{\"bench\":\"fleet\",\"agents\":%d,\"channels\":%d,\"versions\":%d,\"ok\":%s,"
      "\"error\":%s,\"connect_s\":%.3f,\"convergence_ms\":%s,\"send_to_ack_ms\":%s,"
      "\"apply_ms\":%s,\"acks_before_commit\":%d,\"missing_acks\":%d,\"wrong_hashes\":%d,"
      "\"hashes_checked\":%d,\"hash_mismatches\":%d,\"failed_streams\":%d,"
      "\"sim_rss_per_agent_kb\":%.2f,\"sim_cpu_versions_s\":%.3f,\"cp\":%s}\n",
      r.agents, r.channels, r.versions, r.ok ? "true" : "false", JsonString(r.error),
      r.connect_s, q(r.convergence), q(r.from_send), q(r.apply), r.acks_before_commit,
      r.missing_acks, r.wrong_hashes, r.hashes_checked, r.hash_mismatches, r.failed_streams,
      r.SimRssPerAgentKb(), absl::ToDoubleSeconds(r.sim_end - r.sim_connected), cp);
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------------------

// Streams are multiplexed over few connections, so the simulator needs few descriptors; the CP
// it spawns inherits the limit, and one with thousands of agents on their own connections would
// not. Raise the soft limit to the hard one (and the hard one too when privileged).
void RaiseFileLimit(rlim_t want) {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < want) {
    rlimit more{want, want};
    if (setrlimit(RLIMIT_NOFILE, &more) == 0) return;
  }
  lim.rlim_cur = lim.rlim_max;
  (void)setrlimit(RLIMIT_NOFILE, &lim);
}

int UsageError(const std::string& msg) {
  std::fprintf(stderr, "flexgate-fleet-sim: %s\n\n%s", msg.c_str(), kUsage);
  return 2;
}

// A fresh flexgate-cp on a fresh database of `pg`.
struct SpawnedCp {
  std::unique_ptr<flexgate::testing::Process> proc;
  std::string target;
};

absl::StatusOr<SpawnedCp> SpawnCp(flexgate::testing::TestPostgres* pg, const Options& opt,
                                  const std::string& token) {
  absl::StatusOr<std::string> url = pg->CreateDatabase("fleet_sim");
  if (!url.ok()) return url.status();
  flexgate::testing::CpLaunchOptions launch;
  launch.database_url = *url;
  launch.bootstrap_key = token;
  launch.extra_args = opt.cp_args;
  launch.start_timeout = absl::Seconds(60);
  flexgate::testing::CpPorts ports;
  auto proc = flexgate::testing::LaunchCp(launch, &ports);
  if (!proc.ok()) return proc.status();
  return SpawnedCp{std::move(proc).value(), absl::StrCat("127.0.0.1:", ports.grpc)};
}

absl::StatusOr<Options> ParseFlags(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--spawn") {
      opt.spawn = true;
      continue;
    }
    if (arg == "--json") {
      opt.json = true;
      continue;
    }
    if (arg == "--no-settle") {
      opt.settle = false;
      continue;
    }
    std::string value;
    size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat(arg, " needs a value"));
    }
    auto positive = [&](int* out) {
      if (!absl::SimpleAtoi(value, out) || *out < 1) {
        return absl::InvalidArgumentError(absl::StrCat(arg, " must be a positive number"));
      }
      return absl::OkStatus();
    };
    absl::Status s;
    int n = 0;
    if (arg == "--agents") {
      for (absl::string_view part : absl::StrSplit(value, ',')) {
        value = std::string(part);
        s = positive(&n);
        if (!s.ok()) return s;
        opt.agents.push_back(n);
      }
    } else if (arg == "--versions") {
      s = positive(&opt.versions);
    } else if (arg == "--server") {
      opt.server = value;
    } else if (arg == "--token") {
      opt.token = value;
    } else if (arg == "--cp-pid") {
      s = positive(&n);
      opt.cp_pid = n;
    } else if (arg == "--agents-per-channel") {
      s = positive(&opt.agents_per_channel);
    } else if (arg == "--routes") {
      s = positive(&opt.routes);
    } else if (arg == "--timeout") {
      s = positive(&n);
      opt.timeout = absl::Seconds(n);
    } else if (arg == "--hash-sample") {
      s = positive(&opt.hash_sample);
    } else if (arg == "--cp-arg") {
      opt.cp_args.push_back(value);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg));
    }
    if (!s.ok()) return s;
  }
  if (opt.agents.empty()) return absl::InvalidArgumentError("--agents is required");
  if (opt.spawn == !opt.server.empty()) {
    return absl::InvalidArgumentError("give exactly one of --spawn and --server");
  }
  if (!opt.spawn && opt.token.empty()) {
    return absl::InvalidArgumentError("--server needs --token");
  }
  if (opt.spawn && opt.cp_pid != 0) {
    return absl::InvalidArgumentError("--cp-pid is for --server mode");
  }
  return opt;
}

int Main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  absl::StatusOr<Options> opt = ParseFlags(argc, argv);
  if (!opt.ok()) return UsageError(std::string(opt.status().message()));
  // Debian's Abseil checks every Mutex acquisition for lock-order cycles (a global graph),
  // which only costs the simulator CPU that the control plane should get.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  RaiseFileLimit(65536);

  std::vector<TrialResult> results;
  if (opt->spawn) {
    // Started from the main thread: the children's parent-death signal is tied to it.
    auto pg = flexgate::testing::TestPostgres::Start();
    if (!pg.ok()) {
      std::fprintf(stderr, "flexgate-fleet-sim: cannot start PostgreSQL: %s\n",
                   std::string(pg.status().message()).c_str());
      return 1;
    }
    std::mt19937_64 rng(std::random_device{}());
    const std::string token = absl::StrFormat("fgk_fleet_sim_%016x", rng());
    for (int n : opt->agents) {
      absl::StatusOr<SpawnedCp> cp = SpawnCp(pg->get(), *opt, token);
      if (!cp.ok()) {
        std::fprintf(stderr, "flexgate-fleet-sim: %s\n", std::string(cp.status().message()).c_str());
        return 1;
      }
      results.push_back(RunTrial(*opt, n, cp->target, token, cp->proc->pid(), true));
      // Every client stream of the trial has ended; the CP still records the disconnects (and
      // any ACKs not yet written) before it exits, which is worth knowing at 10,000 agents.
      const absl::Time stop_start = absl::Now();
      flexgate::testing::ExitStatus exit = cp->proc->Terminate(absl::Seconds(60));
      const double stop_s = absl::ToDoubleSeconds(absl::Now() - stop_start);
      if (!exit.success()) {
        Progress(absl::StrFormat("flexgate-cp ended with %s after SIGTERM (%.1f s); log tail:\n%s",
                                 exit.ToString(), stop_s, cp->proc->LogTail(600)));
      } else {
        Progress(absl::StrFormat("flexgate-cp exited 0, %.1f s after SIGTERM", stop_s));
      }
      if (opt->json) PrintJson(results.back());
    }
  } else {
    for (int n : opt->agents) {
      results.push_back(RunTrial(*opt, n, opt->server, opt->token, opt->cp_pid, false));
      if (opt->json) PrintJson(results.back());
    }
  }
  PrintTable(results);
  for (const TrialResult& r : results) {
    if (!r.ok) return 1;
  }
  return 0;
}

}  // namespace
}  // namespace flexgate::bench

int main(int argc, char** argv) { return flexgate::bench::Main(argc, argv); }
