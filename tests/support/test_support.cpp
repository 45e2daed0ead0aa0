#include "test_support.hpp"

#include "tiny_experiment.hpp"

#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace bulwark::test {

PluginRegistry& registry() {
  static PluginRegistry instance({BULWARK_TEST_PLUGIN_DIR});
  return instance;
}

c10::Device test_device() {
  const char* name = std::getenv("BULWARK_TEST_DEVICE");
  c10::Device device(name && *name ? name : "cpu");
  // Tensors report an indexed device ("cuda:0"); compare like with like.
  return device.is_cpu() || device.has_index() ? device : c10::Device(device.type(), 0);
}

RunSummary run_tiny(const std::string& name, const std::string& extra,
                    const std::vector<std::string>& overrides, int threads) {
  auto dir = scratch_dir(name);
  write_file(dir / "experiment.toml", tiny_experiment(extra));
  Engine engine(load_experiment((dir / "experiment.toml").string(), overrides), registry());
  RunOptions options;
  options.output_dir = dir / "out";
  options.threads = threads;
  return engine.run(options);
}

bool same_numbers(const RunSummary& x, const RunSummary& y) {
  auto numbers = [](const MetricsRow& row) {
    MetricsRow kept;
    for (const auto& [name, value] : row) {
      if (name.rfind("time_", 0) != 0) kept.emplace_back(name, value);
    }
    return kept;
  };
  if (x.metrics.size() != y.metrics.size()) return false;
  for (std::size_t r = 0; r < x.metrics.size(); ++r) {
    const auto a = numbers(x.metrics[r]), b = numbers(y.metrics[r]);
    if (a.size() != b.size()) return false;
    for (std::size_t c = 0; c < a.size(); ++c) {
      const auto u = a[c].second, v = b[c].second;
      if (a[c].first != b[c].first || !(u == v || (std::isnan(u) && std::isnan(v)))) return false;
    }
  }
  return true;
}

double metric(const MetricsRow& row, const std::string& name) {
  for (const auto& [key, value] : row) {
    if (key == name) return value;
  }
  FAIL("no metric " << name);
  return 0;
}

std::filesystem::path scratch_dir(const std::string& name) {
  auto dir = std::filesystem::path(BULWARK_TEST_TMP_DIR) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

namespace {
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}
}  // namespace

RunResult run_bulwark(const std::vector<std::string>& args) {
  std::string command = shell_quote(BULWARK_BINARY);
  for (const auto& a : args) command += " " + shell_quote(a);
  command += " 2>&1";
  RunResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer{};
  std::size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace bulwark::test
