// Study reports: a table over cells grouped by everything but the seed, the worst-case view that
// robustness papers rank defences by, and gnuplot figures. Everything is computed from files on
// disk (study.json, each cell's summary.json and metrics.csv), so `bulwark report` works while a
// study runs, after it, and on a copied folder. The figures are drawn in report_figures.cpp.
#include "report.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <numeric>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (moved here in fmt 11)
#include <nlohmann/json.hpp>

#include "bulwark/error.hpp"
#include "outputs.hpp"
#include "report_figures.hpp"
#include "report_html.hpp"

namespace bulwark {

namespace fs = std::filesystem;

namespace {

const double kNaN = std::nan("");


nlohmann::json read_json(const fs::path& path) {
  try {
    return nlohmann::json::parse(read_whole_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::Data, path.string() + " is not valid JSON: " + e.what());
  }
}

double number(const nlohmann::json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_number() ? it->get<double>() : kNaN;
}

bool is_extra_column(const std::string& name) {
  return name.rfind("epsilon", 0) == 0 || name.rfind("backdoor_accuracy", 0) == 0 || name == "detection_precision" ||
         name == "detection_recall";
}

/// Column headings for people: the CSV keeps the raw names.
std::string pretty(const std::string& column) {
  if (column.rfind("epsilon", 0) == 0) return "ε" + column.substr(7);
  if (column.rfind("backdoor_accuracy", 0) == 0) return "backdoor acc" + column.substr(17);
  if (column == "detection_precision") return "detection precision";
  if (column == "detection_recall") return "detection recall";
  if (column == "audit_mia_auc") return "MIA AUC";
  if (column == "audit_mia_tpr_at_fpr_0.01") return "MIA TPR @ 1% FPR";
  if (column == "audit_lira_auc") return "LiRA AUC";
  if (column.rfind("audit_epsilon_", 0) == 0) return "audited ε " + column.substr(14);
  return column;
}

std::string format_stat(const Stat& s, int decimals) {
  if (s.n == 0) return "–";
  if (std::isnan(s.std)) return fmt::format("{:.{}f}", s.mean, decimals);
  return fmt::format("{:.{}f} ± {:.{}f}", s.mean, decimals, s.std, decimals);
}

int decimals_of(const std::string& column) {
  return column.rfind("epsilon", 0) == 0 || column.rfind("audit_epsilon", 0) == 0 ? 3 : 4;
}

std::string markdown_cell(std::string text) {
  std::string out;
  for (char c : text) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

/// Parsed metrics.csv: column names and rows of numbers (empty cell -> NaN).
struct Table {
  std::vector<std::string> columns;
  std::vector<std::vector<double>> rows;
  int column(const std::string& name) const {
    auto it = std::find(columns.begin(), columns.end(), name);
    return it == columns.end() ? -1 : static_cast<int>(it - columns.begin());
  }
};

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> fields;
  std::string field;
  std::stringstream in(line);
  while (std::getline(in, field, ',')) fields.push_back(field);
  if (!line.empty() && line.back() == ',') fields.emplace_back();
  return fields;
}

/// A damaged row (cut short, or a cell that is not a number) is left out and said in `problems`:
/// the report must not draw from it as if it were whole.
Table read_metrics(const fs::path& path, std::vector<std::string>& problems) {
  Table table;
  std::stringstream in(read_whole_file(path));
  std::string line;
  if (!std::getline(in, line)) return table;
  table.columns = split_csv_line(line);
  for (std::size_t number = 2; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const auto fields = split_csv_line(line);
    std::vector<double> row(table.columns.size(), kNaN);
    bool whole = fields.size() == row.size();
    for (std::size_t i = 0; whole && i < fields.size(); ++i) {
      if (fields[i].empty()) continue;
      char* end = nullptr;
      row[i] = std::strtod(fields[i].c_str(), &end);
      whole = end == fields[i].c_str() + fields[i].size();
    }
    if (!whole) {
      problems.push_back(fmt::format("{}:{}: a damaged row ({} of {} fields, or a cell that is not a number) was "
                                     "left out of the report",
                                     path.string(), number, fields.size(), row.size()));
      continue;
    }
    table.rows.push_back(std::move(row));
  }
  return table;
}


}  // namespace

std::string condition_of(const StudyManifest& manifest, const std::vector<std::size_t>& choice) {
  std::vector<std::string> parts;
  for (std::size_t a = 0; a < manifest.axes.size(); ++a) {
    if (a == manifest.rank_axis) continue;
    parts.push_back(manifest.axes[a].name() + "=" + manifest.axes[a].labels[choice[a]]);
  }
  return fmt::format("{}", fmt::join(parts, ", "));
}

std::string ManifestAxis::name() const { return fmt::format("{}", fmt::join(keys, "+")); }

void write_manifest(const fs::path& study_dir, const StudyManifest& manifest) {
  nlohmann::ordered_json json;
  json["name"] = manifest.name;
  json["file"] = manifest.file;
  json["rank_axis"] = manifest.rank_axis;
  json["axes"] = nlohmann::ordered_json::array();
  for (const auto& axis : manifest.axes) json["axes"].push_back({{"keys", axis.keys}, {"labels", axis.labels}});
  json["cells"] = nlohmann::ordered_json::array();
  for (const auto& cell : manifest.cells) {
    json["cells"].push_back(
        {{"name", cell.name}, {"group", cell.group}, {"choice", cell.choice}, {"seed", cell.seed}, {"dir", cell.dir}});
  }
  write_file_atomic(study_dir / "study.json", json.dump(2) + "\n");
}

StudyManifest read_manifest(const fs::path& dir) {
  StudyManifest manifest;
  if (fs::exists(dir / "study.json")) {
    const auto json = read_json(dir / "study.json");
    try {
      manifest.name = json.at("name").get<std::string>();
      manifest.file = json.at("file").get<std::string>();
      manifest.rank_axis = json.at("rank_axis").get<std::size_t>();
      for (const auto& axis : json.at("axes")) {
        manifest.axes.push_back({axis.at("keys").get<std::vector<std::string>>(), axis.at("labels").get<std::vector<std::string>>()});
      }
      for (const auto& cell : json.at("cells")) {
        manifest.cells.push_back({cell.at("name").get<std::string>(), cell.at("group").get<std::string>(),
                                  cell.at("choice").get<std::vector<std::size_t>>(), cell.at("seed").get<std::int64_t>(),
                                  cell.at("dir").get<std::string>()});
      }
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorKind::Data, (dir / "study.json").string() + " is malformed: " + e.what());
    }
    for (const auto& cell : manifest.cells) {
      if (cell.choice.size() != manifest.axes.size()) {
        throw Error(ErrorKind::Data, (dir / "study.json").string() + " is malformed: cell '" + cell.name +
                                         "' does not choose a value on every axis");
      }
    }
    return manifest;
  }
  if (fs::exists(dir / "summary.json")) {
    const auto json = read_json(dir / "summary.json");
    manifest.name = json.value("name", dir.filename().string());
    manifest.cells.push_back({manifest.name, "all", {}, json.value("seed", std::int64_t{0}), "."});
    return manifest;
  }
  throw Error(ErrorKind::Config, dir.string() +
                                     " is neither a study folder (no study.json) nor a finished run (no summary.json)");
}

