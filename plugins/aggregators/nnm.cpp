// Nearest-neighbour mixing (NNM), as a pre-aggregator (Allouah, Farhadkhani, Guerraoui, Gupta,
// Pinot, Stephan, "Fixing by Mixing: A Recipe for Optimal Byzantine ML under Heterogeneity",
// AISTATS 2023, Algorithm 1):
//
//   y_i = (1 / (n − f)) Σ_{j ∈ N_i} u_j,   N_i = the n − f rows closest to u_i, u_i itself included
//
// Every row is replaced by the mean of its n − f nearest neighbours; the mixed rows then go to the
// robust rule after it (`pre = ["nnm"]`), which the paper shows makes rules such as Krum, the
// median or the trimmed mean order-optimal under heterogeneity. Needs n > 2f. Distances come from
// one Gram matrix G = U Uᵀ (‖u_i − u_j‖² = G_ii + G_jj − 2 G_ij, n×n arithmetic in float64), and
// the mixing is a second matmul Y = M U with M_ij = 1/(n − f) for j ∈ N_i. Used alone, aggregate()
// mixes and then takes the plain mean. Row weights pass through unchanged.
//
// `f` = -1 (the default) takes the experiment's declared Byzantine bound (context.byzantine_bound).
//
// Non-finite rows: a row whose squared norm G_ii is not finite (a NaN/±Inf entry, or an overflowing
// norm) is certainly Byzantine: it is nobody's neighbour, and it passes through unchanged (still
// non-finite) so that the rule after it can exclude and flag it. The others mix over the n' = n − k
// finite rows with f' = max(f − k, 0), i.e. over n' − f' = n − f neighbours (fewer when k > f).
// The plain mean of aggregate() skips non-finite rows (g = 0 if none is finite).
#include <torch/torch.h>

#include <algorithm>
#include <sstream>
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"f", bulwark::OptType::Int, "-1", -1, bulwark::kInf,
     "Byzantine bound f (NNM needs n > 2f); -1 uses the experiment's declared bound."},
};

void check_updates(const torch::Tensor& updates) {
  if (!updates.defined() || updates.dim() != 2 || updates.size(0) < 1 ||
      !updates.is_floating_point()) {
    std::ostringstream found;
    if (updates.defined()) found << updates.sizes() << " " << updates.scalar_type();
    else found << "an undefined tensor";
    throw bulwark::Error(
        bulwark::ErrorKind::Data,
        "nnm: expected the update matrix U[n, d] (floating point, n >= 1); found " + found.str());
  }
}

/// The mean of the rows with no NaN/Inf entry; 0 when there is none.
torch::Tensor finite_mean(const torch::Tensor& rows) {
  auto finite = torch::isfinite(rows).all(/*dim=*/1);
  if (finite.all().item<bool>()) return rows.mean(/*dim=*/0);
  if (!finite.any().item<bool>()) return torch::zeros({rows.size(1)}, rows.options());
  return rows.index({finite}).mean(/*dim=*/0);
}

class NearestNeighbourMixing final : public bulwark::Aggregator {
 public:
  explicit NearestNeighbourMixing(const bulwark::Options& options)
      : f_(options.get<std::int64_t>("f")) {}

  bulwark::UpdateSet preprocess(const torch::Tensor& updates, const torch::Tensor& weights,
                                const bulwark::AggregationContext& context) override {
    check_updates(updates);
    const auto n = updates.size(0);
    const auto f = f_ >= 0 ? f_ : context.byzantine_bound;
    if (n <= 2 * f) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "nnm: needs n > 2f updates (Allouah et al. 2023); found n = " +
                               std::to_string(n) + " with f = " + std::to_string(f) +
                               ". Lower f or sample at least " + std::to_string(2 * f + 1) +
                               " clients per round");
    }

    auto gram = torch::matmul(updates, updates.t()).to(torch::kDouble);
    auto squared_norms = gram.diagonal();
    auto good = torch::isfinite(squared_norms).nonzero().flatten();
    const auto kept = good.numel();
    if (kept == 0) return {updates, weights};

    const auto neighbours = std::min(n - f, kept);
    auto g = gram.index_select(0, good).index_select(1, good);
    auto sq = squared_norms.index_select(0, good);
    auto distances = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * g).clamp_min_(0);
    // Exactly 0 to itself (rounding could otherwise rank an identical row first): u_i ∈ N_i.
    distances.fill_diagonal_(0);
    auto nearest = std::get<1>(distances.topk(neighbours, /*dim=*/1, /*largest=*/false));
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
    result.aggregate = finite_mean(preprocess(updates, weights, context).updates);
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
               "of its n - f nearest rows, itself included (distances from one Gram matrix). Needs "
               "n > 2f. f = -1 uses the declared Byzantine bound. Chain with pre = [\"nnm\"]; "
               "alone it mixes then averages. Non-finite rows are nobody's neighbour and pass "
               "through.",
               kOptions)
