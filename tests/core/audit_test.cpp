// [audit] (audit.hpp): ROC statistics and the one-run audit's bound against their definitions, the
// canaries' set-up on a partition, and whole runs: outputs, determinism, and a memorising model
// audited above zero while a strongly private one stays under its accountant's ε.
#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "audit.hpp"
#include "bulwark/error.hpp"
#include "bulwark/rng.hpp"
#include "config.hpp"
#include "test_support.hpp"

using namespace bulwark;

namespace {

double binomial_tail(std::int64_t v, std::int64_t r, double q) {  // P[Binomial(r, q) >= v], directly
  double total = 0.0;
  for (std::int64_t k = v; k <= r; ++k) {
    total += std::exp(std::lgamma(r + 1.0) - std::lgamma(k + 1.0) - std::lgamma(r - k + 1.0)) * std::pow(q, k) *
             std::pow(1 - q, r - k);
  }
  return total;
}

Options audit_options(const std::string& text) { return options_from_string(text, audit_option_specs(), "[audit]"); }

}  // namespace

TEST_CASE("roc_auc: the probability a member outscores a non-member, ties counting one half") {
  CHECK(roc_auc({3, 4, 5}, {0, 1, 2}) == 1.0);
  CHECK(roc_auc({0, 1}, {2, 3}) == 0.0);
  CHECK(roc_auc({1, 1}, {1, 1, 1}) == 0.5);
  // Pairs (member, non-member): (2,1) win, (2,3) loss, (2,2) tie, (4,*) three wins: (1 + 0.5 + 3) / 6.
  CHECK(roc_auc({2, 4}, {1, 2, 3}) == doctest::Approx(4.5 / 6));
  CHECK(std::isnan(roc_auc({}, {1})));
}

TEST_CASE("tpr_at_fpr: the best threshold that flags at most that share of non-members") {
  const std::vector<double> members = {5, 4, 3}, non_members = {1, 2, 3.5, 0};
  CHECK(tpr_at_fpr(members, non_members, 0.0) == doctest::Approx(2.0 / 3));  // above 3.5
  CHECK(tpr_at_fpr(members, non_members, 0.25) == 1.0);                      // one false positive allowed
  CHECK(tpr_at_fpr({1, 2}, {3, 4}, 0.001) == 0.0);
}

TEST_CASE("one_run_p_value: the binomial tail at e^eps/(1+e^eps), plus 2m delta times the largest shortfall ratio") {
  for (double epsilon : {0.0, 0.5, 2.0}) {
    const double q = std::exp(epsilon) / (1 + std::exp(epsilon));
    CHECK(one_run_p_value(1000, 40, 30, epsilon, 0.0) == doctest::Approx(binomial_tail(30, 40, q)).epsilon(1e-10));
    // With δ: the added term is 2mδ · max_i P[30 > Bin ≥ 30 − i] / i, which is positive.
    double alpha = 0.0;
    for (int i = 1; i <= 30; ++i) alpha = std::max(alpha, (binomial_tail(30 - i, 40, q) - binomial_tail(30, 40, q)) / i);
    CHECK(one_run_p_value(1000, 40, 30, epsilon, 1e-5) ==
          doctest::Approx(binomial_tail(30, 40, q) + 2 * 1000 * 1e-5 * alpha).epsilon(1e-10));
  }
  CHECK(one_run_p_value(10, 10, 10, 0.0, 0.0) == doctest::Approx(std::pow(0.5, 10)));
}

TEST_CASE("one_run_epsilon: r right guesses of r give the eps where q^r = 1 - confidence, chance-level guessing gives 0") {
  // p(eps) = q^100 with delta = 0, so the bound solves q = 0.05^(1/100), eps = log(q / (1 - q)).
  const double q = std::pow(0.05, 0.01);
  CHECK(one_run_epsilon(1000, 100, 100, 0.0, 0.95) == doctest::Approx(std::log(q / (1 - q))).epsilon(1e-9));
  CHECK(one_run_epsilon(1000, 100, 50, 0.0, 0.95) == 0.0);
  // delta only weakens the bound.
  CHECK(one_run_epsilon(1000, 100, 90, 1e-4, 0.95) < one_run_epsilon(1000, 100, 90, 0.0, 0.95));
}

TEST_CASE("guess_canaries: in for the k highest scores, out for the k lowest, bounds Bonferroni-corrected") {
  std::vector<double> scores;
  std::vector<bool> included;
  for (int i = 0; i < 100; ++i) {
    scores.push_back(i);
    included.push_back(i >= 50);  // a perfect score
  }
  const auto guesses = guess_canaries(scores, included, {10, 50}, 0.0, 0.95);
  REQUIRE(guesses.size() == 2);
  CHECK(guesses[0].correct == 20);
  CHECK(guesses[1].correct == 100);
  CHECK(guesses[0].epsilon == doctest::Approx(one_run_epsilon(100, 20, 20, 0.0, 0.975)));
  included[99] = false;  // the top score guessed wrong
  CHECK(guess_canaries(scores, included, {10}, 0.0, 0.95)[0].correct == 19);
}

