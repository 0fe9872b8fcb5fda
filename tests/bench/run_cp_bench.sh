#!/usr/bin/env bash
# Runs flexgate-cp-bench against a throwaway PostgreSQL cluster and a fresh flexgate-cp.
#
#   tests/bench/run_cp_bench.sh BUILD_DIR [flexgate-cp-bench flags...]
#
# Needs the targets flexgate-cp, flexgate-cp-bench and flexgate-test-pg-fixture built in
# BUILD_DIR. Everything it starts is stopped on exit.
set -euo pipefail

build=${1:?usage: run_cp_bench.sh BUILD_DIR [bench flags...]}
shift
build=$(cd "$build" && pwd)
state=$(mktemp -d)
cp_pid=""
cleanup() {
  if [[ -n "$cp_pid" ]]; then kill "$cp_pid" 2>/dev/null || true; wait "$cp_pid" 2>/dev/null || true; fi
  "$build/tests/bin/flexgate-test-pg-fixture" stop "$state/pg" >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT

"$build/tests/bin/flexgate-test-pg-fixture" start "$state/pg" >/dev/null
port=$(cat "$state/pg/port")
key="fgk_bench_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

FLEXGATE_BOOTSTRAP_ADMIN_KEY="$key" "$build/bin/flexgate-cp" --listen 127.0.0.1:0 \
  --admin 127.0.0.1:0 --database-url "postgresql://postgres@127.0.0.1:$port/postgres" \
  2>"$state/cp.log" &
cp_pid=$!
grpc_port=""
for _ in $(seq 1 300); do
  grpc_port=$(grep -o '"grpc_port":[0-9]*' "$state/cp.log" | head -1 | cut -d: -f2 || true)
  [[ -n "$grpc_port" ]] && break
  kill -0 "$cp_pid" 2>/dev/null || { cat "$state/cp.log" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$grpc_port" ]] || { echo "flexgate-cp did not start" >&2; cat "$state/cp.log" >&2; exit 1; }

"$build/bin/flexgate-cp-bench" --server "127.0.0.1:$grpc_port" --token "$key" "$@"
