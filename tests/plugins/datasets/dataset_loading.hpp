#pragma once

// Shared by the dataset plugin tests: a plugin loaded on files the test wrote.
#include <cstdint>
#include <filesystem>
#include <string>

#include "bulwark/error.hpp"
#include "test_support.hpp"

namespace bulwark::test {

/// Dataset plugin `plugin` with the options `options_toml`, loaded with `seed`.
inline Dataset load_dataset(const std::string& plugin, const std::string& options_toml, std::uint64_t seed = 0) {
  return load<DatasetLoader>(plugin, options_toml)->load(DatasetContext{seed});
}

/// The option line `path = "<path>"`.
inline std::string path_option(const std::filesystem::path& path) { return "path = \"" + path.string() + "\"\n"; }

/// The message of the Data error that load_dataset throws; a load that succeeds fails the test.
inline std::string dataset_error(const std::string& plugin, const std::string& options_toml, std::uint64_t seed = 0) {
  try {
    load_dataset(plugin, options_toml, seed);
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Data);
    return e.what();
  }
  FAIL("expected a bulwark::Error");
  return "";
}

}  // namespace bulwark::test
