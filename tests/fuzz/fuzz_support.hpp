#pragma once

// Shared by the fuzz harnesses (tests/fuzz/*_fuzz.cpp, docs/reliability.md). Each harness is one
// BULWARK_FUZZ_TARGET. `make fuzz` builds each as its own libFuzzer binary (clang, ASan + UBSan,
// BULWARK_LIBFUZZER defined); the normal build compiles them into the fuzz_tests suite, whose
// replay test runs every committed corpus input and past finding on each `make test`.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "loader.hpp"

namespace bulwark::fuzz {

using Target = int (*)(const std::uint8_t* data, std::size_t size);

/// Replay builds: the harnesses by name ("csv", ...), filled in by BULWARK_FUZZ_TARGET.
bool register_target(const char* name, Target target);
const std::map<std::string, Target>& targets();

/// Runs `body`. bulwark::Error is the promised answer to bad input and returns normally; any
/// other exception (a raw LibTorch or standard-library error reaching the user) is a finding: it
/// is printed and the process aborts, which libFuzzer records as a crash and the replay fails on.
void expect_clean_error(const std::function<void()>& body);

/// This process's scratch folder; harnesses rewrite their files in it for every input.
const std::filesystem::path& scratch();

void write_bytes(const std::filesystem::path& path, const std::uint8_t* data, std::size_t size);
void write_bytes(const std::filesystem::path& path, const std::string& bytes);

/// A dataset plugin from the build tree, opened and checked once per process.
std::shared_ptr<const PluginLibrary> dataset_plugin(const std::string& name);

/// Takes the input apart front to back; reading past the end yields zeros and empty strings.
class ByteReader {
 public:
  ByteReader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }
  double number();
  /// A length byte, then that many bytes; length 255 gives a null pointer. The text lives as long
  /// as the reader.
  const char* text_or_null();
  /// Everything not yet read.
  std::string rest();

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t at_ = 0;
  std::deque<std::string> texts_;
};

}  // namespace bulwark::fuzz

#ifdef BULWARK_LIBFUZZER
#define BULWARK_FUZZ_TARGET(name) extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
#else
#define BULWARK_FUZZ_TARGET(name)                                                          \
  static int fuzz_##name(const std::uint8_t* data, std::size_t size);                     \
  [[maybe_unused]] static const bool fuzz_registered_##name =                              \
      bulwark::fuzz::register_target(#name, fuzz_##name);                                 \
  static int fuzz_##name(const std::uint8_t* data, std::size_t size)
#endif
