// Smallest maximum eigenvalue averaging, SMEA (Allouah, Guerraoui, Gupta, Pinot, Stephan, "On the
// Privacy-Robustness-Utility Trilemma in Distributed Learning", ICML 2023; ByzFL's SMEA):
//
//   S* = argmin_{S ⊆ [n], |S| = n − f}  λ_max( Σ_{i ∈ S} (u_i − ū_S)(u_i − ū_S)ᵀ ),   g = ū_{S*}
//
// Ties: the first minimum in lexicographic order of the subsets' sorted indices (ByzFL's loop over
// itertools.combinations). Needs n > 2f. Unweighted. Flags: every row outside S*.
//
// Exact, by enumeration: minimising a top eigenvalue over subsets has no known shortcut, so the
// C(n, f) subsets are all visited, and more than 10^6 of them is refused with a clear error (n = 20,
// f = 5 is 15,504). Each subset's λ_max is exact: the top eigenvalue of its centred Gram matrix
// J K_S J (size n − f), with K the Gram matrix of all rows computed once (float64, rows centred on
// their median, bulwark/robust.hpp). ByzFL estimates each λ_max with one power-iteration step from
// a random vector, so its choice is random; this plugin computes the definition.
//
// `f` = -1 (the default) takes the experiment's declared Byzantine bound (context.byzantine_bound).
//
// Non-finite rows: a row with a NaN/±Inf entry is never in S* and counts as one of the f: the
// search runs over the k finite rows with f' = max(f − k, 0).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"f", bulwark::OptType::Int, "-1", -1, bulwark::kInf,
     "Byzantine bound f (SMEA keeps n - f rows; needs n > 2f); -1 uses the experiment's declared bound."},
};

constexpr double kMaxSubsets = 1e6;

/// C(n, k) as a double (exact far beyond kMaxSubsets).
double binomial(std::int64_t n, std::int64_t k) {
  double value = 1;
  for (std::int64_t i = 1; i <= k; ++i) value = value * static_cast<double>(n - k + i) / static_cast<double>(i);
  return value;
}

class SmallestMaxEigenvalueAveraging final : public bulwark::Aggregator {
 public:
  explicit SmallestMaxEigenvalueAveraging(const bulwark::Options& options) : f_(options.get<std::int64_t>("f")) {}

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "smea");
    const auto n = updates.size(0);
    const auto f = f_ >= 0 ? f_ : context.byzantine_bound;
    bulwark::check_update_count(n, f, 0, "smea", "Allouah et al. 2023");
    bulwark::AggregationResult result;
    result.reports_flags = true;
    const auto finite = bulwark::finite_pairwise_distances(updates);
    const auto m = finite.rows.size(0);
    const auto drop = std::max<std::int64_t>(f - (n - m), 0);
    if (binomial(m, drop) > kMaxSubsets) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "smea: choosing " + std::to_string(m - drop) + " of " + std::to_string(m) +
                               " rows means visiting more than 10^6 subsets; use a smaller f or fewer clients "
                               "per round, or an approximate rule such as caf");
    }
    if (m == 0) {
      result.aggregate = torch::zeros({updates.size(1)}, updates.options());
      result.flagged_rows = bulwark::rows_not_in(finite.rows, n);
      return result;
    }
    // Inner products of the rows (about their mean) from the squared distances: −½ J D J.
    const auto centring = torch::eye(m, torch::kDouble) - 1.0 / static_cast<double>(m);
    const auto gram = centring.matmul(finite.squared.to(torch::kCPU)).matmul(centring) * -0.5;  // n × n, on the CPU
    const auto keep = m - drop;
    const auto subset_centring = torch::eye(keep, torch::kDouble) - 1.0 / static_cast<double>(keep);
    std::vector<std::int64_t> subset(static_cast<std::size_t>(keep)), best;
    for (std::int64_t i = 0; i < keep; ++i) subset[static_cast<std::size_t>(i)] = i;
    double best_eigenvalue = std::numeric_limits<double>::infinity();
    while (true) {
      const auto index = torch::tensor(subset, torch::kLong);
      const auto scatter =
          subset_centring.matmul(gram.index_select(0, index).index_select(1, index)).matmul(subset_centring);
      const double eigenvalue = torch::linalg::eigvalsh(scatter, "L")[keep - 1].item<double>();
      if (eigenvalue < best_eigenvalue) best_eigenvalue = eigenvalue, best = subset;
      // The next subset in lexicographic order.
      auto i = keep - 1;
      while (i >= 0 && subset[static_cast<std::size_t>(i)] == m - keep + i) --i;
      if (i < 0) break;
      ++subset[static_cast<std::size_t>(i)];
      for (auto j = i + 1; j < keep; ++j) subset[static_cast<std::size_t>(j)] = subset[static_cast<std::size_t>(j - 1)] + 1;
    }

    const auto chosen = finite.rows.index_select(0, torch::tensor(best, torch::kLong).to(finite.rows.device()));
    result.aggregate = updates.index_select(0, chosen).to(torch::kDouble).mean(/*dim=*/0).to(updates.scalar_type());
    result.flagged_rows = bulwark::rows_not_in(chosen, n);
    return result;
  }

 private:
  std::int64_t f_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, SmallestMaxEigenvalueAveraging, "smea", "1.0.0",
               "Smallest maximum eigenvalue averaging, SMEA (Allouah et al., ICML 2023)",
               "SMEA (Y. Allouah, R. Guerraoui, N. Gupta, R. Pinot, J. Stephan, 'On the "
               "Privacy-Robustness-Utility Trilemma in Distributed Learning', ICML 2023): the mean of the "
               "n - f rows whose scatter matrix has the smallest top eigenvalue. Exact: every subset is "
               "visited (refused beyond 10^6 subsets), each eigenvalue exact (ByzFL uses one random "
               "power step); ties go to the lexicographically first subset. Needs n > 2f; f = -1 uses "
               "the declared Byzantine bound. NaN/Inf rows are never kept. Flags rows left out. "
               "Unweighted.",
               kOptions)
