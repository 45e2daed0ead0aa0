# The README's two commands. Both install what is missing first (Debian packages only).
BUILD_DIR ?= build
JOBS ?= $(shell nproc)

.PHONY: all deps configure build demo test bench clean

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

clean:
	rm -rf $(BUILD_DIR)
