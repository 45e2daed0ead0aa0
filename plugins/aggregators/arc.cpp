// Adaptive robust clipping, ARC, as a pre-aggregator (Allouah, Guerraoui, Gupta, Jellouli, Rizk,
// Stephan, "The Vital Role of Gradient Clipping in Byzantine-Resilient Distributed Learning",
// arXiv:2405.14432, 2024; ByzFL's ARC):
//
//   k = ⌊2 (f/n) (n − f)⌋,   C = the (k + 1)-th largest norm ‖u_i‖,   u_i ← u_i · min(1, C / ‖u_i‖)
//
// i.e. the k longest rows are clipped to the length of the longest row left alone. k is the
// paper's floor of the exact rational 2f(n − f)/n, computed in integers. Rows of equal norm need no
// tie rule: clipping a row to its own length leaves it as it is. Chain it in front of a rule with
// `pre = ["arc"]`; used alone, aggregate() clips and then takes the plain mean. Row weights pass
// through unchanged.
//
// `f` = -1 (the default) takes the experiment's declared Byzantine bound (context.byzantine_bound).
//
// Non-finite rows: a row with a NaN/±Inf entry ranks as the longest (norm +inf) and passes through
// unchanged, so the rule after it sees (and can exclude and flag) it; when more than k rows are
// non-finite, no finite row is clipped. So does a finite row whose norm overflows the input's
// precision; clipped, it is clipped exactly (bulwark::clip_rows).
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"f", bulwark::OptType::Int, "-1", -1, bulwark::kInf,
     "Byzantine bound f (clips the floor(2f(n - f)/n) longest rows; needs f <= n); -1 uses the experiment's "
     "declared bound."},
};

class AdaptiveRobustClipping final : public bulwark::Aggregator {
 public:
  explicit AdaptiveRobustClipping(const bulwark::Options& options) : f_(options.get<std::int64_t>("f")) {}

  bulwark::UpdateSet preprocess(const torch::Tensor& updates, const torch::Tensor& weights,
                                const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "arc");
    const auto n = updates.size(0);
    const auto f = f_ >= 0 ? f_ : context.byzantine_bound;
    if (f > n) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "arc: f = " + std::to_string(f) + " exceeds the " + std::to_string(n) +
                               " updates; lower f or sample more clients per round");
    }
    const auto clipped_rows = 2 * f * (n - f) / n;
    if (clipped_rows == 0) return {updates, weights};
    // The same norms clip_rows compares with C, so the (k + 1)-th row itself is left as it is.
    auto norms = updates.norm(2, /*dim=*/1).to(torch::kDouble);
    norms.masked_fill_(norms.isnan(), std::numeric_limits<double>::infinity());
    const double threshold = std::get<0>(norms.sort()).index({n - clipped_rows - 1}).item<double>();
    if (!std::isfinite(threshold)) return {updates, weights};
    return {bulwark::clip_rows(updates, threshold), weights};
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

BULWARK_PLUGIN(bulwark::Aggregator, AdaptiveRobustClipping, "arc", "1.0.0",
               "Adaptive robust clipping pre-aggregator, ARC (Allouah et al. 2024)",
               "Adaptive robust clipping (Y. Allouah, R. Guerraoui, N. Gupta, A. Jellouli, G. Rizk, J. "
               "Stephan, 'The Vital Role of Gradient Clipping in Byzantine-Resilient Distributed "
               "Learning', 2024), a pre-aggregator: the k = floor(2f(n - f)/n) longest rows are clipped "
               "to the (k + 1)-th largest norm. f = -1 uses the declared Byzantine bound. Chain with pre "
               "= [\"arc\"]; alone it clips then averages. Rows with NaN/Inf rank longest and pass "
               "through unchanged.",
               kOptions)
