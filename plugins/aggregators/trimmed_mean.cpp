// Coordinate-wise trimmed mean (Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed
// Learning: Towards Optimal Statistical Rates", ICML 2018, Definition 2):
//
//   g_k = 1 / (n - 2b) · Σ_{i = b+1}^{n-b} u_(i),k
//
// where u_(1),k <= ... <= u_(n),k are the sorted values of coordinate k: the b largest and the b
// smallest values of every coordinate are removed and the rest averaged. The paper writes the trim
// as a fraction β (b = βn); here `b` gives the count directly, `beta` gives b = floor(β n), and
// with neither set b is the declared Byzantine bound f (context.byzantine_bound). n > 2b is
// required.
//
// Non-finite rows: a row with any NaN or ±Inf entry is certainly faulty. The k such rows are
// dropped and count against the trimming budget: the remaining n - k rows are trimmed by b' = max(b
// - k, 0) from each end. If b was at least the number of bad rows, b' is at least the number of bad
// rows left, so the guarantee is kept, and n - k > 2b' always holds. With no finite row left, g =
// 0. The rule is unweighted: sample counts are ignored, as in the paper.
//
// Cost: one sort along dim 0 of U[n, d] (none when b' = 0).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"b", bulwark::OptType::Int, "-1", -1, bulwark::kInf,
     "Values trimmed from each end of every coordinate; -1: floor(beta n) when beta is set, "
     "else the declared Byzantine bound f."},
    {"beta", bulwark::OptType::Float, "0", 0, 0.5,
     "Fraction trimmed from each end (b = floor(beta n)); used only when set, instead of b."},
};

class TrimmedMean final : public bulwark::Aggregator {
 public:
  explicit TrimmedMean(const bulwark::Options& options)
      : b_(options.get<std::int64_t>("b")),
        beta_(options.get<double>("beta")),
        beta_set_(options.is_set("beta")) {
    if (b_ >= 0 && beta_set_) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "trimmed_mean: set either b (a count) or beta (a fraction), not both");
    }
  }

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "trimmed_mean");
    const auto n = updates.size(0);
    const std::int64_t b = b_ >= 0    ? b_
                           : beta_set_ ? static_cast<std::int64_t>(std::floor(beta_ * n))
                                       : context.byzantine_bound;
    if (2 * b >= n) {
      throw bulwark::Error(
          bulwark::ErrorKind::Config,
          "trimmed_mean: cannot trim b = " + std::to_string(b) + " values from each end of n = " +
              std::to_string(n) + " updates; needs n > 2b. Lower b (or beta, or the Byzantine "
              "bound f) or sample at least " + std::to_string(2 * b + 1) + " clients per round");
    }

    auto finite = torch::isfinite(updates).all(/*dim=*/1);
    const auto kept = finite.sum().item<std::int64_t>();
    bulwark::AggregationResult result;
    if (kept == 0) {
      result.aggregate = torch::zeros({updates.size(1)}, updates.options());
      return result;
    }
    auto rows = kept == n ? updates : updates.index({finite});
    const auto trim = std::max<std::int64_t>(b - (n - kept), 0);
    if (trim == 0) {
      result.aggregate = rows.mean(/*dim=*/0);
    } else {
      auto sorted = std::get<0>(rows.sort(/*dim=*/0));
      result.aggregate = sorted.narrow(/*dim=*/0, trim, kept - 2 * trim).mean(/*dim=*/0);
    }
    return result;
  }

 private:
  std::int64_t b_;
  double beta_;
  bool beta_set_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, TrimmedMean, "trimmed_mean", "1.0.0",
               "Coordinate-wise trimmed mean (Yin et al., ICML 2018)",
               "Coordinate-wise trimmed mean (D. Yin, Y. Chen, K. Ramchandran, P. Bartlett, "
               "'Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates', ICML "
               "2018): for every coordinate, drop the b largest and b smallest values and average "
               "the remaining n - 2b. b is given directly (b), as a fraction (beta: b = floor(beta "
               "n)), or defaults to the declared Byzantine bound f; n > 2b is required. Rows with "
               "any NaN/Inf entry are dropped and each reduces the trim by one (b' = max(b - k, "
               "0)).",
               kOptions)