Stat mean_std(const std::vector<double>& values) {
  std::vector<double> finite;
  for (double v : values) {
    if (std::isfinite(v)) finite.push_back(v);
  }
  Stat s;
  s.n = finite.size();
  if (finite.empty()) {
    s.mean = s.std = kNaN;
    return s;
  }
  s.mean = std::accumulate(finite.begin(), finite.end(), 0.0) / static_cast<double>(s.n);
  if (s.n < 2) {
    s.std = kNaN;
    return s;
  }
  double squares = 0.0;
  for (double v : finite) squares += (v - s.mean) * (v - s.mean);
  s.std = std::sqrt(squares / static_cast<double>(s.n - 1));
  return s;
}

RunResultRecord read_run(const fs::path& run_dir) {
  const auto summary = read_json(run_dir / "summary.json");
  RunResultRecord record;
  record.final_accuracy = number(summary, "final_test_accuracy");
  record.best_accuracy = number(summary, "best_test_accuracy");
  record.wall_seconds = number(summary, "wall_seconds");
  // [audit] (audit.hpp): the membership attack's AUC and TPR, each canary audit's lower bound on ε;
  // after the metrics.csv columns.
  std::vector<std::pair<std::string, double>> audit_columns;
  if (const auto audit = summary.find("audit"); audit != summary.end() && audit->is_object()) {
    const auto add = [&](const char* part, const char* key, const char* column) {
      const auto found = audit->find(part);
      if (found != audit->end() && found->is_object()) audit_columns.emplace_back(column, number(*found, key));
    };
    add("membership", "auc", "audit_mia_auc");
    add("membership", "tpr_at_fpr_0.01", "audit_mia_tpr_at_fpr_0.01");
    add("membership_lira", "auc", "audit_lira_auc");
    add("canaries_example", "epsilon_lower_bound", "audit_epsilon_example");
    add("canaries_client", "epsilon_lower_bound", "audit_epsilon_client");
  }
  if (!fs::exists(run_dir / "metrics.csv")) {
    record.extras = audit_columns;
    return record;
  }
  const auto metrics = read_metrics(run_dir / "metrics.csv", record.problems);
  const int round = metrics.column("round"), accuracy = metrics.column("test_accuracy");
  if (round >= 0 && accuracy >= 0) {
    for (const auto& row : metrics.rows) {
      if (std::isfinite(row[accuracy])) record.curve.emplace_back(row[round], row[accuracy]);
    }
  }
  for (std::size_t c = 0; c < metrics.columns.size(); ++c) {
    const auto& name = metrics.columns[c];
    if (!is_extra_column(name)) continue;
    std::vector<double> column;
    for (const auto& row : metrics.rows) column.push_back(row[c]);
    double value = kNaN;
    if (name.rfind("detection_", 0) == 0) {
      value = mean_std(column).mean;  // a rule's hit rate over the run, not its last round
    } else {
      for (auto v : column) {
        if (std::isfinite(v)) value = v;  // the last measured value: ε spent, final backdoor accuracy
      }
    }
    record.extras.emplace_back(name, value);
  }
  record.extras.insert(record.extras.end(), audit_columns.begin(), audit_columns.end());
  return record;
}

