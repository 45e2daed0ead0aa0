// Gaussian Byzantine updates: each malicious row is replaced by i.i.d. noise,
//
//   u_mal ~ N(μ, σ² I_d)
//
// the "Gaussian Byzantine workers" of Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning
// with Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017 (their experiments use
// μ = 0, σ = 200) and of Xie, Koyejo, Gupta, "Generalized Byzantine-tolerant SGD", 2018.
// Non-omniscient (it ignores every update, its own included). The draws come from the round's
// attack stream, so a run is reproducible.
#include <torch/torch.h>

#include "bulwark/plugin.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"mu", bulwark::OptType::Float, "0.0", -bulwark::kInf, bulwark::kInf, "Mean μ of every coordinate."},
    {"sigma", bulwark::OptType::Float, "200.0", 0, bulwark::kInf,
     "Standard deviation σ of every coordinate (Blanchard et al. 2017 use 200)."},
};

class Gaussian final : public bulwark::Attack {
 public:
  explicit Gaussian(const bulwark::Options& options)
      : mu_(options.get<double>("mu")), sigma_(options.get<double>("sigma")) {}

  bool poisons_updates() const override { return true; }

  void poison_updates(torch::Tensor& updates, const bulwark::UpdateAttackContext& context) override {
    auto generator = context.generator;
    updates.normal_(mu_, sigma_, generator);
  }

 private:
  double mu_, sigma_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, Gaussian, "gaussian", "1.0.0",
               "Gaussian noise in place of the update (non-omniscient)",
               "Gaussian attack: every malicious row is replaced by i.i.d. N(mu, sigma^2) noise, the "
               "Gaussian Byzantine workers of Blanchard, El Mhamdi, Guerraoui, Stainer, 'Machine "
               "Learning with Adversaries: Byzantine Tolerant Gradient Descent', NeurIPS 2017 "
               "(mu = 0, sigma = 200 there, the defaults here). Draws come from the round's seeded "
               "attack stream.",
               kOptions)
