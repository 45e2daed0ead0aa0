#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace bulwark {

/// study.json: what a report needs to know about a study without re-reading its TOML file.
struct ManifestAxis {
  std::vector<std::string> keys;
  std::vector<std::string> labels;
  std::string name() const;  ///< keys joined by '+'
};

struct ManifestCell {
  std::string name, group;
  std::vector<std::size_t> choice;  ///< value index per axis
  std::int64_t seed = 0;
  std::string dir;                  ///< relative to the study folder
};

struct StudyManifest {
  std::string name, file;
  std::vector<ManifestAxis> axes;
  std::size_t rank_axis = 0;
  std::vector<ManifestCell> cells;
};

void write_manifest(const std::filesystem::path& study_dir, const StudyManifest& manifest);

/// study.json of a study folder; a single run's folder (summary.json, no study.json) reads as a
/// study of one cell. Anything else is Error(Config) naming the folder.
StudyManifest read_manifest(const std::filesystem::path& dir);

/// Mean and sample standard deviation (n − 1 denominator) of the finite values; std is NaN when
/// fewer than two values are finite, mean is NaN when none is.
struct Stat {
  double mean = 0.0, std = 0.0;
  std::size_t n = 0;
};
Stat mean_std(const std::vector<double>& values);

/// What a finished run contributes to its group.
struct RunResultRecord {
  double final_accuracy = 0.0, best_accuracy = 0.0, wall_seconds = 0.0;
  /// Columns beyond accuracy, in metrics order: every epsilon* and backdoor_accuracy* column
  /// (its last measured value) and detection_precision/recall (mean over the rounds where they
  /// are defined); then, for a run with [audit], audit_mia_auc, audit_mia_tpr_at_fpr_0.01,
  /// audit_lira_auc and audit_epsilon_example/client (summary.json "audit").
  std::vector<std::pair<std::string, double>> extras;
  std::vector<std::pair<double, double>> curve;  ///< (round, test accuracy) where evaluated
  std::vector<std::string> problems;  ///< damaged metrics.csv rows, left out ("file:line: ...")
};

/// Reads summary.json and metrics.csv of a finished run folder.
RunResultRecord read_run(const std::filesystem::path& run_dir);

/// One row of the summary table: the cells that differ only by seed.
struct GroupSummary {
  std::string group;
  std::vector<std::size_t> choice;
  std::size_t seeds_total = 0, seeds_done = 0;
  Stat final_accuracy, best_accuracy, wall_seconds;
  std::vector<std::pair<std::string, Stat>> extras;  ///< in StudySummary::extra_columns order
  std::vector<double> rounds, curve_mean, curve_std;  ///< test accuracy per round over seeds
};

struct StudySummary {
  StudyManifest manifest;
  std::vector<GroupSummary> groups;       ///< in study order; groups with no finished cell too
  std::vector<std::string> extra_columns;
  std::size_t cells_done = 0;
  std::vector<std::string> problems;  ///< every cell's RunResultRecord::problems
};

StudySummary summarize_study(const std::filesystem::path& study_dir);

/// The worst-case view of robustness papers: one row per value of the ranked axis, one column
/// per condition (combination of the other axes' values), cell = mean final accuracy; rows sorted
/// by their worst case (lowest accuracy over the conditions), best first. Empty with fewer than
/// two varied axes.
struct WorstCaseTable {
  std::string rank_key;
  std::vector<std::string> conditions;
  struct Row {
    std::string label;
    std::vector<double> accuracy;  ///< per condition; NaN where no cell has finished
    double worst = 0.0, mean = 0.0;
    std::string worst_condition;
  };
  std::vector<Row> rows;
};
WorstCaseTable worst_case_table(const StudySummary& summary);

/// The condition a group is tested under: its values of every axis but the ranked one
/// ("key=value, key=value").
std::string condition_of(const StudyManifest& manifest, const std::vector<std::size_t>& choice);

/// A table for people, as plain text cells: report.md and summary.md render it as Markdown,
/// report.html as HTML.
struct TextTable {
  std::string caption;  ///< said before the table; may be empty
  std::vector<std::string> header;
  std::size_t label_columns = 1;  ///< leading columns of labels (left-aligned); the rest are numbers
  std::vector<std::vector<std::string>> rows;
  int strong_column = -1;  ///< a column set in bold (the worst case); -1: none
  std::string note;        ///< said after the table; may be empty
};

/// The summary table, and the worst-case table when two or more axes vary.
std::vector<TextTable> summary_tables(const StudySummary& summary);

/// summary_tables() as Markdown (summary.md, and the Summary section of report.md).
std::string summary_markdown(const StudySummary& summary);

struct ReportOptions {
  /// gnuplot binary; empty: searched on PATH. A path that does not exist skips figures with a
  /// notice, as when gnuplot is not installed.
  std::string gnuplot;
};

struct ReportOutput {
  StudySummary summary;
  std::filesystem::path report;      ///< report.md
  std::filesystem::path html;        ///< report.html: the same, one self-contained page
  std::vector<std::string> figures;  ///< image files written, relative to the study folder
  std::vector<std::string> notices;  ///< for the user (e.g. gnuplot missing)
};

/// Writes summary.csv, summary.md, figures/ (gnuplot scripts, data, PNG and SVG), report.md and
/// report.html into the study folder, every file atomically. Works at any time: only finished
/// cells count.
ReportOutput write_report(const std::filesystem::path& study_dir, const ReportOptions& options = {});

}  // namespace bulwark
