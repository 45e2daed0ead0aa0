// Clipped clustering (Li, Ngai, Voigt, "An Experimental Study of Byzantine-Robust Aggregation
// Schemes in Federated Learning", IEEE Transactions on Big Data 2023; Blades' Clippedclustering):
//
//   τ   = the median of every update norm the server has seen, this round's included
//   u_i ← u_i · min(1, τ / ‖u_i‖)
//   D_ij = 1 − cos(u_i, u_j)                       (2 where a row is zero: no direction)
//   split the rows into two clusters by agglomerative clustering on D (average linkage:
//   the distance of two clusters is the mean of D over their pairs; `linkage = "single"`: the
//   minimum), and return the mean of the clipped rows of the larger cluster.
//
// Ties: of equally distant cluster pairs, the one whose clusters' first rows come first in row
// order merges first; of two clusters of equal size, the one holding the lower row wins. The
// median of an even count is the mean of the two middle values (numpy's). State: the norms seen so
// far (8 bytes per client per round), checkpointed as "norms". A row with a NaN/±Inf entry is
// removed before everything else (its norm is not recorded) and flagged with the smaller cluster.
// Unweighted, as in the paper.
#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"linkage", bulwark::OptType::String, "\"average\"", 0, 0,
     "Distance between clusters: average = mean pairwise cosine distance (the paper); single = the "
     "smallest.", "average|single"},
};

class ClippedClustering final : public bulwark::Aggregator {
 public:
  explicit ClippedClustering(const bulwark::Options& options)
      : average_(options.get<std::string>("linkage") == "average") {}

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext&) override {
    bulwark::check_update_matrix(updates, "clipped_clustering");
    const auto n = updates.size(0), d = updates.size(1);
    const auto finite_rows = torch::isfinite(updates).all(/*dim=*/1).nonzero().flatten();
    bulwark::AggregationResult result;
    result.reports_flags = true;
    if (finite_rows.numel() == 0) {
      result.aggregate = torch::zeros({d}, updates.options());
      result.flagged_rows = bulwark::rows_not_in(finite_rows, n);
      return result;
    }
    const auto rows = updates.index_select(0, finite_rows);
    const auto norms = rows.to(torch::kDouble).norm(2, /*dim=*/1).cpu();
    norms_ = norms_.defined() ? torch::cat({norms_, norms}) : norms;
    const auto clipped = bulwark::clip_rows(rows, bulwark::coordinate_median(norms_.unsqueeze(1)).item<double>());

    const auto chosen = larger_cluster(cosine_distances(clipped));
    const auto members = torch::tensor(chosen, torch::kLong).to(updates.device());
    result.aggregate = clipped.index_select(0, members).to(torch::kDouble).mean(/*dim=*/0).to(updates.scalar_type());
    result.flagged_rows = bulwark::rows_not_in(finite_rows.index_select(0, members), n);
    return result;
  }

  void save_state(bulwark::StateDict& state) const override {
    if (norms_.defined()) state["norms"] = norms_;
  }

  void load_state(const bulwark::StateDict& state) override {
    auto it = state.find("norms");
    norms_ = it == state.end() ? torch::Tensor() : it->second.to(torch::kCPU, torch::kDouble).clone();
  }

 private:
  /// 1 − cos among the rows [m, m] (float64, CPU); 2 against a zero row.
  static torch::Tensor cosine_distances(const torch::Tensor& rows) {
    auto distance = (1 - bulwark::cosine_similarities(rows)).clamp_(0, 2);
    const auto zero_rows = (rows.norm(2, /*dim=*/1) == 0).nonzero().flatten().cpu();
    distance.index_fill_(0, zero_rows, 2).index_fill_(1, zero_rows, 2);
    distance.fill_diagonal_(0);
    return distance;
  }

  /// Agglomerates singletons until two clusters remain; the rows of the larger, ascending.
  std::vector<std::int64_t> larger_cluster(const torch::Tensor& distances) const {
    const auto m = distances.size(0);
    if (m == 1) return {0};
    // Clusters as member lists (each sorted, so front() is its first row) with the linkage matrix.
    std::vector<std::vector<std::int64_t>> clusters;
    for (std::int64_t i = 0; i < m; ++i) clusters.push_back({i});
    std::vector<std::vector<double>> link(static_cast<std::size_t>(m), std::vector<double>(static_cast<std::size_t>(m)));
    auto source = distances.accessor<double, 2>();
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t j = 0; j < m; ++j) link[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)] = source[i][j];
    }
    while (clusters.size() > 2) {
      // Clusters stay ordered by first row, so scanning (a, b) in index order breaks ties as documented.
      std::size_t best_a = 0, best_b = 1;
      for (std::size_t a = 0; a < clusters.size(); ++a) {
        for (std::size_t b = a + 1; b < clusters.size(); ++b) {
          if (link[a][b] < link[best_a][best_b]) best_a = a, best_b = b;
        }
      }
      const auto size_a = static_cast<double>(clusters[best_a].size());
      const auto size_b = static_cast<double>(clusters[best_b].size());
      for (std::size_t k = 0; k < clusters.size(); ++k) {
        if (k == best_a || k == best_b) continue;
        const auto merged = average_ ? (size_a * link[best_a][k] + size_b * link[best_b][k]) / (size_a + size_b)
                                     : std::min(link[best_a][k], link[best_b][k]);
        link[best_a][k] = link[k][best_a] = merged;
      }
      auto& into = clusters[best_a];
      into.insert(into.end(), clusters[best_b].begin(), clusters[best_b].end());
      std::sort(into.begin(), into.end());
      clusters.erase(clusters.begin() + static_cast<std::ptrdiff_t>(best_b));
      link.erase(link.begin() + static_cast<std::ptrdiff_t>(best_b));
      for (auto& line : link) line.erase(line.begin() + static_cast<std::ptrdiff_t>(best_b));
    }
    const auto& first = clusters[0];
    const auto& second = clusters[1];
    if (first.size() != second.size()) return first.size() > second.size() ? first : second;
    return first.front() < second.front() ? first : second;
  }

  bool average_;
  torch::Tensor norms_;  ///< every finite update norm seen, float64 on the CPU
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, ClippedClustering, "clipped_clustering", "1.0.0",
               "Clipped clustering (Li, Ngai, Voigt, IEEE TBD 2023)",
               "Clipped clustering (S. Li, E. Ngai, T. Voigt, 'An Experimental Study of "
               "Byzantine-Robust Aggregation Schemes in Federated Learning', IEEE Transactions on "
               "Big Data 2023): clips every update to the median of all update norms seen so far "
               "(checkpointed as 'norms'), splits the rows in two by agglomerative clustering on "
               "cosine distance (linkage = average or single), and returns the mean of the larger "
               "cluster's clipped rows. Equal sizes: the cluster with the lower row wins. NaN/Inf "
               "rows are removed first. Flags every row outside the chosen cluster.",
               kOptions)
