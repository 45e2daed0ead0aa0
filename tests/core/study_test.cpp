// Studies: expanding [sweep] into cells (grid, zip, seeds), naming them, and running them with
// finished cells skipped.
#include <doctest/doctest.h>

#include <set>

#include "bulwark/error.hpp"
#include "experiment.hpp"
#include "study.hpp"
#include "test_support.hpp"
#include "tiny_experiment.hpp"

using namespace bulwark;

namespace {

std::filesystem::path write_study(const std::string& name, const std::string& text) {
  auto dir = test::scratch_dir("study_" + name);
  test::write_file(dir / "study.toml", text);
  return dir / "study.toml";
}

Study study_of(const std::string& name, const std::string& sweep, const std::string& extra = "") {
  return load_study(write_study(name, test::tiny_experiment(extra) + "\n" + sweep).string());
}

ExperimentConfig config_of(const StudyCell& cell) { return parse_experiment(cell.table, "cell"); }

std::vector<std::string> names_of(const Study& study) {
  std::vector<std::string> names;
  for (const auto& cell : study.cells) names.push_back(cell.name);
  return names;
}

}  // namespace

TEST_CASE("a grid is the cartesian product of its keys in file order, then the seeds") {
  // clients.lr is written first: it is the first (slowest) axis although toml++ sorts keys. A
  // bare dotted key (a nested table) names the same key as a quoted one.
  auto study = study_of("grid", R"(
[sweep]
clients.lr = [0.1, 0.05, 0.2]
"aggregator.plugin" = ["fedavg", "median"]
seeds = [1, 2]
)");
  REQUIRE(study.cells.size() == 12);  // 3 × 2 × 2
  REQUIRE(study.axes.size() == 2);
  CHECK(study.axes[0].name() == "clients.lr");
  CHECK(study.rank_axis == 0);
  const auto names = names_of(study);
  CHECK(names[0] == "clients.lr=0.1__aggregator.plugin=fedavg__seed=1");
  CHECK(names[1] == "clients.lr=0.1__aggregator.plugin=fedavg__seed=2");
  CHECK(names[2] == "clients.lr=0.1__aggregator.plugin=median__seed=1");
  CHECK(names[11] == "clients.lr=0.2__aggregator.plugin=median__seed=2");
  CHECK(std::set<std::string>(names.begin(), names.end()).size() == 12);
  CHECK(study.cells[0].group == study.cells[1].group);
  CHECK(study.cells[0].group == "clients.lr=0.1__aggregator.plugin=fedavg");

  auto cell = config_of(study.cells[7]);  // lr index 1, median, seed 2
  CHECK(cell.clients.get<double>("lr") == 0.05);
  CHECK(cell.aggregator.plugin == "median");
  CHECK(cell.experiment.get<std::int64_t>("seed") == 2);
  CHECK(study.cells[7].seed == 2);
  CHECK(study.cells[7].choice == std::vector<std::size_t>{1, 1});
  CHECK(cell.experiment.get<std::string>("name") == "tiny/" + study.cells[7].name);
  CHECK_FALSE(study.cells[7].table->contains("sweep"));
  CHECK(config_of(study.cells[0]).clients.get<std::int64_t>("batch_size") == 16);  // base keys stay
}

TEST_CASE("zipped keys take their i-th values together, lists of different lengths are an error") {
  auto study = study_of("zip", R"(
[sweep]
zip = [{"clients.lr" = [0.1, 0.2], "clients.batch_size" = [16, 32]}]
"aggregator.plugin" = ["fedavg", "median"]
)");
  REQUIRE(study.cells.size() == 4);  // 2 zipped pairs × 2 rules, no seeds
  REQUIRE(study.axes.size() == 2);
  CHECK(study.axes[0].name() == "clients.lr+clients.batch_size");
  CHECK(study.axes[0].labels == std::vector<std::string>{"0.1,16", "0.2,32"});
  CHECK(study.cells[2].name == "clients.lr=0.2__clients.batch_size=32__aggregator.plugin=fedavg");
  auto cell = config_of(study.cells[2]);
  CHECK(cell.clients.get<double>("lr") == 0.2);
  CHECK(cell.clients.get<std::int64_t>("batch_size") == 32);
  CHECK(cell.experiment.get<std::int64_t>("seed") == 7);  // no seeds: the base seed, not in names

  CHECK_THROWS_WITH_AS(study_of("zip_bad", "[sweep]\nzip = [{\"clients.lr\" = [0.1, 0.2], \"clients.batch_size\" = [16]}]\n"),
                       doctest::Contains("need lists of one length: 'clients.lr' has 2, 'clients.batch_size' has 1"),
                       Error);
}

