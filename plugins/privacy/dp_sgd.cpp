// DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016), at every local step
// of every client:
//
//   ḡ_b = clip(g_b)                         per-example gradients g_b, rows of G[B, d]
//   g̃   = (Σ_b ḡ_b + N(0, σ² S² I)) / B     the gradient the local optimiser applies
//
// Clipping modes (flat vs per-layer clipping; per-layer clipping with √(Σ S_j²) = S is described by
// McMahan et al., "A General Approach to Adding Differential Privacy to Iterative Training
// Procedures", 2018):
//   flat                ḡ_b = g_b · min(1, S / ‖g_b‖)
//   per_layer_uniform   each of the m layers j (ParamLayout::layers()) clipped to S_j = S/√m
//   per_layer_adaptive  S_j = S · M_j / √(Σ_k M_k²), M_j = max_b ‖g_b,j‖, the largest per-example
//                       norm of layer j in the current batch before clipping
// In every mode √(Σ_j S_j²) = S, so one example changes the clipped sum by at most S in L2: the
// sensitivity is S and the accountant's noise multiplier is σ.
//
// Protects: one training example (example-level DP), at the sampling rate the host derives from
// [privacy] example_rate (B/N_i of the client, or B·K_t/N), `local_steps` compositions per round.
// The clipped, un-noised rows stay in G (what a per-example leakage observer would see); when the
// host says nobody observes them (PrivacyStepContext::rows_observed = false, its training loop),
// the clipped sum is computed without writing them back, and with the kernel's layer models
// without forming G at all: ghost clipping (Li, Tramèr, Liang, Hashimoto, "Large Language Models
// Can Be Strong Differentially Private Learners", ICLR 2022; Bu, Wang, Zha, Karypis, "Differentially
// Private Optimization on Large Model at Small Cost", ICML 2023) — the host gets each example's
// per-layer norms from the layers' inputs and output gradients, asks clip_factors() for the
// factors and hands privatize_clipped_sum() Σ_b ḡ_b. Same numbers up to float rounding.
//
// per_layer_adaptive caveat: the thresholds depend on the batch's own gradients and are not
// privatised, so the reported ε does not cover them (a strict guarantee needs M_j from public
// data or a private estimate); use it to study accuracy, and report it as such.
//
// secure_rng = true draws the noise from the SDK's cryptographically secure generator (ChaCha20
// keyed from the OS, bulwark/noise.hpp): not reproducible, and independent of the experiment seed. The default uses the engine's
// stream for (seed, round, client), so runs repeat exactly.
#include <torch/torch.h>

#include <cmath>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bulwark/clipping.hpp"
#include "bulwark/error.hpp"
#include "bulwark/noise.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/rng.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"noise_multiplier", bulwark::OptType::Float, "1.0", 0, bulwark::kInf,
     "sigma: the noise on the clipped sum has std sigma * clip (0 = no noise, epsilon = inf)."},
    {"clip", bulwark::OptType::Float, "1.0", 0, bulwark::kInf,
     "S > 0: L2 bound of each per-example gradient (the sensitivity)."},
    {"clipping", bulwark::OptType::String, "\"flat\"", 0, 0,
     "flat: whole gradient to S; per_layer_uniform: each of m layers to S/sqrt(m); per_layer_adaptive: "
     "layer j to S*M_j/sqrt(sum M_k^2), M_j the batch's largest per-example norm of layer j.",
     "flat|per_layer_uniform|per_layer_adaptive"},
    {"secure_rng", bulwark::OptType::Bool, "false", 0, 1,
     "Draw noise from a cryptographically secure generator (ChaCha20 keyed from the OS; not reproducible)."},
};

enum class Clipping { Flat, PerLayerUniform, PerLayerAdaptive };

/// Factor that brings norm down to bound, 1 where it already fits (rows below the bound are
/// multiplied by exactly 1, so they are untouched; a zero bound on a zero layer stays 0).
torch::Tensor factors_within(const torch::Tensor& norms, const torch::Tensor& bounds) {
  return torch::where(norms <= bounds, torch::ones_like(norms), bounds / norms);
}

