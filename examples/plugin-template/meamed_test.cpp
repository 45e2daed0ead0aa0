// Unit tests of the built meamed.so, opened the way the host opens it: dlopen, the C handshake
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
    void* library = dlopen(MEAMED_PLUGIN_PATH, RTLD_NOW | RTLD_LOCAL);
    if (!library) FAIL("cannot load " MEAMED_PLUGIN_PATH ": " << dlerror());
    auto entry = reinterpret_cast<bulwark_plugin_entry_fn>(dlsym(library, BULWARK_PLUGIN_ENTRY));
    if (!entry) FAIL(MEAMED_PLUGIN_PATH " does not export " BULWARK_PLUGIN_ENTRY);
    return entry();
  }();
  return *info;
}

// An instance created and destroyed by the plugin, as PluginHandle does in the host.
class Meamed {
 public:
  explicit Meamed(std::int64_t f) {
    bulwark::Options options;
    options.set("f", f);
    instance_ = static_cast<bulwark::Aggregator*>(plugin_info().create(&options));
  }
  ~Meamed() { plugin_info().destroy(instance_); }
  Meamed(const Meamed&) = delete;
  Meamed& operator=(const Meamed&) = delete;

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
  CHECK(std::string(info.name) == "meamed");
  REQUIRE(info.num_options == 1);
  CHECK(std::string(info.options[0].name) == "f");
  CHECK(std::string(info.options[0].default_value) == "-1");
}

TEST_CASE("known answer, n odd: per coordinate, the mean of the n - f values nearest the median") {
  // f = 1, n = 5, keep 4 per coordinate.
  //   column 0: 1 2 3 4 100,    median 3,  distances 2 1 0 1 97 -> drop 100:    (1+2+3+4)/4     = 2.5
  //   column 1: 10 10 13 11 -50, median 10, distances 0 0 3 1 60 -> drop -50:   (10+10+13+11)/4 = 11
  auto u = matrix({{1, 10}, {2, 10}, {3, 13}, {4, 11}, {100, -50}});
  CHECK(Meamed(1)(u).allclose(torch::tensor({2.5, 11.0}, torch::kFloat64)));
}

TEST_CASE("known answer, n even: the median is the mean of the two middle values") {
  // f = 1, n = 4: 0 2 6 7, median (2+6)/2 = 4, distances 4 2 2 3 -> drop 0: (2+6+7)/3 = 5.
  // (With the lower middle value 2 as the median, the rule would keep 0 2 6 and give 8/3.)
  auto u = matrix({{0}, {2}, {6}, {7}});
  CHECK(Meamed(1)(u).item<double>() == doctest::Approx(5.0));
}

TEST_CASE("f = 0 is the plain mean, and f = -1 takes the experiment's declared bound") {
  auto u = torch::randn({7, 5}, torch::kFloat64);
  CHECK(Meamed(0)(u).allclose(u.mean(0)));
  CHECK(Meamed(-1)(u, /*byzantine_bound=*/0).allclose(u.mean(0)));
  CHECK(Meamed(-1)(u, /*byzantine_bound=*/2).allclose(Meamed(2)(u)));
  CHECK_FALSE(Meamed(2)(u).allclose(u.mean(0)));
}

TEST_CASE("the result does not depend on the order of the rows") {
  auto u = torch::randn({9, 50}, torch::kFloat32);
  auto permuted = u.index_select(0, torch::randperm(9, torch::kLong));
  CHECK(Meamed(3)(u).allclose(Meamed(3)(permuted)));
}

TEST_CASE("up to f NaN or Inf entries per coordinate are left out") {
  // Per column: 1 2 3 and one non-finite value; f = 1 keeps 1 2 3 -> mean 2.
  const double inf = std::numeric_limits<double>::infinity();
  auto u = matrix({{1, 1, 1}, {2, 2, 2}, {std::nan(""), inf, -inf}, {3, 3, 3}});
  CHECK(Meamed(1)(u).allclose(torch::full({3}, 2.0, torch::kFloat64)));
}

TEST_CASE("too few updates for f is a config error that says what to do") {
  auto u = torch::zeros({4, 3});
  CHECK_THROWS_WITH_AS(Meamed(2)(u), doctest::Contains("meamed: needs n > 2f updates; found n = 4 with f = 2"),
                       bulwark::Error);
}
