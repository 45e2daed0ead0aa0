// Inverting gradients: recovery up to the gradient's direction, boxed outputs, label handling.
#include <doctest/doctest.h>

#include <torch/torch.h>

#include "bulwark/attack.hpp"
#include "bulwark/error.hpp"
#include "leakage_helpers.hpp"
#include "test_support.hpp"

using namespace bulwark;

TEST_CASE("inverting_gradients recovers a single input from the gradient's direction alone") {
  auto model = test::tiny_sigmoid_model(3);
  auto theta = model->initial_parameters(31);
  auto x = torch::rand({1, 1, 4, 4}, make_generator(32));
  auto observed = test::victim_gradient(*model, theta, x, torch::tensor({0}, torch::kLong));
  auto attack = test::load<Attack>("inverting_gradients", "iterations = 1000\ntv = 0");
  // Scaling the observation (as clipping does) changes nothing for a cosine loss.
  auto result = attack->reconstruct(test::leakage_problem(*model, theta, 0.05 * observed, 1, 3, 33));
  INFO("mse = ", test::mse(result.inputs, x));
  CHECK(test::mse(result.inputs, x) < 1e-3);
  CHECK(result.labels.item<std::int64_t>() == 0);  // inferred by the iDLG rule
  CHECK(result.iterations == 1000);
}

TEST_CASE("inverting_gradients keeps reconstructions inside the data box") {
  auto model = test::tiny_sigmoid_model(3);
  auto theta = model->initial_parameters(34);
  auto x = torch::rand({2, 1, 4, 4}, make_generator(35));
  auto observed = test::victim_gradient(*model, theta, x, torch::tensor({0, 1}, torch::kLong));
  auto attack = test::load<Attack>("inverting_gradients",
                                   "iterations = 50\nrestarts = 2\ninput_min = 0.25\ninput_max = 0.75");
  // Batch of two without labels: label logits are optimised along with the inputs.
  auto result = attack->reconstruct(test::leakage_problem(*model, theta, observed, 2, 3, 36));
  REQUIRE(result.inputs.sizes() == x.sizes());
  CHECK(result.inputs.min().item<double>() >= 0.25);
  CHECK(result.inputs.max().item<double>() <= 0.75);
  CHECK(result.labels.sizes() == torch::IntArrayRef{2});
}

TEST_CASE("inverting_gradients rejects an empty data box") {
  CHECK_THROWS_WITH_AS(test::load<Attack>("inverting_gradients", "input_min = 1\ninput_max = 0"),
                       doctest::Contains("input_min must be below input_max"), Error);
}
