// FoolsGold (Fung, Yoon, Beschastnikh, "The Limitations of Federated Learning in Sybil Settings",
// RAID 2020, Algorithm 1; in FLPoison and Blades). Sybils pursuing one goal upload updates that
// point the same way round after round; FoolsGold lowers the weight of clients whose update
// histories are too similar to someone else's:
//
//   H_i   = Σ over the rounds client i took part in of its update Δ_i     (kept by client id)
//   cs_ij = cos(H_i, H_j) for j ≠ i,  cs_ii = 0
//   v_i   = max_j cs_ij
//   cs_ij ← cs_ij · v_i / v_j  where v_i < v_j                            (pardoning)
//   α_i   = clip(1 − max_j cs_ij, 0, 1),   α ← α / max α
//   α_i   ← clip(κ (ln(α_i / (1 − α_i)) + 0.5), 0, 1)                     (α_i = 1 gives 1, 0 gives 0)
//   g     = Σ_i α_i Δ_i
//
// The diagonal counts as 0 in both maxima, as in the authors' code (sklearn's cosine matrix minus
// the identity); 1 − max_j cs_ij below 1e-12 is float64 rounding of a cosine of 1 and counts as 0. The optional feature-importance weighting of the paper is not applied, as in
// FLPoison and Blades by default. `normalize = true` divides g by Σ α_i: the paper's weighted sum
// is n times the scale of a mean, so with `normalize = false` the server learning rate should be
// about 1/n of FedAvg's. When every α is 0 (identical histories), g = 0.
//
// State: H_i for every client that has taken part, in the updates' dtype (memory d per such
// client), checkpointed as "history/<client id>". A row with a NaN/±Inf entry gets α = 0 and is
// not added to its client's history; a history that has overflowed gets α = 0 too. Flags: the rows
// with α = 0. Unweighted by sample counts, as in the paper.
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <map>
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"confidence", bulwark::OptType::Float, "1.0", 0, bulwark::kInf,
     "kappa: the slope of the logit that maps similarity to weight (the paper: 1)."},
    {"normalize", bulwark::OptType::Bool, "false", 0, 1,
     "Divide the weighted sum by the sum of the weights (a weighted mean) instead of the paper's "
     "weighted sum."},
};

constexpr const char* kHistoryKey = "history/";

