#pragma once

// report.html: a study's report as one self-contained page a person opens in a browser, offline —
// the summary tables, every figure inline as SVG, each cell's status and resolved configuration,
// and relative links to the CSV, JSONL and JSON files beside it. No scripts, no external files.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "report.hpp"
#include "report_figures.hpp"

namespace bulwark {

/// One line of the report's cell list.
struct ReportCell {
  std::string name;
  std::int64_t seed = 0;
  std::string status;    ///< finished, interrupted or running, pending
  std::string accuracy;  ///< final test accuracy as text, "–" when not finished
  std::string dir;       ///< relative to the study folder
};

/// The page for the study in `study_dir` (figures are read from its figures/ folder).
std::string report_html(const StudySummary& summary, const StudyFigures& figures, const std::vector<ReportCell>& cells,
                        const std::filesystem::path& study_dir);

}  // namespace bulwark
