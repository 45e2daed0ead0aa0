// Oracle aggregation: FedAvg over the truly honest rows only,
//
//   g = Σ_{k ∉ B} n_k u_k / Σ_{k ∉ B} n_k      (weighted = true)
//   g = mean of u_k over k ∉ B                 (weighted = false)
//
// where B is the round's true malicious set. It is not a defence but the reference upper bound of
// robustness studies ("Oracle SGD" in DiverseFL, the "oracle" baseline of Karimireddy et al. and
// many others): what a rule could reach if it knew who lies. It is the only plugin that reads the
// ground truth (wants_ground_truth() = true; the engine fills context.true_malicious_rows).
//
// Non-finite rows: malicious rows are excluded whatever they contain, so NaN/Inf faults injected by
// an attack never reach g. An honest row is averaged as it is (as in fedavg). If every row is
// malicious, g = 0.
//
// Flags: exactly the true malicious rows (reports_flags = true), so detection metrics read 1.0: the
// detection upper bound too.
#include <torch/torch.h>

#include <algorithm>
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"weighted", bulwark::OptType::Bool, "true", 0, 1,
     "Weight each honest upload by the client's sample count n_k (false: plain mean)."},
};

class Oracle final : public bulwark::Aggregator {
 public:
  explicit Oracle(const bulwark::Options& options) : weighted_(options.get<bool>("weighted")) {}

  bool wants_ground_truth() const override { return true; }

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor& weights,
                                       const bulwark::AggregationContext& context) override {
    if (!updates.defined() || updates.dim() != 2 || updates.size(0) < 1) {
      throw bulwark::Error(bulwark::ErrorKind::Data,
                           "oracle: expected the update matrix U[n, d] with n >= 1");
    }
    const auto n = updates.size(0);
    auto honest = torch::ones({n}, torch::kBool);
    bulwark::AggregationResult result;
    result.reports_flags = true;
    for (auto row : context.true_malicious_rows) {
      if (row < 0 || row >= n) {
        throw bulwark::Error(bulwark::ErrorKind::Runtime,
                             "oracle: malicious row " + std::to_string(row) +
                                 " is outside the n = " + std::to_string(n) +
                                 " rows of this round");
      }
      honest[row] = false;
      result.flagged_rows.push_back(row);
    }
    std::sort(result.flagged_rows.begin(), result.flagged_rows.end());
    result.flagged_rows.erase(std::unique(result.flagged_rows.begin(), result.flagged_rows.end()),
                              result.flagged_rows.end());

    auto kept = honest.nonzero().flatten().to(updates.device());
    if (kept.numel() == 0) {
      result.aggregate = torch::zeros({updates.size(1)}, updates.options());
      return result;
    }
    auto w = weighted_ && weights.defined() ? weights.to(updates.device(), updates.scalar_type())
                                            : torch::ones({n}, updates.options());
    auto malicious = (~honest).nonzero().flatten().to(updates.device());
    if (torch::isfinite(updates.index_select(0, malicious)).all().item<bool>()) {
      // Zero weights drop the malicious rows without copying the honest ones; 0 · NaN would be
      // NaN, hence only when the malicious rows are finite.
      w = w.index_fill(0, malicious, 0);
      result.aggregate = torch::matmul(w, updates) / w.sum();
    } else {
      w = w.index_select(0, kept);
      result.aggregate = torch::matmul(w, updates.index_select(0, kept)) / w.sum();
    }
    return result;
  }

 private:
  bool weighted_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, Oracle, "oracle", "1.0.0",
               "Oracle: FedAvg over the truly honest rows (reference upper bound)",
               "Oracle aggregation: the (weighted) mean of the rows that are truly honest, read "
               "from the ground truth (context.true_malicious_rows). Not a defence but the "
               "reference upper bound of robustness studies, e.g. 'Oracle SGD' in DiverseFL "
               "(Prakash et al., arXiv:2010.07541). weighted = true weights by sample counts as "
               "FedAvg (McMahan et al., AISTATS 2017). Flags exactly the malicious rows.",
               kOptions)
