#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {

// The definition coordinate by coordinate in plain float64: median, then the n - f values nearest
// it (ties to the lower row), then their mean.
torch::Tensor meamed_reference(const torch::Tensor& updates, std::int64_t f) {
  const auto u = updates.to(torch::kDouble).contiguous();
  const auto n = u.size(0), d = u.size(1);
  auto out = torch::empty({d}, torch::kDouble);
  for (std::int64_t k = 0; k < d; ++k) {
    std::vector<double> column(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) column[static_cast<std::size_t>(i)] = u[i][k].item<double>();
    auto sorted = column;
    std::sort(sorted.begin(), sorted.end());
    const double median = (sorted[static_cast<std::size_t>((n - 1) / 2)] + sorted[static_cast<std::size_t>(n / 2)]) / 2;
    std::vector<std::size_t> rows(column.size());
    std::iota(rows.begin(), rows.end(), 0);
    std::stable_sort(rows.begin(), rows.end(), [&](std::size_t a, std::size_t b) {
      return std::abs(column[a] - median) < std::abs(column[b] - median);
    });
    double sum = 0;
    for (std::int64_t i = 0; i < n - f; ++i) sum += column[rows[static_cast<std::size_t>(i)]];
    out[k] = sum / static_cast<double>(n - f);
  }
  return out;
}

}  // namespace

TEST_CASE("meamed: ByzFL's documented example and hand-checked columns") {
  // ByzFL Meamed(f = 1) of [[1,2,3],[4,5,6],[7,8,9]] = [2.5, 3.5, 4.5]: rows 0 and 2 are equally far
  // from the median row; the lower index stays.
  auto rule = load<Aggregator>("meamed", "f = 1");
  auto byzfl = run(rule, matrix({{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}));
  CHECK_TENSOR_CLOSE(byzfl.aggregate, vec({2.5, 3.5, 4.5}), 0);
  CHECK_FALSE(byzfl.reports_flags);
  // Column 1 2 3 4 100: median 3, drop 100 -> 2.5. Column 10 10 13 11 -50: median 10, drop -50 -> 11.
  CHECK_TENSOR_CLOSE(run(rule, matrix({{1, 10}, {2, 10}, {3, 13}, {4, 11}, {100, -50}})).aggregate, vec({2.5, 11}),
                     1e-15);
  // Even n: 0 2 6 7, median (2 + 6)/2 = 4, drop 0 -> 5 (the lower middle value 2 would give 8/3).
  CHECK_TENSOR_CLOSE(run(rule, matrix({{0}, {2}, {6}, {7}})).aggregate, vec({5}), 1e-15);
}

TEST_CASE("meamed: random matrices against the float64 definition, permutation and duplicates") {
  for (const auto& [n, f] : std::vector<std::pair<std::int64_t, std::int64_t>>{{5, 2}, {10, 3}, {11, 0}, {20, 9}}) {
    CAPTURE(n);
    CAPTURE(f);
    auto rule = load<Aggregator>("meamed", "f = " + std::to_string(f));
    auto u = random_rows(n, 13, static_cast<std::uint64_t>(n * 31 + f));
    const auto expected = meamed_reference(u, f);
    CHECK_TENSOR_CLOSE(run(rule, u).aggregate, expected, 1e-14);
    auto permuted = u.index_select(0, torch::randperm(n, make_generator(5), torch::kLong));
    CHECK_TENSOR_CLOSE(run(rule, permuted).aggregate, expected, 1e-14);
  }
  // Duplicated rows tie exactly; which copy stays cannot matter.
  auto rule = load<Aggregator>("meamed", "f = 2");
  auto u = random_rows(3, 6, 9);
  auto duplicated = torch::cat({u, u, u[0].unsqueeze(0)});
  CHECK_TENSOR_CLOSE(run(rule, duplicated).aggregate, meamed_reference(duplicated, 2), 1e-14);
  // f = -1 takes the declared bound.
  auto declared = load<Aggregator>("meamed", "");
  CHECK_TENSOR_CLOSE(run(declared, duplicated, context(2)).aggregate, run(rule, duplicated).aggregate, 0);
}

TEST_CASE("meamed: up to f NaN/Inf entries per coordinate are left out, n <= 2f is refused") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  auto rule = load<Aggregator>("meamed", "f = 1");
  CHECK_TENSOR_CLOSE(run(rule, matrix({{1, 1, 1}, {2, 2, 2}, {nan, inf, -inf}, {3, 3, 3}})).aggregate,
                     vec({2, 2, 2}), 1e-15);
  CHECK((run(rule, matrix({{1}, {2}, {3}}).to(torch::kFloat)).aggregate.scalar_type() == torch::kFloat));
  CHECK_THROWS_WITH_AS(run(load<Aggregator>("meamed", "f = 2"), matrix({{0}, {1}, {2}, {3}})),
                       doctest::Contains("meamed: needs n > 2f updates"), bulwark::Error);
}
