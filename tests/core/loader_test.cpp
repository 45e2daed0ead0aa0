// The loader's promises: find by name and by path, and refuse every broken library with the
// message STYLE.md §4 promises, before any C++ object crosses.
#include <doctest/doctest.h>

#include <cstdlib>

#include "test_support.hpp"

using namespace bulwark;

namespace {
std::string fixture(const std::string& name) { return std::string(BULWARK_FIXTURE_DIR) + "/" + name + ".so"; }

/// A registry with no search folders: only explicit paths resolve.
PluginRegistry paths_only() { return PluginRegistry(std::vector<std::filesystem::path>{}); }
}  // namespace

TEST_CASE("a plugin loads by name and by path and creates through its own factory") {
  auto by_name = test::load<Aggregator>("fedavg", "weighted = false");
  REQUIRE(by_name);
  CHECK(by_name.name() == "fedavg");
  CHECK(by_name.library().info().abi_version == BULWARK_PLUGIN_ABI_VERSION);

  auto registry = paths_only();
  auto library = registry.open(BULWARK_KIND_AGGREGATOR, std::string(BULWARK_TEST_PLUGIN_DIR) + "/aggregators/fedavg.so");
  CHECK(std::string(library->info().name) == "fedavg");
  auto options = options_from_string("", library->option_specs(), "aggregator 'fedavg'");
  PluginHandle<Aggregator> by_path(library, options);
  auto result = by_path->aggregate(torch::ones({2, 3}), torch::ones({2}), AggregationContext{});
  CHECK(result.aggregate.allclose(torch::ones({3})));
}

TEST_CASE("an unknown plugin name lists what is available and suggests the nearest") {
  CHECK_THROWS_WITH_AS(test::registry().open(BULWARK_KIND_AGGREGATOR, "fedavgg"),
                       doctest::Contains("unknown aggregator plugin 'fedavgg'; did you mean 'fedavg'?"), Error);
  CHECK_THROWS_WITH_AS(test::registry().open(BULWARK_KIND_AGGREGATOR, "nothing_like_it"),
                       doctest::Contains("available: "), Error);
}

TEST_CASE("a plugin built for another ABI is refused with the versions and what to do") {
  auto registry = paths_only();
  CHECK_THROWS_WITH_AS(registry.open(BULWARK_KIND_AGGREGATOR, fixture("bad_abi")),
                       doctest::Contains(("was built for plugin ABI 999; this bulwark needs ABI " +
                                          std::to_string(BULWARK_PLUGIN_ABI_VERSION) + ". Rebuild it").c_str()),
                       Error);
}

TEST_CASE("a shared library that is not a plugin is refused by name") {
  auto registry = paths_only();
  CHECK_THROWS_WITH_AS(registry.open(BULWARK_KIND_AGGREGATOR, fixture("no_entry")),
                       doctest::Contains("is not a Bulwark plugin: it does not export 'bulwark_plugin_info'"), Error);
}

TEST_CASE("a file that is not a shared library at all is refused with the loader's reason") {
  auto dir = test::scratch_dir("loader_garbage");
  test::write_file(dir / "garbage.so", "this is not an ELF file");
  auto registry = paths_only();
  CHECK_THROWS_WITH_AS(registry.open(BULWARK_KIND_AGGREGATOR, (dir / "garbage.so").string()),
                       doctest::Contains("cannot load"), Error);
  CHECK_THROWS_WITH_AS(registry.open(BULWARK_KIND_AGGREGATOR, (dir / "missing.so").string()),
                       doctest::Contains("does not exist"), Error);
}

TEST_CASE("a plugin built with another LibTorch is refused before creation") {
  auto registry = paths_only();
  CHECK_THROWS_WITH_AS(registry.open(BULWARK_KIND_AGGREGATOR, fixture("bad_torch")),
                       doctest::Contains("was built with LibTorch 2.1.0; this bulwark uses"), Error);
}

TEST_CASE("a plugin of the wrong kind is refused") {
  auto registry = paths_only();
  CHECK_THROWS_WITH_AS(registry.open(BULWARK_KIND_AGGREGATOR, fixture("good_dataset")),
                       doctest::Contains("is a dataset plugin, but a aggregator was requested"), Error);
  auto dataset = registry.open(BULWARK_KIND_DATASET, fixture("good_dataset"));
  CHECK(std::string(dataset->info().name) == "good_dataset");
}

TEST_CASE("an exception in a plugin's factory comes back as an error naming the plugin") {
  auto registry = paths_only();
  auto library = registry.open(BULWARK_KIND_AGGREGATOR, fixture("throws"));
  CHECK_THROWS_WITH_AS(PluginHandle<Aggregator>(library, Options{}),
                       doctest::Contains("aggregator 'throws' failed in create(): deliberate failure"), Error);
}

TEST_CASE("discovery lists compatible plugins and marks incompatible ones") {
  auto dir = test::scratch_dir("loader_discover");
  std::filesystem::create_directories(dir / "aggregators");
  std::filesystem::copy_file(fixture("bad_abi"), dir / "aggregators" / "bad_abi.so");
  std::filesystem::copy_file(std::string(BULWARK_TEST_PLUGIN_DIR) + "/aggregators/fedavg.so",
                             dir / "aggregators" / "fedavg.so");
  PluginRegistry registry({dir});
  auto listings = registry.discover();
  REQUIRE(listings.size() == 2);
  const auto& bad = listings[0].name == "bad_abi" ? listings[0] : listings[1];
  const auto& good = listings[0].name == "bad_abi" ? listings[1] : listings[0];
  CHECK(bad.problem == "incompatible: built for ABI 999, host is " + std::to_string(BULWARK_PLUGIN_ABI_VERSION));
  CHECK(good.problem.empty());
  CHECK(good.version == "1.0.0");
  CHECK(registry.available(BULWARK_KIND_AGGREGATOR) == std::vector<std::string>{"fedavg"});
}

TEST_CASE("BULWARK_PLUGIN_PATH adds search folders") {
  auto dir = test::scratch_dir("loader_env");
  ::setenv("BULWARK_PLUGIN_PATH", (dir.string() + ":/nonexistent").c_str(), 1);
  auto dirs = PluginRegistry::default_search_dirs();
  ::unsetenv("BULWARK_PLUGIN_PATH");
  CHECK(std::find(dirs.begin(), dirs.end(), dir) != dirs.end());
}
