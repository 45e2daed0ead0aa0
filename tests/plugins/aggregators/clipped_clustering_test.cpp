#include <algorithm>
#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {

/// Average-linkage agglomeration to two clusters from the definition: every step recomputes each
/// pair's mean cosine distance from the members (no update formula); the larger cluster.
std::vector<std::int64_t> reference_cluster(const torch::Tensor& rows) {
  const auto m = rows.size(0);
  auto distance = [&](std::int64_t i, std::int64_t j) {
    const auto cosine = (rows[i] * rows[j]).sum().item<double>() / (rows[i].norm().item<double>() * rows[j].norm().item<double>());
    return 1 - cosine;
  };
  std::vector<std::vector<std::int64_t>> clusters;
  for (std::int64_t i = 0; i < m; ++i) clusters.push_back({i});
  while (clusters.size() > 2) {
    double best = std::numeric_limits<double>::infinity();
    std::size_t best_a = 0, best_b = 0;
    for (std::size_t a = 0; a < clusters.size(); ++a) {
      for (std::size_t b = a + 1; b < clusters.size(); ++b) {
        double sum = 0;
        for (auto i : clusters[a]) {
          for (auto j : clusters[b]) sum += distance(i, j);
        }
        const auto mean = sum / static_cast<double>(clusters[a].size() * clusters[b].size());
        if (mean < best) best = mean, best_a = a, best_b = b;
      }
    }
    clusters[best_a].insert(clusters[best_a].end(), clusters[best_b].begin(), clusters[best_b].end());
    clusters.erase(clusters.begin() + static_cast<std::ptrdiff_t>(best_b));
  }
  auto larger = clusters[0].size() >= clusters[1].size() ? clusters[0] : clusters[1];
  std::sort(larger.begin(), larger.end());
  return larger;
}

torch::Tensor clipped(const torch::Tensor& rows, double tau) {
  auto norms = rows.norm(2, 1, true);
  return rows * (tau / norms).clamp_max(1.0);
}

}  // namespace

TEST_CASE("clipped_clustering: the mean of the larger average-linkage cluster, clipped to the median norm") {
  // Hand-checkable: four rows along +x, two along -x; norms 1, 2, 3, 4, 5, 6 (median 3.5).
  auto u = matrix({{1, 0}, {2, 0}, {-3, 0}, {4, 0}, {5, 0}, {-6, 0}});
  auto result = run(load<Aggregator>("clipped_clustering", ""), u);
  CHECK_TENSOR_CLOSE(result.aggregate, vec({(1 + 2 + 3.5 + 3.5) / 4.0, 0}), 1e-14);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{2, 5});
}

TEST_CASE("clipped_clustering: random rows agree with average linkage recomputed from the definition") {
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    auto u = random_rows(11, 6, seed);
    u.narrow(0, 0, 3).add_(torch::full({6}, 2.0, torch::kDouble));  // a loose group in one direction
    const auto norms = u.norm(2, 1);
    const auto tau = std::get<0>(norms.sort())[5].item<double>();
    const auto members = reference_cluster(u);
    auto result = run(load<Aggregator>("clipped_clustering", ""), u);
    CHECK_TENSOR_CLOSE(result.aggregate,
                       clipped(u, tau).index_select(0, torch::tensor(members, torch::kLong)).mean(0), 1e-12);
    CHECK(result.flagged_rows == rows_outside(members, 11));
  }
}

TEST_CASE("clipped_clustering: the clipping threshold is the median over every round's norms") {
  auto round0 = matrix({{10, 0}, {20, 0}, {30, 1}});
  auto round1 = matrix({{1, 0}, {2, 0}, {3, 0}, {-1, 0}});
  auto rule = load<Aggregator>("clipped_clustering", "");
  run(rule, round0);
  bulwark::StateDict state;
  rule->save_state(state);
  auto resumed = load<Aggregator>("clipped_clustering", "");
  resumed->load_state(state);
  // Norms seen: 1, 1, 2, 3, 10, 20, 30.02 -> median 3 clips nothing; the cluster is the +x rows.
  auto g = run(resumed, round1, context(0, 1)).aggregate;
  CHECK_TENSOR_CLOSE(g, vec({2, 0}), 1e-14);
  CHECK_TENSOR_CLOSE(run(rule, round1, context(0, 1)).aggregate, g, 0);
  // A fresh rule sees only this round's norms (median 1.5) and clips two rows.
  CHECK_TENSOR_CLOSE(run(load<Aggregator>("clipped_clustering", ""), round1).aggregate, vec({4.0 / 3, 0}), 1e-14);
}

TEST_CASE("clipped_clustering: ties go to the lower row, NaN rows are flagged, single linkage is offered") {
  // Two equal groups of two, orthogonal: the cluster holding row 0 wins.
  auto u = matrix({{0, 1}, {1, 0}, {0, 2}, {2, 0}});
  auto result = run(load<Aggregator>("clipped_clustering", ""), u);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{1, 3});
  // Permutation invariance of the aggregate where there is no tie.
  auto v = random_rows(7, 4, 9);
  auto perm = torch::tensor({6, 2, 0, 5, 1, 3, 4}, torch::kLong);
  auto rule = load<Aggregator>("clipped_clustering", "linkage = \"single\"");
  auto a = run(rule, v).aggregate;
  auto b = run(load<Aggregator>("clipped_clustering", "linkage = \"single\""), v.index_select(0, perm)).aggregate;
  CHECK_TENSOR_CLOSE(a, b, 1e-12);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto with_nan = torch::cat({v, matrix({{nan, 0, 0, 0}})});
  auto flagged = run(load<Aggregator>("clipped_clustering", ""), with_nan).flagged_rows;
  CHECK(std::find(flagged.begin(), flagged.end(), 7) != flagged.end());
  CHECK_THROWS_AS(load<Aggregator>("clipped_clustering", "linkage = \"ward\""), bulwark::Error);
}
