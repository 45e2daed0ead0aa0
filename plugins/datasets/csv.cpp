// Tabular classification data from CSV files (UCI Adult, Wisconsin breast cancer, ...).
//
// Encoding, learned from the training rows only and applied unchanged to the test rows:
//   numeric column j (every feature column not declared categorical):  x_j = (v - mean_j) / std_j
//     (population std; a constant column gives 0). Every present cell must be a finite number in
//     float range; anything else ("abc", "nan", "1e999") is an error at file:line:column, never a
//     silent switch to categories.
//   categorical columns (declared with `categorical`): one-hot over the categories seen in
//     training, sorted; an unseen test value is all zeros
//   label: the distinct label strings, whitespace and one trailing '.' removed (Adult's test file
//     writes ">50K."), sorted (numerically when all are numbers) -> 0..C-1
// Missing values ('?' or an empty field): missing = "drop" removes the row; "zero" keeps it with
// the feature at 0, i.e. the training mean for a numeric column and no category for a categorical
// one. A row whose label is missing is always dropped. Without test_path, a seeded shuffle holds
// out test_fraction of the rows.
//
// This is the preprocessing of the UCI benchmarks in the FL literature (e.g. Adult in Li et al.,
// "Fair Resource Allocation in Federated Learning", ICLR 2020; D. Dua and C. Graff, UCI Machine
// Learning Repository, 2019).
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/torch.h>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/rng.hpp"

namespace {

namespace fs = std::filesystem;

constexpr bulwark::OptionSpec kOptions[] = {
    {"path", bulwark::OptType::String, nullptr, -bulwark::kInf, bulwark::kInf,
     "CSV file with the training rows (or all rows, when test_path is empty).", nullptr},
    {"test_path", bulwark::OptType::String, "\"\"", -bulwark::kInf, bulwark::kInf,
     "CSV file with the test rows, same columns; empty = hold out test_fraction of `path`.",
     nullptr},
    {"test_fraction", bulwark::OptType::Float, "0.2", 0.0, 0.9,
     "Share of the rows held out for testing when test_path is empty (seeded shuffle).", nullptr},
    {"label_column", bulwark::OptType::String, "\"\"", -bulwark::kInf, bulwark::kInf,
     "Label column: a header name or a 0-based index written as a string (\"14\"); empty = last.",
     nullptr},
    {"header", bulwark::OptType::Bool, "true", 0, 1,
     "The first row of each file names the columns.", nullptr},
    {"delimiter", bulwark::OptType::String, "\",\"", -bulwark::kInf, bulwark::kInf,
     "Field separator, one character.", nullptr},
    {"comment", bulwark::OptType::String, "\"#|\"", -bulwark::kInf, bulwark::kInf,
     "Lines starting with one of these characters are skipped (Adult's test file opens with "
     "'|1x3 Cross validator').",
     nullptr},
    {"missing", bulwark::OptType::String, "\"drop\"", -bulwark::kInf, bulwark::kInf,
     "Rows with a missing value ('?' or empty): drop them, or zero the feature.", "drop|zero"},
    {"categorical", bulwark::OptType::String, "\"\"", -bulwark::kInf, bulwark::kInf,
     "Feature columns to one-hot encode, comma-separated header names or 0-based indices "
     "(\"workclass, education\"). Every other feature column must hold numbers.",
     nullptr},
};

[[noreturn]] void data_error(const std::string& message) {
  throw bulwark::Error(bulwark::ErrorKind::Data, message);
}

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

// A finite number that a float feature can hold.
bool parse_number(const std::string& s, double& value) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  value = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && errno != ERANGE && std::isfinite(value) &&
         std::fabs(value) <= std::numeric_limits<float>::max();
}

bool is_missing(const std::string& cell) { return cell.empty() || cell == "?"; }

std::string label_text(const std::string& cell) {
  auto label = cell;
  if (!label.empty() && label.back() == '.') label.pop_back();
  return trim(label);
}

struct Table {
  std::string file;
  char delimiter = ',';
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::int64_t> lines;  // 1-based line of each row, for messages
};

