#include "report_html.hpp"

#include <fmt/format.h>

#include "outputs.hpp"

namespace bulwark {

namespace fs = std::filesystem;

namespace {

std::string escaped(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

/// A relative link; '%' and the characters HTML treats specially are escaped (cell names hold '=').
std::string href(const std::string& path) {
  std::string out;
  for (char c : path) {
    if (c == '%' || c == '"' || c == '<' || c == '>' || c == ' ' || c == '#' || c == '?') {
      out += fmt::format("%{:02X}", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  return out;
}

std::string html_table(const TextTable& table) {
  std::string out;
  if (!table.caption.empty()) out += "<p>" + escaped(table.caption) + "</p>\n";
  out += "<table>\n<thead><tr>";
  for (std::size_t i = 0; i < table.header.size(); ++i) {
    out += fmt::format("<th{}>{}</th>", i < table.label_columns ? "" : " class=\"n\"", escaped(table.header[i]));
  }
  out += "</tr></thead>\n<tbody>\n";
  for (const auto& row : table.rows) {
    out += "<tr>";
    for (std::size_t i = 0; i < row.size(); ++i) {
      const auto text = static_cast<int>(i) == table.strong_column ? "<strong>" + escaped(row[i]) + "</strong>" : escaped(row[i]);
      out += fmt::format("<td{}>{}</td>", i < table.label_columns ? "" : " class=\"n\"", text);
    }
    out += "</tr>\n";
  }
  out += "</tbody>\n</table>\n";
  if (!table.note.empty()) out += "<p class=\"note\">" + escaped(table.note) + "</p>\n";
  return out;
}

/// A figure's SVG file as an element of the page (its XML prologue dropped).
std::string inline_svg(const fs::path& file) {
  const auto svg = read_whole_file(file);
  const auto start = svg.find("<svg");
  return start == std::string::npos ? std::string() : svg.substr(start);
}

constexpr const char* kStyle = R"(body { font-family: sans-serif; max-width: 75em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
th { background: #f2f2f2; }
.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.note { color: #555; font-size: 0.9em; }
figure { margin: 1.5em 0; }
figure svg { max-width: 100%; height: auto; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; }
)";

}  // namespace

std::string report_html(const StudySummary& summary, const StudyFigures& figures, const std::vector<ReportCell>& cells,
                        const fs::path& study_dir) {
  const auto& manifest = summary.manifest;
  std::string page = fmt::format("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                                 "<title>Study report: {0}</title>\n<style>\n{1}</style>\n</head>\n<body>\n"
                                 "<h1>Study report: {0}</h1>\n<p>",
                                 escaped(manifest.name), kStyle);
  if (!manifest.file.empty()) page += "Study file: <code>" + escaped(manifest.file) + "</code><br>\n";
  page += fmt::format("Cells finished: {} of {}", summary.cells_done, manifest.cells.size());
  for (std::size_t a = 0; a < manifest.axes.size(); ++a) {
    page += fmt::format("{}<code>{}</code> ({} values)", a == 0 ? "<br>\nVaried: " : ", ",
                        escaped(manifest.axes[a].name()), manifest.axes[a].labels.size());
  }
  page += "</p>\n\n<h2 id=\"summary\">Summary</h2>\n";
  for (const auto& table : summary_tables(summary)) page += html_table(table);
  page += "<p>Files: <a href=\"summary.csv\">summary.csv</a> (full precision), <a href=\"summary.md\">summary.md</a>, "
          "<a href=\"report.md\">report.md</a>, <a href=\"study.json\">study.json</a></p>\n";

  page += "\n<h2 id=\"figures\">Figures</h2>\n";
  if (figures.drawn.empty()) {
    page += figures.gnuplot_found ? "<p>No figure applies to this study.</p>\n"
                                  : "<p>Not drawn: gnuplot was not found. The scripts in <code>figures/</code> draw them.</p>\n";
  }
  for (const auto& [stem, caption] : figures.drawn) {
    page += fmt::format("<figure id=\"{0}\">\n{1}\n<figcaption>{2} <a href=\"figures/{0}.svg\">SVG</a> · "
                        "<a href=\"figures/{0}.png\">PNG</a> · <a href=\"figures/{0}.gp\">gnuplot script</a></figcaption>\n"
                        "</figure>\n",
                        href(stem), inline_svg(study_dir / "figures" / (stem + ".svg")), escaped(caption));
  }

  page += "\n<h2 id=\"cells\">Cells</h2>\n<table>\n<thead><tr><th>cell</th><th class=\"n\">seed</th><th>status</th>"
          "<th class=\"n\">final acc</th><th>files</th></tr></thead>\n<tbody>\n";
  for (const auto& cell : cells) {
    std::string files;
    for (const char* file : {"config.toml", "metrics.csv", "metrics.jsonl", "summary.json"}) {
      if (fs::exists(study_dir / cell.dir / file)) {
        files += fmt::format("{}<a href=\"{}/{}\">{}</a>", files.empty() ? "" : " ", href(cell.dir), file, file);
      }
    }
    page += fmt::format("<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>\n",
                        escaped(cell.name), cell.seed, escaped(cell.status), escaped(cell.accuracy), files);
  }
  page += "</tbody>\n</table>\n\n<h2 id=\"configurations\">Configurations</h2>\n";
  for (const auto& cell : cells) {
    const auto config = study_dir / cell.dir / "config.toml";
    if (!fs::exists(config)) continue;
    page += fmt::format("<details>\n<summary>{}</summary>\n<pre>{}</pre>\n</details>\n", escaped(cell.name),
                        escaped(read_whole_file(config)));
  }
  page += "</body>\n</html>\n";
  return page;
}

}  // namespace bulwark
