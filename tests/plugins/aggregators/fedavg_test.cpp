#include <doctest/doctest.h>

#include "test_support.hpp"

using namespace bulwark;

TEST_CASE("fedavg weights rows by sample count, or not") {
  // Rows 1, 2, 4 with n_k = 1, 1, 2: weighted (1 + 2 + 2*4) / 4 = 2.75; plain (1 + 2 + 4) / 3 = 7/3.
  auto updates = torch::tensor({1.0, 2.0, 4.0}, torch::kDouble).unsqueeze(1).repeat({1, 2});
  auto weights = torch::tensor({1.0, 1.0, 2.0}, torch::kDouble);
  auto weighted = test::load<Aggregator>("fedavg");
  auto plain = test::load<Aggregator>("fedavg", "weighted = false");
  CHECK(weighted->aggregate(updates, weights, {}).aggregate[0].item<double>() == doctest::Approx(2.75));
  CHECK(plain->aggregate(updates, weights, {}).aggregate[1].item<double>() == doctest::Approx(7.0 / 3.0));
  CHECK_FALSE(weighted->aggregate(updates, weights, {}).reports_flags);
}

TEST_CASE("fedavg keeps the input dtype and propagates a NaN row (it is not robust)") {
  auto updates = torch::ones({3, 4}, torch::kFloat);
  updates[1][2] = std::nan("");
  auto result = test::load<Aggregator>("fedavg")->aggregate(updates, torch::ones({3}, torch::kDouble), {});
  CHECK((result.aggregate.scalar_type() == torch::kFloat));
  CHECK(std::isnan(result.aggregate[2].item<float>()));
  CHECK(result.aggregate[0].item<float>() == doctest::Approx(1.0));
}
