#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace bulwark {

/// Creates the folder `dir` (and its parents) for outputs; Error(Config) naming it when a file
/// stands in the way or it cannot be created (no permission, read-only disk).
void create_output_dir(const std::filesystem::path& dir);

/// Writes `content` to `path` atomically: a temporary file in the same folder, then rename, so
/// a reader (or a crash) never sees a half-written file.
void write_file_atomic(const std::filesystem::path& path, const std::string& content);

/// The bytes of the file at `path`; Error(Data) naming it when it cannot be read.
std::string read_whole_file(const std::filesystem::path& path);

/// Every regular file under `dir`, recursively, by its path relative to `dir`: the outputs of a
/// study cell that another rank ran travel this way. Empty when `dir` does not exist.
using FolderFiles = std::map<std::string, std::string>;
FolderFiles read_folder(const std::filesystem::path& dir);

/// Writes `files` under `dir`, each atomically, and `last` (when among them) after all others:
/// the file whose presence says the folder is complete.
void write_folder(const std::filesystem::path& dir, const FolderFiles& files, const std::string& last);

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

/// flags.csv of a run whose rule names the rows it flagged: per such round, one line per upload
/// row — round, client, malicious (1: the client attacked), flagged (1: the rule flagged it) —
/// rewritten atomically after every round that adds lines. No file while there are none.
class FlagsLog {
 public:
  struct Row {
    std::int64_t round, client;
    bool malicious, flagged;
  };

  explicit FlagsLog(std::filesystem::path dir) : dir_(std::move(dir)) {}
  void append(const std::vector<Row>& rows);
  const std::vector<Row>& rows() const { return rows_; }
  /// Restores rows from a checkpoint without rewriting the file.
  void assign(std::vector<Row> rows);

 private:
  std::filesystem::path dir_;
  std::vector<Row> rows_;
  std::string csv_;  // the file's text, grown with the rows
};

/// A number as CSV/JSON text: shortest round-trip form; NaN -> "" (CSV) or "null" (JSON).
std::string format_csv_number(double value);

/// 64-bit FNV-1a of `bytes`: short stable names for long keys, and file identities.
std::uint64_t fnv1a(const std::string& bytes);

}  // namespace bulwark
