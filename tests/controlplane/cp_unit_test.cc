// Unit tests of the control plane's pure parts: API-key parsing and authorization, revocation
// payloads and the revocation index, the per-stream distribution state machine, migration
// ordering, encode-once snapshot framing, page tokens.
#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/canonical.h"
#include "controlplane/access_store.h"
#include "controlplane/agent_stream_state.h"
#include "controlplane/auth.h"
#include "controlplane/diff_proto.h"
#include "controlplane/fleet_service.h"
#include "controlplane/fleet_store.h"
#include "controlplane/config_service.h"
#include "controlplane/metrics.h"
#include "controlplane/migrations.h"
#include "controlplane/revocation_enforcer.h"
#include "controlplane/snapshot_encoding.h"
#include "flexgate/v1/agent.pb.h"

namespace flexgate::cp {
namespace {

TEST_CASE("Revocation payloads round-trip and malformed ones are refused") {
  using Kind = AgentCredential::Kind;
  for (const AgentCredential& c : {AgentCredential{Kind::kEnrollmentToken, 3, 17},
                                   AgentCredential{Kind::kApiKey, 1, 9000000000}}) {
    INFO(RevocationPayload(c));
    REQUIRE(ParseRevocationPayload(RevocationPayload(c)).has_value());
    CHECK(*ParseRevocationPayload(RevocationPayload(c)) == c);
  }
  CHECK(RevocationPayload({Kind::kEnrollmentToken, 3, 17}) == "token:3:17");
  for (const char* bad : {"", "token", "token:1", "token:1:2:3", "tokens:1:2", "key:x:2",
                          "key:1:", "key:0:5", "token:2:-1", "1:7"}) {
    INFO("payload: \"" << bad << "\"");
    CHECK_FALSE(ParseRevocationPayload(bad).has_value());
  }
  Principal token_agent;
  token_agent.tenant_id = 4;
  token_agent.token_id = 8;
  CHECK(CredentialOf(token_agent) == AgentCredential{Kind::kEnrollmentToken, 4, 8});
  Principal key_agent{/*key_id=*/5, /*tenant_id=*/1, "default", Role::kAdmin};
  CHECK(CredentialOf(key_agent) == AgentCredential{Kind::kApiKey, 1, 5});
  CHECK_FALSE(CredentialOf(Principal{}).has_value());
}

// Stands in for an agent stream: records how it was ended.
struct RecordingStream : RevocableStream {
  void EndRevoked(AgentCredential::Kind kind) override { ended.push_back(kind); }
  std::vector<AgentCredential::Kind> ended;
};

TEST_CASE("RevocationEnforcer ends only the streams of a revoked credential and refuses it afterwards") {
  using Kind = AgentCredential::Kind;
  CpMetrics metrics;
  // Neither is touched without a database call: Forget only edits the cache, and no check runs.
  Authenticator auth(nullptr);
  RevocationEnforcer enforcer(nullptr, &auth, &metrics, absl::ZeroDuration());
  const AgentCredential leaked{Kind::kEnrollmentToken, 2, 10};
  const AgentCredential other_token{Kind::kEnrollmentToken, 2, 11};
  const AgentCredential same_id_key{Kind::kApiKey, 2, 10};
  auto a = std::make_shared<RecordingStream>();
  auto b = std::make_shared<RecordingStream>();
  auto c = std::make_shared<RecordingStream>();
  auto d = std::make_shared<RecordingStream>();
  REQUIRE(enforcer.Add(leaked, a));
  REQUIRE(enforcer.Add(leaked, b));
  REQUIRE(enforcer.Add(other_token, c));
  REQUIRE(enforcer.Add(same_id_key, d));
  enforcer.Remove(leaked, b.get());  // b ended on its own before the revocation
  CHECK(enforcer.stream_count() == 3);

  enforcer.OnRevocationNotice(RevocationPayload(leaked));
  CHECK(a->ended == std::vector<Kind>{Kind::kEnrollmentToken});
  CHECK(b->ended.empty());
  CHECK(c->ended.empty());
  CHECK(d->ended.empty());
  CHECK(enforcer.stream_count() == 2);
  // A Hello that authenticated just before the notification is refused when it registers.
  auto late = std::make_shared<RecordingStream>();
  CHECK_FALSE(enforcer.Add(leaked, late));
  CHECK(enforcer.stream_count() == 2);
  // A second notice (every replica hears its own) changes nothing; garbage is ignored.
  enforcer.Revoked(leaked);
  enforcer.OnRevocationNotice("token:oops");
  CHECK(a->ended.size() == 1);
  CHECK(metrics.revoked_streams.Value() == 1);
  CHECK(metrics.revocation_notifications.Value() == 2);

  enforcer.Revoked(same_id_key);
  CHECK(d->ended == std::vector<Kind>{Kind::kApiKey});
  CHECK(c->ended.empty());
  enforcer.Remove(other_token, c.get());
  CHECK(enforcer.stream_count() == 0);
}

TEST_CASE("ParseBearer accepts the Bearer scheme and refuses everything else") {
  CHECK(ParseBearer("Bearer abc123").value() == "abc123");
  CHECK(ParseBearer("bearer abc123").value() == "abc123");
  CHECK(ParseBearer("  BEARER   fgk_x-y_z  ").value() == "fgk_x-y_z");
  for (const char* bad : {"", "   ", "Bearer", "Bearer ", "Basic abc", "Bearerabc", "abc",
                          "Bearer a b"}) {
    INFO("header: \"" << bad << "\"");
    auto key = ParseBearer(bad);
    REQUIRE_FALSE(key.ok());
    CHECK(absl::IsUnauthenticated(key.status()));
  }
}

TEST_CASE("Authorize checks tenant and role") {
  Principal viewer{1, 10, "default", Role::kViewer};
  Principal editor{2, 10, "default", Role::kEditor};
  Principal admin{3, 10, "default", Role::kAdmin};

  CHECK(Authorize(viewer, "", Access::kRead).value() == "default");
  CHECK(Authorize(viewer, "default", Access::kRead).value() == "default");
  CHECK(absl::IsPermissionDenied(Authorize(viewer, "", Access::kWrite).status()));
  CHECK(Authorize(editor, "", Access::kWrite).ok());
  CHECK(absl::IsPermissionDenied(Authorize(editor, "", Access::kAdmin).status()));
  CHECK(Authorize(admin, "", Access::kAdmin).ok());
  // Another tenant is refused for every kind of access, even for an admin.
  for (Access a : {Access::kRead, Access::kWrite, Access::kAdmin}) {
    CHECK(absl::IsPermissionDenied(Authorize(admin, "other", a).status()));
  }
}

TEST_CASE("ParseRole round-trips the three roles") {
  for (Role r : {Role::kAdmin, Role::kEditor, Role::kViewer}) {
    CHECK(ParseRole(RoleName(r)).value() == r);
  }
  CHECK(absl::IsInvalidArgument(ParseRole("root").status()));
}

using State = AgentStreamState<int>;

TEST_CASE("Stream state sends at once when idle and assigns a fresh nonce per snapshot") {
  State s;
  auto first = s.Offer(1, "h1", 100);
  REQUIRE(first.has_value());
  CHECK(first->version == 1);
  CHECK(first->payload == 100);
  CHECK(s.write_in_flight());
  CHECK_FALSE(s.WriteDone().has_value());
  auto second = s.Offer(2, "h2", 200);
  REQUIRE(second.has_value());
  CHECK(second->nonce != first->nonce);
}

TEST_CASE("Stream state sends only the newest version pending behind a write") {
  State s;
  REQUIRE(s.Offer(1, "h1", 1).has_value());
  // Versions 2, 3 and 4 arrive while version 1 is still being written.
  CHECK_FALSE(s.Offer(2, "h2", 2).has_value());
  CHECK_FALSE(s.Offer(3, "h3", 3).has_value());
  CHECK_FALSE(s.Offer(4, "h4", 4).has_value());
  CHECK(s.pending_version() == 4u);
  auto next = s.WriteDone();
  REQUIRE(next.has_value());
  CHECK(next->version == 4);
  CHECK(next->payload == 4);
  CHECK_FALSE(s.WriteDone().has_value());
  // Older or repeated versions (duplicate notifications, reloads) are ignored.
  CHECK_FALSE(s.Offer(3, "h3", 3).has_value());
  CHECK_FALSE(s.Offer(4, "h4", 4).has_value());
}

TEST_CASE("Stream state ignores replies with an unknown nonce") {
  State s;
  auto v1 = s.Offer(1, "h1", 1);
  REQUIRE(v1.has_value());
  CHECK(s.OnAck("bogus", "h1").reply == State::Reply::kStale);
  CHECK(s.OnAck("", "h1").reply == State::Reply::kStale);
  CHECK(s.OnNack("bogus").reply == State::Reply::kStale);
  CHECK(s.applied_version() == 0);
  CHECK_FALSE(s.IsRejected(1));
  auto ack = s.OnAck(v1->nonce, "h1");
  CHECK(ack.reply == State::Reply::kAccepted);
  CHECK(ack.version == 1);
  CHECK(s.applied_version() == 1);
  CHECK(s.applied_hash() == "h1");
}

TEST_CASE("Stream state records a late ACK without confirming the newer send") {
  State s;
  auto v1 = s.Offer(1, "h1", 1);
  s.WriteDone();
  auto v2 = s.Offer(2, "h2", 2);  // sent before the agent answered version 1
  REQUIRE(v1.has_value());
  REQUIRE(v2.has_value());
  CHECK(s.write_in_flight());

  // The agent ACKs version 1 after version 2 was sent: recorded for version 1 with its hash...
  auto late = s.OnAck(v1->nonce, "");
  CHECK(late.reply == State::Reply::kLate);
  CHECK(late.version == 1);
  CHECK(late.hash == "h1");
  // ...but the stream's state does not move: version 2 is still unconfirmed.
  CHECK(s.applied_version() == 0);
  CHECK(s.applied_hash().empty());
  CHECK(s.sent_version() == 2);
  CHECK(s.write_in_flight());
  // A nonce answers once: a repeated late ACK is stale.
  CHECK(s.OnAck(v1->nonce, "h1").reply == State::Reply::kStale);

  // Only the current nonce confirms version 2.
  s.WriteDone();
  auto ack = s.OnAck(v2->nonce, "h2");
  CHECK(ack.reply == State::Reply::kAccepted);
  CHECK(ack.version == 2);
  CHECK(s.applied_version() == 2);
  CHECK(s.applied_hash() == "h2");
}

TEST_CASE("Stream state records a late NACK without disturbing the pending send") {
  State s;
  s.SetApplied(1, "h1");
  auto v2 = s.Offer(2, "h2", 2);
  s.WriteDone();
  auto v3 = s.Offer(3, "h3", 3);
  REQUIRE(v2.has_value());
  REQUIRE(v3.has_value());
  CHECK_FALSE(s.Offer(4, "h4", 4).has_value());  // pending behind the write of 3
  auto late = s.OnNack(v2->nonce);
  CHECK(late.reply == State::Reply::kLate);
  CHECK(late.version == 2);
  CHECK(s.IsRejected(2));
  CHECK_FALSE(s.IsRejected(3));
  CHECK(s.applied_version() == 1);  // the agent stays on what it served
  CHECK(s.pending_version() == 4u);
  CHECK(s.OnNack(v2->nonce).reply == State::Reply::kStale);
  auto next = s.WriteDone();
  REQUIRE(next.has_value());
  CHECK(next->version == 4);
  // The answer to 3 is now late too; the current nonce is 4's.
  CHECK(s.OnAck(v3->nonce, "h3").reply == State::Reply::kLate);
  CHECK(s.applied_version() == 1);
  CHECK(s.OnAck(next->nonce, "h4").reply == State::Reply::kAccepted);
  CHECK(s.applied_version() == 4);
}

TEST_CASE("Stream state remembers only the last few sends for late replies") {
  State s;
  std::vector<std::string> nonces;
  for (uint64_t v = 1; v <= State::kRecentSends + 2; ++v) {
    auto send = s.Offer(v, absl::StrCat("h", v), static_cast<int>(v));
    REQUIRE(send.has_value());
    nonces.push_back(send->nonce);
    s.WriteDone();
  }
  // The two oldest sends fell out of the bounded memory: their replies are stale.
  CHECK(s.OnAck(nonces[0], "h1").reply == State::Reply::kStale);
  CHECK(s.OnAck(nonces[1], "h2").reply == State::Reply::kStale);
  auto late = s.OnAck(nonces[2], "");
  CHECK(late.reply == State::Reply::kLate);
  CHECK(late.version == 3);
  CHECK(late.hash == "h3");
  // An answered current nonce becomes stale once a newer snapshot is sent.
  auto cur = s.OnAck(nonces.back(), "");
  CHECK(cur.reply == State::Reply::kAccepted);
  CHECK(s.applied_hash() == absl::StrCat("h", State::kRecentSends + 2));
  auto newer = s.Offer(State::kRecentSends + 3, "hn", 0);
  REQUIRE(newer.has_value());
  CHECK(s.OnAck(nonces.back(), "").reply == State::Reply::kStale);
}

TEST_CASE("Stream state never sends a NACKed version again") {
  State s;
  s.SetApplied(1, "h1");
  auto v2 = s.Offer(2, "h2", 2);
  REQUIRE(v2.has_value());
  s.WriteDone();
  CHECK(s.OnNack(v2->nonce).reply == State::Reply::kAccepted);
  CHECK(s.IsRejected(2));
  CHECK(s.applied_version() == 1);  // the agent stays on its previous version
  CHECK_FALSE(s.Offer(2, "h2", 2).has_value());
  // A newer version is sent normally.
  auto v3 = s.Offer(3, "h3", 3);
  REQUIRE(v3.has_value());
  CHECK(v3->version == 3);

  // A rejection recorded on an earlier stream is honoured by a new one.
  State fresh;
  fresh.MarkRejected(7);
  CHECK_FALSE(fresh.Offer(7, "h7", 7).has_value());
  CHECK(fresh.Offer(8, "h8", 8).has_value());
}

TEST_CASE("Stream state does not send what the agent already serves") {
  State s;
  s.SetApplied(5, "h5");
  CHECK_FALSE(s.Offer(5, "h5", 5).has_value());
  // Same content under a newer version number (e.g. a rollback): also not sent.
  CHECK_FALSE(s.Offer(6, "h5", 6).has_value());
  CHECK(s.Offer(7, "h7", 7).has_value());
}

TEST_CASE("OrderMigrations sorts by number and refuses bad sets") {
  auto ordered = OrderMigrations({{"0010_ten.sql", "c"}, {"0002_two.sql", "b"},
                                  {"0001_init.sql", "a"}});
  REQUIRE(ordered.ok());
  REQUIRE(ordered->size() == 3);
  CHECK((*ordered)[0].version == 1);
  CHECK((*ordered)[0].name == "init");
  CHECK((*ordered)[0].sql == "a");
  CHECK((*ordered)[1].version == 2);
  CHECK((*ordered)[2].version == 10);
  CHECK((*ordered)[2].name == "ten");

  CHECK(absl::IsInvalidArgument(
      OrderMigrations({{"0001_a.sql", ""}, {"001_b.sql", ""}}).status()));  // duplicate 1
  for (const char* bad : {"init.sql", "0001.sql", "0001_.sql", "00x1_a.sql", "0000_zero.sql",
                          "0001_a.txt"}) {
    INFO(bad);
    CHECK(absl::IsInvalidArgument(OrderMigrations({{bad, ""}}).status()));
  }
}

TEST_CASE("The embedded migrations form a valid gapless sequence starting at 1") {
  auto ordered = OrderMigrations(EmbeddedMigrations());
  REQUIRE(ordered.ok());
  REQUIRE_FALSE(ordered->empty());
  for (size_t i = 0; i < ordered->size(); ++i) {
    CHECK((*ordered)[i].version == static_cast<int>(i + 1));
    CHECK((*ordered)[i].sql.find("CREATE") != std::string::npos);
  }
}

TEST_CASE("Encode-once framing produces a complete ControlMessage per stream") {
  flexgate::v1::Config config;
  auto* c = config.add_clusters();
  c->set_name("web");
  auto* e = c->add_endpoints();
  e->set_address("127.0.0.1");
  e->set_port(8081);
  const std::string body = CanonicalBytes(config);
  const std::string hash = Sha256Hex(body);
  auto prepared = PrepareSnapshot(7, 42, hash, body);

  for (const auto& [nonce, agent] : {std::pair<std::string, std::string>{"1", "agent-a"},
                                     {"17", "agent-b"}, {"3", ""}}) {
    SnapshotFrame f = FrameSnapshot(*prepared, nonce, agent);
    flexgate::v1::ControlMessage msg;
    REQUIRE(msg.ParseFromString(f.header + prepared->prefix + f.suffix));
    REQUIRE(msg.has_snapshot());
    const auto& snap = msg.snapshot();
    CHECK(snap.version() == 42);
    CHECK(snap.hash() == hash);
    CHECK(snap.nonce() == nonce);
    CHECK(snap.agent_id() == agent);
    CHECK(ConfigHash(snap.config()) == hash);
    CHECK(snap.config().clusters(0).endpoints(0).port() == 8081);
  }
}

TEST_CASE("Page tokens round-trip and garbage is refused") {
  CHECK(DecodePageToken("").value() == 0);
  CHECK(DecodePageToken(EncodePageToken(17)).value() == 17);
  CHECK(absl::IsInvalidArgument(DecodePageToken("nonsense").status()));
  CHECK(absl::IsInvalidArgument(DecodePageToken(EncodePageToken(0)).status()));
}

}  // namespace
}  // namespace flexgate::cp

