# FlexGate: a thin wrapper over CMake + Ninja + CTest. Every target installs missing Debian
# packages first (deploy/install-deps.sh), then builds incrementally.
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=
CTEST_ARGS ?=
BENCH_ARGS ?=
FUZZ_SECONDS ?= 45

export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1

.PHONY: all deps configure build test demo asan bench-proxy bench-floor fuzz clean

all: build

deps:
	@./deploy/install-deps.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)

configure: deps $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Every fuzz target briefly (FUZZ_SECONDS each; 0 skips), then the whole suite through CTest,
# whose summary closes the output.
test: build
	@if [ "$(FUZZ_SECONDS)" != "0" ]; then $(MAKE) --no-print-directory fuzz; fi
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

demo: build
	./deploy/demo.sh $(BUILD_DIR)

# The test suite under AddressSanitizer and UndefinedBehaviorSanitizer.
asan:
	@./deploy/install-deps.sh
	$(MAKE) test BUILD_DIR=build-asan BUILD_TYPE=Debug FUZZ_SECONDS=0 CMAKE_ARGS="-DFLEXGATE_SANITIZE=ON -DFLEXGATE_BENCHMARKS=OFF"

# Side-by-side CPU/latency/memory comparison of a release agent with nginx and haproxy
# (shared/bench/proxy-compare.sh); BENCH_ARGS are passed through, e.g. BENCH_ARGS="--rounds 5".
bench-proxy:
	@./deploy/install-deps.sh wrk nginx-light haproxy python3
	$(MAKE) build BUILD_DIR=build-release BUILD_TYPE=Release CMAKE_ARGS="-DFLEXGATE_TESTS=OFF -DFLEXGATE_BENCHMARKS=ON"
	./deploy/bench-proxy.sh build-release $(BENCH_ARGS)

# The same comparison with a byte relay (tests/bench/relay_floor.c) as the candidate: the kernel's
# cost of a proxied request, which no user-space proxy goes below. Small profile only.
bench-floor:
	@./deploy/install-deps.sh wrk nginx-light haproxy python3
	@mkdir -p build-release/bin
	$(CC) -O2 -Wall -Wextra -o build-release/bin/flexgate-relay-floor tests/bench/relay_floor.c
	RELAY_BIN=$(CURDIR)/build-release/bin/flexgate-relay-floor ../shared/bench/proxy-compare.sh \
	  --proxy-name relay --proxy-cmd '"$$RELAY_BIN" $$PROXY_PORT $$UPSTREAM_PORT' \
	  --idle-conns 0 $(BENCH_ARGS)

# libFuzzer targets built with clang under ASan/UBSan in build-fuzz, each run FUZZ_SECONDS from
# the committed corpora (deploy/run-fuzzers.sh).
fuzz:
	@./deploy/install-deps.sh
	@[ -f build-fuzz/build.ninja ] || CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLEXGATE_FUZZ=ON -DFLEXGATE_BENCHMARKS=OFF
	cmake --build build-fuzz -j $(JOBS) --target http_fuzz response_head_fuzz config_fuzz
	./deploy/run-fuzzers.sh build-fuzz $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD_DIR)
