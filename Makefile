# The README's two commands. Both install what is missing first (Debian packages only).
BUILD_DIR ?= build
JOBS ?= $(shell nproc)

.PHONY: all deps build demo test bench clean

all: build

deps:
	scripts/install-deps

build: deps
	@if [ ! -f $(BUILD_DIR)/build.ninja ]; then \
	  cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release; fi
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Quickstart on the real Fashion-MNIST: 20 non-IID clients, GroupNorm CNN, FedAvg.
demo: build
	$(BUILD_DIR)/bin/bulwark run experiments/quickstart.toml --out runs/quickstart

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

bench: build
	@for b in $(BUILD_DIR)/bench/*_bench; do echo "== $$b"; $$b || exit 1; done

clean:
	rm -rf $(BUILD_DIR)
