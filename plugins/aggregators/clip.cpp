// Static norm clipping, as a pre-aggregator:
//
//   u_i ← u_i · min(1, C / ‖u_i‖)        C = threshold
//
// the fixed-threshold clipping used as a Byzantine defence in front of averaging (e.g. Sun et al.,
// "Can You Really Backdoor Federated Learning?", 2019) and as the baseline that centered_clipping
// improves on (Karimireddy, He, Jaggi, ICML 2021). Chain it in front of any rule with
// `pre = ["clip"]`; used alone, aggregate() clips and then takes the plain mean.
//
// Non-finite rows: a row with a NaN/±Inf entry has no direction to clip along; preprocess() passes
// it through unchanged, so the rule after it sees (and can exclude and flag) a non-finite row, and
// the plain mean of aggregate() skips such rows (g = 0 if none is finite). A finite row whose norm
// overflows is still clipped exactly: its direction is computed from the row scaled by its largest
// magnitude. Row weights pass through unchanged.
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"threshold", bulwark::OptType::Float, nullptr, 0, bulwark::kInf,
     "Clipping norm C > 0 (required): rows longer than C are scaled down to length C."},
};

class Clip final : public bulwark::Aggregator {
 public:
  explicit Clip(const bulwark::Options& options) : threshold_(options.get<double>("threshold")) {
    if (!(threshold_ > 0)) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "clip: threshold must be > 0 (the clipping norm); found threshold = " +
                               std::to_string(threshold_));
    }
  }

  bulwark::UpdateSet preprocess(const torch::Tensor& updates, const torch::Tensor& weights,
                                const bulwark::AggregationContext&) override {
    bulwark::check_update_matrix(updates, "clip");
    return {bulwark::clip_rows(updates, threshold_), weights};
  }

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor& weights,
                                       const bulwark::AggregationContext& context) override {
    bulwark::AggregationResult result;
    result.aggregate = bulwark::finite_mean(preprocess(updates, weights, context).updates);
    return result;
  }

 private:
  double threshold_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, Clip, "clip", "1.0.0",
               "Static norm clipping pre-aggregator (u_i <- u_i min(1, C / ||u_i||))",
               "Static norm clipping, a pre-aggregator: every row is scaled to norm at most C = "
               "threshold, u_i <- u_i min(1, C / ||u_i||), the fixed-threshold defence of e.g. Sun "
               "et al., 'Can You Really Backdoor Federated Learning?' (2019), and the baseline of "
               "centered clipping (Karimireddy, He, Jaggi, ICML 2021). Chain with pre = "
               "[\"clip\"]; alone it clips then averages. Rows with a NaN/Inf entry pass through "
               "unchanged (the next rule handles them; the standalone mean skips them).",
               kOptions)
