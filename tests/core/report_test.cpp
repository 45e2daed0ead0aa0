// Study reports: statistics over seeds against hand-computed values, the worst-case table, the
// files written, and gnuplot figures (when gnuplot is installed).
#include <doctest/doctest.h>

#include <cmath>

#include <fmt/format.h>

#include "bulwark/error.hpp"
#include "report.hpp"
#include "test_support.hpp"

using namespace bulwark;
namespace fs = std::filesystem;

namespace {

void write_run(const fs::path& dir, double final_accuracy, double best_accuracy, double wall, const std::string& csv) {
  test::write_file(dir / "summary.json", fmt::format("{{\"name\": \"x\", \"final_test_accuracy\": {}, \"best_test_accuracy\": {}, "
                                                     "\"wall_seconds\": {}}}\n",
                                                     final_accuracy, best_accuracy, wall));
  test::write_file(dir / "metrics.csv", csv);
}

/// aggregator {fedavg, median} × attack {sign_flip, label_flip} × seeds {1, 2, 3}; some cells
/// unfinished. The numbers are the ones the expected values below are computed from.
fs::path make_study(const std::string& name, std::size_t rank_axis = 0) {
  auto dir = test::scratch_dir(name);
  StudyManifest manifest;
  manifest.name = "toy";
  manifest.file = "toy.toml";
  manifest.rank_axis = rank_axis;
  manifest.axes = {{{"aggregator.plugin"}, {"fedavg", "median"}}, {{"attack.plugin"}, {"sign_flip", "label_flip"}}};
  for (std::size_t a = 0; a < 2; ++a) {
    for (std::size_t b = 0; b < 2; ++b) {
      const auto group = "aggregator.plugin=" + manifest.axes[0].labels[a] + "__attack.plugin=" + manifest.axes[1].labels[b];
      for (int seed = 1; seed <= 3; ++seed) {
        const auto cell = group + "__seed=" + std::to_string(seed);
        manifest.cells.push_back({cell, group, {a, b}, seed, "cells/" + cell});
      }
    }
  }
  write_manifest(dir, manifest);
  const std::string header = "round,test_accuracy,epsilon,backdoor_accuracy,detection_precision,detection_recall,time_round\n";
  // fedavg × sign_flip, three seeds.
  write_run(dir / manifest.cells[0].dir, 0.80, 0.85, 10, header + "1,0.5,0.5,0.9,1,0.5,3\n2,0.8,1,,,1,3\n");
  write_run(dir / manifest.cells[1].dir, 0.82, 0.82, 12, header + "1,0.6,0.5,0.7,0.5,0.5,3\n2,0.82,1.2,0.8,0.5,0.5,3\n");
  write_run(dir / manifest.cells[2].dir, 0.90, 0.90, 14, header + "1,0.7,0.5,0.5,0,0,3\n2,0.9,1.4,0.6,,,3\n");
  // fedavg × label_flip: one seed finished, one still running (metrics, no summary.json).
  write_run(dir / manifest.cells[3].dir, 0.70, 0.70, 5, "round,test_accuracy\n1,0.7\n");
  test::write_file(dir / manifest.cells[4].dir / "metrics.csv", "round,test_accuracy\n1,0.1\n");
  // median × sign_flip: three equal seeds; median × label_flip: one seed.
  for (int i = 6; i < 9; ++i) write_run(dir / manifest.cells[i].dir, 0.75, 0.75, 4, "round,test_accuracy\n1,0.75\n");
  write_run(dir / manifest.cells[9].dir, 0.60, 0.65, 4, "round,test_accuracy\n1,0.6\n");
  return dir;
}

bool gnuplot_missing(const ReportOutput& output) {
  return std::any_of(output.notices.begin(), output.notices.end(),
                     [](const std::string& n) { return n.find("gnuplot not found") != std::string::npos; });
}

}  // namespace

TEST_CASE("mean_std: sample standard deviation (n - 1) over finite values") {
  auto s = mean_std({1, 2, 3, 4});
  CHECK(s.n == 4);
  CHECK(s.mean == doctest::Approx(2.5));
  CHECK(s.std == doctest::Approx(std::sqrt(5.0 / 3.0)));  // (2.25 + 0.25 + 0.25 + 2.25) / 3
  auto one = mean_std({std::nan(""), 2});
  CHECK(one.n == 1);
  CHECK(one.mean == 2);
  CHECK(std::isnan(one.std));
  CHECK(std::isnan(mean_std({}).mean));
}

