#include "fuzz_support.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>

#include <c10/util/Exception.h>

#include "bulwark/error.hpp"

namespace bulwark::fuzz {

namespace {
std::map<std::string, Target>& registry() {
  static std::map<std::string, Target> targets;
  return targets;
}
}  // namespace

bool register_target(const char* name, Target target) { return registry().emplace(name, target).second; }

const std::map<std::string, Target>& targets() { return registry(); }

void expect_clean_error(const std::function<void()>& body) {
  try {
    body();
  } catch (const Error&) {
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "fuzz finding: a raw LibTorch error escaped: %s\n", e.what_without_backtrace());
    std::abort();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz finding: a non-Bulwark exception escaped: %s\n", e.what());
    std::abort();
  }
}

const std::filesystem::path& scratch() {
  static const auto folder = [] {
    auto path = std::filesystem::temp_directory_path() / ("bulwark-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
    return path;
  }();
  return folder;
}

void write_bytes(const std::filesystem::path& path, const std::uint8_t* data, std::size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::exit(2);
  }
}

void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  write_bytes(path, reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
}

std::shared_ptr<const PluginLibrary> dataset_plugin(const std::string& name) {
  static PluginRegistry plugins({BULWARK_TEST_PLUGIN_DIR});
  return plugins.open(BULWARK_KIND_DATASET, name);
}

double ByteReader::number() {
  std::uint8_t raw[sizeof(double)];
  for (auto& b : raw) b = byte();
  double value = 0.0;
  std::memcpy(&value, raw, sizeof value);
  return value;
}

const char* ByteReader::text_or_null() {
  const auto length = byte();
  if (length == 255) return nullptr;
  std::string text;
  for (int i = 0; i < length && at_ < size_; ++i) text += static_cast<char>(byte());
  texts_.push_back(std::move(text));
  return texts_.back().c_str();
}

std::string ByteReader::rest() {
  std::string out(reinterpret_cast<const char*>(data_) + at_, size_ - at_);
  at_ = size_;
  return out;
}

}  // namespace bulwark::fuzz
