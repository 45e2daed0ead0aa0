// Inner-product manipulation (Xie, Koyejo, Gupta, "Fall of Empires: Breaking Byzantine-tolerant
// SGD by Inner Product Manipulation", UAI 2019, PMLR 115, 2020):
//
//   u_mal = −ε · (1/|H|) Σ_{i∈H} u_i      for every malicious row, H = the honest rows
//
// With a small ε (0.1) the malicious rows sit close to the honest ones and pass distance-based
// rules such as Krum and the median while dragging the aggregate's inner product with the true
// gradient towards zero or below; with a large ε (10) they overwhelm averaging. The paper studies
// ε ∈ {0.1, 1, 10} (and more).
//
// Knowledge: "full" (default, the paper's omniscient attacker) reads the honest rows; "partial"
// uses the mean of the malicious clients' own honest updates instead (non-omniscient). In a round
// where every participant is malicious the attacker falls back to its own updates.
//
// optimize = true (full knowledge only): ε is chosen each round to maximise ‖Agg(U_ε) − mean(H)‖,
// Agg being the experiment's configured aggregator (pre-aggregators included) run on the
// candidate matrix through context.aggregate_probe — the "optimal" IPM of robustness libraries.
// search = "grid" tries every `grid` value (ties to the first); search = "line" is ByzFL's
// Optimal_IPM line search (bulwark/factor_search.hpp; its defaults start = 0, step = 10,
// ratio = 0.8, evaluations = 20).
#include <torch/torch.h>

#include <string>
#include <vector>

#include "bulwark/error.hpp"
#include "bulwark/factor_search.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/rows.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"epsilon", bulwark::OptType::Float, "0.1", 0, bulwark::kInf,
     "epsilon: malicious row = -epsilon * mean of the honest rows (Xie et al. study 0.1, 1, 10)."},
    {"knowledge", bulwark::OptType::String, "\"full\"", 0, 0,
     "full: the honest rows (omniscient); partial: the malicious clients' own honest updates.",
     "full|partial"},
    {"optimize", bulwark::OptType::Bool, "false", 0, 1,
     "Choose epsilon each round to maximise the aggregate's distance to the honest mean (see search)."},
    {"grid", bulwark::OptType::List, "[0.1, 0.2, 0.5, 1, 2, 5, 10]", 0, bulwark::kInf,
     "optimize: the epsilon values tried."},
    {"search", bulwark::OptType::String, "\"grid\"", 0, 0,
     "optimize: grid = every value of `grid`; line = ByzFL's expansion-contraction line search.", "grid|line"},
    {"evaluations", bulwark::OptType::Int, "20", 1, bulwark::kInf, "search = line: aggregations tried per round."},
    {"start", bulwark::OptType::Float, "0", -bulwark::kInf, bulwark::kInf, "search = line: first epsilon tried."},
    {"step", bulwark::OptType::Float, "10", -bulwark::kInf, bulwark::kInf,
     "search = line: first step (doubled while the distance grows)."},
    {"ratio", bulwark::OptType::Float, "0.8", 0.5, 1, "search = line: step shrink factor in (0.5, 1)."},
};

class IPM final : public bulwark::Attack {
 public:
  explicit IPM(const bulwark::Options& options)
      : epsilon_(options.get<double>("epsilon")),
        full_(options.get<std::string>("knowledge") == "full"),
        search_(options, "ipm") {
    if (search_.enabled() && !full_) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "ipm: optimize = true runs the server's aggregator on candidate updates, which "
                           "needs knowledge = \"full\"");
    }
  }

  bool poisons_updates() const override { return true; }
  bool omniscient() const override { return full_; }

  void poison_updates(torch::Tensor& updates, const bulwark::UpdateAttackContext& context) override {
    const auto& rows = context.malicious_rows;
    const auto honest_mean =
        bulwark::select_rows(updates, context.honest_rows.empty() ? rows : context.honest_rows).mean(0);
    double epsilon = epsilon_;
    if (search_.enabled()) {
      if (!context.aggregate_probe) {
        throw bulwark::Error(bulwark::ErrorKind::Runtime,
                             "ipm: optimize = true needs context.aggregate_probe (the engine gives it to "
                             "omniscient attacks)");
      }
      const auto reference = honest_mean.to(torch::kDouble);
      epsilon = search_.best([&](double candidate) {
        auto trial = updates.clone();
        bulwark::write_rows(trial, rows, -candidate * honest_mean);
        return (context.aggregate_probe(trial).to(torch::kDouble) - reference).norm().item<double>();
      });
    }
    bulwark::write_rows(updates, rows, -epsilon * honest_mean);
  }

 private:
  double epsilon_;
  bool full_;
  bulwark::FactorSearch search_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, IPM, "ipm", "1.0.0",
               "Inner-product manipulation: -epsilon * honest mean (Xie et al., UAI 2019)",
               "Inner-product manipulation (C. Xie, O. Koyejo, I. Gupta, 'Fall of Empires: Breaking "
               "Byzantine-tolerant SGD by Inner Product Manipulation', UAI 2019): every malicious "
               "row becomes -epsilon times the mean of the honest rows (omniscient; knowledge = "
               "partial uses the attackers' own honest updates). Small epsilon (0.1) defeats "
               "Krum/median, large epsilon (10) defeats averaging. optimize = true picks epsilon "
               "each round to maximise the distance between the configured aggregator's output and the "
               "honest mean: from `grid`, or by ByzFL's Optimal_IPM line search (search = \"line\").",
               kOptions)
