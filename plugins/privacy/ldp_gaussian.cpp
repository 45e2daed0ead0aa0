// Local Gaussian noise on every upload: each client clips its update (optional) and adds
// isotropic Gaussian noise before it leaves the client,
//
//   Δ̃_k = Δ_k · min(1, C / ‖Δ_k‖) + N(0, s² I)          (no clipping when clip = 0)
//
// the worker-side noise of the DP-SGD-at-the-workers scheme studied with Byzantine-robust rules
// (Guerraoui, Gupta, Pinot, Rouault, Stephan, "Differential Privacy and Byzantine Resilience in
// SGD: Do They Add Up?", PODC 2021) and the client-side noise in front of noisy robust
// aggregation.
//
// Protects all of one client's data against anyone who sees its upload, the server included
// (local DP). Only with clipping is there a guarantee: any two datasets of a client give clipped
// updates at most 2C apart, so each upload is a Gaussian mechanism with noise multiplier s/(2C).
// The server knows who uploaded, so there is no amplification by sampling: the accountant composes
// one step per round at q = 1, the worst case of a client that takes part in every round. Without
// clipping the sensitivity is unbounded and no ε is reported.
//
// secure_rng = true draws the noise from the SDK's cryptographically secure generator
// (bulwark/noise.hpp; not reproducible).
#include <torch/torch.h>

#include <string>
#include <vector>

#include "bulwark/error.hpp"
#include "bulwark/noise.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/rng.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"std", bulwark::OptType::Float, nullptr, 0, bulwark::kInf,
     "s (required): std of the Gaussian noise added to every coordinate of every upload."},
    {"clip", bulwark::OptType::Float, "0", 0, bulwark::kInf,
     "C: clip each upload to L2 norm C before the noise; 0 = no clipping (and no epsilon)."},
    {"secure_rng", bulwark::OptType::Bool, "false", 0, 1,
     "Draw noise from a cryptographically secure generator (ChaCha20 keyed from the OS; not reproducible)."},
};

class LdpGaussian final : public bulwark::PrivacyMechanism {
 public:
  explicit LdpGaussian(const bulwark::Options& options)
      : std_(options.get<double>("std")), clip_(options.get<double>("clip")), secure_(options.get<bool>("secure_rng")) {}

  bool on_client_update() const override { return true; }

  void privatize_update(torch::Tensor& update, const bulwark::ClientUpdateContext& context) override {
    torch::NoGradGuard no_grad;
    if (clip_ > 0) {
      const double norm = update.norm().item<double>();
      if (norm > clip_) update.mul_(clip_ / norm);
    }
    if (std_ > 0) update.add_(bulwark::gaussian_like(update, std_, context.generator, secure_));
  }

  std::vector<bulwark::AccountingEvent> accounting(const bulwark::RoundAccountingInfo&) const override {
    if (!(clip_ > 0)) return {};
    return {{bulwark::PrivacyLevel::Client, /*sampling_rate=*/1.0, std_ / (2 * clip_), /*steps=*/1}};
  }

 private:
  double std_, clip_;
  bool secure_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::PrivacyMechanism, LdpGaussian, "ldp_gaussian", "1.0.0",
               "Local DP: optional clipping to C, then N(0, s^2) noise on every upload",
               "Local Gaussian noise on every client upload: clip to L2 norm C (clip > 0), then add N(0, s^2) "
               "to every coordinate (s = std) before the upload leaves the client; the worker-side noise of "
               "DP-SGD at the workers studied with Byzantine-robust aggregation (Guerraoui, Gupta, Pinot, "
               "Rouault, Stephan, 'Differential Privacy and Byzantine Resilience in SGD: Do They Add Up?', "
               "PODC 2021). Protects one client's whole data against whoever sees the upload (local DP). "
               "With clipping the sensitivity is 2C (any two datasets of the client), noise multiplier "
               "s/(2C), one step per round at q = 1 (the server knows who uploaded: no amplification); "
               "without clipping no epsilon is reported. secure_rng = true draws the noise from a "
               "cryptographically secure generator (ChaCha20 keyed from the OS; not reproducible).",
               kOptions)
