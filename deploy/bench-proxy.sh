#!/usr/bin/env bash
# Runs the side-by-side proxy benchmark (shared/bench/proxy-compare.sh) with flexgate-agent as the
# candidate: one worker, a static config that sends every path to the bench's upstream.
#
#   deploy/bench-proxy.sh BUILD_DIR [proxy-compare options...]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:?usage: bench-proxy.sh BUILD_DIR [options]}"; shift
[[ "$build" = /* ]] || build="$repo/$build"
compare="${PROXY_COMPARE:-$repo/../shared/bench/proxy-compare.sh}"
[[ -x "$compare" ]] || { echo "bench-proxy: $compare not found (set PROXY_COMPARE)" >&2; exit 2; }
agent="$build/bin/flexgate-agent"
[[ -x "$agent" ]] || { echo "bench-proxy: $agent is missing" >&2; exit 2; }

# The candidate's config is rendered into the bench's work dir once its upstream port is known.
export FLEXGATE_AGENT_BIN="$agent"
setup='cat > "$BENCH_WORKDIR/flexgate.yaml" <<CFG
clusters:
  - name: upstream
    endpoints: [ { address: "$UPSTREAM_HOST", port: $UPSTREAM_PORT } ]
    pool: { max_idle_per_endpoint: 1024 }
routes:
  - name: all
    match: { path: { prefix: "/" } }
    cluster: upstream
CFG'
cmd='"$FLEXGATE_AGENT_BIN" --config "$BENCH_WORKDIR/flexgate.yaml" --listen 127.0.0.1:$PROXY_PORT --admin 127.0.0.1:0 --workers 1 --log-level warn'

exec "$compare" --proxy-name flexgate --proxy-setup "$setup" --proxy-cmd "$cmd" "$@"
