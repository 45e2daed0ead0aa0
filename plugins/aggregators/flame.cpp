// FLAME (Nguyen, Rieger, Chen, Yalame, Möllering, Fereidooni, Marchal, Miettinen, Mirhoseini,
// Zeitouni, Koushanfar, Sadeghi, Schneider, "FLAME: Taming Backdoors in Federated Learning",
// USENIX Security 2022, Algorithm 1), with G = θ the global model and W_i = θ + u_i client i's model:
//
//   1. Filtering: c_ij = 1 − cos(W_i, W_j), and HDBSCAN on the distances c with min_cluster_size =
//      ⌊n/2⌋ + 1, min_samples = 1 and a single cluster allowed (the hdbscan library's parameters in
//      the FLAME implementations); the admitted rows are those labelled with the cluster.
//   2. Clipping: e_i = ‖W_i − G‖ = ‖u_i‖, S = median(e_1, …, e_n), and each admitted update is
//      scaled by min(1, S / e_i).
//   3. Aggregation: the mean of the admitted clipped updates.
//   4. Noise: g += N(0, (λ S)² I), λ = `noise` (0.001 for the paper's image tasks), from the round's
//      aggregator stream.
//
// HDBSCAN here: with min_samples = 1 a row's core distance is at most its distance to any other
// row, so the mutual-reachability distance is the cosine distance itself and the tree is single
// linkage; with min_cluster_size above n/2 no split can leave two clusters, so the condensed tree
// is one cluster that sheds the smaller side of every split (top down) until a split leaves both
// sides smaller than min_cluster_size. With a single cluster
// allowed, the library labels with that cluster exactly the rows that left it at the largest λ =
// 1/distance, i.e. the rows still in it at that last split (and any shed at the same distance).
// Single linkage is built from the pairs in order of (distance, lower row, higher row): that is the
// tie rule. `cluster_on = "updates"` clusters the uploads u_i instead of the models (what
// frameworks that pass the rule updates only do, and the right choice in FedSGD mode, where θ + u_i
// is no model); outside an experiment θ is absent and both agree.
//
// `clip_median = "admitted"` takes S over the admitted rows only (as the authors' released code
// does) instead of all n (Algorithm 1). Non-finite rows are dropped before everything (n counts the
// finite ones) and flagged; with none left g = 0 and no noise. Unweighted, as in the paper.
//
// Flags: every row not admitted (reports_flags = true).
#include <torch/torch.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"noise", bulwark::OptType::Float, "0.001", 0, bulwark::kInf,
     "lambda: the noise std is lambda times the clipping bound S (0.001 for image tasks in the paper)."},
    {"cluster_on", bulwark::OptType::String, "\"models\"", 0, 0,
     "Cosine distances between the local models theta + u_i (the paper) or the uploads u_i.", "models|updates"},
    {"clip_median", bulwark::OptType::String, "\"all\"", 0, 0,
     "S = median update norm over all rows (Algorithm 1) or over the admitted rows (the authors' code).",
     "all|admitted"},
};

