// Gradient-leakage studies: metrics (known answers), the [leakage] section and its errors, and
// whole runs in which the three observation points leak or not as the privacy mechanism implies.
#include <doctest/doctest.h>

#include <torch/torch.h>

#include <cmath>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "bulwark/error.hpp"
#include "bulwark/rng.hpp"
#include "engine.hpp"
#include "leakage.hpp"
#include "png.hpp"
#include "test_support.hpp"

using namespace bulwark;

namespace {

/// A study small enough for a test: a sigmoid MLP on synthetic 1x4x4 "images", victims training
/// with batch size 1, every point observed (by default at rounds 1 and 2).
std::string leakage_experiment(const std::string& extra = "", const std::string& leakage_extra = "",
                               const std::string& rounds = "[1, 2]") {
  return R"(
[experiment]
name = "leakage"
seed = 3
rounds = 2
threads = 2

[data]
plugin = "synthetic"
shape = [1, 4, 4]
classes = 3
train_size = 120
test_size = 30

[model]
arch = "mlp"
hidden = [8]
activation = "sigmoid"
init = "dlg"

[clients]
count = 4
batch_size = 1
local_iterations = 1
lr = 0.1
)" + extra + R"(
[leakage]
attack = "dlg"
point = [0, 1, 2]
rounds = )" + rounds + R"(
victims = 2
)" + leakage_extra;
}

std::string with(std::string text, const std::string& from, const std::string& to) {
  return text.replace(text.find(from), from.size(), to);
}

std::filesystem::path write_experiment(const std::string& name, const std::string& text) {
  auto dir = test::scratch_dir("leakage_" + name);
  test::write_file(dir / "experiment.toml", text);
  return dir;
}

RunSummary run_study(const std::string& name, const std::string& text, int threads = 2) {
  auto dir = write_experiment(name, text);
  Engine engine(load_experiment((dir / "experiment.toml").string()), test::registry());
  RunOptions options;
  options.output_dir = dir / "out";
  options.threads = threads;
  return engine.run(options);
}

/// Builds the engine (what `bulwark validate` does) and returns its error message.
std::string validation_error(const std::string& name, const std::string& text) {
  auto dir = write_experiment(name, text);
  try {
    Engine engine(load_experiment((dir / "experiment.toml").string()), test::registry());
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Config);
    return e.what();
  }
  return "no error";
}

/// leakage.csv as rows of column -> value.
std::vector<std::map<std::string, std::string>> read_csv(const std::filesystem::path& path) {
  std::stringstream in(test::read_file(path));
  std::string line;
  std::vector<std::string> header;
  std::vector<std::map<std::string, std::string>> rows;
  auto split = [](const std::string& text) {
    std::vector<std::string> cells;
    std::stringstream s(text);
    std::string cell;
    while (std::getline(s, cell, ',')) cells.push_back(cell);
    if (!text.empty() && text.back() == ',') cells.emplace_back();
    return cells;
  };
  std::getline(in, line);
  header = split(line);
  while (std::getline(in, line)) {
    auto cells = split(line);
    std::map<std::string, std::string> row;
    for (std::size_t i = 0; i < header.size() && i < cells.size(); ++i) row[header[i]] = cells[i];
    rows.push_back(row);
  }
  return rows;
}

std::optional<LeakageSpec> parse(const std::string& leakage_table, std::int64_t rounds = 10) {
  auto root = toml::parse(std::string_view(leakage_table), std::string_view("study.toml"));
  return parse_leakage(root, "study.toml", rounds);
}

/// success_rate of each point, over every attack of the run.
std::map<int, double> success_by_point(const RunSummary& summary) {
  auto json = nlohmann::json::parse(test::read_file(summary.output_dir / "summary.json"));
  std::map<int, double> out;
  for (const auto& entry : json.at("leakage").at("points")) {
    out[entry.at("point").get<int>()] = entry.at("success_rate").get<double>();
  }
  return out;
}

}  // namespace

