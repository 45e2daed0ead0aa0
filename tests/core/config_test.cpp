// Option validation and experiment files: every promised message, with its position.
#include <doctest/doctest.h>

#include "config.hpp"
#include "experiment.hpp"
#include "test_support.hpp"

using namespace bulwark;

namespace {
const std::vector<OptionSpec> kSpecs = {
    {"f", OptType::Int, "0", 0, kInf, "bound", nullptr},
    {"multi", OptType::Int, "1", 1, kInf, "m", nullptr},
    {"mode", OptType::String, "\"flat\"", 0, 0, "mode", "flat|per_layer"},
    {"eps", OptType::List, "[0.1, 1]", 0, kInf, "grid", nullptr},
};

std::string write_experiment(const std::string& name, const std::string& text) {
  auto path = test::scratch_dir("config_" + name) / "experiment.toml";
  test::write_file(path, text);
  return path.string();
}
}  // namespace

TEST_CASE("defaults are filled in and marked as not set") {
  auto options = options_from_string("f = 2", kSpecs, "aggregator 'krum'");
  CHECK(options.get<std::int64_t>("f") == 2);
  CHECK(options.is_set("f"));
  CHECK(options.get<std::int64_t>("multi") == 1);
  CHECK_FALSE(options.is_set("multi"));
  CHECK(options.get<std::string>("mode") == "flat");
  CHECK(options.get<std::vector<double>>("eps") == std::vector<double>{0.1, 1.0});
  CHECK_THROWS_WITH_AS(options.get<double>("undeclared"), doctest::Contains("not declared"), Error);
}

TEST_CASE("an unknown key names the closest valid key and lists all, with line and column") {
  CHECK_THROWS_WITH_AS(options_from_string("f = 1\nmutli = 2", kSpecs, "aggregator 'krum'"),
                       doctest::Contains("<options>:2:1: unknown option 'mutli' for aggregator 'krum'; "
                                         "did you mean 'multi'? valid options: f, multi, mode, eps"),
                       Error);
}

TEST_CASE("a wrong type or an out-of-range value is reported with file, line and column") {
  CHECK_THROWS_WITH_AS(options_from_string("\n  multi = \"three\"", kSpecs, "aggregator 'krum'"),
                       doctest::Contains("<options>:2:11: option 'multi' for aggregator 'krum' must be an "
                                         "integer, found the string \"three\""),
                       Error);
  CHECK_THROWS_WITH_AS(options_from_string("multi = 0", kSpecs, "aggregator 'krum'"),
                       doctest::Contains("must be in [1, inf], found 0"), Error);
  CHECK_THROWS_WITH_AS(options_from_string("mode = \"per_layr\"", kSpecs, "privacy 'dp_sgd'"),
                       doctest::Contains("must be one of flat, per_layer, found \"per_layr\"; did you mean 'per_layer'?"),
                       Error);
  CHECK_THROWS_WITH_AS(options_from_string("eps = [1, -1]", kSpecs, "attack 'ipm'"),
                       doctest::Contains("must be in [0, inf], found -1"), Error);
}

TEST_CASE("experiment files: unknown sections and keys are caught with positions") {
  auto file = write_experiment("section", "[experimnt]\nrounds = 3\n");
  CHECK_THROWS_WITH_AS(load_experiment(file), doctest::Contains("experiment.toml:1:1: unknown section [experimnt]; did you mean [experiment]?"), Error);

  file = write_experiment("key", "[data]\nplugin = \"synthetic\"\n[clients]\nbatch_sise = 3\n");
  CHECK_THROWS_WITH_AS(load_experiment(file),
                       doctest::Contains("experiment.toml:4:1: unknown option 'batch_sise' for [clients]; did you mean 'batch_size'?"),
                       Error);

  file = write_experiment("missing_data", "[experiment]\nrounds = 3\n");
  CHECK_THROWS_WITH_AS(load_experiment(file), doctest::Contains("missing section [data]"), Error);

  file = write_experiment("sampling", "[data]\nplugin = \"synthetic\"\n[clients]\ncount = 4\nper_round = 2\nfraction = 0.5\n");
  CHECK_THROWS_WITH_AS(load_experiment(file), doctest::Contains("at most one of per_round, fraction and poisson_rate"), Error);
}

