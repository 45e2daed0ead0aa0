// SignGuard (Xu, Huang, Song, Lan, "Byzantine-robust Federated Learning through Collaborative
// Malicious Gradient Filtering", ICDCS 2022, Algorithm 1, as the authors' code runs it):
//
//   M   = median of the update norms (numpy's: the mean of the two middle values for even n)
//   S1  = { i : lower · M < ‖u_i‖ < upper · M }                       norm filter (0.1, 3.0)
//   w   = k = ⌊fraction · d⌋ consecutive coordinates from a random start (the seeded stream)
//   s_i = (share of w positive, zero, negative in u_i), each column divided by its max + 1e-8
//   S2  = the most populous cluster of mean shift on the s_i (flat kernel, bin seeding, points
//         farther than the bandwidth from every centre belong to none; the bandwidth is the mean
//         distance of each s_i to its ⌊quantile · n⌋-th nearest, itself counted first)
//   g   = mean over S1 ∩ S2 of u_i · min(1, m / ‖u_i‖),  m = the lower median of the norms
//
// Mean shift as sklearn's MeanShift(bin_seeding = True, cluster_all = False): seeds are the
// distinct grid cells round(s / bandwidth) · bandwidth (every s_i when each has its own cell); each
// seed moves to the mean of the points within the bandwidth until it moves less than 10⁻³ of it
// (at most 300 steps); centres, by intensity then coordinates descending, swallow the later ones
// within the bandwidth; each point joins its nearest centre if it is within the bandwidth. The
// authors estimate the bandwidth on 50 points drawn by sklearn's own generator when n > 50;
// Bulwark uses all n rows (the same for n ≤ 50). A bandwidth of 0 (identical features) is taken as
// 1e-12, so the clusters are the groups of identical features.
//
// Ties: equally distant centres go to the first; equally populous clusters to the first centre.
// NaN entries count as 0, as the authors' code sets them; a row with ±Inf has an infinite norm and
// fails the norm filter. No row in S1 ∩ S2 gives g = 0. Flags: every row outside S1 ∩ S2.
// Unweighted, as in the paper.
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"lower", bulwark::OptType::Float, "0.1", 0, bulwark::kInf, "L: rows with norm at most L times the median are dropped."},
    {"upper", bulwark::OptType::Float, "3.0", 0, bulwark::kInf, "R: rows with norm at least R times the median are dropped."},
    {"fraction", bulwark::OptType::Float, "0.1", 0, 1, "Share of the coordinates in the random window of sign statistics."},
    {"quantile", bulwark::OptType::Float, "0.5", 0, 1, "Mean shift bandwidth: the neighbour rank as a share of n."},
};

using Point = std::array<double, 3>;

double distance(const Point& a, const Point& b) {
  return std::sqrt((a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) + (a[2] - b[2]) * (a[2] - b[2]));
}

/// sklearn's estimate_bandwidth on every point: the mean distance to the q-th nearest, self first.
double bandwidth_of(const std::vector<Point>& points, double quantile) {
  const auto n = points.size();
  const auto q = std::max<std::size_t>(1, static_cast<std::size_t>(static_cast<double>(n) * quantile));
  double sum = 0;
  for (const auto& p : points) {
    std::vector<double> d;
    for (const auto& other : points) d.push_back(distance(p, other));
    std::nth_element(d.begin(), d.begin() + static_cast<std::ptrdiff_t>(q - 1), d.end());
    sum += d[q - 1];
  }
  return sum / static_cast<double>(n);
}

/// Mean shift with bin seeding; each point's cluster index (centres by intensity), or -1.
std::vector<int> mean_shift(const std::vector<Point>& points, double bandwidth) {
  std::vector<Point> seeds;
  std::vector<std::array<double, 3>> cells;
  for (const auto& p : points) {
    const std::array<double, 3> cell{std::nearbyint(p[0] / bandwidth), std::nearbyint(p[1] / bandwidth),
                                     std::nearbyint(p[2] / bandwidth)};
    if (std::find(cells.begin(), cells.end(), cell) == cells.end()) cells.push_back(cell);
  }
  if (cells.size() == points.size()) {
    seeds = points;
  } else {
    for (const auto& c : cells) seeds.push_back({c[0] * bandwidth, c[1] * bandwidth, c[2] * bandwidth});
  }

  std::map<Point, std::size_t> intensity;  // converged mean -> points within it
  for (auto mean : seeds) {
    std::size_t within = 0;
    for (int step = 0;; ++step) {
      Point sum{0, 0, 0};
      within = 0;
      for (const auto& p : points) {
        if (distance(p, mean) <= bandwidth) {
          for (int k = 0; k < 3; ++k) sum[k] += p[k];
          ++within;
        }
      }
      if (within == 0) break;
      const auto old = mean;
      for (int k = 0; k < 3; ++k) mean[k] = sum[k] / static_cast<double>(within);
      if (distance(mean, old) < 1e-3 * bandwidth || step == 300) break;
    }
    if (within > 0) intensity[mean] = within;
  }

  std::vector<std::pair<Point, std::size_t>> ranked(intensity.begin(), intensity.end());
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first > b.first;
  });
  std::vector<bool> unique(ranked.size(), true);
  for (std::size_t i = 0; i < ranked.size(); ++i) {
    if (!unique[i]) continue;
    for (std::size_t j = 0; j < ranked.size(); ++j) {
      if (distance(ranked[i].first, ranked[j].first) <= bandwidth) unique[j] = false;
    }
    unique[i] = true;
  }
  std::vector<Point> centres;
  for (std::size_t i = 0; i < ranked.size(); ++i) {
    if (unique[i]) centres.push_back(ranked[i].first);
  }

  std::vector<int> labels;
  for (const auto& p : points) {
    int nearest = -1;
    double best = 0;
    for (std::size_t c = 0; c < centres.size(); ++c) {
      const auto d = distance(p, centres[c]);
      if (nearest < 0 || d < best) nearest = static_cast<int>(c), best = d;
    }
    labels.push_back(nearest >= 0 && best <= bandwidth ? nearest : -1);
  }
  return labels;
}

