// flexgate-test-pg-fixture: starts and stops the one PostgreSQL cluster a CTest run shares.
//
//   flexgate-test-pg-fixture start DIR   # initdb + pg_ctl start; writes DIR/port, DIR/cluster
//   flexgate-test-pg-fixture stop DIR    # pg_ctl -m fast stop; deletes the cluster
//
// Registered by pg_fixture.cmake as the FIXTURES_SETUP / FIXTURES_CLEANUP of the fixture
// "postgres"; tests attach with TestPostgres::Shared() through FLEXGATE_TEST_PG_DIR=DIR.
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/harness/proc/test_postgres.h"

int main(int argc, char** argv) {
  if (argc != 3 || (std::strcmp(argv[1], "start") != 0 && std::strcmp(argv[1], "stop") != 0)) {
    std::fprintf(stderr, "usage: %s start|stop DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[2];
  const bool start = std::strcmp(argv[1], "start") == 0;
  absl::Status st = start ? flexgate::testing::StartFixtureCluster(dir)
                          : flexgate::testing::StopFixtureCluster(dir);
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 1;
  }
  if (start) {
    auto pg = flexgate::testing::TestPostgres::Attach(dir);
    std::printf("PostgreSQL fixture ready on 127.0.0.1:%u (%s)\n",
                pg.ok() ? static_cast<unsigned>((*pg)->port()) : 0u, dir.c_str());
  } else {
    std::printf("PostgreSQL fixture stopped (%s)\n", dir.c_str());
  }
  return 0;
}