class FoolsGold final : public bulwark::Aggregator {
 public:
  explicit FoolsGold(const bulwark::Options& options)
      : confidence_(options.get<double>("confidence")), normalize_(options.get<bool>("normalize")) {
    if (!(confidence_ > 0)) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "foolsgold: confidence must be > 0 (the logit's slope kappa); found " +
                               std::to_string(confidence_));
    }
  }

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "foolsgold");
    const auto n = updates.size(0), d = updates.size(1);
    if (static_cast<std::int64_t>(context.client_ids.size()) != n) {
      throw bulwark::Error(bulwark::ErrorKind::Runtime,
                           "foolsgold: context.client_ids has " + std::to_string(context.client_ids.size()) +
                               " entries for " + std::to_string(n) + " updates; the engine must name each row's client");
    }
    const auto finite = torch::isfinite(updates).all(/*dim=*/1).cpu();
    std::vector<torch::Tensor> histories;
    std::vector<std::int64_t> rows;  // rows whose history takes part in the similarities
    for (std::int64_t i = 0; i < n; ++i) {
      if (!finite[i].item<bool>()) continue;
      auto& history = history_[context.client_ids[i]];
      if (!history.defined()) {
        history = updates[i].clone();
      } else if (history.numel() != d) {
        throw bulwark::Error(bulwark::ErrorKind::Runtime,
                             "foolsgold: client " + std::to_string(context.client_ids[i]) + "'s history has " +
                                 std::to_string(history.numel()) + " parameters but this round's updates have d = " +
                                 std::to_string(d) + " (a different model than the saved state?)");
      } else {
        // A new tensor, not add_: a saved state (an omniscient attack's probe) keeps the old one.
        history = history + updates[i].to(history.device(), history.scalar_type());
      }
      if (std::isfinite(history.norm().item<double>())) {
        histories.push_back(history);
        rows.push_back(i);
      }
    }

    auto alpha = torch::zeros({n}, torch::kDouble);
    const auto m = static_cast<std::int64_t>(rows.size());
    if (m > 0) {
      const auto weight = weights_of(torch::stack(histories).to(torch::kDouble));
      for (std::int64_t k = 0; k < m; ++k) alpha[rows[static_cast<std::size_t>(k)]] = weight[k];
    }

    bulwark::AggregationResult result;
    result.reports_flags = true;
    const auto used = (alpha > 0).nonzero().flatten();
    result.flagged_rows = bulwark::rows_not_in(used, n);
    if (used.numel() == 0) {
      result.aggregate = torch::zeros({d}, updates.options());
      return result;
    }
    const auto index = used.to(updates.device());
    auto kept_alpha = alpha.index_select(0, used).to(updates.device());
    auto sum = torch::matmul(kept_alpha, updates.index_select(0, index).to(torch::kDouble));
    if (normalize_) sum /= kept_alpha.sum();
    result.aggregate = sum.to(updates.scalar_type());
    return result;
  }

  void save_state(bulwark::StateDict& state) const override {
    for (const auto& [client, history] : history_) state[kHistoryKey + std::to_string(client)] = history;
  }

  void load_state(const bulwark::StateDict& state) override {
    history_.clear();
    const std::string prefix = kHistoryKey;
    for (const auto& [key, tensor] : state) {
      if (key.rfind(prefix, 0) != 0) continue;
      const auto id = key.substr(prefix.size());
      const auto sign = !id.empty() && id[0] == '-' ? 1u : 0u;
      if (id.size() == sign || id.size() > 18 || id.find_first_not_of("0123456789", sign) != std::string::npos) {
        throw bulwark::Error(bulwark::ErrorKind::Data, "foolsgold: state key '" + key + "' does not name a client id");
      }
      history_[std::stoll(id)] = tensor;  // never changed in place, so shared with the saved state
    }
  }

 private:
  /// α for histories [m, d] (float64), Algorithm 1 from the cosine matrix on.
  torch::Tensor weights_of(const torch::Tensor& histories) const {
    const auto m = histories.size(0);
    // sklearn's normalisation: a zero history stays zero and is similar to nothing.
    auto cs = bulwark::cosine_similarities(histories);
    cs.fill_diagonal_(0);
    const auto v = std::get<0>(cs.max(/*dim=*/1));
    auto c = cs.accessor<double, 2>();
    auto vmax = v.accessor<double, 1>();
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t j = 0; j < m; ++j) {
        if (i != j && vmax[i] < vmax[j]) c[i][j] *= vmax[i] / vmax[j];
      }
    }
    auto alpha = (1 - std::get<0>(cs.max(/*dim=*/1))).clamp(0, 1);
    // Parallel histories have a float64 cosine of 1 − 1e-16, not 1: that residue is no weight.
    alpha.masked_fill_(alpha < 1e-12, 0);
    const auto top = alpha.max().item<double>();
    if (top <= 0) return torch::zeros({m}, torch::kDouble);
    alpha /= top;
    // ln(α / (1 − α)) is +inf at α = 1 and −inf at α = 0; the clip maps those to 1 and 0.
    auto logit = confidence_ * ((alpha / (1 - alpha)).log() + 0.5);
    return logit.nan_to_num(0.0, 1.0, 0.0).clamp(0, 1);
  }

  double confidence_;
  bool normalize_;
  std::map<std::int64_t, torch::Tensor> history_;  ///< H_i by client id
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, FoolsGold, "foolsgold", "1.0.0",
               "FoolsGold (Fung, Yoon, Beschastnikh, RAID 2020)",
               "FoolsGold (C. Fung, C. J. M. Yoon, I. Beschastnikh, 'The Limitations of Federated "
               "Learning in Sybil Settings', RAID 2020, Algorithm 1): keeps each client's summed "
               "update history H_i, takes the cosine similarities of the histories (diagonal 0), "
               "pardons, maps alpha_i = 1 - max_j cs_ij through alpha / max alpha and "
               "clip(kappa (logit(alpha) + 0.5), 0, 1), and returns sum_i alpha_i u_i (normalize = "
               "true: divided by sum_i alpha_i). Histories are checkpointed as 'history/<client>'. "
               "NaN/Inf rows get alpha = 0 and stay out of the history. Flags rows with alpha = 0.",
               kOptions)
