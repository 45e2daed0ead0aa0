// Min-Sum attack (Shejwalkar, Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning
// Attacks and Defenses for Federated Learning", NDSS 2021, the AGR-agnostic Min-Sum):
//
//   u_mal = μ + γ* · p,
//   γ* = max γ  s.t.  Σ_{i∈H} ‖u_mal − u_i‖² ≤ max_{i∈H} Σ_{j∈H} ‖u_i − u_j‖²
//
// μ the mean of the benign rows H and p a perturbation direction (`direction`):
//   unit_vec: −μ / ‖μ‖,  sign: −sign(μ),  std: −σ (coordinate-wise sample standard deviation).
// Every malicious row gets the same u_mal: its summed squared distance to the benign updates is
// no larger than that of the most outlying benign update, so score-based rules (Krum's sum of
// distances) do not rank it last.
//
// `bound`: "max" is the paper's right-hand side above; "min" uses min_{i∈H} Σ_j ‖u_i − u_j‖²
// instead, as the authors' released code does (a stealthier, smaller γ*).
//
// γ* is found by the paper's binary search (as in the authors' code): start at
// γ = gamma_init with step s = gamma_init; while |γ_succ − γ| > tolerance: if γ satisfies the
// constraint, γ_succ = γ and γ += s/2, else γ −= s/2; s /= 2. The result is μ + γ_succ·p.
//
// Knowledge: "full" (default) uses the honest rows (omniscient); "partial" the malicious clients'
// own honest updates. In a round where every participant is malicious the attacker falls back to
// its own updates.
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "bulwark/plugin.hpp"
#include "bulwark/rows.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"direction", bulwark::OptType::String, "\"unit_vec\"", 0, 0,
     "Perturbation p: unit_vec (-mean/|mean|), sign (-sign(mean)) or std (-coordinate std).",
     "unit_vec|sign|std"},
    {"gamma_init", bulwark::OptType::Float, "10.0", 0, bulwark::kInf,
     "Initial gamma of the binary search (it explores (0, 2 gamma_init))."},
    {"tolerance", bulwark::OptType::Float, "1e-5", 0, bulwark::kInf, "Binary search stops at this gamma precision."},
    {"bound", bulwark::OptType::String, "\"max\"", 0, 0,
     "max: the paper's max_i sum_j |u_i - u_j|^2; min: min_i, as the authors' released code.", "max|min"},
    {"knowledge", bulwark::OptType::String, "\"full\"", 0, 0,
     "full: the honest rows (omniscient); partial: the malicious clients' own honest updates.",
     "full|partial"},
};

torch::Tensor perturbation(const std::string& direction, const torch::Tensor& benign, const torch::Tensor& mean) {
  if (direction == "unit_vec") return -mean / mean.norm().clamp_min(std::numeric_limits<float>::min());
  if (direction == "sign") return -mean.sign();
  return benign.size(0) > 1 ? -benign.std(0, /*unbiased=*/true) : torch::zeros_like(mean);
}

class MinSum final : public bulwark::Attack {
 public:
  explicit MinSum(const bulwark::Options& options)
      : direction_(options.get<std::string>("direction")),
        gamma_init_(options.get<double>("gamma_init")),
        tolerance_(options.get<double>("tolerance")),
        use_max_(options.get<std::string>("bound") == "max"),
        full_(options.get<std::string>("knowledge") == "full") {}

  bool poisons_updates() const override { return true; }
  bool omniscient() const override { return full_; }

  void poison_updates(torch::Tensor& updates, const bulwark::UpdateAttackContext& context) override {
    const auto& rows = context.malicious_rows;
    const auto benign = bulwark::select_rows(updates, context.honest_rows.empty() ? rows : context.honest_rows)
                            .to(torch::kDouble);
    const auto mean = benign.mean(0);
    const auto p = perturbation(direction_, benign, mean);
    const auto sums = torch::cdist(benign, benign).pow(2).sum(1);
    const double bound = (use_max_ ? sums.max() : sums.min()).item<double>();
    // Σ_i ‖μ + γp − u_i‖² = Σ_i ‖μ − u_i‖² + 2γ Σ_i ⟨μ − u_i, p⟩ + |H| γ² ‖p‖², and the middle sum
    // is 0 because μ is the mean: the constraint is A + |H| γ² c ≤ bound.
    const double spread = (mean.unsqueeze(0) - benign).pow(2).sum().item<double>();
    const double c = static_cast<double>(benign.size(0)) * p.pow(2).sum().item<double>();
    auto satisfied = [&](double gamma) { return spread + gamma * gamma * c <= bound; };
    double gamma = gamma_init_, step = gamma_init_, success = 0.0;
    while (std::abs(success - gamma) > tolerance_) {
      if (satisfied(gamma)) {
        success = gamma;
        gamma += step / 2;
      } else {
        gamma -= step / 2;
      }
      step /= 2;
    }
    bulwark::write_rows(updates, rows, mean + success * p);
  }

 private:
  std::string direction_;
  double gamma_init_, tolerance_;
  bool use_max_, full_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, MinSum, "minsum", "1.0.0",
               "Min-Sum adaptive attack (Shejwalkar & Houmansadr, NDSS 2021)",
               "Min-Sum attack (V. Shejwalkar, A. Houmansadr, 'Manipulating the Byzantine: Optimizing "
               "Model Poisoning Attacks and Defenses for Federated Learning', NDSS 2021): every "
               "malicious row becomes mean + gamma * p, p = -unit vector of the benign mean, -its "
               "sign or -the coordinate std (`direction`), with the largest gamma (paper's binary "
               "search) such that the row's summed squared distance to the benign updates is at most "
               "the largest such sum of a benign update (bound = min: the smallest, as in the "
               "authors' code). knowledge = full uses the honest rows (omniscient), partial the "
               "attackers' own honest updates.",
               kOptions)
