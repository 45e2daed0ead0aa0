#include "bulwark/robust.hpp"

#include <ATen/ATen.h>

#include <limits>
#include <sstream>
#include <tuple>
#include <string>

#include "bulwark/error.hpp"

namespace bulwark {

void check_update_matrix(const at::Tensor& updates, const char* who) {
  if (updates.defined() && updates.dim() == 2 && updates.size(0) >= 1 && updates.is_floating_point()) return;
  std::ostringstream found;
  if (updates.defined()) {
    found << updates.sizes() << " " << updates.scalar_type();
  } else {
    found << "an undefined tensor";
  }
  throw Error(ErrorKind::Data, std::string(who) +
                                   ": expected the update matrix U[n, d] (floating point, n >= 1); found " +
                                   found.str());
}

void check_update_count(std::int64_t n, std::int64_t f, std::int64_t slack, const char* who, const char* source) {
  if (n > 2 * f + slack) return;
  const std::string bound = slack == 0 ? "2f" : "2f + " + std::to_string(slack);
  throw Error(ErrorKind::Config, std::string(who) + ": needs n > " + bound + " updates (" + source + "); found n = " +
                                     std::to_string(n) + " with f = " + std::to_string(f) +
                                     ". Lower f or sample at least " + std::to_string(2 * f + slack + 1) +
                                     " clients per round");
}

std::vector<std::int64_t> rows_not_in(const at::Tensor& kept, std::int64_t n) {
  std::vector<bool> listed(static_cast<std::size_t>(n), false);
  const auto rows = kept.to(at::kCPU, at::kLong).contiguous();
  for (std::int64_t i = 0; i < rows.numel(); ++i) listed[static_cast<std::size_t>(rows.data_ptr<std::int64_t>()[i])] = true;
  std::vector<std::int64_t> out;
  for (std::int64_t i = 0; i < n; ++i) {
    if (!listed[static_cast<std::size_t>(i)]) out.push_back(i);
  }
  return out;
}

FiniteDistances finite_pairwise_distances(const at::Tensor& updates) {
  auto rows = at::isfinite(updates).all(/*dim=*/1).nonzero().flatten();
  while (true) {
    auto x = updates.index_select(0, rows).to(at::kDouble);
    // The coordinate-wise median: unlike the mean, a few far-away rows cannot drag it (and every
    // honest row with it) to where the Gram entries are too large to resolve their distances.
    if (rows.numel() > 0) x.sub_(std::get<0>(x.median(/*dim=*/0)));
    auto gram = at::matmul(x, x.t());
    const auto norms = gram.diagonal();
    const auto comparable = at::isfinite(norms);
    if (comparable.all().item<bool>()) {
      auto squared = (norms.unsqueeze(1) + norms.unsqueeze(0) - 2 * gram).clamp_min_(0);
      squared.fill_diagonal_(0);
      return {rows, squared};
    }
    // Without a row too large to square in float64, the centre may move: centre again.
    rows = rows.index_select(0, comparable.nonzero().flatten());
  }
}

at::Tensor krum_scores(const at::Tensor& squared, std::int64_t neighbours) {
  if (neighbours <= 0) return at::zeros({squared.size(0)}, squared.options());
  auto others = squared.clone();
  others.fill_diagonal_(std::numeric_limits<double>::infinity());
  return std::get<0>(others.topk(neighbours, /*dim=*/1, /*largest=*/false)).sum(/*dim=*/1);
}

at::Tensor coordinate_median(const at::Tensor& rows) {
  const auto m = rows.size(0);
  if (m % 2 == 1) return std::get<0>(rows.median(/*dim=*/0));
  auto sorted = std::get<0>(rows.sort(/*dim=*/0));
  // 0.5 a + 0.5 b rather than (a + b) / 2: no overflow for values near the type's maximum.
  return (sorted[m / 2 - 1] * 0.5).add_(sorted[m / 2], /*alpha=*/0.5);
}

at::Tensor clip_rows(const at::Tensor& updates, double threshold) {
  auto norms = updates.norm(2, /*dim=*/1).to(at::kDouble);
  auto finite_norm = at::isfinite(norms);
  // Only rows longer than C change (so C = 0 leaves zero rows alone); rows with a non-finite norm
  // keep scale 1 here, and the finite ones among them are fixed below.
  auto scale = at::where(finite_norm & (norms > threshold), threshold / norms, at::ones_like(norms));
  auto clipped = updates * scale.to(updates.scalar_type()).unsqueeze(1);
  if (!finite_norm.all().item<bool>()) {
    auto overflowed = ((~finite_norm) & at::isfinite(updates).all(/*dim=*/1)).nonzero();
    for (std::int64_t k = 0; k < overflowed.size(0); ++k) {
      const auto i = overflowed[k][0].item<std::int64_t>();
      auto direction = updates[i] / updates[i].abs().max();
      clipped[i] = direction * (threshold / direction.norm().item<double>());
    }
  }
  return clipped;
}

at::Tensor mean_nearest_per_coordinate(const at::Tensor& rows, const at::Tensor& centre, std::int64_t count) {
  auto distance = (rows - centre).abs_();
  distance.masked_fill_(distance.isnan(), std::numeric_limits<double>::infinity());
  const auto nearest = std::get<1>(distance.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false))
                           .narrow(/*dim=*/0, /*start=*/0, /*length=*/count);
  return rows.gather(/*dim=*/0, nearest).mean(/*dim=*/0);
}

at::Tensor cosine_similarities(const at::Tensor& rows) {
  const auto x = rows.to(at::kDouble);
  const auto norms = x.norm(2, /*dim=*/1, /*keepdim=*/true);
  const auto unit = x / at::where(norms > 0, norms, at::ones_like(norms));
  return at::matmul(unit, unit.t()).cpu().contiguous();
}

at::Tensor finite_mean(const at::Tensor& rows) {
  auto finite = at::isfinite(rows).all(/*dim=*/1);
  if (finite.all().item<bool>()) return rows.mean(/*dim=*/0);
  if (!finite.any().item<bool>()) return at::zeros({rows.size(1)}, rows.options());
  return rows.index_select(0, finite.nonzero().flatten()).mean(/*dim=*/0);
}

}  // namespace bulwark
