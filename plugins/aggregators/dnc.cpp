// Divide-and-Conquer, DnC (Shejwalkar & Houmansadr, "Manipulating the Byzantine: Optimizing Model
// Poisoning Attacks and Defenses for Federated Learning", NDSS 2021, Algorithm 2; in Blades and
// FLPoison). `iterations` times:
//
//   r   = b coordinates drawn at random without replacement (all d when b ≥ d)
//   X   = U[:, r] − mean(U[:, r])                      the centred sub-matrix [n, b]
//   v   = the top right singular vector of X
//   s_i = ⟨X_i, v⟩²                                    outlier score of row i
//   G_t = the n − ⌊c·f⌋ rows of lowest score           (ties to the lower row index)
//
// and g = the mean of the rows in every G_t. The coordinates come from context.generator (the
// engine's seeded stream), so a run repeats. Scores are exact: v's projections are read from the
// top eigenvector a of the n × n matrix X Xᵀ (float64), s_i = λ a_i², which the sign and scale of v
// cannot change. Unweighted. Flags: every row outside the intersection.
//
// `f` = -1 (the default) takes the experiment's declared Byzantine bound (context.byzantine_bound).
// Non-finite rows: a row with a NaN/±Inf entry is removed first and counts as one of the f.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"f", bulwark::OptType::Int, "-1", -1, bulwark::kInf,
     "Byzantine bound f; -1 uses the experiment's declared bound."},
    {"iterations", bulwark::OptType::Int, "5", 1, bulwark::kInf, "Number of random sub-samplings (the paper: 5)."},
    {"subsample", bulwark::OptType::Int, "10000", 1, bulwark::kInf,
     "b: coordinates per sub-sampling (the paper: 10000; all when b >= d)."},
    {"filter_fraction", bulwark::OptType::Float, "1.0", 0, bulwark::kInf,
     "c: each iteration removes the floor(c f) highest-scored rows (the paper: 1)."},
};

class DivideAndConquer final : public bulwark::Aggregator {
 public:
  explicit DivideAndConquer(const bulwark::Options& options)
      : f_(options.get<std::int64_t>("f")),
        iterations_(options.get<std::int64_t>("iterations")),
        subsample_(options.get<std::int64_t>("subsample")),
        filter_fraction_(options.get<double>("filter_fraction")) {}

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "dnc");
    const auto n = updates.size(0), d = updates.size(1);
    const auto f = f_ >= 0 ? f_ : context.byzantine_bound;
    const auto finite_rows = torch::isfinite(updates).all(/*dim=*/1).nonzero().flatten();
    const auto m = finite_rows.size(0);
    const auto byzantine_left = static_cast<double>(std::max<std::int64_t>(f - (n - m), 0));
    const auto removed = std::min(m, static_cast<std::int64_t>(std::floor(filter_fraction_ * byzantine_left)));
    if (m - removed < 1) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "dnc: removing floor(c f) = " + std::to_string(removed) + " of the " + std::to_string(m) +
                               " finite updates leaves none; lower f or filter_fraction");
    }
    if (subsample_ < d && !context.generator.defined()) {
      throw bulwark::Error(bulwark::ErrorKind::Runtime,
                           "dnc: context.generator is not set; the engine must pass the seeded Aggregator stream "
                           "for the coordinate sub-sampling");
    }
    const auto rows = updates.index_select(0, finite_rows);
    auto kept = torch::ones({m}, torch::kBool);
    for (std::int64_t t = 0; t < iterations_; ++t) {
      auto sub = rows;
      if (subsample_ < d) {
        const auto coordinates = torch::randperm(d, context.generator, updates.options().dtype(torch::kLong))
                                     .narrow(0, 0, subsample_);
        sub = rows.index_select(1, coordinates);
      }
      const auto centred = sub.to(torch::kDouble) - sub.to(torch::kDouble).mean(/*dim=*/0);
      const auto gram = torch::matmul(centred, centred.t()).to(torch::kCPU);
      const auto [values, vectors] = torch::linalg::eigh(gram, "L");
      const auto scores = values[m - 1] * vectors.select(1, m - 1).pow(2);
      const auto order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
      const auto lowest = order.narrow(0, 0, m - removed);
      auto good = torch::zeros({m}, torch::kBool);
      good.index_fill_(0, lowest, true);
      kept.logical_and_(good);
    }

    bulwark::AggregationResult result;
    result.reports_flags = true;
    const auto chosen = finite_rows.index({kept.to(finite_rows.device())});
    if (chosen.numel() == 0) {  // the iterations agreed on no row: no step
      result.aggregate = torch::zeros({d}, updates.options());
    } else {
      result.aggregate = updates.index_select(0, chosen).to(torch::kDouble).mean(/*dim=*/0).to(updates.scalar_type());
    }
    result.flagged_rows = bulwark::rows_not_in(chosen, n);
    return result;
  }

 private:
  std::int64_t f_, iterations_, subsample_;
  double filter_fraction_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, DivideAndConquer, "dnc", "1.0.0",
               "Divide-and-Conquer, DnC (Shejwalkar & Houmansadr, NDSS 2021)",
               "DnC (V. Shejwalkar, A. Houmansadr, 'Manipulating the Byzantine: Optimizing Model "
               "Poisoning Attacks and Defenses for Federated Learning', NDSS 2021): `iterations` times, "
               "draw b = subsample coordinates, centre the rows there, score each by its squared "
               "projection on the top singular vector and keep the n - floor(c f) lowest; return the "
               "mean of the rows kept every time. Coordinates from the seeded stream. f = -1 uses the "
               "declared Byzantine bound. NaN/Inf rows are removed first. Flags the rest. Unweighted.",
               kOptions)
