#pragma once

// The attack-factor search that adaptive model-poisoning attacks share (ALIE's z, IPM's ε): try
// factors against the experiment's own aggregator (UpdateAttackContext::aggregate_probe) and keep
// the one whose aggregate lands farthest from the honest mean. Two searches:
//   grid  every value of `grid`; the first of the largest distance wins;
//   line  ByzFL's Optimal_ALIE / Optimal_IPM search: from `start`, steps of `step` doubling while
//         the distance grows (expansion); after the first step that does not improve, steps of
//         step·ratio^k from the best point so far (contraction); `evaluations` distances in all.
// The plugin declares the options (optimize, search, grid, evaluations, start, step, ratio).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bulwark/export.hpp"
#include "bulwark/options.hpp"

namespace bulwark {

class BULWARK_API FactorSearch {
 public:
  /// Reads and checks the options; Error(Config) naming `who` for an empty grid, a ratio outside
  /// (0.5, 1) (ByzFL's range), a zero step or fewer than one evaluation.
  FactorSearch(const Options& options, const char* who);

  bool enabled() const { return enabled_; }
  /// The factor of largest `distance(factor)` under the configured search.
  double best(const std::function<double(double)>& distance) const;

 private:
  bool enabled_, line_;
  std::vector<double> grid_;
  std::int64_t evaluations_;
  double start_, step_, ratio_;
};

}  // namespace bulwark
