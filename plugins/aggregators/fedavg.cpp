// FedAvg aggregation: the mean of the clients' uploads, weighted by their sample counts n_k.
//
//   g = Σ_k n_k u_k / Σ_k n_k      (weighted = true, McMahan et al. 2017)
//   g = (1/n) Σ_k u_k              (weighted = false)
//
// Not robust: one NaN/Inf row makes g NaN/Inf. That is the faithful behaviour of the rule; the
// engine counts non-finite uploads per round so the failure is visible in metrics.csv.
#include <torch/torch.h>

#include "bulwark/plugin.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"weighted", bulwark::OptType::Bool, "true", 0, 1,
     "Weight each upload by the client's sample count n_k (false: plain mean)."},
};

class FedAvg final : public bulwark::Aggregator {
 public:
  explicit FedAvg(const bulwark::Options& options) : weighted_(options.get<bool>("weighted")) {}

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor& weights,
                                       const bulwark::AggregationContext&) override {
    bulwark::AggregationResult result;
    if (!weighted_) {
      result.aggregate = updates.mean(0);
      return result;
    }
    auto w = weights.to(updates.scalar_type());
    result.aggregate = torch::matmul(w, updates) / w.sum();
    return result;
  }

 private:
  bool weighted_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, FedAvg, "fedavg", "1.0.0",
               "Federated averaging: (weighted) mean of the uploads",
               "FedAvg aggregation (McMahan et al., 'Communication-Efficient Learning of Deep "
               "Networks from Decentralized Data', AISTATS 2017): g = sum_k n_k u_k / sum_k n_k, "
               "or the plain mean with weighted = false. Not Byzantine-robust: a single NaN/Inf "
               "or arbitrarily large upload moves g without bound.",
               kOptions)