TEST_CASE("reconstruction metrics: MSE per feature and PSNR, known answers") {
  // Every feature off by 0.1: MSE = 0.01, PSNR = 10·log10(1 / 0.01) = 20 dB (peak 1), and with
  // peak 2: 10·log10(4 / 0.01) = 26.0206 dB.
  auto original = torch::zeros({2, 1, 3, 3});
  auto reconstruction = original + 0.1;
  reconstruction[1] += 0.1;  // second example off by 0.2: MSE 0.04, PSNR 13.9794 dB
  auto mse = reconstruction_mse(reconstruction, original);
  CHECK(mse[0].item<double>() == doctest::Approx(0.01).epsilon(1e-6));
  CHECK(mse[1].item<double>() == doctest::Approx(0.04).epsilon(1e-6));
  auto psnr = reconstruction_psnr(reconstruction, original, 1.0);
  CHECK(psnr[0].item<double>() == doctest::Approx(20.0).epsilon(1e-6));
  CHECK(psnr[1].item<double>() == doctest::Approx(13.9794).epsilon(1e-4));
  CHECK(reconstruction_psnr(reconstruction, original, 2.0)[0].item<double>() == doctest::Approx(26.0206).epsilon(1e-4));
}

TEST_CASE("reconstruction metrics: SSIM, known answers") {
  auto image = torch::rand({1, 3, 16, 16}, make_generator(1));
  CHECK(reconstruction_ssim(image, image, 1.0)[0].item<double>() == doctest::Approx(1.0));
  // Two flat images a = 0.5 and b = 0.25: no variance, so SSIM = (2ab + C1) / (a² + b² + C1) with
  // C1 = (0.01·1)² = 1e-4: (0.25 + 1e-4) / (0.3125 + 1e-4) = 0.800064.
  auto a = torch::full({1, 1, 12, 12}, 0.5), b = torch::full({1, 1, 12, 12}, 0.25);
  CHECK(reconstruction_ssim(a, b, 1.0)[0].item<double>() == doctest::Approx(0.800064).epsilon(1e-5));
  // Windows narrow to the image: a 4x4 image uses a 3x3 window and still scores itself 1.
  auto small = torch::rand({2, 1, 4, 4}, make_generator(2));
  CHECK(reconstruction_ssim(small, small, 1.0)[1].item<double>() == doctest::Approx(1.0));
  CHECK(reconstruction_ssim(small, 1 - small, 1.0)[0].item<double>() < 0.5);
  // Not an image: no SSIM.
  CHECK(std::isnan(reconstruction_ssim(torch::zeros({1, 5}), torch::zeros({1, 5}), 1.0)[0].item<double>()));
}

TEST_CASE("batch reconstructions are matched to the originals they resemble") {
  auto original = torch::rand({3, 1, 4, 4}, make_generator(3));
  auto shuffled = original.index_select(0, torch::tensor({2, 0, 1}, torch::kLong)) + 0.01;
  // Original 0 is reconstruction 1, original 1 is reconstruction 2, original 2 is reconstruction 0.
  CHECK(match_reconstructions(shuffled, original) == std::vector<std::int64_t>{1, 2, 0});
  // Beyond 8 examples the greedy pairing takes over; distinct examples still pair up exactly.
  auto many = torch::rand({10, 1, 4, 4}, make_generator(4));
  auto reversed = many.flip(0);
  auto order = match_reconstructions(reversed, many);
  for (std::int64_t i = 0; i < 10; ++i) CHECK(order[i] == 9 - i);
}

TEST_CASE("[leakage] parsing: defaults, single integers, lists") {
  CHECK_FALSE(parse("[experiment]\nrounds = 3\n").has_value());
  auto spec = parse("[leakage]\nattack = \"dlg\"\niterations = 20\n");
  REQUIRE(spec.has_value());
  CHECK(spec->attack.plugin == "dlg");
  CHECK(spec->points == std::vector<int>{0});
  CHECK(spec->rounds == std::vector<std::int64_t>{1});
  CHECK(spec->settings.get<std::int64_t>("victims") == 1);
  CHECK(spec->settings.get<std::int64_t>("batch_size") == 1);
  CHECK(spec->settings.get<double>("threshold") == 0.01);
  // The plugin's own options are left for its schema.
  const auto& ignored = spec->attack.ignored;
  CHECK(std::find(ignored.begin(), ignored.end(), "iterations") == ignored.end());
  auto listed = parse("[leakage]\nattack = \"idlg\"\npoint = [2, 0, 2]\nrounds = 4\n");
  CHECK(listed->points == std::vector<int>{0, 2});
  CHECK(listed->rounds == std::vector<std::int64_t>{4});
}

