// Centered clipping (Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust
// Optimization", ICML 2021, Algorithm 2 / eq. (CC)):
//
//   v⁰ = the previous round's aggregate (0 at round 0)
//   v^{l+1} = v^l + (1/n) Σ_i (u_i − v^l) · min(1, τ / ‖u_i − v^l‖),   l = 0..L−1
//   g = v^L
//
// Each update is clipped to a ball of radius τ around the current centre, so no single row moves
// the centre by more than τ/n per iteration. The centre is the aggregate of the previous round,
// which the plugin keeps between rounds and checkpoints through save_state/load_state (key
// "previous"). Round 0 (context.round == 0) always starts from zero. Options: tau (τ) and
// iterations (L).
//
// Non-finite rows: a row with any NaN or ±Inf entry has no direction to clip along; it is dropped
// and the average runs over the n' remaining rows (1/n' instead of 1/n). With no finite row the
// centre does not move (g = v⁰). A finite row so far away that ‖u_i − v‖ overflows gets c_i = 0 and
// contributes exactly 0. Unweighted, as in the paper.
//
// Cost per iteration: one pass over U for the n distances and one matrix–vector product.
#include <torch/torch.h>

#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"tau", bulwark::OptType::Float, "10", 0, bulwark::kInf,
     "Clipping radius tau > 0 around the centre."},
    {"iterations", bulwark::OptType::Int, "1", 1, bulwark::kInf,
     "Number of clipping iterations L per round."},
};

class CenteredClipping final : public bulwark::Aggregator {
 public:
  explicit CenteredClipping(const bulwark::Options& options)
      : tau_(options.get<double>("tau")), iterations_(options.get<std::int64_t>("iterations")) {
    if (!(tau_ > 0)) {
      throw bulwark::Error(
          bulwark::ErrorKind::Config,
          "centered_clipping: tau must be > 0 (the clipping radius); found tau = " +
              std::to_string(tau_));
    }
  }

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "centered_clipping");
    const auto n = updates.size(0);
    const auto d = updates.size(1);
    torch::Tensor v;
    if (context.round == 0 || !previous_.defined()) {
      v = torch::zeros({d}, updates.options());
    } else if (previous_.numel() != d) {
      throw bulwark::Error(bulwark::ErrorKind::Runtime,
                           "centered_clipping: the previous aggregate has " +
                               std::to_string(previous_.numel()) + " parameters but this round's "
                               "updates have d = " + std::to_string(d) +
                               " (a different model than the saved state?)");
    } else {
      v = previous_.to(updates.device(), updates.scalar_type());
    }

    auto finite = torch::isfinite(updates).all(/*dim=*/1);
    const auto kept = finite.sum().item<std::int64_t>();
    if (kept > 0) {
      auto rows = kept == n ? updates : updates.index({finite});
      for (std::int64_t l = 0; l < iterations_; ++l) {
        auto difference = rows - v;
        auto distances = difference.norm(2, /*dim=*/1).to(torch::kDouble);
        auto overflowed = torch::isinf(distances);
        if (overflowed.any().item<bool>()) {
          // Finite rows so far away that ‖u_i − v‖ overflows get weight 0; zero them so that
          // 0 · inf does not turn into NaN in the product below.
          difference.index_fill_(0, overflowed.nonzero().flatten(), 0);
        }
        // τ / 0 = inf clamps to 1: a row at the centre is kept whole.
        auto scale = (tau_ / distances).clamp_max_(1.0);
        v = v + torch::matmul(scale.to(rows.scalar_type()), difference) / static_cast<double>(kept);
      }
    }
    previous_ = v.clone();
    bulwark::AggregationResult result;
    result.aggregate = v;
    return result;
  }

  void save_state(bulwark::StateDict& state) const override {
    if (previous_.defined()) state["previous"] = previous_;
  }

  void load_state(const bulwark::StateDict& state) override {
    auto it = state.find("previous");
    previous_ = it == state.end() ? torch::Tensor() : it->second.clone();
  }

 private:
  double tau_;
  std::int64_t iterations_;
  torch::Tensor previous_;  ///< last round's aggregate, the next round's centre
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, CenteredClipping, "centered_clipping", "1.0.0",
               "Centered clipping (Karimireddy, He, Jaggi, ICML 2021)",
               "Centered clipping (S. P. Karimireddy, L. He, M. Jaggi, 'Learning from History for "
               "Byzantine Robust Optimization', ICML 2021): starting from the previous round's "
               "aggregate v (0 at round 0), L = iterations times v <- v + (1/n) sum_i (u_i - v) "
               "min(1, tau / ||u_i - v||). Keeps v between rounds (checkpointed as 'previous'). "
               "Rows with any NaN/Inf entry are dropped (average over the rest).",
               kOptions)
