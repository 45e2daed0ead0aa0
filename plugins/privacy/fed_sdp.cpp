// Fed-SDP: client-level DP for federated averaging — DP-FedAvg of McMahan, Ramage, Talwar, Zhang,
// "Learning Differentially Private Recurrent Language Models", ICLR 2018, and Geyer, Klein, Nabi,
// "Differentially Private Federated Learning: A Client Level Perspective", 2017; Algorithm 1 of
// Wei et al., "Gradient-Leakage Resilient Federated Learning", ICDCS 2021. Each round:
//
//   Δ̄_k = Δ_k · min(1, C / ‖Δ_k‖)                    clip each client's update (flat), or each of
//                                                      its m layers to C/√m (per_layer; ‖Δ̄_k‖ ≤ C),
//                                                      or each layer to C as Algorithm 1 writes it
//                                                      (per_layer_c; ‖Δ̄_k‖ ≤ C√m)
//   noise_at = "client":  Δ̃_k = Δ̄_k + N(0, σ² C² I)   each client noises its own upload
//   noise_at = "server":  g̃ = g + N(0, σ² C² I)/K_t    the server noises the mean of the K_t
//                                                      clipped uploads (noise on the sum, std σC,
//                                                      divided by the number of clients)
//
// Protects all of one client's data (client-level DP). Sensitivity: adding or removing one client
// changes the sum of clipped updates by at most C, so with noise std σC on the sum the noise
// multiplier is σ; the accountant composes one step per round at q = K_t/K (the client sampling
// rate, or the Poisson rate). With per_layer_c the sensitivity is C√m against noise std σC, so
// the true multiplier is σ/√m, what is accounted unless paper_accounting = true asks for the
// paper's σ (as fed_cdp does for its per-layer clipping). This is the guarantee for what leaves
// the aggregation — the global models. With noise_at = "client" the released aggregate carries K_t independent noises, so the
// same bound holds a fortiori; a server that inspects individual uploads instead faces one
// Gaussian mechanism per upload with sensitivity 2C (replacement) and no amplification by sampling.
//
// The aggregate must be the plain mean of the uploads for the server-side noise scale to match:
// use [aggregator] plugin = "fedavg" with weighted = false. secure_rng = true draws the noise from
// the SDK's cryptographically secure generator (bulwark/noise.hpp; not reproducible).
#include <torch/torch.h>

#include <cmath>
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
     "sigma: noise std sigma*C on each upload (client) or on the sum of uploads (server)."},
    {"clip", bulwark::OptType::Float, "1.0", 0, bulwark::kInf, "C > 0: L2 bound of each client's update."},
    {"clipping", bulwark::OptType::String, "\"flat\"", 0, 0,
     "flat: the whole update to C; per_layer: each of the m layers to C/sqrt(m); per_layer_c: each layer to C "
     "(Algorithm 1 of Wei et al. as written; sensitivity C sqrt(m)).",
     "flat|per_layer|per_layer_c"},
    {"noise_at", bulwark::OptType::String, "\"client\"", 0, 0,
     "client: each client noises its clipped upload; server: the server noises the mean (DP-FedAvg).",
     "client|server"},
    {"paper_accounting", bulwark::OptType::Bool, "false", 0, 1,
     "per_layer_c: account with noise multiplier sigma as the paper does, instead of the true sigma/sqrt(m)."},
    {"secure_rng", bulwark::OptType::Bool, "false", 0, 1,
     "Draw noise from a cryptographically secure generator (ChaCha20 keyed from the OS; not reproducible)."},
};

/// Scales `v` to norm at most `bound` (exactly untouched when it fits).
void clip_to(torch::Tensor v, double bound) {
  const double norm = v.norm().item<double>();
  if (norm > bound) v.mul_(bound / norm);
}