// Splits one line at `delimiter`, honouring double quotes ("a, b" and "" for a quote); unquoted
// fields are trimmed. `starts`, when given, receives each field's 1-based character column.
std::vector<std::string> split_line(const std::string& line, char delimiter,
                                    std::vector<std::size_t>* starts = nullptr) {
  std::vector<std::string> fields;
  std::string field;
  bool quoted = false, was_quoted = false;
  const auto mark_start = [&](std::size_t from) {
    if (!starts) return;
    while (from < line.size() && (line[from] == ' ' || line[from] == '\t')) ++from;
    starts->push_back(from + 1);
  };
  mark_start(0);
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"' && trim(field).empty()) {
      quoted = was_quoted = true;
      field.clear();
    } else if (c == delimiter) {
      fields.push_back(was_quoted ? field : trim(field));
      field.clear();
      was_quoted = false;
      mark_start(i + 1);
    } else {
      field += c;
    }
  }
  fields.push_back(was_quoted ? field : trim(field));
  return fields;
}

Table read_table(const std::string& path, bool header, char delimiter, const std::string& comment) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    data_error(path + ": cannot open (" + std::string(std::strerror(errno)) +
               "); check `path` / `test_path`");
  }
  Table table;
  table.file = path;
  table.delimiter = delimiter;
  std::string line;
  std::int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    const auto content = trim(line);
    if (content.empty() || comment.find(content.front()) != std::string::npos) continue;
    auto fields = split_line(line, delimiter);
    if (table.columns.empty()) {
      if (header) {
        table.columns = std::move(fields);
        continue;
      }
      for (std::size_t j = 0; j < fields.size(); ++j) table.columns.push_back(std::to_string(j));
    }
    if (fields.size() != table.columns.size()) {
      data_error(path + ":" + std::to_string(number) + ": expected " +
                 std::to_string(table.columns.size()) + " fields, found " +
                 std::to_string(fields.size()) + "; every row needs as many fields as the " +
                 (header ? "header" : "first row") + " (a stray delimiter or an unclosed quote?)");
    }
    table.rows.push_back(std::move(fields));
    table.lines.push_back(number);
  }
  if (in.bad()) data_error(path + ": read error after line " + std::to_string(number));
  return table;
}

// A column named by its header or by a 0-based index written as text ("14").
std::optional<std::size_t> find_column(const Table& table, const std::string& wanted) {
  const auto named = std::find(table.columns.begin(), table.columns.end(), wanted);
  if (named != table.columns.end()) return named - table.columns.begin();
  const bool digits = !wanted.empty() && std::all_of(wanted.begin(), wanted.end(), [](unsigned char c) {
    return std::isdigit(c);
  });
  if (digits && wanted.size() < 10 && std::stoull(wanted) < table.columns.size()) {
    return std::stoull(wanted);
  }
  return std::nullopt;
}

std::size_t find_label_column(const Table& table, const std::string& wanted) {
  if (wanted.empty()) return table.columns.size() - 1;
  if (const auto field = find_column(table, wanted)) return *field;
  data_error(table.file + ": label column '" + wanted + "' not found (expected a column name or " +
             "a 0-based index below " + std::to_string(table.columns.size()) + "; columns: " +
             c10::Join(", ", table.columns) + "); set label_column");
}

// The 1-based character column of field `field` on line `line` of the table's file (read again:
// only error messages need it).
std::size_t character_column(const Table& table, std::int64_t line, std::size_t field) {
  std::ifstream in(table.file, std::ios::binary);
  std::string text;
  std::int64_t at = 0;
  while (at < line && std::getline(in, text)) ++at;
  std::vector<std::size_t> starts;
  split_line(text, table.delimiter, &starts);
  return field < starts.size() ? starts[field] : 1;
}

[[noreturn]] void not_a_number(const Table& table, std::size_t row, std::size_t field) {
  const auto& name = table.columns[field];
  data_error(table.file + ":" + std::to_string(table.lines[row]) + ":" +
             std::to_string(character_column(table, table.lines[row], field)) + ": column '" +
             name + "' expected a finite number, found '" + table.rows[row][field] +
             "'; fix the cell, mark it missing with '?', or declare the column categorical "
             "(categorical = \"" +
             name + "\")");
}