StudySummary summarize_study(const fs::path& study_dir) {
  StudySummary summary;
  summary.manifest = read_manifest(study_dir);
  std::map<std::string, std::size_t> group_index;
  std::vector<std::vector<RunResultRecord>> runs;
  for (const auto& cell : summary.manifest.cells) {
    auto [it, added] = group_index.emplace(cell.group, summary.groups.size());
    if (added) {
      GroupSummary group;
      group.group = cell.group;
      group.choice = cell.choice;
      summary.groups.push_back(group);
      runs.emplace_back();
    }
    auto& group = summary.groups[it->second];
    ++group.seeds_total;
    const auto dir = study_dir / cell.dir;
    if (!fs::exists(dir / "summary.json")) continue;
    runs[it->second].push_back(read_run(dir));
    const auto& problems = runs[it->second].back().problems;
    summary.problems.insert(summary.problems.end(), problems.begin(), problems.end());
    ++group.seeds_done;
    ++summary.cells_done;
    for (const auto& [name, value] : runs[it->second].back().extras) {
      if (std::find(summary.extra_columns.begin(), summary.extra_columns.end(), name) == summary.extra_columns.end()) {
        summary.extra_columns.push_back(name);
      }
    }
  }
  for (std::size_t g = 0; g < summary.groups.size(); ++g) {
    auto& group = summary.groups[g];
    std::vector<double> final_accuracy, best_accuracy, wall;
    std::map<double, std::vector<double>> by_round;
    for (const auto& run : runs[g]) {
      final_accuracy.push_back(run.final_accuracy);
      best_accuracy.push_back(run.best_accuracy);
      wall.push_back(run.wall_seconds);
      for (const auto& [round, accuracy] : run.curve) by_round[round].push_back(accuracy);
    }
    group.final_accuracy = mean_std(final_accuracy);
    group.best_accuracy = mean_std(best_accuracy);
    group.wall_seconds = mean_std(wall);
    for (const auto& column : summary.extra_columns) {
      std::vector<double> values;
      for (const auto& run : runs[g]) {
        for (const auto& [name, value] : run.extras) {
          if (name == column) values.push_back(value);
        }
      }
      group.extras.emplace_back(column, mean_std(values));
    }
    for (const auto& [round, values] : by_round) {
      const auto s = mean_std(values);
      group.rounds.push_back(round);
      group.curve_mean.push_back(s.mean);
      group.curve_std.push_back(s.std);
    }
  }
  return summary;
}

