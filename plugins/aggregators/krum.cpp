// Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine
// Tolerant Gradient Descent", NeurIPS 2017):
//
//   s(i) = Σ_{j ∈ N_i} ‖u_i − u_j‖²,   N_i = the n − f − 2 rows closest to u_i (j ≠ i)
//   g    = u_{i*},  i* = argmin_i s(i)
//
// which needs n > 2f + 2. The pairwise distances come from one Gram matrix of the rows in float64,
// centred on their median (bulwark/robust.hpp): a float32 Gram matrix loses the differences, and then
// adding one constant to every row changes the pick. Ties go to the lowest row index.
//
// `f` = -1 (the default) takes the experiment's declared Byzantine bound (context.byzantine_bound).
//
// Non-finite rows: a row with a NaN/±Inf entry (or so large that its squared distance overflows
// float64) is certainly Byzantine. The k such rows are removed and the rule
// runs on the n' = n − k others with the bound lowered to f' = max(f − k, 0); the neighbourhood
// size n' − f' − 2 then equals n − f − 2 and n' > 2f' + 2 still holds. (When k > f + 1 the
// neighbourhood is capped at the n' − 1 available rows.) If no row is finite, g = 0.
//
// Flags: every row except the selected one (reports_flags = true).
#include <torch/torch.h>

#include <algorithm>
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"f", bulwark::OptType::Int, "-1", -1, bulwark::kInf,
     "Byzantine bound f (Krum needs n > 2f + 2); -1 uses the experiment's declared bound."},
};

class Krum final : public bulwark::Aggregator {
 public:
  explicit Krum(const bulwark::Options& options) : f_(options.get<std::int64_t>("f")) {}

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "krum");
    const auto n = updates.size(0);
    const auto f = f_ >= 0 ? f_ : context.byzantine_bound;
    bulwark::check_update_count(n, f, 2, "krum", "Blanchard et al. 2017");

    const auto finite = bulwark::finite_pairwise_distances(updates);
    const auto& good = finite.rows;
    const auto kept = good.numel();

    bulwark::AggregationResult result;
    result.reports_flags = true;
    std::int64_t selected = -1;
    if (kept == 0) {
      result.aggregate = torch::zeros({updates.size(1)}, updates.options());
    } else {
      auto scores = bulwark::krum_scores(finite.squared, std::min(n - f - 2, kept - 1));
      selected = good[scores.argmin()].item<std::int64_t>();
      result.aggregate = updates[selected].clone();
    }
    for (std::int64_t i = 0; i < n; ++i) {
      if (i != selected) result.flagged_rows.push_back(i);
    }
    return result;
  }

 private:
  std::int64_t f_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, Krum, "krum", "1.0.0",
               "Krum (Blanchard et al., NeurIPS 2017)",
               "Krum (P. Blanchard, E. M. El Mhamdi, R. Guerraoui, J. Stainer, 'Machine Learning "
               "with Adversaries: Byzantine Tolerant Gradient Descent', NeurIPS 2017): each row is "
               "scored by the sum of squared distances to its n - f - 2 nearest other rows and the "
               "lowest-scored row is returned; needs n > 2f + 2. Distances come from a float64 "
               "Gram matrix of the centred rows. f = -1 uses the declared Byzantine bound. Rows "
               "with a non-finite entry are removed first (f lowered by their number). Flags every "
               "row not selected.",
               kOptions)
