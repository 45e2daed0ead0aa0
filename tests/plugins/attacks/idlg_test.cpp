// iDLG: the label rule for every class, then the input.
#include <doctest/doctest.h>

#include <torch/torch.h>

#include "bulwark/attack.hpp"
#include "bulwark/error.hpp"
#include "leakage_helpers.hpp"
#include "test_support.hpp"

using namespace bulwark;

TEST_CASE("idlg infers the true label of a single example for every class") {
  const std::int64_t classes = 6;
  auto model = test::tiny_sigmoid_model(classes);
  auto theta = model->initial_parameters(21);
  // One L-BFGS step: the label is read off the gradient before any optimisation.
  auto idlg = test::load<Attack>("idlg", "iterations = 1");
  for (std::int64_t c = 0; c < classes; ++c) {
    auto x = torch::rand({1, 1, 4, 4}, make_generator(100 + c));
    auto y = torch::tensor({c}, torch::kLong);
    auto observed = test::victim_gradient(*model, theta, x, y);
    auto result = idlg->reconstruct(test::leakage_problem(*model, theta, observed, 1, classes, 7));
    CHECK_MESSAGE(result.labels.item<std::int64_t>() == c, "class ", c);
  }
}

TEST_CASE("idlg reconstructs the input once the label is known") {
  auto model = test::tiny_sigmoid_model(3);
  auto theta = model->initial_parameters(22);
  auto x = torch::rand({1, 1, 4, 4}, make_generator(23));
  auto observed = test::victim_gradient(*model, theta, x, torch::tensor({1}, torch::kLong));
  auto result = test::load<Attack>("idlg")->reconstruct(test::leakage_problem(*model, theta, observed, 1, 3, 8));
  INFO("mse = ", test::mse(result.inputs, x));
  CHECK(test::mse(result.inputs, x) < 1e-3);
  CHECK(result.labels.item<std::int64_t>() == 1);
}

TEST_CASE("idlg refuses a batch larger than one without granted labels") {
  auto model = test::tiny_sigmoid_model(3);
  auto theta = model->initial_parameters(24);
  auto x = torch::rand({2, 1, 4, 4}, make_generator(25));
  auto y = torch::tensor({0, 2}, torch::kLong);
  auto observed = test::victim_gradient(*model, theta, x, y);
  auto idlg = test::load<Attack>("idlg", "iterations = 1");
  auto problem = test::leakage_problem(*model, theta, observed, 2, 3, 9);
  CHECK_THROWS_WITH_AS(idlg->reconstruct(problem), doctest::Contains("batch size 1"), Error);
  problem.known_labels = y;
  CHECK(torch::equal(idlg->reconstruct(problem).labels, y));
}
