// DP-FedAvg with adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy, "Differentially Private
// Learning with Adaptive Clipping", NeurIPS 2021, Algorithm 1 with geometric updates). Round t,
// clip norm C_t, m clients:
//
//   client k:  b_k = 1[‖Δ_k‖ ≤ C_t],  Δ̄_k = Δ_k · min(1, C_t / ‖Δ_k‖)
//   server:    g̃ = (Σ_k Δ̄_k + N(0, σ_Δ² C_t² I)) / m        (the mean plus noise std σ_Δ C_t / m)
//              b̃ = (Σ_k b_k + N(0, σ_b²)) / m                  noised fraction of unclipped updates
//              C_{t+1} = C_t · exp(−η_C (b̃ − γ))               geometric step towards quantile γ
//
// Privacy: the update and the count are released together. With σ the effective noise multiplier
// the user asks for (option noise_multiplier), the update noise is
//   σ_Δ = (σ^-2 − (2σ_b)^-2)^-1/2                                (the paper's Theorem 1)
// so that the pair is exactly as private as one Gaussian mechanism with noise multiplier σ;
// σ_b > σ/2 is required. The accountant composes one step per round at q = K_t/K with noise
// multiplier σ: client-level DP, sensitivity C_t (the clip in force that round). σ_b defaults to
// m/20, the paper's recommendation (count_noise = -1).
//
// State across rounds: C_t (save_state/load_state under "clip", with the in-round count). The
// aggregate must be the plain mean of the uploads: use [aggregator] plugin = "fedavg" with
// weighted = false. secure_rng = true draws the noise from the SDK's cryptographically secure
// generator (bulwark/noise.hpp; not reproducible).
#include <torch/torch.h>

#include <cmath>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "bulwark/error.hpp"
#include "bulwark/noise.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/rng.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"noise_multiplier", bulwark::OptType::Float, "1.0", 0, bulwark::kInf,
     "sigma: effective noise multiplier of the round (update and count together); the accounted one."},
    {"clip_init", bulwark::OptType::Float, "0.1", 0, bulwark::kInf, "C_0 > 0: initial clip norm (paper: 0.1)."},
    {"target_quantile", bulwark::OptType::Float, "0.5", 0, 1,
     "gamma: the fraction of updates that should end up unclipped."},
    {"clip_lr", bulwark::OptType::Float, "0.2", 0, bulwark::kInf,
     "eta_C: step of the geometric update C <- C exp(-eta_C (b - gamma)) (paper: 0.2)."},
    {"count_noise", bulwark::OptType::Float, "-1", -1, bulwark::kInf,
     "sigma_b: std of the noise on the unclipped count; -1 = m/20 for m clients in the round (the paper's "
     "choice); 0 = none (only with noise_multiplier = 0)."},
    {"secure_rng", bulwark::OptType::Bool, "false", 0, 1,
     "Draw noise from a cryptographically secure generator (ChaCha20 keyed from the OS; not reproducible)."},
};

