// Mean around the median, "Meamed" (Xie, Koyejo, Gupta, "Generalized Byzantine-tolerant SGD",
// arXiv:1802.10116, 2018; ByzFL's Meamed):
//
//   g_k = (1 / (n − f)) Σ_{j ∈ N_k} u_jk,   N_k = the n − f rows whose k-th value is closest to
//                                            med_k = median{u_1k, ..., u_nk}
//
// independently for every coordinate k. Needs n > 2f. The median of an even number of values is
// the mean of the two middle ones (as the `median` rule's). Values at equal distance from the
// median enter N_k by lowest row index first; distances and the median are taken in float64, so
// values placed symmetrically about the median tie exactly. Unweighted, like the paper's rule; no
// row is rejected as a whole, so no flags.
//
// `f` = -1 (the default) takes the experiment's declared Byzantine bound (context.byzantine_bound).
//
// Non-finite rows: a row with a NaN/±Inf entry is certainly Byzantine. The k such rows are removed
// and the rule runs on the n' = n − k others with f' = max(f − k, 0), averaging n' − f' values per
// coordinate. If no row is finite, g = 0.
#include <torch/torch.h>

#include <algorithm>
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"f", bulwark::OptType::Int, "-1", -1, bulwark::kInf,
     "Byzantine bound f (Meamed needs n > 2f); -1 uses the experiment's declared bound."},
};

class Meamed final : public bulwark::Aggregator {
 public:
  explicit Meamed(const bulwark::Options& options) : f_(options.get<std::int64_t>("f")) {}

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "meamed");
    const auto n = updates.size(0);
    const auto f = f_ >= 0 ? f_ : context.byzantine_bound;
    if (n <= 2 * f) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "meamed: needs n > 2f updates (Xie et al. 2018); found n = " + std::to_string(n) +
                               " with f = " + std::to_string(f) + ". Lower f or sample at least " +
                               std::to_string(2 * f + 1) + " clients per round");
    }
    const auto finite = torch::isfinite(updates).all(/*dim=*/1);
    const auto rows = finite.all().item<bool>() ? updates.to(torch::kDouble)
                                                : updates.index({finite}).to(torch::kDouble);
    const auto kept = rows.size(0);
    bulwark::AggregationResult result;
    if (kept == 0) {
      result.aggregate = torch::zeros({updates.size(1)}, updates.options());
      return result;
    }
    const auto keep = kept - std::max<std::int64_t>(f - (n - kept), 0);
    const auto distance = (rows - bulwark::coordinate_median(rows)).abs_();
    // A stable sort down each column: ties keep row order, so the lowest row index goes first.
    const auto nearest = std::get<1>(distance.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false))
                             .narrow(/*dim=*/0, 0, keep);
    result.aggregate = rows.gather(/*dim=*/0, nearest).mean(/*dim=*/0).to(updates.scalar_type());
    return result;
  }

 private:
  std::int64_t f_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, Meamed, "meamed", "1.0.0",
               "Mean around the median (Xie et al. 2018)",
               "Mean around the median (C. Xie, O. Koyejo, I. Gupta, 'Generalized Byzantine-tolerant "
               "SGD', arXiv:1802.10116, 2018): for every coordinate, the mean of the n - f values "
               "closest to that coordinate's median (even n: the mean of the two middle values). Needs "
               "n > 2f; f = -1 uses the declared Byzantine bound. Ties go to the lowest row index. Rows "
               "with a NaN/Inf entry are removed and count against f (g = 0 if none is finite). "
               "Unweighted.",
               kOptions)
