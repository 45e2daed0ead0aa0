// Scaling (boosting): a malicious client multiplies its own honest update,
//
//   u_mal = γ · u_honest
//
// the explicit boosting of Bhagoji, Chakraborty, Mittal, Calo, "Analyzing Federated Learning
// through an Adversarial Lens", ICML 2019 (boost factor λ, typically the number of clients), and
// the model-replacement scaling of Bagdasaryan et al., AISTATS 2020 (γ = n/η). Non-omniscient.
#include <torch/torch.h>

#include "bulwark/plugin.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"gamma", bulwark::OptType::Float, "10.0", -bulwark::kInf, bulwark::kInf,
     "Scale factor: u_mal = gamma * u (Bhagoji et al. boost by the number of clients)."},
};

class Scaling final : public bulwark::Attack {
 public:
  explicit Scaling(const bulwark::Options& options) : gamma_(options.get<double>("gamma")) {}

  bool poisons_updates() const override { return true; }

  void poison_updates(torch::Tensor& updates, const bulwark::UpdateAttackContext&) override {
    updates.mul_(gamma_);
  }

 private:
  double gamma_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, Scaling, "scaling", "1.0.0",
               "Scaling: upload gamma times the honest update (non-omniscient)",
               "Scaling (boosting) attack: every malicious client replaces its honest update u by "
               "gamma * u. This is the explicit boosting of Bhagoji, Chakraborty, Mittal, Calo, "
               "'Analyzing Federated Learning through an Adversarial Lens', ICML 2019, and the "
               "model-replacement scaling of Bagdasaryan et al., 'How To Backdoor Federated "
               "Learning', AISTATS 2020. Non-omniscient: uses only the client's own update.",
               kOptions)