TEST_CASE("cell names: whole tables, removed sections, [[attack]] without index, sanitising") {
  auto study = study_of("tables", R"(
[sweep]
"aggregator" = [{plugin = "fedavg"}, {plugin = "trimmed_mean", beta = 0.2}]
"privacy" = [{}, {plugin = "dp_sgd", noise_multiplier = 1.0}]
"attack.byzantine" = [1, 2]
"data.tag" = ["a b", "a_b"]
)", "\n[[attack]]\nplugin = \"sign_flip\"\nbyzantine = 1\n");
  REQUIRE(study.cells.size() == 16);
  CHECK(study.axes[0].labels == std::vector<std::string>{"fedavg", "trimmed_mean,beta=0.2"});
  CHECK(study.axes[1].labels == std::vector<std::string>{"none", "dp_sgd,noise_multiplier=1"});
  const auto& last = study.cells.back();
  CHECK(last.name.rfind("aggregator=trimmed_mean,beta=0.2__privacy=dp_sgd,noise_multiplier=1__attack.byzantine=2__data.tag=a_b~", 0) == 0);
  // "a b" and "a_b" sanitise alike; the hash of the raw name keeps the cells apart.
  CHECK(study.cells[0].name != study.cells[1].name);
  auto first = config_of(study.cells[0]), other = config_of(last);
  CHECK_FALSE(first.has_privacy);  // {} removes the section
  CHECK(other.has_privacy);
  CHECK(other.privacy.component.plugin == "dp_sgd");
  CHECK(other.aggregator.plugin == "trimmed_mean");
  REQUIRE(other.attacks.size() == 1);
  CHECK(other.attacks[0].schedule.get<std::int64_t>("byzantine") == 2);

  CHECK(sanitize_name("a b/c:d") == "a_b_c_d");
  const std::string long_a(200, 'a'), long_b = std::string(199, 'a') + "b";
  CHECK(sanitize_name(long_a).size() == 150);
  CHECK(sanitize_name(long_a) != sanitize_name(long_b));
}

TEST_CASE("[sweep] keys are addressed as --set addresses them: an index picks an entry, a missing list is named") {
  const std::string two_attacks = "\n[[attack]]\nplugin = \"sign_flip\"\n\n[[attack]]\nplugin = \"nan\"\n";
  auto study = study_of("indexed", "[sweep]\n\"attack.1.byzantine\" = [1, 2]\n", two_attacks);
  REQUIRE(study.cells.size() == 2);
  const auto second = config_of(study.cells[1]);
  REQUIRE(second.attacks.size() == 2);
  CHECK(second.attacks[1].schedule.get<std::int64_t>("byzantine") == 2);
  CHECK_THROWS_WITH_AS(study_of("unindexed", "[sweep]\n\"attack.byzantine\" = [1, 2]\n", two_attacks),
                       doctest::Contains("[[attack]] has 2 entries; name one by index from 0, e.g. attack.0.byzantine"),
                       Error);
  // Before, a missing list became a table named "3" and the cell failed later, elsewhere.
  CHECK_THROWS_WITH_AS(study_of("no_list", "[sweep]\n\"attack.3.byzantine\" = [1, 2]\n"),
                       doctest::Contains("the file has no list [[attack]], so there is no entry 3 to change"), Error);
}

TEST_CASE("--set replaces a [sweep] grid, written quoted or with bare dotted keys") {
  const std::string sweep = "[sweep]\n\"clients.lr\" = [0.1, 0.2]\naggregator.plugin = [\"fedavg\", \"median\"]\n";
  const auto file = write_study("set_grid", test::tiny_experiment() + "\n" + sweep).string();
  const auto study = load_study(file, {"sweep.clients.lr=[0.3, 0.4, 0.5]", "sweep.aggregator.plugin=[\"krum\"]"});
  REQUIRE(study.cells.size() == 3);
  REQUIRE(study.axes.size() == 1);
  CHECK(study.axes[0].name() == "clients.lr");
  CHECK(config_of(study.cells[2]).clients.get<double>("lr") == 0.5);
  CHECK(config_of(study.cells[2]).aggregator.plugin == "krum");
}

