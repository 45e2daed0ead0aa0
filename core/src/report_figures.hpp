#pragma once

// A study's figures (gnuplot): test accuracy per round, the worst-case heatmap, privacy-utility.
// Each is a script kept next to its PNG and SVG, so a figure can be restyled and redrawn by hand.
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "report.hpp"

namespace bulwark {

struct StudyFigures {
  std::vector<std::string> files;                           ///< images written, relative to the folder
  std::vector<std::pair<std::string, std::string>> drawn;  ///< (stem, caption) of each PNG drawn
  bool gnuplot_found = false;
};

/// Writes every figure's script into `dir` and draws it when gnuplot is found (`gnuplot`: its
/// path, empty = search PATH). Problems become `notices`, never errors: a report without figures
/// is still a report.
StudyFigures draw_study_figures(const StudySummary& summary, const WorstCaseTable& table,
                                const std::filesystem::path& dir, const std::string& gnuplot,
                                std::vector<std::string>& notices);

}  // namespace bulwark
