// Phocas, the mean around the trimmed mean (Xie, Koyejo and Gupta, "Generalized Byzantine-tolerant
// SGD", arXiv:1802.10116, 2018, Definition 5). Per coordinate k of the updates u_1..u_n:
//
//   t_k = Trmean_f(u_1k, ..., u_nk)    the mean after dropping the f largest and the f smallest
//   g_k = 1/(n − f) Σ_{i ∈ S_k} u_ik,   S_k = the n − f rows whose u_ik are closest to t_k
//
// which needs n > 2f. Whole-matrix operations: one sort along the rows gives every trimmed mean, a
// second (stable) sort of |U − t| gives every S_k, and a gather + mean gives g. Ties in distance go
// to the lower row index, so the result does not depend on the sort implementation.
//
// Non-finite entries: NaN sorts last, so when at most f entries of a coordinate are NaN or ±Inf the
// trimming removes them and t_k is finite; their distance counts as +Inf, so they are the first
// left out and g_k is finite.
//
// `f` = -1 (the default) takes the experiment's declared Byzantine bound (context.byzantine_bound).
//
// This is the plugin template (examples/plugin-template): the bundled rules include Meamed, the
// same construction around the median.
#include <sstream>
#include <string>
#include <tuple>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"f", bulwark::OptType::Int, "-1", -1, bulwark::kInf,
     "Byzantine bound f (Phocas trims f at each end, then averages n - f values per coordinate; needs "
     "n > 2f); -1 uses the "
     "experiment's declared bound.",
     nullptr},
};

class Phocas final : public bulwark::Aggregator {
 public:
  explicit Phocas(const bulwark::Options& options) : f_(options.get<std::int64_t>("f")) {}

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    if (!updates.defined() || updates.dim() != 2 || updates.size(0) < 1 || !updates.is_floating_point()) {
      std::ostringstream found;
      if (updates.defined()) found << updates.sizes() << " " << updates.scalar_type();
      else found << "an undefined tensor";
      throw bulwark::Error(bulwark::ErrorKind::Data,
                           "phocas: expected the update matrix U[n, d] (floating point, n >= 1); found " +
                               found.str());
    }
    const auto n = updates.size(0);
    const auto f = f_ >= 0 ? f_ : context.byzantine_bound;
    if (2 * f >= n) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "phocas: needs n > 2f updates; found n = " + std::to_string(n) + " with f = " +
                               std::to_string(f) + ". Lower f or sample at least " +
                               std::to_string(2 * f + 1) + " clients per round");
    }

    const auto sorted = std::get<0>(updates.sort(/*dim=*/0));
    const auto trimmed_mean = sorted.narrow(/*dim=*/0, /*start=*/f, /*length=*/n - 2 * f).mean(/*dim=*/0);
    bulwark::AggregationResult result;
    result.aggregate = bulwark::mean_nearest_per_coordinate(updates, trimmed_mean, n - f);
    return result;
  }

 private:
  std::int64_t f_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, Phocas, "phocas", "1.0.0",
               "Mean around the trimmed mean: per coordinate, the mean of the n - f values closest to the "
               "f-trimmed mean",
               "Phocas (Xie, Koyejo and Gupta, 'Generalized Byzantine-tolerant SGD', arXiv:1802.10116, "
               "2018): for each coordinate k, g_k is the mean of the n - f values u_ik closest to the "
               "coordinate's trimmed mean (f largest and f smallest dropped). Needs n > 2f. Unweighted. "
               "Up to f NaN/Inf entries per coordinate are left out.",
               kOptions)
