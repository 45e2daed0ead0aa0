#pragma once

// Helpers shared by the attack suites: hand-written update matrices, the contexts the engine builds
// for the update hook, and tensor comparisons that print both sides when they fail.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include "bulwark/attack.hpp"
#include "bulwark/error.hpp"
#include "bulwark/rng.hpp"
#include "test_support.hpp"

namespace bulwark::test {

using Rows = std::initializer_list<std::initializer_list<double>>;

/// A float64 matrix written row by row: matrix({{1, 2}, {3, 4}}).
inline torch::Tensor matrix(Rows rows) {
  std::vector<torch::Tensor> out;
  for (const auto& row : rows) out.push_back(torch::tensor(std::vector<double>(row), torch::kDouble));
  return torch::stack(out);
}

inline torch::Tensor vec(std::initializer_list<double> values) {
  return torch::tensor(std::vector<double>(values), torch::kDouble);
}

/// The context of an omniscient call on the full U[n, d]: rows `malicious` are the attacker's, all
/// others honest, f = |malicious|.
inline UpdateAttackContext full_context(std::int64_t n, std::vector<std::int64_t> malicious,
                                        std::uint64_t seed = 1234) {
  UpdateAttackContext c;
  c.round = 1;
  c.num_clients = n;
  c.num_malicious = static_cast<std::int64_t>(malicious.size());
  for (std::int64_t i = 0; i < n; ++i) {
    if (std::find(malicious.begin(), malicious.end(), i) == malicious.end()) c.honest_rows.push_back(i);
  }
  c.malicious_rows = std::move(malicious);
  c.generator = make_generator(seed);
  return c;
}

/// The context of a non-omniscient call: the attacker's own m rows only, numbered 0..m-1, in a
/// round of n clients with f malicious ones.
inline UpdateAttackContext own_context(std::int64_t m, std::int64_t n, std::int64_t f, std::uint64_t seed = 1234) {
  UpdateAttackContext c;
  c.round = 1;
  c.num_clients = n;
  c.num_malicious = f;
  for (std::int64_t i = 0; i < m; ++i) c.malicious_rows.push_back(i);
  c.generator = make_generator(seed);
  return c;
}

inline std::string show(const torch::Tensor& t) {
  std::ostringstream out;
  out << t;
  return out.str();
}

/// allclose with the two tensors in the failure message.
#define CHECK_TENSOR_CLOSE(actual, expected, tolerance)                                          \
  do {                                                                                           \
    const auto bulwark_actual_ = (actual).to(torch::kDouble);                                    \
    const auto bulwark_expected_ = (expected).to(torch::kDouble);                                \
    INFO("actual:   " << ::bulwark::test::show(bulwark_actual_));                               \
    INFO("expected: " << ::bulwark::test::show(bulwark_expected_));                             \
    REQUIRE(bulwark_actual_.sizes() == bulwark_expected_.sizes());                               \
    CHECK(torch::allclose(bulwark_actual_, bulwark_expected_, /*rtol=*/0, (tolerance)));         \
  } while (false)

}  // namespace bulwark::test