TEST_CASE("PrivacyAudit::prepare: canaries relabelled, left-out ones out of the partition, members kept, from the seed") {
  const auto specs = partition_option_specs();
  auto make = [&] {
    Dataset data;
    data.num_classes = 10;
    data.train_inputs = torch::rand({600, 4}, make_generator(1));
    data.train_labels = torch::randint(10, {600}, make_generator(2), torch::kLong);
    data.test_inputs = torch::rand({200, 4}, make_generator(3));
    data.test_labels = torch::randint(10, {200}, make_generator(4), torch::kLong);
    return data;
  };
  auto data = make();
  const auto original_labels = data.train_labels.clone();
  auto partition = make_partition(data.train_labels, 10, 10, options_from_string("scheme = \"iid\"", specs, "p"), 5);
  const auto before = partition;
  PrivacyAudit audit(audit_options("membership_examples = 50\ncanaries = 40\ncanary_clients = 3"), 11, "f.toml");
  audit.prepare(data, partition);

  const auto changed = (data.train_labels != original_labels).sum().item<std::int64_t>();
  std::int64_t canary_client_examples = 0, emptied = 0, kept_whole = 0;
  for (std::int64_t c = 0; c < 10; ++c) {
    const auto after = partition.client(c);
    const auto was = before.client(c);
    const bool relabelled = (data.train_labels.index_select(0, was) != original_labels.index_select(0, was)).all().item<bool>();
    if (relabelled) {  // a canary client: all its examples relabelled, kept whole or emptied
      canary_client_examples += was.size(0);
      if (after.size(0) == 0) ++emptied;
      if (torch::equal(after, was)) ++kept_whole;
    } else {
      CHECK(after.size(0) <= was.size(0));
    }
  }
  CHECK(emptied + kept_whole == 3);
  // Every canary label is a wrong one: 3 clients' examples and the 40 example canaries.
  CHECK(changed == canary_client_examples + 40);
  // Left-out example canaries are gone from their clients; the rest of the data stays.
  const auto remaining = partition.indices.size(0);
  const auto left_out_examples = before.indices.size(0) - remaining - emptied * (canary_client_examples / 3);
  CHECK(left_out_examples > 5);
  CHECK(left_out_examples < 35);

  // The same seed gives the same draw.
  auto again = make();
  auto partition_again = make_partition(again.train_labels, 10, 10, options_from_string("scheme = \"iid\"", specs, "p"), 5);
  PrivacyAudit(audit_options("membership_examples = 50\ncanaries = 40\ncanary_clients = 3"), 11, "f.toml")
      .prepare(again, partition_again);
  CHECK(torch::equal(again.train_labels, data.train_labels));
  CHECK(torch::equal(partition_again.indices, partition.indices));
}

TEST_CASE("PrivacyAudit::prepare refuses what the data cannot hold, saying what to change") {
  Dataset data;
  data.num_classes = 2;
  data.train_inputs = torch::zeros({100, 2});
  data.train_labels = torch::randint(2, {100}, make_generator(1), torch::kLong);
  data.test_inputs = torch::zeros({20, 2});
  data.test_labels = torch::zeros({20}, torch::kLong);
  const auto specs = partition_option_specs();
  auto iid = make_partition(data.train_labels, 2, 4, options_from_string("scheme = \"iid\"", specs, "p"), 1);
  auto full = make_partition(data.train_labels, 2, 4, options_from_string("scheme = \"full\"", specs, "p"), 1);
  auto refuses = [&](const std::string& text, Partition partition, const char* why) {
    CAPTURE(text);
    PrivacyAudit audit(audit_options(text), 1, "f.toml");
    CHECK_THROWS_WITH_AS(audit.prepare(data, partition), doctest::Contains(why), Error);
  };
  refuses("membership_examples = 30", iid, "exceeds the 20 test examples");
  refuses("membership_examples = 0\ncanaries = 200", iid, "lower them");
  refuses("membership_examples = 0\ncanary_clients = 3", iid, "more than half of the 4 clients");
  refuses("membership_examples = 0\ncanaries = 10", full, "scheme = \"full\"");
  refuses("membership_examples = 0\ncanaries = 1", iid, "at least 2");
}

TEST_CASE("a run with [audit] writes audit.csv and summary.json's audit, the same for any thread count") {
  const std::string audit = "\n[audit]\nmembership_examples = 100\ncanaries = 40\ncanary_clients = 2\n";
  auto one = test::run_tiny("audit_run_1", audit, {}, 1);
  auto two = test::run_tiny("audit_run_2", audit, {}, 2);
  const auto csv = test::read_file(one.output_dir / "audit.csv");
  CHECK(csv == test::read_file(two.output_dir / "audit.csv"));
  CHECK(csv.find("membership_loss,example,200,") != std::string::npos);
  CHECK(csv.find("canaries_example,example,40,") != std::string::npos);
  CHECK(csv.find("canaries_client,client,2,") != std::string::npos);
  const auto summary = nlohmann::json::parse(test::read_file(one.output_dir / "summary.json"));
  REQUIRE(summary.contains("audit"));
  CHECK(summary["audit"]["membership"]["members"] == 100);
  CHECK(summary["audit"]["canaries_example"]["canaries"] == 40);
  CHECK(summary["audit"]["canaries_client"]["guesses"] == 2);  // k = 1 of 2 canary clients
  const auto auc = summary["audit"]["membership"]["auc"].get<double>();
  CHECK(auc >= 0.0);
  CHECK(auc <= 1.0);
}