// The fields named by `categorical` (header names or 0-based indices, comma-separated).
std::vector<bool> categorical_fields(const Table& table, const std::string& categorical,
                                     std::size_t label) {
  std::vector<bool> is_categorical(table.columns.size(), false);
  std::size_t from = 0;
  while (from <= categorical.size()) {
    auto comma = categorical.find(',', from);
    if (comma == std::string::npos) comma = categorical.size();
    const auto wanted = trim(categorical.substr(from, comma - from));
    from = comma + 1;
    if (wanted.empty()) continue;
    const auto field = find_column(table, wanted);
    if (!field) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "csv: categorical column '" + wanted + "' is not a column of " +
                               table.file + " (columns: " + c10::Join(", ", table.columns) +
                               "); name a header or give a 0-based index");
    }
    if (*field == label) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "csv: categorical names the label column '" + table.columns[*field] +
                               "'; labels are always classes, list only feature columns");
    }
    is_categorical[*field] = true;
  }
  return is_categorical;
}

// What training taught us about one feature column.
struct Column {
  std::size_t field;  // position in the row
  bool numeric = true;
  double mean = 0.0, scale = 1.0;
  std::unordered_map<std::string, std::int64_t> categories;  // value -> one-hot slot
  std::int64_t offset = 0;                                   // first feature of this column
  std::int64_t width() const { return numeric ? 1 : static_cast<std::int64_t>(categories.size()); }
};

struct Rows {
  const Table* table;
  std::vector<std::size_t> index;  // which rows of the table
};

std::vector<Column> learn_columns(const Rows& train, std::size_t label,
                                  const std::vector<bool>& is_categorical) {
  std::vector<Column> columns;
  std::int64_t offset = 0;
  for (std::size_t j = 0; j < is_categorical.size(); ++j) {
    if (j == label) continue;
    Column column;
    column.field = j;
    column.numeric = !is_categorical[j];
    std::vector<double> values;
    double value = 0.0;
    for (std::size_t k = 0; column.numeric && k < train.index.size(); ++k) {
      const auto r = train.index[k];
      const auto& cell = train.table->rows[r][j];
      if (is_missing(cell)) continue;
      if (!parse_number(cell, value)) not_a_number(*train.table, r, j);
      values.push_back(value);
    }
    if (column.numeric && !values.empty()) {
      // Two passes: sum-of-squares loses digits on columns like Adult's fnlwgt (~1e5).
      const auto count = static_cast<double>(values.size());
      double sum = 0.0, squares = 0.0;
      for (double v : values) sum += v;
      column.mean = sum / count;
      for (double v : values) squares += (v - column.mean) * (v - column.mean);
      const double stdev = std::sqrt(squares / count);
      column.scale = stdev > 0.0 ? stdev : 1.0;
    } else if (!column.numeric) {
      std::vector<std::string> seen;
      for (auto r : train.index) {
        const auto& cell = train.table->rows[r][j];
        if (!is_missing(cell)) seen.push_back(cell);
      }
      std::sort(seen.begin(), seen.end());
      seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
      for (std::size_t k = 0; k < seen.size(); ++k) column.categories[seen[k]] = k;
    }
    column.offset = offset;
    offset += column.width();
    columns.push_back(std::move(column));
  }
  return columns;
}

torch::Tensor encode(const Rows& rows, const std::vector<Column>& columns, std::int64_t width) {
  const auto n = static_cast<std::int64_t>(rows.index.size());
  auto features = torch::zeros({n, width}, torch::kFloat);
  auto* out = features.data_ptr<float>();
  double value = 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    const auto r = rows.index[i];
    const auto& row = rows.table->rows[r];
    float* x = out + i * width;
    for (const auto& column : columns) {
      const auto& cell = row[column.field];
      if (is_missing(cell)) continue;  // zero: the mean, or no category
      if (!column.numeric) {
        const auto slot = column.categories.find(cell);
        if (slot != column.categories.end()) x[column.offset + slot->second] = 1.0f;
      } else if (parse_number(cell, value)) {
        x[column.offset] = static_cast<float>((value - column.mean) / column.scale);
      } else {
        not_a_number(*rows.table, r, column.field);
      }
    }
  }
  return features;
}