TEST_CASE("[leakage] parsing errors say what, where and what to do") {
  CHECK_THROWS_WITH_AS(parse("[leakage]\npoint = 1\n"), doctest::Contains("needs an attack: add attack = \"dlg\""),
                       Error);
  CHECK_THROWS_WITH_AS(parse("[leakage]\nattack = \"dlg\"\npoint = 3\n"),
                       doctest::Contains("study.toml:3:9: [leakage] point = 3 is out of range: 0 (what "
                                         "the server"),
                       Error);
  CHECK_THROWS_WITH_AS(parse("[leakage]\nattack = \"dlg\"\nrounds = [1, 12]\n", 10),
                       doctest::Contains("rounds = 12 is out of range: the run has rounds 1..10"), Error);
  CHECK_THROWS_WITH_AS(parse("[leakage]\nattack = \"dlg\"\npoint = \"server\"\n"),
                       doctest::Contains("point must be an integer or a list of integers"), Error);
  CHECK_THROWS_WITH_AS(parse("[leakage]\nattack = \"dlg\"\nvictims = 0\n"),
                       doctest::Contains("option 'victims' for [leakage] must be in [1, inf]"), Error);
  CHECK_THROWS_WITH_AS(parse("leakage = 3\n"), doctest::Contains("[leakage] must be a table"), Error);
  // The same checks run when the experiment file is loaded.
  auto dir = write_experiment("parse_load", leakage_experiment("", "threshold = -1\n"));
  CHECK_THROWS_WITH_AS(load_experiment((dir / "experiment.toml").string()),
                       doctest::Contains("option 'threshold' for [leakage] must be in [0, inf]"), Error);
}

TEST_CASE("[leakage] configurations that cannot be observed are refused before the run") {
  // Point 2 at batch size 2 with no per-example mechanism: the client only holds the batch mean.
  CHECK(validation_error("type2_batch", leakage_experiment("", "batch_size = 2\n"))
            .find("point 2 observes a per-example gradient, but no per-example privacy mechanism") !=
        std::string::npos);
  // The victim's batch must be the protocol's when a mechanism calibrates noise to it.
  CHECK(validation_error("batch_mismatch",
                         leakage_experiment("\n[privacy]\nplugin = \"fed_cdp\"\n", "batch_size = 2\n"))
            .find("[leakage] batch_size = 2 differs from [clients] batch_size = 1") != std::string::npos);
  CHECK(validation_error("no_hook", with(leakage_experiment(), "attack = \"dlg\"", "attack = \"sign_flip\""))
            .find("attack 'sign_flip' has no leakage hook") != std::string::npos);
  CHECK(validation_error("victims", with(leakage_experiment(), "victims = 2", "victims = 9"))
            .find("victims = 9 exceeds [clients] count = 4") != std::string::npos);
  CHECK(validation_error("plugin_option", leakage_experiment("", "iteration = 5\n"))
            .find("unknown option 'iteration' for leakage attack 'dlg'; did you mean 'iterations'?") !=
        std::string::npos);
}

