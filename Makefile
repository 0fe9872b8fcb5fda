# FlexGate: a thin wrapper over CMake + Ninja + CTest. Every target installs missing Debian
# packages first (deploy/install-deps.sh), then builds incrementally.
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=
CTEST_ARGS ?=
BENCH_ARGS ?=

export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1

.PHONY: all deps configure build test demo asan bench-proxy fuzz clean

all: build

deps:
	@./deploy/install-deps.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)

configure: deps $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

demo: build
	./deploy/demo.sh $(BUILD_DIR)

# The test suite under AddressSanitizer and UndefinedBehaviorSanitizer.
asan:
	@./deploy/install-deps.sh
	$(MAKE) test BUILD_DIR=build-asan BUILD_TYPE=Debug CMAKE_ARGS="-DFLEXGATE_SANITIZE=ON -DFLEXGATE_BENCHMARKS=OFF"

# Side-by-side CPU/latency/memory comparison of a release agent with nginx and haproxy
# (shared/bench/proxy-compare.sh); BENCH_ARGS are passed through, e.g. BENCH_ARGS="--rounds 5".
bench-proxy:
	@./deploy/install-deps.sh wrk nginx-light haproxy python3
	$(MAKE) build BUILD_DIR=build-release BUILD_TYPE=Release CMAKE_ARGS="-DFLEXGATE_TESTS=OFF -DFLEXGATE_BENCHMARKS=ON"
	./deploy/bench-proxy.sh build-release $(BENCH_ARGS)

clean:
	rm -rf $(BUILD_DIR)
