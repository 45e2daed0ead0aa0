// Partitioners: every example assigned exactly once, the label structure each scheme promises,
// determinism per seed, and 100,000 clients.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include "bulwark/error.hpp"
#include "bulwark/rng.hpp"
#include "config.hpp"
#include "partition.hpp"

namespace {

bulwark::Options partition_options(const std::string& toml) {
  return bulwark::options_from_string(toml, bulwark::partition_option_specs(), "partition");
}

bulwark::Partition split(const torch::Tensor& labels, std::int64_t num_classes,
                         std::int64_t clients, const std::string& toml, std::uint64_t seed = 11) {
  return bulwark::make_partition(labels, num_classes, clients, partition_options(toml), seed);
}

// n examples, labels 0..classes-1 cycling: n / classes per class.
torch::Tensor cyclic_labels(std::int64_t n, std::int64_t classes) {
  return torch::arange(n, torch::kLong).remainder(classes);
}

void check_exactly_once(const bulwark::Partition& p, std::int64_t n, std::int64_t clients) {
  REQUIRE(p.num_clients() == clients);
  CHECK(p.offsets.front() == 0);
  CHECK(p.offsets.back() == n);
  CHECK((p.indices.scalar_type() == torch::kLong));
  CHECK(torch::equal(std::get<0>(torch::sort(p.indices)), torch::arange(n, torch::kLong)));
}

std::vector<std::int64_t> sizes(const bulwark::Partition& p) {
  std::vector<std::int64_t> out;
  for (std::int64_t i = 0; i < p.num_clients(); ++i) out.push_back(p.size(i));
  return out;
}

// Mean over clients of the largest class share: 1 / classes for perfectly mixed clients, 1 for
// single-class ones.
double mean_top_share(const bulwark::Partition& p, const torch::Tensor& labels,
                      std::int64_t classes) {
  double total = 0.0;
  std::int64_t counted = 0;
  for (std::int64_t i = 0; i < p.num_clients(); ++i) {
    if (p.size(i) == 0) continue;
    auto counts = torch::bincount(labels.index({p.client(i)}), {}, classes);
    total += counts.max().item<double>() / static_cast<double>(p.size(i));
    ++counted;
  }
  return total / static_cast<double>(counted);
}

std::string partition_error(const torch::Tensor& labels, std::int64_t classes, std::int64_t clients,
                            const std::string& toml) {
  try {
    split(labels, classes, clients, toml);
  } catch (const bulwark::Error& e) {
    CHECK(e.kind() == bulwark::ErrorKind::Config);
    return e.what();
  }
  FAIL("expected a bulwark::Error");
  return "";
}

}  // namespace

TEST_CASE("partition: the schema documents every option with defaults") {
  auto options = partition_options("");
  CHECK(options.get<std::string>("scheme") == "iid");
  CHECK(options.get<double>("alpha") == 0.5);
  CHECK(options.get<std::int64_t>("shards_per_client") == 2);
  CHECK(options.get<std::int64_t>("min_samples") == 1);
  for (const auto& spec : bulwark::partition_option_specs()) {
    CAPTURE(spec.name);
    CHECK(spec.doc != nullptr);
    CHECK(std::string(spec.doc).size() > 20);
  }
  CHECK_THROWS_WITH_AS(partition_options("scheme = \"dirichlett\""),
                       doctest::Contains("did you mean 'dirichlet'"), bulwark::Error);
}

TEST_CASE("partition: every scheme but full assigns each example exactly once") {
  auto labels = torch::randint(0, 10, {997}, bulwark::make_generator(5), torch::kLong);
  for (const std::string scheme : {"iid", "dirichlet", "shards", "sorted", "quantity"}) {
    CAPTURE(scheme);
    auto p = split(labels, 10, 20, "scheme = \"" + scheme + "\"");
    check_exactly_once(p, 997, 20);
    for (auto size : sizes(p)) CHECK(size >= 1);  // min_samples = 1
  }
}

