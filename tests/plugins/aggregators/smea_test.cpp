#include <algorithm>
#include <limits>
#include <tuple>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {

// The definition in float64 with d × d scatter matrices: every (n − f)-subset in lexicographic
// order, the first of strictly smallest top eigenvalue.
std::vector<std::int64_t> smea_reference(const torch::Tensor& u, std::int64_t f) {
  const auto n = u.size(0), k = n - f;
  std::vector<std::int64_t> subset(static_cast<std::size_t>(k)), best;
  for (std::int64_t i = 0; i < k; ++i) subset[static_cast<std::size_t>(i)] = i;
  double best_eigenvalue = std::numeric_limits<double>::infinity();
  while (true) {
    const auto rows = u.index_select(0, torch::tensor(subset));
    const auto diffs = rows - rows.mean(0);
    const double top = torch::linalg::eigvalsh(diffs.t().matmul(diffs), "L")[-1].item<double>();
    if (top < best_eigenvalue) best_eigenvalue = top, best = subset;
    if (!next_subset(subset, n)) break;
  }
  return best;
}

}  // namespace

TEST_CASE("smea: random matrices against the enumeration with d x d scatter matrices") {
  for (const auto& [n, f, d, seed] : std::vector<std::tuple<std::int64_t, std::int64_t, std::int64_t, std::uint64_t>>{
           {5, 2, 3, 1}, {8, 3, 4, 2}, {10, 4, 2, 3}, {12, 2, 6, 4}}) {
    CAPTURE(n);
    CAPTURE(f);
    auto u = random_rows(n, d, seed);
    const auto kept = smea_reference(u, f);
    auto rule = load<Aggregator>("smea", "f = " + std::to_string(f));
    const auto result = run(rule, u);
    CHECK_TENSOR_CLOSE(result.aggregate, u.index_select(0, torch::tensor(kept)).mean(0), 1e-14);
    CHECK(result.flagged_rows == rows_outside(kept, n));
    auto order = torch::randperm(n, make_generator(seed), torch::kLong);
    CHECK_TENSOR_CLOSE(run(rule, u.index_select(0, order)).aggregate, result.aggregate, 1e-14);
  }
}

TEST_CASE("smea: ties go to the first subset, far rows are left out, NaN rows never kept") {
  // Four copies of one row and one other, f = 1: every subset with the odd row out has scatter 0,
  // the first is {0, 1, 2, 3}.
  auto rule = load<Aggregator>("smea", "f = 1");
  auto ties = run(rule, matrix({{1, 1}, {1, 1}, {1, 1}, {1, 1}, {9, 0}}));
  CHECK(ties.flagged_rows == std::vector<std::int64_t>{4});
  auto duplicates = run(rule, matrix({{2}, {2}, {2}}));
  CHECK(duplicates.flagged_rows == std::vector<std::int64_t>{2});
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto with_nan = run(load<Aggregator>("smea", "f = 1"), matrix({{0}, {nan}, {1}, {2}}));
  CHECK_TENSOR_CLOSE(with_nan.aggregate, vec({1}), 1e-15);
  CHECK(with_nan.flagged_rows == std::vector<std::int64_t>{1});
}

TEST_CASE("smea: more than 10^6 subsets and n <= 2f are refused") {
  CHECK_THROWS_WITH_AS(run(load<Aggregator>("smea", "f = 12"), random_rows(30, 2, 1)),
                       doctest::Contains("more than 10^6 subsets"), bulwark::Error);
  CHECK_THROWS_WITH_AS(run(load<Aggregator>("smea", "f = 2"), random_rows(4, 2, 1)),
                       doctest::Contains("smea: needs n > 2f"), bulwark::Error);
}
