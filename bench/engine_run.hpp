#pragma once

// Experiments run through the real Engine from TOML text, for the benches that time rounds.
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "engine.hpp"
#include "loader.hpp"

namespace bulwark::bench {

inline bool have_fashion_mnist() {
  return std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
}

/// The [data] section of the small-batch workload: the real Fashion-MNIST when the Debian package
/// is installed, synthetic 1×28×28 data of the same size otherwise.
inline std::string fashion_mnist_data_section() {
  return have_fashion_mnist()
             ? "[data]\nplugin = \"idx\"\n"
             : "[data]\nplugin = \"synthetic\"\nshape = [1, 28, 28]\ntrain_size = 60000\ntest_size = 10000\n";
}

/// Runs `experiment` (TOML text) on `threads` workers in a scratch folder removed afterwards.
inline RunSummary run_experiment(PluginRegistry& registry, const std::string& experiment, int threads) {
  namespace fs = std::filesystem;
  const auto dir = fs::temp_directory_path() / ("bulwark_bench_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "experiment.toml") << experiment;
  RunSummary summary;
  {
    Engine engine(load_experiment((dir / "experiment.toml").string()), registry);
    RunOptions options;
    options.output_dir = dir / "out";
    options.threads = threads;
    summary = engine.run(options);
  }
  fs::remove_all(dir);
  return summary;
}

}  // namespace bulwark::bench