TEST_CASE("one-run audit: a memorising model is audited above 0, strong DP-SGD stays under its accountant's epsilon") {
  // Few examples, many local epochs and a wide MLP: the mislabelled canaries that stay in are fit.
  const std::vector<std::string> memorise = {"experiment.rounds=8", "clients.local_epochs=10", "clients.per_round=6",
                                             "model.hidden=[256]", "data.train_size=300"};
  const std::string audit = "\n[audit]\nmembership_examples = 100\ncanaries = 100\nguesses = [20]\n";
  auto open = test::run_tiny("audit_memorise", audit, memorise);
  const auto plain = nlohmann::json::parse(test::read_file(open.output_dir / "summary.json"))["audit"];
  INFO(plain.dump());
  CHECK(plain["canaries_example"]["auc"].get<double>() > 0.8);
  CHECK(plain["canaries_example"]["epsilon_lower_bound"].get<double>() > 0.5);
  CHECK(plain["membership"]["auc"].get<double>() > 0.5);

  auto dp = test::run_tiny("audit_memorise_dp",
                           audit + "\n[privacy]\nplugin = \"dp_sgd\"\nclip = 0.5\nnoise_multiplier = 3.0\n", memorise);
  const auto private_run = nlohmann::json::parse(test::read_file(dp.output_dir / "summary.json"))["audit"];
  INFO(private_run.dump());
  const auto& canaries = private_run["canaries_example"];
  CHECK(canaries["epsilon_lower_bound"].get<double>() <= canaries["accountant_epsilon"].get<double>());
  CHECK(canaries["epsilon_lower_bound"].get<double>() < plain["canaries_example"]["epsilon_lower_bound"].get<double>());
}

TEST_CASE("offline LiRA: shadow runs on the held-out test examples score the targets, and the report shows it") {
  const std::string audit = "\n[audit]\nmembership_examples = 100\nshadow_models = 2\n";
  auto run = test::run_tiny("audit_lira", audit, {"data.train_size=300", "clients.local_epochs=5"});
  const auto summary = nlohmann::json::parse(test::read_file(run.output_dir / "summary.json"));
  INFO(summary["audit"].dump());
  const auto& lira = summary["audit"]["membership_lira"];
  CHECK(lira["shadow_models"] == 2);
  CHECK(lira["members"] == 100);
  CHECK(lira["auc"].get<double>() > 0.5);  // the small training set is fit: members stand out
  // Each shadow is a run of its own, with its own seed, on the 100 test examples not targeted.
  for (const char* shadow : {"1", "2"}) {
    const auto shadow_summary =
        nlohmann::json::parse(test::read_file(run.output_dir / "audit_shadows" / shadow / "summary.json"));
    CHECK(shadow_summary["seed"] != summary["seed"]);
    CHECK(shadow_summary["dataset"].get<std::string>().find("trains on the 100 test examples") != std::string::npos);
  }
  const auto csv = test::read_file(run.output_dir / "audit.csv");
  CHECK(csv.find("membership_lira,example,200,") != std::string::npos);

  auto report = test::run_bulwark({"report", run.output_dir.string()});
  INFO(report.output);
  CHECK(report.exit_code == 0);
  const auto markdown = test::read_file(run.output_dir / "report.md");
  CHECK(markdown.find("LiRA AUC") != std::string::npos);
  CHECK(markdown.find("MIA AUC") != std::string::npos);
}

TEST_CASE("[audit] runs beside a robust rule, an attack and a leakage study in the same run") {
  const std::string extra =
      "\n[aggregator]\nplugin = \"median\"\n\n[[attack]]\nplugin = \"label_flip\"\nbyzantine = 1\n\n"
      "[leakage]\nattack = \"dlg\"\niterations = 5\n\n"
      "[audit]\nmembership_examples = 50\ncanaries = 20\ncanary_clients = 2\n";
  auto run = test::run_tiny("audit_with_everything", extra, {});
  const auto summary = nlohmann::json::parse(test::read_file(run.output_dir / "summary.json"));
  CHECK(summary["aggregator"] == "median");
  CHECK(summary.contains("leakage"));
  CHECK(summary["audit"]["canaries_example"]["canaries"] == 20);
  CHECK(summary["audit"]["canaries_client"]["canaries"] == 2);
  CHECK(test::metric(run.metrics.back(), "malicious") == 1);
}
