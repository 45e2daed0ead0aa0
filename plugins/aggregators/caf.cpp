// Covariance-bound agnostic filter, CAF (Allouah, Guerraoui, Stephan, "Towards Trustworthy
// Federated Learning with Untrusted Participants", ICML 2025; ByzFL's CAF): iterative filtering
// that needs no bound on the honest covariance.
// With weights c ∈ [0, 1]^n, starting at c = 1, while Σ c_i > n − 2f:
//
//   μ_c = Σ c_i u_i / Σ c_i,    Σ_c = Σ c_i (u_i − μ_c)(u_i − μ_c)ᵀ / Σ c_i
//   (λ, v) = the top eigenpair of Σ_c;   remember μ_c if λ is the smallest so far
//   τ_i = ⟨u_i − μ_c, v⟩²,   c_i ← c_i (1 − τ_i / max_j τ_j)
//
// and the output is the remembered μ_c of smallest λ. Each step zeroes at least one weight, so
// there are at most 2f + 1 steps.
//
// Exact eigenpairs: Σ_c's nonzero spectrum is that of the n × n matrix W^½ K W^½ / Σc with
// K = (U − 1μᵀ)(U − 1μᵀ)ᵀ, computed from one Gram matrix of the rows (float64, centred on their
// median, bulwark/robust.hpp) — no d × d matrix, one eigendecomposition of n × n per step. ByzFL
// instead takes one power-iteration step from a random vector, so its λ and v are random
// approximations and its output varies run to run; this plugin computes the definition. A top
// eigenvalue of multiplicity > 1 leaves v open; LAPACK's choice is deterministic. When λ = 0 (the
// weighted rows coincide) μ_c cannot be improved on and the filter stops.
//
// `f` = -1 (the default) takes the experiment's declared Byzantine bound (context.byzantine_bound).
// Needs n > 2f. Unweighted (sample counts are ignored). Flags: the rows whose weight is 0 at the
// chosen step.
//
// Non-finite rows: a row with a NaN/±Inf entry is certainly Byzantine; it gets weight 0 from the
// start and counts as one of the f (the filter runs on the k finite rows with f' = max(f − k, 0)).
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
     "Byzantine bound f (CAF filters until the weights sum to n - 2f; needs n > 2f); -1 uses the experiment's "
     "declared bound."},
};

class CovarianceBoundAgnosticFilter final : public bulwark::Aggregator {
 public:
  explicit CovarianceBoundAgnosticFilter(const bulwark::Options& options) : f_(options.get<std::int64_t>("f")) {}

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "caf");
    const auto n = updates.size(0);
    const auto f = f_ >= 0 ? f_ : context.byzantine_bound;
    bulwark::check_update_count(n, f, 0, "caf", "Allouah et al. 2025");
    bulwark::AggregationResult result;
    result.reports_flags = true;
    const auto finite = bulwark::finite_pairwise_distances(updates);
    const auto m = finite.rows.size(0);
    if (m == 0) {
      result.aggregate = torch::zeros({updates.size(1)}, updates.options());
      result.flagged_rows = bulwark::rows_not_in(finite.rows, n);
      return result;
    }
    const auto byzantine_left = std::max<std::int64_t>(f - (n - m), 0);
    // Inner products of the centred rows from their squared distances: G = −½ J D J with
    // J = I − 11ᵀ/m. Any centre gives the same K below; this one needs no second pass over U.
    const auto centring = torch::eye(m, torch::kDouble) - 1.0 / static_cast<double>(m);
    const auto gram = centring.matmul(finite.squared.to(torch::kCPU)).matmul(centring) * -0.5;  // n × n, on the CPU

    auto weights = torch::ones({m}, torch::kDouble);
    auto best_weights = weights.clone();
    double best_eigenvalue = std::numeric_limits<double>::infinity();
    while (weights.sum().item<double>() > static_cast<double>(m - 2 * byzantine_left)) {
      const double total = weights.sum().item<double>();
      // K = (X − 1μᵀ)(X − 1μᵀ)ᵀ with μ = Xᵀc/Σc, in terms of G = X Xᵀ.
      const auto projected = gram.matmul(weights) / total;  // X μ
      const double mu_norm = weights.dot(projected).item<double>() / total;
      const auto kernel = gram - projected.unsqueeze(1) - projected.unsqueeze(0) + mu_norm;
      const auto root = weights.sqrt();
      const auto [values, vectors] = torch::linalg::eigh(root.unsqueeze(1) * kernel * root.unsqueeze(0), "L");
      const double top = values[m - 1].item<double>();
      const double eigenvalue = top / total;
      if (eigenvalue < best_eigenvalue) {
        best_eigenvalue = eigenvalue;
        best_weights = weights.clone();
      }
      if (!(top > 0)) break;
      // ⟨u_i − μ, v⟩ with v = (X − 1μᵀ)ᵀ W^½ a / √top: the entries of K W^½ a / √top.
      const auto tau = (kernel.matmul(root * vectors.select(1, m - 1)) / std::sqrt(top)).pow(2);
      weights = weights * (1 - tau / tau.max());
      weights.clamp_min_(0);
    }

    const auto rows = updates.index_select(0, finite.rows).to(torch::kDouble);
    const auto on_device = best_weights.to(rows.device());
    result.aggregate = (on_device.unsqueeze(1) * rows).sum(/*dim=*/0).div_(on_device.sum()).to(updates.scalar_type());
    result.flagged_rows = bulwark::rows_not_in(finite.rows.index({(best_weights > 0).to(finite.rows.device())}), n);
    return result;
  }

 private:
  std::int64_t f_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, CovarianceBoundAgnosticFilter, "caf", "1.0.0",
               "Covariance-bound agnostic filter, CAF (Allouah et al., ICML 2025)",
               "CAF (Y. Allouah, R. Guerraoui, J. Stephan, 'Towards Trustworthy Federated Learning with "
               "Untrusted Participants', ICML 2025): "
               "iterative filtering; weights start at 1 and each step scales weight i by 1 - tau_i / "
               "max tau, tau_i the squared projection of u_i - mu_c on the top eigenvector of the "
               "weighted covariance, until the weights sum to n - 2f; returns the weighted mean mu_c "
               "of smallest top eigenvalue. Exact eigenpairs (ByzFL approximates them with one random "
               "power step). Needs n > 2f; f = -1 uses the declared Byzantine bound. NaN/Inf rows get "
               "weight 0. Flags rows of weight 0 at the chosen step.",
               kOptions)
