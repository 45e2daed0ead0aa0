// Unit tests of the built phocas.so, opened the way the host opens it: dlopen, the C handshake
// (bulwark_plugin_info), then create/destroy through the plugin's own factory. The installed SDK
// has no loader (that is the host's), so these few lines stand in for it; what is tested is the
// very file that `bulwark run` loads. Options are passed complete: filling in schema defaults is
// the host's job.
#include <dlfcn.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "bulwark/aggregator.hpp"
#include "bulwark/error.hpp"
#include "bulwark/options.hpp"
#include "bulwark/plugin_abi.h"

// Keep this order: LibTorch's headers bring glog, which also defines CHECK; doctest's definition
// must come last to win.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

namespace {

// The library stays loaded until the process exits, as in the host: tensors made by plugin code
// must never outlive it.
const struct bulwark_plugin_info& plugin_info() {
  static const struct bulwark_plugin_info* info = [] {
    void* library = dlopen(PHOCAS_PLUGIN_PATH, RTLD_NOW | RTLD_LOCAL);
    if (!library) FAIL("cannot load " PHOCAS_PLUGIN_PATH ": " << dlerror());
    auto entry = reinterpret_cast<bulwark_plugin_entry_fn>(dlsym(library, BULWARK_PLUGIN_ENTRY));
    if (!entry) FAIL(PHOCAS_PLUGIN_PATH " does not export " BULWARK_PLUGIN_ENTRY);
    return entry();
  }();
  return *info;
}

// An instance created and destroyed by the plugin, as PluginHandle does in the host.
class Phocas {
 public:
  explicit Phocas(std::int64_t f) {
    bulwark::Options options;
    options.set("f", f);
    instance_ = static_cast<bulwark::Aggregator*>(plugin_info().create(&options));
  }
  ~Phocas() { plugin_info().destroy(instance_); }
  Phocas(const Phocas&) = delete;
  Phocas& operator=(const Phocas&) = delete;

  torch::Tensor operator()(const torch::Tensor& updates, std::int64_t byzantine_bound = 0) {
    bulwark::AggregationContext context;
    context.byzantine_bound = byzantine_bound;
    return instance_->aggregate(updates, torch::ones({updates.size(0)}), context).aggregate;
  }

 private:
  bulwark::Aggregator* instance_ = nullptr;
};

torch::Tensor matrix(std::initializer_list<std::initializer_list<double>> rows) {
  std::vector<torch::Tensor> stacked;
  for (auto row : rows) stacked.push_back(torch::tensor(std::vector<double>(row), torch::kFloat64));
  return torch::stack(stacked);
}

}  // namespace

TEST_CASE("the handshake says what the host checks") {
  const auto& info = plugin_info();
  CHECK(info.abi_version == BULWARK_PLUGIN_ABI_VERSION);
  CHECK(info.struct_size == sizeof(struct bulwark_plugin_info));
  CHECK(info.kind == BULWARK_KIND_AGGREGATOR);
  CHECK(std::string(info.name) == "phocas");
  REQUIRE(info.num_options == 1);
  CHECK(std::string(info.options[0].name) == "f");
  CHECK(std::string(info.options[0].default_value) == "-1");
}

TEST_CASE("known answer: per coordinate, the mean of the n - f values nearest the trimmed mean") {
  // f = 1, n = 5, trim one at each end, keep 4 per coordinate.
  //   column 0: 1 2 3 4 100,     trimmed mean (2+3+4)/3 = 3,      distances 2 1 0 1 97 -> drop 100: 2.5
  //   column 1: 10 10 13 11 -50, trimmed mean (10+10+11)/3 = 31/3, distances 1/3 1/3 8/3 2/3 181/3
  //             -> drop -50: (10+10+13+11)/4 = 11
  auto u = matrix({{1, 10}, {2, 10}, {3, 13}, {4, 11}, {100, -50}});
  CHECK(Phocas(1)(u).allclose(torch::tensor({2.5, 11.0}, torch::kFloat64)));
}

TEST_CASE("known answer: the centre is the trimmed mean, not the median") {
  // f = 1, n = 7: -4 0 0 0 5 5 5. Trimmed mean (0+0+0+5+5)/5 = 2; distances 6 2 2 2 3 3 3 -> drop -4:
  // (0+0+0+5+5+5)/6 = 2.5. Around the median 0 the farthest would be a 5 instead, giving 1.
  auto u = matrix({{-4}, {0}, {0}, {0}, {5}, {5}, {5}});
  CHECK(Phocas(1)(u).item<double>() == doctest::Approx(2.5));
}

TEST_CASE("f = 0 is the plain mean, and f = -1 takes the experiment's declared bound") {
  auto u = torch::randn({7, 5}, torch::kFloat64);
  CHECK(Phocas(0)(u).allclose(u.mean(0)));
  CHECK(Phocas(-1)(u, /*byzantine_bound=*/0).allclose(u.mean(0)));
  CHECK(Phocas(-1)(u, /*byzantine_bound=*/2).allclose(Phocas(2)(u)));
  CHECK_FALSE(Phocas(2)(u).allclose(u.mean(0)));
}

TEST_CASE("the result does not depend on the order of the rows") {
  auto u = torch::randn({9, 50}, torch::kFloat32);
  auto permuted = u.index_select(0, torch::randperm(9, torch::kLong));
  CHECK(Phocas(3)(u).allclose(Phocas(3)(permuted)));
}

TEST_CASE("up to f NaN or Inf entries per coordinate are left out") {
  // Per column: 1 2 3 and one non-finite value; f = 1 keeps 1 2 3 -> mean 2.
  const double inf = std::numeric_limits<double>::infinity();
  auto u = matrix({{1, 1, 1}, {2, 2, 2}, {std::nan(""), inf, -inf}, {3, 3, 3}});
  CHECK(Phocas(1)(u).allclose(torch::full({3}, 2.0, torch::kFloat64)));
}

TEST_CASE("too few updates for f is a config error that says what to do") {
  auto u = torch::zeros({4, 3});
  CHECK_THROWS_WITH_AS(Phocas(2)(u), doctest::Contains("phocas: needs n > 2f updates; found n = 4 with f = 2"),
                       bulwark::Error);
}
