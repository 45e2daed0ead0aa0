#pragma once

// Helpers shared by the test suites: plugins loaded through the real loader from the build tree,
// scratch folders, and running the real host binary.
#include <filesystem>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "config.hpp"
#include "engine.hpp"
#include "loader.hpp"

namespace bulwark::test {

/// A registry over the build tree's plugin folder only (BULWARK_TEST_PLUGIN_DIR).
PluginRegistry& registry();

/// Loads plugin `name` of interface I with options given as TOML text ("f = 1\nmulti = 2"),
/// validated against its schema exactly as the host does.
template <typename I>
PluginHandle<I> load(const std::string& name, const std::string& options_toml = "") {
  auto library = registry().open(InterfaceKind<I>::value, name);
  auto options = options_from_string(options_toml, library->option_specs(),
                                     std::string(kind_name(InterfaceKind<I>::value)) + " '" + name + "'");
  return PluginHandle<I>(library, options);
}

/// Where the device-taking tests run: BULWARK_TEST_DEVICE ("cpu" when unset; "cuda" on a GPU
/// machine). They compare what runs there with the same computation on the CPU.
c10::Device test_device();

/// Runs the tiny experiment (tiny_experiment.hpp) with `extra` appended and `overrides` applied,
/// through the Engine, in the scratch folder `name`.
RunSummary run_tiny(const std::string& name, const std::string& extra,
                    const std::vector<std::string>& overrides, int threads = 2);

/// Whether two runs' metrics are bit-identical, not approximately equal, leaving out the wall-clock
/// time_* columns; NaN cells must match as NaN.
bool same_numbers(const RunSummary& x, const RunSummary& y);

/// The value of column `name` in one metrics row; a test failure when there is none.
double metric(const MetricsRow& row, const std::string& name);

/// A fresh empty folder under the build tree's test-tmp/, unique to `name`.
std::filesystem::path scratch_dir(const std::string& name);

/// Writes `text` to `path` (creating folders).
void write_file(const std::filesystem::path& path, const std::string& text);
std::string read_file(const std::filesystem::path& path);

/// Result of running the host binary.
struct RunResult {
  int exit_code = -1;
  std::string output;  ///< stdout and stderr together
};

/// Runs `bulwark <args...>` from the build tree and captures its output.
RunResult run_bulwark(const std::vector<std::string>& args);

}  // namespace bulwark::test

// LibTorch pulls in glog, which defines CHECK too; whichever header comes last wins. Tests mean
// doctest's, whatever the include order (and with or without precompiled headers).
#include <doctest/doctest.h>
#undef CHECK
#define CHECK DOCTEST_CHECK
