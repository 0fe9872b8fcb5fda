#!/usr/bin/env bash
# Runs every FlexGate libFuzzer target (built with clang, ASan and UBSan into BUILD_DIR by
# `make fuzz`) for SECONDS each, starting from the committed corpora. New inputs go to a scratch
# corpus in the build tree; a crash, leak or sanitizer report fails the run and leaves the
# reproducer in BUILD_DIR/fuzz-artifacts/.
#
#   deploy/run-fuzzers.sh BUILD_DIR SECONDS
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:?usage: run-fuzzers.sh BUILD_DIR SECONDS}"
seconds="${2:-60}"
[[ "$build" = /* ]] || build="$repo/$build"
artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"

run() {
  local name=$1; shift
  local scratch="$build/fuzz-scratch/$name" exe="$build/tests/bin/$name"
  [[ -x "$exe" ]] || exe="$build/bin/$name"
  mkdir -p "$scratch"
  echo "== fuzzing $name for ${seconds}s"
  # -rss_limit_mb keeps a runaway input from taking the machine; ASan's leak check stays on.
  local log="$build/fuzz-$name.log" rc=0
  "$exe" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=25 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$name-" "$scratch" "$@" >"$log" 2>&1 || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "== $name FAILED (exit $rc); last lines of $log:"
    tail -n 60 "$log"
    return "$rc"
  fi
  grep -E '^(Done |stat::(number_of_executed_units|new_units_added|peak_rss_mb))' "$log"
}

# libFuzzer takes flags anywhere on its command line; the scratch dir stays the first corpus.
run http_fuzz "$repo/tests/fuzz/corpus/http" &&
  run response_head_fuzz -dict="$repo/tests/fuzz/response_head.dict" \
    "$repo/tests/fuzz/corpus/response_head" &&
  run config_fuzz -dict="$repo/tests/common/config_fuzz.dict" \
    "$repo/tests/configs/valid" "$repo/tests/configs/invalid"
