// Output files: written whole or not at all, and a failed write leaves nothing behind.
#include <doctest/doctest.h>

#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <string>

#include "bulwark/error.hpp"
#include "outputs.hpp"
#include "test_support.hpp"

using namespace bulwark;
namespace fs = std::filesystem;

namespace {

/// Files may grow to `bytes` at most while alive (RLIMIT_FSIZE): a disk that fills up, for this
/// process only. Writes past the limit fail with EFBIG instead of raising SIGXFSZ.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    previous_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = saved_;
    limit.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, previous_handler_);
  }

 private:
  rlimit saved_{};
  void (*previous_handler_)(int) = nullptr;
};

}  // namespace

TEST_CASE("write_file_atomic: a write that fails (a full disk) keeps the old file and leaves no temporary") {
  const auto dir = test::scratch_dir("outputs_full_disk");
  const auto file = dir / "metrics.csv";
  write_file_atomic(file, "round\n1\n");
  {
    FileSizeLimit full(4096);
    const auto expected = "cannot write " + file.string() + " (disk full or no permission?)";
    CHECK_THROWS_WITH_AS(write_file_atomic(file, std::string(100000, 'x')), doctest::Contains(expected.c_str()), Error);
  }
  CHECK(test::read_file(file) == "round\n1\n");
  std::size_t entries = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    ++entries;
    CHECK_MESSAGE(entry.path().filename() == "metrics.csv", entry.path().string());
  }
  CHECK(entries == 1);
}
