// Coordinate-wise median (Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed
// Learning: Towards Optimal Statistical Rates", ICML 2018, Definition 1):
//
//   g_k = med{ u_1k, u_2k, ..., u_nk }      independently for every coordinate k = 1..d
//
// Even n: g_k is the mean of the two middle order statistics, (u_(n/2),k + u_(n/2+1),k) / 2 (the
// usual convention, numpy.median's; torch.median alone would return the lower one).
//
// Non-finite rows: a row with any NaN or ±Inf entry is dropped before the median is taken (it
// carries no usable coordinate ordering for NaN, and an Inf is an outlier by definition); the
// median is then that of the remaining finite rows. With no finite row left, g = 0 (no step).
// The rule is unweighted: sample counts are ignored, as in the paper.
//
// Cost: one sort (even n) or one selection (odd n) along dim 0 of U[n, d].
#include <torch/torch.h>

#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

class Median final : public bulwark::Aggregator {
 public:
  explicit Median(const bulwark::Options&) {}

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext&) override {
    bulwark::check_update_matrix(updates, "median");
    auto finite = torch::isfinite(updates).all(/*dim=*/1);
    bulwark::AggregationResult result;
    if (finite.all().item<bool>()) {
      result.aggregate = bulwark::coordinate_median(updates);
    } else if (finite.any().item<bool>()) {
      result.aggregate = bulwark::coordinate_median(updates.index({finite}));
    } else {
      result.aggregate = torch::zeros({updates.size(1)}, updates.options());
    }
    return result;
  }
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, Median, "median", "1.0.0",
               "Coordinate-wise median (Yin et al., ICML 2018)",
               "Coordinate-wise median (D. Yin, Y. Chen, K. Ramchandran, P. Bartlett, "
               "'Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates', ICML "
               "2018): g_k = median of u_1k..u_nk for every coordinate k. For an even number of "
               "rows the median is the mean of the two middle values. Rows with any NaN/Inf entry "
               "are dropped first (g = 0 if none is finite). Unweighted; no options.",
               nullptr)