TEST_CASE("rank_by chooses the ranked axis, bad [sweep] entries are named errors") {
  auto ranked = study_of("rank", "[sweep]\n\"aggregator.plugin\" = [\"fedavg\", \"median\"]\n\"clients.lr\" = [0.1, 0.2]\n"
                                 "rank_by = \"clients.lr\"\n");
  CHECK(ranked.rank_axis == 1);

  CHECK_THROWS_WITH_AS(study_of("e1", "[sweep]\n\"clients.lr\" = 0.1\n"),
                       doctest::Contains("[sweep] 'clients.lr' must be a list of values"), Error);
  CHECK_THROWS_WITH_AS(study_of("e2", "[sweep]\n\"clients.lr\" = []\n"), doctest::Contains("has no values"), Error);
  CHECK_THROWS_WITH_AS(study_of("e3", "[sweep]\n\"clients.lr\" = [0.1, 0.1]\n"),
                       doctest::Contains("lists the value '0.1' twice"), Error);
  CHECK_THROWS_WITH_AS(study_of("e4", "[sweep]\nseeds = [1, 2]\n\"experiment.seed\" = [3, 4]\n"),
                       doctest::Contains("not also as experiment.seed"), Error);
  CHECK_THROWS_WITH_AS(study_of("e5", "[sweep]\n\"clients.lr\" = [0.1, 0.2]\nrank_by = \"aggregator.plugin\"\n"),
                       doctest::Contains("rank_by = \"aggregator.plugin\" is not a varied key; varied keys: clients.lr"),
                       Error);
  CHECK_THROWS_WITH_AS(study_of("e6", "[sweep]\n\"agregator.plugin\" = [\"fedavg\", \"median\"]\n"),
                       doctest::Contains("did you mean [aggregator]?"), Error);
  CHECK_THROWS_WITH_AS(study_of("e7", "[sweep]\n\"clients.lr\" = [0.1, -1.0]\n"),
                       doctest::Contains("(in sweep cell 'clients.lr=-1')"), Error);
  auto file = write_study("e8", test::tiny_experiment() + "\n[sweep]\n\"clients.lr\" = [0.1, 0.2]\n");
  CHECK_THROWS_WITH_AS(load_study(file.string(), {"clients.lr=0.3"}),
                       doctest::Contains("'clients.lr' is varied by the study's [sweep]"), Error);
}

TEST_CASE("run_study runs every cell once, finished cells are skipped when the study runs again") {
  auto file = write_study("run", test::tiny_experiment() + "\n[sweep]\n\"aggregator.plugin\" = [\"fedavg\", \"median\"]\n");
  const auto out = file.parent_path() / "out";
  auto study = load_study(file.string(), {"experiment.rounds=1"});
  std::vector<std::string> events;
  StudyOptions options;
  options.output_dir = out;
  options.jobs = 2;
  options.threads = 2;
  options.on_event = [&](const StudyEvent& e) {
    static const char* kinds[] = {"skipped", "started", "round", "finished", "failed"};
    if (e.kind != StudyEvent::Kind::Round) events.push_back(std::string(kinds[static_cast<int>(e.kind)]) + " " + e.cell->name);
  };

  auto first = run_study(study, test::registry(), options);
  CHECK(first.finished == 2);
  CHECK(first.skipped == 0);
  CHECK(first.failed.empty());
  CHECK(std::count_if(events.begin(), events.end(), [](const std::string& e) { return e.rfind("finished", 0) == 0; }) == 2);
  const auto median_dir = out / "cells" / "aggregator.plugin=median";
  REQUIRE(std::filesystem::exists(median_dir / "summary.json"));
  CHECK(std::filesystem::exists(out / "study.json"));
  const auto fedavg_summary = test::read_file(out / "cells" / "aggregator.plugin=fedavg" / "summary.json");

  events.clear();
  auto second = run_study(study, test::registry(), options);
  CHECK(second.skipped == 2);
  CHECK(second.finished == 0);
  CHECK(events == std::vector<std::string>{"skipped aggregator.plugin=fedavg", "skipped aggregator.plugin=median"});
  CHECK(test::read_file(out / "cells" / "aggregator.plugin=fedavg" / "summary.json") == fedavg_summary);

  // An unfinished cell (no summary.json) runs again; the finished one does not.
  std::filesystem::remove(median_dir / "summary.json");
  CHECK(check_study(study, test::registry(), out)[1].finished == false);
  events.clear();
  auto third = run_study(study, test::registry(), options);
  CHECK(third.skipped == 1);
  CHECK(third.finished == 1);
  CHECK(events == std::vector<std::string>{"skipped aggregator.plugin=fedavg", "started aggregator.plugin=median",
                                           "finished aggregator.plugin=median"});

  // The same folder under a changed file: existing results are not silently mixed in.
  auto changed = load_study(file.string(), {"experiment.rounds=1", "clients.batch_size=8"});
  CHECK_THROWS_WITH_AS(run_study(changed, test::registry(), options), doctest::Contains("another configuration"), Error);
}
