// Min-Max attack (Shejwalkar, Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning
// Attacks and Defenses for Federated Learning", NDSS 2021, the AGR-agnostic Min-Max):
//
//   u_mal = μ + γ* · p,
//   γ* = max γ  s.t.  max_{i∈H} ‖u_mal − u_i‖² ≤ max_{i,j∈H} ‖u_i − u_j‖²
//
// μ the mean of the benign rows H and p a perturbation direction (`direction`):
//   unit_vec: −μ / ‖μ‖ (inverse unit vector),  sign: −sign(μ),  std: −σ (coordinate-wise sample
//   standard deviation of H).
// Every malicious row gets the same u_mal: it is no farther from any benign update than the two
// farthest benign updates are from each other, so distance-based rules cannot single it out.
//
// γ* is found by the paper's binary search (as in the authors' code): start at
// γ = gamma_init with step s = gamma_init; while |γ_succ − γ| > tolerance: if γ satisfies the
// constraint, γ_succ = γ and γ += s/2, else γ −= s/2; s /= 2. The result is μ + γ_succ·p, so γ*
// is found to within the tolerance when it lies below 2·gamma_init (otherwise ≈ 2·gamma_init).
//
// Knowledge: "full" (default; the paper's agr-agnostic attacker that knows the benign gradients)
// uses the honest rows; "partial" uses the malicious clients' own honest updates (non-omniscient).
// In a round where every participant is malicious the attacker falls back to its own updates.
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
    {"knowledge", bulwark::OptType::String, "\"full\"", 0, 0,
     "full: the honest rows (omniscient); partial: the malicious clients' own honest updates.",
     "full|partial"},
};

torch::Tensor perturbation(const std::string& direction, const torch::Tensor& benign, const torch::Tensor& mean) {
  if (direction == "unit_vec") return -mean / mean.norm().clamp_min(std::numeric_limits<float>::min());
  if (direction == "sign") return -mean.sign();
  return benign.size(0) > 1 ? -benign.std(0, /*unbiased=*/true) : torch::zeros_like(mean);
}

class MinMax final : public bulwark::Attack {
 public:
  explicit MinMax(const bulwark::Options& options)
      : direction_(options.get<std::string>("direction")),
        gamma_init_(options.get<double>("gamma_init")),
        tolerance_(options.get<double>("tolerance")),
        full_(options.get<std::string>("knowledge") == "full") {}

  bool poisons_updates() const override { return true; }
  bool omniscient() const override { return full_; }

  void poison_updates(torch::Tensor& updates, const bulwark::UpdateAttackContext& context) override {
    const auto& rows = context.malicious_rows;
    const auto benign = bulwark::select_rows(updates, context.honest_rows.empty() ? rows : context.honest_rows)
                            .to(torch::kDouble);
    const auto mean = benign.mean(0);
    const auto p = perturbation(direction_, benign, mean);
    const double bound = torch::cdist(benign, benign).pow(2).max().item<double>();
    // ‖μ + γp − u_i‖² = a_i + 2γ b_i + γ² c with a_i = ‖μ − u_i‖², b_i = ⟨μ − u_i, p⟩, c = ‖p‖²:
    // one pass over the d coordinates, then the search is arithmetic on n numbers.
    const auto offsets = mean.unsqueeze(0) - benign;
    const auto a = offsets.pow(2).sum(1), b = offsets.matmul(p);
    const double c = p.pow(2).sum().item<double>();
    auto satisfied = [&](double gamma) {
      return (a + 2 * gamma * b + gamma * gamma * c).max().item<double>() <= bound;
    };
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
  bool full_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, MinMax, "minmax", "1.0.0",
               "Min-Max adaptive attack (Shejwalkar & Houmansadr, NDSS 2021)",
               "Min-Max attack (V. Shejwalkar, A. Houmansadr, 'Manipulating the Byzantine: Optimizing "
               "Model Poisoning Attacks and Defenses for Federated Learning', NDSS 2021): every "
               "malicious row becomes mean + gamma * p, p = -unit vector of the benign mean, -its "
               "sign or -the coordinate std (`direction`), with the largest gamma (paper's binary "
               "search from gamma_init to `tolerance`) such that the row's largest squared distance "
               "to a benign update is at most the largest squared distance between two benign "
               "updates. knowledge = full uses the honest rows (omniscient), partial the attackers' "
               "own honest updates.",
               kOptions)
