// Device-taking tests: every plugin that touches update or data tensors, and whole runs of the
// engine, on BULWARK_TEST_DEVICE (the CPU unless set), each checked against the same computation
// on the CPU and against itself run twice. `BULWARK_TEST_DEVICE=cuda ctest -R device` runs them on
// a GPU (docs/performance.md, "On a GPU"); on the CPU they still check run-to-run determinism.
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bulwark/aggregator.hpp"
#include "bulwark/attack.hpp"
#include "bulwark/privacy.hpp"
#include "bulwark/rng.hpp"
#include "config.hpp"
#include "engine.hpp"
#include "test_support.hpp"

using namespace bulwark;
using torch::Tensor;

namespace {

constexpr std::int64_t kRows = 12, kDim = 40;

Tensor random_rows(std::int64_t n, std::int64_t d, std::uint64_t seed) {
  return torch::randn({n, d}, make_generator(seed), torch::kFloat);
}

/// Bit for bit, NaN equal to NaN.
bool same(const Tensor& a, const Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  const auto x = a.cpu(), y = b.cpu();
  return (x.eq(y) | (x.isnan() & y.isnan())).all().item<bool>();
}

/// A copy on `device` (Tensor::to() hands back the tensor itself when it is already there).
Tensor copy_to(const Tensor& t, const c10::Device& device) { return t.to(device).clone(); }

bool close(const Tensor& a, const Tensor& b, double tolerance = 1e-5) {
  return a.sizes() == b.sizes() && torch::allclose(a.cpu().to(torch::kDouble), b.cpu().to(torch::kDouble),
                                                   tolerance, tolerance, /*equal_nan=*/true);
}

/// A round's aggregation context on `device`: f = 2 declared, rows 0 and 1 truly malicious,
/// DiverseFL's guiding updates from a fixed matrix and FLTrust's root update its last row.
AggregationContext aggregation_context(const c10::Device& device, const Tensor& guiding) {
  AggregationContext context;
  context.round = 1;
  context.byzantine_bound = 2;
  context.generator = make_generator(99, device);
  context.true_malicious_rows = {0, 1};
  context.guiding_update = [guiding, device](std::int64_t row) { return guiding[row].to(device); };
  context.root_update = [guiding, device] { return guiding[guiding.size(0) - 1].to(device); };
  return context;
}

/// Rules whose answer uses the context's generator: on another device it draws other numbers.
const std::set<std::string> kRandomised = {"bucketing", "flame"};

}  // namespace

TEST_CASE("every aggregator on the test device agrees with the CPU, keeps its result there, and repeats exactly") {
  const auto device = test::test_device();
  auto updates = random_rows(kRows, kDim, 1);
  updates[2] = updates[2] * 50;                            // an outlier for the robust rules
  auto with_nan = updates.clone();
  with_nan[3][5] = std::nan("");                             // a non-finite row, handled as data
  const auto weights = torch::arange(1, kRows + 1, torch::kDouble);
  const auto guiding = random_rows(kRows, kDim, 2);
  for (const auto& [name, options] : std::vector<std::pair<std::string, std::string>>{
           {"bucketing", ""}, {"bulyan", ""}, {"centered_clipping", ""}, {"clip", "threshold = 1.0"},
           {"diversefl", ""}, {"fedavg", ""}, {"flame", "noise = 0.01"}, {"fltrust", ""}, {"geometric_median", ""},
           {"krum", ""}, {"median", ""}, {"multi_krum", ""}, {"nnm", ""}, {"oracle", ""}, {"rsa", ""},
           {"trimmed_mean", ""}}) {
    for (const auto& matrix : {updates, with_nan}) {
      CAPTURE(name);
      // A fresh rule each time: stateful rules (centered clipping) remember the last round.
      auto aggregate = [&, name = name, options = options](const c10::Device& where) {
        auto context = aggregation_context(where, guiding);
        return test::load<Aggregator>(name, options)->aggregate(copy_to(matrix, where), copy_to(weights, where), context);
      };
      const auto on_cpu = aggregate(torch::kCPU);
      const auto there = aggregate(device);
      const auto again = aggregate(device);
      CHECK(there.aggregate.device() == device);
      CHECK(same(there.aggregate, again.aggregate));
      CHECK(there.flagged_rows == again.flagged_rows);
      if (!kRandomised.count(name)) {
        CHECK(close(there.aggregate, on_cpu.aggregate));
        CHECK(there.flagged_rows == on_cpu.flagged_rows);
      }
    }
  }
}

