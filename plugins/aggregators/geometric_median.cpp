// Geometric median by the smoothed Weiszfeld algorithm: RFA (Pillutla, Kakade, Harchaoui, "Robust
// Aggregation for Federated Learning", IEEE Transactions on Signal Processing 70, 2022;
// arXiv:1912.13445, Algorithm 2):
//
//   g = argmin_v Σ_i α_i ‖v − u_i‖,    α_i = n_i / Σ_j n_j   (uniform with weighted = false)
//
//   v⁰ = Σ_i α_i u_i (or 0);   repeat:  β_i = α_i / max(ν, ‖v − u_i‖),   v ← Σ_i β_i u_i / Σ_i β_i
//
// ν > 0 smooths the objective near the data points (and keeps the weights finite). Iteration stops
// after max_iterations steps, or when the objective F(v) = Σ α_i ‖v − u_i‖ changes by at most
// tolerance · F(v) between two steps, as in the authors' reference implementation. RFA's
// experiments use only a few (3–4) Weiszfeld steps; the default here runs to the tolerance.
// `start = "zero"` begins at v⁰ = 0 instead, as ByzFL's GeometricMedian does (with its defaults:
// nu = 0.1, max_iterations = 3, tolerance = 0, weighted = false).
//
// Non-finite rows: a row whose norm is not finite (a NaN/±Inf entry, or an overflowing norm) is
// dropped before the iteration, as the reference implementation does; α is renormalised over the
// remaining rows. If no row is finite, g = 0.
//
// Cost per step: one pass over U for the n distances and one matrix–vector product.
#include <torch/torch.h>

#include <cmath>
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"nu", bulwark::OptType::Float, "1e-6", 0, bulwark::kInf,
     "Smoothing nu > 0: distances below nu count as nu in the Weiszfeld weights."},
    {"max_iterations", bulwark::OptType::Int, "100", 1, bulwark::kInf,
     "Maximum number of Weiszfeld steps (RFA's experiments used 3-4)."},
    {"tolerance", bulwark::OptType::Float, "1e-6", 0, bulwark::kInf,
     "Stop when the objective changes by at most tolerance times its value."},
    {"weighted", bulwark::OptType::Bool, "true", 0, 1,
     "alpha_i proportional to the client's sample count n_i (false: uniform alpha_i = 1/n)."},
    {"start", bulwark::OptType::String, "\"mean\"", 0, 0,
     "Start point v0: mean = the alpha-weighted mean (RFA); zero = the origin (ByzFL).", "mean|zero"},
};

class GeometricMedian final : public bulwark::Aggregator {
 public:
  explicit GeometricMedian(const bulwark::Options& options)
      : nu_(options.get<double>("nu")),
        max_iterations_(options.get<std::int64_t>("max_iterations")),
        tolerance_(options.get<double>("tolerance")),
        weighted_(options.get<bool>("weighted")),
        start_at_zero_(options.get<std::string>("start") == "zero") {
    if (!(nu_ > 0)) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "geometric_median: nu must be > 0 (it bounds the Weiszfeld weights "
                           "alpha_i / max(nu, distance)); found nu = " + std::to_string(nu_));
    }
  }

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor& weights,
                                       const bulwark::AggregationContext&) override {
    bulwark::check_update_matrix(updates, "geometric_median");
    const auto n = updates.size(0);
    auto good = torch::isfinite(updates.norm(2, /*dim=*/1)).nonzero().flatten();
    const auto kept = good.numel();
    bulwark::AggregationResult result;
    if (kept == 0) {
      result.aggregate = torch::zeros({updates.size(1)}, updates.options());
      return result;
    }
    auto points = kept == n ? updates : updates.index_select(0, good);

    auto alpha = torch::ones({kept}, torch::dtype(torch::kDouble).device(updates.device()));
    if (weighted_ && weights.defined()) {
      if (weights.numel() != n) {
        throw bulwark::Error(bulwark::ErrorKind::Runtime,
                             "geometric_median: " + std::to_string(weights.numel()) +
                                 " weights for " + std::to_string(n) + " updates");
      }
      alpha = weights.to(updates.device(), torch::kDouble).index_select(0, good);
      if (!torch::isfinite(alpha).all().item<bool>() || (alpha < 0).any().item<bool>() ||
          !(alpha.sum().item<double>() > 0)) {
        throw bulwark::Error(bulwark::ErrorKind::Runtime,
                             "geometric_median: row weights must be finite, non-negative and not "
                             "all zero; use weighted = false to ignore them");
      }
    }
    alpha = alpha / alpha.sum();

    auto v = start_at_zero_ ? torch::zeros({points.size(1)}, points.options())
                            : torch::matmul(alpha.to(points.scalar_type()), points);
    auto distances = (points - v).norm(2, /*dim=*/1).to(torch::kDouble);
    double objective = (alpha * distances).sum().item<double>();
    for (std::int64_t step = 0; step < max_iterations_; ++step) {
      auto beta = alpha / distances.clamp_min(nu_);
      beta = beta / beta.sum();
      v = torch::matmul(beta.to(points.scalar_type()), points);
      distances = (points - v).norm(2, /*dim=*/1).to(torch::kDouble);
      const double previous = objective;
      objective = (alpha * distances).sum().item<double>();
      if (std::abs(previous - objective) <= tolerance_ * objective) break;
    }
    result.aggregate = v;
    return result;
  }

 private:
  double nu_;
  std::int64_t max_iterations_;
  double tolerance_;
  bool weighted_, start_at_zero_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, GeometricMedian, "geometric_median", "1.0.0",
               "Geometric median by smoothed Weiszfeld: RFA (Pillutla et al., IEEE TSP 2022)",
               "RFA geometric median (K. Pillutla, S. M. Kakade, Z. Harchaoui, 'Robust Aggregation "
               "for Federated Learning', IEEE Transactions on Signal Processing 2022, "
               "arXiv:1912.13445): argmin_v sum_i alpha_i ||v - u_i||, alpha_i proportional to the "
               "sample counts (weighted = true), by the smoothed Weiszfeld iteration beta_i = "
               "alpha_i / max(nu, ||v - u_i||), v = sum beta_i u_i / sum beta_i, from the weighted "
               "mean (start = \"zero\": from 0, as ByzFL), for at most max_iterations steps or until the objective changes by at most "
               "tolerance times its value. Rows with a non-finite norm are dropped first.",
               kOptions)
