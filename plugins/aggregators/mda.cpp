// Minimum-diameter averaging, MDA (El Mhamdi, Guerraoui, Guirguis, Hoang, Rouault, "Genuinely
// Distributed Byzantine Machine Learning", PODC 2020; ByzFL's MDA):
//
//   S* = argmin_{S ⊆ [n], |S| = n − f}  max_{i, j ∈ S} ‖u_i − u_j‖,     g = (1 / (n − f)) Σ_{i ∈ S*} u_i
//
// Ties: among the subsets of minimum diameter, the one whose sorted indices come first
// lexicographically (the first minimum of ByzFL's loop over itertools.combinations). Needs n > 2f.
// Unweighted. Flags: every row outside S*.
//
// Exact without enumerating the C(n, f) subsets. For a threshold t, call rows i, j in conflict
// when ‖u_i − u_j‖² > t; a kept set of diameter² ≤ t is a set of rows with no conflict among them,
// so it exists iff at most f rows cover every conflict: a vertex cover of size ≤ f, which a
// bounded search tree decides in O(1.62^f n²) (branch on a row of highest conflict degree: drop
// it, or keep it and drop its conflicts; a conflict graph that is a matching is counted directly).
// The optimal diameter² is one of the pairwise distances, found by bisection over their sorted
// values; then rows are kept greedily in index order whenever a cover still exists, which gives the
// lexicographically first optimal subset. n = 50, f = 10 takes milliseconds where ByzFL's loop
// visits 1e10 subsets.
//
// Distances: bulwark::finite_pairwise_distances (float64 from a centred Gram matrix, as Krum's).
// Non-finite rows: a row with a NaN/±Inf entry is never kept (it counts as one of the f); with more
// than f of them the mean is over the finite rows.
//
// `f` = -1 (the default) takes the experiment's declared Byzantine bound (context.byzantine_bound).
#include <torch/torch.h>

#include <algorithm>
#include <string>
#include <vector>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"f", bulwark::OptType::Int, "-1", -1, bulwark::kInf,
     "Byzantine bound f (MDA keeps n - f rows; needs n > 2f); -1 uses the experiment's declared bound."},
};

/// Does a set of kept rows with every squared distance ≤ t exist, given rows already decided?
class DiameterSearch {
 public:
  enum State : char { kOpen, kKeep, kDrop };

  DiameterSearch(std::vector<double> squared, std::int64_t rows) : squared_(std::move(squared)), m_(rows) {}

  /// True when the open rows can be decided dropping at most `budget` more, leaving no conflict
  /// at threshold t among the kept and open rows that remain.
  bool feasible(double t, std::vector<State> state, std::int64_t budget) const {
    // A kept row conflicts with nothing kept, and forces its open conflicts out.
    for (std::int64_t k = 0; k < m_; ++k) {
      if (state[k] != kKeep) continue;
      for (std::int64_t j = 0; j < m_; ++j) {
        if (j == k || !conflict(k, j, t) || state[j] == kDrop) continue;
        if (state[j] == kKeep) return false;
        state[j] = kDrop;
        if (--budget < 0) return false;
      }
    }
    return cover(t, state, budget);
  }

  double distance(std::int64_t i, std::int64_t j) const { return squared_[i * m_ + j]; }

 private:
  bool conflict(std::int64_t i, std::int64_t j, double t) const { return distance(i, j) > t; }

  bool cover(double t, std::vector<State>& state, std::int64_t budget) const {
    std::int64_t pivot = -1, pivot_degree = 0, edges = 0;
    for (std::int64_t i = 0; i < m_; ++i) {
      if (state[i] != kOpen) continue;
      std::int64_t degree = 0;
      for (std::int64_t j = 0; j < m_; ++j) degree += j != i && state[j] == kOpen && conflict(i, j, t);
      edges += degree;
      if (degree > pivot_degree) pivot = i, pivot_degree = degree;
    }
    edges /= 2;
    if (edges == 0) return true;
    if (pivot_degree == 1) return edges <= budget;  // a matching: one row of each pair must go
    if (budget == 0) return false;
    // Dropping the pivot...
    auto dropped = state;
    dropped[pivot] = kDrop;
    if (cover(t, dropped, budget - 1)) return true;
    // ...or keeping it, which drops every open row it conflicts with.
    if (pivot_degree > budget) return false;
    state[pivot] = kKeep;
    for (std::int64_t j = 0; j < m_; ++j) {
      if (j != pivot && state[j] == kOpen && conflict(pivot, j, t)) state[j] = kDrop;
    }
    return cover(t, state, budget - pivot_degree);
  }