// Label strings -> class ids, sorted numerically when every label is a number.
std::map<std::string, std::int64_t> label_ids(std::vector<std::string> labels) {
  std::sort(labels.begin(), labels.end());
  labels.erase(std::unique(labels.begin(), labels.end()), labels.end());
  double a = 0.0, b = 0.0;
  const bool numeric = std::all_of(labels.begin(), labels.end(),
                                   [&](const std::string& s) { return parse_number(s, a); });
  if (numeric) {
    std::stable_sort(labels.begin(), labels.end(), [&](const std::string& x, const std::string& y) {
      parse_number(x, a);
      parse_number(y, b);
      return a < b;
    });
  }
  std::map<std::string, std::int64_t> ids;
  for (std::size_t k = 0; k < labels.size(); ++k) ids[labels[k]] = k;
  return ids;
}

class CsvDataset final : public bulwark::DatasetLoader {
 public:
  explicit CsvDataset(const bulwark::Options& options)
      : path_(options.get<std::string>("path")),
        test_path_(options.get<std::string>("test_path")),
        test_fraction_(options.get<double>("test_fraction")),
        label_column_(options.get<std::string>("label_column")),
        header_(options.get<bool>("header")),
        comment_(options.get<std::string>("comment")),
        drop_missing_(options.get<std::string>("missing") == "drop"),
        categorical_(options.get<std::string>("categorical")) {
    const auto delimiter = options.get<std::string>("delimiter");
    if (delimiter.size() != 1) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "csv: delimiter must be one character; found '" + delimiter + "'");
    }
    delimiter_ = delimiter[0];
  }

  bulwark::Dataset load(const bulwark::DatasetContext& context) override {
    const auto train_table = read_table(path_, header_, delimiter_, comment_);
    if (train_table.columns.size() < 2) {
      data_error(path_ + ": " +
                 (train_table.columns.empty() ? std::string("no data rows")
                                              : std::string("only one column")) +
                 " (expected features and a label per row); check `path` and `delimiter`");
    }
    const auto label = find_label_column(train_table, label_column_);
    auto train = usable_rows(train_table, label);

    Table test_table;
    Rows test{&test_table, {}};
    if (!test_path_.empty()) {
      test_table = read_table(test_path_, header_, delimiter_, comment_);
      if (test_table.columns.size() != train_table.columns.size() ||
          (header_ && test_table.columns != train_table.columns)) {
        data_error(test_path_ + ": columns differ from " + path_ + " (expected " +
                   c10::Join(", ", train_table.columns) + "; found " +
                   c10::Join(", ", test_table.columns) + "); both files need the same columns");
      }
      test = usable_rows(test_table, label);
    } else {
      test = hold_out(train, context.seed);
    }

    const auto columns =
        learn_columns(train, label, categorical_fields(train_table, categorical_, label));
    const std::int64_t width = columns.empty() ? 0 : columns.back().offset + columns.back().width();
    if (width == 0) {
      data_error(path_ +
                 ": no usable feature (every feature column is empty in the training "
                 "rows); check the file");
    }

    // Split mode: classes come from the whole file. Separate files: from the training file, and a
    // test label it never saw is an error rather than a silent extra class.
    std::vector<std::string> names;
    for (auto r : train.index) names.push_back(label_text(train_table.rows[r][label]));
    if (test_path_.empty()) {
      for (auto r : test.index) names.push_back(label_text(train_table.rows[r][label]));
    }
    const auto ids = label_ids(names);
    if (ids.size() < 2) {
      data_error(path_ + ": the label column '" + train_table.columns[label] +
                 "' has only one value (expected at least 2 classes); check label_column");
    }

    bulwark::Dataset data;
    data.train_inputs = encode(train, columns, width);
    data.test_inputs = encode(test, columns, width);
    data.train_labels = labels(train, label, ids);
    data.test_labels = labels(test, label, ids);
    data.num_classes = static_cast<std::int64_t>(ids.size());
    data.input_shape = {width};
    data.description = fs::path(path_).filename().string() + " (CSV, " +
                       std::to_string(train.index.size()) + " train / " +
                       std::to_string(test.index.size()) + " test, " + std::to_string(width) +
                       " features, " + std::to_string(ids.size()) + " classes)";
    return data;
  }

 private:
  // Rows kept after the missing-value policy; a row without a label is never usable.
  Rows usable_rows(const Table& table, std::size_t label) const {
    if (table.rows.empty()) {
      data_error(table.file + ": no data rows (the file holds nothing but " +
                 (header_ ? "a header, " : "") + "empty or comment lines); check the path");
    }
    Rows rows{&table, {}};
    for (std::size_t r = 0; r < table.rows.size(); ++r) {
      const auto& row = table.rows[r];
      if (is_missing(label_text(row[label]))) continue;
      if (drop_missing_ && std::any_of(row.begin(), row.end(), is_missing)) continue;
      rows.index.push_back(r);
    }
    if (rows.index.empty()) {
      data_error(table.file + ": no usable data rows (" + std::to_string(table.rows.size()) +
                 " rows read, all dropped for missing values '?' or empty fields)" +
                 (drop_missing_ ? "; set missing = \"zero\" to keep rows with missing values"
                                : "; check the label column"));
    }
    return rows;
  }

  // Moves a seeded random test_fraction of `train` into the returned test rows; both keep file
  // order.
  Rows hold_out(Rows& train, std::uint64_t seed) const {
    const auto n = static_cast<std::int64_t>(train.index.size());
    if (n < 2) {
      data_error(path_ + ": only " + std::to_string(n) +
                 " usable row (expected at least 2 to "
                 "hold out a test set); add rows or set test_path");
    }
    const auto n_test = std::clamp<std::int64_t>(std::llround(test_fraction_ * n), 1, n - 1);
    auto gen =
        bulwark::stream_generator(seed, /*round=*/0, bulwark::kServer, bulwark::Stream::Dataset);
    auto perm = torch::randperm(n, gen, torch::kLong);
    auto is_test = torch::zeros({n}, torch::kBool);
    is_test.index_put_({perm.narrow(0, 0, n_test)}, true);
    const auto* flags = is_test.data_ptr<bool>();
    Rows test{train.table, {}}, kept{train.table, {}};
    for (std::int64_t i = 0; i < n; ++i) (flags[i] ? test : kept).index.push_back(train.index[i]);
    train = std::move(kept);
    return test;
  }

  torch::Tensor labels(const Rows& rows, std::size_t label,
                       const std::map<std::string, std::int64_t>& ids) const {
    std::vector<std::int64_t> out;
    out.reserve(rows.index.size());
    for (auto r : rows.index) {
      const auto text = label_text(rows.table->rows[r][label]);
      const auto id = ids.find(text);
      if (id == ids.end()) {
        std::vector<std::string> known;
        for (const auto& entry : ids) known.push_back(entry.first);
        data_error(rows.table->file + ":" + std::to_string(rows.table->lines[r]) + ": label '" +
                   text + "' does not occur in " + path_ + " (expected one of " +
                   c10::Join(", ", known) + "); the files disagree on the classes");
      }
      out.push_back(id->second);
    }
    return torch::tensor(out, torch::kLong);
  }

  std::string path_, test_path_;
  double test_fraction_;
  std::string label_column_;
  bool header_;
  std::string comment_;
  bool drop_missing_;
  std::string categorical_;
  char delimiter_ = ',';
};

}  // namespace

BULWARK_PLUGIN(bulwark::DatasetLoader, CsvDataset, "csv", "1.0.0",
               "Tabular CSV data (UCI Adult, breast cancer, ...): one-hot + standardised features",
               "Reads a CSV training file and a test file (or holds out a seeded test_fraction). "
               "Numeric columns are standardised with the training mean and std, the columns "
               "declared in `categorical` one-hot encoded over the training categories (unseen = "
               "all zeros); a cell that is not a finite number in a numeric column is an error at "
               "file:line:column. Labels are mapped "
               "to 0..C-1 in sorted order after stripping a trailing '.', as UCI Adult's test file "
               "needs (Dua and Graff, UCI Machine Learning Repository, 2019; Adult as used in Li "
               "et al., ICLR 2020). Ragged rows, missing label columns and files without data are "
               "reported with file and line.",
               kOptions)
