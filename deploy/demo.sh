#!/usr/bin/env bash
# The FlexGate demo: the whole stack on loopback.
#
#   deploy/demo.sh [BUILD_DIR] [--once]
#
# Starts a throwaway PostgreSQL cluster in a temp dir, flexgate-cp (which applies its own
# migrations), two small upstreams ("blue" and "green") and flexgate-agent under the control
# plane; applies config version 1 with flexctl, sends requests through the agent, applies
# version 2 that moves /api/ to "green", sends more, and prints what happened. Then it leaves the
# stack running until Ctrl-C (or exits at once with --once) and removes everything it started.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-build}"
[[ "$build" = /* ]] || build="$repo/$build"
once=0
for arg in "$@"; do [[ "$arg" == "--once" ]] && once=1; done
bin="$build/bin"
for prog in flexgate-cp flexgate-agent flexctl flexgate-test-upstream; do
  [[ -x "$bin/$prog" ]] || { echo "demo: $bin/$prog is missing; run 'make build' first" >&2; exit 2; }
done

pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[[ -x "$pg_bin/initdb" ]] || { echo "demo: PostgreSQL server binaries not found" >&2; exit 2; }

work="$(mktemp -d /tmp/flexgate-demo.XXXXXX)"
chmod 755 "$work"
pids=()
pg_started=0

as_pg() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  echo
  echo "== stopping the demo stack"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ $pg_started -eq 1 ]]; then
    (cd "$work" && as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -m fast stop >/dev/null 2>&1) || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free TCP port for PostgreSQL (the FlexGate programs bind port 0 and report their ports).
# Drawn below the kernel's ephemeral range so outgoing connections never hold it.
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( 10000 + RANDOM % 20000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  echo "demo: no free port found" >&2; return 1
}

# Waits for a JSON log line with "msg":"$2" in file $1 and prints the number in field $3.
port_from_log() {
  local log=$1 msg=$2 field=$3 line
  for _ in $(seq 1 300); do
    line=$(grep -m1 "\"msg\":\"$msg\"" "$log" 2>/dev/null || true)
    if [[ -n "$line" ]]; then
      sed -n "s/.*\"$field\":\([0-9]*\).*/\1/p" <<<"$line"
      return 0
    fi
    sleep 0.1
  done
  echo "demo: no \"$msg\" line in $log; last lines:" >&2
  tail -n 20 "$log" >&2 || true
  return 1
}

# Waits for the upstream's "listening on HOST:PORT" line in file $1 and prints PORT.
upstream_port() {
  local log=$1 line
  for _ in $(seq 1 300); do
    line=$(grep -m1 '^listening on ' "$log" 2>/dev/null || true)
    if [[ -n "$line" ]]; then echo "${line##*:}"; return 0; fi
    sleep 0.1
  done
  echo "demo: upstream did not start; see $log" >&2
  return 1
}

# Waits until `curl URL` answers 200, or fails after $2 seconds, showing the log $3.
wait_http_ok() {
  local url=$1 secs=$2 log=$3
  for _ in $(seq 1 $(( secs * 10 ))); do
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' "$url" 2>/dev/null)" == "200" ]]; then return 0; fi
    sleep 0.1
  done
  echo "demo: $url did not become ready; last lines of $log:" >&2
  tail -n 20 "$log" >&2 || true
  return 1
}

echo "== working directory: $work"

# --- PostgreSQL -----------------------------------------------------------------------------
mkdir -p "$work/pg"
[[ $(id -u) -eq 0 ]] && chown postgres:postgres "$work/pg"
(cd "$work/pg" && as_pg "$pg_bin/initdb" -D "$work/pg/data" -U postgres -A trust --no-sync >"$work/initdb.log" 2>&1) \
  || { cat "$work/initdb.log" >&2; exit 1; }
for attempt in 1 2 3 4 5; do
  pg_port=$(free_port)
  if (cd "$work/pg" && as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/server.log" -w \
        -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null 2>&1); then
    pg_started=1; break
  fi
done
[[ $pg_started -eq 1 ]] || { echo "demo: PostgreSQL did not start" >&2; cat "$work/pg/server.log" >&2; exit 1; }
as_pg "$pg_bin/psql" -q -h "$work/pg" -p "$pg_port" -U postgres -c "CREATE DATABASE flexgate" >/dev/null
db_url="postgresql://postgres@127.0.0.1:$pg_port/flexgate"
echo "== PostgreSQL on 127.0.0.1:$pg_port (data in $work/pg)"

# --- flexgate-cp ------------------------------------------------------------------------------
admin_key="fgk_demo_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
FLEXGATE_BOOTSTRAP_ADMIN_KEY="$admin_key" "$bin/flexgate-cp" --listen 127.0.0.1:0 \
  --admin 127.0.0.1:0 --database-url "$db_url" 2>"$work/cp.log" &
pids+=($!)
cp_port=$(port_from_log "$work/cp.log" listening grpc_port)
cp_admin=$(port_from_log "$work/cp.log" listening admin_port)
wait_http_ok "http://127.0.0.1:$cp_admin/health/ready" 30 "$work/cp.log"
echo "== flexgate-cp on 127.0.0.1:$cp_port (admin 127.0.0.1:$cp_admin)"

# --- upstreams ----------------------------------------------------------------------------------
"$bin/flexgate-test-upstream" --listen 127.0.0.1:0 --name blue >"$work/blue.log" 2>&1 &
pids+=($!)
"$bin/flexgate-test-upstream" --listen 127.0.0.1:0 --name green >"$work/green.log" 2>&1 &
pids+=($!)
blue_port=$(upstream_port "$work/blue.log")
green_port=$(upstream_port "$work/green.log")
echo "== upstreams: blue on $blue_port, green on $green_port"

# --- flexgate-agent -----------------------------------------------------------------------------
"$bin/flexgate-agent" --control-plane "127.0.0.1:$cp_port" --token "$admin_key" \
  --cache-dir "$work/agent-cache" --label env=demo --label region=local \
  --listen 127.0.0.1:0 --admin 127.0.0.1:0 --workers 2 \
  2>"$work/agent.log" &
pids+=($!)
agent_port=$(port_from_log "$work/agent.log" listening port)
agent_admin=$(port_from_log "$work/agent.log" "admin listening" port)
echo "== flexgate-agent on 127.0.0.1:$agent_port (admin 127.0.0.1:$agent_admin)"

export FLEXGATE_SERVER="127.0.0.1:$cp_port" FLEXGATE_TOKEN="$admin_key"
render() { sed -e "s/@BLUE_PORT@/$blue_port/g" -e "s/@GREEN_PORT@/$green_port/g" "$1" > "$2"; }
render "$repo/docs/examples/demo-v1.yaml.in" "$work/v1.yaml"
render "$repo/docs/examples/demo-v2.yaml.in" "$work/v2.yaml"

echo
echo "== flexctl validate (dry-run on the control plane) and apply, version 1"
"$bin/flexctl" validate --server "$FLEXGATE_SERVER" "$work/v1.yaml"
"$bin/flexctl" apply --message "demo: everything to blue" "$work/v1.yaml"
wait_http_ok "http://127.0.0.1:$agent_admin/health/ready" 30 "$work/agent.log"

show() {
  local path=$1 out
  out=$(curl -s -w ' [HTTP %{http_code}]' "http://127.0.0.1:$agent_port$path")
  printf '   GET %-16s -> %s\n' "$path" "$(echo "$out" | tr -d '\n')"
}
# Fails the demo when a path is not answered by the expected upstream (the demo doubles as a test).
expect_from() {
  local path=$1 want=$2 body
  body=$(curl -s "http://127.0.0.1:$agent_port$path")
  [[ "$body" == "$want"* ]] || { echo "demo: GET $path answered '$body', expected '$want...'" >&2; exit 1; }
}

echo
echo "== requests through the agent (version 1)"
show /ping; show /; show /api/orders
expect_from / blue; expect_from /api/orders blue

echo
echo "== an invalid config is refused (exit status 1, nothing changes)"
if "$bin/flexctl" validate --server "$FLEXGATE_SERVER" "$repo/docs/examples/invalid-unknown-cluster.yaml"; then
  echo "demo: the invalid config was accepted" >&2; exit 1
fi

echo
echo "== apply version 2: /api/ moves to green"
"$bin/flexctl" apply --message "demo: /api/ to green" "$work/v2.yaml"
for _ in $(seq 1 100); do
  [[ "$(curl -s "http://127.0.0.1:$agent_port/api/orders")" == green* ]] && break
  sleep 0.1
done
echo
echo "== requests through the agent (version 2)"
show /ping; show /; show /api/orders
expect_from / blue; expect_from /api/orders green

echo
echo "== flexctl versions"
"$bin/flexctl" versions
echo
echo "== agent readiness: $(curl -s "http://127.0.0.1:$agent_admin/health/ready")"

if [[ $once -eq 1 ]]; then
  echo "== --once given: stopping"
  exit 0
fi
cat <<INFO

The stack is running. Try:
  curl http://127.0.0.1:$agent_port/api/hello
  curl http://127.0.0.1:$agent_admin/config_dump
  FLEXGATE_SERVER=$FLEXGATE_SERVER FLEXGATE_TOKEN=$admin_key $bin/flexctl get
Logs are in $work. Press Ctrl-C to stop and clean up.
INFO
while true; do sleep 3600 & wait $!; done