  std::vector<double> squared_;
  std::int64_t m_;
};

class Mda final : public bulwark::Aggregator {
 public:
  explicit Mda(const bulwark::Options& options) : f_(options.get<std::int64_t>("f")) {}

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "mda");
    const auto n = updates.size(0);
    const auto f = f_ >= 0 ? f_ : context.byzantine_bound;
    bulwark::check_update_count(n, f, 0, "mda", "El Mhamdi et al. 2020");
    const auto distances = bulwark::finite_pairwise_distances(updates);
    const auto m = distances.rows.size(0);
    bulwark::AggregationResult result;
    result.reports_flags = true;
    if (m == 0) {
      result.aggregate = torch::zeros({updates.size(1)}, updates.options());
      result.flagged_rows = bulwark::rows_not_in(distances.rows, n);
      return result;
    }
    const auto squared = distances.squared.to(torch::kCPU).contiguous();  // n × n: the search runs on the CPU
    const DiameterSearch search(std::vector<double>(squared.data_ptr<double>(), squared.data_ptr<double>() + m * m), m);
    const auto keep = std::min(n - f, m);
    const auto budget = m - keep;

    // The smallest pairwise distance² at which n − f rows fit: bisection over the sorted values.
    std::vector<double> candidates{0.0};
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t j = i + 1; j < m; ++j) candidates.push_back(search.distance(i, j));
    }
    std::sort(candidates.begin(), candidates.end());
    candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
    const std::vector<DiameterSearch::State> open(static_cast<std::size_t>(m), DiameterSearch::kOpen);
    std::size_t low = 0, high = candidates.size() - 1;  // feasible at the largest distance
    while (low < high) {
      const auto mid = (low + high) / 2;
      if (search.feasible(candidates[mid], open, budget)) {
        high = mid;
      } else {
        low = mid + 1;
      }
    }
    const double diameter = candidates[high];

    // The lexicographically first optimal subset: keep each row in turn whenever a cover remains.
    auto state = open;
    std::int64_t kept = 0, dropped = 0;
    for (std::int64_t i = 0; i < m; ++i) {
      if (kept < keep) {
        state[i] = DiameterSearch::kKeep;
        if (search.feasible(diameter, state, budget - dropped)) {
          ++kept;
          continue;
        }
      }
      state[i] = DiameterSearch::kDrop;
      ++dropped;
    }

    std::vector<std::int64_t> kept_rows;
    for (std::int64_t i = 0; i < m; ++i) {
      if (state[i] == DiameterSearch::kKeep) kept_rows.push_back(i);
    }
    const auto kept_index = distances.rows.index_select(0, torch::tensor(kept_rows, torch::kLong).to(updates.device()));
    result.aggregate = updates.index_select(0, kept_index).to(torch::kDouble).mean(/*dim=*/0).to(updates.scalar_type());
    result.flagged_rows = bulwark::rows_not_in(kept_index, n);
    return result;
  }

 private:
  std::int64_t f_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, Mda, "mda", "1.0.0",
               "Minimum-diameter averaging, exact (El Mhamdi et al., PODC 2020)",
               "MDA (E.-M. El Mhamdi, R. Guerraoui, A. Guirguis, L.-N. Hoang, S. Rouault, 'Genuinely "
               "Distributed Byzantine Machine Learning', PODC 2020): the mean of the n - f rows whose "
               "largest pairwise distance is smallest. Exact, by vertex-cover search on the conflict "
               "graph (no enumeration of subsets); ties go to the lexicographically first subset, as in "
               "ByzFL. Needs n > 2f; f = -1 uses the declared Byzantine bound. Rows with NaN/Inf are "
               "never kept. Flags every row left out. Unweighted.",
               kOptions)