TEST_CASE("a number option is finite and within float range: inf, nan and 1e308 are refused at their place") {
  for (const char* value : {"inf", "-inf", "nan", "1e308"}) {
    INFO(value);
    const auto file = write_experiment("nonfinite", std::string("[data]\nplugin = \"synthetic\"\n[clients]\nlr = ") +
                                                        value + "\n");
    CHECK_THROWS_WITH_AS(load_experiment(file),
                         doctest::Contains("experiment.toml:4:6: option 'lr' for [clients] must be a finite number"),
                         Error);
  }
}

TEST_CASE("the default output folder runs/<name>: a name that would escape runs/ is refused where it is written") {
  for (const char* name : {"../../escaped", "a/b", "..", ""}) {
    INFO(name);
    const auto config = load_experiment(write_experiment("bad_name", std::string("[experiment]\nname = \"") + name +
                                                                         "\"\n[data]\nplugin = \"synthetic\"\n"));
    const std::string expected = "experiment.toml:2:8: name = \"" + std::string(name) + "\" must be a plain folder name";
    CHECK_THROWS_WITH_AS(default_output_dir(config), doctest::Contains(expected.c_str()), Error);
  }
  const auto good = load_experiment(write_experiment("good_name", "[experiment]\nname = \"robust-fmnist_v2.1\"\n"
                                                                  "[data]\nplugin = \"synthetic\"\n"));
  CHECK(default_output_dir(good) == std::filesystem::path("runs/robust-fmnist_v2.1"));
  // With an output set the name only labels the run.
  const auto elsewhere = load_experiment(write_experiment(
      "named_output", "[experiment]\nname = \"a/b\"\noutput = \"out/x\"\n[data]\nplugin = \"synthetic\"\n"));
  CHECK(default_output_dir(elsewhere) == std::filesystem::path("out/x"));
}

TEST_CASE("errors about a place carry it apart from the message, and keep it when a note is added") {
  auto file = write_experiment("located", "[experiment]\nrounds = 0\n");
  try {
    load_experiment(file);
    FAIL("rounds = 0 was accepted");
  } catch (const LocatedError& e) {
    CHECK(e.location() == file + ":2:10");
    CHECK(e.message().rfind("option 'rounds' for [experiment] must be in [1, ", 0) == 0);
    CHECK(std::string(e.what()) == e.location() + ": " + e.message());  // no "error:": the host adds it
    try {
      rethrow_with_note(e, " (in sweep cell 'a')");
    } catch (const LocatedError& noted) {
      CHECK(noted.location() == e.location());
      CHECK(noted.message() == e.message() + " (in sweep cell 'a')");
      CHECK((noted.kind() == ErrorKind::Config));
    }
  }
}

TEST_CASE("a folder given as the experiment file is named as a folder, not as a file without [data]") {
  const auto dir = test::scratch_dir("config_folder");
  CHECK_THROWS_WITH_AS(load_experiment(dir.string()), doctest::Contains("is a folder, not an experiment file"), Error);
}

TEST_CASE("malformed TOML reports line and column") {
  auto file = write_experiment("malformed", "[experiment]\nrounds = = 3\n");
  CHECK_THROWS_WITH_AS(load_experiment(file), doctest::Contains("experiment.toml:2:"), Error);
  CHECK_THROWS_WITH_AS(load_experiment(file), doctest::Contains("malformed TOML"), Error);
}

TEST_CASE("--set overrides any key, creating tables and parsing TOML values") {
  auto file = write_experiment("override", "[data]\nplugin = \"synthetic\"\n[clients]\nbatch_size = 8\n");
  auto config = load_experiment(file, {"clients.batch_size=32", "experiment.name=sweep cell", "clients.lr=0.5"});
  CHECK(config.clients.get<std::int64_t>("batch_size") == 32);
  CHECK(config.clients.get<double>("lr") == doctest::Approx(0.5));
  CHECK(config.experiment.get<std::string>("name") == "sweep cell");
  CHECK_THROWS_WITH_AS(load_experiment(file, {"clients.batch_size"}), doctest::Contains("expected key=value"), Error);
}

