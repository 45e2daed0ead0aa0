#pragma once

// Timing shared by the bench programs: the best of repeated runs after a warm-up. Benchmarks print
// ratios of such times measured in the same run; nothing asserts on them.
#include <algorithm>
#include <chrono>
#include <functional>

namespace bulwark::bench {

/// Best wall time of `body` after one warm-up run (first-touch page faults, allocator growth),
/// over at least `min_runs` runs, continuing until `min_total` seconds were spent or `max_runs`.
inline double best_seconds(const std::function<void()>& body, int min_runs = 5, double min_total = 0.3,
                           int max_runs = 200) {
  body();
  double best = 1e300, total = 0;
  for (int r = 0; r < min_runs || (total < min_total && r < max_runs); ++r) {
    const auto start = std::chrono::steady_clock::now();
    body();
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    best = std::min(best, elapsed.count());
    total += elapsed.count();
  }
  return best;
}

}  // namespace bulwark::bench