TEST_CASE("every update attack runs on the test device, agrees with the CPU where it draws nothing, and repeats exactly") {
  const auto device = test::test_device();
  const auto updates = random_rows(10, kDim, 3);
  const std::vector<std::int64_t> malicious = {0, 1, 2}, honest = {3, 4, 5, 6, 7, 8, 9};
  // Mirrors the engine: omniscient attacks see all rows, the others only their own.
  auto poison = [&](const std::string& name, const std::string& options, const c10::Device& where) {
    auto attack = test::load<Attack>(name, options);
    UpdateAttackContext context;
    context.round = 1;
    context.num_clients = 10;
    context.num_malicious = 3;
    context.generator = make_generator(5, where);
    auto all = copy_to(updates, where);
    if (attack->omniscient()) {
      context.malicious_rows = malicious;
      context.honest_rows = honest;
      context.aggregate_probe = [](const Tensor& candidate) { return candidate.mean(0); };
      attack->poison_updates(all, context);
      return all;
    }
    auto own = all.narrow(0, 0, 3).clone();
    context.malicious_rows = {0, 1, 2};
    attack->poison_updates(own, context);
    all.narrow(0, 0, 3).copy_(own);
    return all;
  };
  struct Case {
    std::string name, options;
    bool draws;  // uses the generator: other numbers on another device
  };
  for (const auto& c : std::vector<Case>{{"alie", "", false}, {"fang", "", true}, {"gaussian", "", true},
                                         {"inf", "sign = \"random\"", true}, {"inf", "", false}, {"ipm", "", false},
                                         {"minmax", "", false}, {"minsum", "", false}, {"nan", "", false},
                                         {"scaling", "", false}, {"sign_flip", "", false},
                                         {"backdoor", "boost = 10.0", false}}) {
    CAPTURE(c.name);
    CAPTURE(c.options);
    const auto there = poison(c.name, c.options, device);
    CHECK(there.device() == device);
    CHECK(same(there, poison(c.name, c.options, device)));
    CHECK(same(there.narrow(0, 3, 7), updates.narrow(0, 3, 7)));  // honest rows untouched
    if (!c.draws) CHECK(close(there, poison(c.name, c.options, torch::kCPU)));
  }
}

TEST_CASE("data attacks rewrite a batch on the test device exactly as on the CPU") {
  const auto device = test::test_device();
  const auto inputs = torch::rand({8, 1, 6, 6}, make_generator(4));
  const auto labels = torch::tensor(std::vector<std::int64_t>{0, 1, 7, 3, 1, 9, 7, 2});
  for (const auto& [name, options] : std::vector<std::pair<std::string, std::string>>{
           {"label_flip", ""}, {"label_flip", "source = [1, 7]\ntarget = [7, 1]"}, {"backdoor", ""},
           {"backdoor", "mode = \"trigger\"\ntarget_label = 2"}, {"dba", "bar_length = 2\ngap = 1"}}) {
    CAPTURE(name);
    CAPTURE(options);
    auto attack = test::load<Attack>(name, options);
    auto run = [&](const c10::Device& where) {
      DataAttackContext context{1, 0, 10, make_generator(6, where)};
      auto x = copy_to(inputs, where), y = copy_to(labels, where);
      attack->poison_batch(x, y, context);
      CHECK(x.device() == where);
      CHECK(y.device() == where);
      return std::make_pair(x, y);
    };
    const auto [x, y] = run(device);
    const auto [cpu_x, cpu_y] = run(torch::kCPU);
    CHECK(same(x, cpu_x));
    CHECK(same(y, cpu_y));
  }
}

TEST_CASE("privacy mechanisms clip like the CPU on the test device and draw their noise there") {
  const auto device = test::test_device();
  ParamLayout layout;
  layout.add("fc1.weight", {8, 4});
  layout.add("fc1.bias", {8});
  const auto d = layout.total;
  const auto per_example = random_rows(6, d, 7) * 3;
  auto hooks = [&](const std::string& name, const std::string& options, const c10::Device& where) {
    auto mechanism = test::load<PrivacyMechanism>(name, options);
    std::vector<Tensor> out;
    if (mechanism->per_example()) {
      PrivacyStepContext context;
      context.round = 1;
      context.total_rounds = 5;
      context.steps = 1;
      context.batch_size = 6;
      context.layout = &layout;
      context.generator = make_generator(8, where);
      auto rows = copy_to(per_example, where);
      out.push_back(mechanism->privatize_gradients(rows, context));
    }
    if (mechanism->on_client_update()) {
      ClientUpdateContext context{1, 5, 0, 100, &layout, make_generator(9, where)};
      auto update = copy_to(per_example[0], where);
      mechanism->privatize_update(update, context);
      out.push_back(update);
    }
    if (mechanism->on_server()) {
      ServerPrivacyContext context{1, 5, 10, &layout, make_generator(10, where)};
      auto aggregate = copy_to(per_example[1], where);
      mechanism->privatize_aggregate(aggregate, context);
      out.push_back(aggregate);
    }
    return out;
  };
  struct Case {
    std::string name, options, noise_key;
  };
  for (const auto& c : std::vector<Case>{{"dp_sgd", "clip = 1.0", "noise_multiplier"},
                                         {"dp_sgd", "clip = 1.0\nclipping = \"per_layer_uniform\"", "noise_multiplier"},
                                         {"fed_cdp", "clip = 1.0", "noise_multiplier"},
                                         {"fed_sdp", "clip = 1.0", "noise_multiplier"},
                                         {"ldp_gaussian", "clip = 1.0", "std"},
                                         {"dp_fedavg_adaptive", "count_noise = 5.0", "noise_multiplier"}}) {
    CAPTURE(c.name);
    CAPTURE(c.options);
    const auto noisy = hooks(c.name, c.options + "\n" + c.noise_key + " = 1.0", device);
    const auto repeat = hooks(c.name, c.options + "\n" + c.noise_key + " = 1.0", device);
    const auto exact = hooks(c.name, c.options + "\n" + c.noise_key + " = 0.0", device);
    const auto exact_cpu = hooks(c.name, c.options + "\n" + c.noise_key + " = 0.0", torch::kCPU);
    REQUIRE(noisy.size() == exact_cpu.size());
    bool noise_drawn = false;  // by some hook: dp_fedavg_adaptive's clients only clip
    for (std::size_t i = 0; i < noisy.size(); ++i) {
      CHECK(noisy[i].device() == device);
      CHECK(same(noisy[i], repeat[i]));
      CHECK(close(exact[i], exact_cpu[i]));
      noise_drawn = noise_drawn || !same(noisy[i], exact[i]);
    }
    CHECK(noise_drawn);
  }
}

