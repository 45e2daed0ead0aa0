// Studies and checkpoints through the host binary: --dry-run, --jobs, re-running to resume,
// `bulwark report`, and a run killed with SIGKILL that resumes to identical metrics.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <sstream>
#include <thread>

#include "test_support.hpp"
#include "tiny_experiment.hpp"

using namespace bulwark;
namespace fs = std::filesystem;

extern char** environ;

namespace {

const std::string kSweep = "\n[sweep]\n\"aggregator.plugin\" = [\"fedavg\", \"median\"]\nseeds = [1, 2]\n";

/// metrics.csv without its time_* columns (wall clock differs between runs; nothing else may).
std::string without_time(const std::string& csv) {
  std::stringstream in(csv);
  std::string line, out;
  std::vector<bool> keep;
  while (std::getline(in, line)) {
    std::vector<std::string> fields;
    std::stringstream cells(line);
    std::string cell;
    while (std::getline(cells, cell, ',')) fields.push_back(cell);
    if (!line.empty() && line.back() == ',') fields.emplace_back();
    if (keep.empty()) {
      for (const auto& name : fields) keep.push_back(name.rfind("time_", 0) != 0);
    }
    for (std::size_t i = 0; i < fields.size() && i < keep.size(); ++i) {
      if (keep[i]) out += fields[i] + ",";
    }
    out += "\n";
  }
  return out;
}

}  // namespace

TEST_CASE("bulwark run on a study: --dry-run lists cells, --jobs runs them, a re-run skips them") {
  auto dir = test::scratch_dir("study_cli");
  test::write_file(dir / "study.toml", test::tiny_experiment() + kSweep);
  const auto out = (dir / "out").string();

  auto dry = test::run_bulwark({"run", (dir / "study.toml").string(), "--out", out, "--dry-run"});
  INFO(dry.output);
  CHECK(dry.exit_code == 0);
  CHECK(dry.output.find("4 cells over aggregator.plugin (2) × seeds (2)") != std::string::npos);
  CHECK(dry.output.find("aggregator.plugin=median__seed=2") != std::string::npos);
  CHECK(dry.output.find("4 to run, 0 finished") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "out"));

  auto run = test::run_bulwark({"run", (dir / "study.toml").string(), "--out", out, "--jobs", "2", "--set",
                                "experiment.rounds=2"});
  INFO(run.output);
  REQUIRE(run.exit_code == 0);
  CHECK(run.output.find("study: 4 cells, 4 run now, 0 finished earlier, 0 failed") != std::string::npos);
  CHECK(run.output.find("| aggregator.plugin | seeds | final acc |") != std::string::npos);
  CHECK(run.output.find("| median | 2/2 |") != std::string::npos);
  for (const char* file : {"summary.csv", "summary.md", "report.md", "study.json"}) CHECK(fs::exists(dir / "out" / file));
  CHECK(fs::exists(dir / "out" / "cells" / "aggregator.plugin=fedavg__seed=2" / "config.toml"));

  auto verbose = test::run_bulwark({"run", (dir / "study.toml").string(), "--out", out, "--set", "experiment.rounds=2", "-v"});
  CHECK(verbose.output.find("skip [4/4] aggregator.plugin=median__seed=2 (finished earlier)") != std::string::npos);
  CHECK(verbose.output.find("0 run now, 4 finished earlier") != std::string::npos);

  auto report = test::run_bulwark({"report", out});
  CHECK(report.exit_code == 0);
  CHECK(report.output.find("| fedavg | 2/2 |") != std::string::npos);
  CHECK(report.output.find("report: " + out + "/report.md") != std::string::npos);

  auto bad = test::run_bulwark({"report", (dir / "nothing").string()});
  CHECK(bad.exit_code == 2);
  CHECK(bad.output.find("is neither a study folder") != std::string::npos);
}

TEST_CASE("a run killed with SIGKILL mid-round resumes with --resume to the uninterrupted metrics") {
  auto dir = test::scratch_dir("study_cli_kill");
  // Stateful rule and server momentum: the resume must restore both. Enough rounds that the
  // kill lands while the run is still going.
  test::write_file(dir / "run.toml", test::tiny_experiment("\n[aggregator]\nplugin = \"centered_clipping\"\n\n[server]\n"
                                                           "momentum = 0.9\n"));
  // One worker thread: the comparison is about resuming, not about thread counts.
  const std::vector<std::string> settings = {"--threads", "1", "--set", "experiment.rounds=25",
                                             "experiment.checkpoint_every=1"};

  auto args = std::vector<std::string>{"run", (dir / "run.toml").string(), "--out", (dir / "whole").string(), "-q"};
  args.insert(args.end(), settings.begin(), settings.end());
  auto whole = test::run_bulwark(args);
  REQUIRE(whole.exit_code == 0);
  CHECK(whole.output.empty());  // --quiet: nothing but errors

  const auto killed_dir = dir / "killed";
  std::vector<std::string> child = {BULWARK_BINARY, "run", (dir / "run.toml").string(), "--out", killed_dir.string(), "-q"};
  child.insert(child.end(), settings.begin(), settings.end());
  std::vector<char*> argv;
  for (auto& a : child) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&actions);

  // Kill as soon as the first checkpoint exists: the child is then inside the next round.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  int status = 0;
  bool exited = false;
  while (!fs::exists(killed_dir / "checkpoint.bin") && std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  REQUIRE_FALSE(exited);
  REQUIRE(fs::exists(killed_dir / "checkpoint.bin"));
  ::kill(pid, SIGKILL);
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFSIGNALED(status));
  CHECK_FALSE(fs::exists(killed_dir / "summary.json"));

  args = {"run", (dir / "run.toml").string(), "--out", killed_dir.string(), "--resume"};
  args.insert(args.end(), settings.begin(), settings.end());
  auto resumed = test::run_bulwark(args);
  INFO(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  CHECK(resumed.output.find("resumed after round") != std::string::npos);
  const auto reference = without_time(test::read_file(dir / "whole" / "metrics.csv"));
  CHECK(std::count(reference.begin(), reference.end(), '\n') == 26);  // header + 25 rounds
  CHECK(without_time(test::read_file(killed_dir / "metrics.csv")) == reference);
  CHECK_FALSE(fs::exists(killed_dir / "checkpoint.bin"));
}
