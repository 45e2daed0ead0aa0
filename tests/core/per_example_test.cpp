// Per-example gradients: the vectorised rules (Linear, Conv2d, GroupNorm) against their definition,
// a loop of batch-size-1 backward passes, for every zoo model and batch size 1; their sum against
// the batch gradient; and the reused result buffer, which must never overwrite a result the caller
// still holds.
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include "bulwark/rng.hpp"
#include "config.hpp"
#include "models.hpp"

namespace {

using torch::Tensor;
namespace F = torch::nn::functional;

std::unique_ptr<bulwark::Model> make(const std::string& toml,
                                     const std::vector<std::int64_t>& shape) {
  auto options = bulwark::options_from_string(toml, bulwark::model_option_specs(), "model");
  return bulwark::build_model(options, shape, 10);
}

// Uniform pixels with the first rows zeroed: flat regions give exact ties in max pooling.
Tensor inputs(const std::vector<std::int64_t>& shape, std::int64_t batch, std::uint64_t seed) {
  std::vector<std::int64_t> sizes{batch};
  sizes.insert(sizes.end(), shape.begin(), shape.end());
  auto generator = bulwark::make_generator(seed);
  auto x = torch::rand(sizes, generator);
  if (shape.size() == 3) x.narrow(2, 0, shape[1] / 3).zero_();
  return x;
}

Tensor labels(std::int64_t batch, std::uint64_t seed) {
  auto generator = bulwark::make_generator(seed);
  return torch::randint(10, {batch}, generator, torch::kLong);
}

// The definition: ∇θ of the summed cross-entropy on the given examples, by plain autograd.
Tensor batch_gradient(const bulwark::Model& model, const Tensor& theta, const Tensor& x,
                      const Tensor& y) {
  auto p = theta.detach().requires_grad_(true);
  auto loss =
      F::cross_entropy(model.forward(p, x), y, F::CrossEntropyFuncOptions().reduction(torch::kSum));
  return torch::autograd::grad({loss}, {p})[0];
}

double max_abs(const Tensor& t) {
  return t.numel() == 0 ? 0.0 : t.abs().max().item<double>();
}

void check_against_loop(const bulwark::Model& model, const Tensor& theta, const Tensor& x,
                        const Tensor& y, const Tensor& per_example) {
  const auto batch = x.size(0);
  REQUIRE(per_example.sizes() == torch::IntArrayRef{batch, model.layout().total});
  CHECK((per_example.scalar_type() == torch::kFloat));
  for (std::int64_t b = 0; b < batch; ++b) {
    CAPTURE(b);
    auto row = batch_gradient(model, theta, x.narrow(0, b, 1), y.narrow(0, b, 1));
    // 1e-5 absolute for gradients of order 1 (all zoo models at θ0); relative beyond that.
    CHECK(max_abs(per_example[b] - row) <= 1e-5 * std::max(1.0, max_abs(row)));
  }
  auto total = batch_gradient(model, theta, x, y);
  CHECK(max_abs(per_example.sum(0) - total) <= 1e-5 * std::max(1.0, max_abs(total)) * batch);
}

struct Case {
  std::string toml;
  std::vector<std::int64_t> shape;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"arch = \"softmax\"", {1, 28, 28}},
      {"arch = \"mlp\"", {1, 28, 28}},
      {"arch = \"mlp\"\nhidden = [24, 12]\nactivation = \"sigmoid\"", {54}},
      {"arch = \"cnn\"", {1, 28, 28}},
      {"arch = \"cnn\"", {3, 32, 32}},
      {"arch = \"cnn\"\ngroups = 1\nactivation = \"relu\"", {1, 27, 27}},
      {"arch = \"lenet\"", {1, 28, 28}},
      {"arch = \"lenet\"", {3, 32, 32}},
  };
  return all;
}

}  // namespace

