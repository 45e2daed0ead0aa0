#include "bulwark/rows.hpp"

#include <ATen/ATen.h>

namespace bulwark {

at::Tensor row_index(const std::vector<std::int64_t>& rows, const at::Tensor& matrix) {
  return at::tensor(rows, at::kLong).to(matrix.device());
}

at::Tensor select_rows(const at::Tensor& matrix, const std::vector<std::int64_t>& rows) {
  return matrix.index_select(0, row_index(rows, matrix));
}

void write_rows(at::Tensor& matrix, const std::vector<std::int64_t>& rows, const at::Tensor& row) {
  auto index = row_index(rows, matrix);
  matrix.index_copy_(0, index, row.to(matrix.scalar_type()).unsqueeze(0).expand({index.size(0), row.size(0)}));
}

}  // namespace bulwark
