#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace bulwark {

/// Writes `content` to `path` atomically: a temporary file in the same folder, then rename, so
/// a reader (or a crash) never sees a half-written file.
void write_file_atomic(const std::filesystem::path& path, const std::string& content);

/// One row of metrics, columns in order. NaN means "not measured this round" (an empty CSV cell,
/// null in JSON).
using MetricsRow = std::vector<std::pair<std::string, double>>;

/// metrics.csv and metrics.jsonl of a run, rewritten atomically after every round.
class MetricsLog {
 public:
  explicit MetricsLog(std::filesystem::path dir) : dir_(std::move(dir)) {}
  void append(MetricsRow row);
  const std::vector<MetricsRow>& rows() const { return rows_; }
  /// Restores rows from a checkpoint without rewriting files.
  void assign(std::vector<MetricsRow> rows) { rows_ = std::move(rows); }
  void flush() const;

 private:
  std::filesystem::path dir_;
  std::vector<MetricsRow> rows_;
};

/// A number as CSV/JSON text: shortest round-trip form; NaN -> "" (CSV) or "null" (JSON).
std::string format_csv_number(double value);

}  // namespace bulwark
