// The host binary, run as a user runs it: a tiny synthetic experiment end to end, and every
// promised error path (exit code 2, one clear line, no crash).
#include <doctest/doctest.h>

#include "test_support.hpp"
#include "tiny_experiment.hpp"

using namespace bulwark;

TEST_CASE("bulwark run: a tiny synthetic experiment writes one metrics row per round") {
  auto dir = test::scratch_dir("cli_run");
  test::write_file(dir / "tiny.toml", test::tiny_experiment());
  auto result = test::run_bulwark({"run", (dir / "tiny.toml").string(), "--out", (dir / "out").string(),
                                   "--set", "experiment.rounds=4"});
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output.find("round 4/4") != std::string::npos);
  CHECK(result.output.find("final test accuracy") != std::string::npos);
  auto csv = test::read_file(dir / "out" / "metrics.csv");
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 5);
  CHECK(csv.find("\n4,4,0,0,") != std::string::npos);  // round 4, 4 clients, none malicious or non-finite
}

TEST_CASE("bulwark validate accepts a good file and names the bad key in a bad one") {
  auto dir = test::scratch_dir("cli_validate");
  test::write_file(dir / "good.toml", test::tiny_experiment());
  auto good = test::run_bulwark({"validate", (dir / "good.toml").string()});
  CHECK(good.exit_code == 0);
  CHECK(good.output.find("ok") != std::string::npos);

  test::write_file(dir / "bad.toml", test::tiny_experiment("\n[aggregator]\nplugin = \"fedavg\"\nweigted = true\n"));
  auto bad = test::run_bulwark({"validate", (dir / "bad.toml").string()});
  CHECK(bad.exit_code == 2);
  CHECK(bad.output.find("bad.toml:30:1: error: unknown option 'weigted' for aggregator 'fedavg'; did you mean 'weighted'?") !=
        std::string::npos);
}

TEST_CASE("bulwark run: a missing file is a usage error with the path") {
  auto result = test::run_bulwark({"run", "/nonexistent/experiment.toml"});
  CHECK(result.exit_code == 2);
  CHECK(result.output.find("/nonexistent/experiment.toml") != std::string::npos);
  CHECK(result.output.find("error:") != std::string::npos);
}

TEST_CASE("bulwark run: malformed TOML reports line and column") {
  auto dir = test::scratch_dir("cli_malformed");
  test::write_file(dir / "broken.toml", "[experiment]\nname = \"x\"\nrounds = [1,\n");
  auto result = test::run_bulwark({"run", (dir / "broken.toml").string()});
  CHECK(result.exit_code == 2);
  CHECK(result.output.find("broken.toml:3:14") != std::string::npos);
  CHECK(result.output.find("malformed TOML") != std::string::npos);
}

TEST_CASE("bulwark run: an unknown plugin lists the available ones") {
  auto dir = test::scratch_dir("cli_unknown");
  test::write_file(dir / "x.toml", test::tiny_experiment("\n[aggregator]\nplugin = \"krumm\"\n"));
  auto result = test::run_bulwark({"run", (dir / "x.toml").string()});
  CHECK(result.exit_code == 2);
  CHECK(result.output.find("unknown aggregator plugin 'krumm'") != std::string::npos);
  CHECK(result.output.find("fedavg") != std::string::npos);
}

TEST_CASE("bulwark plugins lists the bundled plugins, describe prints doc and options") {
  auto list = test::run_bulwark({"plugins"});
  CHECK(list.exit_code == 0);
  CHECK(list.output.find("aggregator  fedavg") != std::string::npos);
  CHECK(list.output.find("dataset     idx") != std::string::npos);

  auto describe = test::run_bulwark({"describe", "fedavg"});
  CHECK(describe.exit_code == 0);
  CHECK(describe.output.find("McMahan et al.") != std::string::npos);
  CHECK(describe.output.find("weighted") != std::string::npos);

  auto section = test::run_bulwark({"describe", "clients"});
  CHECK(section.output.find("batch_size") != std::string::npos);

  auto unknown = test::run_bulwark({"describe", "fedavgg"});
  CHECK(unknown.exit_code == 2);
  CHECK(unknown.output.find("did you mean 'fedavg'?") != std::string::npos);
}

TEST_CASE("bulwark with a bad command line exits 2") {
  CHECK(test::run_bulwark({"frobnicate"}).exit_code == 2);
  CHECK(test::run_bulwark({"run"}).exit_code == 2);
}