TEST_CASE("Gaussian noise drawn on the test device has the mechanism's standard deviation") {
  const auto device = test::test_device();
  ParamLayout layout;
  layout.add("w.weight", {200000});
  auto mechanism = test::load<PrivacyMechanism>("ldp_gaussian", "std = 0.5");
  auto update = torch::zeros({200000}, torch::TensorOptions().device(device));
  ClientUpdateContext context{1, 5, 0, 100, &layout, make_generator(11, device)};
  mechanism->privatize_update(update, context);
  CHECK(update.device() == device);
  // The sample standard deviation of 200,000 draws is within 1 % of σ with overwhelming probability.
  CHECK(std::abs(update.std().item<double>() - 0.5) < 0.005);
  CHECK(std::abs(update.mean().item<double>()) < 0.005);
}

namespace {

RunSummary run_on(const c10::Device& device, const std::string& name, const std::string& extra, int threads = 2) {
  return test::run_tiny("device_" + name, extra,
                        {std::string("experiment.device=\"") + (device.is_cpu() ? "cpu" : "cuda") + "\""}, threads);
}

bool is_time(const std::string& name) { return name.rfind("time_", 0) == 0; }

/// Every metric but the times, bit for bit.
void check_identical(const RunSummary& a, const RunSummary& b) {
  REQUIRE(a.metrics.size() == b.metrics.size());
  for (std::size_t r = 0; r < a.metrics.size(); ++r) {
    for (const auto& [name, value] : a.metrics[r]) {
      if (is_time(name)) continue;
      CAPTURE(r);
      CAPTURE(name);
      const auto other = test::metric(b.metrics[r], name);
      CHECK(((std::isnan(value) && std::isnan(other)) || value == other));
    }
  }
}

}  // namespace

TEST_CASE("a run on the test device repeats bit for bit, whatever the thread count, and follows the CPU run") {
  const auto device = test::test_device();
  const std::string robust = R"(
[aggregator]
plugin = "trimmed_mean"
[[attack]]
plugin = "gaussian"
byzantine = 1
)";
  const auto there = run_on(device, "robust", robust);
  check_identical(there, run_on(device, "robust_again", robust, /*threads=*/1));
  const auto cpu = run_on(torch::kCPU, "robust_cpu", robust);
  REQUIRE(there.metrics.size() == cpu.metrics.size());
  // The attack draws other numbers on another device, so compare a clean run with the CPU.
  const auto clean = run_on(device, "clean", "");
  const auto clean_cpu = run_on(torch::kCPU, "clean_cpu", "");
  for (std::size_t r = 0; r < clean.metrics.size(); ++r) {
    CAPTURE(r);
    for (const std::string name : {"train_loss", "test_loss"}) {
      const auto a = test::metric(clean.metrics[r], name), b = test::metric(clean_cpu.metrics[r], name);
      CHECK(std::abs(a - b) <= 1e-3 * std::abs(b));
    }
  }
}

TEST_CASE("client-batched, private runs on the test device repeat bit for bit") {
  const auto device = test::test_device();
  const std::string extra = R"(
[privacy]
plugin = "fed_cdp"
clip = 1.0
noise_multiplier = 1.0
)";
  const std::vector<std::string> modes = {"on", "off"};
  for (const auto& mode : modes) {
    CAPTURE(mode);
    // The tiny experiment ends with its [clients] table, so the key lands there.
    const auto text = "batching = \"" + mode + "\"\n" + extra;
    const auto a = run_on(device, "cdp_a_" + mode, text);
    const auto b = run_on(device, "cdp_b_" + mode, text, 1);
    check_identical(a, b);
    CHECK(std::isfinite(a.final_loss));
  }
}