TEST_CASE("partition: iid gives near-equal random parts") {
  auto labels = cyclic_labels(1003, 10);
  auto p = split(labels, 10, 10, "scheme = \"iid\"");
  for (auto size : sizes(p)) CHECK((size == 100 || size == 101));
  // Random, not contiguous: client 0 holds examples from across the whole range.
  CHECK(p.client(0).max().item<std::int64_t>() > 900);
  CHECK(p.client(0).min().item<std::int64_t>() < 100);
  // Every client sees (nearly) every class.
  CHECK(mean_top_share(p, labels, 10) < 0.25);
  // Each client's list is in increasing example order.
  auto c3 = p.client(3);
  CHECK(torch::equal(c3, std::get<0>(torch::sort(c3))));
}

TEST_CASE("partition: the same seed gives the same partition, another seed does not") {
  auto labels = cyclic_labels(2000, 10);
  for (const std::string scheme : {"iid", "dirichlet", "shards", "quantity"}) {
    CAPTURE(scheme);
    const auto toml = "scheme = \"" + scheme + "\"";
    auto a = split(labels, 10, 30, toml, 1), b = split(labels, 10, 30, toml, 1);
    auto c = split(labels, 10, 30, toml, 2);
    CHECK(torch::equal(a.indices, b.indices));
    CHECK(a.offsets == b.offsets);
    CHECK_FALSE((torch::equal(a.indices, c.indices) && a.offsets == c.offsets));
  }
}

TEST_CASE("partition: sorted gives contiguous label blocks") {
  auto labels = cyclic_labels(1000, 10);
  auto p = split(labels, 10, 10, "scheme = \"sorted\"");
  check_exactly_once(p, 1000, 10);
  // 100 per class and 100 per client: client i holds exactly class i.
  for (std::int64_t i = 0; i < 10; ++i) {
    CAPTURE(i);
    CHECK(p.size(i) == 100);
    CHECK(torch::all(labels.index({p.client(i)}) == i).item<bool>());
  }
  // With 7 clients, blocks straddle classes but stay ordered: max label of i <= min of i + 1.
  auto q = split(labels, 10, 7, "scheme = \"sorted\"");
  for (std::int64_t i = 0; i + 1 < 7; ++i) {
    CHECK(labels.index({q.client(i)}).max().item<std::int64_t>() <=
          labels.index({q.client(i + 1)}).min().item<std::int64_t>());
  }
}

TEST_CASE("partition: shards give each client at most shards_per_client classes") {
  // 1000 examples, 100 per class; 50 clients x 2 shards = 100 shards of 10: no shard straddles.
  auto labels = cyclic_labels(1000, 10);
  auto p = split(labels, 10, 50, "scheme = \"shards\"\nshards_per_client = 2");
  check_exactly_once(p, 1000, 50);
  bool some_client_has_two = false;
  for (std::int64_t i = 0; i < 50; ++i) {
    CAPTURE(i);
    CHECK(p.size(i) == 20);
    auto classes = std::get<0>(torch::_unique(labels.index({p.client(i)}))).size(0);
    CHECK(classes <= 2);
    some_client_has_two = some_client_has_two || classes == 2;
  }
  CHECK(some_client_has_two);  // the shards are dealt at random, not in label order
  // Unequal classes: a shard may straddle one boundary, so at most 2 * shards_per_client classes.
  auto skewed = torch::randint(0, 10, {1234}, bulwark::make_generator(3), torch::kLong);
  auto q = split(skewed, 10, 40, "scheme = \"shards\"\nshards_per_client = 3");
  check_exactly_once(q, 1234, 40);
  for (std::int64_t i = 0; i < 40; ++i) {
    CHECK(std::get<0>(torch::_unique(skewed.index({q.client(i)}))).size(0) <= 6);
  }
}

TEST_CASE("partition: dirichlet skew grows as alpha shrinks") {
  auto labels = cyclic_labels(10000, 10);
  auto extreme = split(labels, 10, 50, "scheme = \"dirichlet\"\nalpha = 0.1");
  auto medium = split(labels, 10, 50, "scheme = \"dirichlet\"\nalpha = 1.0");
  auto mild = split(labels, 10, 50, "scheme = \"dirichlet\"\nalpha = 1000.0");
  check_exactly_once(extreme, 10000, 50);
  check_exactly_once(mild, 10000, 50);
  const double s_extreme = mean_top_share(extreme, labels, 10);
  const double s_medium = mean_top_share(medium, labels, 10);
  const double s_mild = mean_top_share(mild, labels, 10);
  MESSAGE("mean largest class share: alpha 0.1 -> " << s_extreme << ", 1 -> " << s_medium
                                                    << ", 1000 -> " << s_mild);
  CHECK(s_extreme > s_medium);
  CHECK(s_medium > s_mild);
  CHECK(s_extreme > 0.5);
  CHECK(s_mild < 0.2);  // near IID: each class about 10% of a client
}

