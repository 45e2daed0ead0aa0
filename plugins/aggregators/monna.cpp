// MoNNA, the mean of the pivot's nearest neighbours (Farhadkhani, Guerraoui, Gupta, Hoang, Pinot,
// Stephan, "Robust Collaborative Learning with Linear Gradient Overhead", ICML 2023; ByzFL's
// MoNNA):
//
//   g = (1 / (n − f)) Σ_{j ∈ N_p} u_j,   N_p = the n − f rows closest to the pivot row u_p
//
// The pivot is a row known to be honest: in the paper's peer-to-peer setting a node's own
// gradient. A server has no such row, so `pivot` names one (default row 0, as ByzFL); the rule is
// only as robust as that choice. Needs n > 2f. Distances ‖u_j − u_p‖² are computed from the
// differences in float64, so equally distant rows tie exactly, and ties enter N_p by lowest row
// index first; the pivot itself (distance 0) is always in N_p. Unweighted. Flags: every row
// outside N_p.
//
// `f` = -1 (the default) takes the experiment's declared Byzantine bound (context.byzantine_bound).
//
// Non-finite rows: a row with a NaN/±Inf entry is nobody's neighbour; the mean is over the n − f
// nearest finite rows (fewer if fewer are finite). A non-finite pivot is an error: the rule's one
// assumption is broken, and no neighbourhood of it means anything.
#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"f", bulwark::OptType::Int, "-1", -1, bulwark::kInf,
     "Byzantine bound f (MoNNA needs n > 2f); -1 uses the experiment's declared bound."},
    {"pivot", bulwark::OptType::Int, "0", 0, bulwark::kInf,
     "Row of the update matrix taken as the honest pivot (ByzFL's idx)."},
};

class MoNNA final : public bulwark::Aggregator {
 public:
  explicit MoNNA(const bulwark::Options& options)
      : f_(options.get<std::int64_t>("f")), pivot_(options.get<std::int64_t>("pivot")) {}

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "monna");
    const auto n = updates.size(0);
    const auto f = f_ >= 0 ? f_ : context.byzantine_bound;
    bulwark::check_update_count(n, f, 0, "monna", "Farhadkhani et al. 2023");
    if (pivot_ >= n) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "monna: pivot = " + std::to_string(pivot_) + " is not a row of the " +
                               std::to_string(n) + " updates; choose a row from 0 to " + std::to_string(n - 1));
    }
    const auto finite = torch::isfinite(updates).all(/*dim=*/1);
    if (!finite[pivot_].item<bool>()) {
      throw bulwark::Error(bulwark::ErrorKind::Runtime,
                           "monna: the pivot row " + std::to_string(pivot_) +
                               " holds NaN or Inf, so it is not the honest row the rule assumes; choose "
                               "another pivot or another rule");
    }
    const auto rows = updates.to(torch::kDouble);
    auto distance = (rows - rows[pivot_]).pow_(2).sum(/*dim=*/1);
    distance.masked_fill_(finite.logical_not(), std::numeric_limits<double>::infinity());
    const auto neighbours = std::min(n - f, finite.sum().item<std::int64_t>());
    const auto nearest = std::get<1>(distance.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false))
                             .narrow(/*dim=*/0, 0, neighbours);

    bulwark::AggregationResult result;
    result.aggregate = rows.index_select(0, nearest).mean(/*dim=*/0).to(updates.scalar_type());
    result.reports_flags = true;
    result.flagged_rows = bulwark::rows_not_in(nearest, n);
    return result;
  }

 private:
  std::int64_t f_, pivot_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, MoNNA, "monna", "1.0.0",
               "Mean of the pivot's nearest neighbours, MoNNA (Farhadkhani et al., ICML 2023)",
               "MoNNA (S. Farhadkhani, R. Guerraoui, N. Gupta, L.-N. Hoang, R. Pinot, J. Stephan, "
               "'Robust Collaborative Learning with Linear Gradient Overhead', ICML 2023): the mean of "
               "the n - f rows closest to a pivot row assumed honest (`pivot`, default row 0 as in "
               "ByzFL). Needs n > 2f; f = -1 uses the declared Byzantine bound. Exact float64 distances; "
               "ties go to the lowest row index. Non-finite rows are nobody's neighbour; a non-finite "
               "pivot is an error. Flags every row outside the neighbourhood. Unweighted.",
               kOptions)
