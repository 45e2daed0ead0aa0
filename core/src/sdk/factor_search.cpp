#include "bulwark/factor_search.hpp"

#include <string>

#include "bulwark/error.hpp"

namespace bulwark {

FactorSearch::FactorSearch(const Options& options, const char* who)
    : enabled_(options.get<bool>("optimize")),
      line_(options.get<std::string>("search") == "line"),
      grid_(options.get<std::vector<double>>("grid")),
      evaluations_(options.get<std::int64_t>("evaluations")),
      start_(options.get<double>("start")),
      step_(options.get<double>("step")),
      ratio_(options.get<double>("ratio")) {
  if (!enabled_) return;
  const std::string name(who);
  if (!line_ && grid_.empty()) {
    throw Error(ErrorKind::Config, name + ": optimize = true with search = \"grid\" needs a non-empty `grid`");
  }
  if (line_ && (!(ratio_ > 0.5 && ratio_ < 1) || step_ == 0 || evaluations_ < 1)) {
    throw Error(ErrorKind::Config, name + ": search = \"line\" needs 0.5 < ratio < 1, step != 0 and evaluations >= 1 "
                                          "(ByzFL's defaults: ratio = 0.8, step = 10, evaluations = 20)");
  }
}

double FactorSearch::best(const std::function<double(double)>& distance) const {
  if (!line_) {
    double best_factor = grid_.front(), best_distance = -1.0;
    for (double factor : grid_) {
      const double d = distance(factor);
      if (d > best_distance) best_distance = d, best_factor = factor;
    }
    return best_factor;
  }
  double best_factor = start_, best_distance = distance(start_), step = step_;
  std::int64_t left = evaluations_ - 1;
  // Expansion: double the step while the distance grows.
  while (left > 0) {
    const double factor = best_factor + step, d = distance(factor);
    --left;
    if (!(d > best_distance)) {
      step *= ratio_;
      break;
    }
    best_factor = factor, best_distance = d;
    step *= 2;
  }
  // Contraction: shrinking steps from the best point.
  while (left > 0) {
    const double factor = best_factor + step, d = distance(factor);
    --left;
    if (d > best_distance) best_factor = factor, best_distance = d;
    step *= ratio_;
  }
  return best_factor;
}

}  // namespace bulwark
