// `bulwark plugins` and plugin load failures through the real binary: a folder added with
// BULWARK_PLUGIN_PATH is listed with kind, name, version, ABI and path; an incompatible library is
// listed with the reason, not skipped and not fatal; and a run that names a broken plugin exits with
// code 2 and one clear line, never a crash.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <regex>

#include "test_support.hpp"
#include "tiny_experiment.hpp"

using namespace bulwark;

namespace {

std::string fixture(const std::string& name) { return std::string(BULWARK_FIXTURE_DIR) + "/" + name + ".so"; }

// BULWARK_PLUGIN_PATH for the child process; the binary inherits this process's environment.
class ScopedPluginPath {
 public:
  explicit ScopedPluginPath(const std::filesystem::path& dir) {
    ::setenv("BULWARK_PLUGIN_PATH", dir.c_str(), 1);
  }
  ~ScopedPluginPath() { ::unsetenv("BULWARK_PLUGIN_PATH"); }
};

}  // namespace

TEST_CASE("bulwark plugins lists a BULWARK_PLUGIN_PATH folder, incompatible libraries with the reason") {
  auto dir = test::scratch_dir("plugins_cli_listing");
  std::filesystem::create_directories(dir / "aggregators");
  std::filesystem::copy_file(fixture("bad_abi"), dir / "aggregators" / "bad_abi.so");
  const auto bad_path = std::filesystem::canonical(dir / "aggregators" / "bad_abi.so").string();

  test::RunResult list;
  {
    ScopedPluginPath path(dir);
    list = test::run_bulwark({"plugins"});
  }
  INFO(list.output);
  CHECK(list.exit_code == 0);
  CHECK(list.output.find("kind        name                 version  abi  path") != std::string::npos);
  // The bundled plugins are still there, compatible: ABI column = this host's.
  CHECK(std::regex_search(list.output, std::regex("\naggregator  fedavg +1\\.0\\.0 +" +
                                                  std::to_string(BULWARK_PLUGIN_ABI_VERSION) + " +/")));
  // The mismatched one: its row (no version: nothing but the ABI field is trusted), then the reason.
  CHECK(list.output.find("aggregator  bad_abi              -        999  " + bad_path + "\n") != std::string::npos);
  CHECK(list.output.find("incompatible: built for ABI 999, host is " + std::to_string(BULWARK_PLUGIN_ABI_VERSION)) !=
        std::string::npos);
}

TEST_CASE("a run naming an incompatible, a non-plugin or a throwing library exits 2 with one clear line") {
  auto dir = test::scratch_dir("plugins_cli_broken");
  test::write_file(dir / "tiny.toml", test::tiny_experiment());
  auto run_with = [&](const std::string& plugin) {
    return test::run_bulwark({"run", (dir / "tiny.toml").string(), "--out", (dir / "out").string(), "--quiet",
                              "--set", "aggregator.plugin=" + plugin});
  };

  auto bad_abi = run_with(fixture("bad_abi"));
  INFO(bad_abi.output);
  CHECK(bad_abi.exit_code == 2);
  CHECK(bad_abi.output.find("was built for plugin ABI 999; this bulwark needs ABI " +
                            std::to_string(BULWARK_PLUGIN_ABI_VERSION) + ". Rebuild it against this SDK.") !=
        std::string::npos);

  auto not_plugin = run_with(fixture("no_entry"));
  INFO(not_plugin.output);
  CHECK(not_plugin.exit_code == 2);
  CHECK(not_plugin.output.find("is not a Bulwark plugin: it does not export 'bulwark_plugin_info'") !=
        std::string::npos);

  auto throws = run_with(fixture("throws"));
  INFO(throws.output);
  CHECK(throws.exit_code == 2);
  CHECK(throws.output.find("aggregator 'throws' failed in create(): deliberate failure") != std::string::npos);
  // One line each: the message, no backtrace or exception dump.
  for (const auto* result : {&bad_abi, &not_plugin, &throws}) {
    CHECK(std::count(result->output.begin(), result->output.end(), '\n') == 1);
  }
}
