// Checkpoints: the file format round-trips bit for bit, damaged files are named errors, and a run
// that stops after a checkpoint and resumes gives the metrics of a run that never stopped.
#include <doctest/doctest.h>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "bulwark/error.hpp"
#include "checkpoint.hpp"
#include "engine.hpp"
#include "outputs.hpp"
#include "test_support.hpp"
#include "tiny_experiment.hpp"

using namespace bulwark;

namespace {

bool same_bytes(const torch::Tensor& a, const torch::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes().equals(b.sizes()) &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.numel() * a.element_size()) == 0;
}

/// Metrics without the wall-clock columns, as CSV-like text (NaN as "nan").
std::string numbers(const std::vector<MetricsRow>& rows) {
  std::string text;
  for (const auto& row : rows) {
    for (const auto& [name, value] : row) {
      if (name.rfind("time_", 0) != 0) text += name + "=" + format_csv_number(value) + " ";
    }
    text += "\n";
  }
  return text;
}

// A stateful rule (centred clipping keeps last round's aggregate) and server momentum, so a
// resume that forgot either would drift.
const std::string kExtra = "\n[aggregator]\nplugin = \"centered_clipping\"\n\n[server]\nmomentum = 0.9\n";

struct Crash {};

/// A scratch folder holding the tiny experiment with `extra`.
std::filesystem::path experiment_dir(const std::string& name, const std::string& extra = kExtra) {
  auto dir = test::scratch_dir(name);
  test::write_file(dir / "experiment.toml", test::tiny_experiment(extra));
  return dir;
}

/// Runs dir/experiment.toml into dir/out. `crash_at`: throws Crash while reporting that round;
/// `stop_at`: asks the run to stop (as Ctrl-C does) once that round has been reported.
RunSummary run(const std::filesystem::path& dir, bool resume, std::int64_t crash_at = 0,
               const std::vector<std::string>& overrides = {}, std::int64_t stop_at = 0) {
  Engine engine(load_experiment((dir / "experiment.toml").string(), overrides), test::registry());
  RunOptions options;
  options.output_dir = dir / "out";
  // One worker: the comparison is about resuming, not about thread counts (engine_test covers
  // those; concurrent calls into a BLAS built without locking are not reproducible).
  options.threads = 1;
  options.resume = resume;
  std::int64_t reported = 0;
  options.on_round = [&](const RoundProgress& p) {
    reported = p.round;
    if (p.round == crash_at) throw Crash{};
  };
  options.stop_requested = [&] { return stop_at > 0 && reported == stop_at; };
  return engine.run(options);
}

}  // namespace

TEST_CASE("a checkpoint file round-trips tensors, NaN metrics and the fingerprint bit for bit") {
  auto dir = test::scratch_dir("checkpoint_format");
  Checkpoint saved;
  saved.round = 3;
  saved.elapsed_seconds = 1.25;
  saved.fingerprint = "[experiment]\nname = \"é\"\n";
  saved.tensors["theta"] = torch::tensor({1.5f, -0.0f, std::nanf(""), 1e-30f});
  saved.tensors["undefined"] = torch::Tensor();  // unset optional state is left out
  saved.put("attack/0", {{"counts", torch::arange(6, torch::kLong).reshape({2, 3})}, {"mask", torch::tensor({true, false})}});
  saved.tensors["empty"] = torch::empty({0, 4});
  saved.metrics = {{{"round", 1}, {"test_accuracy", std::nan("")}}, {{"round", 2}, {"test_accuracy", 0.1 + 0.2}}};
  save_checkpoint(dir / "c.bin", saved);

  auto loaded = load_checkpoint(dir / "c.bin");
  CHECK(loaded.round == 3);
  CHECK(loaded.elapsed_seconds == 1.25);
  CHECK(loaded.fingerprint == saved.fingerprint);
  CHECK(loaded.tensors.size() == 4);
  CHECK_FALSE(loaded.tensors.count("undefined"));
  CHECK(same_bytes(loaded.tensors.at("theta"), saved.tensors.at("theta")));  // NaN and -0 included
  CHECK(loaded.tensors.at("empty").sizes().vec() == std::vector<std::int64_t>{0, 4});
  auto attack = loaded.take("attack/0");
  REQUIRE(attack.size() == 2);
  CHECK(same_bytes(attack.at("counts"), torch::arange(6, torch::kLong).reshape({2, 3})));
  CHECK((attack.at("mask").scalar_type() == torch::kBool));
  REQUIRE(loaded.metrics.size() == 2);
  CHECK(std::isnan(loaded.metrics[0][1].second));
  CHECK(loaded.metrics[1][1].second == 0.1 + 0.2);
  CHECK(loaded.metrics[1][1].first == "test_accuracy");
}