namespace flexgate::cp {
namespace {

TEST_CASE("Diff values under headers and API-key auth are redacted but names stay") {
  CHECK(RedactFieldValue("route.request_headers.set", R"([{name: "authorization" value: "Bearer abc"}])") ==
        R"([{name: "authorization" value: "<redacted>"}])");
  CHECK(RedactFieldValue("route.request_headers.set[authorization].value", R"("Bearer abc")") ==
        R"("<redacted>")");
  CHECK(RedactFieldValue("policy.api_key.keys", R"([{id: "ci" sha256: "k3y"}])") ==
        R"([{id: "<redacted>" sha256: "<redacted>"}])");
  // Escaped quotes inside a value do not end it early.
  CHECK(RedactFieldValue("route.match.headers", R"({name: "x" exact: "a\"b"})") ==
        R"({name: "x" exact: "<redacted>"})");
  // Elsewhere values are shown as they are.
  CHECK(RedactFieldValue("cluster.endpoints[a:1]", R"({address: "a" port: 1})") ==
        R"({address: "a" port: 1})");
}

TEST_CASE("Diff summaries count resource changes and affected routes") {
  flexgate::v1::Config a, b;
  a.add_clusters()->set_name("web");
  b = a;
  CHECK(DiffSummary(DiffConfigs(a, b)) == "no changes");
  auto* r = b.add_routes();
  r->set_name("all");
  r->set_cluster("web");
  auto proto = DiffToProto(DiffConfigs(a, b));
  CHECK(proto.added() == 1);
  CHECK(DiffSummary(DiffConfigs(a, b)) == "1 added, 0 changed, 0 removed; routes affected: 1");
}

TEST_CASE("ParseLabelSelector reads k=v lists and refuses malformed ones") {
  CHECK(ParseLabelSelector("").value().empty());
  CHECK(ParseLabelSelector("  ").value().empty());
  auto one = ParseLabelSelector("zone=eu-1");
  REQUIRE(one.ok());
  CHECK(*one == std::map<std::string, std::string>{{"zone", "eu-1"}});
  auto two = ParseLabelSelector(" zone = eu-1 , tier=edge,empty=");
  REQUIRE(two.ok());
  CHECK(*two == std::map<std::string, std::string>{{"zone", "eu-1"}, {"tier", "edge"},
                                                   {"empty", ""}});
  // A value may itself contain '=': only the first one splits.
  CHECK(ParseLabelSelector("expr=a=b").value().at("expr") == "a=b");
  for (const char* bad : {"zone", "=x", "zone=a,", "zone=a,zone=b", "a=1,,b=2"}) {
    INFO("selector: \"" << bad << "\"");
    CHECK(absl::IsInvalidArgument(ParseLabelSelector(bad).status()));
  }
}

TEST_CASE("Agent page tokens round-trip and garbage is refused") {
  CHECK(DecodeAgentPageToken("").value().empty());
  for (const std::string id : {"a", "agent-7", "with space", "ünïcode"}) {
    CHECK(DecodeAgentPageToken(EncodeAgentPageToken(id)).value() == id);
  }
  CHECK(absl::IsInvalidArgument(DecodeAgentPageToken("garbage!").status()));
  CHECK(absl::IsInvalidArgument(DecodeAgentPageToken(EncodeAgentPageToken("")).status()));
  CHECK(absl::IsInvalidArgument(DecodeAgentPageToken(EncodePageToken(5)).status()));
}

}  // namespace
}  // namespace flexgate::cp