WorstCaseTable worst_case_table(const StudySummary& summary) {
  WorstCaseTable table;
  const auto& manifest = summary.manifest;
  if (manifest.axes.size() < 2) return table;
  const auto& rank = manifest.axes[manifest.rank_axis];
  table.rank_key = rank.name();
  for (const auto& group : summary.groups) {
    const auto condition = condition_of(manifest, group.choice);
    if (std::find(table.conditions.begin(), table.conditions.end(), condition) == table.conditions.end()) {
      table.conditions.push_back(condition);
    }
  }
  for (const auto& label : rank.labels) {
    WorstCaseTable::Row row;
    row.label = label;
    row.accuracy.assign(table.conditions.size(), kNaN);
    table.rows.push_back(row);
  }
  for (const auto& group : summary.groups) {
    if (group.final_accuracy.n == 0) continue;
    const auto c = std::find(table.conditions.begin(), table.conditions.end(), condition_of(manifest, group.choice)) -
                   table.conditions.begin();
    table.rows[group.choice[manifest.rank_axis]].accuracy[c] = group.final_accuracy.mean;
  }
  for (auto& row : table.rows) {
    row.worst = kNaN;
    std::vector<double> finite;
    for (std::size_t c = 0; c < row.accuracy.size(); ++c) {
      if (std::isnan(row.accuracy[c])) continue;
      finite.push_back(row.accuracy[c]);
      if (std::isnan(row.worst) || row.accuracy[c] < row.worst) {
        row.worst = row.accuracy[c];
        row.worst_condition = table.conditions[c];
      }
    }
    row.mean = mean_std(finite).mean;
  }
  // Best worst case first; rows without any finished cell last.
  std::stable_sort(table.rows.begin(), table.rows.end(), [](const WorstCaseTable::Row& a, const WorstCaseTable::Row& b) {
    if (std::isnan(a.worst) || std::isnan(b.worst)) return !std::isnan(a.worst) && std::isnan(b.worst);
    return a.worst > b.worst;
  });
  return table;
}