TEST_CASE("--set into attacks the file does not have says so, naming the assignment") {
  auto file = write_experiment("override_attacks", "[data]\nplugin = \"synthetic\"\n");
  // Before: each of these said "[attack] needs a plugin", as if the file were wrong.
  CHECK_THROWS_WITH_AS(load_experiment(file, {"attack.3.byzantine=1"}),
                       doctest::Contains("--set attack.3.byzantine=1: the file has no list [[attack]], so there is "
                                         "no entry 3 to change"),
                       Error);
  CHECK_THROWS_WITH_AS(load_experiment(file, {"attack.byzantine=1"}),
                       doctest::Contains("[attack] is not in the file and --set gave it no plugin: add --set "
                                         "attack.plugin=NAME"),
                       Error);
  auto config = load_experiment(file, {"attack.byzantine=1", "attack.plugin=sign_flip"});
  REQUIRE(config.attacks.size() == 1);
  CHECK(config.attacks[0].component.plugin == "sign_flip");

  // One [[attack]] entry is addressed without its index, as a sweep addresses it.
  auto listed = write_experiment("override_listed", "[data]\nplugin = \"synthetic\"\n[[attack]]\nplugin = \"nan\"\n");
  auto relisted = load_experiment(listed, {"attack.plugin=sign_flip", "attack.byzantine=2"});
  REQUIRE(relisted.attacks.size() == 1);
  CHECK(relisted.attacks[0].component.plugin == "sign_flip");
  CHECK(relisted.attacks[0].schedule.get<std::int64_t>("byzantine") == 2);

  auto one = write_experiment("override_one", "[data]\nplugin = \"synthetic\"\n[attack]\nplugin = \"nan\"\n");
  CHECK_THROWS_WITH_AS(load_experiment(one, {"attack.0.byzantine=1"}),
                       doctest::Contains("[attack] is one table, not a list [[attack]]; drop the index: --set "
                                         "attack.byzantine"),
                       Error);
  auto two = write_experiment("override_two", "[data]\nplugin = \"synthetic\"\n[[attack]]\nplugin = \"nan\"\n"
                                              "[[attack]]\nplugin = \"inf\"\n");
  CHECK(load_experiment(two, {"attack.1.byzantine=2"}).attacks[1].schedule.get<std::int64_t>("byzantine") == 2);
  CHECK_THROWS_WITH_AS(load_experiment(two, {"attack.byzantine=2"}),
                       doctest::Contains("[[attack]] has 2 entries; name one by index from 0, e.g. --set "
                                         "attack.0.byzantine"),
                       Error);
  CHECK_THROWS_WITH_AS(load_experiment(two, {"attack.2.byzantine=1"}),
                       doctest::Contains("entry 2 does not exist: the list [[attack]] has 2 entries"), Error);
  CHECK_THROWS_WITH_AS(load_experiment(two, {"attack.x.byzantine=1"}), doctest::Contains("use a number from 0"),
                       Error);
  // An empty table removes a key, as in [sweep]; a whole entry can be replaced.
  CHECK(load_experiment(two, {"attack.1={}"}).attacks.size() == 1);
  const auto replaced = load_experiment(two, {"attack.1={plugin = \"sign_flip\", byzantine = 3}"});
  REQUIRE(replaced.attacks.size() == 2);
  CHECK(replaced.attacks[1].component.plugin == "sign_flip");
  CHECK(replaced.attacks[1].schedule.get<std::int64_t>("byzantine") == 3);
  auto with_privacy = write_experiment("override_remove", "[data]\nplugin = \"synthetic\"\n[privacy]\nplugin = "
                                                          "\"dp_sgd\"\nnoise_multiplier = 1.0\n");
  CHECK(load_experiment(with_privacy).has_privacy);
  CHECK_FALSE(load_experiment(with_privacy, {"privacy={}"}).has_privacy);
}

TEST_CASE("attack schedules and plugin options are split") {
  auto file = write_experiment("attack",
                               "[data]\nplugin = \"synthetic\"\n"
                               "[[attack]]\nplugin = \"sign_flip\"\nbyzantine = 3\nschedule = \"per_round\"\nscale = 2.0\n");
  auto config = load_experiment(file);
  REQUIRE(config.attacks.size() == 1);
  CHECK(config.attacks[0].component.plugin == "sign_flip");
  CHECK(config.attacks[0].schedule.get<std::int64_t>("byzantine") == 3);
  CHECK(config.attacks[0].schedule.get<std::string>("schedule") == "per_round");
  auto& ignored = config.attacks[0].component.ignored;
  CHECK(std::find(ignored.begin(), ignored.end(), "byzantine") != ignored.end());
  CHECK(std::find(ignored.begin(), ignored.end(), "scale") == ignored.end());
}