class DpSgd final : public bulwark::PrivacyMechanism {
 public:
  explicit DpSgd(const bulwark::Options& options)
      : sigma_(options.get<double>("noise_multiplier")),
        clip_(options.get<double>("clip")),
        secure_(options.get<bool>("secure_rng")) {
    const auto mode = options.get<std::string>("clipping");
    clipping_ = mode == "flat" ? Clipping::Flat
                : mode == "per_layer_uniform" ? Clipping::PerLayerUniform
                                              : Clipping::PerLayerAdaptive;
    if (!(clip_ > 0)) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "dp_sgd: clip must be > 0 (the per-example L2 bound S); found clip = " +
                               std::to_string(clip_));
    }
  }

  bool per_example() const override { return true; }
  bool clips_by_layer_norms() const override { return true; }

  torch::Tensor privatize_gradients(torch::Tensor& grads, const bulwark::PrivacyStepContext& context) override {
    const auto& layout = *context.layout;
    if (grads.dim() != 2 || grads.size(1) != layout.total || grads.size(0) < 1) {
      std::ostringstream found;
      found << grads.sizes();
      throw bulwark::Error(bulwark::ErrorKind::Runtime, "dp_sgd: expected per-example gradients [B, " +
                                                            std::to_string(layout.total) + "], found " + found.str());
    }
    torch::NoGradGuard no_grad;
    const auto factors = clip_factors(bulwark::layer_norms(grads, layout), context);  // [B, m]
    torch::Tensor sum;
    if (context.rows_observed) {
      bulwark::scale_layers(grads, factors, layout);
      sum = grads.sum(/*dim=*/0);
    } else {
      sum = bulwark::weighted_layer_sum(grads, factors, layout);
    }
    return noisy_mean(sum, grads.size(0), context);
  }

  // Per-layer norms [B, m] (the host's ghost norms, or those of the rows above) to factors.
  // Flat clipping is the whole row's norm √(Σ_j n_bj²) against S, one factor for every layer.
  torch::Tensor clip_factors(const torch::Tensor& norms, const bulwark::PrivacyStepContext&) override {
    torch::NoGradGuard no_grad;
    if (clipping_ == Clipping::Flat) {
      auto total = norms.norm(2, /*dim=*/1, /*keepdim=*/true);
      return factors_within(total, torch::full({1}, clip_, norms.options())).expand_as(norms).contiguous();
    }
    auto bounds = torch::full({norms.size(1)}, clip_ / std::sqrt(static_cast<double>(norms.size(1))), norms.options());
    if (clipping_ == Clipping::PerLayerAdaptive) {
      auto maxima = std::get<0>(norms.max(/*dim=*/0));
      const double total = maxima.norm().item<double>();
      if (total > 0 && std::isfinite(total)) bounds = maxima * (clip_ / total);
    }
    return factors_within(norms, bounds.unsqueeze(0));
  }

  torch::Tensor privatize_clipped_sum(torch::Tensor& sum, const bulwark::PrivacyStepContext& context) override {
    if (context.batch_size < 1) {
      throw bulwark::Error(bulwark::ErrorKind::Runtime, "dp_sgd: the clipped sum of an empty batch (batch_size = " +
                                                            std::to_string(context.batch_size) + ")");
    }
    return noisy_mean(sum, context.batch_size, context);
  }

  std::vector<bulwark::AccountingEvent> accounting(const bulwark::RoundAccountingInfo& info) const override {
    return {{bulwark::PrivacyLevel::Example, info.example_sampling_rate, sigma_, info.local_steps}};
  }

 private:
  // (Σ_b ḡ_b + N(0, σ² S² I)) / B.
  torch::Tensor noisy_mean(torch::Tensor& sum, std::int64_t batch, const bulwark::PrivacyStepContext& context) const {
    torch::NoGradGuard no_grad;
    if (sigma_ > 0) sum.add_(bulwark::gaussian_like(sum, sigma_ * clip_, context.generator, secure_));
    return sum.div_(static_cast<double>(batch));
  }

  double sigma_, clip_;
  bool secure_;
  Clipping clipping_ = Clipping::Flat;
};

}  // namespace

BULWARK_PLUGIN(bulwark::PrivacyMechanism, DpSgd, "dp_sgd", "1.0.0",
               "DP-SGD: per-example clipping (flat or per layer) + Gaussian noise on the sum (Abadi et al. 2016)",
               "DP-SGD (Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang, 'Deep Learning with "
               "Differential Privacy', CCS 2016) inside each client's local training: every per-example "
               "gradient is clipped to L2 norm S = clip, the clipped gradients are summed, N(0, sigma^2 S^2) "
               "noise is added to the sum and the result is divided by the batch size. Clipping: flat, "
               "per_layer_uniform (each of the m layers to S/sqrt(m)) or per_layer_adaptive (layer j to "
               "S*M_j/sqrt(sum_k M_k^2), M_j the largest per-example norm of layer j in the current batch; "
               "data-dependent thresholds are NOT covered by the reported epsilon). Protects one example "
               "(example-level DP); sensitivity S in every mode, so the accountant uses noise multiplier "
               "sigma at the host's example sampling rate (example_rate), local_steps times per round. "
               "secure_rng = true draws the noise from a cryptographically secure generator (ChaCha20 keyed from the OS; not reproducible).",
               kOptions)