class SignGuard final : public bulwark::Aggregator {
 public:
  explicit SignGuard(const bulwark::Options& options)
      : lower_(options.get<double>("lower")),
        upper_(options.get<double>("upper")),
        fraction_(options.get<double>("fraction")),
        quantile_(options.get<double>("quantile")) {
    if (!(fraction_ > 0)) {
      throw bulwark::Error(bulwark::ErrorKind::Config, "signguard: fraction must be > 0 (the share of coordinates "
                                                       "whose signs are counted)");
    }
  }

  bulwark::AggregationResult aggregate(const torch::Tensor& raw, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(raw, "signguard");
    const auto n = raw.size(0), d = raw.size(1);
    const auto updates = torch::isnan(raw).any().item<bool>() ? raw.nan_to_num(0.0, INFINITY, -INFINITY) : raw;

    const auto norms = updates.to(torch::kDouble).norm(2, /*dim=*/1).cpu();
    const auto median = bulwark::coordinate_median(norms.unsqueeze(1)).item<double>();
    const auto clip_at = norms.median().item<double>();  // torch.median's lower middle, as the authors clip

    const auto width = std::max<std::int64_t>(1, static_cast<std::int64_t>(fraction_ * static_cast<double>(d)));
    std::int64_t start = 0;
    if (width < d) {
      if (!context.generator.defined()) {
        throw bulwark::Error(bulwark::ErrorKind::Runtime, "signguard: context.generator is not set; the engine must "
                                                          "pass the seeded Aggregator stream for the coordinate window");
      }
      start = torch::randint(0, d - width, {1}, context.generator, torch::TensorOptions(torch::kLong).device(updates.device()))
                  .item<std::int64_t>();
    }
    const auto window = updates.narrow(1, start, width);
    auto shares = torch::stack({(window > 0).sum(1), (window == 0).sum(1), (window < 0).sum(1)}, 1)
                      .to(torch::kDouble).cpu() / static_cast<double>(width);
    shares = shares / (std::get<0>(shares.max(0)) + 1e-8);
    std::vector<Point> features(static_cast<std::size_t>(n));
    auto s = shares.accessor<double, 2>();
    for (std::int64_t i = 0; i < n; ++i) features[static_cast<std::size_t>(i)] = {s[i][0], s[i][1], s[i][2]};

    const auto labels = mean_shift(features, std::max(bandwidth_of(features, quantile_), 1e-12));
    // The authors count labels 0 .. (number of labels in use) − 1 and take the first largest.
    const auto in_use = static_cast<int>(std::set<int>(labels.begin(), labels.end()).size()) -
                        (std::find(labels.begin(), labels.end(), -1) != labels.end() ? 1 : 0);
    int largest = -1;
    std::int64_t largest_count = 0;
    for (int c = 0; c < in_use; ++c) {
      const auto count = std::count(labels.begin(), labels.end(), c);
      if (count > largest_count) largest = c, largest_count = count;
    }

    std::vector<std::int64_t> chosen;
    auto norm = norms.accessor<double, 1>();
    for (std::int64_t i = 0; i < n; ++i) {
      const bool banded = norm[i] > lower_ * median && norm[i] < upper_ * median;
      if (banded && largest >= 0 && labels[static_cast<std::size_t>(i)] == largest) chosen.push_back(i);
    }

    bulwark::AggregationResult result;
    result.reports_flags = true;
    const auto kept = torch::tensor(chosen, torch::kLong);
    result.flagged_rows = bulwark::rows_not_in(kept, n);
    if (chosen.empty()) {
      result.aggregate = torch::zeros({d}, raw.options());
      return result;
    }
    const auto rows = bulwark::clip_rows(updates.index_select(0, kept.to(updates.device())), clip_at);
    result.aggregate = rows.to(torch::kDouble).mean(/*dim=*/0).to(raw.scalar_type());
    return result;
  }

 private:
  double lower_, upper_, fraction_, quantile_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, SignGuard, "signguard", "1.0.0",
               "SignGuard (Xu, Huang, Song, Lan, ICDCS 2022)",
               "SignGuard (J. Xu, S.-L. Huang, L. Song, T. Lan, 'Byzantine-robust Federated Learning "
               "through Collaborative Malicious Gradient Filtering', ICDCS 2022), as the authors' code "
               "runs it: keeps rows with lower M < norm < upper M (M the median norm) that fall in the "
               "most populous mean-shift cluster of their sign statistics (shares of positive, zero, "
               "negative entries in a random window of fraction d coordinates, each column over its "
               "max), and returns their mean clipped to the lower median norm. NaN entries count as 0. "
               "Window from the seeded stream. Flags every other row.",
               kOptions)