TEST_CASE("damaged checkpoints are errors that name the file") {
  auto dir = test::scratch_dir("checkpoint_damaged");
  test::write_file(dir / "junk.bin", "hello, world: certainly not a checkpoint");
  CHECK_THROWS_WITH_AS(load_checkpoint(dir / "junk.bin"), doctest::Contains("junk.bin is not a usable checkpoint: wrong magic"),
                       Error);

  Checkpoint checkpoint;
  checkpoint.tensors["theta"] = torch::zeros({100});
  save_checkpoint(dir / "full.bin", checkpoint);
  auto text = test::read_file(dir / "full.bin");
  test::write_file(dir / "cut.bin", text.substr(0, text.size() - 10));
  CHECK_THROWS_WITH_AS(load_checkpoint(dir / "cut.bin"), doctest::Contains("truncated data"), Error);
  CHECK_THROWS_WITH_AS(load_checkpoint(dir / "missing.bin"), doctest::Contains("missing.bin"), Error);
}

TEST_CASE("a run stopped after a checkpoint resumes to exactly the metrics of an uninterrupted run") {
  auto whole = experiment_dir("checkpoint_whole");
  auto broken = experiment_dir("checkpoint_broken");
  const std::vector<std::string> settings = {"experiment.rounds=5", "experiment.checkpoint_every=2"};

  auto reference = run(whole, false, 0, settings);
  CHECK_FALSE(std::filesystem::exists(checkpoint_path(whole / "out")));  // removed once finished

  // Stops during round 3's report, after round 2's checkpoint: round 3 must be redone.
  CHECK_THROWS_AS(run(broken, false, 3, settings), Crash);
  REQUIRE(std::filesystem::exists(checkpoint_path(broken / "out")));
  CHECK(load_checkpoint(checkpoint_path(broken / "out")).round == 2);
  CHECK_FALSE(std::filesystem::exists(broken / "out" / "summary.json"));

  // A changed configuration must not continue from this state.
  CHECK_THROWS_WITH_AS(run(broken, true, 0, {"experiment.rounds=5", "experiment.checkpoint_every=2", "clients.lr=0.2"}),
                       doctest::Contains("another configuration"), Error);

  auto resumed = run(broken, true, 0, settings);
  CHECK(resumed.resumed_from == 2);
  CHECK(resumed.rounds_run == 5);
  REQUIRE(resumed.metrics.size() == 5);
  CHECK(numbers(resumed.metrics) == numbers(reference.metrics));
  CHECK(resumed.final_accuracy == reference.final_accuracy);
  CHECK(resumed.best_accuracy == reference.best_accuracy);
  CHECK_FALSE(std::filesystem::exists(checkpoint_path(broken / "out")));

  // The comparison is sensitive to the restored state: the same resume from a checkpoint that
  // lost the rule's and the server optimiser's state drifts.
  auto tampered = experiment_dir("checkpoint_tampered");
  CHECK_THROWS_AS(run(tampered, false, 3, settings), Crash);
  auto checkpoint = load_checkpoint(checkpoint_path(tampered / "out"));
  CHECK(checkpoint.tensors.count("aggregator/previous") == 1);
  CHECK(checkpoint.tensors.count("server/momentum") == 1);
  checkpoint.tensors.erase("aggregator/previous");
  checkpoint.tensors.erase("server/momentum");
  save_checkpoint(checkpoint_path(tampered / "out"), checkpoint);
  CHECK(numbers(run(tampered, true, 0, settings).metrics) != numbers(reference.metrics));
}

