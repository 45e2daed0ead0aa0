// Sign flipping: a malicious client uploads its own honest update reversed and scaled,
//
//   u_mal = −k · u_honest          (k = 1: the plain sign flip)
//
// the "reversed gradient" Byzantine behaviour of the robust-aggregation literature (e.g. Damaskinos
// et al., "Asynchronous Byzantine Machine Learning (the case of SGD)", ICML 2018; Allen-Zhu et al.,
// "Byzantine-Resilient Non-Convex Stochastic Gradient Descent", ICLR 2021; Karimireddy et al.,
// "Learning from History for Byzantine Robust Optimization", ICML 2021, where it is called the
// sign-flipping attack). Non-omniscient: each malicious row only sees its own honest update.
#include <torch/torch.h>

#include "bulwark/plugin.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"k", bulwark::OptType::Float, "1.0", 0, bulwark::kInf,
     "Scale of the reversed update: u_mal = -k * u (k = 1 flips the sign only)."},
};

class SignFlip final : public bulwark::Attack {
 public:
  explicit SignFlip(const bulwark::Options& options) : k_(options.get<double>("k")) {}

  bool poisons_updates() const override { return true; }

  void poison_updates(torch::Tensor& updates, const bulwark::UpdateAttackContext&) override {
    updates.mul_(-k_);
  }

 private:
  double k_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, SignFlip, "sign_flip", "1.0.0",
               "Sign flipping: upload -k times the honest update (non-omniscient)",
               "Sign-flipping attack: every malicious client replaces its honest update u by -k * u "
               "(k = 1 by default), the reversed-gradient Byzantine behaviour used throughout the "
               "robust-aggregation literature (e.g. Damaskinos et al., ICML 2018; Allen-Zhu et al., "
               "ICLR 2021; Karimireddy, He, Jaggi, 'Learning from History for Byzantine Robust "
               "Optimization', ICML 2021). Non-omniscient: uses only the client's own update.",
               kOptions)
