// Meamed, the mean around the median (Xie, Koyejo and Gupta, "Generalized Byzantine-tolerant SGD",
// arXiv:1802.10116, 2018; analysed by El Mhamdi, Guerraoui and Rouault, "The Hidden Vulnerability
// of Distributed Learning in Byzantium", ICML 2018). Per coordinate k of the updates u_1..u_n:
//
//   m_k = median(u_1k, ..., u_nk)                      (mean of the two middle values when n is even)
//   g_k = 1/(n − f) Σ_{i ∈ S_k} u_ik,   S_k = the n − f rows whose u_ik are closest to m_k
//
// which needs n > 2f. ByzFL's Meamed computes the same (its documented example is in the test).
// Whole-matrix operations: one sort along the rows gives every median, a second (stable) sort of
// |U − m| gives every S_k, and a gather + mean gives g. Ties in distance go to the lower row index,
// so the result does not depend on the sort implementation. Unweighted; no row is rejected as a
// whole, so no flags.
//
// Non-finite entries: NaN sorts last, so when at most f entries of a coordinate are NaN or ±Inf the
// median is finite; their distance counts as +Inf, so they are the first left out and g_k is finite.
//
// `f` = -1 (the default) takes the experiment's declared Byzantine bound (context.byzantine_bound).
#include <string>
#include <tuple>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"f", bulwark::OptType::Int, "-1", -1, bulwark::kInf,
     "Byzantine bound f (Meamed averages n - f values per coordinate; needs n > 2f); -1 uses the "
     "experiment's declared bound.",
     nullptr},
};

class Meamed final : public bulwark::Aggregator {
 public:
  explicit Meamed(const bulwark::Options& options) : f_(options.get<std::int64_t>("f")) {}

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "meamed");
    const auto n = updates.size(0);
    const auto f = f_ >= 0 ? f_ : context.byzantine_bound;
    bulwark::check_update_count(n, f, 0, "meamed", "Xie et al. 2018");

    const auto sorted = std::get<0>(updates.sort(/*dim=*/0));
    // The two middle values (equal for odd n), not torch::median: it would return NaN for a
    // column with a NaN, where the sort puts them last.
    const auto median = (sorted[(n - 1) / 2] * 0.5).add_(sorted[n / 2], /*alpha=*/0.5);
    bulwark::AggregationResult result;
    result.aggregate = bulwark::mean_nearest_per_coordinate(updates, median, n - f);
    return result;
  }

 private:
  std::int64_t f_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, Meamed, "meamed", "1.0.0",
               "Mean around the median: per coordinate, the mean of the n - f values closest to the median",
               "Meamed (Xie, Koyejo and Gupta, 'Generalized Byzantine-tolerant SGD', arXiv:1802.10116, "
               "2018; El Mhamdi, Guerraoui and Rouault, 'The Hidden Vulnerability of Distributed "
               "Learning in Byzantium', ICML 2018): for each coordinate k, g_k is the mean of the n - f "
               "values u_ik closest to the coordinate-wise median. Needs n > 2f. Unweighted. Up to f "
               "NaN/Inf entries per coordinate are left out.",
               kOptions)
