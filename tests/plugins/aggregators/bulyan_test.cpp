#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Seven points a..g in scrambled row order: rows 0..6 hold g, d, a, f, b, e, c.
//   a = (0, 5), b = (1, 3), c = (2, 4), d = (3, 0), e = (5, 9), f = (11, 1), g = (50, 50)
torch::Tensor seven_points() {
  return matrix({{50, 50}, {3, 0}, {0, 5}, {11, 1}, {1, 3}, {5, 9}, {2, 4}});
}
}  // namespace

TEST_CASE("bulyan: iterated Krum selection, then the mean of the beta values nearest the median") {
  auto rule = load<Aggregator>("bulyan", "f = 1");
  // n = 7, f = 1: theta = 7 - 2 = 5 rows selected, beta = 5 - 2 = 3 values averaged per coordinate.
  // Squared distances: ab 5, ac 5, ad 34, ae 41, af 137, ag 4525, bc 2, bd 13, be 52, bf 104,
  // bg 4820, cd 17, ce 34, cf 90, cg 4420, de 85, df 65, dg 4709, ef 100, eg 3706, fg 3922.
  // Step 1, |R| = 7, 4 neighbours: a 5+5+34+41 = 85, b 2+5+13+52 = 72, c 2+5+17+34 = 58 (min),
  //   d 13+17+34+65 = 129, e 34+41+52+85 = 212, f 65+90+100+104 = 359, g 16573 -> c.
  // Step 2, |R| = 6, 3 neighbours: a 5+34+41 = 80, b 5+13+52 = 70 (min), d 112, e 178, f 269 -> b.
  // Step 3, |R| = 5, 2 neighbours: a 34+41 = 75 (min), d 34+65 = 99, e 126, f 165, g 7628 -> a.
  // Step 4, |R| = 4 <= 2f + 2: scored against all 3 others: d 65+85+4709 = 4859,
  //   e 85+100+3706 = 3891 (min), f 65+100+3922 = 4087, g 12337 -> e.
  // Step 5, |R| = 3: d 65+4709 = 4774, f 65+3922 = 3987 (min), g 8631 -> f.
  // Selected {a, b, c, e, f}; d and g (rows 1 and 0) are flagged.
  // Coordinate 0: {0, 1, 2, 5, 11}, median 2, the 3 closest 2, 1, 0 -> 1.
  // Coordinate 1: {5, 3, 4, 9, 1}, median 4, the 3 closest 4, 3, 5 -> 4.
  auto result = run(rule, seven_points());
  CHECK_TENSOR_CLOSE(result.aggregate, vec({1, 4}), 1e-15);
  CHECK(result.reports_flags);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{0, 1});
}

TEST_CASE("bulyan: refuses n < 4f + 3") {
  auto rule = load<Aggregator>("bulyan", "f = 1");
  auto six = seven_points().narrow(0, 0, 6);
  CHECK_THROWS_WITH_AS(run(rule, six), doctest::Contains("needs n >= 4f + 3"), bulwark::Error);
  CHECK_THROWS_WITH_AS(run(rule, six), doctest::Contains("found n = 6 with f = 1"),
                       bulwark::Error);
  auto declared = load<Aggregator>("bulyan");
  CHECK_THROWS_WITH_AS(run(declared, seven_points(), context(/*f=*/2)),
                       doctest::Contains("needs n >= 4f + 3"), bulwark::Error);
}

TEST_CASE("bulyan: invariant to the order of the rows") {
  auto rule = load<Aggregator>("bulyan", "f = 2");
  auto u = random_rows(12, 6, 41);
  auto permuted = u.index_select(0, torch::randperm(12, make_generator(42), torch::kLong));
  CHECK_TENSOR_CLOSE(run(rule, permuted).aggregate, run(rule, u).aggregate, 1e-15);
  auto one = load<Aggregator>("bulyan", "f = 1");
  auto reversed = run(one, seven_points().flip(0));
  CHECK_TENSOR_CLOSE(reversed.aggregate, vec({1, 4}), 1e-15);
  CHECK(reversed.flagged_rows == std::vector<std::int64_t>{5, 6});
}

TEST_CASE("bulyan: identical rows give that row") {
  auto rule = load<Aggregator>("bulyan", "f = 0");
  auto row = random_rows(1, 7, 43);
  CHECK_TENSOR_CLOSE(run(rule, row.repeat({4, 1})).aggregate, row[0], 1e-15);
}

TEST_CASE("bulyan: a Byzantine row of 1e9 moves it by less than the honest spread") {
  auto rule = load<Aggregator>("bulyan", "f = 1");
  auto honest = random_rows(10, 8, 44);
  auto spread = std::get<0>(honest.max(0)) - std::get<0>(honest.min(0));
  auto attacked = torch::cat({honest, torch::full({1, 8}, 1e9, torch::kDouble)});
  auto result = run(rule, attacked);
  CHECK(std::find(result.flagged_rows.begin(), result.flagged_rows.end(), 10) !=
        result.flagged_rows.end());
  CHECK(((result.aggregate - run(rule, honest).aggregate).abs() < spread).all().item<bool>());
}

TEST_CASE("bulyan: NaN rows are removed, flagged, and lower f") {
  auto rule = load<Aggregator>("bulyan", "f = 1");
  // n = 8 with one NaN row: the seven points remain with f' = 0, so theta = beta = 7: the mean of
  // all seven, ((50+3+0+11+1+5+2) / 7, (50+0+5+1+3+9+4) / 7) = (72/7, 72/7).
  auto u = torch::cat({seven_points(), matrix({{kNaN, 1}})});
  auto result = run(rule, u);
  CHECK_TENSOR_CLOSE(result.aggregate, vec({72.0 / 7, 72.0 / 7}), 1e-13);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{7});
}
