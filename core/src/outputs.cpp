#include "outputs.hpp"

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <iterator>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bulwark/error.hpp"

namespace bulwark {

void create_output_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  if (std::filesystem::is_directory(dir, ec)) return;
  for (auto above = dir; !above.empty(); above = above.parent_path()) {
    if (std::filesystem::exists(above, ec) && !std::filesystem::is_directory(above, ec)) {
      throw Error(ErrorKind::Config, fmt::format("{}: is a file, not a folder, so the output folder {} cannot be "
                                                 "made; choose another --out",
                                                 above.string(), dir.string()));
    }
    if (above == above.parent_path()) break;
  }
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    throw Error(ErrorKind::Config, fmt::format("cannot create the output folder {}: {}; choose another --out",
                                               dir.string(), ec.message()));
  }
}

void write_file_atomic(const std::filesystem::path& path, const std::string& content) {
  if (path.has_parent_path()) create_output_dir(path.parent_path());
  auto temporary = path;
  temporary += fmt::format(".tmp.{}", ::getpid());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << content;
    out.flush();
    if (!out) {
      out.close();
      std::error_code ignored;
      std::filesystem::remove(temporary, ignored);  // a failed write leaves nothing behind
      throw Error(ErrorKind::Runtime, "cannot write " + path.string() + " (disk full or no permission?)");
    }
  }
  std::error_code ec;
  std::filesystem::rename(temporary, path, ec);
  if (ec) {
    std::filesystem::remove(temporary);
    throw Error(ErrorKind::Runtime, "cannot move " + temporary.string() + " to " + path.string() +
                                        ": " + ec.message());
  }
}

std::string read_whole_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::Data, "cannot read " + path.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

FolderFiles read_folder(const std::filesystem::path& dir) {
  FolderFiles files;
  if (!std::filesystem::is_directory(dir)) return files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    files[std::filesystem::relative(entry.path(), dir).generic_string()] = read_whole_file(entry.path());
  }
  return files;
}

void write_folder(const std::filesystem::path& dir, const FolderFiles& files, const std::string& last) {
  for (const auto& [name, bytes] : files) {
    if (name != last) write_file_atomic(dir / name, bytes);
  }
  if (const auto it = files.find(last); it != files.end()) write_file_atomic(dir / last, it->second);
}

std::string format_csv_number(double value) {
  if (std::isnan(value)) return "";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) return fmt::format("{}", static_cast<long long>(value));
  return fmt::format("{}", value);
}

void MetricsLog::append(MetricsRow row) {
  rows_.push_back(std::move(row));
  flush();
}

void MetricsLog::flush() const {
  std::string csv, jsonl;
  if (!rows_.empty()) {
    for (std::size_t i = 0; i < rows_.front().size(); ++i) csv += (i ? "," : "") + rows_.front()[i].first;
    csv += "\n";
  }
  for (const auto& row : rows_) {
    nlohmann::ordered_json object;
    for (std::size_t i = 0; i < row.size(); ++i) {
      csv += (i ? "," : "") + format_csv_number(row[i].second);
      const double v = row[i].second;
      if (std::isfinite(v)) {
        object[row[i].first] = (v == std::floor(v) && std::fabs(v) < 1e15) ? nlohmann::ordered_json(static_cast<long long>(v))
                                                                            : nlohmann::ordered_json(v);
      } else {
        object[row[i].first] = nullptr;
      }
    }
    csv += "\n";
    jsonl += object.dump() + "\n";
  }
  write_file_atomic(dir_ / "metrics.csv", csv);
  write_file_atomic(dir_ / "metrics.jsonl", jsonl);
}

namespace {

std::string flag_lines(const std::vector<FlagsLog::Row>& rows) {
  std::string text;
  for (const auto& row : rows) {
    text += fmt::format("{},{},{},{}\n", row.round, row.client, row.malicious ? 1 : 0, row.flagged ? 1 : 0);
  }
  return text;
}

constexpr const char* kFlagsHeader = "round,client,malicious,flagged\n";

}  // namespace

void FlagsLog::append(const std::vector<Row>& rows) {
  if (rows.empty()) return;
  if (csv_.empty()) csv_ = kFlagsHeader;
  rows_.insert(rows_.end(), rows.begin(), rows.end());
  csv_ += flag_lines(rows);
  write_file_atomic(dir_ / "flags.csv", csv_);
}

void FlagsLog::assign(std::vector<Row> rows) {
  rows_ = std::move(rows);
  csv_ = rows_.empty() ? std::string() : kFlagsHeader + flag_lines(rows_);
}

std::uint64_t fnv1a(const std::string& bytes) {
  std::uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : bytes) hash = (hash ^ c) * 1099511628211ull;
  return hash;
}

}  // namespace bulwark
