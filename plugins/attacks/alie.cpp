// "A little is enough" (Baruch, Baruch, Goldberg, "A Little Is Enough: Circumventing Defenses For
// Distributed Learning", NeurIPS 2019):
//
//   u_mal,j = μ_j − z · σ_j        for every coordinate j and every malicious row,
//
// μ and σ the coordinate-wise mean and standard deviation of the honest rows. The paper's z is the
// largest shift that still leaves the malicious value closer to the mean than enough honest
// values for the defence to keep it:
//
//   s = ⌊n/2 + 1⌋ − f,     z = Φ⁻¹((n − s) / n)
//
// with n the round's clients and f its malicious clients (e.g. n = 50, f = 12: s = 14,
// z = Φ⁻¹(0.72) ≈ 0.583). Option `z` overrides the formula. σ is the sample standard deviation
// (n − 1 denominator, as torch.std in the reference implementations); with one reference row it
// is 0.
//
// Knowledge: "full" (default, omniscient) uses the honest rows; "partial" uses the malicious
// clients' own honest updates, which is how the paper's attackers estimate μ and σ when they do
// not see the others. In a round where every participant is malicious the attacker falls back to
// its own updates.
//
// optimize = true (full knowledge only): z is chosen each round to maximise ‖Agg(U_z) − μ‖, Agg
// being the configured aggregator run through context.aggregate_probe: every `grid` value (ties
// to the first), or with search = "line" ByzFL's Optimal_ALIE line search
// (bulwark/factor_search.hpp). ByzFL writes the row as μ + τσ, so its τ is −z here and its first
// step +10 is step = −10 (the default).
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "bulwark/error.hpp"
#include "bulwark/factor_search.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/rows.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"z", bulwark::OptType::Float, "0", -bulwark::kInf, bulwark::kInf,
     "Shift in standard deviations; when not given, the paper's z = Phi^-1((n - s)/n), "
     "s = floor(n/2 + 1) - f, for the round's n and f."},
    {"knowledge", bulwark::OptType::String, "\"full\"", 0, 0,
     "full: statistics of the honest rows (omniscient); partial: of the malicious clients' own updates.",
     "full|partial"},
    {"optimize", bulwark::OptType::Bool, "false", 0, 1,
     "Choose z each round to maximise the aggregate's distance to the honest mean (see search)."},
    {"grid", bulwark::OptType::List, "[0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3]", -bulwark::kInf, bulwark::kInf,
     "optimize: the z values tried."},
    {"search", bulwark::OptType::String, "\"grid\"", 0, 0,
     "optimize: grid = every value of `grid`; line = ByzFL's expansion-contraction line search.", "grid|line"},
    {"evaluations", bulwark::OptType::Int, "20", 1, bulwark::kInf, "search = line: aggregations tried per round."},
    {"start", bulwark::OptType::Float, "0", -bulwark::kInf, bulwark::kInf, "search = line: first z tried."},
    {"step", bulwark::OptType::Float, "-10", -bulwark::kInf, bulwark::kInf,
     "search = line: first step (doubled while the distance grows); -10 follows ByzFL, whose rows are mu + tau * sigma with tau = -z."},
    {"ratio", bulwark::OptType::Float, "0.8", 0.5, 1, "search = line: step shrink factor in (0.5, 1)."},
};

/// The paper's z for n clients of which f are malicious.
double paper_z(std::int64_t n, std::int64_t f) {
  const auto s = (n / 2 + 1) - f;  // ⌊n/2 + 1⌋ − f for integer n ≥ 0
  if (s <= 0) {
    throw bulwark::Error(bulwark::ErrorKind::Config,
                         "alie: the paper's z = Phi^-1((n - s)/n) with s = floor(n/2 + 1) - f is infinite for n = " +
                             std::to_string(n) + ", f = " + std::to_string(f) +
                             " (a malicious majority); give z explicitly");
  }
  const double p = static_cast<double>(n - s) / static_cast<double>(n);
  // Φ⁻¹(p) = √2 · erfinv(2p − 1)
  return std::sqrt(2.0) * torch::erfinv(torch::tensor(2.0 * p - 1.0, torch::kDouble)).item<double>();
}

class ALIE final : public bulwark::Attack {
 public:
  explicit ALIE(const bulwark::Options& options)
      : z_given_(options.is_set("z")),
        z_(options.get<double>("z")),
        full_(options.get<std::string>("knowledge") == "full"),
        search_(options, "alie") {
    if (search_.enabled() && !full_) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "alie: optimize = true runs the server's aggregator on candidate updates, which "
                           "needs knowledge = \"full\"");
    }
  }

  bool poisons_updates() const override { return true; }
  bool omniscient() const override { return full_; }

  void poison_updates(torch::Tensor& updates, const bulwark::UpdateAttackContext& context) override {
    const auto& rows = context.malicious_rows;
    const auto reference = bulwark::select_rows(updates, context.honest_rows.empty() ? rows : context.honest_rows);
    const auto mean = reference.mean(0);
    const auto sigma = reference.size(0) > 1 ? reference.std(0, /*unbiased=*/true) : torch::zeros_like(mean);
    double z = z_given_ ? z_ : 0.0;
    if (search_.enabled()) {
      if (!context.aggregate_probe) {
        throw bulwark::Error(bulwark::ErrorKind::Runtime,
                             "alie: optimize = true needs context.aggregate_probe (the engine gives it to "
                             "omniscient attacks)");
      }
      const auto reference = mean.to(torch::kDouble);
      z = search_.best([&](double candidate) {
        auto trial = updates.clone();
        bulwark::write_rows(trial, rows, mean - candidate * sigma);
        return (context.aggregate_probe(trial).to(torch::kDouble) - reference).norm().item<double>();
      });
    } else if (!z_given_) {
      z = paper_z(context.num_clients, context.num_malicious);
    }
    bulwark::write_rows(updates, rows, mean - z * sigma);
  }

 private:
  bool z_given_;
  double z_;
  bool full_;
  bulwark::FactorSearch search_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, ALIE, "alie", "1.0.0",
               "A little is enough: mean - z * std of the honest rows (Baruch et al., NeurIPS 2019)",
               "A Little Is Enough (G. Baruch, M. Baruch, Y. Goldberg, 'A Little Is Enough: "
               "Circumventing Defenses For Distributed Learning', NeurIPS 2019): every malicious row "
               "becomes mu - z * sigma, the coordinate-wise mean and sample standard deviation of the "
               "honest rows, with the paper's z = Phi^-1((n - s)/n), s = floor(n/2 + 1) - f, unless "
               "z is given. knowledge = partial estimates mu, sigma from the attackers' own honest "
               "updates (non-omniscient). optimize = true picks z each round to maximise the distance "
               "between the configured aggregator's output and the honest mean: from `grid`, or by "
               "ByzFL's Optimal_ALIE line search (search = \"line\").",
               kOptions)
