#include "report_figures.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (moved here in fmt 11)

#include "outputs.hpp"

namespace bulwark {

namespace fs = std::filesystem;

namespace {

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

StudyFigures draw_study_figures(const StudySummary& summary, const WorstCaseTable& table, const fs::path& dir,
                                const std::string& gnuplot, std::vector<std::string>& notices) {
  StudyFigures figures;
  Plotter plotter(dir, gnuplot);
  figures.gnuplot_found = plotter.available();
  if (!plotter.available()) {
    notices.push_back(fmt::format(
        "gnuplot not found: figures were not drawn (install gnuplot-nox, e.g. scripts/install-deps); the scripts "
        "in {} draw them later",
        dir.string()));
  }
  auto add = [&](const std::optional<Figure>& figure, const std::string& caption) {
    if (!figure) return;
    for (const auto& file : plotter.draw(*figure, notices)) {
      figures.files.push_back(file);
      if (file.size() > 4 && file.substr(file.size() - 4) == ".png") figures.drawn.emplace_back(file.substr(0, file.size() - 4), caption);
    }
  };
  add(accuracy_figure(summary, dir), "Test accuracy per round (mean over seeds; the band is ±1 sample standard deviation).");
  add(heatmap_figure(summary, table, dir),
      "Mean final test accuracy per ranked value and condition; the right column is the worst case.");
  add(privacy_figure(summary, dir), "Privacy–utility: ε spent against final test accuracy.");
  return figures;
}

}  // namespace bulwark