class Flame final : public bulwark::Aggregator {
 public:
  explicit Flame(const bulwark::Options& options)
      : noise_(options.get<double>("noise")),
        on_models_(options.get<std::string>("cluster_on") == "models"),
        median_of_all_(options.get<std::string>("clip_median") == "all") {}

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "flame");
    const auto d = updates.size(1);
    const auto finite = torch::isfinite(updates).all(/*dim=*/1).nonzero().flatten();
    bulwark::AggregationResult result;
    result.reports_flags = true;
    if (finite.numel() == 0) {
      result.aggregate = torch::zeros({d}, updates.options());
      result.flagged_rows = bulwark::rows_not_in(finite, updates.size(0));
      return result;
    }
    const auto rows = updates.index_select(0, finite).to(torch::kDouble);
    const auto models = on_models_ && context.params.defined() ? rows + context.params.to(rows.options()) : rows;
    const auto admitted = torch::tensor(cluster(1 - bulwark::cosine_similarities(models)), torch::kLong)
                              .to(updates.device());

    const auto norms = rows.norm(2, /*dim=*/1);
    const auto bound_from = median_of_all_ ? norms : norms.index_select(0, admitted);
    const double bound = bulwark::coordinate_median(bound_from.unsqueeze(1)).item<double>();
    auto aggregate = bulwark::clip_rows(rows.index_select(0, admitted), bound).mean(/*dim=*/0);
    if (noise_ > 0) {
      aggregate += torch::randn({d}, context.generator, aggregate.options()) * (noise_ * bound);
    }
    result.aggregate = aggregate.to(updates.scalar_type());
    result.flagged_rows = bulwark::rows_not_in(finite.index_select(0, admitted), updates.size(0));
    return result;
  }

 private:
  /// The rows HDBSCAN (min_samples = 1, min_cluster_size = ⌊m/2⌋ + 1, single cluster allowed)
  /// labels with its cluster, for cosine distances [m, m]; ascending.
  static std::vector<std::int64_t> cluster(const torch::Tensor& distances) {
    const auto m = distances.size(0);
    if (m == 1) return {0};
    const auto smallest_cluster = m / 2 + 1;
    auto c = distances.clamp(0, 2).contiguous();
    const auto* at = c.data_ptr<double>();

    // Single linkage: merge the pairs in order of (distance, i, j); node m + k is the k-th merge.
    std::vector<std::tuple<double, std::int64_t, std::int64_t>> pairs;
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t j = i + 1; j < m; ++j) pairs.emplace_back(at[i * m + j], i, j);
    }
    std::sort(pairs.begin(), pairs.end());
    struct Node {
      std::int64_t left = -1, right = -1, size = 1;
      double height = 0;
    };
    std::vector<Node> nodes(static_cast<std::size_t>(m));
    std::vector<std::int64_t> parent(static_cast<std::size_t>(2 * m - 1));
    std::iota(parent.begin(), parent.end(), 0);
    auto root_of = [&parent](std::int64_t x) {
      while (parent[x] != x) x = parent[x] = parent[parent[x]];
      return x;
    };
    for (const auto& [distance, i, j] : pairs) {
      const auto a = root_of(i), b = root_of(j);
      if (a == b) continue;
      const auto merged = static_cast<std::int64_t>(nodes.size());
      nodes.push_back({a, b, nodes[a].size + nodes[b].size, distance});
      parent[a] = parent[b] = merged;
    }

    // Top down: shed the side smaller than smallest_cluster until both sides are.
    std::vector<double> left_at(static_cast<std::size_t>(m), 0);  // distance at which a row left
    auto leave = [&](std::int64_t node, double distance) {
      std::vector<std::int64_t> stack = {node};
      while (!stack.empty()) {
        const auto x = stack.back();
        stack.pop_back();
        if (x < m) {
          left_at[x] = distance;
        } else {
          stack.push_back(nodes[x].left);
          stack.push_back(nodes[x].right);
        }
      }
    };
    auto node = static_cast<std::int64_t>(nodes.size()) - 1;
    double last = 0;
    while (true) {
      const auto& split = nodes[node];
      const auto left = nodes[split.left].size, right = nodes[split.right].size;
      if (left < smallest_cluster && right < smallest_cluster) {
        leave(node, last = split.height);
        break;
      }
      const bool keep_left = left >= smallest_cluster;
      leave(keep_left ? split.right : split.left, split.height);
      node = keep_left ? split.left : split.right;
    }
    std::vector<std::int64_t> admitted;
    for (std::int64_t i = 0; i < m; ++i) {
      if (left_at[i] <= last) admitted.push_back(i);
    }
    return admitted;
  }

  double noise_;
  bool on_models_, median_of_all_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, Flame, "flame", "1.0.0",
               "FLAME: HDBSCAN filtering, median-norm clipping and noise (Nguyen et al. USENIX Security 2022)",
               "FLAME (T. D. Nguyen et al., 'FLAME: Taming Backdoors in Federated Learning', USENIX "
               "Security 2022): HDBSCAN (min_cluster_size n/2 + 1, min_samples 1, single cluster "
               "allowed) on the cosine distances of the local models theta + u_i (cluster_on = "
               "updates: of u_i) admits the majority cluster; admitted updates are clipped to S = "
               "the median update norm (clip_median = all rows or admitted rows), averaged, and "
               "N(0, (noise * S)^2) is added. Non-finite rows are dropped. Flags every row not admitted.",
               kOptions)
