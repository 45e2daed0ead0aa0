#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// A context whose guiding update for row j is row j of `guides` (what the engine computes on
/// client j's shared sample).
bulwark::AggregationContext guided(const torch::Tensor& guides) {
  auto c = context();
  c.guiding_update = [guides](std::int64_t row) { return guides[row]; };
  return c;
}
}  // namespace

TEST_CASE("diversefl: asks the engine for the shared sample fraction") {
  CHECK(load<Aggregator>("diversefl")->shared_sample_fraction() == doctest::Approx(0.01));
  CHECK(load<Aggregator>("diversefl", "sample_fraction = 0.03")->shared_sample_fraction() ==
        doctest::Approx(0.03));
}

TEST_CASE("diversefl: accepts a row iff C1 (same direction) and C2 (comparable norm) hold") {
  auto rule = load<Aggregator>("diversefl");
  auto u = matrix({{1, 0}, {-1, 0}, {3, 0}, {1, 1}, {2, 0}, {0.5, 0}});
  auto guides = matrix({{1, 0}, {1, 0}, {1, 0}, {1, 0}, {1, 0}, {1, 0}});
  // Row 0: <u, z> = 1 > 0, ratio 1 in (0.5, 2): accepted.
  // Row 1: <u, z> = -1: rejected by C1.
  // Row 2: ratio 3 >= 2: rejected by C2.
  // Row 3: <u, z> = 1, ratio sqrt(2) = 1.414: accepted.
  // Row 4: ratio exactly 2 (strict bound): rejected.  Row 5: ratio exactly 0.5: rejected.
  // g = ((1, 0) + (1, 1)) / 2 = (1, 0.5).
  auto result = rule->aggregate(u, unit_weights(u), guided(guides));
  CHECK_TENSOR_CLOSE(result.aggregate, vec({1, 0.5}), 0);
  CHECK(result.reports_flags);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{1, 2, 4, 5});
}

TEST_CASE("diversefl: epsilon1 and epsilon2 set the accepted norm ratio") {
  auto rule = load<Aggregator>("diversefl", "epsilon1 = 0.1\nepsilon2 = 4");
  auto u = matrix({{1, 0}, {3, 0}, {0.2, 0}});
  auto guides = matrix({{1, 0}, {1, 0}, {1, 0}});
  // Ratios 1, 3, 0.2 all lie in (0.1, 4): g = (1 + 3 + 0.2) / 3 = 1.4.
  auto result = rule->aggregate(u, unit_weights(u), guided(guides));
  CHECK_TENSOR_CLOSE(result.aggregate, vec({1.4, 0}), 1e-15);
  CHECK(result.flagged_rows.empty());
}

TEST_CASE("diversefl: nothing accepted gives a zero step and flags every row") {
  auto rule = load<Aggregator>("diversefl");
  auto u = matrix({{-1, 0}, {0, 5}});
  auto result = rule->aggregate(u, unit_weights(u), guided(matrix({{1, 0}, {1, 0}})));
  CHECK_TENSOR_CLOSE(result.aggregate, vec({0, 0}), 0);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{0, 1});
}

TEST_CASE("diversefl: NaN and Inf rows fail the tests and are flagged") {
  auto rule = load<Aggregator>("diversefl");
  auto inf = std::numeric_limits<double>::infinity();
  auto u = matrix({{1, 0}, {kNaN, 0}, {inf, 0}, {1, 0.1}});
  auto guides = matrix({{1, 0}, {1, 0}, {1, 0}, {1, 0}});
  auto result = rule->aggregate(u, unit_weights(u), guided(guides));
  CHECK_TENSOR_CLOSE(result.aggregate, vec({1, 0.05}), 1e-15);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{1, 2});
}

TEST_CASE("diversefl: invariant to the order of the clients") {
  auto rule = load<Aggregator>("diversefl");
  auto u = random_rows(8, 5, 71);
  auto guides = u + 0.3 * random_rows(8, 5, 72);
  auto order = torch::randperm(8, make_generator(73), torch::kLong);
  auto a = rule->aggregate(u, unit_weights(u), guided(guides)).aggregate;
  auto b = rule->aggregate(u.index_select(0, order), unit_weights(u),
                           guided(guides.index_select(0, order)))
               .aggregate;
  CHECK_TENSOR_CLOSE(a, b, 1e-15);
}

TEST_CASE("diversefl: identical rows that match their guiding updates give that row") {
  auto rule = load<Aggregator>("diversefl");
  auto u = random_rows(1, 6, 74).repeat({4, 1});
  CHECK_TENSOR_CLOSE(rule->aggregate(u, unit_weights(u), guided(u)).aggregate, u[0], 1e-15);
}

TEST_CASE("diversefl: refusals") {
  auto rule = load<Aggregator>("diversefl");
  CHECK_THROWS_WITH_AS(run(rule, matrix({{1, 0}})),
                       doctest::Contains("the engine did not provide shared samples"),
                       bulwark::Error);
  auto c = context();
  c.guiding_update = [](std::int64_t) { return torch::zeros({3}, torch::kDouble); };
  CHECK_THROWS_WITH_AS(rule->aggregate(matrix({{1, 0}}), vec({1}), c),
                       doctest::Contains("expected d = 2"), bulwark::Error);
  CHECK_THROWS_WITH_AS(load<Aggregator>("diversefl", "epsilon1 = 3"),
                       doctest::Contains("needs epsilon1 < epsilon2"), bulwark::Error);
  CHECK_THROWS_WITH_AS(load<Aggregator>("diversefl", "sample_fraction = 0"),
                       doctest::Contains("sample_fraction must be > 0"), bulwark::Error);
}
