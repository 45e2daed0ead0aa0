# The README's two commands. Both install what is missing first (Debian packages only).
BUILD_DIR ?= build
JOBS ?= $(shell nproc)

.PHONY: all deps configure build demo test bench test-asan fuzz clean

all: build

deps:
	scripts/install-deps

configure: deps
	@if [ ! -f $(BUILD_DIR)/build.ninja ]; then \
	  cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release; fi

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Quickstart on the real Fashion-MNIST: 20 non-IID clients, GroupNorm CNN, FedAvg. Builds only the
# host and the plugins (the tests and benches come with `make test` / `make build`).
# A run never overwrites a finished run's folder, so the demo clears its own first.
demo: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target bulwark_runtime
	rm -rf runs/quickstart
	$(BUILD_DIR)/bin/bulwark run experiments/quickstart.toml --out runs/quickstart

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# Open MPI builds also run the communication bench and the 1-process / 2-rank scaling script.
MPIRUN = mpirun --oversubscribe $(if $(filter 0,$(shell id -u)),--allow-run-as-root)
bench: build
	@for b in $(BUILD_DIR)/bench/*_bench; do \
	  case $$b in *mpi_comm_bench) continue;; esac; echo "== $$b"; $$b || exit 1; done
	@if [ -x $(BUILD_DIR)/bench/mpi_comm_bench ]; then \
	  echo "== mpi_comm_bench"; $(MPIRUN) -np 2 $(BUILD_DIR)/bench/mpi_comm_bench || exit 1; \
	  echo "== mpi_scaling.sh"; BULWARK=$(BUILD_DIR)/bin/bulwark bench/mpi_scaling.sh || exit 1; fi

# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer (docs/reliability.md):
# a separate build folder, any report fails the test that triggered it (LibTorch and Open MPI are
# not instrumented). The mpirun tests run without the leak check: Open MPI leaks at exit from
# components it has unloaded by then, so those reports cannot even be told apart by library.
ASAN_DIR ?= build-asan
SANITIZE = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g1
ASAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:detect_odr_violation=0:verify_asan_link_order=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
test-asan: deps
	@if [ ! -f $(ASAN_DIR)/build.ninja ]; then \
	  cmake -S . -B $(ASAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DBULWARK_BUILD_BENCH=OFF \
	    -DCMAKE_CXX_FLAGS="$(SANITIZE)"; fi
	cmake --build $(ASAN_DIR) -j $(JOBS)
	cd $(ASAN_DIR) && $(ASAN_ENV) ctest --output-on-failure -j $(JOBS) -LE mpi
	cd $(ASAN_DIR) && $(subst detect_leaks=1,detect_leaks=0,$(ASAN_ENV)) ctest --output-on-failure -j $(JOBS) -L mpi

# libFuzzer on every reader (tests/fuzz): FUZZ_SECONDS per harness, clang with ASan + UBSan, in
# its own build folder. Findings land in $(FUZZ_DIR)/findings; fixed ones go to tests/fuzz/corpus.
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = experiment idx cifar csv npy checkpoint plugin_info
fuzz:
	scripts/install-deps fuzz
	@if [ ! -f $(FUZZ_DIR)/build.ninja ]; then \
	  CXX=clang++ cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DBULWARK_FUZZ=ON \
	    -DBULWARK_BUILD_BENCH=OFF -DBULWARK_WITH_MPI=OFF \
	    -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -g1"; fi
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target $(addsuffix _fuzz,$(FUZZ_TARGETS)) idx cifar csv
	scripts/fuzz $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

clean:
	rm -rf $(BUILD_DIR)
