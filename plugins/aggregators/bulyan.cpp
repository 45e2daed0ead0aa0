// Bulyan (El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed Learning in
// Byzantium", ICML 2018, Algorithm 1), over Krum:
//
//   1. Selection: θ = n − 2f rows are picked one at a time by Krum on the remaining set R
//      (R starts as all rows; each step scores every u_i ∈ R by Σ of squared distances to its
//      |R| − f − 2 nearest others in R, moves the lowest-scored row from R to S).
//   2. Aggregation, per coordinate k: with m_k the median of {s_k : s ∈ S} (even θ: mean of the
//      two middle values), g_k is the mean of the β = θ − 2f values s_k closest to m_k (ties in
//      distance to the lower row index).
//
// Needs n >= 4f + 3 (so that β >= 3). The pairwise distances come from one Gram matrix
// of the rows in float64, centred on their median (bulwark/robust.hpp), computed once; each Krum step
// only re-ranks the n×n matrix restricted to R. Krum itself needs |R| > 2f + 2, which the last two steps at
// n = 4f + 3 do not have; there each remaining row is scored against all other remaining rows (the
// medoid criterion), so the pick stays the most central row rather than an arbitrary one. Exact
// ties go to the lowest row index.
//
// `f` = -1 (the default) takes the experiment's declared Byzantine bound (context.byzantine_bound).
//
// Non-finite rows: a row with a NaN/±Inf entry (or so large that its squared distance overflows
// float64) is certainly Byzantine. The k such rows are removed and the rule
// runs on the n' = n − k others with f' = max(f − k, 0); n' >= 4f' + 3 still holds. If no row is
// finite, g = 0.
//
// Flags: every row not among the θ selected (reports_flags = true).
#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"f", bulwark::OptType::Int, "-1", -1, bulwark::kInf,
     "Byzantine bound f (Bulyan needs n >= 4f + 3); -1 uses the experiment's declared bound."},
};

constexpr double kInfinity = std::numeric_limits<double>::infinity();

/// Positions (into the rows of `distances`) chosen by θ successive Krum steps.
torch::Tensor iterated_krum(const torch::Tensor& distances, std::int64_t f, std::int64_t theta) {
  const auto count = distances.size(0);
  auto remaining = torch::ones({count}, torch::dtype(torch::kBool).device(distances.device()));
  std::vector<std::int64_t> chosen;
  for (std::int64_t step = 0; step < theta; ++step) {
    const auto left = count - step;
    // Krum needs |R| > 2f + 2; past that point (the last two steps at n = 4f + 3) every remaining
    // row is scored against all the others, so the pick is still the most central one.
    const auto neighbours = left > 2 * f + 2 ? left - f - 2 : left - 1;
    // Removed rows are neither candidates nor neighbours: their column is +inf for everyone.
    auto scores = bulwark::krum_scores(distances.masked_fill(~remaining.unsqueeze(0), kInfinity), neighbours);
    scores.masked_fill_(~remaining, kInfinity);
    const auto best = scores.argmin().item<std::int64_t>();
    chosen.push_back(best);
    remaining[best] = false;
  }
  return torch::tensor(chosen, torch::dtype(torch::kLong).device(distances.device()));
}

class Bulyan final : public bulwark::Aggregator {
 public:
  explicit Bulyan(const bulwark::Options& options) : f_(options.get<std::int64_t>("f")) {}

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "bulyan");
    const auto n = updates.size(0);
    const auto f = f_ >= 0 ? f_ : context.byzantine_bound;
    if (n < 4 * f + 3) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "bulyan: needs n >= 4f + 3 updates (El Mhamdi et al. 2018); found n = " +
                               std::to_string(n) + " with f = " + std::to_string(f) +
                               ". Lower f or sample at least " + std::to_string(4 * f + 3) +
                               " clients per round");
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
      const auto f_left = std::max<std::int64_t>(f - (n - kept), 0);
      const auto theta = kept - 2 * f_left;
      const auto beta = theta - 2 * f_left;
      auto chosen = good.index_select(0, iterated_krum(finite.squared, f_left, theta));
      is_selected.index_fill_(0, chosen.cpu(), true);

      auto selected = updates.index_select(0, chosen.to(updates.device()));
      if (beta == theta) {
        result.aggregate = selected.mean(/*dim=*/0);
      } else {
        result.aggregate =
            bulwark::mean_nearest_per_coordinate(selected, bulwark::coordinate_median(selected), beta);
      }
    }
    auto flagged = (~is_selected).nonzero().flatten().contiguous();
    result.flagged_rows.assign(flagged.data_ptr<std::int64_t>(),
                               flagged.data_ptr<std::int64_t>() + flagged.numel());
    return result;
  }

 private:
  std::int64_t f_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, Bulyan, "bulyan", "1.0.0",
               "Bulyan over Krum (El Mhamdi et al., ICML 2018)",
               "Bulyan (E. M. El Mhamdi, R. Guerraoui, S. Rouault, 'The Hidden Vulnerability of "
               "Distributed Learning in Byzantium', ICML 2018): theta = n - 2f rows are selected "
               "by iterated Krum (each step removes the selected row and re-runs Krum on the "
               "rest); then, per coordinate, the beta = theta - 2f values closest to the median "
               "are averaged. Needs n >= 4f + 3. f = -1 uses the declared Byzantine bound. Rows "
               "with a non-finite entry are removed first (f lowered by their number). "
               "Flags every row not selected.",
               kOptions)
