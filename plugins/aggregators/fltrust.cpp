// FLTrust (Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via Trust
// Bootstrapping", NDSS 2021, Algorithm 2):
//
//   The server holds a small clean root dataset (`root_size` training examples, 100 in the paper)
//   and every round computes its own update g₀ at θ on it, the same way a client computes its
//   upload. Each upload g_i then gets
//     trust score   TS_i = ReLU(cos(g_i, g₀)) = max(0, ⟨g_i, g₀⟩ / (‖g_i‖ ‖g₀‖))
//     normalised    ḡ_i  = (‖g₀‖ / ‖g_i‖) · g_i
//   and g = Σ_i TS_i ḡ_i / Σ_i TS_i. When every score is 0 (Σ TS = 0) the round makes no step:
//   g = 0.
//
// The root dataset is drawn by the engine from the whole training set (seeded, once, uniformly
// without replacement); g₀ comes from context.root_update(), which the engine fills because
// root_sample_size() > 0. g₀ takes as many local steps as the round's clients (the paper's common
// R; with an epoch schedule, the most of any participant), honestly and without privacy hooks.
// Outside an experiment (`bulwark aggregate`) there is no root dataset and aggregate() refuses to
// run. Sample counts are ignored, as in the paper.
//
// Degenerate rows: a row with a NaN/±Inf entry or zero norm has no defined cosine; it gets
// TS = 0 and does not enter g. A zero g₀ (e.g. a converged root loss) leaves every score 0, so g = 0.
//
// Flags: every row with TS = 0 (reports_flags = true).
#include <torch/torch.h>

#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"root_size", bulwark::OptType::Int, "100", 1, bulwark::kInf,
     "Training examples the server draws as its clean root dataset (100 in Cao et al.)."},
};

class FLTrust final : public bulwark::Aggregator {
 public:
  explicit FLTrust(const bulwark::Options& options) : root_size_(options.get<std::int64_t>("root_size")) {}

  std::int64_t root_sample_size() const override { return root_size_; }

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "fltrust");
    if (!context.root_update) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "fltrust: the engine did not provide a root dataset "
                           "(AggregationContext::root_update is empty); FLTrust needs the server's own "
                           "update on its root data, so run it inside an experiment rather than on "
                           "saved updates");
    }
    const auto d = updates.size(1);
    auto root = context.root_update();
    if (!root.defined() || root.numel() != d) {
      throw bulwark::Error(bulwark::ErrorKind::Runtime,
                           "fltrust: the root update has " + std::to_string(root.defined() ? root.numel() : 0) +
                               " entries; expected d = " + std::to_string(d));
    }
    root = root.reshape({d}).to(updates.device(), updates.scalar_type());

    // Products and norms in the update dtype, ratios in float64. A row's norm is finite exactly
    // when all its entries are (and it does not overflow): the others score 0.
    auto norms = updates.norm(2, /*dim=*/1).to(torch::kDouble);
    auto root_norm = root.norm().to(torch::kDouble);
    auto cosine = updates.mv(root).to(torch::kDouble) / (norms * root_norm);
    // NaN (a non-finite row, a zero row or a zero g₀) fails `> 0`: such rows score 0.
    const auto finite = torch::isfinite(norms);
    auto trusted = finite.logical_and(cosine > 0);
    auto trust = torch::where(trusted, cosine, torch::zeros_like(cosine));
    auto total = trust.sum();

    bulwark::AggregationResult result;
    result.reports_flags = true;
    result.flagged_rows = bulwark::rows_not_in(trusted.nonzero().flatten(), updates.size(0));
    if (!(total.item<double>() > 0)) {
      result.aggregate = torch::zeros({d}, updates.options());
      return result;
    }
    // Row weights TS_i ‖g₀‖ / (‖g_i‖ Σ TS), 0 for untrusted rows; rows that are not finite (0 · NaN
    // would be NaN) are left out of the product rather than weighted.
    auto scale = torch::where(trusted, trust * root_norm / (norms * total), torch::zeros_like(trust))
                     .to(updates.scalar_type());
    if (finite.all().item<bool>()) {
      result.aggregate = scale.matmul(updates);
    } else {
      const auto rows = finite.nonzero().flatten();
      result.aggregate = scale.index_select(0, rows).matmul(updates.index_select(0, rows));
    }
    return result;
  }

 private:
  std::int64_t root_size_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, FLTrust, "fltrust", "1.0.0",
               "FLTrust: trust scores against the server's root-data update (Cao et al. NDSS 2021)",
               "FLTrust (X. Cao, M. Fang, J. Liu, N. Z. Gong, 'FLTrust: Byzantine-robust Federated "
               "Learning via Trust Bootstrapping', NDSS 2021): the server draws root_size training "
               "examples as a clean root dataset and computes its own update g0 on it each round; "
               "upload g_i gets trust TS_i = ReLU(cos(g_i, g0)) and is rescaled to ||g0||; g = "
               "sum TS_i (||g0|| / ||g_i||) g_i / sum TS_i, or 0 when every score is 0. Non-finite "
               "and zero rows score 0. Needs the engine's root dataset (context.root_update). Flags "
               "every row with trust 0.",
               kOptions)
