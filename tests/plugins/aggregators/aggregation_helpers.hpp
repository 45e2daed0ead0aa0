#pragma once

// Small helpers shared by the aggregator suites: hand-written update matrices, a context built by
// hand, and tensor comparisons that print both sides when they fail.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

// LibTorch first: it pulls in glog, whose CHECK macro would otherwise replace doctest's.
#include <torch/torch.h>
#include <doctest/doctest.h>

#include "bulwark/aggregator.hpp"
#include "bulwark/error.hpp"
#include "bulwark/rng.hpp"
#include "test_support.hpp"

namespace bulwark::test {

using ::bulwark::make_generator;
using Rows = std::initializer_list<std::initializer_list<double>>;

/// A float64 matrix written row by row: matrix({{1, 2}, {3, 4}}).
inline torch::Tensor matrix(Rows rows) {
  std::vector<torch::Tensor> out;
  for (const auto& row : rows) {
    out.push_back(torch::tensor(std::vector<double>(row), torch::kDouble));
  }
  return torch::stack(out);
}

inline torch::Tensor vec(std::initializer_list<double> values) {
  return torch::tensor(std::vector<double>(values), torch::kDouble);
}

/// A context as the engine would fill it for a round: declared bound f, a seeded generator.
inline AggregationContext context(std::int64_t f = 0, std::int64_t round = 0) {
  AggregationContext c;
  c.round = round;
  c.byzantine_bound = f;
  c.generator = make_generator(/*seed=*/1234);
  return c;
}

inline torch::Tensor unit_weights(const torch::Tensor& updates) {
  return torch::ones({updates.size(0)}, torch::kDouble);
}

inline AggregationResult run(const PluginHandle<Aggregator>& rule, const torch::Tensor& updates,
                             const AggregationContext& ctx = context()) {
  return rule->aggregate(updates, unit_weights(updates), ctx);
}

/// Random float64 rows with distinct values (no ties in any ordering the rules use).
inline torch::Tensor random_rows(std::int64_t n, std::int64_t d, std::uint64_t seed) {
  auto generator = make_generator(seed);
  return torch::randn({n, d}, generator, torch::kDouble);
}

/// Advances `subset` (sorted indices into 0..n−1) to the next subset of its size in lexicographic
/// order, as itertools.combinations visits them; false after the last.
inline bool next_subset(std::vector<std::int64_t>& subset, std::int64_t n) {
  const auto k = static_cast<std::int64_t>(subset.size());
  auto i = k - 1;
  while (i >= 0 && subset[static_cast<std::size_t>(i)] == n - k + i) --i;
  if (i < 0) return false;
  ++subset[static_cast<std::size_t>(i)];
  for (auto j = i + 1; j < k; ++j) subset[static_cast<std::size_t>(j)] = subset[static_cast<std::size_t>(j - 1)] + 1;
  return true;
}

/// The rows 0..n−1 not in `kept`, ascending: the flags a subset rule should report.
inline std::vector<std::int64_t> rows_outside(const std::vector<std::int64_t>& kept, std::int64_t n) {
  std::vector<std::int64_t> out;
  for (std::int64_t i = 0; i < n; ++i) {
    if (std::find(kept.begin(), kept.end(), i) == kept.end()) out.push_back(i);
  }
  return out;
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
    REQUIRE((bulwark_actual_.sizes() == bulwark_expected_.sizes()));                             \
    CHECK(torch::allclose(bulwark_actual_, bulwark_expected_, /*rtol=*/0, (tolerance)));         \
  } while (false)

}  // namespace bulwark::test