class FedSdp final : public bulwark::PrivacyMechanism {
 public:
  explicit FedSdp(const bulwark::Options& options)
      : sigma_(options.get<double>("noise_multiplier")),
        clip_(options.get<double>("clip")),
        clipping_(options.get<std::string>("clipping")),
        paper_accounting_(options.get<bool>("paper_accounting")),
        at_server_(options.get<std::string>("noise_at") == "server"),
        secure_(options.get<bool>("secure_rng")) {
    if (!(clip_ > 0)) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "fed_sdp: clip must be > 0 (the client update's L2 bound C); found clip = " +
                               std::to_string(clip_));
    }
    if (paper_accounting_ && clipping_ != "per_layer_c") {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "fed_sdp: paper_accounting applies to clipping = \"per_layer_c\" only (with " + clipping_ +
                               " the sensitivity is C and sigma is already the true multiplier); remove it");
    }
  }

  bool on_client_update() const override { return true; }
  bool on_server() const override { return at_server_; }

  void privatize_update(torch::Tensor& update, const bulwark::ClientUpdateContext& context) override {
    torch::NoGradGuard no_grad;
    if (clipping_ != "flat") {
      const auto spans = bulwark::layer_spans(*context.layout);
      const double bound = clipping_ == "per_layer" ? clip_ / std::sqrt(static_cast<double>(spans.size())) : clip_;
      for (const auto& span : spans) clip_to(update.narrow(0, span.offset, span.length), bound);
    } else {
      clip_to(update, clip_);
    }
    if (!at_server_ && sigma_ > 0) {
      update.add_(bulwark::gaussian_like(update, sigma_ * clip_, context.generator, secure_));
    }
  }

  void privatize_aggregate(torch::Tensor& aggregate, const bulwark::ServerPrivacyContext& context) override {
    if (sigma_ == 0 || context.clients_in_round == 0) return;
    torch::NoGradGuard no_grad;
    const double std = sigma_ * clip_ / static_cast<double>(context.clients_in_round);
    aggregate.add_(bulwark::gaussian_like(aggregate, std, context.generator, secure_));
  }

  std::vector<bulwark::AccountingEvent> accounting(const bulwark::RoundAccountingInfo& info) const override {
    double multiplier = sigma_;
    if (clipping_ == "per_layer_c" && !paper_accounting_) {
      if (!info.layout) throw bulwark::Error(bulwark::ErrorKind::Runtime, "fed_sdp: accounting needs the model layout");
      multiplier = sigma_ / std::sqrt(static_cast<double>(info.layout->layers().size()));
    }
    return {{bulwark::PrivacyLevel::Client, info.client_sampling_rate, multiplier, 1}};
  }

 private:
  double sigma_, clip_;
  std::string clipping_;  ///< flat | per_layer | per_layer_c
  bool paper_accounting_, at_server_, secure_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::PrivacyMechanism, FedSdp, "fed_sdp", "1.0.0",
               "Fed-SDP / DP-FedAvg: clip each client's update to C, Gaussian noise N(0, sigma^2 C^2) at the client or server",
               "Client-level DP for federated averaging (McMahan, Ramage, Talwar, Zhang, 'Learning "
               "Differentially Private Recurrent Language Models', ICLR 2018; Geyer, Klein, Nabi, "
               "'Differentially Private Federated Learning: A Client Level Perspective', 2017; Algorithm 1 "
               "(Fed-SDP) of Wei et al., ICDCS 2021). Each client's update is clipped to L2 norm C (flat, or "
               "each of m layers to C/sqrt(m), or each layer to C as the paper's Algorithm 1 writes it: "
               "per_layer_c, accounted at sigma/sqrt(m) unless paper_accounting = true); noise N(0, sigma^2 C^2) is added to every upload "
               "(noise_at = client) or to the sum of the uploads, i.e. std sigma*C/K_t on their mean "
               "(noise_at = server; use fedavg with weighted = false). Protects one client's whole data "
               "(client-level DP); sensitivity C, noise multiplier sigma, one step per round at the client "
               "sampling rate q = K_t/K. secure_rng = true draws the noise from a cryptographically secure generator (ChaCha20 keyed from the OS; not reproducible).",
               kOptions)
