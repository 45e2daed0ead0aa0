// The zoo's own 2x2 max pooling against ATen's max_pool2d: values, which element a window's
// gradient goes to (ties, NaN, -inf), floor mode on odd sizes, and gradients of second order.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include "bulwark/rng.hpp"
#include "layers.hpp"
#include "test_support.hpp"

namespace {

using torch::Tensor;

Tensor pool(const Tensor& x) {
  static const auto layer = bulwark::detail::max_pool2d(2);
  return layer->forward(x, {});
}

// Values drawn from a handful of levels, so that most windows hold ties.
Tensor tied_input(std::vector<std::int64_t> sizes, torch::Dtype dtype, std::uint64_t seed) {
  auto generator = bulwark::make_generator(seed);
  return torch::randint(4, sizes, generator, torch::kLong).to(dtype);
}

}  // namespace

TEST_CASE("max pooling 2x2: values and gradients equal ATen's max_pool2d, ties and odd sizes included") {
  for (const auto dtype : {torch::kFloat, torch::kDouble}) {
    for (const std::vector<std::int64_t> sizes : {std::vector<std::int64_t>{3, 2, 8, 8}, {2, 3, 7, 9}, {1, 1, 3, 2}}) {
      CAPTURE(sizes[2]);
      CAPTURE(sizes[3]);
      auto x = tied_input(sizes, dtype, 1);
      const auto expected = torch::max_pool2d(x, {2, 2});
      {
        torch::NoGradGuard no_grad;
        CHECK(torch::equal(pool(x), expected));
      }
      auto ours_x = x.clone().requires_grad_(true), aten_x = x.clone().requires_grad_(true);
      auto ours = pool(ours_x);
      CHECK(torch::equal(ours, expected));
      auto weights = torch::randn(expected.sizes(), bulwark::make_generator(2), torch::TensorOptions(dtype));
      auto ours_grad = torch::autograd::grad({(ours * weights).sum()}, {ours_x})[0];
      auto aten_grad = torch::autograd::grad({(torch::max_pool2d(aten_x, {2, 2}) * weights).sum()}, {aten_x})[0];
      // Exact: every input element receives one window's weight or nothing.
      CHECK(torch::equal(ours_grad, aten_grad));
    }
  }
}

TEST_CASE("max pooling 2x2: NaN and -inf pick the element ATen picks") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  // One window per row: [top-left, top-right, bottom-left, bottom-right].
  const std::vector<std::vector<double>> windows = {
      {nan, 1, 2, 3}, {1, nan, 2, nan}, {nan, 1, nan, 0}, {1, 2, 3, nan},
      {-inf, -inf, -inf, -inf}, {-inf, 1, 1, -inf}, {2, 2, 2, 2}, {0, 5, 5, 1},
  };
  for (const auto& window : windows) {
    CAPTURE(window[0]);
    CAPTURE(window[1]);
    CAPTURE(window[2]);
    CAPTURE(window[3]);
    auto x = torch::tensor(window, torch::kDouble).view({1, 1, 2, 2});
    auto ours_x = x.clone().requires_grad_(true), aten_x = x.clone().requires_grad_(true);
    auto ours = pool(ours_x), aten = torch::max_pool2d(aten_x, {2, 2});
    CHECK(torch::equal(ours.isnan(), aten.isnan()));
    CHECK(torch::equal(torch::nan_to_num(ours), torch::nan_to_num(aten)));
    auto ours_grad = torch::autograd::grad({ours.sum()}, {ours_x})[0];
    auto aten_grad = torch::autograd::grad({aten.sum()}, {aten_x})[0];
    CHECK(torch::equal(ours_grad, aten_grad));
  }
}

TEST_CASE("max pooling 2x2: the backward is itself differentiable, as ATen's is") {
  // Gradient matching differentiates ∇θ, and so the pooling's backward, once more: the derivative
  // of g -> ∂(Σ g·pool(x))/∂x along u, for ours as for ATen's.
  auto x = torch::randn({2, 3, 6, 5}, bulwark::make_generator(3), torch::kDouble);
  auto g = torch::randn({2, 3, 3, 2}, bulwark::make_generator(4), torch::kDouble).requires_grad_(true);
  auto u = torch::randn({2, 3, 6, 5}, bulwark::make_generator(5), torch::kDouble);
  auto second = [&](auto&& pooling) {
    auto input = x.clone().requires_grad_(true);
    auto first = torch::autograd::grad({(pooling(input) * g).sum()}, {input}, {}, true, true)[0];
    return torch::autograd::grad({(first * u).sum()}, {g})[0];
  };
  auto ours = second([](const Tensor& t) { return pool(t); });
  auto aten = second([](const Tensor& t) { return torch::max_pool2d(t, {2, 2}); });
  CHECK(torch::equal(ours, aten));
  CHECK(ours.abs().sum().item<double>() > 0);
}
