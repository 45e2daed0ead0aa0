#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "bulwark/export.hpp"

namespace bulwark {

/// `rows` as an index tensor on `matrix`'s device (index ops need index and data together).
BULWARK_API at::Tensor row_index(const std::vector<std::int64_t>& rows, const at::Tensor& matrix);

/// The rows `rows` of `matrix` [n, d], as a new [rows, d] tensor.
BULWARK_API at::Tensor select_rows(const at::Tensor& matrix, const std::vector<std::int64_t>& rows);

/// Writes the one row `row` [d] into every row of `matrix` named in `rows`, in `matrix`'s dtype.
BULWARK_API void write_rows(at::Tensor& matrix, const std::vector<std::int64_t>& rows, const at::Tensor& row);

}  // namespace bulwark
