// DLG: exact recovery from a clean gradient, failure under Fed-CDP-sized noise.
#include <doctest/doctest.h>

#include <torch/torch.h>

#include "bulwark/attack.hpp"
#include "bulwark/error.hpp"
#include "bulwark/privacy.hpp"
#include "leakage_helpers.hpp"
#include "test_support.hpp"

using namespace bulwark;

namespace {

struct Victim {
  std::unique_ptr<Model> model = test::tiny_sigmoid_model();
  torch::Tensor theta = model->initial_parameters(11);
  torch::Tensor x = torch::rand({1, 1, 4, 4}, make_generator(12));
  torch::Tensor y = torch::tensor({2}, torch::kLong);
};

/// Fed-CDP's per-example hook (Wei et al. 2021, Algorithm 2) written out: each layer of the
/// example's gradient clipped to L2 norm C, then N(0, σ²C²) added to every coordinate.
torch::Tensor fed_cdp_noised(const Model& model, torch::Tensor gradient, double clip, double sigma,
                             std::uint64_t seed) {
  const auto& layout = model.layout();
  for (const auto& layer : layout.layers()) {
    auto first = layout.entries[layer.front()].offset;
    auto last = layout.entries[layer.back()].offset + layout.entries[layer.back()].numel;
    auto slice = gradient.narrow(0, first, last - first);
    slice.mul_(std::min(1.0, clip / slice.norm().item<double>()));
  }
  return gradient + sigma * clip * torch::randn(gradient.sizes(), make_generator(seed));
}

}  // namespace

TEST_CASE("dlg recovers a single input and its label from a clean gradient") {
  Victim v;
  auto observed = test::victim_gradient(*v.model, v.theta, v.x, v.y);
  auto dlg = test::load<Attack>("dlg", "iterations = 300");
  REQUIRE(dlg->reconstructs());
  auto result = dlg->reconstruct(test::leakage_problem(*v.model, v.theta, observed, 1, 3, 5));
  INFO("mse = ", test::mse(result.inputs, v.x), " after ", result.iterations, " iterations");
  CHECK(test::mse(result.inputs, v.x) < 1e-3);
  CHECK(result.labels.item<std::int64_t>() == 2);
  CHECK(result.iterations < 300);  // converged (tolerance reached) within the budget
  CHECK(result.distance_trace.size(0) >= 1);
}

TEST_CASE("dlg recovers the input from the patterned and the normal seeds too") {
  Victim v;
  auto observed = test::victim_gradient(*v.model, v.theta, v.x, v.y);
  for (const char* init : {"patterned", "normal"}) {
    auto dlg = test::load<Attack>("dlg", std::string("init = \"") + init + "\"\npatch = 2");
    auto result = dlg->reconstruct(test::leakage_problem(*v.model, v.theta, observed, 1, 3, 6));
    INFO(init, ": mse = ", test::mse(result.inputs, v.x));
    CHECK(test::mse(result.inputs, v.x) < 1e-3);
  }
}

TEST_CASE("dlg fails under Fed-CDP noise (C = 4, sigma = 6)") {
  Victim v;
  auto clean = test::victim_gradient(*v.model, v.theta, v.x, v.y);
  auto noised = fed_cdp_noised(*v.model, clean.clone(), 4.0, 6.0, 99);
  auto dlg = test::load<Attack>("dlg", "iterations = 100");
  auto result = dlg->reconstruct(test::leakage_problem(*v.model, v.theta, noised, 1, 3, 5));
  // The default success threshold of [leakage] is an MSE of 0.01 per feature.
  CHECK(test::mse(result.inputs, v.x) > 0.01);
}

TEST_CASE("dlg fails on what the fed_cdp plugin leaves, and recovers when its noise is off") {
  Victim v;
  auto observe = [&](const std::string& options) {
    auto fed_cdp = test::load<PrivacyMechanism>("fed_cdp", options);
    auto rows = v.model->per_example_gradients(v.theta, v.x, v.y).clone();
    PrivacyStepContext context{/*round=*/1, /*total_rounds=*/1, /*client=*/0, /*step=*/0, /*steps=*/1,
                               /*batch_size=*/1, &v.model->layout(), make_generator(98)};
    auto applied = fed_cdp->privatize_gradients(rows, context);
    return std::make_pair(rows[0].clone(), applied.clone());  // type 2 row, type 1 gradient
  };
  auto dlg = test::load<Attack>("dlg", "iterations = 100");
  auto [row, applied] = observe("clip = 4.0\nnoise_multiplier = 6.0");
  for (const auto& observed : {row, applied}) {
    auto result = dlg->reconstruct(test::leakage_problem(*v.model, v.theta, observed, 1, 3, 5));
    CHECK(test::mse(result.inputs, v.x) > 0.01);
  }
  // Control: σ = 0 and a bound the gradient never reaches leave the gradient as it was.
  auto [clean_row, clean_applied] = observe("clip = 1e6\nnoise_multiplier = 0.0");
  auto result = dlg->reconstruct(test::leakage_problem(*v.model, v.theta, clean_row, 1, 3, 5));
  CHECK(test::mse(result.inputs, v.x) < 1e-3);
}

TEST_CASE("dlg with granted labels optimises the input only and returns those labels") {
  Victim v;
  auto observed = test::victim_gradient(*v.model, v.theta, v.x, v.y);
  auto problem = test::leakage_problem(*v.model, v.theta, observed, 1, 3, 5);
  problem.known_labels = v.y;
  auto result = test::load<Attack>("dlg")->reconstruct(problem);
  CHECK(result.labels.item<std::int64_t>() == 2);
  CHECK(test::mse(result.inputs, v.x) < 1e-3);
}

TEST_CASE("dlg options are validated against its schema") {
  CHECK_THROWS_WITH_AS(test::load<Attack>("dlg", "init = \"zeros\""), doctest::Contains("uniform, normal, patterned"),
                       Error);
  CHECK_THROWS_WITH_AS(test::load<Attack>("dlg", "iterations = 0"), doctest::Contains("iterations"), Error);
}
