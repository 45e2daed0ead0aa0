#pragma once

// Mechanics shared by the robust aggregators (docs/writing-plugins.md, "SDK helpers"). The rules'
// own logic stays in their plugin files; these are the checks and the distance arithmetic whose
// numerics must be the same in every rule.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "bulwark/export.hpp"

namespace bulwark {

/// Throws Error(Data) naming `who` unless `updates` is the update matrix U[n, d]: floating point,
/// two-dimensional, n >= 1.
BULWARK_API void check_update_matrix(const at::Tensor& updates, const char* who);

/// Throws Error(Config) unless the rule `who` (defined in `source`, e.g. "Blanchard et al. 2017")
/// has n > 2f + slack updates, saying how many clients per round would do.
BULWARK_API void check_update_count(std::int64_t n, std::int64_t f, std::int64_t slack, const char* who,
                                    const char* source);

/// The rows 0..n−1 not listed in `kept` (row indices, any device), ascending: a rule's flags.
BULWARK_API std::vector<std::int64_t> rows_not_in(const at::Tensor& kept, std::int64_t n);

/// Squared Euclidean distances among the rows of U that can be compared at all.
struct FiniteDistances {
  at::Tensor rows;     ///< [m] indices (kLong, on U's device) of those rows, ascending
  at::Tensor squared;  ///< [m, m] float64, ‖u_i − u_j‖² in `rows` order, exactly 0 on the diagonal
};

/// Pairwise squared distances of U's rows, leaving out rows with a NaN/±Inf entry (and rows so
/// large that their distance overflows float64). Computed from float64 copies of the rows, centred
/// on their coordinate-wise median before the Gram matrix G = X Xᵀ is formed: ‖x_i‖² + ‖x_j‖² −
/// 2 G_ij then cancels little, and adding one constant to every row (which cannot change a
/// distance) does not change the result. A Gram matrix of the raw float32 rows would lose the
/// differences to rounding.
BULWARK_API FiniteDistances finite_pairwise_distances(const at::Tensor& updates);

/// Krum's score of every row (Blanchard et al., NeurIPS 2017): the sum of its `neighbours`
/// smallest squared distances to the other rows, read from `squared` [m, m]; 0 when `neighbours`
/// is 0. A row's distance to itself never counts, nor does a +inf entry while finite ones remain
/// (rules that remove rows set their columns to +inf).
BULWARK_API at::Tensor krum_scores(const at::Tensor& squared, std::int64_t neighbours);

/// Column medians of rows [m, d], m >= 1; for even m the mean of the two middle values (numpy's
/// convention; torch.median alone returns the lower one).
BULWARK_API at::Tensor coordinate_median(const at::Tensor& rows);

/// Every row with no NaN/±Inf entry scaled to norm at most `threshold` ≥ 0, u_i · min(1, C/‖u_i‖),
/// exactly also where ‖u_i‖ overflows (the direction is taken from the row divided by its largest
/// magnitude). Rows with a NaN/±Inf entry are returned unchanged, for the next rule to see.
BULWARK_API at::Tensor clip_rows(const at::Tensor& updates, double threshold);

/// Per column k of rows [m, d], the mean of the `count` entries closest to centre[k] (Meamed,
/// Phocas, Bulyan's last step). Ties in distance go to the lower row index, so the result does not
/// depend on the sort implementation; a NaN entry counts as infinitely far.
BULWARK_API at::Tensor mean_nearest_per_coordinate(const at::Tensor& rows, const at::Tensor& centre,
                                                   std::int64_t count);

/// Cosine similarities of the rows of `rows` [m, d] as float64 [m, m] on the CPU, computed from
/// float64 copies of the unit rows. sklearn's convention for a zero row: it stays zero, so its
/// similarity to every row (itself included) is 0. Rules that treat zero rows otherwise patch it.
BULWARK_API at::Tensor cosine_similarities(const at::Tensor& rows);

/// The mean of the rows with no NaN/±Inf entry; zeros when there is none.
BULWARK_API at::Tensor finite_mean(const at::Tensor& rows);

}  // namespace bulwark
