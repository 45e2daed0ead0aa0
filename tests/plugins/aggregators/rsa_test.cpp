#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

TEST_CASE("rsa: asks the kernel for per-client models pulled to theta by lambda") {
  const auto protocol = load<Aggregator>("rsa", "lambda = 0.05")->client_protocol();
  CHECK(protocol.persistent_models);
  CHECK(protocol.sign_penalty == 0.05);
  CHECK(load<Aggregator>("rsa", "lambda = 0.05\nclient_lambda = 1")->client_protocol().sign_penalty == 1.0);
  CHECK_THROWS_WITH_AS(load<Aggregator>("rsa", "client_lambda = -0.5"), doctest::Contains("client_lambda must be >= 0"),
                       bulwark::Error);
  const auto plain = load<Aggregator>("fedavg")->client_protocol();
  CHECK_FALSE(plain.persistent_models);
  CHECK(plain.sign_penalty == 0.0);
}

TEST_CASE("rsa: g = lambda * sum of the signs of x_i - theta, each row moving a coordinate by at most lambda") {
  auto rule = load<Aggregator>("rsa", "lambda = 0.5");
  auto u = matrix({{2, -1, 0}, {1e9, -3, 0.1}, {-0.2, 4, 0}});
  // Column signs: (1, 1, -1) -> 1; (-1, -1, 1) -> -1; (0, 1, 0) -> 1. Row 1's size does not matter.
  auto result = run(rule, u);
  CHECK_TENSOR_CLOSE(result.aggregate, vec({0.5, -0.5, 0.5}), 0);
  CHECK_FALSE(result.reports_flags);
}

TEST_CASE("rsa: a NaN entry pulls nothing, an Inf entry pulls like any sign, in any row order") {
  auto rule = load<Aggregator>("rsa", "lambda = 1");
  const auto inf = std::numeric_limits<double>::infinity();
  auto u = matrix({{std::nan(""), -inf}, {1, 1}});
  CHECK_TENSOR_CLOSE(run(rule, u).aggregate, vec({1, 0}), 0);
  auto random = random_rows(9, 7, 101);
  auto order = torch::randperm(9, make_generator(102), torch::kLong);
  CHECK_TENSOR_CLOSE(run(rule, random.index_select(0, order)).aggregate, run(rule, random).aggregate, 0);
  auto single = run(rule, random.to(torch::kFloat)).aggregate;
  CHECK((single.scalar_type() == torch::kFloat));
}