TEST_CASE("the summary groups cells by everything but the seed, with hand-computed statistics") {
  auto summary = summarize_study(make_study("report_stats"));
  CHECK(summary.cells_done == 8);
  REQUIRE(summary.groups.size() == 4);
  CHECK(summary.extra_columns ==
        std::vector<std::string>{"epsilon", "backdoor_accuracy", "detection_precision", "detection_recall"});

  const auto& g = summary.groups[0];  // fedavg × sign_flip
  CHECK(g.seeds_done == 3);
  CHECK(g.seeds_total == 3);
  // final: 0.80, 0.82, 0.90 -> mean 0.84; squared deviations 0.0016 + 0.0004 + 0.0036 = 0.0056 -> std sqrt(0.0028)
  CHECK(g.final_accuracy.mean == doctest::Approx(0.84));
  CHECK(g.final_accuracy.std == doctest::Approx(std::sqrt(0.0028)));
  // best: 0.85, 0.82, 0.90 -> mean 0.856667, std sqrt(0.0032667 / 2) = 0.0404145
  CHECK(g.best_accuracy.mean == doctest::Approx(0.8566667));
  CHECK(g.best_accuracy.std == doctest::Approx(0.0404145).epsilon(1e-5));
  // ε: the last value of each run, 1.0, 1.2, 1.4 -> 1.2 ± 0.2
  CHECK(g.extras[0].second.mean == doctest::Approx(1.2));
  CHECK(g.extras[0].second.std == doctest::Approx(0.2));
  // backdoor accuracy: the last measured value, 0.9 (round 2 empty), 0.8, 0.6 -> 0.766667 ± 0.152753
  CHECK(g.extras[1].second.mean == doctest::Approx(0.7666667));
  CHECK(g.extras[1].second.std == doctest::Approx(0.1527525).epsilon(1e-5));
  // detection precision, a run's mean over defined rounds: 1.0, 0.5, 0.0 -> 0.5 ± 0.5
  CHECK(g.extras[2].second.mean == doctest::Approx(0.5));
  CHECK(g.extras[2].second.std == doctest::Approx(0.5));
  // detection recall: 0.75, 0.5, 0 -> 0.416667 ± sqrt(0.291667 / 2) = 0.381881
  CHECK(g.extras[3].second.mean == doctest::Approx(0.4166667));
  CHECK(g.extras[3].second.std == doctest::Approx(0.3818813).epsilon(1e-5));
  CHECK(g.wall_seconds.mean == doctest::Approx(12));
  CHECK(g.wall_seconds.std == doctest::Approx(2));
  // curve: round 1 0.5, 0.6, 0.7 -> 0.6 ± 0.1; round 2 -> 0.84 ± sqrt(0.0028)
  REQUIRE(g.rounds == std::vector<double>{1, 2});
  CHECK(g.curve_mean[0] == doctest::Approx(0.6));
  CHECK(g.curve_std[0] == doctest::Approx(0.1));
  CHECK(g.curve_std[1] == doctest::Approx(std::sqrt(0.0028)));

  const auto& partial = summary.groups[1];  // fedavg × label_flip: one of three finished
  CHECK(partial.seeds_done == 1);
  CHECK(partial.final_accuracy.mean == doctest::Approx(0.70));
  CHECK(std::isnan(partial.final_accuracy.std));
  CHECK(partial.extras[0].second.n == 0);  // no epsilon column in that run
  CHECK(summary.groups[2].final_accuracy.std == 0.0);

  const auto table = summary_markdown(summary);
  INFO(table);
  CHECK(table.find("| aggregator.plugin | attack.plugin | seeds | final acc | best acc | ε | backdoor acc | "
                   "detection precision | detection recall | wall time (s) |") != std::string::npos);
  CHECK(table.find("| fedavg | sign_flip | 3/3 | 0.8400 ± 0.0529 | 0.8567 ± 0.0404 | 1.200 ± 0.200 | 0.7667 ± 0.1528 | "
                   "0.5000 ± 0.5000 | 0.4167 ± 0.3819 | 12.0 ± 2.0 |") != std::string::npos);
  CHECK(table.find("| fedavg | label_flip | 1/3 | 0.7000 | 0.7000 | – | – | – | – | 5.0 |") != std::string::npos);
  CHECK(table.find("sample standard deviation (n − 1 denominator)") != std::string::npos);
}

