// Adding one constant to every coordinate of every update moves all rows by the same vector, which
// cannot change a pairwise distance: every rule built on distances must then pick the same rows.
// The updates are float32, as the engine trains them, and their entries are multiples of 1/64, so
// that u + 1000 is exact in float32 and any difference comes from the rule's arithmetic (a Gram
// matrix of the raw float32 rows loses the distances entirely at this offset).
#include "aggregation_helpers.hpp"

using namespace bulwark;
using namespace bulwark::test;

namespace {

constexpr double kOffset = 1000.0;

torch::Tensor dyadic_rows(std::int64_t n, std::int64_t d, std::uint64_t seed) {
  auto generator = make_generator(seed);
  return torch::randint(-64, 65, {n, d}, generator, torch::kLong).to(torch::kFloat32) / 64.0;
}

}  // namespace

TEST_CASE("distance-based rules pick the same rows when every update is shifted by a constant") {
  // f = 2 of n = 12 (Bulyan needs n >= 4f + 3 = 11).
  for (const char* name : {"krum", "multi_krum", "bulyan"}) {
    CAPTURE(name);
    for (std::uint64_t seed : {41u, 42u, 43u}) {
      CAPTURE(seed);
      auto rule = load<Aggregator>(name, "f = 2");
      const auto u = dyadic_rows(12, 2000, seed);
      const auto plain = run(rule, u);
      const auto shifted = run(rule, u + kOffset);
      CHECK(plain.flagged_rows == shifted.flagged_rows);
      CHECK_TENSOR_CLOSE(shifted.aggregate - kOffset, plain.aggregate, 1e-3);
    }
  }
}

TEST_CASE("nnm mixes the same neighbours when every update is shifted by a constant") {
  for (std::uint64_t seed : {41u, 42u, 43u}) {
    CAPTURE(seed);
    auto rule = load<Aggregator>("nnm", "f = 3");
    const auto u = dyadic_rows(10, 2000, seed);
    const auto c = context();
    const auto plain = rule->preprocess(u, unit_weights(u), c).updates;
    const auto shifted = rule->preprocess(u + kOffset, unit_weights(u), c).updates;
    // Another neighbour set would move a mixed row by about one row distance / (n - f), >> 1e-3.
    CHECK_TENSOR_CLOSE(shifted - kOffset, plain, 1e-3);
  }
}