TEST_CASE("without privacy every observation point leaks, the files say so") {
  auto summary = run_study("no_privacy", leakage_experiment());
  const auto& out = summary.output_dir;
  auto rows = read_csv(out / "leakage.csv");
  REQUIRE(rows.size() == 6);  // rounds 1 and 2 x points 0, 1, 2
  for (const auto& row : rows) {
    INFO("round ", row.at("round"), " point ", row.at("point"), " mse ", row.at("mse"));
    CHECK(row.at("attacks") == "2");  // two victims, batch size 1
    CHECK(row.at("success_rate") == "1");
    CHECK(std::stod(row.at("mse")) < 1e-3);
    CHECK(std::stod(row.at("label_accuracy")) == 1.0);
  }
  CHECK(read_csv(out / "leakage_attacks.csv").size() == 12);
  auto json = nlohmann::json::parse(test::read_file(out / "summary.json"));
  CHECK(json.at("leakage").at("attack") == "dlg");
  CHECK(json.at("leakage").at("points").size() == 3);
  // The grid: originals and one row per point, 4 victims' images (2 rounds x 2) of 4x4 pixels.
  auto grid = decode_png(test::read_file(out / "leakage.png"));
  CHECK(grid.width == 4 * (4 + 2) + 2);
  CHECK(grid.height == 4 * (4 + 2) + 2);
  // config.toml can be read back: [leakage] names its plugin with `attack`.
  auto config = test::read_file(out / "config.toml");
  CHECK(config.find("[leakage]") != std::string::npos);
  CHECK(config.find("attack = 'dlg'") != std::string::npos);
  CHECK(config.find("iterations = 300") != std::string::npos);
}

TEST_CASE("a leakage study gives the same numbers with 1 and 2 worker threads") {
  auto one = run_study("threads1", leakage_experiment(), 1);
  auto two = run_study("threads2", leakage_experiment(), 2);
  auto a = read_csv(one.output_dir / "leakage_attacks.csv");
  auto b = read_csv(two.output_dir / "leakage_attacks.csv");
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    for (const auto& column : {"client", "mse", "iterations", "psnr", "ssim"}) {
      CHECK(a[i].at(column) == b[i].at(column));
    }
  }
}

// The private runs observe round 1 only: noise of this size wrecks the tiny model's θ for later
// rounds, and an attack on a wrecked model says nothing about the mechanism.
TEST_CASE("fed_cdp (C = 4, sigma = 6) stops every point") {
  auto summary = run_study("fed_cdp", leakage_experiment(
                                           "\n[privacy]\nplugin = \"fed_cdp\"\nclip = 4.0\nnoise_multiplier = 6.0\n",
                                           "iterations = 30\n", "1"));
  for (auto [point, success] : success_by_point(summary)) CHECK_MESSAGE(success == 0.0, "point ", point);
}

TEST_CASE("fed_sdp (C = 4, sigma = 6, noise at the client) stops points 0 and 1, not 2") {
  auto summary = run_study("fed_sdp", leakage_experiment(
                                           "\n[privacy]\nplugin = \"fed_sdp\"\nclip = 4.0\nnoise_multiplier = 6.0\n",
                                           "iterations = 100\n", "1"));
  auto success = success_by_point(summary);
  CHECK(success.at(0) == 0.0);  // the upload is clipped and noised before it leaves the client
  CHECK(success.at(1) == 0.0);  // the client's own update carries the same noise (Algorithm 1)
  CHECK(success.at(2) == 1.0);  // the per-example gradient is never touched by Fed-SDP
}

TEST_CASE("with target_epsilon the observed step uses the solved mechanism, as if its sigma were given") {
  const std::string privacy = "\n[privacy]\nplugin = \"fed_cdp\"\nclip = 4.0\n";
  auto solved = run_study("target_epsilon", leakage_experiment(privacy + "target_epsilon = 2.0\n", "iterations = 20\n", "1"));
  auto json = nlohmann::json::parse(test::read_file(solved.output_dir / "summary.json"));
  const double sigma = json.at("solved_noise_multiplier").get<double>();
  CHECK(sigma > 0);
  auto given = run_study("given_sigma", leakage_experiment(privacy + fmt::format("noise_multiplier = {:.17g}\n", sigma),
                                                           "iterations = 20\n", "1"));
  auto observed = read_csv(solved.output_dir / "leakage_attacks.csv");
  auto expected = read_csv(given.output_dir / "leakage_attacks.csv");
  REQUIRE(observed.size() == expected.size());
  for (std::size_t i = 0; i < observed.size(); ++i) {
    CHECK(observed[i].at("mse") == expected[i].at("mse"));
    CHECK(observed[i].at("iterations") == expected[i].at("iterations"));
  }
}
