// Multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries:
// Byzantine Tolerant Gradient Descent", NeurIPS 2017, Section 5):
//
//   s(i) = Σ_{j ∈ N_i} ‖u_i − u_j‖²,   N_i = the n − f − 2 rows closest to u_i (j ≠ i)
//   g    = (1/m) Σ_{i ∈ M} u_i,       M = the m rows with the lowest scores
//
// m = 1 is Krum; m defaults to n − f. Needs n > 2f + 2. The pairwise distances come from one Gram
// matrix of the rows in float64, centred on their median (bulwark/robust.hpp), so a constant added to
// every row cannot change the set. Equal scores are ranked by row index (stable sort).
//
// `f` = -1 (the default) takes the experiment's declared Byzantine bound (context.byzantine_bound).
//
// Non-finite rows: a row with a NaN/±Inf entry (or so large that its squared distance overflows
// float64) is certainly Byzantine. The k such rows are removed and the rule
// runs on the n' = n − k others with the bound lowered to f' = max(f − k, 0): the neighbourhood
// size stays n − f − 2 (capped at n' − 1) and the default m = n' − f' stays n − f. At most n' rows
// can be selected. If no row is finite, g = 0.
//
// Flags: every row not among the m selected (reports_flags = true).
#include <torch/torch.h>

#include <algorithm>
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"f", bulwark::OptType::Int, "-1", -1, bulwark::kInf,
     "Byzantine bound f (needs n > 2f + 2); -1 uses the experiment's declared bound."},
    {"m", bulwark::OptType::Int, "-1", -1, bulwark::kInf,
     "Number of best-scored rows averaged (m = 1 is Krum); -1 means m = n - f."},
};

class MultiKrum final : public bulwark::Aggregator {
 public:
  explicit MultiKrum(const bulwark::Options& options)
      : f_(options.get<std::int64_t>("f")), m_(options.get<std::int64_t>("m")) {
    if (m_ == 0) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "multi_krum: m = 0 selects no update; use m >= 1, or m = -1 for n - f");
    }
  }

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "multi_krum");
    const auto n = updates.size(0);
    const auto f = f_ >= 0 ? f_ : context.byzantine_bound;
    bulwark::check_update_count(n, f, 2, "multi_krum", "Blanchard et al. 2017");
    const auto m = m_ > 0 ? m_ : n - f;
    if (m > n) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "multi_krum: m = " + std::to_string(m) + " exceeds the n = " +
                               std::to_string(n) + " updates of this round; use m <= n");
    }

    const auto finite = bulwark::finite_pairwise_distances(updates);
    const auto& good = finite.rows;
    const auto kept = good.numel();

    bulwark::AggregationResult result;
    result.reports_flags = true;
    auto is_selected = torch::zeros({n}, torch::kBool);
    if (kept == 0) {
      result.aggregate = torch::zeros({updates.size(1)}, updates.options());
    } else {
      auto scores = bulwark::krum_scores(finite.squared, std::min(n - f - 2, kept - 1));
      auto order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
      const auto selected = std::min(m, kept);
      auto chosen = good.index_select(0, order.narrow(0, 0, selected));
      if (kept == n) {
        // Every row is finite, so a 0/(1/m) weight vector times U gives the mean of the chosen
        // rows without copying them (0 · NaN would be NaN, hence only in this case).
        auto mask = torch::zeros({n}, updates.options()).index_fill_(0, chosen, 1.0 / selected);
        result.aggregate = torch::matmul(mask, updates);
      } else {
        result.aggregate = updates.index_select(0, chosen).mean(/*dim=*/0);
      }
      is_selected.index_fill_(0, chosen.cpu(), true);
    }
    auto flagged = (~is_selected).nonzero().flatten().contiguous();
    result.flagged_rows.assign(flagged.data_ptr<std::int64_t>(),
                               flagged.data_ptr<std::int64_t>() + flagged.numel());
    return result;
  }

 private:
  std::int64_t f_;
  std::int64_t m_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, MultiKrum, "multi_krum", "1.0.0",
               "Multi-Krum (Blanchard et al., NeurIPS 2017)",
               "Multi-Krum (P. Blanchard, E. M. El Mhamdi, R. Guerraoui, J. Stainer, 'Machine "
               "Learning with Adversaries: Byzantine Tolerant Gradient Descent', NeurIPS 2017): "
               "Krum scores (sum of squared distances to the n - f - 2 nearest other rows), then "
               "the mean of the m lowest-scored rows (default m = n - f; m = 1 is Krum). Needs n > "
               "2f + 2. Distances come from a float64 Gram matrix of the centred rows. f = -1 "
               "uses the declared Byzantine "
               "bound. Rows with a non-finite entry are removed first (f lowered by their "
               "number). Flags every row not selected.",
               kOptions)
