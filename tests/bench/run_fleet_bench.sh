#!/usr/bin/env bash
# Runs the fleet simulator (flexgate-fleet-sim) against a throwaway PostgreSQL and a fresh
# flexgate-cp per fleet size, and keeps the JSON lines next to the readable table.
#
#   tests/bench/run_fleet_bench.sh [BUILD_DIR] [-- extra flexgate-fleet-sim flags]
#
# Environment: AGENTS (default "100,1000,10000"), VERSIONS (default 10), OUT (default
# BUILD_DIR/fleet-bench.jsonl), NO_BUILD=1 to skip building the two programs first.
# Example: AGENTS=10000 VERSIONS=5 tests/bench/run_fleet_bench.sh build -- --cp-arg=--db-workers=4
set -euo pipefail

build_dir="build"
if [[ $# -gt 0 && "$1" != "--" ]]; then
  build_dir="$1"
  shift
fi
if [[ $# -gt 0 && "$1" == "--" ]]; then
  shift
fi

agents="${AGENTS:-100,1000,10000}"
versions="${VERSIONS:-10}"
out="${OUT:-${build_dir}/fleet-bench.jsonl}"

if [[ "${NO_BUILD:-0}" != "1" ]]; then
  cmake --build "${build_dir}" --target flexgate-fleet-sim flexgate-cp
fi

sim="${build_dir}/bin/flexgate-fleet-sim"
if [[ ! -x "${sim}" ]]; then
  echo "run_fleet_bench.sh: ${sim} not found (configure with -DFLEXGATE_BENCHMARKS=ON)" >&2
  exit 2
fi

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "# ${sim} --spawn --agents ${agents} --versions ${versions} --json $*" >&2

# Progress goes to stderr as it happens; the JSON lines are appended to OUT (so reruns
# accumulate) and the table is printed at the end.
result="$(mktemp)"
trap 'rm -f "${result}"' EXIT
status=0
"${sim}" --spawn --agents "${agents}" --versions "${versions}" --json "$@" > "${result}" \
  || status=$?
grep '^{' "${result}" >> "${out}" || true
grep -v '^{' "${result}" || true
echo "# JSON lines appended to ${out}" >&2
exit "${status}"
