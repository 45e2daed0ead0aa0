// Study reports: a table over cells grouped by everything but the seed, the worst-case view that
// robustness papers rank defences by, and gnuplot figures. Everything is computed from files on
// disk (study.json, each cell's summary.json and metrics.csv), so `bulwark report` works while a
// study runs, after it, and on a copied folder.
#include "report.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <numeric>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (moved here in fmt 11)
#include <nlohmann/json.hpp>

#include "bulwark/error.hpp"
#include "outputs.hpp"

namespace bulwark {

namespace fs = std::filesystem;

namespace {

const double kNaN = std::nan("");

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::Data, "error: cannot read " + path.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

nlohmann::json read_json(const fs::path& path) {
  try {
    return nlohmann::json::parse(read_text(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::Data, "error: " + path.string() + " is not valid JSON: " + e.what());
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
  return column;
}

std::string format_stat(const Stat& s, int decimals) {
  if (s.n == 0) return "–";
  if (std::isnan(s.std)) return fmt::format("{:.{}f}", s.mean, decimals);
  return fmt::format("{:.{}f} ± {:.{}f}", s.mean, decimals, s.std, decimals);
}

int decimals_of(const std::string& column) { return column.rfind("epsilon", 0) == 0 ? 3 : 4; }

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

std::string gnuplot_string(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
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

Table read_metrics(const fs::path& path) {
  Table table;
  std::stringstream in(read_text(path));
  std::string line;
  if (!std::getline(in, line)) return table;
  table.columns = split_csv_line(line);
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto fields = split_csv_line(line);
    std::vector<double> row(table.columns.size(), kNaN);
    for (std::size_t i = 0; i < fields.size() && i < row.size(); ++i) {
      if (!fields[i].empty()) row[i] = std::strtod(fields[i].c_str(), nullptr);
    }
    table.rows.push_back(std::move(row));
  }
  return table;
}

/// The condition a group is tested under: its values of every axis but the ranked one.
std::string condition_of(const StudyManifest& manifest, const std::vector<std::size_t>& choice) {
  std::vector<std::string> parts;
  for (std::size_t a = 0; a < manifest.axes.size(); ++a) {
    if (a == manifest.rank_axis) continue;
    parts.push_back(manifest.axes[a].name() + "=" + manifest.axes[a].labels[choice[a]]);
  }
  return fmt::format("{}", fmt::join(parts, ", "));
}

/// With one other axis, tick labels drop the key (it becomes the axis title).
std::string short_condition(const StudyManifest& manifest, const std::vector<std::size_t>& choice) {
  if (manifest.axes.size() != 2) return condition_of(manifest, choice);
  const auto other = manifest.rank_axis == 0 ? 1 : 0;
  return manifest.axes[other].labels[choice[other]];
}

// ---- gnuplot ---------------------------------------------------------------------------------

std::string find_on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    auto candidate = fs::path(dir.empty() ? "." : dir) / program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return "";
}

/// Runs a shell command; returns (exit code, stdout+stderr).
std::pair<int, std::string> run_command(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return {-1, "cannot start a shell"};
  std::array<char, 4096> buffer{};
  std::size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

/// One figure: a gnuplot script drawing `body` once into a PNG and once into an SVG. The script
/// is kept next to the images so a figure can be restyled for a paper and redrawn by hand.
struct Figure {
  std::string stem, title;
  int width = 640, height = 440;
  std::string body;
};

class Plotter {
 public:
  Plotter(fs::path dir, std::string gnuplot) : dir_(std::move(dir)), gnuplot_(std::move(gnuplot)) {
    if (gnuplot_.empty()) gnuplot_ = find_on_path("gnuplot");
    if (!gnuplot_.empty() && ::access(gnuplot_.c_str(), X_OK) != 0) gnuplot_.clear();
    // Debian's gnuplot-nox has pngcairo; other builds may only have libgd's png.
    png_terminal_ = "pngcairo";
    if (!gnuplot_.empty() && run_command(shell_quote(gnuplot_) + " -e 'set terminal pngcairo'").first != 0) {
      png_terminal_ = "png";
    }
  }

  bool available() const { return !gnuplot_.empty(); }

  /// Writes the script; draws it when gnuplot is available. Returns the images written
  /// (relative to the figures folder) or a notice in `notices`.
  std::vector<std::string> draw(const Figure& figure, std::vector<std::string>& notices) {
    const auto size = fmt::format("size {},{}", figure.width, figure.height);
    std::string script = fmt::format(
        "# {}\n# Drawn by `bulwark report`; run `gnuplot {}.gp` in this folder to redraw.\n"
        "if (!exists(\"png_file\")) png_file = \"{}.png\"\n"
        "if (!exists(\"svg_file\")) svg_file = \"{}.svg\"\n",
        figure.title, figure.stem, figure.stem, figure.stem);
    script += fmt::format("set terminal {} {} noenhanced font \",10\"\nset output png_file\n{}\n", png_terminal_, size,
                          figure.body);
    script += fmt::format("reset\nset terminal svg {} noenhanced font \",10\"\nset output svg_file\n{}\nset output\n",
                          size, figure.body);
    write_file_atomic(dir_ / (figure.stem + ".gp"), script);
    if (!available()) return {};

    // gnuplot writes partial files while drawing: draw into hidden names, rename when done.
    const auto png_part = "." + figure.stem + ".png.part", svg_part = "." + figure.stem + ".svg.part";
    const auto [code, output] = run_command(fmt::format("cd {} && {} -e \"png_file='{}'; svg_file='{}'\" {}.gp",
                                                        shell_quote(dir_.string()), shell_quote(gnuplot_), png_part,
                                                        svg_part, figure.stem));
    std::error_code ec;
    if (code != 0 || !fs::exists(dir_ / png_part) || !fs::exists(dir_ / svg_part)) {
      fs::remove(dir_ / png_part, ec);
      fs::remove(dir_ / svg_part, ec);
      notices.push_back(fmt::format("gnuplot failed on {}: {}", (dir_ / (figure.stem + ".gp")).string(),
                                    output.substr(0, 400)));
      return {};
    }
    fs::rename(dir_ / png_part, dir_ / (figure.stem + ".png"));
    fs::rename(dir_ / svg_part, dir_ / (figure.stem + ".svg"));
    return {figure.stem + ".png", figure.stem + ".svg"};
  }

 private:
  fs::path dir_;
  std::string gnuplot_;
  std::string png_terminal_;
};

std::string label_of(const StudyManifest& manifest, const GroupSummary& group) {
  if (manifest.axes.empty()) return "all";
  std::vector<std::string> parts;
  for (std::size_t a = 0; a < manifest.axes.size(); ++a) parts.push_back(manifest.axes[a].labels[group.choice[a]]);
  return fmt::format("{}", fmt::join(parts, ", "));
}

/// Test accuracy against round: a panel per condition, a line per value of the ranked axis (mean
/// over seeds) with a ±1 std band.
std::optional<Figure> accuracy_figure(const StudySummary& summary, const fs::path& dir) {
  const auto& manifest = summary.manifest;
  std::vector<std::string> panels;
  std::map<std::string, std::vector<std::size_t>> members;
  for (std::size_t g = 0; g < summary.groups.size(); ++g) {
    const auto& group = summary.groups[g];
    if (group.rounds.empty()) continue;
    const auto panel = manifest.axes.size() > 1 ? condition_of(manifest, group.choice) : std::string();
    if (!members.count(panel)) panels.push_back(panel);
    members[panel].push_back(g);
    std::string data = "# round  mean  mean-std  mean+std   (test accuracy over seeds)\n";
    for (std::size_t i = 0; i < group.rounds.size(); ++i) {
      const double band = std::isnan(group.curve_std[i]) ? 0.0 : group.curve_std[i];
      data += fmt::format("{} {} {} {}\n", group.rounds[i], group.curve_mean[i], group.curve_mean[i] - band,
                          group.curve_mean[i] + band);
    }
    write_file_atomic(dir / "data" / fmt::format("accuracy_{}.dat", g), data);
  }
  if (panels.empty()) return std::nullopt;

  Figure figure;
  figure.stem = "accuracy";
  figure.title = "Test accuracy per round: mean over seeds, band = ±1 sample std";
  const int columns = static_cast<int>(std::min<std::size_t>(panels.size(), 3));
  const int rows = static_cast<int>((panels.size() + columns - 1) / columns);
  figure.width = 560 * columns;
  figure.height = 420 * rows;
  std::string& body = figure.body;
  if (panels.size() > 1) body += fmt::format("set multiplot layout {},{} title {}\n", rows, columns, gnuplot_string(manifest.name));
  body += "set style fill transparent solid 0.15 noborder\nset grid\nset xlabel \"round\"\n"
          "set ylabel \"test accuracy\"\nset yrange [0:1]\nset key top left font \",8\"\n";
  for (const auto& panel : panels) {
    body += fmt::format("set title {}\n", gnuplot_string(panels.size() > 1 ? panel : manifest.name));
    std::vector<std::string> plots;
    for (auto g : members[panel]) {
      const auto& group = summary.groups[g];
      const int color = manifest.axes.empty() ? 1 : static_cast<int>(group.choice[manifest.rank_axis]) + 1;
      const auto title = manifest.axes.empty()                 ? std::string("all")
                         : manifest.axes.size() > 1            ? manifest.axes[manifest.rank_axis].labels[group.choice[manifest.rank_axis]]
                                                               : label_of(manifest, group);
      const auto file = gnuplot_string(fmt::format("data/accuracy_{}.dat", g));
      plots.push_back(fmt::format("{} using 1:3:4 with filledcurves lc {} notitle", file, color));
      plots.push_back(fmt::format("{} using 1:2 with linespoints lc {} pt 7 ps 0.5 title {}", file, color,
                                  gnuplot_string(title)));
    }
    body += fmt::format("plot {}\n", fmt::join(plots, ", \\\n     "));
  }
  if (panels.size() > 1) body += "unset multiplot\n";
  return figure;
}

/// Rank × condition heatmap of mean final accuracy, with the worst-case column at the right.
std::optional<Figure> heatmap_figure(const StudySummary& summary, const WorstCaseTable& table, const fs::path& dir) {
  if (table.rows.empty()) return std::nullopt;
  const auto& manifest = summary.manifest;
  std::vector<std::string> short_conditions(table.conditions.size());
  for (const auto& group : summary.groups) {
    const auto full = condition_of(manifest, group.choice);
    for (std::size_t c = 0; c < table.conditions.size(); ++c) {
      if (table.conditions[c] == full) short_conditions[c] = short_condition(manifest, group.choice);
    }
  }
  std::string data = "# condition  rank  mean final accuracy (last column: worst case)\n";
  bool any = false;
  for (std::size_t r = 0; r < table.rows.size(); ++r) {
    const auto& row = table.rows[r];
    for (std::size_t c = 0; c < row.accuracy.size(); ++c) {
      if (std::isnan(row.accuracy[c])) continue;
      data += fmt::format("{} {} {}\n", c, r, row.accuracy[c]);
      any = true;
    }
    if (!std::isnan(row.worst)) data += fmt::format("{} {} {}\n", row.accuracy.size(), r, row.worst);
  }
  if (!any) return std::nullopt;
  write_file_atomic(dir / "data" / "heatmap.dat", data);

  const auto columns = table.conditions.size() + 1;
  std::vector<std::string> xtics, ytics;
  for (std::size_t c = 0; c < table.conditions.size(); ++c) xtics.push_back(fmt::format("{} {}", gnuplot_string(short_conditions[c]), c));
  xtics.push_back(fmt::format("\"worst case\" {}", table.conditions.size()));
  for (std::size_t r = 0; r < table.rows.size(); ++r) ytics.push_back(fmt::format("{} {}", gnuplot_string(table.rows[r].label), r));

  Figure figure;
  figure.stem = "heatmap";
  figure.title = "Mean final test accuracy per (ranked value, condition); rows sorted by worst case";
  figure.width = static_cast<int>(260 + 120 * columns);
  figure.height = static_cast<int>(200 + 42 * table.rows.size());
  std::string xlabel = manifest.axes.size() == 2 ? manifest.axes[manifest.rank_axis == 0 ? 1 : 0].name() : "condition";
  figure.body = fmt::format(
      "set title {}\nset xlabel {}\nset ylabel {}\n"
      "set xtics ({}) rotate by 30 right\nset ytics ({})\n"
      "set xrange [-0.5:{}]\nset yrange [{}:-0.5]\nset cbrange [0:1]\nset cblabel \"final test accuracy\"\n"
      "set palette defined (0 \"#d73027\", 0.5 \"#fee08b\", 1 \"#1a9850\")\n"
      "set arrow from {},graph 0 to {},graph 1 nohead lw 2 front\n"
      "plot \"data/heatmap.dat\" using 1:2:(0.5):(0.5):3 with boxxyerror fc palette fs solid 1.0 noborder notitle, \\\n"
      "     \"data/heatmap.dat\" using 1:2:(sprintf(\"%.3f\", $3)) with labels notitle\n",
      gnuplot_string(manifest.name), gnuplot_string(xlabel), gnuplot_string(table.rank_key), fmt::join(xtics, ", "),
      fmt::join(ytics, ", "), static_cast<double>(columns) - 0.5, static_cast<double>(table.rows.size()) - 0.5,
      static_cast<double>(columns) - 1.5, static_cast<double>(columns) - 1.5);
  return figure;
}

/// ε spent against final accuracy, one point per group, when a privacy key varies.
std::optional<Figure> privacy_figure(const StudySummary& summary, const fs::path& dir) {
  const auto& manifest = summary.manifest;
  bool privacy_varies = false;
  for (const auto& axis : manifest.axes) {
    for (const auto& key : axis.keys) privacy_varies |= key.rfind("privacy", 0) == 0;
  }
  auto epsilon = std::find_if(summary.extra_columns.begin(), summary.extra_columns.end(),
                              [](const std::string& c) { return c.rfind("epsilon", 0) == 0; });
  if (!privacy_varies || epsilon == summary.extra_columns.end()) return std::nullopt;
  const auto column = static_cast<std::size_t>(epsilon - summary.extra_columns.begin());

  std::string data = "# epsilon  mean final accuracy  std  label\n";
  bool any = false;
  for (const auto& group : summary.groups) {
    const auto& eps = group.extras[column].second;
    if (eps.n == 0 || group.final_accuracy.n == 0) continue;
    std::string label = label_of(manifest, group);
    std::replace(label.begin(), label.end(), '"', '\'');
    data += fmt::format("{} {} {} \"{}\"\n", eps.mean, group.final_accuracy.mean,
                        std::isnan(group.final_accuracy.std) ? 0.0 : group.final_accuracy.std, label);
    any = true;
  }
  if (!any) return std::nullopt;
  write_file_atomic(dir / "data" / "privacy_utility.dat", data);
  Figure figure;
  figure.stem = "privacy_utility";
  figure.title = "Privacy-utility: ε spent against final test accuracy (mean ± sample std over seeds)";
  figure.body = fmt::format(
      "set title {}\nset grid\nset offsets graph 0.08, graph 0.08, 0, 0\nset xlabel {}\nset ylabel \"final test accuracy\"\nset yrange [0:1]\n"
      "plot \"data/privacy_utility.dat\" using 1:2:3 with yerrorbars pt 7 lc 1 notitle, \\\n"
      "     \"data/privacy_utility.dat\" using 1:2:4 with labels offset char 0,1 font \",8\" notitle\n",
      gnuplot_string(manifest.name), gnuplot_string("ε spent (" + summary.extra_columns[column] + ")"));
  return figure;
}

}  // namespace

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
      throw Error(ErrorKind::Data, "error: " + (dir / "study.json").string() + " is malformed: " + e.what());
    }
    for (const auto& cell : manifest.cells) {
      if (cell.choice.size() != manifest.axes.size()) {
        throw Error(ErrorKind::Data, "error: " + (dir / "study.json").string() + " is malformed: cell '" + cell.name +
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
  throw Error(ErrorKind::Config, "error: " + dir.string() +
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
  if (!fs::exists(run_dir / "metrics.csv")) return record;
  const auto metrics = read_metrics(run_dir / "metrics.csv");
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

std::string summary_markdown(const StudySummary& summary) {
  const auto& manifest = summary.manifest;
  std::vector<std::string> header, rule;
  for (const auto& axis : manifest.axes) header.push_back(markdown_cell(axis.name()));
  if (manifest.axes.empty()) header.push_back("cells");
  header.insert(header.end(), {"seeds", "final acc", "best acc"});
  for (const auto& column : summary.extra_columns) header.push_back(markdown_cell(pretty(column)));
  header.push_back("wall time (s)");
  for (std::size_t i = 0; i < header.size(); ++i) rule.push_back(i < std::max<std::size_t>(manifest.axes.size(), 1) ? "---" : "---:");

  std::string out = fmt::format("| {} |\n|{}|\n", fmt::join(header, " | "), fmt::join(rule, "|"));
  for (const auto& group : summary.groups) {
    std::vector<std::string> cells;
    for (std::size_t a = 0; a < manifest.axes.size(); ++a) cells.push_back(markdown_cell(manifest.axes[a].labels[group.choice[a]]));
    if (manifest.axes.empty()) cells.push_back("all");
    cells.push_back(fmt::format("{}/{}", group.seeds_done, group.seeds_total));
    cells.push_back(format_stat(group.final_accuracy, 4));
    cells.push_back(format_stat(group.best_accuracy, 4));
    for (const auto& [column, stat] : group.extras) cells.push_back(format_stat(stat, decimals_of(column)));
    cells.push_back(format_stat(group.wall_seconds, 1));
    out += fmt::format("| {} |\n", fmt::join(cells, " | "));
  }
  out += "\nValues are mean ± sample standard deviation (n − 1 denominator) over the seeds that finished "
         "(no ± with one seed). Final = the last evaluation, best = the highest evaluation of a run";
  if (std::any_of(summary.extra_columns.begin(), summary.extra_columns.end(),
                  [](const std::string& c) { return c.rfind("epsilon", 0) == 0; })) {
    out += "; ε = the privacy spent by the end of the run";
  }
  if (std::any_of(summary.extra_columns.begin(), summary.extra_columns.end(),
                  [](const std::string& c) { return c.rfind("backdoor", 0) == 0; })) {
    out += "; backdoor acc = the last measured backdoor accuracy";
  }
  if (std::any_of(summary.extra_columns.begin(), summary.extra_columns.end(),
                  [](const std::string& c) { return c.rfind("detection", 0) == 0; })) {
    out += "; detection precision/recall = a run's mean over the rounds where defined";
  }
  out += ".\n";

  const auto worst = worst_case_table(summary);
  if (!worst.rows.empty()) {
    std::vector<std::string> h = {markdown_cell(worst.rank_key)};
    for (const auto& c : worst.conditions) h.push_back(markdown_cell(c));
    h.insert(h.end(), {"mean", "worst case"});
    std::vector<std::string> r(h.size(), "---:");
    r[0] = "---";
    out += fmt::format("\nWorst case of each {} over the other axes (mean final accuracy over seeds; best worst "
                       "case first):\n\n| {} |\n|{}|\n",
                       markdown_cell(worst.rank_key), fmt::join(h, " | "), fmt::join(r, "|"));
    auto show = [](double v) { return std::isnan(v) ? std::string("–") : fmt::format("{:.4f}", v); };
    for (const auto& row : worst.rows) {
      std::vector<std::string> cells = {markdown_cell(row.label)};
      for (double v : row.accuracy) cells.push_back(show(v));
      cells.push_back(show(row.mean));
      cells.push_back("**" + show(row.worst) + "**");
      out += fmt::format("| {} |\n", fmt::join(cells, " | "));
    }
  }
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

  const auto figures_dir = study_dir / "figures";
  Plotter plotter(figures_dir, options.gnuplot);
  if (!plotter.available()) {
    output.notices.push_back(fmt::format(
        "gnuplot not found: figures were not drawn (install gnuplot-nox, e.g. scripts/install-deps); the scripts "
        "in {} draw them later",
        figures_dir.string()));
  }
  const auto worst = worst_case_table(summary);
  std::vector<std::pair<std::string, std::string>> drawn;  // (file, caption)
  auto add = [&](const std::optional<Figure>& figure, const std::string& caption) {
    if (!figure) return;
    for (const auto& file : plotter.draw(*figure, output.notices)) {
      output.figures.push_back("figures/" + file);
      if (file.size() > 4 && file.substr(file.size() - 4) == ".png") drawn.emplace_back(file.substr(0, file.size() - 4), caption);
    }
  };
  add(accuracy_figure(summary, figures_dir),
      "Test accuracy per round (mean over seeds; the band is ±1 sample standard deviation).");
  add(heatmap_figure(summary, worst, figures_dir),
      "Mean final test accuracy per ranked value and condition; the right column is the worst case.");
  add(privacy_figure(summary, figures_dir), "Privacy–utility: ε spent against final test accuracy.");

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
  } else if (!plotter.available()) {
    report += "## Figures\n\nNot drawn: gnuplot was not found. The scripts in `figures/` draw them.\n\n";
  }
  report += "## Cells\n\n| cell | seed | status | final acc | folder |\n|---|---:|---|---:|---|\n";
  for (const auto& cell : manifest.cells) {
    const auto dir = study_dir / cell.dir;
    std::string status = "pending", accuracy = "–";
    if (fs::exists(dir / "summary.json")) {
      status = "finished";
      accuracy = fmt::format("{:.4f}", number(read_json(dir / "summary.json"), "final_test_accuracy"));
    } else if (fs::exists(dir / "metrics.csv")) {
      status = "interrupted or running";
    }
    report += fmt::format("| {} | {} | {} | {} | [{}]({}/) |\n", markdown_cell(cell.name), cell.seed, status, accuracy,
                          cell.dir, cell.dir);
  }
  report += "\nsummary.csv holds the summary table with full precision; each cell folder holds config.toml "
            "(the resolved configuration), metrics.csv and summary.json.\n";
  output.report = study_dir / "report.md";
  write_file_atomic(output.report, report);
  return output;
}

}  // namespace bulwark
