// Nearest-neighbour mixing (NNM), as a pre-aggregator (Allouah, Farhadkhani, Guerraoui, Gupta,
// Pinot, Stephan, "Fixing by Mixing: A Recipe for Optimal Byzantine ML under Heterogeneity",
// AISTATS 2023, Algorithm 1):
//
//   y_i = (1 / (n − f)) Σ_{j ∈ N_i} u_j,   N_i = the n − f rows closest to u_i, u_i itself included
//
// Every row is replaced by the mean of its n − f nearest neighbours; the mixed rows then go to the
// robust rule after it (`pre = ["nnm"]`), which the paper shows makes rules such as Krum, the
// median or the trimmed mean order-optimal under heterogeneity. Needs n > 2f. Distances come from
// one Gram matrix of the rows in float64, centred on their median (bulwark/robust.hpp), and the
// mixing is a second matmul Y = M U with M_ij = 1/(n − f) for j ∈ N_i. Rows at equal distance
// from u_i enter N_i by lowest row index first. Used alone, aggregate() mixes and then takes the
// plain mean. Row weights pass through unchanged.
//
// `f` = -1 (the default) takes the experiment's declared Byzantine bound (context.byzantine_bound).
//
// Non-finite rows: a row with a NaN/±Inf entry (or so large that its squared distance overflows
// float64) is certainly Byzantine: it is nobody's neighbour, and it passes through unchanged (still
// non-finite) so that the rule after it can exclude and flag it. The others mix over the n' = n − k
// finite rows with f' = max(f − k, 0), i.e. over n' − f' = n − f neighbours (fewer when k > f).
// The plain mean of aggregate() skips non-finite rows (g = 0 if none is finite).
#include <torch/torch.h>

#include <algorithm>
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"f", bulwark::OptType::Int, "-1", -1, bulwark::kInf,
     "Byzantine bound f (NNM needs n > 2f); -1 uses the experiment's declared bound."},
};

class NearestNeighbourMixing final : public bulwark::Aggregator {
 public:
  explicit NearestNeighbourMixing(const bulwark::Options& options)
      : f_(options.get<std::int64_t>("f")) {}

  bulwark::UpdateSet preprocess(const torch::Tensor& updates, const torch::Tensor& weights,
                                const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "nnm");
    const auto n = updates.size(0);
    const auto f = f_ >= 0 ? f_ : context.byzantine_bound;
    bulwark::check_update_count(n, f, 0, "nnm", "Allouah et al. 2023");

    const auto finite = bulwark::finite_pairwise_distances(updates);
    const auto& good = finite.rows;
    const auto kept = good.numel();
    if (kept == 0) return {updates, weights};

    const auto neighbours = std::min(n - f, kept);
    // A stable sort: rows at equal distance enter in row order, so ties go to the lowest row
    // index (topk leaves their order open). The diagonal is exactly 0, so u_i (or an identical
    // row) is always among its own nearest rows.
    auto nearest = std::get<1>(finite.squared.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false))
                       .narrow(/*dim=*/1, 0, neighbours);
    auto mixing = torch::zeros({kept, kept}, updates.options())
                      .scatter_(/*dim=*/1, nearest, 1.0 / static_cast<double>(neighbours));
    if (kept == n) return {torch::matmul(mixing, updates), weights};
    auto mixed = updates.clone();
    mixed.index_copy_(0, good, torch::matmul(mixing, updates.index_select(0, good)));
    return {mixed, weights};
  }

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor& weights,
                                       const bulwark::AggregationContext& context) override {
    bulwark::AggregationResult result;
    result.aggregate = bulwark::finite_mean(preprocess(updates, weights, context).updates);
    return result;
  }

 private:
  std::int64_t f_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, NearestNeighbourMixing, "nnm", "1.0.0",
               "Nearest-neighbour mixing pre-aggregator (Allouah et al., AISTATS 2023)",
               "Nearest-neighbour mixing (Y. Allouah, S. Farhadkhani, R. Guerraoui, N. Gupta, R. "
               "Pinot, J. Stephan, 'Fixing by Mixing: A Recipe for Optimal Byzantine ML under "
               "Heterogeneity', AISTATS 2023), a pre-aggregator: every row is replaced by the mean "
               "of its n - f nearest rows, itself included (distances from a float64 Gram matrix of the "
               "centred rows). Needs "
               "n > 2f. f = -1 uses the declared Byzantine bound. Chain with pre = [\"nnm\"]; "
               "alone it mixes then averages. Non-finite rows are nobody's neighbour and pass "
               "through.",
               kOptions)