TEST_CASE("model per-example gradients equal the batch-size-1 loop and sum to the batch gradient") {
  for (const auto& c : cases()) {
    CAPTURE(c.toml);
    CAPTURE(c.shape[0]);
    auto model = make(c.toml, c.shape);
    CHECK(model->vectorised());
    auto theta = model->initial_parameters(3);
    for (std::int64_t batch : {1, 6}) {
      CAPTURE(batch);
      auto x = inputs(c.shape, batch, 4 + batch);
      auto y = labels(batch, 5 + batch);
      check_against_loop(*model, theta, x, y, model->per_example_gradients(theta, x, y));
    }
  }
}

TEST_CASE(
    "model per-example gradients: away from θ0, under NoGradGuard, and with θ requiring grad") {
  auto model = make("arch = \"cnn\"", {1, 28, 28});
  // A trained-looking θ: the GroupNorm affine parameters away from 1 and 0.
  auto theta = model->initial_parameters(6) +
               0.2 * torch::randn({model->layout().total}, bulwark::make_generator(7));
  auto x = inputs({1, 28, 28}, 5, 8);
  auto y = labels(5, 9);
  Tensor under_no_grad;
  {
    torch::NoGradGuard no_grad;
    under_no_grad = model->per_example_gradients(theta, x, y).clone();
  }
  check_against_loop(*model, theta, x, y, under_no_grad);
  auto leaf = theta.clone().requires_grad_(true);
  CHECK(torch::equal(model->per_example_gradients(leaf, x, y), under_no_grad));
  CHECK_FALSE(leaf.grad().defined());
}

TEST_CASE("model per-example gradients: an empty batch gives an empty [0, d] matrix") {
  auto model = make("arch = \"cnn\"", {1, 28, 28});
  auto g = model->per_example_gradients(model->initial_parameters(1), torch::zeros({0, 1, 28, 28}),
                                        torch::zeros({0}, torch::kLong));
  CHECK(g.sizes() == torch::IntArrayRef{0, 107722});
}

TEST_CASE("model per-example gradients: a result the caller still holds is never overwritten") {
  auto model = make("arch = \"mlp\"\nhidden = [16]", {1, 8, 8});
  auto theta = model->initial_parameters(1);
  auto x1 = inputs({1, 8, 8}, 4, 1), x2 = inputs({1, 8, 8}, 4, 2), x3 = inputs({1, 8, 8}, 3, 3);
  auto y = labels(4, 1);
  auto first = model->per_example_gradients(theta, x1, y);
  auto first_copy = first.clone();
  auto second = model->per_example_gradients(theta, x2, y);
  CHECK(torch::equal(first, first_copy));
  CHECK_FALSE(torch::equal(first, second));
  // A view keeps the storage too.
  auto row = second[1];
  auto row_copy = row.clone();
  first = Tensor();
  second = Tensor();
  auto third = model->per_example_gradients(theta, x3, y.narrow(0, 0, 3));
  CHECK(torch::equal(row, row_copy));
  check_against_loop(*model, theta, x3, y.narrow(0, 0, 3), third);
  // Once nothing refers to it, the buffer is reused and still fully rewritten.
  row = Tensor();
  third = Tensor();
  check_against_loop(*model, theta, x1, y, model->per_example_gradients(theta, x1, y));
}

TEST_CASE(
    "model per-example gradients: concurrent calls from worker threads match sequential ones") {
  auto model = make("arch = \"cnn\"", {1, 28, 28});
  std::vector<Tensor> thetas, xs, ys, expected(3), got(3);
  for (int t = 0; t < 3; ++t) {
    thetas.push_back(model->initial_parameters(60 + t));
    xs.push_back(inputs({1, 28, 28}, 4, 70 + t));
    ys.push_back(labels(4, 80 + t));
    expected[t] = model->per_example_gradients(thetas[t], xs[t], ys[t]).clone();
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 4; ++i)
        got[t] = model->per_example_gradients(thetas[t], xs[t], ys[t]).clone();
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < 3; ++t) CHECK(torch::equal(got[t], expected[t]));
}