std::vector<TextTable> summary_tables(const StudySummary& summary) {
  const auto& manifest = summary.manifest;
  TextTable table;
  for (const auto& axis : manifest.axes) table.header.push_back(axis.name());
  if (manifest.axes.empty()) table.header.push_back("cells");
  table.label_columns = table.header.size();
  table.header.insert(table.header.end(), {"seeds", "final acc", "best acc"});
  for (const auto& column : summary.extra_columns) table.header.push_back(pretty(column));
  table.header.push_back("wall time (s)");
  for (const auto& group : summary.groups) {
    std::vector<std::string> cells;
    for (std::size_t a = 0; a < manifest.axes.size(); ++a) cells.push_back(manifest.axes[a].labels[group.choice[a]]);
    if (manifest.axes.empty()) cells.push_back("all");
    cells.push_back(fmt::format("{}/{}", group.seeds_done, group.seeds_total));
    cells.push_back(format_stat(group.final_accuracy, 4));
    cells.push_back(format_stat(group.best_accuracy, 4));
    for (const auto& [column, stat] : group.extras) cells.push_back(format_stat(stat, decimals_of(column)));
    cells.push_back(format_stat(group.wall_seconds, 1));
    table.rows.push_back(std::move(cells));
  }
  table.note = "Values are mean ± sample standard deviation (n − 1 denominator) over the seeds that finished "
               "(no ± with one seed). Final = the last evaluation, best = the highest evaluation of a run";
  const auto any_column = [&](const char* prefix) {
    return std::any_of(summary.extra_columns.begin(), summary.extra_columns.end(),
                       [&](const std::string& c) { return c.rfind(prefix, 0) == 0; });
  };
  if (any_column("epsilon")) table.note += "; ε = the privacy spent by the end of the run";
  if (any_column("audit_mia")) table.note += "; MIA = loss-threshold membership inference on the final model";
  if (any_column("audit_lira")) table.note += "; LiRA = offline likelihood-ratio membership inference (shadow runs)";
  if (any_column("audit_epsilon")) {
    table.note += "; audited ε = one-run audit's lower bound on ε from the canaries (Steinke et al. 2023)";
  }
  if (any_column("backdoor")) table.note += "; backdoor acc = the last measured backdoor accuracy";
  if (any_column("detection")) table.note += "; detection precision/recall = a run's mean over the rounds where defined";
  table.note += ".";
  std::vector<TextTable> tables = {std::move(table)};

  const auto worst = worst_case_table(summary);
  if (!worst.rows.empty()) {
    TextTable ranked;
    ranked.caption = fmt::format("Worst case of each {} over the other axes (mean final accuracy over seeds; best "
                                 "worst case first):",
                                 worst.rank_key);
    ranked.header = {worst.rank_key};
    ranked.header.insert(ranked.header.end(), worst.conditions.begin(), worst.conditions.end());
    ranked.header.insert(ranked.header.end(), {"mean", "worst case"});
    ranked.strong_column = static_cast<int>(ranked.header.size()) - 1;
    auto show = [](double v) { return std::isnan(v) ? std::string("–") : fmt::format("{:.4f}", v); };
    for (const auto& row : worst.rows) {
      std::vector<std::string> cells = {row.label};
      for (double v : row.accuracy) cells.push_back(show(v));
      cells.push_back(show(row.mean));
      cells.push_back(show(row.worst));
      ranked.rows.push_back(std::move(cells));
    }
    tables.push_back(std::move(ranked));
  }
  return tables;
}

namespace {

std::string markdown_table(const TextTable& table) {
  std::string out;
  if (!table.caption.empty()) out += "\n" + table.caption + "\n\n";
  std::vector<std::string> header, rule;
  for (std::size_t i = 0; i < table.header.size(); ++i) {
    header.push_back(markdown_cell(table.header[i]));
    rule.push_back(i < table.label_columns ? "---" : "---:");
  }
  out += fmt::format("| {} |\n|{}|\n", fmt::join(header, " | "), fmt::join(rule, "|"));
  for (const auto& row : table.rows) {
    std::vector<std::string> cells;
    for (std::size_t i = 0; i < row.size(); ++i) {
      cells.push_back(static_cast<int>(i) == table.strong_column ? "**" + markdown_cell(row[i]) + "**" : markdown_cell(row[i]));
    }
    out += fmt::format("| {} |\n", fmt::join(cells, " | "));
  }
  if (!table.note.empty()) out += "\n" + table.note + "\n";
  return out;
}

}  // namespace

std::string summary_markdown(const StudySummary& summary) {
  std::string out;
  for (const auto& table : summary_tables(summary)) out += markdown_table(table);
  return out;
}