TEST_CASE("learning-rate schedules give each round its rate as torch's schedulers do") {
  auto rates = [](const std::string& server, std::int64_t rounds) {
    auto file = write_experiment("lr_" + std::to_string(std::hash<std::string>{}(server)),
                                 "[experiment]\nrounds = " + std::to_string(rounds) +
                                     "\n[data]\nplugin = \"synthetic\"\n[server]\n" + server);
    const auto lr = load_experiment(file).settings.server.lr;
    std::vector<double> out;
    for (std::int64_t r = 1; r <= rounds; ++r) out.push_back(lr.at(r, rounds));
    return out;
  };
  auto check_rates = [](const std::vector<double>& got, const std::vector<double>& want) {
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-12));
  };
  check_rates(rates("lr = 0.5\n", 3), {0.5, 0.5, 0.5});
  // DiverseFL's MLP: 0.06, halved at iterations 500 and 950 (here rounds 2 and 4).
  check_rates(rates("lr = 0.06\nlr_schedule = \"step\"\nlr_milestones = [2, 4]\nlr_gamma = 0.5\n", 5),
              {0.06, 0.03, 0.03, 0.015, 0.015});
  // DiverseFL's softmax regression: 0.001 / sqrt(r).
  check_rates(rates("lr = 0.001\nlr_schedule = \"inv_sqrt\"\n", 4), {0.001, 0.001 / std::sqrt(2.0), 0.001 / std::sqrt(3.0), 0.0005});
  check_rates(rates("lr = 1\nlr_schedule = \"exponential\"\nlr_gamma = 0.9\n", 3), {1.0, 0.9, 0.81});
  // torch CosineAnnealingLR(T_max = 4, eta_min = 0.1) from 1.0: epochs 0..3.
  check_rates(rates("lr = 1\nlr_schedule = \"cosine\"\nlr_min = 0.1\n", 4),
              {1.0, 0.1 + 0.9 * (1 + std::sqrt(0.5)) / 2, 0.55, 0.1 + 0.9 * (1 - std::sqrt(0.5)) / 2});
  // DiverseFL's CIFAR warm-up, 0.05 -> 0.1 over rounds 1..4, then a step of 0.4 at round 6.
  check_rates(rates("lr = 0.1\nlr_schedule = \"step\"\nlr_milestones = [6]\nlr_gamma = 0.4\nlr_warmup_rounds = 4\n"
                    "lr_warmup_from = 0.05\n",
                    7),
              {0.05, 0.0625, 0.075, 0.0875, 0.1, 0.04, 0.04});
}

TEST_CASE("a schedule option that the chosen schedule does not read is refused at its place") {
  auto refuse = [](const std::string& clients, const std::string& message) {
    auto file = write_experiment("lr_refused", "[data]\nplugin = \"synthetic\"\n[clients]\n" + clients);
    CHECK_THROWS_WITH_AS(load_experiment(file), doctest::Contains(message.c_str()), Error);
  };
  refuse("lr_milestones = [3]\n", "experiment.toml:4:17: [clients] lr_milestones is read by lr_schedule = \"step\" only");
  refuse("lr_schedule = \"cosine\"\nlr_gamma = 0.5\n", "[clients] lr_gamma is read by lr_schedule = \"step\" or \"exponential\" only");
  refuse("lr_min = 0.001\n", "[clients] lr_min is read by lr_schedule = \"cosine\" only");
  refuse("lr_warmup_from = 0.01\n", "[clients] lr_warmup_from needs lr_warmup_rounds >= 1");
  refuse("lr_schedule = \"step\"\n", "lr_schedule = \"step\" needs lr_milestones");
  refuse("lr_schedule = \"step\"\nlr_milestones = [5, 3]\n", "lr_milestones must be whole rounds in ascending order");
  refuse("lr_schedule = \"step\"\nlr_milestones = [2.5]\n", "lr_milestones must be whole rounds in ascending order");
  refuse("lr = 0.01\nlr_schedule = \"cosine\"\nlr_min = 0.1\n", "lr_min = 0.1 exceeds lr = 0.01");
  refuse("batch_size = 10\nbatch_fraction = 0.1\n", "give either batch_size or batch_fraction, not both");
}