TEST_CASE("partition: dirichlet honours min_samples or says what to change") {
  auto labels = cyclic_labels(2000, 10);
  auto p = split(labels, 10, 40, "scheme = \"dirichlet\"\nalpha = 0.3\nmin_samples = 10");
  check_exactly_once(p, 2000, 40);
  for (auto size : sizes(p)) CHECK(size >= 10);
  // alpha = 0.01 puts each class on one or two clients: 100 clients never all reach 15.
  auto message =
      partition_error(labels, 10, 100, "scheme = \"dirichlet\"\nalpha = 0.01\nmin_samples = 15");
  CHECK(message.find("dirichlet") != std::string::npos);
  CHECK(message.find("min_samples = 15") != std::string::npos);
  CHECK(message.find("raise alpha") != std::string::npos);
}

TEST_CASE("partition: quantity skews sizes, keeps min_samples, and leaves labels mixed") {
  auto labels = cyclic_labels(10000, 10);
  auto even = split(labels, 10, 10,
                    "scheme = \"quantity\"\ndistribution = \"lognormal\"\nlognormal_sigma = 0.0");
  for (auto size : sizes(even)) CHECK(size == 1000);  // equal weights share 10000 exactly

  auto heavy = split(labels, 10, 100, "scheme = \"quantity\"\nmin_samples = 5");
  check_exactly_once(heavy, 10000, 100);
  auto s = sizes(heavy);
  const auto [smallest, largest] = std::minmax_element(s.begin(), s.end());
  CHECK(*smallest >= 5);
  CHECK(*largest > 4 * *smallest);  // a Pareto(2) draw of 100 weights spans far more than 4x
  auto lognormal =
      split(labels, 10, 100,
            "scheme = \"quantity\"\ndistribution = \"lognormal\"\nlognormal_sigma = 1.5");
  check_exactly_once(lognormal, 10000, 100);
  auto t = sizes(lognormal);
  CHECK(*std::max_element(t.begin(), t.end()) > 5 * *std::min_element(t.begin(), t.end()));
  CHECK(mean_top_share(heavy, labels, 10) < 0.6);  // IID data: no client dominated by a class
}

TEST_CASE("partition: full gives every client the whole training set") {
  auto labels = cyclic_labels(50, 5);
  auto p = split(labels, 5, 4, "scheme = \"full\"");
  REQUIRE(p.num_clients() == 4);
  for (std::int64_t i = 0; i < 4; ++i)
    CHECK(torch::equal(p.client(i), torch::arange(50, torch::kLong)));
}

TEST_CASE("partition: impossible requests are configuration errors") {
  auto labels = cyclic_labels(10, 2);
  auto message = partition_error(labels, 2, 11, "scheme = \"iid\"");
  CHECK(message.find("11 clients") != std::string::npos);
  CHECK(message.find("10 training examples") != std::string::npos);
  message = partition_error(labels, 2, 5, "scheme = \"iid\"\nmin_samples = 3");
  CHECK(message.find("min_samples = 3") != std::string::npos);
  message = partition_error(labels, 2, 4, "scheme = \"shards\"\nshards_per_client = 3");
  CHECK(message.find("4 x 3 shards") != std::string::npos);
  message = partition_error(cyclic_labels(10, 3), 2, 2, "scheme = \"iid\"");
  CHECK(message.find("labels must lie in [0, 2)") != std::string::npos);
}

TEST_CASE("partition: 100000 clients over 1000000 examples") {
  auto labels = torch::randint(0, 10, {1000000}, bulwark::make_generator(9), torch::kLong);
  for (const std::string toml :
       {"scheme = \"iid\"", "scheme = \"shards\"", "scheme = \"sorted\"", "scheme = \"quantity\"",
        "scheme = \"dirichlet\"\nalpha = 0.5\nmin_samples = 0"}) {
    CAPTURE(toml);
    auto p = split(labels, 10, 100000, toml);
    check_exactly_once(p, 1000000, 100000);
  }
}