ReportOutput write_report(const fs::path& study_dir, const ReportOptions& options) {
  ReportOutput output;
  output.summary = summarize_study(study_dir);
  const auto& summary = output.summary;
  const auto& manifest = summary.manifest;

  // summary.csv: one row per group, raw column names, mean and std side by side.
  std::vector<std::string> header;
  for (const auto& axis : manifest.axes) header.push_back(csv_field(axis.name()));
  header.insert(header.end(), {"group", "seeds_done", "seeds_total"});
  std::vector<std::string> metrics = {"final_accuracy", "best_accuracy"};
  metrics.insert(metrics.end(), summary.extra_columns.begin(), summary.extra_columns.end());
  metrics.push_back("wall_seconds");
  for (const auto& m : metrics) {
    header.push_back(m + "_mean");
    header.push_back(m + "_std");
  }
  std::string csv = fmt::format("{}\n", fmt::join(header, ","));
  for (const auto& group : summary.groups) {
    std::vector<std::string> fields;
    for (std::size_t a = 0; a < manifest.axes.size(); ++a) fields.push_back(csv_field(manifest.axes[a].labels[group.choice[a]]));
    fields.insert(fields.end(), {csv_field(group.group), std::to_string(group.seeds_done), std::to_string(group.seeds_total)});
    std::vector<Stat> stats = {group.final_accuracy, group.best_accuracy};
    for (const auto& [column, stat] : group.extras) stats.push_back(stat);
    stats.push_back(group.wall_seconds);
    for (const auto& s : stats) {
      fields.push_back(format_csv_number(s.mean));
      fields.push_back(format_csv_number(s.std));
    }
    csv += fmt::format("{}\n", fmt::join(fields, ","));
  }
  write_file_atomic(study_dir / "summary.csv", csv);

  const auto table = summary_markdown(summary);
  write_file_atomic(study_dir / "summary.md", table);

  output.notices = summary.problems;
  const auto figures = draw_study_figures(summary, worst_case_table(summary), study_dir / "figures", options.gnuplot,
                                          output.notices);
  for (const auto& file : figures.files) output.figures.push_back("figures/" + file);
  const auto& drawn = figures.drawn;
  std::string report = fmt::format("# Study report: {}\n\n", manifest.name);
  if (!manifest.file.empty()) report += fmt::format("Study file: `{}`  \n", manifest.file);
  report += fmt::format("Cells finished: {} of {}", summary.cells_done, manifest.cells.size());
  if (!manifest.axes.empty()) {
    std::vector<std::string> axes;
    for (const auto& axis : manifest.axes) axes.push_back(fmt::format("`{}` ({} values)", axis.name(), axis.labels.size()));
    report += fmt::format("  \nVaried: {}", fmt::join(axes, ", "));
  }
  report += "\n\n## Summary\n\n" + table + "\n";
  if (!drawn.empty()) {
    report += "## Figures\n\n";
    for (const auto& [stem, caption] : drawn) {
      report += fmt::format("![{}](figures/{}.png)\n\n{} [SVG](figures/{}.svg) · [gnuplot script](figures/{}.gp)\n\n",
                            stem, stem, caption, stem, stem);
    }
  } else if (!figures.gnuplot_found) {
    report += "## Figures\n\nNot drawn: gnuplot was not found. The scripts in `figures/` draw them.\n\n";
  }
  std::vector<ReportCell> cells;
  for (const auto& cell : manifest.cells) {
    const auto dir = study_dir / cell.dir;
    ReportCell row{cell.name, cell.seed, "pending", "–", cell.dir};
    if (fs::exists(dir / "summary.json")) {
      row.status = "finished";
      row.accuracy = fmt::format("{:.4f}", number(read_json(dir / "summary.json"), "final_test_accuracy"));
    } else if (fs::exists(dir / "metrics.csv")) {
      row.status = "interrupted or running";
    }
    cells.push_back(std::move(row));
  }
  report += "## Cells\n\n| cell | seed | status | final acc | folder |\n|---|---:|---|---:|---|\n";
  for (const auto& cell : cells) {
    report += fmt::format("| {} | {} | {} | {} | [{}]({}/) |\n", markdown_cell(cell.name), cell.seed, cell.status,
                          cell.accuracy, cell.dir, cell.dir);
  }
  report += "\nsummary.csv holds the summary table with full precision; each cell folder holds config.toml "
            "(the resolved configuration), metrics.csv and summary.json.\n";
  output.report = study_dir / "report.md";
  write_file_atomic(output.report, report);
  output.html = study_dir / "report.html";
  write_file_atomic(output.html, report_html(summary, figures, cells, study_dir));
  return output;
}

}  // namespace bulwark