TEST_CASE("flags.csv of a resumed run is the uninterrupted run's, byte for byte") {
  // FLTrust names the rows it rejects; one sign-flipper a round gives every round a flag.
  const std::string extra = "\n[aggregator]\nplugin = \"fltrust\"\nroot_size = 50\n"
                            "\n[[attack]]\nplugin = \"sign_flip\"\nbyzantine = 1\nschedule = \"per_round\"\n";
  auto whole = experiment_dir("checkpoint_flags_whole", extra);
  auto broken = experiment_dir("checkpoint_flags_broken", extra);
  const std::vector<std::string> settings = {"experiment.rounds=5", "experiment.checkpoint_every=2"};
  run(whole, false, 0, settings);
  CHECK_THROWS_AS(run(broken, false, 3, settings), Crash);
  // The checkpoint keeps rounds 1 and 2 (4 rows each); flags.csv already holds round 3 too.
  const auto flags = load_checkpoint(checkpoint_path(broken / "out")).tensors.at("run/flags");
  CHECK(flags.size(0) == 2 * 4);
  CHECK(flags.select(1, 0).max().item<std::int64_t>() == 2);
  run(broken, true, 0, settings);
  const auto reference = read_whole_file(whole / "out" / "flags.csv");
  CHECK(std::count(reference.begin(), reference.end(), '\n') == 1 + 5 * 4);
  CHECK(read_whole_file(broken / "out" / "flags.csv") == reference);
}

TEST_CASE("a stop request (Ctrl-C) ends the run after the round in progress with a checkpoint, even without checkpoint_every") {
  auto whole = experiment_dir("interrupt_whole");
  auto stopped = experiment_dir("interrupt_stopped");
  const std::vector<std::string> settings = {"experiment.rounds=5"};  // checkpoint_every = 0
  auto reference = run(whole, false, 0, settings);

  try {
    run(stopped, false, 0, settings, /*stop_at=*/3);
    FAIL("the run did not stop");
  } catch (const RunInterrupted& e) {
    CHECK(std::string(e.what()).find("interrupted after round 3 of 5") != std::string::npos);
  }
  REQUIRE(load_checkpoint(checkpoint_path(stopped / "out")).round == 3);
  CHECK_FALSE(std::filesystem::exists(stopped / "out" / "summary.json"));

  auto resumed = run(stopped, true, 0, settings);
  CHECK(resumed.resumed_from == 3);
  CHECK(numbers(resumed.metrics) == numbers(reference.metrics));
}

namespace {

/// Per-client state under client sampling (4 of 6 clients a round): a run crashed in round 3 keeps,
/// in its round-2 checkpoint, one entry under `prefix` for each client seen so far (4 to 6), and
/// resumes to the metrics of a run never interrupted.
void check_per_client_state_resumes(const std::string& name, const std::vector<std::string>& settings,
                                    const std::string& prefix) {
  auto whole = experiment_dir("checkpoint_" + name + "_whole");
  auto broken = experiment_dir("checkpoint_" + name + "_broken");
  auto reference = run(whole, false, 0, settings);
  CHECK_THROWS_AS(run(broken, false, 3, settings), Crash);
  const auto checkpoint = load_checkpoint(checkpoint_path(broken / "out"));
  std::int64_t entries = 0;
  for (const auto& [key, tensor] : checkpoint.tensors) entries += key.rfind(prefix, 0) == 0;
  CHECK(entries >= 4);
  CHECK(entries <= 6);
  CHECK(numbers(run(broken, true, 0, settings).metrics) == numbers(reference.metrics));
}

}  // namespace

TEST_CASE("a rule with per-client state (FoolsGold's histories) resumes exactly under client sampling") {
  check_per_client_state_resumes("foolsgold",
                                 {"experiment.rounds=5", "experiment.checkpoint_every=2", "aggregator.plugin=\"foolsgold\"",
                                  "aggregator.normalize=true"},
                                 "aggregator/history/");
}

TEST_CASE("RSA's per-client models live in the checkpoint, for the clients seen so far, and resume exactly") {
  check_per_client_state_resumes("rsa",
                                 {"experiment.rounds=5", "experiment.checkpoint_every=2", "aggregator.plugin=\"rsa\"",
                                  "aggregator.lambda=0.01"},
                                 "client_model/");
}