class DpFedAvgAdaptive final : public bulwark::PrivacyMechanism {
 public:
  explicit DpFedAvgAdaptive(const bulwark::Options& options)
      : sigma_(options.get<double>("noise_multiplier")),
        clip_(options.get<double>("clip_init")),
        quantile_(options.get<double>("target_quantile")),
        clip_lr_(options.get<double>("clip_lr")),
        count_noise_(options.get<double>("count_noise")),
        secure_(options.get<bool>("secure_rng")) {
    if (!(clip_ > 0)) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "dp_fedavg_adaptive: clip_init must be > 0; found " + std::to_string(clip_));
    }
  }

  bool on_client_update() const override { return true; }
  bool on_server() const override { return true; }

  void privatize_update(torch::Tensor& update, const bulwark::ClientUpdateContext&) override {
    torch::NoGradGuard no_grad;
    const double norm = update.norm().item<double>();
    const bool unclipped = norm <= clip_;
    if (norm > clip_) update.mul_(clip_ / norm);
    // Clients of a round run concurrently; the count is a sum, so the order does not matter.
    std::lock_guard<std::mutex> lock(mutex_);
    unclipped_ += unclipped ? 1 : 0;
  }

  void privatize_aggregate(torch::Tensor& aggregate, const bulwark::ServerPrivacyContext& context) override {
    torch::NoGradGuard no_grad;
    const auto m = static_cast<double>(context.clients_in_round);
    const double sigma_b = count_std(context.clients_in_round);
    const double sigma_update = update_noise_multiplier(sigma_b);
    if (sigma_update > 0) {
      aggregate.add_(bulwark::gaussian_like(aggregate, sigma_update * clip_ / m, context.generator, secure_));
    }
    double count = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      count = static_cast<double>(unclipped_);
      unclipped_ = 0;
    }
    if (sigma_b > 0) {
      const auto one = torch::empty({1}, aggregate.options().dtype(torch::kDouble));
      count += bulwark::gaussian_like(one, sigma_b, context.generator, secure_).item<double>();
    }
    clip_ *= std::exp(-clip_lr_ * (count / m - quantile_));
  }

  std::vector<bulwark::AccountingEvent> accounting(const bulwark::RoundAccountingInfo& info) const override {
    if (info.clients_sampled > 0) update_noise_multiplier(count_std(info.clients_sampled));  // validates σ_b
    return {{bulwark::PrivacyLevel::Client, info.client_sampling_rate, sigma_, 1}};
  }

  // The in-round count is saved too, so a caller that probes the client hook outside the round
  // (a leakage study) can restore the mechanism exactly.
  void save_state(bulwark::StateDict& state) const override {
    state["clip"] = torch::tensor(clip_, torch::kDouble);
    std::lock_guard<std::mutex> lock(mutex_);
    state["unclipped"] = torch::tensor(unclipped_, torch::kLong);
  }
  void load_state(const bulwark::StateDict& state) override {
    auto clip = state.find("clip");
    if (clip != state.end()) clip_ = clip->second.item<double>();
    auto count = state.find("unclipped");
    std::lock_guard<std::mutex> lock(mutex_);
    unclipped_ = count != state.end() ? count->second.item<std::int64_t>() : 0;
  }

 private:
  double count_std(std::int64_t clients) const {
    return count_noise_ >= 0 ? count_noise_ : static_cast<double>(clients) / 20.0;
  }

  /// σ_Δ = (σ^-2 − (2σ_b)^-2)^-1/2: the update noise that leaves the pair at noise multiplier σ.
  double update_noise_multiplier(double sigma_b) const {
    if (sigma_ == 0) return 0.0;
    if (!(2 * sigma_b > sigma_)) {
      std::ostringstream message;
      message << "dp_fedavg_adaptive: the count noise sigma_b = " << sigma_b << " must exceed noise_multiplier / 2 = "
              << sigma_ / 2 << " (sigma_Delta = (sigma^-2 - (2 sigma_b)^-2)^-1/2); raise count_noise, or sample "
              << "more clients per round (default sigma_b = m/20)";
      throw bulwark::Error(bulwark::ErrorKind::Config, message.str());
    }
    return 1.0 / std::sqrt(1.0 / (sigma_ * sigma_) - 1.0 / (4 * sigma_b * sigma_b));
  }

  double sigma_, clip_, quantile_, clip_lr_, count_noise_;
  bool secure_;
  mutable std::mutex mutex_;
  std::int64_t unclipped_ = 0;  // b_k summed over the round's clients so far
};

}  // namespace

BULWARK_PLUGIN(bulwark::PrivacyMechanism, DpFedAvgAdaptive, "dp_fedavg_adaptive", "1.0.0",
               "DP-FedAvg with adaptive clipping to a target quantile (Andrew et al., NeurIPS 2021)",
               "DP-FedAvg with adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy, 'Differentially "
               "Private Learning with Adaptive Clipping', NeurIPS 2021): clients clip their updates to C_t "
               "and report b = 1[norm <= C_t]; the server adds N(0, sigma_Delta^2 C_t^2) to the sum of the "
               "clipped updates (divided by m), noises the count with N(0, sigma_b^2) and moves the clip "
               "geometrically, C <- C exp(-eta_C (b_mean - gamma)), towards the gamma quantile of update "
               "norms. Protects one client's whole data (client-level DP), sensitivity C_t; the count's "
               "noise is accounted by the paper's effective multiplier: sigma_Delta = (sigma^-2 - "
               "(2 sigma_b)^-2)^-1/2, so the accountant uses noise_multiplier sigma at q = K_t/K, one step "
               "per round. Keeps C_t across rounds (save_state/load_state). Use fedavg with weighted = "
               "false. secure_rng = true draws the noise from a cryptographically secure generator (ChaCha20 keyed from the OS; not reproducible).",
               kOptions)
