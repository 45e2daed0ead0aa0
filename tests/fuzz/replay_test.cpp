// Replays each fuzz harness over its committed corpus, tests/fuzz/corpus/<target>/: the seeds and
// every input a fuzzing run (`make fuzz`) found, kept after its fix. A crash, a sanitizer report
// or an exception other than bulwark::Error fails the test naming the input.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;

void replay(const std::string& target, std::vector<fs::path> folders) {
  const auto& targets = bulwark::fuzz::targets();
  const auto harness = targets.find(target);
  REQUIRE(harness != targets.end());
  folders.insert(folders.begin(), fs::path(BULWARK_SOURCE_DIR) / "tests/fuzz/corpus" / target);
  std::vector<fs::path> inputs;
  for (const auto& folder : folders) {
    for (const auto& entry : fs::directory_iterator(folder))
      if (entry.is_regular_file()) inputs.push_back(entry.path());
  }
  std::sort(inputs.begin(), inputs.end());
  REQUIRE(inputs.size() >= 3);  // a replay that tests nothing must not pass
  for (const auto& path : inputs) {
    INFO("input: " << path.string());
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(harness->second(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()) == 0);
  }
}

}  // namespace

TEST_CASE("fuzz replay: experiment files, the corpus plus every shipped experiment") {
  replay("experiment", {fs::path(BULWARK_SOURCE_DIR) / "experiments", fs::path(BULWARK_SOURCE_DIR) / "tests/mpi"});
}
TEST_CASE("fuzz replay: idx files") { replay("idx", {}); }
TEST_CASE("fuzz replay: cifar files") { replay("cifar", {}); }
TEST_CASE("fuzz replay: csv files") { replay("csv", {}); }
TEST_CASE("fuzz replay: lfw faces") { replay("lfw", {}); }
TEST_CASE("fuzz replay: npy files") { replay("npy", {}); }
TEST_CASE("fuzz replay: checkpoint files") { replay("checkpoint", {}); }
TEST_CASE("fuzz replay: plugin info structs") { replay("plugin_info", {}); }
