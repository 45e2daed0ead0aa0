// Full-knowledge attack on trimmed mean and median (Fang, Cao, Jia, Gong, "Local Model Poisoning
// Attacks to Byzantine-Robust Federated Learning", USENIX Security 2020: the attack on trimmed
// mean, which the paper also uses against the median).
//
// The paper, on local model parameters w: let s_j be the sign of the change of the j-th global
// parameter without attack, and w_max,j / w_min,j the largest / smallest j-th parameter of the
// benign local models. If s_j = −1 the c malicious values are sampled in [w_max,j, b·w_max,j] when
// w_max,j > 0, else in [w_max,j, w_max,j / b]; if s_j = 1 they are sampled in [w_min,j / b, w_min,j]
// when w_min,j > 0, else in [b·w_min,j, w_min,j]. b = 2 in the paper's experiments.
//
// Here, as in the authors' released code, the same rule is applied to the uploads themselves
// (FedAvg deltas or FedSGD gradients: trimmed mean and median commute with the shared offset θ):
// with s_j = sign of the j-th coordinate of the mean pre-attack upload (honest rows and the
// attackers' own honest updates, the full-knowledge estimate of the unattacked aggregate), every
// coordinate is pushed beyond the benign extreme opposite to s_j:
//
//   s_j > 0:  u_mal,j ~ U[w_min,j / b, w_min,j]  if w_min,j > 0,  else U[b·w_min,j, w_min,j]
//   s_j ≤ 0:  u_mal,j ~ U[w_max,j, b·w_max,j]    if w_max,j > 0,  else U[w_max,j, w_max,j / b]
//
// w_max / w_min over the honest rows. Each malicious row draws its own values from the round's
// attack stream. Omniscient. (A delta moves θ along +u and a gradient along −u, and in both cases
// pushing u against the sign of the mean upload reverses the unattacked change of θ.) In a round
// where every participant is malicious the attacker uses its own honest updates as the benign ones.
#include <torch/torch.h>

#include <vector>

#include "bulwark/plugin.hpp"
#include "bulwark/rows.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"b", bulwark::OptType::Float, "2.0", 1, bulwark::kInf,
     "Interval factor b > 1: how far beyond the benign extreme values are drawn (paper: 2)."},
};

class Fang final : public bulwark::Attack {
 public:
  explicit Fang(const bulwark::Options& options) : b_(options.get<double>("b")) {}

  bool poisons_updates() const override { return true; }
  bool omniscient() const override { return true; }

  void poison_updates(torch::Tensor& updates, const bulwark::UpdateAttackContext& context) override {
    const auto& rows = context.malicious_rows;
    const auto benign = bulwark::select_rows(updates, context.honest_rows.empty() ? rows : context.honest_rows);
    auto pre_attack = context.honest_rows;
    pre_attack.insert(pre_attack.end(), rows.begin(), rows.end());
    const auto increasing = bulwark::select_rows(updates, pre_attack).sum(0) > 0;
    const auto w_max = std::get<0>(benign.max(0)), w_min = std::get<0>(benign.min(0));
    const auto low = torch::where(increasing, torch::where(w_min > 0, w_min / b_, w_min * b_), w_max);
    const auto high = torch::where(increasing, w_min, torch::where(w_max > 0, w_max * b_, w_max / b_));
    auto generator = context.generator;
    auto u = torch::rand({static_cast<std::int64_t>(rows.size()), updates.size(1)}, generator, updates.options());
    updates.index_copy_(0, bulwark::row_index(rows, updates), low + u * (high - low));
  }

 private:
  double b_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, Fang, "fang", "1.0.0",
               "Full-knowledge attack on trimmed mean / median (Fang et al., USENIX Security 2020)",
               "Full-knowledge trimmed-mean attack (M. Fang, X. Cao, J. Jia, N. Z. Gong, 'Local Model "
               "Poisoning Attacks to Byzantine-Robust Federated Learning', USENIX Security 2020), "
               "also effective against the median: per coordinate, with s = sign of the mean "
               "pre-attack upload, malicious values are drawn uniformly beyond the benign extreme "
               "opposite to s: in [w_min/b, w_min] or [b w_min, w_min] when s > 0, in [w_max, b w_max] "
               "or [w_max, w_max/b] otherwise (by the sign of the extreme; b = 2). Applied to the "
               "uploads, as in the authors' code. Omniscient.",
               kOptions)
