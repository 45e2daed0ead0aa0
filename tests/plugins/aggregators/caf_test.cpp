#include <algorithm>
#include <limits>
#include <tuple>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {

// The definition in float64 with the d × d covariance: filter until the weights sum to n − 2f,
// return the weighted mean of smallest top eigenvalue.
torch::Tensor caf_reference(const torch::Tensor& u, std::int64_t f) {
  const auto n = u.size(0);
  auto c = torch::ones({n}, torch::kDouble);
  torch::Tensor best;
  double best_eigenvalue = std::numeric_limits<double>::infinity();
  while (c.sum().item<double>() > static_cast<double>(n - 2 * f)) {
    const auto mu = (c.unsqueeze(1) * u).sum(0) / c.sum();
    const auto diffs = u - mu;
    const auto covariance = (c.unsqueeze(1) * diffs).t().matmul(diffs) / c.sum();
    const auto [values, vectors] = torch::linalg::eigh(covariance, "L");
    const double top = values[-1].item<double>();
    if (top < best_eigenvalue) best_eigenvalue = top, best = mu;
    const auto tau = diffs.matmul(vectors.select(1, -1)).pow(2);
    c = (c * (1 - tau / tau.max())).clamp_min(0);
  }
  return best;
}

}  // namespace

TEST_CASE("caf: random matrices against the d x d definition") {
  for (const auto& [n, f, seed] : std::vector<std::tuple<std::int64_t, std::int64_t, std::uint64_t>>{
           {5, 1, 1}, {9, 3, 2}, {12, 5, 3}, {20, 4, 4}}) {
    CAPTURE(n);
    CAPTURE(f);
    auto u = random_rows(n, 4, seed);
    u.narrow(0, 0, f).mul_(8).add_(3);  // f rows far off
    auto rule = load<Aggregator>("caf", "f = " + std::to_string(f));
    const auto result = run(rule, u);
    CHECK_TENSOR_CLOSE(result.aggregate, caf_reference(u, f), 1e-10);
    auto order = torch::randperm(n, make_generator(seed), torch::kLong);
    CHECK_TENSOR_CLOSE(run(rule, u.index_select(0, order)).aggregate, result.aggregate, 1e-10);
  }
}

TEST_CASE("caf: f = 0 is the mean, identical rows give that row, outliers are flagged") {
  auto u = random_rows(6, 3, 8);
  CHECK_TENSOR_CLOSE(run(load<Aggregator>("caf", "f = 0"), u).aggregate, u.mean(0), 1e-14);
  auto same = torch::cat({torch::ones({4, 3}, torch::kDouble), torch::full({1, 3}, 50.0, torch::kDouble)});
  auto result = run(load<Aggregator>("caf", "f = 2"), same);
  CHECK_TENSOR_CLOSE(result.aggregate, vec({1, 1, 1}), 1e-12);
  CHECK(result.reports_flags);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{4});
}

TEST_CASE("caf: NaN rows get weight 0, n <= 2f is refused, f = -1 takes the declared bound") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto u = random_rows(7, 3, 9);
  auto with_nan = torch::cat({u, matrix({{nan, 0, 0}})});
  auto result = run(load<Aggregator>("caf", "f = 2"), with_nan);
  CHECK_TENSOR_CLOSE(result.aggregate, run(load<Aggregator>("caf", "f = 1"), u).aggregate, 1e-12);
  CHECK(std::find(result.flagged_rows.begin(), result.flagged_rows.end(), 7) != result.flagged_rows.end());
  CHECK_THROWS_WITH_AS(run(load<Aggregator>("caf", "f = 4"), u), doctest::Contains("caf: needs n > 2f"),
                       bulwark::Error);
  CHECK_TENSOR_CLOSE(run(load<Aggregator>("caf", ""), u, context(2)).aggregate,
                     run(load<Aggregator>("caf", "f = 2"), u).aggregate, 0);
}
