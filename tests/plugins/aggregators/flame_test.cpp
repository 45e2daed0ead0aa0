#include <cmath>
#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {
constexpr double kPi = 3.14159265358979323846;

/// r · (cos a°, sin a°).
std::vector<double> polar(double r, double degrees) {
  return {r * std::cos(degrees * kPi / 180), r * std::sin(degrees * kPi / 180)};
}

/// Five 2-d uploads: three close in angle (0°, 10°, 20°; norms 1, 2, 3) and two outliers (90°,
/// norm 4; 180°, norm 5).
torch::Tensor fan() {
  std::vector<torch::Tensor> rows;
  for (auto [r, a] : std::vector<std::pair<double, double>>{{1, 0}, {2, 10}, {3, 20}, {4, 90}, {5, 180}}) {
    rows.push_back(torch::tensor(polar(r, a), torch::kDouble));
  }
  return torch::stack(rows);
}
}  // namespace

TEST_CASE("flame: the majority cluster is admitted and clipped to the median norm of all rows") {
  auto rule = load<Aggregator>("flame", "noise = 0");
  auto u = fan();
  // Single linkage on 1 − cos: rows 0-1-2 join at 1 − cos 10°, row 3 at 1 − cos 70°, row 4 last.
  // min_cluster_size = 3: the splits shed row 4, then row 3; then {0, 1, 2} splits into sides of
  // 2 and 1 and the cluster ends: rows 0, 1, 2 are admitted. S = median(1, ..., 5) = 3, so no
  // admitted row is clipped and g is their mean.
  auto result = run(rule, u);
  CHECK_TENSOR_CLOSE(result.aggregate, u.slice(0, 0, 3).mean(0), 1e-15);
  CHECK(result.reports_flags);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{3, 4});
}

TEST_CASE("flame: clip_median = admitted takes S over the admitted rows only") {
  auto rule = load<Aggregator>("flame", "noise = 0\nclip_median = \"admitted\"");
  auto u = fan();
  // S = median(1, 2, 3) = 2: row 2 (norm 3) is scaled by 2/3.
  auto expected = (u[0] + u[1] + u[2] * (2.0 / 3.0)) / 3;
  CHECK_TENSOR_CLOSE(run(rule, u).aggregate, expected, 1e-15);
}

TEST_CASE("flame: rows above the median norm are clipped to it, an even count takes the middle mean") {
  auto rule = load<Aggregator>("flame", "noise = 0");
  // Four rows along one direction with norms 1, 2, 4, 8 (all at cosine distance 0: one cluster
  // of four); S = (2 + 4) / 2 = 3. Clipped norms 1, 2, 3, 3: mean 9/4 along (1, 0).
  auto u = matrix({{1, 0}, {2, 0}, {4, 0}, {8, 0}});
  auto result = run(rule, u);
  CHECK_TENSOR_CLOSE(result.aggregate, vec({9.0 / 4, 0}), 1e-15);
  CHECK(result.flagged_rows.empty());
}

TEST_CASE("flame: the models theta + u_i are clustered, unless cluster_on = updates") {
  auto u = matrix({{1, 0}, {0.9, 0.1}, {-1, 0}});
  auto c = context();
  c.params = vec({10, 0});
  // Updates: row 2 points away from rows 0 and 1 and is shed. Models (11, 0), (10.9, 0.1), (9, 0):
  // rows 0 and 2 are parallel (distance 0), row 1 is shed at the first split from the top.
  auto on_updates = load<Aggregator>("flame", "noise = 0\ncluster_on = \"updates\"")->aggregate(u, unit_weights(u), c);
  CHECK(on_updates.flagged_rows == std::vector<std::int64_t>{2});
  auto on_models = load<Aggregator>("flame", "noise = 0")->aggregate(u, unit_weights(u), c);
  CHECK(on_models.flagged_rows == std::vector<std::int64_t>{1});
  // S = median(1, 0.906, 1) = 1: nothing is clipped.
  CHECK_TENSOR_CLOSE(on_models.aggregate, vec({0, 0}), 1e-15);
}

TEST_CASE("flame: noise N(0, (lambda S)^2) per coordinate from the round's generator") {
  const std::int64_t d = 20000;
  auto u = torch::zeros({3, d}, torch::kDouble);
  u.select(1, 0).fill_(2.0);  // three identical rows of norm 2: S = 2, noiseless g = u_0
  auto rule = load<Aggregator>("flame", "noise = 0.25");
  auto first = run(rule, u).aggregate;
  auto again = run(rule, u).aggregate;
  CHECK(torch::equal(first, again));
  auto noise = (first - u[0]).slice(0, 1);
  CHECK(std::abs(noise.mean().item<double>()) < 0.02);
  CHECK(noise.std().item<double>() == doctest::Approx(0.25 * 2).epsilon(0.03));
}

TEST_CASE("flame: NaN and Inf rows are dropped and flagged, the others decide as without them") {
  auto rule = load<Aggregator>("flame", "noise = 0");
  auto inf = std::numeric_limits<double>::infinity();
  auto u = fan();
  auto with_bad = torch::cat({u.slice(0, 0, 2), matrix({{std::nan(""), 0}, {inf, 1}}), u.slice(0, 2)});
  auto result = run(rule, with_bad);
  CHECK_TENSOR_CLOSE(result.aggregate, run(rule, u).aggregate, 1e-15);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{2, 3, 5, 6});
  auto none = run(rule, matrix({{std::nan(""), 0}}));
  CHECK_TENSOR_CLOSE(none.aggregate, vec({0, 0}), 0);
  CHECK(none.flagged_rows == std::vector<std::int64_t>{0});
}

TEST_CASE("flame: invariant to the order of the clients, in float32 too") {
  auto rule = load<Aggregator>("flame", "noise = 0");
  // Twelve rows around a common direction plus four far from it.
  auto u = torch::cat({random_rows(12, 6, 91) * 0.3 + 1, random_rows(4, 6, 92) * 3});
  auto expected = run(rule, u);
  CHECK(expected.flagged_rows.size() >= 4);
  auto order = torch::randperm(16, make_generator(93), torch::kLong);
  auto permuted = run(rule, u.index_select(0, order));
  CHECK_TENSOR_CLOSE(permuted.aggregate, expected.aggregate, 1e-14);
  std::vector<std::int64_t> mapped;
  for (auto row : permuted.flagged_rows) mapped.push_back(order[row].item<std::int64_t>());
  std::sort(mapped.begin(), mapped.end());
  CHECK(mapped == expected.flagged_rows);
  auto single = run(rule, u.to(torch::kFloat)).aggregate;
  CHECK((single.scalar_type() == torch::kFloat));
  CHECK_TENSOR_CLOSE(single.to(torch::kDouble), expected.aggregate, 1e-5);
}

TEST_CASE("flame: one row, duplicated rows and two rows") {
  auto rule = load<Aggregator>("flame", "noise = 0");
  CHECK_TENSOR_CLOSE(run(rule, matrix({{1, 2}})).aggregate, vec({1, 2}), 0);
  // Duplicates sit at distance 0 and stay together to the end.
  auto u = matrix({{1, 1}, {1, 1}, {1, 1}, {-3, 0}});
  auto result = run(rule, u);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{3});
  CHECK_TENSOR_CLOSE(result.aggregate, vec({1, 1}), 1e-15);
  // Two rows: min_cluster_size 2, the first split ends the cluster and both are admitted.
  CHECK(run(rule, matrix({{1, 0}, {-1, 0}})).flagged_rows.empty());
}