TEST_CASE("worst case: each ranked value's lowest accuracy over the other axis, best first") {
  auto summary = summarize_study(make_study("report_worst"));
  auto table = worst_case_table(summary);
  CHECK(table.rank_key == "aggregator.plugin");
  CHECK(table.conditions == std::vector<std::string>{"attack.plugin=sign_flip", "attack.plugin=label_flip"});
  REQUIRE(table.rows.size() == 2);
  // fedavg: min(0.84, 0.70) = 0.70; median: min(0.75, 0.60) = 0.60 -> fedavg ranks first.
  CHECK(table.rows[0].label == "fedavg");
  CHECK(table.rows[0].worst == doctest::Approx(0.70));
  CHECK(table.rows[0].worst_condition == "attack.plugin=label_flip");
  CHECK(table.rows[0].mean == doctest::Approx(0.77));
  CHECK(table.rows[1].label == "median");
  CHECK(table.rows[1].worst == doctest::Approx(0.60));
  CHECK(summary_markdown(summary).find("| fedavg | 0.8400 | 0.7000 | 0.7700 | **0.7000** |") != std::string::npos);

  // rank_by the attack instead: sign_flip's worst is median's 0.75, label_flip's 0.60.
  auto by_attack = worst_case_table(summarize_study(make_study("report_worst_attack", 1)));
  CHECK(by_attack.rank_key == "attack.plugin");
  CHECK(by_attack.rows[0].label == "sign_flip");
  CHECK(by_attack.rows[0].worst == doctest::Approx(0.75));
}

TEST_CASE("write_report writes summary.csv, summary.md, report.md and report.html, figures are PNG and SVG") {
  auto dir = make_study("report_files");
  auto output = write_report(dir);
  auto csv = test::read_file(dir / "summary.csv");
  CHECK(csv.rfind("aggregator.plugin,attack.plugin,group,seeds_done,seeds_total,final_accuracy_mean,final_accuracy_std,"
                  "best_accuracy_mean,best_accuracy_std,epsilon_mean,epsilon_std,",
                  0) == 0);
  CHECK(csv.find("\nfedavg,label_flip,aggregator.plugin=fedavg__attack.plugin=label_flip,1,3,0.7,,0.7,,") != std::string::npos);
  CHECK(test::read_file(dir / "summary.md") == summary_markdown(output.summary));
  auto report = test::read_file(dir / "report.md");
  CHECK(report.find("Cells finished: 8 of 12") != std::string::npos);
  CHECK(report.find("interrupted or running") != std::string::npos);
  CHECK(fs::exists(dir / "figures" / "accuracy.gp"));
  CHECK(fs::exists(dir / "figures" / "heatmap.gp"));

  if (gnuplot_missing(output)) {
    MESSAGE("gnuplot is not installed: figures not checked (scripts/install-deps installs gnuplot-nox)");
  } else {
    CHECK(output.notices.empty());
    CHECK(output.figures == std::vector<std::string>{"figures/accuracy.png", "figures/accuracy.svg",
                                                     "figures/heatmap.png", "figures/heatmap.svg"});
    for (const char* png : {"accuracy.png", "heatmap.png"}) {
      CHECK(test::read_file(dir / "figures" / png).rfind("\x89PNG\r\n\x1a\n", 0) == 0);
    }
    CHECK(test::read_file(dir / "figures" / "heatmap.svg").find("<svg") != std::string::npos);
    CHECK(report.find("![accuracy](figures/accuracy.png)") != std::string::npos);
    // report.html carries both figures inline (the SVG elements, not links to them).
    const auto html = test::read_file(output.html);
    std::size_t inline_svgs = 0;
    for (auto at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1)) ++inline_svgs;
    CHECK(inline_svgs == 2);
    CHECK(html.find("<?xml") == std::string::npos);  // the SVG files' prologues stay out of the page
  }
  // report.html: the same tables as report.md, escaped; a configuration per finished cell.
  const auto html = test::read_file(dir / "report.html");
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(html.find("<th>aggregator.plugin</th><th>attack.plugin</th><th class=\"n\">seeds</th>") != std::string::npos);
  CHECK(html.find("<td class=\"n\"><strong>0.") != std::string::npos);  // the worst case, in bold
  CHECK(html.find("Cells finished: 8 of 12") != std::string::npos);
  CHECK(html.find("interrupted or running") != std::string::npos);
  CHECK(html.find("<script") == std::string::npos);
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    const auto name = entry.path().filename().string();
    CHECK_MESSAGE(name.find(".tmp.") == std::string::npos, name);
    CHECK_MESSAGE(name.find(".part") == std::string::npos, name);
  }
}

TEST_CASE("a privacy sweep gets the privacy-utility figure, without gnuplot, a notice and the scripts") {
  auto dir = test::scratch_dir("report_privacy");
  StudyManifest manifest;
  manifest.name = "dp";
  manifest.axes = {{{"privacy.noise_multiplier"}, {"0.5", "1"}}};
  manifest.cells = {{"a", "a", {0}, 1, "cells/a"}, {"b", "b", {1}, 1, "cells/b"}};
  write_manifest(dir, manifest);
  write_run(dir / "cells/a", 0.8, 0.8, 1, "round,test_accuracy,epsilon\n1,0.8,4.5\n");
  write_run(dir / "cells/b", 0.7, 0.7, 1, "round,test_accuracy,epsilon\n1,0.7,1.5\n");

  ReportOptions missing;
  missing.gnuplot = "/nonexistent/gnuplot";
  auto without = write_report(dir, missing);
  REQUIRE(without.notices.size() == 1);
  CHECK(without.notices[0].find("gnuplot not found") != std::string::npos);
  CHECK(without.figures.empty());
  CHECK(fs::exists(dir / "figures" / "privacy_utility.gp"));
  CHECK(test::read_file(dir / "figures" / "data" / "privacy_utility.dat").find("4.5 0.8 0 \"0.5\"") != std::string::npos);
  CHECK(test::read_file(dir / "report.md").find("Not drawn: gnuplot was not found") != std::string::npos);

  auto with = write_report(dir);
  if (gnuplot_missing(with)) {
    MESSAGE("gnuplot is not installed: figures not checked (scripts/install-deps installs gnuplot-nox)");
  } else {
    CHECK(with.notices.empty());
    CHECK(test::read_file(dir / "figures" / "privacy_utility.png").rfind("\x89PNG\r\n\x1a\n", 0) == 0);
    CHECK_FALSE(fs::exists(dir / "figures" / "heatmap.png"));  // one axis: no heatmap
  }
}

TEST_CASE("report reads a single run's folder as a study of one cell, other folders are errors") {
  auto dir = test::scratch_dir("report_single");
  write_run(dir, 0.5, 0.6, 2, "round,test_accuracy\n1,0.6\n2,0.5\n");
  auto summary = summarize_study(dir);
  REQUIRE(summary.groups.size() == 1);
  CHECK(summary.groups[0].final_accuracy.mean == 0.5);
  CHECK(summary.groups[0].best_accuracy.mean == 0.6);
  CHECK_THROWS_WITH_AS(summarize_study(test::scratch_dir("report_empty")),
                       doctest::Contains("is neither a study folder (no study.json) nor a finished run"), Error);
}

TEST_CASE("a damaged metrics.csv row (cut short, or not a number) is left out of the report and said") {
  auto dir = test::scratch_dir("report_damaged");
  StudyManifest manifest;
  manifest.name = "damaged";
  manifest.cells = {{"a", "a", {}, 1, "cells/a"}};
  write_manifest(dir, manifest);
  write_run(dir / "cells/a", 0.8, 0.8, 1, "round,test_accuracy,test_loss\n1,0.5,1.2\n2,0.6,1.1\n3,0.7,abc\n4,0.8");
  const auto record = read_run(dir / "cells/a");
  CHECK(record.curve == std::vector<std::pair<double, double>>{{1, 0.5}, {2, 0.6}});
  REQUIRE(record.problems.size() == 2);
  CHECK(record.problems[0].find("metrics.csv:4: a damaged row (3 of 3 fields, or a cell that is not a number)") !=
        std::string::npos);
  CHECK(record.problems[1].find("metrics.csv:5: a damaged row (2 of 3 fields") != std::string::npos);
  const auto output = write_report(dir);
  CHECK(std::count_if(output.notices.begin(), output.notices.end(),
                      [](const std::string& n) { return n.find("damaged row") != std::string::npos; }) == 2);
}
